"""benchmarks/bench_kernels.py: the goal summary it puts at the top of kernels.md."""
from conftest import load_benchmark


def load_bench():
    return load_benchmark("bench_kernels")


def test_goal_rows_ratios_and_verdicts():
    bench = load_bench()
    rows = [{"method": "drqindex", "bytes": 8, "threads": 1, "qps": 900.0},
            {"method": "faiss IndexPQ", "bytes": 8, "threads": 1, "qps": 300.0},
            {"method": "drqindex", "bytes": 16, "threads": 1, "qps": 500.0},
            {"method": "faiss IndexPQ", "bytes": 16, "threads": 1, "qps": 250.0}]
    extra = [{"method": "drqindex 4-bit fast-scan", "bytes": 8, "threads": 1, "qps": 11.0, "10-R@10": 0.36},
             {"method": "drqindex 4-bit fast-scan + rerank 100", "bytes": 8, "threads": 1, "qps": 99.0,
              "10-R@10": 0.9},
             {"method": "faiss PQ4fs", "bytes": 8, "threads": 1, "qps": 10.0, "10-R@10": 0.21},
             {"method": "drqindex 4-bit fast-scan", "bytes": 16, "threads": 1, "qps": 12.0, "10-R@10": 0.2},
             {"method": "faiss PQ4fs (d padded to 800)", "bytes": 16, "threads": 1, "qps": 10.0, "10-R@10": 0.3}]
    out = {r[1]: r for r in bench.goal_rows(rows, extra, [1])}
    assert out["8 B"][2] == 3.0 and out["8 B"][3] == "yes"          # exactly 3x counts
    assert abs(out["8 B"][4] - 1.1) < 1e-12 and out["8 B"][6] == "yes"  # the rerank row is not the 4-bit point
    assert out["16 B"][2] == 2.0 and out["16 B"][3] == "no"
    assert out["16 B"][4] == 1.2 and out["16 B"][6] == "no"          # faster but lower recall: not met
    assert out["32 B"][2] is None and out["32 B"][6] == "no"         # missing rows are reported, not invented


def test_goal_rows_prefer_the_paired_ratio():
    bench = load_bench()
    extra = [{"method": "drqindex 4-bit fast-scan", "bytes": 64, "threads": 1, "qps": 90.0, "10-R@10": 0.69,
              "paired_ratio": 1.05},
             {"method": "faiss PQ4fs (d padded to 896)", "bytes": 64, "threads": 1, "qps": 100.0, "10-R@10": 0.66}]
    out = {r[1]: r for r in bench.goal_rows([], extra, [1])}
    # the medians of the two sides say 0.9; the rounds, each timed back to back, say 1.05
    assert out["64 B"][4] == 1.05 and out["64 B"][6] == "yes"


def test_fastscan_paired_times_alternate_and_ratio_is_the_median_of_rounds():
    fastscan = load_benchmark("bench_fastscan")
    calls = []
    times_a, times_b, out_a, out_b = fastscan.paired_times(lambda: calls.append("a") or "A",
                                                           lambda: calls.append("b") or "B", 3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-ups, then the order flips per round
    assert len(times_a) == len(times_b) == 3 and (out_a, out_b) == ("A", "B")
    assert fastscan.paired_ratio([2.0, 3.0, 10.0], [1.0, 2.0, 1.0]) == 2.0   # median of 2, 1.5, 10
