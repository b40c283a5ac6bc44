"""EM with missing values against EM on the complete data: the W4 workload of issue 12.

W4 (1 000 000 × 8, K = 8, full covariances; the data of ``bench_cpu.py``) with 10 % of the
entries removed completely at random (MCAR, a fixed seed): about 57 % of the rows then hold at
least one NaN, in up to 2⁸ - 1 missingness patterns. Targets: at most 3× the complete-data
time per EM iteration, and a peak memory of a default fit of at most ``size(X) + 128 MiB``.

- ms/iteration: both fits start from the same parameters (``bench_cpu.start_params`` of the
  complete data), run with ``tol=0``, and are timed at two iteration counts, each the fastest of
  several runs; ms/iteration is the difference over the extra iterations, so validation, the
  one-off split of the rows by pattern and the start cancel. The same engine (``auto``: the
  compiled cpu engine) runs both. Each measurement runs in a fresh Python process after a
  warm-up fit that compiles or loads the kernels. CPU ms/iteration (all threads' CPU time,
  ``time.process_time``) is printed too: on a shared machine it measures the work done more
  steadily than the wall clock.
- memory: a fresh process loads every kernel on a small incomplete data set, records its RSS,
  makes X (NaN written in place, no copy), runs a default fit (k-means start, 5 iterations)
  and reports its peak RSS (``ru_maxrss``) above the RSS before X was made.

Usage::

    python benchmarks/bench_missing.py            # the W4 row (about a minute on 2 cores)
    python benchmarks/bench_missing.py --quick    # N/100 in one process: a smoke test
    python benchmarks/bench_missing.py --frac 0.3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# the sibling script, found through the path above
from bench_cpu import (
    Workload,
    _peak_rss_mib,
    _rss_now_mib,
    make_data,
    start_params,
)

W4 = Workload("W4", 1_000_000, 8, 8, "full")
BUDGET_MIB = 128
MAX_RATIO = 3.0
MIN_TIMED_SECONDS = 0.25


def hide(X: np.ndarray, frac: float, seed: int = 2024) -> np.ndarray:
    """Set a fraction ``frac`` of the entries of X to NaN, completely at random, in place."""
    rng = np.random.default_rng(seed)
    step = 1 << 16
    for s in range(0, X.shape[0], step):
        block = X[s : s + step]
        block[rng.random(block.shape) < frac] = np.nan
    return X


def _fit_seconds(X, start, w: Workload, max_iter: int, repeat: int):
    from gaussmix import GaussianMixture

    best, best_cpu, est = np.inf, np.inf, None
    for _ in range(repeat):
        est = GaussianMixture(
            w.k, covariance_type=w.covariance_type, tol=0.0, max_iter=max_iter, **start
        )
        t0, c0 = time.perf_counter(), time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(X)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best, best_cpu, est


def measure_em(w: Workload, n: int, frac: float, min_seconds: float) -> dict:
    """ms per EM iteration on the data with a fraction ``frac`` of NaN (0: complete)."""
    X = make_data(w, n, np.float64)
    start = start_params(w.covariance_type, w.k, X)  # of the complete data, shared
    if frac:
        hide(X, frac)
    t1, _, _ = _fit_seconds(X, start, w, 1, 1)  # warm-up: kernels, page faults
    a, b = 2, 5
    repeat = 5 if t1 * b < 1.0 else 3
    t_a, c_a, _ = _fit_seconds(X, start, w, a, repeat)
    t_b, c_b, est = _fit_seconds(X, start, w, b, repeat)
    if t_b - t_a < min_seconds:
        per_iter = max((t_b - t_a) / (b - a), 1e-5)
        b = a + min(400, max(b - a + 1, int(np.ceil(min_seconds / per_iter))))
        t_a, c_a, _ = _fit_seconds(X, start, w, a, repeat)
        t_b, c_b, est = _fit_seconds(X, start, w, b, repeat)
    upper_bound = not t_b > t_a
    out = {
        "ms_per_iter": (t_b / b if upper_bound else (t_b - t_a) / (b - a)) * 1e3,
        # CPU time of all threads: the work done, less sensitive to other processes
        "cpu_ms_per_iter": (c_b - c_a) / (b - a) * 1e3,
        "upper_bound": upper_bound,
        "iters": [a, b],
        "lower_bound": float(est.lower_bound_),
        "monotone": bool(np.all(np.diff(est.lower_bounds_) >= -1e-12)),
    }
    if frac:
        from gaussmix._missing import MissingRows

        mask = np.isnan(X)
        rows = np.flatnonzero(mask.any(axis=1))
        out["rows_with_nan"] = int(rows.size)
        out["patterns"] = int(MissingRows(X, None, rows).n_patterns)
        out["missing_entries"] = float(mask.mean())
    return out


def measure_memory(w: Workload, n: int, frac: float, iters: int) -> dict:
    """Peak RSS of a default fit on the incomplete data over the RSS before X was made."""
    from gaussmix import GaussianMixture

    tiny = hide(make_data(w, 20_000, np.float64), frac)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        GaussianMixture(w.k, covariance_type=w.covariance_type, max_iter=1).fit(tiny)
    del tiny
    base = _rss_now_mib()
    X = hide(make_data(w, n, np.float64), frac)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        GaussianMixture(w.k, covariance_type=w.covariance_type, max_iter=iters).fit(X)
    peak = _peak_rss_mib()
    return {
        "rss_before_x_mib": base,
        "peak_rss_mib": peak,
        "x_mib": X.nbytes / 2**20,
        "extra_mib": peak - base,
    }


def child_main(spec: dict) -> dict:
    w = Workload(**spec["workload"])
    if spec["kind"] == "em":
        return measure_em(w, spec["n"], spec["frac"], spec["min_seconds"])
    return measure_memory(w, spec["n"], spec["frac"], spec["iters"])


def run_child(spec: dict, in_process: bool) -> dict:
    if in_process:
        return child_main(spec)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"measurement {spec['kind']} failed:\n" + proc.stderr[-4000:])
    return json.loads(lines[-1][len("RESULT ") :])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N/100, in one process")
    parser.add_argument("--frac", type=float, default=0.1, help="fraction of entries missing")
    parser.add_argument("--json", default="", help="also write every number to this file")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child_main(json.loads(args.child))))
        return 0
    if not 0.0 < args.frac < 1.0:
        parser.error(f"--frac must be between 0 and 1, got {args.frac}")
    w = W4
    n = w.n // 100 if args.quick else w.n
    min_seconds = 0.02 if args.quick else MIN_TIMED_SECONDS
    base = {"workload": w.__dict__, "n": n, "min_seconds": min_seconds}
    print(f"load    : {os.getloadavg()[0]:.2f} (1-min average at start), {os.cpu_count()} CPUs")
    complete = run_child({**base, "kind": "em", "frac": 0.0}, args.quick)
    missing = run_child({**base, "kind": "em", "frac": args.frac}, args.quick)
    memory = run_child({**base, "kind": "memory", "frac": args.frac, "iters": 5}, args.quick)
    ratio = missing["ms_per_iter"] / complete["ms_per_iter"]
    budget = memory["x_mib"] + BUDGET_MIB
    print(
        f"{w.name}: {n} x {w.d}, K={w.k}, {w.covariance_type}; {missing['missing_entries']:.1%} "
        f"of entries missing (MCAR), {missing['rows_with_nan']} rows with NaN, "
        f"{missing['patterns']} patterns"
    )
    cpu_ratio = missing["cpu_ms_per_iter"] / complete["cpu_ms_per_iter"]
    print(f"complete data : {complete['ms_per_iter']:8.1f} ms/iteration, "
          f"{complete['cpu_ms_per_iter']:8.1f} CPU ms/iteration")  # fmt: skip
    print(f"with NaN      : {missing['ms_per_iter']:8.1f} ms/iteration, "
          f"{missing['cpu_ms_per_iter']:8.1f} CPU ms/iteration  ({ratio:.2f}x wall, "
          f"{cpu_ratio:.2f}x CPU; target <= {MAX_RATIO:g}x)")  # fmt: skip
    print(
        f"peak memory   : {memory['extra_mib']:8.1f} MiB above the process before X (size(X) "
        f"= {memory['x_mib']:.1f} MiB; target <= {budget:.1f} MiB)"
    )
    print(f"lower bound never decreased: {missing['monotone']}")
    ok = ratio <= MAX_RATIO and memory["extra_mib"] <= budget and missing["monotone"]
    if args.quick:
        print("quick mode: N/100 in one process; the numbers are a smoke test, not a measurement")
    if args.json:
        record = {"complete": complete, "missing": missing, "memory": memory, "ratio": ratio}
        record.update(frac=args.frac, quick=args.quick)
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)
    return 0 if ok or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
