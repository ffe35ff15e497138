"""Concurrent use from Python threads, SIMD levels at the API level, and Ctrl-C during a search."""
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import drqindex
from conftest import make_quantizer


@pytest.fixture(scope="module")
def big_index():
    rng = np.random.default_rng(7)
    d, M = 32, 16
    xb = rng.standard_normal((20000, d)).astype(np.float32)
    index = drqindex.IndexDRQ(d, iters=M)
    index.set_quantizer(make_quantizer(d, M, data=xb))
    index.add(xb)
    return index


def test_concurrent_searches_equal_serial(big_index):
    rng = np.random.default_rng(8)
    batches = [rng.standard_normal((50, big_index.d)).astype(np.float32) for _ in range(8)]
    serial = [big_index.search(b, 10, iters=1 + i % 16) for i, b in enumerate(batches)]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda ib: big_index.search(ib[1], 10, iters=1 + ib[0] % 16), enumerate(batches)))
    for (D1, I1), (D2, I2) in zip(serial, parallel):
        np.testing.assert_array_equal(I1, I2)
        np.testing.assert_array_equal(D1, D2)


def test_add_while_searching_is_serialised(rng):
    d, M = 16, 8
    index = drqindex.IndexDRQ(d, iters=M)
    index.set_quantizer(make_quantizer(d, M))
    xb = rng.standard_normal((20000, d)).astype(np.float32)
    index.add(xb)
    xq = rng.standard_normal((200, d)).astype(np.float32)
    errors = []

    def searcher():
        try:
            for _ in range(20):
                _, I = index.search(xq, 5)
                assert (I >= 0).all()
        except Exception as e:  # surfaced below: a thread's failure must fail the test
            errors.append(e)

    threads = [threading.Thread(target=searcher) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(10):
        index.add(xb[:2000])
    for t in threads:
        t.join()
    assert not errors
    assert index.ntotal == 40000


@pytest.mark.parametrize("level", drqindex.supported_simd_levels())
def test_every_simd_level_gives_the_scalar_results(big_index, level):
    rng = np.random.default_rng(9)
    xq = rng.standard_normal((40, big_index.d)).astype(np.float32)
    original = drqindex.simd_level()
    try:
        drqindex.set_simd_level("scalar")
        ref = [big_index.search(xq, 20, iters=m) for m in (1, 7, 16)]
        drqindex.set_simd_level(level)
        assert drqindex.simd_level() == level
        for m, (D_ref, I_ref) in zip((1, 7, 16), ref):
            D, I = big_index.search(xq, 20, iters=m)
            np.testing.assert_array_equal(I, I_ref)
            np.testing.assert_allclose(D, D_ref, rtol=1e-4)
    finally:
        drqindex.set_simd_level(original)


def test_thread_count_does_not_change_results(big_index):
    rng = np.random.default_rng(10)
    xq = rng.standard_normal((3, big_index.d)).astype(np.float32)  # nq < threads: split over the database
    original = drqindex.get_num_threads()
    try:
        drqindex.set_num_threads(1)
        D1, I1 = big_index.search(xq, 50)
        drqindex.set_num_threads(3)
        D2, I2 = big_index.search(xq, 50)
    finally:
        drqindex.set_num_threads(original)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)


@pytest.mark.skipif(os.name != "posix", reason="needs SIGINT delivery via os.kill")
def test_ctrl_c_interrupts_a_long_search():
    rng = np.random.default_rng(11)
    d, M = 16, 64
    index = drqindex.IndexDRQ(d, iters=M)
    index.set_quantizer(make_quantizer(d, M))
    index.add(rng.standard_normal((200000, d)).astype(np.float32))
    xq = rng.standard_normal((4000, d)).astype(np.float32)  # one chunk: seconds of scanning
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    start = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        index.search(xq, 10)
    elapsed = time.perf_counter() - start
    timer.cancel()
    # The full search takes several seconds; an interrupt must end it within a fraction of one.
    assert elapsed < 1.5, elapsed
    # The index still works afterwards.
    _, I = index.search(xq[:2], 3)
    assert (I >= 0).all()
