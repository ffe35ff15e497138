"""benchmarks/bench_ivf.py: argument checks, the chunked synthetic scale data and the scale run's
add-time estimate (a tiny stand-in dataset; no Fashion-MNIST, no training)."""
from types import SimpleNamespace

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")
import drqindex  # noqa: E402
from conftest import load_benchmark  # noqa: E402


def load_bench():
    return load_benchmark("bench_ivf")


def test_scale_only_needs_a_saved_index():
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.parse_args(["--scale-only"])
    args = bench.parse_args(["--scale-only", "--load-index", "x.drq"])
    assert args.scale_only and args.load_index == "x.drq"
    assert all(a < b for a, b in zip(bench.ITERS, bench.ITERS[1:])) and {2, 3, 5, 6, 7} <= set(bench.ITERS)


def test_scale_vectors_are_regenerated_identically_per_chunk():
    bench = load_bench()
    base = np.arange(5 * 4, dtype=np.float32).reshape(5, 4)
    a = bench.scale_vectors(base, 3, 6, 0.5, seed=1)
    assert a.shape == (6, 4) and a.dtype == np.float32 and a.flags.c_contiguous
    np.testing.assert_array_equal(a, bench.scale_vectors(base, 3, 6, 0.5, seed=1))
    assert not np.array_equal(a, bench.scale_vectors(base, 9, 6, 0.5, seed=1))
    noise = a - base[np.arange(3, 9) % 5]
    assert 0.2 < noise.std() < 1.0


def test_scale_run_measures_then_skips_what_would_take_too_long(monkeypatch):
    bench = load_bench()
    rng = np.random.default_rng(0)
    d, nlist, M = 16, 16, 8
    xb = rng.standard_normal((500, d)).astype(np.float32)
    monkeypatch.setattr(bench, "load_fashion_mnist",
                        lambda _dir=None: SimpleNamespace(xb=xb, xq=rng.standard_normal((30, d)).astype(np.float32)))
    index = drqindex.IndexIVFDRQ(faiss.IndexFlatL2(d), d, nlist, iters=M, codebooks="per_iteration")
    codebooks = (rng.standard_normal((M, 256, d)) * 0.5 ** np.arange(M)[:, None, None]).astype(np.float32)
    index.set_quantizers(drqindex.DRQQuantizer(codebooks, np.ones(M, np.float32)), xb[:nlist])
    args = bench.parse_args(["--scale-sizes", "400,100000000", "--scale-max-add-seconds", "60", "--repeats", "1"])
    info = {}
    rows = bench.run_scale(args, index, info)
    assert rows[0]["n"] == 400 and rows[0]["add_s_estimate"] is None and rows[0]["memory_per_vector"] > M
    points = rows[0]["points"]
    assert len(points) == 3
    assert {(p["iters"], p["nprobe"]) for p in points} == {(m, p) for m, p in bench.SCALE_POINTS if m <= M and p <= nlist}
    assert all(0.0 <= p["recall"] <= 1.0 for p in points)
    assert rows[1]["skipped"] and rows[1]["add_s_estimate"] > 60
    text = "\n".join(bench.render_scale(info, rows, args))
    assert "skipped: estimated" in text and "| 400 |" in text, text


def test_coverage_counts_only_points_dominated_within_the_byte_budget():
    bench = load_bench()
    results = {
        "drq": [{"iters": 8, "nprobe": 4, "recall": 0.60, "qps": 20000.0},
                {"iters": 16, "nprobe": 4, "recall": 0.70, "qps": 30000.0}],
        "ivfpq": {m: {"points": [{"nprobe": 1, "recall": 0.55, "qps": 15000.0},
                                 {"nprobe": 8, "recall": 0.65, "qps": 25000.0}]} for m in bench.BYTES},
    }
    cov = {(c["bytes"], c["nprobe"]): c["covered_by"] for c in bench.coverage(results)}
    # 8 B: only iters <= 8 counts; it beats nprobe 1 but is slower than nprobe 8
    assert cov[(8, 1)] == {"iters": 8, "nprobe": 4, "recall": 0.60, "qps": 20000.0}
    assert cov[(8, 8)] is None
    # 16 B and up: the 16-iteration point dominates both, and is the fastest that does
    for m in (16, 32, 64):
        assert cov[(m, 1)]["iters"] == 16 and cov[(m, 8)]["iters"] == 16


def test_subspace_runs_describe_each_iterations_leading_dims():
    bench = load_bench()
    from drqindex.quantizer import DRQQuantizer, Subspace
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.standard_normal((12, 6)))
    cbs = rng.standard_normal((5, 256, 6)).astype(np.float32)
    cbs[:2, :, 2:] = 0
    cbs[2, :, 4:] = 0
    q = DRQQuantizer(Subspace(np.zeros(12, np.float32), basis.astype(np.float32), cbs), np.ones(5, np.float32))
    assert bench.subspace_runs(q) == [[1, 2, 2], [3, 3, 4], [4, 5, 6]]
    assert bench.subspace_runs(DRQQuantizer(rng.standard_normal((3, 256, 12)).astype(np.float32),
                                            np.ones(3, np.float32))) is None


def _sweep():
    # IVFPQ 8 B: nprobe 1 close (ratio 1.2), nprobe 2 clear (2.0x); 16 B nprobe 1: no point reaches it
    return {"drq": [{"iters": 4, "nprobe": 1, "recall": 0.40, "qps": 120.0},
                    {"iters": 8, "nprobe": 2, "recall": 0.50, "qps": 200.0},
                    {"iters": 16, "nprobe": 2, "recall": 0.55, "qps": 90.0}],
            "ivfpq": {8: {"points": [{"nprobe": 1, "recall": 0.39, "qps": 100.0},
                                     {"nprobe": 2, "recall": 0.45, "qps": 100.0}]},
                      16: {"points": [{"nprobe": 1, "recall": 0.60, "qps": 50.0}]},
                      32: {"points": []}, 64: {"points": []}}}


def test_fastest_reaching_respects_the_byte_budget_and_recall():
    bench = load_bench()
    got = bench.fastest_reaching(_sweep())
    assert got[(8, 1)]["iters"] == 8 and got[(8, 2)]["iters"] == 8     # fastest of those reaching
    assert got[(16, 1)] is None                                         # none reaches 0.60


def test_paired_retiming_alternates_only_the_close_calls():
    bench = load_bench()
    calls = []
    out = bench.paired_retiming(_sweep(), lambda m, p: calls.append(("pq", m, p)),
                                lambda it, p: calls.append(("drq", it, p)), nq=10, rounds=3)
    # 8 B nprobe 1 vs iters 8 nprobe 2: 200/100 = 2.0 >= PAIRED_BELOW -> not a close call;
    # 8 B nprobe 2: the same point, 2.0x -> skipped; 16 B nprobe 1: nothing reaches it -> skipped
    assert bench.PAIRED_BELOW <= 2.0 and out == [] and calls == []
    sweep = _sweep()
    sweep["drq"][1]["qps"] = 110.0                                      # now 1.1x: close calls
    out = bench.paired_retiming(sweep, lambda m, p: calls.append(("pq", m, p)),
                                lambda it, p: calls.append(("drq", it, p)), nq=10, rounds=3)
    assert [(r["bytes"], r["nprobe"]) for r in out] == [(8, 1), (8, 2)]
    first = calls[:8]     # warm-up pq, drq; then rounds: (pq, drq), (drq, pq), (pq, drq)
    assert [c[0] for c in first] == ["pq", "drq", "pq", "drq", "drq", "pq", "pq", "drq"]
    assert first[0] == ("pq", 8, 1) and first[1] == ("drq", 4, 1)   # 120 q/s: the fastest reaching 0.39
    r = out[0]
    assert r["rounds"] == 3 and r["ratio_min"] <= r["ratio_median"] <= r["ratio_max"] and r["drq"]["iters"] == 4


@pytest.mark.parametrize("text, want", [("none", None), ("256", 256), ("4:64,8:128,256", ((4, 64), (8, 128), (None, 256)))])
def test_subspace_dims_option_parses(text, want):
    bench = load_bench()
    assert bench.parse_args(["--subspace-dims", text]).subspace_dims == want
    assert bench.parse_args([]).subspace_dims == bench.SUBSPACE_DIMS


@pytest.mark.parametrize("text", ["4:64", "4:64,x", "4:64:2,256", "64,256"])
def test_subspace_dims_option_refuses_malformed_schedules(text):
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.parse_args(["--subspace-dims", text])
