"""Reading and writing indexes: a versioned binary format with checksums, no pickle inside.

    write_index(index, path)            read_index(path, mmap=False)
    serialize_index(index) -> uint8     deserialize_index(array)
    pickle.dumps(index) / copy.deepcopy(index) go through serialize_index.

The format is described byte by byte in docs/file_format.md. In short: a fixed header (magic,
version, sizes, its own CRC32), then tagged sections, each with a length and a CRC32, ended by an
END section. Readers skip optional sections they do not know and refuse required ones, so later
versions can add sections without breaking today's readers, and today's files stay readable.

Reading never trusts the file: every declared size is checked against the bytes actually present
before anything is allocated, every checksum is verified before the index is built, and any
problem raises IndexFileError (a ValueError) naming the file, the section and what is wrong.
Only numpy, zlib and json are needed: no torch, and nothing in a file is ever executed.
"""
from __future__ import annotations

import dataclasses
import io as _pyio
import json
import os
import struct
import zlib

import numpy as np

from .metrics import METRIC_INNER_PRODUCT, METRIC_L2

MAGIC = b"DRQIDX\x00\x01"
FORMAT_MAJOR = 1  # a reader refuses files with a larger major version
FORMAT_MINOR = 0  # minor versions only add optional sections / header fields: always readable

KIND_FLAT = 1  # IndexDRQ (and IndexRefineFlat, by flag)
KIND_IVF = 2  # IndexIVFDRQ (see docs/file_format.md)
KIND_TERNARY_ENCODER = 3  # TernaryEncoder alone (hash_io.py)
KIND_BINARY_HASH = 4  # IndexBinaryHash: encoder (optional) + binary codes (hash_io.py)
KIND_FASTSCAN = 5  # IndexDRQFastScan: 4-bit codebooks, packed codes, norm levels (fastscan_io.py)

# Header: magic, major, minor, header_size, kind, d, M, K, metric, reserved, ntotal, flags,
# reserved, then the header's CRC32 as the last 4 bytes. header_size lets a later minor version
# append fields; the CRC always covers everything before it.
_HEADER = struct.Struct("<8sHHIIIIIIIQQI")
HEADER_SIZE = _HEADER.size + 4  # 64
_MAX_HEADER_SIZE = 4096

FLAG_TRAINED = 1  # codebook and scales present
FLAG_REFINE_FLAT = 2  # IndexRefineFlat: raw vectors (RAWF) and k_factor (RFKF) follow the codes
FLAG_ENCODER = 4  # IndexDRQ with a TernaryEncoder in front: ENCJ/ENCB sections (hash_io.py); d = its input dim
_KNOWN_FLAGS = FLAG_TRAINED | FLAG_REFINE_FLAT | FLAG_ENCODER  # any other set bit is a feature this reader lacks: refused

# Section header, 32 bytes: tag, flags, payload length, payload CRC32, reserved (8 bytes), and
# the CRC32 of the 28 bytes before it. The payload starts at the next multiple of ALIGN (so a memory map gives
# aligned float arrays); the section header sits in the 32 bytes right before it and the bytes
# between the previous payload and this header are zero.
_SECTION = struct.Struct("<4sIQI8s")
SECTION_HEADER_SIZE = 32
ALIGN = 64
SECTION_REQUIRED = 1

TAG_INFO = b"INFO"  # optional: UTF-8 JSON object (train_info, train_config, writer version)
TAG_CODEBOOK = b"CBKF"  # float32 (K, d): the shared codebook (codebooks="shared")
TAG_CODEBOOKS = b"CBKM"  # float32 (M, K, d): one codebook per iteration (codebooks="per_iteration"); one of CBKF / CBKM
TAG_SUBSPACE = b"CBKS"  # float32 mean (d,), basis (d, r), codebooks (M, K, r): per-iteration codebooks in an
#                         r-dimensional subspace (drqindex.quantizer.Subspace); instead of CBKM
TAG_SCALES = b"SCLF"  # float32 (M,)
TAG_CODES = b"CODE"  # uint8 (ntotal, M), row-major
TAG_NORMS = b"NORM"  # float32 (ntotal, M); [i, m-1] = ||xhat_m(i)||^2
TAG_IDS = b"IDS "  # int64 (ntotal,)
TAG_RAW = b"RAWF"  # IndexRefineFlat only: float32 (ntotal, d), the raw vectors in storage order
TAG_K_FACTOR = b"RFKF"  # IndexRefineFlat only: float64 k_factor
TAG_IVF_PARAMS = b"IVFP"  # IndexIVFDRQ only: int64 [nlist, nprobe, search_iters (0 = None)]
TAG_COARSE = b"CQIX"  # IndexIVFDRQ only: the coarse quantizer, faiss.serialize_index bytes
TAG_LIST_SIZES = b"LSTS"  # IndexIVFDRQ only: int64 (nlist,) vectors per list; CODE/NORM/IDS are in list order
TAG_END = b"END "  # empty, last; nothing may follow it

# Rows per chunk when codes/norms move between a file and the store: bounds the temporary
# buffers (a few MB) however large the index is.
_ROW_CHUNK = 1 << 16
_CRC_CHUNK = 1 << 24


class IndexFileError(ValueError):
    """A file or buffer that is not a valid drqindex index: corrupt, truncated, from a newer
    format version, or hostile. The message names the source, the section and the problem."""

    def __init__(self, source: str, section: str | None, problem: str):
        self.source = source
        self.section = section
        self.problem = problem
        where = f"{source}: " + (f"section {section}: " if section else "")
        super().__init__(where + problem)

    def __reduce__(self):
        # The default exception pickling would call __init__ with the single formatted message;
        # rebuild from the three fields so the error survives a process boundary (Ray, multiprocessing).
        return (type(self), (self.source, self.section, self.problem))


# ------------------------------------------------------------------------------------------ writing
def write_index(index, path) -> None:
    """Write `index` (an IndexDRQ, IndexRefineFlat, IndexIVFDRQ, IndexDRQFastScan, IndexBinaryHash or
    TernaryEncoder) to `path` (str or os.PathLike) or to a binary
    file object with write/seek.

    A path is written to `path + '.tmp'` and renamed over `path` only when complete, so a crash
    or a full disk never leaves a truncated index under the final name.
    """
    if hasattr(path, "write"):
        _write(index, path)
        return
    path = os.fspath(path)
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            _write(index, f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def serialize_index(index) -> np.ndarray:
    """The bytes write_index would write, as a uint8 numpy array (faiss.serialize_index's shape)."""
    buf = _pyio.BytesIO()
    _write(index, buf)
    return np.frombuffer(bytearray(buf.getbuffer()), dtype=np.uint8)


def _write(index, f) -> None:
    from .encoder import TernaryEncoder
    from .index_binary_hash import IndexBinaryHash
    from .index_drq import IndexDRQ
    from .index_drq_fastscan import IndexDRQFastScan
    from .index_ivf import IndexIVFDRQ
    from .index_refine import IndexRefineFlat

    if isinstance(index, (TernaryEncoder, IndexBinaryHash)):
        from . import hash_io
        hash_io.write_hash_object(index, f)
    elif isinstance(index, IndexDRQFastScan):
        from . import fastscan_io
        fastscan_io.write_fastscan(index, f)
    elif isinstance(index, IndexIVFDRQ):
        _write_ivf(index, f)
    elif isinstance(index, IndexRefineFlat):
        # Wrapper lock, then base lock: the order every IndexRefineFlat method uses.
        with index._lock.read():
            _write_flat(index.base_index, f, refine=index)
    elif isinstance(index, IndexDRQ):
        _write_flat(index, f, refine=None)
    else:
        raise TypeError(f"index: expected a drqindex.IndexDRQ, IndexRefineFlat, IndexIVFDRQ, IndexDRQFastScan, "
                        f"IndexBinaryHash or TernaryEncoder, got {type(index).__name__}")


def _write_ivf(index, f) -> None:
    import faiss

    with index._lock.read():
        trained = index.is_trained
        ntotal = index.ntotal
        M = index.iters
        f.write(_pack_header(KIND_IVF, index.d, M, 256, index.metric_type, ntotal, FLAG_TRAINED if trained else 0))
        writer = _SectionWriter(f, HEADER_SIZE)
        writer.section(TAG_INFO, 0, [_info_json(index).encode("utf-8")])
        params = np.array([index.nlist, index.nprobe, index.search_iters or 0], "<i8")
        writer.section(TAG_IVF_PARAMS, SECTION_REQUIRED, [params])
        writer.section(TAG_COARSE, SECTION_REQUIRED, [np.asarray(faiss.serialize_index(index.quantizer), np.uint8)])
        if trained:
            q = index._drq
            _write_quantizer(writer, q)
        store = index._store
        sizes = store.list_sizes()
        writer.section(TAG_LIST_SIZES, SECTION_REQUIRED, [_le(sizes, "<i8")])
        nonempty = [int(l) for l in np.flatnonzero(sizes)]
        writer.section(TAG_CODES, SECTION_REQUIRED, (store.get_list(l)[0] for l in nonempty))
        writer.section(TAG_NORMS, SECTION_REQUIRED, (_le(store.get_list(l)[1], "<f4") for l in nonempty))
        writer.section(TAG_IDS, SECTION_REQUIRED, (_le(store.get_list(l)[2], "<i8") for l in nonempty))
        writer.section(TAG_END, SECTION_REQUIRED, [])


def _write_quantizer(writer, q) -> None:
    if q.subspace is not None:
        # Required: a reader without it would have no codebook (it says "upgrade drqindex").
        writer.section(TAG_SUBSPACE, SECTION_REQUIRED, [_le(a, "<f4") for a in q.subspace])
    else:
        tag = TAG_CODEBOOKS if q.per_iteration else TAG_CODEBOOK
        writer.section(tag, SECTION_REQUIRED, [_le(q.codebook, "<f4")])
    writer.section(TAG_SCALES, SECTION_REQUIRED, [_le(q.scales, "<f4")])


def _write_flat(index, f, refine) -> None:
    # The read lock gives a consistent snapshot (no add/remove between codes, norms and ids).
    with index._lock.read():
        trained = index.is_trained
        ntotal = index.ntotal
        M = index.iters
        flags = (FLAG_TRAINED if trained else 0) | (FLAG_REFINE_FLAT if refine is not None else 0) \
            | (FLAG_ENCODER if index.encoder is not None else 0)
        f.write(_pack_header(KIND_FLAT, index.d, M, 256, index.metric_type, ntotal, flags))
        writer = _SectionWriter(f, HEADER_SIZE)
        info = _info_json(index)
        writer.section(TAG_INFO, 0, [info.encode("utf-8")])
        if index.encoder is not None:
            from . import hash_io
            meta, arrays = hash_io._encoder_sections(index.encoder)
            writer.section(hash_io.TAG_ENC_JSON, SECTION_REQUIRED, [np.frombuffer(meta, np.uint8)])
            writer.section(hash_io.TAG_ENC_ARRAYS, SECTION_REQUIRED, arrays)
        if trained:
            q = index._quantizer
            _write_quantizer(writer, q)
        store = index._store
        writer.section(TAG_CODES, SECTION_REQUIRED,
                       (store.get_codes(s, n) for s, n in _chunks(ntotal)))
        writer.section(TAG_NORMS, SECTION_REQUIRED,
                       (_le(store.get_norms(s, n), "<f4") for s, n in _chunks(ntotal)))
        writer.section(TAG_IDS, SECTION_REQUIRED, [_le(store.get_ids(), "<i8")])
        if refine is not None:
            writer.section(TAG_RAW, SECTION_REQUIRED,
                           (_le(refine._xb[s:s + n], "<f4") for s, n in _chunks(ntotal)))
            writer.section(TAG_K_FACTOR, SECTION_REQUIRED, [np.array([refine.k_factor], "<f8")])
        writer.section(TAG_END, SECTION_REQUIRED, [])


def _pack_header(kind, d, M, K, metric, ntotal, flags) -> bytes:
    head = _HEADER.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR, HEADER_SIZE, kind, d, M, K, metric, 0,
                        ntotal, flags, 0)
    return head + struct.pack("<I", zlib.crc32(head))


class _SectionWriter:
    """Writes sections one after the other; a payload is streamed in chunks and its CRC and
    length patched into the section header afterwards (so no full copy is ever needed)."""

    def __init__(self, f, pos: int):
        self.f = f
        self.pos = pos

    def section(self, tag: bytes, flags: int, chunks) -> None:
        start = _align(self.pos + SECTION_HEADER_SIZE) - SECTION_HEADER_SIZE
        self.f.write(b"\0" * (start - self.pos))
        self.f.write(b"\0" * SECTION_HEADER_SIZE)  # placeholder, patched below
        length, crc = 0, 0
        for chunk in chunks:
            view = memoryview(np.ascontiguousarray(chunk)).cast("B")
            self.f.write(view)
            length += view.nbytes
            crc = zlib.crc32(view, crc)
        end = start + SECTION_HEADER_SIZE + length
        self.f.seek(start)
        self.f.write(_pack_section(tag, flags, length, crc))
        self.f.seek(end)
        self.pos = end


def _pack_section(tag, flags, length, crc) -> bytes:
    head = _SECTION.pack(tag, flags, length, crc, b"\0" * 8)
    return head + struct.pack("<I", zlib.crc32(head))


def _align(pos: int) -> int:
    return (pos + ALIGN - 1) // ALIGN * ALIGN


def _chunks(n: int):
    for start in range(0, n, _ROW_CHUNK):
        yield start, min(_ROW_CHUNK, n - start)


def _le(arr: np.ndarray, dtype: str) -> np.ndarray:
    return np.ascontiguousarray(arr, dtype=np.dtype(dtype))


def _info_json(index) -> str:
    from . import __version__

    cfg = index.train_config
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        cfg = dataclasses.asdict(cfg)
    info = {"writer": f"drqindex {__version__}", "train_info": index.train_info, "train_config": cfg}
    # The codebook form, so an untrained index trains the same form once read (absent: "shared").
    info["codebooks"] = getattr(index, "codebooks", "shared")
    return json.dumps(info, default=_json_default, sort_keys=True)


def _json_default(obj):
    # train_info may hold numpy scalars/arrays; anything else is kept as its repr (the section is
    # documentation, never code).
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return repr(obj)


# ------------------------------------------------------------------------------------------ reading
def read_index(path, mmap: bool = False):
    """Read an index written by write_index from a path (str / os.PathLike) or a binary file object.

    mmap=True maps the file read-only (numpy.memmap) instead of reading it: the checksums and the
    copy into the index are computed straight from the page cache. The index still owns its
    memory (codes are re-laid out in blocks for the scan), so the saving is the temporary read
    buffers, not the index's resident size; the file is not used once read_index returns.
    Raises IndexFileError (a ValueError) for a corrupt, truncated or unsupported file.
    """
    if hasattr(path, "read"):
        data = path.read()
        name = getattr(path, "name", "<file object>")
        return _read(_BufferSource(memoryview(data), str(name)))
    path = os.fspath(path)
    if mmap:
        size = os.path.getsize(path)
        if size == 0:
            raise IndexFileError(path, None, "the data is empty (0 bytes)")
        mm = np.memmap(path, dtype=np.uint8, mode="r")
        try:
            return _read(_BufferSource(memoryview(mm), path))
        finally:
            del mm
    with open(path, "rb") as f:
        return _read(_FileSource(f, path))


def deserialize_index(data):
    """The index in a uint8 array (or bytes-like object) made by serialize_index; zero-copy read."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim != 1:
            raise TypeError(f"data: expected a 1-D uint8 array, got {data.shape} {data.dtype}")
        data = np.ascontiguousarray(data)
    elif not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data: expected a uint8 numpy array or bytes, got {type(data).__name__}")
    return _read(_BufferSource(memoryview(data).cast("B"), "<serialized index>"))


def _index_from_bytes(data: bytes):
    """pickle's constructor for every index kind (see IndexDRQ.__reduce__)."""
    return deserialize_index(data)


class _BufferSource:
    def __init__(self, view: memoryview, name: str):
        self.view = view
        self.size = view.nbytes
        self.name = name

    def read(self, offset: int, n: int, section: str | None) -> memoryview:
        if offset + n > self.size:
            raise IndexFileError(self.name, section, f"truncated: needs bytes {offset}..{offset + n}, "
                                                     f"the data has {self.size}")
        return self.view[offset:offset + n]

    def array(self, offset: int, count: int, dtype: str, section: str) -> np.ndarray:
        item = np.dtype(dtype).itemsize
        return np.frombuffer(self.read(offset, count * item, section), dtype=dtype)


class _FileSource:
    def __init__(self, f, name: str):
        self.f = f
        self.name = name
        f.seek(0, os.SEEK_END)
        self.size = f.tell()

    def read(self, offset: int, n: int, section: str | None) -> bytes:
        if offset + n > self.size:
            raise IndexFileError(self.name, section, f"truncated: needs bytes {offset}..{offset + n}, "
                                                     f"the file has {self.size}")
        self.f.seek(offset)
        data = self.f.read(n)
        if len(data) != n:  # the file shrank while we read it
            raise IndexFileError(self.name, section, f"truncated: read {len(data)} of {n} bytes at {offset}")
        return data

    def array(self, offset: int, count: int, dtype: str, section: str) -> np.ndarray:
        if offset + count * np.dtype(dtype).itemsize > self.size:  # checked before allocating
            raise IndexFileError(self.name, section, "truncated")
        out = np.empty(count, dtype=dtype)
        self.f.seek(offset)
        if self.f.readinto(memoryview(out).cast("B")) != out.nbytes:
            raise IndexFileError(self.name, section, f"truncated: short read at {offset}")
        return out


@dataclasses.dataclass
class _Section:
    tag: bytes
    flags: int
    offset: int  # of the payload
    length: int

    @property
    def name(self) -> str:
        return _tag_name(self.tag)


def _tag_name(tag: bytes) -> str:
    return repr(tag.decode("latin-1").rstrip())


def _read(src):
    err = lambda section, problem: IndexFileError(src.name, section, problem)  # noqa: E731

    # --- header
    if src.size == 0:
        raise err(None, "the data is empty (0 bytes)")
    magic = bytes(src.read(0, min(src.size, len(MAGIC)), "header"))
    if magic != MAGIC[:len(magic)]:
        # faiss's files start with a fourcc such as b"IxF2", b"IwPQ", b"IHNf".
        hint = ("; a faiss index file? read it with faiss.read_index"
                if magic[:1] == b"I" and magic[1:2] in (b"x", b"w", b"H", b"B") else "")
        raise err(None, f"not a drqindex index file (starts with {magic[:8]!r}, expected {MAGIC!r}){hint}")
    if src.size < HEADER_SIZE:
        raise err("header", f"truncated: the data has {src.size} bytes, a header alone needs {HEADER_SIZE}")
    head = bytes(src.read(0, _HEADER.size, "header"))
    (magic, major, minor, header_size, kind, d, M, K, metric, _r1, ntotal, flags, _r2) = _HEADER.unpack(head)
    if major != FORMAT_MAJOR:
        raise err("header", f"format version {major}.{minor} is not supported by this drqindex "
                            f"(reads {FORMAT_MAJOR}.x); upgrade drqindex")
    if not HEADER_SIZE <= header_size <= min(_MAX_HEADER_SIZE, src.size):
        raise err("header", f"invalid header size {header_size} (expected {HEADER_SIZE}..{_MAX_HEADER_SIZE} "
                            f"and within the {src.size} bytes of data)")
    full = bytes(src.read(0, header_size, "header"))
    (stored_crc,) = struct.unpack("<I", full[-4:])
    if zlib.crc32(full[:-4]) != stored_crc:
        raise err("header", "checksum mismatch (the header is corrupt)")
    if kind not in (KIND_FLAT, KIND_IVF, KIND_TERNARY_ENCODER, KIND_BINARY_HASH, KIND_FASTSCAN):
        raise err("header", f"index kind {kind} is not supported by this drqindex "
                            f"(knows {KIND_FLAT} = IndexDRQ, {KIND_IVF} = IndexIVFDRQ, "
                            f"{KIND_TERNARY_ENCODER} = TernaryEncoder, {KIND_BINARY_HASH} = IndexBinaryHash, "
                            f"{KIND_FASTSCAN} = IndexDRQFastScan)")
    if kind == KIND_FASTSCAN:
        # Its own header checks (K = 16, M <= 254, only the trained flag) and sections.
        from . import fastscan_io
        return fastscan_io.read_fastscan(src, err, d, M, K, metric, ntotal, flags,
                                         _walk_sections(src, header_size, err))
    if kind == KIND_IVF and flags & (FLAG_REFINE_FLAT | FLAG_ENCODER):
        raise err("header", "the refine and encoder flags are not valid for an IndexIVFDRQ")
    if kind == KIND_FLAT and flags & FLAG_REFINE_FLAT and flags & FLAG_ENCODER:
        raise err("header", "an IndexDRQ with an encoder cannot be an IndexRefineFlat")
    if flags & ~_KNOWN_FLAGS:
        raise err("header", f"unknown required feature flags {flags & ~_KNOWN_FLAGS:#x}; upgrade drqindex")
    if kind in (KIND_TERNARY_ENCODER, KIND_BINARY_HASH):
        # The hashing kinds (hash_io.py) share the container, not the DRQ header fields.
        from . import hash_io
        return hash_io.read_hash_object(src, err, kind, d, M, ntotal, flags,
                                        _walk_sections(src, header_size, err))
    if d < 1:
        raise err("header", f"d must be >= 1, got {d}")
    if not 1 <= M <= 1024:
        raise err("header", f"M must be in 1..1024, got {M}")
    if K != 256:
        raise err("header", f"K must be 256 (one byte per iteration), got {K}")
    if metric not in (METRIC_L2, METRIC_INNER_PRODUCT):
        raise err("header", f"unknown metric {metric}")
    trained = bool(flags & FLAG_TRAINED)
    if not trained and ntotal:
        raise err("header", f"an untrained index cannot hold vectors, got ntotal={ntotal}")

    sections = _walk_sections(src, header_size, err)
    refine = bool(flags & FLAG_REFINE_FLAT)
    known = {TAG_INFO, TAG_CODEBOOK, TAG_CODEBOOKS, TAG_SUBSPACE, TAG_SCALES, TAG_CODES, TAG_NORMS, TAG_IDS,
             TAG_END}
    if refine:
        known |= {TAG_RAW, TAG_K_FACTOR}
    has_encoder = kind == KIND_FLAT and bool(flags & FLAG_ENCODER)
    if has_encoder:
        from . import hash_io
        known |= {hash_io.TAG_ENC_JSON, hash_io.TAG_ENC_ARRAYS}
    if kind == KIND_IVF:
        known |= {TAG_IVF_PARAMS, TAG_COARSE, TAG_LIST_SIZES}
    for tag, sec in sections.items():
        if tag not in known and sec.flags & SECTION_REQUIRED:
            raise err(sec.name, "unknown required section (written by a newer drqindex); upgrade drqindex")

    def expect(tag: bytes, nbytes: int) -> _Section:
        sec = sections.get(tag)
        if sec is None:
            raise err(_tag_name(tag), "missing")
        if sec.length != nbytes:
            raise err(sec.name, f"expected {nbytes} bytes for the header's sizes (d={d}, M={M}, "
                                f"ntotal={ntotal}), got {sec.length}")
        return sec

    if kind == KIND_IVF:
        return _read_ivf(src, sections, expect, err, d, M, K, metric, ntotal, trained)

    # --- build the index
    from .index_drq import IndexDRQ

    encoder = hash_io._read_encoder(src, sections, err, d) if has_encoder else None
    index = IndexDRQ(d, iters=M, metric=metric, encoder=encoder)
    # The codebook quantizes the encoder's output space when there is one.
    d = index.code_space_d
    if TAG_INFO in sections:
        _apply_info(index, src, sections[TAG_INFO], err)
        index.codebooks = _info_codebooks(src, sections[TAG_INFO], err)
    k_factor = None
    if refine:
        kf = expect(TAG_K_FACTOR, 8)
        k_factor = float(src.array(kf.offset, 1, "<f8", kf.name)[0])
        if not (np.isfinite(k_factor) and k_factor >= 1):
            raise err(kf.name, f"k_factor must be a finite number >= 1, got {k_factor}")
    if not trained:
        for tag in (TAG_CODEBOOK, TAG_CODEBOOKS, TAG_SUBSPACE, TAG_SCALES):
            if tag in sections:
                raise err(_tag_name(tag), "present although the header says the index is untrained")
        for tag in (TAG_CODES, TAG_NORMS, TAG_IDS) + ((TAG_RAW,) if refine else ()):
            expect(tag, 0)
        return _wrap_refine(index, np.empty((0, d), np.float32), k_factor) if refine else index
    quantizer = _read_quantizer(src, sections, expect, err, d, M, K)
    codes_sec = expect(TAG_CODES, ntotal * M)
    norms_sec = expect(TAG_NORMS, ntotal * M * 4)
    ids_sec = expect(TAG_IDS, ntotal * 8)
    raw_sec = expect(TAG_RAW, ntotal * d * 4) if refine else None
    index.set_quantizer(quantizer)
    for start, n in _chunks(ntotal):
        codes = src.array(codes_sec.offset + start * M, n * M, "u1", codes_sec.name).reshape(n, M)
        norms = src.array(norms_sec.offset + start * M * 4, n * M, "<f4", norms_sec.name).reshape(n, M)
        ids = src.array(ids_sec.offset + start * 8, n, "<i8", ids_sec.name)
        if not np.isfinite(norms).all():
            raise err(norms_sec.name, "non-finite norm values")
        if (ids == -1).any():
            raise err(ids_sec.name, "id -1 is reserved for 'no result'")
        index._append_encoded(np.ascontiguousarray(codes), np.ascontiguousarray(norms, dtype=np.float32),
                              np.ascontiguousarray(ids, dtype=np.int64))
    if not refine:
        return index
    raw = src.array(raw_sec.offset, ntotal * d, "<f4", raw_sec.name).reshape(ntotal, d).astype(np.float32)
    if not np.isfinite(raw).all():
        raise err(raw_sec.name, "non-finite raw vector values")
    return _wrap_refine(index, raw, k_factor)


def _walk_sections(src, header_size: int, err) -> dict:
    """The section table: walks the headers, checks every length against the data before anything
    is allocated, and verifies every payload checksum in bounded chunks."""
    sections: dict[bytes, _Section] = {}
    pos = header_size
    while True:
        start = _align(pos + SECTION_HEADER_SIZE) - SECTION_HEADER_SIZE
        if start + SECTION_HEADER_SIZE > src.size:
            raise err("END", f"truncated: the data ends at byte {src.size} before the END section")
        pad = bytes(src.read(pos, start - pos, "padding"))
        if pad.count(0) != len(pad):
            raise err("padding", f"non-zero padding bytes at {pos}..{start}")
        raw = bytes(src.read(start, SECTION_HEADER_SIZE, "section header"))
        tag, sflags, length, crc, _reserved = _SECTION.unpack(raw[:_SECTION.size])
        (head_crc,) = struct.unpack("<I", raw[_SECTION.size:_SECTION.size + 4])
        if zlib.crc32(raw[:_SECTION.size]) != head_crc:
            raise err(f"header at byte {start}", "checksum mismatch (the section header is corrupt)")
        sec = _Section(tag, sflags, start + SECTION_HEADER_SIZE, length)
        if length > src.size - sec.offset:
            raise err(sec.name, f"declared length {length} bytes exceeds the {src.size - sec.offset} "
                                f"bytes left (truncated or corrupt)")
        if tag in sections:
            raise err(sec.name, "appears twice")
        computed = 0
        for off in range(0, length, _CRC_CHUNK):
            computed = zlib.crc32(src.read(sec.offset + off, min(_CRC_CHUNK, length - off), sec.name), computed)
        if computed != crc:
            raise err(sec.name, "checksum mismatch (the payload is corrupt)")
        sections[tag] = sec
        pos = sec.offset + length
        if tag == TAG_END:
            break
    if pos != src.size:
        raise err("END", f"{src.size - pos} unexpected bytes after the END section")

    return sections


def _read_quantizer(src, sections, expect, err, d, M, K):
    """The DRQ quantizer of a trained index: the shared codebook (CBKF), the per-iteration
    codebooks (CBKM) or per-iteration codebooks in a subspace (CBKS), exactly one of them, and
    the scales."""
    from .quantizer import DRQQuantizer, Subspace

    present = [t for t in (TAG_CODEBOOK, TAG_CODEBOOKS, TAG_SUBSPACE) if t in sections]
    if len(present) > 1:
        raise err("/".join(_tag_name(t) for t in present), "more than one codebook section (expected one)")
    if TAG_SUBSPACE in sections:
        sec = sections[TAG_SUBSPACE]
        # floats = d + d r + M K r: r follows from the length, which must match it exactly.
        floats, rem = divmod(sec.length, 4)
        r, rem_r = divmod(floats - d, d + M * K) if floats > d else (0, 1)
        if rem or rem_r or not 1 <= r <= d:
            raise err(sec.name, f"expected 4 (d + d r + M K r) bytes with 1 <= r <= d (d={d}, M={M}, K={K}), "
                                f"got {sec.length}")
        sc = expect(TAG_SCALES, M * 4)
        mean = src.array(sec.offset, d, "<f4", sec.name).astype(np.float32)
        basis = src.array(sec.offset + 4 * d, d * r, "<f4", sec.name).reshape(d, r).astype(np.float32)
        cbs = src.array(sec.offset + 4 * (d + d * r), M * K * r, "<f4", sec.name).reshape(M, K, r).astype(np.float32)
        scales = src.array(sc.offset, M, "<f4", sc.name).astype(np.float32)
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                return DRQQuantizer(Subspace(mean, basis, cbs), scales)
        except ValueError as e:
            raise err(f"{sec.name}/{sc.name}", str(e)) from None
    if TAG_CODEBOOKS in sections:
        cb = expect(TAG_CODEBOOKS, M * K * d * 4)
        shape = (M, K, d)
    else:
        cb = expect(TAG_CODEBOOK, K * d * 4)
        shape = (K, d)
    sc = expect(TAG_SCALES, M * 4)
    # Copies: the quantizer must own its arrays, not view a memory map or the caller's buffer.
    codebook = src.array(cb.offset, int(np.prod(shape)), "<f4", cb.name).reshape(shape).astype(np.float32)
    scales = src.array(sc.offset, M, "<f4", sc.name).astype(np.float32)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            quantizer = DRQQuantizer(codebook, scales)
    except ValueError as e:
        raise err(f"{cb.name}/{sc.name}", str(e)) from None
    if quantizer.gram is not None and not np.isfinite(quantizer.gram).all():
        raise err(cb.name, "codeword inner products overflow float32 (codebook values too large)")
    return quantizer


def _read_ivf(src, sections, expect, err, d, M, K, metric, ntotal, trained):
    import faiss

    from .index_ivf import IndexIVFDRQ

    ps = expect(TAG_IVF_PARAMS, 24)
    nlist, nprobe, search_iters = (int(v) for v in src.array(ps.offset, 3, "<i8", ps.name))
    if not 1 <= nlist <= 1 << 24 or not 1 <= nprobe <= nlist or not 0 <= search_iters <= M:
        raise err(ps.name, f"invalid IVF parameters nlist={nlist}, nprobe={nprobe}, search_iters={search_iters}")
    cq = sections.get(TAG_COARSE)
    if cq is None:
        raise err(_tag_name(TAG_COARSE), "missing")
    # The section's CRC was verified above, so faiss parses exactly the bytes that were written.
    try:
        coarse = faiss.deserialize_index(np.array(src.array(cq.offset, cq.length, "u1", cq.name), dtype=np.uint8))
    except RuntimeError as e:
        raise err(cq.name, f"faiss could not read the coarse quantizer: {str(e)[:200]}") from None
    try:
        index = IndexIVFDRQ(coarse, d, nlist, iters=M, metric=metric)
    except (TypeError, ValueError) as e:
        raise err(cq.name, str(e)) from None
    index.nprobe = nprobe
    index.search_iters = search_iters or None
    if TAG_INFO in sections:
        _apply_info(index, src, sections[TAG_INFO], err)
        index.codebooks = _info_codebooks(src, sections[TAG_INFO], err)
    ls = expect(TAG_LIST_SIZES, nlist * 8)
    sizes = src.array(ls.offset, nlist, "<i8", ls.name)
    if (sizes < 0).any() or int(sizes.sum()) != ntotal:
        raise err(ls.name, f"list sizes must be >= 0 and sum to ntotal={ntotal}, got sum {int(sizes.sum())}")
    if not trained:
        for tag in (TAG_CODEBOOK, TAG_CODEBOOKS, TAG_SUBSPACE, TAG_SCALES):
            if tag in sections:
                raise err(_tag_name(tag), "present although the header says the index is untrained")
        for tag in (TAG_CODES, TAG_NORMS, TAG_IDS):
            expect(tag, 0)
        return index
    quantizer = _read_quantizer(src, sections, expect, err, d, M, K)
    if coarse.ntotal != nlist:
        raise err(cq.name, f"the coarse quantizer holds {coarse.ntotal} centroids, expected nlist={nlist}")
    index.set_quantizers(quantizer)
    codes_sec = expect(TAG_CODES, ntotal * M)
    norms_sec = expect(TAG_NORMS, ntotal * M * 4)
    ids_sec = expect(TAG_IDS, ntotal * 8)
    list_nos = np.repeat(np.arange(nlist, dtype=np.int64), sizes)
    for start, n in _chunks(ntotal):
        codes = src.array(codes_sec.offset + start * M, n * M, "u1", codes_sec.name).reshape(n, M)
        terms = src.array(norms_sec.offset + start * M * 4, n * M, "<f4", norms_sec.name).reshape(n, M)
        ids = src.array(ids_sec.offset + start * 8, n, "<i8", ids_sec.name)
        if not np.isfinite(terms).all():
            raise err(norms_sec.name, "non-finite values")
        if (ids == -1).any():
            raise err(ids_sec.name, "id -1 is reserved for 'no result'")
        index._append_encoded(np.ascontiguousarray(codes), np.ascontiguousarray(terms, dtype=np.float32),
                              np.ascontiguousarray(ids, dtype=np.int64), list_nos[start:start + n])
    return index


def _info_codebooks(src, sec: _Section, err) -> str:
    """The codebook form an IVF file's INFO records ("shared" when absent: files before the form
    existed). The trained quantizer's own section (CBKF / CBKM) decides for a trained index."""
    info = json.loads(bytes(src.read(sec.offset, sec.length, sec.name)).decode("utf-8"))  # checked by _apply_info
    codebooks = info.get("codebooks", "shared")
    if codebooks not in ("shared", "per_iteration"):
        raise err(sec.name, f"codebooks: expected 'shared' or 'per_iteration', got {codebooks!r}")
    return codebooks


def _wrap_refine(base, raw, k_factor):
    from .index_refine import IndexRefineFlat
    return IndexRefineFlat._from_parts(base, raw, k_factor)


def _apply_info(index, src, sec: _Section, err) -> None:
    try:
        info = json.loads(bytes(src.read(sec.offset, sec.length, sec.name)).decode("utf-8"))
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise err(sec.name, f"invalid JSON text: {type(e).__name__}: {str(e)[:200]}") from None
    if not isinstance(info, dict):
        raise err(sec.name, f"expected a JSON object, got {type(info).__name__}")
    train_info, train_config = info.get("train_info"), info.get("train_config")
    if train_info is not None and not isinstance(train_info, dict):
        raise err(sec.name, f"train_info: expected an object, got {type(train_info).__name__}")
    if train_config is not None and not isinstance(train_config, dict):
        raise err(sec.name, f"train_config: expected an object, got {type(train_config).__name__}")
    index.train_info = train_info
    # Restored as a plain dict: IndexDRQ accepts one, and no trainer class is imported (no torch).
    index.train_config = train_config
