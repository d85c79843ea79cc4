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
    For code that must not be cut in half, such as rich starting or stopping a live line."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    deferred = {signal.SIGINT, *STOP_SIGNALS}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, deferred)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
