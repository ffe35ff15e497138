"""IndexIVFDRQ with one codebook per iteration (codebooks="per_iteration"): search against a
brute-force float64 reference over the same codes (reconstructions c_l + r^_m computed here from
the codebooks, not by the quantizer), the stored L2 terms, the core's per-iteration tables at every
SIMD level and thread count against the scalar reference, their shape errors, save/load, and the
codebooks keyword. Quantizers are built from numpy arrays (no torch) except in the one training
test, which runs only where the per-iteration trainer exists."""
import pickle

import faiss
import numpy as np
import pytest
from conftest import make_quantizer

import drqindex
from drqindex import _core, index_ivf

D_DIM, NLIST, M = 16, 8, 8


def make_pi_quantizer(d=D_DIM, M=M, seed=0, data=None):
    """One (256, d) codebook per iteration with shrinking spread, and scales != 1 (the core must
    honour them): a valid quantizer whose greedy codes improve with every iteration."""
    rng = np.random.default_rng(seed)
    spread = data.std() if data is not None else 1.0
    codebooks = (rng.standard_normal((M, 256, d)) * spread * 0.7 ** np.arange(M)[:, None, None]).astype(np.float32)
    scales = (1.0 + 0.1 * rng.standard_normal(M)).astype(np.float32)
    return drqindex.DRQQuantizer(codebooks, scales)


def make_pi_ivf(d=D_DIM, nlist=NLIST, M=M, n=1500, metric=drqindex.METRIC_L2, seed=0):
    rng = np.random.default_rng(seed)
    xb = rng.standard_normal((n, d)).astype(np.float32)
    centroids = np.ascontiguousarray(xb[rng.choice(n, nlist, replace=False)])
    coarse = faiss.IndexFlatL2(d) if metric == drqindex.METRIC_L2 else faiss.IndexFlatIP(d)
    index = drqindex.IndexIVFDRQ(coarse, d, nlist, iters=M, metric=metric, codebooks="per_iteration")
    index.set_quantizers(make_pi_quantizer(d, M, seed, xb - centroids.mean(0)), centroids)
    index.add(xb)
    return index, xb


def reconstructions(index, l, codes, m):
    """c_l + sum_{j<m} s_j C_j[b_j] in float64, straight from the codebooks."""
    q = index.drq_quantizer
    rec = np.repeat(index.centroids[l].astype(np.float64)[None], codes.shape[0], 0)
    for j in range(m):
        rec += float(q.scales[j]) * q.codebook[j][codes[:, j]].astype(np.float64)
    return rec


def brute_force(index, xq, k, nprobe, m):
    _, probed = index.quantizer.search(xq, nprobe)
    ip = index.metric_type == drqindex.METRIC_INNER_PRODUCT
    D = np.full((xq.shape[0], k), -np.inf if ip else np.inf)
    I = np.full((xq.shape[0], k), -1, np.int64)
    exact = []  # per query: {id: distance}
    for qi, q in enumerate(xq.astype(np.float64)):
        dist, ids = [], []
        for l in probed[qi]:
            codes, _, lid = index.get_list(int(l))
            rec = reconstructions(index, int(l), codes, m)
            dist.append(rec @ q if ip else ((rec - q) ** 2).sum(1))
            ids.append(lid)
        dist, ids = np.concatenate(dist), np.concatenate(ids)
        order = np.argsort(-dist if ip else dist, kind="stable")[:k]
        D[qi, :order.size], I[qi, :order.size] = dist[order], ids[order]
        exact.append(dict(zip(ids.tolist(), dist.tolist())))
    return D, I, exact


def assert_matches_reference(index, xq, D, I, k, nprobe, m):
    Dr, Ir, exact = brute_force(index, xq, k, nprobe, m)
    scale = np.abs(Dr[np.isfinite(Dr)]).max()
    # Same ranked distances (float32 vs float64 rounding only) and every reported id has the
    # reported distance: near-ties may swap, a wrong vector never appears.
    np.testing.assert_allclose(D, Dr, rtol=1e-4, atol=1e-5 * scale)
    for qi in range(xq.shape[0]):
        for key, dist in zip(I[qi], D[qi]):
            assert abs(exact[qi][int(key)] - dist) <= 1e-5 * scale
    assert (I == Ir).mean() > 0.97


@pytest.mark.parametrize("metric", [drqindex.METRIC_L2, drqindex.METRIC_INNER_PRODUCT])
@pytest.mark.parametrize("nprobe,m", [(1, 8), (3, 5), (8, 2), (2, 1)])
def test_search_equals_brute_force_over_probed_lists(metric, nprobe, m):
    index, _ = make_pi_ivf(metric=metric)
    assert index.codebooks == "per_iteration" and index.drq_quantizer.per_iteration
    assert index._list_tables is None
    xq = np.random.default_rng(5).standard_normal((20, index.d)).astype(np.float32)
    D, I = index.search(xq, 10, nprobe=nprobe, iters=m)
    assert D.dtype == np.float32 and I.dtype == np.int64 and D.shape == I.shape == (20, 10)
    assert_matches_reference(index, xq, D, I, 10, nprobe, m)


def test_stored_terms_and_reconstruct():
    index, _ = make_pi_ivf(n=400)
    for l in (0, 3):
        codes, terms, ids = index.get_list(l)
        c = index.centroids[l].astype(np.float64)
        for m in (1, 4, M):
            r = reconstructions(index, l, codes, m) - c
            expected = (r * r).sum(1) + 2.0 * (r @ c)  # ||r^_m||^2 + 2 <c_l, r^_m>
            np.testing.assert_allclose(terms[:, m - 1], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(index.reconstruct(int(ids[0]), 3), reconstructions(index, l, codes[:1], 3)[0],
                                   rtol=1e-5, atol=1e-5)


def test_add_terms_from_list_tables_equal_the_codeword_gather(monkeypatch):
    """add() computes <c_l, r^_m> by per-list float64 GEMM tables when rows are many per list, by
    gathering codewords otherwise: same stored terms (float64 sums of the same products), also
    when the GEMM is split into several iteration and list blocks."""
    rng = np.random.default_rng(3)
    n = 1200
    xb = rng.standard_normal((n, D_DIM)).astype(np.float32)
    centroids = np.ascontiguousarray(xb[rng.choice(n, NLIST, replace=False)])
    quantizer = make_pi_quantizer(data=xb - centroids.mean(0))

    def stored(**patch):
        for name, value in patch.items():
            monkeypatch.setattr(index_ivf, name, value)
        index = drqindex.IndexIVFDRQ(faiss.IndexFlatL2(D_DIM), D_DIM, NLIST, iters=M, codebooks="per_iteration")
        index.set_quantizers(quantizer, centroids)
        index.add(xb)
        return [index.get_list(l) for l in range(NLIST)]

    gemm = stored()
    blocked = stored(_TERMS_BLOCK_BYTES=2 * 256 * 8)  # blocks of 1 iteration x 2 lists
    gather = stored(_TERMS_GEMM_ROWS_PER_LIST=10 ** 9)
    for (c1, t1, i1), (c2, t2, i2), (c3, t3, i3) in zip(gemm, blocked, gather):
        assert np.array_equal(c1, c3) and np.array_equal(i1, i3) and np.array_equal(c2, c3)
        np.testing.assert_allclose(t1, t3, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(t2, t3, rtol=1e-6, atol=1e-6)
    assert sum(t.shape[0] for _, t, _ in gemm) == n
    index = drqindex.IndexIVFDRQ(faiss.IndexFlatL2(D_DIM), D_DIM, NLIST, iters=M, codebooks="per_iteration")
    index.set_quantizers(quantizer, centroids)
    assign = index_ivf._assign(index.quantizer, xb)
    codes = rng.integers(0, 256, (n, M), dtype=np.uint8)
    np.testing.assert_allclose(index._per_iteration_cross(assign, codes),
                               quantizer.prefix_inner_products(centroids[assign], codes), rtol=1e-12, atol=1e-9)


def test_query_chunks_and_selector(monkeypatch):
    index, _ = make_pi_ivf(n=600)
    xq = np.random.default_rng(6).standard_normal((10, index.d)).astype(np.float32)
    D, I = index.search(xq, 5, nprobe=3, iters=6)
    # Tables of 3 queries at a time (the per-iteration table bound) give the same results (up to
    # the BLAS rounding of a differently shaped table product).
    monkeypatch.setattr(index_ivf, "_TABLE_BYTES", 3 * 6 * 256 * 4)
    D2, I2 = index.search(xq, 5, nprobe=3, iters=6)
    np.testing.assert_allclose(D, D2, rtol=1e-6, atol=1e-6)
    assert (I == I2).mean() > 0.97
    assert_matches_reference(index, xq, D2, I2, 5, 3, 6)
    sel = faiss.IDSelectorRange(100, 300)
    D3, I3 = index.search(xq, 5, params=drqindex.SearchParametersIVFDRQ(nprobe=NLIST, iters=6, sel=sel))
    assert ((I3 >= 100) & (I3 < 300)).all()


def _core_inputs(index, xq, nprobe):
    """Per-iteration tables for all M iterations (nq, M, K), coarse distances, probed lists."""
    coarse, lists = index.quantizer.search(xq, nprobe)
    tables = index.drq_quantizer.query_tables(xq)[0]
    return tables, np.ascontiguousarray(coarse), np.ascontiguousarray(lists, dtype=np.int64)


@pytest.mark.parametrize("metric", [0, 1])
@pytest.mark.parametrize("nq", [1, 3, 40])
def test_every_simd_level_and_thread_count_equals_scalar_reference(metric, nq):
    index, _ = make_pi_ivf(metric=metric, n=3000)
    xq = np.random.default_rng(8).standard_normal((nq, index.d)).astype(np.float32)
    scales = index.drq_quantizer.scales
    level0, threads0 = _core.simd_level(), _core.get_num_threads()
    full, coarse, lists = _core_inputs(index, xq, 5)
    try:
        for iters in (1, 5, M):
            tables = np.ascontiguousarray(full[:, :iters])
            Dr, Ir = _core.ivf_search_reference(index._store, tables, coarse, lists, scales, iters, 9, metric)
            # Tables for more iterations than searched (T > iters): the extra ones are not read.
            Df, If = _core.ivf_search_reference(index._store, full, coarse, lists, scales, iters, 9, metric)
            np.testing.assert_array_equal(Df, Dr)
            np.testing.assert_array_equal(If, Ir)
            for level in _core.supported_simd_levels():
                _core.set_simd_level(level)
                for threads in (1, 2, 5):
                    _core.set_num_threads(threads)
                    for t in (tables, full):
                        D, I = _core.ivf_search(index._store, t, coarse, lists, scales, iters, 9, metric)
                        np.testing.assert_array_equal(D, Dr)
                        np.testing.assert_array_equal(I, Ir)
    finally:
        _core.set_simd_level(level0)
        _core.set_num_threads(threads0)


@pytest.mark.parametrize("metric", [drqindex.METRIC_L2, drqindex.METRIC_INNER_PRODUCT])
def test_per_iteration_tables_of_one_repeated_codebook_equal_the_shared_path(metric):
    # The same codebook in every iteration: the (nq, M, K) path reads the same table values with
    # the same operations as the shared (nq, K) path, so the core gives bit-identical results.
    rng = np.random.default_rng(2)
    xb = rng.standard_normal((1200, D_DIM)).astype(np.float32)
    centroids = np.ascontiguousarray(xb[:NLIST])
    shared_q = make_quantizer(D_DIM, M, 0, xb)
    repeated_q = drqindex.DRQQuantizer(np.repeat(shared_q.codebook[None], M, 0), shared_q.scales)
    coarse = (faiss.IndexFlatL2 if metric == drqindex.METRIC_L2 else faiss.IndexFlatIP)
    shared = drqindex.IndexIVFDRQ(coarse(D_DIM), D_DIM, NLIST, iters=M, metric=metric)
    shared.set_quantizers(shared_q, centroids)
    shared.add(xb)
    xq = rng.standard_normal((12, D_DIM)).astype(np.float32)
    _, lists = shared.quantizer.search(xq, 4)
    c = np.zeros(lists.shape, np.float32)
    lists = np.ascontiguousarray(lists, dtype=np.int64)
    t2 = np.ascontiguousarray(xq @ shared_q.codebook.T, dtype=np.float32)
    t3 = np.ascontiguousarray(np.repeat(t2[:, None, :], M, 1))
    cm = 0 if metric == drqindex.METRIC_L2 else 1
    for fn in (_core.ivf_search, _core.ivf_search_reference):
        D2, I2 = fn(shared._store, t2, c, lists, shared_q.scales, 6, 7, cm)
        D3, I3 = fn(shared._store, t3, c, lists, shared_q.scales, 6, 7, cm)
        np.testing.assert_array_equal(D2, D3)
        np.testing.assert_array_equal(I2, I3)
    # And at the index level the two forms encode and rank alike (the stored L2 terms are the
    # same float64 sums computed by two routes, so distances agree to rounding).
    per_it = drqindex.IndexIVFDRQ(coarse(D_DIM), D_DIM, NLIST, iters=M, metric=metric)
    per_it.set_quantizers(repeated_q, centroids)
    per_it.add(xb)
    assert per_it.codebooks == "per_iteration"
    for l in range(NLIST):
        np.testing.assert_array_equal(per_it.get_list(l)[0], shared.get_list(l)[0])
    Da, Ia = shared.search(xq, 7, nprobe=4, iters=6)
    Db, Ib = per_it.search(xq, 7, nprobe=4, iters=6)
    np.testing.assert_allclose(Da, Db, rtol=1e-5, atol=1e-4)
    assert (Ia == Ib).mean() > 0.97


def test_bad_per_iteration_table_shapes_raise_value_error():
    index, _ = make_pi_ivf(n=300)
    xq = np.random.default_rng(9).standard_normal((3, index.d)).astype(np.float32)
    tables, coarse, lists = _core_inputs(index, xq, 2)
    scales = index.drq_quantizer.scales
    for fn in (_core.ivf_search, _core.ivf_search_reference):
        with pytest.raises(ValueError, match=r"T >= iters=5.*\(3, 4, 256\)"):
            fn(index._store, np.ascontiguousarray(tables[:, :4]), coarse, lists, scales, 5, 3, 0)
        with pytest.raises(ValueError, match=r"T >= iters=1"):
            fn(index._store, np.zeros((3, 0, 256), np.float32), coarse, lists, scales, 1, 3, 0)
        with pytest.raises(ValueError, match="stored codes go up to .* only K=100"):
            fn(index._store, np.ascontiguousarray(tables[:, :, :100]), coarse, lists, scales, 5, 3, 0)
        with pytest.raises(ValueError, match="K in \\[1, 256\\]"):
            fn(index._store, np.zeros((3, M, 300), np.float32), coarse, lists, scales, 5, 3, 0)
        with pytest.raises(ValueError, match="float32 array of shape \\(nq, T, K\\)"):
            fn(index._store, tables.astype(np.float64), coarse, lists, scales, 5, 3, 0)
        with pytest.raises(ValueError, match="not C-contiguous"):
            fn(index._store, tables[:, ::2], coarse, lists, scales, 4, 3, 0)
        with pytest.raises(ValueError, match="float32 array of shape \\(nq, K\\)"):
            fn(index._store, tables[:, :, None, :].copy(), coarse, lists, scales, 5, 3, 0)
        with pytest.raises(ValueError, match=r"coarse: expected .*\(nq=2, nprobe\).*got float32 array of shape \(3, 2\)"):
            fn(index._store, np.ascontiguousarray(tables[:2]), coarse, lists, scales, 5, 3, 0)
        with pytest.raises(ValueError, match="iters must be >= 1"):
            fn(index._store, tables, coarse, lists, scales, 0, 3, 0)
        with pytest.raises(ValueError, match=r"iters must be in \[1, M=8\], got 9"):
            fn(index._store, tables, coarse, lists, scales, 9, 3, 0)


def test_codebooks_keyword_repr_and_set_quantizers():
    with pytest.raises(ValueError, match="codebooks: expected 'shared'"):
        drqindex.IndexIVFDRQ(faiss.IndexFlatL2(8), 8, 4, iters=3, codebooks="both")
    index = drqindex.IndexIVFDRQ(faiss.IndexFlatL2(8), 8, 4, iters=3, codebooks="per_iteration")
    assert "codebooks='per_iteration'" in repr(index)
    assert "codebooks" not in repr(drqindex.IndexIVFDRQ(faiss.IndexFlatL2(8), 8, 4, iters=3))
    with pytest.raises(ValueError, match="expected d=8, M=3"):
        index.set_quantizers(make_pi_quantizer(8, 4), np.zeros((4, 8), np.float32))
    # The quantizer decides the form (as IndexDRQ.set_quantizer).
    index.set_quantizers(make_quantizer(8, 3), np.eye(4, 8, dtype=np.float32))
    assert index.codebooks == "shared" and index._list_tables is not None


def test_save_load_round_trip(tmp_path):
    index, xb = make_pi_ivf(n=700)
    index.remove_ids(np.arange(0, 700, 5))
    index.nprobe, index.search_iters = 3, 5
    xq = xb[:20]
    D, I = index.search(xq, 6)
    path = tmp_path / "ivf_pi.drq"
    drqindex.write_index(index, str(path))
    blob = path.read_bytes()
    assert b"CBKM" in blob and b"CBKF" not in blob
    for back in (drqindex.read_index(str(path)), drqindex.read_index(str(path), mmap=True),
                 drqindex.deserialize_index(drqindex.serialize_index(index)), pickle.loads(pickle.dumps(index))):
        assert isinstance(back, drqindex.IndexIVFDRQ) and back.codebooks == "per_iteration"
        assert (back.nlist, back.iters, back.nprobe, back.search_iters, back.ntotal) == (NLIST, M, 3, 5, 560)
        q, q0 = back.drq_quantizer, index.drq_quantizer
        assert q.per_iteration and q.codebook.shape == (M, 256, D_DIM)
        np.testing.assert_array_equal(q.codebook, q0.codebook)
        np.testing.assert_array_equal(q.scales, q0.scales)
        D2, I2 = back.search(xq, 6)
        np.testing.assert_array_equal(I, I2)
        np.testing.assert_array_equal(D, D2)
    back = drqindex.read_index(str(path))
    back.add(xb[:50]), index.add(xb[:50])
    np.testing.assert_array_equal(back.search(xq, 6)[1], index.search(xq, 6)[1])
    # A shared-codebook index still writes CBKF (and no CBKM).
    shared = drqindex.IndexIVFDRQ(faiss.IndexFlatL2(D_DIM), D_DIM, NLIST, iters=M)
    shared.set_quantizers(make_quantizer(D_DIM, M), np.ascontiguousarray(xb[:NLIST]))
    blob = bytes(drqindex.serialize_index(shared))
    assert b"CBKF" in blob and b"CBKM" not in blob
    assert drqindex.deserialize_index(blob).codebooks == "shared"


def test_untrained_round_trip_keeps_the_form_and_wrong_codebook_size_is_refused():
    index = drqindex.IndexIVFDRQ(faiss.IndexFlatL2(16), 16, 8, iters=4, codebooks="per_iteration")
    back = drqindex.deserialize_index(drqindex.serialize_index(index))
    assert not back.is_trained and back.codebooks == "per_iteration"
    # A per-iteration codebook section whose size does not match (M, K, d) is refused.
    trained, _ = make_pi_ivf(n=300, M=4)
    from drqindex import io as drq_io
    real = drq_io._le

    def shrink(arr, dtype):
        out = real(arr, dtype)
        return out[:-1] if out.ndim == 3 else out  # drops the last codebook

    import unittest.mock
    with unittest.mock.patch.object(drq_io, "_le", shrink):
        data = drqindex.serialize_index(trained)
    with pytest.raises(drqindex.IndexFileError, match="CBKM.*expected 65536 bytes"):
        drqindex.deserialize_index(data)


def test_train_per_iteration_end_to_end():
    # The real trainer (greedy, small): the codebooks keyword reaches DRQTrainConfig, a
    # per-iteration model comes back, and a train_config of the other form is refused.
    from drqindex.train import DRQTrainConfig
    rng = np.random.default_rng(4)
    xt = rng.standard_normal((800, 8)).astype(np.float32)
    index = drqindex.IndexIVFDRQ(faiss.IndexFlatL2(8), 8, 4, iters=3, codebooks="per_iteration",
                                 train_config={"per_iteration_sample": 800, "per_iteration_kmeans_iters": 2})
    index.train(xt)
    assert index.codebooks == "per_iteration" and index.train_info["codebooks"] == "per_iteration"
    assert index.drq_quantizer.per_iteration and index.drq_quantizer.codebook.shape == (3, 256, 8)
    index.add(xt[:300])
    D, I = index.search(xt[:5], 4, nprobe=2, iters=2)
    assert_matches_reference(index, xt[:5], D, I, 4, 2, 2)
    bad = drqindex.IndexIVFDRQ(faiss.IndexFlatL2(8), 8, 4, iters=3,
                               train_config=DRQTrainConfig(iters=3, codebooks="per_iteration"))
    with pytest.raises(ValueError, match="train_config.codebooks: expected 'shared'"):
        bad.train(xt)


@pytest.mark.parametrize("metric", [drqindex.METRIC_L2, drqindex.METRIC_INNER_PRODUCT])
def test_faiss_export_uses_the_per_iteration_codebooks(metric):
    index, xb = make_pi_ivf(n=600, metric=metric)
    xq = np.random.default_rng(11).standard_normal((20, index.d)).astype(np.float32)
    for m in (3, M):
        exported = drqindex.to_faiss(index, iters=m)
        exported.nprobe = 3
        D1, I1 = index.search(xq, 5, nprobe=3, iters=m)
        D2, I2 = exported.search(xq, 5)
        np.testing.assert_allclose(D1, D2, rtol=1e-4, atol=1e-4)
        assert (I1 == I2).mean() > 0.95  # ties may be ordered differently (by id / storage order)
