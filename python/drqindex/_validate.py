"""Every input check of the public API, in one place.

Each function either returns the argument in the exact form the core needs (float32 C-contiguous
matrices, int64 ids, a plain int) or raises with a message that names what was expected and
what was received, so a caller can fix the call without reading our source.
Errors follow numpy/faiss conventions: TypeError for a wrong type or dtype, ValueError for a
wrong shape or value, RuntimeError for an index in the wrong state (e.g. untrained).
"""
from __future__ import annotations

import numbers

import numpy as np

# dtypes converted (once) to float32; anything else is refused rather than guessed at.
_CONVERTIBLE_FLOATS = (np.float64, np.float16)


def _describe(x) -> str:
    if isinstance(x, np.ndarray):
        return f"{x.shape} {x.dtype}"
    return type(x).__name__


def float_matrix(x, d: int, name: str = "x") -> np.ndarray:
    """Return x as a float32 C-contiguous (n, d) array of finite values.

    float64 and float16 are converted once; a non-contiguous view is refused because silently
    copying a large view hides a cost the caller can avoid (np.ascontiguousarray makes it explicit).
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array of shape (n, {d}) float32, got {_describe(x)}")
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"{name}: expected shape (n, {d}) float32, got {x.shape} {x.dtype}")
    if x.dtype != np.float32 and x.dtype.type not in _CONVERTIBLE_FLOATS:
        raise TypeError(
            f"{name}: expected (n, {d}) float32 (float64/float16 are converted), got {x.shape} {x.dtype}")
    if not x.flags.c_contiguous:
        raise ValueError(
            f"{name}: expected a C-contiguous (n, {d}) array, got a non-contiguous {x.shape} {x.dtype} view; "
            f"pass np.ascontiguousarray({name})")
    if x.dtype != np.float32:
        x = x.astype(np.float32)
        # float64 values beyond float32's range become inf here; the finiteness check below reports them.
    if x.size and not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(
            f"{name}: expected finite values, got {x[bad[0], bad[1]]} at row {bad[0]}, column {bad[1]}")
    return x


def positive_int(value, name: str, *, upper: int | None = None) -> int:
    """Return value as an int in [1, upper]; bools and floats are refused (1.0 is not a count)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < 1 or (upper is not None and value > upper):
        expected = f"1..{upper}" if upper is not None else ">= 1"
        raise ValueError(f"{name}: expected {expected}, got {value}")
    return value


def iters_value(iters, max_iters: int) -> int:
    """The number of code iterations (bytes) to use at search time: 1..M, None meaning all M."""
    if iters is None:
        return max_iters
    return positive_int(iters, "iters", upper=max_iters)


def ids_array(ids, n: int, name: str = "ids") -> np.ndarray:
    """Return ids as an int64 C-contiguous (n,) array.

    Other integer dtypes are converted when every value fits in int64; -1 is refused because
    search results use it to mean "no result".
    """
    if not isinstance(ids, np.ndarray):
        raise TypeError(f"{name}: expected a numpy int64 array of shape ({n},), got {_describe(ids)}")
    if ids.ndim != 1 or ids.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},) int64 (one id per vector), got {ids.shape} {ids.dtype}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"{name}: expected ({n},) int64, got {ids.shape} {ids.dtype}")
    if ids.dtype != np.int64:
        if ids.dtype == np.uint64 and ids.size and ids.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{name}: expected values that fit in int64, got {ids.max()}")
        ids = ids.astype(np.int64)
    ids = np.ascontiguousarray(ids)
    if ids.size and (ids == -1).any():
        raise ValueError(f"{name}: -1 is reserved for 'no result' in search output; got -1 at position "
                         f"{int(np.flatnonzero(ids == -1)[0])}")
    return ids


def output_array(arr, shape: tuple, dtype, name: str) -> np.ndarray:
    """Validate a caller-provided output buffer (faiss's search(x, k, D=..., I=...))."""
    if arr is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype != dtype or not arr.flags.c_contiguous \
            or not arr.flags.writeable:
        raise ValueError(f"{name}: expected a writeable C-contiguous {shape} {np.dtype(dtype).name} array, "
                         f"got {_describe(arr)}")
    return arr


def metric_value(metric) -> int:
    from .metrics import METRIC_INNER_PRODUCT, METRIC_L2
    if isinstance(metric, (bool, np.bool_)) or not isinstance(metric, numbers.Integral) \
            or int(metric) not in (METRIC_L2, METRIC_INNER_PRODUCT):
        raise ValueError(f"metric: expected drqindex.METRIC_L2 ({METRIC_L2}) or METRIC_INNER_PRODUCT "
                         f"({METRIC_INNER_PRODUCT}), got {metric!r}")
    return int(metric)


CODEBOOK_FORMS = ("shared", "per_iteration")


def codebooks_value(codebooks) -> str:
    if not isinstance(codebooks, str) or codebooks not in CODEBOOK_FORMS:
        raise ValueError(f"codebooks: expected 'shared' (one codebook for every iteration, the faithful DRQ) or "
                         f"'per_iteration' (one codebook per iteration), got {codebooks!r}")
    return codebooks


def codes_matrix(codes, M: int, name: str = "codes") -> np.ndarray:
    """Return codes as a uint8 C-contiguous (n, M) array: standalone codes as sa_encode makes them.

    Only uint8 is accepted (a code byte is not a number to convert); a non-contiguous view is
    copied, as the (n, M) bytes are small next to the vectors they stand for.
    """
    if not isinstance(codes, np.ndarray):
        raise TypeError(f"{name}: expected a numpy uint8 array of shape (n, {M}), got {_describe(codes)}")
    if codes.dtype != np.uint8:
        raise TypeError(f"{name}: expected (n, {M}) uint8, got {codes.shape} {codes.dtype}")
    if codes.ndim != 2 or codes.shape[1] != M:
        raise ValueError(f"{name}: expected shape (n, {M}) uint8 (one byte per iteration), got {codes.shape} "
                         f"{codes.dtype}")
    return np.ascontiguousarray(codes)


def radius_value(radius, name: str = "radius") -> float:
    """A finite float radius (range_search); bools are refused."""
    if isinstance(radius, (bool, np.bool_)) or not isinstance(radius, numbers.Real):
        raise TypeError(f"{name}: expected a float, got {type(radius).__name__} {radius!r}")
    radius = float(radius)
    if not np.isfinite(radius):
        raise ValueError(f"{name}: expected a finite value, got {radius}")
    return radius
