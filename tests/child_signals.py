"""Default signal dispositions for the child processes that tests interrupt."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

# the signals the tests send to children that handle them (SIGKILL is never ignored)
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def default_signals() -> Iterator[None]:
    """Children started inside begin with these signals at their default dispositions.

    An ignored signal stays ignored across exec: under ``nohup`` a child ignores SIGHUP, and in
    a background job of a non-interactive shell it ignores SIGINT (Python then installs no
    KeyboardInterrupt handler), as a well-behaved program should. Tests of what the CLI does on
    those signals need them delivered, wherever the suite itself was started from.
    """
    ignored = [s for s in SIGNALS if signal.getsignal(s) == signal.SIG_IGN]
    for s in ignored:
        signal.signal(s, signal.SIG_DFL)
    try:
        yield
    finally:
        for s in ignored:
            signal.signal(s, signal.SIG_IGN)
