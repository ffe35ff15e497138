"""Small helpers shared by the benchmark scripts: timing, machine description, table writing."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def log(msg: str) -> None:
    """Progress line with a wall-clock stamp, flushed at once (benchmarks run for minutes)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Timer:
    """with Timer() as t: ...; t.s holds the elapsed seconds (perf_counter)."""

    def __enter__(self):
        self._t0 = time.perf_counter()
        self.s = float("nan")
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self._t0
        return False


def median_time(fn, repeats: int = 3, warmup: int = 1):
    """Run fn() `warmup` times untimed, then `repeats` times timed.

    Returns (median seconds, list of the timed seconds, result of the last call)."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, result


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine_info() -> dict:
    flags = cpu_flags()
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512vl") if f in flags]
    return {
        "cpu": cpu_model(),
        "cores_available": available_cores(),
        "cpu_simd_flags": simd,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def fmt(v, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if v != v:  # nan
            return "–"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(headers: list[str], rows: list[list], align: str | None = None) -> str:
    """A GitHub markdown table; align is a string of 'l'/'r' per column (default: first l, rest r)."""
    align = align or ("l" + "r" * (len(headers) - 1))
    cells = [[fmt(c) for c in r] for r in rows]
    out = ["| " + " | ".join(headers) + " |",
           "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(out)


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def write_json(path: Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n")
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def import_drqindex(*modules: str) -> None:
    """Import drqindex (and the given submodules, e.g. "data"); from a source checkout without
    `pip install -e .`, fall back to the in-tree package under python/. Exits with a hint when the
    extension is not built."""
    import importlib

    def _load():
        importlib.import_module("drqindex")
        for m in modules:
            importlib.import_module(f"drqindex.{m}")

    try:
        _load()
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
        for name in [m for m in sys.modules if m == "drqindex" or m.startswith("drqindex.")]:
            del sys.modules[name]
        try:
            _load()
        except ImportError as e:
            sys.exit(f"error: cannot import drqindex ({e}); build it first: `make build`")
