"""Per-iteration codebooks trained in a principal subspace (drqindex.quantizer.Subspace).

The quantizer keeps r-dimensional codebooks, a (d, r) orthonormal basis and the mean, and
computes codes and query tables in r dimensions; every result is compared with the same model
given as plain (M, K, d) codebooks (the lift), which goes through the full-dimension paths."""
import numpy as np
import pytest

import drqindex
from drqindex.io import IndexFileError
from drqindex.quantizer import DRQQuantizer, Subspace, lift_subspace
from drqindex.train.drq import DRQTrainConfig, train_drq

D, R, M = 40, 12, 5


def _subspace(seed=0, r=R, M=M):
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((D, r)))
    cbs = rng.standard_normal((M, 256, r)) * (0.6 ** np.arange(M))[:, None, None] * 3
    mean = rng.standard_normal(D) * 2
    return Subspace(mean.astype(np.float32), basis.astype(np.float32), cbs.astype(np.float32))


def _data(n=600, seed=1):
    """Rows near the subspace's affine span (plus a small orthogonal part) and queries."""
    rng = np.random.default_rng(seed)
    sub = _subspace()
    x = sub.mean + rng.standard_normal((n, R)) @ sub.basis.T * 3 + rng.standard_normal((n, D)) * 0.3
    return np.ascontiguousarray(x, dtype=np.float32)


def _pair(scales=None):
    scales = np.linspace(1.0, 0.8, M).astype(np.float32) if scales is None else scales
    sub = DRQQuantizer(_subspace(), scales)
    return sub, DRQQuantizer(lift_subspace(sub.subspace), scales)


def test_lift_is_basis_times_codewords_plus_mean_on_the_first_codebook():
    s = _subspace()
    lifted = lift_subspace(s)
    assert lifted.shape == (M, 256, D) and lifted.dtype == np.float32
    want = np.einsum("mkr,dr->mkd", s.codebooks.astype(np.float64), s.basis.astype(np.float64))
    want[0] += s.mean
    np.testing.assert_allclose(lifted, want, rtol=1e-6, atol=1e-5)
    q = DRQQuantizer(s, np.ones(M, np.float32))
    assert q.per_iteration and q.d == D and q.M == M
    np.testing.assert_array_equal(q.codebook, lifted)
    assert q.num_parameters() == D + D * R + M * 256 * R + M   # stored floats, not the lift


@pytest.mark.parametrize("scales", [None, np.ones(M, np.float32)])
def test_subspace_codes_norms_and_tables_equal_the_full_dimension_model(scales):
    sub, full = _pair(scales)
    x = _data()
    codes_s, norms_s = sub.encode(x)
    codes_f, norms_f = full.encode(x)
    assert (codes_s == codes_f).mean() > 0.995          # ties within float rounding may differ
    same = (codes_s == codes_f).all(1)
    assert same.mean() > 0.97
    np.testing.assert_allclose(norms_s[same], norms_f[same], rtol=2e-5)
    # norms are ||xhat_m||^2 of the model's own reconstruction, in d dimensions
    for m in (1, 3, M):
        xhat = full.decode(codes_s, m).astype(np.float64)
        np.testing.assert_allclose(norms_s[:, m - 1], (xhat ** 2).sum(1), rtol=2e-5)
    for m in (1, 2, M):
        ts, qs = sub.query_tables(x[:30], m)
        tf, qf = full.query_tables(x[:30], m)
        assert ts.shape == tf.shape == (30, m, 256)
        np.testing.assert_allclose(ts, tf, rtol=1e-4, atol=1e-3 * np.abs(tf).max())
        np.testing.assert_array_equal(qs, qf)


def test_truncated_and_same_model_keep_the_subspace():
    sub, full = _pair()
    t = sub.truncated(2)
    assert t.subspace is not None and t.M == 2
    np.testing.assert_array_equal(t.codebook, sub.codebook[:2])
    assert sub.same_model(DRQQuantizer(_subspace(), sub.scales))
    assert not sub.same_model(full)                      # one encodes in r dims, the other in d


@pytest.mark.parametrize("bad, match", [
    (lambda s: s._replace(basis=s.basis * 1.5), "orthonormal"),
    (lambda s: s._replace(mean=s.mean[:-1]), r"mean \(d,\) and basis \(d, r\)"),
    (lambda s: s._replace(codebooks=s.codebooks[:, :, :-1]), r"codebooks \(5, 256, 12\)"),
    (lambda s: s._replace(codebooks=s.codebooks[:-1]), r"codebooks \(5, 256, 12\)"),
    (lambda s: s._replace(mean=np.full(D, np.nan, np.float32)), "finite"),
])
def test_invalid_subspaces_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        DRQQuantizer(bad(_subspace()), np.ones(M, np.float32))


def _cfg(**kw):
    return DRQTrainConfig(**{**dict(iters=4, codebooks="per_iteration", per_iteration_sample=400,
                                    per_iteration_subspace_dims=10, num_threads=1, seed=3), **kw})


def test_trainer_returns_a_subspace_whose_training_error_is_the_models():
    x = _data(800)
    cb, scales, info = train_drq(x, _cfg())
    assert isinstance(cb, Subspace) and cb.basis.shape == (D, 10) and info["subspace_dims"] == 10
    q = DRQQuantizer(cb, scales)
    codes, _ = q.encode(x)
    for m in (1, 4):
        err = ((q.decode(codes, m).astype(np.float64) - x) ** 2).sum(1).mean()
        # the trainer's residuals (in r dims, plus the energy outside the subspace) vs the
        # index's own encoding of the same rows
        assert err == pytest.approx(info["train_mse_per_prefix"][m - 1], rel=1e-3)
    # the first codebook carries the mean: a one-iteration model already centres the data
    assert ((q.decode(codes, 1) - x) ** 2).sum(1).mean() < ((x - x.mean(0)) ** 2).sum(1).mean()


def test_trainer_prefixes_are_bit_identical_and_full_dimensions_without_subspace():
    x = _data(800)
    cb4, _, _ = train_drq(x, _cfg())
    cb2, _, _ = train_drq(x, _cfg(iters=2))
    for a, b in zip(cb2, cb4):
        if a.ndim == 3:
            np.testing.assert_array_equal(a, b[:2])
        else:
            np.testing.assert_array_equal(a, b)
    for dims in (None, D, 2 * D):
        cb, _, info = train_drq(x, _cfg(per_iteration_subspace_dims=dims))
        assert isinstance(cb, np.ndarray) and cb.shape == (4, 256, D) and info["subspace_dims"] is None


@pytest.mark.parametrize("value, match", [(0, "expected >= 1, received 0"), (2.5, "expected an int")])
def test_subspace_dims_option_is_validated(value, match):
    with pytest.raises(ValueError, match="per_iteration_subspace_dims: " + match):
        _cfg(per_iteration_subspace_dims=value)


SCHEDULE = ((2, 4), (4, 7), (None, 10))        # iterations 0-1 in 4 dims, 2-3 in 7, then 10


def test_trainer_schedule_nests_each_codebook_in_its_leading_dimensions():
    x = _data(800)
    cb, scales, info = train_drq(x, _cfg(iters=5, per_iteration_subspace_dims=SCHEDULE))
    assert isinstance(cb, Subspace) and cb.basis.shape == (D, 10)
    assert info["subspace_dims_per_iteration"] == [4, 4, 7, 7, 10]
    for j, r in enumerate((4, 4, 7, 7, 10)):
        assert (cb.codebooks[j, :, r:] == 0).all() and (cb.codebooks[j, :, r - 1] != 0).any()
    q = DRQQuantizer(cb, scales)
    assert q.subspace_dims_per_iteration.tolist() == [4, 4, 7, 7, 10]     # found from the zero columns, not stored
    codes, _ = q.encode(x)
    for m in (1, 2, 3, 5):  # the training error is the model's, as without a schedule
        err = ((q.decode(codes, m).astype(np.float64) - x) ** 2).sum(1).mean()
        assert err == pytest.approx(info["train_mse_per_prefix"][m - 1], rel=1e-3)
    # query tables from the leading coordinates only = tables of the lifted (M, K, d) model
    full = DRQQuantizer(lift_subspace(q.subspace), scales)
    xq = _data(30, seed=4)
    for m in (1, 2, 3, 4, 5):
        ts, _ = q.query_tables(xq, m)
        tf, _ = full.query_tables(xq, m)
        assert ts.shape == (30, m, 256)
        np.testing.assert_allclose(ts, tf, rtol=1e-4, atol=1e-4 * np.abs(tf).max())


def test_schedule_survives_the_file_and_is_validated():
    x = _data(800)
    index = drqindex.IndexDRQ(D, 5, codebooks="per_iteration", train_config=dict(
        per_iteration_sample=400, per_iteration_subspace_dims=SCHEDULE, num_threads=1, seed=3))
    index.train(x)
    index.add(x)
    back = drqindex.deserialize_index(drqindex.serialize_index(index))
    assert back.quantizer.subspace_dims_per_iteration.tolist() == [4, 4, 7, 7, 10]
    xq = _data(20, seed=8)
    np.testing.assert_array_equal(back.search(xq, 5, iters=3)[1], index.search(xq, 5, iters=3)[1])
    # a schedule whose last dims reach d still nests its first iterations (basis: a rotation of R^d)
    cb, _, info = train_drq(x, _cfg(iters=3, per_iteration_subspace_dims=((2, 4), (None, 2 * D))))
    assert isinstance(cb, Subspace) and cb.basis.shape == (D, D) and info["subspace_dims_per_iteration"] == [4, 4, D]
    assert (cb.codebooks[:2, :, 4:] == 0).all() and (cb.codebooks[2, :, D - 1] != 0).any()
    for bad in (((2, 4),), ((2, 4), (2, 7), (None, 10)), ((2, 0), (None, 10)), "4"):
        with pytest.raises(ValueError, match="per_iteration_subspace_dims: expected an int >= 1 or a sequence"):
            _cfg(per_iteration_subspace_dims=bad)


def _flat_index(q):
    index = drqindex.IndexDRQ(D, M)
    index.set_quantizer(q)
    index.add(_data())
    return index


def test_flat_index_search_round_trips_through_the_file():
    sub, full = _pair()
    a, b = _flat_index(sub), _flat_index(full)
    xq = _data(50, seed=9)
    for m in (1, 3, M):
        Da, Ia = a.search(xq, 10, iters=m)
        Db, Ib = b.search(xq, 10, iters=m)
        assert (Ia[:, 0] == Ib[:, 0]).mean() > 0.95
        np.testing.assert_allclose(Da[:, 0], Db[:, 0], rtol=1e-4, atol=1e-2)
    back = drqindex.deserialize_index(drqindex.serialize_index(a))
    assert back.quantizer.subspace is not None and back.quantizer.same_model(a.quantizer)
    for m in (2, M):
        np.testing.assert_array_equal(back.search(xq, 5, iters=m)[1], a.search(xq, 5, iters=m)[1])
    # the file holds the r-dimensional model, not the lift
    assert len(drqindex.serialize_index(a)) < len(drqindex.serialize_index(b))


def _sections(buf):
    """(tag, header offset, payload offset, length) of each section of a serialized index."""
    from drqindex import io as dio
    raw = bytes(buf)
    out, pos = [], dio.HEADER_SIZE
    while True:
        start = dio._align(pos + dio.SECTION_HEADER_SIZE) - dio.SECTION_HEADER_SIZE
        tag, _, length, _, _ = dio._SECTION.unpack(raw[start:start + dio._SECTION.size])
        out.append((tag, start, start + dio.SECTION_HEADER_SIZE, length))
        if tag == dio.TAG_END:
            return out
        pos = start + dio.SECTION_HEADER_SIZE + length


def _rewrite_section(buf, tag, payload: bytes):
    """buf with section `tag` replaced by payload (lengths and checksums recomputed)."""
    import zlib

    from drqindex import io as dio
    raw = bytes(buf)
    for t, start, off, length in _sections(buf):
        if t == tag:
            body = raw[dio.HEADER_SIZE:start]
            head = dio._SECTION.pack(t, dio.SECTION_REQUIRED, len(payload), zlib.crc32(payload), b"\0" * 8)
            head += zlib.crc32(head).to_bytes(4, "little")
            rest = raw[off + length:]
            # keep the following sections aligned: pad the payload to the old alignment phase
            pad = (-(len(payload)) % dio.ALIGN) - (-(length) % dio.ALIGN)
            if pad < 0:
                pad += dio.ALIGN
            return np.frombuffer(raw[:dio.HEADER_SIZE] + body + head + payload + b"\0" * pad + rest, np.uint8)
    raise AssertionError(tag)


def test_corrupt_subspace_sections_raise_index_file_errors():
    from drqindex import io as dio
    a = _flat_index(_pair()[0])
    buf = drqindex.serialize_index(a)
    (_, _, off, length), = [s for s in _sections(buf) if s[0] == dio.TAG_SUBSPACE]
    payload = bytes(buf)[off:off + length]
    with pytest.raises(IndexFileError, match="CBKS.*1 <= r <= d"):
        drqindex.deserialize_index(_rewrite_section(buf, dio.TAG_SUBSPACE, payload[:-4]))
    floats = np.frombuffer(payload, "<f4").copy()
    floats[D:D + D * R] *= 2                                # basis no longer orthonormal
    with pytest.raises(IndexFileError, match="orthonormal"):
        drqindex.deserialize_index(_rewrite_section(buf, dio.TAG_SUBSPACE, floats.tobytes()))
    floats = np.frombuffer(payload, "<f4").copy()
    floats[-1] = np.inf
    with pytest.raises(IndexFileError, match="finite"):
        drqindex.deserialize_index(_rewrite_section(buf, dio.TAG_SUBSPACE, floats.tobytes()))


def test_ivf_with_a_subspace_quantizer_matches_the_lifted_model():
    import faiss
    sub, full = _pair(np.ones(M, np.float32))
    x, xq = _data(900), _data(40, seed=5)
    centroids = np.ascontiguousarray(x[:8])
    indexes = []
    for q in (sub, full):
        index = drqindex.IndexIVFDRQ(faiss.IndexFlatL2(D), D, 8, iters=M)
        index.set_quantizers(q, centroids)
        index.add(x)
        indexes.append(index)
    for m in (2, M):
        Da, Ia = indexes[0].search(xq, 10, nprobe=3, iters=m)
        Db, Ib = indexes[1].search(xq, 10, nprobe=3, iters=m)
        assert (Ia[:, 0] == Ib[:, 0]).mean() > 0.95
        np.testing.assert_allclose(Da[:, 0], Db[:, 0], rtol=1e-4, atol=1e-2)
    back = drqindex.deserialize_index(drqindex.serialize_index(indexes[0]))
    assert back.drq_quantizer.subspace is not None
    np.testing.assert_array_equal(back.search(xq, 10, nprobe=3)[1], indexes[0].search(xq, 10, nprobe=3)[1])
