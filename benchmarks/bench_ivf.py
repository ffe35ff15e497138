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
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

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
ITERS = (4, 8, 12, 16, 24, 32, 48, 64)
K = 10
REFERENCE = {8: (0.508, 15.6e3), 16: (0.587, 24e3), 32: (0.659, 7.1e3), 64: (0.769, 4.2e3)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--scale", action="store_true", help="also run the 1e5 / 1e6 scale run")
    p.add_argument("--scale-sizes", default="100000,1000000")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--nlist", type=int, default=None)
    p.add_argument("--train-seconds", type=float, default=None, help="DRQ training budget (default 300; quick 30)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--codebooks", choices=["shared", "per_iteration"], default="per_iteration",
                   help="IndexIVFDRQ codebook form (drqindex.IndexDRQ's codebooks argument)")
    p.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--cache-dir", default=None)
    args = p.parse_args(argv)
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
    nprobes = [p for p in NPROBES if p <= args.nlist]
    results = {"drq": [], "ivfpq": {}}

    # ---- one IndexIVFDRQ, M = 64
    M = max(ITERS)
    index = drqindex.IndexIVFDRQ(faiss.IndexFlatL2(d), d, args.nlist, iters=M, codebooks=args.codebooks, train_config={
        "max_seconds": args.train_seconds, "num_threads": args.threads, "seed": 0})
    with Timer() as t:
        index.train(xb)
    info["drq_train_s"] = t.s
    info["drq_train_info"] = {k: v for k, v in (index.train_info or {}).items()
                              if isinstance(v, (int, float, str, bool))}
    log(f"IVFDRQ trained in {t.s:.0f} s (DRQ budget {args.train_seconds:.0f} s)")
    with Timer() as t:
        index.add(xb)
    info["drq_add_s"] = t.s
    info["drq_memory_per_vector"] = index.memory_usage() / index.ntotal
    log(f"IVFDRQ add {t.s:.1f} s, {info['drq_memory_per_vector']:.1f} B/vector stored")
    for m in ITERS:
        for p in nprobes:
            params = drqindex.SearchParametersIVFDRQ(nprobe=p, iters=m)
            rec, qps = timed(lambda x: index.search(x, K, params=params), xq, gt, args.repeats)
            results["drq"].append({"iters": m, "nprobe": p, "recall": rec, "qps": qps,
                                   "bytes_read": index.bytes_per_vector(m)})
            log(f"  DRQ iters={m:2d} nprobe={p:2d}: R10@10 {rec:.3f}  {qps:,.0f} q/s")

    # ---- four IndexIVFPQ
    for m in BYTES:
        idx, ivf, refs, desc = build_ivfpq(d, m, args.nlist)
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
        del idx, ivf, refs
    return results, index


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


def run_scale(args, index, info):
    """Perturbed repeats of Fashion-MNIST: x = xb[i mod 60000] + N(0, sigma^2) per coordinate,
    sigma = 5% of xb's per-coordinate std (mean over coordinates); the IVFDRQ model trained above
    (same centroids, same DRQ quantizer), vectors added in chunks."""
    import faiss

    ds = load_fashion_mnist(args.data_dir)
    base = ds.xb
    sigma = float(0.05 * base.std(axis=0).mean())
    rng = np.random.default_rng(7)
    nq = 1000
    out = []
    for n in [int(s) for s in args.scale_sizes.split(",")]:
        idx = drqindex.IndexIVFDRQ(faiss.IndexFlatL2(base.shape[1]), base.shape[1], index.nlist, iters=index.iters)
        idx.set_quantizers(index.drq_quantizer, index.centroids)
        keep_raw = n <= 1_000_000
        flat = faiss.IndexFlatL2(base.shape[1]) if keep_raw else None
        t_add = 0.0
        for s in range(0, n, 100_000):
            c = min(100_000, n - s)
            x = base[np.arange(s, s + c) % base.shape[0]] + rng.normal(0, sigma, (c, base.shape[1])).astype(np.float32)
            x = np.ascontiguousarray(x, dtype=np.float32)
            t0 = time.perf_counter()
            idx.add(x)
            t_add += time.perf_counter() - t0
            if flat is not None:
                flat.add(x)
        xq = np.ascontiguousarray(ds.xq[:nq] + rng.normal(0, sigma, (nq, base.shape[1])).astype(np.float32))
        gt = flat.search(xq, K)[1] if flat is not None else None
        row = {"n": n, "add_s": t_add, "memory_bytes": idx.memory_usage(),
               "memory_per_vector": idx.memory_usage() / n, "points": []}
        for m, p in ((8, 16), (16, 16), (32, 16), (64, 16), (16, 64)):
            params = drqindex.SearchParametersIVFDRQ(nprobe=p, iters=m)
            med, _, (_, I) = median_time(lambda: idx.search(xq, K, params=params), repeats=args.repeats, warmup=1)
            rec = k_recall_at_k(I, gt, K) if gt is not None else None
            row["points"].append({"iters": m, "nprobe": p, "qps": nq / med, "recall": rec})
            log(f"  scale n={n:,} iters={m} nprobe={p}: {nq / med:,.0f} q/s, R10@10 {rec}")
        out.append(row)
        del idx, flat
    info["scale_sigma"] = sigma
    return out


def main(argv=None):
    args = parse_args(argv)
    info = machine_info()
    info.update({"threads": args.threads, "nlist": args.nlist, "quick": args.quick, "codebooks": args.codebooks,
                 "train_seconds_budget": args.train_seconds, "simd_level": drqindex.simd_level()})
    results, index = run_fashion(args, info)
    rows = summarize(results, info, args)
    scale = run_scale(args, index, info) if args.scale else None
    out = Path(args.out_dir)
    stem = "ivf_quick" if args.quick else "ivf"
    out.mkdir(parents=True, exist_ok=True)
    plot(results, args, out / f"{stem}.png")
    write_json(out / f"{stem}.json", {"info": info, "results": results, "summary": rows, "scale": scale})
    write_text(out / f"{stem}.md", render_md(info, results, rows, scale, args, stem))
    log(f"wrote {out / stem}.md/.json/.png")


def render_md(info, results, rows, scale, args, stem):
    L = [f"# IndexIVFDRQ vs faiss IndexIVFPQ (Fashion-MNIST{', quick' if args.quick else ''})", "",
         f"{info['date']}, {info['cpu']}, {info['threads']} threads for both libraries (faiss OpenMP and "
         f"drqindex), SIMD level {info['simd_level']}; nlist {args.nlist}; {len(NPROBES)} nprobe values "
         f"{list(NPROBES)}; 10-recall@10 over all queries; queries/s = nq / median of {args.repeats} runs "
         "(after one warm-up), coarse search and table building included.", "",
         f"- **IVFDRQ**: ONE model, IndexIVFDRQ(IndexFlatL2, nlist {args.nlist}, M = {max(ITERS)}, "
         f"codebooks={args.codebooks!r}), "
         f"by residual; DRQ training bounded to {args.train_seconds:.0f} s wall clock "
         f"(took {info['drq_train_s']:.0f} s with the faiss k-means of the coarse quantizer); searched at "
         f"iters in {list(ITERS)}.",
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
    L += ["## All points", "", "IVFDRQ (one model):", ""]
    L += [markdown_table(["iters", "nprobe", "R10@10", "q/s"],
                         [[r["iters"], r["nprobe"], r["recall"], r["qps"]] for r in results["drq"]]), ""]
    L += ["IVFPQ (one model per length):", ""]
    L += [markdown_table(["m", "nprobe", "R10@10", "q/s"],
                         [[m, p["nprobe"], p["recall"], p["qps"]] for m in BYTES for p in results["ivfpq"][m]["points"]]),
          ""]
    L += [f"![recall vs queries/s]({stem}.png)", ""]
    if scale:
        L += ["## Scale run (synthetic: perturbed repeats of Fashion-MNIST)", "",
              f"x = xb[i mod 60000] + N(0, sigma^2) per coordinate, sigma = {info['scale_sigma']:.2f} (5% of the mean "
              "per-coordinate std); queries = the first 1000 test images + the same noise; the model above "
              f"(nlist {args.nlist}, M 64) reused; recall against exact search over the perturbed database; "
              f"{args.threads} threads.", ""]
        body = []
        for s in scale:
            for p in s["points"]:
                body.append([f"{s['n']:,}", p["iters"], p["nprobe"], p["qps"], p["recall"],
                             f"{s['memory_per_vector']:.0f} B", f"{s['memory_bytes'] / 2**20:,.0f} MiB", s["add_s"]])
        L += [markdown_table(["n", "iters", "nprobe", "q/s", "R10@10", "mem/vec", "lists total", "add s"], body), ""]
    return "\n".join(L)


if __name__ == "__main__":
    main()
