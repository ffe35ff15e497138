"""IndexDRQ behaves like a faiss index and its ADC search is exact with respect to its codes."""
import numpy as np
import pytest

import drqindex
from conftest import make_index, make_quantizer

FLT_MAX = np.finfo(np.float32).max


def brute_force(recon: np.ndarray, ids: np.ndarray, xq: np.ndarray, k: int, metric: int):
    """Exact top-k over decoded reconstructions, float64: the reference ADC must reproduce."""
    xq = xq.astype(np.float64)
    recon = recon.astype(np.float64)
    if metric == drqindex.METRIC_L2:
        dist = ((xq[:, None, :] - recon[None, :, :]) ** 2).sum(-1)
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    else:
        dist = xq @ recon.T
        order = np.argsort(-dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, 1), ids[order]


@pytest.mark.parametrize("metric", [drqindex.METRIC_L2, drqindex.METRIC_INNER_PRODUCT])
@pytest.mark.parametrize("m", [1, 3, 8])
def test_adc_equals_exact_distance_to_reconstructions(metric, m, rng):
    index, xb = make_index(metric=metric)
    xq = rng.standard_normal((20, index.d)).astype(np.float32)
    D, I = index.search(xq, 10, iters=m)
    recon = index.reconstruct_n(0, index.ntotal, iters=m)
    D_ref, I_ref = brute_force(recon, index.get_ids(), xq, 10, metric)
    np.testing.assert_allclose(D, D_ref, rtol=1e-4, atol=1e-3)
    # Ids must agree except where two candidates are tied within float error.
    assert (I == I_ref).mean() > 0.98


@pytest.mark.parametrize("metric", [drqindex.METRIC_L2, drqindex.METRIC_INNER_PRODUCT])
def test_prefix_search_equals_index_built_with_fewer_iterations(metric, rng):
    d, M = 24, 12
    xb = rng.standard_normal((700, d)).astype(np.float32)
    xq = rng.standard_normal((30, d)).astype(np.float32)
    full = drqindex.IndexDRQ(d, iters=M, metric=metric)
    full.set_quantizer(make_quantizer(d, M))
    full.add(xb)
    for m in (1, 2, 5, 12):
        short = drqindex.IndexDRQ(d, iters=m, metric=metric)
        short.set_quantizer(full.quantizer.truncated(m))
        short.add(xb)
        # Greedy encoding: the m-iteration code is exactly the first m bytes of the M-iteration code.
        np.testing.assert_array_equal(short.sa_encode(xb), full.sa_encode(xb)[:, :m])
        D1, I1 = full.search(xq, 7, iters=m)
        D2, I2 = short.search(xq, 7)
        np.testing.assert_array_equal(I1, I2)
        np.testing.assert_allclose(D1, D2, rtol=1e-5)


def test_search_parameters_object_and_keyword_agree(rng):
    index, _ = make_index()
    xq = rng.standard_normal((5, index.d)).astype(np.float32)
    D1, I1 = index.search(xq, 4, iters=3)
    D2, I2 = index.search(xq, 4, params=drqindex.SearchParametersDRQ(iters=3))
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)
    D3, I3 = index.search(xq, 4, params=drqindex.SearchParametersDRQ())
    D4, I4 = index.search(xq, 4)
    np.testing.assert_array_equal(I3, I4)
    with pytest.raises(ValueError, match="iters=2 and params.iters=3"):
        index.search(xq, 4, iters=2, params=drqindex.SearchParametersDRQ(iters=3))


def test_output_shapes_dtypes_and_padding(rng):
    index, _ = make_index(n=5)
    xq = rng.standard_normal((3, index.d)).astype(np.float32)
    D, I = index.search(xq, 8)
    assert D.shape == (3, 8) and D.dtype == np.float32
    assert I.shape == (3, 8) and I.dtype == np.int64
    assert (I[:, :5] >= 0).all() and (I[:, 5:] == -1).all()
    assert (D[:, 5:] == FLT_MAX).all()
    assert (np.diff(D[:, :5], axis=1) >= 0).all()
    ip, _ = make_index(n=5, metric=drqindex.METRIC_INNER_PRODUCT)
    D, I = ip.search(xq, 8)
    assert (I[:, 5:] == -1).all() and (D[:, 5:] == -FLT_MAX).all()
    assert (np.diff(D[:, :5], axis=1) <= 0).all()
    D, I = index.search(xq[:0], 3)
    assert D.shape == (0, 3) and I.shape == (0, 3)


def test_caller_provided_output_arrays_are_filled(rng):
    index, _ = make_index()
    xq = rng.standard_normal((4, index.d)).astype(np.float32)
    D = np.empty((4, 6), np.float32)
    I = np.empty((4, 6), np.int64)
    D2, I2 = index.search(xq, 6, D=D, I=I)
    assert D2 is D and I2 is I
    Dr, Ir = index.search(xq, 6)
    np.testing.assert_array_equal(I, Ir)
    with pytest.raises(ValueError, match=r"D: expected a writeable C-contiguous \(4, 6\) float32"):
        index.search(xq, 6, D=np.empty((4, 5), np.float32))


def test_float64_and_float16_inputs_are_converted(rng):
    index, _ = make_index()
    xq = rng.standard_normal((4, index.d)).astype(np.float32)
    D32, I32 = index.search(xq, 5)
    D64, I64 = index.search(xq.astype(np.float64), 5)
    np.testing.assert_array_equal(I32, I64)
    _, I16 = index.search(xq.astype(np.float16), 5)
    assert I16.shape == (4, 5)


def test_add_with_ids_remove_and_reconstruct(rng):
    d, M = 16, 6
    xb = rng.standard_normal((50, d)).astype(np.float32)
    index = drqindex.IndexDRQ(d, iters=M)
    index.set_quantizer(make_quantizer(d, M))
    ids = np.arange(1000, 1050, dtype=np.int64)
    index.add_with_ids(xb, ids)
    assert index.ntotal == 50
    # Each vector's nearest stored neighbour is almost always its own code.
    _, I = index.search(xb, 1)
    assert (I[:, 0] == ids).mean() > 0.9
    codes = index.sa_encode(xb[7:8])
    np.testing.assert_allclose(index.reconstruct(1007), index.sa_decode(codes)[0], rtol=1e-6)
    np.testing.assert_allclose(index.reconstruct(1007, iters=2), index.sa_decode(codes, iters=2)[0], rtol=1e-6)
    assert index.remove_ids(np.array([1007, 1010, 5], dtype=np.int64)) == 2
    assert index.ntotal == 48
    with pytest.raises(KeyError, match="id 1007 is not in the index"):
        index.reconstruct(1007)
    _, I = index.search(xb, 48)
    assert not np.isin(I, [1007, 1010]).any()
    # Remaining ids are unchanged and still map to their own vectors.
    np.testing.assert_allclose(index.reconstruct(1011), index.sa_decode(index.sa_encode(xb[11:12]))[0], rtol=1e-6)
    # add() after add_with_ids continues from ntotal, as faiss's IVF indexes do.
    index.add(xb[:2])
    assert list(index.get_ids()[-2:]) == [48, 49]
    index.reset()
    assert index.ntotal == 0 and index.is_trained


def test_failed_add_leaves_index_unchanged(rng):
    index, xb = make_index(n=100)
    before_ids = index.get_ids().copy()
    xq = xb[:5]
    D0, I0 = index.search(xq, 5)
    bad = rng.standard_normal((30, index.d)).astype(np.float32)
    bad[17, 3] = np.nan
    with pytest.raises(ValueError, match="row 17, column 3"):
        index.add(bad)
    with pytest.raises(ValueError, match=r"ids: expected shape \(30,\)"):
        index.add_with_ids(np.nan_to_num(bad), np.arange(29))
    assert index.ntotal == 100
    np.testing.assert_array_equal(index.get_ids(), before_ids)
    D1, I1 = index.search(xq, 5)
    np.testing.assert_array_equal(I0, I1)


def test_bad_inputs_raise_with_expected_and_received():
    index, _ = make_index(d=8, M=4)
    good = np.zeros((2, 8), np.float32)
    cases = [
        (lambda: index.search(np.zeros((2, 7), np.float32), 1), ValueError, r"expected shape \(n, 8\) float32, got \(2, 7\) float32"),
        (lambda: index.search(np.zeros(8, np.float32), 1), ValueError, r"expected shape \(n, 8\) float32, got \(8,\)"),
        (lambda: index.search(np.zeros((2, 8), np.int32), 1), TypeError, r"expected \(n, 8\) float32 .*got \(2, 8\) int32"),
        (lambda: index.search([[0.0] * 8], 1), TypeError, "got list"),
        (lambda: index.search(np.zeros((8, 2), np.float32).T, 1), ValueError, "non-contiguous"),
        (lambda: index.search(np.full((2, 8), np.inf, np.float32), 1), ValueError, "expected finite values, got inf"),
        (lambda: index.search(good, 0), ValueError, "k: expected >= 1, got 0"),
        (lambda: index.search(good, -3), ValueError, "k: expected >= 1, got -3"),
        (lambda: index.search(good, 2.0), TypeError, "k: expected an int, got float"),
        (lambda: index.search(good, 1, iters=0), ValueError, "iters: expected 1..4, got 0"),
        (lambda: index.search(good, 1, iters=5), ValueError, "iters: expected 1..4, got 5"),
        (lambda: index.search(good, 1, params=drqindex.SearchParametersDRQ(iters=9)), ValueError, "iters: expected 1..4, got 9"),
        (lambda: index.search(good, 1, params={"iters": 2}), TypeError, "SearchParametersDRQ"),
        (lambda: index.add_with_ids(good, np.array([1.0, 2.0])), TypeError, r"ids: expected \(2,\) int64, got \(2,\) float64"),
        (lambda: index.add_with_ids(good, np.array([3, -1])), ValueError, "-1 is reserved"),
        (lambda: index.sa_decode(np.zeros((2, 2), np.uint8)), ValueError, r"codes: expected uint8 \(n, >= 4\)"),
        (lambda: index.reconstruct_n(0, 10 ** 6), IndexError, "i0 \\+ ni <= ntotal"),
        (lambda: drqindex.IndexDRQ(8, iters=0), ValueError, "iters: expected 1..1024, got 0"),
        (lambda: drqindex.IndexDRQ(8, metric=7), ValueError, "metric: expected"),
    ]
    for call, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            call()


def test_untrained_and_empty_index_raise():
    index = drqindex.IndexDRQ(8, iters=4)
    x = np.zeros((3, 8), np.float32)
    assert not index.is_trained
    for call in (lambda: index.search(x, 1), lambda: index.add(x), lambda: index.sa_encode(x)):
        with pytest.raises(RuntimeError, match="not trained"):
            call()
    index.set_quantizer(make_quantizer(8, 4))
    with pytest.raises(RuntimeError, match="index is empty"):
        index.search(x, 1)
    with pytest.raises(ValueError, match="expected at least 256 training vectors"):
        index.train(np.zeros((10, 8), np.float32))
    with pytest.raises(ValueError, match=r"quantizer: expected d=8, M=4, got d=8, M=5"):
        drqindex.IndexDRQ(8, iters=4).set_quantizer(make_quantizer(8, 5))


def test_huge_k_only_costs_the_output(rng):
    index, _ = make_index(n=10)
    D, I = index.search(rng.standard_normal((1, index.d)).astype(np.float32), 100_000)
    assert (I[0, 10:] == -1).all() and (I[0, :10] >= 0).all()


def test_recall_grows_with_iterations(rng):
    d, M = 32, 16
    xb = rng.standard_normal((3000, d)).astype(np.float32)
    xq = rng.standard_normal((100, d)).astype(np.float32)
    index = drqindex.IndexDRQ(d, iters=M)
    index.set_quantizer(make_quantizer(d, M, data=xb))
    index.add(xb)
    gt = np.argsort(((xq[:, None] - xb[None]) ** 2).sum(-1), axis=1)[:, :10]
    recalls = []
    for m in (1, 4, 16):
        _, I = index.search(xq, 10, iters=m)
        recalls.append(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, gt)]))
    assert recalls[0] < recalls[1] < recalls[2], recalls
