"""Recall measures used by the benchmarks (numpy only).

Both compare result ids I (nq, k) from an index with exact ground-truth ids gt (nq, >=k) by id,
nearest first. Entries of I equal to -1 (fewer results than asked) never count as hits.

recall_at(I, gt, r)      "1-recall@r" / R@r: fraction of queries whose true nearest neighbour gt[:, 0]
                         appears among the first r results (faiss's and the PQ papers' R@r).
k_recall_at_k(I, gt, k)  "k-recall@k" (e.g. 10-recall@10): |first k results ∩ true k nearest| / k,
                         averaged over queries (ann-benchmarks' recall, by id rather than by distance).

Label-relevance measures for binary hash codes (the deep-hashing protocol: a database item is relevant
to a query when their class labels are equal; the database is ranked by Hamming distance, ties in
database order, i.e. a stable sort):
mean_average_precision(codes_q, labels_q, codes_db, labels_db, nbits)    mAP@all
precision_at(codes_q, labels_q, codes_db, labels_db, nbits, n=100)       mean precision of the first n
Codes are uint8 (n, bytes) packed LSB-first (faiss binary layout); nbits selects the first nbits bits.
"""
from __future__ import annotations

import numpy as np

__all__ = ["recall_at", "k_recall_at_k", "hamming_distances", "mean_average_precision", "precision_at",
           "hamming_ranking_metrics"]

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


# ----------------------------------------------------------------------------------------------
# Hamming ranking with class-label relevance

_RANK_CHUNK = 128  # queries per block: bounds the (chunk, nb) distance / order / relevance arrays


def _check_codes(codes_q, labels_q, codes_db, labels_db, nbits, name):
    for what, c in (("codes_q", codes_q), ("codes_db", codes_db)):
        if not isinstance(c, np.ndarray):
            raise TypeError(f"{name}: expected {what} as a numpy uint8 array (n, bytes), got {type(c).__name__}")
        if c.dtype != np.uint8 or c.ndim != 2:
            raise TypeError(f"{name}: expected {what} uint8 (n, bytes), got {c.shape} {c.dtype}")
    if codes_q.shape[1] != codes_db.shape[1]:
        raise ValueError(f"{name}: codes_q has {codes_q.shape[1]} bytes per code, codes_db {codes_db.shape[1]}; "
                         "expected equal")
    labels_q = np.asarray(labels_q)
    labels_db = np.asarray(labels_db)
    for what, lab, c in (("labels_q", labels_q, codes_q), ("labels_db", labels_db, codes_db)):
        if lab.ndim != 1 or lab.shape[0] != c.shape[0]:
            raise ValueError(f"{name}: expected {what} of shape ({c.shape[0]},) (one per code), got {lab.shape}")
        if not np.issubdtype(lab.dtype, np.integer):
            raise TypeError(f"{name}: expected integer {what}, got {lab.dtype}")
    if nbits is None:
        nbits = 8 * codes_q.shape[1]
    if isinstance(nbits, (bool, np.bool_)) or not isinstance(nbits, (int, np.integer)):
        raise TypeError(f"{name}: expected an int nbits, got {type(nbits).__name__} {nbits!r}")
    nbits = int(nbits)
    if not 1 <= nbits <= 8 * codes_q.shape[1]:
        raise ValueError(f"{name}: expected 1 <= nbits <= {8 * codes_q.shape[1]} (the code length), got {nbits}")
    return labels_q.astype(np.int64), labels_db.astype(np.int64), nbits


def _prefix_words(codes: np.ndarray, nbits: int) -> np.ndarray:
    """The first nbits bits of each code as uint64 words (n, ceil(nbits / 64)), higher bits zeroed."""
    nbytes = -(-nbits // 8)
    c = codes[:, :nbytes].copy()
    if nbits % 8:
        c[:, -1] &= np.uint8((1 << (nbits % 8)) - 1)
    pad = (-nbytes) % 8
    if pad:
        c = np.concatenate([c, np.zeros((c.shape[0], pad), np.uint8)], axis=1)
    return np.ascontiguousarray(c).view(np.uint64)


def hamming_distances(codes_q, codes_db, nbits=None) -> np.ndarray:
    """(nq, nb) uint16 Hamming distances between the first nbits bits of packed uint8 codes."""
    codes_q = np.asarray(codes_q, dtype=np.uint8)
    codes_db = np.asarray(codes_db, dtype=np.uint8)
    nbits = 8 * codes_q.shape[1] if nbits is None else int(nbits)
    wq, wd = _prefix_words(codes_q, nbits), _prefix_words(codes_db, nbits)
    out = np.zeros((wq.shape[0], wd.shape[0]), dtype=np.uint16)
    for w in range(wq.shape[1]):
        out += np.bitwise_count(wq[:, w:w + 1] ^ wd[None, :, w]).astype(np.uint16)
    return out


def _compact_labels(lq, ld):
    """Labels in the smallest int dtype that holds both sets: gathering int8 is ~7x faster than int64."""
    lo = min(lq.min(initial=0), ld.min(initial=0))
    hi = max(lq.max(initial=0), ld.max(initial=0))
    for t in (np.int8, np.int16, np.int32):
        if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max:
            return lq.astype(t), ld.astype(t)
    return lq, ld


def _rank_stats(codes_q, lq, codes_db, ld, nbits, ns):
    """(sum over queries of AP, [sum over queries of precision@n for n in ns]) of stable Hamming ranking."""
    nq = codes_q.shape[0]
    lq, ld = _compact_labels(lq, ld)
    ap_total = 0.0
    prec_total = [0.0] * len(ns)
    for s in range(0, nq, _RANK_CHUNK):
        d = hamming_distances(codes_q[s:s + _RANK_CHUNK], codes_db, nbits)
        c = d.shape[0]
        if nbits < 256:
            d = d.astype(np.uint8)
        # kind="stable" on an integer dtype of <= 16 bits is numpy's radix sort: O(nb) per query, and
        # stable, i.e. ties keep database order.
        order = np.argsort(d, axis=1, kind="stable")
        rel = ld[order] == lq[s:s + c, None]          # (c, nb) relevance in ranked order
        for i, n in enumerate(ns):
            prec_total[i] += float(np.count_nonzero(rel[:, :n])) / n
        # AP without a (c, nb) cumsum: the i-th relevant item of a row (1-based) at 0-based rank p
        # contributes i / (p + 1).
        rows, pos = np.nonzero(rel)
        counts = np.bincount(rows, minlength=c)
        starts = np.cumsum(counts) - counts
        ith = np.arange(1, rows.size + 1, dtype=np.float64) - starts[rows]
        ap_sum = np.bincount(rows, weights=ith / (pos + 1.0), minlength=c)
        ap_total += float((ap_sum[counts > 0] / counts[counts > 0]).sum())  # R = 0: AP 0
    return ap_total, prec_total


def _check_n(n, name):
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name}: expected an int n >= 1, got {n!r}")
    return int(n)


def hamming_ranking_metrics(codes_q, labels_q, codes_db, labels_db, nbits=None, ns=(100,)) -> dict:
    """{"mAP": mAP@all, "P@n": precision@n for n in ns} from one ranking pass (see the two functions below)."""
    lq, ld, nbits = _check_codes(codes_q, labels_q, codes_db, labels_db, nbits, "hamming_ranking_metrics")
    ns = [_check_n(n, "hamming_ranking_metrics") for n in ns]
    nq, nb = codes_q.shape[0], codes_db.shape[0]
    if nq == 0 or nb == 0:
        return {"mAP": float("nan") if nq == 0 else 0.0, **{f"P@{n}": float("nan") for n in ns}}
    ap, prec = _rank_stats(codes_q, lq, codes_db, ld, nbits, [min(n, nb) for n in ns])
    return {"mAP": ap / nq, **{f"P@{n}": p / nq for n, p in zip(ns, prec)}}


def mean_average_precision(codes_q, labels_q, codes_db, labels_db, nbits=None) -> float:
    """mAP@all of Hamming ranking (the deep-hashing protocol): relevant = same label, ties in database order.

    AP of a query = (1 / R) * sum over relevant items at rank r (1-based) of (#relevant in the first r) / r,
    R = number of relevant database items; queries with R = 0 count as AP 0.  Vectorised over blocks of
    queries (10k queries x 60k database: ~10-20 s on one core)."""
    lq, ld, nbits = _check_codes(codes_q, labels_q, codes_db, labels_db, nbits, "mean_average_precision")
    nq, nb = codes_q.shape[0], codes_db.shape[0]
    if nq == 0:
        return float("nan")
    if nb == 0:
        return 0.0
    return _rank_stats(codes_q, lq, codes_db, ld, nbits, [])[0] / nq


def precision_at(codes_q, labels_q, codes_db, labels_db, nbits=None, n: int = 100) -> float:
    """Mean over queries of the fraction of same-label items among the first n of the Hamming ranking
    (ties in database order; n larger than the database is clipped to it)."""
    lq, ld, nbits = _check_codes(codes_q, labels_q, codes_db, labels_db, nbits, "precision_at")
    n = _check_n(n, "precision_at")
    nq, nb = codes_q.shape[0], codes_db.shape[0]
    if nq == 0 or nb == 0:
        return float("nan")
    return _rank_stats(codes_q, lq, codes_db, ld, nbits, [min(n, nb)])[1][0] / nq
