"""Time of the EVE/VVE M-step's orientation loop on the inputs real EM iterations give it.

For each workload (W2 = 200 000 x 16, K 16; W4 = 1 000 000 x 8, K 8; data and start from
``bench_cpu.py``), one fit of ``max_iter`` EM iterations (default 12) records the arguments of
every call of :func:`gaussmix._mm_kernel.mm_orientation_loop` (copied before the call: the loop
overwrites its shapes argument). Each recorded call is then re-run alone, fastest of
``--repeat`` runs (default 3), and the script prints the mean, min and max milliseconds per
M-step over EM iterations 1..max_iter, and the outer MM iterations each call made (found by
bisection on ``max_iter``: the loop's first m iterations are the same whatever its cap).

Run: ``.venv/bin/python benchmarks/bench_mm.py [--only W2-VVE,W4-EVE] [--iterations 12]``.
``--save FILE.npz`` keeps the recorded inputs (``--load`` re-times them without fitting).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gaussmix._mm_kernel as mk

NAMES = ("W2-VVE", "W2-EVE", "W4-VVE", "W4-EVE")


def capture(name: str, iterations: int) -> list[tuple]:
    """Arguments of every orientation-loop call in ``iterations`` EM iterations of ``name``."""
    from bench_cpu import WORKLOADS, make_data, start_params
    from gaussmix import GaussianMixture

    w = next(w for w in WORKLOADS if w.name == name)
    X = make_data(w, w.n, np.float64)
    start = start_params(w.covariance_type, w.k, X)
    original = mk.mm_orientation_loop
    calls: list[tuple] = []

    def recording(*args):
        calls.append(tuple(np.array(a) if isinstance(a, np.ndarray) else a for a in args))
        return original(*args)

    mk.mm_orientation_loop = recording
    try:
        with warnings.catch_warnings():
            # tol=0 never converges: the warning says so, nothing else
            warnings.simplefilter("ignore")
            GaussianMixture(
                w.k, covariance_type=w.covariance_type, max_iter=iterations, tol=0, **start
            ).fit(X)
    finally:
        mk.mm_orientation_loop = original
    return calls


def run_once(args: tuple, max_iter: int | None = None):
    # fresh copies: the loop writes into its shapes argument
    a = [np.array(x) if isinstance(x, np.ndarray) else x for x in args]
    if max_iter is not None:
        a[-1] = max_iter
    return mk.mm_orientation_loop(*a)


def outer_iterations(args: tuple) -> int:
    """Smallest cap whose result equals the uncapped one: the iterations the loop made."""
    full = run_once(args)
    lo, hi = 1, mk.MM_MAX_ITER
    while lo < hi:
        mid = (lo + hi) // 2
        out = run_once(args, mid)
        if np.array_equal(out[0], full[0]) and np.array_equal(out[1], full[1]):
            hi = mid
        else:
            lo = mid + 1
    return lo


def time_call(args: tuple, repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        a = [np.array(x) if isinstance(x, np.ndarray) else x for x in args]
        t = time.perf_counter()
        mk.mm_orientation_loop(*a)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated workloads, default " + ",".join(NAMES))
    parser.add_argument("--iterations", type=int, default=12, help="EM iterations recorded")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per call (fastest)")
    parser.add_argument("--save", help="write the recorded inputs to this .npz")
    parser.add_argument("--load", help="time inputs recorded by --save instead of fitting")
    opts = parser.parse_args()
    names = opts.only.split(",") if opts.only else list(NAMES)
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    if opts.iterations < 1 or opts.repeat < 1:
        parser.error("--iterations and --repeat must be >= 1")

    recorded: dict[str, list[tuple]] = {}
    if opts.load:
        try:
            saved = np.load(opts.load)
        except (OSError, ValueError) as exc:
            parser.error(f"--load {opts.load}: {exc}")
        with saved as f:
            missing = [name for name in names if f"{name}/count" not in f.files]
            if missing:
                parser.error(f"--load {opts.load} holds no {', '.join(missing)}")
            for name in names:
                n = int(f[f"{name}/count"])
                recorded[name] = [
                    tuple(
                        f[f"{name}/{i}/{j}"].item() if f[f"{name}/{i}/{j}"].ndim == 0
                        else f[f"{name}/{i}/{j}"]
                        for j in range(int(f[f"{name}/{i}/nargs"]))
                    )
                    for i in range(n)
                ]
    else:
        for name in names:
            recorded[name] = capture(name, opts.iterations)
    if opts.save:
        flat = {}
        for name, calls in recorded.items():
            flat[f"{name}/count"] = np.array(len(calls))
            for i, args in enumerate(calls):
                flat[f"{name}/{i}/nargs"] = np.array(len(args))
                for j, a in enumerate(args):
                    flat[f"{name}/{i}/{j}"] = np.asarray(a)
        np.savez(opts.save, **flat)

    # compile (or load from numba's cache) before any timing
    first = next(iter(recorded.values()))[0]
    run_once(first, 1)
    print(f"{'workload':<8} {'calls':>5} {'mean ms':>8} {'min ms':>7} {'max ms':>7}  "
          "outer iterations per call")
    for name, calls in recorded.items():
        # the arguments' bool flag and floats come back from npz as numpy scalars
        calls = [tuple(bool(a) if isinstance(a, np.bool_) else a for a in c) for c in calls]
        ms = np.array([time_call(c, opts.repeat) * 1e3 for c in calls])
        its = [outer_iterations(c) for c in calls]
        print(f"{name:<8} {len(calls):>5} {ms.mean():>8.2f} {ms.min():>7.2f} {ms.max():>7.2f}  "
              f"{' '.join(map(str, its))} (total {sum(its)})")


if __name__ == "__main__":
    main()
