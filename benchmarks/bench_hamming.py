"""Micro benchmark of the hashing path: Hamming scan codes/s vs faiss IndexBinaryFlat, and the
ternary encoder's images/s vs the same-architecture float MLP in torch.

    python benchmarks/bench_hamming.py [--threads 1 2] [--repeats 5] [--quick] [--json PATH]
                                       [--codes random|clustered] [--skip-encoder]

Prints two tables and writes nothing unless --json is given (the lead folds the numbers into
benchmarks/results/hashing.md). Both measurements are importable:

    measure_hamming(codes_db, codes_q, nbits, k, threads) -> dict
    measure_encoder(spec, x, threads, batch_sizes=(10000, 1)) -> dict

Method. Hamming: random packed codes (uint8, LSB-first as faiss uses them), or with --codes
clustered codes like learned hash codes of 10 classes (10 random centres with 0-3 random bits
flipped: many duplicates and masses of ties at the k-th distance); for every nbits (16, 32, 48, 64) the
same database prefix is added to a faiss.IndexBinaryFlat(nbits) and searched with the same query
prefixes, while drqindex searches its uint64 words over the first nbits bits; codes/s = nq * n /
median seconds. Distances are checked equal. Encoder: a 784-512-256-64 network (ReLU between
layers) with random ternary weights at ~50 % sparsity; torch runs nn.Sequential of nn.Linear/ReLU
with float32 weights of the same shapes under torch.inference_mode(); drqindex runs
TernaryEncoder.embed on uint8 images. Batch 1 is timed over many calls. All ratios come from the
same process and the same thread setting, medians of `repeats` runs (the development machine is
shared, so absolute numbers are noisy; compare ratios).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_model, markdown_table  # noqa: E402

import drqindex  # noqa: E402
from drqindex import _core  # noqa: E402
from drqindex.index_binary_hash import pack_words  # noqa: E402


def _median_seconds(fn, repeats: int, calls: int = 1) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times)


def _set_threads(threads: int) -> None:
    import faiss
    faiss.omp_set_num_threads(threads)
    _core.set_num_threads(threads)
    try:
        import torch
        torch.set_num_threads(threads)
    except ImportError:
        pass


def measure_hamming(codes_db: np.ndarray, codes_q: np.ndarray, nbits: int, k: int, threads: int,
                    repeats: int = 5) -> dict:
    """codes_db (n, B) / codes_q (nq, B) uint8 packed codes, nbits <= 8 B a multiple of 8."""
    import faiss

    _set_threads(threads)
    nb = nbits // 8
    n, nq = codes_db.shape[0], codes_q.shape[0]
    flat = faiss.IndexBinaryFlat(nbits)
    flat.add(np.ascontiguousarray(codes_db[:, :nb]))
    q_prefix = np.ascontiguousarray(codes_q[:, :nb])
    index = drqindex.IndexBinaryHash(None, nbits=8 * codes_db.shape[1])
    index.add_codes(np.ascontiguousarray(codes_db))
    W = (8 * codes_db.shape[1] + 63) // 64
    words_q = pack_words(np.ascontiguousarray(codes_q), W)
    t_faiss = _median_seconds(lambda: flat.search(q_prefix, k), repeats)
    t_core = _median_seconds(lambda: index._search_words(words_q, k, nbits), repeats)
    D_f, _ = flat.search(q_prefix, k)
    D_d, _ = index._search_words(words_q, k, nbits)
    return {"nbits": nbits, "k": k, "n": n, "nq": nq, "threads": threads,
            "faiss_codes_per_s": nq * n / t_faiss, "drq_codes_per_s": nq * n / t_core,
            "speedup": t_faiss / t_core, "distances_equal": bool(np.array_equal(D_f, D_d)),
            "simd_level": _core.simd_level()}


def clustered_codes(rng, n: int, nbytes: int, classes: int = 10, max_flips: int = 3) -> np.ndarray:
    """(n, nbytes) uint8 codes: one of `classes` random centres with up to max_flips random bits
    flipped (each flip drawn with probability 3/4), as a learned hash of 10 classes gives."""
    centres = np.unpackbits(np.random.default_rng(1234).integers(0, 256, (classes, nbytes), dtype=np.uint8),
                            axis=1, bitorder="little")
    bits = centres[rng.integers(0, classes, n)]
    for _ in range(max_flips):
        rows = np.flatnonzero(rng.random(n) < 0.75)
        bits[rows, rng.integers(0, 8 * nbytes, rows.size)] ^= 1
    return np.packbits(bits, axis=1, bitorder="little")


def random_ternary_spec(dims=(784, 512, 256, 64), sparsity=0.5, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    layers = []
    for i in range(len(dims) - 1):
        r = rng.random((dims[i + 1], dims[i]))
        layers.append({"kind": "ternary", "pos": r < sparsity / 2, "neg": (r >= sparsity / 2) & (r < sparsity),
                       "w_pos": float(1.2 / np.sqrt(dims[i])), "w_neg": float(1.0 / np.sqrt(dims[i])),
                       "scale": np.ones(dims[i + 1], np.float32), "shift": np.zeros(dims[i + 1], np.float32),
                       "relu": i < len(dims) - 2})
    return {"version": 1, "input_shape": (28, 28) if dims[0] == 784 else (dims[0],),
            "in_scale": np.full(dims[0], 1 / 255, np.float32), "in_shift": np.zeros(dims[0], np.float32),
            "layers": layers}


def measure_encoder(spec: dict, x: np.ndarray, threads: int, batch_sizes=(10000, 1), repeats: int = 5) -> list:
    """images/s of TernaryEncoder.embed vs the float torch MLP of the same shapes, per batch size."""
    import torch

    _set_threads(threads)
    enc = drqindex.TernaryEncoder.from_spec(spec)
    modules = []
    for i, layer in enumerate(spec["layers"]):
        d_out, d_in = layer["scale"].shape[0], (layer["pos"] if layer["kind"] == "ternary" else layer["weight"]).shape[1]
        linear = torch.nn.Linear(d_in, d_out)
        with torch.no_grad():
            if layer["kind"] == "ternary":
                w = layer["pos"] * layer["w_pos"] - layer["neg"] * layer["w_neg"]
            else:
                w = layer["weight"]
            linear.weight.copy_(torch.from_numpy(np.asarray(w, np.float32)))
        modules.append(linear)
        if layer["relu"]:
            modules.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*modules).eval()
    rows = []
    for batch in batch_sizes:
        xb = np.ascontiguousarray(x[:batch])
        xt = torch.from_numpy(xb.reshape(batch, -1).astype(np.float32) / 255)
        calls = max(1, 2000 // batch)

        def run_torch():
            with torch.inference_mode():
                model(xt)

        t_torch = _median_seconds(run_torch, repeats, calls)
        t_enc = _median_seconds(lambda: enc.embed(xb), repeats, calls)
        t_core = _median_seconds(lambda: enc._net.forward(xb.reshape(batch, -1)), repeats, calls)
        rows.append({"batch": batch, "threads": threads, "torch_images_per_s": batch / t_torch,
                     "drq_embed_images_per_s": batch / t_enc, "drq_core_images_per_s": batch / t_core,
                     "speedup_embed": t_torch / t_enc, "simd_level": _core.simd_level()})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n", type=int, default=60000)
    parser.add_argument("--nq", type=int, default=10000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--codes", choices=("random", "clustered"), default="random",
                        help="Hamming database and queries: uniform random or clustered (10 classes)")
    parser.add_argument("--skip-encoder", action="store_true", help="only the Hamming scan")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.nq, args.repeats = 5000, 200, 2
    rng = np.random.default_rng(0)
    if args.codes == "clustered":
        db, q = clustered_codes(rng, args.n, 8), clustered_codes(rng, args.nq, 8)
    else:
        db = rng.integers(0, 256, (args.n, 8), dtype=np.uint8)
        q = rng.integers(0, 256, (args.nq, 8), dtype=np.uint8)
    print(f"CPU: {cpu_model()}; drqindex SIMD level {_core.simd_level()}; "
          f"AVX-512 VPOPCNTDQ: {_core.cpu_has_avx512_vpopcntdq()}")
    ham = [measure_hamming(db, q, nbits, args.k, t, args.repeats) for t in args.threads for nbits in (16, 32, 48, 64)]
    print(f"\nHamming scan, {args.codes} codes, n={args.n}, nq={args.nq}, k={args.k} "
          f"(G codes/s, median of {args.repeats})")
    print(markdown_table(["threads", "nbits", "faiss IndexBinaryFlat", "drqindex", "speedup", "D equal"],
                         [[r["threads"], r["nbits"], f"{r['faiss_codes_per_s'] / 1e9:.2f}",
                           f"{r['drq_codes_per_s'] / 1e9:.2f}", f"{r['speedup']:.2f}x", r["distances_equal"]]
                          for r in ham]))
    if args.skip_encoder:
        if args.json is not None:
            from common import machine_info, write_json
            write_json(args.json, {"machine": machine_info(), "hamming": ham})
        return
    spec = random_ternary_spec()
    x = rng.integers(0, 256, (2000 if args.quick else 10000, 28, 28), dtype=np.uint8)
    batches = (x.shape[0], 1)
    enc_rows = [row for t in args.threads for row in measure_encoder(spec, x, t, batches, args.repeats)]
    print(f"\nEncoder 784-512-256-64, ternary ~50% sparse (images/s, median of {args.repeats})")
    print(markdown_table(["threads", "batch", "torch float MLP", "TernaryEncoder.embed", "core forward",
                          "speedup (embed)"],
                         [[r["threads"], r["batch"], f"{r['torch_images_per_s']:.0f}",
                           f"{r['drq_embed_images_per_s']:.0f}", f"{r['drq_core_images_per_s']:.0f}",
                           f"{r['speedup_embed']:.2f}x"] for r in enc_rows]))
    if args.json is not None:
        from common import machine_info, write_json
        write_json(args.json, {"machine": machine_info(), "hamming": ham, "encoder": enc_rows})


if __name__ == "__main__":
    main()
