"""Runs the AVX-512 kernels (ADC scan; 4-bit fast scan; ternary encoder and Hamming filter) on CPUs without AVX-512.

csrc/drq/adc_avx512.cpp is compiled against SIMDe (portable implementations of the x86
intrinsics; Debian package libsimde-dev) through tests/cpp/simde_shim/immintrin.h and checked bit
for bit against the scalar reference kernel by tests/cpp/adc_avx512_emulated.cpp. On a CPU with
AVX-512 the real kernel is also covered by test_core_kernels.py; this test makes sure the kernel
is exercised on every machine that has a compiler and SIMDe. Skipped when either is missing.
tests/cpp/hash_avx512_emulated.cpp does the same for csrc/drq/ternary_avx512.cpp and
csrc/drq/hamming_avx512.cpp (VPOPCNTDQ, which few CPUs have).
"""
import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _simde_available(compiler):
    probe = subprocess.run([compiler, "-x", "c++", "-fsyntax-only", "-"],
                           input="#include <simde/x86/avx512.h>\n", capture_output=True, text=True)
    return probe.returncode == 0


def _build_and_run(tmp_path, driver, sources):
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    if not _simde_available(compiler):
        pytest.skip("SIMDe headers not installed (apt-get install libsimde-dev)")
    exe = tmp_path / Path(driver).stem
    cmd = [
        compiler, "-std=c++17", "-O1", "-ffp-contract=off", "-Wno-psabi",
        # The shim must come first so the kernel's <immintrin.h> resolves to it.
        f"-I{ROOT / 'tests' / 'cpp' / 'simde_shim'}", f"-I{ROOT / 'csrc'}",
        "-DDRQ_HAVE_X86_SIMD=1",
        str(ROOT / "tests" / "cpp" / driver),
        *(str(ROOT / "csrc" / "drq" / source) for source in sources),
        "-o", str(exe),
    ]
    build = subprocess.run(cmd, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert " 0 mismatches" in run.stdout


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="the AVX-512 kernel is only built for x86-64")
def test_avx512_kernel_matches_reference_under_emulation(tmp_path):
    _build_and_run(tmp_path, "adc_avx512_emulated.cpp", ["adc_avx512.cpp", "adc_ref.cpp"])


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="the AVX-512 kernels are only built for x86-64")
def test_avx512_hash_kernels_match_reference_under_emulation(tmp_path):
    _build_and_run(tmp_path, "hash_avx512_emulated.cpp",
                   ["ternary_avx512.cpp", "hamming_avx512.cpp", "ternary_ref.cpp", "ternary_lut.cpp",
                    "hamming_ref.cpp"])


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="the AVX-512 kernels are only built for x86-64")
def test_avx512_fastscan_kernel_matches_reference_under_emulation(tmp_path):
    _build_and_run(tmp_path, "fastscan_avx512_emulated.cpp", ["fastscan_avx512.cpp", "fastscan_ref.cpp"])
