"""Sharded build and search of a drqindex index on a Ray cluster (optional extra: `pip install drqindex[ray]`).

    import ray, drqindex
    from drqindex.contrib import ray as drq_ray

    index = drqindex.IndexDRQ(d, iters=16); index.train(sample)          # train once, centrally
    sharded = drq_ray.build(index, xb, num_shards=8, path="/shared/idx")  # numpy array or ray.data Dataset
    D, I = sharded.search(xq, k=10, iters=8)                            # fan out, exact top-k merge
    sharded = drq_ray.load("/shared/idx")                                # reopen shards + manifest

drqindex runs no cluster manager of its own: Ray schedules the work, this module only says what to run.

* The trained quantizer travels to the workers as bytes in the index file format (an index with
  the quantizer and no vectors, `drqindex.serialize_index`); encoding is a pure batch function of
  those bytes and the vectors.
* Each shard is an ordinary drqindex index file (`drqindex.read_index` opens it) holding global
  int64 ids. `manifest.json` beside the shards lists them with their sizes, vector counts and
  sha256, the sha256 of the quantizer (codebook + scales bytes), d, M, metric and how vectors were
  assigned to shards. Every file is written to a temporary name and renamed when complete, so a
  partial file never carries a final name.
* Assignment is deterministic: a numpy array is cut into `num_shards` contiguous row ranges
  (ids = row numbers unless given); a ray.data Dataset, whose row order Ray does not fix, needs an
  id column, and a row goes to shard splitmix64(id) % num_shards.
* `build` resumes: shards the manifest records whose files are present and intact are kept, the
  others are (re)built. A worker that dies is retried by Ray (`max_task_retries`); a build that
  still fails leaves a manifest of the finished shards and raises ShardBuildError; calling build
  again with the same arguments builds only the missing shards.
* `ShardedIndex.search` computes the queries' look-up tables (T = q C^T, one (256,) row per query,
  shared by every iteration) once on the driver and puts them once in the object store, asks one
  ShardActor per shard (each loads and verifies its shard file once) for its top-k, and merges the per-shard lists
  exactly: by distance, then by id (L2 ascending, inner product descending), -1 / FLT_MAX padding
  when fewer than k vectors exist. The result equals that of one IndexDRQ over the same vectors
  and ids. An actor that died (RayActorError) or did not answer within `timeout_s` is replaced by
  a fresh actor loading the same file, and only that shard is asked again.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
import zlib

import numpy as np

try:
    # Absolute import (Python 3): the top-level `ray` package, not this module (drqindex.contrib.ray).
    import ray
    from ray.exceptions import RayActorError, RayTaskError
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("drqindex.contrib.ray needs Ray: pip install 'drqindex[ray]' "
                      f"(or pip install 'ray[data]'); importing it failed: {e}") from e

import drqindex
from drqindex import _validate
from drqindex.io import IndexFileError, deserialize_index, read_index, serialize_index, write_index
from drqindex.metrics import METRIC_INNER_PRODUCT, METRIC_L2

__all__ = ["build", "load", "encode_batch", "ShardedIndex", "ShardActor", "ShardBuildError", "ShardLoadError", "merge_topk",
           "quantizer_checksum", "MANIFEST_NAME"]

MANIFEST_NAME = "manifest.json"
QUANTIZER_NAME = "quantizer.drq"
MANIFEST_FORMAT = "drqindex-sharded"
MANIFEST_VERSION = 1
_FLT_MAX = float(np.finfo(np.float32).max)
_HASH_CHUNK = 1 << 22


class ShardLoadError(ValueError):
    """A shard actor could not load its shard: the file is corrupt, changed since the manifest
    was written, or holds another quantizer / d / M / metric than the manifest says."""


class ShardBuildError(RuntimeError):
    """Some shards could not be built; the manifest records the finished ones, so calling build()
    again with the same arguments builds only `failed`."""

    def __init__(self, path: str, failed: dict):
        self.path = path
        self.failed = dict(failed)
        detail = "; ".join(f"shard {s}: {msg}" for s, msg in sorted(self.failed.items()))
        super().__init__(f"{path}: {len(failed)} shard(s) failed ({detail}); the finished shards are kept, "
                         "call build() again with the same arguments to build only the missing ones")


# ------------------------------------------------------------------------------------------ helpers
def quantizer_checksum(quantizer) -> str:
    """sha256 (hex) of the quantizer's codebook bytes then scales bytes (float32 little-endian):
    two indexes whose codes mean the same vectors have the same checksum."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(quantizer.codebook, dtype="<f4").tobytes())
    h.update(np.ascontiguousarray(quantizer.scales, dtype="<f4").tobytes())
    return h.hexdigest()


def _file_sha256(path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_HASH_CHUNK)
            if not chunk:
                break
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _atomic_write_bytes(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _write_shard_file(index, path: str) -> dict:
    """Write `index` to a temporary file, fsync, rename to `path`; returns its manifest entry fields."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            write_index(index, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise
    sha, size = _file_sha256(path)
    return {"ntotal": int(index.ntotal), "bytes": size, "sha256": sha}


def _shard_name(s: int, num_shards: int) -> str:
    return f"shard-{s:05d}-of-{num_shards:05d}.drq"


def _splitmix64_shard(ids: np.ndarray, num_shards: int) -> np.ndarray:
    """Shard of each id: splitmix64(id) % num_shards (deterministic, spreads consecutive ids)."""
    z = ids.astype(np.int64).view(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(num_shards)).astype(np.int64)


_QUANTIZER_CACHE: dict = {}


def _index_from_quantizer_bytes(qbytes) -> "drqindex.IndexDRQ":
    """An empty IndexDRQ with the quantizer carried as bytes (cached per worker process: the
    Gram matrix is computed once however many batches the process encodes)."""
    if isinstance(qbytes, ray.ObjectRef):
        qbytes = ray.get(qbytes)
    key = hashlib.sha256(memoryview(qbytes)).hexdigest()
    proto = _QUANTIZER_CACHE.get(key)
    if proto is None:
        proto = deserialize_index(qbytes)
        _QUANTIZER_CACHE.clear()
        _QUANTIZER_CACHE[key] = proto
    index = drqindex.IndexDRQ(proto.d, iters=proto.iters, metric=proto.metric_type)
    index.set_quantizer(proto.quantizer)
    return index


def _maybe_fault(fault, shard: int, where: str) -> None:
    """Testing hook: a fault spec {"shard": s, "mode": "exit" | "raise", "marker": path or None}
    kills this worker process (exit) or raises (raise) when building shard s. With a marker path,
    it fires once: only while the marker file does not exist (it is created first)."""
    if not fault or int(fault.get("shard", -1)) != shard or fault.get("where", "build") != where:
        return
    marker = fault.get("marker")
    if marker:
        if os.path.exists(marker):
            return
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
    if fault.get("mode") == "exit":
        os._exit(1)
    raise RuntimeError(f"injected fault while building shard {shard}")


# ------------------------------------------------------------------------------------------ build
@ray.remote
def _build_range_shard(qbytes, x, ids, path: str, shard: int, threads, fault) -> dict:
    """Encode one contiguous range of vectors and write it as an ordinary index file (pure
    function of its inputs; running it twice writes the same file)."""
    if threads:
        drqindex.set_num_threads(int(threads))
    _maybe_fault(fault, shard, "build")
    index = _index_from_quantizer_bytes(qbytes)
    index.add_with_ids(x, ids)
    entry = _write_shard_file(index, path)
    entry["input_crc32"] = _rows_crc32(x, ids)
    return entry


def _rows_crc32(x: np.ndarray, ids: np.ndarray) -> int:
    """CRC32 of a shard's input rows and ids: a resumed build keeps a shard only if its input is unchanged."""
    return zlib.crc32(memoryview(np.ascontiguousarray(x, "<f4")).cast("B"),
                      zlib.crc32(memoryview(np.ascontiguousarray(ids, "<i8")).cast("B")))


def encode_batch(qbytes, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pure batch function every worker runs: codes uint8 (n, M) and per-prefix norms
    float32 (n, M) of float32 (n, d) vectors, under the quantizer serialized in `qbytes`."""
    index = _index_from_quantizer_bytes(qbytes)
    x = _validate.float_matrix(np.ascontiguousarray(x), index.d, "vectors")
    return index.quantizer.encode(x)


def _encode_rows(batch: dict, *, qbytes, column: str, id_column: str, num_shards: int, todo) -> dict:
    """ray.data map_batches function: vectors + ids -> codes, norms, ids, shard (rows of shards
    that are already built are dropped before encoding)."""
    raw_ids = np.asarray(batch[id_column])
    ids = _validate.ids_array(raw_ids, len(raw_ids), f"column {id_column!r}")
    shard = _splitmix64_shard(ids, num_shards)
    keep = np.isin(shard, np.asarray(todo, np.int64))
    x = _stack_vectors(batch[column], column)[keep]
    codes, norms = encode_batch(qbytes, x)
    return {"shard": shard[keep], "id": ids[keep], "codes": codes, "norms": norms}


def _stack_vectors(col, name: str) -> np.ndarray:
    arr = np.asarray(col)
    if arr.dtype == object:  # variable-shaped tensor column: a list of 1-D arrays
        arr = np.stack([np.asarray(v) for v in arr]) if len(arr) else np.empty((0, 0), np.float32)
    if arr.ndim != 2:
        raise ValueError(f"column {name!r}: expected one vector (1-D array) per row, got batch shape {arr.shape}")
    return np.ascontiguousarray(arr)


@ray.remote
def _split_block(block: dict, num_shards: int, M: int):
    """One encoded block -> num_shards parts (part s: its rows of shard s), the map side of a shuffle."""
    shard = np.asarray(block["shard"], np.int64)
    order = np.argsort(shard, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(shard, minlength=num_shards))])
    parts = []
    for s in range(num_shards):
        sel = order[bounds[s]:bounds[s + 1]]
        parts.append({"id": np.asarray(block["id"], np.int64)[sel],
                      "codes": np.asarray(block["codes"], np.uint8).reshape(-1, M)[sel],
                      "norms": np.asarray(block["norms"], np.float32).reshape(-1, M)[sel]})
    return tuple(parts) if num_shards > 1 else parts[0]


@ray.remote
def _write_parts(qbytes, path: str, shard: int, threads, fault, M: int, *parts) -> dict:
    """All encoded rows of one shard (one part per block) -> its index file, rows sorted by id so
    the file does not depend on the order Ray delivered the blocks in."""
    if threads:
        drqindex.set_num_threads(int(threads))
    _maybe_fault(fault, shard, "build")
    ids = np.concatenate([p["id"] for p in parts]) if parts else np.empty(0, np.int64)
    codes = np.concatenate([p["codes"].reshape(-1, M) for p in parts]) if parts else np.empty((0, M), np.uint8)
    norms = np.concatenate([p["norms"].reshape(-1, M) for p in parts]) if parts else np.empty((0, M), np.float32)
    order = np.argsort(ids, kind="stable")
    index = _index_from_quantizer_bytes(qbytes)
    if ids.size:
        index._append_encoded(np.ascontiguousarray(codes[order], np.uint8),
                              np.ascontiguousarray(norms[order], np.float32), np.ascontiguousarray(ids[order]))
    return _write_shard_file(index, path)


def build(index, data, num_shards: int, path, *, ids=None, column: str | None = None, id_column: str = "id",
          num_workers: int | None = None, threads_per_worker: int = 1, max_task_retries: int = 3,
          overwrite: bool = False, verify: bool = True, _fault=None) -> "ShardedIndex":
    """Encode `data` with the trained `index`'s quantizer into `num_shards` shard files under `path`.

    index: a trained drqindex.IndexDRQ (its stored vectors, if any, are not copied: only its quantizer).
    data: float32 (n, d) numpy array (shard s gets a contiguous range of rows; ids are the row
      numbers 0..n-1 unless `ids` (int64 (n,)) is given), or a ray.data.Dataset with a vector
      column (`column`, or the only column besides `id_column`) and an int64 id column
      `id_column` (shard = splitmix64(id) % num_shards).
    path: a directory (created if needed) that every worker and actor can reach (shared storage on
      a multi-node cluster).
    num_workers: shard-encoding tasks running at once (default: the cluster's CPUs / threads_per_worker);
    threads_per_worker: CPU cores each task asks Ray for and lets the C++ encoder use.
    max_task_retries: times Ray re-runs a shard task whose worker died.
    overwrite: a directory holding a different build (another quantizer, d, M, metric, shard count
      or input size) is refused unless overwrite=True.
    verify: re-hash the shard files a previous run left before keeping them.
    Returns a ShardedIndex (call .search). Raises ShardBuildError if some shards still failed.
    """
    if not isinstance(index, drqindex.IndexDRQ):
        raise TypeError(f"index: expected a trained drqindex.IndexDRQ, got {type(index).__name__}")
    if not index.is_trained:
        raise RuntimeError("index: the index is not trained (is_trained = False); train it (centrally) first")
    num_shards = _validate.positive_int(num_shards, "num_shards", upper=99999)
    threads_per_worker = _validate.positive_int(threads_per_worker, "threads_per_worker")
    if isinstance(max_task_retries, bool) or not isinstance(max_task_retries, int) or max_task_retries < 0:
        raise ValueError(f"max_task_retries: expected an int >= 0, got {max_task_retries!r}")
    if num_workers is not None:
        num_workers = _validate.positive_int(num_workers, "num_workers")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a directory path (str or os.PathLike), got {type(path).__name__}")
    path = os.path.abspath(os.fspath(path))

    # The quantizer as an index with no vectors: the bytes that travel to every worker.
    proto = drqindex.IndexDRQ(index.d, iters=index.iters, metric=index.metric_type)
    proto.set_quantizer(index.quantizer)
    qbytes = serialize_index(proto).tobytes()
    qsum = quantizer_checksum(index.quantizer)

    is_dataset = _is_ray_dataset(data)
    if is_dataset:
        if ids is not None:
            raise ValueError("ids: not used with a ray.data Dataset; the ids come from its id column "
                             f"(id_column={id_column!r})")
        column = _dataset_vector_column(data, column, id_column)
        n = None
        assignment = {"kind": "id_hash", "hash": "splitmix64", "id_column": id_column}
    else:
        if column is not None:
            raise ValueError("column: only used with a ray.data Dataset")
        x = _validate.float_matrix(data, index.d, "data")
        n = x.shape[0]
        if n == 0:
            raise ValueError("data: expected at least one vector, got 0 rows")
        ids = (np.arange(n, dtype=np.int64) if ids is None else _validate.ids_array(ids, n))
        bounds = [int(b) for b in np.linspace(0, n, num_shards + 1).round().astype(np.int64)]
        assignment = {"kind": "range", "bounds": bounds}

    os.makedirs(path, exist_ok=True)
    manifest = {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "status": "building",
        "writer": f"drqindex {drqindex.__version__}",
        "d": index.d, "M": index.iters, "metric": _metric_name(index.metric_type), "num_shards": num_shards,
        "ntotal": n, "quantizer_sha256": qsum, "quantizer_file": QUANTIZER_NAME,
        "assignment": assignment, "shards": [None] * num_shards,
    }
    previous = _read_manifest_or_none(path)
    if previous is not None:
        keys = ["format", "version", "d", "M", "metric", "num_shards", "quantizer_sha256", "assignment"]
        if n is not None:  # a Dataset's size is known only once it is read
            keys.append("ntotal")
        same = {key: previous.get(key) for key in keys}
        want = {key: manifest[key] for key in same}
        if same != want:
            if not overwrite:
                diff = sorted(key for key in same if same[key] != want[key])
                raise ValueError(f"path: {path} holds a sharded index of a different build (differs in {diff}); "
                                 "pass overwrite=True to replace it, or use another directory")
            # Replacing it: the old build's manifest and shard files go first, so no directory
            # ever mixes two builds' shards under one manifest.
            _remove_quietly(os.path.join(path, MANIFEST_NAME))
            for e in previous.get("shards") or []:
                if isinstance(e, dict) and isinstance(e.get("file"), str) and os.path.basename(e["file"]) == e["file"]:
                    _remove_quietly(os.path.join(path, e["file"]))
        else:
            manifest["shards"] = [_kept_entry(path, e, s, num_shards, verify) for s, e in
                                  enumerate(previous.get("shards") or [None] * num_shards)]
            if not is_dataset:  # same sizes but other rows: those shards are rebuilt from the rows given now
                for s, e in enumerate(manifest["shards"]):
                    lo, hi = bounds[s], bounds[s + 1]
                    if e is not None and e.get("input_crc32") != _rows_crc32(x[lo:hi], ids[lo:hi]):
                        manifest["shards"][s] = None
    todo = [s for s, e in enumerate(manifest["shards"]) if e is None]
    if not todo and previous is not None and previous.get("status") == "complete":
        return ShardedIndex(path, previous)
    qpath = os.path.join(path, QUANTIZER_NAME)
    if not os.path.exists(qpath) or _file_sha256(qpath)[0] != hashlib.sha256(qbytes).hexdigest():
        _atomic_write_bytes(qpath, qbytes)
    _write_manifest(path, manifest)

    failed: dict = {}
    if todo and is_dataset:
        failed = _build_from_dataset(data, qbytes, path, manifest, todo, column, id_column, num_shards,
                                     num_workers, threads_per_worker, max_task_retries, _fault, index.iters)
    elif todo:
        failed = _build_from_array(x, ids, bounds, qbytes, path, manifest, todo, num_shards, num_workers,
                                   threads_per_worker, max_task_retries, _fault)
    if failed:
        _write_manifest(path, manifest)
        raise ShardBuildError(path, failed)
    manifest["status"] = "complete"
    if manifest["ntotal"] is None:
        manifest["ntotal"] = int(sum(e["ntotal"] for e in manifest["shards"]))
    _write_manifest(path, manifest)
    return ShardedIndex(path, manifest)


def _build_from_array(x, ids, bounds, qbytes, path, manifest, todo, num_shards, num_workers, threads,
                      max_task_retries, fault) -> dict:
    qref = ray.put(qbytes)
    # Each task gets only its own rows through the object store (one copy per node).
    return _run_shard_tasks(
        todo, num_workers, threads, path, manifest, num_shards,
        lambda s, task: task.remote(qref, ray.put(x[bounds[s]:bounds[s + 1]]), ray.put(ids[bounds[s]:bounds[s + 1]]),
                                    os.path.join(path, _shard_name(s, num_shards)), s, threads, fault),
        _build_range_shard.options(num_cpus=threads, max_retries=max_task_retries, retry_exceptions=False))


def _build_from_dataset(ds, qbytes, path, manifest, todo, column, id_column, num_shards, num_workers, threads,
                        max_task_retries, fault, M) -> dict:
    # Map: ray.data encodes the batches (a pure function of the quantizer bytes), dropping rows of
    # shards already built; each encoded block is split by shard. Reduce: one task per missing
    # shard gathers its parts and writes the shard file. Every object is in Ray's object store,
    # so a lost worker is recomputed from lineage; the manifest records each finished shard.
    qref = ray.put(qbytes)
    enc = ds.map_batches(_encode_rows, batch_format="numpy", num_cpus=threads,
                         fn_kwargs={"qbytes": qref, "column": column, "id_column": id_column,
                                    "num_shards": num_shards, "todo": list(todo)})
    try:
        blocks = enc.to_numpy_refs()
    except Exception as e:  # noqa: BLE001 - e.g. a bad vector column: every missing shard failed
        raise _unwrap(e) from None
    split = _split_block.options(num_returns=num_shards, max_retries=max_task_retries)
    parts_by_block = [split.remote(b, num_shards, M) for b in blocks]
    if num_shards == 1:
        parts_by_block = [[p] for p in parts_by_block]
    return _run_shard_tasks(
        todo, num_workers, threads, path, manifest, num_shards,
        lambda s, task: task.remote(qref, os.path.join(path, _shard_name(s, num_shards)), s, threads, fault, M,
                                    *[parts[s] for parts in parts_by_block]),
        _write_parts.options(num_cpus=threads, max_retries=max_task_retries, retry_exceptions=False))


def _run_shard_tasks(todo, num_workers, threads, path, manifest, num_shards, submit, task) -> dict:
    """Run one task per missing shard, at most num_workers at once; record each finished shard in
    the manifest as it completes. Returns {shard: error} for the shards that failed."""
    if num_workers is None:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        num_workers = max(1, cpus // threads)
    queue = list(todo)
    running: dict = {}
    failed: dict = {}
    while queue or running:
        while queue and len(running) < num_workers:
            s = queue.pop(0)
            running[submit(s, task)] = s
        done, _ = ray.wait(list(running), num_returns=1)
        for ref in done:
            s = running.pop(ref)
            try:
                entry = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - reported per shard in ShardBuildError
                failed[s] = f"{type(e).__name__}: {_first_line(e)}"
                continue
            entry["file"] = _shard_name(s, num_shards)
            manifest["shards"][s] = entry
            _write_manifest(path, manifest)  # progress survives a crash of this driver
    return failed


def _unwrap(e: BaseException) -> BaseException:
    """The user's error inside a Ray task error (e.g. a ValueError for a bad vector column)."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    # RayTaskError messages start with the traceback header; the cause is on the last line.
    return (text[-1] if text else repr(e))[:300]


def _is_ray_dataset(data) -> bool:
    if isinstance(data, np.ndarray):
        return False
    try:
        from ray.data import Dataset
    except ImportError:  # ray installed without its data extra: arrays only
        return False
    return isinstance(data, Dataset)


def _dataset_vector_column(ds, column, id_column) -> str:
    names = list(ds.columns())
    if id_column not in names:
        raise ValueError(f"data: the Dataset has no id column {id_column!r} (columns: {names}); a Dataset's row "
                         "order is not fixed, so ids must come with the rows: add an int64 id column, or pass a "
                         "numpy array to get positional ids")
    if column is None:
        others = [c for c in names if c != id_column]
        if len(others) != 1:
            raise ValueError(f"column: the Dataset has columns {names}; name the vector column with column=...")
        column = others[0]
    elif column not in names:
        raise ValueError(f"column: {column!r} is not a column of the Dataset (columns: {names})")
    return column


def _kept_entry(path, entry, s, num_shards, verify):
    """A previous run's shard entry if its file is present and intact, else None (rebuild it)."""
    if not isinstance(entry, dict) or entry.get("file") != _shard_name(s, num_shards):
        return None
    fpath = os.path.join(path, entry["file"])
    try:
        size = os.path.getsize(fpath)
    except OSError:
        return None
    if size != entry.get("bytes"):
        return None
    if verify and _file_sha256(fpath)[0] != entry.get("sha256"):
        return None
    return entry


def _metric_name(metric: int) -> str:
    return "L2" if metric == METRIC_L2 else "IP"


def _write_manifest(path: str, manifest: dict) -> None:
    _atomic_write_bytes(os.path.join(path, MANIFEST_NAME),
                        (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def _read_manifest_or_none(path: str):
    mpath = os.path.join(path, MANIFEST_NAME)
    if not os.path.exists(mpath):
        return None
    return _read_manifest(path)


def _read_manifest(path: str) -> dict:
    mpath = os.path.join(path, MANIFEST_NAME)
    try:
        with open(mpath, "rb") as f:
            manifest = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{mpath}: no manifest (not a sharded drqindex directory)") from None
    except ValueError as e:
        raise ValueError(f"{mpath}: invalid manifest JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{mpath}: not a {MANIFEST_FORMAT} manifest")
    if manifest.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{mpath}: manifest version {manifest.get('version')} is not supported "
                         f"(this drqindex reads {MANIFEST_VERSION}); upgrade drqindex")
    for key, kind in (("d", int), ("M", int), ("num_shards", int), ("quantizer_sha256", str), ("shards", list)):
        if not isinstance(manifest.get(key), kind):
            raise ValueError(f"{mpath}: field {key!r} missing or not a {kind.__name__}")
    if manifest.get("metric") not in ("L2", "IP") or len(manifest["shards"]) != manifest["num_shards"]:
        raise ValueError(f"{mpath}: inconsistent metric or shard list")
    return manifest


# ------------------------------------------------------------------------------------------ search
@ray.remote(max_restarts=0)
class ShardActor:
    """Holds one shard in memory (loaded and verified once) and answers top-k searches over it."""

    def __init__(self, path: str, sha256: str, quantizer_sha256: str, d: int, M: int, metric: int,
                 threads: int | None, verify: bool = True):
        self.error = None
        self.index = None
        self.metric = metric
        self.fault = None
        try:
            if threads:
                drqindex.set_num_threads(int(threads))
            if verify and _file_sha256(path)[0] != sha256:
                raise IndexFileError(path, None, "sha256 differs from the manifest (the shard file changed)")
            index = read_index(path)
            if (index.d, index.iters, index.metric_type) != (d, M, metric):
                raise IndexFileError(path, "header", f"expected d={d}, M={M}, metric={metric}, got "
                                                     f"d={index.d}, M={index.iters}, metric={index.metric_type}")
            if quantizer_checksum(index.quantizer) != quantizer_sha256:
                raise IndexFileError(path, "CBKF/SCLF", "the quantizer's sha256 differs from the manifest's")
            self.index = index
        except Exception as e:  # noqa: BLE001 - reported by every search call (a normal, non-retried error)
            # A plain ValueError subclass (IndexFileError's constructor does not survive pickling).
            self.error = ShardLoadError(str(e))

    def info(self) -> dict:
        return {"pid": os.getpid(), "ntotal": None if self.index is None else self.index.ntotal,
                "error": None if self.error is None else str(self.error)}

    def _arm_fault(self, mode: str = "exit") -> None:
        """Testing hook: the next search call kills this actor's process mid-call ("exit") or
        never answers ("hang")."""
        self.fault = mode

    def search(self, tables: np.ndarray, qnorms: np.ndarray, k: int, iters: int):
        """Top-min(k, ntotal) of this shard for queries given as their look-up tables T = q C^T
        (nq, K) float32 and squared norms (nq,) float32, computed once by the caller."""
        if self.error is not None:
            raise self.error
        if self.fault == "exit":
            os._exit(1)
        if self.fault == "hang":
            time.sleep(3600)
        return _search_tables(self.index, tables, qnorms, k, iters)


def _search_tables(index, tables: np.ndarray, qnorms: np.ndarray, k: int, iters: int):
    """IndexDRQ.search's scan for precomputed query tables: the same core call, so the distances
    are bit-identical to a single index's when the tables are (they are computed once, by the
    driver: a BLAS product can round differently with another thread count)."""
    from drqindex import _core

    nq = tables.shape[0]
    with index._lock.read():
        ntotal = index.ntotal
        if ntotal == 0:
            pad = _FLT_MAX if index.metric_type == METRIC_L2 else -_FLT_MAX
            return np.full((nq, k), pad, np.float32), np.full((nq, k), -1, np.int64)
        # Never more than ntotal per shard: the merge needs each shard's best min(k, ntotal).
        return _core.search(index._store, tables, qnorms, index.quantizer.scales, iters, min(k, ntotal),
                            0 if index.metric_type == METRIC_L2 else 1)


def merge_topk(Ds, Is, k: int, metric: int):
    """Exact merge of per-shard top-k lists ((nq, k_s) float32 distances, int64 ids each) into the
    global top-k: by distance (L2 ascending, inner product descending), ties by smaller id,
    -1 entries last; padded with -1 / +-FLT_MAX when fewer than k results exist."""
    nq = Ds[0].shape[0]
    D = np.concatenate([np.asarray(d, np.float32) for d in Ds], axis=1)
    I = np.concatenate([np.asarray(i, np.int64) for i in Is], axis=1)
    pad_value = _FLT_MAX if metric == METRIC_L2 else -_FLT_MAX
    if D.shape[1] < k:
        D = np.hstack([D, np.full((nq, k - D.shape[1]), pad_value, np.float32)])
        I = np.hstack([I, np.full((nq, k - I.shape[1]), -1, np.int64)])
    key = D if metric == METRIC_L2 else -D
    order = np.lexsort((I, key, I == -1), axis=-1)[:, :k]
    D = np.take_along_axis(D, order, axis=1)
    I = np.take_along_axis(I, order, axis=1)
    D[I == -1] = pad_value
    return np.ascontiguousarray(D), np.ascontiguousarray(I)


class ShardedIndex:
    """A sharded index on disk (manifest + shard files) searched through one Ray actor per shard.

    Attributes: path, manifest, d, iters (M), metric_type, ntotal, num_shards, restarts (actors
    replaced after dying or timing out). Actors start on the first search (or start()) and stay
    up until close(); use `with drq_ray.load(path) as sharded: ...` to close automatically.
    """

    def __init__(self, path: str, manifest: dict, *, actor_options: dict | None = None,
                 threads_per_actor: int | None = None, verify: bool = True):
        self.path = path
        self.manifest = manifest
        self.d = int(manifest["d"])
        self.iters = int(manifest["M"])
        self.metric_type = METRIC_L2 if manifest["metric"] == "L2" else METRIC_INNER_PRODUCT
        self.num_shards = int(manifest["num_shards"])
        self.ntotal = int(sum(e["ntotal"] for e in manifest["shards"]))
        self.actor_options = {"scheduling_strategy": "SPREAD", **(actor_options or {})}
        self.threads_per_actor = threads_per_actor
        self.verify = verify
        self.restarts = 0
        self._actors: list | None = None
        self._ready: set = set()  # shards whose current actor has loaded its file
        self._quantizer = None

    def __repr__(self):
        return (f"ShardedIndex(path={self.path!r}, d={self.d}, iters={self.iters}, "
                f"metric={_metric_name(self.metric_type)}, ntotal={self.ntotal}, num_shards={self.num_shards})")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def shard_path(self, s: int) -> str:
        return os.path.join(self.path, self.manifest["shards"][s]["file"])

    def _new_actor(self, s: int):
        e = self.manifest["shards"][s]
        return ShardActor.options(**self.actor_options).remote(
            self.shard_path(s), e["sha256"], self.manifest["quantizer_sha256"], self.d, self.iters,
            self.metric_type, self.threads_per_actor, self.verify)

    def start(self) -> "ShardedIndex":
        """Start (or restart dead) shard actors now and wait until each has loaded its shard."""
        if self._actors is None:
            self._actors = [self._new_actor(s) for s in range(self.num_shards)]
            self._ready = set()
        infos = ray.get([a.info.remote() for a in self._actors])
        for s, info in enumerate(infos):
            if info["error"]:
                raise ShardLoadError(info["error"])
            self._ready.add(s)
        return self

    def close(self) -> None:
        """Stop the shard actors (their memory is released); a later search starts new ones."""
        for a in self._actors or []:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._actors = None
        self._ready = set()

    def _replace_actor(self, s: int) -> None:
        try:
            ray.kill(self._actors[s])
        except Exception:  # noqa: BLE001
            pass
        self._actors[s] = self._new_actor(s)
        self._ready.discard(s)
        self.restarts += 1

    def search(self, x, k, *, iters: int | None = None, timeout_s: float | None = 600.0, max_retries: int = 2):
        """k nearest neighbours of float32 (n, d) queries over all shards, using `iters` code bytes.

        Returns D float32 (n, k), I int64 (n, k) exactly as one IndexDRQ over the same vectors and
        ids would (ties broken by smaller id). A shard whose actor died, or gave no answer within
        timeout_s seconds (None: wait as long as it takes), is asked again on a fresh actor, up to
        max_retries times. The timeout covers the search call only: a new actor first loads its
        shard, for as long as that takes (start() does it ahead of the first search).
        """
        x = _validate.float_matrix(x, self.d)
        k = _validate.positive_int(k, "k")
        m = _validate.iters_value(iters, self.iters)
        if self.ntotal == 0:
            raise RuntimeError("search: the index is empty (ntotal = 0)")
        if timeout_s is not None and (isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float))
                                      or not timeout_s > 0):
            raise ValueError(f"timeout_s: expected a positive number of seconds or None, got {timeout_s!r}")
        if self._actors is None:
            self._actors = [self._new_actor(s) for s in range(self.num_shards)]
            self._ready = set()
        # The look-up tables (one (K,) row per query, shared by every iteration) are computed once
        # here and sent once per node, shared by every actor there: no shard repeats the product.
        tables, qnorms = self._get_quantizer().query_tables(x)
        tref, nref = ray.put(tables), ray.put(qnorms)
        results: list = [None] * self.num_shards
        attempts = [0] * self.num_shards
        pending: dict = {}  # ref -> (shard, submitted at, "load" | "search")

        def submit(s: int):
            # A new actor first loads its shard (no timeout: that takes as long as the file is big);
            # the timeout then applies to the search call alone.
            if s in self._ready:
                pending[self._actors[s].search.remote(tref, nref, k, m)] = (s, time.monotonic(), "search")
            else:
                pending[self._actors[s].info.remote()] = (s, time.monotonic(), "load")

        def retry(s: int, why: str):
            attempts[s] += 1
            if attempts[s] > max_retries:
                raise RuntimeError(f"search: shard {s} ({self.shard_path(s)}) failed {attempts[s]} times, "
                                   f"last: {why}")
            self._replace_actor(s)
            submit(s)

        for s in range(self.num_shards):
            submit(s)
        while pending:
            wait_s = None
            searching = [t for _, t, kind in pending.values() if kind == "search"]
            if timeout_s is not None and searching:
                wait_s = max(0.0, min(searching) + timeout_s - time.monotonic())
            done, _ = ray.wait(list(pending), num_returns=1, timeout=wait_s)
            if not done:  # the oldest search call is overdue: replace its actor, ask again
                now = time.monotonic()
                for ref, (s, t, kind) in list(pending.items()):
                    if kind == "search" and now - t >= timeout_s:
                        del pending[ref]
                        retry(s, f"no answer within {timeout_s} s")
                continue
            for ref in done:
                s, _, kind = pending.pop(ref)
                try:
                    out = ray.get(ref)
                except RayActorError as e:
                    self._ready.discard(s)
                    retry(s, f"{type(e).__name__}: {_first_line(e)}")
                    continue
                except RayTaskError as e:  # the shard's own error (e.g. ShardLoadError): not retried
                    raise _unwrap(e) from None
                if kind == "load":
                    if out["error"]:
                        raise ShardLoadError(out["error"])
                    self._ready.add(s)
                    submit(s)
                else:
                    results[s] = out
        return merge_topk([r[0] for r in results], [r[1] for r in results], k, self.metric_type)

    @property
    def quantizer(self):
        """The shared quantizer (read from quantizer.drq, checked against the manifest's checksum)."""
        return self._get_quantizer()

    def _get_quantizer(self):
        if self._quantizer is None:
            self._quantizer = _read_quantizer(self.path, self.manifest)
        return self._quantizer


def load(path, *, actor_options: dict | None = None, threads_per_actor: int | None = None,
         verify: bool = True) -> ShardedIndex:
    """Reopen a sharded index written by build(): reads and checks the manifest (complete, every
    shard file present with its recorded size, the quantizer file's checksum equal to the
    manifest's); each shard actor then verifies its file's sha256 when it loads it.

    actor_options: extra ray .options() for the ShardActors (e.g. {"memory": ..., "resources": ...});
    by default they are spread over the cluster's nodes. threads_per_actor: C++ search threads each
    actor uses (default: its machine's cores).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a directory path (str or os.PathLike), got {type(path).__name__}")
    path = os.path.abspath(os.fspath(path))
    manifest = _read_manifest(path)
    if manifest.get("status") != "complete":
        raise ValueError(f"{path}: the build is not complete (status {manifest.get('status')!r}); "
                         "run build() again with the same arguments to finish it")
    num_shards = manifest["num_shards"]
    for s, e in enumerate(manifest["shards"]):
        if not isinstance(e, dict) or e.get("file") != _shard_name(s, num_shards):
            raise ValueError(f"{path}: manifest entry for shard {s} is missing or malformed")
        fpath = os.path.join(path, e["file"])
        if not os.path.exists(fpath):
            raise FileNotFoundError(f"{fpath}: shard {s} listed in the manifest is missing")
        if os.path.getsize(fpath) != e.get("bytes"):
            raise ValueError(f"{fpath}: size {os.path.getsize(fpath)} differs from the manifest's {e.get('bytes')}")
    sharded = ShardedIndex(path, manifest, actor_options=actor_options, threads_per_actor=threads_per_actor,
                           verify=verify)
    sharded._get_quantizer()
    return sharded


def _read_quantizer(path: str, manifest: dict):
    qfile = manifest.get("quantizer_file", QUANTIZER_NAME)
    if not isinstance(qfile, str) or os.path.basename(qfile) != qfile:
        raise ValueError(f"{path}: manifest field 'quantizer_file' must be a file name, got {qfile!r}")
    quantizer = read_index(os.path.join(path, qfile)).quantizer
    if quantizer_checksum(quantizer) != manifest["quantizer_sha256"]:
        raise ValueError(f"{path}: the quantizer's checksum differs from the manifest's quantizer_sha256 "
                         "(the files come from different builds, or one was modified)")
    if (quantizer.d, quantizer.M) != (manifest["d"], manifest["M"]):
        raise ValueError(f"{path}: the quantizer has d={quantizer.d}, M={quantizer.M}, the manifest says "
                         f"d={manifest['d']}, M={manifest['M']}")
    return quantizer
