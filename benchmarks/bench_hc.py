"""Speed of model-based hierarchical clustering (gaussmix._hc) against R's mclust ``hc``.

Data: 2000 x 4 rows from a seeded four-component Gaussian mixture (the size at which both
mclust and gaussmix stop clustering every row and take a subset). Timed: ``hc_tree`` with
mclust's default (VVV criterion on SVD-transformed data) and Ward's criterion (EII on the raw
data), wall and CPU time, the fastest of ``--repeat`` runs after a warm-up that compiles (or
loads) the numba kernels. When ``Rscript`` with mclust is on the PATH, the same rows go to
``hc(X, modelName = "VVV", use = "SVD")`` and ``hc(X, modelName = "EII", use = "VARS")``
(fastest of the same number of runs, ``system.time``), and the partitions of both for
K = 1..9 are compared.

Usage::

    python benchmarks/bench_hc.py                 # 2000 x 4, 3 repeats
    python benchmarks/bench_hc.py --rows 1000 --features 6 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np

from gaussmix._hc import hc_tree

CASES = (("VVV", "SVD"), ("EII", "VARS"))

R_SCRIPT = r"""
suppressMessages(library(mclust))
args <- commandArgs(TRUE)
X <- data.matrix(read.csv(args[1]))
reps <- as.integer(args[2])
for (case in list(c("VVV", "SVD"), c("EII", "VARS"))) {
  best <- c(Inf, Inf)
  for (r in seq_len(reps)) {
    t <- system.time(tree <- hc(X, modelName = case[1], use = case[2]))
    if (t[["elapsed"]] < best[1]) best <- c(t[["elapsed"]], t[["user.self"]] + t[["sys.self"]])
  }
  cat("TIME", case[1], case[2], sprintf("%.6f", best), "\n")
  part <- hclass(tree, 1:9)
  for (k in 1:9) cat("PART", case[1], case[2], k, part[, k], "\n")
}
"""


def _data(rows: int, features: int, seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    centres = rng.uniform(-4, 4, size=(4, features))
    labels = rng.randint(0, 4, size=rows)
    scales = rng.uniform(0.5, 1.5, size=(4, features))
    return centres[labels] + rng.randn(rows, features) * scales[labels]


def _time(fn, repeat: int) -> tuple[float, float]:
    best = (np.inf, np.inf)
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        w, c = time.perf_counter() - w0, time.process_time() - c0
        if w < best[0]:
            best = (w, c)
    return best


def _run_r(X: np.ndarray, repeat: int):
    if shutil.which("Rscript") is None:
        return None, "Rscript not found"
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "x.csv")
        script = os.path.join(tmp, "hc.R")
        header = ",".join(f"x{j}" for j in range(X.shape[1]))
        np.savetxt(data, X, delimiter=",", header=header, comments="", fmt="%.17g")
        with open(script, "w", encoding="utf-8") as fh:
            fh.write(R_SCRIPT)
        proc = subprocess.run(
            ["Rscript", script, data, str(repeat)], capture_output=True, text=True, check=False
        )
    if proc.returncode != 0:
        return None, proc.stderr.strip().splitlines()[-1] if proc.stderr else "Rscript failed"
    times, parts = {}, {}
    for line in proc.stdout.splitlines():
        tok = line.split()
        if tok and tok[0] == "TIME":
            times[(tok[1], tok[2])] = (float(tok[3]), float(tok[4]))
        elif tok and tok[0] == "PART":
            parts[(tok[1], tok[2], int(tok[3]))] = np.array(tok[4:], dtype=int) - 1
    return (times, parts), None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--features", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    X = _data(args.rows, args.features)
    hc_tree(X[:20])  # compile or load the kernels
    hc_tree(X[:20], model="EII", use="VARS")
    ours = {}
    for model, use in CASES:
        trees = []
        ours[(model, use)] = _time(
            lambda m=model, u=use, t=trees: t.append(
                hc_tree(X, model=m, use=u, max_rows=args.rows)
            ),
            args.repeat,
        )
        ours[(model, use, "tree")] = trees[-1]
    r, why = _run_r(X, args.repeat)
    print(f"hc on {args.rows} x {args.features} rows, fastest of {args.repeat} (wall / CPU s)")
    print(f"{'criterion':<12} {'gaussmix':>18} {'mclust (R)':>18} {'speed-up':>9}  same K=1..9")
    for model, use in CASES:
        w, c = ours[(model, use)]
        line = f"{model + '/' + use:<12} {w:8.3f} / {c:7.3f}"
        if r is None:
            line += f" {'-':>18} {'-':>9}  ({why})"
        else:
            rw, rc = r[0][(model, use)]
            tree = ours[(model, use, "tree")]
            same = all(
                np.array_equal(tree.partition(k), r[1][(model, use, k)]) for k in range(1, 10)
            )
            line += f" {rw:8.3f} / {rc:7.3f} {rw / w:8.1f}x  {'yes' if same else 'NO'}"
        print(line)


if __name__ == "__main__":
    main()
