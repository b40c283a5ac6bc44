#!/usr/bin/env bash
# The one device command of the GPU-engine issue: versions, the CUDA tests, a sweep of the
# Triton launch settings and the G1-G4 benchmark against torchgmm and pomegranate, every
# result under $OUT. Each step has its own timeout and log, and a failing step does not stop
# the next ones.
#
#   on the GPU machine:  bash benchmarks/gpu_check.sh            ($OUT set by the device tool;
#                        through it: command "bash benchmarks/gpu_check.sh", carry [".whl"],
#                        timeout_s 520: the steps' own timeouts add up to about 490 s)
#   here, on the CPU:    GPU_CHECK_CPU=1 OUT=/tmp/out bash benchmarks/gpu_check.sh
#
# Before the device call, here (network): GPU_CHECK_STEPS=wheels OUT=/tmp/w bash benchmarks/gpu_check.sh
#
# GPU_CHECK_CPU=1 runs the same steps on the CPU (Triton's interpreter, tiny workloads, the
# tests that need no GPU) so that a typo cannot waste device time. Peers come from wheels in
# .whl/ (ignored by git) when that folder exists; with GPU_CHECK_PEERS=/path that path is put
# on PYTHONPATH instead. Other knobs: GPU_CHECK_STEPS (default "versions bench tests":
# the measurements first, so that a slow test run cannot cost them),
# GPU_CHECK_BENCH_ARGS (extra arguments), GPU_CHECK_TUNING (fixed launch settings, skips the
# sweep), GPU_CHECK_PY (the python, default python3).
set -u
: "${OUT:?set OUT to a folder for the results}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
PY=${GPU_CHECK_PY:-python3}
STEPS=${GPU_CHECK_STEPS:-versions bench tests}
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)
stamp() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*"; }

if [ -n "${GPU_CHECK_PEERS:-}" ]; then
    export PYTHONPATH="$PYTHONPATH:$GPU_CHECK_PEERS"
elif [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    stamp "installing peer wheels into /tmp/site"
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl >"$OUT/pip.log" 2>&1 || stamp "pip install FAILED (see pip.log)"
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

if [ "${GPU_CHECK_CPU:-0}" = 1 ]; then
    export TRITON_INTERPRET=1
    BENCH=(--device cpu --scale 0.0002 --iters 2 --repeats 1 --sklearn none --max-components 4
           --tune --tune-seconds 10 --peak-tflops 67)
    TEST_TIMEOUT=900
    BENCH_TIMEOUT=1500
    TEST_MARKS=""
else
    # 5 timed iterations, best of 2, 20 s of sweep per workload: estimated (never run on a
    # GPU yet) at 3-4 minutes on an H200, capped at 300 s
    BENCH=(--device cuda --iters 5 --repeats 2 --sklearn none --peak-tflops 67)
    if [ -n "${GPU_CHECK_TUNING:-}" ]; then
        BENCH+=(--tuning "$GPU_CHECK_TUNING")
    else
        BENCH+=(--tune --tune-seconds 20)
    fi
    TEST_TIMEOUT=${GPU_CHECK_TEST_TIMEOUT:-120}
    BENCH_TIMEOUT=${GPU_CHECK_BENCH_TIMEOUT:-300}
    TEST_MARKS="not slow"
fi

for step in $STEPS; do
    case $step in
    wheels)
        # here, with network, before the device call: the peers as wheels for python 3.12 in
        # .whl/ (ignored by git; name it in the device call's carry). The device image has
        # their other needs (pytorch-lightning, lightning-utilities, torchmetrics, tqdm,
        # networkx, numba); apricot-select is an sdist on PyPI, so a wheel is built from it.
        stamp "fetching peer wheels into .whl/"
        mkdir -p .whl
        plats=()
        for p in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
            plats+=(--platform "$p")
        done
        $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp "${plats[@]}" -d .whl torchgmm==0.1.4 pomegranate==1.1.2 \
            && $PY -m pip download -q --no-deps --no-binary=:all: -d /tmp/gpu_check_sdist \
                apricot-select==0.6.1 \
            && $PY -m pip wheel -q --no-deps --no-build-isolation -w .whl \
                /tmp/gpu_check_sdist/apricot-select-0.6.1.tar.gz \
            || stamp "fetching wheels FAILED"
        ls .whl
        ;;
    versions)
        stamp "versions"
        {
            nvidia-smi 2>&1 || echo "nvidia-smi: not available"
            $PY - <<'EOF' 2>&1
import importlib.metadata as md
import platform

import torch

print("python", platform.python_version())
print("torch", torch.__version__, "cuda", torch.version.cuda)
for name in ("triton", "numpy", "scipy", "scikit-learn", "numba", "torchgmm", "pomegranate",
             "pytorch-lightning", "torchmetrics", "apricot-select"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "not installed")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, "SMs", p.multi_processor_count, "memory GiB", round(p.total_memory / 2**30, 1))
    print("driver", torch.cuda.driver_version() if hasattr(torch.cuda, "driver_version") else "?")
EOF
        } >"$OUT/versions.txt"
        cat "$OUT/versions.txt" | grep -v "^|  *[0-9]" | head -40
        ;;
    tests)
        stamp "CUDA tests"
        # on the GPU the interpreter's cases (marked slow, CPU-only, run here) are left out
        timeout "$TEST_TIMEOUT" $PY -m pytest -q -p no:cacheprovider -rs --timeout 150 \
            ${TEST_MARKS:+-m "$TEST_MARKS"} \
            tests/backends/test_torch.py tests/backends/test_triton.py >"$OUT/pytest.log" 2>&1
        stamp "backend tests exit $?"
        # test_models.py: the torch executors (CPU and CUDA parametrisations) only, not the
        # numba engines (their compile takes minutes cold)
        timeout 60 $PY -m pytest -q -p no:cacheprovider -rs --timeout 100 tests/test_models.py \
            -k "torch" >>"$OUT/pytest.log" 2>&1
        stamp "conformance tests exit $? (pytest.log)"
        grep -E "passed|failed|error|FAILED|ERROR" "$OUT/pytest.log" | tail -30
        ;;
    bench)
        stamp "benchmark"
        timeout "$BENCH_TIMEOUT" $PY benchmarks/bench_gpu.py "${BENCH[@]}" ${GPU_CHECK_BENCH_ARGS:-} \
            --json "$OUT/gpu-h200.json" >"$OUT/bench.log" 2>&1
        stamp "bench exit $? (bench.log)"
        grep -v "^ *| *[GN]\|^|---" "$OUT/bench.log" | tail -60
        grep "^| G" "$OUT/bench.log"
        ;;
    *)
        stamp "unknown step $step"
        ;;
    esac
done
stamp "done"
