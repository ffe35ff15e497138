#!/usr/bin/env python
"""Fashion-MNIST (ann-benchmarks split, 784-d, L2, plus cosine): drqindex's one model vs faiss trained per length.

drqindex trains ONE IndexDRQ with M = 64 iterations per codebook form (--drq-variants: "shared",
the faithful DRQ with one codebook for every iteration; "per_iteration", one codebook per
iteration, trained in the top-256 principal subspace (the default); "per_iteration_full_d", the
same in all d dimensions), encodes the database once, and searches with the first m = 8, 16, 32, 64 bytes of the
same codes. The faiss baselines are trained separately at every length in the same run, on the
same training vectors:
    PQ      IndexPQ(d, m, 8)                              (padded, see below, when m does not divide 784)
    OPQ     OPQMatrix(d, m, dp) + IndexPQ(dp, m, 8)       faiss "OPQ{m}[_{dp}],PQ{m}np"; dp = d rounded up to a
                                                          multiple of m (the rotation also pads)
    IVFPQ   IndexIVFPQ(IndexFlatL2(d), d, nlist, m, 8)    nlist 1024, nprobe 16, residual encoding
    RQ      IndexResidualQuantizer(d, m, 8)               faiss defaults (beam 5, progressive-dim k-means),
                                                          ADC with a float norm; trained on 8192 of the
                                                          training vectors (--rq-train-size: every stage
                                                          clusters the 5 n beam residuals); one 64-stage run
                                                          serves every m (bit-identical to training each alone)
For each: R@1 (1-recall@1), 10-recall@10, 1-recall@100, queries/s (all queries, k = 100, median of
3 timed runs after a warm-up), training seconds, code size, parameters (floats) and model size.
A second section (--cosine, on by default) repeats drqindex, PQ, OPQ and RQ with inner product on
L2-normalised vectors (ground truth by exact inner product).

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


BASELINES = ("pq", "opq", "ivfpq", "rq")   # faiss baselines, each trained per length
COSINE_BASELINES = ("pq", "opq", "rq")     # ... of the cosine section (IVFPQ: not part of issue 3's goal)
GOAL_BASELINES = ("pq", "opq", "rq")       # issue 3: drqindex >= the best of these at every m
DRQ_VARIANTS = ("shared", "per_iteration", "per_iteration_full_d")
# variant -> (IndexDRQ codebooks argument, trainer options the variant adds). per_iteration is
# the default trainer (codebooks in the top-256 principal subspace); per_iteration_full_d the same
# trainer in all d dimensions (per_iteration_subspace_dims=None): the subspace's cost in recall.
VARIANT_FORMS = {
    "shared": ("shared", {}),
    "per_iteration": ("per_iteration", {}),
    "per_iteration_full_d": ("per_iteration", {"per_iteration_subspace_dims": None}),
}


# ==============================================================================================
# arguments

def _comma_list(p, flag: str, text: str, allowed) -> list[str]:
    """'a,b' -> ['a', 'b'] (order kept, duplicates dropped); 'none' -> []; unknown names: a parser error."""
    if text.strip().lower() == "none":
        return []
    items = list(dict.fromkeys(t.strip().lower() for t in text.split(",") if t.strip()))
    unknown = [t for t in items if t not in allowed]
    if unknown:
        p.error(f"{flag}: unknown {unknown}; expected a comma list of {', '.join(allowed)} (or 'none')")
    return items


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 10k database, 1k queries, nlist 256, 4 k-means iterations, 4 OPQ iterations, "
                        "RQ beam 1, 1 drqindex epoch")
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
    p.add_argument("--rq-train-size", type=int, default=8192,
                   help="faiss RQ trains on a random subset of this many training vectors (0: all). With beam 5 "
                        "every one of the 64 stages runs progressive-dim k-means (a PCA, O(n d^2), and k-means) on "
                        "the 5 n beam residuals (k-means capped at 65536 points): about 11 s of one core per stage "
                        "at 8192 vectors, 19 s at 16384, measured on this 784-d data")
    p.add_argument("--rq-plain-kmeans", action="store_true",
                   help="faiss RQ train_type = plain k-means instead of faiss's default progressive-dim (quick)")
    p.add_argument("--rq-separate", action="store_true",
                   help="train faiss RQ separately at every length (default: one run, prefix codebooks; identical)")
    p.add_argument("--faiss-niter", type=int, default=None,
                   help="k-means iterations for every faiss baseline (default: faiss's own; quick 4)")
    p.add_argument("--opq-niter", type=int, default=None,
                   help="OPQ alternating-optimisation iterations (faiss OPQMatrix.niter; default faiss's, 50; quick 4)")
    p.add_argument("--opq-train-size", type=int, default=16384,
                   help="the OPQ rotation is learnt on a random subset of this many training vectors (faiss "
                        "OPQMatrix.max_train_points; 0: faiss's default, 65536); the final PQ is trained on all "
                        "of them. Each of the 50 iterations rotates the sample and retrains a PQ on it: O(n d^2)")
    p.add_argument("--baselines", default="pq,opq,ivfpq,rq",
                   help=f"comma list of faiss baselines ({', '.join(BASELINES)}), or 'none'")
    p.add_argument("--skip-drq", action="store_true", help="faiss baselines only")
    p.add_argument("--drq-variants", default=",".join(DRQ_VARIANTS),
                   help="drqindex codebook forms, one IndexDRQ(d, M, metric, codebooks=<form>) each: "
                        "shared (the faithful DRQ) and/or per_iteration")
    p.add_argument("--prefix-check", default="8,16",
                   help="L2 section: code lengths m < M at which a separate drqindex model trained for exactly m "
                        "iterations is compared with the m-prefix of the M model (the prefix penalty), or 'none'")
    p.add_argument("--prefix-check-variants", default="per_iteration",
                   help="drqindex forms the prefix check runs for (each separate model costs a training)")
    p.add_argument("--cosine", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the inner-product section on L2-normalised data (cosine): drqindex variants and "
                        "the faiss baselines of --cosine-baselines with METRIC_INNER_PRODUCT")
    p.add_argument("--cosine-nb", type=int, default=None,
                   help="cosine section: use the first N database vectors, and train on them (default: the same "
                        "database and training vectors as the L2 section)")
    p.add_argument("--cosine-baselines", default="pq,opq,rq",
                   help="faiss baselines of the cosine section (pq, opq, rq), or 'none'")
    p.add_argument("--cosine-repeats", type=int, default=1,
                   help="cosine section: timed search runs after the warm-up (its q/s matter less than L2's)")
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
    args.baselines = _comma_list(p, "--baselines", args.baselines, BASELINES)
    args.cosine_baselines = _comma_list(p, "--cosine-baselines", args.cosine_baselines, COSINE_BASELINES)
    args.drq_variants = _comma_list(p, "--drq-variants", args.drq_variants.replace("-", "_"), DRQ_VARIANTS)
    args.prefix_check_variants = _comma_list(p, "--prefix-check-variants", args.prefix_check_variants.replace("-", "_"),
                                             DRQ_VARIANTS)
    if args.prefix_check.strip().lower() == "none":
        args.prefix_check = []
    else:
        try:
            args.prefix_check = sorted({int(m) for m in args.prefix_check.split(",") if m.strip()})
        except ValueError:
            p.error(f"--prefix-check: expected a comma list of code lengths or 'none', got {args.prefix_check!r}")
        if any(m < 1 for m in args.prefix_check):
            p.error("--prefix-check: expected positive code lengths")
    if args.cosine_nb is not None and args.cosine_nb < K_SEARCH:
        p.error(f"--cosine-nb: expected >= {K_SEARCH} (k), got {args.cosine_nb}")
    if args.quick:  # a smoke test of every code path, not a measurement
        args.nb = args.nb or 10000
        args.nq = args.nq or 1000
        args.nlist = args.nlist or 256
        args.faiss_niter = args.faiss_niter or 4
        args.opq_niter = args.opq_niter or 4
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


def _faiss_metric(metric) -> int:
    import faiss

    return faiss.METRIC_L2 if metric is None else int(metric)


def _metric_name(metric) -> str:
    import faiss

    return "L2" if _faiss_metric(metric) == faiss.METRIC_L2 else "IP"


def _rq_search_name(args, metric) -> str:
    """L2: --rq-search (default ADC with a float norm). IP: lut_nonorm, ADC without any norm (the
    inner product needs none, so the code is exactly m bytes)."""
    return args.rq_search if _metric_name(metric) == "L2" else "lut_nonorm"


def _rq_search_type(name: str) -> int:
    import faiss

    return {"norm_float": faiss.AdditiveQuantizer.ST_norm_float,
            "norm_qint8": faiss.AdditiveQuantizer.ST_norm_qint8,
            "decompress": faiss.AdditiveQuantizer.ST_decompress,
            "lut_nonorm": faiss.AdditiveQuantizer.ST_LUT_nonorm}[name]


def _make_rq(d: int, m: int, args, metric=None):
    import faiss

    st = _rq_search_name(args, metric)
    index = faiss.IndexResidualQuantizer(d, m, 8, _faiss_metric(metric), _rq_search_type(st))
    return index, f"IndexResidualQuantizer({d}, {m}, 8, {_metric_name(metric)}, ST_{st})"


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


def build_faiss(name: str, d: int, m: int, args, metric=None):
    """Return (index, description, note, refs). Every faiss constructor call lives here.

    metric: faiss.METRIC_L2 (None) or faiss.METRIC_INNER_PRODUCT.
    refs: sub-objects the caller keeps alive as long as the index (faiss wrappers hold raw pointers)."""
    import faiss

    fm, mname = _faiss_metric(metric), _metric_name(metric)
    mdesc = "" if mname == "L2" else ", IP"
    refs = []
    dp = _pad_dim(d, m)
    if name in ("pq", "ivfpq"):
        if name == "pq":
            inner = faiss.IndexPQ(dp, m, 8, fm)
            if args.faiss_niter:
                inner.pq.cp.niter = args.faiss_niter
            desc = f"IndexPQ({dp}, {m}, 8{mdesc})"
        else:
            coarse = faiss.IndexFlatL2(dp) if mname == "L2" else faiss.IndexFlatIP(dp)
            inner = faiss.IndexIVFPQ(coarse, dp, args.nlist, m, 8, fm)
            inner.nprobe = args.nprobe
            if args.faiss_niter:
                inner.cp.niter = inner.pq.cp.niter = args.faiss_niter
            refs.append(coarse)
            desc = (f"IndexIVFPQ(IndexFlat{mname}({dp}), {dp}, {args.nlist}, {m}, 8{mdesc}), "
                    f"nprobe={args.nprobe}")
        if args.faiss_niter:
            desc += f", k-means niter={args.faiss_niter}"
        if dp == d:
            return inner, desc, "", refs
        # m does not divide d: zero-pad to dp dims, spreading the real dims uniformly so each
        # sub-quantizer sees ~d/m of them. Zeros add nothing to L2 distances or inner products:
        # no information is lost.
        remap = faiss.RemapDimensionsTransform(d, dp, True)
        index = faiss.IndexPreTransform(remap, inner)
        refs += [remap, inner]
        return index, f"RemapDimensionsTransform({d}->{dp}, uniform) + {desc}", f"zero-padded {d}->{dp} dims", refs
    if name == "opq":
        # The rotation maps d -> dp dims (a d x dp matrix when m does not divide d): it pads too.
        # "np": no polysemous training, which index_factory's "PQ" turns on; it only permutes code
        # ids for Hamming pre-filtering (unused here) and costs minutes.
        key = f"OPQ{m}" + (f"_{dp}" if dp != d else "") + f",PQ{m}np"
        index = faiss.index_factory(d, key, fm)  # owns its transform and inner index
        opq = faiss.downcast_VectorTransform(index.chain.at(0))
        inner = faiss.downcast_index(index.index)
        if args.opq_niter:
            opq.niter = args.opq_niter
        if args.opq_train_size:
            opq.max_train_points = args.opq_train_size
        if args.faiss_niter:
            opq.niter_pq_0 = args.faiss_niter  # the PQ k-means of OPQ's first iteration
            inner.pq.cp.niter = args.faiss_niter
        desc = (f'index_factory({d}, "{key}"{mdesc}) = OPQMatrix({d}, {m}, d_out={dp}, niter={opq.niter}, '
                f"niter_pq={opq.niter_pq}, max_train_points={opq.max_train_points}) + IndexPQ({dp}, {m}, 8)")
        if args.faiss_niter:
            desc += f", k-means niter={args.faiss_niter}"
        return index, desc, (f"rotation {d}->{dp} dims" if dp != d else ""), refs
    if name == "rq":
        index, desc = _make_rq(d, m, args, metric)
        extra = _configure_rq(index, args)
        return index, f"{desc}, {extra}", _rq_note(index, m), refs
    raise ValueError(name)


def _rq_note(index, m: int) -> str:
    import faiss

    extra = index.code_size - m
    if extra:
        return f"+{extra} B norm"
    if index.rq.search_type == faiss.AdditiveQuantizer.ST_decompress:
        return "decompress: exact distance to reconstruction"
    return ""


def faiss_code_size(index) -> int:
    """Bytes of code per vector (the inner index's code_size for a pre-transformed index)."""
    import faiss

    if isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return int(index.code_size)


def faiss_num_parameters(index) -> int:
    """Float parameters of a trained faiss index (what a model file must hold, codes excluded):
    PQ M * 256 * dsub, OPQ's d_in * d_out matrix (+ bias), RQ m * 256 * d, IVF nlist * d centroids."""
    import faiss

    index = faiss.downcast_index(index)
    n = 0
    if isinstance(index, faiss.IndexPreTransform):
        for i in range(index.chain.size()):
            vt = faiss.downcast_VectorTransform(index.chain.at(i))
            if isinstance(vt, faiss.LinearTransform):
                n += vt.A.size() + (vt.b.size() if vt.have_bias else 0)
        index = faiss.downcast_index(index.index)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        n += ivf.quantizer.ntotal * ivf.quantizer.d
        index = faiss.downcast_index(ivf)
    if isinstance(index, (faiss.IndexPQ, faiss.IndexIVFPQ)):
        n += index.pq.centroids.size()
    elif isinstance(index, faiss.IndexResidualQuantizer):
        n += index.rq.codebooks.size()
    else:
        raise TypeError(f"faiss_num_parameters: no rule for {type(index).__name__}")
    return int(n)


def model_mb(num_parameters: int) -> float:
    """Model size in MB (1e6 bytes) of float32 parameters."""
    return 4.0 * num_parameters / 1e6


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


def train_rq_prefix_family(xt, d: int, args, metric=None):
    """faiss RQ for every m in args.ms from ONE training run of max(ms) stages.

    faiss trains an RQ stage by stage (k-means on the residuals of the previous stages, the same
    seed at every stage, no joint refinement by default), so the first m codebooks of RQ(M) are
    bit-identical to the codebooks of an RQ(m) trained on its own (checked by
    tests/test_bench_fashion_mnist.py). Each RQ(m) is then built from those m codebooks and encodes
    the database itself (beam search over m stages, not a prefix of the M-stage code). The training
    time reported for RQ(m) is what training it alone costs: the cumulative time at the end of
    stage m from faiss's log, plus the fixed post-stage overhead. Training ignores the metric.
    Returns ({m: (trained empty index, train_s)}, seconds of the one training run).
    """
    import faiss

    M = max(args.ms)
    full, _ = _make_rq(d, M, args, metric)
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
            idx, _ = _make_rq(d, m, args, metric)
            _configure_rq(idx, args)
            faiss.copy_array_to_vector(books[: m * K * d].copy(), idx.rq.codebooks)
            idx.rq.is_trained = True
            if hasattr(idx.rq, "compute_codebook_tables"):
                idx.rq.compute_codebook_tables()
            idx.is_trained = True
        train_s = stages[m - 1] + tail if (m - 1) in stages else float("nan")
        family[m] = (idx, train_s)
    return family, t.s


FAISS_LABELS = {"pq": "faiss PQ", "opq": "faiss OPQ+PQ", "ivfpq": "faiss IVFPQ", "rq": "faiss RQ"}


def run_faiss_baselines(xt, xb, xq, gt, args, on_result=None, *, baselines=None, metric=None):
    """Train, add and search every faiss baseline at every m. baselines: default args.baselines;
    metric: faiss.METRIC_L2 (None) or METRIC_INNER_PRODUCT."""
    import faiss

    baselines = args.baselines if baselines is None else baselines
    results, faiss_meta = [], {}
    d = xb.shape[1]
    xt_rq, rq_sub = xt, ""
    if "rq" in baselines and args.rq_train_size and args.rq_train_size < xt.shape[0]:
        sel = np.sort(np.random.default_rng(args.seed + 1).choice(xt.shape[0], args.rq_train_size, replace=False))
        xt_rq = np.ascontiguousarray(xt[sel])
        rq_sub = f"; trained on a random {args.rq_train_size} of the {xt.shape[0]} training vectors"
    for name in baselines:
        family = None
        if name == "rq" and not args.rq_separate:
            log(f"faiss RQ ({_metric_name(metric)}): one training run of {max(args.ms)} stages, RQ(m) for m in "
                f"{args.ms} built from its first m codebooks (identical to training each alone; see --rq-separate)")
            family, total = train_rq_prefix_family(xt_rq, d, args, metric)
            faiss_meta["rq_one_run_train_s"] = total
            faiss_meta["rq_one_run_stages"] = max(args.ms)
            log(f"  RQ training ({max(args.ms)} stages): {total:.1f} s")
        for m in args.ms:
            if family is not None:
                index, train_s = family[m]
                _, base_desc = _make_rq(d, m, args, metric)
                extra = _configure_rq(index, args)
                desc = (f"{base_desc}, {extra}; first {m} codebooks of one {max(args.ms)}-stage training run{rq_sub}")
                note, refs = _rq_note(index, m), []
                log(f"{FAISS_LABELS[name]} m={m}: {desc}")
            else:
                index, desc, note, refs = build_faiss(name, d, m, args, metric)
                if name == "rq":
                    desc += rq_sub
                log(f"{FAISS_LABELS[name]} m={m}: {desc}")
                with Timer() as t_train:
                    index.train(xt_rq if name == "rq" else xt)
                train_s = t_train.s
            with Timer() as t_add:
                index.add(xb)
            code_size = faiss_code_size(index)
            params = faiss_num_parameters(index)
            log(f"  train {train_s:.1f} s, add {t_add.s:.1f} s, code_size {code_size} B, {params:,} parameters")
            r = evaluate(lambda q: index.search(q, K_SEARCH), xq, gt, args.repeats)
            ivf = faiss.try_extract_index_ivf(index)
            bytes_per_vector = code_size + (8 if ivf is not None else 0)  # IVF lists also store an int64 id
            results.append({
                "method": FAISS_LABELS[name], "key": name, "m": m, "code_size": code_size,
                "bytes_per_vector": bytes_per_vector, "train_s": train_s, "add_s": t_add.s,
                "params": params, "model_mb": model_mb(params),
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
    cfg.pop("codebooks", None)  # ... and the codebook form (--drq-variants)
    return cfg or None


class VariantUnavailable(RuntimeError):
    """This drqindex build cannot make the requested codebook form (reported, not a failure)."""


DRQ_LABELS = {"shared": "drqindex shared (one model)", "per_iteration": "drqindex per-iteration (one model)",
              "per_iteration_full_d": "drqindex per-iteration, all d (one model)"}


def variant_config(args, variant: str):
    """(codebooks form, trainer options dict or None) of a --drq-variants entry."""
    form, extra = VARIANT_FORMS[variant]
    cfg = drq_train_config(args)
    if extra:
        cfg = {**(cfg or {}), **extra}
    return form, cfg


def drq_key(variant: str) -> str:
    return f"drq_{variant}"


def make_drq_index(d: int, args, variant: str = "shared", metric=None):
    """The single place the benchmark constructs a drqindex index: IndexDRQ(d, M, metric,
    codebooks=variant) (PER_ITERATION contract). A build without the codebooks keyword has only the
    shared form: "shared" is then built without it, other forms raise VariantUnavailable."""
    import drqindex

    metric = drqindex.METRIC_L2 if metric is None else int(metric)
    form, cfg = variant_config(args, variant)
    try:
        index = drqindex.IndexDRQ(d, args.iters, metric, codebooks=form, train_config=cfg)
    except TypeError as e:
        if "codebooks" not in str(e):
            raise
        if variant != "shared":
            raise VariantUnavailable(f"this drqindex's IndexDRQ has no codebooks= keyword ({e}); "
                                     f"the {variant!r} variant needs it") from e
        index = drqindex.IndexDRQ(d, args.iters, metric, train_config=cfg)
    index.verbose = True
    return index, cfg


def run_drqindex(xt, xb, xq, gt, args, on_result=None, *, variant: str = "shared", metric=None):
    """One IndexDRQ of the given codebook form, trained once, searched at every m (iters=m)."""
    import drqindex

    metric = drqindex.METRIC_L2 if metric is None else int(metric)
    l2 = metric == drqindex.METRIC_L2
    mname = "METRIC_L2" if l2 else "METRIC_INNER_PRODUCT"
    d = xb.shape[1]
    index, cfg = make_drq_index(d, args, variant, metric)
    form = VARIANT_FORMS[variant][0]
    log(f"drqindex {variant}: IndexDRQ({d}, iters={args.iters}, {mname}, codebooks={form!r}, "
        f"train_config={cfg}) — one model for all m")
    with Timer() as t_train:
        index.train(xt)
    log(f"  train {t_train.s:.1f} s")
    with Timer() as t_add:
        index.add(xb)
    log(f"  add (encode {xb.shape[0]} x {args.iters} bytes once) {t_add.s:.1f} s")
    params = int(index.quantizer.num_parameters())
    per_prefix = "+4 B float norm per prefix" if l2 else "no norm (inner product)"
    results = []
    for m in args.ms:
        r = evaluate(lambda q: index.search(q, K_SEARCH, iters=m), xq, gt, args.repeats)
        results.append({
            "method": DRQ_LABELS[variant], "key": drq_key(variant), "variant": variant, "m": m, "code_size": m,
            "bytes_per_vector": int(index.bytes_per_vector(m)),
            "stored_bytes_per_vector": int(index.code_size) * (5 if l2 else 1),
            "train_s": t_train.s, "add_s": t_add.s, "params": params, "model_mb": model_mb(params),
            "index": f"IndexDRQ({d}, {args.iters}, {mname}, codebooks={form!r}, train_config={cfg}), "
                     f"search iters={m}",
            "note": (f"prefix of one {args.iters}-byte code; {per_prefix}" if m < args.iters
                     else f"full code; {per_prefix}"),
            **r,
        })
        log(f"  m={m}: R@1 {r['R@1']:.4f}  10-R@10 {r['10-R@10']:.4f}  1-R@100 {r['1-R@100']:.4f}  "
            f"{r['qps']:.0f} q/s")
        if on_result:
            on_result(results[-1])
    info = getattr(index, "train_info", None)
    meta = {"variant": variant, "train_s": t_train.s, "add_s": t_add.s, "train_config": cfg,
            "params": params, "model_mb": model_mb(params), "train_info": _summarise_info(info)}
    if l2 and variant in getattr(args, "prefix_check_variants", ()):
        meta["prefix_check"] = prefix_check(index, xt, xb, xq, gt, args, variant, results)
    return results, meta


def prefix_check(index, xt, xb, xq, gt, args, variant: str, results) -> list[dict]:
    """The prefix penalty: for each m in --prefix-check, a model trained for exactly m iterations
    (same form, same trainer options), searched with all its m bytes, vs the m-prefix of the M model
    (the row of `results`). penalty_pct = 100 (R@1_separate - R@1_prefix) / R@1_separate (positive:
    the prefix is worse). Its training time is reported here, not in the model's."""
    import drqindex

    out = []
    for m in getattr(args, "prefix_check", ()):
        if m >= args.iters:
            continue
        row = next((r for r in results if r["m"] == m), None)
        if row is None:
            r_prefix = evaluate(lambda q: index.search(q, K_SEARCH, iters=m), xq, gt, 1)
        else:
            r_prefix = row
        form, cfg = variant_config(args, variant)
        sep = drqindex.IndexDRQ(xb.shape[1], m, drqindex.METRIC_L2, codebooks=form, train_config=cfg)
        with Timer() as t_sep:
            sep.train(xt)
        sep.add(xb)
        r_sep = evaluate(lambda q: sep.search(q, K_SEARCH), xq, gt, 1)
        q_sep, q_full = sep.quantizer, index.quantizer
        if q_sep.per_iteration:
            identical = bool(np.array_equal(q_sep.codebook, q_full.codebook[:m])
                             and np.array_equal(q_sep.scales, q_full.scales[:m]))
        else:
            identical = bool(np.array_equal(q_sep.codebook, q_full.codebook)
                             and np.array_equal(q_sep.scales, q_full.scales[:m]))
        pen = 100.0 * (r_sep["R@1"] - r_prefix["R@1"]) / r_sep["R@1"] if r_sep["R@1"] > 0 else float("nan")
        out.append({"m": m, "R@1_prefix": r_prefix["R@1"], "R@1_separate": r_sep["R@1"],
                    "10-R@10_prefix": r_prefix["10-R@10"], "10-R@10_separate": r_sep["10-R@10"],
                    "penalty_pct": pen, "codebooks_identical": identical, "separate_train_s": t_sep.s})
        log(f"  prefix check m={m}: separate {m}-iteration model R@1 {r_sep['R@1']:.4f} vs prefix "
            f"{r_prefix['R@1']:.4f} (penalty {pen:+.2f}%), codebooks identical: {identical}, trained in {t_sep.s:.1f} s")
        del sep
    return out


def _prefix_table(meta_part: dict) -> list[str]:
    rows = []
    for v, dm in (meta_part.get("drq") or {}).items():
        for c in dm.get("prefix_check") or []:
            rows.append([DRQ_LABELS[v].replace(" (one model)", ""), c["m"], f"{c['R@1_separate']:.4f}",
                         f"{c['R@1_prefix']:.4f}", f"{c['penalty_pct']:+.2f}%",
                         "yes" if c["codebooks_identical"] else "no", _secs(c["separate_train_s"])])
    if not rows:
        return []
    return ["### Prefix penalty: the m-prefix of the one model vs a model trained for exactly m", "",
            "penalty = (R@1 separate - R@1 prefix) / R@1 separate (the issue asks for < 2% at every m); the "
            "separate models' training is not counted in the one model's training time.", "",
            markdown_table(["form", "m", "R@1 separate m-model", "R@1 m-prefix of M model", "penalty",
                            "codebooks bit-identical", "separate train s"], rows, "lrrrrrr"), ""]


def run_drq_variants(xt, xb, xq, gt, args, meta_out: dict, on_result=None, *, metric=None):
    """run_drqindex for every --drq-variants form; a failing form is reported in meta_out and the
    others still run. meta_out gets "drq" ({variant: meta}), "drq_skipped" and "drq_error"."""
    results = []
    for variant in args.drq_variants:
        try:
            rs, m = run_drqindex(xt, xb, xq, gt, args, on_result, variant=variant, metric=metric)
            results += rs
            meta_out.setdefault("drq", {})[variant] = m
        except VariantUnavailable as e:
            log(f"drqindex {variant}: SKIPPED — {e}")
            meta_out.setdefault("drq_skipped", {})[variant] = str(e)
        except KeyboardInterrupt:
            raise
        except Exception as e:
            traceback.print_exc()
            meta_out.setdefault("drq_error", {})[variant] = f"{type(e).__name__}: {e}"
            log(f"drqindex {variant} failed: {type(e).__name__}: {e} — continuing")
    return results


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


def _results_table(results) -> list[str]:
    headers = ["method", "m (code B)", "code_size", "B/vector read", "R@1", "10-R@10", "1-R@100", "q/s",
               "train s", "params", "model MB", "note"]
    rows = [[r["method"], r["m"], r["code_size"], r["bytes_per_vector"], r["R@1"], r["10-R@10"], r["1-R@100"],
             f"{r['qps']:,.0f}", _secs(r["train_s"]), _params(r.get("params")), _mb(r.get("model_mb")), r["note"]]
            for r in results]
    return [markdown_table(headers, rows, "lrrrrrrrrrrl"), ""]


def _params(v) -> str:
    return "–" if v is None else f"{int(v):,}"


def _mb(v) -> str:
    return "–" if v is None else (f"{v:.2f}" if v < 100 else f"{v:,.0f}")


def _rel(a: float, b: float) -> float:
    """Relative difference of a over b in %, positive when a is above b."""
    return 100.0 * (a - b) / b if b > 0 else float("nan")


def goal_summary(results, ms, variants) -> list[dict]:
    """Per m: the best faiss PQ / OPQ / RQ R@1 and 10-R@10 (each with its method) and every drqindex
    variant's values, relative differences in % (positive = drqindex above) and whether both are >=."""
    out = []
    for m in ms:
        base = [r for r in results if r["key"] in GOAL_BASELINES and r["m"] == m]
        row = {"m": m}
        for metric in ("R@1", "10-R@10"):
            best = max(base, key=lambda r: r[metric]) if base else None
            row[f"best_{metric}"] = best[metric] if best else None
            row[f"best_{metric}_method"] = best["method"] if best else None
        for v in variants:
            mine = next((r for r in results if r["key"] == drq_key(v) and r["m"] == m), None)
            if mine is None:
                continue
            cell = {}
            for metric in ("R@1", "10-R@10"):
                cell[metric] = mine[metric]
                b = row[f"best_{metric}"]
                cell[f"{metric}_rel_pct"] = _rel(mine[metric], b) if b is not None else None
            cell["meets_goal"] = (base != [] and all(cell[mt] >= row[f"best_{mt}"] for mt in ("R@1", "10-R@10")))
            row[v] = cell
        out.append(row)
    return out


def _goal_table(summary, variants) -> list[str]:
    variants = [v for v in variants if any(v in row for row in summary)]
    if not summary or not variants:
        return []
    short = {"faiss PQ": "PQ", "faiss OPQ+PQ": "OPQ", "faiss RQ": "RQ"}
    headers = ["m", "best faiss R@1", "best faiss 10-R@10"]
    for v in variants:
        lab = DRQ_LABELS[v].replace(" (one model)", "")
        headers += [f"{lab} R@1 (Δ%)", f"{lab} 10-R@10 (Δ%)", f"{lab} >= both"]
    rows = []
    for row in summary:
        cells = [row["m"]]
        for mt in ("R@1", "10-R@10"):
            b = row[f"best_{mt}"]
            cells.append("–" if b is None else f"{b:.3f} ({short.get(row[f'best_{mt}_method'], row[f'best_{mt}_method'])})")
        for v in variants:
            c = row.get(v)
            if c is None:
                cells += ["–", "–", "–"]
                continue
            for mt in ("R@1", "10-R@10"):
                rel = c[f"{mt}_rel_pct"]
                cells.append(f"{c[mt]:.3f}" + ("" if rel is None or rel != rel else f" ({rel:+.1f}%)"))
            cells.append("yes" if c["meets_goal"] else "no")
        rows.append(cells)
    return [markdown_table(headers, rows, "r" * len(headers)), ""]


def _training_table(results, meta_part: dict, iters: int) -> list[str]:
    """drqindex: one row per variant (one model); faiss: one row per family, summed over its models."""
    trows = []
    for v, dm in (meta_part.get("drq") or {}).items():
        trows.append([f"{DRQ_LABELS[v].replace(' (one model)', '')}: one IndexDRQ, M = {iters} (serves every m)",
                      _secs(dm["train_s"]), _secs(dm["add_s"]), _params(dm.get("params")), _mb(dm.get("model_mb"))])
    fm = meta_part.get("faiss") or {}
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
        params = sum(r.get("params") or 0 for r in rs)
        trows.append([what, _secs(sum(r["train_s"] for r in rs)), _secs(sum(r["add_s"] for r in rs)),
                      _params(params), _mb(model_mb(params))])
    if not trows:
        return []
    return [markdown_table(["what", "train s (sum)", "add s (sum)", "params (sum)", "model MB (sum)"], trows), ""]


def _failures(meta_part: dict) -> list[str]:
    lines = []
    for v, why in (meta_part.get("drq_skipped") or {}).items():
        lines.append(f"- drqindex {v}: **not run** — {why}")
    for v, why in (meta_part.get("drq_error") or {}).items():
        lines.append(f"- drqindex {v}: **failed** — `{why}`")
    return lines + ([""] if lines else [])


def write_markdown(path, results, meta, cosine_results=None):
    variants = meta.get("drq_variants", list(DRQ_VARIANTS))
    lines = ["# Fashion-MNIST: drqindex (one model per codebook form) vs faiss (one model per length)", ""]
    lines += [
        f"- Data: Fashion-MNIST, ann-benchmarks split: database = train images ({meta['nb']}), "
        f"queries = test images ({meta['nq']}), d = {meta['d']}, raw pixels 0..255, L2"
        + ("; plus a cosine section (inner product on L2-normalised vectors, below)." if meta.get("cosine") else "."),
        f"- Subsampled: {'; '.join(meta['subsampled']) if meta['subsampled'] else 'nothing (full data)'}."
        + (" **(--quick run: numbers are a smoke test, not the benchmark)**" if meta["quick"] else ""),
        f"- Training vectors: {meta['ntrain']} (the database itself, as ann-benchmarks does, unless subsampled above).",
        f"- drqindex: one IndexDRQ(d, M = {meta['iters']}, metric, codebooks=<form>) per form "
        f"({', '.join(variants) or 'none'}), trained once, searched with iters = m.",
        f"- Machine: {meta['machine']['cpu']}, {meta['machine']['cores_available']} cores available; "
        f"threads used: {meta['threads']} (faiss omp, drqindex, BLAS); OMP_WAIT_POLICY {meta['omp_wait_policy']}; "
        f"drqindex SIMD level: {meta['versions'].get('drqindex_simd_level', '–')}; "
        f"CPU flags: {', '.join(meta['machine']['cpu_simd_flags']) or 'none'}.",
        f"- Versions: faiss {meta['versions'].get('faiss')}, drqindex {meta['versions'].get('drqindex')}, "
        f"numpy {meta['machine']['numpy']}, python {meta['machine']['python']}.",
        f"- Date: {meta['machine']['date']}. Load average (1/5/15 min) at start "
        f"{'/'.join(f'{v:.1f}' for v in meta['loadavg_start'])}, at end "
        f"{'/'.join(f'{v:.1f}' for v in meta['loadavg_end'])} (other jobs on the machine inflate times).",
        f"- Command: `python benchmarks/bench_fashion_mnist.py {' '.join(meta.get('argv') or [])}`".rstrip() + ".",
        f"- Search: all {meta['nq']} queries at once, k = {K_SEARCH}; q/s from the median of "
        f"{meta['repeats']} timed runs after 1 warm-up. R@1 = 1-recall@1 (true nearest neighbour ranked "
        "first), 10-R@10 = |top-10 ∩ true top-10| / 10, 1-R@100 = true nearest neighbour in the top 100. "
        "params: float parameters of the model serving the row (codes excluded); model MB = 4 B x params / 1e6.",
        "",
    ]
    lines += ["## L2 (raw pixels)", ""]
    lines += _failures(meta)
    lines += _results_table(results)
    goal = _goal_table(goal_summary(results, meta["ms"], variants), variants)
    if goal:
        lines += ["### Goal: one drqindex model vs the best of faiss PQ / OPQ+PQ / RQ trained for each length", "",
                  "Δ% = relative difference to the best faiss value at that length (positive = drqindex above); "
                  "the issue asks for >= 0 on both measures, and aims at +10%.", ""]
        lines += goal
    lines += _prefix_table(meta)
    lines += ["### Training time and model size", ""]
    lines += _training_table(results, meta, meta["iters"])
    cos = meta.get("cosine")
    if cos:
        cr = cosine_results or []
        lines += ["## Cosine: inner product on L2-normalised data", ""]
        lines += [
            f"- Database: {cos['nb']} vectors ({cos['database']}), queries: the same {cos['nq']} query images, "
            f"training vectors: {cos['ntrain']} ({cos['training']}); every vector divided by its L2 norm.",
            f"- Ground truth: exact inner product (faiss IndexFlatIP), k = {K_SEARCH}. q/s: median of "
            f"{cos.get('repeats', meta['repeats'])} timed run(s) after 1 warm-up.",
            f"- drqindex: the variants above with METRIC_INNER_PRODUCT (no norm stored: B/vector read = m); faiss: "
            f"{', '.join(FAISS_LABELS[b] for b in cos['baselines']) or 'none'} with METRIC_INNER_PRODUCT, each "
            "trained per length (RQ: ST_LUT_nonorm, an m-byte code and no norm; same beam and training sample "
            "as the L2 section).",
            "",
        ]
        lines += _failures(cos)
        lines += _results_table(cr)
        goal = _goal_table(goal_summary(cr, meta["ms"], variants), variants)
        if goal:
            lines += ["### Goal (cosine): one drqindex model vs the best of faiss PQ / OPQ+PQ / RQ per length", ""]
            lines += goal
        lines += ["### Training time and model size (cosine)", ""]
        lines += _training_table(cr, cos, meta["iters"])
    lines += ["## Configurations", ""]
    for section, rs in (("L2", results), ("cosine", cosine_results or [])):
        for r in rs:
            lines.append(f"- {section}, {r['method']} m={r['m']}: `{r['index']}`" + (f" — {r['note']}" if r["note"] else ""))
    lines += [
        "",
        "Notes:",
        "- code_size: bytes per vector as the index reports it (faiss `index.code_size`; drqindex: the m "
        "code bytes used by the search). B/vector read: what a search touches per database vector: "
        "faiss RQ with ST_norm_float stores a 4-byte norm after the code; drqindex (L2) reads m code "
        "bytes plus the 4-byte float norm of that prefix (it stores M code bytes + M norms per vector "
        f"= {5 * meta['iters']} B for M = {meta['iters']}, so one index serves every m); IVFPQ's "
        "inverted lists also hold an 8-byte id per vector. With inner product neither drqindex nor RQ "
        "stores a norm.",
        "- params: drqindex `quantizer.num_parameters()` (shared: 256 x d codebook + M scales; "
        "per-iteration: M x 256 x d + M); faiss PQ M x 256 x dsub; OPQ+PQ that plus the d x d_out rotation; "
        "RQ(m) m x 256 x d; IVFPQ nlist x d coarse centroids + the PQ. The faiss sums in the training tables "
        "add the four per-length models (what serving every length with faiss stores).",
        "- PQ/IVFPQ at lengths that do not divide 784 (32, 64): the vectors are zero-padded (faiss "
        "RemapDimensionsTransform, uniform) to the next multiple of m; zeros change no L2 distance or inner "
        "product. OPQ+PQ pads through its rotation instead: faiss `OPQ{m}_{dp},PQ{m}np` learns a 784 x dp "
        "matrix (dp = 800 at m = 32, 832 at m = 64).",
        "- faiss OPQ+PQ: OPQMatrix alternates a PQ training and a Procrustes rotation update "
        "(faiss defaults: 50 iterations, 4 k-means iterations per PQ training) on a random subset of the training "
        "vectors (OPQMatrix.max_train_points, see its configuration line; faiss's default is 65536: each iteration "
        "costs O(n d^2), about 9 s of one core on 60000 784-d vectors), then trains the final IndexPQ on the rotated vectors (`PQ{m}np`: without the polysemous code-id training that index_factory otherwise adds, which does not change recall).",
        "- faiss RQ: ADC with the exact float norm ranks exactly as decompression would (same distances "
        "up to rounding), so its recall is that of the codes themselves. faiss trains RQ stage by stage "
        "(same k-means seed each stage, no joint refinement), so RQ(m) trained alone has exactly the first "
        "m codebooks of RQ(64) (tests/test_bench_fashion_mnist.py checks this); unless --rq-separate, the "
        "benchmark trains RQ(64) once, builds each RQ(m) from its first m codebooks, encodes the database "
        "with each RQ(m) (its own beam search), and reports as RQ(m)'s training time the time faiss's log "
        "shows at the end of stage m (what training RQ(m) alone costs). RQ is trained on a random subset "
        "of the training vectors (see its configuration line; --rq-train-size, default 8192; it was 16384 before the cosine "
        "section doubled RQ's cost): with faiss's default beam of 5, each of the 64 stages runs progressive-dim k-means "
        "(a PCA of the residuals and k-means) on the 5 x n beam residuals, capped at 65536 points for the "
        "k-means; measured on one core of this machine, a stage costs about 11 s at n = 8192 and 19 s at "
        "16384 (64 stages: about 12 vs 20 core-minutes per metric), and encoding the 60000-vector database "
        "at m = 8, 16, 32, 64 another 7 core-minutes. 8192 vectors still give k-means 160 residuals per "
        "centroid.",
        f"- IVFPQ searches only nprobe = {meta['nprobe']} of {meta['nlist']} lists (not exhaustive); it is "
        "not part of the goal table (the issue compares against PQ, OPQ+PQ and RQ).",
        "",
    ]
    write_text(path, "\n".join(lines))


def _secs(v) -> str:
    if v is None or v != v:
        return "–"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


PLOT_STYLES = {
    "drq_shared": dict(color="C3", marker="o", lw=2.5),
    "drq_per_iteration": dict(color="C4", marker="*", lw=2.5, ms=9),
    "drq_per_iteration_full_d": dict(color="C6", marker="P", lw=1.5, ms=7),
    "pq": dict(color="C0", marker="s", ls="--"),
    "opq": dict(color="C5", marker="v", ls="--"),
    "ivfpq": dict(color="C1", marker="^", ls="--"),
    "rq": dict(color="C2", marker="D", ls="--"),
}


def _plot_label(key: str, meta) -> str:
    if key.startswith("drq_"):
        return DRQ_LABELS[key[4:]].replace("(one model)", "(one model, prefixes)")
    if key == "ivfpq":
        return f"faiss IVFPQ nprobe={meta['nprobe']} (per length)"
    return f"{FAISS_LABELS[key]} (per length)"


def write_plot(path, results, meta, cosine_results=None):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:
        log(f"no plot (matplotlib unavailable: {e})")
        return False
    sections = [("L2", results)] + ([("cosine (IP, normalised)", cosine_results)] if cosine_results else [])
    fig, axes = plt.subplots(len(sections), 2, figsize=(11, 4.3 * len(sections)), squeeze=False)
    for (section, rs_all), row in zip(sections, axes):
        for ax, metric, title in zip(row, ["R@1", "10-R@10"], ["R@1 (1-recall@1)", "10-recall@10"]):
            for key in PLOT_STYLES:
                rs = sorted((r for r in rs_all if r["key"] == key), key=lambda r: r["m"])
                if rs:
                    ax.plot([r["m"] for r in rs], [r[metric] for r in rs], label=_plot_label(key, meta),
                            **PLOT_STYLES[key])
            ax.set_xscale("log", base=2)
            ax.set_xticks(meta["ms"])
            ax.set_xticklabels([str(m) for m in meta["ms"]])
            ax.set_xlabel("code bytes per vector (m)")
            ax.set_ylabel(metric)
            ax.set_ylim(0, 1)
            ax.set_title(f"{section}: {title}", fontsize=10)
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=7, loc="lower right")
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


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-30), dtype=np.float32)  # an all-zero row stays zero


def exact_inner_product_knn(xb: np.ndarray, xq: np.ndarray, k: int) -> np.ndarray:
    """Ground truth of the cosine section: int64 (nq, k) ids of the largest inner products."""
    import faiss

    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(xb)
    _, I = index.search(xq, k)
    return I.astype(np.int64, copy=False)


def cosine_data(xt, xb, xq, args):
    """L2-normalised database, queries and training vectors for the cosine section, its exact
    inner-product ground truth, and the description of what was taken."""
    nb = xb.shape[0] if args.cosine_nb is None else min(args.cosine_nb, xb.shape[0])
    if nb < xb.shape[0]:
        xb_c = _l2_normalise(xb[:nb])
        xt_c = xb_c
        what = {"database": f"the first {nb} of the L2 section's {xb.shape[0]} database vectors (--cosine-nb)",
                "training": "the cosine database itself"}
    else:
        xb_c = _l2_normalise(xb)
        xt_c = xb_c if xt is xb else _l2_normalise(xt)
        what = {"database": "the L2 section's database", "training": "the L2 section's training vectors"}
    xq_c = _l2_normalise(xq)
    with Timer() as t:
        gt_c = exact_inner_product_knn(xb_c, xq_c, K_SEARCH)
    log(f"cosine: xb {xb_c.shape}, xq {xq_c.shape}, xt {xt_c.shape}; exact inner-product ground truth {t.s:.1f} s")
    return xt_c, xb_c, xq_c, gt_c, {**what, "nb": int(xb_c.shape[0]), "nq": int(xq_c.shape[0]),
                                     "ntrain": int(xt_c.shape[0]), "ground_truth_s": t.s}


def main(argv=None) -> int:
    args = parse_args(argv)
    log(f"threads: {args.threads} — " + ", ".join(set_threads(args.threads, with_torch=not args.skip_drq)))
    ds, xt, xb, xq, gt, subsampled = load_data(args)
    meta = {
        "quick": args.quick, "nb": int(xb.shape[0]), "nq": int(xq.shape[0]), "d": int(xb.shape[1]),
        "ntrain": int(xt.shape[0]), "subsampled": subsampled, "ms": args.ms, "iters": args.iters,
        "k": K_SEARCH, "repeats": args.repeats, "nlist": args.nlist, "nprobe": args.nprobe,
        "drq_variants": [] if args.skip_drq else args.drq_variants, "baselines": args.baselines,
        "threads": args.threads, "machine": machine_info(), "loadavg_start": os.getloadavg(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: implementation default)"), "versions": versions(),
        "data_path": ds.path, "argv": sys.argv[1:] if argv is None else list(argv),
    }
    log(f"versions: {meta['versions']}")
    if meta["loadavg_start"][0] > available_cores():
        log(f"warning: load average {meta['loadavg_start'][0]:.1f} > {available_cores()} cores: other jobs are "
            "running, timings will be inflated" + ("" if args.omp_passive else " (consider --omp-passive)"))
    results, cosine_results = [], []
    out = Path(args.out_dir)
    partial_file = out / f"{STEM}.partial.json"

    def checkpoint(rows):  # a run of an hour should not lose everything to a kill near its end
        def on_result(row):
            rows.append(row)
            write_json(partial_file, {"meta": meta, "results": results, "cosine_results": cosine_results,
                                      "complete": False})
        return on_result

    def run_section(xt_, xb_, xq_, gt_, rows, meta_part, baselines, metric, args_):
        if not args_.skip_drq:
            run_drq_variants(xt_, xb_, xq_, gt_, args_, meta_part, on_result=checkpoint(rows), metric=metric)
        if baselines:
            _, meta_part["faiss"] = run_faiss_baselines(xt_, xb_, xq_, gt_, args_, on_result=checkpoint(rows),
                                                        baselines=baselines, metric=metric)

    import faiss

    log("== L2 section")
    run_section(xt, xb, xq, gt, results, meta, args.baselines, faiss.METRIC_L2, args)
    if args.cosine:
        log("== cosine section: inner product on L2-normalised vectors")
        xt_c, xb_c, xq_c, gt_c, cos = cosine_data(xt, xb, xq, args)
        cos["baselines"] = args.cosine_baselines
        cos["repeats"] = args.cosine_repeats
        meta["cosine"] = cos
        args_c = argparse.Namespace(**{**vars(args), "repeats": args.cosine_repeats})
        run_section(xt_c, xb_c, xq_c, gt_c, cosine_results, cos, args.cosine_baselines, faiss.METRIC_INNER_PRODUCT,
                    args_c)
        del xt_c, xb_c, xq_c

    meta["loadavg_end"] = os.getloadavg()
    meta["goal"] = goal_summary(results, args.ms, meta["drq_variants"])
    if args.cosine:
        meta["cosine"]["goal"] = goal_summary(cosine_results, args.ms, meta["drq_variants"])
    write_json(out / f"{STEM}.json", {"meta": meta, "results": results, "cosine_results": cosine_results})
    partial_file.unlink(missing_ok=True)
    write_markdown(out / f"{STEM}.md", results, meta, cosine_results)
    plotted = write_plot(out / f"{STEM}_recall.png", results, meta, cosine_results)
    log(f"wrote {out / (STEM + '.md')}, {out / (STEM + '.json')}" + (f", {out / (STEM + '_recall.png')}" if plotted else ""))
    print()
    print((out / f"{STEM}.md").read_text())
    failed = meta.get("drq_error") or (meta.get("cosine") or {}).get("drq_error")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
