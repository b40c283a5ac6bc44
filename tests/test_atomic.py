"""The one atomic-write helper: permissions, links, read-only files, interruptions."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from child_signals import default_signals
from gaussmix._atomic import atomic_write, new_file_mode
from gaussmix._io import atomic_output, write_csv

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions and signals")


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda value: os.umask(value)
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_new_file_gets_the_umask_mode(tmp_path, umask, mask):
    umask(mask)
    assert new_file_mode() == 0o666 & ~mask
    with open(tmp_path / "plain", "w") as fh:  # the oracle: what open() gives
        fh.write("x")
    with atomic_output(tmp_path / "a.txt") as fh:
        fh.write("x")
    write_csv(tmp_path / "b.csv", ["a"], [np.arange(3.0)])
    assert _mode(tmp_path / "a.txt") == _mode(tmp_path / "plain") == 0o666 & ~mask
    assert _mode(tmp_path / "b.csv") == 0o666 & ~mask


def test_model_file_gets_the_umask_mode(tmp_path, umask):
    from gaussmix import GaussianMixture

    umask(0o022)
    X = np.random.RandomState(0).randn(40, 2)
    GaussianMixture(1).fit(X).save(tmp_path / "m.gmm")
    assert _mode(tmp_path / "m.gmm") == 0o644
    assert _temporaries(tmp_path) == []


def test_replaced_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "keep.txt"
    target.write_text("old")
    os.chmod(target, 0o640)
    with atomic_output(target) as fh:
        fh.write("new")
    assert target.read_text() == "new"
    assert _mode(target) == 0o640


def test_symbolic_link_is_written_through(tmp_path):
    real = tmp_path / "data" / "real.csv"
    real.parent.mkdir()
    real.write_text("old")
    os.chmod(real, 0o604)
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    with atomic_output(link) as fh:
        fh.write("new")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new" and _mode(real) == 0o604
    assert _temporaries(tmp_path) == [] and _temporaries(real.parent) == []


def test_read_only_file_is_not_replaced(tmp_path):
    target = tmp_path / "ro.txt"
    target.write_text("precious")
    os.chmod(target, 0o444)
    with pytest.raises(PermissionError, match=r"ro\.txt: the file is read-only"):
        with atomic_output(target) as fh:
            fh.write("overwritten")
    assert target.read_text() == "precious" and _mode(target) == 0o444
    assert _temporaries(tmp_path) == []


def test_fifo_is_written_in_place_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    with atomic_output(fifo) as fh:
        fh.write("through the pipe\n")
    reader.join(10)
    assert received == ["through the pipe\n"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_missing_folder_and_directory_name_the_users_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^no/such/x\.csv: folder no/such does not exist$"):
        with atomic_write("no/such/x.csv"):
            pass
    with pytest.raises(IsADirectoryError, match="is a directory"):
        with atomic_write(tmp_path):
            pass


def test_exception_leaves_the_old_file(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as fh:
            fh.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert _temporaries(tmp_path) == []


_WRITER = textwrap.dedent(
    """
    import sys, time
    from gaussmix._atomic import atomic_write
    with atomic_write(sys.argv[1]) as fh:
        fh.write("partial")
        print("writing", flush=True)
        time.sleep(60)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_while_writing_leave_no_temporary(tmp_path, sig, reap):
    target = tmp_path / "out.txt"
    with default_signals():
        proc = reap(subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE))  # fmt: skip
    assert proc.stdout.readline() == "writing\n"
    assert len(_temporaries(tmp_path)) == 1  # the write is under way
    proc.send_signal(sig)
    assert proc.wait(30) == 128 + sig
    assert proc.stderr.read() == ""  # no traceback
    assert not target.exists()
    assert _temporaries(tmp_path) == []


@pytest.mark.skipif(not Path("/dev/stdout").exists(), reason="no /dev/stdout")
def test_dev_stdout_is_written_in_place():
    """``-o /dev/stdout`` (a link to a pipe here) is written, not replaced or refused."""
    code = (
        "from gaussmix._atomic import atomic_write\n"
        "with atomic_write('/dev/stdout') as fh:\n"
        "    fh.write('to the pipe\\n')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "to the pipe\n", "")
