"""The C++ per-iteration greedy encoder (_core.encode_per_iteration, csrc/drq/encode_per_iteration.h)
against the numpy encoder it replaced (DRQQuantizer._encode_per_iteration_reference), across SIMD
levels and thread counts, and its input checks."""
import numpy as np
import pytest

from drqindex import _core
from drqindex.quantizer import DRQQuantizer

LEVELS = _core.supported_simd_levels()


def _problem(n, d, K, M, seed=0):
    rng = np.random.default_rng(seed)
    cb = rng.standard_normal((M, K, d)).astype(np.float32)
    cb *= (0.7 ** np.arange(M, dtype=np.float32))[:, None, None]  # shrinking residual codebooks
    scales = np.linspace(1.0, 0.8, M).astype(np.float32)
    x = (2.0 * rng.standard_normal((n, d))).astype(np.float32)
    sq = (np.einsum("mkd,mkd->mk", cb, cb, dtype=np.float64)
          * (scales.astype(np.float64) ** 2)[:, None]).astype(np.float32)
    return x, cb, scales, sq


def _numpy_reference(x, cb, scales):
    if cb.shape[1] == 256:
        return DRQQuantizer(cb, scales)._encode_per_iteration_reference(x)
    # DRQQuantizer needs K = 256: the same steps, written out for another K.
    r = x.copy()
    xhat = np.zeros(x.shape, np.float64)
    codes = np.empty((x.shape[0], cb.shape[0]), np.uint8)
    norms = np.empty((x.shape[0], cb.shape[0]), np.float32)
    sq = (np.einsum("mkd,mkd->mk", cb, cb, dtype=np.float64) * (scales.astype(np.float64) ** 2)[:, None]
          ).astype(np.float32)
    for m in range(cb.shape[0]):
        s = float(scales[m])
        score = r @ cb[m].T
        score *= -2.0 * s
        score += sq[m][None, :]
        b = np.argmin(score, axis=1)
        codes[:, m] = b
        step = cb[m][b] * s
        r -= step
        xhat += step
        norms[:, m] = np.einsum("ij,ij->i", xhat, xhat)
    return codes, norms


# d = 37 and K = 13 exercise the kernels' tails (d % 8, K % 6 and K % 8 non-zero); n = 203 spans
# several row blocks and an odd last one.
@pytest.mark.parametrize("d,K", [(37, 256), (64, 13), (17, 1)])
@pytest.mark.parametrize("level", LEVELS)
def test_matches_numpy_encoder(level, d, K):
    x, cb, scales, sq = _problem(203, d, K, 5)
    codes, norms = _core.encode_per_iteration(x, cb, scales, sq, level=level)
    ref_codes, ref_norms = _numpy_reference(x, cb, scales)
    assert codes.shape == (203, 5) and codes.dtype == np.uint8 and norms.dtype == np.float32
    np.testing.assert_array_equal(codes, ref_codes)
    np.testing.assert_allclose(norms, ref_norms, rtol=1e-6)


def test_levels_and_threads_are_bit_identical():
    x, cb, scales, sq = _problem(301, 45, 256, 4, seed=3)
    threads = _core.get_num_threads()
    try:
        _core.set_num_threads(1)
        base = _core.encode_per_iteration(x, cb, scales, sq, level="scalar")
        for level in LEVELS:
            for t in (1, 2, 3):
                _core.set_num_threads(t)
                codes, norms = _core.encode_per_iteration(x, cb, scales, sq, level=level)
                assert codes.tobytes() == base[0].tobytes() and norms.tobytes() == base[1].tobytes(), (level, t)
                # A small batch is cut into smaller blocks to keep the threads busy: same bits.
                codes, norms = _core.encode_per_iteration(np.ascontiguousarray(x[:17]), cb, scales, sq, level=level)
                assert codes.tobytes() == base[0][:17].tobytes() and norms.tobytes() == base[1][:17].tobytes()
    finally:
        _core.set_num_threads(threads)
    # Each row depends only on itself: encoding a slice gives the same rows.
    codes, norms = _core.encode_per_iteration(np.ascontiguousarray(x[100:117]), cb, scales, sq)
    assert codes.tobytes() == base[0][100:117].tobytes() and norms.tobytes() == base[1][100:117].tobytes()


def test_quantizer_encode_uses_it():
    x, cb, scales, _ = _problem(150, 20, 256, 3, seed=5)
    q = DRQQuantizer(cb, scales)
    codes, norms = q.encode(x)
    ref_codes, ref_norms = q._encode_per_iteration_reference(x)
    np.testing.assert_array_equal(codes, ref_codes)
    np.testing.assert_allclose(norms, ref_norms, rtol=1e-6)
    empty = q.encode(np.zeros((0, 20), np.float32))
    assert empty[0].shape == (0, 3) and empty[1].shape == (0, 3)


def test_bad_input_raises():
    x, cb, scales, sq = _problem(10, 8, 16, 2)
    enc = _core.encode_per_iteration
    with pytest.raises(ValueError, match="x: expected float32"):
        enc(x.astype(np.float64), cb, scales, sq)
    with pytest.raises(ValueError, match=r"x: expected .*\(n, d=8\)"):
        enc(x[:, :7].copy(), cb, scales, sq)
    with pytest.raises(ValueError, match="not C-contiguous"):
        enc(np.asfortranarray(x), cb, scales, sq)
    with pytest.raises(TypeError, match="x: expected a numpy"):
        enc(x.tolist(), cb, scales, sq)
    with pytest.raises(ValueError, match="codebooks: expected"):
        enc(x, cb[0], scales, sq)
    with pytest.raises(ValueError, match="K in \\[1, 256\\]"):
        enc(x, np.zeros((2, 257, 8), np.float32), scales, np.zeros((2, 257), np.float32))
    with pytest.raises(ValueError, match="scales: expected"):
        enc(x, cb, scales[:1].copy(), sq)
    with pytest.raises(ValueError, match="sq_norms: expected"):
        enc(x, cb, scales, sq.T.copy())
    with pytest.raises(ValueError, match="SIMD level"):
        enc(x, cb, scales, sq, level="sse9")
