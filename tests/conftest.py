"""Shared fixtures: small deterministic quantizers built without torch, so most tests run in
milliseconds; the tests that exercise the trainer say so in their names."""
import numpy as np
import pytest

import drqindex


def make_quantizer(d: int, M: int, seed: int = 0, data: np.ndarray | None = None) -> drqindex.DRQQuantizer:
    """A shared codebook from k-means-like sampling of the data plus decaying scales: not a trained
    DRQ model, but a valid quantizer whose greedy codes reconstruct better with every iteration."""
    rng = np.random.default_rng(seed)
    if data is None:
        codebook = rng.standard_normal((256, d)).astype(np.float32)
    else:
        codebook = data[rng.choice(data.shape[0], 256, replace=False)].astype(np.float32)
        codebook -= codebook.mean(0)
    scales = (0.8 ** np.arange(M)).astype(np.float32)
    return drqindex.DRQQuantizer(codebook, scales)


def make_index(d=24, M=8, n=1000, metric=drqindex.METRIC_L2, seed=0):
    rng = np.random.default_rng(seed)
    xb = rng.standard_normal((n, d)).astype(np.float32)
    index = drqindex.IndexDRQ(d, iters=M, metric=metric)
    index.set_quantizer(make_quantizer(d, M, seed))
    index.add(xb)
    return index, xb


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def load_benchmark(name: str):
    """benchmarks/<name>.py imported as a module (its folder on sys.path for its own imports)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
