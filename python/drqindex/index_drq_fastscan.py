"""IndexDRQFastScan: sequential 4-bit codes scanned with SIMD byte shuffles (faiss "fast scan" style).

Model: M iterations of K = 16 codewords, one (16, d) codebook PER iteration (residual style, trained
by drqindex.train.rq4: greedy, then least squares over all prefixes). A single shared 16-entry
codebook with per-iteration scales (the 8-bit DRQ design) was measured far weaker here; see
train/rq4.py. Codes are produced greedily, so the first m codes of a vector are its m-iteration
code: encode once with M, search with any m <= M.

Storage per vector: ceil(M / 2) code bytes (two 4-bit codes per byte) plus, for L2, one byte per
stored prefix: ||xhat_m||^2 quantised to 8 bits (uniform levels between the min and max seen at
training time). The norm byte of prefix m is read beside the code bytes and added to the uint16
sums as level x (a per-query 16-bit factor), not through uint8 tables. Bytes SCANNED per vector
by a search at m iterations: ceil(m / 2) (+1 for L2). Inner product needs no norm byte.

Search path (all in the core, per group of up to 128 queries inside its parallel region): float
tables (q . C_j: fused multiply-adds over the codebooks stored transposed, csrc/drq/fastscan_tables.h;
no BLAS call, so no BLAS threads compete with the scan's workers) -> quantised to uint8: each
code byte's two tables get the scale a 2^e_p, the finest power of two over the widest table's
that fits 0..255 (residual tables shrink with the iteration), and the kernel's Horner shifts bring all bytes to one scale -> uint16 sums by the
kernel (scalar / AVX2 / AVX-512 BW, chosen at run time, up to 4 queries per code load), plus the
norm level x factor, saturating -> the best max(k, rerank) by uint16 sum (ties: storage order)
-> with rerank > 0 those candidates are re-ranked by their exact float-table sums (same codes,
same 8-bit norm) -> distances sign * (bias + sum).

Quantisation history (Fashion-MNIST 60k / 10k, 10-R@10 without re-ranking at 32 / 64 bytes
scanned; faiss IndexPQFastScan 0.499 / 0.662): the norm as two uint8 tables sharing the code
tables' scale (the norms span ~3e7, 2x the first table's range) 0.317 / 0.283; norm outside the
tables 0.48 / 0.46 (1k-query simulation); plus per-byte power-of-two scales 0.618 / 0.686.
"""
from __future__ import annotations

import numpy as np

from . import _core, _validate
from ._locks import ReadWriteLock
from .metrics import METRIC_INNER_PRODUCT, METRIC_L2
from .params import SearchParametersDRQ

_FLT_MAX = np.finfo(np.float32).max
_MAX_ITERS = 254  # csrc/drq/fastscan_codes.h kFastScanMaxIters (uint16 sums cannot overflow)


class IndexDRQFastScan:
    """Flat index over 4-bit sequential codes with SIMD fast scan.

    d: dimension; iters: M, the number of 4-bit iterations (M / 2 code bytes per vector);
    metric: METRIC_L2 or METRIC_INNER_PRODUCT; norm_prefixes (L2 only): prefix lengths whose
    quantised norm is stored (1 byte each per vector) and which can therefore be searched; None =
    every even m and M (any whole number of bytes); rerank: default number of candidates re-ranked
    with exact float tables (0 = report the quantised estimate, as faiss's fast-scan indexes do);
    train_config: a drqindex.train.RQ4TrainConfig or a dict of its fields (iters taken from here).
    """

    def __init__(self, d: int, iters: int = 16, metric: int = METRIC_L2, *, norm_prefixes=None,
                 rerank: int = 0, train_config=None, verbose: bool = False):
        self.d = _validate.positive_int(d, "d")
        self.iters = _validate.positive_int(iters, "iters", upper=_MAX_ITERS)
        self.metric_type = _validate.metric_value(metric)
        self.rerank = _rerank_value(rerank)
        if self.metric_type == METRIC_INNER_PRODUCT:
            prefixes = []
        elif norm_prefixes is None:
            prefixes = sorted(set(range(2, self.iters + 1, 2)) | {self.iters})
        else:
            prefixes = sorted({_validate.positive_int(m, "norm_prefixes", upper=self.iters) for m in norm_prefixes})
            if not prefixes:
                raise ValueError("norm_prefixes: an L2 index needs at least one searchable prefix length")
        self.norm_prefixes = tuple(prefixes)
        self.train_config = train_config
        self.verbose = bool(verbose)
        self.train_info: dict | None = None
        self.codebooks: np.ndarray | None = None      # float32 (M, 16, d)
        self.norm_min: np.ndarray | None = None       # float32 (len(norm_prefixes),)
        self.norm_step: np.ndarray | None = None      # float32 (len(norm_prefixes),)
        self._store = _core.FastScanStore(self.iters, len(self.norm_prefixes))
        self._lock = ReadWriteLock()

    # ---------------------------------------------------------------- properties
    @property
    def is_trained(self) -> bool:
        return self.codebooks is not None

    @property
    def ntotal(self) -> int:
        return self._store.ntotal

    @property
    def code_size(self) -> int:
        """Bytes STORED per vector: ceil(M / 2) code bytes + one norm byte per stored prefix (L2)."""
        return (self.iters + 1) // 2 + len(self.norm_prefixes)

    def bytes_scanned(self, iters: int | None = None) -> int:
        """Bytes a search with `iters` iterations reads per vector: ceil(iters / 2) + 1 norm byte (L2)."""
        m = _validate.iters_value(iters, self.iters)
        return (m + 1) // 2 + (1 if self.metric_type == METRIC_L2 else 0)

    def __reduce__(self):
        # pickle / copy.deepcopy go through the documented file format (drqindex.io, kind 5), as
        # IndexDRQ does: the pickle holds one bytes object, never the C++ store.
        from . import io as _io
        return (_io._index_from_bytes, (_io.serialize_index(self).tobytes(),))

    def __repr__(self):
        metric = "L2" if self.metric_type == METRIC_L2 else "IP"
        return (f"IndexDRQFastScan(d={self.d}, iters={self.iters}, metric={metric}, ntotal={self.ntotal}, "
                f"is_trained={self.is_trained})")

    # ---------------------------------------------------------------- training
    def train(self, x) -> None:
        """Trains the per-iteration codebooks (drqindex.train.rq4) and the norm quantisers."""
        from .train.rq4 import RQ4TrainConfig, train_rq4
        x = _validate.float_matrix(x, self.d)
        cfg = self.train_config
        if cfg is None:
            cfg = RQ4TrainConfig(iters=self.iters, verbose=self.verbose)
        elif isinstance(cfg, dict):
            cfg = RQ4TrainConfig(**{**cfg, "iters": self.iters})
        else:
            import dataclasses
            cfg = dataclasses.replace(cfg, iters=self.iters)
        codebooks, info = train_rq4(x, cfg)
        sample = x[:min(x.shape[0], 20000)]
        with self._lock.write():
            self._set_model_locked(codebooks, sample)
            self.train_info = info

    def set_codebooks(self, codebooks, x_norm_sample) -> None:
        """Installs trained codebooks float32 (M, 16, d); the norm quantisers are fitted on the
        reconstructions of x_norm_sample (float32 (n, d)). For tests and loading."""
        codebooks = np.ascontiguousarray(codebooks, dtype=np.float32)
        if codebooks.shape != (self.iters, 16, self.d):
            raise ValueError(f"codebooks: expected ({self.iters}, 16, {self.d}) float32, got {codebooks.shape}")
        # Finite: besides meaningless tables, the AVX2 table kernel skips zero query coordinates,
        # which equals the reference only for finite entries (0 * inf; csrc/drq/fastscan_tables.h).
        if not np.isfinite(codebooks).all():
            raise ValueError("codebooks: expected finite values")
        sample = _validate.float_matrix(x_norm_sample, self.d)
        with self._lock.write():
            self._set_model_locked(codebooks, sample)

    def _set_model_locked(self, codebooks: np.ndarray, sample: np.ndarray) -> None:
        if self._store.ntotal:
            raise RuntimeError("train: the index already holds vectors encoded with the old model; reset() first")
        self.codebooks = codebooks
        if self.norm_prefixes:
            norms = self._prefix_norms(self._encode(sample))
            lo, hi = norms.min(axis=0), norms.max(axis=0)
            # 2 % margin each side: database vectors slightly outside the training range still
            # get distinct levels; beyond it they are clamped.
            pad = 0.02 * (hi - lo) + 1e-6
            self.norm_min = (lo - pad).astype(np.float32)
            self.norm_step = ((hi - lo + 2 * pad) / 255.0).astype(np.float32)
        else:
            self.norm_min = np.zeros(0, np.float32)
            self.norm_step = np.zeros(0, np.float32)

    # ---------------------------------------------------------------- encoding
    def _encode(self, x: np.ndarray) -> np.ndarray:
        from .train.rq4 import encode_rq4
        return encode_rq4(x, self.codebooks)

    def _prefix_norms(self, codes: np.ndarray) -> np.ndarray:
        """||xhat_m||^2 for each stored prefix m: float32 (n, len(norm_prefixes))."""
        out = np.empty((codes.shape[0], len(self.norm_prefixes)), np.float32)
        want = {m: s for s, m in enumerate(self.norm_prefixes)}
        for start in range(0, codes.shape[0], 8192):
            block = codes[start:start + 8192]
            xhat = np.zeros((block.shape[0], self.d), np.float32)
            for j in range(self.iters):
                xhat += self.codebooks[j][block[:, j]]
                if j + 1 in want:
                    out[start:start + block.shape[0], want[j + 1]] = np.einsum("ij,ij->i", xhat, xhat)
        return out

    def _norm_codes(self, codes: np.ndarray) -> np.ndarray:
        if not self.norm_prefixes:
            return np.zeros((codes.shape[0], 0), np.uint8)
        norms = self._prefix_norms(codes)
        levels = np.rint((norms - self.norm_min) / self.norm_step)
        return np.clip(levels, 0, 255).astype(np.uint8)

    def sa_encode(self, x) -> np.ndarray:
        """4-bit codes, unpacked: uint8 (n, M) with values 0..15."""
        self._check_trained("sa_encode")
        return self._encode(_validate.float_matrix(x, self.d))

    def sa_decode(self, codes, iters: int | None = None) -> np.ndarray:
        from .train.rq4 import decode_rq4
        self._check_trained("sa_decode")
        codes = _validate.codes_matrix(codes, self.iters)
        if codes.size and codes.max() > 15:
            raise ValueError(f"codes: expected 4-bit values 0..15, got {int(codes.max())}")
        return decode_rq4(codes, self.codebooks, _validate.iters_value(iters, self.iters))

    # ---------------------------------------------------------------- adding
    def add(self, x) -> None:
        self._check_trained("add")
        x = _validate.float_matrix(x, self.d)
        with self._lock.write():
            start = self._next_id_locked()
            self._add_locked(x, np.arange(start, start + x.shape[0], dtype=np.int64))

    def add_with_ids(self, x, ids) -> None:
        self._check_trained("add_with_ids")
        x = _validate.float_matrix(x, self.d)
        ids = _validate.ids_array(ids, x.shape[0])
        with self._lock.write():
            self._add_locked(x, ids)

    def _next_id_locked(self) -> int:
        # faiss's sequential ids: add() numbers vectors ntotal, ntotal + 1, ...
        return self._store.ntotal

    def _add_locked(self, x: np.ndarray, ids: np.ndarray) -> None:
        codes = self._encode(x)
        self._store.add(codes, self._norm_codes(codes), ids)

    def get_ids(self) -> np.ndarray:
        return self._store.get_ids()

    # ---------------------------------------------------------------- searching
    def search(self, x, k, *, params: SearchParametersDRQ | None = None, iters: int | None = None,
               rerank: int | None = None, D=None, I=None):
        """k nearest neighbours of float32 (n, d) queries using the first `iters` 4-bit codes.

        Returns D float32 (n, k) (squared L2 ascending / inner product descending) and I int64 (n, k),
        -1 (D = +/-FLT_MAX) past the available results. rerank: candidates re-ranked with exact float
        tables (None: index.rerank; 0: none). For L2, iters must be one of norm_prefixes.
        """
        self._check_trained("search")
        x = _validate.float_matrix(x, self.d)
        k = _validate.positive_int(k, "k")
        m = self._search_iters(params, iters)
        rr = self.rerank if rerank is None else _rerank_value(rerank)
        if self.metric_type == METRIC_L2 and m not in self.norm_prefixes:
            raise ValueError(f"iters={m}: this L2 index stores the norm of prefixes {list(self.norm_prefixes)} only; "
                             f"search with one of them (or build with norm_prefixes including {m})")
        n = x.shape[0]
        D = _validate.output_array(D, (n, k), np.float32, "D")
        I = _validate.output_array(I, (n, k), np.int64, "I")
        with self._lock.read():
            ntotal = self.ntotal
            if ntotal == 0:
                raise RuntimeError("search: the index is empty (ntotal = 0); add vectors before searching")
            allowed = None
            sel = getattr(params, "sel", None)
            if sel is not None:
                from ._selectors import selection_mask
                allowed = selection_mask(sel, self._store.get_ids(), "params.sel").view(np.uint8)
            k_core = min(k, ntotal)
            pad = _FLT_MAX if self.metric_type == METRIC_L2 else -_FLT_MAX
            bias, slot = self._query_bias(x, m)
            step = float(self.norm_step[slot]) if slot >= 0 else 0.0
            # One core call for all queries: it computes each query group's float tables itself
            # (no nq x m x 16 buffer here), so chunking would only add thread start-ups.
            Dc, Ic = _core.fastscan_search(self._store, None, bias,
                                           1.0 if self.metric_type == METRIC_L2 else -1.0,
                                           m, slot, k_core, rr, allowed, norm_step=step,
                                           queries=x, codebooks=self._packed_codebooks())
            Dc[Ic == -1] = pad
            D[:, :k_core] = Dc
            I[:, :k_core] = Ic
            if k_core < k:
                D[:, k_core:] = pad
                I[:, k_core:] = -1
        return D, I

    def _query_bias(self, xq: np.ndarray, m: int):
        """Per-query bias (nq,) and norm slot (-1: none): ||q||^2 + norm_min for L2, 0 for IP.

        The norm is not a table: the core adds level * norm_step[slot] (fastscan_search.h)."""
        if self.metric_type == METRIC_L2:
            slot = self.norm_prefixes.index(m)
            return (np.einsum("ij,ij->i", xq, xq) + self.norm_min[slot]).astype(np.float32), slot
        return np.zeros(xq.shape[0], np.float32), -1

    def _query_tables(self, xq: np.ndarray, m: int):
        """Float code tables in kernel order (nq, 2 ceil(m/2), 16), bias (nq,), norm slot (-1: none),
        as the core computes them (same kernel, same bits); for tests and inspection."""
        nbytes = (m + 1) // 2
        tables = np.zeros((xq.shape[0], 2 * nbytes, 16), np.float32)
        tables[:, :m] = _core.fastscan_tables(_simd_level_name(), xq, self._packed_codebooks(), m)
        bias, slot = self._query_bias(xq, m)
        return tables, bias, slot

    def _packed_codebooks(self) -> np.ndarray:
        """factor * codebooks as float32 (M, d, 16): iteration j's codebook transposed, factor -2
        (L2) or -1 (IP) folded in (csrc/drq/fastscan_tables.h). Cached per model."""
        codebooks = self.codebooks
        cached = self.__dict__.get("_packed_cb")
        # Identity check on the codebooks object: a new model (set_codebooks, load) never reuses it.
        if cached is None or cached[0] is not codebooks:
            factor = np.float32(-2.0 if self.metric_type == METRIC_L2 else -1.0)
            packed = np.ascontiguousarray((factor * codebooks).transpose(0, 2, 1), dtype=np.float32)
            cached = (codebooks, packed)
            self.__dict__["_packed_cb"] = cached  # one tuple assignment: safe for concurrent searches
        return cached[1]

    def _search_iters(self, params, iters) -> int:
        if params is not None:
            if not isinstance(params, SearchParametersDRQ):
                raise TypeError(f"params: expected drqindex.SearchParametersDRQ, got {type(params).__name__}")
            if iters is not None and params.iters is not None and iters != params.iters:
                raise ValueError(f"iters: given both as iters={iters} and params.iters={params.iters}; pass one")
            if iters is None:
                iters = params.iters
        return _validate.iters_value(iters, self.iters)

    # ---------------------------------------------------------------- removing
    def remove_ids(self, ids) -> int:
        """Removes every stored vector whose id is selected (int array or faiss.IDSelector)."""
        from ._selectors import remove_selected
        with self._lock.write():
            return remove_selected(self._store, ids)

    def reset(self) -> None:
        """Removes all vectors; the trained model is kept."""
        with self._lock.write():
            self._store.reset()

    def _check_trained(self, what: str) -> None:
        if self.codebooks is None:
            raise RuntimeError(f"{what}: the index is not trained (is_trained = False); call train(x) first")


def _simd_level_name() -> str:
    from . import simd_level
    return simd_level()


def _rerank_value(rerank) -> int:
    if isinstance(rerank, (bool, np.bool_)) or not isinstance(rerank, (int, np.integer)) or rerank < 0:
        raise ValueError(f"rerank: expected an int >= 0, got {rerank!r}")
    return int(rerank)
