"""EM speed of the fast CPU engine against scikit-learn, on the W1-W5 workloads of issue 5.

For every workload both libraries start from the *same* parameters (``weights_init``,
``means_init``, ``precisions_init``: K random data rows, the data's per-feature variance), run
with ``tol=0``, and are timed at two iteration counts, each as the fastest of several runs (5
for fits under 1 s, 3 under 5 s, 2 under 15 s, else 1); ms/iteration is the difference divided
by the extra iterations, so validation, set-up and scikit-learn's closing E-step cancel. The
longer count is raised until the difference is long enough to measure (gaussmix needs more
iterations than scikit-learn for that), so no row is nan; should the difference still not be
positive, the row shows ``t(b) / b`` marked ``<=`` (an upper bound). Every fit row is
measured in ``--passes`` passes over all rows (default 2; a row's passes minutes apart, the
later ones at the first pass's fit lengths), each fit length timed as the fastest of its runs
in every pass: a noisy minute on this shared machine then costs one pass of one row, not the
row. Parameters of both
libraries after the same 5 iterations are compared (max |a-b| / max |b| per array; float64 must
agree to 1e-6). Each measurement runs in a fresh Python process whose peak RSS (``ru_maxrss``)
is reported; the numba kernels are compiled (or loaded from cache) by a warm-up fit first.

Rows: W1-W5 (full, and diag on W2/W4: the headline median), the other covariance types on W2
and W4 shapes, and mclust's 14 models on the same shapes against their scikit-learn peer
("full" for the ellipsoidal models, "diag" for the diagonal ones, "spherical" for EII/VII;
the peer fits another model, so only its speed is compared: its time is reused from the peer's
own row). Also printed: float32 rows (gaussmix on float32 data against scikit-learn on float64,
and on the same float32 data with ``--sklearn-float32``), ``predict_proba``/``score_samples``
on the W rows (each the fastest of at least 5 calls, more while they fit in 0.5 s, for both
libraries), the default k-means init on W4 against three EM iterations, and the peak
memory of a default W4 fit against ``size(X) + 64 MiB``.

Rooflines: this machine's dgemm/sgemm rate (numpy matmul, 2000 x 2000, BLAS threads as
configured) and memory bandwidth (a 256 MiB array copied by as many threads as gaussmix uses,
read + write bytes) are measured at the start and the end of the run; every row prints its
achieved GFLOP/s and GB/s and their share of the measurement at the start. GFLOP/s
counts useful arithmetic per iteration: ``2·N·K·d²`` for the full moment (a triangular
Mahalanobis term and a symmetric scatter, d²/2 multiply-adds each), ``N·d² + N·K·d² + 3·N·K·d``
when the factor or the orientation is shared (tied, EEE; VEE, EVE, VVE: one projection per
row), and ``6·N·K·d`` for the diagonal moment; exponentials are not counted. GB/s counts one
read of ``X`` per iteration.

Usage::

    python benchmarks/bench_cpu.py            # the full table (15-30 minutes on 2 cores)
    python benchmarks/bench_cpu.py --quick    # small N, in one process: a smoke test
    python benchmarks/bench_cpu.py --only W4,W4-diag --json out.json
    python benchmarks/bench_cpu.py --no-mclust   # without the 28 rows of mclust's models

If ``OPENBLAS_CORETYPE`` is set the script re-executes itself without it and without
``OPENBLAS_L2_SIZE`` (they would pin OpenBLAS to a slower kernel) and says so; the BLAS
library, its kernel and thread count are printed from threadpoolctl.
"""

from __future__ import annotations

import argparse
import itertools
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
    peer: str = ""  # scikit-learn's covariance_type to time against (default: the same)

    @property
    def sk_type(self) -> str:
        return self.peer or self.covariance_type

    @property
    def comparable(self) -> bool:
        """Both libraries fit the same model: their parameters must agree."""
        return not self.peer


_BASE = [
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
MCLUST_MODELS = (
    "EII", "VII", "EEI", "VEI", "EVI", "VVI",
    "EEE", "VEE", "EVE", "VVE", "EEV", "VEV", "EVV", "VVV",
)  # fmt: skip


def _mclust_peer(name: str) -> str:
    if name in ("EII", "VII"):
        return "spherical"
    return "diag" if name.endswith("I") else "full"


MCLUST_WORKLOADS = [
    Workload(f"{w}-{m}", w_.n, w_.d, w_.k, m, headline=False, peer=_mclust_peer(m))
    for w, w_ in (("W2", _BASE[1]), ("W4", _BASE[6]))
    for m in MCLUST_MODELS
]
WORKLOADS = _BASE + MCLUST_WORKLOADS
QUICK_SCALE = 100  # --quick divides N by this (at least QUICK_MIN_ROWS rows)
QUICK_MIN_ROWS = 4096
QUICK_WORKLOADS = ("W1", "W2-diag", "W3", "W4", "W5", "W4-EII", "W4-VEV", "W2-EEE")
# fits whose extra iterations last less than this are lengthened (timer and process noise)
MIN_TIMED_SECONDS = 0.25
# time spent per prediction call being timed (fastest call of those that fit, at least 5)
PREDICT_BUDGET_SECONDS = 0.5
# a measurement process that runs longer is stopped and its row reported as not finished
CHILD_TIMEOUT_S = 600


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


def start_params(covariance_type: str, k: int, X: np.ndarray) -> dict:
    """The shared start: K random rows as means, equal weights, the data's variance.

    mclust's models start from ``I / mean variance``, which satisfies every one of their
    constraints; scikit-learn's types from the per-feature variances.
    """
    rng = np.random.default_rng(7)
    d = X.shape[1]
    means = X[rng.choice(X.shape[0], k, replace=False)].astype(np.float64)
    var = X.astype(np.float64).var(axis=0)
    iso = 1.0 / var.mean()
    precisions = {
        "full": lambda: np.repeat(np.diag(1.0 / var)[None], k, axis=0),
        "tied": lambda: np.diag(1.0 / var),
        "diag": lambda: np.repeat((1.0 / var)[None], k, axis=0),
        "spherical": lambda: np.full(k, iso),
    }.get(covariance_type)
    if precisions is None:
        from gaussmix._covariance import get_model

        shape = get_model(covariance_type).shape(k, d)
        p = np.broadcast_to(np.eye(d) * iso, (k, d, d)) if len(shape) == 3 else np.full(shape, iso)
        p = np.array(p)
    else:
        p = precisions()
    return {"weights_init": np.full(k, 1.0 / k), "means_init": means, "precisions_init": p}


def useful_flops(covariance_type: str, n: int, d: int, k: int, predict: bool = False) -> float:
    """Useful arithmetic of one E-step (``predict``: of the log-joint alone, a prediction's)."""
    from gaussmix._covariance import get_model

    model = get_model(covariance_type)
    if model.moment == "full" and (model.shared_factor or model.common_orientation):
        # one projection per row (the shared factor, or the common orientation D), distances
        # in the projected space, the scatter
        return n * d**2 + 3.0 * n * k * d + (0.0 if predict else n * k * d**2)
    if model.moment == "full":
        return (1.0 if predict else 2.0) * n * k * d**2
    return (3.0 if predict else 6.0) * n * k * d


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


def _estimator(lib: str, cov: str, k: int, max_iter: int, start: dict | None):
    kw = dict(covariance_type=cov, tol=0.0, max_iter=max_iter, random_state=0)
    if start is not None:
        kw.update(start)
    if lib == "gaussmix":
        from gaussmix import GaussianMixture

        return GaussianMixture(k, **kw)
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(k, **kw)


def _fit_seconds(lib, cov, k, X, start, max_iter, repeat):
    best, est = np.inf, None
    for _ in range(repeat):
        est = _estimator(lib, cov, k, max_iter, start)
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


def _ms_per_iter(t_a: float, t_b: float, a: int, b: int) -> tuple[float, bool]:
    """ms per iteration from the times of fits of ``a`` and ``b`` iterations, and whether it is
    only the upper bound ``t_b / b`` (the longer fit was not measurably longer)."""
    upper_bound = not t_b > t_a
    return (t_b / b if upper_bound else (t_b - t_a) / (b - a)) * 1e3, upper_bound


def measure_em(
    lib: str,
    w: Workload,
    n: int,
    dtype: str,
    check_iter: int,
    min_seconds: float,
    iters: list[int] | None = None,
) -> dict:
    """ms per EM iteration of ``lib`` on workload ``w`` in ``dtype``, and the parameters after
    ``check_iter`` iterations; with ``iters`` (a later pass): those two fit lengths, timed
    only (no parameters), so that the passes' times of each length can be combined."""
    X = make_data(w, n, np.dtype(dtype))
    cov = w.covariance_type if lib == "gaussmix" else w.sk_type
    start = start_params(cov, w.k, X)
    # warm-up: compiles or loads the kernels, faults the pages in; also sizes the repeats
    t1, _ = _fit_seconds(lib, cov, w.k, X, start, 1, 1)
    a, b = (2, check_iter) if iters is None else iters
    # fastest of several runs per fit length (single timings on a shared machine vary by tens
    # of percent); fewer runs of fits that take long
    longest = t1 * b
    repeat = 5 if longest < 1.0 else 3 if longest < 5.0 else 2 if longest < 15.0 else 1
    if min_seconds == 0:  # --quick: a smoke test, one run each, no lengthening
        repeat = 1
    t_a, _ = _fit_seconds(lib, cov, w.k, X, start, a, repeat)
    t_b, est = _fit_seconds(lib, cov, w.k, X, start, b, repeat)
    params = _params_of(est) if iters is None else None
    if iters is None and 0 < min_seconds and t_b - t_a < min_seconds:
        # too short to time: more iterations, sized from what was measured
        per_iter = max((t_b - t_a) / (b - a), 1e-5)
        b = a + min(400, max(b - a + 1, int(np.ceil(min_seconds / per_iter))))
        t_a, _ = _fit_seconds(lib, cov, w.k, X, start, a, repeat)
        t_b, _ = _fit_seconds(lib, cov, w.k, X, start, b, repeat)
    ms, upper_bound = _ms_per_iter(t_a, t_b, a, b)
    return {
        "ms_per_iter": ms,
        "upper_bound": upper_bound,
        "iters": [a, b],
        "t_a": t_a,
        "t_b": t_b,
        "repeat": repeat,
        "params": params,
        "peak_rss_mib": _peak_rss_mib(),
    }


def _best_ms(fn, repeat: int = 3, budget: float = 0.0) -> float:
    """Fastest of ``repeat`` calls, or of as many more as fit in ``budget`` seconds (at most
    200): a call of a few milliseconds is disturbed by most things else running here."""
    times: list[float] = []
    spent = 0.0
    while len(times) < repeat or (spent < budget and len(times) < 200):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        spent += times[-1]
    return min(times) * 1e3


def measure_predict(w: Workload, n: int, budget: float) -> dict:
    """predict_proba / score_samples of both libraries with the same parameters; ``budget``:
    seconds of calls to time per library and operation (0: five calls)."""
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    from gaussmix import GaussianMixture

    X = make_data(w, n, np.float64)
    start = start_params(w.covariance_type, w.k, X)
    cov = w.covariance_type
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = GaussianMixture(w.k, covariance_type=cov, max_iter=1, **start).fit(X)
        sk = SkGaussianMixture(w.k, covariance_type=cov, max_iter=1, **start).fit(X)
    out = {}
    for op in ("predict_proba", "score_samples"):
        for lib, est in (("gaussmix", ours), ("sklearn", sk)):
            getattr(est, op)(X[:5000])  # loads the kernels
            # fastest of at least 5, more while they fit in half a second (the same rule for
            # both libraries): a call of ours lasts milliseconds on this shared machine
            out[f"{lib}_{op}_ms"] = _best_ms(
                lambda est=est, op=op: getattr(est, op)(X), 5, budget
            )
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
        # loads/compiles every kernel the fit uses
        _estimator(lib, w.covariance_type, w.k, 1, None).fit(tiny)
    del tiny
    base = _rss_now_mib()
    X = make_data(w, n, np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _estimator(lib, w.covariance_type, w.k, iters, None).fit(X)
    return {
        "rss_before_x_mib": base,
        "peak_rss_mib": _peak_rss_mib(),
        "x_mib": X.nbytes / 2**20,
    }


def child_main(spec: dict) -> dict:
    kind = spec["kind"]
    if kind == "limits":
        return rooflines(spec["threads"])
    w = Workload(**spec["workload"])
    if kind == "em":
        try:
            r = measure_em(
                spec["lib"], w, spec["n"], spec["dtype"], spec["check_iter"],
                spec["min_seconds"], spec.get("iters"),
            )  # fmt: skip
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as e:
            # a peer may fail where we do not (scikit-learn's float32 covariances): report it
            return {"error": f"{type(e).__name__}: {str(e)[:120]}"}
        if r["params"] is not None:
            r["params"] = {k: v.tolist() for k, v in r["params"].items()}
        return r
    if kind == "predict":
        return measure_predict(w, spec["n"], spec["budget"])
    if kind == "init":
        return measure_init(w, spec["n"])
    if kind == "memory":
        return measure_memory(spec["lib"], w, spec["n"], spec["iters"])
    raise ValueError(kind)


def run_child(spec: dict, in_process: bool) -> dict:
    if in_process:
        out = child_main(spec)
        if out.get("params") is not None:
            out["params"] = {k: np.asarray(v) for k, v in out["params"].items()}
        return out
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            capture_output=True,
            text=True,
            check=False,
            timeout=CHILD_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        # one measurement must not hold up the table (scikit-learn's W3 ran past 30 minutes
        # on a loaded 2-core machine): its row says so and the run goes on
        return {"error": f"did not finish in {CHILD_TIMEOUT_S} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        name = spec.get("workload", {}).get("name")
        raise RuntimeError(
            f"measurement {spec['kind']} {spec.get('lib')} {name} failed:\n" + proc.stderr[-4000:]
        )
    out = json.loads(lines[-1][len("RESULT ") :])
    if out.get("params") is not None:
        out["params"] = {k: np.asarray(v) for k, v in out["params"].items()}
    return out


# ----------------------------------------------------------------------------- report
def machine_info() -> dict:
    import llvmlite.binding as llvm
    import numba
    import sklearn
    from threadpoolctl import threadpool_info

    from gaussmix import _jit  # noqa: F401  (sets numba's vector width as the kernels do)
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
        "numba_cpu": llvm.get_host_cpu_name(),
        "numba_vectors": (
            "LLVM's default for the CPU"
            if not (numba.config.CPU_FEATURES or "").endswith("-prefer-256-bit")
            else "512-bit (NUMBA_CPU_FEATURES)"
            if "NUMBA_CPU_FEATURES" in os.environ
            else "512-bit (gaussmix._jit)"
        ),
        "thread_pools": blas,
        "removed_env": os.environ.get(_REEXEC_FLAG, ""),
        "load_average_start": os.getloadavg(),
    }


def rooflines(threads: int) -> dict:
    """This machine's limits now: dgemm/sgemm GFLOP/s and copy bandwidth (GB/s, read + write)."""
    from concurrent.futures import ThreadPoolExecutor

    out = {}
    rng = np.random.default_rng(0)
    for name, dt in (("dgemm", np.float64), ("sgemm", np.float32)):
        a = rng.random((2000, 2000)).astype(dt)
        a @ a
        out[f"{name}_gflops"] = 2 * 2000**3 / (_best_ms(lambda a=a: a @ a, 5) * 1e-3) / 1e9
    src = np.ones(32 << 20)  # 256 MiB: far beyond the caches
    dst = np.empty_like(src)
    cuts = np.linspace(0, src.size, threads + 1).astype(int)
    parts = [slice(lo, hi) for lo, hi in itertools.pairwise(cuts)]
    with ThreadPoolExecutor(threads) as pool:

        def copy():
            list(pool.map(lambda sl: np.copyto(dst[sl], src[sl]), parts))

        copy()
        out["copy_gbs"] = 2 * src.nbytes / (_best_ms(copy, 5) * 1e-3) / 1e9
    return out


def rel_diff(a: dict, b: dict) -> float:
    worst = 0.0
    for name, ref in b.items():
        scale = float(np.max(np.abs(ref))) or 1.0
        worst = max(worst, float(np.max(np.abs(a[name] - ref))) / scale)
    return worst


def fmt_ms(v: float) -> str:
    return f"{v:9.1f}" if v >= 10 else f"{v:9.2f}"


def _print_header(info: dict, roof: dict, args) -> None:
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
    if "numba_cpu" in info:
        print(f"numba   : target {info['numba_cpu']}, vectors {info['numba_vectors']}")
    removed = info["removed_env"] or "none (OPENBLAS_CORETYPE was not set)"
    print(f"env     : removed for this run: {removed}")
    print(f"load    : {info['load_average_start'][0]:.2f} (1-min average at start)")
    print(
        f"limits  : dgemm {roof['dgemm_gflops']:.0f} GFLOP/s, sgemm {roof['sgemm_gflops']:.0f} "
        f"GFLOP/s, memory copy {roof['copy_gbs']:.1f} GB/s (measured now; again at the end)"
    )
    mode = (
        "quick: N/100 (>= 4096 rows), one process; a smoke test, timings are not meaningful"
        if args.quick
        else "one process per measurement"
    )
    print(f"mode    : {mode}")
    print(
        "timing  : ms/iter = (t(b iterations) - t(2)) / (b - 2), each t the fastest of 1-5 runs, "
        f"b >= 5 raised until t(b) - t(2) >= {MIN_TIMED_SECONDS} s; every fit row measured in "
        f"{1 if args.quick else args.passes} pass(es) over the rows, each t the fastest of all"
    )
    print()


def _pct(v: float, limit: float) -> str:
    return f"{v:.1f} ({v / limit:.0%})" if limit and np.isfinite(limit) else f"{v:.1f}"


def _ms(v: float) -> str:
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def markdown(res: dict) -> str:
    """The README's tables from the JSON of one run (``--json``), so that they are regenerated,
    not retyped."""
    lim = res["limits_start"]
    nan = float("nan")
    end = res.get("limits_end", dict.fromkeys(("dgemm_gflops", "sgemm_gflops", "copy_gbs"), nan))
    info = res["machine"]
    f32 = {r["workload"]: r for r in res.get("float32", [])}
    out = [
        f"Run: {info['cpu']}, {info['usable_cpus']} usable CPUs; numpy {info['numpy']}, "
        f"scikit-learn {info['scikit-learn']}, numba {info['numba']}; gaussmix threads "
        f"{info['gaussmix_threads']}; "
        + (
            f"numba target {info['numba_cpu']}, vectors {info['numba_vectors']}; "
            if "numba_cpu" in info
            else ""
        )
        + "; ".join(
            f"{p['internal_api']} {p['version']} ({p['architecture']}, {p['num_threads']} "
            "threads)"
            for p in info["thread_pools"]
        )
        + f". Load (1-min average) {info['load_average_start'][0]:.2f} at the start, "
        f"{info.get('load_average_end', [float('nan')])[0]:.2f} at the end; dgemm "
        f"{lim['dgemm_gflops']:.0f} GFLOP/s, sgemm {lim['sgemm_gflops']:.0f} GFLOP/s, copy "
        f"{lim['copy_gbs']:.1f} GB/s at the start (at the end: "
        f"{end['dgemm_gflops']:.0f}, {end['sgemm_gflops']:.0f}, {end['copy_gbs']:.1f}).",
        "",
        "| workload | N × d, K | model | scikit-learn ms/it | gaussmix ms/it | speedup "
        "| GFLOP/s (% of dgemm) | GB/s (% of copy) | gaussmix float32 ms/it "
        "| float32 vs scikit-learn float64 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["em"]:
        if r["cov"] in MCLUST_MODELS:
            continue
        g = f32.get(r["workload"])
        # a time that did not grow with the iterations is an upper bound (t(b) / b)
        bound = "≈ " if r["upper_bound"] else ""
        f32_cols = (
            f"{_ms(g['gaussmix32_ms'])} | {r['sklearn_ms'] / g['gaussmix32_ms']:.1f}×"
            if g
            else " | "
        )
        out.append(
            f"| {r['workload'].split('-')[0]} | {r['n']} × {r['d']}, {r['k']} | {r['cov']} "
            f"| {_ms(r['sklearn_ms'])} | {_ms(r['gaussmix_ms'])} | {bound}{r['speedup']:.1f}× "
            f"| {_pct(r['gflops'], lim['dgemm_gflops'])} | {_pct(r['gbs'], lim['copy_gbs'])} "
            f"| {f32_cols} |"
        )
    head = [r["speedup"] for r in res["em"] if r["headline"]]
    if head:
        out.append("")
        out.append(
            f"W1–W5 (full, and diag on W2/W4): median {statistics.median(head):.1f}×, "
            f"min {min(head):.1f}×."
        )
    if f32:
        ratios = [r["sklearn64_ms"] / r["gaussmix32_ms"] for r in f32.values()]
        out.append(
            f"float32 against scikit-learn float64: median {statistics.median(ratios):.1f}× "
            f"over {len(ratios)} rows; largest difference from our float64 fit "
            f"{max(r['max_rel_diff_vs_f64'] for r in f32.values()):.1e} (relative)."
        )
    if res.get("predict"):
        out += [
            "",
            "| workload | predict_proba scikit-learn / gaussmix ms | speedup "
            "| score_samples scikit-learn / gaussmix ms | speedup "
            "| GFLOP/s (% of dgemm), score_samples |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        ratios = []
        for p in res["predict"]:
            cells = []
            for op in ("predict_proba", "score_samples"):
                sk, gm = p[f"sklearn_{op}_ms"], p[f"gaussmix_{op}_ms"]
                cells.append(f"{_ms(sk)} / {_ms(gm)} | {sk / gm:.1f}×")
                if p["workload"] != "W3":
                    ratios.append(sk / gm)
            gflops = p.get("score_samples_gflops")
            if gflops is None:  # a run's JSON from before the key: the same count, from here
                w = next(w for w in WORKLOADS if w.name == p["workload"])
                n = p.get("n", max(w.n // QUICK_SCALE, QUICK_MIN_ROWS) if res["quick"] else w.n)
                flops = useful_flops(w.covariance_type, n, w.d, w.k, predict=True)
                gflops = flops / (p["gaussmix_score_samples_ms"] * 1e-3) / 1e9
            roofline = _pct(gflops, lim["dgemm_gflops"])
            out.append(f"| {p['workload']} | {' | '.join(cells)} | {roofline} |")
        if ratios:
            out.append("")
            out.append(
                f"Predictions, W3 aside (bound by dgemm): median {statistics.median(ratios):.1f}×, "
                f"min {min(ratios):.1f}×."
            )
    models = [r for r in res["em"] if r["cov"] in MCLUST_MODELS]
    if models:
        out += [
            "",
            "| shape | model | scikit-learn peer | scikit-learn ms/it | gaussmix ms/it "
            "| speedup | GFLOP/s (% of dgemm) |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for r in models:
            out.append(
                f"| {r['workload'].split('-')[0]} | {r['cov']} | {r['peer']} "
                f"| {_ms(r['sklearn_ms'])} | {_ms(r['gaussmix_ms'])} | {r['speedup']:.1f}× "
                f"| {_pct(r['gflops'], lim['dgemm_gflops'])} |"
            )
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N/100, in one process (smoke test)")
    parser.add_argument("--only", default="", help="comma-separated workload names")
    parser.add_argument("--no-float32", action="store_true", help="skip the float32 rows")
    parser.add_argument("--no-mclust", action="store_true", help="skip mclust's 14 models")
    parser.add_argument("--no-predict", action="store_true", help="skip the prediction rows")
    parser.add_argument(
        "--sklearn-float32", action="store_true", help="also time scikit-learn on float32 data"
    )
    parser.add_argument(
        "--passes", type=int, default=2,
        help="measure every fit row in this many passes; each fit length keeps its fastest time",
    )  # fmt: skip
    parser.add_argument("--json", default="", help="also write every number to this file")
    parser.add_argument(
        "--markdown", default="", help="print the README tables of a --json file and exit"
    )
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print("RESULT " + json.dumps(child_main(json.loads(args.child))))
        return 0
    if args.markdown:
        with open(args.markdown) as f:
            print(markdown(json.load(f)))
        return 0

    info = machine_info()

    def rows(w: Workload) -> int:
        return max(w.n // QUICK_SCALE, QUICK_MIN_ROWS) if args.quick else w.n

    check_iter = 3 if args.quick else 5
    min_seconds = 0.0 if args.quick else MIN_TIMED_SECONDS
    budget = 0.0 if args.quick else PREDICT_BUDGET_SECONDS
    passes = 1 if args.quick else args.passes
    in_process = args.quick
    names = args.only.split(",") if args.only else QUICK_WORKLOADS if args.quick else None
    chosen = [
        w
        for w in WORKLOADS
        if (names is None or w.name in names) and not (args.no_mclust and w.peer and not names)
    ]
    if not chosen:
        parser.error(f"--only matched nothing; names: {', '.join(w.name for w in WORKLOADS)}")
    # in a child process: Linux keeps a parent's peak RSS across fork and exec, so 512 MiB
    # of copy buffers here would show in every later measurement's RSS
    limits = {"kind": "limits", "threads": info["gaussmix_threads"]}
    roof = run_child(limits, False)
    if "error" in roof:
        roof = dict.fromkeys(("dgemm_gflops", "sgemm_gflops", "copy_gbs"), np.nan)
    _print_header(info, roof, args)

    results: dict = {"machine": info, "limits_start": roof, "quick": args.quick}
    results["passes"] = 1 if args.quick else args.passes
    results.update(em=[], float32=[], predict=[])

    def save() -> None:
        # after every row: a run stopped part-way still leaves what it measured
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1, default=float)
    header = (
        f"{'workload':<13}{'N x d, K':>18} {'model':>9} {'peer':>9} {'sklearn':>9} "
        f"{'gaussmix':>9} {'speedup':>8} {'GFLOP/s':>8} {'%dgemm':>7} {'GB/s':>6} {'%copy':>6} "
        f"{'RSS sk':>7} {'RSS gm':>7} {'agree':>8}"
    )
    failures: list[str] = []
    ours64: dict = {}
    sk_cache: dict = {}

    def em(lib: str, w: Workload, dtype: str, iters: list[int] | None = None) -> dict:
        n = rows(w)
        spec = {
            "kind": "em", "workload": asdict(w), "n": n, "dtype": dtype, "lib": lib,
            "check_iter": check_iter, "min_seconds": min_seconds, "iters": iters,
        }  # fmt: skip
        if lib == "gaussmix":
            return run_child(spec, in_process)
        # one scikit-learn measurement per (shape, its covariance type, dtype)
        key = (n, w.d, w.k, w.sk_type, dtype)
        if key not in sk_cache:
            spec["workload"] = asdict(Workload(w.name, w.n, w.d, w.k, w.sk_type))
            sk_cache[key] = run_child(spec, in_process)
        return sk_cache[key]

    # every (library, row, dtype) measured once per pass, the passes minutes apart, a later
    # pass at the first pass's two fit lengths: each length keeps its fastest time over every
    # run of every pass, so a noisy minute on this shared machine costs one pass
    tries: dict = {}

    def measure_pass(dtype: str, rows_of_pass: list[Workload], libs: tuple[str, ...]) -> None:
        for p in range(passes):
            sk_cache.clear()
            for w in rows_of_pass:
                for lib in libs:
                    done = tries.setdefault((lib, w.name, dtype), [])
                    # the lengths of the first successful pass, which best() combines
                    first = next((m for m in done if "error" not in m), None)
                    done.append(em(lib, w, dtype, first["iters"] if first else None))
                if passes > 1:
                    got = [tries[(lib, w.name, dtype)][-1].get("ms_per_iter") for lib in libs]
                    print(f"  pass {p + 1}/{passes} {dtype} {w.name:<13} " + "  ".join(
                        f"{lib} {fmt_ms(v) if v is not None else 'failed'}"
                        for lib, v in zip(libs, got, strict=True)
                    ), flush=True)

    def best(lib: str, w: Workload, dtype: str) -> dict:
        ok = [m for m in tries[(lib, w.name, dtype)] if "error" not in m]
        if not ok:
            return tries[(lib, w.name, dtype)][0]
        # the first successful pass chose the lengths and holds the parameters
        a, b = ok[0]["iters"]
        same = [m for m in ok if m["iters"] == [a, b]]
        ms, upper = _ms_per_iter(
            min(m["t_a"] for m in same), min(m["t_b"] for m in same), a, b
        )
        return {
            **ok[0], "ms_per_iter": ms, "upper_bound": upper,
            "passes_ms": [m["ms_per_iter"] for m in ok],
        }  # fmt: skip

    measure_pass("float64", chosen, ("sklearn", "gaussmix"))
    if passes > 1:
        print()
    print(
        "float64 (ms/iter, each fit length the fastest of every pass; %dgemm, %copy: share of the "
        "limits above; RSS: peak MiB)"
    )
    print(header)
    for w in chosen:
        n = rows(w)
        sk = best("sklearn", w, "float64")
        gm = best("gaussmix", w, "float64")
        if "error" in gm or "error" in sk:
            failures.append(f"{w.name}: {gm.get('error') or ''} {sk.get('error') or ''}")
            print(f"{w.name:<13} failed: gaussmix {gm.get('error')}; sklearn {sk.get('error')}")
            continue
        ours64[w.name] = gm
        diff = rel_diff(gm["params"], sk["params"]) if w.comparable else float("nan")
        speedup = sk["ms_per_iter"] / gm["ms_per_iter"]
        gflops = useful_flops(w.covariance_type, n, w.d, w.k) / (gm["ms_per_iter"] * 1e6)
        gbs = n * w.d * 8 / (gm["ms_per_iter"] * 1e6)
        ok = not w.comparable or diff <= 1e-6
        if not ok:
            failures.append(f"{w.name}: parameters differ from scikit-learn by {diff:.2e}")
        mark = "<=" if gm["upper_bound"] else "  "
        sk_mark = "<=" if sk["upper_bound"] else "  "
        agree = f"{diff:8.1e}" if w.comparable else f"{'-':>8}"
        print(
            f"{w.name:<13}{f'{n} x {w.d}, {w.k}':>18} {w.covariance_type:>9} {w.sk_type:>9} "
            f"{sk_mark}{fmt_ms(sk['ms_per_iter'])[2:]} {mark}{fmt_ms(gm['ms_per_iter'])[2:]} "
            f"{speedup:7.1f}x {gflops:8.2f} {gflops / roof['dgemm_gflops']:6.0%} "
            f"{gbs:6.2f} {gbs / roof['copy_gbs']:6.0%} {sk['peak_rss_mib']:7.0f} "
            f"{gm['peak_rss_mib']:7.0f} {agree}{'' if ok else ' !'}",
            flush=True,
        )
        results["em"].append(
            {
                "workload": w.name, "n": n, "d": w.d, "k": w.k, "cov": w.covariance_type,
                "peer": w.sk_type, "headline": w.headline, "sklearn_ms": sk["ms_per_iter"],
                "gaussmix_ms": gm["ms_per_iter"], "speedup": speedup, "gflops": gflops,
                "gbs": gbs, "sklearn_iters": sk["iters"], "gaussmix_iters": gm["iters"],
                "upper_bound": gm["upper_bound"] or sk["upper_bound"],
                "sklearn_rss_mib": sk["peak_rss_mib"], "gaussmix_rss_mib": gm["peak_rss_mib"],
                "max_rel_diff": diff if w.comparable else None,
                "sklearn_passes_ms": sk["passes_ms"], "gaussmix_passes_ms": gm["passes_ms"],
            }
        )  # fmt: skip
        save()
    head = [r["speedup"] for r in results["em"] if r["headline"]]
    every = [r["speedup"] for r in results["em"]]
    if head:
        print(
            f"W1-W5 (full, and diag on W2/W4): median speedup {statistics.median(head):.1f}x, "
            f"min {min(head):.1f}x; every row: min {min(every):.1f}x"
        )
    w3 = next((r for r in results["em"] if r["workload"] == "W3"), None)
    if w3 is not None:
        print(f"W3: {w3['gflops']:.1f} GFLOP/s useful = {w3['gflops'] / roof['dgemm_gflops']:.0%} "
              f"of dgemm")

    if not args.no_float32:
        print()
        f32_rows = [
            w for w in chosen if w.headline and not (args.quick and w.name not in ("W1", "W4"))
        ]
        libs32 = ("sklearn", "gaussmix") if args.sklearn_float32 else ("gaussmix",)
        measure_pass("float32", f32_rows, libs32)
        if passes > 1:
            print()
        print("float32 data (gaussmix in float32 with float64 sums; agree = vs our float64 fit)")
        print(
            f"{'workload':<13}{'sk f64':>9} {'sk f32':>9} {'gm f32':>9} {'vs sk64':>8} "
            f"{'vs sk32':>8} {'GFLOP/s':>8} {'%sgemm':>7} {'agree':>8}"
        )
        for w in f32_rows:
            n = rows(w)
            sk32 = (
                best("sklearn", w, "float32")
                if args.sklearn_float32
                else {"ms_per_iter": np.nan}
            )
            gm32 = best("gaussmix", w, "float32")
            if w.name not in ours64 or "error" in gm32:
                failures.append(f"{w.name} float32: {gm32.get('error')}")
                continue
            if "error" in sk32:
                # scikit-learn's float32 fit fails on some data (its covariances lose PD-ness)
                print(f"{'':13}(scikit-learn float32 failed on {w.name}: {sk32.get('error')})")
                sk32 = {"ms_per_iter": float("nan")}
            sk64 = next(r for r in results["em"] if r["workload"] == w.name)["sklearn_ms"]
            diff = rel_diff(gm32["params"], ours64[w.name]["params"])
            if diff > 1e-4:
                failures.append(f"{w.name} float32: {diff:.2e} from our float64 fit")
            gflops = useful_flops(w.covariance_type, n, w.d, w.k) / (gm32["ms_per_iter"] * 1e6)
            mark = "<=" if gm32["upper_bound"] else "  "
            print(
                f"{w.name:<13}{fmt_ms(sk64)} {fmt_ms(sk32['ms_per_iter'])} "
                f"{mark}{fmt_ms(gm32['ms_per_iter'])[2:]} {sk64 / gm32['ms_per_iter']:7.1f}x "
                f"{sk32['ms_per_iter'] / gm32['ms_per_iter']:7.1f}x {gflops:8.2f} "
                f"{gflops / roof['sgemm_gflops']:6.0%} {diff:8.1e}",
                flush=True,
            )
            results["float32"].append(
                {
                    "workload": w.name, "sklearn64_ms": sk64, "sklearn32_ms": sk32["ms_per_iter"],
                    "gaussmix32_ms": gm32["ms_per_iter"], "gflops": gflops,
                    "max_rel_diff_vs_f64": diff, "gaussmix32_passes_ms": gm32["passes_ms"],
                }
            )  # fmt: skip
            save()
        if results["float32"]:
            ratios = [r["sklearn64_ms"] / r["gaussmix32_ms"] for r in results["float32"]]
            med = statistics.median(ratios)
            print(f"float32 median speedup vs scikit-learn float64: {med:.1f}x")

    if not args.no_predict:
        print()
        print(f"{'predictions':<13}{'op':>14} {'sklearn ms':>11} {'gaussmix ms':>12} "
              f"{'speedup':>8} {'GFLOP/s':>8} {'%dgemm':>7} {'max |diff|':>10}")
        pred_speedups: list[float] = []
        for w in chosen:
            if not w.headline or (args.quick and w.name != "W4"):
                continue
            pred = run_child(
                {"kind": "predict", "workload": asdict(w), "n": rows(w), "budget": budget},
                in_process,
            )
            if "error" in pred:
                print(f"{w.name:<13}{'':>14} {pred['error']}")
                continue
            # a prediction's useful work: every component's log-joint (the E-step without
            # the moments)
            flops = useful_flops(w.covariance_type, rows(w), w.d, w.k, predict=True)
            for op in ("predict_proba", "score_samples"):
                pred[f"{op}_gflops"] = flops / (pred[f"gaussmix_{op}_ms"] * 1e-3) / 1e9
            results["predict"].append({"workload": w.name, "n": rows(w), **pred})
            save()
            for op in ("predict_proba", "score_samples"):
                sk_ms, gm_ms = pred[f"sklearn_{op}_ms"], pred[f"gaussmix_{op}_ms"]
                gflops = pred[f"{op}_gflops"]
                if w.name != "W3":
                    pred_speedups.append(sk_ms / gm_ms)
                print(
                    f"{w.name:<13}{op:>14} {fmt_ms(sk_ms):>11} {fmt_ms(gm_ms):>12} "
                    f"{sk_ms / gm_ms:7.1f}x {gflops:8.2f} {gflops / roof['dgemm_gflops']:6.0%} "
                    f"{pred[f'{op}_max_abs_diff']:10.1e}",
                    flush=True,
                )
            save()
        if pred_speedups:
            print(
                f"predictions (W3 aside: bound by dgemm, see its %dgemm): median speedup "
                f"{statistics.median(pred_speedups):.1f}x, min {min(pred_speedups):.1f}x"
            )

    w4 = next((w for w in chosen if w.name == "W4"), None)
    if w4 is not None:
        n = rows(w4)
        print()
        init = run_child({"kind": "init", "workload": asdict(w4), "n": n}, in_process)
        results["init"] = init
        if "error" in init:
            init = dict.fromkeys(("gaussmix_init_ms", "sklearn_init_plus_one_iter_ms"), np.nan)
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
                if "error" in mem:
                    print(f"W4 default fit peak memory, {lib}: {mem['error']}")
                    continue
                extra = mem["peak_rss_mib"] - mem["rss_before_x_mib"]
                print(
                    f"W4 default fit peak memory, {lib:<8}: {extra:6.0f} MiB above the process "
                    f"before X (size(X) = {mem['x_mib']:.0f} MiB; budget size(X) + 64 = "
                    f"{mem['x_mib'] + 64:.0f} MiB)"
                )

    info["load_average_end"] = os.getloadavg()
    roof_end = run_child(limits, False)
    if "error" in roof_end:
        roof_end = dict.fromkeys(("dgemm_gflops", "sgemm_gflops", "copy_gbs"), np.nan)
    results["limits_end"] = roof_end
    print()
    print(f"load    : {info['load_average_end'][0]:.2f} (1-min average at the end)")
    print(
        f"limits  : at the end dgemm {roof_end['dgemm_gflops']:.0f} GFLOP/s, sgemm "
        f"{roof_end['sgemm_gflops']:.0f} GFLOP/s, memory copy {roof_end['copy_gbs']:.1f} GB/s"
    )
    if w3 is not None:
        # a run whose start measured dgemm in a disturbed minute (12a: 80 GFLOP/s, 122 at the
        # end) reads W3's share too high: both shares, side by side
        print(
            f"W3      : {w3['gflops']:.1f} GFLOP/s useful = "
            f"{w3['gflops'] / roof['dgemm_gflops']:.0%} of the dgemm at the start, "
            f"{w3['gflops'] / roof_end['dgemm_gflops']:.0%} of the dgemm at the end"
        )
    save()
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
