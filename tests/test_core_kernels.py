"""The C++ core through `drqindex._core` only: SIMD kernels against the scalar reference, the
greedy encoder against a float64 numpy encoder, CodeStore round trips, and argument checking.

Everything is seeded; sizes are chosen so the multi-threaded paths (parallel over queries and
over database slices) really run, yet the whole file takes a few seconds.
"""
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from drqindex import _core

K = 256
L2, IP = 0, 1
LEVELS = _core.supported_simd_levels()


@pytest.fixture(autouse=True)
def restore_core_settings():
    level, threads = _core.simd_level(), _core.get_num_threads()
    yield
    _core.set_simd_level(level)
    _core.set_num_threads(threads)


def random_store(rng, n, M, ids=None):
    codes = rng.integers(0, K, size=(n, M), dtype=np.uint8)
    norms = rng.uniform(0.5, 4.0, size=(n, M)).astype(np.float32)
    if ids is None:
        # Shuffled, non-contiguous ids: results must report them, not positions.
        ids = rng.permutation(np.arange(n, dtype=np.int64) * 3 + 100)
    store = _core.CodeStore(M)
    store.add(codes, norms, ids)
    return store, codes, norms, ids


def random_queries(rng, nq, M=None):
    shape = (nq, K) if M is None else (nq, M, K)
    tables = rng.standard_normal(shape).astype(np.float32)
    qnorms = rng.uniform(1.0, 3.0, size=nq).astype(np.float32)
    return tables, qnorms


def decaying_scales(M):
    return (0.8 ** np.arange(M)).astype(np.float32)


def numpy_distances(codes, norms, tables, qnorms, scales, iters, metric):
    """float64 (nq, n) distances computed straight from the definition."""
    scales64 = scales.astype(np.float64)
    if tables.ndim == 2:  # one shared table
        ip = sum(scales64[j] * tables[:, codes[:, j]].astype(np.float64) for j in range(iters))
    else:
        ip = sum(scales64[j] * tables[:, j, codes[:, j]].astype(np.float64) for j in range(iters))
    if metric == IP:
        return ip
    return qnorms[:, None].astype(np.float64) + norms[None, :, iters - 1] - 2 * ip


def check_against_numpy(D, I, codes, norms, ids, tables, qnorms, scales, iters, k, metric):
    n = codes.shape[0]
    ref = numpy_distances(codes, norms, tables, qnorms, scales, iters, metric)
    pos_of_id = {int(i): p for p, i in enumerate(ids)}
    found = min(k, n)
    assert (I[:, found:] == -1).all()
    pad = np.inf if metric == L2 else -np.inf
    assert (D[:, found:] == pad).all()
    positions = np.vectorize(pos_of_id.__getitem__)(I[:, :found])
    expected = np.take_along_axis(ref, positions, axis=1)
    scale = np.abs(ref).max()
    np.testing.assert_allclose(D[:, :found], expected, rtol=1e-4, atol=1e-5 * scale)
    # Sorted best first, and nothing better was left out (up to float32 rounding).
    order = 1 if metric == L2 else -1
    assert (np.diff(order * D[:, :found], axis=1) >= 0).all()
    best_possible = np.sort(order * ref, axis=1)[:, :found] * order
    np.testing.assert_allclose(D[:, :found], best_possible, rtol=1e-4, atol=1e-5 * scale)


# (n, M, iters, nq, k): n not a multiple of the 32-vector block, single and many queries,
# k = 1 and k > ntotal, prefixes from 1 to M, and two sizes big enough to be split between
# two threads (over queries, and over database slices for nq = 1).
SEARCH_CASES = [
    (1, 4, 4, 1, 1),
    (33, 4, 1, 5, 40),
    (100, 8, 3, 1, 10),
    (1000, 8, 8, 17, 1),
    (1000, 8, 5, 3, 7),
    (20000, 32, 32, 1, 10),
    (20000, 32, 16, 64, 5),
]


@pytest.mark.parametrize("metric", [L2, IP])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("level", LEVELS)
def test_search_matches_reference(level, threads, metric):
    rng = np.random.default_rng(1000 + threads * 10 + metric)
    _core.set_simd_level(level)
    _core.set_num_threads(threads)
    for n, M, iters, nq, k in SEARCH_CASES:
        store, codes, norms, ids = random_store(rng, n, M)
        tables, qnorms = random_queries(rng, nq)
        scales = decaying_scales(M)
        D, I = _core.search(store, tables, qnorms, scales, iters, k, metric)
        assert D.dtype == np.float32 and I.dtype == np.int64
        assert D.shape == (nq, k) and I.shape == (nq, k)
        Dr, Ir = _core.search_reference(store, tables, qnorms, scales, iters, k, metric)
        np.testing.assert_array_equal(I, Ir, err_msg=f"case n={n} iters={iters} nq={nq} k={k}")
        np.testing.assert_allclose(D, Dr, rtol=1e-4)
        if n <= 1000:
            check_against_numpy(D, I, codes, norms, ids, tables, qnorms, scales, iters, k, metric)


@pytest.mark.parametrize("level", LEVELS)
def test_simd_levels_are_bit_identical(level):
    # Same operations in the same order in every kernel: not just close, equal.
    rng = np.random.default_rng(7)
    store, *_ = random_store(rng, 3000, 16)
    tables, qnorms = random_queries(rng, 9)
    scales = decaying_scales(16)
    _core.set_simd_level("scalar")
    expected = _core.search(store, tables, qnorms, scales, 11, 50, L2)
    _core.set_simd_level(level)
    got = _core.search(store, tables, qnorms, scales, 11, 50, L2)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.parametrize("level", LEVELS)
def test_query_groups_and_tied_distances_match_reference(level):
    # Every multi-query group size (nq = 1..7 and 10: groups of 4 plus each remainder, over
    # both work splits) and a top-k full of ties: codes drawn from 3 values with one stored
    # norm make thousands of equal distances, so the candidate buffer compacts many times and
    # the tie order (id, then position) decides the results.
    rng = np.random.default_rng(11)
    _core.set_simd_level(level)
    n, M = 5000, 6
    codes = rng.integers(0, 3, size=(n, M), dtype=np.uint8)
    norms = np.ones((n, M), np.float32)
    ids = rng.permutation(n).astype(np.int64)
    store = _core.CodeStore(M)
    store.add(codes, norms, ids)
    scales = decaying_scales(M)
    for threads in (1, 2):
        _core.set_num_threads(threads)
        for nq in (1, 2, 3, 4, 5, 6, 7, 10):
            tables, qnorms = random_queries(rng, nq)
            for metric in (L2, IP):
                for k in (1, 100, 700):
                    D, I = _core.search(store, tables, qnorms, scales, 4, k, metric)
                    Dr, Ir = _core.search_reference(store, tables, qnorms, scales, 4, k, metric)
                    np.testing.assert_array_equal(I, Ir, err_msg=f"nq={nq} k={k} metric={metric}")
                    np.testing.assert_array_equal(D, Dr)


@pytest.mark.parametrize("level", LEVELS)
def test_query_interleaved_groups_match_reference_bit_for_bit(level):
    # Groups of 3..8 queries take the query-interleaved kernel (distances and block flags in the
    # kernel): tables smaller than 256 entries, shared and per-iteration tables, a filter, a
    # partial last block (n = 1000), both metrics, 1 and 2 threads.
    rng = np.random.default_rng(12)
    _core.set_simd_level(level)
    n, M, Kt = 1000, 5, 16
    codes = rng.integers(0, Kt, size=(n, M), dtype=np.uint8)
    norms = rng.uniform(0.5, 4.0, size=(n, M)).astype(np.float32)
    store = _core.CodeStore(M)
    store.add(codes, norms, rng.permutation(n).astype(np.int64))
    scales = decaying_scales(M)
    allowed = rng.random(n) < 0.7
    for threads in (1, 2):
        _core.set_num_threads(threads)
        for nq, per_iteration in ((8, False), (3, True), (16, True), (13, False)):
            shape = (nq, M, Kt) if per_iteration else (nq, Kt)
            tables = rng.standard_normal(shape).astype(np.float32)
            qnorms = rng.uniform(1.0, 3.0, size=nq).astype(np.float32)
            for metric in (L2, IP):
                for mask in (None, allowed):
                    args = (store, tables, qnorms, scales, 4, 30, metric, mask)
                    D, I = _core.search(*args)
                    Dr, Ir = _core.search_reference(*args)
                    msg = f"nq={nq} per_iteration={per_iteration} metric={metric} filter={mask is not None}"
                    np.testing.assert_array_equal(I, Ir, err_msg=msg)
                    np.testing.assert_array_equal(D, Dr, err_msg=msg)


@pytest.mark.parametrize("level", LEVELS)
def test_per_iteration_tables(level):
    _core.set_simd_level(level)
    rng = np.random.default_rng(8)
    M = 6
    store, codes, norms, ids = random_store(rng, 500, M)
    tables, qnorms = random_queries(rng, 4, M)
    scales = decaying_scales(M)
    for metric in (L2, IP):
        for iters in (1, 4, 6):
            D, I = _core.search(store, tables, qnorms, scales, iters, 20, metric)
            check_against_numpy(D, I, codes, norms, ids, tables, qnorms, scales, iters, 20, metric)
            Dr, Ir = _core.search_reference(store, tables, qnorms, scales, iters, 20, metric)
            np.testing.assert_array_equal(I, Ir)
    # Fewer per-iteration tables than iterations is an error.
    with pytest.raises(ValueError, match="tables per query"):
        _core.search(store, np.ascontiguousarray(tables[:, :3]), qnorms, scales, 4, 5, L2)


@pytest.mark.parametrize("threads", [1, 2])
def test_ties_rank_by_id_then_position(threads):
    _core.set_num_threads(threads)
    # Every vector has the same codes and norms, so every distance is equal; ids repeat once.
    n, M = 2000, 4
    ids = np.arange(n, dtype=np.int64)[::-1] // 2  # 999, 999, 998, 998, ..., 0, 0
    store = _core.CodeStore(M)
    store.add(np.full((n, M), 7, np.uint8), np.ones((n, M), np.float32), ids)
    tables, qnorms = random_queries(np.random.default_rng(3), 1)
    for metric in (L2, IP):
        D, I = _core.search(store, tables, qnorms, decaying_scales(M), M, 6, metric)
        np.testing.assert_array_equal(I[0], [0, 0, 1, 1, 2, 2])
        assert len(set(D[0].tolist())) == 1


@pytest.mark.parametrize("metric,pad", [(L2, np.inf), (IP, -np.inf)])
def test_empty_store_and_padding(metric, pad):
    store = _core.CodeStore(3)
    tables, qnorms = random_queries(np.random.default_rng(4), 2)
    D, I = _core.search(store, tables, qnorms, decaying_scales(3), 2, 4, metric)
    assert (I == -1).all() and (D == pad).all()
    store.add(np.zeros((1, 3), np.uint8), np.ones((1, 3), np.float32), np.array([42], np.int64))
    D, I = _core.search(store, tables, qnorms, decaying_scales(3), 2, 4, metric)
    assert (I[:, 0] == 42).all() and (I[:, 1:] == -1).all() and (D[:, 1:] == pad).all()


def test_nan_distances_never_rank():
    rng = np.random.default_rng(5)
    store, codes, *_ = random_store(rng, 200, 2)
    tables, qnorms = random_queries(rng, 1)
    tables[0, codes[:, 0]] = np.nan  # every stored vector hits a NaN entry at iteration 0
    D, I = _core.search(store, tables, qnorms, decaying_scales(2), 1, 5, L2)
    assert (I == -1).all()


# ------------------------------------------------------------------------------ encoding

def numpy_greedy(x, C, scales):
    """Direct greedy encoding in float64: argmin_k ||r - s C_k||^2, r -= s C_b."""
    x, C = x.astype(np.float64), C.astype(np.float64)
    r = x.copy()
    codes = np.empty((x.shape[0], len(scales)), np.uint8)
    for m, s in enumerate(scales.astype(np.float64)):
        dist = ((r[:, None, :] - s * C[None, :, :]) ** 2).sum(-1)
        b = dist.argmin(1)
        codes[:, m] = b
        r -= s * C[b]
    return codes


def encode_inputs(rng, n, d, M):
    C = rng.standard_normal((K, d)).astype(np.float32)
    x = rng.standard_normal((n, d)).astype(np.float32) * 1.5
    xc = (x.astype(np.float64) @ C.T.astype(np.float64)).astype(np.float32)
    gram = (C.astype(np.float64) @ C.T.astype(np.float64)).astype(np.float32)
    return x, C, xc, gram


@pytest.mark.parametrize("threads", [1, 2])
def test_encode_greedy_matches_numpy(threads):
    _core.set_num_threads(threads)
    rng = np.random.default_rng(11)
    n, d, M = 300, 12, 8
    x, C, xc, gram = encode_inputs(rng, n, d, M)
    scales = decaying_scales(M)
    codes, norms = _core.encode_greedy(xc, gram, scales)
    assert codes.dtype == np.uint8 and codes.shape == (n, M)
    assert norms.dtype == np.float32 and norms.shape == (n, M)
    np.testing.assert_array_equal(codes, numpy_greedy(x, C, scales))
    xhat = np.zeros((n, d))
    for m in range(M):
        xhat += float(scales[m]) * C[codes[:, m]].astype(np.float64)
        np.testing.assert_allclose(norms[:, m], (xhat ** 2).sum(1), rtol=1e-4)


def test_encode_greedy_is_thread_count_independent():
    rng = np.random.default_rng(12)
    _, _, xc, gram = encode_inputs(rng, 5000, 8, 4)
    scales = decaying_scales(4)
    _core.set_num_threads(1)
    one = _core.encode_greedy(xc, gram, scales)
    _core.set_num_threads(2)
    two = _core.encode_greedy(xc, gram, scales)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


def test_encode_greedy_small_K_and_empty():
    rng = np.random.default_rng(13)
    C = rng.standard_normal((5, 3)).astype(np.float32)
    x = rng.standard_normal((40, 3)).astype(np.float32)
    scales = decaying_scales(3)
    codes, _ = _core.encode_greedy((x @ C.T).astype(np.float32), (C @ C.T).astype(np.float32), scales)
    assert codes.max() < 5
    np.testing.assert_array_equal(codes, numpy_greedy(x, C, scales))
    codes, norms = _core.encode_greedy(np.zeros((0, 5), np.float32), np.eye(5, dtype=np.float32), scales)
    assert codes.shape == (0, 3) and norms.shape == (0, 3)


# ------------------------------------------------------------------------------ CodeStore

def test_codestore_round_trip_and_incremental_adds():
    rng = np.random.default_rng(20)
    M = 5
    store = _core.CodeStore(M)
    assert store.M == M and store.ntotal == 0 and store.memory_usage() == 0
    parts = [rng.integers(0, K, size=(n, M), dtype=np.uint8) for n in (3, 29, 1, 64, 40)]
    all_codes = np.concatenate(parts)
    all_norms = rng.standard_normal(all_codes.shape).astype(np.float32)
    all_ids = rng.integers(-(2 ** 62), 2 ** 62, size=len(all_codes), dtype=np.int64)
    start = 0
    for part in parts:
        stop = start + len(part)
        store.add(part, all_norms[start:stop], all_ids[start:stop])
        start = stop
    n = len(all_codes)
    assert store.ntotal == n
    np.testing.assert_array_equal(store.get_codes(0, n), all_codes)
    np.testing.assert_array_equal(store.get_codes(), all_codes)
    np.testing.assert_array_equal(store.get_codes(30, 7), all_codes[30:37])
    np.testing.assert_array_equal(store.get_norms(0, n), all_norms)
    np.testing.assert_array_equal(store.get_norms(100), all_norms[100:])
    np.testing.assert_array_equal(store.get_ids(), all_ids)
    assert store.get_codes(n, 0).shape == (0, M)
    nblocks = -(-n // _core.BLOCK_SIZE)
    assert store.memory_usage() == nblocks * _core.BLOCK_SIZE * M + n * M * 4 + n * 8


@pytest.mark.parametrize("mask_dtype", [np.bool_, np.uint8])
def test_codestore_remove_compacts_in_order(mask_dtype):
    rng = np.random.default_rng(21)
    M = 4
    store, codes, norms, ids = random_store(rng, 1000, M)
    mask = rng.random(1000) < 0.3
    removed = store.remove(mask.astype(mask_dtype))
    assert removed == mask.sum() and store.ntotal == 1000 - removed
    keep = ~mask
    np.testing.assert_array_equal(store.get_codes(), codes[keep])
    np.testing.assert_array_equal(store.get_norms(), norms[keep])
    np.testing.assert_array_equal(store.get_ids(), ids[keep])
    # Searching the compacted store equals searching a store built from the survivors.
    fresh = _core.CodeStore(M)
    fresh.add(codes[keep], norms[keep], ids[keep])
    tables, qnorms = random_queries(rng, 3)
    for metric in (L2, IP):
        a = _core.search(store, tables, qnorms, decaying_scales(M), 3, 25, metric)
        b = _core.search(fresh, tables, qnorms, decaying_scales(M), 3, 25, metric)
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[0], b[0])
    assert store.remove(np.zeros(store.ntotal, np.bool_)) == 0
    assert store.remove(np.ones(store.ntotal, np.bool_)) == 1000 - removed
    assert store.ntotal == 0 and store.get_ids().shape == (0,)


def test_codestore_reset():
    rng = np.random.default_rng(22)
    store, *_ = random_store(rng, 100, 3)
    store.reset()
    assert store.ntotal == 0 and store.memory_usage() == 0
    store.add(np.ones((2, 3), np.uint8), np.ones((2, 3), np.float32), np.array([5, 6], np.int64))
    np.testing.assert_array_equal(store.get_ids(), [5, 6])


def test_codestore_add_is_all_or_nothing():
    rng = np.random.default_rng(23)
    store, codes, norms, ids = random_store(rng, 10, 3)
    bad_calls = [
        (np.zeros((2, 3), np.uint8), np.zeros((3, 3), np.float32), np.zeros(2, np.int64)),
        (np.zeros((2, 3), np.uint8), np.zeros((2, 3), np.float32), np.zeros(3, np.int64)),
        (np.zeros((2, 4), np.uint8), np.zeros((2, 4), np.float32), np.zeros(2, np.int64)),
        (np.zeros((2, 3), np.int64), np.zeros((2, 3), np.float32), np.zeros(2, np.int64)),
        (np.zeros((2, 3), np.uint8), np.zeros((2, 3), np.float64), np.zeros(2, np.int64)),
        (np.zeros((2, 3), np.uint8), np.zeros((2, 3), np.float32), np.zeros(2, np.int32)),
    ]
    for args in bad_calls:
        with pytest.raises(ValueError):
            store.add(*args)
    assert store.ntotal == 10
    np.testing.assert_array_equal(store.get_codes(), codes)
    np.testing.assert_array_equal(store.get_ids(), ids)


def test_codestore_range_errors():
    store, *_ = random_store(np.random.default_rng(24), 10, 2)
    for start, n in [(-1, 2), (0, 11), (9, 2), (11, None), (0, -1)]:
        with pytest.raises(IndexError):
            store.get_codes(start, n)
        with pytest.raises(IndexError):
            store.get_norms(start, n)
    with pytest.raises(ValueError, match="ntotal=10"):
        store.remove(np.zeros(9, np.bool_))
    with pytest.raises(ValueError):
        _core.CodeStore(0)


# ------------------------------------------------------------------------------ argument checks

def test_search_argument_errors():
    rng = np.random.default_rng(30)
    M = 4
    store, *_ = random_store(rng, 50, M)
    tables, qnorms = random_queries(rng, 3)
    scales = decaying_scales(M)
    ok = dict(tables=tables, qnorms=qnorms, scales=scales, iters=2, k=5, metric=L2)

    def call(**changes):
        args = {**ok, **changes}
        return _core.search(store, args["tables"], args["qnorms"], args["scales"], args["iters"],
                            args["k"], args["metric"])

    call()
    bad = [
        dict(tables=tables.astype(np.float64)),             # dtype
        dict(tables=np.asfortranarray(tables)),              # not C-contiguous
        dict(tables=tables[:, ::2]),                          # strided view
        dict(tables=tables[0]),                               # 1-D
        dict(tables=tables[:, :100]),                         # K below the stored codes
        dict(qnorms=qnorms[:2]),                              # nq mismatch
        dict(scales=scales[:3]),                              # M mismatch
        dict(iters=0), dict(iters=M + 1), dict(k=0), dict(metric=2),
    ]
    for change in bad:
        with pytest.raises(ValueError):
            call(**change)
    with pytest.raises(TypeError):
        call(tables=tables.tolist())


def test_error_messages_name_expected_and_received():
    store = _core.CodeStore(8)
    with pytest.raises(ValueError) as info:
        store.add(np.zeros((3, 8), np.float32), np.zeros((3, 8), np.float32), np.zeros(3, np.int64))
    message = str(info.value)
    assert "codes" in message and "uint8" in message and "float32" in message and "(3, 8)" in message
    with pytest.raises(ValueError) as info:
        store.add(np.zeros((3, 7), np.uint8), np.zeros((3, 7), np.float32), np.zeros(3, np.int64))
    assert "M=8" in str(info.value) and "(3, 7)" in str(info.value)


def test_encode_argument_errors():
    xc = np.zeros((4, 256), np.float32)
    gram = np.eye(256, dtype=np.float32)
    scales = decaying_scales(3)
    _core.encode_greedy(xc, gram, scales)
    for args in [
        (xc.astype(np.float64), gram, scales),
        (xc, gram[:100, :100], scales),
        (np.zeros((4, 300), np.float32), np.eye(300, dtype=np.float32), scales),
        (xc, gram, scales[:0]),
        (xc, gram, scales.reshape(1, 3)),
        (xc[:, ::2], gram[::2, ::2], scales),
    ]:
        with pytest.raises(ValueError):
            _core.encode_greedy(*args)


def test_simd_level_and_threads_settings():
    assert LEVELS[0] == "scalar"
    assert _core.simd_level() in LEVELS
    for name in LEVELS:
        _core.set_simd_level(name)
        assert _core.simd_level() == name
    for name in {"avx2", "avx512"} - set(LEVELS):
        with pytest.raises(ValueError, match="not supported"):
            _core.set_simd_level(name)
    with pytest.raises(ValueError, match="unknown SIMD level"):
        _core.set_simd_level("avx1024")
    _core.set_num_threads(3)
    assert _core.get_num_threads() == 3
    with pytest.raises(ValueError):
        _core.set_num_threads(0)


def test_simd_level_environment_variable():
    code = "from drqindex import _core; print(_core.simd_level())"
    env = dict(os.environ, DRQ_SIMD_LEVEL="scalar")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "scalar"
    env["DRQ_SIMD_LEVEL"] = "bogus"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == LEVELS[-1]
    assert "DRQ_SIMD_LEVEL=bogus" in out.stderr


# ------------------------------------------------------------------------------ Ctrl-C

def interrupt_main_thread_after(seconds, still_running):
    """SIGINT to the main thread after `seconds`, unless the call already returned."""
    def fire():
        time.sleep(seconds)
        if still_running.is_set():
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    return thread


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals are delivered to the main thread")
@pytest.mark.parametrize("threads", [1, 2])
def test_ctrl_c_interrupts_search(threads):
    _core.set_num_threads(threads)
    rng = np.random.default_rng(40)
    M = 64
    store, *_ = random_store(rng, 40000, M)
    tables, qnorms = random_queries(rng, 3000)  # ~8 G lookups: seconds, far more than 0.2 s
    running = threading.Event()
    running.set()
    thread = interrupt_main_thread_after(0.2, running)
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        try:
            _core.search(store, tables, qnorms, decaying_scales(M), M, 10, L2)
        finally:
            running.clear()
    elapsed = time.perf_counter() - start
    thread.join()
    assert elapsed < 1.5, f"search took {elapsed:.2f} s to notice Ctrl-C"
    # The store is intact and usable afterwards.
    assert store.ntotal == 40000
    D, I = _core.search(store, tables[:2], qnorms[:2], decaying_scales(M), 4, 3, L2)
    assert (I >= 0).all()


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals are delivered to the main thread")
def test_ctrl_c_interrupts_encode():
    rng = np.random.default_rng(41)
    xc = rng.standard_normal((60000, K)).astype(np.float32)
    gram = np.eye(K, dtype=np.float32)
    running = threading.Event()
    running.set()
    thread = interrupt_main_thread_after(0.2, running)
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        try:
            _core.encode_greedy(xc, gram, decaying_scales(64))
        finally:
            running.clear()
    elapsed = time.perf_counter() - start
    thread.join()
    assert elapsed < 1.5, f"encode took {elapsed:.2f} s to notice Ctrl-C"
