"""Where a W3 E-step goes: the parts of the CPU engine's BLAS path, one thread, and its GEMMs
against a square dgemm.

W3 (50 000 × 64, K = 32, full covariances) takes the BLAS path of
:mod:`gaussmix.backends.cpu`: per chunk of rows, every component's log-joint from the rows'
quadratic features (formed in registers by :mod:`gaussmix.backends._quad_kernel` where the
target has AVX-512; else written to memory and multiplied by the weights in one GEMM), the
responsibilities, the ``sqrt(r)``-scaled centred rows and their scatter GEMMs. This script
times each part over all rows in one thread (fastest of ``--repeat`` passes), from parameters
after three EM iterations (the responsibilities as sparse as a fit sees them), both forms of
the log-joint, and prints their GFLOP/s beside a square dgemm's and the projection GEMM
``X @ [P_1 ... P_K]`` of the same problem, so that the distance to the machine's dgemm rate is
visible part by part.

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
from gaussmix.backends import _quad_kernel, cpu


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
    m = lay.chunk
    # the BLAS form, whichever form the engine takes on this machine
    blas = cpu._blas_layout(params, prep, X.dtype, rows, registers=False)
    centre, Wf, mq = blas.centre, blas.Wq, blas.quad_rows
    nq = Wf.shape[0]
    F, xc = np.empty((mq, nq)), np.empty(d)
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
                _k.quadratic_features(X[q : q + c], centre, F[:c], xc)

    def gemm():
        for s, e in chunks:
            for q in range(s, e, mq):
                c = min(e, q + mq) - q
                np.matmul(F[:c], Wf, out=R[q - s : q - s + c])

    L_all = np.empty((n, K))
    scratch = lay.scratch()

    def engine_log_joint():
        for s, e in chunks:
            lay.log_joint(X[s:e], L_all[s:e], scratch)

    engine_log_joint()

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
    in_registers = lay.in_registers
    with threadpool_limits(1):
        blas_form = {
            "quadratic features": _best(features, args.repeat),
            "log-joint GEMM": _best(gemm, args.repeat),
        }
        parts = {}
        if in_registers:
            parts["log-joint, features in registers"] = _best(engine_log_joint, args.repeat)
        else:
            parts.update(blas_form)
        parts |= {
            "responsibilities": _best(responsibilities, args.repeat),
            # its last call leaves the scaled rows that the scatter GEMMs read
            "scaled centred rows": _best(scaled, args.repeat),
            "scatter GEMMs (rows with r > 0)": _best(scatter, args.repeat),
        }
        square = 2 * 2000**3 / _best(lambda: sq @ sq, args.repeat) / 1e9
        proj = 2 * m * d * K * d / _best(lambda: np.matmul(Xc, P, out=Y), args.repeat) / 1e9
    flops = 2.0 * n * nq * K
    print("# W3 E-step parts, one thread (python benchmarks/bench_blas_parts.py)")
    print(f"machine : {bench_cpu.machine_info()['cpu']}, {platform.platform()}")
    form = (
        f"features in registers, tiles of {_quad_kernel.ROWS} rows x "
        f"{_quad_kernel.COMPONENTS} components"
        if in_registers
        else f"BLAS form, {nq} quadratic features per row in blocks of {mq} rows"
    )
    print(f"layout  : chunk {m} rows; the engine's log-joint: {form}")
    total = sum(parts.values())
    for name, t in parts.items():
        print(f"{name:<34}{t * 1e3:8.1f} ms  {100 * t / total:5.1f}%")
    print(f"{'total':<34}{total * 1e3:8.1f} ms")
    if in_registers:
        t = parts["log-joint, features in registers"]
        padded = flops * lay.Wq.shape[0] * _quad_kernel.COMPONENTS / K
        features, gemm_t = blas_form["quadratic features"], blas_form["log-joint GEMM"]
        print(f"log-joint, registers : {flops / t / 1e9:6.1f} GFLOP/s "
              f"(padded components: {padded / t / 1e9:.1f})")  # fmt: skip
        print(f"BLAS form (not used) : quadratic features {features * 1e3:.1f} ms "
              f"+ GEMM {gemm_t * 1e3:.1f} ms")  # fmt: skip
    print(f"log-joint GEMM       : {flops / blas_form['log-joint GEMM'] / 1e9:6.1f} GFLOP/s "
          f"(({mq} x {nq}) @ ({nq} x {K}))")  # fmt: skip
    print(f"square dgemm         : {square:6.1f} GFLOP/s (2000 x 2000, one thread)")
    print(f"projection GEMM      : {proj:6.1f} GFLOP/s (({m} x {d}) @ ({d} x {K * d}), one thread)")


if __name__ == "__main__":
    main()
