"""IndexBinaryHash: exhaustive Hamming search over the binary codes of a TernaryEncoder.

    index = IndexBinaryHash(enc, nbits=64)   # stores the first 64 bits of enc's codes
    index.add(images)                        # or add_with_ids / add_codes (packed uint8 codes)
    D, I = index.search(queries, k, nbits=32)  # any prefix: a multiple of 8, <= index.nbits

faiss IndexBinaryFlat semantics: D int32 (nq, k) Hamming distances, I int64 (nq, k) ids, ties
by id (then insertion order), -1 / INT32_MAX padding when fewer than k codes are stored. Codes
are kept as uint64 words (n, ceil(nbits / 64)); searches run in C++ (GIL released, threads,
Ctrl-C) with the SIMD level of drqindex.set_simd_level.
"""
from __future__ import annotations

import numbers

import numpy as np

from . import _core
from ._locks import ReadWriteLock
from ._validate import ids_array, positive_int
from .encoder import TernaryEncoder


def _bits_value(nbits, upper: int, name: str = "nbits") -> int:
    if isinstance(nbits, (bool, np.bool_)) or not isinstance(nbits, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(nbits).__name__} {nbits!r}")
    nbits = int(nbits)
    if nbits < 8 or nbits > upper or nbits % 8:
        raise ValueError(f"{name}: expected a multiple of 8 in 8..{upper}, got {nbits}")
    return nbits


def pack_words(codes: np.ndarray, words: int) -> np.ndarray:
    """uint8 (n, B) packed codes -> uint64 (n, words) little-endian words, zero padded."""
    n, nbytes = codes.shape
    buf = np.zeros((n, 8 * words), np.uint8)
    buf[:, :nbytes] = codes
    return buf.view("<u8").astype(np.uint64, copy=False).reshape(n, words)


class IndexBinaryHash:
    def __init__(self, enc: TernaryEncoder | None, nbits: int | None = None):
        if enc is not None and not isinstance(enc, TernaryEncoder):
            raise TypeError(f"enc: expected a drqindex.TernaryEncoder or None, got {type(enc).__name__}")
        if enc is None and nbits is None:
            raise ValueError("nbits: required when no encoder is given (an index of raw codes)")
        upper = enc.nbits if enc is not None else 1 << 15
        self.enc = enc
        self.nbits = _bits_value(enc.nbits if nbits is None else nbits, upper)
        self._words = (self.nbits + 63) // 64
        self._codes = np.zeros((0, self._words), np.uint64)  # capacity grows by doubling
        self._ids = np.zeros(0, np.int64)
        self._ntotal = 0
        self._next_id = 0
        self._lock = ReadWriteLock()

    # ------------------------------------------------------------------------------ properties
    @property
    def ntotal(self) -> int:
        return self._ntotal

    @property
    def is_trained(self) -> bool:
        return True

    @property
    def code_size(self) -> int:
        """Bytes per stored code (faiss's code_size)."""
        return self.nbits // 8

    @property
    def d(self) -> int:
        """Input dimension of the encoder (0 for an index of raw codes)."""
        return self.enc.input_dim if self.enc is not None else 0

    # ------------------------------------------------------------------------------ adding
    def _require_encoder(self, what: str):
        if self.enc is None:
            raise RuntimeError(f"{what}: this IndexBinaryHash has no encoder; use add_codes / search_codes")

    def _check_codes(self, codes, name="codes") -> np.ndarray:
        B = self.code_size
        if not isinstance(codes, np.ndarray):
            raise TypeError(f"{name}: expected a numpy uint8 array of shape (n, {B}), got {type(codes).__name__}")
        if codes.dtype != np.uint8:
            raise TypeError(f"{name}: expected (n, {B}) uint8 packed codes, got {codes.shape} {codes.dtype}")
        if codes.ndim != 2 or codes.shape[1] != B:
            raise ValueError(f"{name}: expected shape (n, {B}) uint8 (nbits={self.nbits}), got {codes.shape} "
                             f"{codes.dtype}")
        return np.ascontiguousarray(codes)

    def add(self, x) -> None:
        self._require_encoder("add")
        self.add_codes(self.enc.encode(x, self.nbits))

    def add_with_ids(self, x, ids) -> None:
        self._require_encoder("add_with_ids")
        codes = self.enc.encode(x, self.nbits)
        self.add_codes(codes, ids)

    def add_codes(self, codes, ids=None) -> None:
        """Adds packed uint8 (n, code_size) codes (LSB-first, as TernaryEncoder.encode and faiss
        make them); ids default to ntotal, ntotal + 1, ..."""
        codes = self._check_codes(codes)
        n = codes.shape[0]
        if ids is not None:
            ids = ids_array(ids, n)
        words = pack_words(codes, self._words)
        with self._lock.write():
            if ids is None:
                ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
            end = self._ntotal + n
            if end > self._codes.shape[0]:
                capacity = max(end, 2 * self._codes.shape[0], 1024)
                grown = np.zeros((capacity, self._words), np.uint64)
                grown[:self._ntotal] = self._codes[:self._ntotal]
                grown_ids = np.zeros(capacity, np.int64)
                grown_ids[:self._ntotal] = self._ids[:self._ntotal]
                self._codes, self._ids = grown, grown_ids
            self._codes[self._ntotal:end] = words
            self._ids[self._ntotal:end] = ids
            self._ntotal = end
            if n:
                self._next_id = max(self._next_id, int(ids.max()) + 1)

    # ------------------------------------------------------------------------------ search
    def _search_nbits(self, nbits) -> int:
        return self.nbits if nbits is None else _bits_value(nbits, self.nbits)

    def search(self, x, k, nbits=None):
        """(D int32 (n, k), I int64 (n, k)) for the encoder's codes of x, over the first nbits bits."""
        self._require_encoder("search")
        k = positive_int(k, "k")
        nbits = self._search_nbits(nbits)
        return self._search_words(pack_words(self.enc.encode(x, self.nbits), self._words), k, nbits)

    def search_codes(self, codes, k, nbits=None):
        """Like search, for packed uint8 (n, code_size) query codes."""
        k = positive_int(k, "k")
        nbits = self._search_nbits(nbits)
        return self._search_words(pack_words(self._check_codes(codes), self._words), k, nbits)

    def _search_words(self, queries: np.ndarray, k: int, nbits: int):
        with self._lock.read():
            n = self._ntotal
            return _core.hamming_search(self._codes[:n], self._ids[:n], queries, nbits, k)

    # ------------------------------------------------------------------------------ removal
    def remove_ids(self, ids) -> int:
        """Removes every stored code whose id is in `ids` (an int array or a faiss-style selector
        with is_member); returns how many were removed."""
        if hasattr(ids, "is_member"):
            member = lambda stored: np.fromiter((ids.is_member(int(i)) for i in stored), bool,  # noqa: E731
                                                count=len(stored))
        else:
            arr = np.asarray(ids)
            if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
                raise TypeError(f"ids: expected a 1-D integer array, got {arr.shape} {arr.dtype}")
            arr = arr.astype(np.int64)
            member = lambda stored: np.isin(stored, arr)  # noqa: E731
        with self._lock.write():
            n = self._ntotal
            drop = member(self._ids[:n])
            keep = ~drop
            removed = int(drop.sum())
            if removed:
                kept = int(keep.sum())
                self._codes[:kept] = self._codes[:n][keep]
                self._ids[:kept] = self._ids[:n][keep]
                self._ntotal = kept
            return removed

    def reset(self) -> None:
        with self._lock.write():
            self._codes = np.zeros((0, self._words), np.uint64)
            self._ids = np.zeros(0, np.int64)
            self._ntotal = 0
            self._next_id = 0

    # ------------------------------------------------------------------------------ access
    def get_ids(self) -> np.ndarray:
        with self._lock.read():
            return self._ids[:self._ntotal].copy()

    def get_codes(self) -> np.ndarray:
        """The stored codes as packed uint8 (ntotal, code_size)."""
        with self._lock.read():
            words = self._codes[:self._ntotal]
            return np.ascontiguousarray(words.astype("<u8").view(np.uint8)[:, :self.code_size])

    # ------------------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        from .io import write_index
        write_index(self, path)

    @classmethod
    def load(cls, path) -> "IndexBinaryHash":
        from .io import IndexFileError, read_index
        obj = read_index(path)
        if not isinstance(obj, cls):
            raise IndexFileError(str(path), None, f"expected an IndexBinaryHash file, got a {type(obj).__name__}")
        return obj

    def __reduce__(self):
        from .io import _index_from_bytes, serialize_index
        return (_index_from_bytes, (serialize_index(self).tobytes(),))

    def __repr__(self) -> str:
        return f"IndexBinaryHash(nbits={self.nbits}, ntotal={self.ntotal}, enc={self.enc!r})"
