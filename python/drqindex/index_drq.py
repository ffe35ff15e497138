"""IndexDRQ: a flat index over sequential DRQ codes, with the faiss index API.

A query's path: IndexDRQ.search -> _validate (shapes, dtypes, finiteness) -> DRQQuantizer.query_tables
(one table q C^T per query, shared by all iterations) -> _core.search (GIL released; the SIMD kernel
chosen once per call; top-k) -> numpy arrays (D float32 (n, k), I int64 (n, k), -1 padding).
"""
from __future__ import annotations

import numpy as np

from . import _core, _validate
from ._locks import ReadWriteLock
from .metrics import METRIC_INNER_PRODUCT, METRIC_L2
from .params import SearchParametersDRQ
from .quantizer import QUERY_CHUNK, DRQQuantizer

# Distances reported for missing results (k > ntotal), the values faiss uses.
_FLT_MAX = np.finfo(np.float32).max


class IndexDRQ:
    """Flat index over DRQ codes: M bytes per vector, searchable with any prefix of 1..M bytes.

    d: dimension; iters: M, the number of iterations (bytes per vector, K = 256 codewords each);
    metric: METRIC_L2 (default) or METRIC_INNER_PRODUCT; train_config: options for the torch
    trainer (a drqindex.train.DRQTrainConfig or a dict of its fields; iters is taken from here).
    """

    def __init__(self, d: int, iters: int = 16, metric: int = METRIC_L2, *, train_config=None,
                 verbose: bool = False):
        self.d = _validate.positive_int(d, "d")
        self.iters = _validate.positive_int(iters, "iters", upper=1024)
        self.metric_type = _validate.metric_value(metric)
        self.train_config = train_config
        self.verbose = bool(verbose)
        self.train_info: dict | None = None
        self._quantizer: DRQQuantizer | None = None
        self._store = _core.CodeStore(self.iters)
        self._lock = ReadWriteLock()

    # ---------------------------------------------------------------- properties
    @property
    def is_trained(self) -> bool:
        return self._quantizer is not None

    @property
    def ntotal(self) -> int:
        return self._store.ntotal

    @property
    def code_size(self) -> int:
        """Bytes of code per vector at full length (one byte per iteration). The L2 metric also
        stores one float32 norm per prefix; see bytes_per_vector."""
        return self.iters

    def bytes_per_vector(self, iters: int | None = None) -> int:
        """Bytes stored per vector that a search with `iters` iterations reads: code bytes plus,
        for L2, the float32 norm of that prefix's reconstruction."""
        m = _validate.iters_value(iters, self.iters)
        return m + (4 if self.metric_type == METRIC_L2 else 0)

    @property
    def quantizer(self) -> DRQQuantizer:
        self._check_trained("use the quantizer")
        return self._quantizer

    def __repr__(self):
        metric = "L2" if self.metric_type == METRIC_L2 else "IP"
        return (f"IndexDRQ(d={self.d}, iters={self.iters}, metric={metric}, is_trained={self.is_trained}, "
                f"ntotal={self.ntotal})")

    # ---------------------------------------------------------------- training
    def train(self, x) -> None:
        """Train the shared codebook and per-iteration scales on float32 (n, d) vectors (torch)."""
        x = _validate.float_matrix(x, self.d)
        if x.shape[0] < 256:
            raise ValueError(f"x: expected at least 256 training vectors (one per codeword), got {x.shape[0]}")
        with self._lock.write():
            if self.ntotal:
                raise RuntimeError(f"train: the index already holds {self.ntotal} vectors encoded with the "
                                   "current quantizer; call reset() before training again")
            from .train.drq import DRQTrainConfig, train_drq  # torch is imported here, never at import drqindex

            cfg = self.train_config
            if cfg is None:
                cfg = DRQTrainConfig(iters=self.iters)
            elif isinstance(cfg, dict):
                cfg = DRQTrainConfig(**{**cfg, "iters": self.iters})
            elif cfg.iters != self.iters:
                raise ValueError(f"train_config.iters: expected {self.iters} (the index's iters), got {cfg.iters}")
            if self.verbose and not cfg.verbose:
                cfg = _replace(cfg, verbose=True)
            codebook, scales, info = train_drq(x, cfg)
            self._set_quantizer(DRQQuantizer(codebook, scales))
            self.train_info = info

    def set_quantizer(self, quantizer: DRQQuantizer) -> None:
        """Use an already trained quantizer (e.g. loaded from arrays): no torch needed."""
        if not isinstance(quantizer, DRQQuantizer):
            raise TypeError(f"quantizer: expected a drqindex.DRQQuantizer, got {type(quantizer).__name__}")
        with self._lock.write():
            if self.ntotal:
                raise RuntimeError(f"set_quantizer: the index already holds {self.ntotal} vectors; reset() first")
            self._set_quantizer(quantizer)

    def _set_quantizer(self, quantizer: DRQQuantizer) -> None:
        if quantizer.d != self.d or quantizer.M != self.iters:
            raise ValueError(f"quantizer: expected d={self.d}, M={self.iters}, got d={quantizer.d}, M={quantizer.M}")
        self._quantizer = quantizer

    # ---------------------------------------------------------------- adding
    def add(self, x) -> None:
        """Encode and add float32 (n, d) vectors; their ids are ntotal, ntotal + 1, ..."""
        x = self._prepare_add(x)
        with self._lock.write():
            ids = np.arange(self.ntotal, self.ntotal + x.shape[0], dtype=np.int64)
            self._add_locked(x, ids)

    def add_with_ids(self, x, ids) -> None:
        """Encode and add float32 (n, d) vectors with caller-chosen int64 ids (n,)."""
        x = self._prepare_add(x)
        ids = _validate.ids_array(ids, x.shape[0])
        with self._lock.write():
            self._add_locked(x, ids)

    def _prepare_add(self, x) -> np.ndarray:
        self._check_trained("add")
        return _validate.float_matrix(x, self.d)

    def _add_locked(self, x: np.ndarray, ids: np.ndarray) -> None:
        if x.shape[0] == 0:
            return
        # Everything is encoded before the store is touched, so an error or Ctrl-C during encoding
        # leaves the index exactly as it was.
        with _progress(self.verbose, x.shape[0], "encoding") as progress:
            codes, norms = self._quantizer.encode(x, progress=progress)
        self._store.add(codes, norms, ids)

    # ---------------------------------------------------------------- searching
    def search(self, x, k, *, params: SearchParametersDRQ | None = None, iters: int | None = None,
               D=None, I=None):
        """k nearest neighbours of float32 (n, d) queries, using the first `iters` bytes of each code.

        Returns D float32 (n, k) (squared L2 distances ascending, or inner products descending) and
        I int64 (n, k) ids, -1 (with D = +/-FLT_MAX) where fewer than k vectors are stored.
        """
        self._check_trained("search")
        x = _validate.float_matrix(x, self.d)
        k = _validate.positive_int(k, "k")
        m = self._search_iters(params, iters)
        n = x.shape[0]
        D = _validate.output_array(D, (n, k), np.float32, "D")
        I = _validate.output_array(I, (n, k), np.int64, "I")
        with self._lock.read():
            ntotal = self.ntotal
            if ntotal == 0:
                raise RuntimeError("search: the index is empty (ntotal = 0); add vectors before searching")
            # The core never sees a k larger than ntotal: the padding is written here, so a huge k
            # costs only the output arrays, not a huge heap per query.
            k_core = min(k, ntotal)
            for start in range(0, n, QUERY_CHUNK):
                stop = min(n, start + QUERY_CHUNK)
                tables, qnorms = self._quantizer.query_tables(x[start:stop])
                Dc, Ic = _core.search(self._store, tables, qnorms, self._quantizer.scales, m, k_core,
                                      self._core_metric())
                D[start:stop, :k_core] = Dc
                I[start:stop, :k_core] = Ic
        if k_core < k:
            D[:, k_core:] = _FLT_MAX if self.metric_type == METRIC_L2 else -_FLT_MAX
            I[:, k_core:] = -1
        return D, I

    def _search_iters(self, params, iters) -> int:
        if params is not None:
            if not isinstance(params, SearchParametersDRQ):
                raise TypeError(f"params: expected drqindex.SearchParametersDRQ, got {type(params).__name__}")
            if iters is not None and params.iters is not None and iters != params.iters:
                raise ValueError(f"iters: given both as iters={iters} and params.iters={params.iters}; pass one")
            if iters is None:
                iters = params.iters
        return _validate.iters_value(iters, self.iters)

    def _core_metric(self) -> int:
        return 0 if self.metric_type == METRIC_L2 else 1

    # ---------------------------------------------------------------- reading back
    def reconstruct(self, key: int, iters: int | None = None) -> np.ndarray:
        """The m-iteration reconstruction (d,) float32 of the vector with id `key`."""
        self._check_trained("reconstruct")
        m = _validate.iters_value(iters, self.iters)
        with self._lock.read():
            pos = np.flatnonzero(self._store.get_ids() == int(key))
            if pos.size == 0:
                raise KeyError(f"reconstruct: id {key} is not in the index")
            codes = self._store.get_codes(int(pos[0]), 1)
        return self._quantizer.decode(codes, m)[0]

    def reconstruct_n(self, i0: int, ni: int, iters: int | None = None) -> np.ndarray:
        """Reconstructions (ni, d) float32 of the vectors stored at positions i0 .. i0 + ni - 1."""
        self._check_trained("reconstruct_n")
        m = _validate.iters_value(iters, self.iters)
        with self._lock.read():
            if i0 < 0 or ni < 0 or i0 + ni > self.ntotal:
                raise IndexError(f"reconstruct_n: expected 0 <= i0 and i0 + ni <= ntotal ({self.ntotal}), "
                                 f"got i0={i0}, ni={ni}")
            codes = self._store.get_codes(int(i0), int(ni))
        return self._quantizer.decode(codes, m)

    def get_ids(self) -> np.ndarray:
        """The stored ids in storage order, int64 (ntotal,)."""
        return self._store.get_ids()

    def sa_encode(self, x) -> np.ndarray:
        """Standalone codes uint8 (n, M) of float32 (n, d) vectors, as faiss's sa_encode."""
        self._check_trained("sa_encode")
        return self._quantizer.encode(_validate.float_matrix(x, self.d))[0]

    def sa_decode(self, codes, iters: int | None = None) -> np.ndarray:
        self._check_trained("sa_decode")
        m = _validate.iters_value(iters, self.iters)
        if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8 or codes.ndim != 2 \
                or codes.shape[1] < m:
            raise ValueError(f"codes: expected uint8 (n, >= {m}), got {_validate._describe(codes)}")
        return self._quantizer.decode(codes, m)

    # ---------------------------------------------------------------- removing
    def remove_ids(self, ids) -> int:
        """Remove every stored vector whose id is in `ids` (int64 array); returns how many were removed.
        The ids of the remaining vectors do not change."""
        if not isinstance(ids, np.ndarray) or ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"ids: expected a 1-D int64 array, got {_validate._describe(ids)}")
        with self._lock.write():
            if self.ntotal == 0 or ids.size == 0:
                return 0
            mask = np.isin(self._store.get_ids(), ids.astype(np.int64, copy=False))
            return int(self._store.remove(mask.view(np.uint8)))

    def reset(self) -> None:
        """Remove all vectors; the trained quantizer is kept."""
        with self._lock.write():
            self._store.reset()

    def _check_trained(self, what: str) -> None:
        if self._quantizer is None:
            raise RuntimeError(f"{what}: the index is not trained (is_trained = False); call train(x) first")


def _replace(cfg, **changes):
    import dataclasses
    return dataclasses.replace(cfg, **changes)


class _progress:
    """A tqdm bar over rows when verbose; a no-op otherwise (tqdm imported only when used)."""

    def __init__(self, verbose: bool, total: int, desc: str):
        self._bar = None
        if verbose:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=total, desc=desc, unit="vec")

    def __enter__(self):
        return self._bar.update if self._bar is not None else None

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.close()
        return False
