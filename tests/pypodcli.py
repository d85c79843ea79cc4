"""Drive the real `pypod` command: plainly, or on a pseudo-terminal like a person."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

PYPOD = [sys.executable, "-m", "pypod"]


def cli_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment for pypod: the harness's cluster, and a private HOME
    so history files are the test's own."""
    env = dict(os.environ)
    env["HOME"] = str(home)
    env.update(extra or {})
    return env


def run_cli(
    args: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 180, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PYPOD, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, input=input
    )


class Terminal:
    """`pypod ...` on a pseudo-terminal: type, wait for output, read what was shown."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            if cwd:
                os.chdir(cwd)
            os.execvpe(PYPOD[0], [*PYPOD, *args], env)
        self.output = b""
        self.seen = 0  # expect() looks only past its previous match
        self.exit_code: int | None = None

    def _pump(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:
            return False
        if not data:
            return False
        self.output += data
        return True

    def expect(self, token: str, timeout: float = 60, *others: str) -> float:
        """Wait until `token` (or one of `others`) is shown after the previous match; returns
        the seconds it took."""
        started = time.monotonic()
        needles = [t.encode() for t in (token, *others)]
        while not (found := [n for n in needles if n in self.output[self.seen :]]):
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{token!r} not shown within {timeout}s; screen tail:\n{self.text()[-1500:]}")
            if not self._pump(0.2):
                raise AssertionError(f"pypod ended before showing {token!r}; screen tail:\n{self.text()[-1500:]}")
        shown = min(found, key=lambda n: self.output.index(n, self.seen))
        self.seen = self.output.index(shown, self.seen) + len(shown)
        return time.monotonic() - started

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def line(self, text: str) -> None:
        self.send(text + "\r")

    def text(self) -> str:
        return self.output.decode(errors="replace")

    def wait(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._pump(0.1)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.exit_code = os.waitstatus_to_exitcode(status)
                with_suppress_close(self.fd)
                return self.exit_code
        raise AssertionError(f"pypod did not end within {timeout}s; screen tail:\n{self.text()[-1500:]}")

    def kill(self) -> None:
        """As if the laptop lost power: no clean-up of any kind."""
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        with_suppress_close(self.fd)


def with_suppress_close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
