"""_core.inner_products (csrc/drq/inner_products.h): the query-table products on the core's threads."""
import numpy as np
import pytest

import drqindex
from drqindex import _core

LEVELS = _core.supported_simd_levels()


@pytest.mark.parametrize("n, K, d", [(1, 1, 1), (7, 5, 13), (130, 300, 256), (65, 257, 784)])
def test_matches_float64_products_at_every_level(n, K, d):
    rng = np.random.default_rng(n + K + d)
    rows = rng.standard_normal((n, d)).astype(np.float32)
    cw = rng.standard_normal((K, d)).astype(np.float32)
    want = rows.astype(np.float64) @ cw.T.astype(np.float64)
    outs = [_core.inner_products(rows, cw, level=lv) for lv in LEVELS]
    for out in outs:
        assert out.shape == (n, K) and out.dtype == np.float32
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4 * np.sqrt(d))
    for out in outs[1:]:        # one evaluation order: the same bits at every level
        np.testing.assert_array_equal(out, outs[0])


def test_threads_do_not_change_the_bits():
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((301, 40)).astype(np.float32)
    cw = rng.standard_normal((70, 40)).astype(np.float32)
    prev = drqindex.get_num_threads()
    try:
        drqindex.set_num_threads(1)
        one = _core.inner_products(rows, cw)
        drqindex.set_num_threads(3)
        three = _core.inner_products(rows, cw)
    finally:
        drqindex.set_num_threads(prev)
    np.testing.assert_array_equal(one, three)
    assert _core.inner_products(rows[:0], cw).shape == (0, 70)


@pytest.mark.parametrize("rows, cw, match", [
    (np.zeros((3, 4), np.float64), np.zeros((2, 4), np.float32), "rows.*float32"),
    (np.zeros((3, 5), np.float32), np.zeros((2, 4), np.float32), "rows"),
    (np.zeros((3, 4), np.float32), np.zeros((0, 4), np.float32), "codewords"),
    (np.zeros((3, 4), np.float32)[:, ::2], np.zeros((2, 2), np.float32), "rows"),
])
def test_bad_input_raises(rows, cw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _core.inner_products(rows, cw)
