"""The rest of faiss's Index surface on IndexDRQ: range_search, reconstruct_batch, merge_from,
add_sa_codes / sa_code_size, remove_ids with faiss selectors, and index_factory."""
import faiss
import numpy as np
import pytest

import drqindex
from conftest import make_index, make_quantizer


def adc_distances(index, xq, iters):
    """Every query-to-code distance, float64, from the decoded reconstructions (the reference)."""
    recon = index.reconstruct_n(0, index.ntotal, iters=iters).astype(np.float64)
    q = xq.astype(np.float64)
    if index.metric_type == drqindex.METRIC_L2:
        return ((q[:, None, :] - recon[None]) ** 2).sum(-1)
    return q @ recon.T


# ------------------------------------------------------------------------------ range_search
@pytest.mark.parametrize("metric", [drqindex.METRIC_L2, drqindex.METRIC_INNER_PRODUCT])
@pytest.mark.parametrize("iters", [2, 6])
def test_range_search_equals_brute_force_on_codes(metric, iters, rng):
    index, _ = make_index(d=12, M=6, n=700, metric=metric)
    index.remove_ids(np.arange(0, 700, 5))
    xq = rng.standard_normal((30, 12)).astype(np.float32)
    dist = adc_distances(index, xq, iters)
    ids = index.get_ids()
    # Radii giving from no result to a few hundred per query (so k has to grow several times).
    for quantile in (0.0, 0.01, 0.2, 0.6):
        if metric == drqindex.METRIC_L2:
            radius = float(np.quantile(dist, quantile)) if quantile else 0.0
        else:
            radius = float(np.quantile(dist, 1 - quantile)) if quantile else 1e9
        lims, D, I = index.range_search(xq, radius, iters=iters)
        assert lims.dtype == np.uint64 and lims.shape == (31,) and lims[0] == 0
        assert D.dtype == np.float32 and I.dtype == np.int64 and D.shape == I.shape == (lims[-1],)
        position = {int(i): p for p, i in enumerate(ids)}
        inside = dist < radius if metric == drqindex.METRIC_L2 else dist > radius
        # Distances at the radius within float error may go either way.
        near = np.abs(dist - radius) <= 1e-4 * max(1.0, abs(radius))
        for q in range(30):
            lo, hi = int(lims[q]), int(lims[q + 1])
            got_pos = np.array([position[int(i)] for i in I[lo:hi]], dtype=np.int64)
            assert len(set(got_pos)) == got_pos.size
            assert set(np.flatnonzero(inside[q] & ~near[q])) <= set(got_pos) <= set(np.flatnonzero(inside[q] | near[q]))
            np.testing.assert_allclose(D[lo:hi], dist[q, got_pos], rtol=1e-4, atol=1e-4)


def test_range_search_params_errors_and_faiss_contrib(rng):
    index, _ = make_index(d=8, M=4, n=200)
    xq = rng.standard_normal((5, 8)).astype(np.float32)
    a = index.range_search(xq, 4.0, params=drqindex.SearchParametersDRQ(iters=2))
    b = index.range_search(xq, 4.0, iters=2)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    lims, D, I = index.range_search(xq[:0], 1.0)
    assert lims.tolist() == [0] and D.size == 0 and I.size == 0
    with pytest.raises(TypeError, match="radius: expected a float"):
        index.range_search(xq, "1")
    with pytest.raises(ValueError, match="radius: expected a finite value"):
        index.range_search(xq, float("nan"))
    index.reset()
    with pytest.raises(RuntimeError, match="empty"):
        index.range_search(xq, 1.0)


# ------------------------------------------------------------------------------ reconstruct_batch
def test_reconstruct_batch(rng):
    index, xb = make_index(d=8, M=4, n=100)
    index.remove_ids(np.array([3, 4]))
    keys = np.array([7, 0, 99, 7], np.int64)
    out = index.reconstruct_batch(keys)
    assert out.shape == (4, 8) and out.dtype == np.float32
    for row, key in zip(out, keys):
        np.testing.assert_array_equal(row, index.reconstruct(int(key)))
    np.testing.assert_array_equal(index.reconstruct_batch(keys, iters=2)[1], index.reconstruct(0, iters=2))
    assert index.reconstruct_batch(np.empty(0, np.int64)).shape == (0, 8)
    with pytest.raises(KeyError, match="id 4 is not in the index"):
        index.reconstruct_batch(np.array([5, 4, 1000]))
    with pytest.raises(TypeError, match="keys: expected a 1-D int64 array"):
        index.reconstruct_batch([1, 2])


# ------------------------------------------------------------------------------ standalone codes
@pytest.mark.parametrize("metric", [drqindex.METRIC_L2, drqindex.METRIC_INNER_PRODUCT])
def test_add_sa_codes_equals_add(metric, rng):
    d, M = 16, 6
    xb = rng.standard_normal((300, d)).astype(np.float32)
    xq = rng.standard_normal((20, d)).astype(np.float32)
    a = drqindex.IndexDRQ(d, iters=M, metric=metric)
    a.set_quantizer(make_quantizer(d, M))
    b = drqindex.IndexDRQ(d, iters=M, metric=metric)
    b.set_quantizer(a.quantizer)
    a.add(xb)
    assert a.sa_code_size() == M
    codes = a.sa_encode(xb)
    assert codes.shape == (300, a.sa_code_size())
    b.add_sa_codes(codes[:100])
    b.add_sa_codes(codes[100:], ids=np.arange(100, 300))
    np.testing.assert_array_equal(a.get_ids(), b.get_ids())
    np.testing.assert_array_equal(a._store.get_codes(0, 300), b._store.get_codes(0, 300))
    # Norms recomputed from the codes agree with the encoder's up to float rounding.
    np.testing.assert_allclose(b._store.get_norms(0, 300), a._store.get_norms(0, 300), rtol=1e-5, atol=1e-5)
    for m in (1, 3, 6):
        Da, Ia = a.search(xq, 5, iters=m)
        Db, Ib = b.search(xq, 5, iters=m)
        np.testing.assert_allclose(Da, Db, rtol=1e-4, atol=1e-4)
        assert (Ia == Ib).mean() > 0.97
    with pytest.raises(ValueError, match=r"codes: expected shape \(n, 6\) uint8"):
        b.add_sa_codes(codes[:, :4])
    with pytest.raises(TypeError, match=r"codes: expected \(n, 6\) uint8, got \(2, 6\) int64"):
        b.add_sa_codes(codes[:2].astype(np.int64))
    with pytest.raises(ValueError, match="-1 is reserved"):
        b.add_sa_codes(codes[:2], ids=np.array([1, -1]))
    assert b.ntotal == 300


# ------------------------------------------------------------------------------ merge_from
def test_merge_from_moves_codes_and_empties_other(rng):
    d, M = 12, 5
    q = make_quantizer(d, M)
    xa = rng.standard_normal((120, d)).astype(np.float32)
    xb = rng.standard_normal((80, d)).astype(np.float32)
    a, b, ref = (drqindex.IndexDRQ(d, iters=M) for _ in range(3))
    for index in (a, b, ref):
        index.set_quantizer(drqindex.DRQQuantizer(q.codebook.copy(), q.scales.copy()))
    a.add(xa)
    b.add_with_ids(xb, np.arange(1000, 1080))
    ref.add(xa)
    ref.add_with_ids(xb, np.arange(1000, 1080))
    a.merge_from(b)
    assert b.ntotal == 0 and a.ntotal == 200 and b.is_trained
    np.testing.assert_array_equal(a.get_ids(), ref.get_ids())
    xq = rng.standard_normal((10, d)).astype(np.float32)
    for x, y in zip(a.search(xq, 7), ref.search(xq, 7)):
        np.testing.assert_array_equal(x, y)
    c = drqindex.IndexDRQ(d, iters=M)
    c.set_quantizer(q)
    c.add(xb[:3])
    a.merge_from(c, add_id=5000)
    assert list(a.get_ids()[-3:]) == [5000, 5001, 5002]


def test_merge_from_refuses_a_different_quantizer():
    a, _ = make_index(d=8, M=4, n=10, seed=0)
    b, _ = make_index(d=8, M=4, n=10, seed=1)
    with pytest.raises(ValueError, match="quantizer differs"):
        a.merge_from(b)
    c, _ = make_index(d=8, M=3, n=10)
    with pytest.raises(ValueError, match="expected d=8, iters=4"):
        a.merge_from(c)
    ip, _ = make_index(d=8, M=4, n=10, metric=drqindex.METRIC_INNER_PRODUCT)
    with pytest.raises(ValueError, match="metric"):
        a.merge_from(ip)
    with pytest.raises(ValueError, match="into itself"):
        a.merge_from(a)
    with pytest.raises(TypeError, match="expected a drqindex.IndexDRQ"):
        a.merge_from(faiss.IndexFlatL2(8))
    assert a.ntotal == b.ntotal == 10


# ------------------------------------------------------------------------------ remove_ids selectors
SELECTORS = [
    ("array", lambda ids: np.array([3, 5, 5, 77, 10 ** 6])),
    ("Batch", lambda ids: faiss.IDSelectorBatch(np.array([3, 5, 77, 10 ** 6], dtype=np.int64))),
    ("Range", lambda ids: faiss.IDSelectorRange(10, 30)),
    ("Array", lambda ids: faiss.IDSelectorArray(np.array([1, 2, 64], dtype=np.int64))),
    ("Not", lambda ids: faiss.IDSelectorNot(faiss.IDSelectorRange(0, 90))),
    ("Or", lambda ids: faiss.IDSelectorOr(faiss.IDSelectorRange(0, 5), faiss.IDSelectorRange(95, 100))),
    ("And", lambda ids: faiss.IDSelectorAnd(faiss.IDSelectorRange(0, 50), faiss.IDSelectorRange(40, 100))),
    ("Bitmap", lambda ids: faiss.IDSelectorBitmap(np.packbits(np.arange(100) % 3 == 0, bitorder="little"))),
    ("All", lambda ids: faiss.IDSelectorAll()),
]


@pytest.mark.parametrize("name,make", SELECTORS, ids=[n for n, _ in SELECTORS])
def test_remove_ids_accepts_faiss_selectors(name, make):
    index, _ = make_index(d=8, M=3, n=100)
    index.add_with_ids(np.zeros((2, 8), np.float32), np.array([5, 50]))  # duplicate ids
    ids = index.get_ids()
    sel = make(ids)
    if isinstance(sel, np.ndarray):
        expected = np.isin(ids, sel)
    else:
        expected = np.array([sel.is_member(int(i)) for i in ids])  # faiss's own answer, id by id
    assert index.remove_ids(sel) == expected.sum()
    np.testing.assert_array_equal(index.get_ids(), ids[~expected])


def test_remove_ids_errors():
    index, _ = make_index(d=8, M=3, n=10)
    with pytest.raises(TypeError, match="faiss.IDSelector"):
        index.remove_ids([1, 2])
    with pytest.raises(TypeError, match="1-D int64 array or a faiss.IDSelector"):
        index.remove_ids(np.array([1.0]))
    assert index.remove_ids(np.empty(0, np.int64)) == 0
    assert index.ntotal == 10


# ------------------------------------------------------------------------------ index_factory
@pytest.mark.parametrize("desc,iters", [("DRQ16", 16), ("DRQ4x8", 4), (" DRQ1 ", 1), ("DRQ1024", 1024)])
def test_factory_builds_flat_indexes(desc, iters):
    index = drqindex.index_factory(24, desc)
    assert isinstance(index, drqindex.IndexDRQ)
    assert (index.d, index.iters, index.metric_type, index.is_trained) == (24, iters, drqindex.METRIC_L2, False)
    ip = drqindex.index_factory(24, desc, faiss.METRIC_INNER_PRODUCT)
    assert ip.metric_type == drqindex.METRIC_INNER_PRODUCT


@pytest.mark.parametrize("desc,message", [
    ("PQ16", "'PQ16' is not a known component"),
    ("", "'' is not a known component"),
    ("DRQ0", "M must be 1..1024"),
    ("DRQ2000", "M must be 1..1024"),
    ("DRQ8x4", "8 bits per iteration"),
    ("DRQ8,DRQ8", "a second encoding"),
    ("DRQ8,IVF10", "IVF component must come first"),
    ("Refine(Flat),DRQ8", "must follow the encoding"),
    ("DRQ8,Refine(PQ4)", "only Refine\\(Flat\\)"),
    ("IVF16", "no encoding component"),
])
def test_factory_refuses_unknown_strings_listing_accepted_forms(desc, message):
    with pytest.raises(ValueError, match=message) as info:
        drqindex.index_factory(8, desc)
    assert "Accepted forms: DRQ<M>" in str(info.value)


def test_factory_ivf_form_builds_an_ivf_index():
    index = drqindex.index_factory(8, "IVF1024,DRQ16")
    assert isinstance(index, drqindex.IndexIVFDRQ)
    assert (index.d, index.nlist, index.iters, index.is_trained) == (8, 1024, 16, False)


@pytest.mark.parametrize("desc", ["DRQ16,Refine(Flat)", "DRQ16,RFlat"])
def test_factory_refine_flat(desc):
    index = drqindex.index_factory(8, desc, drqindex.METRIC_INNER_PRODUCT)
    assert isinstance(index, drqindex.IndexRefineFlat) and isinstance(index.base_index, drqindex.IndexDRQ)
    assert (index.d, index.base_index.iters, index.metric_type, index.k_factor) == \
        (8, 16, drqindex.METRIC_INNER_PRODUCT, 1.0)


@pytest.mark.parametrize("metric", [drqindex.METRIC_L2, drqindex.METRIC_INNER_PRODUCT])
def test_range_search_is_bit_identical_to_search_at_every_simd_level(metric, monkeypatch):
    # The core's range scan uses the search kernel: its results are exactly the prefix of a
    # k = ntotal search inside the radius, in the same order, whatever the level or split.
    # (Both chunk the queries the same way, so their q C^T tables are computed identically.)
    # 120k vectors x 5 iterations: enough work for a single query to be split into 2 slices.
    index, _ = make_index(d=8, M=5, n=120_000, metric=metric, seed=2)
    rng = np.random.default_rng(12)
    xq = rng.standard_normal((7, 8)).astype(np.float32)
    monkeypatch.setattr(drqindex.index_drq, "QUERY_CHUNK", 3)  # several core calls, stitched
    before_level, before_threads = drqindex.simd_level(), drqindex.get_num_threads()
    try:
        drqindex.set_num_threads(2)
        for queries in (xq, xq[:1]):  # many queries: split by query; one: database slices
            Dk, Ik = index.search(queries, index.ntotal, iters=5)
            radius = float(np.median(Dk[:, 300]))
            inside = Dk < radius if metric == drqindex.METRIC_L2 else Dk > radius
            for level in drqindex.supported_simd_levels():
                drqindex.set_simd_level(level)
                lims, D, I = index.range_search(queries, radius, iters=5)
                assert lims[-1] == inside.sum()
                for q in range(queries.shape[0]):
                    lo, hi = int(lims[q]), int(lims[q + 1])
                    np.testing.assert_array_equal(I[lo:hi], Ik[q][inside[q]])
                    np.testing.assert_array_equal(D[lo:hi], Dk[q][inside[q]])
    finally:
        drqindex.set_simd_level(before_level)
        drqindex.set_num_threads(before_threads)
