"""Command line interface: ``gaussmix fit | predict | score | sample | select | info | report |
demo``.

Conventions every command follows:

- Results go to stdout (or ``-o FILE``); summaries, progress and errors go to stderr.
- Any failure exits with status 1 (2 for a usage error, 130 for Ctrl-C, 143 for SIGTERM, 129
  for SIGHUP) after printing exactly one line ``gaussmix: error: ...`` on stderr, without a
  traceback (``GAUSSMIX_DEBUG=1`` shows it; ``0``, ``false``, ``no``, ``off`` or empty mean
  off). Arguments, input files and the output's folder are checked before scikit-learn is
  imported, so such errors appear at once.
- Output files go through one atomic writer (:mod:`gaussmix._atomic`): a failure or signal
  leaves none, not even a temporary file.
- A closed output pipe (``gaussmix predict ... | head``) ends the command quietly with status
  141, whatever the format (CSV or JSON), as a program killed by SIGPIPE exits in a shell.
- Fits and grids running longer than a second show a progress bar on a terminal; nothing is
  drawn when stderr is not a terminal or with ``--quiet``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import click
import numpy as np

from gaussmix import __version__

#: seconds a fit must run before its progress bar appears (override: GAUSSMIX_PROGRESS_DELAY)
PROGRESS_DELAY = 1.0
#: files larger than this many bytes are fitted with the stream engine unless --no-stream
#: (override: GAUSSMIX_STREAM_BYTES)
STREAM_BYTES = 1 << 30

# scikit-learn's four names and mclust's 14 models (kept literal here: importing the maths
# layer to list them would slow every command's start)
_COVARIANCE_TYPES = (
    "full", "tied", "diag", "spherical",
    "EII", "VII", "EEI", "VEI", "EVI", "VVI",
    "EEE", "VEE", "EVE", "VVE", "EEV", "VEV", "EVV", "VVV",
)  # fmt: skip
#: numpy's seeds: 0 .. 2**32 - 1 (anything else is a usage error, exit status 2)
_SEED = click.IntRange(0, 2**32 - 1)
_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class CliError(Exception):
    """A failure reported as one line on stderr (exit status 1)."""


# ------------------------------------------------------------------------ error handling
def _one_line(exc: BaseException) -> str:
    text = " ".join(part.strip() for part in str(exc).strip().splitlines() if part.strip())
    if isinstance(exc, KeyError):
        text = text.strip("'\"")
    if not text:
        text = type(exc).__name__
    if isinstance(exc, (CliError, ValueError, OSError)):
        return text
    return f"{type(exc).__name__}: {text}"


def _fail(message: str, status: int) -> None:
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError, OSError):
        pass
    try:
        click.echo(f"gaussmix: error: {message}", err=True)
    except OSError:  # stderr gone too (a hung-up terminal): the status still tells
        pass
    sys.exit(status)


def _debug() -> bool:
    """GAUSSMIX_DEBUG set to something that means yes: tracebacks instead of one line."""
    value = os.environ.get("GAUSSMIX_DEBUG", "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def _broken_pipe() -> None:
    # the reader went away (| head): stop quietly, as cat does; later flushes go nowhere
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    sys.exit(141)


class _Group(click.Group):
    """A group whose failures are one line on stderr, never a traceback."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        from gaussmix._atomic import SignalExit, exit_on_signals

        kwargs["standalone_mode"] = False
        try:
            # SIGTERM/SIGHUP unwind like Ctrl-C: outputs and worker processes are cleaned up
            with exit_on_signals():
                result = super().main(*args, **kwargs)
                sys.stdout.flush()  # a closed pipe must show here, not at interpreter exit
            return result
        except SignalExit as exc:
            _fail(str(exc), int(exc.code))
        except BrokenPipeError:
            _broken_pipe()
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except getattr(click.exceptions, "NoArgsIsHelpError", ()) as exc:
            # bare `gaussmix`: the usage and commands, as click prints them (exit status 2)
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            _fail(" ".join(exc.format_message().split()), 2)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            _fail("interrupted", 130)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except BrokenPipeError:
            _broken_pipe()
        except Exception as exc:
            if _debug():
                raise
            _fail(_one_line(exc), 1)


# ------------------------------------------------------------------------ progress
def _progress_enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def _delay() -> float:
    try:
        return float(os.environ.get("GAUSSMIX_PROGRESS_DELAY", PROGRESS_DELAY))
    except ValueError:
        return PROGRESS_DELAY


class _DelayedProgress:
    """A rich progress bar on stderr that appears only once work has run for a while.

    The bar covers the whole block: a timer shows it once the delay has passed even while no
    iteration reports (reading, initialisation, a final pass over the data), and
    :meth:`stage` names what runs between iterations.

    Subclasses name their columns (``_columns``) and the task's extra fields (``_fields``).
    """

    def __init__(self, enabled: bool, label: str, total: int | None) -> None:
        import threading

        self.enabled = enabled
        self.label = label
        self.total = total
        self.progress = None
        self.task = None
        self.start = time.perf_counter()
        self._lock = threading.Lock()
        self._timer: Any = None
        self._stage = ""

    def __enter__(self):
        import threading

        self.start = time.perf_counter()
        if self.enabled:
            self._timer = threading.Timer(_delay(), self._ready)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            if self.progress is not None:
                self.progress.stop()
            self.enabled = False  # a late timer draws nothing

    def stage(self, text: str) -> None:
        """Name the work now running (shown after the label until the next iteration)."""
        self._stage = text
        if self._ready():
            self.progress.update(self.task, description=self._description(), refresh=True)

    def _description(self) -> str:
        return f"{self.label}: {self._stage}" if self._stage else self.label

    def _columns(self) -> list:
        raise NotImplementedError

    def _fields(self) -> dict[str, str]:
        return {}

    def _ready(self) -> bool:
        """Whether the bar is shown (starting it once the delay has passed)."""
        with self._lock:  # the timer's thread and the work's callbacks both come here
            if not self.enabled or self.total is None:
                return False
            if self.progress is None:
                if time.perf_counter() - self.start < _delay():
                    return False
                from rich.console import Console
                from rich.progress import Progress

                self.progress = Progress(
                    *self._columns(), console=Console(stderr=True), transient=True
                )
                self.progress.start()
                self.task = self.progress.add_task(
                    self._description(), total=self.total, **self._fields()
                )
            return True


class _FitProgress(_DelayedProgress):
    """EM progress bar: iteration, log-likelihood, change.

    Used as the ``callback=`` of ``GaussianMixture.fit`` (one call per EM iteration).
    """

    def __init__(self, enabled: bool, max_iter: int, n_init: int, label: str) -> None:
        super().__init__(enabled, label, max(1, max_iter))
        self.n_init = n_init

    def _columns(self) -> list:
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

        return [
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("iter {task.completed:>4.0f}/{task.total:.0f}"),
            TextColumn("log-lik {task.fields[ll]}"),
            TextColumn("Δ {task.fields[delta]}"),
            TimeElapsedColumn(),
        ]

    def _fields(self) -> dict[str, str]:
        return {"ll": "", "delta": ""}

    def __call__(self, p) -> None:
        self._stage = ""  # EM is iterating
        if not self._ready():
            return
        init = f" init {p.init + 1}/{self.n_init}" if self.n_init > 1 else ""
        delta = "" if not math.isfinite(p.change) else f"{p.change:+.3e}"
        self.progress.update(
            self.task,
            completed=p.iteration,
            description=f"{self.label}{init}",
            ll=f"{p.lower_bound:.6f}",
            delta=delta,
        )


class _GridProgress(_DelayedProgress):
    """Progress over the cells of a selection grid, with the running cell's EM iteration
    (iteration, log-likelihood, change) when cells run in this process."""

    def __init__(self, enabled: bool, label: str, total: int | None = None) -> None:
        super().__init__(enabled, label, total)

    def _columns(self) -> list:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

        return [
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[last]}"),
            TextColumn("{task.fields[em]}"),
            TimeElapsedColumn(),
        ]

    def _fields(self) -> dict[str, str]:
        return {"last": "", "em": ""}

    def on_progress(self, stage: str, done: int, total: int) -> None:
        if not self._ready():
            return
        self.progress.update(self.task, em=f"{stage}: {done}/{total} fits")

    def on_cell(self, row, done: int, total: int) -> None:
        self.total = total
        if not self._ready():
            return
        crit = "failed" if row.error else f"BIC {row.bic:.2f}"
        self.progress.update(
            self.task,
            total=total,
            completed=done,
            last=f"K={row.n_components} {row.covariance_type}: {crit}",
            em="",
        )


# ------------------------------------------------------------------------ helpers
def _columns_option(f):
    return click.option(
        "--columns",
        metavar="A,B,...",
        help="Comma-separated columns to use (names, or 0-based positions); default all.",
    )(f)


def _json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")(f)


def _quiet_option(f):
    return click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")(f)


def _emit_json(payload: Any) -> None:
    # written in pieces, as CSV is, so that a reader that goes away (| head) is seen as a
    # broken pipe (exit 141) whatever the format
    encoder = json.JSONEncoder(indent=2, allow_nan=False, default=_json_default)
    out = sys.stdout
    pieces: list[str] = []
    size = 0
    for piece in encoder.iterencode(payload):
        pieces.append(piece)
        size += len(piece)
        if size >= 1 << 16:
            out.write("".join(pieces))
            out.flush()
            pieces, size = [], 0
    pieces.append("\n")
    out.write("".join(pieces))
    out.flush()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _require_input(path: str) -> None:
    """A readable input file, checked before anything slow is imported."""
    p = Path(path)
    if not p.exists():
        raise CliError(f"{path}: no such file")
    if p.is_dir():
        raise CliError(f"{path}: is a directory, not a data file")


def _require_output(path: str | None) -> None:
    """An output file that can be written, checked before any work: an existing folder, not
    a folder itself, not read-only (the atomic writer checks again when it writes)."""
    if path is None:
        return
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise CliError(f"{path}: is a directory")
    if not folder.is_dir():
        raise CliError(f"{path}: folder {folder} does not exist")
    if p.is_file() and (not os.access(p, os.W_OK) or not p.stat().st_mode & 0o222):
        raise CliError(f"{path}: the file is read-only; not replacing it")


def _read(path: str, columns: str | None, allow_nan: bool = True):
    from gaussmix._io import parse_columns, read_table

    # empty and NA cells are missing values, as the streamed fit and the estimator take them
    return read_table(path, parse_columns(columns), allow_nan=allow_nan)


def _load_model(path: str):
    from gaussmix.persist import load

    p = Path(path)
    if not p.exists():
        raise CliError(f"{path}: no such model file")
    if p.is_dir():
        raise CliError(f"{path}: is a directory, not a model file")
    return load(p)


def _read_for_model(path: str, columns: str | None, model, allow_nan: bool = True):
    """Data columns for a fitted model: --columns, else the model's feature names when the file
    has them, else all columns; the count must match the model's."""
    from gaussmix._io import column_names, parse_columns, read_table

    wanted = parse_columns(columns)
    fitted = getattr(model, "feature_names_in_", None)
    if wanted is None and fitted is not None:
        names, has_header = column_names(path)
        fitted = [str(n) for n in fitted]
        if has_header:
            missing = [n for n in fitted if n not in names]
            if missing:
                raise CliError(
                    f"{path} lacks the column{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(missing)} that the model was fitted on; choose columns with "
                    "--columns"
                )
            wanted = fitted
    table = read_table(path, wanted, allow_nan=allow_nan)
    expected = int(model.n_features_in_)
    if table.X.shape[1] != expected:
        fitted_on = f" ({', '.join(str(n) for n in fitted)})" if fitted is not None else ""
        raise CliError(
            f"{path} has {table.X.shape[1]} column{'s' if table.X.shape[1] != 1 else ''}, but "
            f"the model was fitted on {expected}{fitted_on}; choose them with --columns"
        )
    return table


def _quietly(fn, *args, **kwargs):
    """Call ``fn`` without warnings on stderr: non-convergence is in the summary instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _predict_array(model, X, method: str):
    # the model may carry the column names it was fitted on; X's columns were picked by them
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        return getattr(model, method)(X)


def _check_k(k: int, n_rows: int, path: str) -> None:
    if k > n_rows:
        raise CliError(f"K = {k} is larger than the number of rows ({n_rows}) in {path}")


def _stream_threshold() -> int:
    try:
        return int(os.environ.get("GAUSSMIX_STREAM_BYTES", STREAM_BYTES))
    except ValueError:
        return STREAM_BYTES


def _model_summary(model, n_rows: int, log_likelihood: float) -> dict[str, Any]:
    K, d = model.means_.shape
    p = int(model._n_parameters())
    return {
        "n_components": int(K),
        "covariance_type": model.covariance_type,
        "n_samples": int(n_rows),
        "n_features": int(d),
        "log_likelihood": float(log_likelihood),
        "bic": float(-2 * log_likelihood + p * math.log(n_rows)),
        "aic": float(-2 * log_likelihood + 2 * p),
        "n_parameters": p,
        "n_iter": int(model.n_iter_),
        "converged": bool(model.converged_),
    }


# ------------------------------------------------------------------------ commands
@click.group(cls=_Group, context_settings=_CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="gaussmix")
def main() -> None:
    """Gaussian mixture models from the shell: fit, predict, select K, report.

    \b
    Example:
      gaussmix demo                                  # the whole job on built-in data
      gaussmix select data.csv --k-max 6 -o best.gmm
      gaussmix report data.csv best.gmm -o report.html

    Data files: CSV/TSV (header optional), .npy (memory-mapped), Parquet (needs pyarrow).
    """


@main.command(context_settings=_CONTEXT)
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("-k", "--n-components", "k", type=click.IntRange(min=1), required=True,
              help="Number of mixture components K.")  # fmt: skip
@click.option("--covariance-type", type=click.Choice(_COVARIANCE_TYPES), default="full",
              show_default=True, help="Covariance structure.")  # fmt: skip
@click.option("--init", "init", type=click.Choice(["kmeans", "k-means++", "random",
              "random_from_data"]), default="kmeans", show_default=True,
              help="Initialisation method.")  # fmt: skip
@click.option("--n-init", type=click.IntRange(min=1), default=1, show_default=True,
              help="Initialisations; the best is kept.")  # fmt: skip
@click.option("--max-iter", type=click.IntRange(min=1), default=100, show_default=True,
              help="EM iterations per initialisation.")  # fmt: skip
@click.option("--tol", type=click.FloatRange(min=0), default=1e-3, show_default=True,
              help="Convergence threshold on the mean log-likelihood change.")  # fmt: skip
@click.option("--reg-covar", type=click.FloatRange(min=0), default=1e-6, show_default=True,
              help="Added to the covariances' diagonal.")  # fmt: skip
@click.option("--seed", type=_SEED, default=0, show_default=True, help="Random seed.")
@click.option("--engine", default="auto", show_default=True,
              help="E-step engine (auto, numpy, cpu, stream, dask, torch).")  # fmt: skip
@_columns_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Model file to write [default: DATA's name with .gmm, in the current folder].",
)
@click.option("--stream/--no-stream", default=None,
              help="Read the file chunk by chunk on every EM pass (constant memory). "
                   "Default: on for files over 1 GiB.")  # fmt: skip
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    default=None,
    help="Fit on a Dask cluster (e.g. tcp://10.0.0.5:8786).",
)
@click.option("--connect-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Seconds to wait for the --scheduler.")  # fmt: skip
@_json_option
@_quiet_option
def fit(data, k, covariance_type, init, n_init, max_iter, tol, reg_covar, seed, engine, columns,
        output, stream, scheduler, connect_timeout, as_json, quiet) -> None:  # fmt: skip
    """Fit a K-component mixture to DATA and write the model file.

    Prints a summary (K, log-likelihood, BIC, iterations, converged) on stderr.

    \b
    Example:
      gaussmix fit faithful.csv -k 2 --covariance-type full -o faithful.gmm
      gaussmix fit big.npy -k 8 --stream -o big.gmm
    """
    from gaussmix._io import parse_columns

    _require_input(data)
    path = Path(data)
    out = Path(output) if output else Path(path.stem + ".gmm")
    _require_output(str(out))
    if stream and scheduler:
        raise CliError("--stream and --scheduler are exclusive")
    if stream is None and scheduler is None:
        stream = path.is_file() and path.stat().st_size > _stream_threshold()
    params = dict(covariance_type=covariance_type, init_params=init, n_init=n_init,
                  max_iter=max_iter, tol=tol, reg_covar=reg_covar, random_state=seed)  # fmt: skip
    wanted = parse_columns(columns)
    progress = _FitProgress(_progress_enabled(quiet), max_iter, n_init, f"fit K={k}")
    if stream:
        from gaussmix._source import SelectedColumns
        from gaussmix.estimator import GaussianMixture

        # the parser of the in-memory read (gaussmix._source): a file's size never changes
        # how it reads; the fit keeps the header's names itself
        source = SelectedColumns(path, wanted) if wanted is not None else str(path)
        model = GaussianMixture(k, engine="stream", **params)
        with progress:  # the bar covers the whole run: reading, start, EM, the last pass
            progress.stage("reading the file, initialising")
            model = _quietly(model.fit, source, callback=progress)
            # the saved model's log-likelihood: one more pass, on the fit's compiled kernels
            progress.stage("log-likelihood of every row")
            log_density = _predict_array(model, source, "score_samples")
        n_rows = int(log_density.shape[0])
        log_likelihood = float(np.sum(log_density))
    elif scheduler:
        model, n_rows, log_likelihood = _fit_on_cluster(
            scheduler, path, wanted, k, params, progress, connect_timeout
        )
    else:
        table = _read(data, columns)
        _check_k(k, table.X.shape[0], data)
        from gaussmix.estimator import GaussianMixture

        model = GaussianMixture(k, engine=engine, **params)
        with progress:
            progress.stage("initialising")
            model = _quietly(model.fit, table.X, callback=progress)
            progress.stage("log-likelihood of every row")
            log_likelihood = float(np.sum(model.score_samples(table.X)))
        n_rows = table.X.shape[0]
        if table.has_header:
            model.feature_names_in_ = np.asarray(table.columns, dtype=object)
    model.save(out)
    summary = {
        **_model_summary(model, n_rows, log_likelihood),
        "engine": "stream" if stream else "dask" if scheduler else engine,
        "model": str(out),
    }
    if as_json:
        _emit_json(summary)
    if not quiet:
        state = "converged" if summary["converged"] else "did NOT converge (raise --max-iter)"
        click.echo(
            f"fitted K={k} {covariance_type} on {n_rows} rows x {summary['n_features']} "
            f"columns: log-likelihood {log_likelihood:.4f}, BIC {summary['bic']:.4f}, "
            f"{summary['n_iter']} iterations, {state}; wrote {out}",
            err=True,
        )


def _fit_on_cluster(address, path, wanted, k, params, progress, timeout):
    from distributed import Client

    from gaussmix._io import column_names, read_dask
    from gaussmix.estimator import GaussianMixture

    try:
        client = Client(address, timeout=f"{timeout}s")
    except (OSError, TimeoutError, ValueError) as exc:
        message = f"cannot connect to the Dask scheduler at {address}: {_one_line(exc)}"
        raise CliError(message) from None
    with client:
        # the workers read the file themselves: from their own working folder, so the path
        # must not be relative to ours
        path = os.path.abspath(path)
        X, names = read_dask(path, wanted, allow_nan=True)
        if k > X.shape[0]:
            raise CliError(f"K = {k} is larger than the number of rows ({X.shape[0]}) in {path}")
        model = GaussianMixture(k, engine="dask", **params)
        with progress:
            model = _quietly(model.fit, X, callback=progress)
        log_density = np.asarray(model.score_samples(X))
        if hasattr(log_density, "compute"):
            log_density = log_density.compute()
        if column_names(path)[1]:  # names from the file, not x0, x1, ... (as in memory)
            model.feature_names_in_ = np.asarray(names, dtype=object)
        return model, int(X.shape[0]), float(np.sum(log_density))


@main.command(context_settings=_CONTEXT)
@click.argument("model_file", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--proba", is_flag=True, help="Posterior probabilities instead of labels.")
@_columns_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="CSV file to write (default: stdout).",
)
@_json_option
def predict(model_file, data, proba, columns, output, as_json) -> None:
    """Most probable component (or posterior probabilities) of each row of DATA.

    Writes CSV with a header: ``component``, or ``p0,p1,...`` with --proba.

    \b
    Example:
      gaussmix predict faithful.gmm faithful.csv -o labels.csv
      gaussmix predict faithful.gmm faithful.csv --proba | head
    """
    from gaussmix._io import write_csv

    _require_input(data)
    _require_output(output)
    model = _load_model(model_file)
    table = _read_for_model(data, columns, model)
    if proba:
        values = _predict_array(model, table.X, "predict_proba")
        header = [f"p{k}" for k in range(values.shape[1])]
    else:
        values = _predict_array(model, table.X, "predict").astype(np.int64)
        header = ["component"]
    if as_json:
        payload = {"columns": header, "rows": values.tolist()}
        if output:
            from gaussmix._io import atomic_output

            with atomic_output(output) as fh:
                json.dump(payload, fh)
        else:
            _emit_json(payload)
        return
    write_csv(output, header, [values])


@main.command(context_settings=_CONTEXT)
@click.argument("model_file", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("data", type=click.Path(dir_okay=False))
@_columns_option
@_json_option
def score(model_file, data, columns, as_json) -> None:
    """Mean log-likelihood per sample of DATA under MODEL (also total, BIC and AIC).

    \b
    Example:
      gaussmix score faithful.gmm holdout.csv --json
    """
    _require_input(data)
    model = _load_model(model_file)
    table = _read_for_model(data, columns, model)
    log_density = _predict_array(model, table.X, "score_samples")
    summary = _model_summary(model, table.X.shape[0], float(np.sum(log_density)))
    payload = {
        "mean_log_likelihood": float(np.mean(log_density)),
        "log_likelihood": summary["log_likelihood"],
        "n_samples": summary["n_samples"],
        "bic": summary["bic"],
        "aic": summary["aic"],
    }
    if as_json:
        _emit_json(payload)
        return
    click.echo(f"{payload['mean_log_likelihood']:.6f}")


@main.command(context_settings=_CONTEXT)
@click.argument("model_file", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("-n", "--n-samples", "n", type=click.IntRange(min=1), required=True,
              help="Rows to draw (>= 1).")  # fmt: skip
@click.option("--seed", type=_SEED, default=0, show_default=True, help="Random seed.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="CSV file to write (default: stdout).",
)
@_json_option
def sample(model_file, n, seed, output, as_json) -> None:
    """Draw N rows from MODEL, each with the component it came from.

    \b
    Example:
      gaussmix sample faithful.gmm -n 1000 --seed 1 -o synthetic.csv
    """
    from gaussmix._io import write_csv

    _require_output(output)
    model = _load_model(model_file)
    model.set_params(random_state=seed)
    X, labels = model.sample(n)
    names = [str(c) for c in getattr(model, "feature_names_in_", [])] or [
        f"x{i}" for i in range(X.shape[1])
    ]
    if as_json:
        _emit_json({"columns": [*names, "component"], "X": X, "component": labels})
        return
    write_csv(output, [*names, "component"], [X.astype(np.float64), labels.astype(np.int64)])


@main.command(context_settings=_CONTEXT)
@click.argument("model_file", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--method", type=click.Choice(["mean", "sample"]), default="mean",
              show_default=True,
              help="Conditional mean given the row's observed values, or a draw (multiple "
              "imputation).")  # fmt: skip
@click.option("--seed", type=_SEED, default=0, show_default=True,
              help="Random seed of --method sample.")  # fmt: skip
@_columns_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="CSV file to write (default: stdout).",
)
def impute(model_file, data, method, seed, columns, output) -> None:
    """Fill the missing values of DATA (empty or NA cells) under MODEL.

    Writes DATA's columns as CSV, observed values unchanged.

    \b
    Example:
      gaussmix fit survey.csv -k 3 -o survey.gmm
      gaussmix impute survey.gmm survey.csv -o survey_filled.csv
    """
    from gaussmix._io import write_csv

    _require_input(data)
    _require_output(output)
    model = _load_model(model_file)
    table = _read_for_model(data, columns, model)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        filled = model.impute(table.X, method=method, random_state=seed)
    write_csv(output, list(table.columns), [filled.astype(np.float64)])


@main.command(context_settings=_CONTEXT)
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--k-min", type=click.IntRange(min=1), default=1, show_default=True,
              help="Smallest K.")  # fmt: skip
@click.option("--k-max", type=click.IntRange(min=1), default=9, show_default=True,
              help="Largest K.")  # fmt: skip
@click.option("--covariance-type",
              type=click.Choice([*_COVARIANCE_TYPES, "all", "mclust", "sklearn"]),
              default="all", show_default=True,
              help="One model, or a set: all = mclust = its 14 models; sklearn = the four "
                   "scikit-learn names.")  # fmt: skip
@click.option("--models", default=None, metavar="LIST",
              help="Comma-separated models to try instead (e.g. EII,VVV,full).")  # fmt: skip
@click.option("--criterion", type=click.Choice(["bic", "aic", "icl"]), default="bic",
              show_default=True, help="Criterion minimised.")  # fmt: skip
@click.option("--n-init", type=click.IntRange(min=1), default=1, show_default=True,
              help="k-means++ starts per cell, besides the hierarchical one.")  # fmt: skip
@click.option("--max-iter", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--tol", type=click.FloatRange(min=0), default=1e-5, show_default=True,
              help="EM stops when the log-likelihood changes by less, relative to "
                   "1 + |log L| (mclust's test).")  # fmt: skip
@click.option("--reg-covar", type=click.FloatRange(min=0), default=1e-6, show_default=True)
@click.option("--lrt", "lrt_boot", type=click.IntRange(min=0), default=0, show_default=True,
              metavar="B",
              help="Also run mclust's bootstrap likelihood-ratio test of K vs K+1 for the best "
                   "model, with B bootstrap samples (e.g. 99).")  # fmt: skip
@click.option("--seed", type=_SEED, default=0, show_default=True,
              help="Random seed of every cell.")  # fmt: skip
@click.option(
    "--n-jobs",
    type=int,
    default=None,
    help="Threads fitting the grid (-1: all cores). Default: all cores.",
)
@_columns_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the best model to this file.",
)
@_json_option
@_quiet_option
def select(data, k_min, k_max, covariance_type, models, criterion, n_init, max_iter, tol,
           reg_covar, lrt_boot, seed, n_jobs, columns, output, as_json, quiet) -> None:  # fmt: skip
    """Fit every K in [K-MIN, K-MAX] x covariance model; tabulate BIC/AIC/ICL; keep the best.

    mclust's workflow and grid (its 14 models x K = 1..9, each started from one hierarchical
    clustering and from k-means++): the table of the chosen criterion (lower is better) with
    the best model marked, cells that are singular or degenerate as NA with their reasons,
    the top three models, and the best model written with -o.

    \b
    Example:
      gaussmix select faithful.csv --k-max 6 -o best.gmm
      gaussmix select iris.csv --columns a,b,c,d --criterion icl --json
    """
    if k_max < k_min:
        raise CliError(f"--k-max ({k_max}) is smaller than --k-min ({k_min})")
    _require_input(data)
    _require_output(output)
    table = _read(data, columns)
    _check_k(k_max, table.X.shape[0], data)
    types = _grid_models(covariance_type, models)
    from gaussmix.selection import select as run_select

    grid = _GridProgress(_progress_enabled(quiet), "select", (k_max - k_min + 1) * len(types))
    with grid:
        result = run_select(
            table.X, range(k_min, k_max + 1), types, criterion, n_jobs=n_jobs,
            random_state=seed, on_cell=grid.on_cell, on_progress=grid.on_progress,
            n_init=n_init,
            max_iter=max_iter, tol=tol, reg_covar=reg_covar,
        )  # fmt: skip
    lrt = None
    if lrt_boot:
        from gaussmix.selection import bootstrap_lrt

        best_row = result.best_row
        lrt = bootstrap_lrt(table.X, best_row.covariance_type,
                            k_max=min(k_max, table.X.shape[0] - 1), n_boot=lrt_boot,
                            random_state=seed, tol=tol, max_iter=max_iter,
                            reg_covar=reg_covar)  # fmt: skip
    best = result.best_model
    if table.has_header:
        best.feature_names_in_ = np.asarray(table.columns, dtype=object)
    if output:
        best.save(output)
    if as_json:
        payload = {**result.to_dict(), "model": output}
        if lrt is not None:
            payload["bootstrap_lrt"] = lrt.to_dict()
        _emit_json(payload)
        return
    click.echo(_format_grid(result))
    if lrt is not None:
        click.echo(str(lrt))
    if output and not quiet:
        click.echo(f"wrote {output}", err=True)


def _grid_models(covariance_type: str, models: str | None) -> list[str]:
    if models is None:
        if covariance_type in ("all", "mclust"):
            return list(_COVARIANCE_TYPES[4:])
        if covariance_type == "sklearn":
            return ["spherical", "diag", "tied", "full"]
        return [covariance_type]
    wanted = [m.strip() for m in models.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in _COVARIANCE_TYPES]
    if not wanted or unknown:
        raise click.BadParameter(
            f"unknown model(s) {', '.join(unknown) or '(none given)'}; choose from "
            f"{', '.join(_COVARIANCE_TYPES)}",
            param_hint="--models",
        )
    return list(dict.fromkeys(wanted))


def _format_grid(result, block: int = 7) -> str:
    types = result.covariance_types
    crit = result.criterion
    values = result.values(crit)
    best = result.best_row
    width = 11
    lines = [f"{crit.upper()} (lower is better), {result.n_samples} rows; * marks the best"]
    # mclust prints wide tables in blocks of columns: 14 models in two readable blocks
    for first in range(0, len(types), block):
        cols = list(range(first, min(first + block, len(types))))
        lines.append(" K " + "".join(f"{types[c]:>{width}}" for c in cols))
        for r, k in enumerate(result.k_values):
            cells = []
            for c in cols:
                v = values[r, c]
                text = "NA" if not math.isfinite(v) else f"{v:.2f}"
                text += "*" if best.n_components == k and best.covariance_type == types[c] else " "
                cells.append(f"{text:>{width}}")
            lines.append(f"{k:>2} " + "".join(cells))
    lines.append("")
    lines.append(f"top 3 models by {crit.upper()}:")
    for rank, row in enumerate(result.top(3), start=1):
        lines.append(f"  {rank}. {row.covariance_type},{row.n_components}  "
                     f"{crit.upper()} {getattr(row, crit):.3f}")  # fmt: skip
    lines.append(
        f"best: K={best.n_components} {best.covariance_type}  BIC {best.bic:.4f}  "
        f"AIC {best.aic:.4f}  ICL {best.icl:.4f}  log-likelihood {best.log_likelihood:.4f}"
    )
    failed = [r for r in result.rows if r.error]
    if failed:
        reasons: dict[str, int] = {}
        for r in failed:
            key = _reason_kind(r.error)
            reasons[key] = reasons.get(key, 0) + 1
        text = "; ".join(f"{n} {why}" for why, n in sorted(reasons.items(), key=lambda x: -x[1]))
        lines.append(f"{len(failed)} of {len(result.rows)} cells are NA (never chosen): {text}")
    return "\n".join(lines)


def _reason_kind(error: str) -> str:
    """The reason of an NA cell without its component number (for counting)."""
    import re

    return re.sub(r"component \d+", "a component", re.sub(r"\(\d+\)", "", error)).strip()


@main.command(context_settings=_CONTEXT)
@click.argument("model_file", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("data", metavar="[DATA]", required=False, type=click.Path(dir_okay=False))
@_columns_option
@_json_option
def info(model_file, data, columns, as_json) -> None:
    """Summary of MODEL (like mclust's), then its parameters: weights, means, covariances.

    With DATA (usually the training data) the summary adds the log-likelihood, BIC, ICL and
    the number of rows in each cluster.

    \b
    Example:
      gaussmix info faithful.gmm
      gaussmix info faithful.gmm faithful.csv
    """
    from gaussmix._covariance import get_model

    model = _load_model(model_file)
    summary = model.summary()
    if data is not None:
        table = _read_for_model(data, columns, model)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            summary = model.summary(table.X)
    K, d = model.means_.shape
    names = [str(c) for c in getattr(model, "feature_names_in_", [])] or [f"x{i}" for i in range(d)]
    cov_model = get_model(model.covariance_type)
    covs = np.asarray(model.covariances_, dtype=np.float64)
    full = [cov_model.full_matrix(covs, k, d) for k in range(K)]
    if as_json:
        _emit_json({
            "n_components": K, "n_features": d, "covariance_type": model.covariance_type,
            "feature_names": names, "weights": model.weights_, "means": model.means_,
            "covariances": model.covariances_, "full_covariances": np.stack(full),
            "converged": bool(model.converged_), "n_iter": int(model.n_iter_),
            "lower_bound": _finite(float(model.lower_bound_)),
            "summary": summary.to_dict(),
        })  # fmt: skip
        return
    state = "converged" if model.converged_ else "not converged"
    lines = [
        f"{model_file}: Gaussian mixture, K={K}, {d} features ({', '.join(names)}), "
        f"{model.covariance_type} covariance; {state} after {model.n_iter_} iterations"
    ]
    lines.extend(["", str(summary), ""])
    with np.printoptions(precision=5, suppress=True, linewidth=100):
        for k in range(K):
            lines.append(f"component {k}: weight {float(model.weights_[k]):.5f}")
            lines.append(f"  mean        {np.asarray(model.means_[k], dtype=np.float64)}")
            cov_lines = str(full[k]).splitlines()
            lines.append(f"  covariance  {cov_lines[0]}")
            lines.extend(f"              {line}" for line in cov_lines[1:])
    click.echo("\n".join(lines))


@main.command(context_settings=_CONTEXT)
@click.argument("data", type=click.Path(dir_okay=False))
@click.argument("model_file", metavar="[MODEL]", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="report.html",
              show_default=True, help="HTML file to write.")  # fmt: skip
@click.option(
    "--png",
    "png_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Also write each figure as a PNG file in this folder.",
)
@click.option("--k-min", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--k-max",
    type=click.IntRange(min=1),
    default=9,
    show_default=True,
    help="Largest K of the BIC/ICL curves (and of the selection without MODEL), as select.",
)
@click.option("--covariance-type",
              type=click.Choice([*_COVARIANCE_TYPES, "all", "mclust", "sklearn"]), default="all",
              show_default=True, help="Covariance types of the curves.")  # fmt: skip
@click.option("--n-init", type=click.IntRange(min=1), default=1, show_default=True,
              help="Initialisations per grid cell (the best is kept).")  # fmt: skip
@click.option("--tol", type=click.FloatRange(min=0), default=1e-5, show_default=True,
              help="EM convergence threshold of the grid's fits.")  # fmt: skip
@click.option("--seed", type=_SEED, default=0, show_default=True)
@click.option("--n-jobs", type=int, default=None, help="Threads fitting the grid.")
@click.option("--title", default=None, help="Page title.")
@click.option(
    "--features",
    default=None,
    help="Comma-separated features of the scatter and pairs plots (names or 0-based indices) "
    "[default: all up to 5, else the 5 that separate the clusters most].",
)
@_columns_option
@_json_option
@_quiet_option
def report(data, model_file, output, png_dir, k_min, k_max, covariance_type, n_init, tol, seed,
           n_jobs, title, features, columns, as_json, quiet) -> None:  # fmt: skip
    """Self-contained HTML report of DATA and a mixture (MODEL, or the one BIC selects).

    Figures: classification with covariance ellipses (pairs plot when d > 2), density
    contours, classification uncertainty, BIC/ICL against K per covariance type, log-likelihood
    per EM iteration; and a parameter table. The page needs no network.

    \b
    Example:
      gaussmix report faithful.csv faithful.gmm -o report.html
      gaussmix report iris.csv --k-max 5 -o iris.html --png figures/
    """
    _require_input(data)
    _require_output(output)
    from gaussmix.report import build_section, write_html, write_png
    from gaussmix.selection import select as run_select

    if k_max < k_min:
        raise CliError(f"--k-max ({k_max}) is smaller than --k-min ({k_min})")
    model = _load_model(model_file) if model_file else None
    # the plots need every value: a missing one is named (column, line) rather than plotted
    table = (
        _read_for_model(data, columns, model, allow_nan=False)
        if model is not None
        else _read(data, columns, allow_nan=False)
    )
    shown_features = _parse_features(features, table.columns)
    n = table.X.shape[0]
    k_max_grid = min(k_max, n)
    ks = range(min(k_min, k_max_grid), k_max_grid + 1)
    types = _grid_models(covariance_type, None)
    grid = _GridProgress(_progress_enabled(quiet), "BIC grid", len(ks) * len(types))
    with grid:
        selection = run_select(table.X, ks, types, "bic", n_jobs=n_jobs,
                               random_state=seed, on_cell=grid.on_cell,
                               on_progress=grid.on_progress, n_init=n_init,
                               tol=tol)  # fmt: skip
    shown = model if model is not None else selection.best_model
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        section = build_section(
            table.X, shown, selection=selection, feature_names=table.columns,
            name=Path(data).stem, features=shown_features,
            title=title or f"{Path(data).name}: K={shown.means_.shape[0]} "
            f"{shown.covariance_type}" + (f" ({Path(model_file).name})" if model_file else ""),
        )  # fmt: skip
    written = [write_html([section], output, title=title or f"gaussmix report: {Path(data).name}")]
    if png_dir:
        written += write_png([section], png_dir)
    if as_json:
        _emit_json({"report": str(written[0]), "png": [str(p) for p in written[1:]],
                    "selected": section.data.get("criteria", {}).get("selected")})  # fmt: skip
        return
    click.echo(str(written[0]))
    for p in written[1:]:
        click.echo(str(p))


def _parse_features(text: str | None, names: list[str]) -> list[int] | None:
    """``--features`` as column indices: names of ``names`` or 0-based indices."""
    if text is None:
        return None
    out = []
    for item in (t.strip() for t in text.split(",")):
        if item in names:
            out.append(names.index(item))
        elif item.isdigit() and int(item) < len(names):
            out.append(int(item))
        else:
            raise CliError(
                f"--features: {item!r} is neither a column ({', '.join(names)}) nor an index "
                f"in 0..{len(names) - 1}"
            )
    if len(set(out)) != len(out):
        raise CliError(f"--features names a column twice: {text}")
    return out


@main.command(context_settings=_CONTEXT)
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for report.html and the data [default: a new private folder in the temp "
    "folder].",
)
@click.option("--n-jobs", type=int, default=None, help="Threads fitting the grids.")
@_json_option
@_quiet_option
def demo(output_dir, n_jobs, as_json, quiet) -> None:
    """The whole job on built-in data, no download.

    Draws 2000 points from a known 3-component mixture (seed 0), selects K and the covariance
    type by BIC, prints true vs recovered parameters; does the same on the iris measurements
    scikit-learn ships; writes one HTML report for both and prints its path.

    \b
    Example:
      gaussmix demo
      gaussmix demo -o demo-output/
    """
    from gaussmix.demo import TRUE_MIXTURE, run_demo

    # never a fixed, shared path: another user could plant a link there
    out = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="gaussmix-demo-"))
    grid = _GridProgress(_progress_enabled(quiet), "demo: BIC grids")
    with grid:
        result = run_demo(out, n_jobs=n_jobs, on_cell=grid.on_cell)
    sel, iris = result.selection, result.iris_selection
    if as_json:
        _emit_json({
            "n_samples": int(result.X.shape[0]),
            "selected": sel.to_dict()["best"],
            "true_vs_recovered": result.comparison,
            "iris": {"selected": iris.to_dict()["best"], "adjusted_rand_index": result.iris_ari},
            "report": str(result.report),
            "seconds": result.seconds,
        })  # fmt: skip
        return
    best, ibest = sel.best_row, iris.best_row
    n_types = len(sel.covariance_types)
    lines = [
        f"Known mixture: {result.X.shape[0]} points drawn from {len(TRUE_MIXTURE['weights'])} "
        f"Gaussians in 2-D (seed 0).",
        f"BIC over K={sel.k_values[0]}..{sel.k_values[-1]} x {n_types} covariance types selects "
        f"K={best.n_components} {best.covariance_type} (BIC {best.bic:.2f}, "
        f"{best.n_iter} EM iterations).",
        "True vs recovered parameters:",
    ]
    fmt = {"float_kind": lambda v: f"{v:7.3f}"}
    for row in result.comparison:
        lines.append(f"  component {row['component']}:")
        fw = "-" if row["fitted_weight"] is None else f"{row['fitted_weight']:.3f}"
        lines.append(f"    weight      true {row['true_weight']:.3f}   recovered {fw}")
        for key, label in (("mean", "mean"), ("cov", "covariance")):
            true = np.array2string(np.asarray(row[f"true_{key}"]).ravel(), formatter=fmt)
            fitted = row[f"fitted_{key}"]
            got = "-" if fitted is None else np.array2string(np.asarray(fitted).ravel(),
                                                              formatter=fmt)  # fmt: skip
            lines.append(f"    {label:<11} true {true}   recovered {got}")
    lines.append(
        f"Iris (150 flowers, 4 measurements, scikit-learn's copy): BIC selects "
        f"K={ibest.n_components} {ibest.covariance_type} (BIC {ibest.bic:.2f}); agreement "
        f"with the 3 species: adjusted Rand index {result.iris_ari:.3f}."
    )
    lines.append(f"Report: {result.report}")
    click.echo("\n".join(lines))
