"""SIGTERM and SIGHUP do what Ctrl-C does.

A closed terminal sends SIGHUP, `kill` and a CI runner's timeout send SIGTERM. Each is
turned into `Stopped`, a KeyboardInterrupt, in the main thread, so the cleanup that
already runs on Ctrl-C (delete the Job, stop the streams, kill a builder's process) runs
for them too. A second signal during that cleanup is ignored, so the cleanup finishes.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """pypod was asked to stop by a signal other than Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process ended by that signal


def stop_exit_code(exc: KeyboardInterrupt) -> int:
    return exc.exit_code if isinstance(exc, Stopped) else 130


@contextlib.contextmanager
def stopping_on_signals() -> Iterator[None]:
    """Within: SIGTERM and SIGHUP raise Stopped in the main thread (once)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        for each in STOP_SIGNALS:
            signal.signal(each, signal.SIG_IGN)
        raise Stopped(signum)

    previous = {each: signal.signal(each, on_signal) for each in STOP_SIGNALS}
    try:
        yield
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Within: Ctrl-C, SIGTERM and SIGHUP wait until the block is done (then act at once).
    For code that must not be cut in half, such as rich starting or stopping a live line.

    The handlers are swapped, not the signal mask: a process signal reaches whichever
    thread does not block it, and Python then runs its handler in the main thread
    anyway; pypod always has other threads (the sync, the dashboard, watchers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []

    def remember(signum: int, _frame: FrameType | None) -> None:
        if signum not in arrived:
            arrived.append(signum)

    previous = {each: signal.signal(each, remember) for each in (signal.SIGINT, *STOP_SIGNALS)}
    try:
        yield
    finally:
        for each, handler in previous.items():
            signal.signal(each, signal.SIG_DFL if handler is None else handler)  # None: not set from Python
        for signum in arrived:  # now, with the handlers that were there before
            signal.raise_signal(signum)
