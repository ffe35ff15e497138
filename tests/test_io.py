"""Persistence: write/read/serialize/pickle round trips, golden files of format 1.0, and hostile
files (corrupt, truncated, crafted) that must raise IndexFileError, never crash or over-allocate."""
import copy
import io
import json
import pickle
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import faiss
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import drqindex
from conftest import make_index, make_quantizer

DATA = Path(__file__).parent / "data"


def assert_same_index(a, b, xq, iters=None):
    assert (a.d, a.iters, a.metric_type, a.ntotal, a.is_trained) == (b.d, b.iters, b.metric_type, b.ntotal,
                                                                      b.is_trained)
    np.testing.assert_array_equal(a.get_ids(), b.get_ids())
    np.testing.assert_array_equal(a._store.get_codes(0, a.ntotal), b._store.get_codes(0, b.ntotal))
    np.testing.assert_array_equal(a._store.get_norms(0, a.ntotal), b._store.get_norms(0, b.ntotal))
    np.testing.assert_array_equal(a.quantizer.codebook, b.quantizer.codebook)
    np.testing.assert_array_equal(a.quantizer.scales, b.quantizer.scales)
    Da, Ia = a.search(xq, 7, iters=iters)
    Db, Ib = b.search(xq, 7, iters=iters)
    np.testing.assert_array_equal(Ia, Ib)
    np.testing.assert_array_equal(Da, Db)


# ------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("metric", [drqindex.METRIC_L2, drqindex.METRIC_INNER_PRODUCT])
def test_write_read_serialize_pickle_round_trips(tmp_path, metric, rng):
    index, xb = make_index(d=12, M=5, n=300, metric=metric)
    index.remove_ids(np.arange(0, 300, 7))  # ids no longer 0..n-1
    index.train_info = {"loss": [np.float32(0.5), 0.25], "epochs": np.int64(3)}
    index.train_config = {"lr": 0.01}
    xq = rng.standard_normal((9, 12)).astype(np.float32)
    path = tmp_path / "a.drq"
    drqindex.write_index(index, path)
    copies = [drqindex.read_index(path), drqindex.read_index(str(path), mmap=True),
              drqindex.deserialize_index(drqindex.serialize_index(index)),
              drqindex.deserialize_index(drqindex.serialize_index(index).tobytes()),
              pickle.loads(pickle.dumps(index)), copy.deepcopy(index)]
    with open(path, "rb") as f:
        copies.append(drqindex.read_index(f))
    bio = io.BytesIO()
    drqindex.write_index(index, bio)
    assert bio.getvalue() == path.read_bytes() == drqindex.serialize_index(index).tobytes()
    for other in copies:
        assert_same_index(index, other, xq)
        assert_same_index(index, other, xq, iters=2)
        assert other.train_info == {"loss": [0.5, 0.25], "epochs": 3}
        assert other.train_config == {"lr": 0.01}
    # A copy is independent of the original (and of the buffer it was read from).
    buf = drqindex.serialize_index(index)
    clone = drqindex.deserialize_index(buf)
    buf[:] = 0
    clone.add(xb[:3])
    assert clone.ntotal == index.ntotal + 3
    assert_same_index(index, drqindex.deserialize_index(drqindex.serialize_index(index)), xq)


def test_untrained_and_empty_indexes_round_trip(tmp_path):
    untrained = drqindex.IndexDRQ(8, iters=3, metric=drqindex.METRIC_INNER_PRODUCT)
    back = pickle.loads(pickle.dumps(untrained))
    assert not back.is_trained and (back.d, back.iters, back.metric_type) == (8, 3, drqindex.METRIC_INNER_PRODUCT)
    empty = drqindex.IndexDRQ(8, iters=3)
    empty.set_quantizer(make_quantizer(8, 3))
    drqindex.write_index(empty, tmp_path / "e.drq")
    back = drqindex.read_index(tmp_path / "e.drq", mmap=True)
    assert back.is_trained and back.ntotal == 0
    np.testing.assert_array_equal(back.quantizer.codebook, empty.quantizer.codebook)


def test_write_is_atomic_and_leaves_no_temporary(tmp_path):
    index, _ = make_index(n=50)
    path = tmp_path / "x.drq"
    path.write_bytes(b"old contents")
    with pytest.raises(TypeError):
        drqindex.write_index(object(), path)
    assert path.read_bytes() == b"old contents"
    drqindex.write_index(index, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.drq"]


def test_reading_needs_no_torch():
    code = ("import sys, drqindex; i = drqindex.read_index(sys.argv[1]); "
            "import numpy as np; i.search(np.zeros((1, 8), np.float32), 3); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code, str(DATA / "golden_flat_l2_v1.drq")], check=True, timeout=60)


# ------------------------------------------------------------------------------ golden files
@pytest.mark.parametrize("name", ["l2", "ip"])
@pytest.mark.parametrize("mmap", [False, True])
def test_golden_files_of_format_1_0_still_read(name, mmap):
    exp = np.load(DATA / "golden_v1_expected.npz")
    index = drqindex.read_index(DATA / f"golden_flat_{name}_v1.drq", mmap=mmap)
    assert (index.d, index.iters, index.ntotal) == (8, 4, 20)
    assert index.metric_type == (drqindex.METRIC_L2 if name == "l2" else drqindex.METRIC_INNER_PRODUCT)
    np.testing.assert_array_equal(index.quantizer.codebook, exp["codebook"])
    np.testing.assert_array_equal(index.quantizer.scales, exp["scales"])
    np.testing.assert_array_equal(index.get_ids(), exp["ids"])
    np.testing.assert_array_equal(index._store.get_codes(0, 20), exp[f"{name}_codes"])
    np.testing.assert_array_equal(index._store.get_norms(0, 20), exp[f"{name}_norms"])
    assert index.train_info == {"note": "golden file, format 1.0", "metric": name}
    for m in range(1, 5):
        D, I = index.search(exp["xq"], 6, iters=m)
        np.testing.assert_array_equal(I, exp[f"{name}_I{m}"])
        np.testing.assert_allclose(D, exp[f"{name}_D{m}"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mmap", [False, True])
def test_golden_refine_file_of_format_1_0_still_reads(mmap):
    exp = np.load(DATA / "golden_v1_expected.npz")
    index = drqindex.read_index(DATA / "golden_refine_l2_v1.drq", mmap=mmap)
    assert isinstance(index, drqindex.IndexRefineFlat) and index.k_factor == 3 and index.ntotal == 20
    np.testing.assert_array_equal(index.raw_vectors(), exp["xb"])
    np.testing.assert_array_equal(index.get_ids(), exp["ids"])
    D, I = index.search(exp["xq"], 6, iters=2)
    np.testing.assert_array_equal(I, exp["refine_I"])
    np.testing.assert_allclose(D, exp["refine_D"], rtol=1e-6, atol=1e-6)


def test_golden_file_is_what_the_writer_writes_today():
    # Today's writer must produce the golden bytes exactly, except for the INFO text (it names the
    # writer version); a change here is a format change and needs a new version number.
    index = drqindex.read_index(DATA / "golden_flat_l2_v1.drq")
    ours = sections_of(drqindex.serialize_index(index).tobytes())
    golden = sections_of((DATA / "golden_flat_l2_v1.drq").read_bytes())
    assert [t for t, *_ in ours] == [t for t, *_ in golden]
    for (tag, flags, payload), (_, gflags, gpayload) in zip(ours, golden):
        assert flags == gflags
        if tag != b"INFO":
            assert payload == gpayload, tag


# ------------------------------------------------------------------------------ a tiny independent writer
# Written from docs/file_format.md (not from drqindex.io), to craft valid-checksum hostile files.
def sections_of(data: bytes):
    """[(tag, flags, payload)] of a well-formed file."""
    pos = struct.unpack_from("<I", data, 12)[0]
    out = []
    while True:
        start = (pos + 32 + 63) // 64 * 64 - 32
        tag, flags, length, _ = struct.unpack_from("<4sIQI", data, start)
        out.append((tag, flags, data[start + 32:start + 32 + length]))
        pos = start + 32 + length
        if tag == b"END ":
            return out


def build_file(header_fields: dict | None = None, sections=None, base: bytes | None = None) -> bytes:
    """A file with valid checksums: the header of `base` with `header_fields` changed
    (d, M, K, metric, ntotal, flags, major, kind) and the given [(tag, flags, payload)] sections."""
    base = base if base is not None else (DATA / "golden_flat_l2_v1.drq").read_bytes()
    fields = dict(zip(["magic", "major", "minor", "hsize", "kind", "d", "M", "K", "metric", "r1", "ntotal",
                       "flags", "r2"], struct.unpack_from("<8sHHIIIIIIIQQI", base, 0)))
    fields.update(header_fields or {})
    head = struct.pack("<8sHHIIIIIIIQQI", *fields.values())
    out = bytearray(head + struct.pack("<I", zlib.crc32(head)))
    for tag, flags, payload in (sections if sections is not None else sections_of(base)):
        start = (len(out) + 32 + 63) // 64 * 64 - 32
        out += b"\0" * (start - len(out))
        sh = struct.pack("<4sIQI8s", tag, flags, len(payload), zlib.crc32(payload), b"\0" * 8)
        out += sh + struct.pack("<I", zlib.crc32(sh)) + payload
    return bytes(out)


def replace_section(tag, payload, flags=None):
    secs = sections_of((DATA / "golden_flat_l2_v1.drq").read_bytes())
    return [(t, f if flags is None else flags, payload if t == tag else p) for t, f, p in secs]


def golden_sections():
    return sections_of((DATA / "golden_flat_l2_v1.drq").read_bytes())


def test_independent_writer_matches_the_golden_file():
    golden = (DATA / "golden_flat_l2_v1.drq").read_bytes()
    assert build_file() == golden


def test_unknown_optional_sections_are_skipped_unknown_required_refused():
    secs = sections_of((DATA / "golden_flat_l2_v1.drq").read_bytes())
    extra = [(b"XTRA", 0, b"future data")] + secs
    index = drqindex.deserialize_index(build_file(sections=extra))
    assert index.ntotal == 20
    with pytest.raises(drqindex.IndexFileError, match="section 'XTRA': unknown required section"):
        drqindex.deserialize_index(build_file(sections=[(b"XTRA", 1, b"future data")] + secs))
    # A newer minor version (a longer header, new optional sections) is still read.
    index = drqindex.deserialize_index(_longer_header(build_file(sections=extra)))
    assert index.ntotal == 20


def _longer_header(data: bytes) -> bytes:
    # Format 1.1 might append 8 bytes of header fields: header_size 72, first section after it.
    fields = list(struct.unpack_from("<8sHHIIIIIIIQQI", data, 0))
    fields[2], fields[3] = 1, 72
    head = struct.pack("<8sHHIIIIIIIQQI", *fields) + b"newfield"
    out = bytearray(head + struct.pack("<I", zlib.crc32(head)))
    for tag, flags, payload in sections_of(data):
        start = (len(out) + 32 + 63) // 64 * 64 - 32
        out += b"\0" * (start - len(out))
        sh = struct.pack("<4sIQI8s", tag, flags, len(payload), zlib.crc32(payload), b"\0" * 8)
        out += sh + struct.pack("<I", zlib.crc32(sh)) + payload
    return bytes(out)


HOSTILE = [
    (lambda: b"", "the data is empty"),
    (lambda: b"DRQ", "header: truncated"),
    (lambda: faiss.serialize_index(faiss.IndexFlatL2(4)).tobytes(), "not a drqindex index file .*faiss.read_index"),
    (lambda: b"GARBAGE!" * 20, "not a drqindex index file"),
    (lambda: build_file({"major": 2}), r"format version 2\.0 is not supported"),
    (lambda: build_file({"kind": 9}), "index kind 9 is not supported"),
    (lambda: build_file({"flags": 1 | 8}), "unknown required feature flags 0x8"),
    (lambda: build_file({"flags": 1 | 4}), "ENCJ.*missing"),
    (lambda: build_file({"K": 16}), "K must be 256"),
    (lambda: build_file({"M": 0}), "M must be in 1..1024"),
    (lambda: build_file({"metric": 5}), "unknown metric 5"),
    (lambda: build_file({"hsize": 10 ** 9}), "invalid header size"),
    # Sizes that would allocate terabytes if trusted: refused by comparing with the section lengths.
    (lambda: build_file({"ntotal": 2 ** 60}), r"section 'CODE': expected 4611686018427387904 bytes"),
    (lambda: build_file({"d": 2 ** 31}), "section 'CBKF': expected"),
    (lambda: build_file({"flags": 0}), "untrained index cannot hold vectors"),
    (lambda: build_file({"flags": 3}), "section 'RFKF': missing"),
    (lambda: build_file(base=(DATA / "golden_refine_l2_v1.drq").read_bytes(),
                        sections=[(t, f, np.array([0.5]).tobytes() if t == b"RFKF" else p)
                                  for t, f, p in sections_of((DATA / "golden_refine_l2_v1.drq").read_bytes())]),
     "k_factor must be a finite number >= 1"),
    (lambda: build_file({"flags": 1}, base=(DATA / "golden_refine_l2_v1.drq").read_bytes()),
     "section 'RAWF': unknown required section"),
    (lambda: build_file(sections=replace_section(b"IDS ", b"\xff" * 160)), "id -1 is reserved"),
    (lambda: build_file(sections=replace_section(b"NORM", np.full(80, np.nan, np.float32).tobytes())),
     "non-finite norm"),
    (lambda: build_file(sections=replace_section(b"SCLF", np.full(4, np.inf, np.float32).tobytes())),
     "expected finite values"),
    (lambda: build_file(sections=replace_section(b"CBKF", np.full(2048, 1e30, np.float32).tobytes())),
     "overflow float32"),
    (lambda: build_file(sections=replace_section(b"INFO", b"[" * 200000)), "section 'INFO': invalid JSON"),
    (lambda: build_file(sections=replace_section(b"INFO", b"\xff\xfe")), "section 'INFO': invalid JSON"),
    (lambda: build_file(sections=replace_section(b"INFO", b"[1, 2]")), "expected a JSON object"),
    (lambda: build_file(sections=[s for s in golden_sections() if s[0] != b"IDS "]),
     "section 'IDS': missing"),
    (lambda: build_file(sections=[s for s in golden_sections() if s[0] != b"END "]), "before the END"),
    (lambda: build_file(sections=golden_sections()[:2] + golden_sections()[1:]), "appears twice"),
    (lambda: build_file() + b"\0" * 5, "5 unexpected bytes after the END section"),
]


@pytest.mark.parametrize("make,message", HOSTILE, ids=[m for _, m in HOSTILE])
def test_hostile_files_raise_index_file_error(make, message, tmp_path):
    data = make()
    with pytest.raises(drqindex.IndexFileError, match=message) as info:
        drqindex.deserialize_index(np.frombuffer(data, np.uint8))
    assert isinstance(info.value, ValueError)
    path = tmp_path / "bad.drq"
    path.write_bytes(data)
    for mmap in (False, True):
        with pytest.raises(drqindex.IndexFileError, match=message) as info:
            drqindex.read_index(path, mmap=mmap)
        assert str(info.value).startswith(str(path))  # the message names the file


def test_checksums_catch_single_bit_flips():
    data = bytearray((DATA / "golden_flat_l2_v1.drq").read_bytes())
    rng = np.random.default_rng(0)
    for pos in rng.choice(len(data), 200, replace=False):
        bad = bytearray(data)
        bad[pos] ^= 1 << int(rng.integers(8))
        with pytest.raises(drqindex.IndexFileError):
            drqindex.deserialize_index(bytes(bad))


# ------------------------------------------------------------------------------ fuzzing
GOLDEN = (DATA / "golden_flat_l2_v1.drq").read_bytes()
_MUTATION = st.lists(st.tuples(st.integers(0, len(GOLDEN) - 1), st.integers(0, 255)), min_size=1, max_size=6)


def _fix_checksums(data: bytes) -> bytes:
    """Recompute every CRC the structure still lets us find, to reach the semantic checks."""
    try:
        return build_file(base=data, sections=sections_of(data))
    except (struct.error, IndexError, ValueError):
        return data


def _read_or_refuse(data: bytes):
    try:
        index = drqindex.deserialize_index(np.frombuffer(data, np.uint8))
    except drqindex.IndexFileError:
        return
    # A mutation that still forms a valid file must give a working index.
    assert isinstance(index, drqindex.IndexDRQ)
    if index.is_trained and index.ntotal:
        D, I = index.search(np.zeros((2, index.d), np.float32), 3)
        assert I.shape == (2, 3)
    drqindex.deserialize_index(drqindex.serialize_index(index))


# Bounded: about 10 s in all on a loaded 2-core machine. derandomize: the same examples every run.
_FUZZ = settings(max_examples=300, deadline=None, database=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow])
_FUZZ_SMALL = settings(_FUZZ, max_examples=150)


@_FUZZ_SMALL
@given(cut=st.integers(0, len(GOLDEN) - 1))
def test_fuzz_truncated(cut):
    with pytest.raises(drqindex.IndexFileError):
        drqindex.deserialize_index(GOLDEN[:cut])


@_FUZZ
@given(edits=_MUTATION, fix=st.booleans())
def test_fuzz_mutated_bytes(edits, fix):
    data = bytearray(GOLDEN)
    for pos, value in edits:
        data[pos] = value
    data = bytes(data)
    _read_or_refuse(_fix_checksums(data) if fix else data)


@_FUZZ_SMALL
@given(field=st.sampled_from([12, 16, 20, 24, 28, 32, 40, 44, 48]), value=st.integers(0, 2 ** 32 - 1))
def test_fuzz_header_fields_with_valid_checksums(field, value):
    data = bytearray(GOLDEN[:60])
    struct.pack_into("<I", data, field, value)
    data += struct.pack("<I", zlib.crc32(bytes(data)))
    _read_or_refuse(bytes(data) + GOLDEN[64:])


@_FUZZ_SMALL
@given(tag=st.sampled_from([b"CBKF", b"SCLF", b"CODE", b"NORM", b"IDS ", b"INFO"]),
       payload=st.binary(max_size=300))
def test_fuzz_section_payloads_with_valid_checksums(tag, payload):
    _read_or_refuse(build_file(sections=replace_section(tag, payload)))


def test_info_section_is_plain_json():
    info = dict((t, p) for t, _, p in sections_of(GOLDEN))[b"INFO"]
    parsed = json.loads(info.decode("utf-8"))
    assert parsed["train_info"]["note"] == "golden file, format 1.0"


def test_index_file_error_survives_pickling():
    # Errors cross process boundaries (Ray workers, multiprocessing): they must unpickle intact.
    import pickle

    from drqindex.io import IndexFileError
    err = pickle.loads(pickle.dumps(IndexFileError("shard_3.drq", "CODE", "truncated: read 10 of 64 bytes")))
    assert isinstance(err, ValueError)
    assert (err.source, err.section) == ("shard_3.drq", "CODE")
    assert str(err) == "shard_3.drq: section CODE: truncated: read 10 of 64 bytes"
