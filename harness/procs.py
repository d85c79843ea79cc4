"""Start and stop the harness's processes, remembered by PID and start time.

The start time (field 22 of /proc/PID/stat) guards against killing an unrelated
process that reused a recorded PID after a reboot or a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .components import Component
from .errors import HarnessError


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces; fields follow the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@dataclass(frozen=True)
class Recorded:
    name: str
    pid: int
    start_ticks: int
    log: Path

    def alive(self) -> bool:
        return _start_ticks(self.pid) == self.start_ticks and not _is_zombie(self.pid)


class Processes:
    """The processes of one harness state folder."""

    def __init__(self, pid_dir: Path, log_dir: Path) -> None:
        self.pid_dir = pid_dir
        self.log_dir = log_dir

    def _record_path(self, name: str) -> Path:
        return self.pid_dir / f"{name}.json"

    def start(self, component: Component) -> Recorded:
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{component.name}.log"
        env = dict(os.environ)
        env.update(component.env or {})
        with log.open("ab") as out:
            out.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(component.argv)}\n".encode())
            out.flush()
            try:
                proc = subprocess.Popen(
                    component.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # outlives `harness up`; not hit by the terminal's Ctrl-C
                )
            except FileNotFoundError as exc:
                raise HarnessError(f"{component.name}: {exc.filename} not found", hint="run `harness build`") from exc
        ticks = _start_ticks(proc.pid) or 0
        recorded = Recorded(component.name, proc.pid, ticks, log)
        self._record_path(component.name).write_text(
            json.dumps({"pid": proc.pid, "start_ticks": ticks, "log": str(log)})
        )
        return recorded

    def recorded(self) -> list[Recorded]:
        result = []
        if not self.pid_dir.exists():
            return result
        for path in sorted(self.pid_dir.glob("*.json"), key=lambda p: p.stat().st_mtime):
            data = json.loads(path.read_text())
            result.append(Recorded(path.stem, data["pid"], data["start_ticks"], Path(data["log"])))
        return result

    def get(self, name: str) -> Recorded | None:
        path = self._record_path(name)
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return Recorded(name, data["pid"], data["start_ticks"], Path(data["log"]))

    def stop(self, name: str, timeout: float = 10.0) -> bool:
        """Stop one recorded process; True if it was running."""
        record = self.get(name)
        if record is None:
            return False
        was_alive = record.alive()
        if was_alive:
            _terminate(record.pid, timeout)
        self._record_path(name).unlink(missing_ok=True)
        return was_alive

    def stop_all(self, timeout: float = 10.0) -> list[str]:
        """Stop in reverse start order; returns the names that were running."""
        stopped = []
        for record in reversed(self.recorded()):
            if self.stop(record.name, timeout):
                stopped.append(record.name)
        return stopped


def _terminate(pid: int, timeout: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)
            if waited == pid:
                return
        except ChildProcessError:
            pass
        if _start_ticks(pid) is None or _is_zombie(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def log_tail(log: Path, lines: int = 20) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
