"""IndexIVFDRQ vs faiss IndexIVFPQ on Fashion-MNIST: recall@10 vs queries/s at 8/16/32/64 bytes.

    ONE IndexIVFDRQ (IndexFlatL2 coarse, nlist 1024, M = 64 iterations, trained once, DRQ training
    bounded by --train-seconds) is searched at iters in ITERS x nprobe in NPROBES; against FOUR
    faiss IndexIVFPQ(IndexFlatL2, nlist 1024, m bytes, 8 bits), one per length, nprobe in NPROBES.
    m = 32 and 64 do not divide 784: IVF-PQ gets the vectors zero-padded to 800 / 832 dims with
    faiss.RemapDimensionsTransform (as benchmarks/bench_fashion_mnist.py; zeros change no distance).
    Same process, same threads (faiss OpenMP and drqindex both set to --threads), 10-recall@10
    against exact ground truth, queries/s = nq / median of 3 timed runs (after one warm-up).
    For a budget of m bytes, DRQ's points are those with iters <= m (the scan reads iters code
    bytes + one float per vector); memory per vector is reported as stored (codes + ids + norms).

    python benchmarks/bench_ivf.py              # full run -> benchmarks/results/ivf.{md,json,png}
    python benchmarks/bench_ivf.py --quick      # 10k database / 1k queries, nlist 256, 30 s training
    python benchmarks/bench_ivf.py --scale      # also the scale run (perturbed repeated vectors)
    python benchmarks/bench_ivf.py --save-index /tmp/ivf.drq         # keep the trained index
    python benchmarks/bench_ivf.py --load-index /tmp/ivf.drq --scale-only   # scale run alone, no training

--threads N (default 2) sizes every pool: faiss/OpenMP, OpenBLAS (numpy's table GEMM; set before
numpy is imported) and drqindex's scan.

Scale run: add() throughput is measured at the first size and the add time of each larger size
extrapolated from it (linear in n); a size whose estimate exceeds --scale-max-add-seconds is
skipped with the estimate written in the results instead of run.
"""
from __future__ import annotations

import os
import sys


def _early_threads() -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from thread_env import omp_passive, set_pool_threads, threads_from_argv
    set_pool_threads(threads_from_argv() or "2")  # the --threads default
    omp_passive()


if __name__ == "__main__":
    _early_threads()

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    import drqindex  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO / "python"))

import drqindex  # noqa: E402
from common import Timer, log, machine_info, markdown_table, median_time, write_json, write_text  # noqa: E402
from drqindex.data import ground_truth, k_recall_at_k, load_fashion_mnist  # noqa: E402

BYTES = (8, 16, 32, 64)
NPROBES = (1, 2, 4, 8, 16, 32, 64)
# Every iters <= a byte budget is a point of that budget's curve: a fine grid at small budgets.
ITERS = (2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64)
# Scale-run search points (iters, nprobe).
SCALE_POINTS = ((4, 8), (6, 8), (8, 16), (16, 16), (32, 16), (64, 16), (16, 64))
K = 10
# The DRQ model's principal subspace, per iteration: iterations 1-4 in the top 64 directions of the
# residuals, 5-8 in the top 128, then 256 (drqindex.train.per_iteration: ~0.01 of 10-R@10 for 2.6x
# fewer query-table multiply-adds at 6 iterations, what a low-nprobe search pays besides its coarse
# search).
SUBSPACE_DIMS = ((4, 64), (8, 128), (None, 256))
# The close calls of the sweep (an IVFPQ point whose fastest IVFDRQ point of >= recall has less
# than PAIRED_BELOW x its q/s, or none) are re-timed in PAIRED_ROUNDS rounds that alternate the
# two searches: single medians taken minutes apart on a shared 2-core machine move by up to ~30%.
PAIRED_BELOW = 1.5
PAIRED_ROUNDS = 7
REFERENCE = {8: (0.508, 15.6e3), 16: (0.587, 24e3), 32: (0.659, 7.1e3), 64: (0.769, 4.2e3)}


def parse_subspace_dims(text: str):
    """'none' -> None, '256' -> 256, '4:64,8:128,256' -> ((4, 64), (8, 128), (None, 256)); the trainer
    validates the result (DRQTrainConfig)."""
    text = text.strip().lower()
    if text == "none":
        return None
    try:
        parts = [p.split(":") for p in text.split(",")]
        if len(parts) == 1 and len(parts[0]) == 1:
            return int(parts[0][0])
        out = tuple((int(p[0]), int(p[1])) if len(p) == 2 else (None, int(p[0])) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'none', an int or until:dims pairs such as '4:64,8:128,256', "
                                         f"got {text!r}") from None
    if any(len(p) > 2 for p in parts) or any(u is None for u, _ in out[:-1]) or out[-1][0] is not None:
        raise argparse.ArgumentTypeError(f"expected until:dims pairs ending with a bare dims, e.g. '4:64,8:128,256', "
                                         f"got {text!r}")
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--scale", action="store_true", help="also run the scale run (sizes --scale-sizes)")
    p.add_argument("--scale-only", action="store_true",
                   help="only the scale run, with the model of --load-index (no Fashion-MNIST sweep)")
    p.add_argument("--scale-sizes", default="100000,1000000,10000000")
    p.add_argument("--scale-max-add-seconds", type=float, default=900.0,
                   help="skip a scale size whose add() time, extrapolated from the first size, exceeds this")
    p.add_argument("--save-index", default=None, help="write the trained IndexIVFDRQ (with xb added) here")
    p.add_argument("--load-index", default=None,
                   help="read a trained IndexIVFDRQ written by --save-index instead of training one")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--nlist", type=int, default=None)
    p.add_argument("--train-seconds", type=float, default=None, help="DRQ training budget (default 300; quick 30)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--codebooks", choices=["shared", "per_iteration"], default="per_iteration",
                   help="IndexIVFDRQ codebook form (drqindex.IndexDRQ's codebooks argument)")
    p.add_argument("--subspace-dims", type=parse_subspace_dims, default=SUBSPACE_DIMS,
                   help="the trainer's per_iteration_subspace_dims: 'none' (all d), an int, or until:dims pairs "
                        "ending with dims, e.g. '4:64,8:128,256' (the default)")
    p.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cache-dir", default=None)
    args = p.parse_args(argv)
    if args.scale_only and not args.load_index:
        p.error("--scale-only needs --load-index PATH (a trained index written by --save-index)")
    if args.nlist is None:
        args.nlist = 256 if args.quick else 1024
    if args.train_seconds is None:
        args.train_seconds = 30.0 if args.quick else 300.0
    return args


def _pad_dim(d: int, m: int) -> int:
    return -(-d // m) * m


def build_ivfpq(d, m, nlist):
    import faiss
    dp = _pad_dim(d, m)
    coarse = faiss.IndexFlatL2(dp)
    ivf = faiss.IndexIVFPQ(coarse, dp, nlist, m, 8)
    refs = [coarse]
    if dp == d:
        return ivf, ivf, refs, f"IndexIVFPQ(IndexFlatL2({d}), {d}, {nlist}, {m}, 8)"
    remap = faiss.RemapDimensionsTransform(d, dp, True)
    index = faiss.IndexPreTransform(remap, ivf)
    refs += [remap, ivf]
    return index, ivf, refs, f"RemapDimensionsTransform({d}->{dp}) + IndexIVFPQ(IndexFlatL2({dp}), {dp}, {nlist}, {m}, 8)"


def timed(search, xq, gt, repeats):
    med, _, (_, I) = median_time(lambda: search(xq), repeats=repeats, warmup=1)
    return k_recall_at_k(I, gt, K), xq.shape[0] / med


def pareto(points):
    """points: (recall, qps, ...) -> the ones no other point beats in both, sorted by recall."""
    out = []
    for p in sorted(points, key=lambda p: (-p[1], -p[0])):
        if not out or p[0] > out[-1][0]:
            out.append(p)
    return sorted(out, key=lambda p: p[0])


def run_fashion(args, info):
    import faiss

    faiss.omp_set_num_threads(args.threads)
    drqindex.set_num_threads(args.threads)
    ds = load_fashion_mnist(args.data_dir)
    nb, nq = (10000, 1000) if args.quick else (ds.nb, ds.nq)
    ds = ds.subsample(nb, nq)
    xb, xq = ds.xb, ds.xq
    d = xb.shape[1]
    log(f"data: xb {xb.shape}, xq {xq.shape}; training on xb")
    gt = ground_truth(xb, xq, k=100, cache_dir=args.cache_dir)
    results = {"drq": [], "ivfpq": {}}

    # ---- one IndexIVFDRQ, M = 64
    index = trained_index(args, info, xb)
    args.nlist = index.nlist
    info["drq_subspace_runs"] = subspace_runs(index.drq_quantizer)
    nprobes = [p for p in NPROBES if p <= args.nlist]
    if index.ntotal != xb.shape[0]:
        index.reset()
        with Timer() as t:
            index.add(xb)
        info["drq_add_s"] = t.s
        if args.save_index:
            drqindex.write_index(index, args.save_index)
            log(f"wrote the trained index (with xb) to {args.save_index}")
    else:
        info.setdefault("drq_add_s", None)
    info["drq_memory_per_vector"] = index.memory_usage() / index.ntotal
    log(f"IVFDRQ {index.ntotal} vectors, {info['drq_memory_per_vector']:.1f} B/vector stored")
    for m in [m for m in ITERS if m <= index.iters]:
        for p in nprobes:
            params = drqindex.SearchParametersIVFDRQ(nprobe=p, iters=m)
            rec, qps = timed(lambda x: index.search(x, K, params=params), xq, gt, args.repeats)
            results["drq"].append({"iters": m, "nprobe": p, "recall": rec, "qps": qps,
                                   "bytes_read": index.bytes_per_vector(m)})
            log(f"  DRQ iters={m:2d} nprobe={p:2d}: R10@10 {rec:.3f}  {qps:,.0f} q/s")

    # ---- four IndexIVFPQ (kept for the paired re-timing: m + 8 bytes per vector)
    ivfpq = {}
    for m in BYTES:
        idx, ivf, refs, desc = build_ivfpq(d, m, args.nlist)
        ivfpq[m] = (idx, ivf, refs)
        with Timer() as t:
            idx.train(xb)
            idx.add(xb)
        invl = ivf.invlists
        mem = sum(invl.list_size(i) for i in range(ivf.nlist)) * (ivf.code_size + 8) / ivf.ntotal
        rows = []
        for p in nprobes:
            ivf.nprobe = p
            rec, qps = timed(lambda x: idx.search(x, K), xq, gt, args.repeats)
            rows.append({"nprobe": p, "recall": rec, "qps": qps})
            log(f"  IVFPQ m={m:2d} nprobe={p:2d}: R10@10 {rec:.3f}  {qps:,.0f} q/s")
        results["ivfpq"][m] = {"desc": desc, "train_add_s": t.s, "memory_per_vector": mem, "points": rows}

    def search_pq(m, nprobe):
        idx, ivf, _ = ivfpq[m]
        ivf.nprobe = nprobe
        idx.search(xq, K)

    def search_drq(iters, nprobe):
        index.search(xq, K, params=drqindex.SearchParametersIVFDRQ(nprobe=nprobe, iters=iters))

    results["paired"] = paired_retiming(results, search_pq, search_drq, xq.shape[0], PAIRED_ROUNDS)
    return results, index


def fastest_reaching(results):
    """{(bytes m, nprobe): the fastest IVFDRQ point with iters <= m and recall >= that IVFPQ point's,
    or None}."""
    out = {}
    for m in BYTES:
        for pq in results["ivfpq"][m]["points"]:
            reach = [r for r in results["drq"] if r["iters"] <= m and r["recall"] >= pq["recall"]]
            out[(m, pq["nprobe"])] = max(reach, key=lambda r: r["qps"]) if reach else None
    return out


def paired_retiming(results, search_pq, search_drq, nq, rounds):
    """Re-time the close calls: each IVFPQ point (m, nprobe) whose fastest_reaching IVFDRQ point has
    under PAIRED_BELOW x its single-run q/s, against that point, in `rounds` rounds that run the two
    searches back to back (order flipped every round), after one warm-up of each. search_pq(m,
    nprobe) and search_drq(iters, nprobe) run one full query batch of nq queries. Returns one row per
    re-timed pair: the median and range of the per-round q/s ratios IVFDRQ / IVFPQ and each side's
    median q/s."""
    rows = []
    for (m, nprobe), cand in fastest_reaching(results).items():
        pq = next(r for r in results["ivfpq"][m]["points"] if r["nprobe"] == nprobe)
        if cand is None or cand["qps"] / pq["qps"] >= PAIRED_BELOW:
            continue
        run_pq = lambda: search_pq(m, nprobe)  # noqa: E731
        run_drq = lambda: search_drq(cand["iters"], cand["nprobe"])  # noqa: E731
        run_pq()
        run_drq()
        t_pq, t_drq = [], []
        for r in range(rounds):
            for which in ((0, 1) if r % 2 == 0 else (1, 0)):
                t0 = time.perf_counter()
                (run_pq if which == 0 else run_drq)()
                (t_pq if which == 0 else t_drq).append(time.perf_counter() - t0)
        ratios = [a / b for a, b in zip(t_pq, t_drq)]
        rows.append({"bytes": m, "nprobe": nprobe, "recall": pq["recall"], "single_qps": pq["qps"],
                     "drq": {k: cand[k] for k in ("iters", "nprobe", "recall", "qps")},
                     "rounds": rounds, "ratio_median": float(np.median(ratios)), "ratio_min": min(ratios),
                     "ratio_max": max(ratios), "ivfpq_qps": nq / float(np.median(t_pq)),
                     "drq_qps": nq / float(np.median(t_drq))})
        log(f"  paired m={m} nprobe={nprobe} vs iters={cand['iters']} nprobe={cand['nprobe']}: "
            f"median ratio {rows[-1]['ratio_median']:.2f}x (range {min(ratios):.2f}-{max(ratios):.2f})")
    return rows


def subspace_runs(q):
    """[(first iteration, last iteration, leading dims)] (1-based) of a subspace model's codebooks,
    or None: how far into the basis each iteration's codewords reach (their query-table cost)."""
    if q.subspace is None:
        return None
    runs = []
    for j, r in enumerate(int(v) for v in q.subspace_dims_per_iteration):
        if runs and runs[-1][2] == r:
            runs[-1][1] = j + 1
        else:
            runs.append([j + 1, j + 1, r])
    return runs


def trained_index(args, info, xb):
    """The IndexIVFDRQ of the run: read from --load-index, or trained on xb (then saved to
    --save-index once xb is added, by run_fashion)."""
    import faiss

    if args.load_index:
        index = drqindex.read_index(args.load_index)
        if not isinstance(index, drqindex.IndexIVFDRQ) or not index.is_trained:
            raise SystemExit(f"--load-index {args.load_index}: expected a trained IndexIVFDRQ, got {index!r}")
        info["drq_train_s"] = None
        info["drq_loaded_from"] = str(args.load_index)
        log(f"loaded {index!r} from {args.load_index}")
        return index
    index = drqindex.IndexIVFDRQ(faiss.IndexFlatL2(xb.shape[1]), xb.shape[1], args.nlist, iters=max(ITERS),
                                 codebooks=args.codebooks, train_config={
                                     "max_seconds": args.train_seconds, "num_threads": args.threads, "seed": 0,
                                     "per_iteration_subspace_dims": args.subspace_dims})
    with Timer() as t:
        index.train(xb)
    info["drq_train_s"] = t.s
    sub = index.drq_quantizer.subspace
    info["drq_subspace_dims"] = None if sub is None else int(sub.basis.shape[1])
    info["drq_train_info"] = {k: v for k, v in (index.train_info or {}).items()
                              if isinstance(v, (int, float, str, bool))}
    log(f"IVFDRQ trained in {t.s:.0f} s (DRQ budget {args.train_seconds:.0f} s)")
    return index


def coverage(results):
    """For every IVFPQ point (bytes m, nprobe): the IVFDRQ points that dominate it, i.e. read at
    most m code bytes (iters <= m) and have both recall >= and queries/s >= its own. The curve of
    IVFDRQ lies on or above IVF-PQ's where every IVFPQ point is dominated; the fastest
    dominating point is reported (None: not covered)."""
    out = []
    for m in BYTES:
        for pq in results["ivfpq"][m]["points"]:
            dom = [r for r in results["drq"] if r["iters"] <= m and r["recall"] >= pq["recall"]
                   and r["qps"] >= pq["qps"]]
            best = max(dom, key=lambda r: r["qps"]) if dom else None
            out.append({"bytes": m, "nprobe": pq["nprobe"], "recall": pq["recall"], "qps": pq["qps"],
                        "covered_by": None if best is None else {k: best[k] for k in ("iters", "nprobe", "recall",
                                                                                       "qps")}})
    return out


def summarize(results, info, args):
    rows = []
    for m in BYTES:
        pq = results["ivfpq"][m]
        best = max(pq["points"], key=lambda r: r["recall"])
        pq16 = next((r for r in pq["points"] if r["nprobe"] == 16), None)
        cands = [r for r in results["drq"] if r["iters"] <= m]
        reach = [r for r in cands if r["recall"] >= best["recall"]]
        fastest = max(reach, key=lambda r: r["qps"]) if reach else None
        at_m16 = next((r for r in results["drq"] if r["iters"] == m and r["nprobe"] == 16), None)
        best_drq = max(cands, key=lambda r: r["recall"])
        rows.append({
            "bytes": m, "ivfpq_best_recall": best["recall"], "ivfpq_best_qps": best["qps"],
            "ivfpq_best_nprobe": best["nprobe"],
            "ivfpq_nprobe16": pq16,
            "drq_nprobe16_iters_m": at_m16,
            "drq_best_recall": best_drq["recall"], "drq_best_cfg": (best_drq["iters"], best_drq["nprobe"]),
            "drq_at_ivfpq_best": fastest,
            "speedup_at_ivfpq_best": (fastest["qps"] / best["qps"]) if fastest else None,
            "ivfpq_memory": pq["memory_per_vector"], "drq_memory": info["drq_memory_per_vector"],
            "drq_bytes_read": m + 4 + 8,
        })
    return rows


def plot(results, args, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    for ax, m in zip(axes.flat, BYTES):
        pts = [(r["recall"], r["qps"], r["iters"], r["nprobe"]) for r in results["drq"] if r["iters"] <= m]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=8, color="tab:blue", alpha=0.3,
                   label=f"IVFDRQ, all iters <= {m}")
        front = pareto(pts)
        ax.plot([p[0] for p in front], [p[1] for p in front], "-o", color="tab:blue", ms=4,
                label="IVFDRQ Pareto front (one model)")
        same = [r for r in results["drq"] if r["iters"] == m]
        ax.plot([r["recall"] for r in same], [r["qps"] for r in same], ":", color="tab:blue", lw=1,
                label=f"IVFDRQ iters={m}, nprobe sweep")
        pq = results["ivfpq"][m]["points"]
        ax.plot([r["recall"] for r in pq], [r["qps"] for r in pq], "-s", color="tab:red", ms=4,
                label=f"faiss IVFPQ m={m} (own model)")
        for r in pq:
            ax.annotate(str(r["nprobe"]), (r["recall"], r["qps"]), fontsize=6, color="tab:red")
        ax.set_yscale("log")
        ax.set_title(f"{m} bytes per vector")
        ax.set_xlabel("10-recall@10")
        ax.set_ylabel("queries/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Fashion-MNIST, nlist {args.nlist}, {args.threads} threads, nprobe in {list(NPROBES)}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def scale_vectors(base, start, count, sigma, seed):
    """Rows start .. start + count of the synthetic database: x_i = base[i mod len(base)] + N(0, sigma^2)
    per coordinate, the noise drawn from a generator seeded by (seed, start) so that any chunk can
    be regenerated alone (the database is never held whole)."""
    rng = np.random.default_rng([seed, start])
    x = base[np.arange(start, start + count) % base.shape[0]]
    return np.ascontiguousarray(x + rng.normal(0, sigma, x.shape).astype(np.float32), dtype=np.float32)


def run_scale(args, index, info):
    """Perturbed repeats of Fashion-MNIST: x = xb[i mod 60000] + N(0, sigma^2) per coordinate,
    sigma = 5% of xb's per-coordinate std (mean over coordinates); the IVFDRQ model given (same
    centroids, same DRQ quantizer), vectors generated and added in chunks of 100k. Exact ground
    truth (a faiss IndexFlatL2 over the raw vectors, 3.1 GB at 1e6) up to 1e6 vectors; above
    that, recall is not measured. add() throughput is measured at the first size and each
    larger size's add time estimated from it before it is run (skipped above
    --scale-max-add-seconds)."""
    import faiss

    ds = load_fashion_mnist(args.data_dir)
    base = ds.xb
    d = base.shape[1]
    sigma = float(0.05 * base.std(axis=0).mean())
    nq = min(1000, ds.xq.shape[0])
    xq = np.ascontiguousarray(ds.xq[:nq] + np.random.default_rng(7).normal(0, sigma, (nq, d)).astype(np.float32))
    chunk = 100_000
    out = []
    add_rate = None  # vectors/s, from the first size
    for n in [int(s) for s in args.scale_sizes.split(",")]:
        estimate = n / add_rate if add_rate else None
        if estimate is not None and estimate > args.scale_max_add_seconds:
            log(f"  scale n={n:,}: add() estimated at {estimate:,.0f} s ({add_rate:,.0f} vectors/s measured), "
                f"above --scale-max-add-seconds {args.scale_max_add_seconds:.0f}: skipped")
            out.append({"n": n, "skipped": True, "add_s_estimate": estimate, "points": []})
            continue
        if estimate is not None:
            log(f"  scale n={n:,}: add() estimated at {estimate:,.0f} s")
        idx = drqindex.IndexIVFDRQ(faiss.IndexFlatL2(d), d, index.nlist, iters=index.iters)
        idx.set_quantizers(index.drq_quantizer, index.centroids)
        flat = faiss.IndexFlatL2(d) if n <= 1_000_000 else None
        t_add = 0.0
        for s in range(0, n, chunk):
            x = scale_vectors(base, s, min(chunk, n - s), sigma, seed=11)
            t0 = time.perf_counter()
            idx.add(x)
            t_add += time.perf_counter() - t0
            if flat is not None:
                flat.add(x)
        if add_rate is None:
            add_rate = n / t_add
        gt = flat.search(xq, K)[1] if flat is not None else None
        del flat
        row = {"n": n, "add_s": t_add, "add_s_estimate": estimate, "add_vectors_per_s": n / t_add,
               "memory_bytes": idx.memory_usage(), "memory_per_vector": idx.memory_usage() / n, "points": []}
        log(f"  scale n={n:,}: add {t_add:,.0f} s ({n / t_add:,.0f} vectors/s), "
            f"{row['memory_per_vector']:.0f} B/vector")
        for m, p in SCALE_POINTS:
            if m > idx.iters or p > idx.nlist:
                continue
            params = drqindex.SearchParametersIVFDRQ(nprobe=p, iters=m)
            med, _, (_, I) = median_time(lambda: idx.search(xq, K, params=params), repeats=args.repeats, warmup=1)
            rec = k_recall_at_k(I, gt, K) if gt is not None else None
            row["points"].append({"iters": m, "nprobe": p, "qps": nq / med, "recall": rec})
            log(f"  scale n={n:,} iters={m} nprobe={p}: {nq / med:,.0f} q/s, R10@10 {rec}")
        out.append(row)
        del idx
    info["scale_sigma"] = sigma
    return out


def main(argv=None):
    args = parse_args(argv)
    info = machine_info()
    info.update({"threads": args.threads, "nlist": args.nlist, "quick": args.quick, "codebooks": args.codebooks,
                 "train_seconds_budget": args.train_seconds, "simd_level": drqindex.simd_level()})
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.scale_only:
        index = trained_index(args, info, None)
        args.nlist = index.nlist
        scale = run_scale(args, index, info)
        stem = "ivf_scale"
        write_json(out / f"{stem}.json", {"info": info, "scale": scale})
        write_text(out / f"{stem}.md", "\n".join(
            ["# IndexIVFDRQ scale run", "", f"{info['date']}, {info['cpu']}, {args.threads} threads; model read from "
             f"{args.load_index}.", ""] + render_scale(info, scale, args)))
        log(f"wrote {out / stem}.md/.json")
        return
    results, index = run_fashion(args, info)
    rows = summarize(results, info, args)
    scale = run_scale(args, index, info) if args.scale else None
    stem = "ivf_quick" if args.quick else "ivf"
    plot(results, args, out / f"{stem}.png")
    write_json(out / f"{stem}.json", {"info": info, "results": results, "summary": rows, "coverage": coverage(results),
                                      "scale": scale})
    write_text(out / f"{stem}.md", render_md(info, results, rows, scale, args, stem))
    log(f"wrote {out / stem}.md/.json/.png")


def render_md(info, results, rows, scale, args, stem):
    L = [f"# IndexIVFDRQ vs faiss IndexIVFPQ (Fashion-MNIST{', quick' if args.quick else ''})", "",
         f"{info['date']}, {info['cpu']}, {info['threads']} threads for both libraries (faiss OpenMP and "
         f"drqindex), SIMD level {info['simd_level']}; nlist {args.nlist}; {len(NPROBES)} nprobe values "
         f"{list(NPROBES)}; 10-recall@10 over all queries; queries/s = nq / median of {args.repeats} runs "
         "(after one warm-up), coarse search and table building included.", "",
         f"- **IVFDRQ**: ONE model, IndexIVFDRQ(IndexFlatL2, nlist {args.nlist}, M = {max(ITERS)}, "
         f"codebooks={args.codebooks!r}"
         + (f", trained in the top-{info['drq_subspace_dims']} principal subspace of the residuals"
            if info.get("drq_subspace_dims") else "")
         + (": iterations " + ", ".join(f"{a}-{b} in its top {r}" for a, b, r in info["drq_subspace_runs"])
            if len(info.get("drq_subspace_runs") or []) > 1 else "") + "), "
         f"by residual; DRQ training bounded to {args.train_seconds:.0f} s wall clock "
         + (f"(took {info['drq_train_s']:.0f} s with the faiss k-means of the coarse quantizer)"
            if info.get("drq_train_s") is not None else f"(model read from {info.get('drq_loaded_from')})")
         + f"; searched at iters in {list(ITERS)}.",
         "- **IVFPQ**: four models, faiss IndexIVFPQ(IndexFlatL2, nlist, m, 8) trained per length (m = 32, 64 "
         "zero-padded 784 -> 800 / 832 dims, faiss RemapDimensionsTransform).",
         "- Memory per vector: stored bytes (codes + ids + norms). IVFDRQ stores M = 64 code bytes, one float32 "
         "per prefix (the precomputed L2 term, 4 M bytes) and an int64 id, whatever prefix a search uses; a "
         "search at iters = m reads m + 4 + 8 bytes per scanned vector. IVFPQ stores m + 8.", "",
         "## At IVF-PQ's best recall (the goal: >= 2x its queries/s at equal bytes)", ""]
    hdr = ["bytes", "IVFPQ best R10@10", "IVFPQ q/s (nprobe)", "IVFDRQ fastest config reaching it",
           "IVFDRQ q/s", "speed-up", "IVFDRQ best R10@10 (iters, nprobe)", "mem/vec IVFPQ", "mem/vec IVFDRQ stored",
           "IVFDRQ read/vec"]
    body = []
    for r in rows:
        f = r["drq_at_ivfpq_best"]
        body.append([r["bytes"], r["ivfpq_best_recall"], f"{r['ivfpq_best_qps']:,.0f} ({r['ivfpq_best_nprobe']})",
                     f"iters {f['iters']}, nprobe {f['nprobe']}" if f else "not reached",
                     f["qps"] if f else None,
                     f"{r['speedup_at_ivfpq_best']:.2f}x" if f else "–",
                     f"{r['drq_best_recall']:.3f} {tuple(r['drq_best_cfg'])}",
                     f"{r['ivfpq_memory']:.0f} B", f"{r['drq_memory']:.0f} B", f"{r['drq_bytes_read']} B"])
    L += [markdown_table(hdr, body), "", "## nprobe = 16 (the issue's reference point)", ""]
    body = []
    for r in rows:
        a, b = r["ivfpq_nprobe16"], r["drq_nprobe16_iters_m"]
        ref = REFERENCE.get(r["bytes"])
        body.append([r["bytes"], a["recall"] if a else None, a["qps"] if a else None,
                     b["recall"] if b else None, b["qps"] if b else None,
                     f"{ref[0]} / {ref[1]:,.0f}" if ref else "–"])
    L += [markdown_table(["bytes", "IVFPQ R10@10", "IVFPQ q/s", "IVFDRQ (iters = bytes) R10@10", "IVFDRQ q/s",
                          "issue's reference IVFPQ (R / q/s)"], body), ""]
    cov = coverage(results)
    n_cov = sum(c["covered_by"] is not None for c in cov)
    L += ["## On or above IVF-PQ's curve", "",
          f"An IVFPQ point (m bytes, nprobe) is covered when an IVFDRQ point reading at most m code bytes (iters <= m) "
          f"has both higher-or-equal recall and higher-or-equal queries/s. **{n_cov} of {len(cov)} IVFPQ points "
          f"covered.**", ""]
    L += [markdown_table(["bytes", "IVFPQ nprobe", "IVFPQ R10@10", "IVFPQ q/s", "covered by IVFDRQ (iters, nprobe)",
                          "its R10@10", "its q/s", "q/s ratio"],
                         [[c["bytes"], c["nprobe"], c["recall"], c["qps"],
                           f"iters {c['covered_by']['iters']}, nprobe {c['covered_by']['nprobe']}" if c["covered_by"]
                           else "**not covered**",
                           c["covered_by"]["recall"] if c["covered_by"] else None,
                           c["covered_by"]["qps"] if c["covered_by"] else None,
                           f"{c['covered_by']['qps'] / c['qps']:.2f}x" if c["covered_by"] else "–"] for c in cov]), ""]
    paired = results.get("paired") or []
    L += ["## Paired re-timing of the close calls", "",
          f"Every IVFPQ point whose fastest IVFDRQ point of higher-or-equal recall (iters <= m) had less than "
          f"{PAIRED_BELOW}x its queries/s in the sweep above (or none) was re-timed against that point in "
          f"{PAIRED_ROUNDS} rounds, the two searches back to back, the order flipped every round: the ratio of each "
          "round's two times does not move with the machine's load between rounds as medians taken minutes "
          "apart do.", ""]
    if paired:
        L += [markdown_table(["bytes", "IVFPQ nprobe", "IVFPQ R10@10", "IVFDRQ (iters, nprobe)", "its R10@10",
                              "sweep ratio", "paired: median ratio", "range", "IVFPQ q/s", "IVFDRQ q/s"],
                             [[p["bytes"], p["nprobe"], p["recall"], f"iters {p['drq']['iters']}, nprobe {p['drq']['nprobe']}",
                               p["drq"]["recall"], f"{p['drq']['qps'] / p['single_qps']:.2f}x",
                               f"**{p['ratio_median']:.2f}x**", f"{p['ratio_min']:.2f}-{p['ratio_max']:.2f}x",
                               p["ivfpq_qps"], p["drq_qps"]] for p in paired]), ""]
    else:
        L += ["No close calls: every IVFPQ point had an IVFDRQ point of higher-or-equal recall with at least "
              f"{PAIRED_BELOW}x its queries/s.", ""]
    L += ["## All points", "", "IVFDRQ (one model):", ""]
    L += [markdown_table(["iters", "nprobe", "R10@10", "q/s"],
                         [[r["iters"], r["nprobe"], r["recall"], r["qps"]] for r in results["drq"]]), ""]
    L += ["IVFPQ (one model per length):", ""]
    L += [markdown_table(["m", "nprobe", "R10@10", "q/s"],
                         [[m, p["nprobe"], p["recall"], p["qps"]] for m in BYTES for p in results["ivfpq"][m]["points"]]),
          ""]
    L += [f"![recall vs queries/s]({stem}.png)", ""]
    if scale:
        L += render_scale(info, scale, args)
    return "\n".join(L)


def render_scale(info, scale, args):
    L = ["## Scale run (synthetic: perturbed repeats of Fashion-MNIST)", "",
         f"x = xb[i mod 60000] + N(0, sigma^2) per coordinate, sigma = {info['scale_sigma']:.2f} (5% of the mean "
         "per-coordinate std); queries = the first 1000 test images + the same noise; the Fashion-MNIST model "
         f"(nlist {args.nlist}) reused; recall against exact search over the perturbed database (none above 1e6 "
         f"vectors); {args.threads} threads; add() time includes assignment, encoding and the per-prefix terms.", ""]
    body = []
    for s in scale:
        if s.get("skipped"):
            body.append([f"{s['n']:,}", "–", "–", None, None, "–", "–",
                         f"skipped: estimated {s['add_s_estimate']:,.0f} s"])
            continue
        for p in s["points"]:
            body.append([f"{s['n']:,}", p["iters"], p["nprobe"], p["qps"], p["recall"],
                         f"{s['memory_per_vector']:.0f} B", f"{s['memory_bytes'] / 2**20:,.0f} MiB",
                         f"{s['add_s']:,.0f} s ({s['add_vectors_per_s']:,.0f}/s)"])
    L += [markdown_table(["n", "iters", "nprobe", "q/s", "R10@10", "mem/vec", "lists total", "add"], body), ""]
    return L


if __name__ == "__main__":
    main()
