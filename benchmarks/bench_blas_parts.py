"""Where a W3 E-step goes: the parts of the CPU engine's BLAS path, one thread, and its GEMMs
against a square dgemm.

W3 (50 000 × 64, K = 32, full covariances) takes the BLAS path of
:mod:`gaussmix.backends.cpu`: per chunk of rows, the quadratic features of the rows, one GEMM
of them against every component's weights (the log-joints), the responsibilities, the
``sqrt(r)``-scaled centred rows and their scatter GEMMs. This script times each part over all
rows in one thread (fastest of ``--repeat`` passes), from parameters after three EM iterations
(the responsibilities as sparse as a fit sees them), and prints the GFLOP/s of the log-joint
GEMM beside a square dgemm's and the projection GEMM ``X @ [P_1 ... P_K]`` of the same
problem, so that the distance to the machine's dgemm rate is visible part by part.

    python benchmarks/bench_blas_parts.py
"""

from __future__ import annotations

import argparse
import platform
import sys
import warnings
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_cpu
from gaussmix import GaussianMixture
from gaussmix.backends import _cpu_kernels as _k
from gaussmix.backends import cpu


def _best(fn, repeat: int) -> float:
    """Seconds of the fastest of ``repeat`` calls after one that loads the kernels."""
    fn()
    return bench_cpu._best_ms(fn, repeat) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="passes per part (fastest kept)")
    args = parser.parse_args()

    w = next(x for x in bench_cpu.WORKLOADS if x.name == "W3")
    X = bench_cpu.make_data(w, w.n, np.float64)
    start = bench_cpu.start_params("full", w.k, X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = GaussianMixture(w.k, covariance_type="full", max_iter=3, **start).fit(X)
    params = fitted._fitted_params()
    n, d = X.shape
    K = w.k
    factors = params.model.component_factors(params.precisions_cholesky, K, d)
    prep = cpu.prepare(params, params.means, X.dtype, factors)
    rows, _ = cpu.CpuExecutor(X, n_threads=1)._groups(K, prep.full)
    lay = cpu._blas_layout(params, prep, X.dtype, rows)
    m, mq = lay.chunk, lay.quad_rows
    F, xc = lay.scratch()
    R = np.empty((m, K))
    lognorm = np.empty(m)
    Z = np.empty(K * m * d)
    counts = np.empty(K, dtype=np.int64)
    nk, sx, sxx = np.zeros(K), np.zeros((K, d)), np.zeros((K, d, d))
    chunks = [(s, min(n, s + m)) for s in range(0, n, m)]

    def features():
        for s, e in chunks:
            for q in range(s, e, mq):
                c = min(e, q + mq) - q
                _k.quadratic_features(X[q : q + c], lay.centre, F[:c], xc)

    def gemm():
        for s, e in chunks:
            for q in range(s, e, mq):
                c = min(e, q + mq) - q
                np.matmul(F[:c], lay.Wq, out=R[q - s : q - s + c])

    L_all = np.empty((n, K))
    for s, e in chunks:
        lay.log_joint(X[s:e], L_all[s:e], lay.scratch())

    def responsibilities():
        for s, e in chunks:
            R[: e - s] = L_all[s:e]
            _k.resp_from_log_joint(R[: e - s], np.empty(0), False, s, -600.0, R[: e - s],
                                   lognorm[: e - s])  # fmt: skip

    R_all = np.empty((n, K))
    for s, e in chunks:
        R_all[s:e] = L_all[s:e]
        _k.resp_from_log_joint(R_all[s:e], np.empty(0), False, s, -600.0, R_all[s:e],
                               lognorm[: e - s])  # fmt: skip
    Zs = []

    def scaled():
        Zs.clear()
        for s, e in chunks:
            Zc = Z[: K * (e - s) * d].reshape(K, e - s, d)
            _k.scaled_centred(X[s:e], R_all[s:e], prep.shift, Zc, nk, sx, counts)
            Zs.append(counts.copy())

    def scatter():
        for (s, e), cnt in zip(chunks, Zs, strict=True):
            Zc = Z[: K * (e - s) * d].reshape(K, e - s, d)
            for k in np.flatnonzero(cnt):
                Zk = Zc[k, : cnt[k]]
                sxx[k] += Zk.T @ Zk

    rng = np.random.default_rng(0)
    sq = rng.standard_normal((2000, 2000))
    Xc = np.ascontiguousarray(X[:m])
    P = rng.standard_normal((d, K * d))
    Y = np.empty((m, K * d))
    with threadpool_limits(1):
        parts = {
            "quadratic features": _best(features, args.repeat),
            "log-joint GEMM": _best(gemm, args.repeat),
            "responsibilities": _best(responsibilities, args.repeat),
            # its last call leaves the scaled rows that the scatter GEMMs read
            "scaled centred rows": _best(scaled, args.repeat),
            "scatter GEMMs (rows with r > 0)": _best(scatter, args.repeat),
        }
        square = 2 * 2000**3 / _best(lambda: sq @ sq, args.repeat) / 1e9
        proj = 2 * m * d * K * d / _best(lambda: np.matmul(Xc, P, out=Y), args.repeat) / 1e9
    flops = 2.0 * n * lay.Wq.shape[0] * K
    print("# W3 E-step parts, one thread (python benchmarks/bench_blas_parts.py)")
    print(f"machine : {bench_cpu.machine_info()['cpu']}, {platform.platform()}")
    nq = lay.Wq.shape[0]
    print(
        f"layout  : chunk {m} rows, {nq} quadratic features per row in blocks of {mq} rows; "
        f"the GEMM is ({mq} x {nq}) @ ({nq} x {K})"
    )
    total = sum(parts.values())
    for name, t in parts.items():
        print(f"{name:<34}{t * 1e3:8.1f} ms  {100 * t / total:5.1f}%")
    print(f"{'total':<34}{total * 1e3:8.1f} ms")
    print(f"log-joint GEMM  : {flops / parts['log-joint GEMM'] / 1e9:6.1f} GFLOP/s")
    print(f"square dgemm    : {square:6.1f} GFLOP/s (2000 x 2000, one thread)")
    print(f"projection GEMM : {proj:6.1f} GFLOP/s (({m} x {d}) @ ({d} x {K * d}), one thread)")


if __name__ == "__main__":
    main()
