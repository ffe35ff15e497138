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
