"""IndexRefineFlat ("DRQ<M>,Refine(Flat)"): candidates from the codes, exact re-ranking."""
import pickle

import numpy as np
import pytest

import drqindex
from conftest import make_quantizer


def exact(xb, ids, xq, k, metric):
    xb64, xq64 = xb.astype(np.float64), xq.astype(np.float64)
    if metric == drqindex.METRIC_L2:
        dist = ((xq64[:, None] - xb64[None]) ** 2).sum(-1)
        order = np.argsort(dist, 1, kind="stable")[:, :k]
    else:
        dist = xq64 @ xb64.T
        order = np.argsort(-dist, 1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, 1), ids[order]


def build(metric, n=500, d=16, M=4, k_factor=1.0, seed=0):
    rng = np.random.default_rng(seed)
    xb = rng.standard_normal((n, d)).astype(np.float32)
    index = drqindex.IndexRefineFlat(drqindex.IndexDRQ(d, iters=M, metric=metric), k_factor=k_factor)
    index.base_index.set_quantizer(make_quantizer(d, M, data=xb if n >= 256 else None))
    return index, xb, rng


@pytest.mark.parametrize("metric", [drqindex.METRIC_L2, drqindex.METRIC_INNER_PRODUCT])
def test_reranked_results_are_exact_distances_of_the_code_candidates(metric):
    index, xb, rng = build(metric, k_factor=4)
    ids = np.arange(500) * 3 + 1
    index.add_with_ids(xb, ids)
    xq = rng.standard_normal((20, 16)).astype(np.float32)
    D, I = index.search(xq, 5, iters=2)
    # Reference: exact ranking restricted to the 20 candidates the codes return at iters=2.
    _, cand = index.base_index.search(xq, 20, iters=2)
    for q in range(20):
        rows = np.searchsorted(ids, cand[q])
        Dr, Ir = exact(xb[rows], cand[q], xq[q:q + 1], 5, metric)
        np.testing.assert_array_equal(I[q], Ir[0])
        np.testing.assert_allclose(D[q], Dr[0], rtol=1e-5, atol=1e-5)


def test_refinement_improves_recall_and_k_factor_helps():
    index, xb, rng = build(drqindex.METRIC_L2, n=2000, M=2)
    index.add(xb)
    xq = rng.standard_normal((50, 16)).astype(np.float32)
    _, gt = exact(xb, np.arange(2000), xq, 10, drqindex.METRIC_L2)
    recall = lambda I: np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, gt)])  # noqa: E731
    base = recall(index.base_index.search(xq, 10)[1])
    refined = recall(index.search(xq, 10)[1])
    index.k_factor = 8
    more = recall(index.search(xq, 10)[1])
    assert base <= refined < more and more > 2 * base, (base, refined, more)
    # All candidates re-ranked = exact search.
    index.k_factor = 2000 / 10
    np.testing.assert_array_equal(index.search(xq, 10)[1], gt)


def test_duplicate_ids_remove_reset_padding_and_persistence(tmp_path):
    index, xb, rng = build(drqindex.METRIC_L2, n=50, k_factor=2)
    index.add_with_ids(xb[:30], np.arange(30))
    index.add_with_ids(xb[30:], np.arange(20))  # ids 0..19 stored twice
    xq = xb[35:36] + 1e-3
    D, I = index.search(xq, 3)
    assert I[0, 0] == 5 and D[0, 0] < 1e-4  # the second copy of id 5 is found by its own raw vector
    np.testing.assert_array_equal(index.reconstruct(25), xb[25])
    assert index.remove_ids(np.array([5, 40])) == 2
    assert index.ntotal == 48
    np.testing.assert_array_equal(index.raw_vectors(), np.delete(xb, [5, 35], axis=0))
    D, I = index.search(xq, 60)
    assert (I[0, 48:] == -1).all() and (D[0, 48:] == np.finfo(np.float32).max).all() and 5 not in I
    for back in (pickle.loads(pickle.dumps(index)), _via_file(index, tmp_path)):
        assert isinstance(back, drqindex.IndexRefineFlat) and back.k_factor == 2
        np.testing.assert_array_equal(back.raw_vectors(), index.raw_vectors())
        for a, b in zip(back.search(xb[:7], 4), index.search(xb[:7], 4)):
            np.testing.assert_array_equal(a, b)
    index.reset()
    assert index.ntotal == 0 and index.raw_vectors().shape == (0, 16)
    with pytest.raises(RuntimeError, match="empty"):
        index.search(xq, 1)
    index.add(xb[:3])
    assert index.search(xb[:1], 1)[1][0, 0] == 0


def _via_file(index, tmp_path):
    path = tmp_path / "refine.drq"
    drqindex.write_index(index, path)
    return drqindex.read_index(path, mmap=True)


def test_errors():
    with pytest.raises(TypeError, match="expected a drqindex.IndexDRQ"):
        drqindex.IndexRefineFlat(object())
    index, xb, _ = build(drqindex.METRIC_L2, n=10)
    with pytest.raises(ValueError, match="k_factor: expected a number >= 1"):
        index.k_factor = 0.5
    index.base_index.add(xb)
    with pytest.raises(ValueError, match="expected an empty index"):
        drqindex.IndexRefineFlat(index.base_index)
    untrained = drqindex.IndexRefineFlat(drqindex.IndexDRQ(8, iters=2))
    with pytest.raises(RuntimeError, match="not trained"):
        untrained.add(np.zeros((1, 8), np.float32))
    assert not pickle.loads(pickle.dumps(untrained)).is_trained
