"""File sections of the hashing objects (TernaryEncoder, IndexBinaryHash) inside io.py's container
(same magic, header CRC, tagged CRC-checked sections, END; see docs/file_format.md).

Header fields for these kinds: kind 3 (TernaryEncoder) or 4 (IndexBinaryHash), d = the encoder's
input dimension (0 without encoder), M = nbits (the encoder's for kind 3, the index's for kind
4), K = 0, metric = 0, ntotal = stored codes (kind 4), flags bit 0 = an encoder is present.

Sections:
    ENCJ  required when an encoder is present: UTF-8 JSON {"spec_version", "input_shape",
          "layers": [{"kind", "d_in", "d_out", "relu", "w_pos", "w_neg"}]}
    ENCB  required with ENCJ: the arrays, little-endian, back to back in this order:
          in_scale f32 (d_in), in_shift f32 (d_in), then per layer: ternary: pos, neg as
          np.packbits(bitorder="little") of the row-major (d_out, d_in) bools, each
          ceil(d_out * d_in / 8) bytes; float: weight f32 (d_out, d_in); then scale, shift f32
          (d_out)
    HCOD  kind 4: uint64 little-endian (ntotal, ceil(nbits / 64)) code words
    IDS   kind 4: int64 (ntotal,)
    NXID  kind 4, optional: int64 [next default id]
    END
"""
from __future__ import annotations

import json

import numpy as np

from .io import (HEADER_SIZE, KIND_BINARY_HASH, KIND_TERNARY_ENCODER, SECTION_REQUIRED, TAG_END, TAG_IDS,
                 _SectionWriter, _le, _pack_header, _tag_name)

TAG_ENC_JSON = b"ENCJ"
TAG_ENC_ARRAYS = b"ENCB"
TAG_HASH_CODES = b"HCOD"
TAG_NEXT_ID = b"NXID"
FLAG_HAS_ENCODER = 1
_MAX_BITS = 1 << 15


def _encoder_sections(enc):
    spec = enc._spec
    layers, arrays = [], [_le(spec["in_scale"], "<f4"), _le(spec["in_shift"], "<f4")]
    width = enc.input_dim
    for layer in spec["layers"]:
        d_out = int(layer["scale"].shape[0])
        entry = {"kind": layer["kind"], "d_in": width, "d_out": d_out, "relu": layer["relu"]}
        if layer["kind"] == "ternary":
            entry.update(w_pos=layer["w_pos"], w_neg=layer["w_neg"])
            arrays += [np.packbits(layer["pos"].ravel(), bitorder="little"),
                       np.packbits(layer["neg"].ravel(), bitorder="little")]
        else:
            arrays.append(_le(layer["weight"], "<f4"))
        arrays += [_le(layer["scale"], "<f4"), _le(layer["shift"], "<f4")]
        layers.append(entry)
        width = d_out
    # float() keeps w_pos/w_neg exact: JSON floats round-trip float64, which holds every float32.
    meta = {"spec_version": 1, "input_shape": list(spec["input_shape"]), "layers": layers}
    return json.dumps(meta, sort_keys=True).encode("utf-8"), arrays


def write_hash_object(obj, f) -> None:
    from .encoder import TernaryEncoder

    if isinstance(obj, TernaryEncoder):
        enc, nbits, ntotal, kind = obj, obj.nbits, 0, KIND_TERNARY_ENCODER
        lock = None
    else:
        enc, nbits, kind, lock = obj.enc, obj.nbits, KIND_BINARY_HASH, obj._lock
    ctx = lock.read() if lock is not None else _null()
    with ctx:
        if kind == KIND_BINARY_HASH:
            ntotal = obj.ntotal
        flags = FLAG_HAS_ENCODER if enc is not None else 0
        f.write(_pack_header(kind, enc.input_dim if enc is not None else 0, nbits, 0, 0, ntotal, flags))
        writer = _SectionWriter(f, HEADER_SIZE)
        if enc is not None:
            meta, arrays = _encoder_sections(enc)
            writer.section(TAG_ENC_JSON, SECTION_REQUIRED, [np.frombuffer(meta, np.uint8)])
            writer.section(TAG_ENC_ARRAYS, SECTION_REQUIRED, arrays)
        if kind == KIND_BINARY_HASH:
            writer.section(TAG_HASH_CODES, SECTION_REQUIRED, [_le(obj._codes[:ntotal], "<u8").ravel()])
            writer.section(TAG_IDS, SECTION_REQUIRED, [_le(obj._ids[:ntotal], "<i8")])
            writer.section(TAG_NEXT_ID, 0, [np.array([obj._next_id], "<i8")])
        writer.section(TAG_END, SECTION_REQUIRED, [])


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _read_encoder(src, sections, err, d_header):
    from .encoder import TernaryEncoder

    js = sections.get(TAG_ENC_JSON)
    bs = sections.get(TAG_ENC_ARRAYS)
    if js is None or bs is None:
        raise err(_tag_name(TAG_ENC_JSON if js is None else TAG_ENC_ARRAYS), "missing")
    try:
        meta = json.loads(bytes(src.read(js.offset, js.length, js.name)).decode("utf-8"))
        if not isinstance(meta, dict) or meta.get("spec_version") != 1:
            raise ValueError(f"unsupported encoder description (spec_version {meta.get('spec_version')!r})"
                             if isinstance(meta, dict) else "expected a JSON object")
        input_shape = tuple(int(v) for v in meta["input_shape"])
        layers_meta = list(meta["layers"])
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise err(js.name, f"invalid encoder description: {type(e).__name__}: {str(e)[:200]}") from None
    d_in = int(np.prod(input_shape)) if input_shape else 0
    if d_in < 1 or d_in != d_header:
        raise err(js.name, f"input_shape {input_shape} does not match the header's d={d_header}")
    # Sizes first (checked against the section length before anything is read).
    sizes = [("in_scale", "<f4", d_in), ("in_shift", "<f4", d_in)]
    width = d_in
    for i, lm in enumerate(layers_meta):
        try:
            kind, d_out = lm["kind"], int(lm["d_out"])
            if int(lm["d_in"]) != width or not 1 <= d_out <= 1 << 20 or kind not in ("ternary", "float"):
                raise ValueError(f"layer {i}: d_in={lm['d_in']}, d_out={d_out}, kind={kind!r}")
        except (KeyError, TypeError, ValueError) as e:
            raise err(js.name, f"invalid layer description: {str(e)[:200]}") from None
        if kind == "ternary":
            nb = (d_out * width + 7) // 8
            sizes += [(f"{i}.pos", "u1", nb), (f"{i}.neg", "u1", nb)]
        else:
            sizes.append((f"{i}.weight", "<f4", d_out * width))
        sizes += [(f"{i}.scale", "<f4", d_out), (f"{i}.shift", "<f4", d_out)]
        width = d_out
    total = sum(np.dtype(dt).itemsize * n for _, dt, n in sizes)
    if total != bs.length:
        raise err(bs.name, f"expected {total} bytes for the layers described in ENCJ, got {bs.length}")
    arrays, off = {}, bs.offset
    for name, dt, n in sizes:
        arrays[name] = src.array(off, n, dt, bs.name).copy()
        off += np.dtype(dt).itemsize * n
    spec = {"version": 1, "input_shape": input_shape, "in_scale": arrays["in_scale"].astype(np.float32),
            "in_shift": arrays["in_shift"].astype(np.float32), "layers": []}
    width = d_in
    for i, lm in enumerate(layers_meta):
        d_out = int(lm["d_out"])
        layer = {"kind": lm["kind"], "relu": bool(lm["relu"]),
                 "scale": arrays[f"{i}.scale"].astype(np.float32), "shift": arrays[f"{i}.shift"].astype(np.float32)}
        if lm["kind"] == "ternary":
            count = d_out * width
            layer["pos"] = np.unpackbits(arrays[f"{i}.pos"], count=count, bitorder="little").astype(bool).reshape(d_out, width)
            layer["neg"] = np.unpackbits(arrays[f"{i}.neg"], count=count, bitorder="little").astype(bool).reshape(d_out, width)
            layer["w_pos"], layer["w_neg"] = lm.get("w_pos"), lm.get("w_neg")
        else:
            layer["weight"] = arrays[f"{i}.weight"].astype(np.float32).reshape(d_out, width)
        spec["layers"].append(layer)
        width = d_out
    try:
        return TernaryEncoder.from_spec(spec)
    except (ValueError, TypeError) as e:
        raise err(f"{js.name}/{bs.name}", str(e)) from None


def read_hash_object(src, err, kind, d, nbits, ntotal, flags, sections):
    from .index_binary_hash import IndexBinaryHash

    known = {TAG_ENC_JSON, TAG_ENC_ARRAYS, TAG_END}
    if kind == KIND_BINARY_HASH:
        known |= {TAG_HASH_CODES, TAG_IDS, TAG_NEXT_ID}
    for tag, sec in sections.items():
        if tag not in known and sec.flags & SECTION_REQUIRED:
            raise err(sec.name, "unknown required section (written by a newer drqindex); upgrade drqindex")
    if flags & ~FLAG_HAS_ENCODER:
        raise err("header", f"unknown required feature flags {flags & ~FLAG_HAS_ENCODER:#x}; upgrade drqindex")
    if not 8 <= nbits <= _MAX_BITS or nbits % 8:
        raise err("header", f"nbits (M) must be a multiple of 8 in 8..{_MAX_BITS}, got {nbits}")
    enc = None
    if flags & FLAG_HAS_ENCODER:
        enc = _read_encoder(src, sections, err, d)
    elif kind == KIND_TERNARY_ENCODER:
        raise err("header", "a TernaryEncoder file without the encoder flag")
    if kind == KIND_TERNARY_ENCODER:
        if enc.nbits != nbits:
            raise err("header", f"nbits={nbits} does not match the encoder's {enc.nbits}")
        return enc
    if enc is not None and nbits > enc.nbits:
        raise err("header", f"nbits={nbits} exceeds the encoder's {enc.nbits}")
    words = (nbits + 63) // 64
    cs, ids_sec = sections.get(TAG_HASH_CODES), sections.get(TAG_IDS)
    for tag, sec, size in ((TAG_HASH_CODES, cs, ntotal * words * 8), (TAG_IDS, ids_sec, ntotal * 8)):
        if sec is None:
            raise err(_tag_name(tag), "missing")
        if sec.length != size:
            raise err(sec.name, f"expected {size} bytes for ntotal={ntotal}, nbits={nbits}, got {sec.length}")
    index = IndexBinaryHash(enc, nbits)
    codes = src.array(cs.offset, ntotal * words, "<u8", cs.name).astype(np.uint64).reshape(ntotal, words)
    ids = src.array(ids_sec.offset, ntotal, "<i8", ids_sec.name).astype(np.int64)
    if (ids == -1).any():
        raise err(ids_sec.name, "id -1 is reserved for 'no result'")
    rem = nbits % 64
    if rem and ntotal and (codes[:, -1] >> np.uint64(rem)).any():
        raise err(cs.name, f"code bits beyond nbits={nbits} are set")
    index._codes, index._ids, index._ntotal = np.ascontiguousarray(codes), np.ascontiguousarray(ids), ntotal
    index._next_id = int(ids.max()) + 1 if ntotal else 0
    nx = sections.get(TAG_NEXT_ID)
    if nx is not None and nx.length == 8:
        index._next_id = max(index._next_id, int(src.array(nx.offset, 1, "<i8", nx.name)[0]))
    return index
