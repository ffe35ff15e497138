"""Search-time filtering (SearchParametersDRQ(sel=...), faiss's SearchParameters.sel): the
filtered search must equal a search over an index holding only the selected vectors."""
import faiss
import numpy as np
import pytest

import drqindex
from drqindex import _core
from conftest import make_index

FLT_MAX = np.finfo(np.float32).max


def subset_index(index, mask):
    """An index with exactly the selected vectors: same codes, norms, ids and relative order, so
    its distances are bit-identical and ties rank the same way."""
    sub = drqindex.IndexDRQ(index.d, iters=index.iters, metric=index.metric_type)
    sub.set_quantizer(index.quantizer)
    n = index.ntotal
    codes, norms, ids = index._store.get_codes(0, n), index._store.get_norms(0, n), index.get_ids()
    sub._append_encoded(np.ascontiguousarray(codes[mask]), np.ascontiguousarray(norms[mask]),
                        np.ascontiguousarray(ids[mask]))
    return sub


SELECTORS = [
    ("array", lambda: np.arange(0, 3000, 7)),
    ("Batch", lambda: faiss.IDSelectorBatch(np.arange(5, 3000, 11).astype(np.int64))),
    ("Range", lambda: faiss.IDSelectorRange(100, 1900)),
    ("Not", lambda: faiss.IDSelectorNot(faiss.IDSelectorRange(0, 2500))),
    ("few", lambda: np.array([17, 2999, 400])),
]


@pytest.fixture(scope="module", params=[drqindex.METRIC_L2, drqindex.METRIC_INNER_PRODUCT], ids=["L2", "IP"])
def index(request):
    index, _ = make_index(d=16, M=6, n=3000, metric=request.param, seed=3)
    index.remove_ids(np.arange(0, 3000, 13))  # ids are not positions
    return index


@pytest.mark.parametrize("name,make", SELECTORS, ids=[n for n, _ in SELECTORS])
def test_filtered_search_equals_search_on_the_selected_subset(index, name, make):
    rng = np.random.default_rng(5)
    sel = make()
    ids = index.get_ids()
    mask = np.isin(ids, sel) if isinstance(sel, np.ndarray) else np.array([sel.is_member(int(i)) for i in ids])
    sub = subset_index(index, mask)
    for nq in (1, 40):  # one query: the database is split between threads; many: split by query
        xq = rng.standard_normal((nq, 16)).astype(np.float32)
        for iters in (2, 6):
            params = drqindex.SearchParametersDRQ(iters=iters, sel=sel)
            D, I = index.search(xq, 10, params=params)
            Dr, Ir = sub.search(xq, 10, iters=iters)
            np.testing.assert_array_equal(I, Ir)
            np.testing.assert_array_equal(D, Dr)
            assert np.isin(I[I >= 0], ids[mask]).all()
    if mask.sum() < 10:  # fewer selected than k: faiss's padding
        assert (I[:, mask.sum():] == -1).all()
        expected_pad = FLT_MAX if index.metric_type == drqindex.METRIC_L2 else -FLT_MAX
        assert (D[:, mask.sum():] == expected_pad).all()


def test_filter_is_the_same_at_every_simd_level(index):
    rng = np.random.default_rng(6)
    xq = rng.standard_normal((7, 16)).astype(np.float32)
    params = drqindex.SearchParametersDRQ(iters=4, sel=faiss.IDSelectorRange(0, 1500))
    before = drqindex.simd_level()
    results = []
    try:
        for level in drqindex.supported_simd_levels():
            drqindex.set_simd_level(level)
            results.append(index.search(xq, 12, params=params))
    finally:
        drqindex.set_simd_level(before)
    # And the core's scalar reference with the same mask.
    tables, qnorms = index.quantizer.query_tables(xq)
    allowed = ((index.get_ids() >= 0) & (index.get_ids() < 1500)).view(np.uint8)
    ref = _core.search_reference(index._store, tables, qnorms, index.quantizer.scales, 4, 12,
                                 index._core_metric(), allowed)
    for D, I in results:
        np.testing.assert_array_equal(I, ref[1])
        np.testing.assert_array_equal(D, ref[0])


def test_selecting_nothing_and_everything(index):
    xq = np.zeros((3, 16), np.float32)
    D, I = index.search(xq, 5, params=drqindex.SearchParametersDRQ(sel=np.empty(0, np.int64)))
    assert (I == -1).all()
    D_all, I_all = index.search(xq, 5, params=drqindex.SearchParametersDRQ(sel=faiss.IDSelectorAll()))
    D_ref, I_ref = index.search(xq, 5)
    np.testing.assert_array_equal(I_all, I_ref)
    np.testing.assert_array_equal(D_all, D_ref)


def test_filtered_range_search(index):
    rng = np.random.default_rng(8)
    xq = rng.standard_normal((10, 16)).astype(np.float32)
    sel = faiss.IDSelectorRange(200, 2200)
    mask = (index.get_ids() >= 200) & (index.get_ids() < 2200)
    sub = subset_index(index, mask)
    D, _ = sub.search(xq, 300)
    radius = float(np.median(D[:, 150])) if index.metric_type == drqindex.METRIC_L2 else float(np.median(D[:, 150]))
    got = index.range_search(xq, radius, params=drqindex.SearchParametersDRQ(sel=sel))
    expected = sub.range_search(xq, radius)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_refine_wrapper_passes_the_filter():
    rng = np.random.default_rng(9)
    xb = rng.standard_normal((400, 8)).astype(np.float32)
    refine = drqindex.index_factory(8, "DRQ4,Refine(Flat)")
    base, _ = make_index(d=8, M=4, n=0)
    refine.base_index.set_quantizer(base.quantizer)
    refine.k_factor = 4
    refine.add(xb)
    D, I = refine.search(xb[:20], 5, params=drqindex.SearchParametersDRQ(sel=faiss.IDSelectorRange(0, 100)))
    assert ((I >= 0) & (I < 100)).all()
    assert (I[:, 0] == np.arange(20)).all()  # each query finds itself (exact re-ranking)


def test_bad_filters_raise(index):
    xq = np.zeros((1, 16), np.float32)
    with pytest.raises(TypeError, match="params.sel: expected a 1-D int64 array of ids or a faiss.IDSelector"):
        index.search(xq, 1, params=drqindex.SearchParametersDRQ(sel=[1, 2]))
    with pytest.raises(TypeError, match="params.sel: expected a 1-D integer array"):
        index.search(xq, 1, params=drqindex.SearchParametersDRQ(sel=np.array([0.5])))
    tables, qnorms = index.quantizer.query_tables(xq)
    with pytest.raises(ValueError, match="filter mask has"):
        _core.search(index._store, tables, qnorms, index.quantizer.scales, 2, 1, 0,
                     np.ones(index.ntotal + 1, np.uint8))


def test_filter_when_one_query_splits_the_database_between_threads():
    # nq = 1 and enough work: the core splits the database into slices and merges their heaps.
    index, _ = make_index(d=8, M=6, n=100_000, seed=4)
    sel = faiss.IDSelectorRange(30_000, 30_050)
    mask = (index.get_ids() >= 30_000) & (index.get_ids() < 30_050)
    sub = subset_index(index, mask)
    xq = np.random.default_rng(10).standard_normal((1, 8)).astype(np.float32)
    before = drqindex.get_num_threads()
    try:
        drqindex.set_num_threads(2)
        D, I = index.search(xq, 60, params=drqindex.SearchParametersDRQ(sel=sel))
    finally:
        drqindex.set_num_threads(before)
    Dr, Ir = sub.search(xq, 60)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)
    assert (I[0, 50:] == -1).all() and (D[0, 50:] == FLT_MAX).all()


def test_faiss_search_parameters_with_sel_are_accepted(index):
    # Code written for faiss passes faiss.SearchParameters(sel=...): same result as ours.
    xq = np.random.default_rng(11).standard_normal((4, 16)).astype(np.float32)
    sel = faiss.IDSelectorRange(0, 1000)
    D1, I1 = index.search(xq, 8, params=faiss.SearchParameters(sel=sel), iters=3)
    D2, I2 = index.search(xq, 8, params=drqindex.SearchParametersDRQ(sel=sel, iters=3))
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)
    radius = 1e9 if index.metric_type == drqindex.METRIC_L2 else -1e9  # everything selected is inside
    lims, D, I = index.range_search(xq, radius, params=faiss.SearchParameters(sel=sel))
    selected = index.get_ids()[index.get_ids() < 1000]
    assert (np.diff(lims.astype(np.int64)) == selected.size).all() and np.isin(I, selected).all()
