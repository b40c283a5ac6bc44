"""First calls of the compiled kernels (CPU engine, model-selection grid) on a cold cache.

The engine's kernels are compiled on first use and cached on disk (``cache=True``); inputs of
fewer than ``gaussmix.backends.cpu.MIN_ROWS`` rows run the numpy code and never compile. This
script measures, each step in a fresh Python process sharing one empty ``NUMBA_CACHE_DIR``:

1. a float64 fit on a cold cache (``import gaussmix``, the fit, the first ``score_samples`` and
   ``predict_proba``);
2. the same in a new process, the cache now warm (loading the kernels from disk);
3. a float32 fit, whose kernels are compiled separately (the float64 ones cached);
4. the float64 fit again with another covariance type and width (every type and width shares
   the kernels compiled in step 1);

then the compiled grid of model selection (``gaussmix.selection.select``: mclust's 14 models,
K = 1..9; its own kernels, in the same cache):

5. ``select`` on a cold grid cache;
6. ``select`` on the same rows read from a memory-mapped ``.npy`` file (read-only: numba types
   such arrays apart, so the grid copies them rather than compile its kernels again);
7. ``select`` again, the cache warm.

Usage::

    python benchmarks/bench_compile.py                  # 20 000 x 8, K = 3
    python benchmarks/bench_compile.py --rows 50000 --features 16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def child(rows: int, features: int, covariance_type: str, dtype: str) -> None:
    """One step: time the import, a 3-iteration fit and two predictions; print JSON."""
    t0 = time.perf_counter()
    import numpy as np

    from gaussmix import GaussianMixture

    t1 = time.perf_counter()
    X = np.random.default_rng(0).normal(size=(rows, features)).astype(dtype)
    gm = GaussianMixture(
        3, covariance_type=covariance_type, max_iter=3, tol=0.0, random_state=0
    ).fit(X)
    t2 = time.perf_counter()
    gm.score_samples(X)
    t3 = time.perf_counter()
    gm.predict_proba(X)
    t4 = time.perf_counter()
    print(json.dumps({"import": t1 - t0, "fit": t2 - t1, "score_samples": t3 - t2,
                      "predict_proba": t4 - t3}))  # fmt: skip


def child_select(rows: int, features: int, path: str) -> None:
    """One grid step: time the import and ``select`` (from ``path``, memory-mapped, unless
    empty); print JSON."""
    t0 = time.perf_counter()
    import numpy as np

    from gaussmix.selection import select

    t1 = time.perf_counter()
    if path:
        X = np.load(path, mmap_mode="r")
    else:
        rng = np.random.default_rng(0)
        X = rng.normal(size=(rows, features)) + 4.0 * rng.integers(0, 3, (rows, 1))
    t2 = time.perf_counter()
    select(X)
    t3 = time.perf_counter()
    print(json.dumps({"import": t1 - t0, "select": t3 - t2}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--select-rows", type=int, default=500)
    parser.add_argument("--select-features", type=int, default=3)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--child-select", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        rows, features, cov, dtype = args.child
        child(int(rows), int(features), cov, dtype)
        return
    if args.child_select:
        rows, features, path = args.child_select
        child_select(int(rows), int(features), path)
        return
    from bench_cpu import machine_info

    info = machine_info()
    print(
        f"machine : {info['cpu']}, {info['usable_cpus']} usable CPUs; python {info['python']}, "
        f"numpy {info['numpy']}, numba {info['numba']}"
    )
    print(f"data    : {args.rows} x {args.features} normal rows, K = 3, 3 EM iterations")
    steps = [
        ("float64 fit, cold cache", args.features, "full", "float64"),
        ("float64 fit, warm cache", args.features, "full", "float64"),
        ("float32 fit (float64 cached)", args.features, "full", "float32"),
        ("float64, other type and width", args.features + 3, "diag", "float64"),
    ]
    with tempfile.TemporaryDirectory(prefix="gaussmix-numba-cache-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        print(f"{'step':32s} {'import s':>9s} {'fit s':>7s} {'score_samples s':>16s} "
              f"{'predict_proba s':>16s}")  # fmt: skip
        for label, d, cov, dtype in steps:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(args.rows), str(d), cov, dtype],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{label:32s} {r['import']:9.1f} {r['fit']:7.1f} {r['score_samples']:16.1f} "
                  f"{r['predict_proba']:16.1f}")  # fmt: skip
        rows, d = args.select_rows, args.select_features
        print(f"\nselect  : {rows} x {d} rows (3 clusters), mclust's 14 models, K = 1..9")
        npy = os.path.join(cache, "rows.npy")
        rng = np.random.default_rng(0)
        np.save(npy, rng.normal(size=(rows, d)) + 4.0 * rng.integers(0, 3, (rows, 1)))
        print(f"{'step':32s} {'import s':>9s} {'select s':>9s}")
        for label, path in (
            ("select, cold grid cache", ""),
            ("select, read-only .npy rows", npy),
            ("select, warm cache", ""),
        ):
            out = subprocess.run(
                [sys.executable, __file__, "--child-select", str(rows), str(d), path],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{label:32s} {r['import']:9.1f} {r['select']:9.1f}")


if __name__ == "__main__":
    main()
