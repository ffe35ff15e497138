"""IndexDRQFastScan (4-bit sequential codes, SIMD shuffles) vs faiss IndexPQFastScan on Fashion-MNIST.

    ONE IndexDRQFastScan model (M = 128 4-bit iterations = 64 code bytes, per-iteration 16-entry
    codebooks, drqindex.train.rq4; cached under ~/.cache/drqindex/) is encoded once and searched at
    every budget by truncation; against one faiss.IndexPQFastScan(d, 2B, 4) per budget B (and
    optionally faiss.IndexResidualQuantizerFastScan). 60k database, 10k queries, k = 100, exact
    ground truth; R@1 and 10-recall@10; queries/s = nq / median of `repeats` timed runs after a
    warm-up (the equal-bytes pair: `rounds` interleaved runs, below), same process, same thread
    count for faiss (OpenMP) and drqindex (its own pool, which
    also computes the float tables: no BLAS call during a search; OPENBLAS_NUM_THREADS is still set
    before numpy is imported, hence one subprocess per thread count, so that the rest of the
    process runs as a user's would).

    Bytes: faiss PQ4 fast scan reads B bytes per vector at budget B. DRQ-fs L2 reads ceil(m/2)
    code bytes + 1 norm byte: the "equal bytes" row uses m = 2 (B - 1) iterations (B bytes
    scanned); the index stores the norm byte of the searched prefixes only (m = 2 (B - 1) and
    2 B for each budget: 8 slots), i.e. 64 code bytes + 8 norm bytes = 72 bytes per vector, all
    budgets served by the one index ("bytes stored" in the rows). "rerank R": the quantised scan
    keeps max(k, R) candidates, whose exact float-table sums (same codes, same 8-bit norm) pick and
    order the k reported; R = k re-sorts the k kept candidates (same candidate set as R = 0).

    Paired timing of the equal-bytes comparison (faiss PQ4fs vs DRQ-fs without re-ranking): the
    two searches alternate, `rounds` times each (the order flips every round), and the drq row
    carries paired_ratio = median over rounds of t_faiss / t_drq. On this shared 2-core machine
    the q/s of one method drifted by 20 % between back-to-back blocks of runs (kernels.md of
    2026-11-26: faiss PQ4fs at 64 B, 1 thread, 3,347 q/s in part (d) and 4,104 in part (e) of the
    same run), so runs of the two methods timed minutes apart gave ratios that swung across 1.0;
    alternating runs see the same machine state.

    python benchmarks/bench_fastscan.py                  # 1 and 2 threads, markdown + json on stdout
    python benchmarks/bench_fastscan.py --threads 1 --quick
Importable: load_data, train_or_load_model, build_drq_index, bench_drq, build_faiss_pq4fs,
bench_equal_bytes_pair, paired_times, paired_ratio, bench_faiss_rq4fs, codebook_choice_experiment, run.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BYTES = (8, 16, 32, 64)
K = 100
MODEL_ITERS = 128


def _setup_path():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        import drqindex  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO / "python"))


def set_threads(n: int) -> None:
    import faiss
    import drqindex
    faiss.omp_set_num_threads(n)
    drqindex.set_num_threads(n)


def load_data(nq: int | None = None):
    """xb float32 (60000, 784), xq float32 (nq, 784), gt int64 (nq, 100)."""
    import numpy as np
    from drqindex.data import ground_truth, load_fashion_mnist
    ds = load_fashion_mnist()
    xb = np.ascontiguousarray(ds.xb, dtype=np.float32)
    xq = np.ascontiguousarray(ds.xq if nq is None else ds.xq[:nq], dtype=np.float32)
    gt = ground_truth(xb, xq, K)
    return xb, xq, gt


def _cache_dir() -> Path:
    d = Path(os.environ.get("DRQ_CACHE_DIR", Path.home() / ".cache" / "drqindex"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def train_or_load_model(xb, iters: int = MODEL_ITERS, refine_rounds: int = 2, seed: int = 0):
    """Per-iteration 4-bit codebooks float32 (iters, 16, d), trained on xb once and cached."""
    import numpy as np
    from drqindex.train.rq4 import RQ4TrainConfig, train_rq4
    key = hashlib.sha1(xb[:1000].tobytes() + f"{xb.shape}{iters}{refine_rounds}{seed}v1".encode()).hexdigest()[:12]
    path = _cache_dir() / f"fastscan_rq4_{key}.npz"
    if path.exists():
        return np.load(path)["codebooks"], json.loads(str(np.load(path)["info"]))
    t0 = time.perf_counter()
    cb, info = train_rq4(xb, RQ4TrainConfig(iters=iters, refine_rounds=refine_rounds, seed=seed))
    info["train_seconds_total"] = time.perf_counter() - t0
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, codebooks=cb, info=json.dumps(info))
    os.replace(tmp, path)
    return cb, info


def searched_prefixes(iters: int = MODEL_ITERS) -> list:
    """Prefix lengths run() searches: 2 (B - 1) (B bytes scanned) and 2 B (B code bytes + norm)."""
    return sorted({m for B in BYTES for m in (2 * (B - 1), 2 * B) if m <= iters})


def build_drq_index(codebooks, xb, metric=None, norm_prefixes=None):
    """norm_prefixes None: one norm byte per even prefix (IndexDRQFastScan's default)."""
    import drqindex
    metric = drqindex.METRIC_L2 if metric is None else metric
    idx = drqindex.IndexDRQFastScan(xb.shape[1], codebooks.shape[0], metric, norm_prefixes=norm_prefixes)
    idx.set_codebooks(codebooks, xb[:20000])
    idx.add(xb)
    return idx


def _recalls(I, gt):
    from drqindex.data import k_recall_at_k, recall_at
    return recall_at(I, gt, 1), k_recall_at_k(I, gt, 10)


def _timed(fn, repeats):
    import statistics
    fn()
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def paired_times(fn_a, fn_b, rounds: int):
    """Alternating timed runs of two searches after one warm-up each: (seconds of a, seconds of b,
    last result of a, last result of b), `rounds` runs each; b runs first in every other round so
    that neither method always follows the other."""
    out_a, out_b = fn_a(), fn_b()
    times_a, times_b = [], []
    for r in range(rounds):
        for which in ((0, 1) if r % 2 == 0 else (1, 0)):
            t0 = time.perf_counter()
            if which == 0:
                out_a = fn_a()
                times_a.append(time.perf_counter() - t0)
            else:
                out_b = fn_b()
                times_b.append(time.perf_counter() - t0)
    return times_a, times_b, out_a, out_b


def paired_ratio(times_slow, times_fast) -> float:
    """Median over rounds of t_slow / t_fast: the speed of `fast` relative to `slow` per round."""
    import statistics
    return statistics.median(a / b for a, b in zip(times_slow, times_fast))


def _drq_row(idx, xq, gt, iters: int, rerank: int, sec: float, I) -> dict:
    r1, r10 = _recalls(I, gt)
    return {"method": "DRQ-fs" + (f" rerank{rerank}" if rerank else ""), "iters": iters,
            "bytes_scanned": idx.bytes_scanned(iters), "bytes_stored": idx.code_size,
            "R@1": r1, "10-R@10": r10, "qps": xq.shape[0] / sec}


def bench_drq(idx, xq, gt, iters: int, rerank: int = 0, repeats: int = 3) -> dict:
    sec, (D, I) = _timed(lambda: idx.search(xq, K, iters=iters, rerank=rerank), repeats)
    return _drq_row(idx, xq, gt, iters, rerank, sec, I)


def build_faiss_pq4fs(xb, nbytes: int):
    """(trained faiss index with xb added, the IndexPQFastScan inside it, its row fields without
    timings) for budget nbytes; the caller holds the second item while it uses the index."""
    import faiss
    d, M = xb.shape[1], 2 * nbytes
    dp = -(-d // M) * M  # 784 is not a multiple of 32 / 64 / 128: zero-pad (distances unchanged)
    pq = faiss.IndexPQFastScan(dp, M, 4)
    index = pq if dp == d else faiss.IndexPreTransform(faiss.RemapDimensionsTransform(d, dp, True), pq)
    t0 = time.perf_counter()
    index.train(xb)
    train_s = time.perf_counter() - t0
    index.add(xb)
    return index, pq, {"method": "faiss PQ4fs" + (f" (d padded to {dp})" if dp != d else ""), "iters": 2 * nbytes,
                   "bytes_scanned": nbytes, "bytes_stored": nbytes, "train_s": train_s}


def bench_equal_bytes_pair(idx, xb, xq, gt, nbytes: int, rounds: int = 7) -> list:
    """faiss PQ4fs at nbytes and DRQ-fs at 2 (nbytes - 1) iterations (nbytes scanned, no
    re-ranking), timed alternately (paired_times): [faiss row, drq row]; each row's qps is nq /
    the median of its runs, the drq row also has paired_ratio (drq / faiss speed, median of rounds)."""
    import statistics
    index, pq, frow = build_faiss_pq4fs(xb, nbytes)
    iters = 2 * (nbytes - 1)
    t_faiss, t_drq, (_, I_faiss), (_, I_drq) = paired_times(
        lambda: index.search(xq, K), lambda: idx.search(xq, K, iters=iters, rerank=0), rounds)
    r1, r10 = _recalls(I_faiss, gt)
    frow.update({"R@1": r1, "10-R@10": r10, "qps": xq.shape[0] / statistics.median(t_faiss)})
    drow = _drq_row(idx, xq, gt, iters, 0, statistics.median(t_drq), I_drq)
    drow.update({"paired_ratio": paired_ratio(t_faiss, t_drq), "paired_rounds": rounds})
    return [frow, drow]


def bench_faiss_rq4fs(xb, xq, gt, nbytes: int, repeats: int = 3) -> dict:
    """faiss IndexResidualQuantizerFastScan with 2 (B - 1) 4-bit codes + its 2 x 4-bit norm codes (B bytes)."""
    import faiss
    index = faiss.IndexResidualQuantizerFastScan(xb.shape[1], 2 * (nbytes - 1), 4, faiss.METRIC_L2,
                                                 faiss.AdditiveQuantizer.ST_norm_rq2x4)
    index.rq.max_beam_size = 1
    t0 = time.perf_counter()
    index.train(xb)
    train_s = time.perf_counter() - t0
    index.add(xb)
    sec, (D, I) = _timed(lambda: index.search(xq, K), repeats)
    r1, r10 = _recalls(I, gt)
    return {"method": "faiss RQ4fs (beam 1)", "iters": 2 * (nbytes - 1), "bytes_scanned": nbytes,
            "bytes_stored": nbytes, "R@1": r1, "10-R@10": r10, "qps": xq.shape[0] / sec, "train_s": train_s}


def codebook_choice_experiment(n_train: int = 20000, nq: int = 2000, iters: int = 16) -> list:
    """Shared 16-entry codebook + per-iteration scales (the 8-bit DRQ design at K = 16, torch trainer)
    vs per-iteration 4-bit codebooks (greedy, and greedy + prefix least squares): R@1 of exact
    search over the reconstructions of the 60k database, 2k queries."""
    import numpy as np
    import torch
    from drqindex.train import DRQTrainConfig, train_drq
    from drqindex.train.rq4 import RQ4TrainConfig, decode_rq4, encode_rq4, train_rq4
    torch.set_num_threads(1)
    xb, xq, gt = load_data(nq)
    xt = xb[:n_train]

    def r1(xhat):
        d = (xhat * xhat).sum(1)[None, :] - 2.0 * (xq @ xhat.T)
        return float((np.argmin(d, axis=1) == gt[:, 0]).mean())

    rows = []
    t0 = time.perf_counter()
    C, s, _ = train_drq(xt, DRQTrainConfig(iters=iters, K=16, num_threads=1, max_seconds=120))
    shared = np.stack([s[j] * C for j in range(iters)]).astype(np.float32)
    rows.append(("shared 16 x d codebook + per-iteration scales", shared, time.perf_counter() - t0))
    for rounds, name in ((0, "per-iteration codebooks, greedy"), (2, "per-iteration codebooks, greedy + prefix LS")):
        t0 = time.perf_counter()
        cb, _ = train_rq4(xt, RQ4TrainConfig(iters=iters, refine_rounds=rounds))
        rows.append((name, cb, time.perf_counter() - t0))
    out = []
    for name, cb, sec in rows:
        codes = encode_rq4(xb, cb)
        rec = {m: r1(decode_rq4(codes, cb, m)) for m in (4, 8, 16) if m <= iters}
        out.append({"model": name, "train_s": sec, **{f"R@1 {m // 2}B": v for m, v in rec.items()}})
    return out


def run(threads: int, quick: bool = False, repeats: int = 3, rq: bool = False, rounds: int = 7) -> list:
    """All rows for one thread count (call in a process whose OPENBLAS_NUM_THREADS = threads)."""
    xb, xq, gt = load_data(1000 if quick else None)
    set_threads(threads)
    cb, info = train_or_load_model(xb)
    idx = build_drq_index(cb, xb, norm_prefixes=searched_prefixes(cb.shape[0]))
    rows = []
    for B in BYTES:
        rows += bench_equal_bytes_pair(idx, xb, xq, gt, B, rounds)      # equal bytes scanned, paired
        if rq and B <= 16:
            rows.append(bench_faiss_rq4fs(xb, xq, gt, B, repeats))
        rows.append(bench_drq(idx, xq, gt, 2 * (B - 1), K, repeats))       # + exact float re-sort of the k kept
        rows.append(bench_drq(idx, xq, gt, 2 * (B - 1), 2 * K, repeats))   # + exact re-rank of 2k
        if 2 * B <= idx.iters:
            rows.append(bench_drq(idx, xq, gt, 2 * B, K, repeats))         # B code bytes + norm byte
    for r in rows:
        r["threads"] = threads
        r["B"] = next(b for b in BYTES if r["bytes_scanned"] <= b + 1)
    return rows


def markdown(rows) -> str:
    head = "| threads | budget B | method | iters | bytes scanned | bytes stored | R@1 | 10-R@10 | q/s |\n"
    head += "|---|---|---|---|---|---|---|---|---|\n"
    for r in rows:
        head += (f"| {r['threads']} | {r['B']} | {r['method']} | {r['iters']} | {r['bytes_scanned']} | "
                 f"{r['bytes_stored']} | {r['R@1']:.4f} | {r['10-R@10']:.4f} | {r['qps']:,.0f} |\n")
    return head


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    p.add_argument("--quick", action="store_true", help="1k queries")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=7,
                   help="alternating timed runs of faiss PQ4fs and DRQ-fs at equal bytes (paired ratio)")
    p.add_argument("--rq", action="store_true", help="also faiss IndexResidualQuantizerFastScan at 8 / 16 B")
    p.add_argument("--codebook-experiment", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:  # one thread count, OPENBLAS_NUM_THREADS already set by the parent
        _setup_path()
        rows = run(args.threads[0], args.quick, args.repeats, args.rq, args.rounds)
        print("ROWS " + json.dumps(rows), flush=True)
        return
    if args.codebook_experiment:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        _setup_path()
        for row in codebook_choice_experiment():
            print(row, flush=True)
        return
    all_rows = []
    for t in args.threads:
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(t), OMP_NUM_THREADS=str(t))
        cmd = [sys.executable, __file__, "--child", "--threads", str(t), "--repeats", str(args.repeats),
               "--rounds", str(args.rounds)]
        cmd += ["--quick"] if args.quick else []
        cmd += ["--rq"] if args.rq else []
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            sys.stderr.write(out.stdout + out.stderr)
            raise SystemExit(out.returncode)
        all_rows += json.loads(next(line for line in out.stdout.splitlines() if line.startswith("ROWS "))[5:])
    print(markdown(all_rows))
    print(json.dumps(all_rows))


if __name__ == "__main__":
    main()
