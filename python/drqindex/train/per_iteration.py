"""Trainer for the per-iteration form of the DRQ quantizer: one (K, d) codebook per iteration.

Why this form exists (issue 3): the faithful DRQ shares ONE (256, d) codebook across all M
iterations, so every iteration re-uses the same 256 directions, only rescaled. On Fashion-MNIST
(784-d raw pixels, 60k database = training set, 10k queries, R@1 of exact search over the
reconstructions, M = 64, one model serving every prefix) that caps R@1 at
    shared DRQ (torch, all-prefix loss):          0.244 / 0.408 / 0.517 / 0.599 at 8 / 16 / 32 / 64 B
while one codebook per iteration, trained greedily here, reaches (benchmarks/results/fashion_mnist.md,
same protocol, ADC search)
    per-iteration, greedy (this file, default):    0.365 / 0.530 / 0.664 / 0.762  (trained in 52.4 s, 2 threads)
      in all d (per_iteration_subspace_dims=None): 0.369 / 0.526 / 0.665 / 0.780  (88.3 s; 76.8 s in the run before)
                  (0.384 / 0.554 / 0.692 / 0.805 with the previous default k-means, "progressive",
                   and its larger samples, fashion_mnist.md as of commit 7ae1eb2, for ~3.7x the training
                   time; 0.353 / 0.531 / 0.682 / 0.803 with 32768-vector samples at every iteration)
The search cost is an (M, K) query table instead of one K-entry table (M x K x d flops per query,
one BLAS product per query batch) and the same scan; the model is M times larger
(64 x 256 x 784 floats = 51 MB at M = 64), still fewer parameters than one residual quantizer per
code length (8 + 16 + 32 + 64 = 120 codebooks for the four lengths of the benchmark).

Training, for m = 1..M (the residual-quantizer recipe; greedy, hence exactly sequential: the
first m codebooks are what an m-iteration training would produce, so every prefix is as good as
a model trained for that length with the same recipe):
  1. k-means (K centroids, seeded) on a fresh random sample of `per_iteration_sample` current
     residuals r_{m-1}. Default, per_iteration_kmeans = "pca_progressive": the top
     per_iteration_pca_dims = 128 principal directions of 4096 sample rows; faiss's
     progressive-dimension k-means on the sample projected onto them (per_iteration_kmeans_iters
     = 5 Lloyd rounds on the first 2, 4, ..., 128 dimensions, each step started from the previous
     centroids); the centroids lifted to d by the means of their points; per_iteration_full_rounds
     = 3 Lloyd rounds in all d. per_iteration_kmeans = "progressive" is faiss's progressive k-means
     in all d (as faiss's residual quantizer trains), the previous default. Measured on
     Fashion-MNIST (60k, all of them as the sample, MSE of the 60k after 8 iterations, 1 thread):
     "progressive" with 10 rounds per step 532.5k (13.2 s per iteration on a quiet machine: it
     fits a (d, d) PCA on the whole sample, rotates it and runs its rounds up to d = 784
     dimensions, ~20 full-dimension passes); with 3 rounds per step 547.2k (7.6 s CPU per
     iteration, assignment included, on the loaded machine); "pca_progressive" 128 dims / 5
     rounds + 3 full rounds 548.9k (4.8 s), + 8 full rounds 542.4k (6.9 s); 256 dims / 3 rounds
     + 2 full rounds 549.4k (4.5 s); 64 dims / 10 rounds + 4 full rounds 552.3k (6.3 s); the
     progressive start fitted on a 16384-row subsample of the 60k instead of all of them (64 dims,
     4 full rounds, no lift): 565.3k. Plain k-means errors compound over iterations (8 iterations:
     695k plain with 16k samples vs 538k for faiss's residual quantizer trained on the 60k), hence
     the progressive start;
  2. every training vector is encoded with it (argmin_k ||r - C_m[k]||^2) and r_m = r_{m-1} - C_m[b_m].
Sampling a fresh subset per iteration lets each codebook see a different part of the data while
bounding the k-means cost; the assignment of all n vectors keeps the residuals of the whole
training set exact for the next iteration (at n = 60k, d = 784 it is ~1/4 of the default's time).
The sample size follows a schedule (DRQTrainConfig.per_iteration_sample, default: all vectors up
to 65536 for the first 8 iterations, 32768 up to 16, 12288 up to 32, 8192 beyond): 256 centroids
in 784 dimensions are sample-starved, and the first iterations decide the short codes; the many
late iterations get small samples to keep the training within faiss IVFPQ's four trainings.
Measured (Fashion-MNIST, M = 64, 1 thread, shared machine). Exploration: R@1 of exact search
over the reconstructions (= the index's ADC ranking) for the first 2,000 test queries, MSE of the
60k in thousands, CPU seconds of the training; faiss IVFPQ's four trainings (m = 8..64, nlist
1024) took 147 s CPU in the same conditions:
    recipe                                             8 B           16 B          32 B          64 B      CPU s
    progressive, 10 rounds, (16: 65536, 32: 32768,     0.385 532.5  0.543 370.7  0.697 242.5  0.808 139.9  ~470*
        16384) (the previous default)
    pca_progressive 128/5/3, (8: 65536, 16: 32768,     0.359 548.9  0.519 403.1  0.656 299.4  0.776 204.0   143
        8192), PCA on 8192 rows
      same, PCA on 4096 rows                           0.384 549.3  0.534 403.4  0.668 299.3  0.774 199.5   142
      same, 4 full rounds, 12288 after 16             0.372 546.6  0.532 401.4  0.670 286.4  0.788 173.5   160
    (* not measured at 1 thread in full: 1,208 s wall on a machine at load 3-5, against 324 s wall
    for IVFPQ's four trainings in the same run; ~470 s estimated from 13.2 s per 60k-row k-means
    and 3.3 s per 16k-row one, measured alone.)
The R@1 of 2,000 queries moves by ~0.02 between models of equal MSE. Then IndexDRQ(784, 64,
codebooks="per_iteration", train_config=dict(num_threads=1)).train / add / search(k = 100,
iters = m), R@1 over all 10k queries, IVFPQ's four trainings timed in the same script:
    sample schedule (pca_progressive 128/5/3)       8 B     16 B    32 B    64 B    train CPU s   IVFPQ CPU s
    (8: 65536, 16: 32768, 12288), float64 PCA        0.368   0.529   0.671   0.788   149           126
    (8: 65536, 16: 32768, 8192)                      0.368   0.523   0.652   0.776   120           124
    (8: 65536, 16: 32768, 32: 12288, 8192) (default) 0.368   0.523   0.666   0.783   125           127
    faiss RQ (beam 5, one model per length)          0.349   0.507   0.636   0.724
The default's training MSE: 548.6k / 403.1k / 287.6k / 191.0k; its time goes 31 s to iterations
0-7, 22 s to 8-15 and 72 s to 16-63, of which ~0.5 s per iteration is the assignment of the 60k.
It is above RQ by +5.4% / +3.2% / +4.8% / +8.1% R@1 (the previous default: +10% / +9% / +9% / +11%
in benchmarks/results/fashion_mnist.md, for ~3.7x the training time relative to IVFPQ's).

Subspace (per_iteration_subspace_dims, default 256): before the iterations, the training vectors
are centred and projected onto their top-r principal directions (all rows, float64 eigh); the
codebooks are trained on the r coordinates as above and returned as a drqindex.quantizer.Subspace
(the first codebook carries the mean). Every full-dimension cost (the assignments, the Lloyd
rounds, and later the index's encoding and query tables) shrinks by r / d. Measured (scratch
script, Fashion-MNIST, the projection done before IndexDRQ(r, 64, codebooks="per_iteration"),
2 threads, quiet machine; R@1 / 10-R@10 of all 10k queries, k = 10 ADC search):
    r      train s   8 B            16 B           32 B           64 B
    192    39.7      0.366 / -      0.529 / -      0.659 / -      0.734 / -
    256    38.0      0.369 / 0.536  0.533 / 0.663  0.664 / 0.763  0.758 / 0.833
    384    47.8      0.369 / 0.537  0.530 / 0.664  0.669 / 0.765  0.768 / 0.846
    784    76.8      0.369 / 0.537  0.526 / 0.665  0.665 / 0.767  0.780 / 0.850  (fashion_mnist.md, all d)
The energy outside the top 256 directions is 149k per vector (3.4% of the 4.44M total; 72k
outside 384): a floor under the 64-byte error (191k in all d), hence the 64 B loss; at 8-32 B
the greedy codes hardly reach those directions anyway.

Nested schedule (per_iteration_subspace_dims = ((until, dims), ...)): iteration m's k-means and
assignment use only the first dims_m principal coordinates (its codebook is zero beyond them,
which the quantizer detects and uses to shorten the query tables). IndexIVFDRQ(nlist 1024, M = 64)
on the Fashion-MNIST residuals, 10-R@10 of all 10k queries (scratch script, 2 threads; the same
points come out of `benchmarks/bench_ivf.py --subspace-dims 256 | 4:64,8:128,256 | 8:64,16:128,256`):
    schedule                          iters 6 nprobe 1 / 2   iters 16 nprobe 16   iters 64 nprobe 64
    256 for all                       0.383 / 0.469          0.683                0.839
    ((4, 64), (8, 128), (None, 256))  0.377 / 0.461          0.673                0.835
    ((8, 64), (16, 128), (None, 256)) 0.373 / 0.451          0.661                0.834
The middle one costs ~0.01 of recall for 2.6x fewer table multiply-adds at 6 iterations (232k vs
594k per query): benchmarks/bench_ivf.py uses it.

Not done here (measured, rejected): a closed-form all-prefix least-squares refit of all codebooks
for fixed codes, alternated with greedy re-encoding. The refit lowers the error of the fixed codes
(Fashion-MNIST, M = 64: -9% MSE at 64 B) but the greedy re-encoding with the refitted codebooks is
worse than before the refit at every prefix (8 B MSE 538.2k vs 538.4k greedy baseline, 64 B 117.8k
vs 109.2k): the refit codebooks are no longer the ones the greedy encoder's argmins were made for.

Deadline (max_seconds): once it passes, the remaining iterations use one Lloyd round per step and
no full-dimension round, so a model of M iterations is always returned (info["stop_reason"] =
"time_limit"). Ctrl-C propagates (no partial model is meaningful: every prefix needs its codebook).
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch

from .drq import DRQTrainConfig, _kmeans, schedule_at

# Rows per chunk of the assignment step: bounds the (chunk, K) score block.
_ASSIGN_CHUNK = 8192
# Rows of the sample that fit the PCA basis of the pca_progressive k-means.
_PCA_ROWS = 4096


def _progressive_kmeans(x: np.ndarray, K: int, niter: int, seed: int) -> np.ndarray:
    """K centroids (K, d) float32 of x (n, d) by faiss.ProgressiveDimClustering (PCA dimensions
    doubled step by step); plain k-means when faiss lacks it."""
    import faiss
    if not hasattr(faiss, "ProgressiveDimClustering"):  # pragma: no cover - present in faiss >= 1.7
        return _kmeans(x, K, niter, seed, None)
    x = np.ascontiguousarray(x, dtype=np.float32)   # kept alive: faiss reads it through a raw pointer
    clus = faiss.ProgressiveDimClustering(x.shape[1], K)
    clus.niter = niter
    clus.seed = seed
    clus.verbose = False
    factory = faiss.ProgressiveDimIndexFactory()
    clus.train(x.shape[0], faiss.swig_ptr(x), factory)
    return faiss.vector_to_array(clus.centroids).reshape(K, x.shape[1]).astype(np.float32)


def _quiet_full_sample(clus, n: int) -> None:
    """faiss clustering parameters: cluster all n sample rows (the sample size is the schedule's
    choice, faiss would subsample above 256 per centroid) and do not print faiss's warning about
    fewer than 39 rows per centroid (a small sample is the schedule's choice too)."""
    clus.min_points_per_centroid = 1
    clus.max_points_per_centroid = max(256, n)


def _pca_basis(x: np.ndarray, dims: int, rng: np.random.Generator):
    """Mean (d,) and the top `dims` principal directions (d, dims), float32, from at most
    _PCA_ROWS rows of x (n, d): they only place the progressive start, and 4096 rows gave the same
    training error as 8192 on Fashion-MNIST (549.3k vs 548.9k at 8 B) at half the (rows, d, d)
    covariance cost."""
    n = x.shape[0]
    rows = x[np.sort(rng.choice(n, _PCA_ROWS, replace=False))] if n > _PCA_ROWS else x
    mean = rows.mean(0, dtype=np.float64).astype(np.float32)
    centred = torch.from_numpy(rows - mean)
    # float32 eigh: half the time of float64, and a start basis needs no more precision.
    _, vecs = torch.linalg.eigh(centred.T @ centred)     # ascending eigenvalues
    return mean, vecs[:, -dims:].flip(1).contiguous()


@torch.no_grad()
def _lloyd_update(X: torch.Tensor, b: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Means of X (n, d) per code of b (n,) int64; a centroid of C (K, d) without points stays."""
    K = C.shape[0]
    sums = torch.zeros_like(C).index_add_(0, b, X)     # serial on CPU: deterministic
    counts = torch.bincount(b, minlength=K)
    out = C.clone()
    filled = counts > 0
    out[filled] = sums[filled] / counts[filled].unsqueeze(1).to(C.dtype)
    return out


def _pca_progressive_kmeans(x: np.ndarray, K: int, niter: int, seed: int, dims: int,
                            full_rounds: int) -> np.ndarray:
    """K centroids (K, d) float32 of x (n, d): faiss's progressive-dimension k-means (niter Lloyd
    rounds per step, dimensions doubled 2, 4, ... up to `dims`) on the projection of all n rows
    onto their top `dims` principal directions, lifted back to d dimensions, then `full_rounds`
    Lloyd rounds in all d dimensions.

    Why: faiss's ProgressiveDimClustering in all d = 784 dimensions rotates every row by a full
    (d, d) PCA and runs its Lloyd rounds up to d dimensions (~20 full-dimension passes over the
    sample at niter = 10); the progressive start is what makes it better than plain k-means, and
    it is decided in the leading dimensions, so the expensive high-dimension steps are replaced by
    a few full-dimension rounds."""
    import faiss
    n, d = x.shape
    dims = min(dims, d)
    rng = np.random.default_rng(seed)
    mean, basis = _pca_basis(x, dims, rng)
    X = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    projected = np.ascontiguousarray(((X - torch.from_numpy(mean)) @ basis).numpy())
    if dims > 1 and hasattr(faiss, "ProgressiveDimClustering"):
        clus = faiss.ProgressiveDimClustering(dims, K)
        clus.apply_pca = False                  # already principal axes, in decreasing variance
        clus.progressive_dim_steps = max(1, int(round(np.log2(dims))))   # 2, 4, 8, ... dims
        clus.niter, clus.seed, clus.verbose = niter, seed, False
        _quiet_full_sample(clus, n)
        clus.train(n, faiss.swig_ptr(projected), faiss.ProgressiveDimIndexFactory())
    else:                                       # one dimension: plain k-means
        clus = faiss.Clustering(dims, K)
        clus.niter, clus.seed, clus.verbose = niter, seed, False
        _quiet_full_sample(clus, n)
        clus.train(projected, faiss.IndexFlatL2(dims))
    low = torch.from_numpy(faiss.vector_to_array(clus.centroids).reshape(K, dims))
    C = torch.from_numpy(mean) + low @ basis.T
    # First full-dimension update from the low-dimension assignment (no d-dimension distances).
    C = _lloyd_update(X, _assign(torch.from_numpy(projected), low), C)
    for _ in range(full_rounds):
        C = _lloyd_update(X, _assign(X, C), C)
    return C.numpy()


@torch.no_grad()
def _assign(R: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """argmin_k ||r_i - C_k||^2 for R (n, d), C (K, d): int64 (n,)."""
    cn = (C * C).sum(1)
    out = torch.empty(R.shape[0], dtype=torch.int64)
    for s in range(0, R.shape[0], _ASSIGN_CHUNK):
        block = R[s:s + _ASSIGN_CHUNK]
        out[s:s + block.shape[0]] = torch.addmm(cn.unsqueeze(0), block, C.T, alpha=-2.0).argmin(1)
    return out


def _threads_kmeans(x, K, cfg: DRQTrainConfig, seed: int, niter: int, full_rounds: int):
    """The k-means of one iteration (cfg.per_iteration_kmeans) with cfg.num_threads faiss threads."""
    import faiss
    prev = faiss.omp_get_max_threads()
    if cfg.num_threads is not None:
        faiss.omp_set_num_threads(cfg.num_threads)
    try:
        if cfg.per_iteration_kmeans == "progressive":
            return _progressive_kmeans(x, K, niter, seed)
        return _pca_progressive_kmeans(x, K, niter, seed, cfg.per_iteration_pca_dims, full_rounds)
    finally:
        faiss.omp_set_num_threads(prev)


@torch.no_grad()
def _principal_subspace(X: torch.Tensor, dims: int):
    """Mean (d,) and the top `dims` principal directions (d, dims) of all rows of X (n, d), float32.

    All rows, not a sample as _pca_basis: the subspace bounds every codebook of the model. The
    (d, d) covariance is accumulated in float32 by BLAS and diagonalised in float64 (eigh of
    784 x 784 takes ~0.1 s), so the directions are orthonormal to float32 precision."""
    mean = X.mean(0, dtype=torch.float64).to(torch.float32)
    cov = torch.zeros(X.shape[1], X.shape[1], dtype=torch.float64)
    for s in range(0, X.shape[0], _ASSIGN_CHUNK):
        block = X[s:s + _ASSIGN_CHUNK] - mean
        cov += (block.T @ block).double()
    _, vecs = torch.linalg.eigh(cov)                   # ascending eigenvalues
    return mean, vecs[:, -dims:].flip(1).to(torch.float32).contiguous()


def train_per_iteration(x: np.ndarray, cfg: DRQTrainConfig):
    """Greedy per-iteration codebooks on validated float32 (n, d) x.

    Returns (codebooks float32 (M, K, d), or a drqindex.quantizer.Subspace when trained in
    cfg.per_iteration_subspace_dims < d dimensions; scales float32 (M,) of ones; info dict with
    the training MSE per prefix, seconds, per-iteration seconds and the stop reason)."""
    M, K = cfg.iters, cfg.K
    n, d = x.shape
    t0 = time.monotonic()
    deadline = None if cfg.max_seconds is None else t0 + float(cfg.max_seconds)
    rng = np.random.default_rng(cfg.seed)
    prev_threads = torch.get_num_threads()
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    bar = None
    if cfg.verbose:
        from tqdm.auto import tqdm
        bar = tqdm(total=M, desc="per-iteration codebooks", unit="iter")
    try:
        R = torch.from_numpy(np.array(x, dtype=np.float32))
        schedule = cfg.per_iteration_subspace_dims
        # Dimensions of each iteration's codebook: the top dims_m principal directions (nested, so
        # the query tables of the first iterations need only the first coordinates of B^T q).
        dims_m = [d if schedule is None else min(d, schedule_at(schedule, m)) for m in range(M)]
        dims = max(dims_m)
        subspace = min(dims_m) < d     # a schedule ending at >= d still nests its first iterations
        tail_error = 0.0           # mean squared norm of the rows outside the subspace
        if subspace:
            mean, basis = _principal_subspace(R, dims)
            R -= mean
            total = float(torch.einsum("ij,ij->", R, R).double()) / n
            R = R @ basis                              # (n, dims) coordinates in the subspace
            tail_error = max(0.0, total - float(torch.einsum("ij,ij->", R, R).double()) / n)
        else:
            dims_m = [d] * M
        codebooks = np.zeros((M, K, R.shape[1]), np.float32)
        errors = np.empty(M)
        seconds = np.empty(M)
        stop_reason = "completed"
        samples = []
        for m in range(M):
            sample = min(n, schedule_at(cfg.per_iteration_sample, m))
            samples.append(sample)
            t_m = time.monotonic()
            niter, full_rounds = cfg.per_iteration_kmeans_iters, cfg.per_iteration_full_rounds
            if deadline is not None and t_m > deadline:
                niter, full_rounds, stop_reason = 1, 0, "time_limit"
            rows = np.sort(rng.choice(n, sample, replace=False)) if sample < n else slice(None)
            r_m = dims_m[m]
            # The codebook of iteration m lives in the first r_m coordinates (zero in the rest):
            # it is fitted, and assigns, on those coordinates only.
            Rm = R if r_m == R.shape[1] else R[:, :r_m]
            C = _threads_kmeans(np.ascontiguousarray(Rm[rows].numpy()), K, cfg, cfg.seed + m, niter, full_rounds)
            Ct = torch.from_numpy(C)
            b = _assign(Rm, Ct)
            Rm -= Ct[b]
            codebooks[m, :, :r_m] = C
            errors[m] = float(torch.einsum("ij,ij->", R, R).double()) / n + tail_error
            seconds[m] = time.monotonic() - t_m
            if bar is not None:
                bar.update(1)
                bar.set_postfix(mse=f"{errors[m]:.4g}")
        if subspace:
            # Codeword c of the subspace is basis @ c in d; the mean rides on the first codebook,
            # so x ~ mean + basis @ sum_m C_m[b_m] (drqindex.quantizer.Subspace).
            from ..quantizer import Subspace
            codebooks = Subspace(mean.numpy(), basis.numpy(), codebooks)
    finally:
        if bar is not None:
            bar.close()
        torch.set_num_threads(prev_threads)
    info = {
        "subspace_dims": int(dims) if subspace else None,
        "subspace_dims_per_iteration": dims_m if subspace else None,
        "codebooks": "per_iteration",
        "train_mse_per_prefix": errors.tolist(),
        "seconds_per_iteration": seconds.tolist(),
        "seconds": time.monotonic() - t0,
        "per_iteration_sample": samples,
        "kmeans": cfg.per_iteration_kmeans,
        "kmeans_iters": cfg.per_iteration_kmeans_iters,
        "stop_reason": stop_reason,
    }
    return codebooks, np.ones(M, np.float32), info
