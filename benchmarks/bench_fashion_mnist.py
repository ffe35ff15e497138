#!/usr/bin/env python
"""Fashion-MNIST (ann-benchmarks split, 784-d, L2): drqindex's one model vs faiss trained per length.

drqindex trains ONE IndexDRQ with M = 64 iterations, encodes the database once, and searches with
the first m = 8, 16, 32, 64 bytes of the same codes. The faiss baselines are trained separately
at every length in the same run, on the same training vectors:
    PQ      IndexPQ(d, m, 8)                              (padded, see below, when m does not divide 784)
    IVFPQ   IndexIVFPQ(IndexFlatL2(d), d, nlist, m, 8)    nlist 1024, nprobe 16, residual encoding
    RQ      IndexResidualQuantizer(d, m, 8)               faiss defaults (beam 5, progressive-dim k-means),
                                                          ADC with a float norm; trained on 16384 of the
                                                          training vectors (--rq-train-size: its per-stage
                                                          PCA costs O(n d^2)); one 64-stage run serves every m
                                                          (bit-identical to training each m alone)
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
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from thread_env import omp_passive, set_pool_threads, threads_from_argv
    set_pool_threads(threads_from_argv())
    if "--omp-passive" in sys.argv[1:]:
        omp_passive()


if __name__ == "__main__":
    _early_threads()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    import_drqindex,
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
import_drqindex("data")  # noqa: E402
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
                   help="smoke test: 10k database, 1k queries, nlist 256, 4 k-means iterations, RQ beam 1, "
                        "1 drqindex epoch")
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
    p.add_argument("--rq-train-size", type=int, default=16384,
                   help="faiss RQ trains on a random subset of this many training vectors (0: all). Its default "
                        "progressive-dim k-means computes a PCA of all training residuals at every stage, "
                        "O(n d^2) per stage, which dominates on 784-d data")
    p.add_argument("--rq-plain-kmeans", action="store_true",
                   help="faiss RQ train_type = plain k-means instead of faiss's default progressive-dim (quick)")
    p.add_argument("--rq-separate", action="store_true",
                   help="train faiss RQ separately at every length (default: one run, prefix codebooks; identical)")
    p.add_argument("--faiss-niter", type=int, default=None,
                   help="k-means iterations for every faiss baseline (default: faiss's own; quick 4)")
    p.add_argument("--baselines", default="pq,ivfpq,rq", help="comma list of faiss baselines, or 'none'")
    p.add_argument("--skip-drq", action="store_true", help="faiss baselines only")
    p.add_argument("--drq-epochs", type=int, default=None,
                   help="drqindex trainer epochs (passed as train_config epochs; quick default 1)")
    p.add_argument("--drq-config", default=None,
                   help="extra drqindex trainer fields as JSON, e.g. '{\"lr\": 1e-3}'")
    p.add_argument("--omp-passive", action="store_true",
                   help="set OMP_WAIT_POLICY=PASSIVE (recommended when other jobs share the cores)")
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
    if args.quick:  # a smoke test of every code path, not a measurement
        args.nb = args.nb or 10000
        args.nq = args.nq or 1000
        args.nlist = args.nlist or 256
        args.faiss_niter = args.faiss_niter or 4
        args.rq_beam = args.rq_beam or 1
        args.rq_train_size = min(args.rq_train_size or 2048, 2048)
        args.rq_plain_kmeans = True
        if args.drq_epochs is None:
            args.drq_epochs = 1
        args.quick_drq_defaults = {"init_iters": 1}
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


def _rq_search_type(name: str) -> int:
    import faiss

    return {"norm_float": faiss.AdditiveQuantizer.ST_norm_float,
            "norm_qint8": faiss.AdditiveQuantizer.ST_norm_qint8,
            "decompress": faiss.AdditiveQuantizer.ST_decompress}[name]


def _configure_rq(index, args) -> str:
    """Apply the RQ options; return the description of non-default settings."""
    rq = index.rq
    if args.rq_beam is not None:
        rq.max_beam_size = args.rq_beam
    extra = [f"max_beam_size={rq.max_beam_size}"]
    if args.rq_plain_kmeans:
        rq.train_type = 0  # Train_default: plain k-means per stage
        extra.append("train_type=plain k-means")
    if args.faiss_niter:
        rq.cp.niter = args.faiss_niter
        extra.append(f"niter={args.faiss_niter}")
    return ", ".join(extra)


def build_faiss(name: str, d: int, m: int, args):
    """Return (index, description, note, refs). Every faiss constructor call lives here.

    refs: sub-objects the caller keeps alive as long as the index (faiss wrappers hold raw pointers)."""
    import faiss

    refs = []
    if name in ("pq", "ivfpq"):
        dp = _pad_dim(d, m)
        if name == "pq":
            inner = faiss.IndexPQ(dp, m, 8)
            if args.faiss_niter:
                inner.pq.cp.niter = args.faiss_niter
            desc = f"IndexPQ({dp}, {m}, 8)"
        else:
            coarse = faiss.IndexFlatL2(dp)
            inner = faiss.IndexIVFPQ(coarse, dp, args.nlist, m, 8)
            inner.nprobe = args.nprobe
            if args.faiss_niter:
                inner.cp.niter = inner.pq.cp.niter = args.faiss_niter
            refs.append(coarse)
            desc = f"IndexIVFPQ(IndexFlatL2({dp}), {dp}, {args.nlist}, {m}, 8), nprobe={args.nprobe}"
        if args.faiss_niter:
            desc += f", k-means niter={args.faiss_niter}"
        if dp == d:
            return inner, desc, "", refs
        # m does not divide d: zero-pad to dp dims, spreading the real dims uniformly so each
        # sub-quantizer sees ~d/m of them. Zeros add nothing to L2 distances: no information is lost.
        remap = faiss.RemapDimensionsTransform(d, dp, True)
        index = faiss.IndexPreTransform(remap, inner)
        refs += [remap, inner]
        return index, f"RemapDimensionsTransform({d}->{dp}, uniform) + {desc}", f"zero-padded {d}->{dp} dims", refs
    if name == "rq":
        index = faiss.IndexResidualQuantizer(d, m, 8, faiss.METRIC_L2, _rq_search_type(args.rq_search))
        extra = _configure_rq(index, args)
        desc = f"IndexResidualQuantizer({d}, {m}, 8, L2, ST_{args.rq_search}), {extra}"
        return index, desc, _rq_note(index, m), refs
    raise ValueError(name)


def _rq_note(index, m: int) -> str:
    extra = index.code_size - m
    return f"+{extra} B norm" if extra else "decompress: exact distance to reconstruction"


def faiss_code_size(index) -> int:
    """Bytes of code per vector (the inner index's code_size for a pre-transformed index)."""
    import faiss

    if isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return int(index.code_size)


class _TeeCStdout:
    """Capture what C code prints to fd 1 (still echoing it), to read faiss's verbose training log."""

    def __enter__(self):
        import ctypes
        import threading

        self.lines = []
        self._libc = ctypes.CDLL(None)
        sys.stdout.flush()
        self._saved = os.dup(1)
        r, w = os.pipe()
        os.dup2(w, 1)
        os.close(w)
        self._thread = threading.Thread(target=self._pump, args=(r,), daemon=True)
        self._thread.start()
        return self

    def _pump(self, r):
        with os.fdopen(r, "rb") as f:
            for line in f:
                try:
                    os.write(self._saved, line)
                except OSError:
                    pass
                self.lines.append(line.decode(errors="replace"))

    def __exit__(self, *exc):
        sys.stdout.flush()
        self._libc.fflush(None)
        os.dup2(self._saved, 1)  # drops the pipe's last write end: the pump sees EOF
        self._thread.join(timeout=10)
        os.close(self._saved)
        return False


def _rq_stage_times(lines) -> dict[int, float]:
    """{stage: cumulative seconds at its end} from faiss ResidualQuantizer's verbose log."""
    import re

    pat = re.compile(r"\[\s*([0-9.]+) s,[^\]]*\]\s*train stage (\d+)")
    out = {}
    for line in lines:
        mt = pat.search(line)
        if mt:
            out[int(mt.group(2))] = float(mt.group(1))
    return out


def train_rq_prefix_family(xt, d: int, args):
    """faiss RQ for every m in args.ms from ONE training run of max(ms) stages.

    faiss trains an RQ stage by stage (k-means on the residuals of the previous stages, the same
    seed at every stage, no joint refinement by default), so the first m codebooks of RQ(M) are
    bit-identical to the codebooks of an RQ(m) trained on its own (checked by
    tests/test_bench_fashion_mnist.py). Each RQ(m) is then built from those m codebooks and encodes
    the database itself (beam search over m stages, not a prefix of the M-stage code). The training
    time reported for RQ(m) is what training it alone costs: the cumulative time at the end of
    stage m from faiss's log, plus the fixed post-stage overhead.
    Returns ({m: (trained empty index, train_s)}, seconds of the one training run).
    """
    import faiss

    M = max(args.ms)
    full = faiss.IndexResidualQuantizer(d, M, 8, faiss.METRIC_L2, _rq_search_type(args.rq_search))
    _configure_rq(full, args)
    full.rq.verbose = True
    with _TeeCStdout() as tee, Timer() as t:
        full.train(xt)
    stages = _rq_stage_times(tee.lines)
    tail = t.s - stages.get(M - 1, t.s)
    books = faiss.vector_to_array(full.rq.codebooks)
    K = 1 << 8
    family = {}
    for m in args.ms:
        if m == M:
            idx = full
            full.rq.verbose = False
        else:
            idx = faiss.IndexResidualQuantizer(d, m, 8, faiss.METRIC_L2, _rq_search_type(args.rq_search))
            _configure_rq(idx, args)
            faiss.copy_array_to_vector(books[: m * K * d].copy(), idx.rq.codebooks)
            idx.rq.is_trained = True
            if hasattr(idx.rq, "compute_codebook_tables"):
                idx.rq.compute_codebook_tables()
            idx.is_trained = True
        train_s = stages[m - 1] + tail if (m - 1) in stages else float("nan")
        family[m] = (idx, train_s)
    return family, t.s


FAISS_LABELS = {"pq": "faiss PQ", "ivfpq": "faiss IVFPQ", "rq": "faiss RQ"}


def run_faiss_baselines(xt, xb, xq, gt, args, on_result=None):
    import faiss

    results, faiss_meta = [], {}
    d = xb.shape[1]
    xt_rq, rq_sub = xt, ""
    if "rq" in args.baselines and args.rq_train_size and args.rq_train_size < xt.shape[0]:
        sel = np.sort(np.random.default_rng(args.seed + 1).choice(xt.shape[0], args.rq_train_size, replace=False))
        xt_rq = np.ascontiguousarray(xt[sel])
        rq_sub = f"; trained on a random {args.rq_train_size} of the {xt.shape[0]} training vectors"
    for name in args.baselines:
        family = None
        if name == "rq" and not args.rq_separate:
            log(f"faiss RQ: one training run of {max(args.ms)} stages, RQ(m) for m in {args.ms} built from "
                "its first m codebooks (identical to training each alone; see --rq-separate)")
            family, total = train_rq_prefix_family(xt_rq, d, args)
            faiss_meta["rq_one_run_train_s"] = total
            faiss_meta["rq_one_run_stages"] = max(args.ms)
            log(f"  RQ training ({max(args.ms)} stages): {total:.1f} s")
        for m in args.ms:
            if family is not None:
                index, train_s = family[m]
                extra = _configure_rq(index, args)
                desc = (f"IndexResidualQuantizer({d}, {m}, 8, L2, ST_{args.rq_search}), {extra}; first {m} "
                        f"codebooks of one {max(args.ms)}-stage training run{rq_sub}")
                note, refs = _rq_note(index, m), []
                log(f"{FAISS_LABELS[name]} m={m}: {desc}")
            else:
                index, desc, note, refs = build_faiss(name, d, m, args)
                if name == "rq":
                    desc += rq_sub
                log(f"{FAISS_LABELS[name]} m={m}: {desc}")
                with Timer() as t_train:
                    index.train(xt_rq if name == "rq" else xt)
                train_s = t_train.s
            with Timer() as t_add:
                index.add(xb)
            code_size = faiss_code_size(index)
            log(f"  train {train_s:.1f} s, add {t_add.s:.1f} s, code_size {code_size} B")
            r = evaluate(lambda q: index.search(q, K_SEARCH), xq, gt, args.repeats)
            ivf = faiss.try_extract_index_ivf(index)
            bytes_per_vector = code_size + (8 if ivf is not None else 0)  # IVF lists also store an int64 id
            results.append({
                "method": FAISS_LABELS[name], "key": name, "m": m, "code_size": code_size,
                "bytes_per_vector": bytes_per_vector, "train_s": train_s, "add_s": t_add.s,
                "index": desc, "note": note, **r,
            })
            log(f"  R@1 {r['R@1']:.4f}  10-R@10 {r['10-R@10']:.4f}  1-R@100 {r['1-R@100']:.4f}  "
                f"{r['qps']:.0f} q/s")
            if on_result:
                on_result(results[-1])
            del index, refs
            if family is not None:
                family[m] = None
    faiss_meta["rq_train_vectors"] = int(xt_rq.shape[0])
    return results, faiss_meta


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
    for k, v in getattr(args, "quick_drq_defaults", {}).items():
        wanted.setdefault(k, v)
    wanted.setdefault("num_threads", args.threads)
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


def run_drqindex(xt, xb, xq, gt, args, on_result=None):
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
            "note": f"prefix of one {args.iters}-byte code; +4 B float norm per prefix" if m < args.iters
                    else "full code; +4 B float norm",
            **r,
        })
        log(f"  m={m}: R@1 {r['R@1']:.4f}  10-R@10 {r['10-R@10']:.4f}  1-R@100 {r['1-R@100']:.4f}  "
            f"{r['qps']:.0f} q/s")
        if on_result:
            on_result(results[-1])
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
        f"threads used: {meta['threads']} (faiss omp, drqindex, BLAS); OMP_WAIT_POLICY {meta['omp_wait_policy']}; "
        f"drqindex SIMD level: {meta['versions'].get('drqindex_simd_level', '–')}; "
        f"CPU flags: {', '.join(meta['machine']['cpu_simd_flags']) or 'none'}.",
        f"- Versions: faiss {meta['versions'].get('faiss')}, drqindex {meta['versions'].get('drqindex')}, "
        f"numpy {meta['machine']['numpy']}, python {meta['machine']['python']}.",
        f"- Date: {meta['machine']['date']}. Load average (1/5/15 min) at start "
        f"{'/'.join(f'{v:.1f}' for v in meta['loadavg_start'])}, at end "
        f"{'/'.join(f'{v:.1f}' for v in meta['loadavg_end'])} (other jobs on the machine inflate times).",
        f"- Search: all {meta['nq']} queries at once, k = {K_SEARCH}; q/s from the median of "
        f"{meta['repeats']} timed runs after 1 warm-up. R@1 = 1-recall@1 (true nearest neighbour ranked "
        "first), 10-R@10 = |top-10 ∩ true top-10| / 10, 1-R@100 = true nearest neighbour in the top 100.",
        "",
    ]
    headers = ["method", "m (code B)", "code_size", "B/vector read", "R@1", "10-R@10", "1-R@100", "q/s",
               "train s", "note"]
    rows = [[r["method"], r["m"], r["code_size"], r["bytes_per_vector"], r["R@1"], r["10-R@10"], r["1-R@100"],
             f"{r['qps']:,.0f}", _secs(r["train_s"]), r["note"]] for r in results]
    lines += [markdown_table(headers, rows, "lrrrrrrrrl"), ""]
    lines += ["## Training time", ""]
    trows = []
    if meta.get("drq"):
        trows.append([f"drqindex: one IndexDRQ, M = {meta['iters']} (serves every m)",
                      _secs(meta["drq"]["train_s"]), _secs(meta["drq"]["add_s"])])
    fm = meta.get("faiss") or {}
    for key, label in FAISS_LABELS.items():
        rs = [r for r in results if r["key"] == key]
        if not rs:
            continue
        what = f"{label}: {len(rs)} models, one per length (m = {', '.join(str(r['m']) for r in rs)})"
        if key == "rq" and "rq_one_run_train_s" in fm:
            what += (f"; sum of what each costs alone — measured here as one {fm['rq_one_run_stages']}-stage run "
                     f"of {_secs(fm['rq_one_run_train_s'])} s on {fm['rq_train_vectors']} vectors")
        elif key == "rq":
            what += f"; trained on {fm.get('rq_train_vectors', '?')} vectors"
        trows.append([what, _secs(sum(r["train_s"] for r in rs)), _secs(sum(r["add_s"] for r in rs))])
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
        "up to rounding), so its recall is that of the codes themselves. faiss trains RQ stage by stage "
        "(same k-means seed each stage, no joint refinement), so RQ(m) trained alone has exactly the first "
        "m codebooks of RQ(64) (tests/test_bench_fashion_mnist.py checks this); unless --rq-separate, the "
        "benchmark trains RQ(64) once, builds each RQ(m) from its first m codebooks, encodes the database "
        "with each RQ(m) (its own beam search), and reports as RQ(m)'s training time the time faiss's log "
        "shows at the end of stage m (what training RQ(m) alone costs). RQ is trained on a random subset "
        "of the training vectors (see its configuration line): faiss's default progressive-dim k-means "
        "computes a PCA of all training residuals at every stage, which dominates the time on 784-d data.",
        f"- IVFPQ searches only nprobe = {meta['nprobe']} of {meta['nlist']} lists (not exhaustive).",
        "",
    ]
    if meta.get("drq_error"):
        lines += [f"**drqindex part failed:** `{meta['drq_error']}`", ""]
    write_text(path, "\n".join(lines))


def _secs(v) -> str:
    if v is None or v != v:
        return "–"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


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

def set_threads(n: int, with_torch: bool = True) -> list[str]:
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
    if with_torch and ("torch" in sys.modules or _torch_available()):
        import torch
        torch.set_num_threads(n)
        done.append(f"torch.set_num_threads({n})")
    return done


def _torch_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def main(argv=None) -> int:
    args = parse_args(argv)
    log(f"threads: {args.threads} — " + ", ".join(set_threads(args.threads, with_torch=not args.skip_drq)))
    ds, xt, xb, xq, gt, subsampled = load_data(args)
    meta = {
        "quick": args.quick, "nb": int(xb.shape[0]), "nq": int(xq.shape[0]), "d": int(xb.shape[1]),
        "ntrain": int(xt.shape[0]), "subsampled": subsampled, "ms": args.ms, "iters": args.iters,
        "k": K_SEARCH, "repeats": args.repeats, "nlist": args.nlist, "nprobe": args.nprobe,
        "threads": args.threads, "machine": machine_info(), "loadavg_start": os.getloadavg(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: implementation default)"), "versions": versions(),
        "data_path": ds.path, "argv": sys.argv[1:] if argv is None else list(argv),
    }
    log(f"versions: {meta['versions']}")
    if meta["loadavg_start"][0] > available_cores():
        log(f"warning: load average {meta['loadavg_start'][0]:.1f} > {available_cores()} cores: other jobs are "
            "running, timings will be inflated" + ("" if args.omp_passive else " (consider --omp-passive)"))
    results = []
    out = Path(args.out_dir)
    partial_file = out / f"{STEM}.partial.json"
    done = []

    def checkpoint(row):  # a run of an hour should not lose everything to a kill near its end
        done.append(row)
        write_json(partial_file, {"meta": meta, "results": done, "complete": False})

    if not args.skip_drq:
        try:
            drq_results, meta["drq"] = run_drqindex(xt, xb, xq, gt, args, on_result=checkpoint)
            results += drq_results
        except KeyboardInterrupt:
            raise
        except Exception as e:
            traceback.print_exc()
            meta["drq_error"] = f"{type(e).__name__}: {e}"
            log(f"drqindex part failed: {meta['drq_error']} — continuing with the faiss baselines")
    if args.baselines:
        faiss_results, meta["faiss"] = run_faiss_baselines(xt, xb, xq, gt, args, on_result=checkpoint)
        results += faiss_results

    meta["loadavg_end"] = os.getloadavg()
    write_json(out / f"{STEM}.json", {"meta": meta, "results": results})
    partial_file.unlink(missing_ok=True)
    write_markdown(out / f"{STEM}.md", results, meta)
    plotted = write_plot(out / f"{STEM}_recall.png", results, meta)
    log(f"wrote {out / (STEM + '.md')}, {out / (STEM + '.json')}" + (f", {out / (STEM + '_recall.png')}" if plotted else ""))
    print()
    print((out / f"{STEM}.md").read_text())
    return 1 if meta.get("drq_error") else 0


if __name__ == "__main__":
    sys.exit(main())
