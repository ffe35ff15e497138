"""Trainer for the per-iteration form of the DRQ quantizer: one (K, d) codebook per iteration.

Why this form exists (issue 3): the faithful DRQ shares ONE (256, d) codebook across all M
iterations, so every iteration re-uses the same 256 directions, only rescaled. On Fashion-MNIST
(784-d raw pixels, 60k database = training set, 10k queries, R@1 of exact search over the
reconstructions, M = 64, one model serving every prefix) that caps R@1 at
    shared DRQ (torch, all-prefix loss):          0.244 / 0.408 / 0.517 / 0.599 at 8 / 16 / 32 / 64 B
while one codebook per iteration, trained greedily here, reaches (benchmarks/results/fashion_mnist.md,
same protocol, ADC search)
    per-iteration, greedy (this file):             0.384 / 0.554 / 0.692 / 0.805
                  (0.353 / 0.531 / 0.682 / 0.803 with 32768-vector samples at every iteration)
The search cost is an (M, K) query table instead of one K-entry table (M x K x d flops per query,
one BLAS product per query batch) and the same scan; the model is M times larger
(64 x 256 x 784 floats = 51 MB at M = 64), still fewer parameters than one residual quantizer per
code length (8 + 16 + 32 + 64 = 120 codebooks for the four lengths of the benchmark).

Training, for m = 1..M (the residual-quantizer recipe; greedy, hence exactly sequential: the
first m codebooks are what an m-iteration training would produce, so every prefix is as good as
a model trained for that length with the same recipe):
  1. k-means (K centroids, seeded) on a fresh random sample of `per_iteration_sample` current
     residuals r_{m-1}, with faiss's progressive-dimension clustering (as faiss's residual
     quantizer trains by default): Lloyd rounds on the first 2, 4, ... principal dimensions, each
     step started from the previous centroids, up to all d. Measured on Fashion-MNIST (MSE of the
     60k training vectors after 4 iterations, 16384-vector samples, 10 Lloyd rounds): plain
     k-means 813.7k, progressive 786.2k; with all 60k vectors as the sample 719.4k. The plain
     k-means errors compound over iterations (8 iterations: 695k plain with 16k samples vs 538k
     for faiss's residual quantizer trained on the 60k), hence the progressive form and a large
     default sample;
  2. every training vector is encoded with it (argmin_k ||r - C_m[k]||^2) and r_m = r_{m-1} - C_m[b_m].
Sampling a fresh subset per iteration lets each codebook see a different part of the data while
bounding the k-means cost; the assignment of all n vectors keeps the residuals of the whole
training set exact for the next iteration. The sample size follows a schedule
(DRQTrainConfig.per_iteration_sample, default: all vectors up to 65536 for the first 16 iterations,
32768 up to 32, 16384 beyond): 256 centroids in 784 dimensions are sample-starved, and the first
iterations decide the short codes. Measured on Fashion-MNIST (60k, 8 iterations, 1,000 queries,
1 thread on a loaded machine): all 60k vectors per k-means gave a training MSE of 537.2k and R@1
0.385 at 8 B, against 567.8k and 0.342 with 32768-vector samples, for ~1.8x the k-means time of
those iterations; the later iterations, which refine long codes, get smaller samples to pay for it.

Not done here (measured, rejected): a closed-form all-prefix least-squares refit of all codebooks
for fixed codes, alternated with greedy re-encoding. The refit lowers the error of the fixed codes
(Fashion-MNIST, M = 64: -9% MSE at 64 B) but the greedy re-encoding with the refitted codebooks is
worse than before the refit at every prefix (8 B MSE 538.2k vs 538.4k greedy baseline, 64 B 117.8k
vs 109.2k): the refit codebooks are no longer the ones the greedy encoder's argmins were made for.

Deadline (max_seconds): once it passes, the remaining iterations use one Lloyd round, so a model
of M iterations is always returned (info["stop_reason"] = "time_limit"). Ctrl-C propagates (no
partial model is meaningful: every prefix needs its codebook).
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch

from .drq import DRQTrainConfig, _kmeans, per_iteration_sample_at

# Rows per chunk of the assignment step: bounds the (chunk, K) score block.
_ASSIGN_CHUNK = 8192


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


@torch.no_grad()
def _assign(R: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """argmin_k ||r_i - C_k||^2 for R (n, d), C (K, d): int64 (n,)."""
    cn = (C * C).sum(1)
    out = torch.empty(R.shape[0], dtype=torch.int64)
    for s in range(0, R.shape[0], _ASSIGN_CHUNK):
        block = R[s:s + _ASSIGN_CHUNK]
        out[s:s + block.shape[0]] = torch.addmm(cn.unsqueeze(0), block, C.T, alpha=-2.0).argmin(1)
    return out


def _threads_kmeans(x, K, niter, seed, num_threads):
    import faiss
    prev = faiss.omp_get_max_threads()
    if num_threads is not None:
        faiss.omp_set_num_threads(num_threads)
    try:
        return _progressive_kmeans(x, K, niter, seed)
    finally:
        faiss.omp_set_num_threads(prev)


def train_per_iteration(x: np.ndarray, cfg: DRQTrainConfig):
    """Greedy per-iteration codebooks on validated float32 (n, d) x.

    Returns (codebooks float32 (M, K, d), scales float32 (M,) of ones, info dict with the training
    MSE per prefix, seconds, per-iteration seconds and the stop reason)."""
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
        codebooks = np.empty((M, K, d), np.float32)
        errors = np.empty(M)
        seconds = np.empty(M)
        stop_reason = "completed"
        samples = []
        for m in range(M):
            sample = min(n, per_iteration_sample_at(cfg.per_iteration_sample, m))
            samples.append(sample)
            t_m = time.monotonic()
            niter = cfg.per_iteration_kmeans_iters
            if deadline is not None and t_m > deadline:
                niter, stop_reason = 1, "time_limit"
            rows = np.sort(rng.choice(n, sample, replace=False)) if sample < n else slice(None)
            C = _threads_kmeans(R[rows].numpy(), K, niter, cfg.seed + m, cfg.num_threads)
            Ct = torch.from_numpy(C)
            b = _assign(R, Ct)
            R -= Ct[b]
            codebooks[m] = C
            errors[m] = float(torch.einsum("ij,ij->", R, R).double()) / n
            seconds[m] = time.monotonic() - t_m
            if bar is not None:
                bar.update(1)
                bar.set_postfix(mse=f"{errors[m]:.4g}")
    finally:
        if bar is not None:
            bar.close()
        torch.set_num_threads(prev_threads)
    info = {
        "codebooks": "per_iteration",
        "train_mse_per_prefix": errors.tolist(),
        "seconds_per_iteration": seconds.tolist(),
        "seconds": time.monotonic() - t0,
        "per_iteration_sample": samples,
        "kmeans_iters": cfg.per_iteration_kmeans_iters,
        "stop_reason": stop_reason,
    }
    return codebooks, np.ones(M, np.float32), info
