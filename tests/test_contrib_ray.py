"""drqindex.contrib.ray on a real local Ray cluster (ray.init(num_cpus=2)): sharded search equals one
IndexDRQ over the same data, the manifest is checked, killed actors and workers lose nothing.

Skipped only when the `ray` extra is not installed (`pip install drqindex[ray]`; `make test` installs it).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'drqindex[ray]')")

import drqindex  # noqa: E402
from drqindex.contrib import ray as drq_ray  # noqa: E402

from conftest import make_quantizer  # noqa: E402

D_DIM, M, N = 16, 6, 2000
_FLT_MAX = np.finfo(np.float32).max


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20,
             configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    xb = rng.standard_normal((N, D_DIM)).astype(np.float32)
    xq = rng.standard_normal((25, D_DIM)).astype(np.float32)
    return xb, xq


def trained(metric=drqindex.METRIC_L2):
    index = drqindex.IndexDRQ(D_DIM, iters=M, metric=metric)
    index.set_quantizer(make_quantizer(D_DIM, M, seed=3))
    return index


def reference(xb, metric=drqindex.METRIC_L2, ids=None):
    index = trained(metric)
    if ids is None:
        index.add(xb)
    else:
        index.add_with_ids(xb, ids)
    return index


def assert_same_search(sharded, ref, xq, iters_list=range(1, M + 1), ks=(1, 10)):
    for iters in iters_list:
        for k in ks:
            D, I = sharded.search(xq, k, iters=iters)
            D0, I0 = ref.search(xq, k, iters=iters)
            np.testing.assert_array_equal(I, I0, err_msg=f"iters={iters} k={k}")
            np.testing.assert_array_equal(D, D0, err_msg=f"iters={iters} k={k}")


def stat(path):
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns, st.st_size


# ------------------------------------------------------------------------------------------ pure merge
def test_merge_topk_orders_by_distance_then_id_and_pads():
    D1 = np.array([[1.0, 2.0, _FLT_MAX]], np.float32)
    I1 = np.array([[5, 9, -1]], np.int64)
    D2 = np.array([[1.0, 1.5]], np.float32)
    I2 = np.array([[3, 4]], np.int64)
    D, I = drq_ray.merge_topk([D1, D2], [I1, I2], 6, drqindex.METRIC_L2)
    assert I.tolist() == [[3, 5, 4, 9, -1, -1]]
    assert D[0, :4].tolist() == [1.0, 1.0, 1.5, 2.0] and (D[0, 4:] == _FLT_MAX).all()
    D, I = drq_ray.merge_topk([D1[:, :2], D2], [I1[:, :2], I2], 2, drqindex.METRIC_INNER_PRODUCT)
    assert I.tolist() == [[9, 4]] and D.tolist() == [[2.0, 1.5]]


def test_encode_batch_is_a_pure_function_of_the_quantizer_bytes(data):
    xb, _ = data
    index = trained()
    qbytes = drqindex.serialize_index(index).tobytes()  # what travels to the workers
    codes, norms = drq_ray.encode_batch(qbytes, xb[:300])
    np.testing.assert_array_equal(codes, index.sa_encode(xb[:300]))
    np.testing.assert_array_equal(norms, index.quantizer.encode(xb[:300])[1])


def test_import_drqindex_does_not_import_ray():
    code = "import sys, drqindex; assert 'ray' not in sys.modules, 'import drqindex imported ray'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ------------------------------------------------------------------------------------------ build + search
@pytest.mark.parametrize("metric", [drqindex.METRIC_L2, drqindex.METRIC_INNER_PRODUCT], ids=["L2", "IP"])
def test_sharded_search_equals_single_index(ray_cluster, data, tmp_path, metric):
    xb, xq = data
    with drq_ray.build(trained(metric), xb, num_shards=3, path=tmp_path / "idx") as sharded:
        assert sharded.ntotal == N and sharded.num_shards == 3 and sharded.metric_type == metric
        assert_same_search(sharded, reference(xb, metric), xq)
        # every shard file is an ordinary index file with global ids, contiguous ranges in input order
        ids = [drqindex.read_index(sharded.shard_path(s)).get_ids() for s in range(3)]
        np.testing.assert_array_equal(np.concatenate(ids), np.arange(N))


def test_padding_when_k_exceeds_ntotal(ray_cluster, data, tmp_path):
    xb, xq = data
    ids = np.array([100, 7, 42, 9, 5], np.int64)
    with drq_ray.build(trained(), xb[:5], num_shards=2, path=tmp_path / "idx", ids=ids) as sharded:
        D, I = sharded.search(xq, 8)
        D0, I0 = reference(xb[:5], ids=ids).search(xq, 8)
        np.testing.assert_array_equal(I, I0)
        np.testing.assert_array_equal(D, D0)
        assert (I[:, 5:] == -1).all() and (D[:, 5:] == _FLT_MAX).all()


def test_dataset_input_with_id_column(ray_cluster, data, tmp_path):
    import pandas as pd
    import ray.data

    xb, xq = data
    ids = np.arange(N, dtype=np.int64) * 10 + 7
    ds = ray.data.from_pandas(pd.DataFrame({"id": ids, "emb": list(xb)}))
    path = tmp_path / "idx"
    with drq_ray.build(trained(), ds, num_shards=3, path=path) as sharded:
        assert sharded.manifest["assignment"]["kind"] == "id_hash"
        assert sorted(e["ntotal"] for e in sharded.manifest["shards"]) != [0, 0, N]  # spread over shards
        assert_same_search(sharded, reference(xb, ids=ids), xq, iters_list=(1, 3, M))
    # a deleted shard file is rebuilt alone; the others are not rewritten
    victim = os.path.join(path, sharded.manifest["shards"][1]["file"])
    keep = {s: stat(sharded.shard_path(s)) for s in (0, 2)}
    os.remove(victim)
    rebuilt = drq_ray.build(trained(), ds, num_shards=3, path=path)
    assert {s: stat(rebuilt.shard_path(s)) for s in (0, 2)} == keep
    # rows are sorted by id inside a shard: the rebuilt file is byte-identical whatever order Ray used
    assert rebuilt.manifest["shards"] == sharded.manifest["shards"]


def test_load_reopens_and_manifest_lists_shards(ray_cluster, data, tmp_path):
    xb, xq = data
    path = tmp_path / "idx"
    index = trained()
    drq_ray.build(index, xb, num_shards=2, path=path).close()
    manifest = json.loads((path / drq_ray.MANIFEST_NAME).read_text())
    assert manifest["status"] == "complete" and manifest["ntotal"] == N and manifest["d"] == D_DIM
    assert manifest["M"] == M and manifest["metric"] == "L2"
    assert manifest["quantizer_sha256"] == drq_ray.quantizer_checksum(index.quantizer)
    assert [e["ntotal"] for e in manifest["shards"]] == [N // 2, N // 2]
    for e in manifest["shards"]:
        assert os.path.getsize(path / e["file"]) == e["bytes"]
    assert not [f for f in os.listdir(path) if ".tmp" in f]  # no temporary file left behind
    with drq_ray.load(path, threads_per_actor=1) as sharded:
        assert_same_search(sharded, reference(xb), xq, iters_list=(2, M))
        np.testing.assert_array_equal(sharded.quantizer.codebook, index.quantizer.codebook)


def test_checksum_mismatch_refused(ray_cluster, data, tmp_path):
    xb, xq = data
    path = tmp_path / "idx"
    drq_ray.build(trained(), xb, num_shards=2, path=path).close()
    mpath = path / drq_ray.MANIFEST_NAME
    good = mpath.read_text()

    manifest = json.loads(good)
    manifest["quantizer_sha256"] = "0" * 64
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="quantizer's checksum differs"):
        drq_ray.load(path)

    # a shard whose bytes no longer match the manifest's sha256 is refused by its actor
    manifest = json.loads(good)
    manifest["shards"][1]["sha256"] = "f" * 64
    mpath.write_text(json.dumps(manifest))
    with drq_ray.load(path) as sharded, pytest.raises(drq_ray.ShardLoadError, match="sha256 differs"):
        sharded.search(xq, 5)

    # a shard built with another quantizer is refused even with a consistent manifest entry
    other = drqindex.IndexDRQ(D_DIM, iters=M)
    other.set_quantizer(make_quantizer(D_DIM, M, seed=99))
    other.add_with_ids(xb[N // 2:], np.arange(N // 2, N))
    manifest = json.loads(good)
    shard1 = path / manifest["shards"][1]["file"]
    drqindex.write_index(other, str(shard1))
    sha, size = drq_ray._file_sha256(str(shard1))
    manifest["shards"][1].update(sha256=sha, bytes=size)
    mpath.write_text(json.dumps(manifest))
    with drq_ray.load(path) as sharded, pytest.raises(drq_ray.ShardLoadError, match="quantizer's sha256 differs"):
        sharded.search(xq, 5)


# ------------------------------------------------------------------------------------------ failures
def test_killed_actor_search_retries_on_a_fresh_actor(ray_cluster, data, tmp_path):
    xb, xq = data
    ref = reference(xb)
    D0, I0 = ref.search(xq, 10, iters=4)
    with drq_ray.build(trained(), xb, num_shards=3, path=tmp_path / "idx") as sharded:
        sharded.start()
        old_pid = ray.get(sharded._actors[1].info.remote())["pid"]
        ray.kill(sharded._actors[1])  # killed between searches
        D, I = sharded.search(xq, 10, iters=4)
        np.testing.assert_array_equal(I, I0)
        np.testing.assert_array_equal(D, D0)
        assert sharded.restarts == 1
        assert ray.get(sharded._actors[1].info.remote())["pid"] != old_pid

        ray.get(sharded._actors[2]._arm_fault.remote())  # its process exits in the middle of the next search
        D, I = sharded.search(xq, 10, iters=4)
        np.testing.assert_array_equal(I, I0)
        np.testing.assert_array_equal(D, D0)
        assert sharded.restarts == 2

        ray.get(sharded._actors[0]._arm_fault.remote("hang"))  # never answers: replaced after timeout_s
        D, I = sharded.search(xq, 10, iters=4, timeout_s=2)
        np.testing.assert_array_equal(I, I0)
        np.testing.assert_array_equal(D, D0)
        assert sharded.restarts == 3


def test_build_worker_killed_is_retried(ray_cluster, data, tmp_path):
    xb, xq = data
    marker = tmp_path / "died-once"
    fault = {"shard": 1, "mode": "exit", "marker": str(marker)}  # the worker process exits, once
    with drq_ray.build(trained(), xb, num_shards=3, path=tmp_path / "idx", _fault=fault) as sharded:
        assert marker.exists()
        assert_same_search(sharded, reference(xb), xq, iters_list=(M,), ks=(10,))
        ids = np.concatenate([drqindex.read_index(sharded.shard_path(s)).get_ids() for s in range(3)])
        np.testing.assert_array_equal(ids, np.arange(N))  # no vector lost or duplicated


def test_interrupted_build_resumes_only_missing_shards(ray_cluster, data, tmp_path):
    xb, xq = data
    path = tmp_path / "idx"
    fault = {"shard": 1, "mode": "exit"}  # its worker process dies on every attempt: the build gives up on shard 1
    with pytest.raises(drq_ray.ShardBuildError) as err:
        drq_ray.build(trained(), xb, num_shards=3, path=path, max_task_retries=1, _fault=fault)
    assert set(err.value.failed) == {1}
    manifest = json.loads((path / drq_ray.MANIFEST_NAME).read_text())
    assert manifest["status"] == "building" and manifest["shards"][1] is None
    assert manifest["shards"][0] is not None and manifest["shards"][2] is not None
    with pytest.raises(ValueError, match="not complete"):
        drq_ray.load(path)
    done = {s: stat(path / manifest["shards"][s]["file"]) for s in (0, 2)}

    with drq_ray.build(trained(), xb, num_shards=3, path=path) as sharded:
        assert {s: stat(sharded.shard_path(s)) for s in (0, 2)} == done  # not rewritten
        assert sharded.manifest["status"] == "complete"
        assert_same_search(sharded, reference(xb), xq, iters_list=(1, M), ks=(10,))
        ids = np.concatenate([drqindex.read_index(sharded.shard_path(s)).get_ids() for s in range(3)])
        np.testing.assert_array_equal(ids, np.arange(N))
    assert not [f for f in os.listdir(path) if ".tmp" in f]


def test_resume_with_changed_input_rebuilds_those_shards(ray_cluster, data, tmp_path):
    xb, xq = data
    path = tmp_path / "idx"
    drq_ray.build(trained(), xb, num_shards=2, path=path).close()
    changed = xb.copy()
    changed[N - 1] += 1.0  # one row of shard 1 differs: shard 0 is kept, shard 1 rebuilt
    keep = stat(path / "shard-00000-of-00002.drq")
    with drq_ray.build(trained(), changed, num_shards=2, path=path) as sharded:
        assert stat(sharded.shard_path(0)) == keep
        assert_same_search(sharded, reference(changed), changed[N - 5:], iters_list=(M,), ks=(3,))


def test_corrupt_shard_file_is_rebuilt(ray_cluster, data, tmp_path):
    xb, xq = data
    path = tmp_path / "idx"
    first = drq_ray.build(trained(), xb, num_shards=2, path=path)
    shard0 = first.shard_path(0)
    keep = stat(first.shard_path(1))
    with open(shard0, "r+b") as f:  # same size, different bytes
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 0xFF]))
    corrupted = stat(shard0)
    sharded = drq_ray.build(trained(), xb, num_shards=2, path=path)
    assert stat(sharded.shard_path(1)) == keep
    assert stat(shard0) != corrupted  # rewritten
    # the rebuilt shard is byte-identical to the first build's (the build is deterministic)
    assert drq_ray._file_sha256(shard0)[0] == first.manifest["shards"][0]["sha256"]
    assert sharded.manifest["shards"] == first.manifest["shards"]


# ------------------------------------------------------------------------------------------ bad inputs
def test_bad_inputs_raise_clearly(ray_cluster, data, tmp_path):
    import ray.data

    xb, xq = data
    with pytest.raises(TypeError, match="IndexDRQ"):
        drq_ray.build("index", xb, num_shards=2, path=tmp_path / "a")
    with pytest.raises(RuntimeError, match="not trained"):
        drq_ray.build(drqindex.IndexDRQ(D_DIM, iters=M), xb, num_shards=2, path=tmp_path / "a")
    with pytest.raises(ValueError, match="num_shards"):
        drq_ray.build(trained(), xb, num_shards=0, path=tmp_path / "a")
    with pytest.raises(ValueError, match=r"data: expected shape \(n, 16\)"):
        drq_ray.build(trained(), xb[:, :8].copy(), num_shards=2, path=tmp_path / "a")
    with pytest.raises(ValueError, match="ids"):
        drq_ray.build(trained(), xb, num_shards=2, path=tmp_path / "a", ids=np.arange(5))
    with pytest.raises(ValueError, match="no id column"):
        drq_ray.build(trained(), ray.data.from_numpy(xb), num_shards=2, path=tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="no manifest"):
        drq_ray.load(tmp_path / "nothing")

    path = tmp_path / "b"
    sharded = drq_ray.build(trained(), xb, num_shards=2, path=path)
    with pytest.raises(ValueError, match="different build"):
        drq_ray.build(trained(), xb, num_shards=3, path=path)
    with pytest.raises(ValueError, match="iters: expected 1..6"):
        sharded.search(xq, 5, iters=M + 1)
    with pytest.raises(ValueError, match=r"expected shape \(n, 16\)"):
        sharded.search(xq[:, :4].copy(), 5)
    with pytest.raises(TypeError, match="k: expected an int"):
        sharded.search(xq, 2.5)
    sharded.close()
    # overwrite=True replaces a different build
    with drq_ray.build(trained(), xb, num_shards=3, path=path, overwrite=True) as rebuilt:
        assert rebuilt.num_shards == 3
        assert not os.path.exists(os.path.join(path, "shard-00001-of-00002.drq"))  # the old build's shards are gone
