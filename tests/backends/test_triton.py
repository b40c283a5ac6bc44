"""The fused Triton kernels equal the torch reference path.

On a machine without a GPU the kernels run under Triton's interpreter (``TRITON_INTERPRET=1``),
which must be set before triton is first imported: the cases run in one subprocess (this file
executed as a script) that prints its measurements as JSON, and the tests below check them.
CUDA-only tests run the compiled kernels when a GPU is visible.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gaussmix._covariance import COVARIANCE_MODELS

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
# (rows, d, K): d < 16 takes the broadcast products, d >= 16 tl.dot; 130 rows span several
# row blocks and statistics slices with a ragged tail
SHAPES = [(130, 3, 4), (70, 20, 3), (33, 1, 1)]
FIELDS = ("nk", "sx", "sxx")


TUNINGS = {
    "register-tile": "online=0",
    "online": "online=1",
    "small-tiles": "online=1,block_resp=16,warps_resp=2,block_stats=16,warps_stats=2,"
    "programs_per_sm=1,stages_stats=1",
    "large-tiles": "online=0,block_resp=128,warps_resp=8,block_stats=128,warps_stats=8,"
    "programs_per_sm=16",
}


def _random_params(covariance_type, K, d, rng):
    from gaussmix._covariance import get_model
    from gaussmix._params import MixtureParams

    if covariance_type == "full":
        A = rng.normal(size=(K, d, d))
        cov = A @ A.transpose(0, 2, 1) / d + np.eye(d)
    elif covariance_type == "tied":
        A = rng.normal(size=(d, d))
        cov = A @ A.T / d + np.eye(d)
    elif covariance_type == "diag":
        cov = rng.uniform(0.5, 2.0, (K, d))
    else:
        cov = rng.uniform(0.5, 2.0, K)
    weights = rng.uniform(0.5, 1.0, K)
    return MixtureParams.from_covariances(
        weights / weights.sum(), rng.normal(0, 3, (K, d)), cov, get_model(covariance_type)
    )


def _relative_errors(got, ref) -> dict[str, float]:
    out = {}
    for field in FIELDS:
        a, b = getattr(got, field), getattr(ref, field)
        out[field] = float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
    out["log_likelihood"] = abs(got.log_likelihood - ref.log_likelihood) / abs(ref.log_likelihood)
    out["finite"] = bool(all(np.all(np.isfinite(getattr(got, f))) for f in FIELDS))
    return out


def _case_name(covariance_type, shape, weighted):
    n, d, K = shape
    return f"{covariance_type}-n{n}-d{d}-K{K}-{'w' if weighted else 'nw'}"


def run_cases(device: str = "cpu") -> dict[str, dict]:
    """E-step statistics of the Triton kernels vs the float64 torch reference, per case.

    The reference runs the same float32 rows in float64; the float32 torch path is measured
    beside it, so that the Triton error can be compared with plain float32 rounding.
    """
    import torch

    from gaussmix.backends.torch import TorchExecutor

    torch.set_num_threads(1)
    rng = np.random.default_rng(2024)
    results: dict[str, dict] = {}
    for covariance_type in COVARIANCE_TYPES:
        for shape in SHAPES:
            for weighted in (False, True):
                n, d, K = shape
                X = rng.normal(0, 3, (n, d)).astype(np.float32)
                w = rng.uniform(0, 2, n) if weighted else None
                params = _random_params(covariance_type, K, d, rng)
                # a shift other than the means exercises the separate centring
                shift = params.means + 0.25
                ref = TorchExecutor(X.astype(np.float64), w, device=device, kernel="torch")
                f32 = TorchExecutor(X, w, device=device, kernel="torch")
                tri = TorchExecutor(X, w, device=device, kernel="triton")
                expected = ref.e_step(params, shift=shift)
                results[_case_name(covariance_type, shape, weighted)] = {
                    "triton": _relative_errors(tri.e_step(params, shift=shift), expected),
                    "torch32": _relative_errors(f32.e_step(params, shift=shift), expected),
                    "kernel": tri.kernel,
                }
    # a strided view (every other row) and a short EM run through the estimator's driver
    from gaussmix._em import run_em

    X = rng.normal(0, 2, (400, 2)).astype(np.float32)
    X[:200] += 6.0
    params = _random_params("full", 2, 2, rng)
    view = torch.from_numpy(X)[::2]
    a = TorchExecutor(view, device=device, kernel="triton").e_step(params)
    b = TorchExecutor(view.double().contiguous(), device=device, kernel="torch").e_step(params)
    results["strided-view"] = {"triton": _relative_errors(a, b), "kernel": "triton"}
    runs = {}
    for kernel in ("triton", "torch"):
        ex = TorchExecutor(X, device=device, kernel=kernel)
        runs[kernel] = run_em(ex, params, reg_covar=1e-6, tol=0.0, max_iter=8).lower_bounds
    results["em-run"] = {"triton": runs["triton"], "torch": runs["torch"]}
    # chunks past the kernels' 32-bit index range are split in halves: lower the limit
    from gaussmix.backends import _triton

    X = rng.normal(0, 3, (150, 3)).astype(np.float32)
    w = rng.uniform(0, 2, 150)
    params = _random_params("full", 4, 3, rng)
    whole = TorchExecutor(X, w, device=device, kernel="triton").e_step(params)
    limit, _triton._INT32_LIMIT = _triton._INT32_LIMIT, 100
    try:
        split = TorchExecutor(X, w, device=device, kernel="triton").e_step(params)
    finally:
        _triton._INT32_LIMIT = limit
    results["split"] = {"triton": _relative_errors(split, whole)}
    # every covariance model (the executor asks the model for its factors and moments)
    from gaussmix._covariance import get_model
    from gaussmix._stats import SuffStats, accumulate, m_step

    for name in sorted(COVARIANCE_MODELS):
        model = get_model(name)
        X = rng.normal(0, 3, (90, 3)).astype(np.float32)
        X[:30] += 5.0
        w = rng.uniform(0, 2, 90)
        # the model's own parameters: an M-step on random soft responsibilities
        r = rng.dirichlet(np.ones(3), size=90)
        shift = np.zeros((3, 3))
        nk, sx, sxx = accumulate(X.astype(np.float64), r, shift, model.moment)
        try:
            params = m_step(SuffStats(shift, nk, sx, sxx, 0.0, 90.0, 90), model, 1e-6)
        except Exception as exc:  # reported, and failed, by the test
            results[f"model-{name}"] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        ref = TorchExecutor(X.astype(np.float64), w, device=device, kernel="torch")
        tri = TorchExecutor(X, w, device=device, kernel="triton")
        results[f"model-{name}"] = {
            "triton": _relative_errors(tri.e_step(params), ref.e_step(params))
        }
    # launch settings other than the defaults give the same statistics, both ways of
    # normalising the responsibilities (register tile, running log-sum-exp) included
    X = rng.normal(0, 3, (300, 3)).astype(np.float32)
    w = rng.uniform(0, 2, 300)
    params = _random_params("full", 40, 3, rng)
    ref = TorchExecutor(X.astype(np.float64), w, device=device, kernel="torch").e_step(params)
    for label, tuning in TUNINGS.items():
        os.environ["GAUSSMIX_TRITON_TUNING"] = tuning
        try:
            got = TorchExecutor(X, w, device=device, kernel="triton").e_step(params)
        finally:
            del os.environ["GAUSSMIX_TRITON_TUNING"]
        results[f"tuning-{label}"] = {"triton": _relative_errors(got, ref)}
    # tensor-core products (on a GPU; the interpreter computes them in float32)
    X = rng.normal(0, 3, (64, 16)).astype(np.float32)
    params = _random_params("full", 4, 16, rng)
    b = TorchExecutor(X.astype(np.float64), device=device, kernel="torch").e_step(params)
    for precision in ("tf32x3", "tf32"):
        ex = TorchExecutor(X, device=device, kernel="triton", precision=precision)
        results[precision] = {"triton": _relative_errors(ex.e_step(params), b)}
    return results


@pytest.fixture(scope="module")
def interpreted():
    """Results of :func:`run_cases` under the Triton interpreter, in a fresh process."""
    pytest.importorskip("torch")
    try:
        import triton  # noqa: F401
    except Exception as exc:  # triton missing or broken on this platform
        pytest.skip(f"triton cannot be imported: {exc}")
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve())],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


CASES = [_case_name(c, s, w) for c in COVARIANCE_TYPES for s in SHAPES for w in (False, True)]


# one interpreter subprocess (~15 s) serves every test that uses `interpreted`
@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_interpreted_kernels_equal_torch_reference(interpreted, case):
    result = interpreted[case]
    assert result["kernel"] == "triton"
    got, float32 = result["triton"], result["torch32"]
    assert got["finite"]
    for field in (*FIELDS, "log_likelihood"):
        # float32 arithmetic against a float64 reference: within a few float32 roundings,
        # and no worse than 10x the plain torch float32 path on the same rows
        assert got[field] < 5e-6, (field, got[field])
        assert got[field] <= 10 * float32[field] + 1e-6, (field, got[field], float32[field])


@pytest.mark.slow
def test_interpreted_kernels_on_a_strided_view(interpreted):
    got = interpreted["strided-view"]["triton"]
    assert got["finite"]
    assert max(got[f] for f in (*FIELDS, "log_likelihood")) < 5e-6


@pytest.mark.slow
def test_interpreted_kernels_drive_em_like_torch(interpreted):
    tri, ref = interpreted["em-run"]["triton"], interpreted["em-run"]["torch"]
    assert len(tri) == len(ref) == 8
    np.testing.assert_allclose(tri, ref, rtol=1e-5)
    assert np.all(np.diff(ref) > -1e-5)  # EM never decreases the likelihood


@pytest.mark.slow
def test_interpreted_chunks_past_int32_indexing_are_split(interpreted):
    got = interpreted["split"]["triton"]
    assert max(got[f] for f in (*FIELDS, "log_likelihood")) < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize(("precision", "tolerance"), [("tf32x3", 1e-5), ("tf32", 1e-2)])
def test_interpreted_tensor_core_precisions_run(interpreted, precision, tolerance):
    # the interpreter multiplies in float32 whatever the precision: this checks the option
    # reaches the kernels and compiles; the tolerances are those expected on a GPU
    got = interpreted[precision]["triton"]
    assert got["finite"]
    assert max(got[f] for f in (*FIELDS, "log_likelihood")) < tolerance


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(COVARIANCE_MODELS))
def test_interpreted_kernels_take_every_covariance_model(interpreted, model):
    result = interpreted[f"model-{model}"]
    assert "error" not in result, result
    got = result["triton"]
    assert got["finite"]
    assert max(got[f] for f in (*FIELDS, "log_likelihood")) < 5e-6, got


@pytest.mark.slow
@pytest.mark.parametrize("label", sorted(TUNINGS))
def test_interpreted_launch_settings_do_not_change_results(interpreted, label):
    got = interpreted[f"tuning-{label}"]["triton"]
    assert got["finite"]
    assert max(got[f] for f in (*FIELDS, "log_likelihood")) < 5e-6, got


def test_launch_settings_are_parsed_and_checked(monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from gaussmix.backends import _triton

    cpu = torch.device("cpu")
    assert _triton.parse_tuning(" block_resp=32, warps_stats=8 ,") == dict(
        block_resp=32, warps_stats=8
    )
    shapes = _triton.launch_shapes(10_000, 16, 100, cpu, dict(block_resp=32, online=0))
    assert shapes["BLOCK_RESP"] == 32 and not shapes["ONLINE"]
    assert _triton.launch_shapes(10_000, 16, 100, cpu)["ONLINE"]  # default for many components
    assert not _triton.launch_shapes(10_000, 16, 8, cpu)["ONLINE"]
    # more programs per multiprocessor: more, shorter slices, still covering every row
    few = _triton.launch_shapes(100_000, 4, 2, cpu, dict(programs_per_sm=2))
    many = _triton.launch_shapes(100_000, 4, 2, cpu, dict(programs_per_sm=16))
    assert many["slices"] > few["slices"]
    for sh in (few, many):
        assert sh["slices"] * sh["rows_per_slice"] >= 100_000
    for text, match in [
        ("block_resp", "key=value"),
        ("blocks=4", "key=value"),
        ("warps_resp=four", "integer"),
    ]:
        with pytest.raises(ValueError, match=match):
            _triton.parse_tuning(text)
    for tuning, match in [
        (dict(block_resp=48), "power of two"),
        (dict(programs_per_sm=0), ">= 1"),
        (dict(block_stats=8), ">= 16"),
    ]:
        with pytest.raises(ValueError, match=match):
            _triton.launch_shapes(1000, 16, 4, cpu, tuning)
    monkeypatch.setenv("GAUSSMIX_TRITON_TUNING", "warps_resp=8")
    assert _triton.tuning_from_env() == dict(warps_resp=8)
    monkeypatch.setenv("GAUSSMIX_TRITON_TUNING", "warps=8")
    with pytest.raises(ValueError, match="GAUSSMIX_TRITON_TUNING"):
        _triton.tuning_from_env()


def test_triton_needs_float32_and_known_shapes():
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from gaussmix.backends import _triton

    assert _triton.supported(64, 256, torch.float32)
    assert not _triton.supported(65, 4, torch.float32)
    assert not _triton.supported(8, 257, torch.float32)
    assert not _triton.supported(8, 8, torch.float64)
    shapes = _triton.launch_shapes(1000, 3, 100, torch.device("cpu"))
    assert not shapes["USE_DOT"] and shapes["K_PAD"] == 128
    assert shapes["slices"] * shapes["rows_per_slice"] >= 1000
    assert _triton.launch_shapes(10, 20, 3, torch.device("cpu"))["USE_DOT"]
    from gaussmix.backends.torch import TorchExecutor

    with pytest.raises(ValueError, match="precision"):
        TorchExecutor(np.ones((4, 2)), precision="bf16")


# ------------------------------------------------------------------ CUDA only
def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


CUDA = pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA GPU")


@CUDA
def test_compiled_kernels_equal_torch_reference_on_gpu():
    results = run_cases("cuda")
    more = [f"model-{m}" for m in sorted(COVARIANCE_MODELS)] + [f"tuning-{t}" for t in TUNINGS]
    for case in CASES + more + ["strided-view"]:
        assert "error" not in results[case], (case, results[case])
        got = results[case]["triton"]
        assert got["finite"]
        assert max(got[f] for f in (*FIELDS, "log_likelihood")) < 5e-6, (case, got)
    np.testing.assert_allclose(results["em-run"]["triton"], results["em-run"]["torch"], rtol=1e-5)
    assert max(results["split"]["triton"][f] for f in (*FIELDS, "log_likelihood")) < 1e-6


@CUDA
@pytest.mark.parametrize(("n", "d", "K"), [(200_003, 16, 16), (50_000, 64, 64), (100_000, 2, 100)])
def test_compiled_kernels_at_benchmark_shapes(n, d, K):
    import torch

    from gaussmix.backends.torch import TorchExecutor

    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.normal(0, 3, (n, d)).astype(np.float32)).cuda()
    params = _random_params("full", K, d, rng)
    tri = TorchExecutor(X, device="cuda")
    assert tri.kernel == "triton"  # chosen automatically for float32 on CUDA
    ref = TorchExecutor(X.double(), device="cuda", kernel="torch").e_step(params)
    got = _relative_errors(tri.e_step(params), ref)
    assert got["finite"] and max(got[f] for f in (*FIELDS, "log_likelihood")) < 1e-5, got
    for precision, tolerance in (("tf32x3", 1e-5), ("tf32", 1e-2)):
        fast = TorchExecutor(X, device="cuda", precision=precision).e_step(params)
        got = _relative_errors(fast, ref)
        assert got["finite"] and max(got[f] for f in FIELDS) < tolerance, (precision, got)


if __name__ == "__main__":
    # run by the `interpreted` fixture with TRITON_INTERPRET=1
    print(json.dumps(run_cases("cpu")))


def test_wide_tiles_default_to_shapes_that_do_not_spill():
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from gaussmix.backends import _triton

    cpu = torch.device("cpu")
    g2 = _triton.launch_shapes(1_000_000, 64, 64, cpu)
    assert (g2["BLOCK_RESP"], g2["WARPS_RESP"], g2["BLOCK_STATS"], g2["WARPS_STATS"]) == (
        32,
        8,
        32,
        8,
    )
    assert not g2["ONLINE"] and _triton.launch_shapes(1000, 64, 256, cpu)["ONLINE"]
    assert _triton.launch_shapes(1000, 32, 8, cpu)["BLOCK_RESP"] == 64


@pytest.mark.slow
@pytest.mark.parametrize(("d", "K"), [(64, 64), (32, 8), (2, 100)])
def test_default_launch_settings_compile_without_spills_for_hopper(d, K):
    # compiled ahead of time for compute capability 9.0 (no GPU needed): a stack frame means
    # registers spilled to local memory, which the d = 64 tiles did on 4 warps
    pytest.importorskip("torch")
    pytest.importorskip("triton")
    from gaussmix.backends import _triton

    try:
        usage = _triton.compiled_resources(d, K)
    except RuntimeError as exc:
        pytest.skip(str(exc))
    for kernel, used in usage.items():
        assert used["stack"] == 0, (kernel, used)
        assert 0 < used["registers"] <= 255, (kernel, used)
    # and the check can fail: 64 rows on 4 warps at d = 64 spill
    spilled = _triton.compiled_resources(64, 64, tuning=dict(block_resp=64, warps_resp=4))
    assert spilled["responsibilities"]["stack"] > 0
