"""Model selection against R's mclust, side by side: time and answer of the 14 x 9 grid.

For each data set, ``gaussmix.selection.select(X)`` (defaults: mclust's 14 models, K = 1..9)
and R's ``mclustBIC(X, G = 1:9)`` are timed in the same run, each the fastest of ``--repeat``
runs (R's time excludes starting R and reading the file). Also printed: how many cells of
mclust's table we reach within 0.5 BIC units or better, and both choices. Skips R (prints
gaussmix only) when ``Rscript`` or mclust is absent.

    python benchmarks/bench_select.py [--repeat 3] [--sizes 10000 100000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gaussmix.selection import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from mclust_fixtures import load_dataset  # noqa: E402

CLASSIC = ("faithful", "iris", "diabetes", "banknote", "thyroid", "wreath")

_R = r"""
suppressMessages(library(mclust))
args <- commandArgs(TRUE)
X <- as.matrix(read.csv(args[1]))
rep <- as.integer(args[2])
best <- Inf
for (i in seq_len(rep)) {
  t <- system.time(B <- mclustBIC(X, G = 1:9, verbose = FALSE))[["elapsed"]]
  best <- min(best, t)
}
s <- summary(B, X)
cat(best, "\n")
cat(s$modelName, s$G, s$bic, "\n")
write.csv(matrix(B, nrow = 9), args[3], row.names = FALSE)
"""


def simulated(n: int, seed: int = 0) -> np.ndarray:
    """A 4-D mixture of 5 ellipsoidal components (the issue's 10 000 / 100 000 x 4 data)."""
    rng = np.random.RandomState(seed)
    K, d = 5, 4
    centres = rng.uniform(-8, 8, (K, d))
    A = rng.standard_normal((K, d, d)) * 0.5 + np.eye(d)
    z = rng.choice(K, n, p=[0.3, 0.25, 0.2, 0.15, 0.1])
    return centres[z] + np.einsum("nd,nde->ne", rng.standard_normal((n, d)), A[z])


def run_r(X: np.ndarray, repeat: int) -> dict | None:
    if shutil.which("Rscript") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        data, script, table = (os.path.join(tmp, f) for f in ("x.csv", "b.R", "bic.csv"))
        np.savetxt(data, X, delimiter=",", header=",".join(f"x{j}" for j in range(X.shape[1])),
                   comments="", fmt="%.17g")  # fmt: skip
        Path(script).write_text(_R)
        out = subprocess.run(["Rscript", script, data, str(repeat), table],
                             capture_output=True, text=True)  # fmt: skip
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return None
        lines = out.stdout.split("\n")
        model, k, bic = lines[1].split()
        bic_table = np.genfromtxt(table, delimiter=",", skip_header=1)
        return {"seconds": float(lines[0]), "model": model, "K": int(k), "bic": float(bic),
                "table": bic_table}  # fmt: skip


def run_ours(X: np.ndarray, repeat: int):
    best, result = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        result = select(X)
        best = min(best, time.perf_counter() - t)
    return best, result


def markdown(rows: list[dict]) -> str:
    """The README table of a ``--json`` run."""
    out = ["| data | gaussmix s | mclust s | speed-up | cells ≥ mclust's BIC − 0.5 | "
           "more than 10 below / above | gaussmix choice (mclust's BIC sign) | mclust choice |",
           "|---|---:|---:|---:|---:|---:|---|---|"]  # fmt: skip
    for r in rows:
        shape = f"{r['n']} × {r['d']}" if not r["data"].startswith("simulated") else ""
        name = r["data"] if not shape else f"{r['data']} {shape}"
        if "mclust_s" not in r:
            out.append(f"| {name} | {r['gaussmix_s']:.2f} | - | - | - | - | {r['choice']} "
                       f"({r['bic_mclust_sign']:.2f}) | - |")  # fmt: skip
            continue
        below = r.get("cells_below_10", "-")
        above = r.get("cells_above_10", "-")
        out.append(
            f"| {name} | {r['gaussmix_s']:.2f} | {r['mclust_s']:.2f} | {r['speedup']:.1f}× | "
            f"{r['cells_reached']}/{r['cells_mclust']} | {below} / {above} | {r['choice']} "
            f"({r['bic_mclust_sign']:.2f}) | {r['mclust_choice']} ({r['mclust_bic']:.2f}) |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    ap.add_argument("--datasets", nargs="*", default=list(CLASSIC))
    ap.add_argument("--json")
    ap.add_argument("--markdown", metavar="JSON",
                    help="print the README table of an earlier --json run and exit")  # fmt: skip
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return
    sets = [(name, load_dataset(name)[0]) for name in args.datasets]
    sets += [(f"simulated {n} x 4", simulated(n)) for n in args.sizes]
    select(sets[0][1][:100], k_range=range(1, 3))  # compile the kernels once, outside the timing
    rows = []
    print(f"{'data':22} {'gaussmix s':>10} {'mclust s':>9} {'speed-up':>8}  "
          f"{'cells >= mclust-0.5 (<-10/>+10)':>31}  gaussmix choice / mclust choice")  # fmt: skip
    for name, X in sets:
        repeat = args.repeat if X.shape[0] <= 20_000 else 1
        ours_s, res = run_ours(X, repeat)
        r = run_r(X, repeat)
        best = res.best_row
        row = {"data": name, "n": X.shape[0], "d": X.shape[1], "gaussmix_s": ours_s,
               "choice": f"{best.covariance_type},{best.n_components}",
               "bic_mclust_sign": -best.bic}  # fmt: skip
        text_r, speed, reach = "-", "-", "-"
        if r is not None:
            ours_tab = -res.values("bic")
            models = list(res.covariance_types)
            fitted = np.isfinite(r["table"])
            ok = fitted & (ours_tab >= r["table"] - 0.5)
            gap = np.where(fitted, ours_tab - r["table"], np.nan)
            row.update(mclust_s=r["seconds"], speedup=r["seconds"] / ours_s,
                       mclust_choice=f"{r['model']},{r['K']}", mclust_bic=r["bic"],
                       cells_reached=int(ok.sum()), cells_mclust=int(fitted.sum()),
                       # local optima, not tolerance-level differences, either way
                       cells_below_10=int(np.sum(gap < -10)),
                       cells_above_10=int(np.sum(gap > 10)),
                       models=models)  # fmt: skip
            text_r = f"{r['seconds']:9.2f}"
            speed = f"{row['speedup']:7.1f}x"
            reach = f"{ok.sum()}/{fitted.sum()} ({row['cells_below_10']}-/{row['cells_above_10']}+)"
        mc = f"{row.get('mclust_choice', '-')} ({row.get('mclust_bic', float('nan')):.2f})"
        print(f"{name:22} {ours_s:10.2f} {text_r:>9} {speed:>8}  {reach:>31}  "
              f"{row['choice']} ({row['bic_mclust_sign']:.2f}) / {mc}")  # fmt: skip
        rows.append(row)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
