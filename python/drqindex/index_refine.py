"""IndexRefineFlat: DRQ codes to find candidates, the raw vectors to rank them exactly.

What faiss.IndexRefineFlat does for a faiss index, for an IndexDRQ ("DRQ16,Refine(Flat)" in
index_factory): the raw float32 vectors are kept next to the codes; a search asks the codes for
k * k_factor candidates and re-ranks those with exact distances. Memory is d * 4 bytes per vector
more than the codes; recall is that of the code search at k * k_factor, with exact distances.

Raw vectors are kept in storage order, parallel to the base index's store (both change together
under this wrapper's lock), so a candidate's row is found from its id; stored ids may repeat (as in
faiss), in which case every row with a candidate id is re-ranked.
"""
from __future__ import annotations

import numbers

import numpy as np

from . import _validate
from ._locks import ReadWriteLock
from .index_drq import IndexDRQ
from .metrics import METRIC_L2
from .params import SearchParametersDRQ

_FLT_MAX = np.finfo(np.float32).max
# Queries re-ranked per chunk: bounds the (chunk, k * k_factor, d) temporary.
_RERANK_ELEMENTS = 1 << 22


class IndexRefineFlat:
    """base_index: an IndexDRQ, empty, to search the codes with (it becomes owned by this wrapper:
    add/remove through the wrapper only, so codes and raw vectors stay parallel).
    k_factor: how many more candidates than k the codes return (faiss's attribute, default 1)."""

    def __init__(self, base_index: IndexDRQ, k_factor: float = 1.0):
        if not isinstance(base_index, IndexDRQ):
            raise TypeError(f"base_index: expected a drqindex.IndexDRQ, got {type(base_index).__name__}")
        if base_index.encoder is not None:
            raise ValueError("base_index: an IndexDRQ with an encoder cannot be refined with exact distances "
                             "(its codes live in the encoder's space, not the input space)")
        if base_index.ntotal:
            raise ValueError(f"base_index: expected an empty index (its raw vectors are unknown), "
                             f"got ntotal={base_index.ntotal}")
        self.base_index = base_index
        self.k_factor = k_factor
        self._xb = np.empty((0, base_index.d), np.float32)  # capacity buffer; rows [0, ntotal) valid
        self._lock = ReadWriteLock()

    # ---------------------------------------------------------------- properties
    @property
    def k_factor(self) -> float:
        return self._k_factor

    @k_factor.setter
    def k_factor(self, value) -> None:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not value >= 1:
            raise ValueError(f"k_factor: expected a number >= 1, got {value!r}")
        self._k_factor = float(value)

    d = property(lambda self: self.base_index.d)
    metric_type = property(lambda self: self.base_index.metric_type)
    is_trained = property(lambda self: self.base_index.is_trained)
    ntotal = property(lambda self: self.base_index.ntotal)

    def __repr__(self):
        return f"IndexRefineFlat({self.base_index!r}, k_factor={self.k_factor:g})"

    def __reduce__(self):
        from . import io as _io
        return (_io._index_from_bytes, (_io.serialize_index(self).tobytes(),))

    # ---------------------------------------------------------------- building
    def train(self, x) -> None:
        self.base_index.train(x)

    def add(self, x) -> None:
        self._add(x, None)

    def add_with_ids(self, x, ids) -> None:
        self._add(x, ids)

    def _add(self, x, ids) -> None:
        self.base_index._check_trained("add")
        x = _validate.float_matrix(x, self.d)
        if ids is not None:
            ids = _validate.ids_array(ids, x.shape[0])
        with self._lock.write():
            n0 = self.ntotal
            # Raw vectors first (can only fail on memory, leaving the rows unused), then codes.
            self._reserve(n0 + x.shape[0])
            self._xb[n0:n0 + x.shape[0]] = x
            if ids is None:
                self.base_index.add(x)
            else:
                self.base_index.add_with_ids(x, ids)

    @classmethod
    def _from_parts(cls, base_index: IndexDRQ, xb: np.ndarray, k_factor: float) -> "IndexRefineFlat":
        """read_index: a wrapper around a filled base index and its raw vectors (rows in storage order)."""
        if xb.shape != (base_index.ntotal, base_index.d):
            raise ValueError(f"xb: expected shape ({base_index.ntotal}, {base_index.d}), got {xb.shape}")
        index = cls.__new__(cls)
        index.base_index = base_index
        index.k_factor = k_factor
        index._xb = np.ascontiguousarray(xb, dtype=np.float32)
        index._lock = ReadWriteLock()
        return index

    def _reserve(self, rows: int) -> None:
        if rows > self._xb.shape[0]:
            grown = np.empty((max(rows, 2 * self._xb.shape[0], 1024), self.d), np.float32)
            grown[:self.ntotal] = self._xb[:self.ntotal]
            self._xb = grown

    def raw_vectors(self) -> np.ndarray:
        """The stored raw vectors (ntotal, d) float32, in storage order (a copy)."""
        with self._lock.read():
            return self._xb[:self.ntotal].copy()

    # ---------------------------------------------------------------- searching
    def search(self, x, k, *, params: SearchParametersDRQ | None = None, iters: int | None = None,
               D=None, I=None):
        """k nearest neighbours by exact distance among the k * k_factor candidates that the codes
        (first `iters` bytes, or params.iters) return. Same output conventions as IndexDRQ.search."""
        base = self.base_index
        base._check_trained("search")
        x = _validate.float_matrix(x, self.d)
        k = _validate.positive_int(k, "k")
        m = base._search_iters(params, iters)
        n = x.shape[0]
        D = _validate.output_array(D, (n, k), np.float32, "D")
        I = _validate.output_array(I, (n, k), np.int64, "I")
        l2 = self.metric_type == METRIC_L2
        with self._lock.read(), base._lock.read():
            ntotal = self.ntotal
            if ntotal == 0:
                raise RuntimeError("search: the index is empty (ntotal = 0); add vectors before searching")
            k_base = min(ntotal, max(k, int(k * self.k_factor)))
            Db = np.empty((n, k_base), np.float32)
            Ib = np.empty((n, k_base), np.int64)
            base._search_locked(x, k_base, m, Db, Ib, base._allowed_locked(params))
            ids = base._store.get_ids()
            order = np.argsort(ids, kind="stable")
            sorted_ids = ids[order]
            xb = self._xb
            rows_per_chunk = max(1, _RERANK_ELEMENTS // (k_base * self.d))
            for start in range(0, n, rows_per_chunk):
                stop = min(n, start + rows_per_chunk)
                rows = _candidate_rows(Ib[start:stop], sorted_ids, order)
                self._rerank(x[start:stop], rows, ids, xb, k, l2, D[start:stop], I[start:stop])
        return D, I

    @staticmethod
    def _rerank(xq, rows, ids, xb, k, l2, D, I) -> None:
        # rows: (nq, c) storage rows, -1 where there is no candidate.
        valid = rows >= 0
        cand = xb[np.where(valid, rows, 0)].astype(np.float64)  # (nq, c, d)
        q = xq.astype(np.float64)[:, None, :]
        if l2:
            dist = ((cand - q) ** 2).sum(-1)
            dist[~valid] = np.inf
            top = np.argsort(dist, axis=1, kind="stable")[:, :k]
        else:
            dist = (cand * q).sum(-1)
            dist[~valid] = -np.inf
            top = np.argsort(-dist, axis=1, kind="stable")[:, :k]
        kk = top.shape[1]
        top_rows = np.take_along_axis(rows, top, 1)
        found = top_rows >= 0
        D[:, :kk] = np.where(found, np.take_along_axis(dist, top, 1), _FLT_MAX if l2 else -_FLT_MAX)
        I[:, :kk] = np.where(found, ids[np.where(found, top_rows, 0)], -1)
        if kk < k:
            D[:, kk:] = _FLT_MAX if l2 else -_FLT_MAX
            I[:, kk:] = -1

    def range_search(self, x, radius, *, params: SearchParametersDRQ | None = None, iters: int | None = None):
        """faiss.IndexRefine's range search: the candidates are the code range search's results
        at the same radius; each is kept if its exact distance is inside the radius too
        (L2: D < radius, inner product: D > radius). Returns lims uint64 (n + 1,), D float32,
        I int64 with exact distances, each query's results sorted best first."""
        base = self.base_index
        base._check_trained("range_search")
        x = _validate.float_matrix(x, self.d)
        l2 = self.metric_type == METRIC_L2
        with self._lock.read():
            lims, _, labels = base.range_search(x, radius, params=params, iters=iters)
            ids = base._store.get_ids()
            order = np.argsort(ids, kind="stable")
            xb = self._xb
            radius = float(radius)
            out_D, out_I = [], []
            counts = np.zeros(x.shape[0], np.uint64)
            for q in range(x.shape[0]):
                cand = labels[int(lims[q]):int(lims[q + 1])]
                if cand.size == 0:
                    continue
                rows = _candidate_rows(cand[None, :], ids[order], order)[0]
                rows = rows[rows >= 0]
                diff = xb[rows].astype(np.float64)
                dist = ((diff - x[q].astype(np.float64)) ** 2).sum(-1) if l2 else diff @ x[q].astype(np.float64)
                keep = dist < radius if l2 else dist > radius
                rank = np.argsort(dist[keep] if l2 else -dist[keep], kind="stable")
                out_D.append(dist[keep][rank].astype(np.float32))
                out_I.append(ids[rows[keep][rank]])
                counts[q] = rank.size
        lims_out = np.zeros(x.shape[0] + 1, np.uint64)
        lims_out[1:] = np.cumsum(counts, dtype=np.uint64)
        D = np.concatenate(out_D) if out_D else np.empty(0, np.float32)
        I = np.concatenate(out_I) if out_I else np.empty(0, np.int64)
        return lims_out, D, I.astype(np.int64, copy=False)

    # ---------------------------------------------------------------- reading back / removing
    def reconstruct(self, key: int) -> np.ndarray:
        """The exact stored vector (d,) float32 with id `key` (the raw vector, not a decoding)."""
        with self._lock.read():
            pos = np.flatnonzero(self.base_index.get_ids() == int(key))
            if pos.size == 0:
                raise KeyError(f"reconstruct: id {key} is not in the index")
            return self._xb[int(pos[0])].copy()

    def reconstruct_n(self, i0: int, ni: int) -> np.ndarray:
        with self._lock.read():
            if i0 < 0 or ni < 0 or i0 + ni > self.ntotal:
                raise IndexError(f"reconstruct_n: expected 0 <= i0 and i0 + ni <= ntotal ({self.ntotal}), "
                                 f"got i0={i0}, ni={ni}")
            return self._xb[i0:i0 + ni].copy()

    def get_ids(self) -> np.ndarray:
        return self.base_index.get_ids()

    def remove_ids(self, ids) -> int:
        """Remove the vectors whose ids are selected (int array or faiss.IDSelector), codes and
        raw vectors alike; remaining ids do not change."""
        from ._selectors import selection_mask

        if isinstance(ids, np.ndarray) and (ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer)):
            raise TypeError(f"ids: expected a 1-D int64 array or a faiss.IDSelector, got {_validate._describe(ids)}")
        base = self.base_index
        with self._lock.write(), base._lock.write():
            n = self.ntotal
            mask = selection_mask(ids, base._store.get_ids(), "ids")
            if not mask.any():
                return 0
            keep = ~mask
            kept = int(keep.sum())
            self._xb[:kept] = self._xb[:n][keep]
            return int(base._store.remove(mask.view(np.uint8)))

    def reset(self) -> None:
        with self._lock.write():
            self.base_index.reset()
            self._xb = np.empty((0, self.d), np.float32)


def _candidate_rows(labels: np.ndarray, sorted_ids: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Storage rows (nq, c) of the candidate ids (nq, kb), -1 padded. Each id usually has one row;
    an id stored several times contributes all of its rows (once per query)."""
    valid = labels >= 0
    left = np.searchsorted(sorted_ids, labels, "left")
    right = np.searchsorted(sorted_ids, labels, "right")
    counts = np.where(valid, right - left, 0)
    if (counts <= 1).all():
        return np.where(counts == 1, order[np.minimum(left, order.size - 1)], -1)
    per_query = []
    for lab, lo, cnt in zip(labels, left, counts):
        firsts = np.unique(lab[cnt > 0])  # one expansion per distinct id
        lo_u = np.searchsorted(sorted_ids, firsts, "left")
        hi_u = np.searchsorted(sorted_ids, firsts, "right")
        per_query.append(order[np.concatenate([np.arange(a, b) for a, b in zip(lo_u, hi_u)])]
                         if firsts.size else np.empty(0, np.int64))
    width = max(1, max(r.size for r in per_query))
    rows = np.full((labels.shape[0], width), -1, np.int64)
    for i, r in enumerate(per_query):
        rows[i, :r.size] = r
    return rows
