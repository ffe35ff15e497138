"""IndexIVFDRQ: inverted lists of sequential DRQ codes behind any faiss coarse quantizer.

    quantizer = faiss.IndexFlatL2(d)                 # or faiss.IndexHNSWFlat(d, 32), IndexFlatIP
    index = drqindex.IndexIVFDRQ(quantizer, d, nlist=1024, iters=16)
    index.train(xt); index.add(xb)
    D, I = index.search(xq, 10, params=drqindex.SearchParametersIVFDRQ(nprobe=16, iters=8))

Vectors are encoded by residual (x - c_l, c_l the centroid of the list x is assigned to), as
faiss's IVF-PQ. A query's path: coarse quantizer search (nprobe lists, with ||q - c_l||^2) ->
one table T = q C^T (BLAS, once per query, shared by every probed list and every iteration) ->
_core.ivf_search (GIL released; the SIMD ADC kernel; top-k over the probed lists).

Tables and norms (the design choice): with r^_m the m-iteration reconstruction of the residual,
    ||q - c_l - r^_m||^2 = ||q - c_l||^2 + (||r^_m||^2 + 2 <c_l, r^_m>) - 2 <q, r^_m>.
The middle term depends only on the stored vector and the prefix m, so it is computed once at
add time (float64, stored as float32 per prefix, in place of the flat index's ||x^_m||^2), the
first term is the coarse quantizer's own distance, and only <q, r^_m> = sum_j s_j T[b_j] is
scanned, with the single per-query table. This is IVF-PQ's "precomputed tables" decomposition;
with a shared codebook it needs no per-list table at search time at all (IVF-PQ needs an
nlist x M x K table or a per-list table build), and it is exact with respect to the codes.
Its cost is memory: one float per stored prefix (4 M bytes per vector) beside the M code bytes;
a scan at prefix m reads m code bytes and one float per vector.

Per-iteration codebooks (codebooks="per_iteration": one (K, d) codebook C_j per iteration): the
same decomposition with <q, r^_m> = sum_{j<m} s_j T_j[b_j], T_j = q C_j^T, so a query has m tables
(one BLAS product for the batch, only the m iterations searched) that still serve every probed
list; the stored term uses <c_l, r^_m> = sum_{j<m} s_j <c_l, C_j[b_j]>, computed at add time
from per-list tables c_l C_j^T (float64 GEMM over the lists of the batch, in blocks, never a
stored nlist x M x K table) when the batch has many vectors per list, else by gathering each
vector's codewords (O(M d) per vector).
"""
from __future__ import annotations

import numpy as np

from . import _core, _validate
from ._locks import ReadWriteLock
from .metrics import METRIC_INNER_PRODUCT, METRIC_L2
from .params import SearchParametersIVFDRQ
from .quantizer import QUERY_CHUNK, DRQQuantizer

_FLT_MAX = np.finfo(np.float32).max
_ADD_CHUNK = 65536
# Per-iteration query tables are (chunk, m, K) float32: bound them to about this many bytes.
_TABLE_BYTES = 16 << 20
# add() with per-iteration codebooks: rows per distinct list from which the terms' <c_l, r^_m>
# come from per-list tables (a float64 GEMM) instead of per-row codeword gathers, and the
# size bound of that GEMM's float64 blocks (codebook slice and table).
_TERMS_GEMM_ROWS_PER_LIST = 8
_TERMS_BLOCK_BYTES = 32 << 20


class IndexIVFDRQ:
    """Inverted-file index over DRQ codes of residuals: M bytes per vector, any prefix searchable.

    quantizer: the coarse quantizer, any faiss index with nlist centroids once trained
    (IndexFlatL2 / IndexFlatIP / IndexHNSWFlat ...), untrained and empty (train() runs k-means and
    adds the centroids) or already holding exactly nlist centroids. d: dimension; nlist: number of
    lists; iters: M, iterations (bytes) per vector; metric: METRIC_L2 or METRIC_INNER_PRODUCT (must
    match the coarse quantizer's); codebooks: "shared" (one (256, d) codebook for every iteration,
    the faithful DRQ) or "per_iteration" (one (256, d) codebook per iteration), as IndexDRQ;
    train_config: as IndexDRQ (DRQTrainConfig or dict; iters and codebooks are taken from here),
    used to train the DRQ quantizer on the residuals.

    Search-time knobs, per call (params=SearchParametersIVFDRQ(nprobe=..., iters=...)) or as
    attributes: index.nprobe (default 1, as faiss) and index.search_iters (None = all M).
    """

    def __init__(self, quantizer, d: int, nlist: int, iters: int = 16, metric: int = METRIC_L2, *,
                 codebooks: str = "shared", train_config=None, verbose: bool = False):
        self.d = _validate.positive_int(d, "d")
        self.nlist = _validate.positive_int(nlist, "nlist", upper=1 << 24)
        self.iters = _validate.positive_int(iters, "iters", upper=1024)
        self.metric_type = _validate.metric_value(metric)
        self.codebooks = _validate.codebooks_value(codebooks)
        _check_coarse(quantizer, self.d, self.metric_type)
        self.quantizer = quantizer
        self.train_config = train_config
        self.verbose = bool(verbose)
        self.train_info: dict | None = None
        self._nprobe = 1
        self._search_iters: int | None = None
        self._drq: DRQQuantizer | None = None
        self._centroids: np.ndarray | None = None     # (nlist, d) float32
        self._list_tables: np.ndarray | None = None   # shared codebook only: (nlist, K) float64, c_l C^T
        self._store = _core.IVFStore(self.nlist, self.iters)
        self._lock = ReadWriteLock()

    # ---------------------------------------------------------------- properties
    @property
    def is_trained(self) -> bool:
        return self._drq is not None

    @property
    def ntotal(self) -> int:
        return self._store.ntotal

    @property
    def nprobe(self) -> int:
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value) -> None:
        self._nprobe = _validate.positive_int(value, "nprobe", upper=self.nlist)

    @property
    def search_iters(self) -> int | None:
        """Default prefix length for searches (None = all M iterations)."""
        return self._search_iters

    @search_iters.setter
    def search_iters(self, value) -> None:
        self._search_iters = None if value is None else _validate.iters_value(value, self.iters)

    @property
    def code_size(self) -> int:
        return self.iters

    @property
    def drq_quantizer(self) -> DRQQuantizer:
        self._check_trained("use the DRQ quantizer")
        return self._drq

    @property
    def centroids(self) -> np.ndarray:
        self._check_trained("read the centroids")
        return self._centroids

    def memory_usage(self) -> int:
        """Bytes held by the inverted lists: codes (block padding included), per-prefix floats, ids."""
        return int(self._store.memory_usage())

    def bytes_per_vector(self, iters: int | None = None) -> int:
        """Bytes stored per vector that a search with `iters` iterations reads: code bytes, plus
        for L2 the float32 term of that prefix, plus the int64 id."""
        m = _validate.iters_value(iters, self.iters)
        return m + (4 if self.metric_type == METRIC_L2 else 0) + 8

    def list_sizes(self) -> np.ndarray:
        return self._store.list_sizes()

    def get_list(self, list_no: int):
        """(codes uint8 (n, M), terms float32 (n, M), ids int64 (n,)) of one inverted list."""
        if isinstance(list_no, (bool, np.bool_)) or not isinstance(list_no, (int, np.integer)) \
                or not 0 <= int(list_no) < self.nlist:
            raise ValueError(f"list_no: expected an int in 0..{self.nlist - 1}, got {list_no!r}")
        list_no = int(list_no)
        return self._store.get_list(list_no)

    def __reduce__(self):
        from . import io as _io
        return (_io._index_from_bytes, (_io.serialize_index(self).tobytes(),))

    def __repr__(self):
        metric = "L2" if self.metric_type == METRIC_L2 else "IP"
        cb = "" if self.codebooks == "shared" else f", codebooks={self.codebooks!r}"
        return (f"IndexIVFDRQ(d={self.d}, nlist={self.nlist}, iters={self.iters}, metric={metric}{cb}, "
                f"nprobe={self.nprobe}, is_trained={self.is_trained}, ntotal={self.ntotal})")

    # ---------------------------------------------------------------- training
    def train(self, x) -> None:
        """Train the coarse quantizer (faiss k-means, unless it already holds nlist centroids),
        then the DRQ quantizer (torch) on the residuals x - c_assign(x)."""
        x = _validate.float_matrix(x, self.d)
        need = max(256, self.nlist)
        if x.shape[0] < need:
            raise ValueError(f"x: expected at least {need} training vectors (max(256 codewords, nlist={self.nlist})), "
                             f"got {x.shape[0]}")
        with self._lock.write():
            if self.ntotal:
                raise RuntimeError(f"train: the index already holds {self.ntotal} vectors; reset() first")
            self._train_coarse(x)
            centroids = _coarse_centroids(self.quantizer, self.nlist)
            assign = _assign(self.quantizer, x)
            residuals = x - centroids[assign]
            from .train.drq import DRQTrainConfig, train_drq  # torch only here

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
                import dataclasses
                cfg = dataclasses.replace(cfg, verbose=True)
            codebook, scales, info = train_drq(np.ascontiguousarray(residuals, dtype=np.float32), cfg)
            self._set_trained(centroids, DRQQuantizer(codebook, scales))
            self.train_info = info

    def _train_coarse(self, x: np.ndarray) -> None:
        q = self.quantizer
        if q.ntotal == self.nlist and q.is_trained:
            return
        if q.ntotal != 0:
            raise RuntimeError(f"train: the coarse quantizer holds {q.ntotal} vectors, expected 0 (to be trained) "
                               f"or nlist={self.nlist}")
        import faiss
        kmeans = faiss.Kmeans(self.d, self.nlist, niter=20, seed=1234, verbose=self.verbose,
                              spherical=self.metric_type == METRIC_INNER_PRODUCT)
        kmeans.train(x)
        if not q.is_trained:
            q.train(kmeans.centroids)
        q.add(kmeans.centroids)

    def set_quantizers(self, drq_quantizer: DRQQuantizer, centroids=None) -> None:
        """Use an already trained DRQ quantizer (of residuals; shared or per-iteration codebooks, which
        sets index.codebooks) and, when `centroids` (nlist, d) float32 is given, add them to the
        (empty) coarse quantizer; otherwise the coarse quantizer must already hold nlist centroids.
        No torch needed."""
        if not isinstance(drq_quantizer, DRQQuantizer):
            raise TypeError(f"drq_quantizer: expected a drqindex.DRQQuantizer, got {type(drq_quantizer).__name__}")
        with self._lock.write():
            if self.ntotal:
                raise RuntimeError(f"set_quantizers: the index already holds {self.ntotal} vectors; reset() first")
            if drq_quantizer.d != self.d or drq_quantizer.M != self.iters:
                raise ValueError(f"drq_quantizer: expected d={self.d}, M={self.iters}, got d={drq_quantizer.d}, "
                                 f"M={drq_quantizer.M}")
            if centroids is not None:
                centroids = _validate.float_matrix(centroids, self.d, "centroids")
                if centroids.shape[0] != self.nlist:
                    raise ValueError(f"centroids: expected shape ({self.nlist}, {self.d}), got {centroids.shape}")
                if self.quantizer.ntotal:
                    raise RuntimeError(f"set_quantizers: the coarse quantizer already holds {self.quantizer.ntotal} "
                                       "vectors; pass centroids=None to use them")
                if not self.quantizer.is_trained:
                    self.quantizer.train(centroids)
                self.quantizer.add(centroids)
            self._set_trained(_coarse_centroids(self.quantizer, self.nlist), drq_quantizer)

    def _set_trained(self, centroids: np.ndarray, drq: DRQQuantizer) -> None:
        self._centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        # Per-iteration codebooks: no (nlist, M, K) table (it can be large); _terms gathers instead.
        self._list_tables = None if drq.per_iteration else \
            self._centroids.astype(np.float64) @ drq.codebook.T.astype(np.float64)
        self._drq = drq
        self.codebooks = drq.form

    # ---------------------------------------------------------------- adding
    def add(self, x) -> None:
        """Assign, encode (by residual) and add float32 (n, d) vectors; ids ntotal, ntotal + 1, ..."""
        self._check_trained("add")
        x = _validate.float_matrix(x, self.d)
        with self._lock.write():
            ids = np.arange(self.ntotal, self.ntotal + x.shape[0], dtype=np.int64)
            self._add_locked(x, ids)

    def add_with_ids(self, x, ids) -> None:
        """As add, with caller-chosen int64 ids (n,)."""
        self._check_trained("add_with_ids")
        x = _validate.float_matrix(x, self.d)
        ids = _validate.ids_array(ids, x.shape[0])
        with self._lock.write():
            self._add_locked(x, ids)

    def encode_vectors(self, x: np.ndarray):
        """(list_nos int64 (n,), codes uint8 (n, M), terms float32 (n, M)) of validated float32 rows:
        what add() stores (see the module docstring for terms)."""
        assign = _assign(self.quantizer, x)
        residuals = np.ascontiguousarray(x - self._centroids[assign], dtype=np.float32)
        codes, norms = self._drq.encode(residuals)
        if self.metric_type == METRIC_L2:
            terms = self._terms(assign, codes, norms)
        else:
            terms = norms  # not read by inner-product searches
        return assign, codes, terms

    def _terms(self, assign: np.ndarray, codes: np.ndarray, norms: np.ndarray) -> np.ndarray:
        # ||r^_m||^2 + 2 <c_l, r^_m>, with <c_l, r^_m> = sum_{j<m} s_j <c_l, C_j[b_j]> in float64:
        # shared codebook, gathered from the per-list table (c_l C^T)[b_j]; per-iteration
        # codebooks, from the codewords themselves (prefix_inner_products, O(M d) per vector).
        if self._drq.per_iteration:
            cross = self._per_iteration_cross(assign, codes)
        else:
            cross = self._list_tables[assign[:, None], codes] * self._drq.scales.astype(np.float64)[None, :]
            np.cumsum(cross, axis=1, out=cross)
        return np.ascontiguousarray(norms.astype(np.float64) + 2.0 * cross, dtype=np.float32)

    def _per_iteration_cross(self, assign: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """<c_l, r^_m> for m = 1..M of rows in lists assign (n,) with uint8 codes (n, M): float64 (n, M).

        Gathering each row's M codewords costs O(M d) per row at numpy's gather speed (the
        bottleneck of add() at scale). When the rows are many per list, one float64 GEMM
        c_L C^T per block of lists and iterations (M K entries per list, BLAS speed) followed by
        a gather of M entries per row is far cheaper; both are float64 sums of the same products."""
        drq = self._drq
        lists, inverse = np.unique(assign, return_inverse=True)
        if codes.shape[0] < _TERMS_GEMM_ROWS_PER_LIST * lists.size:
            return drq.prefix_inner_products(self._centroids[assign], codes)
        M, K, d = drq.M, drq.K, drq.d
        order = np.argsort(inverse, kind="stable")  # rows grouped by list
        bounds = np.searchsorted(inverse[order], np.arange(lists.size + 1))
        iter_block = max(1, _TERMS_BLOCK_BYTES // (K * d * 8))        # float64 codebook block
        list_block = max(1, _TERMS_BLOCK_BYTES // (iter_block * K * 8))  # float64 table block
        centroids = self._centroids[lists].astype(np.float64)
        out = np.empty(codes.shape, np.float64)
        for j0 in range(0, M, iter_block):
            j1 = min(M, j0 + iter_block)
            codewords = drq.codebook[j0:j1].reshape((j1 - j0) * K, d).astype(np.float64)
            offsets = np.arange(j1 - j0, dtype=np.intp) * K
            for l0 in range(0, lists.size, list_block):
                l1 = min(lists.size, l0 + list_block)
                table = centroids[l0:l1] @ codewords.T  # (l1 - l0, (j1 - j0) K): <c_l, C_j[k]>
                rows = order[bounds[l0]:bounds[l1]]
                cols = codes[rows, j0:j1].astype(np.intp) + offsets[None, :]
                out[rows, j0:j1] = table[(inverse[rows] - l0)[:, None], cols]
        out *= drq.scales.astype(np.float64)[None, :]
        np.cumsum(out, axis=1, out=out)
        return out

    def _add_locked(self, x: np.ndarray, ids: np.ndarray) -> None:
        n = x.shape[0]
        if n == 0:
            return
        # Encode everything first: an error or Ctrl-C while encoding leaves the index as it was.
        parts = [self.encode_vectors(x[s:s + _ADD_CHUNK]) for s in range(0, n, _ADD_CHUNK)]
        assign = np.concatenate([p[0] for p in parts])
        codes = np.concatenate([p[1] for p in parts])
        terms = np.concatenate([p[2] for p in parts])
        self._store.add(codes, terms, ids, assign)

    def _append_encoded(self, codes, terms, ids, list_nos) -> None:
        """Append already encoded vectors as they are (read_index)."""
        with self._lock.write():
            if codes.shape[0]:
                self._store.add(codes, terms, ids, list_nos)

    # ---------------------------------------------------------------- searching
    def search(self, x, k, *, params=None, nprobe: int | None = None, iters: int | None = None, D=None, I=None):
        """k nearest neighbours of float32 (n, d) queries among the vectors of the nprobe lists
        nearest to each query, using the first `iters` bytes of each code.

        Returns D float32 (n, k) (squared L2 ascending / inner products descending) and I int64
        (n, k), -1 (with D = +/-FLT_MAX) where fewer than k vectors are found.
        params: SearchParametersIVFDRQ(nprobe=..., iters=..., sel=...) or a faiss.SearchParametersIVF
        / faiss.SearchParameters (nprobe, sel); nprobe / iters keywords; else index.nprobe and
        index.search_iters.
        """
        self._check_trained("search")
        x = _validate.float_matrix(x, self.d)
        k = _validate.positive_int(k, "k")
        nprobe, m, sel = self._search_knobs(params, nprobe, iters)
        n = x.shape[0]
        D = _validate.output_array(D, (n, k), np.float32, "D")
        I = _validate.output_array(I, (n, k), np.int64, "I")
        pad = _FLT_MAX if self.metric_type == METRIC_L2 else -_FLT_MAX
        with self._lock.read():
            ntotal = self.ntotal
            if ntotal == 0:
                raise RuntimeError("search: the index is empty (ntotal = 0); add vectors before searching")
            allowed = None
            if sel is not None:
                from ._selectors import selection_mask
                allowed = selection_mask(sel, self._store.get_ids(), "params.sel").view(np.uint8)
            k_core = min(k, ntotal)
            metric = 0 if self.metric_type == METRIC_L2 else 1
            per_iteration = self._drq.per_iteration
            chunk = QUERY_CHUNK
            if per_iteration:
                chunk = int(np.clip(_TABLE_BYTES // (m * self._drq.K * 4), 1, QUERY_CHUNK))
            # The coarse search of the whole batch first, then tables + scan chunk by chunk: one
            # faiss call instead of one per chunk, and no alternation between faiss's thread
            # pools and numpy's BLAS pool (whose threads still spin after a table product, which
            # doubled the coarse search's time when the two alternated: 22.8 vs 10.5 us per
            # query, Fashion-MNIST, nlist 1024, 2 threads).
            coarse_all, lists_all = self.quantizer.search(x, nprobe)
            coarse_all = np.ascontiguousarray(coarse_all, dtype=np.float32)
            lists_all = np.ascontiguousarray(lists_all, dtype=np.int64)
            for start in range(0, n, chunk):
                xq = x[start:start + chunk]
                coarse = coarse_all[start:start + chunk]
                lists = lists_all[start:start + chunk]
                if per_iteration:
                    # (nq, m, K): only the m iterations this search reads.
                    tables = self._drq.query_tables(xq, m, with_norms=False)[0]
                else:
                    tables = np.ascontiguousarray(xq @ self._drq.codebook.T, dtype=np.float32)
                Dc, Ic = _core.ivf_search(self._store, tables, coarse, lists, self._drq.scales, m, k_core,
                                          metric, allowed)
                Dc[Ic == -1] = pad
                D[start:start + xq.shape[0], :k_core] = Dc
                I[start:start + xq.shape[0], :k_core] = Ic
        if k_core < k:
            D[:, k_core:] = pad
            I[:, k_core:] = -1
        return D, I

    def _search_knobs(self, params, nprobe, iters):
        sel = None
        p_nprobe = p_iters = None
        if params is not None:
            if isinstance(params, SearchParametersIVFDRQ):
                p_nprobe, p_iters, sel = params.nprobe, params.iters, params.sel
            elif type(params).__module__.startswith("faiss"):
                import faiss
                if not isinstance(params, faiss.SearchParameters):
                    raise TypeError(f"params: expected drqindex.SearchParametersIVFDRQ or a faiss.SearchParameters, "
                                    f"got {type(params).__name__}")
                if isinstance(params, faiss.SearchParametersIVF):
                    p_nprobe = int(params.nprobe)
                sel = params.sel
            else:
                raise TypeError(f"params: expected drqindex.SearchParametersIVFDRQ (or a faiss.SearchParametersIVF), "
                                f"got {type(params).__name__}")
        for name, kw, pv in (("nprobe", nprobe, p_nprobe), ("iters", iters, p_iters)):
            if kw is not None and pv is not None and kw != pv:
                raise ValueError(f"{name}: given both as {name}={kw} and params.{name}={pv}; pass one")
        nprobe = nprobe if nprobe is not None else p_nprobe
        iters = iters if iters is not None else p_iters
        nprobe = self._nprobe if nprobe is None else _validate.positive_int(nprobe, "nprobe", upper=self.nlist)
        m = _validate.iters_value(iters if iters is not None else self._search_iters, self.iters)
        return nprobe, m, sel

    # ---------------------------------------------------------------- reading back
    def reconstruct(self, key: int, iters: int | None = None) -> np.ndarray:
        """c_l + r^_m of the vector with id `key` ((d,) float32)."""
        self._check_trained("reconstruct")
        m = _validate.iters_value(iters, self.iters)
        with self._lock.read():
            sizes = self._store.list_sizes()
            ids = self._store.get_ids()
            pos = np.flatnonzero(ids == int(key))
            if pos.size == 0:
                raise KeyError(f"reconstruct: id {key} is not in the index")
            bounds = np.cumsum(sizes)
            l = int(np.searchsorted(bounds, pos[0], side="right"))
            offset = int(pos[0] - (bounds[l] - sizes[l]))
            codes = self._store.get_list(l)[0][offset:offset + 1]
        return self._centroids[l] + self._drq.decode(codes, m)[0]

    def get_ids(self) -> np.ndarray:
        """All stored ids, int64 (ntotal,), in list order."""
        return self._store.get_ids()

    # ---------------------------------------------------------------- removing
    def remove_ids(self, ids) -> int:
        """Remove every stored vector whose id is selected (1-D int array or faiss.IDSelector);
        returns how many were removed."""
        from ._selectors import remove_selected

        with self._lock.write():
            return remove_selected(self._store, ids)

    def reset(self) -> None:
        """Remove all vectors; the coarse and DRQ quantizers are kept."""
        with self._lock.write():
            self._store.reset()

    def _check_trained(self, what: str) -> None:
        if self._drq is None:
            raise RuntimeError(f"{what}: the index is not trained (is_trained = False); call train(x) first")


def _check_coarse(quantizer, d: int, metric: int) -> None:
    if not all(hasattr(quantizer, a) for a in ("search", "add", "ntotal", "d")):
        raise TypeError(f"quantizer: expected a faiss index (e.g. faiss.IndexFlatL2(d)), got {type(quantizer).__name__}")
    if int(quantizer.d) != d:
        raise ValueError(f"quantizer: expected a coarse quantizer of dimension d={d}, got d={quantizer.d}")
    qmetric = int(getattr(quantizer, "metric_type", metric))
    if qmetric != metric:
        raise ValueError(f"quantizer: expected metric_type {metric} (the index's metric), got {qmetric}")


def _coarse_centroids(quantizer, nlist: int) -> np.ndarray:
    if quantizer.ntotal != nlist:
        raise RuntimeError(f"the coarse quantizer holds {quantizer.ntotal} centroids, expected nlist={nlist}")
    return np.ascontiguousarray(quantizer.reconstruct_n(0, nlist), dtype=np.float32)


def _assign(quantizer, x: np.ndarray) -> np.ndarray:
    _, lists = quantizer.search(x, 1)
    return np.ascontiguousarray(lists[:, 0], dtype=np.int64)
