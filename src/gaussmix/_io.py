"""Reading data files and writing results for the command line.

Formats, chosen by file extension:

- ``.npy``: opened memory-mapped (nothing is read until rows are used); 1-D arrays are one column.
- ``.parquet`` / ``.pq``: Apache Arrow (``pip install 'gaussmix[arrow]'``).
- anything else is delimited text: comma, tab or semicolon, detected from the first line
  (``.tsv``/``.tab`` are always tab-separated). The header is optional: a first line with any
  field that is not a number is taken as column names. Arrow's multi-threaded CSV reader is used
  when pyarrow is installed, Python's :mod:`csv` module otherwise.

Every problem is raised as :class:`DataError` with a one-line message naming the file and, where
it applies, the column, line or value at fault.

Outputs are written atomically: to a temporary file in the destination folder, renamed over the
destination only once complete, so an error or Ctrl-C never leaves a partial file.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from numpy.typing import NDArray

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

_PARQUET = {".parquet", ".pq"}
_TAB = {".tsv", ".tab"}
_DELIMITERS = (",", "\t", ";")


class DataError(ValueError):
    """A data file cannot be read as a numeric table; the message is one line."""


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


def _pick(available: list[str], wanted: list[str] | None, path: Path) -> list[int]:
    """Indices of the wanted columns: by name, or by 0-based position when no name matches."""
    if wanted is None:
        return list(range(len(available)))
    index = {name: i for i, name in enumerate(available)}
    out = []
    for name in wanted:
        if name in index:
            out.append(index[name])
        elif name.isdigit() and int(name) < len(available):
            out.append(int(name))
        else:
            shown = ", ".join(available[:12]) + (", ..." if len(available) > 12 else "")
            raise DataError(f"{path}: no column {name!r} (columns: {shown})")
    return out


def _check_finite(X: NDArray, columns: list[str], path: Path, first_data_line: int) -> None:
    finite = np.isfinite(X)
    if finite.all():
        return
    row, col = (int(v[0]) for v in np.nonzero(~finite))
    what = "a missing value" if np.isnan(X[row, col]) else "an infinite value"
    where = f"line {row + first_data_line}" if first_data_line else f"row {row}"
    raise DataError(f"{path}: column {columns[col]!r} has {what} at {where}")


def _auto_names(n: int) -> list[str]:
    return [f"x{i}" for i in range(n)]


# --------------------------------------------------------------------------- .npy
def _read_npy(path: Path, wanted: list[str] | None) -> Table:
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
    names = _auto_names(X.shape[1])
    idx = _pick(names, wanted, path)
    if idx != list(range(X.shape[1])):
        X = np.asarray(X[:, idx])
        names = [names[i] for i in idx]
    if X.dtype.kind != "f":
        X = X.astype(np.float64)
    _check_finite(X, names, path, 0)
    return Table(X, names, False, path)


# --------------------------------------------------------------------------- Parquet
def _read_parquet(path: Path, wanted: list[str] | None) -> Table:
    if importlib.util.find_spec("pyarrow") is None:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install 'gaussmix[arrow]')")
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    names = list(schema.names)
    idx = _pick(names, wanted, path)
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
    _check_finite(X, names, path, 0)
    return Table(X, names, True, path)


# --------------------------------------------------------------------------- CSV / TSV
def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _exclude_hint() -> str:
    return "choose numeric columns with --columns"


def _sniff(path: Path) -> tuple[str, list[str], int]:
    """Delimiter, first line's fields, and the 1-based number of the first non-blank line."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            number, line = 0, ""
            for number, line in enumerate(fh, start=1):  # noqa: B007 (used after the loop)
                if line.strip():
                    break
            if not line.strip():
                raise DataError(f"{path}: file is empty")
    except UnicodeDecodeError:
        raise DataError(
            f"{path}: not a text file (not UTF-8); expected CSV, TSV, .npy or Parquet"
        ) from None
    if path.suffix.lower() in _TAB:
        delimiter = "\t"
    else:
        counts = {d: line.count(d) for d in _DELIMITERS}
        delimiter = max(_DELIMITERS, key=lambda d: counts[d]) if max(counts.values()) else ","
    fields = next(csv.reader([line.rstrip("\r\n")], delimiter=delimiter))
    return delimiter, [f.strip() for f in fields], number


def _bad_line(path: Path, delimiter: str, skip: int, width: int) -> str:
    """Find the first line whose field count differs from the header's, for the error."""
    with open(path, newline="", encoding="utf-8") as fh:
        for number, row in enumerate(csv.reader(fh, delimiter=delimiter), start=1):
            if number <= skip or not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != width:
                return f"line {number} has {len(row)} fields, expected {width}"
    return "malformed"


def _non_numeric(path: Path, name: str, values: Sequence, first_line: int) -> DataError:
    for i, value in enumerate(values):
        if value is not None and not _is_number(str(value)):
            return DataError(
                f"{path}: column {name!r} is not numeric (line {first_line + i}: {value!r}); "
                f"{_exclude_hint()}"
            )
    return DataError(f"{path}: column {name!r} is not numeric; {_exclude_hint()}")


def _read_text(path: Path, wanted: list[str] | None) -> Table:
    delimiter, first, first_number = _sniff(path)
    has_header = not all(_is_number(f) for f in first)
    width = len(first)
    if has_header:
        names = [f or f"x{i}" for i, f in enumerate(first)]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise DataError(f"{path}: column name {dup!r} appears twice in the header")
    else:
        names = _auto_names(width)
    idx = _pick(names, wanted, path)
    skip = first_number if has_header else first_number - 1
    data_line = skip + 1
    if importlib.util.find_spec("pyarrow") is not None:
        X, picked = _read_text_arrow(path, delimiter, names, idx, skip, width, data_line)
    else:
        X, picked = _read_text_python(path, delimiter, names, idx, skip, width, data_line)
    if X.shape[0] == 0:
        raise DataError(f"{path}: no data rows")
    _check_finite(X, picked, path, data_line)
    return Table(X, picked, has_header, path)


def _read_text_arrow(path, delimiter, names, idx, skip, width, data_line):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    picked = [names[i] for i in idx]
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(skip_rows=skip, column_names=names),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, ignore_empty_lines=True),
            convert_options=pacsv.ConvertOptions(include_columns=picked),
        )
    except pa.ArrowInvalid as exc:
        message = str(exc)
        if "column" in message.lower() and "expected" in message.lower():
            why = _bad_line(path, delimiter, skip, width)
            raise DataError(f"{path}: malformed CSV, {why}") from None
        raise DataError(f"{path}: malformed CSV ({_first_line(exc)})") from None
    if table.num_rows == 0:
        return np.empty((0, len(picked))), picked
    columns = []
    for name in picked:
        column = table.column(name)
        kind = column.type
        if pa.types.is_null(kind):  # every value empty
            raise DataError(f"{path}: column {name!r} has a missing value at line {data_line}")
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            raise _non_numeric(path, name, column.to_pylist(), data_line)
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(
                f"{path}: column {name!r} has a missing value at line {data_line + row}"
            )
        columns.append(column.to_numpy().astype(np.float64))
    X = np.column_stack(columns) if columns else np.empty((0, len(picked)))
    return X, picked


def _read_text_python(path, delimiter, names, idx, skip, width, data_line):
    picked = [names[i] for i in idx]
    rows: list[list[float]] = []
    with open(path, newline="", encoding="utf-8") as fh:
        for number, row in enumerate(csv.reader(fh, delimiter=delimiter), start=1):
            if number <= skip or not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != width:
                raise DataError(
                    f"{path}: malformed CSV, line {number} has {len(row)} fields, expected {width}"
                )
            values = []
            for i in idx:
                field = row[i].strip()
                if not field:
                    raise DataError(
                        f"{path}: column {names[i]!r} has a missing value at line {number}"
                    )
                try:
                    values.append(float(field))
                except ValueError:
                    raise DataError(
                        f"{path}: column {names[i]!r} is not numeric (line {number}: {field!r}); "
                        f"{_exclude_hint()}"
                    ) from None
            rows.append(values)
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(idx)), picked


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_table(path: str | os.PathLike, columns: Sequence[str] | None = None) -> Table:
    """Read a numeric table from CSV/TSV, ``.npy`` or Parquet.

    Parameters
    ----------
    path : str or path-like
        The file; its extension picks the format (see the module docstring).
    columns : sequence of str, optional
        Columns to keep, in this order: names, or 0-based positions for files without names.
        Default: all columns, which must then all be numeric.

    Returns
    -------
    table : Table
        ``X`` of shape (n_samples, len(columns)) and the column names.

    Raises
    ------
    DataError
        Missing or unreadable file, malformed text, non-numeric or missing values, unknown
        column; the message is one line naming the file and the problem.
    """
    path = Path(path)
    wanted = list(columns) if columns is not None else None
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a data file")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: permission denied")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return _read_npy(path, wanted)
        if suffix in _PARQUET:
            return _read_parquet(path, wanted)
        return _read_text(path, wanted)
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
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: not a readable .npy array ({_first_line(exc)})") from None
        return _auto_names(shape[1] if len(shape) == 2 else 1), False
    if suffix in _PARQUET:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names), True
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    _, first, _ = _sniff(path)
    if all(_is_number(f) for f in first):
        return _auto_names(len(first)), False
    return [f or f"x{i}" for i, f in enumerate(first)], True


def read_dask(path: str | os.PathLike, columns: Sequence[str] | None = None, *, blocksize="64MiB"):
    """A lazy Dask array of a data file's numeric columns (for a distributed fit).

    Parameters
    ----------
    path : str or path-like
        CSV/TSV, ``.npy`` or Parquet, as :func:`read_table` reads them.
    columns : sequence of str, optional
        Columns to keep (names, or 0-based positions).
    blocksize : str or int
        Bytes per partition of text files.

    Returns
    -------
    X : dask.array.Array of shape (n_samples, n_features)
        Float64, with known chunk sizes.
    names : list of str
    """
    import dask.array as da
    import dask.dataframe as dd

    path = Path(path)
    names, has_header = column_names(path)
    idx = _pick(names, list(columns) if columns is not None else None, path)
    picked = [names[i] for i in idx]
    suffix = path.suffix.lower()
    if suffix == ".npy":
        X = np.load(path, mmap_mode="r", allow_pickle=False)
        if X.dtype.kind not in "biuf":
            raise DataError(f"{path}: array has non-numeric dtype {X.dtype}")
        X = X.reshape(-1, 1) if X.ndim == 1 else X
        rows = max(1, (64 << 20) // max(1, X.shape[1] * X.dtype.itemsize))
        return da.from_array(X, chunks=(rows, X.shape[1]))[:, idx].astype(np.float64), picked
    if suffix in _PARQUET:
        frame = dd.read_parquet(str(path), columns=picked)
    else:
        delimiter, _, first_number = _sniff(path)
        frame = dd.read_csv(
            str(path),
            sep=delimiter,
            header=None,
            names=names,
            skiprows=first_number if has_header else first_number - 1,
            usecols=picked,
            blocksize=blocksize,
            # dask samples the first bytes for dtypes; never more than one block
            sample=blocksize if isinstance(blocksize, int) else 256_000,
        )
    for name in picked:
        if frame[name].dtype.kind not in "biuf":
            raise DataError(f"{path}: column {name!r} is not numeric; {_exclude_hint()}")
    return frame[picked].to_dask_array(lengths=True).astype(np.float64), picked


# --------------------------------------------------------------------------- output
@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it to ``path`` only if the block succeeds.

    Parameters
    ----------
    path : str or path-like
        Destination. Its folder must exist.
    mode : {"w", "wb"}
        Text (UTF-8, ``\\n`` line ends) or binary.

    Yields
    ------
    fh : file object
        Write the whole content here. On any exception, KeyboardInterrupt included, the
        temporary file is removed and the destination is left as it was.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise DataError(f"{path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        if "b" in mode:
            fh = os.fdopen(fd, mode)
        else:
            fh = os.fdopen(fd, mode, encoding="utf-8", newline="\n")
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
