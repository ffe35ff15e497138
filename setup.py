"""Builds drqindex, whose C++ extension drqindex._core is compiled by CMake.

Metadata lives in pyproject.toml; this file only adds the CMake-driven extension build, so that
`pip install .`, `pip install -e .` (the module is then built into python/drqindex/) and
`python setup.py build_ext --inplace` all work.

Environment:
  CMAKE_BUILD_PARALLEL_LEVEL  parallel compile jobs (default: number of CPUs)
  DRQ_CMAKE_ARGS              extra CMake arguments, space separated
  DRQ_BUILD_TYPE              CMake build type (default Release; Debug with --debug)
"""
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


def _tool(module_name: str, binary: str):
    """The executable shipped by the pip package `module_name` (present in build isolation and
    in the venv), else one on PATH. The pip packages are preferred because a PATH lookup from a
    non-activated venv may land on an unrelated shim."""
    try:
        module = __import__(module_name)
        candidate = Path(getattr(module, "BIN_DIR", getattr(module, "CMAKE_BIN_DIR", ""))) / binary
        if candidate.is_file():
            return str(candidate)
    except ImportError:
        pass
    beside_python = Path(sys.executable).parent / binary
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which(binary)


def _cache_entries(cache_file: Path) -> dict:
    entries = {}
    for line in cache_file.read_text(errors="replace").splitlines():
        if ":" in line and "=" in line and not line.startswith(("#", "//")):
            key, _, value = line.partition("=")
            entries[key.split(":", 1)[0]] = value
    return entries


def _discard_stale_cache(build_dir: Path, cmake: str) -> None:
    """Builds are incremental (the CMake build directory under build/ is reused), but a directory
    configured from another environment, e.g. pip's temporary isolated build environment, names
    a cmake or ninja that no longer exists and cannot be reused: start it afresh."""
    cache_file = build_dir / "CMakeCache.txt"
    if not cache_file.is_file():
        return
    entries = _cache_entries(cache_file)
    cached_cmake = entries.get("CMAKE_COMMAND", "")
    make_program = entries.get("CMAKE_MAKE_PROGRAM", "")
    same_cmake = cached_cmake and Path(cached_cmake).resolve() == Path(cmake).resolve()
    if not same_cmake or (make_program and not Path(make_program).exists()):
        shutil.rmtree(build_dir)


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        import pybind11

        cmake = _tool("cmake", "cmake")
        if cmake is None:
            raise RuntimeError("CMake >= 3.18 is required to build drqindex._core")
        output_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_type = os.environ.get("DRQ_BUILD_TYPE", "Debug" if self.debug else "Release")
        # A fixed directory (not setuptools' build_temp, which is a fresh temporary directory for
        # editable installs): `pip install -e .` after a C++ edit recompiles only what changed.
        build_dir = ROOT / "build" / f"cmake-{sysconfig.get_platform()}-{sys.implementation.cache_tag}-{build_type.lower()}"
        _discard_stale_cache(build_dir, cmake)
        build_dir.mkdir(parents=True, exist_ok=True)

        configure = [
            cmake, "-S", str(ROOT), "-B", str(build_dir),
            f"-DCMAKE_BUILD_TYPE={build_type}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DDRQ_OUTPUT_DIR={output_dir}",
        ]
        ninja = _tool("ninja", "ninja")
        if ninja is not None and not (build_dir / "CMakeCache.txt").exists():
            configure += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
        configure += shlex.split(os.environ.get("DRQ_CMAKE_ARGS", ""))
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)

        subprocess.run(configure, check=True)
        subprocess.run([cmake, "--build", str(build_dir), "--parallel", jobs], check=True)


setup(
    ext_modules=[CMakeExtension("drqindex._core")],
    cmdclass={"build_ext": CMakeBuild},
)
