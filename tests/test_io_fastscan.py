"""Persistence of IndexDRQFastScan (file kind 5): round trips (write/read, mmap, serialize, pickle),
the golden file, and corrupt / truncated / crafted files that must raise IndexFileError."""
import copy
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

import drqindex
from drqindex.train.rq4 import RQ4TrainConfig, train_rq4

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden_fastscan_v1.drq"
D = 16
L2, IP = drqindex.METRIC_L2, drqindex.METRIC_INNER_PRODUCT


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((1200, D)) * rng.uniform(0.5, 2.0, D)).astype(np.float32)
    return x[:1000], x[1000:1030]


@pytest.fixture(scope="module")
def codebooks(data):
    cb, _ = train_rq4(data[0], RQ4TrainConfig(iters=8, kmeans_iters=5, refine_rounds=1))
    return cb


def _index(data, codebooks, metric=L2, M=8, **kw):
    index = drqindex.IndexDRQFastScan(D, iters=M, metric=metric, **kw)
    index.set_codebooks(codebooks[:M], data[0])
    index.train_info = {"note": "test"}
    index.add_with_ids(data[0][:600], 10 + 2 * np.arange(600))
    index.remove_ids(10 + 2 * np.arange(0, 600, 9))  # holes, not a multiple of the 32-vector blocks
    return index


def assert_same(a, b, xq):
    assert (a.d, a.iters, a.metric_type, a.ntotal, a.is_trained, a.rerank, a.norm_prefixes, a.code_size) == \
           (b.d, b.iters, b.metric_type, b.ntotal, b.is_trained, b.rerank, b.norm_prefixes, b.code_size)
    np.testing.assert_array_equal(a.get_ids(), b.get_ids())
    if not a.is_trained:
        assert b.codebooks is None
        return
    np.testing.assert_array_equal(a.codebooks, b.codebooks)
    np.testing.assert_array_equal(a.norm_min, b.norm_min)
    np.testing.assert_array_equal(a.norm_step, b.norm_step)
    np.testing.assert_array_equal(a._store.get_codes(), b._store.get_codes())
    np.testing.assert_array_equal(a._store.get_norm_codes(), b._store.get_norm_codes())
    if not a.ntotal:
        return
    iters = a.norm_prefixes if a.metric_type == L2 else (1, 3, a.iters)
    for m in iters:
        for rerank in (None, 0, 7, 40):
            Da, Ia = a.search(xq, 9, iters=m, rerank=rerank)
            Db, Ib = b.search(xq, 9, iters=m, rerank=rerank)
            np.testing.assert_array_equal(Ia, Ib)
            np.testing.assert_array_equal(Da, Db)


# ------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("metric,M,kw", [(L2, 8, {}), (L2, 5, {"norm_prefixes": (3, 5), "rerank": 6}),
                                         (IP, 8, {"rerank": 4}), (IP, 7, {})])
def test_round_trip_gives_identical_results(tmp_path, data, codebooks, metric, M, kw):
    index = _index(data, codebooks, metric, M, **kw)
    path = tmp_path / "fs.drq"
    drqindex.write_index(index, path)
    for loaded in (drqindex.read_index(path), drqindex.read_index(path, mmap=True),
                   drqindex.read_index(str(path)), drqindex.deserialize_index(drqindex.serialize_index(index))):
        assert isinstance(loaded, drqindex.IndexDRQFastScan)
        assert loaded.train_info == {"note": "test"}
        assert_same(index, loaded, data[1])
    assert path.read_bytes() == drqindex.serialize_index(index).tobytes()
    # The loaded index keeps working like the original: add() continues from ntotal.
    loaded = drqindex.read_index(path)
    index.add(data[0][600:650])
    loaded.add(data[0][600:650])
    assert_same(index, loaded, data[1])


def test_pickle_and_deepcopy(data, codebooks):
    index = _index(data, codebooks, L2, 6, rerank=3)
    for other in (pickle.loads(pickle.dumps(index)), copy.deepcopy(index)):
        assert isinstance(other, drqindex.IndexDRQFastScan) and other is not index
        assert_same(index, other, data[1])
    other.remove_ids(np.array([12]))  # independent stores
    assert other.ntotal == index.ntotal - 1


@pytest.mark.parametrize("metric", [L2, IP])
def test_untrained_and_empty_round_trip(data, codebooks, metric):
    untrained = drqindex.IndexDRQFastScan(D, iters=6, metric=metric, rerank=2,
                                          train_config={"kmeans_iters": 3, "refine_rounds": 0})
    back = drqindex.deserialize_index(drqindex.serialize_index(untrained))
    assert_same(untrained, back, data[1])
    assert back.train_config == {"kmeans_iters": 3, "refine_rounds": 0}
    back.train(data[0][:400])  # the restored train_config dict is usable
    assert back.is_trained
    empty = drqindex.IndexDRQFastScan(D, iters=6, metric=metric)
    empty.set_codebooks(codebooks[:6], data[0])
    back = pickle.loads(pickle.dumps(empty))
    assert_same(empty, back, data[1])
    empty.add(data[0][:50])
    back.add(data[0][:50])
    assert_same(empty, back, data[1])


# ------------------------------------------------------------------------------ golden file
@pytest.mark.parametrize("mmap", [False, True])
def test_golden_file_still_reads(mmap):
    exp = np.load(DATA / "golden_fastscan_v1_expected.npz")
    index = drqindex.read_index(GOLDEN, mmap=mmap)
    assert isinstance(index, drqindex.IndexDRQFastScan)
    assert (index.d, index.iters, index.metric_type, index.ntotal, index.rerank) == (16, 7, L2, 290, 5)
    assert index.norm_prefixes == (2, 4, 6, 7)
    assert index.train_info == {"note": "golden file, format 1.0, kind 5"}
    for name in ("codebooks", "norm_min", "norm_step"):
        np.testing.assert_array_equal(getattr(index, name), exp[name])
    np.testing.assert_array_equal(index._store.get_codes(), exp["codes"])
    np.testing.assert_array_equal(index._store.get_norm_codes(), exp["norm_codes"])
    np.testing.assert_array_equal(index.get_ids(), exp["ids"])
    for m in (2, 4, 7):
        for rerank in (0, 10):
            Dm, Im = index.search(exp["xq"], 8, iters=m, rerank=rerank)
            np.testing.assert_array_equal(Im, exp[f"I{m}_{rerank}"])
            np.testing.assert_allclose(Dm, exp[f"D{m}_{rerank}"], rtol=1e-6, atol=1e-5)


def test_golden_file_is_what_the_writer_writes_today():
    # Every section but INFO (it names the writer version) must be byte-identical.
    ours = sections_of(drqindex.serialize_index(drqindex.read_index(GOLDEN)).tobytes())
    golden = sections_of(GOLDEN.read_bytes())
    assert [t for t, *_ in ours] == [t for t, *_ in golden]
    for (tag, flags, payload), (_, gflags, gpayload) in zip(ours, golden):
        assert flags == gflags
        if tag != b"INFO":
            assert payload == gpayload, tag


# ------------------------------------------------------------------------------ corrupt and truncated
def test_truncated_files_raise(data, codebooks):
    blob = drqindex.serialize_index(_index(data, codebooks, L2, 5)).tobytes()
    cuts = sorted({0, 1, 7, 8, 63, 64, 65, 100, 200, len(blob) // 3, len(blob) // 2, len(blob) - 33,
                   len(blob) - 32, len(blob) - 1} | set(range(0, len(blob), max(1, len(blob) // 40))))
    for cut in cuts:
        with pytest.raises(drqindex.IndexFileError):
            drqindex.deserialize_index(blob[:cut])
    with pytest.raises(drqindex.IndexFileError, match="after the END"):
        drqindex.deserialize_index(blob + b"\0")


def test_bit_flips_raise():
    # Every byte is covered by a CRC (or must be zero padding), so any flipped bit is detected.
    blob = GOLDEN.read_bytes()
    rng = np.random.default_rng(3)
    positions = sorted(set(rng.integers(0, len(blob), 150).tolist()) | {0, 12, 16, 40, 60, 64, 100})
    for pos in positions:
        bad = bytearray(blob)
        bad[pos] ^= 1 << int(rng.integers(0, 8))
        with pytest.raises(drqindex.IndexFileError):
            drqindex.deserialize_index(bytes(bad))


# ------------------------------------------------------------------------------ crafted (valid CRCs)
def sections_of(data: bytes):
    """[(tag, flags, payload)] of a well-formed file (written from docs/file_format.md)."""
    pos = struct.unpack_from("<I", data, 12)[0]
    out = []
    while True:
        start = (pos + 32 + 63) // 64 * 64 - 32
        tag, flags, length, _ = struct.unpack_from("<4sIQI", data, start)
        out.append((tag, flags, data[start + 32:start + 32 + length]))
        pos = start + 32 + length
        if tag == b"END ":
            return out


def build_file(header_fields=None, sections=None, base=None) -> bytes:
    """The golden file's header with `header_fields` changed and the given sections, valid CRCs."""
    base = base if base is not None else GOLDEN.read_bytes()
    names = ["magic", "major", "minor", "hsize", "kind", "d", "M", "K", "metric", "r1", "ntotal", "flags", "r2"]
    fields = dict(zip(names, struct.unpack_from("<8sHHIIIIIIIQQI", base, 0)))
    fields.update(header_fields or {})
    head = struct.pack("<8sHHIIIIIIIQQI", *fields.values())
    out = bytearray(head + struct.pack("<I", zlib.crc32(head)))
    for tag, flags, payload in (sections if sections is not None else sections_of(base)):
        start = (len(out) + 32 + 63) // 64 * 64 - 32
        out += b"\0" * (start - len(out))
        sh = struct.pack("<4sIQI8s", tag, flags, len(payload), zlib.crc32(payload), b"\0" * 8)
        out += sh + struct.pack("<I", zlib.crc32(sh)) + payload
    return bytes(out)


def replaced(tag, payload):
    return [(t, f, payload if t == tag else p) for t, f, p in sections_of(GOLDEN.read_bytes())]


def without(tag):
    return [s for s in sections_of(GOLDEN.read_bytes()) if s[0] != tag]


def _i8(*values):
    return np.array(values, "<i8").tobytes()


def test_independent_writer_matches_the_golden_file():
    assert build_file() == GOLDEN.read_bytes()


def test_unknown_sections():
    secs = sections_of(GOLDEN.read_bytes())
    assert drqindex.deserialize_index(build_file(sections=[(b"XTRA", 0, b"later")] + secs)).ntotal == 290
    with pytest.raises(drqindex.IndexFileError, match="unknown required section"):
        drqindex.deserialize_index(build_file(sections=[(b"XTRA", 1, b"later")] + secs))


def _codebooks_with(value):
    cb = np.frombuffer(dict((t, p) for t, _, p in sections_of(GOLDEN.read_bytes()))[b"FSCB"], "<f4").copy()
    cb[5] = value
    return cb.tobytes()


def _odd_nibble_codes():
    codes = bytearray(dict((t, p) for t, _, p in sections_of(GOLDEN.read_bytes()))[b"FSCD"])
    codes[3] |= 0x10  # row 0, last byte (M = 7: 4 bytes per row), the unused high nibble
    return bytes(codes)


def _ids_with_minus_one():
    ids = np.frombuffer(dict((t, p) for t, _, p in sections_of(GOLDEN.read_bytes()))[b"IDS "], "<i8").copy()
    ids[4] = -1
    return ids.tobytes()


@pytest.mark.parametrize("header,sections,match", [
    ({"K": 256}, None, "K must be 16"),
    ({"M": 255}, None, "M must be in 1..254"),
    ({"M": 0}, None, "M must be in 1..254"),
    ({"d": 0}, None, "d must be >= 1"),
    ({"metric": 7}, None, "unknown metric"),
    ({"flags": 3}, None, "unknown required feature flags 0x2"),
    ({"flags": 0}, None, "untrained index cannot hold vectors"),
    ({"ntotal": 1 << 40}, None, "expected"),          # sizes checked before anything is allocated
    ({"d": 1 << 30}, None, "expected"),
    ({"metric": 0}, None, "inner-product index needs no norm prefix"),
    ({}, without(b"FSPR"), "'FSPR': missing"),
    ({}, without(b"FSCB"), "'FSCB': missing"),
    ({}, without(b"FSNQ"), "'FSNQ': missing"),
    ({}, without(b"FSNC"), "'FSNC': missing"),
    ({}, replaced(b"FSPR", _i8(5, 4, 2, 4, 6)), "nnorm=4"),
    ({}, replaced(b"FSPR", _i8(5, 1 << 40, 2, 4, 6, 7)), "nnorm="),
    ({}, replaced(b"FSPR", b"\0" * 12), "expected 8"),
    ({}, replaced(b"FSPR", _i8(5, 4, 2, 4, 4, 7)), "must increase"),
    ({}, replaced(b"FSPR", _i8(5, 4, 2, 4, 6, 8)), "must increase"),
    ({}, replaced(b"FSPR", _i8(-1, 4, 2, 4, 6, 7)), "rerank must be >= 0"),
    ({}, replaced(b"FSPR", _i8(5, 0)), "L2 index needs at least one"),
    ({}, replaced(b"FSCB", _codebooks_with(np.nan)), "non-finite codebook"),
    ({}, replaced(b"FSCB", _codebooks_with(np.inf)), "non-finite codebook"),
    ({}, replaced(b"FSNQ", np.zeros(8, "<f4").tobytes()), "norm_step"),
    ({}, replaced(b"FSCD", _odd_nibble_codes()), "high nibble"),
    ({}, replaced(b"IDS ", _ids_with_minus_one()), "id -1"),
    ({}, replaced(b"FSNC", b"\0" * 10), "expected"),
])
def test_crafted_files_raise(header, sections, match):
    with pytest.raises(drqindex.IndexFileError, match=match):
        drqindex.deserialize_index(build_file(header, sections))


def test_untrained_file_with_model_sections_is_refused():
    secs = [(t, f, b"" if t in (b"FSCD", b"FSNC", b"IDS ") else p) for t, f, p in sections_of(GOLDEN.read_bytes())]
    with pytest.raises(drqindex.IndexFileError, match="present although"):
        drqindex.deserialize_index(build_file({"flags": 0, "ntotal": 0}, secs))
    ok = [s for s in secs if s[0] not in (b"FSCB", b"FSNQ")]
    index = drqindex.deserialize_index(build_file({"flags": 0, "ntotal": 0}, ok))
    assert not index.is_trained and index.norm_prefixes == (2, 4, 6, 7)
