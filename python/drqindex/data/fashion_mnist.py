"""Fashion-MNIST as an ANN benchmark: idx-file parsing, the ann-benchmarks split, exact ground truth.

numpy only; faiss is imported lazily inside :func:`ground_truth` so that loading the data never
needs it. The split follows ann-benchmarks (``fashion-mnist-784-euclidean``): the 60,000 training
images are the database, the 10,000 test images are the queries, raw pixel values 0..255 as float32,
L2 distance.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "FashionMNIST",
    "load_fashion_mnist",
    "read_idx",
    "ground_truth",
    "default_data_dirs",
    "default_cache_dir",
    "INSTALL_HINT",
]

#: Where the Debian/Ubuntu package ``dataset-fashion-mnist`` puts the files.
SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
#: Environment variables read by the defaults.
ENV_DATA_DIR = "DRQ_FASHION_MNIST_DIR"
ENV_CACHE_DIR = "DRQ_CACHE_DIR"

INSTALL_HINT = (
    "install it with `apt-get install -y dataset-fashion-mnist` (files land in "
    f"{SYSTEM_DIR}), or download the four idx files from "
    "https://github.com/zalandoresearch/fashion-mnist and pass path=<directory> "
    f"(or set ${ENV_DATA_DIR})"
)

# The four files: (role, stem, expected magic, expected dims after the count).
_FILES = {
    "train_images": ("train-images-idx3-ubyte", 0x00000803, (28, 28)),
    "train_labels": ("train-labels-idx1-ubyte", 0x00000801, ()),
    "test_images": ("t10k-images-idx3-ubyte", 0x00000803, (28, 28)),
    "test_labels": ("t10k-labels-idx1-ubyte", 0x00000801, ()),
}
_EXPECTED_COUNT = {"train": 60000, "test": 10000}

# idx type byte -> numpy big-endian dtype
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclasses.dataclass(frozen=True)
class FashionMNIST:
    """The ann-benchmarks split of Fashion-MNIST.

    xb: float32 (60000, 784) database (the training images), raw pixels 0..255, C-contiguous
    xq: float32 (10000, 784) queries (the test images)
    yb, yq: int64 class labels (0..9) of xb and xq
    path: the directory the files were read from
    """

    xb: np.ndarray
    xq: np.ndarray
    yb: np.ndarray
    yq: np.ndarray
    path: str = ""

    @property
    def d(self) -> int:
        return int(self.xb.shape[1])

    @property
    def nb(self) -> int:
        return int(self.xb.shape[0])

    @property
    def nq(self) -> int:
        return int(self.xq.shape[0])

    def __repr__(self) -> str:  # arrays are large: show shapes only
        return (f"FashionMNIST(xb={self.xb.shape} {self.xb.dtype}, xq={self.xq.shape} {self.xq.dtype}, "
                f"path={self.path!r})")

    def subsample(self, nb: int | None = None, nq: int | None = None) -> "FashionMNIST":
        """The first nb database vectors and first nq queries (deterministic, contiguous copies)."""
        nb = self.nb if nb is None else min(int(nb), self.nb)
        nq = self.nq if nq is None else min(int(nq), self.nq)
        return FashionMNIST(
            xb=np.ascontiguousarray(self.xb[:nb]), xq=np.ascontiguousarray(self.xq[:nq]),
            yb=self.yb[:nb].copy(), yq=self.yq[:nq].copy(), path=self.path)


# ----------------------------------------------------------------------------------------------
# idx parsing

def _read_bytes(filename: Path) -> bytes:
    """Whole file contents, transparently gunzipped; gzip damage becomes a ValueError."""
    with open(filename, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the extension says
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:  # BadGzipFile is an OSError
            raise ValueError(
                f"{filename}: corrupt or truncated gzip stream ({type(e).__name__}: {e}); "
                "expected a complete gzip-compressed idx file — delete it and fetch it again") from e
    if str(filename).endswith(".gz"):
        raise ValueError(f"{filename}: expected a gzip-compressed idx file (name ends in .gz), "
                         f"but the file does not start with the gzip magic bytes 1f 8b")
    return raw


def read_idx(filename, expected_magic: int | None = None) -> np.ndarray:
    """Parse one idx file (plain or .gz) into a numpy array of its declared shape.

    The idx format: 2 zero bytes, a type byte (0x08 = uint8, ...), a byte with the number of
    dimensions n, then n big-endian uint32 sizes, then the data, row-major, big-endian.
    ``expected_magic`` (e.g. 0x00000803 for images, 0x00000801 for labels) is checked if given.
    Raises ValueError naming the file and what was expected for any inconsistency, including
    trailing or missing bytes.
    """
    filename = Path(filename)
    data = _read_bytes(filename)
    if len(data) < 4:
        raise ValueError(f"{filename}: file too short ({len(data)} bytes) for an idx header; "
                         "expected at least a 4-byte magic number")
    magic = int.from_bytes(data[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(f"{filename}: bad magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
                         f"({'images, 3 dims' if expected_magic == 0x803 else 'labels, 1 dim' if expected_magic == 0x801 else 'idx'})")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise ValueError(f"{filename}: bad magic number 0x{magic:08x}; expected 0x0000TTNN with a known "
                         f"type byte TT in {sorted(hex(t) for t in _IDX_DTYPES)} and NN >= 1 dimensions")
    dtype = _IDX_DTYPES[data[2]]
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{filename}: truncated header: {len(data)} bytes, expected {header} "
                         f"(4-byte magic + {ndim} 4-byte dimensions)")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    if got != expected:
        what = "truncated" if got < expected else "trailing bytes after the data"
        raise ValueError(f"{filename}: {what}: header declares shape {shape} of {dtype} = {expected} "
                         f"bytes of data, but the file holds {got}")
    arr = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    return arr.reshape(shape).astype(dtype.newbyteorder("="))  # native byte order, writable copy


# ----------------------------------------------------------------------------------------------
# locating and loading

def default_data_dirs() -> list[str]:
    """The directories searched when path=None, in order: $DRQ_FASHION_MNIST_DIR, then the system dir."""
    dirs = []
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        dirs.append(env)
    dirs.append(SYSTEM_DIR)
    return dirs


def _find_file(directory: Path, stem: str) -> Path | None:
    # canonical names (Zalando / Debian) and the variant with a dot before idx used by some mirrors
    alt = stem.replace("-idx", ".idx")
    for name in (stem + ".gz", stem, alt + ".gz", alt):
        p = directory / name
        if p.is_file():
            return p
    return None


def _locate(path) -> tuple[Path, dict[str, Path]]:
    candidates = [Path(path)] if path is not None else [Path(p) for p in default_data_dirs()]
    reports = []
    for directory in candidates:
        found = {role: _find_file(directory, stem) for role, (stem, _, _) in _FILES.items()}
        missing = [_FILES[r][0] + "[.gz]" for r, p in found.items() if p is None]
        if not missing:
            return directory, found  # type: ignore[return-value]
        if not directory.is_dir():
            reports.append(f"{directory} (no such directory)")
        else:
            reports.append(f"{directory} (missing {', '.join(missing)})")
    raise FileNotFoundError(
        "Fashion-MNIST idx files not found; looked in: " + "; ".join(reports) + ". To get them, " + INSTALL_HINT)


def load_fashion_mnist(path=None) -> FashionMNIST:
    """Load Fashion-MNIST in the ann-benchmarks split (train = database, test = queries).

    path: a directory holding the four idx files (``train-images-idx3-ubyte[.gz]``,
    ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``).
    With path=None, ``$DRQ_FASHION_MNIST_DIR`` and then ``/usr/share/datasets/fashion-mnist`` (the Debian
    package ``dataset-fashion-mnist``) are searched.

    Returns a :class:`FashionMNIST` with xb float32 (60000, 784), xq float32 (10000, 784) holding raw
    pixel values 0..255, and int64 labels yb, yq. Raises FileNotFoundError (with the install hint)
    when the files are missing and ValueError when one is corrupt, truncated or inconsistent.
    """
    directory, files = _locate(path)
    arrays = {}
    for role, (stem, magic, dims) in _FILES.items():
        a = read_idx(files[role], expected_magic=magic)
        if a.shape[1:] != dims:
            raise ValueError(f"{files[role]}: expected items of shape {dims}, got {a.shape[1:]} (shape {a.shape})")
        arrays[role] = a
    out = {}
    for split in ("train", "test"):
        img, lab = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if img.shape[0] != lab.shape[0]:
            raise ValueError(f"{files[split + '_images']} holds {img.shape[0]} images but "
                             f"{files[split + '_labels']} holds {lab.shape[0]} labels; expected equal counts")
        if lab.size and lab.max() > 9:
            raise ValueError(f"{files[split + '_labels']}: labels must be 0..9, found {int(lab.max())}")
        if img.shape[0] != _EXPECTED_COUNT[split]:
            warnings.warn(f"{files[split + '_images']}: {img.shape[0]} images, the official Fashion-MNIST "
                          f"{split} split has {_EXPECTED_COUNT[split]}", stacklevel=2)
        out[split] = (np.ascontiguousarray(img.reshape(img.shape[0], -1), dtype=np.float32),
                      lab.astype(np.int64))
    return FashionMNIST(xb=out["train"][0], xq=out["test"][0], yb=out["train"][1], yq=out["test"][1],
                        path=str(directory))


# ----------------------------------------------------------------------------------------------
# ground truth with an on-disk cache

def default_cache_dir() -> Path:
    """$DRQ_CACHE_DIR, else ~/.cache/drqindex."""
    env = os.environ.get(ENV_CACHE_DIR)
    return Path(env) if env else Path.home() / ".cache" / "drqindex"


def _array_digest(h, a: np.ndarray) -> None:
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a).cast("B"))


def ground_truth_key(xb: np.ndarray, xq: np.ndarray, k: int) -> str:
    """The cache key: a hash of the bytes, dtypes and shapes of xb and xq, of k and of the metric."""
    h = hashlib.blake2b(digest_size=16)
    h.update(b"drqindex-gt-v1 L2 k=%d " % k)
    _array_digest(h, xb)
    _array_digest(h, xq)
    return h.hexdigest()


def _exact_knn(xb: np.ndarray, xq: np.ndarray, k: int) -> np.ndarray:
    import faiss  # lazily: loading the data never needs it

    index = faiss.IndexFlatL2(xb.shape[1])
    index.add(xb)
    _, I = index.search(xq, k)
    return I.astype(np.int64, copy=False)


def _load_cached(file: Path, nq: int, k: int, nb: int) -> np.ndarray | None:
    try:
        with open(file, "rb") as f:
            gt = np.load(f, allow_pickle=False)
    except (FileNotFoundError, NotADirectoryError):  # no cache yet
        return None
    except Exception as e:  # corrupt / truncated / not an npy file
        warnings.warn(f"ground-truth cache {file} unreadable ({type(e).__name__}: {e}); recomputing", stacklevel=3)
        return None
    if gt.dtype != np.int64 or gt.shape != (nq, k) or (gt.size and (gt.min() < 0 or gt.max() >= nb)):
        warnings.warn(f"ground-truth cache {file} holds {gt.shape} {gt.dtype}, expected ({nq}, {k}) int64 "
                      f"ids in [0, {nb}); recomputing", stacklevel=3)
        return None
    return gt


def _atomic_save(file: Path, gt: np.ndarray) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=file.name + ".", suffix=".tmp", dir=file.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, gt, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a shared cache should be readable
        os.replace(tmp, file)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def ground_truth(xb: np.ndarray, xq: np.ndarray, k: int = 100, cache_dir=None, *,
                 use_cache: bool = True) -> np.ndarray:
    """Exact L2 k nearest neighbours of each query: int64 (nq, k) ids into xb, nearest first.

    Computed with faiss.IndexFlatL2 and cached on disk as ``gt_<key>.npy`` in cache_dir (default
    ``$DRQ_CACHE_DIR`` or ``~/.cache/drqindex``); the key hashes the contents of xb and xq and k,
    so a different slice or k never reads a stale file. Writes are atomic (temp file + rename); an
    unreadable or inconsistent cache file is recomputed and overwritten. A cache directory that
    cannot be written only produces a warning.
    """
    xb = np.ascontiguousarray(xb, dtype=np.float32)
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    if xb.ndim != 2 or xq.ndim != 2 or xb.shape[1] != xq.shape[1]:
        raise ValueError(f"ground_truth: expected xb (nb, d) and xq (nq, d) with the same d, "
                         f"got {xb.shape} and {xq.shape}")
    k = int(k)
    if not 1 <= k <= xb.shape[0]:
        raise ValueError(f"ground_truth: expected 1 <= k <= nb = {xb.shape[0]}, got k={k}")
    nb, nq = xb.shape[0], xq.shape[0]
    file = None
    if use_cache:
        file = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        file = file / f"gt_{ground_truth_key(xb, xq, k)}.npy"
        gt = _load_cached(file, nq, k, nb)
        if gt is not None:
            return gt
    gt = _exact_knn(xb, xq, k)
    if file is not None:
        try:
            _atomic_save(file, gt)
        except OSError as e:
            warnings.warn(f"could not write ground-truth cache {file}: {e}", stacklevel=2)
    return gt
