"""The vector width of the code numba generates for gaussmix's kernels.

LLVM's loop vectoriser keeps to 256-bit vectors on Intel CPUs with AVX-512 (its tuning flag
``prefer-256-bit``): on the first AVX-512 server cores, Skylake-SP and Cascade Lake, 512-bit
instructions lowered the clock of the whole core. The kernels here are loops over rows that
vectorise whole, and on the server cores since Ice Lake the clock penalty is small, so on those
cores gaussmix asks numba for the full 512-bit width (measured on an Emerald Rapids machine:
``benchmarks/bench_cpu.py``, README "Performance (CPU)").

numba has one code-generation target per process, so this applies to every function numba
compiles in the process after a gaussmix kernel module is imported, the user's own included.
It changes which instructions run, not what they compute beyond the last bits of reassociated
(``fastmath``) sums. It is left alone when the user has chosen a target
(``NUMBA_CPU_NAME``, ``NUMBA_CPU_FEATURES`` or ``numba.config.CPU_FEATURES``), when numba
has already compiled something (its target is fixed by then), and when
``GAUSSMIX_VECTOR_WIDTH=256`` is set; that setting also keeps the kernels written with explicit
512-bit vectors (:func:`wide_registers`) out of use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["WIDE_VECTOR_CPUS", "configure", "target_features", "wide_registers"]

# LLVM's names of the Intel server cores whose 512-bit instructions cost little clock
WIDE_VECTOR_CPUS = frozenset(
    {"icelake-server", "sapphirerapids", "emeraldrapids", "graniterapids", "graniterapids-d"}
)


def _declined(environ: Mapping[str, str]) -> bool:
    """Whether the user asked for 256-bit vectors (``GAUSSMIX_VECTOR_WIDTH=256``)."""
    return environ.get("GAUSSMIX_VECTOR_WIDTH", "").strip() == "256"


def target_features(cpu_name: str, features: str, environ: Mapping[str, str]) -> str | None:
    """The feature string for numba's target, or ``None`` to leave numba's default.

    Parameters
    ----------
    cpu_name : str
        LLVM's name of the host CPU (``llvmlite.binding.get_host_cpu_name()``).
    features : str
        LLVM's comma-separated host features (``get_host_cpu_features().flatten()``).
    environ : mapping
        The process environment.
    """
    if _declined(environ):
        return None
    if "NUMBA_CPU_NAME" in environ or "NUMBA_CPU_FEATURES" in environ:
        return None
    if cpu_name not in WIDE_VECTOR_CPUS or "+avx512f" not in features.split(","):
        return None
    return features + ",-prefer-256-bit"


def configure() -> None:
    """Set numba's target features for the full vector width where :func:`target_features`
    says so, unless numba's code generator already exists."""
    import llvmlite.binding as llvm
    import numba
    from numba.core.registry import cpu_target

    if numba.config.CPU_FEATURES is not None or numba.config.CPU_NAME is not None:
        return
    # the target context (and with it the code generator) is created on first use: once it
    # exists, a change of the configuration would not reach it
    if "_toplevel_target_context" in vars(cpu_target):
        return
    wanted = target_features(
        llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten(), os.environ
    )
    if wanted is not None:
        numba.config.CPU_FEATURES = wanted


def wide_registers() -> bool:
    """Whether numba's target has AVX-512's 32 registers of 8 float64, and the user has not
    declined 512-bit vectors (``GAUSSMIX_VECTOR_WIDTH=256``).

    Kernels written with explicit 512-bit vectors (:mod:`gaussmix.backends._quad_kernel`) ask
    this before they are used. A target named without its features (``NUMBA_CPU_NAME`` alone)
    counts as without: its features are not known here.
    """
    import llvmlite.binding as llvm
    import numba

    if _declined(os.environ):
        return False
    features = numba.config.CPU_FEATURES
    if features is None:
        if numba.config.CPU_NAME not in (None, "host"):
            return False
        features = llvm.get_host_cpu_features().flatten()
    return "+avx512f" in features.split(",")


configure()
