"""IndexIVFDRQ: search against a brute-force numpy reference over the same codes, truncation,
SIMD levels and threads, ids, removal, parameters and their errors, factory strings.
Quantizers come from conftest.make_quantizer (no torch) except in the one training test."""
import faiss
import numpy as np
import pytest
from conftest import make_quantizer

import drqindex
from drqindex import _core

FLT_MAX = np.finfo(np.float32).max


def make_ivf(d=16, nlist=8, M=8, n=1500, metric=drqindex.METRIC_L2, seed=0, coarse=None):
    rng = np.random.default_rng(seed)
    xb = rng.standard_normal((n, d)).astype(np.float32)
    centroids = np.ascontiguousarray(xb[rng.choice(n, nlist, replace=False)])
    if coarse is None:
        coarse = faiss.IndexFlatL2(d) if metric == drqindex.METRIC_L2 else faiss.IndexFlatIP(d)
    index = drqindex.IndexIVFDRQ(coarse, d, nlist, iters=M, metric=metric)
    index.set_quantizers(make_quantizer(d, M, seed, xb), centroids)
    index.add(xb)
    return index, xb


def brute_force(index, xq, k, nprobe, m):
    """Exact float64 distances to c_l + decode(code, m) over the nprobe lists nearest each query."""
    _, probed = index.quantizer.search(xq, nprobe)
    D = np.full((xq.shape[0], k), np.inf)
    I = np.full((xq.shape[0], k), -1, np.int64)
    ip = index.metric_type == drqindex.METRIC_INNER_PRODUCT
    for qi, q in enumerate(xq.astype(np.float64)):
        dist, ids = [], []
        for l in probed[qi]:
            codes, _, lid = index.get_list(int(l))
            rec = index.centroids[l].astype(np.float64) + index.drq_quantizer.decode(codes, m).astype(np.float64)
            dist.append(rec @ q if ip else ((rec - q) ** 2).sum(1))
            ids.append(lid)
        dist, ids = np.concatenate(dist), np.concatenate(ids)
        order = np.argsort(-dist if ip else dist, kind="stable")[:k]
        D[qi, :order.size], I[qi, :order.size] = dist[order], ids[order]
    return D, I


def exact_distance_of(index, q, key, m):
    rec = index.reconstruct(int(key), m).astype(np.float64)
    if index.metric_type == drqindex.METRIC_INNER_PRODUCT:
        return rec @ q
    return ((rec - q) ** 2).sum()


def assert_matches_reference(index, xq, D, I, k, nprobe, m):
    Dr, Ir = brute_force(index, xq, k, nprobe, m)
    scale = np.abs(Dr[np.isfinite(Dr)]).max()
    # Same ranked distances (float32 vs float64 rounding only), and every reported id really has
    # the reported distance (so near-ties may swap, but never a wrong vector).
    np.testing.assert_allclose(D, Dr, rtol=1e-4, atol=1e-5 * scale)
    for qi in range(xq.shape[0]):
        for key, dist in zip(I[qi], D[qi]):
            assert abs(exact_distance_of(index, xq[qi].astype(np.float64), key, m) - dist) <= 1e-5 * scale
    assert (I == Ir).mean() > 0.97


@pytest.mark.parametrize("metric", [drqindex.METRIC_L2, drqindex.METRIC_INNER_PRODUCT])
@pytest.mark.parametrize("nprobe,m", [(1, 8), (3, 5), (8, 2)])
def test_search_equals_brute_force_over_probed_lists(metric, nprobe, m):
    index, xb = make_ivf(metric=metric)
    xq = np.random.default_rng(5).standard_normal((20, index.d)).astype(np.float32)
    D, I = index.search(xq, 10, nprobe=nprobe, iters=m)
    assert D.dtype == np.float32 and I.dtype == np.int64 and D.shape == I.shape == (20, 10)
    assert_matches_reference(index, xq, D, I, 10, nprobe, m)


def test_nprobe_nlist_equals_flat_search_over_reconstructions():
    index, xb = make_ivf()
    m = 6
    xq = np.random.default_rng(6).standard_normal((15, index.d)).astype(np.float32)
    D, I = index.search(xq, 7, params=drqindex.SearchParametersIVFDRQ(nprobe=index.nlist, iters=m))
    ids = index.get_ids()
    rec = np.stack([index.reconstruct(int(i), m) for i in ids]).astype(np.float64)
    dist = ((xq.astype(np.float64)[:, None, :] - rec[None]) ** 2).sum(-1)
    order = np.argsort(dist, axis=1, kind="stable")[:, :7]
    np.testing.assert_allclose(D, np.take_along_axis(dist, order, 1), rtol=1e-4, atol=1e-4)
    assert (I == ids[order]).mean() > 0.97


def test_truncated_iters_equals_index_with_truncated_quantizer():
    index, xb = make_ivf(M=8)
    short = drqindex.IndexIVFDRQ(faiss.IndexFlatL2(index.d), index.d, index.nlist, iters=3)
    short.set_quantizers(index.drq_quantizer.truncated(3), index.centroids)
    short.add(xb)
    xq = np.random.default_rng(7).standard_normal((25, index.d)).astype(np.float32)
    D1, I1 = index.search(xq, 10, nprobe=4, iters=3)
    D2, I2 = short.search(xq, 10, nprobe=4)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_allclose(D1, D2, rtol=1e-6, atol=1e-5)


def _core_inputs(index, xq, nprobe):
    coarse, lists = index.quantizer.search(xq, nprobe)
    tables = np.ascontiguousarray(xq @ index.drq_quantizer.codebook.T, dtype=np.float32)
    return tables, np.ascontiguousarray(coarse), np.ascontiguousarray(lists, dtype=np.int64)


@pytest.mark.parametrize("metric", [0, 1])
@pytest.mark.parametrize("nq", [1, 3, 40])
def test_every_simd_level_and_thread_count_equals_scalar_reference(metric, nq):
    index, _ = make_ivf(metric=metric, n=3000)
    xq = np.random.default_rng(8).standard_normal((nq, index.d)).astype(np.float32)
    tables, coarse, lists = _core_inputs(index, xq, 5)
    scales = index.drq_quantizer.scales
    Dr, Ir = _core.ivf_search_reference(index._store, tables, coarse, lists, scales, 7, 9, metric)
    level0, threads0 = _core.simd_level(), _core.get_num_threads()
    try:
        for level in _core.supported_simd_levels():
            _core.set_simd_level(level)
            for threads in (1, 2, 5):
                _core.set_num_threads(threads)
                D, I = _core.ivf_search(index._store, tables, coarse, lists, scales, 7, 9, metric)
                np.testing.assert_array_equal(D, Dr)
                np.testing.assert_array_equal(I, Ir)
    finally:
        _core.set_simd_level(level0)
        _core.set_num_threads(threads0)


def test_padding_when_probed_lists_hold_fewer_than_k():
    index, _ = make_ivf(n=300, nlist=8)
    xq = np.random.default_rng(9).standard_normal((4, index.d)).astype(np.float32)
    k = 200
    D, I = index.search(xq, k, nprobe=1)
    _, probed = index.quantizer.search(xq, 1)
    sizes = index.list_sizes()
    for qi in range(4):
        found = int(sizes[probed[qi, 0]])
        assert (I[qi, :found] >= 0).all() and (I[qi, found:] == -1).all()
        assert (D[qi, found:] == FLT_MAX).all()
        assert np.all(np.diff(D[qi, :found]) >= 0)
    D, I = index.search(xq, 1000, nprobe=8)  # k > ntotal
    assert I.shape == (4, 1000) and (I[:, 300:] == -1).all() and (D[:, 300:] == FLT_MAX).all()


def test_ids_add_with_ids_remove_and_reset():
    index, xb = make_ivf(n=400)
    assert index.ntotal == 400 and sorted(index.get_ids()) == list(range(400))
    index.add_with_ids(xb[:10] + 0.01, np.arange(1000, 1010))
    index.add(xb[:5])  # continues from ntotal, as faiss IVF
    assert set(index.get_ids()) == set(range(400)) | set(range(1000, 1010)) | set(range(410, 415))
    assert index.remove_ids(np.arange(0, 400, 2)) == 200
    assert index.remove_ids(faiss.IDSelectorRange(1000, 1005)) == 5
    assert index.ntotal == 210 and index.list_sizes().sum() == 210
    xq = xb[:30]
    D, I = index.search(xq, 10, nprobe=index.nlist)
    assert not np.isin(I, np.arange(0, 400, 2)).any() and not np.isin(I, np.arange(1000, 1005)).any()
    assert_matches_reference(index, xq, D, I, 10, index.nlist, index.iters)
    index.reset()
    assert index.ntotal == 0 and index.is_trained and index.memory_usage() == 0
    with pytest.raises(RuntimeError, match="empty"):
        index.search(xq, 1)


def test_selector_in_search_params():
    index, xb = make_ivf(n=800)
    xq = xb[:10]
    allowed = np.arange(0, 800, 3)
    D, I = index.search(xq, 10, params=drqindex.SearchParametersIVFDRQ(nprobe=index.nlist, sel=allowed))
    assert np.isin(I[I >= 0], allowed).all()
    sel = faiss.IDSelectorBatch(allowed)
    D2, I2 = index.search(xq, 10, params=faiss.SearchParametersIVF(sel=sel, nprobe=index.nlist))
    np.testing.assert_array_equal(I, I2)


def test_nprobe_attribute_and_search_iters_attribute():
    index, xb = make_ivf()
    xq = xb[:12]
    index.nprobe = 3
    index.search_iters = 4
    D1, I1 = index.search(xq, 5)
    D2, I2 = index.search(xq, 5, params=drqindex.SearchParametersIVFDRQ(nprobe=3, iters=4))
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)
    with pytest.raises(ValueError, match="nprobe: expected 1..8, got 9"):
        index.nprobe = 9
    with pytest.raises(ValueError, match="nprobe: expected 1..8, got 0"):
        index.nprobe = 0
    with pytest.raises(ValueError, match="iters: expected 1..8, got 9"):
        index.search_iters = 9


@pytest.mark.parametrize("kwargs,exc,message", [
    ({"nprobe": 0}, ValueError, "nprobe: expected 1..8, got 0"),
    ({"nprobe": 9}, ValueError, "nprobe: expected 1..8, got 9"),
    ({"iters": 0}, ValueError, "iters: expected 1..8, got 0"),
    ({"iters": 9}, ValueError, "iters: expected 1..8, got 9"),
    ({"nprobe": 2.0}, TypeError, "nprobe: expected an int"),
    ({"params": drqindex.SearchParametersDRQ(iters=2)}, TypeError, "SearchParametersIVFDRQ"),
    ({"params": drqindex.SearchParametersIVFDRQ(nprobe=2), "nprobe": 3}, ValueError, "given both"),
])
def test_bad_search_arguments(kwargs, exc, message):
    index, xb = make_ivf()
    with pytest.raises(exc, match=message):
        index.search(xb[:2], 3, **kwargs)


def test_bad_inputs_and_untrained():
    coarse = faiss.IndexFlatL2(16)
    index = drqindex.IndexIVFDRQ(coarse, 16, 8, iters=4)
    x = np.zeros((3, 16), np.float32)
    for call in (lambda: index.search(x, 1), lambda: index.add(x)):
        with pytest.raises(RuntimeError, match="not trained"):
            call()
    with pytest.raises(ValueError, match=r"expected a coarse quantizer of dimension d=16, got d=8"):
        drqindex.IndexIVFDRQ(faiss.IndexFlatL2(8), 16, 8)
    with pytest.raises(ValueError, match="expected metric_type 0 .the index.s metric., got 1"):
        drqindex.IndexIVFDRQ(faiss.IndexFlatL2(16), 16, 8, metric=drqindex.METRIC_INNER_PRODUCT)
    with pytest.raises(ValueError, match="nlist: expected"):
        drqindex.IndexIVFDRQ(coarse, 16, 0)
    index, xb = make_ivf()
    with pytest.raises(ValueError, match=r"expected shape \(n, 16\) float32, got \(3, 15\)"):
        index.search(np.zeros((3, 15), np.float32), 1)
    with pytest.raises(ValueError, match=r"centroids: expected shape \(8, 16\)"):
        drqindex.IndexIVFDRQ(faiss.IndexFlatL2(16), 16, 8, iters=8).set_quantizers(
            index.drq_quantizer, np.zeros((7, 16), np.float32))
    with pytest.raises(ValueError, match="list_nos.*outside"):
        index._store.add(np.zeros((1, 8), np.uint8), np.zeros((1, 8), np.float32),
                         np.zeros(1, np.int64), np.array([8], np.int64))
    assert index.ntotal == 1500  # all or nothing


def test_hnsw_coarse_quantizer_and_factory():
    index, xb = make_ivf(coarse=faiss.IndexHNSWFlat(16, 8))
    xq = xb[:10]
    D, I = index.search(xq, 5, nprobe=3)
    assert_matches_reference(index, xq, D, I, 5, 3, index.iters)
    f = drqindex.index_factory(16, "IVF8,DRQ4")
    assert isinstance(f, drqindex.IndexIVFDRQ) and isinstance(f.quantizer, faiss.IndexFlatL2)
    assert (f.nlist, f.iters, f.metric_type) == (8, 4, drqindex.METRIC_L2)
    f = drqindex.index_factory(16, "IVF8,DRQ4", drqindex.METRIC_INNER_PRODUCT)
    assert isinstance(f.quantizer, faiss.IndexFlatIP)
    f = drqindex.index_factory(16, "IVF8_HNSW32,DRQ4")
    assert isinstance(f.quantizer, faiss.IndexHNSWFlat) and f.quantizer.hnsw.nb_neighbors(0) == 64
    with pytest.raises(ValueError, match="refinement of an IVF"):
        drqindex.index_factory(16, "IVF8,DRQ4,RFlat")


def test_memory_usage_counts_codes_terms_ids():
    index, _ = make_ivf(n=1500, nlist=8, M=8)
    sizes = index.list_sizes()
    padded = int(sum(-(-s // 32) * 32 for s in sizes))
    assert index.memory_usage() == padded * 8 + 1500 * (8 * 4 + 8)
    assert index.bytes_per_vector(4) == 4 + 4 + 8


def test_train_runs_coarse_kmeans_then_drq_on_residuals(monkeypatch):
    # The torch trainer is replaced by a stand-in (no torch import, milliseconds): this checks the
    # plumbing (k-means centroids added to the coarse quantizer, the DRQ trainer called through
    # DRQTrainConfig with the index's iters on the residuals x - c_assign(x)); the trainer itself
    # is tested in test_train_drq.py.
    import dataclasses
    import sys
    import types

    @dataclasses.dataclass
    class FakeConfig:
        iters: int = 16
        codebooks: str = "shared"
        max_seconds: float | None = None
        verbose: bool = False

    seen = {}

    def fake_train(x, cfg):
        seen["x"], seen["cfg"] = x.copy(), cfg
        q = make_quantizer(x.shape[1], cfg.iters, 0, x)
        return q.codebook, q.scales, {"fake": True}

    train_pkg = types.ModuleType("drqindex.train")
    drq_mod = types.ModuleType("drqindex.train.drq")
    drq_mod.DRQTrainConfig, drq_mod.train_drq = FakeConfig, fake_train
    train_pkg.drq = drq_mod
    monkeypatch.setitem(sys.modules, "drqindex.train", train_pkg)
    monkeypatch.setitem(sys.modules, "drqindex.train.drq", drq_mod)

    xt = np.random.default_rng(3).standard_normal((600, 8)).astype(np.float32)
    index = drqindex.IndexIVFDRQ(faiss.IndexFlatL2(8), 8, 4, iters=3, train_config={"max_seconds": 7})
    index.train(xt)
    assert index.is_trained and index.quantizer.ntotal == 4 and index.train_info == {"fake": True}
    assert seen["cfg"] == FakeConfig(iters=3, max_seconds=7)
    _, assign = index.quantizer.search(xt, 1)
    np.testing.assert_allclose(seen["x"], xt - index.centroids[assign[:, 0]], atol=1e-6)
    index.add(xt)
    D, I = index.search(xt[:5], 3, nprobe=4)
    assert_matches_reference(index, xt[:5], D, I, 3, 4, 3)
    with pytest.raises(RuntimeError, match="already holds 600"):
        index.train(xt)
    with pytest.raises(ValueError, match="at least 256 training vectors"):
        drqindex.IndexIVFDRQ(faiss.IndexFlatL2(8), 8, 4, iters=3).train(xt[:100])


@pytest.mark.parametrize("coarse", ["flat", "hnsw"])
def test_save_load_round_trip(tmp_path, coarse):
    import pickle
    index, xb = make_ivf(n=700, coarse=faiss.IndexHNSWFlat(16, 8) if coarse == "hnsw" else None)
    index.remove_ids(np.arange(0, 700, 5))
    index.nprobe, index.search_iters = 3, 5
    xq = xb[:20]
    D, I = index.search(xq, 6)
    path = tmp_path / "ivf.drq"
    drqindex.write_index(index, str(path))
    for back in (drqindex.read_index(str(path)), drqindex.read_index(str(path), mmap=True),
                 drqindex.deserialize_index(drqindex.serialize_index(index)), pickle.loads(pickle.dumps(index))):
        assert isinstance(back, drqindex.IndexIVFDRQ)
        assert (back.nlist, back.iters, back.nprobe, back.search_iters, back.ntotal) == (8, 8, 3, 5, 560)
        np.testing.assert_array_equal(back.list_sizes(), index.list_sizes())
        D2, I2 = back.search(xq, 6)
        np.testing.assert_array_equal(I, I2)
        np.testing.assert_array_equal(D, D2)
    # Adding to the loaded index behaves as adding to the original.
    back = drqindex.read_index(str(path))
    back.add(xb[:50]), index.add(xb[:50])
    np.testing.assert_array_equal(back.search(xq, 6)[1], index.search(xq, 6)[1])


def test_untrained_round_trip_and_corrupt_coarse_section():
    index = drqindex.IndexIVFDRQ(faiss.IndexFlatL2(16), 16, 8, iters=4)
    back = drqindex.deserialize_index(drqindex.serialize_index(index))
    assert isinstance(back, drqindex.IndexIVFDRQ) and not back.is_trained and back.nlist == 8
    trained, _ = make_ivf(n=300)
    data = drqindex.serialize_index(trained).copy()
    blob = bytes(data)
    at = blob.index(b"CQIX") + 32 + 10  # a byte inside the coarse quantizer's payload
    data[at] ^= 0xFF
    with pytest.raises(drqindex.IndexFileError, match="CQIX.*checksum mismatch"):
        drqindex.deserialize_index(data)
