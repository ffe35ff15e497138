"""Trainer for 4-bit sequential codes: one 16-entry codebook PER iteration (residual-quantizer
style), trained greedily and then fine-tuned jointly over all code prefixes.

Why not the shared DRQ codebook here: with K = 16 a single shared (16, d) codebook plus one scale
per iteration has only 16 directions to spend in d = 784, and every iteration re-uses them. The
measurement behind the choice (Fashion-MNIST, 20k train / 2k queries, R@1 of exact search over the
reconstructions, see benchmarks/bench_fastscan.py::codebook_choice_experiment) is in the comment
above FASTSCAN_CODEBOOK_NOTE below: R@1 at 8 bytes 0.011 (shared) vs 0.209 (per iteration). The LUT cost per query is M x 16 x d either way (16 entries per
iteration, as faiss's PQ4 fast scan has 16 per sub-quantizer), so the per-iteration codebooks cost
nothing at search time; they cost M x 16 x d floats of model (128 x 16 x 784 x 4 B = 6.4 MB at 64 B).

Sequential property: codes are always produced by the greedy residual encoder (iteration m
quantises what the first m-1 left), so the first m codes of an M-iteration code are exactly the
m-iteration code, and one encoded index serves every prefix length.

Training:
  1. greedy: for m = 1..M, k-means (K = 16) on the current residuals, encode, subtract.
  2. prefix fine-tune, `refine_rounds` times: with the codes fixed, all M codebooks are solved
     jointly in closed form for  sum_m w_m sum_i ||x_i - xhat_{i,m}||^2  (a linear least squares
     problem in the 16 M codewords: normal matrix (16M, 16M) from pair counts of codes), then the
     data is re-encoded greedily. w_m = 1 / (greedy error at prefix m), restricted to the prefix
     lengths that will be searched (every even m by default: whole bytes), so each prefix length
     counts by its relative error, not its absolute one (short prefixes have much larger errors).
     A round is kept only if it lowers the weighted prefix loss.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

K4 = 16  # codewords per iteration: one 4-bit code

# Measured (benchmarks/bench_fastscan.py::codebook_choice_experiment, same protocol; machine shared
# with other jobs, 1 thread): Fashion-MNIST, trained on 20k base vectors, M = 16 iterations of 4
# bits, R@1 of exact search over the 60k reconstructions for 2k queries, at 2 / 4 / 8 code bytes:
#   shared (16, d) codebook + per-iteration scales (drqindex.train.drq, K = 16):  0.009 / 0.011 / 0.011
#   per-iteration codebooks, greedy:                                              0.014 / 0.084 / 0.209
#   per-iteration codebooks, greedy + 3 prefix least-squares rounds:              0.018 / 0.091 / 0.209
#   (faiss ProductQuantizer 4-bit reconstructions, for scale:                     0.012 / 0.027 / 0.084)
# The shared 16-entry codebook stops improving after a few iterations (16 directions re-used), so
# IndexDRQFastScan uses per-iteration codebooks. The prefix least-squares rounds help short
# prefixes a little; at M = 128 the first round did not lower the weighted loss (64.0 -> 64.5 after
# re-encoding) and was rejected, leaving the greedy model.
FASTSCAN_CODEBOOK_NOTE = "per-iteration 16-entry codebooks; see the comment above"


@dataclass
class RQ4TrainConfig:
    iters: int = 16                    # M, iterations (4 bits each); even for whole bytes
    kmeans_iters: int = 12
    max_train: int = 30000             # vectors used (a random subset beyond this)
    refine_rounds: int = 2             # prefix least-squares rounds after the greedy pass
    prefixes: Optional[Sequence[int]] = None   # prefix lengths the loss weighs; None: every even m (and M)
    ridge: float = 1e-3                # relative Tikhonov term of the least squares solve
    seed: int = 0
    verbose: bool = False

    def validate(self) -> None:
        if not isinstance(self.iters, (int, np.integer)) or not 1 <= self.iters <= 256:
            raise ValueError(f"iters: expected an int in 1..256, got {self.iters!r}")
        if self.refine_rounds < 0 or self.kmeans_iters < 1 or self.max_train < K4:
            raise ValueError("refine_rounds >= 0, kmeans_iters >= 1 and max_train >= 16 are required")


def _kmeans16(x: np.ndarray, niter: int, seed: int) -> np.ndarray:
    import faiss
    km = faiss.Kmeans(x.shape[1], K4, niter=niter, seed=seed, verbose=False,
                      max_points_per_centroid=max(256, -(-x.shape[0] // K4)))
    km.train(np.ascontiguousarray(x, dtype=np.float32))
    return np.array(km.centroids, dtype=np.float32).reshape(K4, x.shape[1])


def _nearest(r: np.ndarray, C: np.ndarray) -> np.ndarray:
    """argmin_k ||r_i - C_k||^2 for r (n, d), C (16, d): the greedy step."""
    score = (C * C).sum(1)[None, :] - 2.0 * (r @ C.T)
    return np.argmin(score, axis=1).astype(np.uint8)


def encode_rq4(x: np.ndarray, codebooks: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Greedy sequential encoding. x float32 (n, d), codebooks float32 (M, 16, d) -> uint8 (n, M)
    codes in 0..15 (one code per iteration, not packed)."""
    M = codebooks.shape[0]
    codes = np.empty((x.shape[0], M), np.uint8)
    for s in range(0, x.shape[0], chunk):
        r = np.array(x[s:s + chunk], dtype=np.float32)
        for m in range(M):
            b = _nearest(r, codebooks[m])
            codes[s:s + chunk, m] = b
            r -= codebooks[m][b]
    return codes


def decode_rq4(codes: np.ndarray, codebooks: np.ndarray, iters: Optional[int] = None) -> np.ndarray:
    """Reconstruction from the first `iters` codes: float32 (n, d)."""
    m = codebooks.shape[0] if iters is None else iters
    out = np.zeros((codes.shape[0], codebooks.shape[2]), np.float32)
    for j in range(m):
        out += codebooks[j][codes[:, j]]
    return out


def prefix_errors(x: np.ndarray, codes: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Mean squared error of every prefix m = 1..M: float64 (M,)."""
    r = np.array(x, dtype=np.float32)
    errs = np.empty(codebooks.shape[0])
    for m in range(codebooks.shape[0]):
        r -= codebooks[m][codes[:, m]]
        errs[m] = float(np.einsum("ij,ij->", r, r, dtype=np.float64)) / x.shape[0]
    return errs


def _solve_codebooks(x: np.ndarray, codes: np.ndarray, w: np.ndarray, ridge: float,
                     old: np.ndarray) -> np.ndarray:
    """Codebooks minimising sum_m w[m] ||x - xhat_m||^2 for fixed codes (closed form).

    Unknowns: the 16 M codewords, row j*16+k. Wtail[j] = sum_{m >= j} w[m] is the weight a codeword
    of iteration j gets (it appears in every prefix that includes j). The normal matrix block
    (j, j') is Wtail[max(j, j')] * counts of code pairs (b_j, b_j'); the right-hand side row (j, k)
    is Wtail[j] * sum of the x whose b_j = k."""
    n, M = codes.shape
    wtail = np.cumsum(w[::-1])[::-1].astype(np.float64)
    A = np.zeros((M * K4, M * K4), np.float64)
    for j in range(M):
        for jj in range(j, M):
            cnt = np.bincount(codes[:, j].astype(np.int64) * K4 + codes[:, jj], minlength=K4 * K4)
            blk = wtail[jj] * cnt.reshape(K4, K4)
            A[j * K4:(j + 1) * K4, jj * K4:(jj + 1) * K4] = blk
            if jj != j:
                A[jj * K4:(jj + 1) * K4, j * K4:(j + 1) * K4] = blk.T
    B = np.zeros((M * K4, x.shape[1]), np.float64)
    for j in range(M):
        onehot = np.zeros((x.shape[0], K4), np.float32)
        onehot[np.arange(x.shape[0]), codes[:, j]] = 1.0
        B[j * K4:(j + 1) * K4] = wtail[j] * (onehot.T @ x).astype(np.float64)
    # Ridge towards the previous codebooks: unused codewords (zero count) stay where they were.
    lam = ridge * float(np.trace(A)) / A.shape[0]
    A[np.diag_indices_from(A)] += lam
    B += lam * old.reshape(M * K4, -1).astype(np.float64)
    sol = np.linalg.solve(A, B)
    return sol.reshape(M, K4, x.shape[1]).astype(np.float32)


def train_rq4(x_train: np.ndarray, cfg: Optional[RQ4TrainConfig] = None):
    """Returns (codebooks float32 (M, 16, d), info dict with per-prefix errors and timings)."""
    cfg = cfg or RQ4TrainConfig()
    cfg.validate()
    x = np.ascontiguousarray(x_train, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < K4:
        raise ValueError(f"x_train: expected a float32 (n, d) array with n >= 16, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x_train: contains NaN or infinity")
    rng = np.random.default_rng(cfg.seed)
    if x.shape[0] > cfg.max_train:
        x = x[np.sort(rng.choice(x.shape[0], cfg.max_train, replace=False))]
    M, t0 = int(cfg.iters), time.perf_counter()

    codebooks = np.zeros((M, K4, x.shape[1]), np.float32)
    codes = np.empty((x.shape[0], M), np.uint8)
    r = x.copy()
    for m in range(M):
        codebooks[m] = _kmeans16(r, cfg.kmeans_iters, cfg.seed + m)
        codes[:, m] = _nearest(r, codebooks[m])
        r -= codebooks[m][codes[:, m]]
    greedy_errs = prefix_errors(x, codes, codebooks)
    info = {"greedy_errors": greedy_errs.tolist(), "greedy_seconds": time.perf_counter() - t0}

    prefixes = list(cfg.prefixes) if cfg.prefixes is not None else sorted(set(range(2, M + 1, 2)) | {M})
    w = np.zeros(M)
    for p in prefixes:
        if not 1 <= p <= M:
            raise ValueError(f"prefixes: {p} is outside 1..{M}")
        w[p - 1] = 1.0 / max(greedy_errs[p - 1], 1e-30)

    def loss(errs):
        return float((w * errs).sum())

    best_loss, best = loss(greedy_errs), codebooks
    info["refine_losses"] = [best_loss]
    for _ in range(cfg.refine_rounds):
        cand = _solve_codebooks(x, codes, w, cfg.ridge, best)
        cand_codes = encode_rq4(x, cand)
        cand_loss = loss(prefix_errors(x, cand_codes, cand))
        info["refine_losses"].append(cand_loss)
        if cand_loss >= best_loss:
            break
        best_loss, best, codes = cand_loss, cand, cand_codes
        if cfg.verbose:
            print(f"rq4 refine: weighted prefix loss {cand_loss:.4f}", flush=True)
    info["errors"] = prefix_errors(x, codes, best).tolist()
    info["seconds"] = time.perf_counter() - t0
    return np.ascontiguousarray(best), info
