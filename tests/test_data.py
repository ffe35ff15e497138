"""drqindex.data: idx parsing, Fashion-MNIST loading, the ground-truth cache, recall helpers."""
import gzip
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from drqindex.data import (
    FashionMNIST,
    ground_truth,
    k_recall_at_k,
    load_fashion_mnist,
    read_idx,
    recall_at,
)
from drqindex.data import fashion_mnist as fm

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


# ------------------------------------------------------------------------------------------
# helpers: write small idx files ourselves

def idx_bytes(arr: np.ndarray, type_byte: int = 0x08) -> bytes:
    arr = np.asarray(arr)
    header = struct.pack(">BBBB", 0, 0, type_byte, arr.ndim) + b"".join(struct.pack(">I", s) for s in arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write(path: Path, payload: bytes, gz: bool):
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def make_dataset_dir(tmp_path: Path, nb=12, nq=5, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    xb = rng.integers(0, 256, size=(nb, 28, 28), dtype=np.uint8)
    xq = rng.integers(0, 256, size=(nq, 28, 28), dtype=np.uint8)
    yb = rng.integers(0, 10, size=nb, dtype=np.uint8)
    yq = rng.integers(0, 10, size=nq, dtype=np.uint8)
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(xb), gz)
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(yb), gz)
    write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(xq), gz)
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(yq), gz)
    return xb, xq, yb, yq


# ------------------------------------------------------------------------------------------
# idx parsing

@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_roundtrip(tmp_path, gz):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = write(tmp_path / "a-idx3-ubyte", idx_bytes(a), gz)
    b = read_idx(p, expected_magic=0x00000803)
    assert b.shape == (2, 3, 4) and b.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    b[0, 0, 0] = 7  # a writable copy, not a view on the file buffer


def test_read_idx_other_dtypes(tmp_path):
    a = np.array([[1, -2, 300000], [4, 5, -6]], dtype=np.int32)
    p = write(tmp_path / "ints-idx2", idx_bytes(a, 0x0C), gz=False)
    b = read_idx(p)
    assert b.dtype == np.dtype(np.int32) and b.dtype.isnative
    np.testing.assert_array_equal(a, b)
    f = np.array([1.5, -2.25], dtype=np.float32)
    p = write(tmp_path / "floats-idx1", idx_bytes(f, 0x0D), gz=True)
    np.testing.assert_array_equal(read_idx(p), f)


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_truncated_data(tmp_path, gz):
    a = np.zeros((4, 28, 28), np.uint8)
    p = write(tmp_path / "t-images-idx3-ubyte", idx_bytes(a)[:-10], gz)
    with pytest.raises(ValueError, match=r"t-images-idx3-ubyte.*truncated.*\(4, 28, 28\)"):
        read_idx(p, expected_magic=0x803)


def test_read_idx_trailing_bytes(tmp_path):
    p = write(tmp_path / "x-idx1-ubyte", idx_bytes(np.zeros(3, np.uint8)) + b"\0\0", gz=False)
    with pytest.raises(ValueError, match="trailing bytes"):
        read_idx(p)


def test_read_idx_truncated_header(tmp_path):
    p = write(tmp_path / "h-idx3-ubyte", idx_bytes(np.zeros((2, 2, 2), np.uint8))[:9], gz=False)
    with pytest.raises(ValueError, match="truncated header"):
        read_idx(p)
    p = write(tmp_path / "tiny", b"\0\0", gz=False)
    with pytest.raises(ValueError, match="too short"):
        read_idx(p)


def test_read_idx_bad_magic(tmp_path):
    labels = write(tmp_path / "l-idx1-ubyte", idx_bytes(np.zeros(3, np.uint8)), gz=False)
    with pytest.raises(ValueError, match=r"l-idx1-ubyte.*0x00000801, expected 0x00000803"):
        read_idx(labels, expected_magic=0x00000803)
    junk = write(tmp_path / "junk", b"hello world, not an idx file", gz=False)
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(junk)


def test_read_idx_corrupt_gzip(tmp_path):
    payload = gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8) % 7))
    p = tmp_path / "c-idx1-ubyte.gz"
    p.write_bytes(payload[: len(payload) // 2])  # truncated gzip stream
    with pytest.raises(ValueError, match=r"c-idx1-ubyte\.gz.*gzip"):
        read_idx(p)
    bad = bytearray(payload)
    bad[20:30] = b"\xff" * 10  # garbled deflate data / crc mismatch
    p.write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="gzip"):
        read_idx(p)
    p2 = tmp_path / "n-idx1-ubyte.gz"  # .gz name, plain contents
    p2.write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(ValueError, match="gzip"):
        read_idx(p2)


# ------------------------------------------------------------------------------------------
# loading

@pytest.mark.parametrize("gz", [True, False])
def test_load_small_dataset(tmp_path, gz):
    xb, xq, yb, yq = make_dataset_dir(tmp_path, gz=gz)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "not the official 60000 / 10000 counts"
        ds = load_fashion_mnist(tmp_path)
    assert isinstance(ds, FashionMNIST)
    assert ds.xb.shape == (12, 784) and ds.xq.shape == (5, 784)
    assert ds.xb.dtype == np.float32 and ds.xq.dtype == np.float32
    assert ds.xb.flags.c_contiguous and ds.xq.flags.c_contiguous
    assert ds.yb.dtype == np.int64 and ds.yq.dtype == np.int64
    np.testing.assert_array_equal(ds.xb, xb.reshape(12, -1).astype(np.float32))
    np.testing.assert_array_equal(ds.xq, xq.reshape(5, -1).astype(np.float32))
    np.testing.assert_array_equal(ds.yb, yb)
    np.testing.assert_array_equal(ds.yq, yq)
    assert ds.d == 784 and ds.nb == 12 and ds.nq == 5
    sub = ds.subsample(nb=4, nq=2)
    assert sub.xb.shape == (4, 784) and sub.xq.shape == (2, 784) and sub.yb.shape == (4,)


def test_load_warns_on_unofficial_counts(tmp_path):
    make_dataset_dir(tmp_path)
    with pytest.warns(UserWarning, match="official"):
        load_fashion_mnist(tmp_path)


def test_load_env_var(tmp_path, monkeypatch):
    make_dataset_dir(tmp_path)
    monkeypatch.setenv("DRQ_FASHION_MNIST_DIR", str(tmp_path))
    assert fm.default_data_dirs()[0] == str(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = load_fashion_mnist()
    assert ds.path == str(tmp_path) and ds.nb == 12


def test_load_missing_files(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist") as ei:
        load_fashion_mnist(tmp_path / "nowhere")
    assert "path=" in str(ei.value)
    make_dataset_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_fashion_mnist(tmp_path)
    # default search path: neither the env dir nor the system dir
    monkeypatch.setenv("DRQ_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setattr(fm, "SYSTEM_DIR", str(tmp_path / "also-nowhere"))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_fashion_mnist()


def test_load_inconsistent_counts(tmp_path):
    make_dataset_dir(tmp_path)
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.zeros(11, np.uint8)), gz=True)
    with pytest.raises(ValueError, match="12 images but .* 11 labels"):
        load_fashion_mnist(tmp_path)


def test_load_swapped_files(tmp_path):
    make_dataset_dir(tmp_path)
    labels = (tmp_path / "train-labels-idx1-ubyte.gz").read_bytes()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(labels)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz.*expected 0x00000803"):
        load_fashion_mnist(tmp_path)


def test_load_truncated_file(tmp_path):
    make_dataset_dir(tmp_path, gz=False)
    p = tmp_path / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.*truncated"):
        load_fashion_mnist(tmp_path)


def test_load_wrong_image_size(tmp_path):
    make_dataset_dir(tmp_path)
    write(tmp_path / "t10k-images-idx3-ubyte", idx_bytes(np.zeros((5, 32, 32), np.uint8)), gz=True)
    with pytest.raises(ValueError, match=r"\(28, 28\)"):
        load_fashion_mnist(tmp_path)


# ------------------------------------------------------------------------------------------
# ground truth and its cache

def brute_force(xb, xq, k):
    d = ((xq[:, None, :].astype(np.float64) - xb[None, :, :]) ** 2).sum(-1)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def random_data(nb=200, nq=20, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((nb, d)).astype(np.float32), rng.standard_normal((nq, d)).astype(np.float32)


def test_ground_truth_exact(tmp_path):
    pytest.importorskip("faiss")
    xb, xq = random_data()
    gt = ground_truth(xb, xq, k=10, cache_dir=tmp_path)
    assert gt.shape == (20, 10) and gt.dtype == np.int64
    np.testing.assert_array_equal(gt, brute_force(xb, xq, 10))
    np.testing.assert_array_equal(ground_truth(xb, xq, k=10, use_cache=False), gt)


def test_ground_truth_cache_hit(tmp_path, monkeypatch):
    pytest.importorskip("faiss")
    xb, xq = random_data()
    gt = ground_truth(xb, xq, k=5, cache_dir=tmp_path)
    files = list(tmp_path.glob("gt_*.npy"))
    assert len(files) == 1
    assert not list(tmp_path.glob("*.tmp")), "temp file left behind"
    calls = []
    monkeypatch.setattr(fm, "_exact_knn", lambda *a: calls.append(a) or np.zeros((1, 1), np.int64))
    gt2 = ground_truth(xb, xq, k=5, cache_dir=tmp_path)
    assert calls == [], "the cache should have been read, not recomputed"
    np.testing.assert_array_equal(gt, gt2)


def test_ground_truth_cache_env(tmp_path, monkeypatch):
    pytest.importorskip("faiss")
    monkeypatch.setenv("DRQ_CACHE_DIR", str(tmp_path / "envcache"))
    xb, xq = random_data(nb=50, nq=3)
    ground_truth(xb, xq, k=4)
    assert len(list((tmp_path / "envcache").glob("gt_*.npy"))) == 1


def test_ground_truth_cache_invalidation(tmp_path):
    pytest.importorskip("faiss")
    xb, xq = random_data()
    g_full = ground_truth(xb, xq, k=5, cache_dir=tmp_path)
    # a different slice, a different k, a changed value: each gets its own entry, none reads a stale one
    g_slice = ground_truth(xb[:100], xq, k=5, cache_dir=tmp_path)
    np.testing.assert_array_equal(g_slice, brute_force(xb[:100], xq, 5))
    g_k = ground_truth(xb, xq, k=7, cache_dir=tmp_path)
    assert g_k.shape == (20, 7)
    np.testing.assert_array_equal(g_k[:, :5], g_full)
    xb2 = xb.copy()
    xb2[g_full[0, 0]] += 100.0  # move query 0's nearest neighbour far away
    g_mod = ground_truth(xb2, xq, k=5, cache_dir=tmp_path)
    np.testing.assert_array_equal(g_mod, brute_force(xb2, xq, 5))
    assert g_mod[0, 0] != g_full[0, 0]
    xq2 = xq[:10]
    np.testing.assert_array_equal(ground_truth(xb, xq2, k=5, cache_dir=tmp_path), g_full[:10])
    assert len(list(tmp_path.glob("gt_*.npy"))) == 5


@pytest.mark.parametrize("damage", ["garbage", "truncate", "wrong_shape", "out_of_range", "empty"])
def test_ground_truth_corrupt_cache_recomputed(tmp_path, damage):
    pytest.importorskip("faiss")
    xb, xq = random_data()
    gt = ground_truth(xb, xq, k=5, cache_dir=tmp_path)
    (f,) = tmp_path.glob("gt_*.npy")
    if damage == "garbage":
        f.write_bytes(b"not a numpy file at all")
    elif damage == "truncate":
        f.write_bytes(f.read_bytes()[:200])
    elif damage == "wrong_shape":
        np.save(f, gt[:, :3])
    elif damage == "out_of_range":
        np.save(f, gt + 10_000)
    else:
        f.write_bytes(b"")
    with pytest.warns(UserWarning, match="recomputing"):
        gt2 = ground_truth(xb, xq, k=5, cache_dir=tmp_path)
    np.testing.assert_array_equal(gt2, gt)
    # ... and the cache was repaired
    np.testing.assert_array_equal(np.load(f), gt)


def test_ground_truth_unwritable_cache_warns(tmp_path):
    pytest.importorskip("faiss")
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    xb, xq = random_data(nb=30, nq=2)
    with pytest.warns(UserWarning, match="could not write"):
        gt = ground_truth(xb, xq, k=3, cache_dir=blocker / "sub")
    assert gt.shape == (2, 3)


def test_ground_truth_bad_args(tmp_path):
    xb, xq = random_data(nb=10, nq=2, d=4)
    with pytest.raises(ValueError, match="k <= nb"):
        ground_truth(xb, xq, k=11, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="same d"):
        ground_truth(xb, xq[:, :3], k=2, cache_dir=tmp_path)


def test_ground_truth_key_sensitivity():
    xb, xq = random_data(nb=20, nq=3, d=4)
    k0 = fm.ground_truth_key(xb, xq, 5)
    assert fm.ground_truth_key(xb.copy(), xq.copy(), 5) == k0
    assert fm.ground_truth_key(xb, xq, 6) != k0
    assert fm.ground_truth_key(xb[:19], xq, 5) != k0
    assert fm.ground_truth_key(xb.reshape(40, 2), xq.reshape(6, 2), 5) != k0  # same bytes, other shape
    assert fm.ground_truth_key(xq, xb, 5) != k0


# ------------------------------------------------------------------------------------------
# recall helpers

def test_recall_at():
    gt = np.array([[3, 1, 2], [0, 4, 5], [7, 8, 9], [1, 2, 3]])
    I = np.array([[3, 9, 9], [4, 0, 9], [9, 9, 7], [-1, -1, -1]])
    assert recall_at(I, gt, 1) == 0.25
    assert recall_at(I, gt, 2) == 0.5
    assert recall_at(I, gt, 3) == 0.75
    assert recall_at(gt, gt, 1) == 1.0


def test_k_recall_at_k():
    gt = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    I = np.array([[1, 0, 9, 2], [7, 7, 7, -1]])
    # row 0: first 2 = {1,0} vs {0,1} -> 2/2; row 1: {7} vs {4,5} -> 0
    assert k_recall_at_k(I, gt, 2) == pytest.approx(0.5)
    # k = 4: row 0 {1,0,9,2} ∩ {0,1,2,3} = 3; row 1: {7} ∩ {4..7} = 1 (duplicates count once) -> 4/8
    assert k_recall_at_k(I, gt, 4) == pytest.approx(0.5)
    assert k_recall_at_k(gt, gt, 4) == 1.0


def test_k_recall_chunked_matches_loop():
    rng = np.random.default_rng(1)
    nq, k = 5000, 10  # more than one chunk
    gt = np.stack([rng.permutation(100)[:k] for _ in range(nq)])
    I = rng.integers(0, 100, size=(nq, 12))
    expect = np.mean([len(set(I[i, :k]) & set(gt[i, :k])) / k for i in range(nq)])
    assert k_recall_at_k(I, gt, k) == pytest.approx(expect)


def test_recall_bad_args():
    gt = np.zeros((3, 5), np.int64)
    with pytest.raises(ValueError, match="fewer than r"):
        recall_at(np.zeros((3, 2), np.int64), gt, 3)
    with pytest.raises(ValueError, match="queries"):
        recall_at(np.zeros((2, 5), np.int64), gt, 1)
    with pytest.raises(ValueError, match="need at least"):
        k_recall_at_k(np.zeros((3, 10), np.int64), gt, 10)
    with pytest.raises(TypeError, match="integer"):
        recall_at(np.zeros((3, 5), np.float32), gt, 1)
    with pytest.raises(ValueError, match="r >= 1"):
        recall_at(gt, gt, 0)


# ------------------------------------------------------------------------------------------
# the real data

@pytest.mark.skipif(not SYSTEM_DIR.is_dir(),
                    reason=f"{SYSTEM_DIR} not present (apt-get install -y dataset-fashion-mnist)")
def test_real_fashion_mnist():
    ds = load_fashion_mnist(SYSTEM_DIR)
    assert ds.xb.shape == (60000, 784) and ds.xq.shape == (10000, 784)
    assert ds.xb.dtype == np.float32 and ds.xq.dtype == np.float32
    assert ds.xb.flags.c_contiguous and ds.xq.flags.c_contiguous
    assert ds.yb.dtype == np.int64 and ds.yq.dtype == np.int64
    for x in (ds.xb, ds.xq):
        assert x.min() == 0.0 and x.max() == 255.0
        assert np.array_equal(x, np.round(x))  # raw integer pixel values
    np.testing.assert_array_equal(np.bincount(ds.yb, minlength=10), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(ds.yq, minlength=10), [1000] * 10)
    # a fixed fingerprint of the files (mean pixel of the standard release)
    assert 72.0 < ds.xb.mean() < 73.5 and 72.0 < ds.xq.mean() < 74.0
