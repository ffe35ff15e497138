#!/usr/bin/env python
"""Fashion-MNIST (ann-benchmarks split, 784-d, L2): drqindex's one model vs faiss trained per length.

drqindex trains ONE IndexDRQ with M = 64 iterations, encodes the database once, and searches with
the first m = 8, 16, 32, 64 bytes of the same codes. The faiss baselines are trained separately
at every length in the same run, on the same training vectors:
    PQ      IndexPQ(d, m, 8)                              (padded, see below, when m does not divide 784)
    IVFPQ   IndexIVFPQ(IndexFlatL2(d), d, nlist, m, 8)    nlist 1024, nprobe 16, residual encoding
    RQ      IndexResidualQuantizer(d, m, 8)               faiss defaults (beam 5), ADC with a float norm
For each: R@1 (1-recall@1), 10-recall@10, 1-recall@100, queries/s (all queries, k = 100, median of
3 timed runs after a warm-up), training seconds, code size.

    python benchmarks/bench_fashion_mnist.py             # full run (what `make bench` runs)
    python benchmarks/bench_fashion_mnist.py --quick     # 10k database / 1k queries, short training

Writes <out-dir>/fashion_mnist.md, .json and fashion_mnist_recall.png.
"""
from __future__ import annotations

import os
import sys


def _early_threads() -> None:
    # BLAS thread pools read their size when numpy/faiss load, so --threads must act before imports.
    n = None
    argv = sys.argv[1:]
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            n = argv[i + 1]
        elif a.startswith("--threads="):
            n = a.split("=", 1)[1]
    if n is not None and n.isdigit() and int(n) > 0:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = n


if __name__ == "__main__":
    _early_threads()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    Timer,
    available_cores,
    log,
    machine_info,
    markdown_table,
    median_time,
    write_json,
    write_text,
)

REPO = Path(__file__).resolve().parent.parent
try:  # a source checkout without `pip install -e .`: use the in-tree package
    import drqindex.data  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO / "python"))

from drqindex.data import (  # noqa: E402
    ground_truth,
    k_recall_at_k,
    load_fashion_mnist,
    recall_at,
)

K_SEARCH = 100
STEM = "fashion_mnist"


# ==============================================================================================
# arguments

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke-test size: 10k database, 1k queries, nlist 256, short drqindex training")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="where the .md/.json/.png go (default benchmarks/results, or benchmarks/results/quick "
                        "with --quick)")
    p.add_argument("--threads", type=int, default=available_cores(),
                   help="threads for faiss, drqindex and BLAS (default: all available cores)")
    p.add_argument("--data-dir", default=None, help="directory with the 4 Fashion-MNIST idx files")
    p.add_argument("--cache-dir", default=None, help="ground-truth cache (default $DRQ_CACHE_DIR or ~/.cache/drqindex)")
    p.add_argument("--nb", type=int, default=None, help="use the first nb database vectors (default all; quick 10000)")
    p.add_argument("--nq", type=int, default=None, help="use the first nq queries (default all; quick 1000)")
    p.add_argument("--train-size", type=int, default=None,
                   help="train every index on a random subset of this many database vectors (default: all of them)")
    p.add_argument("--ms", default="8,16,32,64", help="code lengths in bytes to evaluate")
    p.add_argument("--iters", type=int, default=None, help="drqindex M (default: the largest of --ms)")
    p.add_argument("--repeats", type=int, default=3, help="timed search runs (median reported), after 1 warm-up")
    p.add_argument("--nlist", type=int, default=None, help="IVFPQ lists (default 1024; quick 256)")
    p.add_argument("--nprobe", type=int, default=16, help="IVFPQ nprobe")
    p.add_argument("--rq-beam", type=int, default=None, help="faiss RQ max_beam_size (default: faiss's, 5)")
    p.add_argument("--rq-search", choices=["norm_float", "norm_qint8", "decompress"], default="norm_float",
                   help="faiss RQ search type: norm_float = ADC with a 4-byte norm (same ranking as decompress)")
    p.add_argument("--baselines", default="pq,ivfpq,rq", help="comma list of faiss baselines, or 'none'")
    p.add_argument("--skip-drq", action="store_true", help="faiss baselines only")
    p.add_argument("--drq-epochs", type=int, default=None,
                   help="drqindex trainer epochs (passed as train_config epochs; quick default 2)")
    p.add_argument("--drq-config", default=None,
                   help="extra drqindex trainer fields as JSON, e.g. '{\"lr\": 1e-3}'")
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args(argv)
    args.ms = sorted({int(m) for m in args.ms.split(",") if m.strip()})
    if not args.ms or min(args.ms) < 1:
        p.error("--ms: expected positive integers")
    args.iters = args.iters or max(args.ms)
    if args.iters < max(args.ms):
        p.error(f"--iters {args.iters} < the largest --ms {max(args.ms)}")
    args.baselines = [] if args.baselines.strip().lower() == "none" else \
        [b.strip().lower() for b in args.baselines.split(",") if b.strip()]
    unknown = set(args.baselines) - {"pq", "ivfpq", "rq"}
    if unknown:
        p.error(f"--baselines: unknown {sorted(unknown)}; expected pq, ivfpq, rq")
    if args.quick:
        args.nb = args.nb or 10000
        args.nq = args.nq or 1000
        args.nlist = args.nlist or 256
        if args.drq_epochs is None:
            args.drq_epochs = 2
    args.nlist = args.nlist or 1024
    if args.out_dir is None:
        args.out_dir = REPO / "benchmarks" / "results" / ("quick" if args.quick else "")
    if args.threads < 1:
        p.error("--threads: expected >= 1")
    return args


# ==============================================================================================
# data

def load_data(args):
    log("loading Fashion-MNIST")
    try:
        ds = load_fashion_mnist(args.data_dir)
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")
    sub = []
    if args.nb is not None and args.nb < ds.nb:
        sub.append(f"database: first {args.nb} of {ds.nb}")
    if args.nq is not None and args.nq < ds.nq:
        sub.append(f"queries: first {args.nq} of {ds.nq}")
    ds = ds.subsample(args.nb, args.nq)
    xb, xq = ds.xb, ds.xq
    if args.train_size is not None and args.train_size < ds.nb:
        rng = np.random.default_rng(args.seed)
        sel = np.sort(rng.choice(ds.nb, size=args.train_size, replace=False))
        xt = np.ascontiguousarray(xb[sel])
        sub.append(f"training: random {args.train_size} of the {ds.nb} database vectors (seed {args.seed})")
    else:
        xt = xb
    log(f"  xb {xb.shape}, xq {xq.shape}, xt {xt.shape} (from {ds.path})")
    with Timer() as t:
        gt = ground_truth(xb, xq, k=K_SEARCH, cache_dir=args.cache_dir)
    log(f"  ground truth k={K_SEARCH}: {t.s:.1f} s (cached on disk after the first run)")
    return ds, xt, xb, xq, gt, sub


def evaluate(search, xq, gt, repeats):
    """search(xq) -> (D, I). Recall from the last timed run; queries/s from the median time."""
    med, times, (_, I) = median_time(lambda: search(xq), repeats=repeats, warmup=1)
    return {
        "R@1": recall_at(I, gt, 1),
        "10-R@10": k_recall_at_k(I, gt, 10),
        "1-R@100": recall_at(I, gt, 100),
        "search_s": med,
        "search_times_s": times,
        "qps": xq.shape[0] / med,
    }


# ==============================================================================================
# faiss baselines, each trained for its own length

def _pad_dim(d: int, m: int) -> int:
    return -(-d // m) * m


def build_faiss(name: str, d: int, m: int, args):
    """Return (index, description, note, refs). Every faiss constructor call lives here.

    refs: sub-objects the caller keeps alive as long as the index (faiss wrappers hold raw pointers)."""
    import faiss

    refs = []
    if name in ("pq", "ivfpq"):
        dp = _pad_dim(d, m)
        if name == "pq":
            inner = faiss.IndexPQ(dp, m, 8)
            desc = f"IndexPQ({dp}, {m}, 8)"
        else:
            coarse = faiss.IndexFlatL2(dp)
            inner = faiss.IndexIVFPQ(coarse, dp, args.nlist, m, 8)
            inner.nprobe = args.nprobe
            refs.append(coarse)
            desc = f"IndexIVFPQ(IndexFlatL2({dp}), {dp}, {args.nlist}, {m}, 8), nprobe={args.nprobe}"
        if dp == d:
            return inner, desc, "", refs
        # m does not divide d: zero-pad to dp dims, spreading the real dims uniformly so each
        # sub-quantizer sees ~d/m of them. Zeros add nothing to L2 distances: no information is lost.
        remap = faiss.RemapDimensionsTransform(d, dp, True)
        index = faiss.IndexPreTransform(remap, inner)
        refs += [remap, inner]
        return index, f"RemapDimensionsTransform({d}->{dp}, uniform) + {desc}", f"zero-padded {d}->{dp} dims", refs
    if name == "rq":
        st = {"norm_float": faiss.AdditiveQuantizer.ST_norm_float,
              "norm_qint8": faiss.AdditiveQuantizer.ST_norm_qint8,
              "decompress": faiss.AdditiveQuantizer.ST_decompress}[args.rq_search]
        index = faiss.IndexResidualQuantizer(d, m, 8, faiss.METRIC_L2, st)
        if args.rq_beam is not None:
            index.rq.max_beam_size = args.rq_beam
        desc = (f"IndexResidualQuantizer({d}, {m}, 8, L2, ST_{args.rq_search}), "
                f"max_beam_size={index.rq.max_beam_size}")
        extra = index.code_size - m
        note = f"+{extra} B norm" if extra else "decompress: exact distance to reconstruction"
        return index, desc, note, refs
    raise ValueError(name)


def faiss_code_size(index) -> int:
    """Bytes of code per vector (the inner index's code_size for a pre-transformed index)."""
    import faiss

    if isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return int(index.code_size)


FAISS_LABELS = {"pq": "faiss PQ", "ivfpq": "faiss IVFPQ", "rq": "faiss RQ"}


def run_faiss_baselines(xt, xb, xq, gt, args):
    import faiss

    results = []
    d = xb.shape[1]
    for name in args.baselines:
        for m in args.ms:
            index, desc, note, refs = build_faiss(name, d, m, args)
            log(f"{FAISS_LABELS[name]} m={m}: {desc}")
            with Timer() as t_train:
                index.train(xt)
            with Timer() as t_add:
                index.add(xb)
            code_size = faiss_code_size(index)
            log(f"  train {t_train.s:.1f} s, add {t_add.s:.1f} s, code_size {code_size} B")
            r = evaluate(lambda q: index.search(q, K_SEARCH), xq, gt, args.repeats)
            ivf = faiss.try_extract_index_ivf(index)
            bytes_per_vector = code_size + (8 if ivf is not None else 0)  # IVF lists also store an int64 id
            results.append({
                "method": FAISS_LABELS[name], "key": name, "m": m, "code_size": code_size,
                "bytes_per_vector": bytes_per_vector, "train_s": t_train.s, "add_s": t_add.s,
                "index": desc, "note": note, **r,
            })
            log(f"  R@1 {r['R@1']:.4f}  10-R@10 {r['10-R@10']:.4f}  1-R@100 {r['1-R@100']:.4f}  "
                f"{r['qps']:.0f} q/s")
            del index, refs
    return results


# ==============================================================================================
# drqindex: one model, searched at every prefix

def drq_train_config(args):
    """The trainer options the benchmark sets, as a dict of DRQTrainConfig fields (None = defaults).

    Only fields the trainer actually has are passed, so the benchmark keeps working while the
    trainer's options evolve; anything dropped is reported."""
    import json

    wanted = {}
    if args.drq_epochs is not None:
        wanted["epochs"] = args.drq_epochs
    if args.drq_config:
        wanted.update(json.loads(args.drq_config))
    wanted.setdefault("seed", args.seed)
    try:
        from drqindex.train.drq import DRQTrainConfig
        fields = {f.name for f in dataclasses.fields(DRQTrainConfig)}
    except Exception:  # trainer not importable (yet): let IndexDRQ report it
        return wanted or None
    dropped = sorted(set(wanted) - fields)
    if dropped:
        log(f"  note: DRQTrainConfig has no field(s) {dropped}; not passed")
    cfg = {k: v for k, v in wanted.items() if k in fields}
    cfg.pop("iters", None)  # IndexDRQ sets it
    return cfg or None


def make_drq_index(d: int, args):
    """The single place the benchmark constructs a drqindex index."""
    import drqindex

    cfg = drq_train_config(args)
    index = drqindex.IndexDRQ(d, args.iters, drqindex.METRIC_L2, train_config=cfg)
    index.verbose = True
    return index, cfg


def run_drqindex(xt, xb, xq, gt, args):
    import drqindex

    d = xb.shape[1]
    index, cfg = make_drq_index(d, args)
    log(f"drqindex: IndexDRQ({d}, iters={args.iters}, METRIC_L2, train_config={cfg}) — one model for all m")
    with Timer() as t_train:
        index.train(xt)
    log(f"  train {t_train.s:.1f} s")
    with Timer() as t_add:
        index.add(xb)
    log(f"  add (encode {xb.shape[0]} x {args.iters} bytes once) {t_add.s:.1f} s")
    results = []
    for m in args.ms:
        r = evaluate(lambda q: index.search(q, K_SEARCH, iters=m), xq, gt, args.repeats)
        results.append({
            "method": "drqindex (one model)", "key": "drq", "m": m, "code_size": m,
            "bytes_per_vector": int(index.bytes_per_vector(m)),
            "stored_bytes_per_vector": int(index.code_size) + 4 * int(index.code_size),
            "train_s": t_train.s, "add_s": t_add.s,
            "index": f"IndexDRQ({d}, {args.iters}), search iters={m}",
            "note": "prefix of one 64-byte code; +4 B float norm per prefix" if m < args.iters
                    else "full code; +4 B float norm",
            **r,
        })
        log(f"  m={m}: R@1 {r['R@1']:.4f}  10-R@10 {r['10-R@10']:.4f}  1-R@100 {r['1-R@100']:.4f}  "
            f"{r['qps']:.0f} q/s")
    info = getattr(index, "train_info", None)
    return results, {"train_s": t_train.s, "add_s": t_add.s, "train_config": cfg,
                     "train_info": _summarise_info(info)}


def _summarise_info(info):
    if not isinstance(info, dict):
        return None
    out = {}
    for k, v in info.items():
        if isinstance(v, (int, float, str, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (list, tuple)) and len(v) <= 128 and all(isinstance(x, (int, float)) for x in v):
            out[k] = list(v)
    return out


# ==============================================================================================
# reporting

def versions():
    out = {}
    try:
        import faiss
        out["faiss"] = faiss.__version__
    except Exception as e:  # pragma: no cover
        out["faiss"] = f"unavailable ({e})"
    try:
        import drqindex
        out["drqindex"] = getattr(drqindex, "__version__", "?")
        out["drqindex_simd_level"] = drqindex.simd_level()
    except Exception as e:
        out["drqindex"] = f"unavailable ({type(e).__name__}: {e})"
    return out


def write_markdown(path, results, meta):
    lines = [f"# Fashion-MNIST: drqindex (one model) vs faiss (one model per length)", ""]
    lines += [
        f"- Data: Fashion-MNIST, ann-benchmarks split: database = train images ({meta['nb']}), "
        f"queries = test images ({meta['nq']}), d = {meta['d']}, raw pixels 0..255, L2.",
        f"- Subsampled: {'; '.join(meta['subsampled']) if meta['subsampled'] else 'nothing (full data)'}."
        + (" **(--quick run: numbers are a smoke test, not the benchmark)**" if meta["quick"] else ""),
        f"- Training vectors: {meta['ntrain']} (the database itself, as ann-benchmarks does, unless subsampled above).",
        f"- Machine: {meta['machine']['cpu']}, {meta['machine']['cores_available']} cores available; "
        f"threads used: {meta['threads']} (faiss omp, drqindex, BLAS); "
        f"drqindex SIMD level: {meta['versions'].get('drqindex_simd_level', '–')}; "
        f"CPU flags: {', '.join(meta['machine']['cpu_simd_flags']) or 'none'}.",
        f"- Versions: faiss {meta['versions'].get('faiss')}, drqindex {meta['versions'].get('drqindex')}, "
        f"numpy {meta['machine']['numpy']}, python {meta['machine']['python']}.",
        f"- Date: {meta['machine']['date']}.",
        f"- Search: all {meta['nq']} queries at once, k = {K_SEARCH}; q/s from the median of "
        f"{meta['repeats']} timed runs after 1 warm-up. R@1 = 1-recall@1 (true nearest neighbour ranked "
        "first), 10-R@10 = |top-10 ∩ true top-10| / 10, 1-R@100 = true nearest neighbour in the top 100.",
        "",
    ]
    headers = ["method", "m (code B)", "code_size", "B/vector read", "R@1", "10-R@10", "1-R@100", "q/s",
               "train s", "note"]
    rows = [[r["method"], r["m"], r["code_size"], r["bytes_per_vector"], r["R@1"], r["10-R@10"], r["1-R@100"],
             r["qps"], r["train_s"], r["note"]] for r in results]
    lines += [markdown_table(headers, rows, "lrrrrrrrrl"), ""]
    lines += ["## Training time", ""]
    trows = []
    if meta.get("drq"):
        trows.append(["drqindex: one IndexDRQ, M = %d (serves every m)" % meta["iters"], meta["drq"]["train_s"],
                      meta["drq"]["add_s"]])
    for key, label in FAISS_LABELS.items():
        rs = [r for r in results if r["key"] == key]
        if rs:
            trows.append([f"{label}: {len(rs)} separate models (m = {', '.join(str(r['m']) for r in rs)})",
                          sum(r["train_s"] for r in rs), sum(r["add_s"] for r in rs)])
    if trows:
        lines += [markdown_table(["what", "train s (sum)", "add s (sum)"], trows), ""]
    lines += ["## Configurations", ""]
    for r in results:
        lines.append(f"- {r['method']} m={r['m']}: `{r['index']}`" + (f" — {r['note']}" if r["note"] else ""))
    lines += [
        "",
        "Notes:",
        "- code_size: bytes per vector as the index reports it (faiss `index.code_size`; drqindex: the m "
        "code bytes used by the search). B/vector read: what a search touches per database vector: "
        "faiss RQ with ST_norm_float stores a 4-byte norm after the code; drqindex (L2) reads m code "
        "bytes plus the 4-byte float norm of that prefix (it stores M code bytes + M norms per vector "
        f"= {5 * meta['iters']} B for M = {meta['iters']}, so one index serves every m); IVFPQ's "
        "inverted lists also hold an 8-byte id per vector.",
        "- PQ/IVFPQ at lengths that do not divide 784 (32, 64): the vectors are zero-padded (faiss "
        "RemapDimensionsTransform, uniform) to the next multiple of m; zeros change no L2 distance.",
        "- faiss RQ: ADC with the exact float norm ranks exactly as decompression would (same distances "
        "up to rounding), so its recall is that of the codes themselves.",
        f"- IVFPQ searches only nprobe = {meta['nprobe']} of {meta['nlist']} lists (not exhaustive).",
        "",
    ]
    if meta.get("drq_error"):
        lines += [f"**drqindex part failed:** `{meta['drq_error']}`", ""]
    write_text(path, "\n".join(lines))


def write_plot(path, results, meta):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:
        log(f"no plot (matplotlib unavailable: {e})")
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    styles = {"drq": dict(color="C3", marker="o", lw=2.5), "pq": dict(color="C0", marker="s", ls="--"),
              "ivfpq": dict(color="C1", marker="^", ls="--"), "rq": dict(color="C2", marker="D", ls="--")}
    labels = {"drq": "drqindex (one model, prefixes)", "pq": "faiss PQ (per length)",
              "ivfpq": f"faiss IVFPQ nprobe={meta['nprobe']} (per length)", "rq": "faiss RQ (per length)"}
    for ax, metric, title in zip(axes, ["R@1", "10-R@10"], ["R@1 (1-recall@1)", "10-recall@10"]):
        for key in ["drq", "pq", "ivfpq", "rq"]:
            rs = sorted((r for r in results if r["key"] == key), key=lambda r: r["m"])
            if rs:
                ax.plot([r["m"] for r in rs], [r[metric] for r in rs], label=labels[key], **styles[key])
        ax.set_xscale("log", base=2)
        ax.set_xticks(meta["ms"])
        ax.set_xticklabels([str(m) for m in meta["ms"]])
        ax.set_xlabel("code bytes per vector (m)")
        ax.set_ylabel(metric)
        ax.set_ylim(0, 1)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    sub = " (quick subsample)" if meta["quick"] else ""
    fig.suptitle(f"Fashion-MNIST {meta['nb']} x {meta['d']}, {meta['nq']} queries{sub}", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ==============================================================================================

def set_threads(n: int) -> list[str]:
    done = []
    try:
        import faiss
        faiss.omp_set_num_threads(n)
        done.append(f"faiss.omp_set_num_threads({n})")
    except ImportError:
        pass
    try:
        import drqindex
        drqindex.set_num_threads(n)
        done.append(f"drqindex.set_num_threads({n})")
    except Exception as e:
        done.append(f"drqindex unavailable ({type(e).__name__})")
    if "torch" in sys.modules or _torch_available():
        import torch
        torch.set_num_threads(n)
        done.append(f"torch.set_num_threads({n})")
    return done


def _torch_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def main(argv=None) -> int:
    args = parse_args(argv)
    log(f"threads: {args.threads} — " + ", ".join(set_threads(args.threads)))
    ds, xt, xb, xq, gt, subsampled = load_data(args)
    meta = {
        "quick": args.quick, "nb": int(xb.shape[0]), "nq": int(xq.shape[0]), "d": int(xb.shape[1]),
        "ntrain": int(xt.shape[0]), "subsampled": subsampled, "ms": args.ms, "iters": args.iters,
        "k": K_SEARCH, "repeats": args.repeats, "nlist": args.nlist, "nprobe": args.nprobe,
        "threads": args.threads, "machine": machine_info(), "versions": versions(),
        "data_path": ds.path, "argv": sys.argv[1:] if argv is None else list(argv),
    }
    log(f"versions: {meta['versions']}")
    results = []
    if not args.skip_drq:
        try:
            drq_results, meta["drq"] = run_drqindex(xt, xb, xq, gt, args)
            results += drq_results
        except KeyboardInterrupt:
            raise
        except Exception as e:
            traceback.print_exc()
            meta["drq_error"] = f"{type(e).__name__}: {e}"
            log(f"drqindex part failed: {meta['drq_error']} — continuing with the faiss baselines")
    if args.baselines:
        results += run_faiss_baselines(xt, xb, xq, gt, args)

    out = Path(args.out_dir)
    write_json(out / f"{STEM}.json", {"meta": meta, "results": results})
    write_markdown(out / f"{STEM}.md", results, meta)
    plotted = write_plot(out / f"{STEM}_recall.png", results, meta)
    log(f"wrote {out / (STEM + '.md')}, {out / (STEM + '.json')}" + (f", {out / (STEM + '_recall.png')}" if plotted else ""))
    print()
    print((out / f"{STEM}.md").read_text())
    return 1 if meta.get("drq_error") else 0


if __name__ == "__main__":
    sys.exit(main())
