"""GPU benchmark: milliseconds per EM iteration on the workloads G1-G4 of the GPU-engine issue.

Every library starts from the same parameters (one hard-assignment M-step from K random rows,
which is also what torchgmm computes itself from ``init_means``), runs a fixed number of EM
iterations with convergence checks off, and is timed by difference: the wall time of a fit
with ``1 + iters`` iterations minus that of a fit with 1, over ``iters`` (setup, validation,
initialisation and compilation cancel out; a warm-up fit runs first). The final parameters
of every library are scored by the same float64 evaluator, so agreement is checked on the
log-likelihood they reach.

Rows: gaussmix with the torch kernel, the fused Triton kernels with IEEE float32 products (the
default), with 3-pass TF32 tensor-core products (about float32 accuracy) and with 1-pass TF32;
torchgmm and pomegranate when importable (skipped otherwise); scikit-learn on the CPU for one
workload. Columns: ms/iteration, speedup of gaussmix (the
default Triton path) over the best peer, achieved TFLOP/s counting 4·N·K·d² flops per
iteration (Mahalanobis products and scatter; exp/log not counted) and its fraction of the
fp32 peak given by ``--peak-tflops`` (default: H100 SXM, 67 TFLOP/s non-tensor fp32).

One command on the GPU machine (see README, "GPU engine")::

    python benchmarks/bench_gpu.py                     # G1-G4 on cuda, peers if importable
    python benchmarks/bench_gpu.py --workloads G2 --iters 5
    python benchmarks/bench_gpu.py --device cpu --scale 0.002 --sklearn none   # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import logging
import math
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gaussmix import GaussianMixture


@dataclass(frozen=True)
class Workload:
    name: str
    n: int
    d: int
    K: int
    peers_reported: str  # the measurements, quoted for context
    target_ms: float


WORKLOADS = {
    "G1": Workload("G1", 1_000_000, 16, 16, "torchgmm 40, pomegranate 42", 4.0),
    "G2": Workload("G2", 1_000_000, 64, 64, "torchgmm 258, pomegranate 276", 25.0),
    "G3": Workload("G3", 10_000_000, 8, 8, "pomegranate 56, torchgmm 129", 5.6),
    "G4": Workload("G4", 1_000_000, 2, 100, "torchgmm 65, pomegranate 187", 6.5),
}
REG = 1e-6


# ---------------------------------------------------------------------------------- data
def make_data(w: Workload, n: int, device: torch.device, seed: int) -> torch.Tensor:
    """float32 rows from a random K-component mixture, generated on the device."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    # component centres spread so that neighbours overlap a little at every K and d
    spread = 4.0 * max(1.0, (w.K ** (1.0 / w.d)) / 2.0)
    means = torch.randn(w.K, w.d, generator=g, dtype=torch.float64) * spread
    factors = torch.randn(w.K, w.d, w.d, generator=g, dtype=torch.float64) * 0.3
    factors += torch.eye(w.d, dtype=torch.float64)
    labels = torch.randint(0, w.K, (n,), generator=g)
    X = torch.empty((n, w.d), dtype=torch.float32, device=device)
    for k in range(w.K):
        rows = torch.nonzero(labels == k).squeeze(1)
        z = torch.randn(rows.numel(), w.d, generator=g, dtype=torch.float64)
        X[rows.to(device)] = (means[k] + z @ factors[k].T).to(device, torch.float32)
    return X


def hard_assignment_start(X: torch.Tensor, K: int, seed: int):
    """Weights, means, covariances (float64 numpy) of one M-step on nearest-of-K-random-rows."""
    n, d = X.shape
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=K, replace=False))
    centres = X[torch.from_numpy(rows).to(X.device)].double()
    counts = torch.zeros(K, dtype=torch.float64, device=X.device)
    sums = torch.zeros(K, d, dtype=torch.float64, device=X.device)
    labels = torch.empty(n, dtype=torch.long, device=X.device)
    step = max(1, (1 << 24) // K)
    for s in range(0, n, step):
        xc = X[s : s + step].double()
        lab = torch.cdist(xc, centres).argmin(1)
        labels[s : s + step] = lab
        counts += torch.bincount(lab, minlength=K)
        sums.index_add_(0, lab, xc)
    means = sums / counts[:, None]
    scatter = torch.zeros(K, d, d, dtype=torch.float64, device=X.device)
    for s in range(0, n, step):
        xc = X[s : s + step].double()
        lab = labels[s : s + step]
        diff = xc - means[lab]
        scatter.index_add_(0, lab, diff[:, :, None] * diff[:, None, :])
    eye = torch.eye(d, dtype=torch.float64, device=X.device)
    covs = scatter / counts[:, None, None] + REG * eye
    weights = counts / n
    return (
        weights.cpu().numpy(),
        means.cpu().numpy(),
        covs.cpu().numpy(),
        centres.float(),
    )


# ---------------------------------------------------------------------------------- runners
# each runner: (X, start, n_iter) -> (weights, means, covariances) as float64 numpy


@contextlib.contextmanager
def _env(**values: str):
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _precisions(covs):
    P = np.linalg.inv(covs)
    return (P + np.swapaxes(P, -1, -2)) / 2


#: launch settings of the Triton kernels for the workload being timed ("" = shape defaults)
TUNING: dict[str, str] = {"current": ""}


def gaussmix_runner(kernel: str, precision: str = "ieee", dtype: str | None = None) -> Callable:
    def run(X, start, n_iter):
        weights, means, covs, _ = start
        env = dict(
            GAUSSMIX_GPU_KERNEL=kernel,
            GAUSSMIX_GPU_PRECISION=precision,
            GAUSSMIX_TRITON_TUNING=TUNING["current"],
        )
        if dtype is not None:
            X = X.to(getattr(torch, dtype))
        with _env(**env):
            gm = GaussianMixture(
                len(weights),
                covariance_type="full",
                weights_init=weights,
                means_init=means,
                precisions_init=_precisions(covs),
                reg_covar=REG,
                max_iter=n_iter,
                tol=0.0,
                device=str(X.device),
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # fixed iteration count: "did not converge"
                gm.fit(X)
        return gm.weights_, gm.means_, gm.covariances_

    return run


def torchgmm_runner(X, start, n_iter):
    from torchgmm.bayes import GaussianMixture as TorchGMM

    weights, _, _, centres = start
    cuda = X.device.type == "cuda"
    for logger in ("lightning.pytorch", "pytorch_lightning", "lightning"):
        logging.getLogger(logger).setLevel(logging.ERROR)
    gmm = TorchGMM(
        len(weights),
        covariance_type="full",
        init_means=centres.cpu(),
        convergence_tolerance=0.0,  # 0 disables its early stopping
        covariance_regularization=REG,
        trainer_params=dict(
            max_epochs=n_iter,
            accelerator="gpu" if cuda else "cpu",
            devices=1,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            logger=False,
        ),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            gmm.fit(X)
        except Exception:
            if not cuda:
                raise
            # its documented input is host data (Lightning moves each batch to the GPU)
            gmm.fit(X.cpu())
    m = gmm.model_
    return (
        m.component_probs.double().cpu().numpy(),
        m.means.double().cpu().numpy(),
        m.covariances.double().cpu().numpy(),
    )


def pomegranate_runner(X, start, n_iter):
    from pomegranate.distributions import Normal
    from pomegranate.gmm import GeneralMixtureModel

    weights, means, covs, _ = start
    f32 = dict(dtype=torch.float32)
    dists = [
        Normal(
            means=torch.tensor(means[k], **f32),
            covs=torch.tensor(covs[k], **f32),
            covariance_type="full",
        )
        for k in range(len(weights))
    ]
    model = GeneralMixtureModel(
        dists,
        priors=torch.tensor(weights, **f32),
        max_iter=n_iter,
        tol=-math.inf,  # never "converged": exactly n_iter iterations
        verbose=False,
    ).to(X.device)
    model.fit(X)
    return (
        model.priors.double().cpu().numpy(),
        np.stack([d.means.double().cpu().numpy() for d in model.distributions]),
        np.stack([d.covs.double().cpu().numpy() for d in model.distributions]),
    )


def sklearn_runner(X, start, n_iter):
    from sklearn.mixture import GaussianMixture as SkGMM

    weights, means, covs, _ = start
    gm = SkGMM(
        len(weights),
        covariance_type="full",
        weights_init=weights,
        means_init=means,
        precisions_init=_precisions(covs),
        reg_covar=REG,
        max_iter=n_iter,
        tol=0.0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(X)
    return gm.weights_, gm.means_, gm.covariances_


# ---------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fit(run, X, start, n_iter, device) -> tuple[float, tuple]:
    _sync(device)
    t0 = time.perf_counter()
    out = run(X, start, n_iter)
    _sync(device)
    return time.perf_counter() - t0, out


def ms_per_iteration(run, X, start, iters, repeats, device) -> tuple[float, list[float], tuple]:
    """(min T(1 + iters) - min T(1)) / iters over repeats, in ms, after a warm-up fit.

    Also returns each repeat's own difference, to show the spread.
    """
    time_fit(run, X, start, 2, device)
    shorts, longs, final = [], [], None
    for _ in range(repeats):
        shorts.append(time_fit(run, X, start, 1, device)[0])
        t, final = time_fit(run, X, start, 1 + iters, device)
        longs.append(t)
    samples = [1e3 * (b - a) / iters for a, b in zip(shorts, longs, strict=True)]
    return 1e3 * (min(longs) - min(shorts)) / iters, samples, final


def mean_log_likelihood(params, X_eval) -> float:
    """Mean log-likelihood of the rows under ``params``, by one float64 evaluator for all."""
    weights, means, covs = (np.asarray(p, dtype=np.float64) for p in params)
    covs = (covs + np.swapaxes(covs, -1, -2)) / 2
    gm = GaussianMixture.from_parameters(weights / weights.sum(), means, covs, "full")
    gm.device = str(X_eval.device)
    return float(gm.score_samples(X_eval).mean())


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "torch": torch.__version__}
    for name in ("triton", "torchgmm", "pomegranate", "scikit-learn", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
        out["cuda"] = str(torch.version.cuda)
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            out["driver"] = smi.stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            out["driver"] = "unknown"
    return out


def _importable(module: str) -> str | None:
    try:
        __import__(module)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# ---------------------------------------------------------------------------------- ceilings
def measure_ceilings(device: torch.device) -> dict:
    """The device's two ceilings, measured: copy bandwidth (a 2 GiB device-to-device copy,
    bytes read plus written) and the float32 matrix-product rate without tensor cores (an
    8192³ SGEMM with TF32 off), each the median of CUDA-event timings."""
    if device.type != "cuda":
        return {}
    import triton.testing

    def copy_rate() -> float:
        src = torch.randn(1 << 29, device=device)  # 2 GiB of float32
        dst = torch.empty_like(src)
        ms = triton.testing.do_bench(
            lambda: dst.copy_(src), warmup=10, rep=100, return_mode="median"
        )
        return 2 * src.numel() * 4 / (ms * 1e-3) / 1e12

    copy_tbs = copy_rate()
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        a = torch.randn(8192, 8192, device=device)
        b = torch.randn(8192, 8192, device=device)
        ms = triton.testing.do_bench(lambda: a @ b, warmup=10, rep=200, return_mode="median")
        sgemm = 2 * 8192**3 / (ms * 1e-3) / 1e12
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    torch.cuda.empty_cache()
    return dict(copy_tb_per_s=copy_tbs, sgemm_fp32_tflops=sgemm)


# ---------------------------------------------------------------------------------- tuning
def _start_params(start):
    from gaussmix._covariance import get_model
    from gaussmix._params import MixtureParams

    weights, means, covs, _ = start
    return MixtureParams.from_covariances(weights, means, covs, get_model("full"))


def _kernel_ms(fn, device: torch.device, budget_ms: float = 60.0) -> float:
    """Median milliseconds of ``fn()``: CUDA events (triton's do_bench) or the host clock."""
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=10, rep=budget_ms, return_mode="median"))
    fn()  # compiles (or, interpreted, is slow enough that one more call will do)
    t0 = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - t0)


def _sweep_grid(d: int, K: int) -> tuple[list[dict], list[dict], list[int]]:
    """Candidate settings: responsibilities kernel, statistics kernel, programs/SM."""
    from gaussmix.backends import _triton

    k_pad = _triton._pow2(K, 2)
    dot = _triton._pow2(d) >= _triton._DOT_MIN_D
    resp = []
    for block in (32, 64, 128):
        if block * k_pad > 16384:  # the (rows, K_PAD) tile would spill
            continue
        for warps in (4, 8):
            resp.append(dict(block_resp=block, warps_resp=warps))
    stats = []
    for block in (32, 64, 128) if dot else (16, 32, 64, 128):
        for warps in (4, 8) if dot else (2, 4):
            stats.append(dict(block_stats=block, warps_stats=warps))
    return resp, stats, [2, 8, 16]


def tune_workload(X, start, precision: str, device, deadline: float) -> dict:
    """Coordinate sweep of the Triton launch settings on one E-step of the whole of ``X``.

    Responsibilities kernel first (statistics at its defaults), then the statistics kernel
    with the best of those, then the statistics grid size, then the running log-sum-exp on
    and off; each candidate timed by :func:`_kernel_ms`. Stops early past ``deadline``
    (``time.monotonic()``), keeping the best so far.

    Returns
    -------
    result : dict
        ``best`` (settings), ``best_ms``, ``default_ms`` and ``trials`` (settings, ms).
    """
    from gaussmix.backends import _triton

    params = _start_params(start)
    tp = _triton.TritonParams.of(params, params.means, device)
    n, d = X.shape
    K = len(start[0])
    trials: list[dict] = []

    def timed(cfg: dict) -> float:
        try:
            ms = _kernel_ms(
                lambda: _triton.e_step_chunk(X, None, tp, precision=precision, tuning=cfg), device
            )
        except Exception as exc:  # a setting that does not compile is just not a candidate
            trials.append(dict(tuning=dict(cfg), error=f"{type(exc).__name__}: {exc}"[:200]))
            return math.inf
        trials.append(dict(tuning=dict(cfg), ms=ms))
        return ms

    default_ms = timed({})
    best, best_ms = {}, default_ms
    resp, stats, per_sm = _sweep_grid(d, K)
    stages = [
        [dict(c) for c in resp],
        None,  # statistics kernel, on top of the best so far
        None,  # programs per multiprocessor
        None,  # running log-sum-exp flipped
    ]
    for stage in range(len(stages)):
        if stage == 1:
            stages[1] = [dict(best, **c) for c in stats]
        elif stage == 2:
            stages[2] = [dict(best, programs_per_sm=p) for p in per_sm]
        elif stage == 3:
            flipped = 1 - _triton.launch_shapes(n, d, K, device, best)["ONLINE"]
            stages[3] = [dict(best, online=int(flipped))]
        for cfg in stages[stage]:
            if time.monotonic() > deadline:
                break
            ms = timed(cfg)
            if ms < best_ms:
                best, best_ms = cfg, ms
    return dict(best=best, best_ms=best_ms, default_ms=default_ms, trials=trials)


def _tuning_text(cfg: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(cfg.items()))


# ---------------------------------------------------------------------------------- accuracy
def e_step_agreement(X, start, device, precisions) -> dict:
    """One E-step at the start parameters: float32 kernels against the float64 torch path.

    Returns the relative difference of the log-likelihood (per row, i.e. of the mean) and
    the largest relative difference of nk, sx and sxx, per kernel and precision.
    """
    from gaussmix.backends.torch import TorchExecutor

    params = _start_params(start)
    ref = TorchExecutor(X.double(), device=device, kernel="torch").e_step(params)
    out = {}
    variants = [("torch", "ieee")]
    if device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        variants += [("triton", p) for p in precisions]
    for kernel, precision in variants:
        with _env(GAUSSMIX_TRITON_TUNING=TUNING["current"]):
            got = TorchExecutor(X, device=device, kernel=kernel, precision=precision).e_step(
                params
            )
        # sx is around the means, so near zero when they are the responsibilities' own
        # means: its error is measured against the spread, sqrt(nk · sxx), instead of itself
        diag = ref.sxx if ref.sxx.ndim == 2 else np.diagonal(ref.sxx, axis1=1, axis2=2)
        scales = {
            "nk": float(np.max(np.abs(ref.nk))),
            "sx": float(np.sqrt(np.max(ref.nk[:, None] * diag))),
            "sxx": float(np.max(np.abs(ref.sxx))),
        }
        rel = {
            f: float(np.max(np.abs(getattr(got, f) - getattr(ref, f))) / max(scales[f], 1e-300))
            for f in ("nk", "sx", "sxx")
        }
        rel["ll_per_row"] = abs(got.log_likelihood - ref.log_likelihood) / abs(ref.log_likelihood)
        out[kernel if kernel == "torch" else f"triton[{precision}]"] = rel
    return out


# ---------------------------------------------------------------------------------- init
def time_initialisation(X, K: int, seed: int, device) -> dict:
    """Starting parameters by k-means++ and by k-means on a sample of up to 2**20 rows: on the
    host (the estimator's path today: numpy k-means++, numba k-means steps) and on the device
    (:func:`gaussmix.backends._torch_init.initial_params`), each timed whole (clustering and
    the M-step on its partition); each start's mean log-likelihood on the sample, by one
    float64 evaluator, says whether the device start is as good."""
    from gaussmix import _init
    from gaussmix._covariance import get_model
    from gaussmix.backends import _torch_init
    from gaussmix.backends.cpu import kmeans_kernels

    n = X.shape[0]
    rows = np.sort(np.random.RandomState(seed).choice(n, size=min(n, 1 << 20), replace=False))
    sample = X[torch.from_numpy(rows).to(X.device)]
    host = sample.cpu().numpy()
    sample_eval = sample.double()
    model = get_model("full")
    kernels = kmeans_kernels()
    out: dict = dict(rows=len(rows))

    def score(params) -> float:
        # "full": the covariances are already (K, d, d)
        return mean_log_likelihood((params.weights, params.means, params.covariances), sample_eval)

    for method, key in (("k-means++", "kmeanspp"), ("kmeans", "kmeans")):
        rng = np.random.RandomState(seed)
        t0 = time.perf_counter()
        params = _init.initial_params(method, host, None, K, model, REG, rng, kernels=kernels)
        out[f"host_{key}_s"] = time.perf_counter() - t0
        out[f"host_{key}_ll"] = score(params)
        if method == "k-means++":  # warm-up: kernel selection, allocator
            _torch_init.initial_params(method, sample, None, K, model, REG, rng)
        _sync(device)
        rng = np.random.RandomState(seed)
        t0 = time.perf_counter()
        params = _torch_init.initial_params(method, sample, None, K, model, REG, rng)
        _sync(device)
        out[f"device_{key}_s"] = time.perf_counter() - t0
        out[f"device_{key}_ll"] = score(params)
    return out


# ---------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default="G1,G2,G3,G4")
    p.add_argument("--device", default="cuda")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every N (smoke tests)")
    p.add_argument("--iters", type=int, default=10, help="timed EM iterations per fit")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--peak-tflops", type=float, default=67.0, help="fp32 peak (H100 SXM: 67)")
    p.add_argument("--sklearn", default="G1", help="workload to run scikit-learn on, or none")
    p.add_argument("--sklearn-iters", type=int, default=2)
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--json", default=None, help="write all numbers to this file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--tune",
        action="store_true",
        help="sweep the Triton launch settings per workload first and time with the best",
    )
    p.add_argument("--tune-seconds", type=float, default=25.0, help="sweep budget per workload")
    p.add_argument(
        "--tuning",
        default="",
        help="launch settings for every workload (GAUSSMIX_TRITON_TUNING syntax), or "
        "'G1:key=v,...;G2:...' per workload",
    )
    p.add_argument(
        "--precisions",
        default="ieee,tf32x3,tf32",
        help="Triton product precisions to time (the first is the headline row)",
    )
    p.add_argument("--no-float64", action="store_true", help="skip the float64 reference row")
    p.add_argument("--no-init", action="store_true", help="skip timing initialisation")
    p.add_argument(
        "--max-components",
        type=int,
        default=None,
        help="cap every workload's K (smoke tests under Triton's interpreter)",
    )
    p.add_argument(
        "--table-from",
        default=None,
        metavar="JSON",
        help="print the README's GPU section (Markdown) from a saved --json run, run nothing",
    )
    args = p.parse_args(argv)
    if args.table_from:
        print(readme_markdown(json.loads(Path(args.table_from).read_text())))
        return 0
    precisions = [q.strip() for q in args.precisions.split(",") if q.strip()]
    given_tuning = _parse_tuning_arg(args.tuning)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible: run on the GPU machine, or --device cpu for a smoke test")
        return 2
    versions = _versions()
    print("versions:", json.dumps(versions))
    print(
        f"device={device} iters={args.iters} repeats={args.repeats} scale={args.scale} "
        f"peak={args.peak_tflops} TFLOP/s fp32"
    )

    triton_ok = device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
    variants: list[tuple[str, Callable | None, str]] = [
        ("gaussmix[torch]", gaussmix_runner("torch"), "")
    ]
    if not args.no_float64:
        variants.append(("gaussmix[torch,float64]", gaussmix_runner("torch", dtype="float64"), ""))
    for i, precision in enumerate(precisions):
        label = "gaussmix[triton]" if i == 0 else f"gaussmix[triton,{precision}]"
        run = gaussmix_runner("triton", precision) if triton_ok else None
        variants.append((label, run, "" if triton_ok else "Triton needs CUDA"))
    peers: list[tuple[str, Callable | None, str]] = []
    if not args.no_peers:
        for name, module, runner in (
            ("torchgmm", "torchgmm.bayes", torchgmm_runner),
            ("pomegranate", "pomegranate.gmm", pomegranate_runner),
        ):
            why = _importable(module)
            peers.append((name, None if why else runner, why or ""))

    rows: list[dict] = []
    extra: dict[str, dict] = {}
    try:
        ceilings = measure_ceilings(device)
    except Exception as exc:  # context only: never stops the benchmark
        ceilings = dict(error=f"{type(exc).__name__}: {exc}"[:300])
    if ceilings:
        print("measured ceilings:", _brief(ceilings))

    def save() -> None:
        # after every workload, so that a run cut short still leaves its numbers
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    dict(
                        versions=versions,
                        args=vars(args),
                        ceilings=ceilings,
                        rows=rows,
                        workloads=extra,
                    ),
                    indent=1,
                )
            )

    for name in [s.strip() for s in args.workloads.split(",") if s.strip()]:
        w = WORKLOADS[name]
        if args.max_components is not None and w.K > args.max_components:
            w = Workload(w.name, w.n, w.d, args.max_components, w.peers_reported, w.target_ms)
        # at least ~16d rows per component, so that small smoke runs stay well posed
        n = max(16 * w.K * w.d, round(w.n * args.scale))
        X = make_data(w, n, device, args.seed)
        start = hard_assignment_start(X, w.K, args.seed + 1)
        X_eval = X.double()
        flops = 4.0 * n * w.K * w.d * w.d
        print(
            f"\n{name}: N={n:,} d={w.d} K={w.K}  (issue: {w.peers_reported} ms; target "
            f"{w.target_ms} ms)"
        )
        info = extra.setdefault(name, {})
        TUNING["current"] = given_tuning.get(name, given_tuning.get("*", ""))
        if args.tune and triton_ok:
            t0 = time.monotonic()
            tuned = tune_workload(X, start, precisions[0], device, t0 + args.tune_seconds)
            tuned["seconds"] = time.monotonic() - t0
            info["tuning"] = tuned
            TUNING["current"] = _tuning_text(tuned["best"])
            print(
                f"  tuned ({tuned['seconds']:.0f} s, {len(tuned['trials'])} settings): "
                f"{tuned['default_ms']:.3f} ms -> {tuned['best_ms']:.3f} ms with "
                f"{TUNING['current'] or 'defaults'}"
            )
        info["tuning_used"] = TUNING["current"]
        if triton_ok:
            try:
                from gaussmix.backends import _triton

                used = _triton.parse_tuning(TUNING["current"])
                info["compiled_resources"] = {
                    q: _triton.compiled_resources(w.d, w.K, tuning=used, precision=q)
                    for q in precisions
                }
                print("  registers/stack per thread:", _brief(info["compiled_resources"]))
            except Exception as exc:  # a developer's aid: never stops the benchmark
                info["compiled_resources"] = f"{type(exc).__name__}: {exc}"[:300]
        try:
            info["e_step_agreement"] = e_step_agreement(X, start, device, precisions)
            print("  one E-step vs float64:", _brief(info["e_step_agreement"]))
        except Exception as exc:
            info["e_step_agreement"] = f"{type(exc).__name__}: {exc}"
            print("  E-step agreement FAILED:", info["e_step_agreement"][:300])
        todo = [(lib, run, why, X) for lib, run, why in variants + peers]
        if args.sklearn == name:
            todo.append(("scikit-learn (CPU)", sklearn_runner, "", X.cpu().numpy()))
        for lib, run, why, data in todo:
            row = dict(workload=name, n=n, d=w.d, K=w.K, library=lib)
            if run is None:
                row["skipped"] = why
                print(f"  {lib:24s} skipped: {why}")
                rows.append(row)
                continue
            iters = args.sklearn_iters if lib.startswith("scikit") else args.iters
            dev = torch.device("cpu") if isinstance(data, np.ndarray) else device
            try:
                ms, samples, final = ms_per_iteration(run, data, start, iters, args.repeats, dev)
                ll = mean_log_likelihood(final, X_eval)
            except Exception as exc:  # a peer failing must not hide the other rows
                row["error"] = f"{type(exc).__name__}: {exc}"
                print(f"  {lib:24s} FAILED: {row['error'][:300]}")
                rows.append(row)
                continue
            tflops = flops / (ms * 1e-3) / 1e12
            row.update(
                ms_per_iter=ms,
                samples_ms=samples,
                tflops=tflops,
                peak_fraction=tflops / args.peak_tflops,
                mean_log_likelihood=ll,
                means=np.asarray(final[1]).tolist(),
            )
            rows.append(row)
            print(
                f"  {lib:24s} {ms:9.3f} ms/iter  {tflops:7.3f} TFLOP/s "
                f"({100 * row['peak_fraction']:5.2f}% of peak)  ll/row {ll:.7f}"
            )
        if not args.no_init:
            try:
                info["init"] = time_initialisation(X, w.K, args.seed, device)
                print("  initialisation:", _brief(info["init"]))
            except Exception as exc:
                info["init"] = f"{type(exc).__name__}: {exc}"
                print("  initialisation FAILED:", info["init"][:300])
        _summarise(name, w, rows)
        save()
        del X, X_eval
        if device.type == "cuda":
            torch.cuda.empty_cache()

    TUNING["current"] = ""
    _table(rows)
    save()
    return 0


def _parse_tuning_arg(text: str) -> dict[str, str]:
    """``--tuning``: one setting for all workloads ("*"), or "G1:...;G2:..." per workload."""
    from gaussmix.backends import _triton

    out: dict[str, str] = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, sep, rest = part.partition(":")
        if sep and name.strip() in WORKLOADS:
            key, value = name.strip(), rest
        else:
            key, value = "*", part
        _triton.parse_tuning(value)  # refuse a typo before minutes of benchmarking
        out[key] = value
    return out


def _brief(d: dict) -> str:
    def fmt(v):
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}: {fmt(x)}" for k, x in v.items()) + "}"
        if isinstance(v, float):
            return f"{v:.3g}"
        return str(v)

    return fmt(d)


def _summarise(name: str, w: Workload, rows: list[dict]) -> None:
    """Speedups and agreement within one workload (filled into its rows)."""
    mine = [r for r in rows if r["workload"] == name and "ms_per_iter" in r]
    ref = next((r for r in mine if r["library"] == "gaussmix[torch,float64]"), None) or next(
        (r for r in mine if r["library"] == "gaussmix[torch]"), None
    )
    default = next((r for r in mine if r["library"] == "gaussmix[triton]"), ref)
    peers = [r for r in mine if not r["library"].startswith(("gaussmix", "scikit"))]
    best = min(peers, key=lambda r: r["ms_per_iter"]) if peers else None
    for r in mine:
        if ref is not None:
            r["ll_rel_diff"] = abs(r["mean_log_likelihood"] - ref["mean_log_likelihood"]) / abs(
                ref["mean_log_likelihood"]
            )
            scale = max(1.0, float(np.max(np.abs(ref["means"]))))
            gap = float(np.max(np.abs(np.subtract(r["means"], ref["means"]))))
            r["means_max_diff"] = gap / scale
            r["agrees"] = r["ll_rel_diff"] < 1e-6
        if best is not None:
            r["speedup_vs_best_peer"] = best["ms_per_iter"] / r["ms_per_iter"]
        r["target_ms"] = w.target_ms
        r["meets_target"] = r["library"].startswith("gaussmix") and r["ms_per_iter"] <= w.target_ms
    if default is not None and best is not None:
        print(
            f"  -> {default['library']} vs best peer {best['library']}: "
            f"{default['speedup_vs_best_peer']:.1f}x"
        )


def _table(rows: list[dict]) -> None:
    print("\n" + "\n".join(_table_lines(rows)))


def _table_lines(rows: list[dict]) -> list[str]:
    lines = [
        "| workload | N × d, K | library | ms/iter | speedup vs best peer | TFLOP/s "
        "| % fp32 peak | ll/row | Δll rel | agrees | target ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        shape = f"{r['n']:,} × {r['d']}, {r['K']}"
        if "ms_per_iter" not in r:
            lines.append(
                f"| {r['workload']} | {shape} | {r['library']} | "
                f"{r.get('skipped') or r.get('error', '')[:60]} | | | | | | | |"
            )
            continue
        speed = r.get("speedup_vs_best_peer")
        lines.append(
            f"| {r['workload']} | {shape} | {r['library']} | {r['ms_per_iter']:.3f} | "
            f"{'' if speed is None else f'{speed:.1f}x'} | {r['tflops']:.3f} | "
            f"{100 * r['peak_fraction']:.2f} | {r['mean_log_likelihood']:.6f} | "
            f"{r.get('ll_rel_diff', float('nan')):.1e} | {r.get('agrees', '')} | "
            f"{r['target_ms']} |"
        )
    return lines


def readme_markdown(data: dict) -> str:
    """The README's GPU results (device, versions, command, table, agreement, initialisation)
    from a saved ``--json`` run."""
    v, a = data["versions"], data["args"]
    flags = [f"--workloads {a['workloads']}", f"--iters {a['iters']}"]
    flags += [f"--repeats {a['repeats']}", f"--peak-tflops {a['peak_tflops']}"]
    if a.get("tune"):
        flags.append(f"--tune --tune-seconds {a['tune_seconds']:g}")
    if a.get("tuning"):
        flags.append(f"--tuning '{a['tuning']}'")
    out = [
        f"Device: {v.get('gpu', a['device'])}; torch {v['torch']}, Triton {v.get('triton')}, "
        f"torchgmm {v.get('torchgmm')}, pomegranate {v.get('pomegranate')}, "
        f"Python {v['python']}"
        + (f"; CUDA {v['cuda']}, driver {v['driver']}" if v.get("driver") else "")
        + ".",
        "",
        "```bash",
        f"python benchmarks/bench_gpu.py {' '.join(flags)} --json gpu.json",
        "```",
        "",
    ]
    ceilings = data.get("ceilings") or {}
    if "sgemm_fp32_tflops" in ceilings:
        out += [
            f"Measured ceilings: device-to-device copy {ceilings['copy_tb_per_s']:.2f} TB/s, "
            f"float32 SGEMM (no TF32) {ceilings['sgemm_fp32_tflops']:.1f} TFLOP/s; "
            f"'% fp32 peak' is of the {a['peak_tflops']:g} TFLOP/s given.",
            "",
        ]
    out += [
        *_table_lines(data["rows"]),
        "",
    ]
    for name, info in data.get("workloads", {}).items():
        parts = [f"{name}: launch settings `{info.get('tuning_used') or 'defaults'}`"]
        tuned = info.get("tuning")
        if isinstance(tuned, dict):
            parts.append(
                f"(sweep of {len(tuned['trials'])}: {tuned['default_ms']:.3f} → "
                f"{tuned['best_ms']:.3f} ms per E-step)"
            )
        agreement = info.get("e_step_agreement")
        if isinstance(agreement, dict):
            worst = {k: max(r.values()) for k, r in agreement.items()}
            lls = ", ".join(f"{k} {r['ll_per_row']:.1e}" for k, r in agreement.items())
            parts.append(f"; one E-step vs float64, log-likelihood per row: {lls}")
            parts.append(
                "(largest statistic error "
                + ", ".join(f"{k} {e:.1e}" for k, e in worst.items())
                + ")"
            )
        usage = info.get("compiled_resources")
        if isinstance(usage, dict):
            parts.append(
                "; registers/stack per thread "
                + ", ".join(
                    f"{q}: " + " + ".join(f"{u['registers']}/{u['stack']}" for u in r.values())
                    for q, r in usage.items()
                )
            )
        init = info.get("init")
        if isinstance(init, dict):
            parts.append(
                f"; initialisation on {init['rows']:,} rows (seconds, then mean log-likelihood "
                f"of the start): k-means++ host {init['host_kmeanspp_s']:.3f} "
                f"({init['host_kmeanspp_ll']:.4f}) / device {init['device_kmeanspp_s']:.3f} "
                f"({init['device_kmeanspp_ll']:.4f}), k-means host {init['host_kmeans_s']:.3f} "
                f"({init['host_kmeans_ll']:.4f}) / device {init['device_kmeans_s']:.3f} "
                f"({init['device_kmeans_ll']:.4f})"
            )
        elif init:
            parts.append(f"; initialisation failed: {init}")
        out.append("- " + " ".join(parts))
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
