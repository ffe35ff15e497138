"""Recall measures used by the benchmarks (numpy only).

Both compare result ids I (nq, k) from an index with exact ground-truth ids gt (nq, >=k) by id,
nearest first. Entries of I equal to -1 (fewer results than asked) never count as hits.

recall_at(I, gt, r)      "1-recall@r" / R@r: fraction of queries whose true nearest neighbour gt[:, 0]
                         appears among the first r results (faiss's and the PQ papers' R@r).
k_recall_at_k(I, gt, k)  "k-recall@k" (e.g. 10-recall@10): |first k results ∩ true k nearest| / k,
                         averaged over queries (ann-benchmarks' recall, by id rather than by distance).
"""
from __future__ import annotations

import numpy as np

__all__ = ["recall_at", "k_recall_at_k"]

_CHUNK = 2048  # queries per block in k_recall_at_k: bounds the (chunk, k, k) comparison tensor


def _check(I, gt, r: int, name: str, need_gt: int):
    I = np.asarray(I)
    gt = np.asarray(gt)
    if I.ndim != 2 or gt.ndim != 2:
        raise ValueError(f"{name}: expected 2-d I (nq, k) and gt (nq, k_gt), got {I.shape} and {gt.shape}")
    if I.shape[0] != gt.shape[0]:
        raise ValueError(f"{name}: I has {I.shape[0]} queries but gt has {gt.shape[0]}; expected equal counts")
    if not (np.issubdtype(I.dtype, np.integer) and np.issubdtype(gt.dtype, np.integer)):
        raise TypeError(f"{name}: expected integer id arrays, got {I.dtype} and {gt.dtype}")
    r = int(r)
    if r < 1:
        raise ValueError(f"{name}: expected r >= 1, got {r}")
    if I.shape[1] < r:
        raise ValueError(f"{name}: I holds {I.shape[1]} results per query, fewer than r = {r}")
    if gt.shape[1] < need_gt:
        raise ValueError(f"{name}: gt holds {gt.shape[1]} neighbours per query, need at least {need_gt}")
    return I, gt, r


def recall_at(I, gt, r: int) -> float:
    """R@r ("1-recall@r"): fraction of queries whose true nearest neighbour gt[:, 0] is in I[:, :r]."""
    I, gt, r = _check(I, gt, r, "recall_at", need_gt=1)
    if I.shape[0] == 0:
        return float("nan")
    nn = gt[:, :1]
    hit = (I[:, :r] == nn) & (nn >= 0)
    return float(hit.any(axis=1).mean())


def k_recall_at_k(I, gt, k: int) -> float:
    """k-recall@k: mean over queries of |I[:, :k] ∩ gt[:, :k]| / k (duplicates in I count once)."""
    I, gt, k = _check(I, gt, k, "k_recall_at_k", need_gt=k)
    nq = I.shape[0]
    if nq == 0:
        return float("nan")
    hits = 0
    for s in range(0, nq, _CHUNK):
        Ic = I[s:s + _CHUNK, :k]
        gc = gt[s:s + _CHUNK, :k]
        # for every true neighbour: is it anywhere among the first k results?  (counts each true id once)
        found = (gc[:, :, None] == Ic[:, None, :]).any(axis=2) & (gc >= 0)
        hits += int(found.sum())
    return hits / (nq * k)
