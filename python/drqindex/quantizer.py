"""The trained DRQ quantizer as plain arrays: what the trainer produces, the core consumes and
the file format stores. No torch here: encoding and search need only numpy and the C++ core.

Shapes: codebook C is (K, d) float32 (one codebook shared by every iteration), scales s is
(M,) float32 (one learned factor per iteration). Iteration m uses the codewords s_m * C_k.
"""
from __future__ import annotations

import numpy as np

from . import _core

# Rows per chunk when a large batch is encoded or searched: bounds the temporary (chunk, K)
# inner-product tables to a few MB however large the batch is.
ENCODE_CHUNK = 16384
QUERY_CHUNK = 4096


class DRQQuantizer:
    """A shared codebook applied recurrently to the residual, one scalar per iteration."""

    def __init__(self, codebook: np.ndarray, scales: np.ndarray):
        codebook = np.asarray(codebook)
        scales = np.asarray(scales)
        if codebook.ndim != 2 or codebook.shape[0] != 256:
            raise ValueError(f"codebook: expected shape (256, d) (K = 256, one byte per iteration), "
                             f"got {codebook.shape}")
        if scales.ndim != 1 or scales.shape[0] < 1:
            raise ValueError(f"scales: expected shape (M,) with M >= 1, got {scales.shape}")
        codebook = np.ascontiguousarray(codebook, dtype=np.float32)
        scales = np.ascontiguousarray(scales, dtype=np.float32)
        if not (np.isfinite(codebook).all() and np.isfinite(scales).all()):
            raise ValueError("codebook and scales: expected finite values, got NaN or inf")
        self.codebook = codebook
        self.scales = scales
        # Gram matrix G = C C^T: with a shared codebook, each greedy step needs only G's rows
        # (O(K) per vector) once x C^T is known, instead of a fresh O(K d) distance computation.
        self.gram = np.ascontiguousarray(codebook.astype(np.float64) @ codebook.T.astype(np.float64),
                                         dtype=np.float32)

    @property
    def K(self) -> int:
        return self.codebook.shape[0]

    @property
    def d(self) -> int:
        return self.codebook.shape[1]

    @property
    def M(self) -> int:
        return self.scales.shape[0]

    def encode(self, x: np.ndarray, progress=None):
        """Greedy recurrent encoding of float32 (n, d) rows.

        Returns codes uint8 (n, M) and norms float32 (n, M) with norms[i, m-1] = ||xhat_m(i)||^2,
        the squared norm of the m-iteration reconstruction (needed for exact L2 ADC at every prefix).
        progress: optional callable(rows_done) called after each chunk.
        """
        n = x.shape[0]
        codes = np.empty((n, self.M), dtype=np.uint8)
        norms = np.empty((n, self.M), dtype=np.float32)
        for start in range(0, n, ENCODE_CHUNK):
            stop = min(n, start + ENCODE_CHUNK)
            xc = np.ascontiguousarray(x[start:stop] @ self.codebook.T, dtype=np.float32)
            codes[start:stop], norms[start:stop] = _core.encode_greedy(xc, self.gram, self.scales)
            if progress is not None:
                progress(stop - start)
        return codes, norms

    def decode(self, codes: np.ndarray, iters: int | None = None) -> np.ndarray:
        """Reconstructions sum_{j<m} s_j C[b_j] of uint8 (n, >=m) codes, as float32 (n, d)."""
        m = self.M if iters is None else iters
        out = np.zeros((codes.shape[0], self.d), dtype=np.float32)
        for j in range(m):
            out += self.scales[j] * self.codebook[codes[:, j]]
        return out

    def query_tables(self, xq: np.ndarray):
        """The one look-up table per query that serves every iteration: T = q C^T, (nq, K) float32,
        and the squared query norms (nq,) float32."""
        tables = np.ascontiguousarray(xq @ self.codebook.T, dtype=np.float32)
        qnorms = np.einsum("ij,ij->i", xq, xq, dtype=np.float32)
        return tables, np.ascontiguousarray(qnorms, dtype=np.float32)

    def truncated(self, iters: int) -> "DRQQuantizer":
        """The same quantizer limited to its first `iters` iterations (same codebook, same codes' prefixes)."""
        return DRQQuantizer(self.codebook, self.scales[:iters])

    def num_parameters(self) -> int:
        return self.codebook.size + self.scales.size
