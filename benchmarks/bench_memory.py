"""Peak memory of IndexDRQ when adding in chunks and searching in batches.

What it checks (the "drop-in" issue's memory claim): adding n vectors in chunks keeps the peak
memory bounded by the stored codes plus a constant times the chunk, and searching in batches never
allocates more than O(batch * k) beyond the codes (plus the fixed per-chunk look-up tables).

Method. Every scenario runs in its own fresh Python process (this script re-invoked with
--worker), so each peak is clean:
  * current RSS is read from /proc/self/statm (resident pages x page size) before and after
    each step;
  * peak RSS is resource.getrusage(RUSAGE_SELF).ru_maxrss (KiB on Linux). Where a process has
    to load the index first, its peak is reset after loading by writing "5" to
    /proc/self/clear_refs (Linux >= 4.0; it resets VmHWM, which ru_maxrss reports), so the
    search peak is not the load's peak. If that reset is refused the JSON says so.
The index is IndexDRQ(d, iters) with a fixed quantizer built without torch, as in
tests/conftest.py (codebook (256, d) standard normal, scales 0.8 ** arange(M)); the data are
standard normal float32 vectors generated one chunk at a time, so the caller never holds more
than one chunk of input.

Scenario "add": n vectors in chunks of `chunk`; after each chunk, current RSS, peak RSS so far
and the store's own bytes (index._store.memory_usage(): codes + prefix norms + ids). The
reported excess is peak RSS - RSS before the first add - final store bytes - one input chunk.
The add scenario then writes the index to a temporary file.

Search scenarios (each a fresh process that read_index()es that file, then resets the peak):
nq queries with k in {10, 100}, either in batches of `batch` queries or as one call of nq
queries (which IndexDRQ.search chunks internally by drqindex.quantizer.QUERY_CHUNK queries).
Growth = peak RSS during the searches - RSS just before them, compared with the result arrays
of one call (rows x k x 12 bytes: D float32 + I int64) and with the per-chunk look-up tables
(min(rows, QUERY_CHUNK) x 256 x 4 bytes).

Scanning 1e6 codes for 1e5 queries takes a single core tens of minutes; the memory does not
depend on how many batches run, so --nq may be lowered and --search-iters (the code prefix the
scan reads; it does not change any allocation) kept small to finish in minutes.

Usage: python benchmarks/bench_memory.py [--n 1000000] [--chunk 50000] [--nq 10000] ...
Writes <out-dir>/memory.md and <out-dir>/memory.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, markdown_table, write_json, write_text  # noqa: E402

MiB = 1024 * 1024
# glibc raises its mmap threshold dynamically (up to 32 MiB) after a large buffer is freed, and
# keeps freed heap memory resident below the trim threshold: memory freed by an earlier step
# (e.g. read_index's file buffer) would then be reused silently and a search's allocations would
# not show up in RSS. Pinning both makes every large allocation visible (a stricter measurement:
# with the defaults the growth can only be smaller).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
_PAGE = os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------ measuring
def rss_bytes() -> int:
    """Current resident set size of this process (bytes), from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def peak_bytes() -> int:
    """Peak resident set size of this process so far (bytes): ru_maxrss is in KiB on Linux."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak() -> bool:
    """Reset the peak RSS (VmHWM, hence ru_maxrss) to the current RSS; False if not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------ the index
def make_index(d: int, iters: int, seed: int = 0):
    """IndexDRQ with a fixed quantizer (no torch), as tests/conftest.py's make_quantizer."""
    import drqindex
    rng = np.random.default_rng(seed)
    codebook = rng.standard_normal((256, d)).astype(np.float32)
    scales = (0.8 ** np.arange(iters)).astype(np.float32)
    index = drqindex.IndexDRQ(d, iters=iters)
    index.set_quantizer(drqindex.DRQQuantizer(codebook, scales))
    return index


def store_bytes(index) -> int:
    return int(index._store.memory_usage())


# ------------------------------------------------------------------ workers (one process each)
def worker_add(args) -> dict:
    index = make_index(args.d, args.iters)
    rng = np.random.default_rng(1)
    chunk_bytes = args.chunk * args.d * 4
    rss0 = rss_bytes()
    peak_before = peak_bytes()
    rows, t0 = [], time.perf_counter()
    for start in range(0, args.n, args.chunk):
        x = rng.standard_normal((min(args.chunk, args.n - start), args.d), dtype=np.float32)
        index.add(x)
        rows.append({"ntotal": index.ntotal, "rss": rss_bytes(), "peak": peak_bytes(),
                     "store": store_bytes(index)})
        del x
    seconds = time.perf_counter() - t0
    final_store = store_bytes(index)
    peak = peak_bytes()
    import drqindex
    drqindex.write_index(index, args.index_file)
    return {
        "rss_before": rss0, "peak_before": peak_before, "chunk_bytes": chunk_bytes,
        "per_chunk": rows, "final_store": final_store, "peak": peak, "rss_after": rss_bytes(),
        "excess": peak - rss0 - final_store - chunk_bytes, "seconds": seconds,
    }


def worker_search(args) -> dict:
    import drqindex
    from drqindex.quantizer import QUERY_CHUNK
    index = drqindex.read_index(args.index_file)
    rng = np.random.default_rng(2)
    rows_per_call = args.batch if args.mode == "batched" else args.nq
    # The queries are generated one call's worth at a time, so they do not count as growth
    # beyond one call's input (reported separately).
    x_first = rng.standard_normal((rows_per_call, args.d), dtype=np.float32)
    index.search(x_first[:8], args.k, iters=args.search_iters)  # first-call allocations, untimed
    reset_ok = reset_peak()
    rss0 = rss_bytes()
    peak0 = peak_bytes()
    t0 = time.perf_counter()
    calls, done, x = 0, 0, x_first
    while done < args.nq:
        if x is None:
            x = rng.standard_normal((min(rows_per_call, args.nq - done), args.d), dtype=np.float32)
        D, I = index.search(x, args.k, iters=args.search_iters)
        done += x.shape[0]
        calls += 1
        del D, I
        x = None
    seconds = time.perf_counter() - t0
    peak = peak_bytes()
    return {
        "mode": args.mode, "k": args.k, "rows_per_call": rows_per_call, "calls": calls,
        "store": store_bytes(index), "rss_before": rss0, "peak_reset": reset_ok, "peak_at_start": peak0,
        "peak": peak, "growth": peak - max(rss0, peak0) if reset_ok else peak - rss0, "rss_after": rss_bytes(),
        "output_bytes": rows_per_call * args.k * 12,
        "input_bytes": rows_per_call * args.d * 4,
        "tables_bytes": min(rows_per_call, QUERY_CHUNK) * 256 * 4,
        "query_chunk": QUERY_CHUNK, "seconds": seconds,
    }


def run_worker(args) -> None:
    import drqindex
    drqindex.set_num_threads(args.threads)
    out = worker_add(args) if args.worker == "add" else worker_search(args)
    print("RESULT " + json.dumps(out), flush=True)


# ------------------------------------------------------------------ driver
def spawn(args, worker: str, extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--worker", worker, "--n", str(args.n), "--d", str(args.d),
           "--iters", str(args.iters), "--chunk", str(args.chunk), "--nq", str(args.nq),
           "--batch", str(args.batch), "--threads", str(args.threads),
           "--search-iters", str(args.search_iters), "--index-file", args.index_file, *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", **MALLOC_ENV)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {worker} {extra} failed:\n{proc.stderr}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def mib(b: float) -> float:
    return b / MiB


def report(args, add: dict, searches: list[dict]) -> str:
    import drqindex
    from drqindex.quantizer import ENCODE_CHUNK
    info = machine_info()
    per_vec = add["final_store"] / args.n
    add_rows = []
    for r in add["per_chunk"]:
        if r is add["per_chunk"][0] or r is add["per_chunk"][-1] or len(add["per_chunk"]) <= 8 \
                or (r["ntotal"] // args.chunk) % max(1, len(add["per_chunk"]) // 8) == 0:
            add_rows.append([f"{r['ntotal']:,}", mib(r["store"]), mib(r["rss"] - add["rss_before"]),
                             mib(r["peak"] - add["rss_before"]),
                             mib(r["peak"] - add["rss_before"] - r["store"]),
                             (r["peak"] - add["rss_before"] - r["store"]) / add["chunk_bytes"]])
    add_table = markdown_table(
        ["ntotal", "store (MiB)", "RSS - RSS0 (MiB)", "peak - RSS0 (MiB)", "peak - RSS0 - store (MiB)",
         "(peak - RSS0 - store) / chunk"], add_rows)
    s_rows = []
    for s in searches:
        s_rows.append([s["mode"], s["rows_per_call"], s["calls"], s["k"], mib(s["growth"]),
                       mib(s["output_bytes"]), mib(s["tables_bytes"]), mib(s["input_bytes"]),
                       s["growth"] / max(1, s["output_bytes"] + s["tables_bytes"]),
                       mib(s["rss_after"] - s["rss_before"]), "yes" if s["peak_reset"] else "NO"])
    search_table = markdown_table(
        ["mode", "queries / call", "calls", "k", "peak growth (MiB)", "D+I of a call (MiB)",
         "tables (MiB)", "queries of a call (MiB)", "growth / (D+I + tables)", "RSS after - before (MiB)",
         "peak reset"], s_rows)
    return f"""# Memory: chunked add and batched search (IndexDRQ)

Written by `benchmarks/bench_memory.py` on {info['date']}: {info['cpu']}, {info['cores_available']} cores
available (shared with another benchmark while it ran), drqindex C++ threads = {args.threads},
Python {info['python']}, numpy {info['numpy']}, drqindex {drqindex.__version__}.

Index: IndexDRQ(d={args.d}, iters={args.iters}, L2) with a fixed quantizer (no torch; codebook
(256, d) standard normal, scales 0.8^j). Data: {args.n:,} standard normal float32 vectors, added in
chunks of {args.chunk:,} ({mib(add['chunk_bytes']):.1f} MiB of input per chunk). Every scenario runs in
its own process; current RSS from /proc/self/statm, peak RSS from getrusage ru_maxrss (reset with
/proc/self/clear_refs after loading the index in the search processes); glibc's malloc runs with
`{' '.join(f'{k}={v}' for k, v in MALLOC_ENV.items())}` so freed buffers go back to the system and new
allocations show in RSS. RSS0 = RSS just before the
first add (interpreter, numpy, drqindex, quantizer).

## Adding in chunks

Store after the add: {mib(add['final_store']):.1f} MiB ({per_vec:.1f} bytes / vector: {args.iters} code bytes,
{args.iters} float32 prefix norms, one int64 id). Whole add: {add['seconds']:.1f} s.
Peak over the whole add - RSS0 - final store - one input chunk = **{mib(add['excess']):.1f} MiB**
= {add['excess'] / add['chunk_bytes']:.2f} chunks = {add['excess'] / add['final_store']:.2f} x the final store.

{add_table}

## Searching {args.nq:,} queries (search iters = {args.search_iters}, k in 10 / 100)

Growth = peak RSS during the searches - RSS just before them (index loaded, one 8-query call made,
the first call's queries generated; later calls' queries are generated between calls and count).
"tables" = min(rows, QUERY_CHUNK = {searches[0]['query_chunk']}) x 256 x 4 bytes, the per-chunk q C^T tables.

{search_table}

Reading the numbers. Adding: "peak - RSS0 - store" is the transient memory of one add() call; it
does not grow with ntotal. Its terms: the input chunk ({mib(add['chunk_bytes']):.1f} MiB), the encoder's
x C^T table for min(chunk, ENCODE_CHUNK = {ENCODE_CHUNK}) rows ({mib(min(args.chunk, ENCODE_CHUNK) * 256 * 4):.1f} MiB), the chunk's codes and
prefix norms ({args.iters} + 4 x {args.iters} bytes / vector, {mib(args.chunk * 5 * args.iters):.1f} MiB) before the
store copies them, and the store's geometric regrowth (std::vector reserve: one array at a time,
so at most the old code array, {args.iters}/{per_vec:.0f} of the store, is resident twice; reserved pages are
not resident until written). Searching in batches: the growth is one call's D + I, the core's own
copy of them (it returns new arrays that search() copies into D, I), the q C^T tables and the
per-query heaps; it is the same for every call and does not depend on nq or ntotal. One call of nq
queries: D + I for all nq rows (the result itself, nq x k x 12 bytes) plus the same per-chunk terms
for one QUERY_CHUNK.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--iters", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=50_000)
    ap.add_argument("--nq", type=int, default=10_000,
                    help="queries per search scenario (1e5 also works but scans for tens of minutes)")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--search-iters", type=int, default=2,
                    help="code prefix the scan reads (0: all iters); it changes no allocation, only the time")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--worker", choices=["add", "search"], help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=["batched", "one"], help=argparse.SUPPRESS)
    ap.add_argument("--k", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--index-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.search_iters:
        args.search_iters = args.iters
    if args.worker:
        run_worker(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        args.index_file = str(Path(tmp) / "index.drq")
        print(f"add: n={args.n:,} chunk={args.chunk:,}", flush=True)
        add = spawn(args, "add", [])
        searches = []
        for mode in ("batched", "one"):
            for k in (10, 100):
                print(f"search: {mode} k={k}", flush=True)
                searches.append(spawn(args, "search", ["--mode", mode, "--k", str(k)]))
    text = report(args, add, searches)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_text(args.out_dir / "memory.md", text)
    cfg = {k: v for k, v in vars(args).items() if k not in ("worker", "mode", "k", "index_file", "out_dir")}
    write_json(args.out_dir / "memory.json", {"machine": machine_info(), "config": cfg, "add": add,
                                              "search": searches})
    print(text)


if __name__ == "__main__":
    main()
