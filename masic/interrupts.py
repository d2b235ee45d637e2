"""SIGINT and SIGTERM as one exception that unwinds cleanly, and the few steps they must not split.

By default SIGTERM ends the process on the spot, skipping every `finally` (so temporary folders stay behind), and
SIGINT raises KeyboardInterrupt wherever the interpreter happens to be. Inside `handling_signals()` both raise
`Interrupted`, a KeyboardInterrupt, so code that already cleans up after Ctrl-C does so after SIGTERM too; and
`deferred()` holds them back while a short sequence of steps that must not be split runs (moving an artifact into
place), raising when it ends. SIGKILL cannot be caught: `masic.workdirs` sweeps what a killed run left.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop by `signum`; exit with `exit_status` (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class _Deferral:
    """How many `deferred()` sections are open, and the signals that arrived meanwhile."""

    def __init__(self) -> None:
        self.depth = 0
        self.pending: list[int] = []


_DEFERRAL = _Deferral()


def _handler(signum: int, frame: FrameType | None) -> None:
    if _DEFERRAL.depth:
        _DEFERRAL.pending.append(signum)
        return
    raise Interrupted(signum)


@contextmanager
def handling_signals(ignore_after: bool = False) -> Iterator[None]:
    """Turns SIGINT and SIGTERM into `Interrupted` for the duration (the main thread only: Python runs signal
    handlers there, and refuses to install them elsewhere). After it, the previous handlers are restored, or with
    `ignore_after` both signals are ignored: a process whose work is done then exits with the status it decided,
    instead of printing a KeyboardInterrupt traceback from the interpreter's teardown (a second or so once torch
    and TVM are loaded)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _handler) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_IGN if ignore_after else handler)


@contextmanager
def deferred() -> Iterator[None]:
    """Runs the block without interruption by SIGINT or SIGTERM; one that arrived meanwhile is raised as
    `Interrupted` when the block ends. Has effect only inside `handling_signals()`."""
    _DEFERRAL.depth += 1
    try:
        yield
    finally:
        _DEFERRAL.depth -= 1
        if not _DEFERRAL.depth and _DEFERRAL.pending:
            signum = _DEFERRAL.pending[0]
            _DEFERRAL.pending.clear()
            raise Interrupted(signum)
