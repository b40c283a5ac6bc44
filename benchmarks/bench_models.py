"""Per-iteration cost of every covariance model against VVV (issue: no model above 1.5x VVV).

One EM iteration is an E-step (the full or diagonal kernel) and the model's M-step (closed
form, fixed point or MM iterations warm-started from the previous iteration). Each model runs
from the same start on 200 000 x 8 rows, K = 8, on the compiled CPU engine; the time per
iteration is (t(n2) - t(n1)) / (n2 - n1) from fits of n1 and n2 iterations with tol=0, each the
fastest of ``--repeat`` runs, so the start and the first (cold) M-step cancel.

    python benchmarks/bench_models.py [--rows 200000] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from gaussmix import GaussianMixture
from gaussmix._covariance import MCLUST_MODELS, get_model


def _data(n: int, d: int, K: int) -> np.ndarray:
    rng = np.random.RandomState(0)
    centres = rng.uniform(-6, 6, (K, d))
    z = rng.randint(0, K, n)
    A = rng.standard_normal((K, d, d)) * 0.3 + np.eye(d)
    return centres[z] + np.einsum("nd,nde->ne", rng.standard_normal((n, d)), A[z])


def _fit_time(X, model, start, iters, repeat):
    best = np.inf
    for _ in range(repeat):
        gm = GaussianMixture(
            start["K"], covariance_type=model, weights_init=start["weights"],
            means_init=start["means"], precisions_init=start["precisions"],
            max_iter=iters, tol=0, engine="cpu",
        )  # fmt: skip
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm.fit(X)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--components", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--iters", type=int, nargs=2, default=(3, 13))
    ap.add_argument("--json")
    args = ap.parse_args()
    K, d = args.components, args.features
    X = _data(args.rows, d, K)
    ref = GaussianMixture(K, covariance_type="full", random_state=0, max_iter=5, engine="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref.fit(X)
    start = {"K": K, "weights": ref.weights_, "means": ref.means_, "precisions": ref.precisions_}
    n1, n2 = args.iters
    rows = []
    for model in MCLUST_MODELS:
        _fit_time(X, model, start, 2, 1)  # warm-up: numba compilation, caches
        t1 = _fit_time(X, model, start, n1, args.repeat)
        t2 = _fit_time(X, model, start, n2, args.repeat)
        rows.append({"model": model, "ms_per_iter": 1e3 * (t2 - t1) / (n2 - n1),
                     "iterative": get_model(model).iterative})  # fmt: skip
    vvv = next(r["ms_per_iter"] for r in rows if r["model"] == "VVV")
    print(f"{args.rows} x {d}, K = {K}, cpu engine, {platform.processor() or platform.machine()}")
    print(f"{'model':6} {'M-step':10} {'ms/iter':>8} {'/ VVV':>6}")
    for r in rows:
        r["ratio_to_VVV"] = r["ms_per_iter"] / vvv
        kind = "iterative" if r["iterative"] else "closed"
        print(f"{r['model']:6} {kind:10} {r['ms_per_iter']:8.1f} {r['ratio_to_VVV']:6.2f}")
    worst = max(r["ratio_to_VVV"] for r in rows)
    print(f"worst ratio to VVV: {worst:.2f} (target <= 1.5)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "n": args.rows, "d": d, "K": K}, fh, indent=1)


if __name__ == "__main__":
    main()
