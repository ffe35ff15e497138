#!/usr/bin/env python
"""Search kernels at the speed limit: drqindex's 8-bit ADC scan against faiss, and against memory.

Four parts, all measured in one run (so ratios are comparable on a machine shared with other jobs):
  (a) scan micro-benchmark: random codes + random tables (stated as such; the data do not
      change the work of an exhaustive scan), n = 1e5 / 1e6 / 1e7 codes at 8/16/32/64 bytes, a batch
      of 8 queries and a single query: codes scanned per second per core, and the bytes read per second
      (code bytes + the 4-byte L2 norm) against a STREAM-like copy bandwidth (numpy copy of a 256 MiB
      array, read + write counted) measured with 1 and 2 threads;
  (b) Fashion-MNIST, 1 and 2 threads: batch queries/s (10k queries, k = 100) and one-query-at-a-time
      latency (median, p99) for IndexDRQ.search(iters = bytes) and faiss IndexPQ(d, bytes, 8);
  (c) re-ranking: drqindex.IndexRefineFlat (codes give k * k_factor candidates, raw vectors re-rank)
      for a k_factor sweep, 10-recall@10 and R@1 vs queries/s;
  (d) the Fashion-MNIST ratios (queries/s, same thread count) of drqindex vs faiss IndexPQ and
      IndexPQFastScan (4-bit, 2 * bytes sub-quantizers, the same bytes per code) at 8/16/32/64 B.

The DRQ model (M = 64, one model for every prefix) is trained once with drqindex.train and cached
in ~/.cache/drqindex (or $DRQ_CACHE_DIR), keyed by the training data and options, so reruns only
encode and search. faiss quantizers are trained in every run (seconds).

    python benchmarks/bench_kernels.py --threads 2          # full run
    python benchmarks/bench_kernels.py --quick              # smoke run (~1-2 minutes)

Writes <out-dir>/kernels.md, kernels.json and kernels_recall_qps.png (default benchmarks/results,
or benchmarks/results/quick with --quick).
"""
from __future__ import annotations

import os
import sys


def _early_threads() -> None:
    # The query look-up tables (one GEMM per batch) run with ONE BLAS thread in every measurement:
    # conservative for drqindex at 2 threads. faiss's OpenMP threads sleep rather than spin.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from thread_env import omp_passive, set_pool_threads
    set_pool_threads(1, only_if_unset=True)
    if "OMP_WAIT_POLICY" not in os.environ:
        omp_passive()


if __name__ == "__main__":
    _early_threads()

import argparse  # noqa: E402
import hashlib  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    import_drqindex,
    Timer,
    log,
    machine_info,
    markdown_table,
    write_json,
    write_text,
)

REPO = Path(__file__).resolve().parent.parent
import_drqindex()  # noqa: E402
import drqindex  # noqa: E402
from drqindex import _core  # noqa: E402
from drqindex.data import default_cache_dir, ground_truth, k_recall_at_k, load_fashion_mnist, recall_at  # noqa: E402

K_SEARCH = 100
BYTES = (8, 16, 32, 64)
STEM = "kernels"


# ==============================================================================================
# arguments

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 10k database, 1k queries, a 60 s DRQ model, scan sizes 1e5 and 1e6")
    p.add_argument("--threads", type=int, default=2, help="the larger thread count (runs use 1 and this)")
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument("--data-dir", default=None, help="directory with the 4 Fashion-MNIST idx files")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="model and ground-truth cache (default $DRQ_CACHE_DIR or ~/.cache/drqindex)")
    p.add_argument("--train-seconds", type=float, default=None,
                   help="DRQ training budget (DRQTrainConfig.max_seconds; default 600, quick 60)")
    p.add_argument("--scan-sizes", default=None, help="comma-separated n for part (a) (default 1e5,1e6,1e7)")
    p.add_argument("--latency-queries", type=int, default=None, help="queries timed one at a time (default 200)")
    p.add_argument("--repeats", type=int, default=3, help="timed batch runs (median) after a warm-up")
    p.add_argument("--k-factors", default="1,2,4,16", help="IndexRefineFlat k_factor sweep (k = 10)")
    p.add_argument("--refine-queries", type=int, default=2000, help="queries for the re-ranking sweep")
    p.add_argument("--skip-fastscan", action="store_true", help="leave out part (e), the 4-bit fast-scan")
    p.add_argument("--fastscan-json", type=Path, default=None,
                   help="rows printed by bench_fastscan.py (its last line) instead of running it (see extra_curves)")
    args = p.parse_args(argv)
    if args.out_dir is None:
        args.out_dir = REPO / "benchmarks" / "results" / ("quick" if args.quick else "")
    args.cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if args.train_seconds is None:
        args.train_seconds = 60.0 if args.quick else 600.0
    if args.scan_sizes is None:
        args.scan_sizes = "1e5,1e6" if args.quick else "1e5,1e6,1e7"
    args.scan_sizes = [int(float(s)) for s in args.scan_sizes.split(",")]
    if args.latency_queries is None:
        args.latency_queries = 50 if args.quick else 200
    args.k_factors = [float(s) for s in args.k_factors.split(",")]
    args.thread_counts = sorted({1, max(1, args.threads)})
    return args


def set_threads(n: int) -> None:
    import faiss

    faiss.omp_set_num_threads(n)
    _core.set_num_threads(n)


# ==============================================================================================
# (a) memory bandwidth and the scan alone

def copy_bandwidth(threads: int, mib: int = 256, repeats: int = 5) -> float:
    """STREAM-like copy: GB/s (1e9 bytes) of read + write traffic, best of `repeats`, each of
    `threads` Python threads copying its share (numpy releases the GIL for the copy)."""
    n = mib * (1 << 20) // 4
    src = np.ones(n, np.float32)
    dst = np.empty_like(src)
    parts = np.array_split(np.arange(n), threads)
    bounds = [(int(p[0]), int(p[-1]) + 1) for p in parts]

    def work(lo, hi):
        np.copyto(dst[lo:hi], src[lo:hi])

    best = float("inf")
    for _ in range(repeats):
        ts = [threading.Thread(target=work, args=b) for b in bounds]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def random_store(n: int, m: int, rng) -> "_core.CodeStore":
    """A CodeStore of n random m-byte codes (norms: random floats), added in chunks to bound memory."""
    store = _core.CodeStore(m)
    chunk = 1 << 20
    for start in range(0, n, chunk):
        c = min(chunk, n - start)
        codes = rng.integers(0, 256, size=(c, m), dtype=np.uint8)
        norms = rng.uniform(1.0, 2.0, size=(c, m)).astype(np.float32)
        store.add(codes, norms, np.arange(start, start + c, dtype=np.int64))
    return store


def scan_microbench(args) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for n in args.scan_sizes:
        for m in BYTES:
            need = n * m * 5 + n * 8  # codes + per-prefix norms + ids held by the store
            if need > _available_memory() * 0.5:
                log(f"  scan n={n:.0e} m={m}: skipped, needs {need / 1e9:.1f} GB")
                continue
            store = random_store(n, m, rng)
            scales = (0.9 ** np.arange(m)).astype(np.float32)
            for threads in args.thread_counts:
                set_threads(threads)
                for nq in (8, 1):
                    tables = rng.standard_normal((nq, 256)).astype(np.float32)
                    qnorms = np.ones(nq, np.float32)
                    # k = 10: the top-k work is small and the scan dominates.
                    run = lambda: _core.search(store, tables, qnorms, scales, m, 10, 0)  # noqa: E731
                    reps = 3 if n * m * nq <= 1e9 else 1
                    run()
                    ts = []
                    for _ in range(reps):
                        t0 = time.perf_counter()
                        run()
                        ts.append(time.perf_counter() - t0)
                    t = min(ts)
                    codes_per_s = nq * n / t
                    rows.append({"n": n, "bytes": m, "threads": threads, "nq": nq, "seconds": t,
                                 "codes_per_s_per_core": codes_per_s / threads,
                                 "lookups_per_s": codes_per_s * m,
                                 "bytes_per_s": codes_per_s * (m + 4)})
                    log(f"  scan n={n:.0e} m={m} threads={threads} nq={nq}: "
                        f"{codes_per_s / threads / 1e6:.0f} M codes/s/core, {codes_per_s * (m + 4) / 1e9:.1f} GB/s")
            del store
    return rows


def _available_memory() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 4e9


# ==============================================================================================
# the trained DRQ model, cached

def drq_model(xt: np.ndarray, args):
    from drqindex.quantizer import DRQQuantizer

    options = {"iters": 64, "max_seconds": args.train_seconds, "num_threads": 1, "seed": 0}
    if args.quick:
        options["epochs"] = 2
    h = hashlib.blake2b(digest_size=12)
    h.update(repr(sorted(options.items())).encode())
    h.update(str(xt.shape).encode())
    h.update(xt[:: max(1, xt.shape[0] // 512)].tobytes())
    path = args.cache_dir / f"bench_kernels_drq_{h.hexdigest()}.npz"
    if path.exists():
        z = np.load(path)
        log(f"DRQ model: cached {path}")
        return DRQQuantizer(z["codebook"], z["scales"]), {"cached": str(path), "options": options}
    from drqindex.train.drq import DRQTrainConfig, train_drq

    log(f"DRQ model: training M=64 on {xt.shape[0]} vectors, options {options}")
    with Timer() as t:
        codebook, scales, _ = train_drq(xt, DRQTrainConfig(**options))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, codebook=codebook, scales=scales)
    os.replace(tmp, path)
    log(f"  trained in {t.s:.0f} s, cached at {path}")
    return DRQQuantizer(codebook, scales), {"trained_s": t.s, "cached": str(path), "options": options}


# ==============================================================================================
# faiss baselines

def _padded(d: int, nsub: int) -> int:
    return -(-d // nsub) * nsub


def faiss_index(kind: str, d: int, nbytes: int):
    """IndexPQ(d, nbytes, 8) or IndexPQFastScan(d, 2 * nbytes, 4): nbytes of code per vector.
    When the sub-quantizer count does not divide d, zero dims are added (uniformly spread), which
    changes no L2 distance. Returns (index, description, refs to keep alive)."""
    import faiss

    nsub = nbytes if kind == "pq" else 2 * nbytes
    dp = _padded(d, nsub)
    inner = faiss.IndexPQ(dp, nsub, 8) if kind == "pq" else faiss.IndexPQFastScan(dp, nsub, 4)
    desc = f"IndexPQ({dp}, {nsub}, 8)" if kind == "pq" else f"IndexPQFastScan({dp}, {nsub}, 4)"
    if dp == d:
        return inner, desc, []
    remap = faiss.RemapDimensionsTransform(d, dp, True)
    return faiss.IndexPreTransform(remap, inner), f"pad {d}->{dp} + {desc}", [remap, inner]


# ==============================================================================================
# timing helpers

def batch_qps(search, xq, repeats: int):
    """(median queries/s over `repeats` timed runs after a warm-up on the first 1000 queries, I of
    the last run). A method whose run takes more than 10 s is timed once (the run is long enough)."""
    search(xq[:1000])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, I = search(xq)
        times.append(time.perf_counter() - t0)
        if times[-1] > 10:
            break
    return xq.shape[0] / statistics.median(times), I


def latency(search, xq, nq: int):
    """Median and p99 milliseconds of single-query searches (Python call included, both libraries)."""
    ts = []
    for i in range(nq):
        q = xq[i:i + 1]
        t0 = time.perf_counter()
        search(q)
        ts.append(time.perf_counter() - t0)
    ts = np.array(ts) * 1e3
    return float(np.median(ts)), float(np.percentile(ts, 99))


def recalls(I, gt):
    return {"R@1": recall_at(I, gt, 1), "10-R@10": k_recall_at_k(I, gt, 10)}


# ==============================================================================================
# (b), (c), (d): Fashion-MNIST

def fashion_runs(args):
    import faiss

    ds = load_fashion_mnist(args.data_dir)
    if args.quick:
        ds = ds.subsample(10000, 1000)
    xb, xq = ds.xb, ds.xq
    d = xb.shape[1]
    gt = ground_truth(xb, xq, k=K_SEARCH, cache_dir=args.cache_dir)
    quantizer, model_info = drq_model(xb, args)

    index = drqindex.IndexDRQ(d, 64)
    index.set_quantizer(quantizer)
    with Timer() as t:
        index.add(xb)
    log(f"drqindex: encoded {xb.shape[0]} x 64 B in {t.s:.1f} s")

    rows, refine_rows = [], []
    faiss_train = xb[np.random.default_rng(0).choice(xb.shape[0], min(xb.shape[0], 20000), replace=False)]
    faiss_indexes = {}
    for nbytes in BYTES:
        for kind in ("pq", "pqfs"):
            idx, desc, refs = faiss_index(kind, d, nbytes)
            set_threads(args.threads)
            with Timer() as t:
                idx.train(faiss_train)
                idx.add(xb)
            faiss_indexes[(kind, nbytes)] = (idx, desc, refs)
            log(f"faiss {desc}: train + add {t.s:.1f} s")

    for threads in args.thread_counts:
        set_threads(threads)
        for nbytes in BYTES:
            methods = [("drqindex", f"IndexDRQ(784, 64).search(iters={nbytes})",
                        lambda q, m=nbytes: index.search(q, K_SEARCH, iters=m))]
            for kind, name in (("pq", "faiss IndexPQ"), ("pqfs", "faiss IndexPQFastScan")):
                idx, desc, _ = faiss_indexes[(kind, nbytes)]
                methods.append((name, desc, lambda q, i=idx: i.search(q, K_SEARCH)))
            for name, desc, search in methods:
                qps, I = batch_qps(search, xq, args.repeats)
                lat = latency(search, xq, args.latency_queries) if name != "faiss IndexPQFastScan" else (None, None)
                rows.append({"method": name, "index": desc, "bytes": nbytes, "threads": threads, "qps": qps,
                             "latency_median_ms": lat[0], "latency_p99_ms": lat[1], **recalls(I, gt)})
                log(f"  {threads}T {nbytes:2d} B {name:22s} {qps:8.0f} q/s  10-R@10 {rows[-1]['10-R@10']:.3f}"
                    + (f"  latency {lat[0]:.2f} / p99 {lat[1]:.2f} ms" if lat[0] is not None else ""))

    # (c) re-ranking with the raw vectors, at the larger thread count
    set_threads(args.threads)
    refine = drqindex.IndexRefineFlat(_fresh_drq(d, quantizer))
    refine.add(xb)
    xq_refine, gt_refine = xq[:args.refine_queries], gt[:args.refine_queries]
    for nbytes in BYTES:
        for kf in args.k_factors:
            refine.k_factor = kf
            qps, I = batch_qps(lambda q, m=nbytes: refine.search(q, 10, iters=m), xq_refine, args.repeats)
            refine_rows.append({"bytes": nbytes, "k_factor": kf, "shortlist": int(10 * kf), "threads": args.threads,
                                "qps": qps, **recalls(I, gt_refine)})
            log(f"  refine {nbytes:2d} B k'={int(10 * kf):4d}: {qps:8.0f} q/s  10-R@10 {refine_rows[-1]['10-R@10']:.3f}")
    return rows, refine_rows, {"nb": xb.shape[0], "nq": xq.shape[0], "d": d, "model": model_info,
                               "dataset": str(ds.path)}


def _fresh_drq(d, quantizer):
    base = drqindex.IndexDRQ(d, 64)
    base.set_quantizer(quantizer)
    return base


# ==============================================================================================
# output

def extra_curves(args) -> list[dict]:
    """drqindex's 4-bit fast-scan (IndexDRQFastScan), measured in this run by
    benchmarks/bench_fastscan.py (one child process per thread count, as it does itself) right after
    the 8-bit measurements, so its rows share the machine state of this run. Or read from
    --fastscan-json (rows as bench_fastscan.py prints them); --skip-fastscan leaves it out.
    Rows: the bench_fastscan fields plus "bytes" (= bytes scanned per vector, the budget B) and
    "method" ("drqindex 4-bit fast-scan", "... + rerank k" / "2k", "faiss PQ4fs ...")."""
    import json
    import subprocess

    if args.fastscan_json is not None:
        rows = json.loads(Path(args.fastscan_json).read_text())
    elif args.skip_fastscan:
        return []
    else:
        cmd = [sys.executable, str(Path(__file__).resolve().parent / "bench_fastscan.py"),
               "--threads", *map(str, args.thread_counts), "--repeats", str(args.repeats)]
        cmd += ["--quick"] if args.quick else []
        log("(e) 4-bit fast-scan: " + " ".join(cmd[1:]))
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            log("bench_fastscan.py failed:\n" + out.stdout[-2000:] + out.stderr[-4000:])
            return []
        rows = json.loads(out.stdout.strip().splitlines()[-1])
    curves = []
    for r in rows:
        r = dict(r)
        name = r.get("method", "")
        if name.startswith("DRQ-fs"):
            if r.get("bytes_scanned") != r.get("B"):  # keep the equal-bytes-scanned points only
                continue
            r["method"] = "drqindex 4-bit fast-scan" + name[len("DRQ-fs"):].replace(" rerank", " + rerank ")
        r["bytes"] = r.get("B", r.get("bytes"))
        curves.append(r)
    return curves


def fastscan_markdown(extra) -> list[str]:
    if not extra:
        return []
    L = ["## (e) 4-bit fast-scan: drqindex IndexDRQFastScan vs faiss IndexPQFastScan", "",
         "Measured in this run by `benchmarks/bench_fastscan.py` (same data, k = 100, all queries). drqindex: ONE "
         "model with a 4-bit codebook per iteration (two iterations per byte), encoded once; a budget of B bytes "
         "scans 2(B-1) iterations + the 8-bit norm byte of that prefix (L2), i.e. exactly B bytes per vector. "
         "`rerank R`: the R best candidates of the quantised-table scan are re-sorted with exact float tables. "
         "Bytes stored per vector: M/2 code bytes + one norm byte per searched prefix (column `bytes stored`). "
         "`drq / faiss, paired`: the equal-bytes pair timed alternately, median over rounds of t_faiss / t_drq "
         "(the goal table's 4-bit ratio).", "",
         markdown_table(["threads", "B (bytes scanned)", "method", "iters", "bytes stored", "q/s",
                         "drq / faiss, paired", "R@1", "10-R@10"],
                        [[r["threads"], r["bytes"], r["method"], r.get("iters"), r.get("bytes_stored"), r["qps"],
                          r.get("paired_ratio"), r["R@1"], r["10-R@10"]]
                         for r in sorted(extra, key=lambda r: (r["threads"], r["bytes"]))]),
         ""]
    return L


def ratio_rows(rows, threads):
    by = {(r["method"], r["bytes"], r["threads"]): r for r in rows}
    out = []
    for nbytes in BYTES:
        drq = by.get(("drqindex", nbytes, threads))
        pq = by.get(("faiss IndexPQ", nbytes, threads))
        fs = by.get(("faiss IndexPQFastScan", nbytes, threads))
        if drq is None:
            continue
        out.append([f"{nbytes} B", drq["qps"], pq["qps"] if pq else None, drq["qps"] / pq["qps"] if pq else None,
                    fs["qps"] if fs else None, drq["qps"] / fs["qps"] if fs else None,
                    drq["10-R@10"], pq["10-R@10"] if pq else None, fs["10-R@10"] if fs else None])
    return out


def goal_rows(rows, extra, thread_counts) -> list[list]:
    """Issue 4's two speed ratios per thread count and code length, from this run's rows:
    8-bit ADC drqindex / faiss IndexPQ (goal >= 3) and 4-bit fast scan drqindex / faiss
    IndexPQFastScan at equal bytes scanned (goal >= 1, with higher recall): the median of the
    per-round ratios of alternating runs (bench_fastscan.py's paired_ratio) when the row has it,
    else the ratio of the two q/s."""
    by = {(r["method"], r["bytes"], r["threads"]): r for r in rows}
    fs_drq = {(r["bytes"], r["threads"]): r for r in extra if r["method"] == "drqindex 4-bit fast-scan"}
    fs_faiss = {(r["bytes"], r["threads"]): r for r in extra if r["method"].startswith("faiss PQ4fs")}
    out = []
    for threads in thread_counts:
        for nbytes in BYTES:
            drq, pq = by.get(("drqindex", nbytes, threads)), by.get(("faiss IndexPQ", nbytes, threads))
            a, b = fs_drq.get((nbytes, threads)), fs_faiss.get((nbytes, threads))
            adc = drq["qps"] / pq["qps"] if drq and pq else None
            fs = (a.get("paired_ratio") or a["qps"] / b["qps"]) if a and b else None
            out.append([threads, f"{nbytes} B", adc, "yes" if adc is not None and adc >= 3 else "no",
                        fs, f"{a['10-R@10']:.3f} vs {b['10-R@10']:.3f}" if a and b else None,
                        "yes" if fs is not None and fs >= 1 and a["10-R@10"] > b["10-R@10"] else "no"])
    return out


def write_markdown(path, scan_rows, bandwidth, rows, refine_rows, meta, args, extra=()):
    L = [f"# Search kernels: drqindex ADC scan vs faiss and vs memory bandwidth{' (QUICK smoke run)' if args.quick else ''}",
         "",
         f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores_available']} cores, SIMD "
         f"{', '.join(meta['machine']['cpu_simd_flags'])}; **shared with other jobs while measuring** "
         "(timings are noisy; the ratios compare methods measured in the same run, same thread count). "
         f"drqindex SIMD level: {meta['simd_level']}. Query look-up tables: one BLAS GEMM per batch with 1 BLAS "
         f"thread in every run. Date {meta['machine']['date']}.",
         "",
         f"Command: `{meta['command']}`",
         "",
         "## Issue 4's goals, from the rows below (same run, same thread count)",
         "",
         "8-bit ADC: drqindex IndexDRQ.search(iters = bytes) / faiss IndexPQ(d, bytes, 8) batch q/s, goal >= 3. "
         "4-bit: drqindex IndexDRQFastScan (equal bytes scanned, no re-ranking) / faiss IndexPQFastScan(d, 2 bytes, 4) "
         "batch speed, goal >= 1 with a higher 10-recall@10: the two searches alternate (bench_fastscan.py --rounds, "
         "the order flipping every round) and the ratio is the median over rounds of t_faiss / t_drq, so both "
         "sides of each ratio see the same machine state; part (e) lists each side's median q/s.",
         "",
         markdown_table(["threads", "bytes", "8-bit ADC / IndexPQ", ">= 3", "4-bit fast scan / PQFastScan",
                         "10-R@10 drq vs faiss (4-bit)", ">= 1 and higher recall"],
                        goal_rows(rows, list(extra), args.thread_counts)),
         "",
         "## (d) Fashion-MNIST: drqindex vs faiss at equal bytes per code",
         "",
         f"{meta['fashion']['nb']} database vectors, {meta['fashion']['nq']} queries, d = {meta['fashion']['d']}, "
         f"k = {K_SEARCH}, batch queries/s (median of {args.repeats} timed runs over all queries after a warm-up; one run when it takes > 10 s). drqindex: ONE M = 64 DRQ model, "
         "searched with the first `bytes` bytes of each code (+ a 4 B float norm per vector for L2). faiss IndexPQ(d, bytes, 8) "
         "and IndexPQFastScan(d, 2 * bytes, 4), each trained for its length on 20k database vectors "
         "(zero-padded dims where the sub-quantizer count does not divide 784).",
         ""]
    for threads in args.thread_counts:
        L += [f"**{threads} thread{'s' if threads > 1 else ''}**", "",
              markdown_table(["bytes", "drqindex q/s", "IndexPQ q/s", "ratio vs PQ", "PQFastScan q/s",
                              "8-bit drq / 4-bit PQFastScan", "drq 10-R@10", "PQ 10-R@10", "FastScan 10-R@10"],
                             ratio_rows(rows, threads)), ""]
    L += ["## (b) batch throughput and one-query latency", "",
          f"Latency: {args.latency_queries} queries searched one at a time (Python call included for both libraries).", "",
          markdown_table(["method", "bytes", "threads", "q/s (batch)", "latency median ms", "latency p99 ms", "R@1", "10-R@10"],
                         [[r["method"], r["bytes"], r["threads"], r["qps"], r["latency_median_ms"], r["latency_p99_ms"],
                           r["R@1"], r["10-R@10"]] for r in rows]), "",
          "## (c) re-ranking: IndexRefineFlat (k = 10, shortlist k' = 10 * k_factor)", "",
          f"The first {min(args.refine_queries, meta['fashion']['nq'])} queries; re-ranking with the raw float32 vectors "
          "(d * 4 more bytes per vector in memory).", "",
          markdown_table(["bytes", "k'", "threads", "q/s", "R@1", "10-R@10"],
                         [[r["bytes"], r["shortlist"], r["threads"], r["qps"], r["R@1"], r["10-R@10"]] for r in refine_rows]),
          "",
          "## (a) the scan alone vs memory bandwidth", "",
          "Random codes and random look-up tables (an exhaustive scan does the same work whatever the data), "
          "`_core.search` with L2, k = 10, a batch of 8 queries (one query group: the codes come from memory once per "
          "group and are reused from cache) and a single query (codes streamed from memory once per query). "
          "Bytes/s counts the code bytes plus the 4-byte norm read per vector and query, so with a batch it can exceed "
          "the memory bandwidth (cache reuse); for one query it is the real traffic.", "",
          "STREAM-like copy bandwidth (numpy copy of 256 MiB, read + write counted): "
          + ", ".join(f"{t} thread{'s' if t > 1 else ''}: {bw:.1f} GB/s" for t, bw in bandwidth.items()), "",
          markdown_table(["n", "bytes", "threads", "queries", "M codes/s per core", "G lookups/s", "GB/s read",
                          "% of copy bandwidth"],
                         [[f"{r['n']:.0e}", r["bytes"], r["threads"], r["nq"], r["codes_per_s_per_core"] / 1e6,
                           r["lookups_per_s"] / 1e9, r["bytes_per_s"] / 1e9,
                           100 * r["bytes_per_s"] / 1e9 / bandwidth[r["threads"]]] for r in scan_rows]),
          ""]
    write_text(path, "\n".join(L))


def write_plot(path, rows, refine_rows, extra, threads):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    styles = {"drqindex": ("C0", "o"), "faiss IndexPQ": ("C1", "s"), "faiss IndexPQFastScan": ("C2", "^")}
    for ax, metric in zip(axes, ("10-R@10", "R@1")):
        for method, (color, marker) in styles.items():
            pts = sorted((r for r in rows if r["method"] == method and r["threads"] == threads), key=lambda r: r["bytes"])
            ax.plot([r["qps"] for r in pts], [r[metric] for r in pts], marker=marker, color=color, label=method)
            for r in pts:
                ax.annotate(f"{r['bytes']}B", (r["qps"], r[metric]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        for nbytes, ls in zip(BYTES, (":", "-.", "--", "-")):
            pts = [r for r in refine_rows if r["bytes"] == nbytes]
            if pts:
                ax.plot([r["qps"] for r in pts], [r[metric] for r in pts], ls, color="C3", alpha=0.7,
                        label=f"drqindex {nbytes}B + refine (k' sweep)")
        # ---- HOOK: extra curves (e.g. drqindex 4-bit fast-scan), see extra_curves() ----
        mine = [r for r in extra if r["threads"] == threads and r["method"].startswith("drqindex")]
        for i, method in enumerate(sorted({r["method"] for r in mine})):
            pts = sorted((r for r in mine if r["method"] == method), key=lambda r: r["bytes"])
            ax.plot([r["qps"] for r in pts], [r[metric] for r in pts], marker="D", color=f"C{4 + i}", label=method)
        ax.set_xscale("log")
        ax.set_xlabel(f"queries/s ({threads} threads, batch, k = {K_SEARCH}; refine: k = 10)")
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Fashion-MNIST: recall vs queries/s at 8/16/32/64 bytes per code")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    meta = {"machine": machine_info(), "simd_level": _core.simd_level(), "command": " ".join(["python"] + sys.argv),
            "thread_counts": args.thread_counts, "quick": args.quick,
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS")}
    log("(a) copy bandwidth")
    bandwidth = {t: copy_bandwidth(t) for t in args.thread_counts}
    log(f"  {bandwidth}")
    log("(a) scan micro-benchmark")
    scan_rows = scan_microbench(args)
    log("(b)-(d) Fashion-MNIST")
    rows, refine_rows, fashion = fashion_runs(args)
    meta["fashion"] = fashion
    extra = extra_curves(args)
    rows_all = rows + [r for r in extra if r.get("method") == "drqindex"]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_json(args.out_dir / f"{STEM}.json", {"meta": meta, "copy_bandwidth_GBps": bandwidth, "scan": scan_rows,
                                               "fashion_mnist": rows_all, "refine": refine_rows, "extra_curves": extra})
    write_markdown(args.out_dir / f"{STEM}.md", scan_rows, bandwidth, rows_all, refine_rows, meta, args, extra)
    if extra:
        path = args.out_dir / f"{STEM}.md"
        text = path.read_text()
        marker = "## (b) batch throughput"
        write_text(path, text.replace(marker, "\n".join(fastscan_markdown(extra)) + "\n" + marker, 1))
    write_plot(args.out_dir / f"{STEM}_recall_qps.png", rows_all, refine_rows, extra, max(args.thread_counts))
    log(f"wrote {args.out_dir / STEM}.md/.json/_recall_qps.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
