"""What a run shows the user: status on stderr, one live line on a terminal."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from .signals import signals_deferred


class Output:
    """Status on stderr (a live line on a terminal), program output on stdout."""

    def __init__(self, quiet: bool = False, console: Any = None) -> None:
        self.quiet = quiet
        self._status: Any = None
        self._err: Any = console
        self._making = threading.Lock()  # the sync's thread may show the first line

    @property
    def err(self) -> Any:
        """rich's console, made at the first line shown: importing rich (~35 ms) then
        overlaps the pod's start instead of delaying the Job's create."""
        if self._err is None:
            with self._making:
                if self._err is None:
                    from rich.console import Console

                    self._err = Console(stderr=True, highlight=False, soft_wrap=True)
        return self._err

    def info(self, message: str) -> None:
        if not self.quiet:
            self._clear()
            # A closed terminal (EIO) must not stop the cleanup that follows a SIGHUP.
            with contextlib.suppress(OSError):
                self.err.print(message, markup=False)

    def status(self, message: str) -> None:
        if self.quiet:
            return
        if not self.err.is_terminal:
            return
        # A signal landing inside rich's start would leave its live display half set up
        # (its stop then fails), so signals wait for these few lines.
        with signals_deferred():
            if self._status is None:
                self._status = self.err.status(message)
                self._status.start()
            else:
                self._status.update(message)

    def _clear(self) -> None:
        if self._status is not None:
            # Forgotten before the stop: a deferred signal acts as the block ends, and the
            # cleanup it starts must not stop this live line a second time (rich's
            # live stack is then empty: IndexError).
            status, self._status = self._status, None
            # OSError: the terminal is gone (SIGHUP); the cleanup that follows must still run.
            with contextlib.suppress(OSError), signals_deferred():
                status.stop()

    def done(self) -> None:
        self._clear()
