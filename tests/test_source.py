"""One data-source layer (gaussmix._source): a file parses the same loaded, streamed or on Dask."""

from __future__ import annotations

import io
import json
import math
import os
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning

from gaussmix import GaussianMixture
from gaussmix._io import DataError, column_names, read_dask, read_table
from gaussmix._source import NULL_TOKENS, parse_number, sniff_text, text_blocks
from gaussmix.backends.stream import StreamExecutor
from gaussmix.selection import select


@pytest.fixture(params=["arrow", "python"])
def engine(request, monkeypatch):
    """Every test through both text engines: Arrow's reader and the csv-module rules."""
    if request.param == "python":
        monkeypatch.setattr("gaussmix._source._arrow_available", lambda: False)
    return request.param


def _streamed(path, chunk_rows=2):
    ex = StreamExecutor(path)
    X = np.concatenate([c for _, c, _ in ex.chunks(chunk_rows)])
    return X, ex.feature_names


# name -> (file bytes, expected names or None for headerless, expected values)
TRICKY = {
    "quoted_header.csv": (b'"x,y",z\n1,2\n3,4\n', ["x,y", "z"], [[1, 2], [3, 4]]),
    "leading_blank.csv": (b"\n\n  \na,b\n1,2\n\n3,4\n", ["a", "b"], [[1, 2], [3, 4]]),
    "headerless_blank.csv": (b"\n\n1,2\n3,4\n", None, [[1, 2], [3, 4]]),
    "plain.txt": (b"a\tb\n1\t2\n3\t4\n", ["a", "b"], [[1, 2], [3, 4]]),
    "semicolon.txt": (b"a;b\n1;2\n3;4\n", ["a", "b"], [[1, 2], [3, 4]]),
    "bom.csv": (b"\xef\xbb\xbfa,b\n1,2\n3,4\n", ["a", "b"], [[1, 2], [3, 4]]),
    "bom_headerless.csv": (b"\xef\xbb\xbf1,2\n3,4\n", None, [[1, 2], [3, 4]]),
    "crlf.csv": (b"a,b\r\n1,2\r\n\r\n3,4\r\n", ["a", "b"], [[1, 2], [3, 4]]),
    "quoted_values.csv": (b'a,b\n"1.5", 2 \n"3",\t4\n', ["a", "b"], [[1.5, 2], [3, 4]]),
    "numbers.csv": (
        b"a,b\n1.e5,-.5\n+.5,1E-3\n007,2e+2\n",
        ["a", "b"],
        [[1e5, -0.5], [0.5, 1e-3], [7, 200]],
    ),
    "hex_header.csv": (b"0x1A,0x2B\n1,2\n", ["0x1A", "0x2B"], [[1, 2]]),
    "one_column.csv": (b"v\n1\n \n2\n", ["v"], [[1], [2]]),
    "no_final_newline.tsv": (b"a\tb\n1\t2\n3\t4", ["a", "b"], [[1, 2], [3, 4]]),
    "blank_header_field.csv": (b"a,,c\n1,2,3\n", ["a", "x1", "c"], [[1, 2, 3]]),
    "quote_then_text.csv": (b'a,b\n"1"2,3\n', ["a", "b"], [[12, 3]]),
    "lone_cr.csv": (b"a,b\r1,2\r\r3,4\r", ["a", "b"], [[1, 2], [3, 4]]),
    "lone_cr_headerless.csv": (b"\r1,2\r3,4", None, [[1, 2], [3, 4]]),
}


@pytest.mark.parametrize("name", sorted(TRICKY))
def test_tricky_files_parse_the_same_loaded_streamed_and_on_dask(tmp_path, name, engine):
    content, names, values = TRICKY[name]
    path = tmp_path / name
    path.write_bytes(content)
    table = read_table(path)
    np.testing.assert_array_equal(table.X, np.asarray(values, dtype=float))
    assert table.has_header == (names is not None)
    if names is not None:
        assert table.columns == names
    assert column_names(path) == (table.columns, table.has_header)
    streamed, streamed_names = _streamed(path)
    np.testing.assert_array_equal(streamed, table.X)
    assert streamed_names == names
    lazy, lazy_names = read_dask(path, blocksize=1)
    np.testing.assert_array_equal(lazy.compute(), table.X)
    assert lazy_names == table.columns


BAD = {
    # (file, message): the same words, with the line counting blank lines, however read
    "hex.csv": (b"a,b\n1,2\n\n0x1A,4\n", r"column 'a' is not numeric \(line 4: '0x1A'\)"),
    "inf.csv": (b"a,b\n1,2\n3,inf\n", r"column 'b' has an infinite value at line 3"),
    "ragged.csv": (b"\na,b\n1,2\n\n3\n", r"malformed CSV, line 5 has 1 fields, expected 2"),
    "underscore.csv": (b"a\n1_000\n", r"column 'a' is not numeric \(line 2: '1_000'\)"),
    "open_quote.csv": (b'a,b\n1,2\n\n"3,4\n', r"malformed CSV, line 4 has 1 fields, expected 2"),
    "lone_cr_bad.csv": (b"a\r1\r\rx\r", r"column 'a' is not numeric \(line 4: 'x'\)"),
    "comma_decimal.csv": (b'a;b\n1;"1,5"\n', r"column 'b' is not numeric \(line 2: '1,5'\)"),
    "latin1.csv": (b"a,b\n1,2\n3,\xe9\n", r"not UTF-8"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_files_fail_the_same_loaded_streamed_and_on_dask(tmp_path, name, engine):
    content, message = BAD[name]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_table(path)
    with pytest.raises(DataError, match=message):
        StreamExecutor(path)
    with pytest.raises(DataError, match=message):
        read_dask(path)


def test_missing_cells_the_same_loaded_streamed_and_on_dask(tmp_path, engine):
    # the stream engine takes missing values (EM on the observed entries): as the CLI's reader
    # and read_dask do when asked (allow_nan=True); their default refuses them, naming the line
    path = tmp_path / "m.csv"
    path.write_bytes(b"a,b\n\n1,2\n3,\nNA,4\n\n5,nan\n")
    expected = np.array([[1, 2], [3, np.nan], [np.nan, 4], [5, np.nan]])
    np.testing.assert_array_equal(read_table(path, allow_nan=True).X, expected)
    np.testing.assert_array_equal(_streamed(path)[0], expected)
    np.testing.assert_array_equal(read_dask(path, allow_nan=True, blocksize=1)[0], expected)
    with pytest.raises(DataError, match="column 'b' has a missing value at line 4"):
        read_table(path)
    with pytest.raises(DataError, match="column 'b' has a missing value at line 4"):
        read_dask(path, blocksize=1)


@pytest.mark.parametrize("end, blank", [("\n", ""), ("\r\n", "\r")])
def test_line_numbers_of_a_later_dask_span_count_every_line(tmp_path, engine, end, blank):
    # blank lines count, and a lone CR ends a line (as the csv module and Arrow read it)
    path = tmp_path / "d.csv"
    lines = ["a,b"] + [f"{i},{i}" if i % 7 else blank for i in range(3000)] + ["1,oops"]
    path.write_bytes((end.join(lines) + end).encode())
    line = 3002 + (429 if blank else 0)  # each "\r" + "\r\n" is two line ends
    with pytest.raises(DataError, match=rf"'b' is not numeric \(line {line}: 'oops'\)"):
        read_dask(path, blocksize=4096)
    with pytest.raises(DataError, match=rf"'b' is not numeric \(line {line}: 'oops'\)"):
        read_table(path)
    with pytest.raises(DataError, match=rf"'b' is not numeric \(line {line}: 'oops'\)"):
        StreamExecutor(path)


def test_missing_values_as_nan_when_asked(tmp_path, engine):
    path = tmp_path / "d.csv"
    path.write_text("a,b,c\n1,,3\nNA,5,nan\n7,N/A,null\n 8 ,\t,NaN\n")
    expected = np.array([[1, np.nan, 3], [np.nan, 5, np.nan], [7, np.nan, np.nan],
                         [8, np.nan, np.nan]])  # fmt: skip
    np.testing.assert_array_equal(read_table(path, allow_nan=True).X, expected)
    source = sniff_text(path)
    blocks = [b for _, b in text_blocks(source, [2, 0], 3, allow_nan=True)]
    np.testing.assert_array_equal(np.concatenate(blocks), expected[:, [2, 0]])
    # the default names the first missing cell
    with pytest.raises(DataError, match="column 'b' has a missing value at line 2"):
        read_table(path)
    # infinity stays an error
    path.write_text("a\n1\n-inf\n")
    with pytest.raises(DataError, match="'a' has an infinite value at line 3"):
        read_table(path, allow_nan=True)


def test_a_quoted_empty_line_is_a_missing_value_not_a_blank_line(tmp_path, engine):
    # '""' is a cell (Arrow reads it so); found by the hypothesis test below
    path = tmp_path / "d.csv"
    path.write_bytes(b'a\n1\n""\n  \n3\n')
    np.testing.assert_array_equal(read_table(path, allow_nan=True).X, [[1], [np.nan], [3]])
    with pytest.raises(DataError, match="column 'a' has a missing value at line 3"):
        read_table(path)


def test_a_first_line_with_missing_values_is_data_when_it_has_a_number(tmp_path, engine):
    path = tmp_path / "d.csv"
    path.write_text("1,NA\n3,4\n")
    table = read_table(path, allow_nan=True)
    assert not table.has_header
    np.testing.assert_array_equal(table.X, [[1, np.nan], [3, 4]])


VALUES = [
    "1", " 1", "1 ", "\t2\t", "+1.5", ".5", "5.", "1.e5", "+.5", "-.5e2", "1E+5", "00.5",
    "inf", "-inf", "+inf", "Infinity", "INF", "iNF", "-Infinity",
    "nan", "NaN", "-nan", "+nan", "nAn", "NA", "N/A", "null", "NULL", "",
    "1_000", "0x1A", "0X1a", "0x1p3", "1d5", "1.5f", "１", "+-1", "5e+", ".", "-", "1e5.0",
    "e5", "1e", "0b1", "none", "n/a", "na", "1e400", "-1e400", "4.9e-324", "1e-400",
]  # fmt: skip


def test_value_grammar_equals_arrows_float_parser():
    # the csv-module rules must accept exactly what Arrow accepts, with the same values
    pa = pytest.importorskip("pyarrow")
    pcsv = pytest.importorskip("pyarrow.csv")
    for value in VALUES:
        data = ("a\n" + value + "\n").encode()
        try:
            table = pcsv.read_csv(
                io.BytesIO(data),
                parse_options=pcsv.ParseOptions(ignore_empty_lines=False),
                convert_options=pcsv.ConvertOptions(
                    column_types={"a": pa.float64()}, null_values=list(NULL_TOKENS)
                ),
            )
            got = table.column(0).to_pylist()[0]
            arrow = math.nan if got is None else got
        except pa.ArrowInvalid:
            arrow = None
        ours = parse_number(value)
        if arrow is None or ours is None:
            assert arrow is ours, value
        elif math.isnan(arrow):
            assert math.isnan(ours), value
        else:
            assert ours == arrow, value


@pytest.mark.parametrize("where", ["fifo", "device"])
def test_non_regular_files_are_refused_without_reading(tmp_path, where):
    if where == "fifo":
        path = tmp_path / "f.csv"
        os.mkfifo(path)  # opening it for reading would block forever
        message = "is a FIFO, not a regular file"
    else:
        path = "/dev/zero"
        message = "is a device, not a regular file"
    with pytest.raises(DataError, match=message):
        read_table(path)
    with pytest.raises(DataError, match=message):
        column_names(path)
    with pytest.raises(DataError, match=message):
        StreamExecutor(path)
    with pytest.raises(DataError, match=message):
        GaussianMixture(2).fit(path)


def test_first_line_is_capped(tmp_path):
    path = tmp_path / "long.csv"
    with open(path, "wb") as fh:
        fh.write(b"1," * (9 << 20))  # 18 MiB and no line break
    with pytest.raises(DataError, match=r"line 1 is longer than 16 MiB"):
        read_table(path)
    with pytest.raises(DataError, match=r"line 1 is longer than 16 MiB"):
        StreamExecutor(path)


# ------------------------------------------------------------------------------ names travel
@pytest.fixture(scope="module")
def blobs():
    rng = np.random.RandomState(0)
    centres = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, 1.0], [0.0, 6.0, -2.0]])
    return centres[rng.randint(0, 3, 600)] + rng.standard_normal((600, 3))


def _quiet_fit(gm, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return gm.fit(X)


def test_fit_on_a_path_keeps_names_and_predict_reorders_by_name(tmp_path, blobs):
    frame = pd.DataFrame(blobs, columns=["a", "b", "c"])
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame[["c", "a", "b"]].to_csv(tmp_path / "reordered.csv", index=False)
    frame.assign(extra=1.0)[["extra", "b", "c", "a"]].to_csv(tmp_path / "wider.csv", index=False)
    gm = _quiet_fit(GaussianMixture(3, random_state=0), tmp_path / "d.csv")
    assert list(gm.feature_names_in_) == ["a", "b", "c"]
    labels = gm.predict(frame)
    assert len(set(labels)) == 3
    np.testing.assert_array_equal(gm.predict(tmp_path / "d.csv"), labels)
    np.testing.assert_array_equal(gm.predict(tmp_path / "reordered.csv"), labels)
    np.testing.assert_array_equal(gm.predict(tmp_path / "wider.csv"), labels)
    np.testing.assert_allclose(
        gm.score_samples(tmp_path / "reordered.csv"), gm.score_samples(frame), rtol=1e-12
    )
    frame[["a", "b"]].assign(d=0.0).to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(ValueError, match=r"lacks the column \['c'\] that the model was fitted"):
        gm.predict(tmp_path / "other.csv")
    # a headerless file has no names: none are invented
    np.savetxt(tmp_path / "plain.csv", blobs, delimiter=",")
    gm2 = _quiet_fit(GaussianMixture(3, random_state=0), tmp_path / "plain.csv")
    assert not hasattr(gm2, "feature_names_in_")
    np.save(tmp_path / "d.npy", blobs)
    assert not hasattr(_quiet_fit(gm, tmp_path / "d.npy"), "feature_names_in_")


def test_select_keeps_dataframe_names_and_icl_does_not_warn(blobs):
    frame = pd.DataFrame(blobs, columns=["a", "b", "c"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = select(frame, k_range=[2, 3], covariance_types=["full"], n_jobs=1)
        for model in result.models.values():
            assert list(model.feature_names_in_) == ["a", "b", "c"]
        best = result.best_model
        # criteria on the DataFrame equal those on its values, without a false warning
        assert best.icl(frame) == pytest.approx(result.best_row.icl, rel=1e-12)
        assert best.bic(frame) == pytest.approx(result.best_row.bic, rel=1e-12)
        gm = GaussianMixture(3, random_state=0).fit(frame)
        assert gm.icl(frame) >= gm.bic(frame)


# ------------------------------------------------------------------------------ command line
def _cli(*args):
    from click.testing import CliRunner

    from gaussmix.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_cli_reads_a_file_the_same_streamed_or_in_memory(tmp_path, blobs):
    # what once depended on the file's size (streaming above 1 GiB): BOM, leading blank lines,
    # a quoted name with a comma, a text column left out with --columns, NA cells, .txt
    rows = [f"{a:.17g},{b:.17g},label,{c:.17g}" for a, b, c in blobs]
    rows[5] = rows[5].replace(rows[5].split(",")[1], "NA", 1)
    path = tmp_path / "d.txt"
    path.write_bytes(b'\xef\xbb\xbf\n\n"a,1",b,kind,c\n' + "\n".join(rows).encode())
    models = {}
    for mode in ("--stream", "--no-stream"):
        out = tmp_path / f"{mode}.gmm"
        code, stdout, stderr = _cli("fit", path, "-k", "3", "--columns", "c,0,b", mode,
                                    "--json", "-q", "-o", out)  # fmt: skip
        assert code == 0, stderr
        models[mode] = (json.loads(stdout), gaussmix_load(out))
    (s_sum, s_model), (m_sum, m_model) = models["--stream"], models["--no-stream"]
    assert s_sum["engine"] == "stream" and m_sum["engine"] == "auto"
    assert list(s_model.feature_names_in_) == list(m_model.feature_names_in_) == ["c", "a,1", "b"]
    np.testing.assert_allclose(s_model.means_, m_model.means_, rtol=1e-9, atol=1e-9)
    assert s_sum["n_samples"] == m_sum["n_samples"] == 600
    assert s_sum["log_likelihood"] == pytest.approx(m_sum["log_likelihood"], rel=1e-9)


@pytest.mark.parametrize("where", ["fifo", "device"])
def test_cli_refuses_non_regular_files(tmp_path, where):
    path = "/dev/zero" if where == "device" else tmp_path / "f.csv"
    if where == "fifo":
        os.mkfifo(path)
    for stream in ("--stream", "--no-stream"):
        code, _, stderr = _cli("fit", path, "-k", "2", stream, "-o", tmp_path / "m.gmm")
        assert code != 0 and "not a regular file" in stderr and "Traceback" not in stderr
        assert not (tmp_path / "m.gmm").exists()


def gaussmix_load(path):
    from gaussmix.persist import load

    return load(path)


_FUZZ_ALPHABET = "0123456789" * 3 + ".e-+,,,;\t\n\n\n\r\" NAxn"


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=_FUZZ_ALPHABET, min_size=1, max_size=40))
def test_arrow_and_csv_rules_agree_on_any_text(tmp_path_factory, text):
    # whatever the bytes, both engines give the same table or the same error
    path = tmp_path_factory.mktemp("fuzz") / "f.csv"
    path.write_bytes(text.encode())
    outcomes = []
    for arrow in (True, False):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("gaussmix._source._arrow_available", lambda arrow=arrow: arrow)
            for allow_nan in (False, True):
                try:
                    X = read_table(path, allow_nan=allow_nan).X
                    outcomes.append(("table", X.shape, np.nan_to_num(X, nan=0.5).tolist()))
                except DataError as exc:
                    outcomes.append(("error", str(exc)))
    assert outcomes[:2] == outcomes[2:]


def test_read_dask_of_npy_and_parquet_follows_read_table(tmp_path):
    X = np.arange(20.0).reshape(10, 2)
    X[7, 1] = np.nan
    np.save(tmp_path / "d.npy", X)
    pd.DataFrame(X, columns=["a", "b"]).to_parquet(tmp_path / "d.parquet")
    for name, column in (("d.npy", "x1"), ("d.parquet", "b")):
        lazy, _ = read_dask(tmp_path / name, blocksize=1, allow_nan=True)
        np.testing.assert_array_equal(lazy.compute(), X)
        with pytest.raises(DataError, match=rf"column '{column}' has a missing value at row 7"):
            read_table(tmp_path / name)
        with pytest.raises(DataError, match=rf"column '{column}' has a missing value at row 7"):
            read_dask(tmp_path / name)[0].compute()


def test_arrow_hands_over_to_the_csv_rules_mid_file(tmp_path):
    # a cell only the csv rules decide (spaces: a missing value) deep in a file of several
    # Arrow blocks: Arrow's rows before it are kept, the csv rules read on from there
    rng = np.random.RandomState(0)
    X = rng.standard_normal((25_000, 3))
    lines = [",".join(f"{v:.17g}" for v in row) for row in X]
    lines[20_000] = lines[20_000].split(",", 1)[0] + ",  ," + lines[20_000].rsplit(",", 1)[1]
    path = tmp_path / "d.csv"
    path.write_text("a,b,c\n" + "\n".join(lines) + "\n")
    assert path.stat().st_size > 1 << 20  # more than one 1 MiB Arrow block
    expected = X.copy()
    expected[20_000, 1] = np.nan
    source = sniff_text(path)
    starts, blocks = zip(*text_blocks(source, [0, 1, 2], 7000, allow_nan=True), strict=True)
    assert starts == tuple(range(0, 25_000, 7000))
    np.testing.assert_array_equal(np.concatenate(blocks), expected)
    with pytest.raises(DataError, match="column 'b' has a missing value at line 20002"):
        read_table(path)


@pytest.mark.parametrize("span", [None, (4, 11)])
def test_arrow_reads_a_native_stream_not_a_python_file(tmp_path, span):
    # Arrow's read-ahead threads calling back into a Python file object abort the process
    # when the interpreter finalises under them (exit 134 after the one-line error of a
    # malformed file, a few runs in a hundred on a loaded machine): its input is native
    pa = pytest.importorskip("pyarrow")
    from gaussmix._source import _arrow_range

    path = tmp_path / "t.csv"
    path.write_bytes(b"a,b\n1,2\n3,4\n5\n6,7\n")
    start, stop = span if span is not None else (4, None)
    with _arrow_range(pa, path, start, stop) as stream:
        assert isinstance(stream, pa.NativeFile)
        assert not isinstance(stream, pa.PythonFile)
        assert stream.read() == path.read_bytes()[start:stop]
