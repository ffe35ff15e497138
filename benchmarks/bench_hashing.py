#!/usr/bin/env python
"""Fashion-MNIST learned hashing (Deep Transfer Hashing): distilled ternary students vs faiss ITQ / LSH.

Protocol (deep hashing): the 60,000 training images are the database AND the training set, the
10,000 test images are the queries, an item is relevant when its class equals the query's; the
database is ranked by Hamming distance (ties in database order); mAP@all and precision@100 at
16/32/48/64 bits.

Models (drqindex.train.hashing), all trained in this run on the training images:
    teacher           CNN conv16-conv32-fc256-fc64 (+ fc10 head), DSH on bit prefixes 16/32/48/64 + CE
    float student     MLP 784-1024-512-64 (--hidden), DSH on the prefixes, no teacher
    float student+KD  the same, distilled from the teacher (DSH + kd_weight * MSE to its logits)
    ternary+KD        the same with TTQ on all FC layers: ONE model, its codes read at 16/32/48/64 bits
    ternary+KD per L  a ternary student trained for each length alone (nbits = L, prefixes = (L,)),
                      distilled from the teacher's first L logits
Baselines, trained per length on the training images:
    faiss ITQ         index_factory(784, "ITQ{L},LSH"): PCA to L dims + ITQ rotation, sign bits
    faiss LSH         IndexLSH(784, L, rotate_data=True, train_thresholds=True): random projection,
                      per-bit median thresholds
Student defaults (tuned, see HashStudent): Adam lr 1e-3 decayed to 1e-4 over 12 epochs, kd_weight 0.1,
no augmentation (--views, --class-kd-weight, --cls-weight are options that did not help in the tuning).
Codes of every method are evaluated by drqindex.data.hamming_ranking_metrics (same protocol).

    python benchmarks/bench_hashing.py --threads 1            # full run
    python benchmarks/bench_hashing.py --quick                # smoke test: 5k/1k images, 1-2 epochs

Writes <out-dir>/hashing.md and hashing.json.
"""
from __future__ import annotations

import os
import sys


def _early_threads() -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from thread_env import set_pool_threads, threads_from_argv
    set_pool_threads(threads_from_argv())


if __name__ == "__main__":
    _early_threads()

import argparse  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import import_drqindex, Timer, available_cores, log, machine_info, markdown_table, write_json, write_text  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
import_drqindex("data")  # noqa: E402
from drqindex.data import hamming_ranking_metrics, load_fashion_mnist  # noqa: E402

STEM = "hashing"
P_AT = 100


# ==============================================================================================
# arguments

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 5k training/database images, 1k queries, epochs x 0.1")
    p.add_argument("--threads", type=int, default=available_cores(), help="torch / faiss / BLAS threads")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="where hashing.md/.json go (default benchmarks/results, --quick: benchmarks/results/quick)")
    p.add_argument("--data-dir", default=None, help="directory with the 4 Fashion-MNIST idx files")
    p.add_argument("--nb", type=int, default=None, help="first nb training images (default all; quick 5000)")
    p.add_argument("--nq", type=int, default=None, help="first nq test images as queries (default all; quick 1000)")
    p.add_argument("--lengths", default="16,32,48,64", help="code lengths in bits (multiples of 8)")
    p.add_argument("--epochs-scale", type=float, default=1.0, help="multiplies every model's epochs")
    p.add_argument("--teacher-epochs", type=int, default=12)
    p.add_argument("--teacher-lr", type=float, default=3e-3)
    p.add_argument("--student-epochs", type=int, default=12)
    p.add_argument("--student-lr", type=float, default=1e-3)
    p.add_argument("--hidden", default="1024,512",
                   help="student MLP hidden sizes (ternary+KD at 64 bits, kd_weight 1: 86.3 mAP with 1024,512 vs 85.3 "
                        "with 512,256, one thread)")
    p.add_argument("--kd-weight", type=float, default=0.1)
    p.add_argument("--t", type=float, default=0.05, help="TTQ threshold factor")
    p.add_argument("--float-epochs", type=int, default=None,
                   help="float warm-up epochs of the ternary students before TTQ (default: half the epochs)")
    p.add_argument("--views", type=int, default=1,
                   help="training images + (views - 1) augmented copies (shifts, flips) for every student; "
                        "distilled students get the teacher's outputs on every copy")
    p.add_argument("--max-shift", type=int, default=2, help="augmentation: largest shift in pixels")
    p.add_argument("--no-flip", action="store_true", help="augmentation: no left-right flips")
    p.add_argument("--class-kd-weight", type=float, default=0.0,
                   help="distilled students also match the teacher's class probabilities (temperature --temperature)")
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--cls-weight", type=float, default=0.0,
                   help="cross entropy of a training-only class head on every student (KD or not)")
    p.add_argument("--student-lr-final", type=float, default=1e-4,
                   help="the students' lr decays geometrically from --student-lr to this")
    p.add_argument("--skip-per-length", action="store_true", help="no per-length ternary students")
    p.add_argument("--skip-baselines", action="store_true", help="no faiss ITQ / LSH")
    p.add_argument("--verbose", action="store_true", help="tqdm progress bars per model")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.lengths = sorted({int(v) for v in args.lengths.split(",") if v.strip()})
    if not args.lengths or min(args.lengths) < 8 or any(v % 8 for v in args.lengths):
        p.error("--lengths: expected positive multiples of 8")
    args.nbits = max(args.lengths)
    args.hidden = tuple(int(v) for v in args.hidden.split(",") if v.strip())
    if args.threads < 1:
        p.error("--threads: expected >= 1")
    if args.quick:
        args.nb = args.nb or 5000
        args.nq = args.nq or 1000
        if args.epochs_scale == 1.0:
            args.epochs_scale = 0.1
    if args.out_dir is None:
        args.out_dir = REPO / "benchmarks" / "results" / ("quick" if args.quick else "")
    return args


def _epochs(n: int, args) -> int:
    return max(1, int(round(n * args.epochs_scale)))


# ==============================================================================================
# models

def _evaluate_codes(name, codes_q, codes_db, yq, yb, nbits, extra):
    with Timer() as t:
        m = hamming_ranking_metrics(codes_q, yq, codes_db, yb, nbits, ns=(P_AT,))
    row = {"method": name, "bits": nbits, "mAP": m["mAP"], f"P@{P_AT}": m[f"P@{P_AT}"], **extra}
    log(f"  {name:<32s} {nbits:3d} bits: mAP {m['mAP']:.4f}  P@{P_AT} {m[f'P@{P_AT}']:.4f}  (eval {t.s:.1f} s)")
    return row


def run_learned(ds, args, results, meta):
    import torch

    from drqindex.train import HashStudent, HashTeacher

    torch.set_num_threads(args.threads)
    xb, yb, xq, yq = ds.xb, ds.yb, ds.xq, ds.yq
    prefixes = tuple(args.lengths)
    common = dict(nbits=args.nbits, prefixes=prefixes, seed=args.seed, num_threads=args.threads, verbose=args.verbose)
    student_kw = dict(hidden=args.hidden, t=args.t, kd_weight=args.kd_weight, epochs=_epochs(args.student_epochs, args),
                      lr=args.student_lr, lr_final=args.student_lr_final, views=args.views, max_shift=args.max_shift,
                      flip=not args.no_flip, class_kd_weight=args.class_kd_weight, temperature=args.temperature,
                      cls_weight=args.cls_weight,
                      float_epochs=None if args.float_epochs is None else _epochs(args.float_epochs, args))

    def record(name, model, lengths, kind):
        codes_db = model.encode(xb)
        codes_q = model.encode(xq)
        fc = model.fc_size_bytes()
        extra = {"kind": kind, "train_s": model.train_seconds_, "epochs": len(model.history_),
                 "fc_bytes": fc, "params": model.num_parameters()}
        for L in lengths:
            results.append(_evaluate_codes(name, codes_q, codes_db, yq, yb, L, extra))

    log(f"teacher: {_epochs(args.teacher_epochs, args)} epochs")
    teacher = HashTeacher(epochs=_epochs(args.teacher_epochs, args), lr=args.teacher_lr, **common).fit(xb, yb)
    log(f"  trained in {teacher.train_seconds_:.1f} s; last epoch {teacher.history_[-1]}")
    record("teacher (CNN)", teacher, args.lengths, "teacher")

    models = {}
    for name, ternary, kd in (("float student", False, False), ("float student + KD", False, True),
                              ("ternary student + KD (one model)", True, True)):
        log(f"{name}: {student_kw['epochs']} epochs")
        s = HashStudent(ternary=ternary, **student_kw, **common)
        s = s.distill(teacher, xb, yb) if kd else s.fit(xb, yb)
        log(f"  trained in {s.train_seconds_:.1f} s; last epoch {s.history_[-1]}")
        record(name, s, args.lengths, "student")
        models[name] = s
    meta["fc_bytes_float"] = models["float student"].fc_size_bytes()
    meta["fc_bytes_ternary"] = models["ternary student + KD (one model)"].fc_size_bytes()
    meta["student_spec"] = {"hidden": args.hidden, **{k: v for k, v in student_kw.items() if k != "hidden"}}

    if not args.skip_per_length:
        for L in args.lengths:
            name = "ternary student + KD (per length)"
            log(f"{name} L={L}")
            s = HashStudent(ternary=True, **student_kw, **{**common, "nbits": L, "prefixes": (L,)})
            s = s.distill(teacher, xb, yb)
            log(f"  trained in {s.train_seconds_:.1f} s")
            record(name, s, [L], "student")
            models[f"{name} {L}"] = s
    return teacher, models


def run_baselines(ds, args, results):
    import faiss

    faiss.omp_set_num_threads(args.threads)
    xb, yb, xq, yq = ds.xb, ds.yb, ds.xq, ds.yq
    d = xb.shape[1]
    for L in args.lengths:
        for name, make in (("faiss ITQ", lambda: faiss.index_factory(d, f"ITQ{L},LSH")),
                           ("faiss LSH", lambda: faiss.IndexLSH(d, L, True, True))):
            index = make()
            with Timer() as t:
                index.train(xb)
            # sa_encode = the index's own binary codes, LSB-first (faiss fvecs2bitvecs), like ours
            codes_db, codes_q = index.sa_encode(xb), index.sa_encode(xq)
            results.append(_evaluate_codes(name, codes_q, codes_db, yq, yb, L,
                                           {"kind": "baseline", "train_s": t.s}))


# ==============================================================================================
# hook for the C++ side (TernaryEncoder / IndexBinaryHash, written by another helper)

def encoder_and_scan_rows(student, ds, args) -> list[dict]:
    """The exported C++ encoder and the Hamming scan, measured on the one-model ternary student:
    - agreement of the C++ TernaryEncoder's codes with the torch student's (the C++ kernel quantises
      each layer's input to int8, see csrc/drq/ternary.h) and the mAP of the C++ codes;
    - encoder images/s: TernaryEncoder.embed (C++) vs the float torch MLP of the same shapes
      (bench_hamming.measure_encoder), batch 10000 and 1, 1 and `args.threads` threads;
    - Hamming search (k=100, all queries, the database of this run) vs faiss IndexBinaryFlat at
      every length, 1 and `args.threads` threads (bench_hamming.measure_hamming)."""
    import numpy as np

    from bench_hamming import measure_encoder, measure_hamming

    rows: list[dict] = []
    enc = student.export()
    images_db = ds.xb.astype(np.uint8)
    images_q = ds.xq.astype(np.uint8)
    log("C++ ternary encoder: codes vs torch, mAP of its codes")
    codes_db, codes_q = enc.encode(images_db), enc.encode(images_q)
    torch_db = student.encode(ds.xb)
    agree = float((np.unpackbits(codes_db, axis=1) == np.unpackbits(torch_db, axis=1)).mean())
    for L in args.lengths:
        r = _evaluate_codes("ternary student + KD, exported C++ encoder", codes_q, codes_db, ds.yq, ds.yb, L, {})
        rows.append({"what": "C++ encoder codes", "bits": L, "mAP": r["mAP"], f"P@{P_AT}": r[f"P@{P_AT}"],
                     "bit agreement with torch": agree})
    threads = sorted({1, args.threads})
    spec = student.export_spec()
    # Batch 10000 needs 10000 images (the --quick database is smaller): repeat the database.
    images_enc = np.resize(images_db, (max(10000, images_db.shape[0]), images_db.shape[1]))
    for t in threads:
        log(f"encoder throughput, {t} thread(s)")
        for r in measure_encoder(spec, images_enc, t, batch_sizes=(10000, 1), repeats=3):
            rows.append({"what": "encoder images/s (C++ ternary vs torch float)", "threads": t, "batch": r["batch"],
                         "ours": r["drq_embed_images_per_s"], "baseline": r["torch_images_per_s"],
                         "ratio": r["speedup_embed"], "simd": r["simd_level"]})
    for t in threads:
        for L in args.lengths:
            if L % 8:
                continue
            log(f"Hamming scan {L} bits, {t} thread(s)")
            r = measure_hamming(codes_db, codes_q, L, 100, t, repeats=3)
            rows.append({"what": "Hamming k=100 codes/s (ours vs faiss IndexBinaryFlat)", "threads": t, "bits": L,
                         "ours": r["drq_codes_per_s"], "baseline": r["faiss_codes_per_s"], "ratio": r["speedup"],
                         "same distances": r["distances_equal"], "simd": r["simd_level"]})
    return rows


# ==============================================================================================
# report

def _report(args, results, meta, extra_rows) -> str:
    out = [f"# Learned hashing on Fashion-MNIST ({meta['nb']} database/training images, {meta['nq']} queries)", ""]
    out.append(f"Relevance = same class; Hamming ranking, ties in database order; mAP@all and "
               f"precision@{P_AT}. {args.threads} thread(s); {meta['machine']['cpu']}, "
               f"{meta['machine']['cores_available']} cores, shared with other jobs (timings are noisy).")
    out.append("")
    methods = []
    for r in results:
        if r["method"] not in methods:
            methods.append(r["method"])
    by = {(r["method"], r["bits"]): r for r in results}
    for metric in ("mAP", f"P@{P_AT}"):
        rows = []
        for m in methods:
            rows.append([m] + [100 * by[(m, L)][metric] if (m, L) in by else None for L in args.lengths])
        out.append(f"## {metric} (%)")
        out.append("")
        out.append(markdown_table(["method"] + [f"{L} bits" for L in args.lengths], rows))
        out.append("")
    out.append("## Training time and model size")
    out.append("")
    rows = []
    for m in methods:
        rs = [r for r in results if r["method"] == m]
        train_s = sum({r["bits"]: r.get("train_s", float("nan")) for r in rs}.values()) \
            if m.endswith("(per length)") else rs[0].get("train_s")
        big = max(rs, key=lambda r: r["bits"])  # per-length models: sizes of the longest one
        rows.append([m, train_s, big.get("epochs"), big.get("params"), big.get("fc_bytes")])
    out.append(markdown_table(["method", "train s (all lengths)", "epochs", "parameters (longest model)",
                               "FC bytes (longest model)"], rows))
    out.append("")
    if "fc_bytes_float" in meta:
        out.append(f"Student FC layers: float {meta['fc_bytes_float']:,} B vs ternary {meta['fc_bytes_ternary']:,} B "
                   f"({meta['fc_bytes_float'] / meta['fc_bytes_ternary']:.1f}x smaller; 2 bits per weight + 4 B "
                   "per scalar). Student settings: " + str(meta["student_spec"]) + ".")
        out.append("")
    if extra_rows:
        out.append("## Exported C++ encoder, encoder throughput and Hamming scan")
        out.append("")
        groups: dict[str, list[dict]] = {}
        for r in extra_rows:
            groups.setdefault(r["what"], []).append(r)
        for what, group in groups.items():
            keys = [k for k in group[0] if k != "what"]
            out.append(f"**{what}**")
            out.append("")
            out.append(markdown_table(keys, [[r.get(k) for k in keys] for r in group]))
            out.append("")
    out.append("Reproduce: `python benchmarks/bench_hashing.py " + " ".join(meta["argv"]) + "`")
    return "\n".join(out) + "\n"


def main(argv=None):
    args = parse_args(argv)
    log("loading Fashion-MNIST")
    try:
        ds = load_fashion_mnist(args.data_dir)
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")
    ds = ds.subsample(args.nb, args.nq)
    log(f"  database/training {ds.xb.shape}, queries {ds.xq.shape}")
    meta = {"nb": ds.nb, "nq": ds.nq, "threads": args.threads, "machine": machine_info(),
            "argv": sys.argv[1:] if argv is None else list(argv), "lengths": args.lengths}
    results: list[dict] = []
    extra_rows: list[dict] = []
    with Timer() as total:
        _, models = run_learned(ds, args, results, meta)
        if not args.skip_baselines:
            log("faiss baselines")
            run_baselines(ds, args, results)
        try:
            extra_rows = encoder_and_scan_rows(models["ternary student + KD (one model)"], ds, args)
        except Exception:  # the hook must not lose the measured table
            traceback.print_exc()
    meta["total_s"] = total.s
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_json(args.out_dir / f"{STEM}.json", {"meta": meta, "results": results, "encoder_rows": extra_rows})
    text = _report(args, results, meta, extra_rows)
    write_text(args.out_dir / f"{STEM}.md", text)
    print(text)
    log(f"wrote {args.out_dir / (STEM + '.md')} ({total.s:.0f} s)")


if __name__ == "__main__":
    main()
