"""One data-source layer: how every reader of gaussmix finds a file's format, names and rows.

The command line (loaded or streamed), ``fit(path)`` (the stream engine) and the Dask reader
all parse a file through this module, so a file reads the same whatever its size or consumer.

Formats, chosen by file name:

- ``.npy``: a numeric array (1-D is one column); columns are named ``x0, x1, ...``.
- ``.parquet`` / ``.parq`` / ``.pq`` (or a directory of them, for the stream engine).
- anything else is delimited text, decoded as UTF-8 (a leading byte-order mark, as Excel's
  "CSV UTF-8" writes, is skipped). Rules:

  * blank lines (empty or only spaces/tabs) are skipped everywhere, but counted in the line
    numbers of error messages;
  * the delimiter is tab for ``.tsv``/``.tab``, else the most frequent of comma, tab and
    semicolon on the first non-blank line, outside double quotes (comma if none);
  * fields follow the CSV quoting rules (``"x,y"`` is one field, ``""`` a quote);
  * the first non-blank line is a header unless every field on it is a number or a missing
    value (and one at least is a number); headerless columns are named ``x0, x1, ...``;
  * a value is a decimal number (``1``, ``-.5``, ``1.e5``, ``2E-3``), ``inf``/``infinity``, or
    a missing value: an empty cell or ``NA``, ``N/A``, ``null``, ``NULL``, ``nan``, ``NaN``
    (case-insensitive ``nan`` with a sign too); spaces and tabs around it are ignored.
    Anything else (hex ``0x1A``, ``1_000``, ``1,5``, non-ASCII digits) is not a number;
  * every line must have as many fields as the first one.

Missing values are refused (one error naming the column and line) unless the caller asks for
NaN (``allow_nan=True``); infinite values are always refused.

Arrow's CSV reader parses text when pyarrow is installed; the :mod:`csv` module defines the
rules above and takes over wherever Arrow fails or meets a value it must not decide alone, so
the two agree on every file (and errors always carry the exact line number).

Non-regular files (``/dev/zero``, FIFOs, sockets) are refused before they are opened, and the
first line of a text file may not be longer than :data:`MAX_FIRST_LINE` bytes.
"""

from __future__ import annotations

import codecs
import csv
import importlib.util
import io
import math
import os
import re
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "MAX_FIRST_LINE",
    "NULL_TOKENS",
    "DataError",
    "SelectedColumns",
    "TextSource",
    "auto_names",
    "check_file",
    "format_of",
    "parse_number",
    "pick_columns",
    "sniff_text",
    "text_blocks",
    "text_spans",
]

#: the longest first (header) line accepted, in bytes: a file without line breaks is not a table
MAX_FIRST_LINE = 1 << 24
#: cells read as missing values (besides any case of ``nan``)
NULL_TOKENS = ("", "NA", "N/A", "null", "NULL", "NaN", "nan", "NAN")

_NPY = {".npy"}
_PARQUET = {".parquet", ".parq", ".pq"}
_TAB = {".tsv", ".tab"}
_DELIMITERS = (",", "\t", ";")
_BOM = codecs.BOM_UTF8
_NULLS = frozenset(NULL_TOKENS)
# what Arrow's float parser accepts, written down (checked against it in the tests)
_NUMBER = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?)\Z", re.I | re.A
)
_PLAIN_CHARS = "0123456789.eE+-"
_NAN = re.compile(r"[+-]?nan\Z", re.I | re.A)
_QUOTED = re.compile(r'"(?:[^"]|"")*"?')
# Arrow's streaming reader keeps dozens of blocks in flight: small blocks bound its memory
_ARROW_BLOCK = 1 << 20
_SNIFF_BYTES = 1 << 16


class DataError(ValueError):
    """A data file cannot be read as a numeric table; the message is one line."""


def auto_names(n: int) -> list[str]:
    """Names of the columns of a source without names: ``x0, x1, ...``."""
    return [f"x{i}" for i in range(n)]


def format_of(path: str | os.PathLike) -> str:
    """``"npy"``, ``"parquet"`` or ``"text"``, from the file name (a directory is Parquet)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _NPY:
        return "npy"
    if suffix in _PARQUET or path.is_dir():
        return "parquet"
    return "text"


def check_file(path: str | os.PathLike, *, directory_ok: bool = False) -> Path:
    """Refuse what cannot be a data file, before opening it.

    Parameters
    ----------
    path : str or path-like
    directory_ok : bool
        Accept a directory (of Parquet files).

    Returns
    -------
    path : pathlib.Path

    Raises
    ------
    DataError
        Missing, a directory (unless allowed), not a regular file (a device such as
        ``/dev/zero``, a FIFO or a socket: reading one may never end), or unreadable.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        if directory_ok:
            return path
        raise DataError(f"{path}: is a directory, not a data file")
    if not stat.S_ISREG(mode):
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(mode)
            else "a socket"
            if stat.S_ISSOCK(mode)
            else "a device"
        )
        raise DataError(f"{path}: is {kind}, not a regular file; save the data to a file first")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: permission denied")
    return path


def pick_columns(available: Sequence[str], wanted: Sequence[str] | None, path: Path) -> list[int]:
    """Indices of the wanted columns: by name, or by 0-based position when no name matches.

    Parameters
    ----------
    available : sequence of str
        The source's column names.
    wanted : sequence of str or None
        None: every column.
    path : pathlib.Path
        For the error message.

    Returns
    -------
    indices : list of int
    """
    if wanted is None:
        return list(range(len(available)))
    index = {name: i for i, name in enumerate(available)}
    out = []
    for name in wanted:
        name = str(name)
        if name in index:
            out.append(index[name])
        elif name.isdigit() and int(name) < len(available):
            out.append(int(name))
        else:
            shown = ", ".join(available[:12]) + (", ..." if len(available) > 12 else "")
            raise DataError(f"{path}: no column {name!r} (columns: {shown})")
    return out


def parse_number(field: str) -> float | None:
    """The value of a text cell: a float, NaN for a missing value, None if not a number.

    Parameters
    ----------
    field : str
        One cell, quotes already removed.

    Returns
    -------
    value : float or None
    """
    if field and not field.strip(_PLAIN_CHARS):
        # the common case, fast: on these characters float() accepts exactly the grammar
        try:
            return float(field)
        except ValueError:
            return None
    s = field.strip(" \t")
    if s in _NULLS or _NAN.match(s):
        return math.nan
    if _NUMBER.match(s):
        return float(s)
    return None


# ------------------------------------------------------------------------------------ sniffing
@dataclass(frozen=True)
class TextSource:
    """Where a delimited text file's rows are and how to split them.

    Attributes
    ----------
    path : pathlib.Path
    delimiter : str
    names : list of str
        Every column's name (``x0, x1, ...`` without a header).
    has_header : bool
        Whether the names came from the file.
    data_offset : int
        Byte offset of the first line after the header (after leading blank lines and the
        byte-order mark when there is no header).
    data_line : int
        1-based number of the line starting at ``data_offset``.
    size : int
        File size in bytes when sniffed.
    """

    path: Path
    delimiter: str
    names: list[str]
    has_header: bool
    data_offset: int
    data_line: int
    size: int

    @property
    def width(self) -> int:
        return len(self.names)


def _is_blank(line: bytes) -> bool:
    return not line.strip(b" \t\r\n")


def _delimiter(line: str, path: Path) -> str:
    if path.suffix.lower() in _TAB:
        return "\t"
    bare = _QUOTED.sub("", line)  # a delimiter inside quotes separates nothing
    counts = {d: bare.count(d) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def sniff_text(path: str | os.PathLike) -> TextSource:
    """Delimiter, names and the first data line of a delimited text file.

    Reads the leading blank lines and the first non-blank line, at most
    :data:`MAX_FIRST_LINE` bytes of it.

    Parameters
    ----------
    path : str or path-like
        A regular file (see :func:`check_file`).

    Returns
    -------
    source : TextSource

    Raises
    ------
    DataError
        Empty, not UTF-8 text, first line too long, repeated column names.
    """
    path = check_file(path)
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(_SNIFF_BYTES)
        try:
            # a cut multi-byte character at the end is not an error (final=False)
            codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        except UnicodeDecodeError:
            raise DataError(
                f"{path}: not a text file (not UTF-8); expected CSV, TSV, .npy or Parquet"
            ) from None
        if b"\x00" in head:
            raise DataError(f"{path}: not a text file (NUL bytes); expected CSV, TSV, .npy or "
                            f"Parquet")  # fmt: skip
        offset = len(_BOM) if head.startswith(_BOM) else 0
        fh.seek(offset)
        number = 0
        while True:
            line = fh.readline(MAX_FIRST_LINE + 1)
            if not line:
                raise DataError(f"{path}: file is empty")
            number += 1
            if len(line) > MAX_FIRST_LINE:
                raise DataError(
                    f"{path}: line {number} is longer than {MAX_FIRST_LINE >> 20} MiB; not a "
                    f"delimited text file"
                )
            cr = line.find(b"\r")
            if cr >= 0 and line[cr:] != b"\r\n":
                # old Mac line ends (a lone CR), as Arrow and the csv module read them
                line = line[: cr + 1]
                fh.seek(offset + len(line))
            if not _is_blank(line):
                break
            offset += len(line)
    try:
        text = line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file (not UTF-8) at line {number}") from None
    delimiter = _delimiter(text, path)
    try:
        fields = next(csv.reader([text], delimiter=delimiter))
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV at line {number} ({exc})") from None
    values = [parse_number(f) for f in fields]
    is_data = all(v is not None for v in values) and any(
        v is not None and not math.isnan(v) for v in values
    )
    if is_data:
        return TextSource(path, delimiter, auto_names(len(fields)), False, offset, number, size)
    names = [f.strip() or f"x{i}" for i, f in enumerate(fields)]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(f"{path}: column name {name!r} appears twice in the header")
        seen.add(name)
    return TextSource(path, delimiter, names, True, offset + len(line), number + 1, size)


def text_spans(source: TextSource, nbytes: int) -> list[tuple[int, int]]:
    """Byte ranges of about ``nbytes`` each covering the data lines, split at line ends.

    Parameters
    ----------
    source : TextSource
    nbytes : int
        Target span size.

    Returns
    -------
    spans : list of (start, stop)
        Each starts at the beginning of a line; together they cover the data exactly once.
    """
    nbytes = max(int(nbytes), 1 << 12)
    spans, start = [], source.data_offset
    with open(source.path, "rb") as fh:
        while start < source.size:
            stop = start + nbytes
            if stop >= source.size:
                stop = source.size
            else:
                fh.seek(stop)
                fh.readline()  # to the end of the line the nominal boundary falls in
                stop = min(fh.tell(), source.size)
            spans.append((start, stop))
            start = stop
    return spans


# ------------------------------------------------------------------------------------ rows
class _Fallback(Exception):
    """Arrow stopped (or met a value the csv rules must word): go on with the csv module."""

    def __init__(self, rows: int) -> None:
        super().__init__(rows)
        self.rows = rows


def _arrow_available() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


def text_blocks(
    source: TextSource,
    columns: Sequence[int],
    chunk_rows: int,
    *,
    allow_nan: bool = False,
    span: tuple[int, int] | None = None,
    threads: bool = False,
) -> Iterator[tuple[int, NDArray]]:
    """The numeric rows of a text file, in chunks.

    Parameters
    ----------
    source : TextSource
        From :func:`sniff_text`.
    columns : sequence of int
        Columns to return, in this order.
    chunk_rows : int
        Rows per chunk (the last may be shorter).
    allow_nan : bool, default=False
        Return missing values as NaN; otherwise they are an error.
    span : (start, stop), optional
        Read only the lines in this byte range (from :func:`text_spans`); row numbers then
        count from the span's start.
    threads : bool, default=False
        Let Arrow parse with several threads (more memory in flight).

    Yields
    ------
    start : int
        Row number (0-based, blank lines not counted) of the chunk's first row.
    block : ndarray of shape (rows, len(columns))
        Float64 values.

    Raises
    ------
    DataError
        One line naming the file, and the column, line and value at fault.
    """
    columns = list(columns)
    start_byte, stop_byte = span if span is not None else (source.data_offset, None)
    done = 0
    if _arrow_available():
        try:
            yield from _arrow_blocks(
                source, start_byte, stop_byte, columns, chunk_rows, allow_nan, threads
            )
            return
        except _Fallback as fb:
            done = fb.rows
    yield from _python_blocks(source, start_byte, stop_byte, columns, chunk_rows, allow_nan, done)


def _open_range(path: Path, start: int, stop: int | None) -> IO[bytes]:
    fh = open(path, "rb")  # closed by the caller's with-block
    fh.seek(start)
    if stop is None:
        return fh
    with fh:
        return io.BytesIO(fh.read(stop - start))


def _arrow_range(pa, path: Path, start: int, stop: int | None):
    """Bytes ``[start, stop)`` of ``path`` as a native Arrow stream (the caller closes it)."""
    if stop is None:
        stream = pa.OSFile(str(path))
        stream.seek(start)
        return stream
    with _open_range(path, start, stop) as span:
        return pa.BufferReader(span.getvalue())  # the bytes read, not a copy


def _arrow_blocks(source, start_byte, stop_byte, columns, chunk_rows, allow_nan, threads):
    import pyarrow as pa
    import pyarrow.csv as pcsv

    if (stop_byte if stop_byte is not None else source.size) <= start_byte:
        return
    internal = [f"c{i}" for i in range(source.width)]  # the header may repeat or be odd
    wanted = sorted(set(columns))
    where = [wanted.index(c) for c in columns]
    options = dict(
        read_options=pcsv.ReadOptions(
            column_names=internal, block_size=_ARROW_BLOCK, use_threads=threads
        ),
        parse_options=pcsv.ParseOptions(
            delimiter=source.delimiter, ignore_empty_lines=True, newlines_in_values=False
        ),
        convert_options=pcsv.ConvertOptions(
            column_types={internal[c]: pa.float64() for c in wanted},
            include_columns=[internal[c] for c in wanted],
            null_values=list(NULL_TOKENS),
            quoted_strings_can_be_null=True,
        ),
    )
    yielded = 0  # rows handed out; on a fallback the csv module re-reads from there
    pending: list[NDArray] = []
    held = 0
    # Arrow reads a native stream: given a Python file object, its read-ahead threads call
    # back into Python, and one still doing so when the interpreter finalises aborts the
    # process ("terminate called without an active exception", exit 134, after the error line
    # of a malformed file: 11 runs in 300 of a minimal script on a loaded machine, none with
    # a native file). The reader is closed on every way out all the same.
    with _arrow_range(pa, source.path, start_byte, stop_byte) as raw:
        try:
            with pcsv.open_csv(raw, **options) as reader:
                while True:
                    try:
                        batch = reader.read_next_batch()
                    except StopIteration:
                        break
                    if not batch.num_rows:
                        continue
                    block = np.empty((batch.num_rows, len(wanted)))
                    for j, column in enumerate(batch.columns):
                        block[:, j] = column.to_numpy(zero_copy_only=False)
                    if len(where) != len(wanted) or where != list(range(len(wanted))):
                        block = block[:, where]
                    finite = np.isfinite(block)
                    if not finite.all() and not (allow_nan and (finite | np.isnan(block)).all()):
                        raise _Fallback(yielded)  # the csv rules word the error, with its line
                    pending.append(block)
                    held += block.shape[0]
                    while held >= chunk_rows:
                        merged = np.concatenate(pending) if len(pending) > 1 else pending[0]
                        yield yielded, merged[:chunk_rows]
                        yielded += chunk_rows
                        rest = merged[chunk_rows:]
                        pending, held = ([rest], rest.shape[0]) if rest.shape[0] else ([], 0)
        except (pa.ArrowInvalid, UnicodeDecodeError):
            raise _Fallback(yielded) from None
    if pending:
        yield yielded, np.concatenate(pending) if len(pending) > 1 else pending[0]


def _python_blocks(source, start_byte, stop_byte, columns, chunk_rows, allow_nan, skip):
    path, width, names = source.path, source.width, source.names
    base: list[int] = []

    def line_of(reader_line: int) -> int:
        # line numbers of a span need the lines before it: counted only when an error needs one
        if not base:
            base.append(_line_at(source, start_byte))
        return base[0] + reader_line - 1

    def check(values: list[list[float]], lines: list[int]) -> NDArray:
        """The rows as an array, or the error of the first value refused, in file order."""
        block = np.array(values, dtype=np.float64).reshape(len(values), len(columns))
        finite = np.isfinite(block)
        bad = ~finite & ~np.isnan(block) if allow_nan else ~finite
        if bad.any():
            r, j = (int(v[0]) for v in np.nonzero(bad))
            what = "a missing" if np.isnan(block[r, j]) else "an infinite"
            raise DataError(
                f"{path}: column {names[columns[j]]!r} has {what} value at line "
                f"{line_of(lines[r])}"
            )
        return block

    rows = 0
    held: list[list[float]] = []
    lines: list[int] = []
    with _open_range(path, start_byte, stop_byte) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        # not strict: '"1"2' is '12', as Arrow reads it
        reader = csv.reader(text, delimiter=source.delimiter)
        try:
            for fields in reader:
                if not fields or (len(fields) == 1 and fields[0] and not fields[0].strip(" \t")):
                    # a blank line; [''] is '""', a quoted empty cell (a missing value, as Arrow)
                    continue
                if len(fields) != width:
                    check(held, lines)  # an earlier bad value is the first error
                    raise DataError(
                        f"{path}: malformed CSV, line {line_of(reader.line_num)} has "
                        f"{len(fields)} fields, expected {width}"
                    )
                if rows < skip:
                    rows += 1
                    continue
                cells = [fields[c] for c in columns]
                values = None
                if all(cells) and not "".join(cells).strip(_PLAIN_CHARS):
                    try:  # plain decimals, the common case: float() in C, the row at once
                        values = list(map(float, cells))
                    except ValueError:
                        pass
                if values is None:
                    values = [parse_number(cell) for cell in cells]
                if None in values:
                    j = values.index(None)
                    before = values[:j] + [0.0] * (len(columns) - j)  # the row's earlier cells
                    check([*held, before], [*lines, reader.line_num])
                    raise DataError(
                        f"{path}: column {names[columns[j]]!r} is not numeric (line "
                        f"{line_of(reader.line_num)}: {fields[columns[j]]!r}); choose numeric "
                        f"columns with --columns"
                    )
                held.append(values)
                lines.append(reader.line_num)
                rows += 1
                if len(held) == chunk_rows:
                    yield rows - chunk_rows, check(held, lines)
                    held, lines = [], []
        except UnicodeDecodeError:
            check(held, lines)
            raise DataError(
                f"{path}: not UTF-8 text (after line {line_of(reader.line_num)})"
            ) from None
        except csv.Error as exc:
            check(held, lines)
            raise DataError(
                f"{path}: malformed CSV at line {line_of(reader.line_num)} ({exc})"
            ) from None
    if held:
        yield rows - len(held), check(held, lines)


def _line_at(source: TextSource, offset: int) -> int:
    """1-based number of the line starting at byte ``offset`` (blank lines count)."""
    if offset <= source.data_offset:
        return source.data_line
    count, left, after_cr = 0, offset - source.data_offset, False
    with open(source.path, "rb") as fh:
        fh.seek(source.data_offset)
        while left > 0:
            piece = fh.read(min(left, 1 << 22))
            if not piece:
                break
            # line ends as the csv module counts them: LF, CRLF, and a lone CR
            count += piece.count(b"\n") + piece.count(b"\r") - piece.count(b"\r\n")
            if after_cr and piece.startswith(b"\n"):
                count -= 1  # a CRLF split between two reads
            after_cr = piece.endswith(b"\r")
            left -= len(piece)
    return source.data_line + count


def read_text(
    source: TextSource,
    columns: Sequence[int],
    *,
    allow_nan: bool = False,
) -> NDArray:
    """Every data row of a text file as one array (see :func:`text_blocks`).

    Returns
    -------
    X : ndarray of shape (n_rows, len(columns))
    """
    parts = [b for _, b in text_blocks(source, columns, 1 << 16, allow_nan=allow_nan, threads=True)]
    if not parts:
        return np.empty((0, len(columns)))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def dask_text(
    source: TextSource,
    columns: Sequence[int],
    nbytes: int,
    *,
    allow_nan: bool = False,
) -> list[Callable[[], NDArray]]:
    """One loader per byte span of the file, for one Dask task each.

    Parameters
    ----------
    source : TextSource
    columns : sequence of int
    nbytes : int
        Bytes per span.
    allow_nan : bool

    Returns
    -------
    loaders : list of callables
        Each returns its span's rows as an array of shape (rows, len(columns)).
    """
    return [
        _SpanLoader(source, tuple(columns), span, allow_nan) for span in text_spans(source, nbytes)
    ]


@dataclass(frozen=True)
class _SpanLoader:
    source: TextSource
    columns: tuple[int, ...]
    span: tuple[int, int]
    allow_nan: bool

    def __call__(self) -> NDArray:
        parts = [
            b
            for _, b in text_blocks(
                self.source, self.columns, 1 << 16, allow_nan=self.allow_nan, span=self.span
            )
        ]
        if not parts:
            return np.empty((0, len(self.columns)))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]


class SelectedColumns(os.PathLike):
    """A data file with a column selection, for readers that take a path.

    ``GaussianMixture().fit(SelectedColumns("big.csv", ["a", "c"]))`` streams only those
    columns (the command line's ``--columns`` with ``--stream``).

    Parameters
    ----------
    path : str or path-like
    columns : sequence of str
        Names, or 0-based positions for files without names, in the order wanted.
    """

    def __init__(self, path: str | os.PathLike, columns: Sequence[str]) -> None:
        self.path = Path(path)
        self.columns = [str(c) for c in columns]

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"SelectedColumns({str(self.path)!r}, {self.columns!r})"
