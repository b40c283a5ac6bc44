"""Reading data files and writing results for the command line.

Formats and parsing rules are those of :mod:`gaussmix._source`, the one data-source layer that
the stream engine, the Dask reader and ``fit(path)`` use too: ``.npy`` (opened memory-mapped),
Parquet (``pip install 'gaussmix[arrow]'``), and delimited text (any other name; comma, tab or
semicolon, header optional, UTF-8 with or without a byte-order mark).

Every problem is raised as :class:`DataError` with a one-line message naming the file and, where
it applies, the column, line or value at fault.

Outputs are written atomically: to a temporary file in the destination folder, renamed over the
destination only once complete, so an error or Ctrl-C never leaves a partial file.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from numpy.typing import NDArray

from gaussmix._source import (
    DataError,
    auto_names,
    check_file,
    dask_text,
    format_of,
    pick_columns,
    read_text,
    sniff_text,
)

__all__ = [
    "DataError",
    "Table",
    "atomic_output",
    "column_names",
    "parse_columns",
    "read_dask",
    "read_table",
    "write_csv",
]


@dataclass(frozen=True)
class Table:
    """A numeric table read from a file.

    Attributes
    ----------
    X : ndarray of shape (n_samples, n_features)
        Floating-point values (a read-only memory map for ``.npy`` files).
    columns : list of str
        Column names (``x0``, ``x1``, ... when the file has none).
    has_header : bool
        Whether the names came from the file.
    path : pathlib.Path
        Source file.
    """

    X: NDArray
    columns: list[str]
    has_header: bool
    path: Path


def parse_columns(spec: str | None) -> list[str] | None:
    """Split a ``--columns a,b,c`` value; None or blank means all columns.

    Parameters
    ----------
    spec : str or None

    Returns
    -------
    names : list of str or None
    """
    if spec is None or not spec.strip():
        return None
    names = [c.strip() for c in spec.split(",")]
    if any(not c for c in names):
        raise DataError(f"--columns has an empty name in {spec!r}")
    if len(set(names)) != len(names):
        raise DataError(f"--columns names a column twice in {spec!r}")
    return names


def _check_finite(
    X: NDArray, columns: list[str], path: Path, allow_nan: bool, offset: int = 0
) -> None:
    finite = np.isfinite(X)
    if finite.all():
        return
    bad = ~finite & ~np.isnan(X) if allow_nan else ~finite
    if not bad.any():
        return
    row, col = (int(v[0]) for v in np.nonzero(bad))
    what = "a missing value" if np.isnan(X[row, col]) else "an infinite value"
    raise DataError(f"{path}: column {columns[col]!r} has {what} at row {offset + row}")


def _exclude_hint() -> str:
    return "choose numeric columns with --columns"


# --------------------------------------------------------------------------- .npy
def _read_npy(path: Path, wanted: list[str] | None, allow_nan: bool) -> Table:
    try:
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{path}: not a readable .npy array ({_first_line(exc)})") from None
    if not isinstance(X, np.ndarray):
        raise DataError(f"{path}: not a single .npy array")
    if X.dtype.kind not in "biuf":
        raise DataError(f"{path}: array has non-numeric dtype {X.dtype}")
    if X.ndim == 1:
        X = X.reshape(-1, 1)
    if X.ndim != 2:
        raise DataError(f"{path}: expected a 2-D array (rows x columns), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"{path}: array is empty (shape {X.shape})")
    names = auto_names(X.shape[1])
    idx = pick_columns(names, wanted, path)
    if idx != list(range(X.shape[1])):
        X = np.asarray(X[:, idx])
        names = [names[i] for i in idx]
    if X.dtype.kind != "f":
        X = X.astype(np.float64)
    _check_finite(X, names, path, allow_nan)
    return Table(X, names, False, path)


# --------------------------------------------------------------------------- Parquet
def _read_parquet(path: Path, wanted: list[str] | None, allow_nan: bool) -> Table:
    if importlib.util.find_spec("pyarrow") is None:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install 'gaussmix[arrow]')")
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    names = list(schema.names)
    idx = pick_columns(names, wanted, path)
    names = [names[i] for i in idx]
    for name in names:
        kind = schema.field(name).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            raise DataError(f"{path}: column {name!r} is not numeric ({kind}); {_exclude_hint()}")
    try:
        table = pq.read_table(path, columns=names)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows")
    X = np.column_stack(
        [table.column(n).to_numpy(zero_copy_only=False).astype(np.float64) for n in names]
    )
    _check_finite(X, names, path, allow_nan)
    return Table(X, names, True, path)


# --------------------------------------------------------------------------- CSV / TSV
def _read_text(path: Path, wanted: list[str] | None, allow_nan: bool) -> Table:
    source = sniff_text(path)
    idx = pick_columns(source.names, wanted, path)
    X = read_text(source, idx, allow_nan=allow_nan)
    if X.shape[0] == 0:
        raise DataError(f"{path}: no data rows")
    return Table(X, [source.names[i] for i in idx], source.has_header, path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_table(
    path: str | os.PathLike,
    columns: Sequence[str] | None = None,
    *,
    allow_nan: bool = False,
) -> Table:
    """Read a numeric table from CSV/TSV, ``.npy`` or Parquet.

    Parameters
    ----------
    path : str or path-like
        The file; its name picks the format (see :mod:`gaussmix._source`).
    columns : sequence of str, optional
        Columns to keep, in this order: names, or 0-based positions for files without names.
        Default: all columns, which must then all be numeric.
    allow_nan : bool, default=False
        Return missing values (empty cells, ``NA``, ``nan``; nulls of Parquet; NaN of
        ``.npy``) as NaN instead of refusing them. Infinite values are always refused.

    Returns
    -------
    table : Table
        ``X`` of shape (n_samples, len(columns)) and the column names.

    Raises
    ------
    DataError
        Missing, unreadable or non-regular file, malformed text, non-numeric or missing
        values, unknown column; the message is one line naming the file and the problem.
    """
    path = check_file(path)
    wanted = list(columns) if columns is not None else None
    kind = format_of(path)
    try:
        if kind == "npy":
            return _read_npy(path, wanted, allow_nan)
        if kind == "parquet":
            return _read_parquet(path, wanted, allow_nan)
        return _read_text(path, wanted, allow_nan)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or _first_line(exc)})") from None


def column_names(path: str | os.PathLike) -> tuple[list[str], bool]:
    """Column names of a data file without reading its rows.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    names : list of str
        ``x0, x1, ...`` for files without names.
    has_header : bool
        Whether the names came from the file.
    """
    path = check_file(path)
    kind = format_of(path)
    if kind == "npy":
        try:
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: not a readable .npy array ({_first_line(exc)})") from None
        return auto_names(shape[1] if len(shape) == 2 else 1), False
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names), True
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    source = sniff_text(path)
    return list(source.names), source.has_header


def _load_span(loader) -> NDArray:
    return loader()


def _check_block(block: NDArray, columns, path, allow_nan, block_info=None) -> NDArray:
    # read_table's rule on every block, rows numbered in the whole array
    offset = int(block_info[0]["array-location"][0][0]) if block_info else 0
    _check_finite(block, columns, path, allow_nan, offset)
    return block


def _checked_blocks(X, columns: list[str], path: Path, allow_nan: bool):
    """``X`` whose blocks refuse what :func:`read_table` refuses (NaN unless allowed, inf)."""
    return X.map_blocks(
        _check_block, columns=columns, path=path, allow_nan=allow_nan, dtype=X.dtype
    )


def read_dask(
    path: str | os.PathLike,
    columns: Sequence[str] | None = None,
    *,
    blocksize: str | int = "64MiB",
    allow_nan: bool = False,
):
    """A lazy Dask array of a data file's numeric columns (for a distributed fit).

    Text is split into byte ranges at line ends and each range is parsed by the same rules
    as :func:`read_table` (:mod:`gaussmix._source`), on the workers.

    Parameters
    ----------
    path : str or path-like
        CSV/TSV, ``.npy`` or Parquet, as :func:`read_table` reads them.
    columns : sequence of str, optional
        Columns to keep (names, or 0-based positions).
    blocksize : str or int
        Bytes per partition of text files.
    allow_nan : bool, default=False
        Missing values become NaN instead of an error.

    Returns
    -------
    X : dask.array.Array of shape (n_samples, n_features)
        Float64, with known chunk sizes.
    names : list of str
    """
    import dask
    import dask.array as da
    import dask.dataframe as dd
    from dask.utils import parse_bytes

    path = check_file(path)
    names, _ = column_names(path)
    idx = pick_columns(names, list(columns) if columns is not None else None, path)
    picked = [names[i] for i in idx]
    kind = format_of(path)
    if kind == "npy":
        X = np.load(path, mmap_mode="r", allow_pickle=False)
        if X.dtype.kind not in "biuf":
            raise DataError(f"{path}: array has non-numeric dtype {X.dtype}")
        X = X.reshape(-1, 1) if X.ndim == 1 else X
        rows = max(1, (64 << 20) // max(1, X.shape[1] * X.dtype.itemsize))
        X = da.from_array(X, chunks=(rows, X.shape[1]))[:, idx].astype(np.float64)
        return _checked_blocks(X, picked, path, allow_nan), picked
    if kind == "parquet":
        frame = dd.read_parquet(str(path), columns=picked)
        for name in picked:
            if frame[name].dtype.kind not in "biuf":
                raise DataError(f"{path}: column {name!r} is not numeric; {_exclude_hint()}")
        X = frame[picked].to_dask_array(lengths=True).astype(np.float64)
        return _checked_blocks(X, picked, path, allow_nan), picked
    source = sniff_text(path)
    nbytes = parse_bytes(blocksize) if isinstance(blocksize, str) else int(blocksize)
    loaders = dask_text(source, idx, nbytes, allow_nan=allow_nan)
    if not loaders:
        raise DataError(f"{path}: no data rows")
    parts = [
        da.from_delayed(
            dask.delayed(_load_span, pure=True)(loader), shape=(np.nan, len(idx)), dtype=float
        )
        for loader in loaders
    ]
    # one pass counts each span's rows (and checks every value) so that shapes are known
    X = da.concatenate(parts, axis=0).compute_chunk_sizes()
    if X.shape[0] == 0:
        raise DataError(f"{path}: no data rows")
    return X, picked


# --------------------------------------------------------------------------- output
def atomic_output(
    path: str | os.PathLike, mode: str = "w"
) -> contextlib.AbstractContextManager[IO]:
    """Open ``path`` for writing; it is replaced only if the block succeeds.

    The one atomic-write helper, :func:`gaussmix._atomic.atomic_write` (permissions as
    ``open`` gives them, symbolic links written through, read-only files refused, ``fsync``,
    no temporary file left on an error, Ctrl-C, SIGTERM or SIGHUP).

    Parameters
    ----------
    path : str or path-like
        Destination. Its folder must exist.
    mode : {"w", "wb"}
        Text (UTF-8, ``\\n`` line ends) or binary.

    Returns
    -------
    context manager
        Yields the file object to write the whole content to.
    """
    from gaussmix._atomic import atomic_write

    return atomic_write(path, mode)


def _write_rows(fh: IO, header: Sequence[str], columns: Sequence[NDArray]) -> None:
    fh.write(",".join(header) + "\n")
    n = len(columns[0]) if columns else 0
    formats = ["%d" if np.asarray(c).dtype.kind in "biu" else "%.15g" for c in columns]
    block = 65536
    for start in range(0, n, block):
        stop = min(start + block, n)
        parts = [np.asarray(c[start:stop]).reshape(stop - start, -1) for c in columns]
        buf = io.StringIO()
        # one float block with a per-column format: integers (labels) stay exact below 2**53
        np.savetxt(buf, np.hstack(parts), fmt=_row_format(parts, formats), delimiter=",")
        fh.write(buf.getvalue())


def _row_format(parts: Sequence[NDArray], formats: Sequence[str]) -> str:
    return ",".join(f for p, f in zip(parts, formats, strict=True) for _ in range(p.shape[1]))


def write_csv(
    path: str | os.PathLike | None,
    header: Sequence[str],
    columns: Sequence[NDArray],
) -> None:
    """Write columns as CSV, atomically to ``path`` or to standard output when ``path`` is None.

    Parameters
    ----------
    path : str, path-like or None
        Destination file (replaced only once complete), or None for stdout.
    header : sequence of str
        Column names; one per column of the arrays (a 2-D array contributes its columns).
    columns : sequence of ndarray
        Each of shape (n_rows,) or (n_rows, m); integers are written as integers, floats with
        15 significant digits.
    """
    if path is None:
        _write_rows(sys.stdout, header, columns)
        sys.stdout.flush()
        return
    with atomic_output(path) as fh:
        _write_rows(fh, header, columns)
