"""Reading CSV/TSV/.npy/Parquet tables and writing CSV atomically (gaussmix._io)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from gaussmix import _io
from gaussmix._io import DataError, atomic_output, column_names, read_table, write_csv


@pytest.fixture
def X():
    return np.random.default_rng(0).normal(size=(40, 3)) * [1, 10, 100]


def _write_text(path, rows, header=None, sep=","):
    with open(path, "w") as fh:
        if header:
            fh.write(sep.join(header) + "\n")
        for row in rows:
            fh.write(sep.join(repr(float(v)) for v in row) + "\n")


@pytest.fixture(params=["arrow", "python"])
def text_reader(request, monkeypatch):
    """Run text tests through both readers: Arrow's, and the csv-module fallback."""
    if request.param == "python":
        real = _io.importlib.util.find_spec
        monkeypatch.setattr(
            _io.importlib.util,
            "find_spec",
            lambda name, *a: None if name == "pyarrow" else real(name, *a),
        )
    return request.param


def test_csv_with_header_round_trips_exactly(tmp_path, X, text_reader):
    path = tmp_path / "d.csv"
    _write_text(path, X, ["a", "b", "c"])
    table = read_table(path)
    assert table.has_header and table.columns == ["a", "b", "c"]
    np.testing.assert_array_equal(table.X, X)
    assert table.X.dtype == np.float64


def test_csv_without_header_is_detected(tmp_path, X, text_reader):
    path = tmp_path / "d.csv"
    _write_text(path, X)
    table = read_table(path)
    assert not table.has_header and table.columns == ["x0", "x1", "x2"]
    np.testing.assert_array_equal(table.X, X)


@pytest.mark.parametrize("suffix, sep", [(".tsv", "\t"), (".txt", "\t"), (".csv", ";")])
def test_delimiters(tmp_path, X, suffix, sep, text_reader):
    path = tmp_path / f"d{suffix}"
    _write_text(path, X, ["a", "b", "c"], sep=sep)
    np.testing.assert_array_equal(read_table(path).X, X)


def test_columns_by_name_and_position(tmp_path, X, text_reader):
    path = tmp_path / "d.csv"
    _write_text(path, X, ["a", "b", "c"])
    table = read_table(path, ["c", "a"])
    assert table.columns == ["c", "a"]
    np.testing.assert_array_equal(table.X, X[:, [2, 0]])
    np.testing.assert_array_equal(read_table(path, ["1"]).X, X[:, [1]])


def test_non_numeric_column_is_named_unless_excluded(tmp_path, text_reader):
    path = tmp_path / "d.csv"
    path.write_text("x,label,y\n1,a,2\n3,b,4\n")
    with pytest.raises(DataError, match=r"column 'label' is not numeric \(line 2: 'a'\)"):
        read_table(path)
    np.testing.assert_array_equal(read_table(path, ["x", "y"]).X, [[1, 2], [3, 4]])


def test_bad_value_deep_in_a_column_is_located(tmp_path, text_reader):
    path = tmp_path / "d.csv"
    path.write_text("x,y\n" + "".join(f"{i},{i}\n" for i in range(20)) + "5,oops\n")
    with pytest.raises(DataError, match=r"'y' is not numeric \(line 22: 'oops'\)"):
        read_table(path)


def test_malformed_row_is_located(tmp_path, text_reader):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n3,4\n5\n6,7\n")
    with pytest.raises(DataError, match="malformed CSV, line 4 has 1 fields, expected 2"):
        read_table(path)


def test_missing_value_is_located(tmp_path, text_reader):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n3,\n")
    with pytest.raises(DataError, match="column 'b' has a missing value at line 3"):
        read_table(path)


@pytest.mark.parametrize(
    "content, message",
    [("", "file is empty"), ("\n\n", "file is empty"), ("a,b\n", "no data rows")],
)
def test_empty_files(tmp_path, content, message, text_reader):
    path = tmp_path / "d.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_table(path)


def test_binary_file_is_refused(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError, match="not a text file"):
        read_table(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a directory"):
        read_table(tmp_path)


def test_npy_is_memory_mapped(tmp_path, X):
    path = tmp_path / "d.npy"
    np.save(path, X)
    table = read_table(path)
    assert isinstance(table.X, np.memmap)
    np.testing.assert_array_equal(table.X, X)
    np.testing.assert_array_equal(read_table(path, ["2", "0"]).X, X[:, [2, 0]])


def test_npy_one_dimensional_and_integer(tmp_path):
    path = tmp_path / "d.npy"
    np.save(path, np.arange(5))
    table = read_table(path)
    assert table.X.shape == (5, 1) and table.X.dtype == np.float64


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((2, 2, 2)), "expected a 2-D array"),
        (np.array(["a", "b"]), "non-numeric dtype"),
        (np.array([[1.0, np.nan]]), "column 'x1' has a missing value at row 0"),
        (np.array([[1.0, np.inf]]), "column 'x1' has an infinite value"),
    ],
)
def test_npy_errors(tmp_path, array, message):
    path = tmp_path / "d.npy"
    np.save(path, array)
    with pytest.raises(DataError, match=message):
        read_table(path)


def test_npy_object_array_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "d.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="not a readable .npy array"):
        read_table(path)


def test_parquet(tmp_path, X):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    table = pa.table({"a": X[:, 0], "n": np.arange(len(X)), "s": ["t"] * len(X)})
    pq.write_table(table, path)
    with pytest.raises(DataError, match=r"column 's' is not numeric \(string\)"):
        read_table(path)
    got = read_table(path, ["a", "n"])
    np.testing.assert_array_equal(got.X, np.column_stack([X[:, 0], np.arange(len(X))]))
    assert column_names(path) == (["a", "n", "s"], True)


def test_corrupt_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_table(path)


def test_column_names_without_reading_rows(tmp_path, X):
    _write_text(tmp_path / "h.csv", X, ["a", "b", "c"])
    _write_text(tmp_path / "n.csv", X)
    np.save(tmp_path / "d.npy", X)
    assert column_names(tmp_path / "h.csv") == (["a", "b", "c"], True)
    assert column_names(tmp_path / "n.csv") == (["x0", "x1", "x2"], False)
    assert column_names(tmp_path / "d.npy") == (["x0", "x1", "x2"], False)


def test_read_dask_matches_read_table(tmp_path, X):
    pytest.importorskip("dask.dataframe")
    path = tmp_path / "d.csv"
    _write_text(path, np.tile(X, (50, 1)), ["a", "b", "c"])
    Xd, names = _io.read_dask(path, ["c", "a"], blocksize=20_000)
    assert Xd.numblocks[0] > 1  # several partitions: the header is handled once
    assert names == ["c", "a"]
    np.testing.assert_array_equal(Xd.compute(), read_table(path, ["c", "a"]).X)
    np.save(tmp_path / "d.npy", X)
    Xn, _ = _io.read_dask(tmp_path / "d.npy")
    np.testing.assert_array_equal(Xn.compute(), X)


def test_write_csv_round_trips(tmp_path, X):
    path = tmp_path / "out.csv"
    labels = np.arange(len(X)) % 3
    write_csv(path, ["a", "b", "c", "component"], [X, labels])
    lines = path.read_text().splitlines()
    assert lines[0] == "a,b,c,component"
    assert lines[1].endswith(",0") and lines[2].endswith(",1")
    back = read_table(path)
    np.testing.assert_allclose(back.X[:, :3], X, rtol=1e-14)
    np.testing.assert_array_equal(back.X[:, 3], labels)
    assert os.listdir(tmp_path) == ["out.csv"]


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("old\n")
    with pytest.raises(KeyboardInterrupt), atomic_output(path) as fh:
        fh.write("partial")
        raise KeyboardInterrupt
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["out.csv"]


def test_atomic_output_needs_an_existing_folder(tmp_path):
    # the shared atomic writer (gaussmix._atomic) names the user's path and the missing folder
    with (
        pytest.raises(FileNotFoundError, match=r"a/b: folder .*/a does not exist"),
        atomic_output(tmp_path / "a" / "b"),
    ):
        pass


@pytest.mark.parametrize("spec, message", [("a,,b", "empty name"), ("a,a", "twice")])
def test_parse_columns_errors(spec, message):
    with pytest.raises(DataError, match=message):
        _io.parse_columns(spec)
