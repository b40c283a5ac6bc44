"""The one way gaussmix writes a file: atomically, with the permissions a plain ``open`` gives.

Every output (model files, predictions, samples, reports, PNG figures, demo files) goes through
:func:`atomic_write`. Its guarantees:

- **All or nothing.** The content goes to a temporary file in the destination's folder, is
  flushed and ``fsync``-ed, then renamed over the destination (and the folder is ``fsync``-ed),
  so a reader sees the old file or the complete new one, never a part. On any exception,
  Ctrl-C, SIGTERM or SIGHUP the temporary file is removed and the destination is untouched.
- **Ordinary permissions.** A new file gets ``0o666`` less the process's umask, as ``open``
  would give it (not ``mkstemp``'s private ``0o600``); a replaced file keeps its mode (and, when
  running as root, its owner).
- **Links are written through.** A destination that is a symbolic link has its target replaced;
  the link stays. A destination that is not a regular file (a FIFO, ``/dev/stdout``) is written
  in place, since it cannot be replaced.
- **Read-only files are refused.** A destination without write permission (for this user, or
  with no write bit at all, which even root respects here) is not replaced.
- **Errors name the user's path**, never the temporary file's.

SIGTERM and SIGHUP are turned into :class:`SignalExit` (a ``SystemExit``, status 128 + signal)
while a write is in progress, when the process has no handler of its own for them; the command
line installs the same handler for its whole run (:func:`exit_on_signals`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["SignalExit", "atomic_write", "exit_on_signals", "new_file_mode"]

_EXIT_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class SignalExit(SystemExit):
    """Raised in the main thread when SIGTERM or SIGHUP arrives; exit status 128 + signal.

    A ``SystemExit`` so that ``except Exception`` blocks let it through while ``finally``
    blocks and context managers still run (removing temporary files, stopping worker
    processes), and an uncaught one ends the process quietly.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"terminated by {signal.Signals(self.signum).name}"


def _raise_signal_exit(signum: int, frame) -> None:
    raise SignalExit(signum)


@contextlib.contextmanager
def exit_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`SignalExit` in the main thread.

    Only signals whose handler is the default (terminate at once, running no cleanup) are
    taken over, and only from the main thread (the only one Python delivers signals to);
    the previous handlers are restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in _EXIT_SIGNALS:
        if signal.getsignal(sig) is signal.SIG_DFL:
            previous[sig] = signal.signal(sig, _raise_signal_exit)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def new_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666`` less the umask."""
    umask = None
    try:
        # Linux: read it without changing it (os.umask would, briefly, for every thread)
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    umask = int(line.split()[1], 8)
                    break
    except (OSError, ValueError):
        pass
    if umask is None:
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def _fsync_folder(folder: Path) -> None:
    # the rename is durable only once the folder's entry is on disk (best effort: not every
    # platform or file system lets a folder be opened and synced)
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(folder, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _open_fd(fd: int, mode: str) -> IO:
    if "b" in mode:
        return os.fdopen(fd, mode)
    return os.fdopen(fd, mode, encoding="utf-8", newline="\n")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open ``path`` for writing so that it is replaced only if the block succeeds.

    Parameters
    ----------
    path : str or path-like
        Destination. Its folder must exist. A symbolic link is written through (its target is
        replaced); a FIFO or device is written in place.
    mode : {"w", "wb"}
        Text (UTF-8, ``\\n`` line ends) or binary.

    Yields
    ------
    fh : file object
        Write the whole content here.

    Raises
    ------
    FileNotFoundError
        The destination's folder does not exist.
    IsADirectoryError
        The destination is a folder.
    PermissionError
        The destination exists and is read-only, or the folder cannot be written.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    shown = os.fspath(path)
    try:
        st = os.stat(path)  # through links, /proc's magic ones (/dev/stdout) included
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise type(exc)(f"{shown}: {exc.strerror or exc}") from None
    if st is not None:
        import stat

        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(f"{shown}: is a directory")
        if not stat.S_ISREG(st.st_mode):
            # a FIFO, a terminal, /dev/stdout: cannot be replaced, so write to it directly
            with _open_fd(os.open(path, os.O_WRONLY | os.O_TRUNC), mode) as fh:
                yield fh
            return
    target = Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if st is not None:
        if not os.access(target, os.W_OK) or not st.st_mode & 0o222:
            raise PermissionError(f"{shown}: the file is read-only; not replacing it")
    if not folder.is_dir():
        raise FileNotFoundError(f"{shown}: folder {folder} does not exist")
    with exit_on_signals():
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
        except OSError as exc:
            raise type(exc)(f"{shown}: cannot write in {folder}: {exc.strerror or exc}") from None
        try:
            file_mode = (st.st_mode & 0o777) if st is not None else new_file_mode()
            if hasattr(os, "fchmod"):
                os.fchmod(fd, file_mode)
            else:  # Windows before Python 3.13
                os.chmod(tmp, file_mode)
            if st is not None and getattr(os, "geteuid", lambda: -1)() == 0:
                with contextlib.suppress(OSError):
                    os.fchown(fd, st.st_uid, st.st_gid)
            with _open_fd(fd, mode) as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    _fsync_folder(folder)
