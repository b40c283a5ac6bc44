"""Model selection over K x covariance type (gaussmix.selection)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from child_signals import default_signals
from gaussmix import GaussianMixture
from gaussmix.demo import faithful_like
from gaussmix.selection import COVARIANCE_TYPES, select

K_RANGE = range(1, 5)


@pytest.fixture(scope="module")
def faithful():
    return faithful_like()


@pytest.fixture(scope="module")
def grid(faithful):
    return select(faithful, K_RANGE, "sklearn", "bic", random_state=0, n_jobs=1)


def _free_parameters(K: int, d: int, covariance_type: str) -> int:
    """Counted by hand: K-1 weights, K*d means, and the covariance entries."""
    cov = {
        "full": K * d * (d + 1) // 2,
        "tied": d * (d + 1) // 2,
        "diag": K * d,
        "spherical": K,
    }[covariance_type]
    return (K - 1) + K * d + cov


def _sklearn_twin(est: GaussianMixture) -> SkGaussianMixture:
    """scikit-learn's estimator holding our fitted parameters: its bic/aic are the oracle."""
    sk = SkGaussianMixture(est.n_components, covariance_type=est.covariance_type)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"):
        setattr(sk, name, getattr(est, name))
    sk.converged_, sk.n_iter_, sk.lower_bound_ = True, est.n_iter_, est.lower_bound_
    sk.n_features_in_ = est.means_.shape[1]
    return sk


def test_grid_covers_every_cell(grid):
    assert [(r.covariance_type, r.n_components) for r in grid.rows] == [
        (t, k) for t in COVARIANCE_TYPES for k in K_RANGE
    ]
    assert grid.k_values == list(K_RANGE)
    assert grid.covariance_types == list(COVARIANCE_TYPES)
    assert all(r.error is None for r in grid.rows)


def test_table_equals_estimator_criteria(grid, faithful):
    for row in grid.rows:
        est = grid.models[(row.n_components, row.covariance_type)]
        # the grid's compiled pass and the estimator's own agree to rounding
        assert row.bic == pytest.approx(est.bic(faithful), rel=1e-12)
        assert row.aic == pytest.approx(est.aic(faithful), rel=1e-12)
        assert row.icl == pytest.approx(est.icl(faithful), rel=1e-12)
        assert row.n_parameters == _free_parameters(row.n_components, 2, row.covariance_type)
        assert row.log_likelihood == pytest.approx(est.score(faithful) * len(faithful), rel=1e-14)


def test_table_equals_sklearn_bic_aic(grid, faithful):
    for row in grid.rows:
        sk = _sklearn_twin(grid.models[(row.n_components, row.covariance_type)])
        assert row.bic == pytest.approx(sk.bic(faithful), rel=1e-12)
        assert row.aic == pytest.approx(sk.aic(faithful), rel=1e-12)


def test_selects_the_model_bic_by_hand_selects(grid, faithful):
    """Fit every cell independently and compute -2 log L + p log N by hand: the grid (hc and
    k-means++ starts, tight tolerance) picks the same cell and is never worse than a default
    estimator's fit."""
    n = len(faithful)
    by_hand = {}
    for t in COVARIANCE_TYPES:
        for k in K_RANGE:
            est = GaussianMixture(k, covariance_type=t, random_state=0).fit(faithful)
            log_l = float(np.sum(est.score_samples(faithful)))
            by_hand[(k, t)] = -2 * log_l + _free_parameters(k, 2, t) * math.log(n)
    best = min(by_hand, key=by_hand.get)
    assert (grid.best_row.n_components, grid.best_row.covariance_type) == best
    assert grid.best_row.n_components == 2  # the two eruption regimes
    assert grid.best_row.bic <= by_hand[best] + 1e-6
    for row in grid.rows:
        assert row.bic <= by_hand[(row.n_components, row.covariance_type)] + 1e-3
    assert grid.best_model is grid.models[best]


def test_icl_penalises_uncertain_classification(grid):
    for row in grid.rows:
        assert row.icl >= row.bic - 1e-9
        if row.n_components == 1:
            assert row.icl == pytest.approx(row.bic, abs=1e-9)


def test_values_layout_and_criterion_choice(grid, faithful):
    table = grid.values("aic")
    assert table.shape == (len(K_RANGE), len(COVARIANCE_TYPES))
    row = grid.rows[5]
    assert table[row.n_components - 1, COVARIANCE_TYPES.index(row.covariance_type)] == row.aic
    by_aic = select(faithful, K_RANGE, "all", "aic", random_state=0, n_jobs=1)
    flat = [r.aic for r in by_aic.rows]
    assert by_aic.best_index == int(np.argmin(flat))


@pytest.mark.slow
@pytest.mark.parametrize("starts", [("hc", "k-means++"), ("hc", "random")])
def test_parallel_equals_sequential(faithful, starts):
    # mclust's starts: the compiled batch in threads; a "random" start: cell by cell, in
    # worker processes with n_jobs
    seq = select(faithful, range(1, 4), ["full", "diag"], n_jobs=1, starts=starts)
    par = select(faithful, range(1, 4), ["full", "diag"], n_jobs=2, starts=starts)
    # workers run one thread each: sums may be ordered differently, hence approx
    for a, b in zip(par.rows, seq.rows, strict=True):
        assert (a.n_components, a.covariance_type, a.n_iter) == (
            b.n_components, b.covariance_type, b.n_iter
        )  # fmt: skip
        assert [a.bic, a.aic, a.icl] == pytest.approx([b.bic, b.aic, b.icl], rel=1e-10)
    assert par.best_index == seq.best_index


def test_progress_hook_sees_every_cell(faithful):
    seen = []
    select(faithful, [1, 2], "full", on_cell=lambda row, done, total: seen.append((done, total)))
    assert seen == [(1, 2), (2, 2)]


def test_failed_cells_are_kept_as_na():
    # two distinct points repeated: K=3 has a component with no spread (zero reg_covar)
    X = np.repeat([[0.0, 0.0], [5.0, 5.0]], 20, axis=0)
    X[:20] += np.random.default_rng(0).normal(scale=0.5, size=(20, 2))
    result = select(X, [1, 2, 3], "full", reg_covar=0.0)
    failed = [r for r in result.rows if r.error]
    assert failed, "expected a collapsed component"
    assert all(math.isnan(r.bic) for r in failed)
    assert result.best_row.error is None
    d = result.to_dict()
    assert any(r["bic"] is None for r in d["rows"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k_range": []}, "k_range is empty"),
        ({"k_range": [0, 1]}, ">= 1"),
        ({"k_range": [1, 1000]}, "exceeds the number of rows"),
        ({"covariance_types": ["full", "banana"]}, "covariance_type must be one of"),
        ({"criterion": "hqic"}, "criterion must be one of"),
        ({"n_jobs": 0}, "n_jobs"),
    ],
)
def test_bad_arguments(faithful, kwargs, message):
    args = {"k_range": [1, 2], "covariance_types": "full", **kwargs}
    with pytest.raises(ValueError, match=message):
        select(faithful, **args)


def test_grid_parameters_cannot_be_overridden(faithful):
    with pytest.raises(TypeError, match="set by the grid"):
        select(faithful, [1], "full", n_components=3)


# ------------------------------------------------------------------------------ stopping
# Real processes and real signals: a grid stops at once (its fits run in compiled code in
# threads, which check a stop flag every iteration), with one line and no output file.
_SCRIPT = Path(sys.executable).with_name("gaussmix")


@pytest.fixture(scope="module")
def endless(tmp_path_factory):
    """A file whose grid cells run until stopped (tol=0, huge max_iter)."""
    folder = tmp_path_factory.mktemp("procs")
    np.save(folder / "endless.npy", np.random.default_rng(0).normal(size=(20000, 3)))
    # a short grid first: numba's cache is then written, so the tests time fitting, not a
    # first compilation (a signal is handled once the compiler gives the interpreter back)
    np.save(folder / "warm.npy", np.random.default_rng(1).normal(size=(3000, 3)))
    subprocess.run([str(_SCRIPT), "select", "warm.npy", "--k-max", "2", "--covariance-type",
                    "full", "--quiet"], cwd=folder, capture_output=True, timeout=600,
                   check=True)  # fmt: skip
    return folder


def _start_grid(folder, *, session: bool = False):
    args = [str(_SCRIPT), "select", "endless.npy", "--k-max", "4", "--covariance-type", "full",
            "--n-jobs", "2", "--tol", "0", "--max-iter", "1000000", "-o", "best.gmm"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "GAUSSMIX_DEBUG"}
    with default_signals():
        return subprocess.Popen(args, cwd=folder, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=session)  # fmt: skip


def _fitting(proc, timeout: float = 60) -> None:
    """Wait until the command is busy fitting (imports done, CPU time accumulating)."""
    psutil = pytest.importorskip("psutil")
    me = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        if sum(me.cpu_times()[:2]) > 3.0 and me.num_threads() > 2:
            return
        time.sleep(0.2)
    raise AssertionError("the grid did not start")


def _reads_to_eof(stream, timeout: float = 15) -> bool:
    """Whether the pipe reaches end-of-file (nobody holds its write end) within ``timeout``."""
    done = threading.Event()

    def drain():
        stream.read()
        done.set()

    threading.Thread(target=drain, daemon=True).start()
    return done.wait(timeout)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP])
def test_signals_stop_the_grid_at_once(endless, sig, reap):
    proc = reap(_start_grid(endless))
    _fitting(proc)
    sent = time.monotonic()
    proc.send_signal(sig)
    status = proc.wait(30)
    # the running fits end at their next iteration, not after their million iterations
    assert time.monotonic() - sent < 10
    assert status == (-sig if sig == signal.SIGKILL else 128 + sig)
    assert _reads_to_eof(proc.stdout), "something still holds stdout: `| cat` would hang"
    if sig != signal.SIGKILL:
        err = proc.stderr.read().decode()
        assert err == f"gaussmix: error: terminated by {signal.Signals(sig).name}\n"
        assert not (endless / "best.gmm").exists()
        assert [p.name for p in endless.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.slow
def test_ctrl_c_stops_the_grid_with_one_line(endless, reap):
    # a terminal's Ctrl-C reaches the whole foreground process group
    proc = reap(_start_grid(endless, session=True))
    _fitting(proc)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(30) == 130
    err = proc.stderr.read().decode()
    assert "Traceback" not in err and err.splitlines() == ["gaussmix: error: interrupted"], err


def test_bootstrap_lrt_rejects_one_component_only_when_there_are_two():
    """mclust's bootstrap LRT: two clear clusters reject K = 1 at the smallest possible
    p-value and then stop; one Gaussian does not reject K = 1."""
    from gaussmix.selection import bootstrap_lrt

    rng = np.random.RandomState(0)
    two = np.r_[rng.normal(0, 1, (80, 2)), rng.normal(8, 1, (80, 2))]
    # with 9 bootstrap samples the smallest p-value is 0.1: test at level 0.15
    result = bootstrap_lrt(two, "VVV", k_max=4, n_boot=9, level=0.15, random_state=0)
    assert result.k[0] == 1 and result.p_value[0] == pytest.approx(0.1)
    assert result.statistic[0] > 100
    assert len(result.k) >= 2 and result.p_value[-1] > 0.15  # sequential: stops at K = 2
    one = rng.normal(0, 1, (120, 2))
    single = bootstrap_lrt(one, "VVV", k_max=3, n_boot=9, random_state=0)
    assert single.k == [1] and single.p_value[0] > 0.1
    assert "1 vs 2" in str(single) and single.to_dict()["tests"][0]["k_alternative"] == 2


def test_cli_select_models_and_lrt(tmp_path):
    data = tmp_path / "two.csv"
    rng = np.random.RandomState(1)
    X = np.r_[rng.normal(0, 1, (60, 2)), rng.normal(7, 1, (60, 2))]
    np.savetxt(data, X, delimiter=",", header="a,b", comments="")
    exe = Path(sys.executable).with_name("gaussmix")
    proc = subprocess.run([str(exe), "select", str(data), "--k-max", "3", "--models", "EII,VVV",
                           "--lrt", "9", "--quiet"], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1].split() == ["K", "EII", "VVV"]
    assert "Bootstrap sequential LRT" in proc.stdout and "1 vs 2" in proc.stdout
    bad = subprocess.run([str(exe), "select", str(data), "--models", "EII,XYZ"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 2 and "--models" in bad.stderr and "XYZ" in bad.stderr
