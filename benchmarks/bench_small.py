"""Cost of one EM iteration on small data: run_em + SmallExecutor against fit_small.

Model selection over mclust's grid (14 models x K = 1..9) runs thousands of EM iterations on a
few hundred rows, where an iteration's arithmetic costs microseconds and per-iteration Python
work dominates. For every model on R's faithful (272 x 2) and iris (150 x 4), both paths run
``--iters`` iterations (tol < 0: a fixed count) from the same start (the model's M-step on a
k-means partition); a row reports microseconds per iteration, start and per-fit overhead
included, each the fastest of ``--repeat`` runs (the machine is shared: the fastest is the
least disturbed). ``--grid`` also times the whole 14 x 9 grid to convergence (tol 1e-5, as
mclust) from k-means partitions, one start per cell: run_em from numpy starts against
start_from_labels + fit_small, serially and in two threads (the fits release the GIL).

    python benchmarks/bench_small.py [--components 3] [--iters 50] [--repeat 7] [--grid]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from gaussmix._covariance import MCLUST_MODELS, CollapsedComponentError, get_model
from gaussmix._em import run_em
from gaussmix._small import OK, SmallExecutor, fit_small, start_from_labels
from gaussmix._stats import SuffStats, accumulate, m_step

DATA = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "data"
REG = 1e-6  # keeps K = 9 cells on 150 rows factorisable for the timing; not mclust's 0


def _load(name: str) -> np.ndarray:
    return np.loadtxt(DATA / f"{name}.csv", delimiter=",", skiprows=1)


def _start(X: np.ndarray, K: int, model_name: str):
    """The model's M-step on a k-means partition (seeded), as a grid cell would start."""
    from sklearn.cluster import KMeans

    labels = KMeans(K, n_init=1, random_state=0).fit_predict(X) if K > 1 else np.zeros(len(X))
    resp = np.eye(K)[labels.astype(int)]
    model = get_model(model_name)
    shift = np.zeros((K, X.shape[1]))
    nk, sx, sxx = accumulate(X, resp, shift, model.moment)
    stats = SuffStats(shift, nk, sx, sxx, 0.0, float(len(X)), len(X))
    return m_step(stats, model, REG)


def _best(fn, repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _per_iteration(X, K, repeat, iters):
    rows = []
    executor = SmallExecutor(X)
    for name in MCLUST_MODELS:
        p0 = _start(X, K, name)

        def reference(p0=p0):
            return run_em(executor, p0, reg_covar=REG, tol=-1.0, max_iter=iters)

        def compiled(p0=p0, name=name):
            return fit_small(X, None, name, p0.weights, p0.means, p0.covariances,
                             reg_covar=REG, tol=-1.0, max_iter=iters)  # fmt: skip

        reference()
        compiled()  # warm-up: numba compilation or its cache
        t_ref = _best(reference, max(2, repeat // 2)) / iters
        t_new = _best(compiled, repeat) / iters
        rows.append({"model": name, "run_em_us": 1e6 * t_ref, "fit_small_us": 1e6 * t_new})
    return rows


def _grid(X, repeat):
    """Seconds for the 14 x 9 grid to convergence (fastest of ``repeat``): run_em from
    numpy starts, against start_from_labels + fit_small serially and in two threads."""
    from sklearn.cluster import KMeans

    labels = {K: KMeans(K, n_init=1, random_state=0).fit_predict(X) if K > 1
              else np.zeros(len(X), dtype=int) for K in range(1, 10)}  # fmt: skip
    cells = [(m, K) for m in MCLUST_MODELS for K in range(1, 10)]
    starts = {(m, K): _start(X, K, m) for m, K in cells}
    executor = SmallExecutor(X)
    iters = {"run_em": 0, "fit_small": 0}

    def reference():
        iters["run_em"] = 0
        for p0 in starts.values():
            try:
                iters["run_em"] += run_em(executor, p0, reg_covar=REG, tol=1e-5,
                                          max_iter=1000).n_iter  # fmt: skip
            except (CollapsedComponentError, FloatingPointError):
                pass

    def cell(c):
        m, K = c
        p0 = start_from_labels(X, None, labels[K], K, m, reg_covar=REG)
        if p0.status != OK:
            return 0
        return fit_small(X, None, m, p0.weights, p0.means, p0.covariances,
                         reg_covar=REG, tol=1e-5, max_iter=1000).n_iter  # fmt: skip

    def compiled():
        iters["fit_small"] = sum(cell(c) for c in cells)

    def threaded():
        # the slowest cells first, so that the two threads end together
        with ThreadPoolExecutor(2) as pool:
            return sum(pool.map(cell, sorted(cells, key=lambda c: -c[1])))

    t_new = _best(compiled, repeat)
    t_threads = _best(threaded, repeat)
    t_ref = _best(reference, 1)
    return {"run_em_s": t_ref, "fit_small_s": t_new, "fit_small_2_threads_s": t_threads,
            **{f"{k}_iters": v for k, v in iters.items()}}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--components", type=int, default=3)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--datasets", nargs="+", default=["faithful", "iris"])
    ap.add_argument("--grid", action="store_true", help="also time the 14 x 9 grid")
    ap.add_argument("--json")
    args = ap.parse_args()
    print(f"{platform.processor() or platform.machine()}, python {sys.version.split()[0]}; "
          f"K = {args.components}, {args.iters} iterations per fit, fastest of {args.repeat}")
    out = {}
    for name in args.datasets:
        X = _load(name)
        rows = _per_iteration(X, args.components, args.repeat, args.iters)
        print(f"\n{name} ({X.shape[0]} x {X.shape[1]}): microseconds per EM iteration")
        print(f"{'model':6} {'run_em':>9} {'fit_small':>10} {'speed-up':>9}")
        for r in rows:
            print(f"{r['model']:6} {r['run_em_us']:9.1f} {r['fit_small_us']:10.1f} "
                  f"{r['run_em_us'] / r['fit_small_us']:8.1f}x")
        out[name] = {"per_iteration": rows}
        if args.grid:
            g = _grid(X, max(1, args.repeat // 3))
            out[name]["grid"] = g
            print(f"grid 14 x K=1..9 to tol 1e-5 (k-means starts): run_em {g['run_em_s']:.2f} s "
                  f"({g['run_em_iters']} iterations); start_from_labels + fit_small "
                  f"{g['fit_small_s']:.3f} s ({g['fit_small_iters']} iterations), in 2 threads "
                  f"{g['fit_small_2_threads_s']:.3f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
