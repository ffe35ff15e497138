"""Hamming search: the C++ scan against a numpy brute force (every SIMD level, thread count, prefix
length, ties, padding), faiss IndexBinaryFlat equivalence, and IndexBinaryHash end to end."""
import io
import pickle
from pathlib import Path

import faiss
import numpy as np
import pytest

import drqindex
from drqindex import _core
from drqindex.index_binary_hash import pack_words
from test_ternary_encoder import make_spec

LEVELS = _core.supported_simd_levels()
INT32_MAX = np.iinfo(np.int32).max


@pytest.fixture(autouse=True)
def _restore_core_settings():
    level, threads = _core.simd_level(), _core.get_num_threads()
    yield
    _core.set_simd_level(level)
    _core.set_num_threads(threads)


def brute_force(db_bytes, q_bytes, nbits, k, ids=None):
    """Distances over the first nbits bits; order (distance, id, position); faiss padding."""
    nb = nbits // 8
    x = np.bitwise_xor(q_bytes[:, None, :nb], db_bytes[None, :, :nb])
    dist = np.unpackbits(x, axis=2).sum(2).astype(np.int64)
    n = db_bytes.shape[0]
    ids = np.arange(n) if ids is None else ids
    D = np.full((len(q_bytes), k), INT32_MAX, np.int32)
    I = np.full((len(q_bytes), k), -1, np.int64)
    for q in range(len(q_bytes)):
        order = np.lexsort((np.arange(n), ids, dist[q]))[:k]
        D[q, :len(order)] = dist[q, order]
        I[q, :len(order)] = ids[order]
    return D, I


def clustered_codes(rng, n, nbytes, centers=7):
    """Codes near a few centres: many small distances and many ties."""
    base = rng.integers(0, 256, (centers, nbytes), dtype=np.uint8)
    flips = (rng.random((n, nbytes * 8)) < 0.08)
    return base[rng.integers(0, centers, n)] ^ np.packbits(flips, axis=1, bitorder="little")


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("nbytes,nbits", [(2, 16), (8, 8), (8, 32), (8, 64), (12, 96), (12, 72), (24, 192)])
def test_kernel_matches_brute_force(level, nbytes, nbits):
    rng = np.random.default_rng(nbits + nbytes)
    db = clustered_codes(rng, 5003, nbytes)  # not a multiple of the tile or of 4 / 8
    q = np.concatenate([clustered_codes(rng, 9, nbytes), db[:3]])
    W = (nbytes * 8 + 63) // 64
    ids = rng.permutation(10 * 5003)[:5003].astype(np.int64)
    _core.set_simd_level(level)
    for k, use_ids in ((1, False), (10, True), (257, False)):
        D, I = _core.hamming_search(pack_words(db, W), ids if use_ids else None, pack_words(q, W), nbits, k)
        Dr, Ir = brute_force(db, q, nbits, k, ids if use_ids else None)
        np.testing.assert_array_equal(D, Dr)
        np.testing.assert_array_equal(I, Ir)
    Dref, Iref = _core.hamming_search_reference(pack_words(db, W), None, pack_words(q, W), nbits, 10)
    np.testing.assert_array_equal(Dref, brute_force(db, q, nbits, 10)[0])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_and_slices_give_identical_results(threads):
    rng = np.random.default_rng(0)
    db = clustered_codes(rng, 40000, 8, centers=3)  # heavy ties at the k-th distance
    codes = pack_words(db, 1)
    _core.set_num_threads(1)
    q = pack_words(clustered_codes(rng, 40, 8), 1)
    base = _core.hamming_search(codes, None, q, 24, 50)
    _core.set_num_threads(threads)
    for nq in (1, 2, 40):  # fewer queries than threads: the database is split into slices
        D, I = _core.hamming_search(codes, None, q[:nq], 24, 50)
        np.testing.assert_array_equal(D, base[0][:nq])
        np.testing.assert_array_equal(I, base[1][:nq])


def learned_like_codes(rng, n, nbytes, classes=10, max_flips=3):
    """Codes of a few classes: each a class centre with 0..max_flips random bits flipped, so many
    codes are exact duplicates and thousands tie at the k-th distance."""
    centres = np.unpackbits(rng.integers(0, 256, (classes, nbytes), dtype=np.uint8), axis=1, bitorder="little")
    bits = centres[rng.integers(0, classes, n)]
    for _ in range(max_flips):
        rows = np.flatnonzero(rng.random(n) < 0.7)
        bits[rows, rng.integers(0, nbytes * 8, rows.size)] ^= 1
    return np.packbits(bits, axis=1, bitorder="little")


def _id_orders(rng, n):
    """Ids that increase with storage position (ties at the threshold can stop early) and ids
    that do not (every tie must be kept)."""
    return {
        "none": None,
        "increasing with gaps": np.cumsum(rng.integers(1, 4, n)).astype(np.int64),
        "non-decreasing with repeats": np.repeat(np.arange((n + 1) // 2, dtype=np.int64), 2)[:n],
        "permuted": rng.permutation(n).astype(np.int64),
        "decreasing": np.arange(n, dtype=np.int64)[::-1].copy(),
        "sorted but one swap": np.concatenate([[1, 0], np.arange(2, n)]).astype(np.int64),
    }


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("nbytes,nbits", [(8, 16), (8, 64), (16, 40)])
def test_ties_of_clustered_codes_for_every_id_order(level, nbytes, nbits):
    """Learned-hash-like codes: with sorted ids the scan drops codes tying at the threshold (and
    stops a query with k codes at distance 0); results stay those of the scalar reference."""
    rng = np.random.default_rng(nbits)
    n = 6003  # several tiles, not a multiple of 16
    db = learned_like_codes(rng, n, nbytes)
    q = np.concatenate([learned_like_codes(rng, 6, nbytes), db[:2]])
    W = (nbytes * 8 + 63) // 64
    codes, queries = pack_words(db, W), pack_words(q, W)
    _core.set_simd_level(level)
    for name, ids in _id_orders(rng, n).items():
        for k in (1, 37, 300, 1000):  # 300 and 1000 exceed the codes at distance 0
            D, I = _core.hamming_search(codes, ids, queries, nbits, k)
            Dr, Ir = _core.hamming_search_reference(codes, ids, queries, nbits, k)
            np.testing.assert_array_equal(D, Dr, err_msg=f"{name} k={k}")
            np.testing.assert_array_equal(I, Ir, err_msg=f"{name} k={k}")
    D, I = _core.hamming_search(codes, None, queries, nbits, 37)
    Dr, Ir = brute_force(db, q, nbits, 37)
    np.testing.assert_array_equal(D, Dr)
    np.testing.assert_array_equal(I, Ir)


@pytest.mark.parametrize("threads", [2])
def test_two_threads_with_ties_match_reference(threads):
    """Query groups (many queries) and database slices (one query) on 2 threads, sorted and
    unsorted ids: the slice merge must keep the tie order too."""
    rng = np.random.default_rng(5)
    n = 40000
    db = learned_like_codes(rng, n, 8)
    codes = pack_words(db, 1)
    queries = pack_words(np.concatenate([learned_like_codes(rng, 20, 8), db[:3]]), 1)
    _core.set_num_threads(threads)
    for name, ids in _id_orders(rng, n).items():
        for nq in (1, 4, 23):  # 1: database slices, ids not checked for order; 4, 23: checked
            for nbits, k in ((64, 100), (24, 500)):
                D, I = _core.hamming_search(codes, ids, queries[:nq], nbits, k)
                Dr, Ir = _core.hamming_search_reference(codes, ids, queries[:nq], nbits, k)
                np.testing.assert_array_equal(D, Dr, err_msg=f"{name} nq={nq}")
                np.testing.assert_array_equal(I, Ir, err_msg=f"{name} nq={nq}")


def test_database_slices_with_ties_match_reference():
    """Fewer queries than threads and enough codes: every thread scans a slice of the database
    and the slices' candidates are merged; ties at the k-th distance must come out in (id,
    position) order for sorted ids (1 and 4 queries: the ids are checked from 4 queries on) and
    unsorted ids."""
    rng = np.random.default_rng(8)
    n = (1 << 21) + 5  # slices need nq * n >= threads * 2^20 code words
    centres = rng.integers(0, 1 << 63, 10, dtype=np.uint64)
    codes = centres[rng.integers(0, 10, n)]
    for _ in range(3):  # 0-3 flipped bits: duplicates and ties
        flip = np.uint64(1) << rng.integers(0, 64, n).astype(np.uint64)
        codes ^= np.where(rng.random(n) < 0.7, flip, np.uint64(0))
    codes = codes[:, None]
    queries = np.concatenate([codes[[3, 17]], centres[:2, None]])
    _core.set_num_threads(5)
    for ids in (None, np.arange(n, dtype=np.int64) * 2, rng.permutation(n).astype(np.int64)):
        Dr, Ir = _core.hamming_search_reference(codes, ids, queries, 64, 300)
        for nq in (1, 4):
            D, I = _core.hamming_search(codes, ids, queries[:nq], 64, 300)
            np.testing.assert_array_equal(D, Dr[:nq])
            np.testing.assert_array_equal(I, Ir[:nq])


def test_random_codes_every_prefix_match_reference():
    """Random 64-bit codes (the benchmark's case) for every prefix the index accepts, n not a
    multiple of 16: the AVX2 block kernel, its tail and the chunked first tile."""
    rng = np.random.default_rng(11)
    codes = rng.integers(0, 1 << 63, (5011, 1), dtype=np.uint64) ^ rng.integers(0, 2, (5011, 1), dtype=np.uint64) << 63
    queries = rng.integers(0, 1 << 63, (9, 1), dtype=np.uint64)
    for level in LEVELS:
        _core.set_simd_level(level)
        for nbits in range(8, 65, 8):
            for k in (1, 100):
                D, I = _core.hamming_search(codes, None, queries, nbits, k)
                Dr, Ir = _core.hamming_search_reference(codes, None, queries, nbits, k)
                np.testing.assert_array_equal(D, Dr)
                np.testing.assert_array_equal(I, Ir)


def test_duplicate_codes_rank_by_id_in_linear_time():
    codes = np.zeros((50000, 1), np.uint64)  # every distance ties
    ids = np.arange(50000, dtype=np.int64)[::-1].copy()
    D, I = _core.hamming_search(codes, ids, codes[:3], 64, 7)
    assert (D == 0).all() and (I == np.arange(7)).all()


def test_padding_and_empty_database():
    codes = pack_words(np.arange(3, dtype=np.uint8)[:, None] * np.ones((1, 8), np.uint8), 1)
    D, I = _core.hamming_search(codes, None, codes[:2], 64, 5)
    np.testing.assert_array_equal(I[:, 3:], -1)
    np.testing.assert_array_equal(D[:, 3:], INT32_MAX)
    D, I = _core.hamming_search(codes[:0], None, codes[:2], 64, 2)
    assert (I == -1).all() and (D == INT32_MAX).all()


def test_same_results_as_faiss_index_binary_flat():
    rng = np.random.default_rng(3)
    db = rng.integers(0, 256, (3000, 8), dtype=np.uint8)
    q = rng.integers(0, 256, (20, 8), dtype=np.uint8)
    for nbits in (16, 32, 64):
        B = nbits // 8
        flat = faiss.IndexBinaryFlat(nbits)
        flat.add(np.ascontiguousarray(db[:, :B]))
        Df, If = flat.search(np.ascontiguousarray(q[:, :B]), 100)
        index = drqindex.IndexBinaryHash(None, 64)
        index.add_codes(db)
        D, I = index.search_codes(q, 100, nbits=nbits)
        np.testing.assert_array_equal(D, Df)
        # faiss orders equal distances arbitrarily: compare the id sets per distance
        for qi in range(len(q)):
            for d in np.unique(D[qi]):
                last = d == D[qi, -1]
                if not last:
                    assert set(I[qi][D[qi] == d]) == set(If[qi][Df[qi] == d])


def test_core_rejects_bad_arguments():
    codes = np.zeros((4, 1), np.uint64)
    with pytest.raises(ValueError, match="uint64"):
        _core.hamming_search(codes.astype(np.int64), None, codes, 8, 1)
    with pytest.raises(ValueError, match="W"):
        _core.hamming_search(codes, None, np.zeros((1, 2), np.uint64), 8, 1)
    with pytest.raises(ValueError, match="nbits"):
        _core.hamming_search(codes, None, codes, 65, 1)
    with pytest.raises(ValueError, match="k"):
        _core.hamming_search(codes, None, codes, 8, 0)
    with pytest.raises(ValueError, match="ids"):
        _core.hamming_search(codes, np.zeros(3, np.int64), codes, 8, 1)


# ------------------------------------------------------------------------------ IndexBinaryHash
def _encoder(nbits=64, seed=0):
    return drqindex.TernaryEncoder.from_spec(make_spec(dims=(784, 64, nbits), input_shape=(28, 28), seed=seed))


def test_index_binary_hash_end_to_end():
    enc = _encoder()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (500, 28, 28), dtype=np.uint8)
    index = drqindex.IndexBinaryHash(enc, nbits=48)
    assert (index.ntotal, index.is_trained, index.code_size, index.nbits, index.d) == (0, True, 6, 48, 784)
    index.add(x[:300])
    index.add_with_ids(x[300:], np.arange(1000, 1200))
    assert index.ntotal == 500
    codes = enc.encode(x, 48)
    np.testing.assert_array_equal(index.get_codes(), codes)
    ids = np.concatenate([np.arange(300), np.arange(1000, 1200)])
    for nbits in (None, 16, 32, 48):
        D, I = index.search(x[:7], 9, nbits=nbits)
        Dr, Ir = brute_force(codes, codes[:7], nbits or 48, 9, ids)
        np.testing.assert_array_equal(D, Dr)
        np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(index.search_codes(codes[:7], 9)[1], index.search(x[:7], 9)[1])
    # remove_ids / reset
    assert index.remove_ids(np.array([0, 1, 1000, 5000])) == 3
    assert index.ntotal == 497 and not np.isin([0, 1, 1000], index.get_ids()).any()
    D, I = index.search(x[:2], 497 + 3)
    assert (I[:, -3:] == -1).all() and not np.isin(I, [0, 1, 1000]).any()
    index.add(x[:1])  # default ids continue after the largest id
    assert index.get_ids()[-1] == 1200
    index.reset()
    assert index.ntotal == 0 and index.search(x[:1], 2)[1].tolist() == [[-1, -1]]


def test_index_binary_hash_save_load(tmp_path):
    enc = _encoder(nbits=64, seed=1)
    x = np.random.default_rng(1).integers(0, 256, (120, 784), dtype=np.uint8)
    index = drqindex.IndexBinaryHash(enc, nbits=40)
    index.add_with_ids(x, np.arange(120) * 3 + 7)
    index.remove_ids(np.array([7, 10]))
    path = tmp_path / "h.drq"
    index.save(path)
    for back in (drqindex.IndexBinaryHash.load(path), drqindex.read_index(str(path), mmap=True),
                 pickle.loads(pickle.dumps(index)), drqindex.deserialize_index(drqindex.serialize_index(index))):
        assert back.enc == enc and back.nbits == 40 and back.ntotal == 118
        np.testing.assert_array_equal(back.get_ids(), index.get_ids())
        for a, b in zip(back.search(x[:5], 6, nbits=24), index.search(x[:5], 6, nbits=24)):
            np.testing.assert_array_equal(a, b)
    raw = drqindex.IndexBinaryHash(None, 16)
    raw.add_codes(np.arange(20, dtype=np.uint8).reshape(10, 2))
    back = drqindex.deserialize_index(drqindex.serialize_index(raw))
    assert back.enc is None and back.ntotal == 10
    np.testing.assert_array_equal(back.get_codes(), raw.get_codes())
    data = path.read_bytes()
    for cut in (30, 64, len(data) // 2, len(data) - 1):
        with pytest.raises(drqindex.IndexFileError):
            drqindex.read_index(io.BytesIO(data[:cut]))
    for pos in (100, len(data) // 2, len(data) - 100):
        bad = bytearray(data)
        bad[pos] ^= 1
        with pytest.raises(drqindex.IndexFileError):
            drqindex.read_index(io.BytesIO(bytes(bad)))


def test_index_binary_hash_bad_inputs():
    enc = _encoder(nbits=32)
    index = drqindex.IndexBinaryHash(enc)
    x = np.zeros((2, 28, 28), np.uint8)
    index.add(x)
    with pytest.raises(ValueError, match="multiple of 8"):
        drqindex.IndexBinaryHash(enc, nbits=64)
    with pytest.raises(ValueError, match="multiple of 8"):
        index.search(x, 1, nbits=12)
    with pytest.raises(ValueError, match="multiple of 8"):
        index.search(x, 1, nbits=40)
    with pytest.raises(ValueError, match="k"):
        index.search(x, 0)
    with pytest.raises(TypeError, match="k"):
        index.search(x, 1.5)
    with pytest.raises(ValueError, match=r"\(n, 28, 28\)"):
        index.search(np.zeros((2, 28, 29), np.uint8), 1)
    with pytest.raises(TypeError, match="uint8 or float32"):
        index.add(x.astype(np.int16))
    with pytest.raises(ValueError, match="finite"):
        index.add(np.full((1, 784), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"\(n, 4\) uint8"):
        index.add_codes(np.zeros((2, 8), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        index.search_codes(np.zeros((2, 4), np.int8), 1)
    with pytest.raises(ValueError, match="ids"):
        index.add_with_ids(x, np.arange(3))
    with pytest.raises(RuntimeError, match="no encoder"):
        drqindex.IndexBinaryHash(None, 16).add(x)
    with pytest.raises(ValueError, match="nbits"):
        drqindex.IndexBinaryHash(None)
    with pytest.raises(TypeError, match="TernaryEncoder"):
        drqindex.IndexBinaryHash("enc")


@pytest.mark.skipif(__import__("threading").current_thread() is not __import__("threading").main_thread(),
                    reason="signals are delivered to the main thread")
@pytest.mark.parametrize("what", ["hamming_search", "encoder_forward"])
def test_ctrl_c_interrupts(what):
    import threading
    import time

    from test_core_kernels import interrupt_main_thread_after

    rng = np.random.default_rng(9)
    if what == "hamming_search":
        codes = rng.integers(0, 1 << 62, (60000, 1), dtype=np.uint64)
        queries = rng.integers(0, 1 << 62, (40000, 1), dtype=np.uint64)  # seconds of scanning
        call = lambda: _core.hamming_search(codes, None, queries, 64, 10)  # noqa: E731
    else:
        _core.set_simd_level("scalar")  # the slow reference kernel: seconds for 2000 images
        enc = _encoder()
        x = rng.integers(0, 256, (2000, 784), dtype=np.uint8)
        call = lambda: enc.embed(x)  # noqa: E731
    running = threading.Event()
    running.set()
    thread = interrupt_main_thread_after(0.2, running)
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        try:
            call()
        finally:
            running.clear()
    elapsed = time.perf_counter() - start
    thread.join()
    assert elapsed < 1.5, f"{what} took {elapsed:.2f} s to notice Ctrl-C"


def test_golden_files_of_format_1_still_read():
    data = Path(__file__).parent / "data"
    expected = np.load(data / "golden_hash_v1_expected.npz")
    index = drqindex.read_index(data / "golden_hash_v1.drq")
    assert isinstance(index, drqindex.IndexBinaryHash) and (index.nbits, index.ntotal) == (24, 30)
    np.testing.assert_array_equal(index.get_codes(), expected["codes"])
    np.testing.assert_array_equal(index.get_ids(), expected["ids"])
    x = expected["x"]
    np.testing.assert_array_equal(index.enc.embed(x), expected["logits"])
    for suffix, nbits in (("", None), ("16", 16)):
        D, I = index.search(x[:6], 5, nbits=nbits)
        np.testing.assert_array_equal(D, expected["D" + suffix])
        np.testing.assert_array_equal(I, expected["I" + suffix])
    enc = drqindex.TernaryEncoder.load(data / "golden_encoder_v1.drq")
    assert enc == index.enc
