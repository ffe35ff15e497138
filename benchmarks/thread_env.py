"""Thread-pool environment for the benchmark scripts, set from the command line BEFORE numpy,
torch or faiss are imported (their BLAS / OpenMP pools read their size once, at load time).
This module imports nothing heavy on purpose."""
from __future__ import annotations

import os
import sys

_POOL_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def threads_from_argv(argv=None) -> str | None:
    """The value of --threads N / --threads=N in argv (default sys.argv[1:]), or None."""
    argv = sys.argv[1:] if argv is None else argv
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return None


def set_pool_threads(n: str | int | None, *, only_if_unset: bool = False) -> None:
    """OMP/OpenBLAS/MKL pool sizes = n (a positive integer; anything else is ignored)."""
    if n is None or not str(n).isdigit() or int(n) < 1:
        return
    for var in _POOL_VARS:
        if only_if_unset:
            os.environ.setdefault(var, str(n))
        else:
            os.environ[var] = str(n)


def omp_passive() -> None:
    """OpenMP threads sleep instead of spinning at barriers: on a machine shared with other jobs,
    spinning threads that get descheduled make faiss's many short parallel regions crawl."""
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
