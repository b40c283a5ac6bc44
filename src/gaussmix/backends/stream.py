"""Out-of-core executor: every EM pass reads the data file chunk by chunk.

The E-step yields additive statistics, so one EM iteration over a file is a loop over its
chunks and a sum; only one chunk (plus the ``K·d²`` statistics) is in memory at a time. Each
chunk goes through the fast CPU kernel (:mod:`gaussmix.backends.cpu`) when numba is
installed, else the reference kernel. Sources:

* ``.npy`` — a 2-D numeric array; chunks are read with plain file reads at offsets computed
  from the ``.npy`` header (C or Fortran order). A memory map would work too, but its touched
  pages count as resident memory, so a pass over a 2 GiB map grows the process by 2 GiB.
* Parquet — one file or a directory of ``*.parquet`` files (read in sorted path order),
  record batches from :meth:`pyarrow.parquet.ParquetFile.iter_batches`; numeric columns only.
* delimited text (any other name) — parsed by the data-source layer :mod:`gaussmix._source`,
  the rules of the command line's reader whatever the file's size (header, delimiter, quoting,
  blank lines, byte-order mark, values, error messages with line numbers). Rows are counted
  (and checked) in one extra pass when the executor is built.

A :class:`gaussmix._source.SelectedColumns` (a path with a column selection) reads only those
columns. The features' names (a header, Parquet's columns) become ``feature_names_in_``.

Each pass checks that every file still has the size and modification time it had when the
executor was built, and that the values read equal those of the first pass (a checksum:
the wrapping sum of their bit patterns, as a rewrite within one clock tick keeps the mtime),
and stops with
:class:`SourceChangedError` (or :class:`SourceReadError` for a file that can no longer be
read, ``ValueError`` for infinity) naming the file and the rows; EM never returns
parameters computed from a file that changed under it.

Initialisation sees a uniform random sample of at most :func:`default_init_rows` rows drawn
in one pass (bottom-k keys, a reservoir sample); a file with no more rows than that is used
whole, in file order, so ``fit(path)`` and ``fit(np.load(path))`` then start identically.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gaussmix._params import MixtureParams
from gaussmix._source import (
    DataError,
    SelectedColumns,
    auto_names,
    check_file,
    format_of,
    pick_columns,
    sniff_text,
    text_blocks,
)
from gaussmix._stats import SuffStats, e_step_chunk
from gaussmix._validation import check_sample_weight, check_scale
from gaussmix.backends.numpy import default_chunk_size

__all__ = [
    "SourceChangedError",
    "SourceReadError",
    "StreamExecutor",
    "chunk_e_step",
    "default_init_rows",
    "predict_op",
]

# at most this many rows are pulled into memory for initialisation (k-means on the sample)
DEFAULT_INIT_ROWS = 100_000
# ... and at most this many numbers (64 MiB of float64), whatever the width
_INIT_ELEMENTS = 1 << 23
_MASK64 = (1 << 64) - 1
# elements per chunk read for the fast kernel
_FAST_CHUNK_ELEMENTS = 1 << 21
# rows per chunk of the passes that run before K is known (row count, init sample, predict)
_PLAIN_CHUNK_ROWS = 65536

_PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")
_PARQUET_BATCH_ROWS = 65536


class SourceChangedError(RuntimeError):
    """A file changed (size or modification time) or disappeared between two EM passes."""


class SourceReadError(OSError):
    """A file could not be read (I/O error, corrupt or truncated data, non-numeric value)."""


def default_init_rows(n_features: int) -> int:
    """Rows sampled for initialisation: ``min(100_000, 2**23 // n_features)``, at least 1000."""
    return int(max(1000, min(DEFAULT_INIT_ROWS, _INIT_ELEMENTS // max(n_features, 1))))


def chunk_e_step(
    X: NDArray,
    sample_weight: NDArray | None,
    params: MixtureParams,
    shift: NDArray,
    *,
    n_threads: int | None = None,
) -> SuffStats:
    """Statistics of one in-memory chunk: the fast CPU engine's kernel when it is installed
    (numba), else the reference :func:`~gaussmix._stats.e_step_chunk` (same statistics).

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features)
        Checked, finite rows.
    sample_weight : ndarray of shape (n_rows,) or None
    params : MixtureParams
    shift : ndarray of shape (n_components, n_features)
    n_threads : int, optional
        Threads of the fast kernel (default: all usable CPUs).

    Returns
    -------
    stats : SuffStats
    """
    # the in-memory limit on |x| (squared distances must not overflow) holds for every
    # chunk, so a file is refused as the same rows in memory would be
    check_scale(X)
    try:
        from gaussmix.backends.cpu import CpuExecutor
    except ImportError:  # numba missing: the reference kernel
        return e_step_chunk(X, sample_weight, params, shift)
    return CpuExecutor(X, sample_weight, n_threads=n_threads).e_step(params, shift=shift)


def _has_fast_kernel() -> bool:
    try:
        import gaussmix.backends.cpu  # noqa: F401
    except ImportError:
        return False
    return True


def _bit_sum(values: NDArray) -> int:
    """Wrapping sum of the bit patterns of ``values`` (a cheap change detector)."""
    bits = values.reshape(-1).view(np.uint64 if values.itemsize == 8 else np.uint32)
    return int(bits.sum(dtype=np.uint64))


def _rows(start: int, stop: int) -> str:
    return f"rows {start}-{stop - 1}" if stop > start + 1 else f"row {start}"


# ---------------------------------------------------------------------------------- readers
@dataclass(frozen=True)
class _FileState:
    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> _FileState:
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


class _Reader:
    """A numeric table in one or more files, read in row chunks.

    Subclasses set ``files``, ``file_rows``, ``columns`` (all column names, in order),
    ``has_names`` (whether the names come from the source) and ``source_dtype``, and
    implement ``_iter_file``.
    """

    files: list[Path]
    file_rows: list[int]
    columns: list[str]
    has_names: bool
    source_dtype: np.dtype

    def _iter_file(
        self, index: int, columns: list[int], chunk_rows: int
    ) -> Iterator[tuple[int, NDArray]]:
        """``(file-local start row, (rows, len(columns)) array)`` pairs of file ``index``."""
        raise NotImplementedError

    def prepare(self, columns: list[int]) -> None:
        """Check the columns that will be read (and count rows where the format must)."""

    @property
    def n_rows(self) -> int:
        return int(sum(self.file_rows))


class _NpyReader(_Reader):
    def __init__(self, path: Path) -> None:
        try:
            # the memory map only parses the header here; no data page is touched
            header = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise SourceReadError(f"{path} is not a readable .npy file: {exc}") from None
        shape, dtype = header.shape, header.dtype
        fortran = header.flags.f_contiguous and not header.flags.c_contiguous
        self.offset = int(header.offset)
        del header
        if dtype.kind not in "biuf" or dtype.hasobject:
            raise TypeError(f"{path} holds {dtype} data; a numeric (int or float) array is needed")
        if len(shape) != 2:
            raise ValueError(
                f"{path} holds an array of shape {shape}; expected 2-D (n_samples, n_features)"
            )
        self.files = [path]
        self.file_rows = [int(shape[0])]
        self.n_cols = int(shape[1])
        self.columns = auto_names(self.n_cols)
        self.has_names = False
        self.fortran = bool(fortran)
        self.source_dtype = dtype

    def _iter_file(self, index, columns, chunk_rows):
        path, n, d = self.files[index], self.file_rows[index], self.n_cols
        item = self.source_dtype.itemsize
        with open(path, "rb", buffering=0) as f:
            for start in range(0, n, chunk_rows):
                rows = min(chunk_rows, n - start)
                if not self.fortran:
                    buf = _pread(f, self.offset + start * d * item, rows * d * item, path)
                    block = np.frombuffer(buf, dtype=self.source_dtype).reshape(rows, d)
                    yield start, block[:, columns] if len(columns) < d else block
                else:
                    # column j of a Fortran-ordered array is contiguous: one read per column
                    block = np.empty((rows, len(columns)), dtype=self.source_dtype)
                    for out_j, j in enumerate(columns):
                        pos = self.offset + (j * n + start) * item
                        block[:, out_j] = np.frombuffer(
                            _pread(f, pos, rows * item, path), dtype=self.source_dtype
                        )
                    yield start, block


def _pread(f, position: int, nbytes: int, path: Path) -> bytearray:
    buf = bytearray(nbytes)
    f.seek(position)
    got = f.readinto(buf)
    if got != nbytes:
        raise SourceReadError(f"{path} ended early: wanted {nbytes} bytes at offset {position}")
    return buf


def _check_arrow_schema(schema, path: Path) -> None:
    import pyarrow as pa

    bad = [
        f"{field.name} ({field.type})"
        for field in schema
        if not (pa.types.is_integer(field.type) or pa.types.is_floating(field.type))
    ]
    if bad:
        raise TypeError(f"{path} has non-numeric columns: {', '.join(bad)}")


def _arrow_numpy_dtype(schema) -> np.dtype:
    import pyarrow as pa

    floats32 = all(pa.types.is_float32(field.type) for field in schema)
    return np.dtype(np.float32 if floats32 else np.float64)


def _batch_to_array(batch, n_cols: int, path: Path, start: int) -> NDArray:
    """Columns of a record batch as one (rows, n_cols) array; nulls become NaN (missing)."""
    import pyarrow as pa

    rows = batch.num_rows
    single = all(pa.types.is_float32(column.type) for column in batch.columns)
    out = np.empty((rows, n_cols), dtype=np.float32 if single else np.float64)
    for j, column in enumerate(batch.columns):
        out[:, j] = column.to_numpy(zero_copy_only=False)
    return out


def _list_parquet(path: Path) -> list[Path]:
    return sorted(
        p
        for p in path.rglob("*")
        if p.suffix.lower() in _PARQUET_SUFFIXES
        and p.is_file()
        and not any(part.startswith(("_", ".")) for part in p.relative_to(path).parts)
    )


class _ParquetReader(_Reader):
    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq

        if path.is_dir():
            files = _list_parquet(path)
            if not files:
                raise ValueError(f"directory {path} holds no Parquet files (*.parquet)")
        else:
            files = [path]
        self.directory = path if path.is_dir() else None
        self.files, self.file_rows = [], []
        schema = None
        for p in files:
            try:
                meta = pq.ParquetFile(p)
            except Exception as exc:  # pyarrow raises several types for a corrupt footer
                raise SourceReadError(f"cannot read Parquet file {p}: {exc}") from None
            s = meta.schema_arrow
            if schema is None:
                schema = s
            elif s.names != schema.names:
                raise ValueError(
                    f"Parquet files of {path} disagree on columns: {files[0]} has "
                    f"{schema.names}, {p} has {s.names}"
                )
            self.files.append(p)
            self.file_rows.append(int(meta.metadata.num_rows))
        self.columns = list(schema.names)
        self.has_names = True
        self.schema = schema
        self.source_dtype = _arrow_numpy_dtype(schema)

    def prepare(self, columns: list[int]) -> None:
        # only the columns read must be numeric (as the CLI's reader checks)
        import pyarrow as pa

        read = pa.schema([self.schema.field(j) for j in columns])
        _check_arrow_schema(read, self.directory or self.files[0])
        self.source_dtype = _arrow_numpy_dtype(read)

    def _iter_file(self, index, columns, chunk_rows):
        import pyarrow.parquet as pq

        path = self.files[index]
        names = [self.columns[j] for j in columns]
        start = 0
        # pre_buffer (the default) would buffer every row group of the file: memory ~ file;
        # buffered page reads and batches of at most 65536 rows cut the peak further (the
        # decoded row group is held by Arrow anyway, larger batches only add copies)
        with pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20) as pf:
            batches = pf.iter_batches(
                batch_size=min(chunk_rows, _PARQUET_BATCH_ROWS), columns=names, use_threads=False
            )
            for batch in batches:
                yield start, _batch_to_array(batch, len(names), path, start)
                start += batch.num_rows


class _TextReader(_Reader):
    """Delimited text, parsed by the data-source layer (:mod:`gaussmix._source`): the rules
    of the command line's reader, whatever the file's size."""

    def __init__(self, path: Path) -> None:
        self.source = sniff_text(path)
        self.files = [path]
        self.columns = list(self.source.names)
        self.has_names = self.source.has_header
        self.source_dtype = np.dtype(np.float64)

    def prepare(self, columns: list[int]) -> None:
        # counting pass: n_samples must be known before EM, and it checks every value once
        n = 0
        for start, block in self._iter_file(0, columns, _PLAIN_CHUNK_ROWS):
            n = start + block.shape[0]
        if n == 0:
            raise DataError(f"{self.files[0]}: no data rows")
        self.file_rows = [n]

    def _iter_file(self, index, columns, chunk_rows):
        # an Arrow block of 1 MiB at a time, one thread: memory stays about one chunk; missing
        # cells are NaN, as the estimator takes them (EM on the observed entries)
        yield from text_blocks(self.source, columns, chunk_rows, allow_nan=True)


def _open_reader(path: Path) -> _Reader:
    if not os.path.lexists(path):
        raise FileNotFoundError(f"no such file or directory: {path}")
    check_file(path, directory_ok=True)  # a device or FIFO would be read without end
    kind = format_of(path)
    if kind == "parquet":
        return _ParquetReader(path)
    if kind == "npy":
        return _NpyReader(path)
    return _TextReader(path)


def _is_read_failure(exc: Exception) -> bool:
    """An I/O or Arrow decoding error (pyarrow's ArrowInvalid is also a ValueError)."""
    if isinstance(exc, (SourceChangedError, SourceReadError)):
        return False
    pa = sys.modules.get("pyarrow")
    if pa is not None and isinstance(exc, pa.ArrowException):
        return True
    return isinstance(exc, OSError)


def _check_finite(block: NDArray, path: Path, start: int) -> None:
    # NaN marks a missing value (EM on the observed entries, as for arrays); infinity is refused
    if block.dtype.kind == "f" and np.isinf(block).any():
        bad = np.flatnonzero(np.isinf(block).any(axis=1))
        raise ValueError(
            f"{path}: infinity in {_rows(start, start + block.shape[0])} "
            f"(first at row {start + int(bad[0])}); clean the file or drop those rows"
        )


# ---------------------------------------------------------------------------------- executor
class StreamExecutor:
    """E-step over a file (or a directory of files) read chunk by chunk on every pass.

    Memory use is one chunk of rows, its (chunk, K) temporaries and the statistics, whatever
    the size of the file.

    Parameters
    ----------
    source : str or path-like
        A ``.npy`` file holding a 2-D numeric array, a Parquet file or a directory of Parquet
        files, or delimited text of any other name, parsed by the rules of
        :mod:`gaussmix._source` (those of the command line's reader). A
        :class:`gaussmix._source.SelectedColumns` reads only its columns.
    sample_weight : array-like of shape (n_samples,), str, or None
        Row weights: an array (in file row order), or the name of a column of the source
        holding them (that column is then not a feature). None: all ones.
    chunk_size : int, optional
        Rows per chunk (default: a (rows, max(K, d)) temporary of about 8 MiB). Parquet batches
        never span row groups, so they may be shorter.
    device : None or "cpu"
        Streaming runs on the CPU.
    dtype : {None, "float32", "float64"}
        Working precision; None follows the data (float32 columns stay float32, anything else
        is read as float64).
    init_rows : int, optional
        Rows sampled for initialisation (default :func:`default_init_rows`).

    Attributes
    ----------
    n_samples : int
    n_features : int
    dtype : numpy.dtype
    feature_names : list of str or None
        Column names of the features; None when the source has no names (``.npy``, text
        without a header).
    """

    def __init__(
        self,
        source: str | os.PathLike,
        sample_weight: Any = None,
        *,
        chunk_size: int | None = None,
        device: str | None = None,
        dtype: str | np.dtype | None = None,
        init_rows: int | None = None,
    ) -> None:
        if device not in (None, "cpu"):
            raise ValueError(f"the stream engine runs on the CPU only, got device={device!r}")
        if not isinstance(source, (str, os.PathLike)):
            raise TypeError(
                f"the stream engine reads a file path, got {type(source).__name__}; use "
                f"engine='auto' for in-memory arrays"
            )
        self.path = Path(source)
        wanted = source.columns if isinstance(source, SelectedColumns) else None
        self.reader = _open_reader(self.path)
        self.chunk_size = chunk_size
        self.init_rows = init_rows
        self._weight_column: int | None = None
        self._weights: NDArray | None = None
        features = pick_columns(self.reader.columns, wanted, self.path)
        if isinstance(sample_weight, str):
            if not self.reader.has_names:
                raise ValueError(
                    f"sample_weight={sample_weight!r} names a column, but {self.path} has no "
                    f"column names; pass the weights as an array"
                )
            if sample_weight not in self.reader.columns:
                raise ValueError(
                    f"sample_weight column {sample_weight!r} is not in {self.path}; columns: "
                    f"{self.reader.columns}"
                )
            self._weight_column = self.reader.columns.index(sample_weight)
            if self._weight_column in features:
                features.remove(self._weight_column)
        self.reader.prepare(
            features + ([self._weight_column] if self._weight_column is not None else [])
        )
        self._features = features
        # names travel to feature_names_in_ only when the source has them (not x0, x1, ...)
        self.feature_names = (
            [self.reader.columns[j] for j in features] if self.reader.has_names else None
        )
        self.n_samples = self.reader.n_rows
        self.n_features = len(features)
        if self.n_features == 0:
            raise ValueError(f"{self.path} has no feature columns")
        if self.n_samples == 0:
            raise ValueError(f"{self.path} has no rows")
        if sample_weight is not None and self._weight_column is None:
            self._weights = _check_weight_array(sample_weight, self.n_samples)
        if dtype is None:
            self.dtype = np.dtype(
                np.float32 if self.reader.source_dtype == np.float32 else np.float64
            )
        else:
            self.dtype = np.dtype(dtype)
            if self.dtype not in (np.float32, np.float64):
                raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
        self._states = self._snapshot()
        self._digests: dict[Path, tuple[int, int]] = {}

    # -------------------------------------------------------------- integrity
    def _snapshot(self) -> dict[Path, _FileState]:
        return {p: _FileState.of(p) for p in self.reader.files}

    def _check_unchanged(self, path: Path, where: str) -> None:
        try:
            state = _FileState.of(path)
        except OSError as exc:
            raise SourceReadError(f"{path} can no longer be read ({where}): {exc}") from None
        if state != self._states[path]:
            raise SourceChangedError(
                f"{path} changed since the fit started ({where}): size/mtime "
                f"{self._states[path].size} B/{self._states[path].mtime_ns} ns became "
                f"{state.size} B/{state.mtime_ns} ns; statistics mixing two versions of the "
                f"data were discarded"
            )

    # -------------------------------------------------------------- chunks
    def chunks(
        self, chunk_rows: int, *, check_finite: bool = True
    ) -> Iterator[tuple[int, NDArray, NDArray | None]]:
        """One checked pass: ``(global start row, X_chunk, weight_chunk)`` triples in row order.

        ``check_finite=False`` leaves the NaN check to the consumer (the fast kernel makes
        its own; :meth:`_name_nonfinite` then words the error).

        Raises
        ------
        SourceChangedError, SourceReadError, ValueError
            As described in the module docstring; messages name the file and rows.
        """
        reader = self.reader
        columns = self._features + (
            [self._weight_column] if self._weight_column is not None else []
        )
        offset = 0
        for index, path in enumerate(reader.files):
            self._check_unchanged(path, "before reading it")
            local = 0
            # wrapping sum of the values' bit patterns, independent of the chunking: catches
            # a rewrite that keeps size and mtime (same clock tick, or reset mtime) at 5 GB/s
            digest = weight_digest = 0
            try:
                for start, block in reader._iter_file(index, columns, chunk_rows):
                    local = start + block.shape[0]
                    X = block[:, : self.n_features]
                    if check_finite:
                        _check_finite(X, path, start)
                    X = np.ascontiguousarray(X, dtype=self.dtype)
                    digest = (digest + _bit_sum(X)) & _MASK64
                    if self._weight_column is not None:
                        w = np.ascontiguousarray(block[:, -1], dtype=np.float64)
                        _check_weight_chunk(w, path, start)
                        weight_digest = (weight_digest + _bit_sum(w)) & _MASK64
                    elif self._weights is not None:
                        w = np.asarray(
                            self._weights[offset + start : offset + local], dtype=np.float64
                        )
                    else:
                        w = None
                    yield offset + start, X, w
            except Exception as exc:
                if _is_read_failure(exc):
                    raise SourceReadError(
                        f"{path}: read failed after {_rows(0, local)}: {exc}"
                    ) from None
                raise
            if local != reader.file_rows[index]:
                raise SourceChangedError(
                    f"{path}: read {local} rows, expected {reader.file_rows[index]}"
                )
            self._check_unchanged(path, f"after reading {_rows(0, local)}")
            digests = (digest, weight_digest)
            if self._digests.setdefault(path, digests) != digests:
                raise SourceChangedError(
                    f"{path} changed since the fit started: the values of {_rows(0, local)} "
                    f"differ from those of the first pass (same size and mtime); statistics "
                    f"mixing two versions of the data were discarded"
                )
            offset += local
        if getattr(reader, "directory", None) is not None:
            if _list_parquet(reader.directory) != reader.files:
                raise SourceChangedError(
                    f"the Parquet files in {reader.directory} changed during the fit"
                )

    def _name_nonfinite(self, start: int, X: NDArray) -> None:
        """Raise the file-and-rows error if chunk ``X`` (global ``start``) is not finite."""
        offset = 0
        for path, rows in zip(self.reader.files, self.reader.file_rows, strict=True):
            if start < offset + rows:
                _check_finite(X, path, start - offset)
                return
            offset += rows

    def _chunk_rows(self, n_components: int) -> int:
        if self.chunk_size:
            return self.chunk_size
        if _has_fast_kernel():
            # no (rows, K) temporaries there: 16 MiB of float64 rows per read
            return max(1024, _FAST_CHUNK_ELEMENTS // self.n_features)
        return default_chunk_size(n_components, self.n_features)

    # -------------------------------------------------------------- Executor protocol
    def e_step(self, params: MixtureParams, *, shift: NDArray | None = None) -> SuffStats:
        """Summed statistics of one pass over the file under ``params``."""
        shift = params.means if shift is None else shift
        total = SuffStats.zeros(shift, params.model.moment)
        fast = _has_fast_kernel()  # it checks for infinity itself: one scan of each chunk, not two
        for start, X, w in self.chunks(
            self._chunk_rows(params.n_components), check_finite=not fast
        ):
            try:
                stats = chunk_e_step(X, w, params, shift)
            except ValueError:
                self._name_nonfinite(start, X)
                raise
            total = total + stats
        if total.weight_sum <= 0:
            raise ValueError(f"the sample weights of {self.path} are all zero")
        return total

    def init_data(
        self, max_rows: int | None, rng: np.random.RandomState
    ) -> tuple[NDArray, NDArray | None]:
        """A uniform sample of at most ``max_rows`` rows, in file order, with their weights.

        When the source has no more rows than that, all rows are returned and ``rng`` is not
        used, so initialisation equals that of the in-memory data. Otherwise each row of
        positive weight gets a uniform random key and the rows with the smallest keys are
        kept (a reservoir sample, one pass, memory ``O(max_rows · d)``).

        Parameters
        ----------
        max_rows : int or None
            Sample size (None: ``init_rows`` or :func:`default_init_rows`).
        rng : numpy.random.RandomState

        Returns
        -------
        X : ndarray of shape (n_rows, n_features)
        weights : ndarray of shape (n_rows,) or None
        """
        if max_rows is None:
            max_rows = self.init_rows or default_init_rows(self.n_features)
        whole = self.n_samples <= max_rows
        X_keep = np.empty((0, self.n_features), dtype=self.dtype)
        w_keep = np.empty(0)
        idx_keep = np.empty(0, dtype=np.int64)
        key_keep = np.empty(0)
        parts: list[tuple[NDArray, NDArray | None]] = []
        weighted = self._weights is not None or self._weight_column is not None
        for start, X, w in self.chunks(_PLAIN_CHUNK_ROWS):
            if whole:
                parts.append((X.copy(), w))
                continue
            keys = rng.random_sample(X.shape[0])
            candidate = np.ones(X.shape[0], dtype=bool) if w is None else w > 0
            if key_keep.size == max_rows:
                # only keys below the current k-th smallest can enter the reservoir
                candidate &= keys < key_keep.max()
            rows = np.flatnonzero(candidate)
            X_keep = np.concatenate([X_keep, X[rows]])
            w_keep = np.concatenate([w_keep, np.ones(rows.size) if w is None else w[rows]])
            idx_keep = np.concatenate([idx_keep, start + rows])
            key_keep = np.concatenate([key_keep, keys[rows]])
            if key_keep.size > max_rows:
                keep = np.argpartition(key_keep, max_rows - 1)[:max_rows]
                X_keep, w_keep = X_keep[keep], w_keep[keep]
                idx_keep, key_keep = idx_keep[keep], key_keep[keep]
        if whole:
            X_all = np.concatenate([p[0] for p in parts])
            w_all = np.concatenate([p[1] for p in parts]) if weighted else None
            return self._observed(X_all, w_all, exact=True)
        order = np.argsort(idx_keep)
        return self._observed(X_keep[order], w_keep[order] if weighted else None, exact=False)

    def _observed(
        self, X: NDArray, w: NDArray | None, *, exact: bool
    ) -> tuple[NDArray, NDArray | None]:
        """Rows with an observed value, as the in-memory fit starts from (missing values)."""
        from gaussmix._missing import drop_unobserved

        try:
            X, w, n_empty = drop_unobserved(X, w, self.feature_names)
        except ValueError as exc:
            where = "" if exact else " (in the sample drawn for initialisation)"
            raise ValueError(f"{self.path}: {exc}{where}") from None
        if n_empty and exact:
            warnings.warn(
                f"{n_empty} rows of {self.path} have no observed value (all NaN): they are "
                "left out of the fit",
                UserWarning,
                stacklevel=2,
            )
        return X, w


def _check_weight_array(sample_weight: Any, n_samples: int) -> NDArray:
    if np.asarray(sample_weight).dtype.kind not in "biuf":
        raise TypeError(
            f"sample_weight must be numeric or a column name, got dtype "
            f"{np.asarray(sample_weight).dtype}"
        )
    return check_sample_weight(sample_weight, n_samples, what="the source")


def _check_weight_chunk(w: NDArray, path: Path, start: int) -> None:
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{path}: sample weights must be finite and non-negative; row {start + i} has {w[i]}"
        )


def predict_op(estimator: Any, X: str | os.PathLike, op: str) -> NDArray:
    """Row-wise ``op`` of a fitted estimator over a file, computed chunk by chunk.

    Parameters
    ----------
    estimator : GaussianMixture
        Fitted.
    X : str or path-like
        A source :class:`StreamExecutor` reads. When the estimator has ``feature_names_in_``
        and the file has column names, the fitted columns are read by name, in the fitted
        order, whatever their order in the file (other columns are ignored); a file without
        names is read by position.
    op : {"log_joint", "score_samples", "predict_proba", "predict"}

    Returns
    -------
    out : ndarray
        ``(n_samples,)`` or ``(n_samples, n_components)``, as the in-memory method returns.
    """
    names = getattr(estimator, "feature_names_in_", None)
    executor = StreamExecutor(X, dtype=estimator.means_.dtype)
    by_name = names is not None and executor.reader.has_names and not isinstance(X, SelectedColumns)
    if by_name and list(names) != executor.feature_names:
        missing = [n for n in names if n not in executor.reader.columns]
        if missing:
            raise ValueError(
                f"{X} lacks the column{'s' if len(missing) > 1 else ''} {missing} that the "
                f"model was fitted on; its columns: {executor.reader.columns}"
            )
        executor._features = [executor.reader.columns.index(n) for n in names]
        executor.feature_names = list(names)
        executor.n_features = len(names)
    if executor.n_features != estimator.n_features_in_:
        raise ValueError(
            f"X has {executor.n_features} features, but GaussianMixture is expecting "
            f"{estimator.n_features_in_} features as input (a weight column in the file is "
            f"read as a feature here: write the features alone, or pass an array)"
        )
    out = None
    for start, Xc, _ in executor.chunks(_PLAIN_CHUNK_ROWS):
        # each chunk as an in-memory array: the compiled row kernels (the fit's engine), with
        # the estimator's fallbacks (missing values, rows far from the model) to the numpy maths
        part = estimator._in_memory_op(Xc, op)
        if out is None:
            out = np.empty((executor.n_samples, *part.shape[1:]), dtype=part.dtype)
        out[start : start + part.shape[0]] = part
    assert out is not None
    return out
