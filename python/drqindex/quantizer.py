"""The trained DRQ quantizer as plain arrays: what the trainer produces, the core consumes and
the file format stores. No torch here: encoding and search need only numpy and the C++ core.

Two forms, both sequential (the first m codes of an M-iteration code are the m-iteration code):
- shared (the faithful DRQ): codebook C is (K, d) float32, used by every iteration; scales s is
  (M,) float32, one learned factor per iteration. Iteration m uses the codewords s_m * C_k.
- per-iteration: codebook is (M, K, d) float32, one codebook per iteration (residual-quantizer
  style), scales (M,) as above (1.0 when trained by drqindex). Iteration m uses s_m * C_m[k].
  M times the parameters, and the query look-up table is M x K instead of K entries, but each
  iteration gets its own directions (see drqindex.train.per_iteration for the measurements).
  Optionally in a subspace (Subspace below): every codeword lies in mean + span(basis), basis
  (d, r) with orthonormal columns, r < d; the quantizer then keeps the r-dimensional codebooks
  and computes query tables and codes in r dimensions (the same values as the (M, K, d) codebook
  it also holds, up to float rounding), r / d of the full-dimension cost.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _core

# Rows per chunk when a large batch is encoded or searched: bounds the temporary (chunk, K)
# inner-product tables to a few MB however large the batch is.
ENCODE_CHUNK = 16384
QUERY_CHUNK = 4096
# Rows per call of the per-iteration greedy encoder (the C++ core blocks the rows for the caches
# itself): sets how often progress() is called, ~1-2 s of work per thread.
_PER_ITERATION_CHUNK = 4096


# Columns per panel of _core.inner_products' packed layout (csrc/drq/inner_products.h).
_PANEL = 16

# |basis^T basis - I| allowed in a Subspace: the r-dimensional distances equal the d-dimensional
# ones only for orthonormal columns (float32 eigenvectors are orthonormal to ~1e-6).
_ORTHONORMAL_TOL = 1e-3


class Subspace(NamedTuple):
    """Per-iteration codebooks trained in an r-dimensional subspace of R^d.

    Codeword k of iteration j is, in d dimensions, basis @ codebooks[j, k], plus mean when j == 0
    (the first codebook carries the data's mean, so every later residual lies in the subspace).
    mean float32 (d,); basis float32 (d, r), orthonormal columns; codebooks float32 (M, K, r)."""
    mean: np.ndarray
    basis: np.ndarray
    codebooks: np.ndarray


def _validated_subspace(sub: Subspace, scales: np.ndarray) -> Subspace:
    mean, basis, cbs = (np.ascontiguousarray(np.asarray(a), dtype=np.float32) for a in sub)
    if basis.ndim != 2 or mean.shape != (basis.shape[0],) or not 1 <= basis.shape[1] <= basis.shape[0]:
        raise ValueError(f"subspace: expected mean (d,) and basis (d, r) with 1 <= r <= d, got mean "
                         f"{mean.shape}, basis {basis.shape}")
    if cbs.ndim != 3 or cbs.shape[1] != 256 or cbs.shape[2] != basis.shape[1] or cbs.shape[0] != scales.shape[0]:
        raise ValueError(f"subspace: expected codebooks ({scales.shape[0]}, 256, {basis.shape[1]}) (M, K, r), "
                         f"got {cbs.shape}")
    if not (np.isfinite(mean).all() and np.isfinite(basis).all() and np.isfinite(cbs).all()):
        raise ValueError("subspace: expected finite mean, basis and codebooks, got NaN or inf")
    gram = basis.T.astype(np.float64) @ basis.astype(np.float64)
    err = float(np.abs(gram - np.eye(basis.shape[1])).max())
    if err > _ORTHONORMAL_TOL:
        raise ValueError(f"subspace: expected a basis with orthonormal columns, |basis^T basis - I| = {err:.3g}")
    return Subspace(mean, basis, cbs)


def lift_subspace(sub: Subspace) -> np.ndarray:
    """The (M, K, d) float32 codebooks of a Subspace (computed in float64, rounded once)."""
    M, K, r = sub.codebooks.shape
    lifted = sub.codebooks.reshape(M * K, r).astype(np.float64) @ sub.basis.T.astype(np.float64)
    lifted[:K] += sub.mean.astype(np.float64)
    return np.ascontiguousarray(lifted.reshape(M, K, -1), dtype=np.float32)


class DRQQuantizer:
    """Sequential codes: a codebook (shared or one per iteration) applied recurrently to the
    residual, one scalar per iteration.

    codebook: float32 (K, d) shared, (M, K, d) per iteration, or a Subspace (per iteration, in r
    dimensions; the (M, K, d) codebook is then computed from it)."""

    def __init__(self, codebook, scales: np.ndarray):
        scales = np.asarray(scales)
        self.subspace = None
        if isinstance(codebook, Subspace):
            if scales.ndim != 1 or scales.shape[0] < 1:
                raise ValueError(f"scales: expected shape (M,) with M >= 1, got {scales.shape}")
            self.subspace = _validated_subspace(codebook, scales)
            codebook = lift_subspace(self.subspace)
        codebook = np.asarray(codebook)
        if codebook.ndim not in (2, 3) or codebook.shape[-2] != 256:
            raise ValueError(f"codebook: expected shape (256, d) (shared) or (M, 256, d) (one per iteration), "
                             f"K = 256 for one byte per iteration, got {codebook.shape}")
        if scales.ndim != 1 or scales.shape[0] < 1:
            raise ValueError(f"scales: expected shape (M,) with M >= 1, got {scales.shape}")
        if codebook.ndim == 3 and codebook.shape[0] != scales.shape[0]:
            raise ValueError(f"codebook: expected one codebook per iteration, ({scales.shape[0]}, 256, d) for "
                             f"{scales.shape[0]} scales, got {codebook.shape}")
        if codebook.shape[-1] < 1:
            raise ValueError(f"codebook: expected d >= 1, got shape {codebook.shape}")
        codebook = np.ascontiguousarray(codebook, dtype=np.float32)
        scales = np.ascontiguousarray(scales, dtype=np.float32)
        if not (np.isfinite(codebook).all() and np.isfinite(scales).all()):
            raise ValueError("codebook and scales: expected finite values, got NaN or inf")
        self.codebook = codebook
        self.scales = scales
        self.per_iteration = codebook.ndim == 3
        self.gram = None
        if not self.per_iteration:
            # Gram matrix G = C C^T: with a shared codebook, each greedy step needs only G's rows
            # (O(K) per vector) once x C^T is known, instead of a fresh O(K d) distance computation.
            self.gram = np.ascontiguousarray(codebook.astype(np.float64) @ codebook.T.astype(np.float64),
                                             dtype=np.float32)
        else:
            # ||s_m C_m[k]||^2 for the greedy step, and a finiteness check like the shared Gram's.
            cn = np.einsum("mkd,mkd->mk", codebook, codebook, dtype=np.float64)
            self._scaled_sq_norms = (cn * (scales.astype(np.float64) ** 2)[:, None]).astype(np.float32)
            if not np.isfinite(self._scaled_sq_norms).all():
                raise ValueError("codebook: codeword norms overflow float32 (codebook values too large)")
            if self.subspace is not None:
                sub = self.subspace
                s64 = scales.astype(np.float64)
                cn = np.einsum("mkr,mkr->mk", sub.codebooks, sub.codebooks, dtype=np.float64)
                self._sub_scaled_sq_norms = (cn * (s64 ** 2)[:, None]).astype(np.float32)
                # For ||xhat_m||^2 = s_0^2 ||mean||^2 + 2 s_0 <mean, B y_m> + ||y_m||^2, y_m the
                # r-dimensional reconstruction: <B^T mean, C'_j[k]> per iteration and codeword.
                self._sub_mean_dots = np.einsum("mkr,r->mk", sub.codebooks.astype(np.float64),
                                                sub.basis.T.astype(np.float64) @ sub.mean.astype(np.float64))
                self._sub_mean_sq = float(s64[0] ** 2 * (sub.mean.astype(np.float64) ** 2).sum())
                # (d, 1 + r) columns: the mean, then the basis vectors: one pass over the queries
                # gives <q, mean> and B^T q, and its first 1 + r' columns the first r' coordinates.
                self._sub_projection = np.ascontiguousarray(np.hstack([sub.mean[:, None], sub.basis]),
                                                            dtype=np.float32)
                # Leading coordinates each codebook uses (its columns after them are all zero, as
                # when the trainer's per_iteration_subspace_dims is a schedule): the query tables
                # of iteration j need only <B^T q, c> over those, and B^T q only up to the largest.
                used = np.any(sub.codebooks != 0, axis=1)                      # (M, r)
                self._sub_dims = np.array([int(np.flatnonzero(u)[-1]) + 1 if u.any() else 1 for u in used],
                                          dtype=np.int64)
                # Runs of consecutive iterations with the same leading dims, each as one block of
                # columns (dims, iterations * K): (first iteration, end, dims, columns). The first
                # block has one more leading row, 1 under iteration 0's columns and 0 elsewhere,
                # matched with <q, mean> in front of B^T q: it adds the mean's term to iteration 0.
                self._sub_blocks = []
                j = 0
                while j < self.M:
                    e = j
                    while e < self.M and self._sub_dims[e] == self._sub_dims[j]:
                        e += 1
                    r_j = int(self._sub_dims[j])
                    block = sub.codebooks[j:e, :, :r_j].reshape((e - j) * self.K, r_j).T
                    if j == 0:
                        ones = np.zeros((1, e * self.K), np.float32)
                        ones[0, :self.K] = 1.0
                        block = np.vstack([ones, block])
                    block = np.ascontiguousarray(block, dtype=np.float32)
                    if self.K % _PANEL == 0:
                        # Packed once in the core's panels (P, rows, 16): a prefix of iterations is
                        # a prefix of panels, and no call repacks the block.
                        block = np.ascontiguousarray(block.reshape(block.shape[0], -1, _PANEL).transpose(1, 0, 2))
                    self._sub_blocks.append((j, e, r_j, block))
                    j = e

    @property
    def subspace_dims_per_iteration(self):
        """With a Subspace: int64 (M,), the leading basis directions each iteration's codebook
        uses (its r-dimensional codewords are zero after them; the query tables read only those).
        None otherwise."""
        return None if self.subspace is None else self._sub_dims.copy()

    @property
    def form(self) -> str:
        """'shared' or 'per_iteration' (the IndexDRQ `codebooks` argument that produces it)."""
        return "per_iteration" if self.per_iteration else "shared"

    @property
    def K(self) -> int:
        return self.codebook.shape[-2]

    @property
    def d(self) -> int:
        return self.codebook.shape[-1]

    @property
    def M(self) -> int:
        return self.scales.shape[0]

    def codewords(self, j: int) -> np.ndarray:
        """Iteration j's unscaled codebook, float32 (K, d)."""
        return self.codebook[j] if self.per_iteration else self.codebook

    def encode(self, x: np.ndarray, progress=None):
        """Greedy recurrent encoding of float32 (n, d) rows.

        Returns codes uint8 (n, M) and norms float32 (n, M) with norms[i, m-1] = ||xhat_m(i)||^2,
        the squared norm of the m-iteration reconstruction (needed for exact L2 ADC at every prefix).
        progress: optional callable(rows_done) called after each chunk.
        """
        n = x.shape[0]
        codes = np.empty((n, self.M), dtype=np.uint8)
        norms = np.empty((n, self.M), dtype=np.float32)
        chunk = _PER_ITERATION_CHUNK if self.per_iteration else ENCODE_CHUNK
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            if self.per_iteration:
                codes[start:stop], norms[start:stop] = self._encode_per_iteration(x[start:stop])
            else:
                xc = np.ascontiguousarray(x[start:stop] @ self.codebook.T, dtype=np.float32)
                codes[start:stop], norms[start:stop] = _core.encode_greedy(xc, self.gram, self.scales)
            if progress is not None:
                progress(stop - start)
        return codes, norms

    def _encode_per_iteration(self, x: np.ndarray):
        # The C++ encoder (csrc/drq/encode_per_iteration.h): the same steps as
        # _encode_per_iteration_reference, in row blocks that stay in cache while each codebook
        # streams past, multi-threaded, GIL released.
        if self.subspace is not None:
            return self._encode_in_subspace(x)
        return _core.encode_per_iteration(np.ascontiguousarray(x, dtype=np.float32), self.codebook,
                                          self.scales, self._scaled_sq_norms)

    def _encode_in_subspace(self, x: np.ndarray):
        # ||x - s_0 (mean + B c) - ...||^2 = ||P_perp (x - s_0 mean)||^2 + ||z - s_0 c - ...||^2 with
        # z = B^T (x - s_0 mean): the first term is the same for every codeword, so the greedy
        # argmins in r dimensions are those in d (ties aside), at r / d of the cost.
        sub = self.subspace
        s0 = float(self.scales[0])
        z = np.ascontiguousarray((x - s0 * sub.mean) @ sub.basis, dtype=np.float32)
        codes, ynorms = _core.encode_per_iteration(z, sub.codebooks, self.scales, self._sub_scaled_sq_norms)
        cross = self._sub_mean_dots[np.arange(self.M)[None, :], codes]       # (n, M) float64
        cross *= self.scales.astype(np.float64)[None, :]
        np.cumsum(cross, axis=1, out=cross)
        norms = ynorms.astype(np.float64) + self._sub_mean_sq + 2.0 * s0 * cross
        return codes, np.ascontiguousarray(np.maximum(norms, 0.0), dtype=np.float32)

    def _encode_per_iteration_reference(self, x: np.ndarray):
        """The numpy encoder the C++ one replaced (tests compare them; it sums the dot products
        in BLAS order, so a code may differ where two scores tie within float rounding).

        Iteration m: argmin_k ||r - s_m C_m[k]||^2 = argmin_k ||s_m C_m[k]||^2 - 2 s_m <r, C_m[k]>,
        one (n, d) x (d, K) product per iteration (BLAS). The reconstruction norms are computed
        in float64 from the reconstruction itself, as prefix_norms does for stored codes."""
        r = np.array(x, dtype=np.float32)
        xhat = np.zeros(r.shape, np.float64)
        codes = np.empty((r.shape[0], self.M), np.uint8)
        norms = np.empty((r.shape[0], self.M), np.float32)
        for m in range(self.M):
            s = float(self.scales[m])
            score = r @ self.codebook[m].T
            score *= -2.0 * s
            score += self._scaled_sq_norms[m][None, :]
            b = np.argmin(score, axis=1)
            codes[:, m] = b
            step = self.codebook[m][b]
            step *= s
            r -= step
            xhat += step
            norms[:, m] = np.einsum("ij,ij->i", xhat, xhat)
        return codes, norms

    def decode(self, codes: np.ndarray, iters: int | None = None) -> np.ndarray:
        """Reconstructions sum_{j<m} s_j C_j[b_j] of uint8 (n, >=m) codes, as float32 (n, d)."""
        m = self.M if iters is None else iters
        out = np.zeros((codes.shape[0], self.d), dtype=np.float32)
        for j in range(m):
            out += self.scales[j] * self.codewords(j)[codes[:, j]]
        return out

    def prefix_norms(self, codes: np.ndarray) -> np.ndarray:
        """||xhat_m||^2 for m = 1..M of uint8 (n, M) codes (float32 (n, M)), decoded in float64 by chunks."""
        n, M = codes.shape
        norms = np.empty((n, M), np.float32)
        scales = self.scales.astype(np.float64)
        for start in range(0, n, QUERY_CHUNK):
            block = codes[start:start + QUERY_CHUNK]
            xhat = np.zeros((block.shape[0], self.d), np.float64)
            for j in range(M):
                xhat += scales[j] * self.codewords(j)[block[:, j]]
                norms[start:start + block.shape[0], j] = np.einsum("ij,ij->i", xhat, xhat)
        return norms

    def prefix_inner_products(self, y: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """out[i, m-1] = <y_i, xhat_m(i)> for float32 (n, d) y and uint8 (n, M) codes: float64 (n, M)."""
        n, M = codes.shape
        out = np.empty((n, M), np.float64)
        for start in range(0, n, QUERY_CHUNK):
            yb = y[start:start + QUERY_CHUNK].astype(np.float64)
            block = codes[start:start + QUERY_CHUNK]
            if self.per_iteration:
                for j in range(M):
                    out[start:start + yb.shape[0], j] = np.einsum(
                        "ij,ij->i", yb, self.codebook[j][block[:, j]].astype(np.float64))
            else:
                # One (b, K) table per row block, gathered per iteration.
                table = yb @ self.codebook.T.astype(np.float64)
                out[start:start + yb.shape[0]] = np.take_along_axis(table, block.astype(np.int64), axis=1)
            out[start:start + yb.shape[0]] *= self.scales.astype(np.float64)[None, :M]
        np.cumsum(out, axis=1, out=out)
        return out

    def query_tables(self, xq: np.ndarray, iters: int | None = None, with_norms: bool = True):
        """Look-up tables for a batch of float32 (nq, d) queries, and the squared query norms (nq,)
        (None with with_norms=False: an IVF search by residual does not need them).

        shared: ONE table per query that serves every iteration, T = q C^T, (nq, K) float32.
        per-iteration: tables[q, j, k] = <q, C_j[k]> for the first m = iters (default M)
        iterations, (nq, m, K) float32. The scales are not folded in: the core applies them."""
        if self.per_iteration and self.subspace is not None:
            # <q, B c + [j == 0] mean> = <B^T q, c> + [j == 0] <q, mean>: r / d of the flops. The
            # products run on the core's threads, not numpy's BLAS (csrc/drq/inner_products.h: BLAS
            # threads spinning after the product slowed the IVF coarse search that follows).
            m = self.M if iters is None else iters
            xq = np.ascontiguousarray(xq, dtype=np.float32)
            nq = xq.shape[0]
            r_max = int(self._sub_dims[:m].max())
            z = _core.inner_products(xq, self._sub_projection[:, :1 + r_max])  # (nq, 1 + r'): <q, mean>, B^T q
            tables = np.empty((nq, m, self.K), np.float32)
            flat = tables.reshape(nq, m * self.K)
            for j, e, r_j, block in self._sub_blocks:
                if j >= m:
                    break
                e = min(e, m)
                lead = 0 if j == 0 else 1  # the first block also reads <q, mean>
                cols = block[:(e - j) * self.K // _PANEL] if block.ndim == 3 else block[:, :(e - j) * self.K]
                _core.inner_products(z[:, lead:1 + r_j], cols, out=flat[:, j * self.K:e * self.K])
        elif self.per_iteration:
            m = self.M if iters is None else iters
            flat = self.codebook[:m].reshape(m * self.K, self.d)
            tables = np.ascontiguousarray((xq @ flat.T).reshape(xq.shape[0], m, self.K), dtype=np.float32)
        else:
            tables = np.ascontiguousarray(xq @ self.codebook.T, dtype=np.float32)
        if not with_norms:
            return tables, None
        qnorms = np.einsum("ij,ij->i", xq, xq, dtype=np.float32)
        return tables, np.ascontiguousarray(qnorms, dtype=np.float32)

    def truncated(self, iters: int) -> "DRQQuantizer":
        """The same quantizer limited to its first `iters` iterations (same codebook(s), same codes' prefixes)."""
        if self.subspace is not None:
            sub = self.subspace
            return DRQQuantizer(Subspace(sub.mean, sub.basis, sub.codebooks[:iters]), self.scales[:iters])
        cb = self.codebook[:iters] if self.per_iteration else self.codebook
        return DRQQuantizer(cb, self.scales[:iters])

    def num_parameters(self) -> int:
        """Floats of the model as trained and stored: with a Subspace, its mean, basis and
        r-dimensional codebooks (the (M, K, d) codebook is computed from them)."""
        if self.subspace is not None:
            return sum(a.size for a in self.subspace) + self.scales.size
        return self.codebook.size + self.scales.size

    def same_model(self, other: "DRQQuantizer") -> bool:
        """True when both hold bit-identical codebooks and scales (codes are interchangeable)."""
        if (self.subspace is None) != (other.subspace is None):
            return False
        if self.subspace is not None and any(a.shape != b.shape or a.tobytes() != b.tobytes()
                                             for a, b in zip(self.subspace, other.subspace)):
            return False
        return (self.codebook.shape == other.codebook.shape and self.codebook.tobytes() == other.codebook.tobytes()
                and self.scales.tobytes() == other.scales.tobytes())
