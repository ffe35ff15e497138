"""_core.inner_products (csrc/drq/inner_products.h): rows @ columns on the core's threads, the
query-table products of per-iteration subspace models."""
import numpy as np
import pytest

import drqindex
from drqindex import _core

LEVELS = _core.supported_simd_levels()


def _fma_chain(rows, columns):
    """The header's evaluation order in numpy: one float32 fused multiply-add per term, t = 0..d-1.
    numpy has no fma: float64 products of float32 values are exact, and the float64 sum rounded to
    float32 equals the fma's single rounding except in rare double-rounding cases (none in these
    fixed seeds)."""
    out = np.zeros((rows.shape[0], columns.shape[1]), np.float32)
    for t in range(rows.shape[1]):
        out = (out.astype(np.float64) + rows[:, t:t + 1].astype(np.float64) * columns[t].astype(np.float64)).astype(np.float32)
    return out


@pytest.mark.parametrize("n, d, K", [(1, 1, 1), (7, 13, 5), (17, 9, 33), (130, 256, 300), (65, 784, 257), (40, 64, 1024)])
def test_matches_float64_products_and_one_order_at_every_level(n, d, K):
    rng = np.random.default_rng(n + K + d)
    rows = rng.standard_normal((n, d)).astype(np.float32)
    cols = rng.standard_normal((d, K)).astype(np.float32)
    want = rows.astype(np.float64) @ cols.astype(np.float64)
    outs = [_core.inner_products(rows, cols, level=lv) for lv in LEVELS]
    for out in outs:
        assert out.shape == (n, K) and out.dtype == np.float32
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5 * d)
    for out in outs[1:]:        # one evaluation order: the same bits at every level
        np.testing.assert_array_equal(out, outs[0])
    if d <= 64:                 # and that order is the header's fma chain over t
        np.testing.assert_array_equal(outs[0], _fma_chain(rows, cols))


def test_column_slices_rows_apart_and_out_in_place():
    rng = np.random.default_rng(5)
    z = rng.standard_normal((50, 30)).astype(np.float32)
    cols = rng.standard_normal((20, 70)).astype(np.float32)
    rows = z[:, 3:23]                                     # rows 30 floats apart, no copy
    want = _core.inner_products(np.ascontiguousarray(rows), np.ascontiguousarray(cols[:, 5:45]))
    got = _core.inner_products(rows, cols[:, 5:45])       # columns 70 floats apart
    np.testing.assert_array_equal(got, want)
    buf = np.full((50, 3, 40), 7.0, np.float32)
    flat = buf.reshape(50, 120)
    back = _core.inner_products(rows, cols[:, 5:45], out=flat[:, 40:80])
    assert np.shares_memory(back, buf)
    np.testing.assert_array_equal(buf[:, 1], want)
    assert (buf[:, 0] == 7).all() and (buf[:, 2] == 7).all()   # nothing written outside out


def test_threads_do_not_change_the_bits():
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((301, 40)).astype(np.float32)
    cols = rng.standard_normal((40, 70)).astype(np.float32)
    prev = drqindex.get_num_threads()
    try:
        drqindex.set_num_threads(1)
        one = _core.inner_products(rows, cols)
        drqindex.set_num_threads(3)
        three = _core.inner_products(rows, cols)
    finally:
        drqindex.set_num_threads(prev)
    np.testing.assert_array_equal(one, three)
    assert _core.inner_products(rows[:0], cols).shape == (0, 70)


_Z = np.zeros((3, 4), np.float32)


@pytest.mark.parametrize("kw, match", [
    (dict(rows=np.zeros((3, 4), np.float64), columns=np.zeros((4, 2), np.float32)), "rows.*float32"),
    (dict(rows=np.zeros((3, 5), np.float32), columns=np.zeros((4, 2), np.float32)), r"rows: expected shape \(n, 4\)"),
    (dict(rows=_Z, columns=np.zeros((4, 0), np.float32)), "columns"),
    (dict(rows=np.zeros((3, 8), np.float32)[:, ::2], columns=np.zeros((4, 2), np.float32)), "rows.*strided"),
    (dict(rows=np.zeros((3, 4), np.float32)[::-1], columns=np.zeros((4, 2), np.float32)), "rows.*reversed"),
    (dict(rows=_Z, columns=np.zeros((4, 2), np.float32), out=np.zeros((3, 3), np.float32)), r"out: expected shape \(3, 2\)"),
    (dict(rows=_Z, columns=np.zeros((4, 2), np.float32), out=np.zeros((3, 2), np.float64)), "out.*float32"),
    (dict(rows=_Z, columns=np.zeros((4, 2), np.float32), out=_Z[:, :2]), "share memory"),
    (dict(rows=_Z, columns=np.zeros((4, 2), np.float32), out=np.broadcast_to(np.float32(0), (3, 2))), "out"),
])
def test_bad_input_raises(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _core.inner_products(**kw)


def test_packed_panels_give_the_same_bits_and_prefixes_of_panels_are_prefixes_of_columns():
    rng = np.random.default_rng(11)
    rows = rng.standard_normal((70, 24)).astype(np.float32)
    cols = rng.standard_normal((24, 96)).astype(np.float32)
    panels = np.ascontiguousarray(cols.reshape(24, 6, 16).transpose(1, 0, 2))   # (P, d, 16)
    want = _core.inner_products(rows, cols)
    for lv in LEVELS:
        np.testing.assert_array_equal(_core.inner_products(rows, panels, level=lv), want)
    np.testing.assert_array_equal(_core.inner_products(rows, panels[:2]), want[:, :32])
    np.testing.assert_array_equal(_core.inner_products(rows[:3], panels), want[:3])   # few rows: no repacking
    with pytest.raises(ValueError, match="packed panels"):
        _core.inner_products(rows, np.zeros((2, 24, 8), np.float32))
    with pytest.raises(ValueError, match="packed panels"):
        _core.inner_products(rows, np.zeros((24, 2, 16), np.float32).transpose(1, 0, 2))
