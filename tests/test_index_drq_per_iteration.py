"""IndexDRQ with codebooks="per_iteration": one (256, d) codebook per iteration.

Checked against a float64 brute force built straight from the codebooks, scales and codes, so
the (nq, m, K) query tables, the encoder, the stored norms, the file format and the faiss export
are each compared with an independent computation."""
import io as pyio

import numpy as np
import pytest

import drqindex
from drqindex.quantizer import DRQQuantizer

D, M, N, NQ = 24, 6, 700, 40


def _quantizer(seed=0, scales=None):
    rng = np.random.default_rng(seed)
    cb = rng.standard_normal((M, 256, D)).astype(np.float32)
    cb *= (0.6 ** np.arange(M, dtype=np.float32))[:, None, None]   # shrinking residual codebooks
    s = np.linspace(1.0, 0.7, M).astype(np.float32) if scales is None else scales
    return DRQQuantizer(cb, s)


def _data(seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, D)).astype(np.float32), rng.standard_normal((NQ, D)).astype(np.float32)


def _greedy_reference(q: DRQQuantizer, x):
    r = x.astype(np.float64)
    codes = np.empty((x.shape[0], q.M), np.uint8)
    for j in range(q.M):
        cw = q.scales[j].astype(np.float64) * q.codebook[j].astype(np.float64)
        dist = ((r[:, None, :] - cw[None]) ** 2).sum(-1)
        codes[:, j] = dist.argmin(1)
        r -= cw[codes[:, j]]
    return codes


def _reconstruct_reference(q, codes, m):
    """sum_{j<m} s_j C_j[b_j] in float64, for either codebook form."""
    out = np.zeros((codes.shape[0], q.d))
    for j in range(m):
        out += float(q.scales[j]) * q.codewords(j)[codes[:, j]].astype(np.float64)
    return out


def _index(metric=drqindex.METRIC_L2, q=None):
    q = q or _quantizer()
    index = drqindex.IndexDRQ(D, M, metric)
    index.set_quantizer(q)
    assert index.codebooks == "per_iteration"
    return index


def test_encoder_matches_float64_greedy_reference():
    q = _quantizer()
    xb, _ = _data()
    codes, norms = q.encode(xb)
    ref = _greedy_reference(q, xb)
    # float32 scores may flip a near-tie; everything else must agree.
    assert (codes == ref).all(axis=1).mean() > 0.99
    for m in (1, 3, M):
        rec = _reconstruct_reference(q, codes, m)
        np.testing.assert_allclose(norms[:, m - 1], (rec ** 2).sum(1), rtol=1e-4)
        np.testing.assert_allclose(q.decode(codes, m), rec, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", [drqindex.METRIC_L2, drqindex.METRIC_INNER_PRODUCT])
@pytest.mark.parametrize("m", [1, 2, 5, M])
def test_search_equals_brute_force_over_reconstructions(metric, m):
    index = _index(metric)
    xb, xq = _data()
    index.add(xb)
    D_, I_ = index.search(xq, 10, iters=m)
    rec = _reconstruct_reference(index.quantizer, index.sa_encode(xb), m)
    if metric == drqindex.METRIC_L2:
        dist = ((xq[:, None, :].astype(np.float64) - rec[None]) ** 2).sum(-1)
        ref_D = np.sort(dist, 1)[:, :10]
    else:
        dist = -(xq.astype(np.float64) @ rec.T)
        ref_D = -np.sort(dist, 1)[:, :10]
    np.testing.assert_allclose(D_, ref_D, rtol=1e-4, atol=1e-3)
    got = np.take_along_axis(dist, I_, 1)
    np.testing.assert_allclose(got, np.sort(dist, 1)[:, :10], rtol=1e-4, atol=1e-3)


def test_query_tables_shape_and_values():
    q = _quantizer()
    _, xq = _data()
    tables, qn = q.query_tables(xq, 4)
    assert tables.shape == (NQ, 4, 256) and tables.dtype == np.float32
    np.testing.assert_allclose(tables[:, 2], xq @ q.codebook[2].T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(qn, (xq * xq).sum(1), rtol=1e-5)
    assert q.query_tables(xq)[0].shape == (NQ, M, 256)


def test_prefix_inner_products_both_forms():
    xb, _ = _data()
    y = xb[::-1].copy()
    for q in (_quantizer(), DRQQuantizer(_quantizer().codebook[0], np.linspace(1, 0.5, M).astype(np.float32))):
        codes, _ = q.encode(xb)
        got = q.prefix_inner_products(y, codes)
        for m in (1, M):
            ref = (y.astype(np.float64) * _reconstruct_reference(q, codes, m)).sum(1)
            np.testing.assert_allclose(got[:, m - 1], ref, rtol=1e-6, atol=1e-6)


def test_save_load_round_trip_keeps_the_form_and_results(tmp_path):
    index = _index()
    xb, xq = _data()
    index.add(xb)
    path = tmp_path / "pi.drq"
    drqindex.write_index(index, str(path))
    back = drqindex.read_index(str(path))
    assert back.codebooks == "per_iteration" and back.quantizer.codebook.shape == (M, 256, D)
    for m in (2, M):
        a, b = index.search(xq, 5, iters=m), back.search(xq, 5, iters=m)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    # An untrained per-iteration index keeps its form through a file.
    buf = pyio.BytesIO()
    drqindex.write_index(drqindex.IndexDRQ(D, M, codebooks="per_iteration"), buf)
    buf.seek(0)
    assert drqindex.read_index(buf).codebooks == "per_iteration"


def test_truncated_file_is_refused(tmp_path):
    index = _index()
    index.add(_data()[0])
    data = drqindex.serialize_index(index)
    with pytest.raises(ValueError):
        drqindex.deserialize_index(data[: len(data) // 2])


def test_faiss_export_gives_the_same_neighbours():
    faiss = pytest.importorskip("faiss")
    index = _index()
    xb, xq = _data()
    index.add(xb)
    for m in (3, M):
        fi = drqindex.to_faiss(index, iters=m)
        Df, If = fi.search(xq, 5)
        Dd, Id = index.search(xq, 5, iters=m)
        assert (If == Id).mean() > 0.98
        np.testing.assert_allclose(Df, Dd, rtol=1e-4, atol=1e-3)
        assert isinstance(fi, faiss.Index)


def test_factory_and_keyword_validation():
    index = drqindex.index_factory(D, "DRQ8pi")
    assert isinstance(index, drqindex.IndexDRQ) and index.codebooks == "per_iteration" and index.iters == 8
    assert drqindex.index_factory(D, "DRQ8").codebooks == "shared"
    assert drqindex.index_factory(D, "IVF4,DRQ8pi").codebooks == "per_iteration"
    with pytest.raises(ValueError, match="codebooks"):
        drqindex.IndexDRQ(D, 8, codebooks="adapters")
    with pytest.raises(ValueError, match="fast-scan"):
        drqindex.index_factory(D, "DRQ8x4fspi")


def test_bad_quantizer_shapes():
    cb = np.zeros((M, 256, D), np.float32)
    with pytest.raises(ValueError, match="one codebook per iteration"):
        DRQQuantizer(cb, np.ones(M + 1, np.float32))
    with pytest.raises(ValueError, match="256"):
        DRQQuantizer(np.zeros((M, 16, D), np.float32), np.ones(M, np.float32))
    bad = cb.copy()
    bad[1, 3, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        DRQQuantizer(bad, np.ones(M, np.float32))


def test_train_config_form_must_match_the_index():
    pytest.importorskip("torch")
    from drqindex.train import DRQTrainConfig
    index = drqindex.IndexDRQ(D, 4, train_config=DRQTrainConfig(iters=4, codebooks="per_iteration"))
    with pytest.raises(ValueError, match="codebooks"):
        index.train(_data()[0])


def test_trainer_is_sequential_and_deterministic():
    pytest.importorskip("torch")
    from drqindex.train import DRQTrainConfig, train_drq
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((1200, 16)) * np.linspace(3, 0.3, 16)).astype(np.float32)
    cfg = DRQTrainConfig(iters=4, codebooks="per_iteration", per_iteration_sample=800,
                         per_iteration_kmeans_iters=4, num_threads=1, seed=5)
    cb1, s1, info = train_drq(x, cfg)
    cb2, _, _ = train_drq(x, cfg)
    assert cb1.shape == (4, 256, 16) and (s1 == 1).all()
    np.testing.assert_array_equal(cb1, cb2)
    errs = np.array(info["train_mse_per_prefix"])
    assert (np.diff(errs) < 0).all()          # every iteration lowers the training error
    # The 2-iteration model is the prefix of the 4-iteration one (greedy, same seed).
    cb_short, _, _ = train_drq(x, DRQTrainConfig(**{**cfg.__dict__, "iters": 2}))
    np.testing.assert_array_equal(cb_short, cb1[:2])
    index = drqindex.IndexDRQ(16, 4, codebooks="per_iteration",
                              train_config=dict(per_iteration_sample=800, per_iteration_kmeans_iters=4,
                                                num_threads=1))
    index.train(x)
    index.add(x)
    assert index.train_info["codebooks"] == "per_iteration" and index.ntotal == 1200


def test_sample_schedule_is_followed_sequential_and_validated():
    pytest.importorskip("torch")
    from drqindex.train import DRQTrainConfig, train_drq
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((1200, 16)) * np.linspace(3, 0.3, 16)).astype(np.float32)
    # (until_iteration, sample): iterations 0-1 cluster all 1200 rows (2000 > n), 2 uses 900, 3+ 700.
    schedule = [[2, 2000], [3, 900], [None, 700]]          # a JSON-style list, as read from a file
    cfg = DRQTrainConfig(iters=4, codebooks="per_iteration", per_iteration_sample=schedule,
                         per_iteration_kmeans_iters=3, num_threads=1, seed=2)
    assert cfg.per_iteration_sample == ((2, 2000), (3, 900), (None, 700))
    cb, _, info = train_drq(x, cfg)
    assert info["per_iteration_sample"] == [1200, 1200, 900, 700]
    # Still sequential: a 3-iteration training with the same schedule gives the first 3 codebooks.
    cb3, _, _ = train_drq(x, DRQTrainConfig(**{**cfg.__dict__, "iters": 3}))
    np.testing.assert_array_equal(cb3, cb[:3])
    # A different schedule changes the codebooks from the first iteration whose sample differs.
    cb_other, _, _ = train_drq(x, DRQTrainConfig(**{**cfg.__dict__, "per_iteration_sample": 700}))
    assert not np.array_equal(cb_other[0], cb[0])
    for bad in (0, [], [[None, 5], [3, 4]], [[3, 4]], [[3, 4], [2, 5], [None, 1]], "64",
                [[3, True], [None, 3]], [[3, 0], [None, 3]], 2.5):
        with pytest.raises(ValueError, match="per_iteration_sample"):
            DRQTrainConfig(per_iteration_sample=bad)


def test_kmeans_forms_sequential_deterministic_and_validated():
    pytest.importorskip("torch")
    from drqindex.train import DRQTrainConfig, train_drq
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((900, 20)) * np.linspace(3, 0.3, 20)).astype(np.float32)
    base = dict(iters=3, codebooks="per_iteration", per_iteration_sample=700, per_iteration_kmeans_iters=2,
                num_threads=1, seed=1)
    # pca_progressive (the default): dims clipped to d, with and without full-dimension rounds.
    assert DRQTrainConfig(**base).per_iteration_kmeans == "pca_progressive"
    errors = {}
    for form, extra in (("pca_progressive", dict(per_iteration_pca_dims=8, per_iteration_full_rounds=0)),
                        ("pca_progressive", dict(per_iteration_pca_dims=64, per_iteration_full_rounds=2)),
                        ("pca_progressive", dict(per_iteration_pca_dims=1, per_iteration_full_rounds=1)),
                        ("progressive", {})):
        cfg = DRQTrainConfig(**base, per_iteration_kmeans=form, **extra)
        cb, _, info = train_drq(x, cfg)
        np.testing.assert_array_equal(cb, train_drq(x, cfg)[0])
        np.testing.assert_array_equal(cb[:2], train_drq(x, DRQTrainConfig(**{**cfg.__dict__, "iters": 2}))[0])
        assert info["kmeans"] == form and np.isfinite(cb).all()
        errs = info["train_mse_per_prefix"]
        assert all(b < a for a, b in zip(errs, errs[1:]))
        errors[(form, extra.get("per_iteration_full_rounds"), extra.get("per_iteration_pca_dims"))] = errs[-1]
    # Full-dimension Lloyd rounds refine the low-dimension start.
    assert errors[("pca_progressive", 2, 64)] < errors[("pca_progressive", 0, 8)]
    for field, bad in (("per_iteration_kmeans", "plain"), ("per_iteration_kmeans", None),
                       ("per_iteration_pca_dims", 0), ("per_iteration_pca_dims", 2.0),
                       ("per_iteration_full_rounds", -1), ("per_iteration_full_rounds", True)):
        with pytest.raises(ValueError, match=field):
            DRQTrainConfig(**{field: bad})


def test_deadline_still_returns_every_codebook():
    pytest.importorskip("torch")
    from drqindex.train import DRQTrainConfig, train_drq
    rng = np.random.default_rng(7)
    x = rng.standard_normal((600, 12)).astype(np.float32)
    cb, _, info = train_drq(x, DRQTrainConfig(iters=3, codebooks="per_iteration", num_threads=1,
                                              max_seconds=1e-6))
    assert cb.shape == (3, 256, 12) and np.isfinite(cb).all()
    assert info["stop_reason"] == "time_limit"
