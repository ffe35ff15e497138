"""File sections of IndexDRQFastScan (kind 5) inside io.py's container (same magic, header CRC,
tagged CRC-checked sections, END; see docs/file_format.md).

Header fields for this kind: kind 5, d, M = iters (1..254), K = 16 (codewords per iteration),
metric (0 = inner product, 1 = L2), ntotal, flags bit 0 = trained (any other bit is refused).

Sections:
    INFO  optional: UTF-8 JSON (writer, train_info, train_config), as for kind 1
    FSPR  required: int64 [rerank, nnorm, norm_prefixes (nnorm values, increasing, in 1..M)];
          nnorm = 0 for inner product, >= 1 for L2
    FSCB  required if trained: float32 (M, 16, d): codebook of iteration j at [j]
    FSNQ  required if trained: float32 (2, nnorm): norm_min, then norm_step; norm level l of
          prefix s stands for ||xhat_m||^2 = norm_min[s] + l * norm_step[s]
    FSCD  required: uint8 (ntotal, ceil(M / 2)): byte j of row i = code[i, 2j] | code[i, 2j+1] << 4;
          for odd M the high nibble of the last byte is 0
    FSNC  required: uint8 (ntotal, nnorm): the norm levels, column s for prefix norm_prefixes[s]
    IDS   required: int64 (ntotal,)
    END
"""
from __future__ import annotations

import numpy as np

from .io import (HEADER_SIZE, KIND_FASTSCAN, SECTION_REQUIRED, TAG_END, TAG_IDS, TAG_INFO, FLAG_TRAINED,
                 _apply_info, _chunks, _info_json, _le, _pack_header, _SectionWriter, _tag_name)
from .metrics import METRIC_INNER_PRODUCT, METRIC_L2

TAG_FS_PARAMS = b"FSPR"
TAG_FS_CODEBOOKS = b"FSCB"
TAG_FS_NORM_QUANT = b"FSNQ"
TAG_FS_CODES = b"FSCD"
TAG_FS_NORM_CODES = b"FSNC"
K4 = 16
_MAX_ITERS = 254  # IndexDRQFastScan's limit (uint16 sums of the kernel cannot overflow)


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """uint8 (n, M) values 0..15 -> uint8 (n, ceil(M / 2)), even iteration in the low nibble."""
    n, M = codes.shape
    if M % 2:
        codes = np.concatenate([codes, np.zeros((n, 1), np.uint8)], axis=1)
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)


def unpack_nibbles(packed: np.ndarray, M: int) -> np.ndarray:
    """Inverse of pack_nibbles: uint8 (n, ceil(M / 2)) -> uint8 (n, M)."""
    out = np.empty((packed.shape[0], 2 * packed.shape[1]), np.uint8)
    out[:, 0::2] = packed & 15
    out[:, 1::2] = packed >> 4
    return np.ascontiguousarray(out[:, :M])


def write_fastscan(index, f) -> None:
    # The read lock gives a consistent snapshot (no add/remove between codes, norm levels and ids).
    with index._lock.read():
        trained = index.is_trained
        ntotal = index.ntotal
        M = index.iters
        prefixes = list(index.norm_prefixes)
        f.write(_pack_header(KIND_FASTSCAN, index.d, M, K4, index.metric_type, ntotal,
                             FLAG_TRAINED if trained else 0))
        writer = _SectionWriter(f, HEADER_SIZE)
        writer.section(TAG_INFO, 0, [_info_json(index).encode("utf-8")])
        params = np.array([index.rerank, len(prefixes)] + prefixes, "<i8")
        writer.section(TAG_FS_PARAMS, SECTION_REQUIRED, [params])
        if trained:
            writer.section(TAG_FS_CODEBOOKS, SECTION_REQUIRED, [_le(index.codebooks, "<f4")])
            writer.section(TAG_FS_NORM_QUANT, SECTION_REQUIRED,
                           [_le(index.norm_min, "<f4"), _le(index.norm_step, "<f4")])
        store = index._store
        writer.section(TAG_FS_CODES, SECTION_REQUIRED,
                       (pack_nibbles(store.get_codes(s, n)) for s, n in _chunks(ntotal)))
        writer.section(TAG_FS_NORM_CODES, SECTION_REQUIRED,
                       (store.get_norm_codes(s, n).ravel() for s, n in _chunks(ntotal)))  # (n, 0): 1-D
        writer.section(TAG_IDS, SECTION_REQUIRED, [_le(store.get_ids(), "<i8")])
        writer.section(TAG_END, SECTION_REQUIRED, [])


def read_fastscan(src, err, d, M, K, metric, ntotal, flags, sections):
    from .index_drq_fastscan import IndexDRQFastScan

    known = {TAG_INFO, TAG_FS_PARAMS, TAG_FS_CODEBOOKS, TAG_FS_NORM_QUANT, TAG_FS_CODES, TAG_FS_NORM_CODES,
             TAG_IDS, TAG_END}
    for tag, sec in sections.items():
        if tag not in known and sec.flags & SECTION_REQUIRED:
            raise err(sec.name, "unknown required section (written by a newer drqindex); upgrade drqindex")
    if flags & ~FLAG_TRAINED:
        raise err("header", f"unknown required feature flags {flags & ~FLAG_TRAINED:#x} for an "
                            f"IndexDRQFastScan; upgrade drqindex")
    if d < 1:
        raise err("header", f"d must be >= 1, got {d}")
    if not 1 <= M <= _MAX_ITERS:
        raise err("header", f"M must be in 1..{_MAX_ITERS} for an IndexDRQFastScan, got {M}")
    if K != K4:
        raise err("header", f"K must be {K4} (4-bit codes) for an IndexDRQFastScan, got {K}")
    if metric not in (METRIC_L2, METRIC_INNER_PRODUCT):
        raise err("header", f"unknown metric {metric}")
    trained = bool(flags & FLAG_TRAINED)
    if not trained and ntotal:
        raise err("header", f"an untrained index cannot hold vectors, got ntotal={ntotal}")

    def expect(tag: bytes, nbytes: int):
        sec = sections.get(tag)
        if sec is None:
            raise err(_tag_name(tag), "missing")
        if sec.length != nbytes:
            raise err(sec.name, f"expected {nbytes} bytes for the header's sizes (d={d}, M={M}, "
                                f"ntotal={ntotal}), got {sec.length}")
        return sec

    # --- parameters: rerank and the stored norm prefixes (their count sizes everything after)
    ps = sections.get(TAG_FS_PARAMS)
    if ps is None:
        raise err(_tag_name(TAG_FS_PARAMS), "missing")
    if ps.length < 16 or ps.length % 8:
        raise err(ps.name, f"expected 8 * (2 + nnorm) bytes, got {ps.length}")
    rerank, nnorm = (int(v) for v in src.array(ps.offset, 2, "<i8", ps.name))
    if not 0 <= nnorm <= M or ps.length != 8 * (2 + nnorm):
        raise err(ps.name, f"nnorm={nnorm} must be in 0..M={M} and match the {ps.length} bytes of the section")
    prefixes = [int(v) for v in src.array(ps.offset + 16, nnorm, "<i8", ps.name)]
    if rerank < 0:
        raise err(ps.name, f"rerank must be >= 0, got {rerank}")
    if any(not 1 <= m <= M for m in prefixes) or any(a >= b for a, b in zip(prefixes, prefixes[1:])):
        raise err(ps.name, f"norm_prefixes must increase within 1..M={M}, got {prefixes}")
    if (metric == METRIC_L2) != (nnorm > 0):
        raise err(ps.name, f"an {'L2' if metric == METRIC_L2 else 'inner-product'} index needs "
                           f"{'at least one' if metric == METRIC_L2 else 'no'} norm prefix, got {nnorm}")
    index = IndexDRQFastScan(d, iters=M, metric=metric, norm_prefixes=prefixes or None, rerank=rerank)
    if TAG_INFO in sections:
        _apply_info(index, src, sections[TAG_INFO], err)

    nbytes = (M + 1) // 2
    if not trained:
        for tag in (TAG_FS_CODEBOOKS, TAG_FS_NORM_QUANT):
            if tag in sections:
                raise err(_tag_name(tag), "present although the header says the index is untrained")
        for tag in (TAG_FS_CODES, TAG_FS_NORM_CODES, TAG_IDS):
            expect(tag, 0)
        return index
    cb = expect(TAG_FS_CODEBOOKS, M * K4 * d * 4)
    nq = expect(TAG_FS_NORM_QUANT, 2 * nnorm * 4)
    codes_sec = expect(TAG_FS_CODES, ntotal * nbytes)
    levels_sec = expect(TAG_FS_NORM_CODES, ntotal * nnorm)
    ids_sec = expect(TAG_IDS, ntotal * 8)
    # Copies: the index must own its arrays, not view a memory map or the caller's buffer.
    codebooks = src.array(cb.offset, M * K4 * d, "<f4", cb.name).reshape(M, K4, d).astype(np.float32)
    if not np.isfinite(codebooks).all():
        raise err(cb.name, "non-finite codebook values")
    quant = src.array(nq.offset, 2 * nnorm, "<f4", nq.name).reshape(2, nnorm).astype(np.float32)
    if not np.isfinite(quant).all() or (quant[1] <= 0).any():
        raise err(nq.name, "norm_min must be finite and norm_step finite and > 0")
    index.codebooks = codebooks
    index.norm_min, index.norm_step = quant[0].copy(), quant[1].copy()
    odd_mask = np.uint8(0xF0) if M % 2 else np.uint8(0)
    for start, n in _chunks(ntotal):
        packed = src.array(codes_sec.offset + start * nbytes, n * nbytes, "u1", codes_sec.name).reshape(n, nbytes)
        if odd_mask and (packed[:, -1] & odd_mask).any():
            raise err(codes_sec.name, f"the unused high nibble of the last byte (M={M} is odd) must be 0")
        levels = src.array(levels_sec.offset + start * nnorm, n * nnorm, "u1", levels_sec.name).reshape(n, nnorm)
        ids = src.array(ids_sec.offset + start * 8, n, "<i8", ids_sec.name)
        if (ids == -1).any():
            raise err(ids_sec.name, "id -1 is reserved for 'no result'")
        index._store.add(unpack_nibbles(packed, M), np.ascontiguousarray(levels, dtype=np.uint8),
                         np.ascontiguousarray(ids, dtype=np.int64))
    return index
