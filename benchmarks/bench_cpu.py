"""EM speed of the fast CPU engine against scikit-learn, on the W1-W5 workloads of issue 5.

For every workload both libraries start from the *same* parameters (``weights_init``,
``means_init``, ``precisions_init``: K random data rows, the data's per-feature variance),
run with ``tol=0``, and are timed at two iteration counts; ms/iteration is the difference
divided by the extra iterations, so validation, set-up and scikit-learn's closing E-step
cancel. After the longer fit the parameters of both are compared (max |a-b| / max |b| per
array; float64 must agree to 1e-6). Each measurement runs in a fresh Python process whose peak
RSS (``ru_maxrss``) is reported; the numba kernels are compiled (or loaded from cache) by a
warm-up fit first.

Also printed: float32 rows (gaussmix on float32 data against scikit-learn on the same float32
data and on float64), ``predict_proba``/``score_samples`` on W4, the default k-means init on
W4 against three EM iterations, and the peak memory of a default W4 fit against
``size(X) + 64 MiB``.

GFLOP/s counts useful arithmetic per iteration: ``2·N·K·d²`` for full/tied (a triangular
Mahalanobis term and a symmetric scatter, d²/2 multiply-adds each) and ``6·N·K·d`` for
diag/spherical; exponentials are not counted.

Usage::

    python benchmarks/bench_cpu.py            # the full table (a few minutes on 2 cores)
    python benchmarks/bench_cpu.py --quick    # small N, in one process: a smoke test
    python benchmarks/bench_cpu.py --only W4,W4-diag --json out.json

If ``OPENBLAS_CORETYPE`` is set the script re-executes itself without it and without
``OPENBLAS_L2_SIZE`` (they would pin OpenBLAS to a slower kernel) and says so; the BLAS
library, its kernel and thread count are printed from threadpoolctl. pomegranate joins as a
second peer when it is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np

_REEXEC_FLAG = "GAUSSMIX_BENCH_REMOVED_BLAS_ENV"


@dataclass(frozen=True)
class Workload:
    name: str
    n: int
    d: int
    k: int
    covariance_type: str
    headline: bool = True  # part of the W1-W5 median


WORKLOADS = [
    Workload("W1", 100_000, 2, 5, "full"),
    Workload("W2", 200_000, 16, 16, "full"),
    Workload("W2-diag", 200_000, 16, 16, "diag"),
    Workload("W2-tied", 200_000, 16, 16, "tied", headline=False),
    Workload("W2-spherical", 200_000, 16, 16, "spherical", headline=False),
    Workload("W3", 50_000, 64, 32, "full"),
    Workload("W4", 1_000_000, 8, 8, "full"),
    Workload("W4-diag", 1_000_000, 8, 8, "diag"),
    Workload("W4-tied", 1_000_000, 8, 8, "tied", headline=False),
    Workload("W4-spherical", 1_000_000, 8, 8, "spherical", headline=False),
    Workload("W5", 20_000, 2, 100, "full"),
]
QUICK_SCALE = 100  # --quick divides N by this (at least QUICK_MIN_ROWS rows)
QUICK_MIN_ROWS = 4096
QUICK_WORKLOADS = ("W1", "W2-diag", "W3", "W4", "W5")


# ----------------------------------------------------------------------------- data
def make_data(w: Workload, n: int, dtype) -> np.ndarray:
    """Rows from a K-component axis-aligned mixture, written in chunks (no large temporary)."""
    rng = np.random.default_rng(12345)
    spread = 8.0 * max(1.0, w.k ** (1.0 / w.d))
    centres = rng.uniform(-spread, spread, (w.k, w.d))
    scales = rng.uniform(0.5, 1.5, (w.k, w.d))
    X = np.empty((n, w.d), dtype=dtype)
    step = 1 << 16
    for s in range(0, n, step):
        e = min(n, s + step)
        z = rng.integers(0, w.k, e - s)
        X[s:e] = centres[z] + rng.standard_normal((e - s, w.d)) * scales[z]
    return X


def start_params(w: Workload, X: np.ndarray) -> dict:
    """The shared start: K random rows as means, equal weights, the data's variance."""
    rng = np.random.default_rng(7)
    means = X[rng.choice(X.shape[0], w.k, replace=False)].astype(np.float64)
    var = X.astype(np.float64).var(axis=0)
    precisions = {
        "full": np.repeat(np.diag(1.0 / var)[None], w.k, axis=0),
        "tied": np.diag(1.0 / var),
        "diag": np.repeat((1.0 / var)[None], w.k, axis=0),
        "spherical": np.full(w.k, 1.0 / var.mean()),
    }[w.covariance_type]
    return {
        "weights_init": np.full(w.k, 1.0 / w.k),
        "means_init": means,
        "precisions_init": precisions,
    }


def useful_flops(w: Workload, n: int) -> float:
    if w.covariance_type in ("full", "tied"):
        return 2.0 * n * w.k * w.d**2
    return 6.0 * n * w.k * w.d


# ----------------------------------------------------------------------------- one process
def _rss_now_mib() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _estimator(lib: str, w: Workload, max_iter: int, start: dict | None):
    kw = dict(covariance_type=w.covariance_type, tol=0.0, max_iter=max_iter, random_state=0)
    if start is not None:
        kw.update(start)
    if lib == "gaussmix":
        from gaussmix import GaussianMixture

        return GaussianMixture(w.k, **kw)
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(w.k, **kw)


def _fit_seconds(lib, w, X, start, max_iter, repeat):
    best, est = np.inf, None
    for _ in range(repeat):
        est = _estimator(lib, w, max_iter, start)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(X)
        best = min(best, time.perf_counter() - t0)
    return best, est


def _params_of(est) -> dict:
    return {
        name: np.asarray(getattr(est, name), dtype=np.float64)
        for name in ("weights_", "means_", "covariances_")
    }


def _em_repeats(w: Workload, n: int) -> int:
    # a few repeats of short fits, one of long ones (the minimum is the quiet-machine figure)
    return 3 if n * w.k * w.d * w.d < 2e8 else 1


def measure_em(lib: str, w: Workload, n: int, dtype: str, iters: tuple[int, int]) -> dict:
    """ms per EM iteration of ``lib`` on workload ``w`` in ``dtype``, plus final parameters."""
    X = make_data(w, n, np.dtype(dtype))
    start = start_params(w, X)
    # warm-up: compiles or loads the kernels, faults the pages in
    _fit_seconds(lib, w, X, start, 1, 1)
    a, b = iters
    repeat = _em_repeats(w, n)
    t_a, _ = _fit_seconds(lib, w, X, start, a, repeat)
    t_b, est = _fit_seconds(lib, w, X, start, b, repeat)
    # a non-positive difference is noise (tiny --quick sizes): no number rather than a wrong one
    ms = (t_b - t_a) / (b - a) * 1e3 if t_b > t_a else float("nan")
    return {"ms_per_iter": ms, "params": _params_of(est), "peak_rss_mib": _peak_rss_mib()}


def measure_predict(w: Workload, n: int) -> dict:
    """predict_proba / score_samples of a fitted W4 model, both libraries, same parameters."""
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    from gaussmix import GaussianMixture

    X = make_data(w, n, np.float64)
    start = start_params(w, X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = GaussianMixture(w.k, covariance_type=w.covariance_type, max_iter=1, **start).fit(X)
        sk = SkGaussianMixture(w.k, covariance_type=w.covariance_type, max_iter=1, **start).fit(X)
    out = {}
    for op in ("predict_proba", "score_samples"):
        for lib, est in (("gaussmix", ours), ("sklearn", sk)):
            getattr(est, op)(X[:1000])
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                getattr(est, op)(X)
                times.append(time.perf_counter() - t0)
            out[f"{lib}_{op}_ms"] = min(times) * 1e3
        a, b = getattr(ours, op)(X), getattr(sk, op)(X)
        out[f"{op}_max_abs_diff"] = float(np.max(np.abs(a - b)))
    return out


def measure_init(w: Workload, n: int) -> dict:
    """The default init (k-means) of both libraries on W4, and three of our EM iterations."""
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    from gaussmix import GaussianMixture

    X = make_data(w, n, np.float64)
    out = {}
    # warm-up of the compiled k-means steps on the same shape
    GaussianMixture(w.k, covariance_type=w.covariance_type, max_iter=0).fit(X)
    times = []
    for seed in range(3):
        t0 = time.perf_counter()
        est = GaussianMixture(w.k, covariance_type=w.covariance_type, max_iter=0, random_state=seed)
        est.fit(X)
        times.append(time.perf_counter() - t0)
    out["gaussmix_init_ms"] = min(times) * 1e3
    # scikit-learn needs one iteration; its init is that fit minus one iteration (below)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        SkGaussianMixture(w.k, covariance_type=w.covariance_type, max_iter=1, random_state=0).fit(X)
        out["sklearn_init_plus_one_iter_ms"] = (time.perf_counter() - t0) * 1e3
    return out


def measure_memory(lib: str, w: Workload, n: int, iters: int) -> dict:
    """Peak RSS of a default fit (k-means init, ``iters`` iterations) over the RSS before X."""
    import gaussmix  # noqa: F401  (imports and kernel loading are not the fit's memory)

    tiny = make_data(w, 20_000, np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _estimator(lib, w, 1, None).fit(tiny)  # loads/compiles every kernel the fit uses
    del tiny
    base = _rss_now_mib()
    X = make_data(w, n, np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _estimator(lib, w, iters, None).fit(X)
    return {
        "rss_before_x_mib": base,
        "peak_rss_mib": _peak_rss_mib(),
        "x_mib": X.nbytes / 2**20,
    }


def child_main(spec: dict) -> dict:
    w = Workload(**spec["workload"])
    kind = spec["kind"]
    if kind == "em":
        try:
            r = measure_em(spec["lib"], w, spec["n"], spec["dtype"], tuple(spec["iters"]))
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as e:
            # a peer may fail where we do not (scikit-learn's float32 covariances): report it
            return {"error": f"{type(e).__name__}: {str(e)[:120]}"}
        r["params"] = {k: v.tolist() for k, v in r["params"].items()}
        return r
    if kind == "predict":
        return measure_predict(w, spec["n"])
    if kind == "init":
        return measure_init(w, spec["n"])
    if kind == "memory":
        return measure_memory(spec["lib"], w, spec["n"], spec["iters"])
    raise ValueError(kind)


def run_child(spec: dict, in_process: bool) -> dict:
    if in_process:
        out = child_main(spec)
        if "params" in out:
            out["params"] = {k: np.asarray(v) for k, v in out["params"].items()}
        return out
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"measurement {spec['kind']} {spec.get('lib')} {spec['workload']['name']} failed:\n"
            + proc.stderr[-4000:]
        )
    out = json.loads(lines[-1][len("RESULT ") :])
    if "params" in out:
        out["params"] = {k: np.asarray(v) for k, v in out["params"].items()}
    return out


# ----------------------------------------------------------------------------- report
def machine_info() -> dict:
    import numba
    import sklearn
    from threadpoolctl import threadpool_info

    from gaussmix.backends.cpu import default_threads

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    blas = [
        {k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "prefix")}
        for i in threadpool_info()
    ]
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "numba": numba.__version__,
        "gaussmix_threads": default_threads(),
        "thread_pools": blas,
        "removed_env": os.environ.get(_REEXEC_FLAG, ""),
        "load_average_start": os.getloadavg(),
    }


def rel_diff(a: dict, b: dict) -> float:
    worst = 0.0
    for name, ref in b.items():
        scale = float(np.max(np.abs(ref))) or 1.0
        worst = max(worst, float(np.max(np.abs(a[name] - ref))) / scale)
    return worst


def fmt_ms(v: float) -> str:
    return f"{v:9.1f}" if v >= 10 else f"{v:9.2f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N/50, in one process (smoke test)")
    parser.add_argument("--only", default="", help="comma-separated workload names")
    parser.add_argument("--no-float32", action="store_true", help="skip the float32 rows")
    parser.add_argument("--json", default="", help="also write every number to this file")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print("RESULT " + json.dumps(child_main(json.loads(args.child))))
        return 0

    info = machine_info()
    def rows(w: Workload) -> int:
        return max(w.n // QUICK_SCALE, QUICK_MIN_ROWS) if args.quick else w.n

    iters = (1, 2) if args.quick else (2, 5)
    in_process = args.quick
    names = args.only.split(",") if args.only else QUICK_WORKLOADS if args.quick else None
    chosen = [w for w in WORKLOADS if names is None or w.name in names]
    if not chosen:
        parser.error(f"--only matched nothing; names: {', '.join(w.name for w in WORKLOADS)}")
    try:
        import pomegranate  # noqa: F401

        peer_note = "pomegranate is installed but its EM is not wired into this script yet"
    except ImportError:
        peer_note = "pomegranate: not installed, skipped"

    print("# gaussmix CPU engine vs scikit-learn: ms per EM iteration, same start, tol=0")
    print(f"machine : {info['cpu']}, {info['usable_cpus']} usable CPUs, {info['platform']}")
    print(
        f"software: python {info['python']}, numpy {info['numpy']}, scikit-learn "
        f"{info['scikit-learn']}, numba {info['numba']}; gaussmix threads "
        f"{info['gaussmix_threads']}"
    )
    for pool in info["thread_pools"]:
        print(
            f"pool    : {pool['internal_api']} {pool['version'] or ''} "
            f"kernel={pool['architecture'] or '-'} threads={pool['num_threads']}"
        )
    if info["removed_env"]:
        print(f"env     : removed for this run: {info['removed_env']}")
    print(f"load    : {info['load_average_start'][0]:.2f} (1-min average at start)")
    print(f"peers   : scikit-learn; {peer_note}")
    mode = (
        "quick: N/100 (>= 4096 rows), one process; a smoke test, timings are not meaningful"
        if args.quick
        else "one process per measurement"
    )
    a, b = iters
    print(f"mode    : {mode}; ms/iter = (t({b} iterations) - t({a})) / {b - a}")
    print()

    results: dict = {"machine": info, "quick": args.quick, "em": [], "float32": []}
    header = (
        f"{'workload':<13}{'N x d, K':>20} {'cov':>9} {'sklearn':>9} {'gaussmix':>9} "
        f"{'speedup':>8} {'GFLOP/s':>8} {'RSS sk':>8} {'RSS gm':>8} {'agree':>8}"
    )
    print("float64 (ms/iter; RSS = peak MiB of the measuring process)")
    print(header)
    failures = []
    ours64 = {}
    for w in chosen:
        n = rows(w)
        spec = {"kind": "em", "workload": asdict(w), "n": n, "dtype": "float64", "iters": iters}
        sk = run_child({**spec, "lib": "sklearn"}, in_process)
        gm = run_child({**spec, "lib": "gaussmix"}, in_process)
        if "error" in gm or "error" in sk:
            failures.append(f"{w.name}: {gm.get('error') or ''} {sk.get('error') or ''}")
            print(f"{w.name:<13} failed: gaussmix {gm.get('error')}; sklearn {sk.get('error')}")
            continue
        ours64[w.name] = gm
        diff = rel_diff(gm["params"], sk["params"])
        speedup = sk["ms_per_iter"] / gm["ms_per_iter"]
        gflops = useful_flops(w, n) / (gm["ms_per_iter"] * 1e-3) / 1e9
        ok = diff <= 1e-6
        if not ok:
            failures.append(f"{w.name}: parameters differ from scikit-learn by {diff:.2e}")
        print(
            f"{w.name:<13}{f'{n} x {w.d}, {w.k}':>20} {w.covariance_type:>9} "
            f"{fmt_ms(sk['ms_per_iter'])} {fmt_ms(gm['ms_per_iter'])} {speedup:7.1f}x "
            f"{gflops:8.2f} {sk['peak_rss_mib']:8.0f} {gm['peak_rss_mib']:8.0f} "
            f"{diff:8.1e}{'' if ok else ' !'}",
            flush=True,
        )
        results["em"].append(
            {
                "workload": w.name, "n": n, "d": w.d, "k": w.k, "cov": w.covariance_type,
                "headline": w.headline, "sklearn_ms": sk["ms_per_iter"],
                "gaussmix_ms": gm["ms_per_iter"], "speedup": speedup, "gflops": gflops,
                "sklearn_rss_mib": sk["peak_rss_mib"], "gaussmix_rss_mib": gm["peak_rss_mib"],
                "max_rel_diff": diff,
            }
        )
    head = [r["speedup"] for r in results["em"] if r["headline"] and np.isfinite(r["speedup"])]
    every = [r["speedup"] for r in results["em"] if np.isfinite(r["speedup"])]
    if head:
        print(
            f"W1-W5 (full, and diag on W2/W4): median speedup {statistics.median(head):.1f}x, "
            f"min {min(head):.1f}x; every row: min {min(every):.1f}x"
        )

    if not args.no_float32:
        print()
        print("float32 data (gaussmix in float32 with float64 sums; agree = vs our float64 fit)")
        print(
            f"{'workload':<13}{'sk f64':>9} {'sk f32':>9} {'gm f32':>9} {'vs sk64':>8} "
            f"{'vs sk32':>8} {'agree':>8}"
        )
        for w in chosen:
            if not w.headline or (args.quick and w.name not in ("W1", "W4")):
                continue
            n = rows(w)
            spec = {"kind": "em", "workload": asdict(w), "n": n, "dtype": "float32", "iters": iters}
            sk32 = run_child({**spec, "lib": "sklearn"}, in_process)
            gm32 = run_child({**spec, "lib": "gaussmix"}, in_process)
            if w.name not in ours64 or "error" in gm32:
                failures.append(f"{w.name} float32: {gm32.get('error')}")
                continue
            if "error" in sk32:
                # scikit-learn's float32 fit fails on some data (its covariances lose PD-ness)
                sk32 = {"ms_per_iter": float("nan")}
                print(f"{'':13}(scikit-learn float32 failed on {w.name}: {sk32.get('error')})")
            sk64 = next(r for r in results["em"] if r["workload"] == w.name)["sklearn_ms"]
            diff = rel_diff(gm32["params"], ours64[w.name]["params"])
            if diff > 1e-4:
                failures.append(f"{w.name} float32: {diff:.2e} from our float64 fit")
            print(
                f"{w.name:<13}{fmt_ms(sk64)} {fmt_ms(sk32['ms_per_iter'])} "
                f"{fmt_ms(gm32['ms_per_iter'])} {sk64 / gm32['ms_per_iter']:7.1f}x "
                f"{sk32['ms_per_iter'] / gm32['ms_per_iter']:7.1f}x {diff:8.1e}",
                flush=True,
            )
            results["float32"].append(
                {
                    "workload": w.name, "sklearn64_ms": sk64, "sklearn32_ms": sk32["ms_per_iter"],
                    "gaussmix32_ms": gm32["ms_per_iter"], "max_rel_diff_vs_f64": diff,
                }
            )
        if results["float32"]:
            ratios = [r["sklearn64_ms"] / r["gaussmix32_ms"] for r in results["float32"]]
            ratios = [r for r in ratios if np.isfinite(r)] or [float("nan")]
            med = statistics.median(ratios)
            print(f"float32 median speedup vs scikit-learn float64: {med:.1f}x")

    w4 = next((w for w in WORKLOADS if w.name == "W4"), None)
    if w4 is not None and any(w.name == "W4" for w in chosen):
        n = rows(w4)
        print()
        pred = run_child({"kind": "predict", "workload": asdict(w4), "n": n}, in_process)
        results["predict"] = pred
        print(f"W4 predictions ({n} rows)   sklearn ms  gaussmix ms  speedup  max |diff|")
        for op in ("predict_proba", "score_samples"):
            s, g = pred[f"sklearn_{op}_ms"], pred[f"gaussmix_{op}_ms"]
            print(
                f"  {op:<24}{fmt_ms(s)}    {fmt_ms(g)}  {s / g:6.1f}x  "
                f"{pred[f'{op}_max_abs_diff']:.1e}"
            )
        init = run_child({"kind": "init", "workload": asdict(w4), "n": n}, in_process)
        results["init"] = init
        em_ms = ours64["W4"]["ms_per_iter"] if "W4" in ours64 else float("nan")
        print(
            f"W4 default init (k-means): gaussmix {init['gaussmix_init_ms']:.0f} ms vs 3 EM "
            f"iterations {3 * em_ms:.0f} ms; scikit-learn init + 1 iteration "
            f"{init['sklearn_init_plus_one_iter_ms']:.0f} ms"
        )
        if not args.quick:
            for lib in ("gaussmix", "sklearn"):
                mem = run_child(
                    {"kind": "memory", "workload": asdict(w4), "n": n, "lib": lib, "iters": 5},
                    False,
                )
                results[f"memory_{lib}"] = mem
                extra = mem["peak_rss_mib"] - mem["rss_before_x_mib"]
                print(
                    f"W4 default fit peak memory, {lib:<8}: {extra:6.0f} MiB above the process "
                    f"before X (size(X) = {mem['x_mib']:.0f} MiB; budget size(X) + 64 = "
                    f"{mem['x_mib'] + 64:.0f} MiB)"
                )

    info["load_average_end"] = os.getloadavg()
    print()
    print(f"load    : {info['load_average_end'][0]:.2f} (1-min average at the end)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=float)
    if failures:
        print("DISAGREEMENT: " + "; ".join(failures))
        return 1
    return 0


def _reexec_without_blas_pins() -> None:
    """Drop OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for this run: they pin a slower kernel."""
    names = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    removed = {k: os.environ[k] for k in names if k in os.environ}
    if "OPENBLAS_CORETYPE" not in removed or _REEXEC_FLAG in os.environ:
        return
    env = {k: v for k, v in os.environ.items() if k not in removed}
    env[_REEXEC_FLAG] = ", ".join(f"{k}={v}" for k, v in removed.items())
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


if __name__ == "__main__":
    _reexec_without_blas_pins()
    sys.exit(main())
