"""numba's vector width for the kernels (gaussmix._jit)."""

import os
import subprocess
import sys

import llvmlite.binding as llvm
import pytest

from gaussmix._jit import WIDE_VECTOR_CPUS, target_features, wide_registers

AVX512 = "+sse2,+avx2,+avx512f,+avx512dq,-amx-int8"


@pytest.mark.parametrize("cpu", sorted(WIDE_VECTOR_CPUS))
def test_wide_cores_get_512_bit_vectors(cpu):
    assert target_features(cpu, AVX512, {}) == AVX512 + ",-prefer-256-bit"


@pytest.mark.parametrize(
    ("cpu", "features", "environ"),
    [
        # the first AVX-512 server cores lower their clock on 512-bit instructions
        ("skylake-avx512", AVX512, {}),
        ("cascadelake", AVX512, {}),
        ("znver3", "+sse2,+avx2,-avx512f", {}),
        # a listed name whose features lack AVX-512 (a virtual machine that hides it)
        ("sapphirerapids", "+sse2,+avx2,-avx512f", {}),
        ("sapphirerapids", AVX512, {"GAUSSMIX_VECTOR_WIDTH": "256"}),
        # the user's own choice of target stands
        ("sapphirerapids", AVX512, {"NUMBA_CPU_FEATURES": "+avx2"}),
        ("sapphirerapids", AVX512, {"NUMBA_CPU_NAME": "generic"}),
    ],
)
def test_other_cases_keep_numbas_default(cpu, features, environ):
    assert target_features(cpu, features, environ) is None


def _environ(**env) -> dict:
    """This process's environment without a choice of target or width, plus ``env``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")}
    environ.pop("GAUSSMIX_VECTOR_WIDTH", None)
    return environ | env


def _features_after(code: str, **env) -> str:
    """numba.config.CPU_FEATURES in a fresh interpreter after ``code``."""
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport numba; print(numba.config.CPU_FEATURES)"],
        env=_environ(**env), capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


def test_importing_a_kernel_module_sets_the_target_of_this_host():
    expected = target_features(
        llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten(), {}
    )
    got = _features_after("import gaussmix.backends._cpu_kernels")
    assert got == str(expected)


def test_opt_out_and_a_target_already_in_use_are_left_alone():
    assert _features_after("import gaussmix._small", GAUSSMIX_VECTOR_WIDTH="256") == "None"
    # numba compiled before gaussmix was imported: its code generator is fixed
    code = (
        "import numba\n"
        "numba.njit(lambda x: x + 1)(1)\n"
        "import gaussmix.backends._cpu_kernels"
    )
    assert _features_after(code) == "None"


@pytest.mark.skipif(
    target_features(llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten(), {})
    is None,
    reason="this CPU keeps LLVM's default vector width",
)
def test_kernels_use_512_bit_registers(tmp_path):
    code = (
        "import numpy as np\n"
        "from gaussmix.backends import _cpu_kernels as k\n"
        "lj = np.ones((8, 256)); mx = np.empty(256)\n"
        "k._row_max(lj, 256, mx)\n"
        "asm = k._row_max.inspect_asm(k._row_max.signatures[0])\n"
        "print('zmm' in asm)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=_environ(NUMBA_CACHE_DIR=str(tmp_path)),
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == "True"


@pytest.mark.parametrize(
    ("name", "features", "width", "expected"),
    [
        (None, AVX512, "", True),
        (None, "+sse2,+avx2,-avx512f", "", False),
        # 512-bit vectors declined: the explicit-width kernels stand aside too
        (None, AVX512, "256", False),
        # a target named without its features: not known to have the registers
        ("skylake-avx512", None, "", False),
    ],
)
def test_wide_registers_of_numbas_target(monkeypatch, name, features, width, expected):
    import numba

    monkeypatch.setattr(numba.config, "CPU_NAME", name)
    monkeypatch.setattr(numba.config, "CPU_FEATURES", features)
    monkeypatch.setenv("GAUSSMIX_VECTOR_WIDTH", width)
    assert wide_registers() is expected


def test_wide_registers_of_the_host(monkeypatch):
    import numba

    monkeypatch.setattr(numba.config, "CPU_NAME", None)
    monkeypatch.setattr(numba.config, "CPU_FEATURES", None)
    monkeypatch.delenv("GAUSSMIX_VECTOR_WIDTH", raising=False)
    host = "+avx512f" in llvm.get_host_cpu_features().flatten().split(",")
    assert wide_registers() is host
