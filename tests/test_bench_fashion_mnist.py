"""benchmarks/bench_fashion_mnist.py: the faiss facts it relies on, and a small end-to-end smoke run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import load_benchmark

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks" / "bench_fashion_mnist.py"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def load_bench():
    return load_benchmark("bench_fashion_mnist")


@pytest.mark.parametrize("beam", [1, 5])
def test_faiss_rq_prefix_codebooks_equal_separate_training(beam):
    """The benchmark trains faiss RQ(64) once and builds RQ(m) from its first m codebooks; that is
    only honest if faiss's RQ(m) trained alone has exactly those codebooks (and so the same codes)."""
    faiss = pytest.importorskip("faiss")
    bench = load_bench()
    rng = np.random.default_rng(0)
    d = 16
    x = (rng.standard_normal((1200, d)) @ rng.standard_normal((d, d))).astype(np.float32)
    args = bench.parse_args(["--ms", "2,3", "--rq-beam", str(beam), 
                             "--faiss-niter", "5", "--baselines", "rq", "--skip-drq"])

    # one thread: many tiny OpenMP regions crawl when spinning threads share busy cores
    nthreads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        family, total = bench.train_rq_prefix_family(x, d, args)
        check_family(faiss, bench, family, total, x, d, args)
    finally:
        faiss.omp_set_num_threads(nthreads)


def check_family(faiss, bench, family, total, x, d, args):
    assert total > 0
    for m in (2, 3):
        alone, _, _, _ = bench.build_faiss("rq", d, m, args)
        alone.train(x)
        prefix, train_s = family[m]
        assert train_s == train_s and 0 < train_s <= total + 1e-6  # parsed from faiss's log, not NaN
        np.testing.assert_array_equal(faiss.vector_to_array(prefix.rq.codebooks),
                                      faiss.vector_to_array(alone.rq.codebooks))
        assert prefix.code_size == alone.code_size == m + 4  # ST_norm_float: code + float norm
        alone.add(x[:300])
        prefix.add(x[:300])
        np.testing.assert_array_equal(faiss.vector_to_array(prefix.codes), faiss.vector_to_array(alone.codes))
        D1, I1 = alone.search(x[:20], 5)
        D2, I2 = prefix.search(x[:20], 5)
        np.testing.assert_array_equal(I1, I2)


def test_rq_stage_time_parser():
    bench = load_bench()
    lines = ["Training ResidualQuantizer, with 3 steps on 100 8D vectors\n",
             "[0.101 s, 0.090 s clustering] train stage 0, 8 bits, kmeans objective 1, total distance 2\n",
             "[12.5 s, 11.0 s clustering] train stage 1, 8 bits, kmeans objective 1, total distance 2\n",
             "[  13.000 s, 12.0 s clustering] train stage 2, 8 bits\n", "noise\n"]
    assert bench._rq_stage_times(lines) == {0: 0.101, 1: 12.5, 2: 13.0}


@pytest.mark.parametrize("m", [8, 16, 32, 64])
def test_faiss_pq_padding_is_lossless(m):
    """PQ/IVFPQ at m not dividing 784 zero-pad with a uniform RemapDimensionsTransform: distances unchanged."""
    faiss = pytest.importorskip("faiss")
    bench = load_bench()
    args = bench.parse_args(["--nlist", "4"])
    index, desc, note, refs = bench.build_faiss("pq", 784, m, args)
    assert bench.faiss_code_size(index) == m
    if 784 % m == 0:
        assert not isinstance(index, faiss.IndexPreTransform) and note == ""
        return
    assert isinstance(index, faiss.IndexPreTransform) and "zero-padded" in note
    x = np.random.default_rng(0).standard_normal((5, 784)).astype(np.float32)
    y = index.chain.at(0).apply(x)
    assert y.shape == (5, bench._pad_dim(784, m)) and y.shape[1] % m == 0
    np.testing.assert_array_equal(np.sort(y[y != 0]), np.sort(x.ravel()))  # the same values, plus zeros
    d_x = ((x[:, None] - x[None]) ** 2).sum(-1)
    d_y = ((y[:, None] - y[None]) ** 2).sum(-1)
    np.testing.assert_allclose(d_x, d_y, rtol=1e-5)


def test_parse_args_quick_defaults():
    bench = load_bench()
    a = bench.parse_args(["--quick"])
    assert a.nb == 10000 and a.nq == 1000 and a.nlist == 256 and a.rq_beam == 1 and a.faiss_niter == 4
    assert a.ms == [8, 16, 32, 64] and a.iters == 64 and a.out_dir.name == "quick" and a.opq_niter == 4
    full = bench.parse_args([])
    assert full.nb is None and full.nlist == 1024 and full.nprobe == 16 and full.rq_beam is None
    assert full.baselines == ["pq", "opq", "ivfpq", "rq"] and full.cosine_baselines == ["pq", "opq", "rq"]
    assert full.drq_variants == ["shared", "per_iteration", "per_iteration_full_d"] and full.cosine
    assert full.opq_niter is None
    # the full-d variant is the per-iteration form with the subspace switched off, nothing else
    form, cfg = bench.variant_config(full, "per_iteration_full_d")
    base_form, base_cfg = bench.variant_config(full, "per_iteration")
    assert form == base_form == "per_iteration" and cfg == {**(base_cfg or {}), "per_iteration_subspace_dims": None}
    assert bench.parse_args(["--drq-variants", "per-iteration", "--no-cosine"]).drq_variants == ["per_iteration"]
    assert not bench.parse_args(["--no-cosine"]).cosine
    with pytest.raises(SystemExit):
        bench.parse_args(["--ms", "8,128", "--iters", "64"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--baselines", "pq,hnsw"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--drq-variants", "shared,qinco"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--cosine-baselines", "ivfpq"])


@pytest.mark.parametrize("metric_name", ["METRIC_L2", "METRIC_INNER_PRODUCT"])
def test_faiss_parameter_counts(metric_name):
    """params column: PQ 256 * dp, OPQ + its d x dp rotation, RQ(m) m * 256 * d, IVFPQ + nlist * dp;
    the inner-product RQ stores no norm (code_size = m). Also the only run of the IP OPQ path."""
    faiss = pytest.importorskip("faiss")
    bench = load_bench()
    metric = getattr(faiss, metric_name)
    d, m, n = 20, 8, 600   # 8 does not divide 20: PQ and OPQ pad to 24 dims
    x = np.random.default_rng(1).standard_normal((n, d)).astype(np.float32)
    args = bench.parse_args(["--quick", "--nlist", "4", "--ms", "8"])
    faiss.omp_set_num_threads(1)
    expected = {"pq": 256 * 24, "opq": 256 * 24 + d * 24, "ivfpq": 256 * 24 + 4 * 24, "rq": m * 256 * d}
    for name, want in expected.items():
        index, _, _, _ = bench.build_faiss(name, d, m, args, metric)
        index.train(x)
        assert bench.faiss_num_parameters(index) == want, name
        assert bench.model_mb(want) == pytest.approx(4 * want / 1e6)
        if name == "rq":
            assert index.code_size == (m + 4 if metric == faiss.METRIC_L2 else m)
        else:
            assert bench.faiss_code_size(index) == m
        index.add(x[:50])
        _, I = index.search(x[:5], 3)
        assert (I >= 0).all()


def test_goal_summary_picks_the_best_pq_opq_rq():
    bench = load_bench()
    rows = [
        {"key": "pq", "method": "faiss PQ", "m": 8, "R@1": 0.30, "10-R@10": 0.50},
        {"key": "opq", "method": "faiss OPQ+PQ", "m": 8, "R@1": 0.35, "10-R@10": 0.49},
        {"key": "rq", "method": "faiss RQ", "m": 8, "R@1": 0.34, "10-R@10": 0.55},
        {"key": "ivfpq", "method": "faiss IVFPQ", "m": 8, "R@1": 0.90, "10-R@10": 0.90},  # not a goal baseline
        {"key": "drq_shared", "method": "x", "m": 8, "R@1": 0.385, "10-R@10": 0.50},
        {"key": "drq_per_iteration", "method": "y", "m": 8, "R@1": 0.40, "10-R@10": 0.60},
    ]
    (g,) = bench.goal_summary(rows, [8], ["shared", "per_iteration"])
    assert (g["best_R@1"], g["best_R@1_method"]) == (0.35, "faiss OPQ+PQ")
    assert (g["best_10-R@10"], g["best_10-R@10_method"]) == (0.55, "faiss RQ")
    assert g["shared"]["R@1_rel_pct"] == pytest.approx(10.0) and not g["shared"]["meets_goal"]
    assert g["per_iteration"]["meets_goal"]
    table = "\n".join(bench._goal_table([g], ["shared", "per_iteration"]))
    assert "0.350 (OPQ)" in table and "+10.0%" in table


@pytest.mark.skipif(not SYSTEM_DIR.is_dir(),
                    reason=f"{SYSTEM_DIR} not present (apt-get install -y dataset-fashion-mnist)")
def test_bench_quick_smoke(tmp_path):
    """The whole script on a tiny slice: every baseline and the drqindex part run and write their files."""
    pytest.importorskip("faiss")
    pytest.importorskip("matplotlib")
    pytest.importorskip("torch")
    env = dict(os.environ, DRQ_CACHE_DIR=str(tmp_path / "cache"), MPLBACKEND="Agg")
    cmd = [sys.executable, str(BENCH), "--quick", "--omp-passive", "--nb", "2000", "--nq", "200", "--ms", "4,8", "--iters", "8",
           "--nlist", "16", "--repeats", "1", "--threads", "2", "--out-dir", str(tmp_path / "out"),
           "--opq-niter", "1", "--cosine-nb", "1000", "--cosine-baselines", "pq,rq",  # OPQ with IP: see above
           "--drq-config", json.dumps({"init_iters": 1, "kmeans_iters": 3, "patience": 1})]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = tmp_path / "out"
    for name in ("fashion_mnist.md", "fashion_mnist.json", "fashion_mnist_recall.png"):
        assert (out / name).is_file(), name
    res = json.loads((out / "fashion_mnist.json").read_text())
    # per_iteration runs where IndexDRQ has the codebooks= keyword; otherwise it is reported as skipped
    skipped = res["meta"].get("drq_skipped", {})
    variants = ["shared"] + [v for v in ("per_iteration", "per_iteration_full_d") if v not in skipped]
    drq = tuple(f"drq_{v}" for v in variants)
    keys = {(r["key"], r["m"]) for r in res["results"]}
    assert keys == {(k, m) for k in drq + ("pq", "opq", "ivfpq", "rq") for m in (4, 8)}
    cos_keys = {(r["key"], r["m"]) for r in res["cosine_results"]}
    assert cos_keys == {(k, m) for k in drq + ("pq", "rq") for m in (4, 8)}
    assert not (out / "fashion_mnist.partial.json").exists()
    for r in res["results"] + res["cosine_results"]:
        assert 0.0 <= r["R@1"] <= r["1-R@100"] <= 1.0 and r["qps"] > 0
        assert r["train_s"] > 0  # RQ's per-length times are parsed from faiss's log: never NaN
        assert r["code_size"] >= r["m"] and r["params"] > 0 and r["model_mb"] > 0
    for r in res["cosine_results"]:
        assert r["bytes_per_vector"] == r["m"]  # inner product: no norm, neither drqindex nor RQ
    assert res["meta"]["quick"] and res["meta"]["threads"] == 2 and res["meta"]["nb"] == 2000
    assert res["meta"]["cosine"]["nb"] == 1000 and len(res["meta"]["goal"]) == 2
    assert res["meta"]["omp_wait_policy"] == "PASSIVE"
    md = (out / "fashion_mnist.md").read_text()
    assert "--quick" in md and "drqindex shared" in md and "faiss RQ" in md and "faiss OPQ+PQ" in md
    assert "## Cosine" in md and "### Goal" in md and "params" in md
