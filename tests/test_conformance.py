"""One set of API assertions run against faiss.IndexFlatL2, faiss.IndexPQ, faiss.IndexIVFPQ,
drqindex.IndexDRQ and drqindex.IndexRefineFlat ("DRQ6,Refine(Flat)"): what holds for faiss's indexes must hold for ours (shapes, dtypes, padding,
ids, remove, reset), and faiss's own contrib tools must work on ours.

The deliberate differences are listed in DIFFERENCES and each test that meets one asserts the
documented behaviour explicitly instead of skipping it.
"""
import pickle

import faiss
import numpy as np
import pytest
from faiss.contrib import evaluation, exhaustive_search

import drqindex
from conftest import make_quantizer

D_DIM, NB, NT = 16, 300, 2500
FLT_MAX = np.finfo(np.float32).max
KINDS = ["Flat", "PQ", "IVFPQ", "DRQ", "DRQRefine"]

DIFFERENCES = {
    # faiss returns -1 / FLT_MAX padding for a search on an empty index; drqindex raises
    # RuntimeError, because a search that can only return padding is almost always a bug
    # (forgot to add, or searched before loading).
    "empty_search_raises": {"DRQ", "DRQRefine"},
    # IndexFlat / IndexPQ renumber the vectors after remove_ids (ids are positions); drqindex,
    # like faiss's IVF indexes and IndexIDMap, keeps every remaining id unchanged.
    "ids_renumbered_by_remove": {"Flat", "PQ"},
    # IndexFlat / IndexPQ have no add_with_ids (faiss raises RuntimeError).
    "no_add_with_ids": {"Flat", "PQ"},
}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(42)
    return (rng.standard_normal((NT, D_DIM)).astype(np.float32),
            rng.standard_normal((NB, D_DIM)).astype(np.float32),
            rng.standard_normal((12, D_DIM)).astype(np.float32))


@pytest.fixture(scope="module")
def trained(data):
    """One trained, empty index per kind (trained once per module; tests clone them)."""
    xt = data[0]
    out = {"Flat": faiss.IndexFlatL2(D_DIM)}
    # One OpenMP thread for the k-means: on a shared, loaded machine faiss's spinning threads make
    # this tiny training many times slower.
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        pq = faiss.IndexPQ(D_DIM, 4, 6)  # 6 bits: enough training points for 64 centroids, no warnings
        pq.train(xt)
        ivf = faiss.IndexIVFPQ(faiss.IndexFlatL2(D_DIM), D_DIM, 8, 4, 6)
        ivf.train(xt)
    finally:
        faiss.omp_set_num_threads(threads)
    out["PQ"] = pq
    ivf.nprobe = 8  # every list: an exhaustive scan like the others
    out["IVFPQ"] = ivf
    drq = drqindex.IndexDRQ(D_DIM, iters=6)
    drq.set_quantizer(make_quantizer(D_DIM, 6, data=xt))
    out["DRQ"] = drq
    refine = drqindex.index_factory(D_DIM, "DRQ6,Refine(Flat)")
    refine.base_index.set_quantizer(drq.quantizer)
    refine.k_factor = 4
    out["DRQRefine"] = refine
    return out


def fresh(trained, kind):
    index = trained[kind]
    if kind.startswith("DRQ"):
        return pickle.loads(pickle.dumps(index))
    return faiss.clone_index(index)


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


def test_attributes(trained, kind):
    index = fresh(trained, kind)
    assert index.d == D_DIM and index.ntotal == 0 and index.is_trained
    assert index.metric_type == faiss.METRIC_L2 == drqindex.METRIC_L2


def test_search_shapes_dtypes_order_and_padding(trained, data, kind):
    _, xb, xq = data
    index = fresh(trained, kind)
    index.add(xb)
    assert index.ntotal == NB
    D, I = index.search(xq, 10)
    assert D.shape == I.shape == (12, 10) and D.dtype == np.float32 and I.dtype == np.int64
    assert (np.diff(D, axis=1) >= 0).all() and ((I >= 0) & (I < NB)).all()
    # Caller-provided output arrays and params=None, as faiss's python search takes them.
    Dout, Iout = np.empty((12, 10), np.float32), np.empty((12, 10), np.int64)
    D2, I2 = index.search(xq, 10, params=None, D=Dout, I=Iout)
    assert D2 is Dout and I2 is Iout
    np.testing.assert_array_equal(I2, I)
    # No queries: empty results of the right shape.
    D0, I0 = index.search(xq[:0], 5)
    assert D0.shape == I0.shape == (0, 5)
    # k > ntotal: -1 ids and FLT_MAX distances past the stored vectors.
    small = fresh(trained, kind)
    small.add(xb[:7])
    D, I = small.search(xq, 10)
    assert ((I[:, :7] >= 0) & (I[:, :7] < 7)).all()
    assert (I[:, 7:] == -1).all() and (D[:, 7:] == FLT_MAX).all()


def test_add_with_ids_and_duplicate_ids(trained, data, kind):
    _, xb, xq = data
    index = fresh(trained, kind)
    ids = np.arange(NB, dtype=np.int64) * 10 + 3
    if kind in DIFFERENCES["no_add_with_ids"]:
        with pytest.raises(RuntimeError):
            index.add_with_ids(xb, ids)
        return
    index.add_with_ids(xb, ids)
    _, I = index.search(xq, 5)
    assert np.isin(I, ids).all()
    # Duplicate ids are allowed (faiss does not check); both copies are found.
    index.add_with_ids(xq[:1], np.array([77], np.int64))
    index.add_with_ids(xq[:1], np.array([77], np.int64))
    _, I = index.search(xq[:1], 2)
    assert I[0].tolist() == [77, 77]


def test_remove_then_search(trained, data, kind):
    _, xb, xq = data
    index = fresh(trained, kind)
    index.add(xb)
    removed = np.arange(0, NB, 3, dtype=np.int64)
    assert index.remove_ids(removed) == removed.size
    assert index.ntotal == NB - removed.size
    _, I = index.search(xq, 20)
    if kind in DIFFERENCES["ids_renumbered_by_remove"]:
        assert I.max() < index.ntotal  # positions, renumbered 0..ntotal-1
    else:
        assert not np.isin(I, removed).any()  # remaining ids unchanged
        kept = np.setdiff1d(np.arange(NB), removed)
        assert np.isin(I, kept).all()
    # Selectors, as faiss's remove_ids takes them.
    assert index.remove_ids(faiss.IDSelectorRange(0, 10 ** 9)) == NB - removed.size
    assert index.ntotal == 0


def test_reset_and_search_on_empty_index(trained, data, kind):
    _, xb, xq = data
    index = fresh(trained, kind)
    index.add(xb[:50])
    index.reset()
    assert index.ntotal == 0 and index.is_trained
    if kind in DIFFERENCES["empty_search_raises"]:
        with pytest.raises(RuntimeError, match="empty"):
            index.search(xq, 3)
    else:
        D, I = index.search(xq, 3)
        assert (I == -1).all() and (D == FLT_MAX).all()
    index.add(xb[:5])  # ids start again from 0
    _, I = index.search(xq, 5)
    assert sorted(I[0]) == [0, 1, 2, 3, 4]


def test_range_search_format(trained, data, kind):
    _, xb, xq = data
    index = fresh(trained, kind)
    index.add(xb)
    radius = 20.0
    lims, D, I = index.range_search(xq, radius)
    assert lims.dtype == np.uint64 and lims.shape == (13,) and lims[0] == 0
    assert D.dtype == np.float32 and I.dtype == np.int64 and D.shape == I.shape == (int(lims[-1]),)
    assert (D < radius).all()
    # Every range result is also what search finds with k = ntotal under the same radius.
    # The refine wrapper (as faiss.IndexRefine) keeps the code range search's results whose exact
    # distance is inside the radius too: the intersection of both.
    if kind == "DRQRefine":
        index.k_factor = NB
        base_lims, _, base_I = index.base_index.range_search(xq, radius)
    Dk, Ik = index.search(xq, NB)
    for q in range(12):
        expected = set(Ik[q][Dk[q] < radius])
        if kind == "DRQRefine":
            expected &= set(base_I[int(base_lims[q]):int(base_lims[q + 1])])
        got = set(I[int(lims[q]):int(lims[q + 1])])
        # Codes-based indexes agree exactly; allow float ties at the radius.
        assert len(expected ^ got) <= 1


def test_faiss_contrib_tools_accept_drqindex(data):
    xt, xb, xq = data
    index = drqindex.IndexDRQ(D_DIM, iters=8)
    index.set_quantizer(make_quantizer(D_DIM, 8, data=xt))
    index.add(xb)
    flat = faiss.IndexFlatL2(D_DIM)
    flat.add(xb)
    Dref, Iref = flat.search(xq, 10)
    D, I = index.search(xq, 10)
    recall = evaluation.knn_intersection_measure(I, Iref)
    assert 0.3 < recall <= 1.0
    # The same index against itself passes faiss's strict result check.
    evaluation.check_ref_knn_with_draws(D, I, *index.search(xq, 10))
    # Range search through faiss's helper that shrinks the radius to cap the result count.
    radius = float(np.median(Dref[:, -1]))
    lims_ref, Dr, Ir = flat.range_search(xq, radius)
    new_radius, lims, Dn, In = exhaustive_search.range_search_max_results(
        index, iter([xq[:6], xq[6:]]), radius, max_results=10 ** 6)
    assert new_radius == radius and lims.shape == (13,)
    precision, recall = evaluation.range_PR(lims_ref, Ir, lims, In)
    assert precision > 0.5 and recall > 0.5
    capped_radius, lims, Dn, In = exhaustive_search.range_search_max_results(
        index, iter([xq[:6], xq[6:]]), radius, max_results=30, min_results=20)
    assert capped_radius < radius and int(lims[-1]) <= 30
    evaluation.check_ref_range_results(*index.range_search(xq, radius), *index.range_search(xq, radius))
