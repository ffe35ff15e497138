"""IndexDRQ: a flat index over sequential DRQ codes, with the faiss index API.

A query's path: IndexDRQ.search -> _validate (shapes, dtypes, finiteness) -> DRQQuantizer.query_tables
(one table q C^T per query, shared by all iterations) -> _core.search (GIL released; the SIMD kernel
chosen once per call; top-k) -> numpy arrays (D float32 (n, k), I int64 (n, k), -1 padding).
"""
from __future__ import annotations

import numpy as np

from . import _core, _validate
from ._locks import ReadWriteLock
from .metrics import METRIC_L2
from .params import SearchParametersDRQ
from .quantizer import QUERY_CHUNK, DRQQuantizer

# Distances reported for missing results (k > ntotal), the values faiss uses.
_FLT_MAX = np.finfo(np.float32).max


class IndexDRQ:
    """Flat index over DRQ codes: M bytes per vector, searchable with any prefix of 1..M bytes.

    d: dimension; iters: M, the number of iterations (bytes per vector, K = 256 codewords each);
    metric: METRIC_L2 (default) or METRIC_INNER_PRODUCT; codebooks: "shared" (the faithful DRQ: one
    (256, d) codebook for every iteration, one scale each) or "per_iteration" (one (256, d) codebook
    per iteration: M times the parameters and an M x 256 query table, higher recall; see
    drqindex.train.per_iteration); train_config: options for the trainer (a
    drqindex.train.DRQTrainConfig or a dict of its fields; iters and codebooks are taken from here).
    encoder: optional drqindex.TernaryEncoder (e.g. HashStudent.export()): every input (train, add,
    search, range_search, sa_encode) is first mapped by encoder.embed, and the DRQ codes live in that
    learned space of encoder.nbits dimensions. d is then the encoder's input dimension (784 for
    28x28 images), inputs may be anything the encoder accepts (uint8 or float32 images), and
    reconstruct / sa_decode return vectors of the learned space.
    """

    def __init__(self, d: int, iters: int = 16, metric: int = METRIC_L2, *, codebooks: str = "shared",
                 train_config=None, verbose: bool = False, encoder=None):
        self.d = _validate.positive_int(d, "d")
        if encoder is not None:
            from .encoder import TernaryEncoder
            if not isinstance(encoder, TernaryEncoder):
                raise TypeError(f"encoder: expected a drqindex.TernaryEncoder, got {type(encoder).__name__}")
            if encoder.input_dim != self.d:
                raise ValueError(f"encoder: its input dimension is {encoder.input_dim}, expected d={self.d} "
                                 f"(pass d=encoder.input_dim)")
        self.encoder = encoder
        # Dimension of the space the codes quantize: d itself, or the encoder's output.
        self.code_space_d = self.d if encoder is None else encoder.nbits
        self.iters = _validate.positive_int(iters, "iters", upper=1024)
        self.metric_type = _validate.metric_value(metric)
        self.codebooks = _validate.codebooks_value(codebooks)
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

    def __reduce__(self):
        # pickle / copy.deepcopy go through the documented file format (drqindex.io): the pickle
        # holds one bytes object and a reference to the reader, never the internal objects.
        from . import io as _io
        return (_io._index_from_bytes, (_io.serialize_index(self).tobytes(),))

    def __repr__(self):
        metric = "L2" if self.metric_type == METRIC_L2 else "IP"
        enc = "" if self.encoder is None else f", encoder={self.encoder!r}"
        cb = "" if self.codebooks == "shared" else f", codebooks={self.codebooks!r}"
        return (f"IndexDRQ(d={self.d}, iters={self.iters}, metric={metric}{cb}, is_trained={self.is_trained}, "
                f"ntotal={self.ntotal}{enc})")

    def _to_code_space(self, x) -> np.ndarray:
        """Validated float32 (n, code_space_d) vectors: x itself, or the encoder's embedding of x."""
        if self.encoder is None:
            return _validate.float_matrix(x, self.d)
        return self.encoder.embed(x)

    # ---------------------------------------------------------------- training
    def train(self, x) -> None:
        """Train the codebook(s) and per-iteration scales on float32 (n, d) vectors (torch / faiss k-means)."""
        x = self._to_code_space(x)
        if x.shape[0] < 256:
            raise ValueError(f"x: expected at least 256 training vectors (one per codeword), got {x.shape[0]}")
        with self._lock.write():
            if self.ntotal:
                raise RuntimeError(f"train: the index already holds {self.ntotal} vectors encoded with the "
                                   "current quantizer; call reset() before training again")
            from .train.drq import DRQTrainConfig, train_drq  # torch is imported here, never at import drqindex

            cfg = self.train_config
            if cfg is None:
                cfg = DRQTrainConfig(iters=self.iters, codebooks=self.codebooks)
            elif isinstance(cfg, dict):
                cfg = DRQTrainConfig(**{**cfg, "iters": self.iters, "codebooks": self.codebooks})
            elif cfg.iters != self.iters:
                raise ValueError(f"train_config.iters: expected {self.iters} (the index's iters), got {cfg.iters}")
            elif cfg.codebooks != self.codebooks:
                raise ValueError(f"train_config.codebooks: expected {self.codebooks!r} (the index's codebooks), "
                                 f"got {cfg.codebooks!r}; pass codebooks={cfg.codebooks!r} to the index")
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
        if quantizer.d != self.code_space_d or quantizer.M != self.iters:
            raise ValueError(f"quantizer: expected d={self.code_space_d}, M={self.iters}, "
                             f"got d={quantizer.d}, M={quantizer.M}")
        self._quantizer = quantizer
        self.codebooks = quantizer.form

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
        return self._to_code_space(x)

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
        I int64 (n, k) ids, -1 (with D = +/-FLT_MAX) where fewer than k vectors are stored (or selected).
        params: SearchParametersDRQ(iters=..., sel=...) or, from code written for faiss, a
        faiss.SearchParameters(sel=...); sel restricts the results to the ids it selects.
        """
        self._check_trained("search")
        x = self._to_code_space(x)
        k = _validate.positive_int(k, "k")
        m = self._search_iters(params, iters)
        n = x.shape[0]
        D = _validate.output_array(D, (n, k), np.float32, "D")
        I = _validate.output_array(I, (n, k), np.int64, "I")
        with self._lock.read():
            self._search_locked(x, k, m, D, I, self._allowed_locked(params))
        return D, I

    def _allowed_locked(self, params) -> np.ndarray | None:
        """params.sel evaluated over the stored ids: a uint8 (ntotal,) mask for the core, or None.
        Computed under the caller's read lock, so it matches the store the search scans."""
        sel = getattr(params, "sel", None)
        if sel is None or self.ntotal == 0:
            return None
        from ._selectors import selection_mask
        return selection_mask(sel, self._store.get_ids(), "params.sel").view(np.uint8)

    def _search_locked(self, x: np.ndarray, k: int, m: int, D: np.ndarray, I: np.ndarray,
                       allowed: np.ndarray | None = None) -> None:
        # Callers hold the read lock (range_search calls this several times under one lock, so
        # its rounds all see the same stored vectors).
        ntotal = self.ntotal
        if ntotal == 0:
            raise RuntimeError("search: the index is empty (ntotal = 0); add vectors before searching")
        # The core never sees a k larger than ntotal: the padding is written here, so a huge k
        # costs only the output arrays, not a huge heap per query.
        k_core = min(k, ntotal)
        n = x.shape[0]
        for start in range(0, n, QUERY_CHUNK):
            stop = min(n, start + QUERY_CHUNK)
            tables, qnorms = self._quantizer.query_tables(x[start:stop], m)
            Dc, Ic = _core.search(self._store, tables, qnorms, self._quantizer.scales, m, k_core,
                                  self._core_metric(), allowed)
            if allowed is not None:
                # Fewer allowed vectors than k_core: the core pads with +/-inf; faiss uses FLT_MAX.
                Dc[Ic == -1] = _FLT_MAX if self.metric_type == METRIC_L2 else -_FLT_MAX
            D[start:stop, :k_core] = Dc
            I[start:stop, :k_core] = Ic
        if k_core < k:
            D[:, k_core:] = _FLT_MAX if self.metric_type == METRIC_L2 else -_FLT_MAX
            I[:, k_core:] = -1

    def _search_iters(self, params, iters) -> int:
        if params is not None:
            if _is_faiss_search_parameters(params):
                # faiss.SearchParameters(sel=...) from code written for faiss: only its selector
                # applies to a flat DRQ index (read by _allowed_locked); iters comes from the keyword.
                return _validate.iters_value(iters, self.iters)
            if not isinstance(params, SearchParametersDRQ):
                raise TypeError(f"params: expected drqindex.SearchParametersDRQ (or a faiss.SearchParameters "
                                f"with sel), got {type(params).__name__}")
            if iters is not None and params.iters is not None and iters != params.iters:
                raise ValueError(f"iters: given both as iters={iters} and params.iters={params.iters}; pass one")
            if iters is None:
                iters = params.iters
        return _validate.iters_value(iters, self.iters)

    def _core_metric(self) -> int:
        return 0 if self.metric_type == METRIC_L2 else 1

    def range_search(self, x, radius, *, params: SearchParametersDRQ | None = None, iters: int | None = None):
        """Every stored vector within `radius` of each float32 (n, d) query, as faiss's range_search.

        L2: squared distance D < radius; inner product: D > radius (faiss's conventions).
        Returns lims uint64 (n + 1,) (faiss's dtype), D float32 (lims[n],), I int64 (lims[n],):
        query i's results are D[lims[i]:lims[i + 1]], I[...], sorted best first.
        One scan of the codes in the core, with the same distances as search (exact with respect
        to the codes); params / iters as for search (sel filters here too).
        """
        self._check_trained("range_search")
        x = self._to_code_space(x)
        radius = _validate.radius_value(radius)
        m = self._search_iters(params, iters)
        n = x.shape[0]
        parts = []
        with self._lock.read():
            if self.ntotal == 0:
                raise RuntimeError("range_search: the index is empty (ntotal = 0); add vectors before searching")
            allowed = self._allowed_locked(params)
            for start in range(0, n, QUERY_CHUNK):
                tables, qnorms = self._quantizer.query_tables(x[start:start + QUERY_CHUNK], m)
                parts.append(_core.range_search(self._store, tables, qnorms, self._quantizer.scales, m,
                                                radius, self._core_metric(), allowed))
        if len(parts) == 1:
            return parts[0]
        lims = np.zeros(n + 1, np.uint64)
        offset, row = 0, 0
        for part_lims, _, _ in parts:
            nq = part_lims.size - 1
            lims[row + 1:row + nq + 1] = part_lims[1:] + np.uint64(offset)
            offset += int(part_lims[-1])
            row += nq
        D = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, np.float32)
        I = np.concatenate([p[2] for p in parts]) if parts else np.empty(0, np.int64)
        return lims, D, I

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

    def reconstruct_batch(self, keys, iters: int | None = None) -> np.ndarray:
        """Reconstructions (n, d) float32 of the vectors with ids `keys` (int array (n,)), in that order.
        KeyError names the first id that is not stored; with duplicate stored ids, the first stored wins."""
        self._check_trained("reconstruct_batch")
        m = _validate.iters_value(iters, self.iters)
        if not isinstance(keys, np.ndarray) or keys.ndim != 1 or not np.issubdtype(keys.dtype, np.integer):
            raise TypeError(f"keys: expected a 1-D int64 array, got {_validate._describe(keys)}")
        keys = keys.astype(np.int64, copy=False)
        with self._lock.read():
            ids = self._store.get_ids()
            # A stable sort keeps the first stored position first among equal ids.
            order = np.argsort(ids, kind="stable")
            where = np.searchsorted(ids[order], keys) if ids.size else np.zeros(keys.size, np.int64)
            found = where < ids.size
            found[found] = ids[order[where[found]]] == keys[found]
            if not found.all():
                raise KeyError(f"reconstruct_batch: id {int(keys[np.flatnonzero(~found)[0]])} is not in the index")
            positions = order[where]
            codes = np.empty((keys.size, self.iters), np.uint8)
            for i, pos in enumerate(positions):
                codes[i] = self._store.get_codes(int(pos), 1)[0]
        return self._quantizer.decode(codes, m)

    def get_ids(self) -> np.ndarray:
        """The stored ids in storage order, int64 (ntotal,)."""
        return self._store.get_ids()

    def sa_encode(self, x) -> np.ndarray:
        """Standalone codes uint8 (n, M) of float32 (n, d) vectors, as faiss's sa_encode."""
        self._check_trained("sa_encode")
        return self._quantizer.encode(self._to_code_space(x))[0]

    def sa_decode(self, codes, iters: int | None = None) -> np.ndarray:
        self._check_trained("sa_decode")
        m = _validate.iters_value(iters, self.iters)
        if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8 or codes.ndim != 2 \
                or codes.shape[1] < m:
            raise ValueError(f"codes: expected uint8 (n, >= {m}), got {_validate._describe(codes)}")
        return self._quantizer.decode(codes, m)

    def sa_code_size(self) -> int:
        """Bytes per standalone code (sa_encode / sa_decode / add_sa_codes): M, one per iteration."""
        return self.iters

    def add_sa_codes(self, codes, ids=None) -> None:
        """Add vectors given as standalone codes uint8 (n, M) (e.g. from sa_encode), with int64 ids
        (n,) or, when ids is None, ntotal, ntotal + 1, ...

        The per-prefix norms that L2 search needs are recomputed from the codes in float64
        (||decode(code, m)||^2 for every m), so distances can differ from those of add() by float
        rounding (about 1e-6 relative), not more.
        """
        self._check_trained("add_sa_codes")
        codes = _validate.codes_matrix(codes, self.iters)
        if ids is not None:
            ids = _validate.ids_array(ids, codes.shape[0])
        norms = self._quantizer.prefix_norms(codes)
        with self._lock.write():
            if ids is None:
                ids = np.arange(self.ntotal, self.ntotal + codes.shape[0], dtype=np.int64)
            if codes.shape[0]:
                self._store.add(codes, norms, ids)

    def _append_encoded(self, codes: np.ndarray, norms: np.ndarray, ids: np.ndarray) -> None:
        """Append already encoded vectors (codes, their per-prefix norms and ids) as they are:
        used by read_index, which has validated them."""
        self._check_trained("add")
        with self._lock.write():
            if codes.shape[0]:
                self._store.add(codes, norms, ids)

    # ---------------------------------------------------------------- merging
    def check_compatible_for_merge(self, other) -> None:
        """Raise unless `other` stores codes of the same quantizer (same d, M, metric, and a
        bit-identical codebook and scales): only then do its codes mean the same vectors here."""
        if not isinstance(other, IndexDRQ):
            raise TypeError(f"other: expected a drqindex.IndexDRQ, got {type(other).__name__}")
        if (other.d, other.iters, other.metric_type) != (self.d, self.iters, self.metric_type):
            raise ValueError(f"other: expected d={self.d}, iters={self.iters}, metric={self.metric_type}, "
                             f"got d={other.d}, iters={other.iters}, metric={other.metric_type}")
        if (self.encoder is None) != (other.encoder is None) or \
                (self.encoder is not None and self.encoder != other.encoder):
            raise ValueError("other: its encoder differs, so its codes live in another space")
        self._check_trained("merge_from")
        if not other.is_trained:
            raise ValueError("other: the index is not trained, so it holds no codes to merge")
        a, b = self._quantizer, other._quantizer
        if a is not b and not a.same_model(b):
            raise ValueError("other: its quantizer differs (codebook or scales are not bit-identical), "
                             "so its codes cannot be merged; re-add its vectors instead")

    def merge_from(self, other, add_id: int = 0) -> None:
        """Move every vector of `other` (same quantizer) into this index, then empty `other`, as
        faiss's merge_from. The codes and norms are copied as stored (no re-encoding); their ids
        are kept, plus add_id (faiss's IVF convention for shifting the other index's ids)."""
        if other is self:
            raise ValueError("other: cannot merge an index into itself")
        self.check_compatible_for_merge(other)
        if isinstance(add_id, (bool, np.bool_)) or not isinstance(add_id, (int, np.integer)):
            raise TypeError(f"add_id: expected an int, got {type(add_id).__name__}")
        # Both write locks, always taken in the same (id) order, so two threads merging a into b
        # and b into a cannot deadlock.
        first, second = sorted((self, other), key=id)
        with first._lock.write(), second._lock.write():
            n = other.ntotal
            if n == 0:
                return
            ids = other._store.get_ids()
            if add_id:
                ids = ids + np.int64(add_id)
                if (ids == -1).any():
                    raise ValueError(f"add_id: shifting the ids by {add_id} produces -1, reserved for 'no result'")
            self._store.add(other._store.get_codes(0, n), other._store.get_norms(0, n), ids)
            other._store.reset()

    # ---------------------------------------------------------------- removing
    def remove_ids(self, ids) -> int:
        """Remove every stored vector whose id is selected; returns how many were removed.

        ids: a 1-D integer array of ids, or a faiss.IDSelector (IDSelectorBatch, IDSelectorRange,
        IDSelectorArray, IDSelectorNot/And/Or, ...), as faiss's remove_ids accepts.
        The ids of the remaining vectors do not change (unlike faiss.IndexFlat, like faiss's IVF
        indexes and IndexIDMap: ids are what the user chose, never positions).
        """
        from ._selectors import remove_selected

        with self._lock.write():
            return remove_selected(self._store, ids)

    def reset(self) -> None:
        """Remove all vectors; the trained quantizer is kept."""
        with self._lock.write():
            self._store.reset()

    def _check_trained(self, what: str) -> None:
        if self._quantizer is None:
            raise RuntimeError(f"{what}: the index is not trained (is_trained = False); call train(x) first")


def _is_faiss_search_parameters(params) -> bool:
    # Checked by module name first, so that faiss is not imported for drqindex's own parameters.
    if not type(params).__module__.startswith("faiss"):
        return False
    import faiss
    return isinstance(params, faiss.SearchParameters)


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
