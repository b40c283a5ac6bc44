"""End to end: the installed ``gaussmix`` console script, run in a subprocess."""

from __future__ import annotations

import json
import os
import select as io_select
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import gaussmix
from child_signals import default_signals
from gaussmix import GaussianMixture
from gaussmix._io import read_table, write_csv
from gaussmix.demo import faithful_like, iris_data

SCRIPT = Path(sys.executable).with_name("gaussmix")
FAITHFUL_NAMES = ["eruptions", "waiting"]


def run(*args, cwd, env=None, timeout=180) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COLUMNS": "100", **(env or {})}
    full_env.pop("GAUSSMIX_DEBUG", None)
    return subprocess.run(
        [str(SCRIPT), *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def invoke(*args, env=None):
    """The same click command in-process (for variants of a command the script already ran)."""
    from click.testing import CliRunner

    from gaussmix.cli import main

    result = CliRunner(env=env).invoke(main, [str(a) for a in args], catch_exceptions=False)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def _unnamed(model):
    """The model without its column names, to predict on plain arrays without a warning."""
    if hasattr(model, "feature_names_in_"):
        del model.feature_names_in_
    return model


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout}\n{proc.stderr}"
    return proc


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.tmp"))


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A folder with data files and a model fitted by the library (not by the CLI)."""
    assert SCRIPT.exists(), f"console script not installed at {SCRIPT} (pip install -e .)"
    root = tmp_path_factory.mktemp("cli")
    X = faithful_like()
    write_csv(root / "faithful.csv", FAITHFUL_NAMES, [X])
    np.save(root / "faithful.npy", X)
    Xi, species, names, species_names = iris_data()
    with open(root / "iris.csv", "w") as fh:
        fh.write(",".join([*names, "species"]) + "\n")
        for row, s in zip(Xi, species, strict=True):
            fh.write(",".join(f"{v:g}" for v in row) + f",{species_names[s]}\n")
    (root / "bad.csv").write_text("a,b\n1,2\n3,4\n5\n6,7\n")
    (root / "binary.csv").write_bytes(bytes(range(256)) * 8)
    model = GaussianMixture(2, random_state=0).fit(X)
    model.feature_names_in_ = np.asarray(FAITHFUL_NAMES, dtype=object)
    model.save(root / "f.gmm")
    raw = bytearray((root / "f.gmm").read_bytes())
    (root / "truncated.gmm").write_bytes(raw[: len(raw) // 2])
    raw[100] ^= 0xFF  # inside the metadata member: its CRC no longer matches
    (root / "corrupt.gmm").write_bytes(raw)
    (root / "text.gmm").write_text("not a model\n")
    return root


@pytest.fixture(scope="module")
def faithful(ws):
    return read_table(ws / "faithful.csv").X


# --------------------------------------------------------------------------- every command
# Each command runs once through the installed script; its variants (flags, formats) run
# in-process through the same click objects, which saves an interpreter start-up each.
def test_version_and_help(ws):
    proc = ok(run("--version", cwd=ws))
    assert proc.stdout.strip() == f"gaussmix, version {gaussmix.__version__}"
    text = invoke("--help").stdout
    for command in ("fit", "predict", "score", "sample", "select", "info", "report", "demo"):
        assert command in text
    assert "Example" in text


@pytest.mark.parametrize(
    "command", ["fit", "predict", "score", "sample", "select", "info", "report", "demo"]
)
def test_every_command_help_has_an_example(command):
    result = invoke(command, "--help")
    assert result.returncode == 0
    example = result.stdout.split("Example:")[1]
    assert f"gaussmix {command}" in example


def test_fit_writes_a_model_gaussmix_load_reads(ws, faithful):
    proc = ok(run("fit", "faithful.csv", "-k", "2", "--seed", "0", "-o", "fit.gmm", cwd=ws))
    assert proc.stdout == ""
    (line,) = proc.stderr.splitlines()  # the summary, nothing else (no progress off a tty)
    model = gaussmix.load(ws / "fit.gmm")
    expected = GaussianMixture(2, random_state=0).fit(faithful)
    np.testing.assert_allclose(model.means_, expected.means_, rtol=1e-12)
    assert list(model.feature_names_in_) == FAITHFUL_NAMES
    log_l = float(np.sum(expected.score_samples(faithful)))
    assert f"K=2 full on 272 rows x 2 columns: log-likelihood {log_l:.4f}" in line
    assert f"BIC {expected.bic(faithful):.4f}" in line
    assert f"{expected.n_iter_} iterations, converged" in line


def test_fit_json_summary_and_options(ws, faithful):
    proc = ok(
        invoke("fit", ws / "faithful.csv", "-k", "3", "--covariance-type", "diag", "--init",
               "random", "--n-init", "2", "--max-iter", "50", "--tol", "1e-4", "--reg-covar",
               "1e-5", "--seed", "3", "--json", "-q", "-o", ws / "diag.gmm")
    )  # fmt: skip
    assert proc.stderr == ""
    summary = json.loads(proc.stdout)
    expected = GaussianMixture(3, covariance_type="diag", init_params="random", n_init=2,
                               max_iter=50, tol=1e-4, reg_covar=1e-5, random_state=3)  # fmt: skip
    expected.fit(faithful)
    assert summary["bic"] == pytest.approx(expected.bic(faithful), rel=1e-12)
    assert summary["aic"] == pytest.approx(expected.aic(faithful), rel=1e-12)
    assert summary["n_iter"] == expected.n_iter_ and summary["converged"] == expected.converged_
    assert summary["n_parameters"] == 2 + 6 + 6
    assert summary["engine"] == "auto"
    model = gaussmix.load(ws / "diag.gmm")
    assert model.covariance_type == "diag" and model.reg_covar == 1e-5


def test_fit_npy_and_columns(ws, faithful):
    ok(invoke("fit", ws / "faithful.npy", "-k", "2", "-q", "-o", ws / "npy.gmm"))
    model = gaussmix.load(ws / "npy.gmm")
    assert not hasattr(model, "feature_names_in_")
    np.testing.assert_allclose(
        model.means_, GaussianMixture(2, random_state=0).fit(faithful).means_, rtol=1e-12
    )
    Xi = iris_data()[0]
    ok(invoke("fit", ws / "iris.csv", "-k", "2", "--columns", "petal_length,petal_width", "-q",
              "-o", ws / "iris.gmm"))  # fmt: skip
    model = gaussmix.load(ws / "iris.gmm")
    assert list(model.feature_names_in_) == ["petal_length", "petal_width"]
    np.testing.assert_allclose(
        model.means_, GaussianMixture(2, random_state=0).fit(Xi[:, 2:]).means_, rtol=1e-12
    )


def test_predict_labels_and_probabilities(ws, faithful):
    model = _unnamed(gaussmix.load(ws / "f.gmm"))
    proc = ok(run("predict", "f.gmm", "faithful.csv", cwd=ws))
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines[0] == "component"
    np.testing.assert_array_equal(np.array(lines[1:], dtype=int), model.predict(faithful))
    ok(invoke("predict", ws / "f.gmm", ws / "faithful.csv", "--proba", "-o", ws / "proba.csv"))
    table = read_table(ws / "proba.csv")
    assert table.columns == ["p0", "p1"]
    np.testing.assert_allclose(table.X, model.predict_proba(faithful), rtol=1e-13, atol=1e-15)
    proc = ok(invoke("predict", ws / "f.gmm", ws / "faithful.csv", "--json"))
    assert json.loads(proc.stdout)["rows"] == model.predict(faithful).tolist()


def test_predict_picks_the_fitted_columns_by_name(ws):
    """A model fitted on two iris columns predicts from the full iris file, text column and all."""
    Xi = iris_data()[0]
    model = GaussianMixture(2, random_state=0).fit(Xi[:, [3, 1]])
    expected = model.predict(Xi[:, [3, 1]])
    model.feature_names_in_ = np.asarray(["petal_width", "sepal_width"], dtype=object)
    model.save(ws / "named.gmm")
    proc = ok(invoke("predict", ws / "named.gmm", ws / "iris.csv"))
    np.testing.assert_array_equal(np.array(proc.stdout.split()[1:], dtype=int), expected)


def test_score(ws, faithful):
    model = _unnamed(gaussmix.load(ws / "f.gmm"))
    proc = ok(run("score", "f.gmm", "faithful.csv", cwd=ws))
    assert float(proc.stdout) == pytest.approx(model.score(faithful), abs=1e-6)
    payload = json.loads(ok(invoke("score", ws / "f.gmm", ws / "faithful.csv", "--json")).stdout)
    assert payload["mean_log_likelihood"] == pytest.approx(model.score(faithful), rel=1e-14)
    assert payload["bic"] == pytest.approx(model.bic(faithful), rel=1e-12)
    assert payload["n_samples"] == 272


def test_sample(ws):
    model = gaussmix.load(ws / "f.gmm")
    ok(run("sample", "f.gmm", "-n", "500", "--seed", "7", "-o", "s.csv", cwd=ws))
    lines = (ws / "s.csv").read_text().splitlines()
    assert lines[0] == "eruptions,waiting,component" and len(lines) == 501
    table = read_table(ws / "s.csv")
    model.set_params(random_state=7)
    X, labels = model.sample(500)
    np.testing.assert_allclose(table.X[:, :2], X, rtol=1e-14)
    np.testing.assert_array_equal(table.X[:, 2], labels)
    same = ok(invoke("sample", ws / "f.gmm", "-n", "500", "--seed", "7")).stdout
    other = ok(invoke("sample", ws / "f.gmm", "-n", "500", "--seed", "8")).stdout
    assert same == (ws / "s.csv").read_text() and other != same


def test_select_table_best_model_and_json(ws, faithful):
    from gaussmix.selection import select

    expected = select(faithful, range(1, 5), "all", "bic", random_state=0)
    proc = ok(run("select", "faithful.csv", "--k-max", "4", "-o", "best.gmm", cwd=ws))
    lines = proc.stdout.splitlines()
    # mclust's 14 models in two blocks of 7 columns, K = 1..4 each
    models = expected.covariance_types
    assert len(models) == 14
    best = expected.best_row
    values = expected.values("bic")
    starred = []
    for block in range(2):
        head = 1 + block * 5
        assert lines[head].split() == ["K", *models[7 * block : 7 * block + 7]]
        for r in range(4):
            fields = lines[head + 1 + r].split()
            assert fields[0] == str(r + 1)
            cells = [np.nan if c == "NA" else float(c.rstrip("*")) for c in fields[1:]]
            np.testing.assert_allclose(cells, values[r, 7 * block : 7 * block + 7], atol=6e-3)
            starred += [(r + 1, models[7 * block + j]) for j, c in enumerate(fields[1:])
                        if c.endswith("*")]  # fmt: skip
    assert starred == [(best.n_components, best.covariance_type)]
    assert f"best: K={best.n_components} {best.covariance_type}  BIC {best.bic:.4f}" in proc.stdout
    assert "top 3 models by BIC:" in proc.stdout
    top = expected.top(3)
    assert f"1. {top[0].covariance_type},{top[0].n_components}" in proc.stdout
    written = gaussmix.load(ws / "best.gmm")
    np.testing.assert_allclose(written.means_, expected.best_model.means_, rtol=1e-12)
    payload = json.loads(
        ok(invoke("select", ws / "faithful.csv", "--k-max", "4", "--criterion", "icl",
                  "--covariance-type", "full", "--json")).stdout
    )  # fmt: skip
    by_icl = select(faithful, range(1, 5), "full", "icl", random_state=0)
    assert payload["criterion"] == "icl"
    assert payload["best"]["n_components"] == by_icl.best_row.n_components
    assert [r["icl"] for r in payload["rows"]] == pytest.approx(
        [r.icl for r in by_icl.rows], rel=1e-12
    )


def test_info(ws):
    model = gaussmix.load(ws / "f.gmm")
    text = ok(run("info", "f.gmm", cwd=ws)).stdout
    assert "K=2, 2 features (eruptions, waiting), full covariance" in text
    for w in model.weights_:
        assert f"weight {w:.5f}" in text
    payload = json.loads(ok(invoke("info", ws / "f.gmm", "--json")).stdout)
    np.testing.assert_allclose(payload["means"], model.means_, rtol=1e-15)
    np.testing.assert_allclose(payload["covariances"], model.covariances_, rtol=1e-15)
    np.testing.assert_allclose(payload["weights"], model.weights_, rtol=1e-15)


@pytest.mark.slow
def test_report_with_model_and_png(ws):
    from gaussmix.report import read_report_data

    model = gaussmix.load(ws / "f.gmm")
    proc = ok(run("report", "faithful.csv", "f.gmm", "-o", "r.html", "--png", "figs",
                  "--k-max", "3", "-q", cwd=ws))  # fmt: skip
    assert proc.stdout.splitlines()[0] == "r.html"
    data = read_report_data(ws / "r.html")["sections"][0]
    centres = [e["center"] for e in data["classification"]["panels"][0]["ellipses"]]
    np.testing.assert_allclose(centres, model.means_, rtol=1e-12)
    assert data["criteria"]["k"] == [1, 2, 3]
    assert data["log_likelihood"]["lower_bounds"] == pytest.approx(model.lower_bounds_)
    pngs = sorted(p.name for p in (ws / "figs").iterdir())
    assert len(pngs) == 5 and all(n.endswith(".png") for n in pngs)


def test_report_selects_when_no_model_is_given(ws):
    from gaussmix.report import read_report_data

    ok(invoke("report", ws / "iris.csv", "--columns", "petal_length,petal_width", "--k-max",
              "3", "--covariance-type", "full", "-o", ws / "iris.html", "-q"))  # fmt: skip
    data = read_report_data(ws / "iris.html")["sections"][0]
    selected = data["criteria"]["selected"]
    assert data["model"]["n_components"] == selected["n_components"]
    assert data["model"]["feature_names"] == ["petal_length", "petal_width"]


@pytest.mark.slow
def test_demo(tmp_path):
    from gaussmix.demo import TRUE_MIXTURE
    from gaussmix.report import read_report_data

    start = time.perf_counter()
    proc = ok(run("demo", "-o", "out", cwd=tmp_path))
    elapsed = time.perf_counter() - start
    assert elapsed < 60, f"demo took {elapsed:.1f} s"
    text = proc.stdout
    assert "selects K=3 full" in text
    assert "True vs recovered parameters:" in text
    assert "Iris (150 flowers" in text
    assert text.strip().splitlines()[-1] == "Report: out/report.html"
    data = read_report_data(tmp_path / "out" / "report.html")
    known, iris = data["sections"]
    # recovered means are near the truth (2000 points: standard errors ~0.05)
    fitted = np.array(known["model"]["means"])
    for mean in TRUE_MIXTURE["means"]:
        assert np.min(np.linalg.norm(fitted - mean, axis=1)) < 0.2
    centres = [e["center"] for e in known["classification"]["panels"][0]["ellipses"]]
    np.testing.assert_allclose(centres, fitted, rtol=1e-12)
    assert iris["n_samples"] == 150 and len(iris["classification"]["panels"]) == 6
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "faithful.csv", "iris.csv", "mixture.csv", "report.html"
    ]  # fmt: skip


# --------------------------------------------------------------------------- engines
def test_fit_stream(ws, faithful):
    proc = ok(invoke("fit", ws / "faithful.csv", "-k", "2", "--stream", "--json", "-q", "-o",
                     ws / "stream.gmm"))  # fmt: skip
    summary = json.loads(proc.stdout)
    assert summary["engine"] == "stream"
    in_memory = GaussianMixture(2, random_state=0).fit(faithful)
    assert summary["bic"] == pytest.approx(in_memory.bic(faithful), rel=1e-9)
    model = gaussmix.load(ws / "stream.gmm")
    np.testing.assert_allclose(model.means_, in_memory.means_, rtol=1e-9)
    assert list(model.feature_names_in_) == FAITHFUL_NAMES
    # files above the size threshold stream without being asked
    auto = ok(invoke("fit", ws / "faithful.npy", "-k", "2", "--json", "-q", "-o", ws / "a.gmm",
                     env={"GAUSSMIX_STREAM_BYTES": "100"}))  # fmt: skip
    assert json.loads(auto.stdout)["engine"] == "stream"
    small = ok(invoke("fit", ws / "faithful.npy", "-k", "2", "--json", "-q", "-o", ws / "a.gmm"))
    assert json.loads(small.stdout)["engine"] == "auto"


@pytest.mark.slow
def test_fit_on_a_dask_scheduler(ws, faithful):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  protocol="tcp", dashboard_address=":0") as cluster:  # fmt: skip
        proc = ok(run("fit", "faithful.csv", "-k", "2", "--scheduler", cluster.scheduler_address,
                      "--json", "-q", "-o", "dask.gmm", cwd=ws))  # fmt: skip
    summary = json.loads(proc.stdout)
    assert summary["engine"] == "dask" and summary["n_samples"] == 272
    in_memory = GaussianMixture(2, random_state=0).fit(faithful)
    model = gaussmix.load(ws / "dask.gmm")
    np.testing.assert_allclose(model.means_, in_memory.means_, rtol=1e-8)
    assert summary["bic"] == pytest.approx(in_memory.bic(faithful), rel=1e-8)


# --------------------------------------------------------------------------- terminal, Ctrl-C
def _pty_run(args, cwd, env, until: bytes | None = None, timeout=60):
    """Run with stderr on a pseudo-terminal; return (process, stderr bytes so far)."""
    master, slave = os.openpty()
    full_env = {**os.environ, "COLUMNS": "120", "TERM": "xterm", **env}
    with default_signals():
        proc = subprocess.Popen([str(SCRIPT), *args], cwd=cwd, env=full_env,
                                stdout=subprocess.PIPE, stderr=slave)  # fmt: skip
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until is not None and until in seen:
            break
        if until is None and proc.poll() is not None:
            break
        ready, _, _ = io_select.select([master], [], [], 0.2)
        if ready:
            try:
                seen += os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
    return proc, master, seen


def _drain(master: int, seen: bytes) -> bytes:
    while True:
        ready, _, _ = io_select.select([master], [], [], 0.3)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    return seen


@pytest.fixture(scope="module")
def slow_data(ws):
    # enough rows that EM with tol=0 runs until interrupted
    np.save(ws / "slow.npy", np.random.default_rng(0).normal(size=(5000, 3)))
    return "slow.npy"


@pytest.mark.slow
def test_progress_bar_on_a_terminal_only(ws, faithful):
    args = ["fit", "faithful.csv", "-k", "2", "--tol", "0", "--max-iter", "30", "-o", "p.gmm"]
    env = {"GAUSSMIX_PROGRESS_DELAY": "0"}
    proc, master, seen = _pty_run(args, ws, env)
    seen = _drain(master, seen)
    assert proc.wait(30) == 0
    text = seen.decode("utf-8", "replace")
    assert "log-lik" in text and "Δ" in text and "iter" in text
    proc, master, seen = _pty_run([*args, "--quiet"], ws, env)
    seen = _drain(master, seen)
    assert proc.wait(30) == 0
    assert seen == b""
    # stderr as a pipe (no terminal): test_fit_writes_a_model_gaussmix_load_reads


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_without_output(ws, slow_data, reap):
    args = ["fit", slow_data, "-k", "4", "--tol", "0", "--max-iter", "100000", "-o", "int.gmm"]
    proc, master, seen = _pty_run(args, ws, {"GAUSSMIX_PROGRESS_DELAY": "0"}, until=b"log-lik")
    reap(proc)
    assert b"log-lik" in seen, seen  # EM is running
    proc.send_signal(signal.SIGINT)
    status = proc.wait(30)
    text = _drain(master, b"").decode("utf-8", "replace")
    assert status == 130
    assert "Traceback" not in text
    assert text.strip().splitlines()[-1].endswith("gaussmix: error: interrupted")
    assert not (ws / "int.gmm").exists()
    assert _temporaries(ws) == []


# --------------------------------------------------------------------------- bad input
# (id, arguments, fragment of the one stderr line, output that must not appear). Cases marked
# SCRIPT run through the installed script (one at least per kind of failure the issue lists);
# the others run in-process through the same click command.
SCRIPT_CASES = {
    "missing-data", "unreadable-binary", "malformed-csv", "non-numeric", "k-zero",
    "k-too-large", "unknown-covariance", "corrupt-model", "feature-mismatch", "negative-n",
    "output-folder-missing",
}  # fmt: skip
FAILURES = [
    ("missing-data", ["fit", "nope.csv", "-k", "2", "-o", "o1.gmm"], "nope.csv: no such file",
     "o1.gmm"),
    ("missing-data-predict", ["predict", "f.gmm", "nope.csv", "-o", "o2.csv"],
     "nope.csv: no such file", "o2.csv"),
    ("missing-data-select", ["select", "nope.csv", "-o", "o3.gmm"], "nope.csv: no such file",
     "o3.gmm"),
    ("missing-data-report", ["report", "nope.csv", "-o", "o4.html"], "nope.csv: no such file",
     "o4.html"),
    ("directory-data", ["fit", ".", "-k", "2"], "is a directory", None),
    ("unreadable-binary", ["fit", "binary.csv", "-k", "2", "-o", "o5.gmm"], "not a text file",
     "o5.gmm"),
    ("malformed-csv", ["fit", "bad.csv", "-k", "2", "-o", "o6.gmm"],
     "bad.csv: malformed CSV, line 4 has 1 fields, expected 2", "o6.gmm"),
    ("non-numeric", ["fit", "iris.csv", "-k", "2", "-o", "o7.gmm"],
     "column 'species' is not numeric", "o7.gmm"),
    ("unknown-column", ["fit", "faithful.csv", "-k", "2", "--columns", "speed"],
     "no column 'speed'", None),
    ("k-zero", ["fit", "faithful.csv", "-k", "0", "-o", "o8.gmm"],
     "0 is not in the range x>=1", "o8.gmm"),
    ("k-negative", ["fit", "faithful.csv", "-k", "-3"], "-3 is not in the range x>=1", None),
    ("k-too-large", ["fit", "faithful.csv", "-k", "500", "-o", "o9.gmm"],
     "K = 500 is larger than the number of rows (272)", "o9.gmm"),
    ("k-max-too-large", ["select", "faithful.csv", "--k-max", "300", "-o", "o10.gmm"],
     "K = 300 is larger than the number of rows (272)", "o10.gmm"),
    ("k-range-reversed", ["select", "faithful.csv", "--k-min", "4", "--k-max", "2"],
     "--k-max (2) is smaller than --k-min (4)", None),
    ("unknown-covariance", ["fit", "faithful.csv", "-k", "2", "--covariance-type", "banana"],
     "'banana' is not one of 'full', 'tied', 'diag', 'spherical'", None),
    ("unknown-covariance-select", ["select", "faithful.csv", "--covariance-type", "banana"],
     "'banana' is not one of", None),
    ("corrupt-model", ["predict", "corrupt.gmm", "faithful.csv", "-o", "o11.csv"],
     "corrupt.gmm: not a valid gaussmix model file", "o11.csv"),
    ("truncated-model", ["info", "truncated.gmm"],
     "truncated.gmm: not a valid gaussmix model file", None),
    ("text-model", ["score", "text.gmm", "faithful.csv"],
     "text.gmm: not a valid gaussmix model file", None),
    ("missing-model", ["sample", "nope.gmm", "-n", "5", "-o", "o12.csv"],
     "nope.gmm: no such model file", "o12.csv"),
    ("feature-mismatch", ["predict", "f.gmm", "faithful.csv", "--columns", "waiting", "-o",
                          "o13.csv"],
     "faithful.csv has 1 column, but the model was fitted on 2 (eruptions, waiting)", "o13.csv"),
    ("feature-names-mismatch", ["score", "f.gmm", "iris.csv"],
     "iris.csv lacks the columns eruptions, waiting that the model was fitted on", None),
    ("feature-mismatch-npy", ["predict", "npy3.gmm", "faithful.npy"],
     "faithful.npy has 2 columns, but the model was fitted on 3", None),
    ("negative-n", ["sample", "f.gmm", "-n", "-5", "-o", "o14.csv"],
     "-5 is not in the range x>=1", "o14.csv"),
    ("zero-n", ["sample", "f.gmm", "-n", "0"], "0 is not in the range x>=1", None),
    ("output-folder-missing", ["predict", "f.gmm", "faithful.csv", "-o", "no/such/dir/x.csv"],
     "folder no/such/dir does not exist", None),
    ("unknown-command", ["frobnicate"], "No such command 'frobnicate'", None),
    ("missing-argument", ["predict", "f.gmm"], "Missing argument 'DATA'", None),
]  # fmt: skip


@pytest.fixture(scope="module")
def failure_runs(ws):
    """Start the scripted failing commands at once (a few at a time): start-up dominates."""
    GaussianMixture(2, random_state=0).fit(np.random.default_rng(1).normal(size=(50, 3))).save(
        ws / "npy3.gmm"
    )
    pool = ThreadPoolExecutor(max_workers=3)
    futures = {
        case[0]: pool.submit(run, *case[1], cwd=ws) for case in FAILURES if case[0] in SCRIPT_CASES
    }
    yield futures
    pool.shutdown(wait=True)


@pytest.mark.parametrize("case", FAILURES, ids=[c[0] for c in FAILURES])
def test_bad_input_is_one_line_and_no_output(case, ws, failure_runs, monkeypatch):
    name, args, fragment, output = case
    if name in SCRIPT_CASES:
        proc = failure_runs[name].result()
    else:
        monkeypatch.chdir(ws)
        proc = invoke(*args)
    assert proc.returncode not in (0, None), proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("gaussmix: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    if output is not None:
        assert not (ws / output).exists()


def test_failures_leave_no_temporary_files(ws, failure_runs):
    for future in failure_runs.values():
        future.result()
    assert _temporaries(ws) == []


def test_unreachable_scheduler_is_one_line(ws):
    pytest.importorskip("distributed")
    proc = invoke("fit", ws / "faithful.csv", "-k", "2", "--scheduler", "tcp://127.0.0.1:9",
                  "--connect-timeout", "1", "-o", ws / "never.gmm")  # fmt: skip
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert line.startswith("gaussmix: error: cannot connect to the Dask scheduler at tcp://")
    assert not (ws / "never.gmm").exists()


# --------------------------------------------------------------------------- issue 15
_NO_SKLEARN = """
import sys
from gaussmix.cli import main
sys.argv = ["gaussmix", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
print("sklearn" in sys.modules, "scipy" in sys.modules, code, file=sys.stderr)
"""


@pytest.mark.parametrize(
    "args",
    [
        ["fit", "nope.csv", "-k", "2"],
        ["fit", "faithful.csv", "-k", "2", "-o", "no/such/x.gmm"],
        ["predict", "f.gmm", "nope.csv"],
        ["predict", "f.gmm", "faithful.csv", "-o", "no/such/x.csv"],
        ["score", "f.gmm", "nope.csv"],
        ["select", "nope.csv"],
        ["select", "faithful.csv", "-o", "no/such/x.gmm"],
        ["report", "nope.csv"],
        ["sample", "f.gmm", "-n", "3", "-o", "no/such/x.csv"],
        ["info", "nope.gmm"],
        ["predict", "corrupt.gmm", "faithful.csv"],
    ],
    ids=lambda a: "-".join(a[:2]) + ("-output" if "-o" in a else ""),
)
def test_errors_appear_before_scikit_learn_is_imported(ws, args):
    """Arguments and files are checked first: the error costs no scikit-learn import (1.6 s
    before the fix, on every mistyped file name)."""
    env = {k: v for k, v in os.environ.items() if k != "GAUSSMIX_DEBUG"}
    proc = subprocess.run([sys.executable, "-c", _NO_SKLEARN, *args], cwd=ws, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    error, verdict = proc.stderr.splitlines()
    assert error.startswith("gaussmix: error: ")
    sklearn_loaded, _, code = verdict.split()
    assert (sklearn_loaded, code) == ("False", "1"), proc.stderr


def test_saving_into_a_missing_folder_names_the_users_path(ws):
    proc = invoke("fit", ws / "faithful.csv", "-k", "2", "-q", "-o", ws / "no" / "x.gmm")
    assert proc.returncode == 1
    target, folder = ws / "no" / "x.gmm", ws / "no"
    assert proc.stderr == f"gaussmix: error: {target}: folder {folder} does not exist\n"


@pytest.mark.parametrize("value", ["0", "false", "no", "off", ""])
def test_gaussmix_debug_zero_means_off(ws, value):
    def with_debug(setting):
        env = {**os.environ, "GAUSSMIX_DEBUG": setting}
        return subprocess.run([str(SCRIPT), "fit", "nope.csv", "-k", "2"], cwd=ws, env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    proc = with_debug(value)
    assert proc.returncode == 1
    assert proc.stderr == "gaussmix: error: nope.csv: no such file\n"
    if value == "0":
        assert "Traceback" in with_debug("1").stderr  # ... and 1 still means on


def test_bare_gaussmix_prints_the_usage_as_click_does(ws):
    proc = run(cwd=ws)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines[0] == "Usage: gaussmix [OPTIONS] COMMAND [ARGS]..."
    assert len(lines) > 10 and "gaussmix: error" not in proc.stderr
    assert any(line.split()[:1] == ["fit"] for line in lines)  # the command list, one a line


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_seed_out_of_numpys_range_is_a_usage_error(ws, seed):
    for args in (["fit", ws / "faithful.csv", "-k", "2", "-o", ws / "seed.gmm"],
                 ["sample", ws / "f.gmm", "-n", "3"],
                 ["select", ws / "faithful.csv", "--k-max", "2"]):  # fmt: skip
        proc = invoke(*args, "--seed", seed)
        assert proc.returncode == 2, proc.stderr
        assert "Invalid value for '--seed'" in proc.stderr
    assert not (ws / "seed.gmm").exists()


_READ_10_BYTES = """
import subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
proc.stdout.read(10)
proc.stdout.close()  # the reader goes away, as `| head -c 10` does
print(proc.wait(), repr(proc.stderr.read().decode()))
"""


@pytest.mark.parametrize("fmt", [[], ["--json"]], ids=["csv", "json"])
def test_closed_pipe_exits_141_quietly_in_every_format(ws, fmt):
    """Decision: 141 (as a program killed by SIGPIPE, like cat), silent, CSV and JSON alike."""
    proc = subprocess.run(
        [sys.executable, "-c", _READ_10_BYTES, str(SCRIPT), "sample", "f.gmm", "-n", "200000",
         *fmt], cwd=ws, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.stdout.strip() == "141 ''"


def test_outputs_have_the_umask_mode(ws):
    old = os.umask(0o022)
    try:
        ok(invoke("predict", ws / "f.gmm", ws / "faithful.csv", "-o", ws / "mode.csv"))
        ok(invoke("sample", ws / "f.gmm", "-n", "5", "-o", ws / "mode-s.csv"))
        ok(invoke("fit", ws / "faithful.csv", "-k", "2", "-q", "-o", ws / "mode.gmm"))
    finally:
        os.umask(old)
    for name in ("mode.csv", "mode-s.csv", "mode.gmm"):
        assert (ws / name).stat().st_mode & 0o777 == 0o644, name


@pytest.mark.slow
def test_demo_without_output_uses_a_fresh_private_folder(tmp_path, monkeypatch):
    import tempfile

    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / "gaussmix-demo").symlink_to(victim)  # planted at the old fixed path
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    payload = json.loads(ok(invoke("demo", "--json", "-q")).stdout)
    report = Path(payload["report"])
    assert report.parent.parent == tmp_path and report.parent.name.startswith("gaussmix-demo")
    assert not report.parent.is_symlink()
    assert report.parent.stat().st_mode & 0o777 == 0o700
    assert list(victim.iterdir()) == []


# --------------------------------------------------------------------------- fit --stream
@pytest.mark.slow
def test_stream_fit_progress_covers_the_whole_run(ws):
    """The bar is up from the start (reading, initialisation) to the last pass, not only
    during EM iterations."""
    args = ["fit", "faithful.csv", "-k", "2", "--stream", "-o", "pst.gmm"]
    proc, master, seen = _pty_run(args, ws, {"GAUSSMIX_PROGRESS_DELAY": "0"})
    text = _drain(master, seen).decode("utf-8", "replace")
    assert proc.wait(30) == 0
    assert "fit K=2: reading the file, initialising" in text
    assert "iter " in text and "log-lik" in text
    assert "fit K=2: log-likelihood of every row" in text


def test_row_operations_on_a_path_run_as_fast_as_an_e_step_pass(tmp_path):
    """predict(path) and score_samples(path) (the CLI's last pass of fit --stream) run on the
    compiled kernels, as the stream engine's E-step does: before, they took the numpy code
    (7-10 times as long as an E-step pass, longer than a short fit)."""
    from gaussmix.backends.stream import StreamExecutor

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(100_000, 4)) + c for c in (0.0, 3.0, 6.0, 9.0)])
    np.save(tmp_path / "rows.npy", X)
    truth = GaussianMixture(4, random_state=0, max_iter=5).fit(X[::40])
    model = gaussmix.GaussianMixture.from_parameters(
        truth.weights_, truth.means_, truth.covariances_
    ).set_params(engine="stream")
    path = str(tmp_path / "rows.npy")
    np.testing.assert_array_equal(model.predict(path), model.predict(X))
    np.testing.assert_allclose(model.score_samples(path), model.score_samples(X), rtol=1e-12)

    def best_of_3(fn) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    params = model._fitted_params()
    e_step = best_of_3(lambda: StreamExecutor(path).e_step(params))
    for op in (model.predict, model.score_samples):
        elapsed = best_of_3(lambda op=op: op(path))
        message = f"{op.__name__}(path) took {elapsed:.2f} s, an E-step pass {e_step:.2f} s"
        assert elapsed < 3 * e_step + 0.3, message
