"""The torch DRQ trainer (drqindex.train.drq): small synthetic problems, K = 16, a few seconds."""
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from drqindex.train import drq  # noqa: E402
from drqindex.train.drq import DRQTrainConfig, encode_greedy_torch, train_drq  # noqa: E402


def _data(n=2000, d=24, seed=0):
    rng = np.random.default_rng(seed)
    # anisotropic Gaussian mixture, so that training has structure to find
    centers = rng.standard_normal((8, d)) * 3.0
    x = centers[rng.integers(0, 8, n)] + rng.standard_normal((n, d)) * rng.uniform(0.3, 1.5, d)
    return x.astype(np.float32)


def _cfg(**kw):
    base = dict(iters=8, K=16, epochs=3, batch_size=128, num_threads=1, init_iters=2, init_sample=1000, patience=10,
                kmeans_iters=8, seed=0)
    base.update(kw)
    return DRQTrainConfig(**base)


def _prefix_mse(x, C, s):
    codes = encode_greedy_torch(x, C, s)
    rec = np.zeros_like(x, dtype=np.float64)
    out = []
    for m in range(codes.shape[1]):
        rec += s[m] * C[codes[:, m]].astype(np.float64)
        out.append(((x - rec) ** 2).sum(1).mean())
    return np.array(out)


@pytest.fixture(scope="module")
def x():
    return _data()


@pytest.fixture(scope="module")
def trained(x):
    return train_drq(x, _cfg(epochs=4, lr=3e-2))


def test_outputs_shapes_and_types(trained, x):
    C, s, info = trained
    assert C.dtype == np.float32 and C.shape == (16, x.shape[1]) and C.flags.c_contiguous
    assert s.dtype == np.float32 and s.shape == (8,)
    assert s[0] == 1.0 and np.all(s > 0)
    assert np.isfinite(C).all() and np.isfinite(s).all()
    for key in ("history", "train_loss", "val_loss", "val_mse_prefix", "seconds", "epochs_run", "stop_reason",
                "best_epoch"):
        assert key in info
    assert info["stop_reason"] == "max_epochs" and info["epochs_run"] == 4
    assert sorted(info["val_mse_prefix"]) == [1, 2, 4, 8]


def test_same_seed_same_model(x):
    cfg = _cfg(epochs=2, lr=3e-2)
    C1, s1, _ = train_drq(x, cfg)
    C2, s2, _ = train_drq(x, cfg)
    np.testing.assert_array_equal(C1, C2)
    np.testing.assert_array_equal(s1, s2)
    C3, _, _ = train_drq(x, _cfg(epochs=2, lr=3e-2, seed=1))
    assert not np.array_equal(C1, C3)


def test_loss_decreases(trained):
    _, _, info = trained
    assert info["train_loss"][-1] < info["train_loss"][0]
    assert min(info["val_loss"]) < info["val_loss_init"]
    # the returned (best) model beats the initialisation at the longest prefix on held-out data
    assert info["val_mse_prefix"][8] < info["val_mse_prefix_init"][8]


def test_prefix_mse_decreases_with_m(trained, x):
    C, s, info = trained
    mse = _prefix_mse(x, C, s)
    assert np.all(np.diff(mse) <= 1e-6 * mse[0]), mse
    assert mse[-1] < 0.75 * mse[0]
    val = [info["val_mse_prefix"][m] for m in sorted(info["val_mse_prefix"])]
    assert np.all(np.diff(val) <= 0), val


def _numpy_greedy(x, C, s):
    x = x.astype(np.float64)
    C = C.astype(np.float64)
    r = x.copy()
    codes = np.empty((x.shape[0], len(s)), np.int64)
    for m, sm in enumerate(np.asarray(s, np.float64)):
        dist = ((r[:, None, :] - sm * C[None, :, :]) ** 2).sum(-1)   # plain broadcast, no Gram trick
        b = dist.argmin(1)
        codes[:, m] = b
        r -= sm * C[b]
    return codes


def test_encode_greedy_torch_matches_numpy():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 12)).astype(np.float32)
    C = rng.standard_normal((16, 12)).astype(np.float32)
    s = (0.7 ** np.arange(6)).astype(np.float32)
    codes = encode_greedy_torch(x, C, s)
    assert codes.dtype == np.int64 and codes.shape == (300, 6)
    np.testing.assert_array_equal(codes, _numpy_greedy(x, C, s))


def test_trainer_hard_pass_matches_reference(trained, x):
    """The Gram-form greedy pass used inside training picks the same codes as the reference."""
    C, s, _ = trained
    codes, _ = drq._hard_pass(torch.from_numpy(x).double(), torch.from_numpy(C).double(),
                              torch.from_numpy(s).double())
    np.testing.assert_array_equal(codes.numpy(), encode_greedy_torch(x, C, s))


@pytest.mark.parametrize("mu,nu,soft", [(0.0, 0.0, "cumulative"), (1.0, 0.1, "cumulative"), (0.7, 0.3, "local")])
def test_batch_loss_matches_direct_formula(mu, nu, soft):
    """The Gram-form loss equals the loss written with explicit d-dimensional vectors."""
    g = torch.Generator().manual_seed(0)
    B, d, K, M = 9, 10, 12, 5
    X = torch.randn(B, d, generator=g, dtype=torch.float64)
    C = torch.randn(K, d, generator=g, dtype=torch.float64) * 0.5
    s = torch.tensor([1.0, 0.7, 0.5, 0.4, 0.3], dtype=torch.float64)
    w = torch.rand(M, generator=g, dtype=torch.float64)
    T = 0.3
    codes, _ = drq._hard_pass(X, C, s)
    loss, hard = drq._batch_loss(X, C, s, codes, w, T, mu, nu, soft, "residual")
    xhat = torch.zeros_like(X)
    xt = torch.zeros_like(X)
    r = X.clone()
    tot = torch.zeros(B, dtype=torch.float64)
    for m in range(M):
        dist = ((r[:, None, :] - s[m] * C[None]) ** 2).sum(2)
        p = torch.softmax(-dist / (T * (r * r).sum(1, keepdim=True)), 1)
        q = s[m] * p @ C
        xt = (xt + q) if soft == "cumulative" else (xhat + q)
        xhat = xhat + s[m] * C[codes[:, m]]
        r = X - xhat
        torch.testing.assert_close(hard[:, m], (r * r).sum(1))
        tot += w[m] * (((X - xhat) ** 2).sum(1) + mu * ((X - xt) ** 2).sum(1) + nu * ((xt - xhat) ** 2).sum(1))
    torch.testing.assert_close(loss, tot.mean())


def test_early_stopping_restores_best(x):
    # min_delta = 0.9 asks for a 90% improvement per epoch: never met, so training stops after
    # `patience` epochs and the best model is the initialisation itself.
    cfg = _cfg(epochs=10, patience=2, min_delta=0.9)
    C, s, info = train_drq(x, cfg)
    assert info["stop_reason"] == "early_stopping"
    assert info["epochs_run"] == 2 and info["best_epoch"] == 0
    C0, s0, _ = train_drq(x, _cfg(epochs=0))
    np.testing.assert_array_equal(C, C0)
    np.testing.assert_array_equal(s, s0)


def test_keyboard_interrupt_returns_best_so_far(x, monkeypatch):
    real = drq._run_epoch
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(drq, "_run_epoch", flaky)
    C, s, info = train_drq(x, _cfg(epochs=5, lr=3e-2))
    assert info["stop_reason"] == "interrupted"
    assert info["epochs_run"] == 1
    assert C.shape == (16, x.shape[1]) and np.isfinite(C).all() and s.shape == (8,)


def test_time_limit(x):
    _, _, info = train_drq(x, _cfg(epochs=50, max_seconds=1e-3))
    assert info["stop_reason"] == "time_limit" and info["epochs_run"] == 1


def test_no_validation_split(x):
    C, s, info = train_drq(x, _cfg(epochs=1, val_fraction=0.0))
    assert info["n_val"] == 0 and info["epochs_run"] == 1 and "val_mse_prefix" not in info


def test_soft_terms_train(x):
    """The faithful DRQ loss (soft + joint terms, annealed temperature) runs and improves too."""
    for soft, scaling in (("cumulative", "residual"), ("local", "residual"), ("local", "gain"),
                          ("cumulative", "data")):
        _, _, info = train_drq(x, _cfg(epochs=2, lr=3e-2, mu=1.0, nu=0.1, soft=soft, temperature=0.1,
                                       temperature_final=0.02, temperature_scaling=scaling))
        assert min(info["val_loss"]) < info["val_loss_init"]
        assert info["history"][-1]["temperature"] == pytest.approx(0.02)


@pytest.mark.parametrize("bad,what", [
    (np.zeros((100, 8), np.float64) + 1, "dtype float32"),
    (np.ones((100, 8), np.uint8), "dtype float32"),
    (np.ones(100, np.float32), "2-D"),
    (np.ones((10, 10, 10), np.float32), "2-D"),
    ([[1.0, 2.0]], "numpy"),
    (np.ones((10, 8), np.float32), "at least K"),
])
def test_bad_input_raises(bad, what):
    with pytest.raises(ValueError, match="expected") as e:
        train_drq(bad, _cfg())
    assert what in str(e.value) and "received" in str(e.value)


def test_nan_input_raises(x):
    y = x.copy()
    y[5, 3] = np.nan
    with pytest.raises(ValueError, match=r"expected finite values, received nan at row 5, column 3"):
        train_drq(y, _cfg())
    y[5, 3] = np.inf
    with pytest.raises(ValueError, match="finite"):
        train_drq(y, _cfg())


@pytest.mark.parametrize("kw,msg", [
    (dict(iters=0), r"iters: expected 1\.\.4096, received 0"),
    (dict(K=1), r"K: expected 2\.\.256, received 1"),
    (dict(K=257), r"K: expected 2\.\.256, received 257"),
    (dict(iters=2.0), r"iters: expected an int, received float"),
    (dict(lr=0.0), r"lr: expected a value > 0"),
    (dict(temperature=-1.0), r"temperature: expected a value > 0"),
    (dict(val_fraction=1.0), r"val_fraction: expected a value >= 0.0 and < 1.0"),
    (dict(soft="hard"), r"soft: expected one of"),
    (dict(prefix_weights=[1.0, 2.0]), r"prefix_weights: expected 8 finite"),
    (dict(per_iteration_kmeans="kmeans"), r"per_iteration_kmeans: expected 'pca_progressive' or 'progressive', "
                                          r"received 'kmeans'"),
    (dict(per_iteration_pca_dims=0), r"per_iteration_pca_dims: expected >= 1, received 0"),
    (dict(per_iteration_full_rounds=-1), r"per_iteration_full_rounds: expected >= 0, received -1"),
    (dict(per_iteration_full_rounds=1.5), r"per_iteration_full_rounds: expected an int, received float"),
])
def test_bad_config_raises(kw, msg):
    with pytest.raises(ValueError, match=msg):
        _cfg(**kw)


def test_config_mutated_after_creation_is_checked(x):
    cfg = _cfg()
    cfg.iters = 0
    with pytest.raises(ValueError, match="iters: expected"):
        train_drq(x, cfg)


def test_explicit_prefix_weights(x):
    w = np.zeros(8)
    w[[1, 3, 7]] = 1.0   # optimise only the 2-, 4- and 8-byte prefixes
    C, s, info = train_drq(x, _cfg(epochs=1, prefix_weights=w, init="kmeans"))
    np.testing.assert_allclose(info["prefix_weights"], w / 3)


def test_import_drqindex_does_not_import_torch():
    code = "import sys, drqindex, drqindex.train; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_train_package_exports_lazily():
    import drqindex.train as t
    assert t.train_drq is train_drq and t.DRQTrainConfig is DRQTrainConfig
    assert t.encode_greedy_torch is encode_greedy_torch
    assert set(t.__all__) == {"DRQTrainConfig", "encode_greedy_torch", "train_drq", "HashStudent", "HashTeacher"}
    with pytest.raises(AttributeError):
        t.no_such_name


def test_few_rows_shrink_the_validation_split():
    # 20 rows, K = 16: the held-out split may not take the training set below K vectors
    x = _data(n=20)
    C, s, info = train_drq(x, _cfg(epochs=1, init_sample=20))
    assert info["n_train"] >= 16 and info["n_train"] + info["n_val"] == 20
    assert np.isfinite(C).all() and np.isfinite(s).all()
