"""IndexDRQFastScan: 4-bit fast-scan kernels, code store, search quality, truncation, API surface.

Small synthetic data (fixed seeds) so the whole file runs in a few seconds; the Fashion-MNIST
numbers live in benchmarks/bench_fastscan.py.
"""
import numpy as np
import pytest

import drqindex
from drqindex import _core
from drqindex.train.rq4 import RQ4TrainConfig, encode_rq4, train_rq4

LEVELS = drqindex.supported_simd_levels()
D = 24


def _ref_scan(codes, nbytes, extra, luts, factor=0, shifts=None):
    """numpy definition of the kernel (fastscan.h): codes (nblocks, stride) blocked byte-major;
    Horner shifts and sums mod 2^16, then the norm level * factor >> 8 added with saturation."""
    nblocks = codes.shape[0]
    acc = np.zeros((nblocks, 32), np.int64)
    luts = luts.astype(np.int64)
    for p in range(nbytes):
        g = codes[:, 32 * p:32 * p + 32]
        if shifts is not None:
            acc = (acc << int(shifts[p])) & 0xFFFF
        acc = (acc + luts[2 * p][g & 15] + luts[2 * p + 1][g >> 4]) & 0xFFFF
    if extra is not None:
        acc = np.minimum(65535, acc + ((extra.astype(np.int64) * int(factor)) >> 8))
    return acc.reshape(-1)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("nblocks,stored,nbytes", [(1, 1, 1), (3, 4, 3), (5, 8, 8), (2, 3, 0), (7, 2, 1)])
@pytest.mark.parametrize("with_extra", [False, True])
@pytest.mark.parametrize("with_shifts", [False, True])
@pytest.mark.parametrize("nq", [1, 3, 4])
def test_kernel_matches_reference(level, nblocks, stored, nbytes, with_extra, with_shifts, nq):
    rng = np.random.default_rng(nblocks * 100 + stored * 10 + nbytes + nq)
    codes = rng.integers(0, 256, (nblocks, stored * 32), dtype=np.uint8)
    extra = rng.integers(0, 256, (nblocks, 32), dtype=np.uint8) if with_extra else None
    factors = rng.integers(0, 65536, nq, dtype=np.uint16)
    factors[0] = 65535  # saturates: 255 * 65535 >> 8 + codes > 65535
    # Large shifts on purpose: the sums wrap mod 2^16 and must still agree bit for bit.
    shifts = rng.integers(0, 9, (nq, nbytes), dtype=np.uint8) if with_shifts else None
    luts = rng.integers(0, 256, (nq, 2 * nbytes, 16), dtype=np.uint8)
    got = _core.fastscan_scan(level, codes, nbytes, extra, luts, factors, shifts)
    assert got.dtype == np.uint16 and got.shape == (nq, nblocks * 32)
    for q in range(nq):
        want = _ref_scan(codes, nbytes, extra, luts[q], factors[q], None if shifts is None else shifts[q])
        np.testing.assert_array_equal(got[q], want)
    np.testing.assert_array_equal(got, _core.fastscan_scan("scalar", codes, nbytes, extra, luts, factors, shifts))


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("density", [0.02, 1.0])
def test_kernel_shift_points_match_reference(level, density):
    """Long codes with sparse shifts (the kernels' byte runs between shift points) and with a
    shift at nearly every byte of 4 queries (more points than the kernels keep: per-byte path)."""
    rng = np.random.default_rng(int(density * 100))
    nblocks, nbytes, nq = 3, 80, 4
    codes = rng.integers(0, 256, (nblocks, nbytes * 32), dtype=np.uint8)
    luts = rng.integers(0, 256, (nq, 2 * nbytes, 16), dtype=np.uint8)
    shifts = (rng.integers(1, 4, (nq, nbytes)) * (rng.random((nq, nbytes)) < density)).astype(np.uint8)
    got = _core.fastscan_scan(level, codes, nbytes, None, luts, None, shifts)
    for q in range(nq):
        np.testing.assert_array_equal(got[q], _ref_scan(codes, nbytes, None, luts[q], 0, shifts[q]))


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("threshold", [0, 1, 300, 65534, 65535])
def test_filter_matches_reference(level, threshold):
    rng = np.random.default_rng(threshold)
    acc = rng.integers(0, 600, (9, 32)).astype(np.uint16)
    acc[0, 5] = 65535
    acc[1, :] = threshold
    got = _core.fastscan_filter(level, acc, threshold)
    want = ((acc.astype(np.int64) <= threshold) << np.arange(32)).sum(axis=1).astype(np.uint32)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("level", LEVELS)
def test_kernel_largest_sum_does_not_overflow(level):
    nbytes = 127  # M = 254 iterations = 254 tables of 255
    codes = np.full((2, nbytes * 32), 0xFF, np.uint8)
    luts = np.full((4, 2 * nbytes, 16), 255, np.uint8)
    got = _core.fastscan_scan(level, codes, nbytes, np.zeros((2, 32), np.uint8), luts, np.full(4, 65535, np.uint16))
    assert (got == 254 * 255).all()
    # The norm term saturates instead of wrapping: such a vector ranks last, not first.
    got = _core.fastscan_scan(level, codes, nbytes, np.full((2, 32), 255, np.uint8), luts, np.full(4, 1000, np.uint16))
    assert (got == 65535).all()


@pytest.mark.parametrize("M,nnorm", [(1, 1), (5, 2), (8, 0), (16, 8)])
def test_store_packs_and_unpacks(M, nnorm):
    rng = np.random.default_rng(M)
    n = 70  # 3 blocks, the last one partial
    codes = rng.integers(0, 16, (n, M), dtype=np.uint8)
    norms = rng.integers(0, 256, (n, nnorm), dtype=np.uint8)
    store = _core.FastScanStore(M, nnorm)
    store.add(codes, norms, np.arange(n, dtype=np.int64) * 3)
    np.testing.assert_array_equal(store.get_codes(), codes)
    np.testing.assert_array_equal(store.get_norm_codes(), norms)
    mask = (np.arange(n) % 3 == 0).astype(np.uint8)
    assert store.remove(mask) == mask.sum()
    keep = mask == 0
    np.testing.assert_array_equal(store.get_codes(), codes[keep])
    np.testing.assert_array_equal(store.get_norm_codes(), norms[keep])
    np.testing.assert_array_equal(store.get_ids(), (np.arange(n) * 3)[keep])


def test_store_rejects_bad_codes():
    store = _core.FastScanStore(4, 1)
    with pytest.raises(ValueError, match="4-bit"):
        store.add(np.full((2, 4), 16, np.uint8), np.zeros((2, 1), np.uint8), np.arange(2, dtype=np.int64))
    assert store.ntotal == 0
    with pytest.raises(ValueError, match="uint8"):
        store.add(np.zeros((2, 4), np.int32), np.zeros((2, 1), np.uint8), np.arange(2, dtype=np.int64))
    with pytest.raises(ValueError):
        _core.FastScanStore(255, 0)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("nq,d,iters", [(1, 1, 1), (3, 24, 5), (4, 7, 2), (6, 9, 2), (8, 12, 1), (9, 33, 3),
                                        (10, 5, 2), (13, 16, 0), (17, 20, 3)])
def test_float_tables_match_reference(level, nq, d, iters):
    # fastscan_tables.h: one FMA chain per entry in dimension order, so every level returns the
    # scalar reference's bits; and the values are q . C_j (the float64 product, to float32 rounding).
    rng = np.random.default_rng(nq * 100 + d)
    x = rng.standard_normal((nq, d)).astype(np.float32)
    cb = rng.standard_normal((iters + 2, d, 16)).astype(np.float32)
    got = _core.fastscan_tables(level, x, cb, iters)
    assert got.shape == (nq, iters, 16) and got.dtype == np.float32
    np.testing.assert_array_equal(got, _core.fastscan_tables("scalar", x, cb, iters))
    exact = np.einsum("qk,jkc->qjc", x.astype(np.float64), cb[:iters].astype(np.float64))
    np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-5 * np.sqrt(d))


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("nq,iters", [(7, 3), (13, 32), (131, 33)])
def test_float_tables_sparse_queries_match_reference(level, nq, iters):
    # The AVX2 kernel skips the dimensions where all queries of a block are 0 and, from 32
    # iterations, groups queries by their zeros (blocks of 6 among up to 128 queries): the bits
    # must stay those of the full chain, with -0.0 coordinates, negative codebook entries (products
    # -0.0), an all-zero query and a dimension that is 0 everywhere.
    rng = np.random.default_rng(nq + iters)
    d = 70
    x = rng.standard_normal((nq, d)).astype(np.float32)
    x[rng.random((nq, d)) < 0.6] = 0.0
    x[rng.random((nq, d)) < 0.1] = -0.0
    x[:, 5] = 0.0
    x[2] = 0.0
    cb = rng.standard_normal((iters + 1, d, 16)).astype(np.float32)
    got = _core.fastscan_tables(level, x, cb, iters)
    want = _core.fastscan_tables("scalar", x, cb, iters)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))  # signed zeros too
    assert not np.signbit(got[2]).any()  # an all-zero query's tables are +0


def test_set_codebooks_rejects_non_finite():
    index = drqindex.IndexDRQFastScan(4, 2)
    cb = np.zeros((2, 16, 4), np.float32)
    cb[1, 3, 2] = np.inf
    with pytest.raises(ValueError, match="finite"):
        index.set_codebooks(cb, np.zeros((5, 4), np.float32))


def test_float_tables_bad_inputs():
    x = np.zeros((2, 5), np.float32)
    with pytest.raises(ValueError):
        _core.fastscan_tables("scalar", x, np.zeros((3, 4, 16), np.float32), 1)  # d mismatch
    with pytest.raises(ValueError):
        _core.fastscan_tables("scalar", x, np.zeros((3, 5, 16), np.float32), 4)  # iters > M
    with pytest.raises((ValueError, TypeError)):
        _core.fastscan_tables("scalar", x.astype(np.float64), np.zeros((3, 5, 16), np.float32), 1)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((D, D)).astype(np.float32)
    xb = (rng.standard_normal((1500, D)).astype(np.float32) * np.linspace(3, 0.3, D, dtype=np.float32)) @ basis
    xq = (rng.standard_normal((40, D)).astype(np.float32) * np.linspace(3, 0.3, D, dtype=np.float32)) @ basis
    return xb, xq


@pytest.fixture(scope="module")
def codebooks(data):
    cb, _ = train_rq4(data[0], RQ4TrainConfig(iters=8, kmeans_iters=6, refine_rounds=1))
    return cb


def _index(data, codebooks, metric=drqindex.METRIC_L2, M=8, n=None, **kw):
    xb = data[0] if n is None else data[0][:n]
    idx = drqindex.IndexDRQFastScan(D, M, metric, **kw)
    idx.set_codebooks(codebooks[:M], data[0])
    idx.add(xb)
    return idx


def _exact_adc(idx, xq, m):
    """Float ADC over the stored codes: the distances the quantised scan approximates."""
    xhat = idx.sa_decode(idx._store.get_codes(), m)
    if idx.metric_type == drqindex.METRIC_L2:
        s = idx.norm_prefixes.index(m)
        nrm = idx.norm_min[s] + idx._store.get_norm_codes()[:, s] * idx.norm_step[s]
        return (xq * xq).sum(1)[:, None] - 2 * xq @ xhat.T + nrm[None], np.argsort
    return -(xq @ xhat.T), np.argsort


@pytest.mark.parametrize("metric", [drqindex.METRIC_L2, drqindex.METRIC_INNER_PRODUCT])
@pytest.mark.parametrize("m", [2, 4, 8])
def test_quantised_scan_close_to_exact_adc(data, codebooks, metric, m):
    idx = _index(data, codebooks, metric)
    xq = data[1]
    dist, _ = _exact_adc(idx, xq, m)
    exact = np.argsort(dist, axis=1, kind="stable")[:, :10]
    D_, I = idx.search(xq, 10, iters=m)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, exact)])
    assert recall >= 0.85
    sign = 1 if metric == drqindex.METRIC_L2 else -1
    # the quantised estimate is near the exact distance of the vector it reports
    err = np.abs(D_ - sign * np.take_along_axis(dist, I, 1))
    assert err.max() <= 0.05 * np.abs(dist).max()
    # re-ranking every candidate with the float tables gives the exact ranking
    D2, I2 = idx.search(xq, 10, iters=m, rerank=idx.ntotal)
    # (ids may differ between equal distances: at m = 2 there are only 256 distinct codes)
    np.testing.assert_allclose(D2, sign * np.take_along_axis(dist, exact, 1), rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(D2, sign * np.take_along_axis(dist, I2, 1), rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("metric", [drqindex.METRIC_L2, drqindex.METRIC_INNER_PRODUCT])
def test_nearest_neighbour_survives_table_quantisation(data, codebooks, metric):
    # The top-1 of the quantised scan (no re-ranking) is the exact ADC's. Fails for L2 when the
    # norm shares the code tables' uint8 scale (0.775 measured): its range then leaves the late,
    # small residual tables a few levels each (fastscan_search.h).
    idx = _index(data, codebooks, metric)
    dist, _ = _exact_adc(idx, data[1], 8)
    _, I = idx.search(data[1], 1, iters=8)
    assert np.mean(I[:, 0] == np.argmin(dist, axis=1)) >= 0.9


@pytest.mark.parametrize("metric", [drqindex.METRIC_L2, drqindex.METRIC_INNER_PRODUCT])
def test_every_simd_level_gives_the_same_results(data, codebooks, metric):
    idx = _index(data, codebooks, metric)
    before = drqindex.simd_level()
    try:
        results = []
        for level in LEVELS:
            drqindex.set_simd_level(level)
            results.append(idx.search(data[1], 7, iters=6) + idx.search(data[1], 7, iters=6, rerank=30))
    finally:
        drqindex.set_simd_level(before)
    for r in results[1:]:
        for a, b in zip(results[0], r):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("metric", [drqindex.METRIC_L2, drqindex.METRIC_INNER_PRODUCT])
@pytest.mark.parametrize("m", [3, 8])
def test_tables_computed_in_core_equal_given_tables(data, codebooks, metric, m):
    # The search computes the float tables per query group itself (queries + codebooks); giving
    # the same tables explicitly must give the same bits, with and without re-ranking.
    idx = _index(data, codebooks, metric, norm_prefixes=[3, 8] if metric == drqindex.METRIC_L2 else None)
    xq = data[1]
    tables, bias, slot = idx._query_tables(xq, m)
    step = float(idx.norm_step[slot]) if slot >= 0 else 0.0
    sign = 1.0 if metric == drqindex.METRIC_L2 else -1.0
    for rerank in (0, 40):
        a = _core.fastscan_search(idx._store, tables, bias, sign, m, slot, 10, rerank, norm_step=step)
        b = _core.fastscan_search(idx._store, None, bias, sign, m, slot, 10, rerank, norm_step=step,
                                  queries=xq, codebooks=idx._packed_codebooks())
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    # and the core tables are the float64 q . C_j times the metric factor, to float32 rounding
    factor = -2.0 if metric == drqindex.METRIC_L2 else -1.0
    exact = factor * np.einsum("qk,jck->qjc", xq.astype(np.float64), idx.codebooks[:m].astype(np.float64))
    np.testing.assert_allclose(tables[:, :m], exact, rtol=1e-4, atol=1e-4 * np.abs(exact).max())
    assert not tables[:, m:].any()  # the padding table of an odd m


@pytest.mark.parametrize("m", [2, 8])
def test_top_k_is_a_prefix_of_the_full_ranking(data, codebooks, m):
    # The reservoir's selection (counting over uint16 sums, ties by position) keeps exactly the
    # best k keys: every k gives the first k of the full ranking (k = ntotal), with or without the
    # first-tile seeding (an all-true filter turns it off). m = 2 has only 256 distinct codes:
    # many equal sums.
    idx = _index(data, codebooks, drqindex.METRIC_INNER_PRODUCT, M=8)
    xq = data[1][:12]
    D_all, I_all = idx.search(xq, idx.ntotal, iters=m)
    # equal sums come in storage order (ids = positions here): the final sort by sum is stable
    tied = D_all[:, 1:] == D_all[:, :-1]
    assert tied.any() and (I_all[:, 1:][tied] > I_all[:, :-1][tied]).all()
    sel = drqindex.SearchParametersDRQ(iters=m, sel=idx.get_ids())
    for k in (1, 7, 100, 333):
        D_, I = idx.search(xq, k, iters=m)
        np.testing.assert_array_equal(I, I_all[:, :k])
        np.testing.assert_array_equal(D_, D_all[:, :k])
        _, I_sel = idx.search(xq, k, params=sel)
        np.testing.assert_array_equal(I_sel, I_all[:, :k])


def test_core_tables_bad_inputs(data, codebooks):
    idx = _index(data, codebooks)
    xq = data[1][:3]
    bias = np.zeros(3, np.float32)
    cb = idx._packed_codebooks()
    with pytest.raises(ValueError, match="queries and codebooks"):
        _core.fastscan_search(idx._store, None, bias, 1.0, 8, 3, 5, queries=xq)
    with pytest.raises(ValueError, match="not both"):
        _core.fastscan_search(idx._store, np.zeros((3, 8, 16), np.float32), bias, 1.0, 8, 3, 5,
                              queries=xq, codebooks=cb)
    with pytest.raises(ValueError):
        _core.fastscan_search(idx._store, None, bias, 1.0, 8, 3, 5, queries=xq[:, :5], codebooks=cb)
    with pytest.raises(ValueError, match="iterations"):
        _core.fastscan_search(idx._store, None, bias, 1.0, 8, 3, 5, queries=xq, codebooks=cb[:4])


def test_threads_do_not_change_results(data, codebooks):
    idx = _index(data, codebooks)
    before = drqindex.get_num_threads()
    try:
        drqindex.set_num_threads(1)
        a = idx.search(data[1], 5)
        drqindex.set_num_threads(2)
        b = idx.search(data[1], 5)
    finally:
        drqindex.set_num_threads(before)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize("metric", [drqindex.METRIC_L2, drqindex.METRIC_INNER_PRODUCT])
def test_truncation_equals_an_index_with_fewer_iterations(data, codebooks, metric):
    full = _index(data, codebooks, metric, M=8)
    short = _index(data, codebooks, metric, M=4)
    np.testing.assert_array_equal(full._store.get_codes()[:, :4], short._store.get_codes())
    for rerank in (0, 50):
        a = full.search(data[1], 10, iters=4, rerank=rerank)
        b = short.search(data[1], 10, rerank=rerank)
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_allclose(a[0], b[0], rtol=1e-6)


def test_odd_iterations(data, codebooks):
    ip = _index(data, codebooks, drqindex.METRIC_INNER_PRODUCT, M=7)
    D_, I = ip.search(data[1], 5, iters=3)
    assert (I >= 0).all()
    l2 = _index(data, codebooks, norm_prefixes=[3, 7], M=7)
    assert l2.code_size == 4 + 2 and l2.bytes_scanned(3) == 3
    D3, I3 = l2.search(data[1], 5, iters=3, rerank=l2.ntotal)
    dist, _ = _exact_adc(l2, data[1], 3)
    np.testing.assert_allclose(D3[:, 0], dist.min(axis=1), rtol=1e-4)
    with pytest.raises(ValueError, match="norm of prefixes"):
        l2.search(data[1], 5, iters=4)


def test_padding_and_partial_blocks(data, codebooks):
    idx = _index(data, codebooks, n=37)  # one full block + 5 vectors
    D_, I = idx.search(data[1][:3], 50)
    assert (I[:, :37] >= 0).all() and (I[:, 37:] == -1).all()
    assert np.all(D_[:, 37:] == np.finfo(np.float32).max)
    assert sorted(I[0, :37]) == list(range(37))


def test_surface_ids_sel_remove_reset(data, codebooks):
    idx = drqindex.IndexDRQFastScan(D, 8)
    assert not idx.is_trained and idx.ntotal == 0 and idx.code_size == 4 + 4
    idx.set_codebooks(codebooks, data[0])
    xb = data[0][:200]
    idx.add_with_ids(xb, np.arange(200, dtype=np.int64) + 1000)
    _, I = idx.search(xb[:5], 1, params=drqindex.SearchParametersDRQ(iters=8), rerank=20)
    np.testing.assert_array_equal(I[:, 0], np.arange(5) + 1000)
    _, I = idx.search(xb[:5], 3, params=drqindex.SearchParametersDRQ(iters=8, sel=np.arange(1100, 1200)))
    assert ((I >= 1100) & (I < 1200)).all()
    assert idx.remove_ids(np.arange(1000, 1100)) == 100
    assert idx.ntotal == 100
    _, I = idx.search(xb[:5], 10)
    assert (I >= 1100).all()
    idx.reset()
    assert idx.ntotal == 0 and idx.is_trained


def test_bad_inputs(data, codebooks):
    idx = drqindex.IndexDRQFastScan(D, 8)
    with pytest.raises(RuntimeError, match="not trained"):
        idx.search(data[1], 1)
    idx.set_codebooks(codebooks, data[0])
    with pytest.raises(RuntimeError, match="empty"):
        idx.search(data[1], 1)
    idx.add(data[0][:100])
    with pytest.raises(ValueError):
        idx.search(data[1][:, :5], 1)
    bad = data[1].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        idx.search(bad, 1)
    with pytest.raises(ValueError):
        idx.search(data[1], 1, iters=9)
    with pytest.raises(ValueError):
        idx.search(data[1], 1, rerank=-1)
    with pytest.raises(TypeError):
        idx.search(data[1], 1, params="iters=4")
    with pytest.raises(ValueError):
        drqindex.IndexDRQFastScan(D, 300)
    with pytest.raises(ValueError):
        idx.set_codebooks(codebooks[:4], data[0])
    with pytest.raises(ValueError):
        idx.sa_decode(np.full((1, 8), 16, np.uint8))
    with pytest.raises(RuntimeError, match="reset"):
        idx.set_codebooks(codebooks, data[0])


def test_training_is_sequential_and_prefix_refinement_helps(data):
    xb = data[0]
    cb0, info0 = train_rq4(xb, RQ4TrainConfig(iters=6, kmeans_iters=6, refine_rounds=0))
    cb1, info1 = train_rq4(xb, RQ4TrainConfig(iters=6, kmeans_iters=6, refine_rounds=2))
    assert info1["refine_losses"][-1] <= info1["refine_losses"][0]
    codes = encode_rq4(xb, cb1)
    # greedy encoding: the first 3 codes are the 3-iteration code
    np.testing.assert_array_equal(codes[:, :3], encode_rq4(xb, cb1[:3]))
    errs = info1["errors"]
    assert all(a >= b for a, b in zip(errs, errs[1:]))  # every longer prefix reconstructs better


def test_factory_string():
    idx = drqindex.index_factory(D, "DRQ12x4fs", drqindex.METRIC_INNER_PRODUCT)
    assert isinstance(idx, drqindex.IndexDRQFastScan)
    assert idx.iters == 12 and idx.metric_type == drqindex.METRIC_INNER_PRODUCT and idx.code_size == 6
    assert drqindex.index_factory(D, "DRQ12x4fs").code_size == 6 + 6  # L2: + one norm byte per even prefix
    for bad in ("DRQ12x8fs", "DRQ300x4fs", "IVF8,DRQ12x4fs", "DRQ12x4fs,RFlat"):
        with pytest.raises(ValueError):
            drqindex.index_factory(D, bad)
