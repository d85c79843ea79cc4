"""Running a Syncer in a thread for tests, and waiting for what it should do."""

from __future__ import annotations

import glob
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pypod import agent
from pypod.sync.excludes import sync_excludes
from pypod.sync.link import AgentLink
from pypod.sync.syncer import Syncer


def wait_until(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def local_agent(argv_prefix: list[str] | None = None, python: str | None = None, agent_args: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    """A connect function that runs the agent as a local process (argv_prefix: e.g. kubectl exec)."""
    links: list[AgentLink] = []

    def connect(inbox):  # type: ignore[no-untyped-def]
        nonlocal python
        python = python or ("python3" if argv_prefix else sys.executable)
        argv, preamble = agent.stdin_command(python, "sync", *agent_args)
        link = AgentLink([*(argv_prefix or []), *argv], preamble, inbox)
        links.append(link)
        return link

    connect.links = links  # type: ignore[attr-defined]
    return connect


def scan_after_the_index(syncer: Syncer) -> list[int]:
    """Hold the syncer's first local scan until the agent's index is in, as when a large
    folder's scan outlasts the agent's start, so what is new goes out during the scan.
    Returns a list that gets how many operations were in flight when the scan ended."""
    refresh = syncer.tree.refresh
    in_flight: list[int] = []

    def after_the_index(rels, known, on_listed=None):  # type: ignore[no-untyped-def]
        if on_listed is None or in_flight:
            return refresh(rels, known, on_listed)
        wait_until(lambda: not syncer.inbox.empty(), what="the agent's index")
        changes = refresh(rels, known, on_listed)
        in_flight.append(len(syncer.pending))
        return changes

    syncer.tree.refresh = after_the_index  # type: ignore[method-assign]
    return in_flight


def oldest_python() -> str | None:
    """The agent promises Python 3.8; pyenv keeps one on these machines."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python3.8")))
    found = candidates[0] if candidates else shutil.which("python3.8")
    return found


class RunningSync:
    def __init__(self, local: Path, remote: str, connect, state_file: Path | None = None, **options) -> None:  # type: ignore[no-untyped-def]
        self.messages: list[str] = []
        self.connect = connect
        self.syncer = Syncer(
            local, remote, connect, sync_excludes(local), state_file=state_file, report=self.messages.append, **options
        )
        self.thread = threading.Thread(target=self.syncer.run, daemon=True)

    def __enter__(self) -> RunningSync:
        self.thread.start()
        if not self.syncer.first_sync.wait(60):
            raise AssertionError(f"first sync did not finish: {self.syncer.health.line()} {self.messages}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.syncer.stop()
        self.thread.join(10)

    def quiet(self) -> None:
        """Wait until nothing is in flight (and nothing is waiting to be decided)."""
        wait_until(lambda: self.syncer.health.state == "watching" and not self.syncer.dirty, what="sync to settle")
