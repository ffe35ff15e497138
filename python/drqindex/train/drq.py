"""Torch trainer for the DRQ quantizer: one shared codebook C (K, d) and one scalar per iteration.

Model (METHOD.md section 1).  For m = 1..M, with r_0 = x:

    b_m = argmin_k ||r_{m-1} - s_m C_k||^2          (L2 ranking, greedy, hard)
    r_m = r_{m-1} - s_m C_{b_m}                      (the recurrence runs on the hard codeword)
    xhat_m = x - r_m = sum_{j<=m} s_j C_{b_j}

Soft assignment p_m = softmax(-||r_{m-1} - s_m C_k||^2 / (T ||r_{m-1}||^2)) over k gives the soft
codeword qtilde_m = s_m p_m^T C.  The loss is summed over every prefix m = 1..M:

    L = sum_m w_m ( ||x - xhat_m||^2 + mu ||x - xtilde_m||^2 + nu ||xtilde_m - xhat_m||^2 )

``soft="cumulative"`` (the paper's form) takes xtilde_m = sum_{j<=m} qtilde_j, every soft codeword
computed from the hard residual; ``soft="local"`` takes xtilde_m = xhat_{m-1} + qtilde_m (only step
m is relaxed).  The hard terms are differentiable in C and s through the selected codewords and
through the residual recurrence (the argmin itself is not), so the codebook gets gradient from the
hard path as well as the soft one.  The central (joint) term is applied at every prefix, not only
at m = M.

Choices (measured on Fashion-MNIST, 784-d raw pixels, iters = 64; numbers in the project notes):
  * objective: the defaults are mu = nu = 0, i.e. the all-prefix *hard* reconstruction loss only.
    The faithful soft terms are implemented (mu, nu, soft, temperature*) and tested, but on this
    data the cumulative (paper) form diverges from the k-means/Lloyd initialisation at every
    temperature and weighting tried (its soft errors accumulate over 64 steps while each late step
    improves the error by ~1%, so the softmax is nearly flat), and the local form matches the
    hard-only loss in MSE and R@1 at ~5x the cost per batch;
  * data scale: the data is divided by sigma = sqrt(mean ||x||^2) before training (the returned
    codebook is multiplied back), so the learning rate does not depend on the data's units
    (raw Fashion-MNIST pixels have ||x||^2 ~ 1e7);
  * temperature (soft terms only): distances are divided by the current residual's squared norm
    ||r_{m-1}||^2 (per vector, no gradient), so one T means the same thing at step 1 and step 64
    (residual norms shrink along the code); ``temperature_scaling="data"`` divides by the mean
    squared norm of the data instead, ``"gain"`` by what the best codeword removes,
    ||r_{m-1}||^2 - ||r_m||^2 (late steps remove ~1% of the residual, so under "residual" scaling
    the softmax is nearly flat there; "gain" is implemented and tested but was not measured).  T is annealed geometrically per epoch from ``temperature``
    to ``temperature_final``;
  * optimiser: Adam, lr 1e-2 decayed geometrically per epoch to 1e-3, batches of 256 (lr 1e-3 or
    constant lr, lr 3e-2 and batches of 1024 were all worse for the same epochs);
  * scales: s_1 is fixed to 1 (as in the public code; a free s_1 only trades off against the norm of
    C), the others are learned as s_m = exp(theta_m) (positive, relative updates);
  * prefix weights: "relative" sets w_m = 1 / (M e_m) with e_m the initial model's mean squared
    error at prefix m, i.e. the loss is the mean over prefixes of the relative error, so the long
    prefixes are not drowned by the first few (largest) errors; "uniform" (w_m = 1 / M) measured
    the same within noise;
  * initialisation: k-means of x (faiss.Kmeans, seeded; a torch fallback when faiss is absent) for
    C; then every s_m is fitted greedily by least squares (alternating the argmin and the LS fit).
    With ``init="shared_rq"`` (default) pooled Lloyd rounds follow on a sample: greedy-encode, set
    C_k to the weighted mean of the scaled residuals r_{m-1}/s_m assigned to k over all steps (the
    optimal shared codebook for these assignments), refit the scales; the round with the lowest
    weighted all-prefix error is kept (the rounds oscillate after 2-3).  This matters: from plain
    k-means the later steps collapse (their error stays flat after m ~ 5 even after training);
  * early stopping: the criterion is the weighted all-prefix *hard* loss on a held-out split
    (val_fraction), sum_m w_m MSE_m (greedy codes, float64), which does not move with the
    temperature; the best weights (possibly the initialisation) are restored at the end;
  * determinism: seeded numpy Generator (split, sample), torch.Generator (batches), faiss k-means
    seed; the CPU kernels used are deterministic for a fixed thread count (num_threads), so the
    same seed gives bit-identical arrays (tested single-threaded);
  * Ctrl-C: a KeyboardInterrupt raised during the epochs is caught; training stops and the best
    model so far is returned with info["stop_reason"] = "interrupted".  An interrupt during the
    initialisation (before any model exists) propagates.

Efficiency: distances use the Gram form ||r - s C_k||^2 = ||r||^2 - 2 s <r, C_k> + s^2 ||C_k||^2 with
<r_{m-1}, C_k> = <x, C_k> - sum_{j<m} s_j G[b_j, k] (G = C C^T), so a batch needs one x C^T product;
the greedy codes come from a no-grad pass of O(B K) per step, the hard loss from O(B M^2) gathers
of G, the soft terms from (M, B, K) tensors; nothing of shape (B, M, K, d) or (B, M, d) is built.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch

__all__ = ["DRQTrainConfig", "train_drq", "encode_greedy_torch"]

_MAX_K = 256          # codes are one byte per iteration
_MAX_ITERS = 4096


@dataclass
class DRQTrainConfig:
    """Options of :func:`train_drq`.  Defaults are the best setting found on Fashion-MNIST."""
    iters: int = 16                      # M, the maximum number of iterations (bytes per code)
    codebooks: str = "shared"            # "shared" (this file) | "per_iteration" (train/per_iteration.py)
    K: int = 256                         # codewords in the shared codebook (2..256)
    epochs: int = 8
    batch_size: int = 256
    lr: float = 1e-2                     # Adam, on the data-normalised codebook and the log-scales
    lr_final: Optional[float] = 1e-3     # geometric decay per epoch down to this (None: constant lr)
    mu: float = 0.0                      # weight of the soft reconstruction term (public DRQ code: 1.0)
    nu: float = 0.0                      # weight of the joint central term (public DRQ code: 0.1)
    temperature: float = 0.05            # T0, relative to ||r_{m-1}||^2 (see temperature_scaling)
    temperature_final: Optional[float] = None   # T1 for a geometric per-epoch anneal; None: constant T0
    temperature_scaling: str = "residual"       # "residual" | "gain" | "data"
    soft: str = "local"                  # "local" | "cumulative" (the paper's x~ = sum of soft codewords)
    prefix_weights: Union[str, Sequence[float]] = "relative"   # "relative" | "uniform" | M floats
    init: str = "shared_rq"              # "kmeans" | "shared_rq"
    init_iters: int = 3                  # pooled Lloyd rounds for init="shared_rq" (the best is kept)
    init_sample: int = 8192              # vectors used by the scale fit and the Lloyd rounds
    kmeans_iters: int = 20
    # per_iteration: residuals sampled for each iteration's k-means. An int applies to every
    # iteration; a sequence of (until_iteration, sample) pairs (the last `until` None) gives the
    # first iterations larger samples: they decide the short codes, and k-means with 256 centroids
    # in d = 784 is sample-starved below ~60k points (train/per_iteration.py has the measurements;
    # the late iterations trade sample for time).
    per_iteration_sample: Union[int, Sequence] = ((8, 65536), (16, 32768), (32, 12288), (None, 8192))
    # per_iteration: the k-means of each iteration. "pca_progressive": faiss's progressive-dimension
    # k-means in the top per_iteration_pca_dims principal dimensions, then per_iteration_full_rounds
    # Lloyd rounds in all d; "progressive": faiss's progressive-dimension k-means in all d (the
    # previous default: ~3.7x the training time with its sample schedule ((16, 65536), (32, 32768), (None, 16384))).
    per_iteration_kmeans: str = "pca_progressive"
    per_iteration_kmeans_iters: int = 5  # per_iteration: Lloyd rounds per progressive-dimension step
    per_iteration_pca_dims: int = 128    # per_iteration, "pca_progressive": dimensions of the progressive steps
    per_iteration_full_rounds: int = 3   # per_iteration, "pca_progressive": Lloyd rounds in all d afterwards
    # per_iteration: train the codebooks in the top per_iteration_subspace_dims principal directions
    # of the training vectors (the first codebook carries the mean); the model is then a
    # drqindex.quantizer.Subspace, which encodes and builds query tables in those dimensions and is
    # stored as such (file section CBKS); None (or >= d): train in all d. 256 on Fashion-MNIST: 52 s instead of 88 s of
    # training, R@1 -0.018 (64 B) .. +0.004 (16 B) (benchmarks/results/fashion_mnist.md; more in
    # train/per_iteration.py). A schedule of (until_iteration, dims) pairs such as
    # ((4, 64), (8, 128), (None, 256)) nests the first iterations' codebooks in fewer leading
    # directions (the basis is the top max(dims)): their query tables then cost d * 64 + 4 * K * 64
    # multiply-adds instead of d * 256 + 4 * K * 256, which is what a low-nprobe IVF search pays per
    # query besides its coarse search (benchmarks/bench_ivf.py uses that schedule).
    per_iteration_subspace_dims: Union[None, int, Sequence] = 256
    learn_first_scale: bool = False
    val_fraction: float = 0.1
    patience: int = 3
    min_delta: float = 1e-4              # relative improvement of the val criterion that counts
    seed: int = 0
    max_seconds: Optional[float] = None  # wall-clock budget, initialisation included
    num_threads: Optional[int] = None    # torch (and faiss k-means) threads during training
    verbose: bool = False

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        def _int(name, lo, hi=None):
            v = getattr(self, name)
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"{name}: expected an int, received {type(v).__name__} {v!r}")
            if v < lo or (hi is not None and v > hi):
                rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
                raise ValueError(f"{name}: expected {rng}, received {v}")

        def _float(name, lo, hi=None, lo_open=True, allow_none=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(float(v)):
                raise ValueError(f"{name}: expected a finite number, received {v!r}")
            v = float(v)
            bad = (v <= lo if lo_open else v < lo) or (hi is not None and v >= hi)
            if bad:
                lo_s = f"> {lo}" if lo_open else f">= {lo}"
                hi_s = f" and < {hi}" if hi is not None else ""
                raise ValueError(f"{name}: expected a value {lo_s}{hi_s}, received {v}")

        _int("iters", 1, _MAX_ITERS)
        _int("K", 2, _MAX_K)
        _int("epochs", 0)
        _int("batch_size", 1)
        _int("init_iters", 0)
        _int("init_sample", 1)
        _int("kmeans_iters", 1)
        self.per_iteration_sample = per_iteration_sample_schedule(self.per_iteration_sample)
        _int("per_iteration_kmeans_iters", 1)
        _int("per_iteration_pca_dims", 1)
        _int("per_iteration_full_rounds", 0)
        if self.per_iteration_subspace_dims is not None:
            self.per_iteration_subspace_dims = iteration_schedule(
                self.per_iteration_subspace_dims, "per_iteration_subspace_dims", "((8, 128), (None, 256))")
        if self.per_iteration_kmeans not in ("pca_progressive", "progressive"):
            raise ValueError(f"per_iteration_kmeans: expected 'pca_progressive' or 'progressive', "
                             f"received {self.per_iteration_kmeans!r}")
        if self.codebooks not in ("shared", "per_iteration"):
            raise ValueError(f"codebooks: expected 'shared' or 'per_iteration', got {self.codebooks!r}")
        _int("patience", 1)
        _int("seed", 0)
        _float("lr", 0.0)
        _float("lr_final", 0.0, allow_none=True)
        _float("mu", 0.0, lo_open=False)
        _float("nu", 0.0, lo_open=False)
        _float("temperature", 0.0)
        _float("temperature_final", 0.0, allow_none=True)
        _float("val_fraction", 0.0, 1.0, lo_open=False)
        _float("min_delta", 0.0, lo_open=False)
        _float("max_seconds", 0.0, allow_none=True)
        if self.num_threads is not None:
            _int("num_threads", 1)
        for name, allowed in (("temperature_scaling", ("residual", "gain", "data")), ("soft", ("cumulative", "local")),
                              ("init", ("kmeans", "shared_rq"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {allowed}, received {getattr(self, name)!r}")
        pw = self.prefix_weights
        if isinstance(pw, str):
            if pw not in ("relative", "uniform"):
                raise ValueError(f"prefix_weights: expected 'relative', 'uniform' or {self.iters} floats, "
                                 f"received {pw!r}")
        else:
            arr = np.asarray(pw, dtype=np.float64)
            if arr.shape != (self.iters,) or not np.isfinite(arr).all() or (arr < 0).any() or arr.sum() <= 0:
                raise ValueError(f"prefix_weights: expected {self.iters} finite non-negative floats (not all 0), "
                                 f"received shape {arr.shape} {arr if arr.size <= 8 else '...'}")


def iteration_schedule(value, name: str, example: str):
    """A validated per-iteration schedule: an int >= 1, or a tuple of (until_iteration, value) pairs
    with strictly increasing until_iteration >= 1, the last one None, every value an int >= 1
    (a JSON list of lists, as read back from an index file, is accepted)."""
    def _is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))

    if _is_int(value):
        if value < 1:
            raise ValueError(f"{name}: expected >= 1, received {value}")
        return int(value)
    expected = (f"{name}: expected an int >= 1 or a sequence of (until_iteration, value) pairs "
                f"ending with (None, value), e.g. {example}")
    if isinstance(value, (str, bytes)) or not isinstance(value, collections.abc.Sequence) \
            or len(value) == 0:
        raise ValueError(f"{expected}, received {value!r}")
    out, last = [], 0
    for i, pair in enumerate(value):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, collections.abc.Sequence) \
                or len(pair) != 2:
            raise ValueError(f"{expected}, received {value!r}")
        until, v = pair
        final = i == len(value) - 1
        if (until is None) != final or (until is not None and (not _is_int(until) or until <= last)) \
                or not _is_int(v) or v < 1:
            raise ValueError(f"{expected}, received {value!r}")
        last = 0 if until is None else int(until)
        out.append((None if until is None else int(until), int(v)))
    return tuple(out)


def per_iteration_sample_schedule(value):
    """The validated per_iteration_sample (iteration_schedule)."""
    return iteration_schedule(value, "per_iteration_sample", "((16, 65536), (None, 16384))")


def schedule_at(schedule, m: int) -> int:
    """The value of a validated iteration_schedule at 0-based iteration m."""
    if isinstance(schedule, int):
        return schedule
    for until, v in schedule:
        if until is None or m < until:
            return v
    raise AssertionError("a validated schedule ends with (None, value)")  # pragma: no cover


# --------------------------------------------------------------------------- input checks
def _check_x(x, K: int) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise ValueError(f"x_train: expected a numpy float32 array of shape (n, d), received {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"x_train: expected a 2-D float32 array of shape (n, d), received shape {x.shape}")
    if x.dtype != np.float32:
        raise ValueError(f"x_train: expected dtype float32, received {x.dtype} (convert with x.astype(np.float32))")
    if not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"x_train: expected finite values, received {x[bad[0], bad[1]]} at row {bad[0]}, "
                         f"column {bad[1]}")
    if x.shape[0] < K:
        raise ValueError(f"x_train: expected at least K = {K} vectors (one per codeword), received {x.shape[0]}")
    if float(np.square(x, dtype=np.float64).sum()) == 0.0:
        raise ValueError("x_train: expected at least one non-zero vector, received all zeros")
    return x


# --------------------------------------------------------------------------- model pieces
def _scales(theta: torch.Tensor, learn_first: bool) -> torch.Tensor:
    if learn_first:
        return torch.exp(theta)
    return torch.exp(torch.cat([theta.new_zeros(1), theta]))


def _theta_from_scales(s: np.ndarray, learn_first: bool) -> torch.Tensor:
    t = torch.log(torch.as_tensor(np.asarray(s, np.float64), dtype=torch.float32))
    return t if learn_first else t[1:].clone()


@torch.no_grad()
def _hard_pass(X: torch.Tensor, C: torch.Tensor, s: torch.Tensor, G: Optional[torch.Tensor] = None):
    """Greedy codes (B, M) int64 and per-prefix squared errors ||r_m||^2 (B, M), Gram form."""
    if G is None:
        G = C @ C.T
    gd = torch.diagonal(G)
    cur = X @ C.T
    rn = (X * X).sum(1)
    B, M = X.shape[0], s.shape[0]
    codes = torch.empty((B, M), dtype=torch.int64)
    errs = torch.empty((B, M), dtype=X.dtype)
    for m in range(M):
        sm = float(s[m])
        best, b = torch.add(gd * (sm * sm), cur, alpha=-2 * sm).min(1)
        codes[:, m] = b
        rn = rn + best
        errs[:, m] = rn
        cur.add_(G.index_select(0, b), alpha=-sm)
    return codes, errs


class _PrefixSum(torch.autograd.Function):
    """Inclusive prefix sum over dim 0 of an (M, ...) tensor, slab by slab (torch.cumsum over a
    leading dim is several times slower on CPU); the backward is the reversed prefix sum."""

    @staticmethod
    def forward(ctx, x):
        out = x.contiguous().clone()
        for m in range(1, out.shape[0]):
            out[m] += out[m - 1]
        return out

    @staticmethod
    def backward(ctx, g):
        out = g.contiguous().clone()
        for m in range(out.shape[0] - 2, -1, -1):
            out[m] += out[m + 1]
        return out


def _cumsum0(x):
    return _PrefixSum.apply(x)


def _batch_loss(X, C, s, codes, w, T, mu, nu, soft_mode, temp_mode="residual"):
    """Mean over the batch of sum_m w_m (hard_m + mu soft_m + nu joint_m); see the module docstring.

    Tensors are laid out (M, B, K) so that the prefix sums over m run over contiguous slabs."""
    B, M = codes.shape
    G = C @ C.T
    gd = torch.diagonal(G)
    XC = X @ C.T                                   # (B, K)
    xn = (X * X).sum(1)                            # (B,)
    cT = codes.T.contiguous()                      # (M, B)
    sv = s.view(M, 1, 1)
    s2 = s.view(M, 1)
    xhx = _cumsum0(s2 * XC.gather(1, codes).T)     # <x, xhat_m>, (M, B)
    if mu == 0 and nu == 0:
        # hard terms only: ||x - xhat_m||^2 = ||x||^2 - 2 <x, xhat_m> + ||xhat_m||^2 with
        # ||xhat_m||^2 - ||xhat_{m-1}||^2 = s_m^2 G[b_m, b_m] + 2 s_m sum_{j<m} s_j G[b_j, b_m]:
        # O(B M^2) gathers of G instead of (M, B, K) distance tensors.
        Gbb = G[cT.unsqueeze(1), cT.unsqueeze(0)]                  # (M, M, B): G[b_j, b_l]
        strict = torch.ones(M, M, dtype=torch.bool).triu(1).unsqueeze(2)   # j < l
        cross = (Gbb * strict * s.view(M, 1, 1)).sum(0)            # (M, B): sum_{j<l} s_j G[b_j, b_l]
        incr = s2 * (s2 * gd[cT] + 2 * cross)
        hard = xn - 2 * xhx + _cumsum0(incr)
        return (hard * w.view(M, 1)).sum(0).mean(), hard.detach().T
    sGb = sv * G[cT]                               # (M, B, K): s_j G[b_j, :]
    csum = _cumsum0(sGb)                    # inclusive prefix sums
    cur = XC - (csum - sGb)                        # <r_{m-1}, C_k>
    score = (sv * sv) * gd - 2 * sv * cur          # ||r_{m-1} - s_m C_k||^2 - ||r_{m-1}||^2
    idx = cT.unsqueeze(2)
    score_b = score.gather(2, idx).squeeze(2)      # (M, B)
    hard = xn + _cumsum0(score_b)           # ||r_m||^2, (M, B)
    loss_terms = hard
    if mu > 0 or nu > 0:
        rprev = torch.cat([xn.unsqueeze(0), hard[:-1]], 0)      # ||r_{m-1}||^2
        if temp_mode == "residual":      # ||r_{m-1}||^2
            ref = rprev.detach().clamp_min(1e-12)
        elif temp_mode == "gain":        # ||r_{m-1}||^2 - ||r_m||^2, what the best codeword removes
            ref = (-score_b.detach()).clamp_min(1e-6 * rprev.detach().clamp_min(1e-12))
        else:                            # the data's mean squared norm (1 after normalisation)
            ref = torch.ones_like(rprev)
        p = torch.softmax(score / (-T * ref).unsqueeze(2), dim=2)   # (M, B, K)
        if soft_mode == "local":
            pG = p @ G
            # xtilde_m = xhat_{m-1} + s_m p_m^T C
            pGp = (p * pG).sum(2)
            soft = rprev - 2 * s2 * (p * cur).sum(2) + (s2 * s2) * pGp
            pG_b = pG.gather(2, idx).squeeze(2)
            joint = (s2 * s2) * (pGp - 2 * pG_b + gd[cT])
        else:
            # xtilde_m = sum_{j<=m} s_j p_j^T C, coefficients a_m = cumsum(s p) in codeword space
            a = _cumsum0(sv * p)
            Ga = a @ G
            xta = (a * XC).sum(2)                                   # <x, xtilde_m>
            ata = (a * Ga).sum(2)                                   # ||xtilde_m||^2
            soft = xn - 2 * xta + ata
            # <xhat_m, xtilde_m> = <x, xtilde_m> - <r_m, xtilde_m>, <r_m, C_k> = XC_k - csum_m[k]
            rta = xta - (a * csum).sum(2)
            hn = hard - xn + 2 * xhx                                 # ||xhat_m||^2
            joint = ata - 2 * (xta - rta) + hn
        loss_terms = hard + mu * soft + nu * joint
    return (loss_terms * w.view(M, 1)).sum(0).mean(), hard.detach().T


# --------------------------------------------------------------------------- initialisation
def _kmeans(x: np.ndarray, K: int, niter: int, seed: int, num_threads: Optional[int]) -> np.ndarray:
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss is installed in the project's environments
        faiss = None
    if faiss is not None:
        prev = faiss.omp_get_max_threads()
        if num_threads is not None:
            faiss.omp_set_num_threads(num_threads)
        try:
            km = faiss.Kmeans(x.shape[1], K, niter=niter, seed=seed, verbose=False,
                              max_points_per_centroid=max(256, -(-x.shape[0] // K)))
            km.train(np.ascontiguousarray(x, dtype=np.float32))
            return np.array(km.centroids, dtype=np.float32).reshape(K, x.shape[1])
        finally:
            faiss.omp_set_num_threads(prev)
    # torch fallback: Lloyd from K distinct random points, empty clusters keep their centroid
    g = torch.Generator().manual_seed(seed)
    X = torch.from_numpy(x)
    C = X[torch.randperm(X.shape[0], generator=g)[:K]].clone()
    for _ in range(niter):
        b = ((C * C).sum(1) - 2 * X @ C.T).argmin(1)
        cnt = torch.bincount(b, minlength=K).to(X.dtype)
        S = torch.zeros_like(C).index_add_(0, b, X)
        nz = cnt > 0
        C[nz] = S[nz] / cnt[nz].unsqueeze(1)
    return C.numpy().astype(np.float32)


@torch.no_grad()
def _greedy_fit(X, C, s_init, fit_scales, learn_first, weights=None, ls_rounds=2):
    """One greedy pass over X (Gram form).

    fit_scales: refit each s_m (m > 1 unless learn_first) by least squares, alternating with the
    argmin (s_m = sum <r_{m-1}, C_b> / sum ||C_b||^2), starting from the given s_m (or, when it is
    None, from s_{m-1} times the last residual-norm ratio).
    weights: None, or "relative" / "uniform" / an (M,) array: also return the pooled Lloyd update
    of C, C_k = sum_{(i,m): b_im = k} w_m s_m r_{m-1,i} / sum w_m s_m^2 (the best shared codebook
    for these assignments and residuals), with "relative" using w_m = 1 / err_m of this pass.
    The residual sums are kept in codeword space: sum w_m s_m r_{m-1} over a cluster equals
    P^T X - Q C with P (n, K) and Q (K, K) accumulated step by step, so no (n, d) update per step.
    Returns (scales list, per-prefix mean errors (M,), C_new or None).
    """
    n, K = X.shape[0], C.shape[0]
    G = C @ C.T
    gd = torch.diagonal(G)
    cur = X @ C.T
    rn = (X * X).sum(1)
    M = len(s_init)
    s = list(s_init)
    errs = []
    lloyd = weights is not None
    if lloyd:
        P = torch.zeros((n, K), dtype=X.dtype)      # sum_m w_m s_m onehot(b_m)
        A = torch.zeros((n, K), dtype=X.dtype)      # xhat_{m-1} in codeword coefficients
        Q = torch.zeros((K, K), dtype=X.dtype)
        den = torch.zeros(K, dtype=X.dtype)
        rows = torch.arange(n)
    means = [float(rn.mean())]
    for m in range(M):
        if fit_scales and (m > 0 or learn_first):
            sm = s[m]
            if sm is None:
                sm = s[m - 1] * math.sqrt(means[-1] / means[-2]) if m > 1 else math.sqrt(means[-1] / float(gd.mean()))
            for _ in range(ls_rounds):
                b = torch.add(gd * (sm * sm), cur, alpha=-2 * sm).argmin(1)
                sm = max(float(cur.gather(1, b.unsqueeze(1)).sum() / gd[b].sum().clamp_min(1e-30)), 1e-8)
            s[m] = sm
        sm = float(s[m])
        best, b = torch.add(gd * (sm * sm), cur, alpha=-2 * sm).min(1)
        rn = rn + best
        cur.add_(G.index_select(0, b), alpha=-sm)
        means.append(float(rn.mean()))
        errs.append(means[-1])
        if lloyd:
            if isinstance(weights, str):
                wm = 1.0 if weights == "uniform" else 1.0 / max(means[-1], 1e-30)
            else:
                wm = float(weights[m])
            P[rows, b] += wm * sm
            Q.index_add_(0, b, (wm * sm) * A)
            den += torch.bincount(b, minlength=K).to(X.dtype) * (wm * sm * sm)
            A[rows, b] += sm
    C_new = None
    if lloyd:
        num = P.T @ X - Q @ C
        C_new = C.clone()
        nz = den > 0
        C_new[nz] = num[nz] / den[nz].unsqueeze(1)
    return s, np.array(errs), C_new


def _prefix_weights(cfg: DRQTrainConfig, init_errs: np.ndarray) -> np.ndarray:
    M = cfg.iters
    pw = cfg.prefix_weights
    if isinstance(pw, str):
        if pw == "uniform":
            return np.full(M, 1.0 / M)
        return 1.0 / (M * np.maximum(init_errs, 1e-30))
    w = np.asarray(pw, np.float64)
    return w / w.sum()


# --------------------------------------------------------------------------- evaluation helpers
def _eval_errors(X: torch.Tensor, C: torch.Tensor, s: torch.Tensor, chunk: int = 4096) -> np.ndarray:
    """Per-prefix mean squared error (M,) over X, in float64 (independent of the batch size)."""
    C64, s64 = C.detach().double(), s.detach().double()
    G = C64 @ C64.T
    tot = torch.zeros(s.shape[0], dtype=torch.float64)
    for a in range(0, X.shape[0], chunk):
        _, e = _hard_pass(X[a:a + chunk].double(), C64, s64, G)
        tot += e.clamp_min(0).sum(0)
    return (tot / X.shape[0]).numpy()


def _report_prefixes(M: int) -> list:
    ps = [m for m in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096) if m <= M]
    if M not in ps:
        ps.append(M)
    return ps


def _run_epoch(X, C, theta, opt, cfg, w, T, gen, deadline):
    """One pass over X in shuffled mini-batches; returns (mean loss, stopped_by_deadline)."""
    n = X.shape[0]
    perm = torch.randperm(n, generator=gen)
    tot, cnt = 0.0, 0
    for a in range(0, n, cfg.batch_size):
        idx = perm[a:a + cfg.batch_size]
        xb = X[idx]
        s = _scales(theta, cfg.learn_first_scale)
        codes, _ = _hard_pass(xb, C.detach(), s.detach())
        loss, _ = _batch_loss(xb, C, s, codes, w, T, cfg.mu, cfg.nu, cfg.soft, cfg.temperature_scaling)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tot += float(loss.detach()) * len(idx)
        cnt += len(idx)
        if deadline is not None and time.monotonic() > deadline:
            return tot / max(cnt, 1), True
    return tot / max(cnt, 1), False


# --------------------------------------------------------------------------- public API
def train_drq(x_train: np.ndarray, cfg: Optional[DRQTrainConfig] = None):
    """Train a DRQ quantizer (shared codebook + per-iteration scales) on float32 (n, d) vectors.

    With cfg.codebooks == "per_iteration" the per-iteration trainer runs instead
    (drqindex.train.per_iteration: codebook float32 (iters, K, d), scales all 1).

    Returns ``(codebook, scales, info)``: codebook float32 (K, d) C-contiguous, scales float32
    (iters,), and a dict with the per-epoch history (train loss, val criterion, temperature),
    the validation MSE per prefix of the returned model (and of the initialisation), timings,
    epochs run, best epoch and the stop reason ("max_epochs", "early_stopping", "time_limit",
    "interrupted").
    """
    if cfg is None:
        cfg = DRQTrainConfig()
    if not isinstance(cfg, DRQTrainConfig):
        raise ValueError(f"cfg: expected a DRQTrainConfig, received {type(cfg).__name__}")
    cfg.validate()
    x_train = _check_x(x_train, cfg.K)
    if cfg.codebooks == "per_iteration":
        from .per_iteration import train_per_iteration
        return train_per_iteration(x_train, cfg)

    t_start = time.monotonic()
    deadline = None if cfg.max_seconds is None else t_start + float(cfg.max_seconds)
    prev_threads = torch.get_num_threads()
    try:
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        return _train(x_train, cfg, t_start, deadline)
    finally:
        torch.set_num_threads(prev_threads)


def _train(x_np: np.ndarray, cfg: DRQTrainConfig, t_start: float, deadline: Optional[float]):
    M, K = cfg.iters, cfg.K
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    n = x_np.shape[0]
    # the held-out split never takes the training set below K vectors (k-means needs K); when
    # nothing is left for it, early stopping is off and the last epoch's model is returned
    n_val = min(int(round(cfg.val_fraction * n)), n - K)
    perm = rng.permutation(n)
    val_idx, tr_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    sigma = math.sqrt(float(np.square(x_np[tr_idx], dtype=np.float64).sum(1).mean()))
    if sigma == 0.0:
        sigma = math.sqrt(float(np.square(x_np, dtype=np.float64).sum(1).mean()))
    Xtr = torch.from_numpy(np.ascontiguousarray(x_np[tr_idx], dtype=np.float32) / np.float32(sigma))
    Xval = torch.from_numpy(np.ascontiguousarray(x_np[val_idx], dtype=np.float32) / np.float32(sigma))

    log = _Logger(cfg.verbose)
    # ---- initialisation
    t0 = time.monotonic()
    C0 = torch.from_numpy(_kmeans(Xtr.numpy(), K, cfg.kmeans_iters, cfg.seed, cfg.num_threads))
    samp = Xtr if Xtr.shape[0] <= cfg.init_sample else \
        Xtr[torch.from_numpy(np.sort(rng.choice(Xtr.shape[0], cfg.init_sample, replace=False)))]
    s0 = [1.0] + [None] * (M - 1)
    if cfg.learn_first_scale:
        s0[0] = 1.0
    pw = cfg.prefix_weights if isinstance(cfg.prefix_weights, str) else np.asarray(cfg.prefix_weights)
    lloyd = cfg.init == "shared_rq" and cfg.init_iters > 0
    s0, errs0, Cn = _greedy_fit(samp, C0, s0, True, cfg.learn_first_scale, weights=pw if lloyd else None)
    w = _prefix_weights(cfg, errs0)
    init_hist = [float((w * errs0).sum())]
    if lloyd:
        best = (init_hist[0], C0, s0, errs0)
        s = s0
        for it in range(cfg.init_iters):
            last = it == cfg.init_iters - 1
            s, errs, Cnext = _greedy_fit(samp, Cn, s, True, cfg.learn_first_scale,
                                         weights=None if last else pw)
            crit = float((w * errs).sum())
            init_hist.append(crit)
            log.write(f"init round {it + 1}: weighted prefix MSE {crit:.5f}")
            if crit < best[0]:
                best = (crit, Cn, s, errs)
            Cn = Cnext
            if deadline is not None and time.monotonic() > deadline:
                break
        _, C0, s0, errs0 = best
        w = _prefix_weights(cfg, errs0)   # re-reference "relative" weights on the chosen model
    init_seconds = time.monotonic() - t0

    C = torch.nn.Parameter(C0.clone().contiguous())
    theta = torch.nn.Parameter(_theta_from_scales(np.array(s0), cfg.learn_first_scale))
    params = [C] + ([theta] if theta.numel() else [])
    opt = torch.optim.Adam(params, lr=cfg.lr)
    w_t = torch.as_tensor(w, dtype=torch.float32)
    Xcrit = Xval if n_val > 0 else None

    def criterion():
        if Xcrit is None:
            return float("nan"), None
        e = _eval_errors(Xcrit, C, _scales(theta, cfg.learn_first_scale))
        return float((w * e).sum()), e

    crit0, e_init = criterion()
    best_state = (C.detach().clone(), theta.detach().clone())
    best_crit, best_epoch, bad_epochs = crit0, 0, 0
    history = []
    stop_reason = "max_epochs"
    epochs_run = 0
    log.start(cfg.epochs)
    log.write(f"init ({init_seconds:.1f}s): val criterion {crit0:.5f}")
    try:
        for ep in range(cfg.epochs):
            frac = ep / max(1, cfg.epochs - 1)
            T = cfg.temperature if cfg.temperature_final is None else \
                cfg.temperature * (cfg.temperature_final / cfg.temperature) ** frac
            lr = cfg.lr if cfg.lr_final is None else cfg.lr * (cfg.lr_final / cfg.lr) ** frac
            for g in opt.param_groups:
                g["lr"] = lr
            te = time.monotonic()
            tr_loss, timed_out = _run_epoch(Xtr, C, theta, opt, cfg, w_t, T, gen, deadline)
            epochs_run = ep + 1
            crit, _ = criterion()
            history.append({"epoch": ep + 1, "train_loss": tr_loss, "val_loss": crit, "temperature": T,
                            "lr": lr, "seconds": time.monotonic() - te})
            log.epoch(history[-1])
            if Xcrit is None:
                best_state = (C.detach().clone(), theta.detach().clone())
                best_epoch = ep + 1
            elif crit < best_crit * (1 - cfg.min_delta):
                best_crit, best_epoch, bad_epochs = crit, ep + 1, 0
                best_state = (C.detach().clone(), theta.detach().clone())
            else:
                bad_epochs += 1
            if timed_out:
                stop_reason = "time_limit"
                break
            if Xcrit is not None and bad_epochs >= cfg.patience:
                stop_reason = "early_stopping"
                break
    except KeyboardInterrupt:
        stop_reason = "interrupted"
        log.write("interrupted: returning the best model so far")
    finally:
        log.close()

    with torch.no_grad():
        C.copy_(best_state[0])
        theta.copy_(best_state[1])
    s_final = _scales(theta, cfg.learn_first_scale).detach()
    prefixes = _report_prefixes(M)
    sig2 = sigma * sigma
    info = {
        "history": history,
        "train_loss": [h["train_loss"] for h in history],
        "val_loss": [h["val_loss"] for h in history],
        "val_loss_init": crit0,
        "init_history": init_hist,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "stop_reason": stop_reason,
        "seconds": time.monotonic() - t_start,
        "init_seconds": init_seconds,
        "data_scale": sigma,
        "prefix_weights": w.tolist(),
        "n_train": int(Xtr.shape[0]),
        "n_val": int(n_val),
        "config": {k: v for k, v in dataclasses.asdict(cfg).items()},
    }
    if Xcrit is not None:
        e_best = _eval_errors(Xcrit, C, s_final)
        info["val_mse_prefix"] = {m: float(e_best[m - 1] * sig2) for m in prefixes}
        info["val_mse_prefix_init"] = {m: float(e_init[m - 1] * sig2) for m in prefixes}
    codebook = np.ascontiguousarray((C.detach().double() * sigma).numpy(), dtype=np.float32)
    scales = np.ascontiguousarray(s_final.numpy(), dtype=np.float32)
    return codebook, scales, info


class _Logger:
    """tqdm bar over epochs when verbose (plain prints if tqdm is missing); silent otherwise."""

    def __init__(self, verbose: bool):
        self.verbose = verbose
        self.bar = None

    def start(self, total):
        if not self.verbose:
            return
        try:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc="DRQ train", unit="epoch")
        except ImportError:  # pragma: no cover
            self.bar = None

    def write(self, msg):
        if not self.verbose:
            return
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, flush=True)

    def epoch(self, h):
        if not self.verbose:
            return
        if self.bar is not None:
            self.bar.set_postfix(train=f"{h['train_loss']:.4f}", val=f"{h['val_loss']:.4f}",
                                 T=f"{h['temperature']:.3g}")
            self.bar.update(1)
        else:
            self.write(f"epoch {h['epoch']}: train {h['train_loss']:.5f} val {h['val_loss']:.5f}")

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def encode_greedy_torch(x, codebook, scales) -> np.ndarray:
    """Reference greedy encoder (tests only; the product encodes with the C++ core).

    Plain residual form in float64: for each step, the full distance ||r - s_m C_k||^2 is computed
    from the explicit residual (no Gram trick), then r -= s_m C_{b_m}.  Returns int64 (n, M).
    """
    X = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    C = torch.as_tensor(np.asarray(codebook), dtype=torch.float64)
    s = torch.as_tensor(np.asarray(scales), dtype=torch.float64).reshape(-1)
    if X.ndim != 2 or C.ndim != 2 or X.shape[1] != C.shape[1]:
        raise ValueError(f"encode_greedy_torch: expected x (n, d) and codebook (K, d), received "
                         f"{tuple(X.shape)} and {tuple(C.shape)}")
    n, M = X.shape[0], s.shape[0]
    codes = torch.empty((n, M), dtype=torch.int64)
    cn = (C * C).sum(1)
    chunk = 2048
    for a in range(0, n, chunk):
        r = X[a:a + chunk].clone()
        for m in range(M):
            d2 = (r * r).sum(1, keepdim=True) - 2 * s[m] * (r @ C.T) + s[m] * s[m] * cn
            b = d2.argmin(1)
            codes[a:a + chunk, m] = b
            r -= s[m] * C[b]
    return codes.numpy()
