"""TernaryEncoder: the hash encoder of a distilled ternary (or float) MLP, run by C++ kernels.

    enc = TernaryEncoder.from_spec(spec)     # spec: the dict of TERNARY_ENCODER_SPEC, version 1
    logits = enc.embed(x)                    # float32 (n, nbits)
    codes = enc.encode(x, nbits=32)          # uint8 (n, 4), bit j = logit_j > 0, LSB-first
    enc.save(path); TernaryEncoder.load(path)

No torch anywhere: the trainers export the spec dict, this class only needs numpy and the core.
The exact arithmetic (including the per-sample 8-bit quantisation of every ternary layer's input)
is documented in csrc/drq/ternary.h; `reference_embed` in tests/test_ternary_encoder.py restates
it in numpy.
"""
from __future__ import annotations

import numbers
import os

import numpy as np

from . import _core

SPEC_VERSION = 1


def _spec_error(where: str, problem: str) -> ValueError:
    return ValueError(f"spec: {where}: {problem}")


def _float_vector(value, n: int, where: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.shape != (n,) or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise _spec_error(where, f"expected a float32 array of shape ({n},), got {arr.shape} {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise _spec_error(where, "expected finite values")
    return arr


def _scalar(value, where: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)) \
            and not (isinstance(value, np.ndarray) and value.shape == ()):
        raise _spec_error(where, f"expected a float, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise _spec_error(where, f"expected a finite value >= 0, got {value}")
    return value


def _bool_matrix(value, shape, where: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.shape != shape:
        raise _spec_error(where, f"expected a bool array of shape {shape}, got {arr.shape} {arr.dtype}")
    if arr.dtype != np.bool_:
        if not np.issubdtype(arr.dtype, np.integer) or not np.isin(arr, (0, 1)).all():
            raise _spec_error(where, f"expected bool (or 0/1 integers), got {arr.dtype}")
        arr = arr.astype(bool)
    return np.ascontiguousarray(arr)


def _check_spec(spec) -> dict:
    """A validated, owned copy of spec (numpy arrays in the exact dtypes the core needs)."""
    if not isinstance(spec, dict):
        raise TypeError(f"spec: expected a dict, got {type(spec).__name__}")
    version = spec.get("version")
    if version != SPEC_VERSION:
        raise _spec_error("version", f"expected {SPEC_VERSION}, got {version!r}")
    try:
        input_shape = tuple(int(v) for v in spec["input_shape"])
        in_scale, in_shift, layers = spec["in_scale"], spec["in_shift"], spec["layers"]
    except KeyError as e:
        raise _spec_error("keys", f"missing {e.args[0]!r}") from None
    except TypeError:
        raise _spec_error("input_shape", f"expected a tuple of ints, got {spec['input_shape']!r}") from None
    if not input_shape or min(input_shape) < 1:
        raise _spec_error("input_shape", f"expected positive sizes, got {input_shape}")
    d_in = int(np.prod(input_shape))
    out = {"version": SPEC_VERSION, "input_shape": input_shape,
           "in_scale": _float_vector(in_scale, d_in, "in_scale"),
           "in_shift": _float_vector(in_shift, d_in, "in_shift"), "layers": []}
    if not isinstance(layers, (list, tuple)) or not layers:
        raise _spec_error("layers", "expected a non-empty list of layer dicts")
    width = d_in
    for i, layer in enumerate(layers):
        where = f"layers[{i}]"
        if not isinstance(layer, dict):
            raise _spec_error(where, f"expected a dict, got {type(layer).__name__}")
        kind = layer.get("kind")
        relu = layer.get("relu")
        if not isinstance(relu, (bool, np.bool_)):
            raise _spec_error(f"{where}.relu", f"expected a bool, got {relu!r}")
        if kind == "ternary":
            pos = np.asarray(layer.get("pos"))
            if pos.ndim != 2 or pos.shape[1] != width:
                raise _spec_error(f"{where}.pos", f"expected shape (d_out, {width}), got {pos.shape}")
            d_out = pos.shape[0]
            pos = _bool_matrix(pos, (d_out, width), f"{where}.pos")
            neg = _bool_matrix(layer.get("neg"), (d_out, width), f"{where}.neg")
            if (pos & neg).any():
                r, c = np.argwhere(pos & neg)[0]
                raise _spec_error(where, f"pos and neg are both true at ({r}, {c})")
            entry = {"kind": "ternary", "pos": pos, "neg": neg,
                     "w_pos": _scalar(layer.get("w_pos"), f"{where}.w_pos"),
                     "w_neg": _scalar(layer.get("w_neg"), f"{where}.w_neg")}
        elif kind == "float":
            weight = np.asarray(layer.get("weight"))
            if weight.ndim != 2 or weight.shape[1] != width or not np.issubdtype(weight.dtype, np.floating):
                raise _spec_error(f"{where}.weight", f"expected float32 (d_out, {width}), got {weight.shape} "
                                                     f"{weight.dtype}")
            d_out = weight.shape[0]
            weight = np.ascontiguousarray(weight, dtype=np.float32)
            if not np.isfinite(weight).all():
                raise _spec_error(f"{where}.weight", "expected finite values")
            entry = {"kind": "float", "weight": weight}
        else:
            raise _spec_error(f"{where}.kind", f"expected 'ternary' or 'float', got {kind!r}")
        if d_out < 1:
            raise _spec_error(where, "d_out must be >= 1")
        entry["scale"] = _float_vector(layer.get("scale"), d_out, f"{where}.scale")
        entry["shift"] = _float_vector(layer.get("shift"), d_out, f"{where}.shift")
        entry["relu"] = bool(relu)
        out["layers"].append(entry)
        width = d_out
    if width % 8:
        raise _spec_error("layers", f"the last layer's d_out (nbits) must be a multiple of 8, got {width}")
    return out


class TernaryEncoder:
    """Maps images (n, *input_shape) or flattened (n, d_in), uint8 or float32, to nbits hash logits
    and packed binary codes. Immutable; thread-safe (embed/encode release the GIL)."""

    def __init__(self, spec: dict):
        self._spec = _check_spec(spec)
        self._net = _core.TernaryNet(self._spec["in_scale"], self._spec["in_shift"],
                                     [dict(layer) for layer in self._spec["layers"]])

    @classmethod
    def from_spec(cls, spec: dict) -> "TernaryEncoder":
        return cls(spec)

    def spec(self) -> dict:
        """The spec dict (copies of the arrays): TernaryEncoder.from_spec(enc.spec()) is equal."""
        out = {"version": SPEC_VERSION, "input_shape": self._spec["input_shape"],
               "in_scale": self._spec["in_scale"].copy(), "in_shift": self._spec["in_shift"].copy(),
               "layers": []}
        for layer in self._spec["layers"]:
            out["layers"].append({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in layer.items()})
        return out

    # -------------------------------------------------------------------------------- properties
    @property
    def input_shape(self) -> tuple:
        return self._spec["input_shape"]

    @property
    def input_dim(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def nbits(self) -> int:
        return int(self._spec["layers"][-1]["scale"].shape[0])

    @property
    def code_size(self) -> int:
        return self.nbits // 8

    def num_parameters(self) -> int:
        """Stored numbers: weights (one per ternary/float weight), w_pos/w_neg, scale and shift of
        every layer, and the input in_scale/in_shift."""
        total = 2 * self.input_dim
        for layer in self._spec["layers"]:
            d_out = layer["scale"].shape[0]
            if layer["kind"] == "ternary":
                total += layer["pos"].size + 2
            else:
                total += layer["weight"].size
            total += 2 * d_out
        return total

    def size_bytes(self) -> int:
        """Model size as deployed: ternary weights at 2 bits (the pos/neg masks), float weights and
        every scalar/vector at 4 bytes."""
        total = 4 * 2 * self.input_dim
        for layer in self._spec["layers"]:
            d_out = layer["scale"].shape[0]
            if layer["kind"] == "ternary":
                total += (2 * layer["pos"].size + 7) // 8 + 4 * 2
            else:
                total += 4 * layer["weight"].size
            total += 4 * 2 * d_out
        return total

    # -------------------------------------------------------------------------------- inference
    def _inputs(self, x) -> np.ndarray:
        """x as a C-contiguous (n, d_in) uint8 or float32 array (the core reads both)."""
        d, shape = self.input_dim, self.input_shape
        if isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 2 and x.shape[1] == d \
                and x.flags.c_contiguous and x.flags.aligned:
            return x  # the common case, checked first: batch-1 calls are dominated by overhead
        flat = f"(n, {d})"
        full = f"(n, {', '.join(map(str, shape))})"
        expected = (f"{full} or {flat}" if full != flat else flat) + " uint8 or float32"
        if not isinstance(x, np.ndarray):
            raise TypeError(f"x: expected a numpy array {expected}, got {type(x).__name__}")
        if x.dtype != np.uint8 and x.dtype != np.float32:
            if x.dtype in (np.float64, np.float16):
                x = x.astype(np.float32)
            else:
                raise TypeError(f"x: expected {expected}, got {x.shape} {x.dtype}")
        if x.ndim >= 1 and x.shape[1:] == shape:
            x = x.reshape(x.shape[0], d)
        elif not (x.ndim == 2 and x.shape[1] == d):
            raise ValueError(f"x: expected {expected}, got {x.shape} {x.dtype}")
        x = np.ascontiguousarray(x)
        if x.dtype == np.float32 and x.size and not np.isfinite(x).all():
            bad = np.argwhere(~np.isfinite(x))[0]
            raise ValueError(f"x: expected finite values, got {x[bad[0], bad[1]]} at row {bad[0]}, "
                             f"column {bad[1]} (of the flattened input)")
        return x

    def embed(self, x) -> np.ndarray:
        """float32 (n, nbits) hash logits."""
        return self._net.forward(self._inputs(x))

    def _nbits_value(self, nbits) -> int:
        if nbits is None:
            return self.nbits
        if isinstance(nbits, (bool, np.bool_)) or not isinstance(nbits, numbers.Integral):
            raise TypeError(f"nbits: expected an int, got {type(nbits).__name__} {nbits!r}")
        nbits = int(nbits)
        if nbits < 8 or nbits > self.nbits or nbits % 8:
            raise ValueError(f"nbits: expected a multiple of 8 in 8..{self.nbits}, got {nbits}")
        return nbits

    def encode(self, x, nbits=None) -> np.ndarray:
        """uint8 (n, nbits / 8) packed codes: bit j = (logit_j > 0), byte j // 8, bit j % 8
        (faiss's binary code layout); nbits < self.nbits keeps the first bits (a prefix)."""
        nbits = self._nbits_value(nbits)
        logits = self.embed(x)[:, :nbits]
        return np.packbits(logits > 0, axis=1, bitorder="little")

    # -------------------------------------------------------------------------------- persistence
    def save(self, path) -> None:
        """Writes the encoder (drqindex file format, kind TernaryEncoder; no torch, no pickle)."""
        from .io import write_index
        write_index(self, path)

    @classmethod
    def load(cls, path) -> "TernaryEncoder":
        """Reads a file written by save(); IndexFileError (a ValueError) if corrupt or truncated."""
        from .io import IndexFileError, read_index
        obj = read_index(path)
        if not isinstance(obj, cls):
            raise IndexFileError(os.fspath(path) if not hasattr(path, "read") else "<file object>", None,
                                 f"expected a TernaryEncoder file, got a {type(obj).__name__}")
        return obj

    def __eq__(self, other) -> bool:
        if not isinstance(other, TernaryEncoder):
            return NotImplemented
        a, b = self._spec, other._spec
        if a["input_shape"] != b["input_shape"] or len(a["layers"]) != len(b["layers"]):
            return False
        if not (np.array_equal(a["in_scale"], b["in_scale"]) and np.array_equal(a["in_shift"], b["in_shift"])):
            return False
        for la, lb in zip(a["layers"], b["layers"]):
            if la.keys() != lb.keys():
                return False
            for k in la:
                if isinstance(la[k], np.ndarray):
                    if not np.array_equal(la[k], lb[k]):
                        return False
                elif la[k] != lb[k]:
                    return False
        return True

    __hash__ = None

    def __reduce__(self):
        return (TernaryEncoder, (self.spec(),))

    def __repr__(self) -> str:
        kinds = "-".join(("T" if l["kind"] == "ternary" else "F") + str(l["scale"].shape[0])
                         for l in self._spec["layers"])
        return f"TernaryEncoder(input_shape={self.input_shape}, layers={kinds}, nbits={self.nbits})"
