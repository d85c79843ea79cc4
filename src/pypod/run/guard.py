"""A watchman for the one case pypod cannot clean up after itself: SIGKILL.

pypod starts this small process (in a session of its own, so neither a closed terminal
nor Ctrl-C reaches it) and tells it, one JSON line at a time, which Job it must delete
and which kubectl processes it must end if pypod dies without saying goodbye. When its
stdin closes without a "bye" (pypod was killed, or crashed), it does so; otherwise it
just exits. Secrets never pass through it: it gets the kubeconfig path and context only.

Only the standard library is imported until there is something to delete, so it starts
in milliseconds and costs nothing in the common case.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

CHILD_GRACE_S = 2.0


class Guard:
    """pypod's side: start the watchman and keep it told."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pypod.run.guard"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            env=_guard_env(),
        )
        self._send({"target": {"kubeconfig": kubeconfig, "context": context, "namespace": namespace}})

    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.write(json.dumps(message).encode() + b"\n")
            self.proc.stdin.flush()

    def arm(self, job: str) -> None:
        """Delete this Job if pypod dies from here on."""
        self._send({"arm": job})

    def disarm(self, job: str) -> None:
        """The Job may outlive pypod (a REPL's keep-alive, --detach)."""
        self._send({"disarm": job})

    def child(self, pid: int) -> None:
        self._send({"child": pid})

    def child_gone(self, pid: int) -> None:
        self._send({"gone": pid})

    def close(self) -> None:
        """pypod ends normally: the watchman does nothing."""
        self._send({"bye": True})
        self.abandon()

    def abandon(self) -> None:
        """Hang up without a goodbye, as a killed pypod would; wait for the cleanup."""
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(30)


_active: Guard | None = None


def start_guard(kubeconfig: str | None, context: str | None, namespace: str) -> Guard:
    global _active
    _active = Guard(kubeconfig, context, namespace)
    return _active


def end_guard(clean: bool = True) -> None:
    """clean=False: pypod is ending on an error; the watchman deletes what is still armed."""
    global _active
    if _active is not None:
        if clean:
            _active.close()
        else:
            _active.abandon()
        _active = None


def track_child(pid: int) -> None:
    """A kubectl pypod started: end it too if pypod is killed (no guard: nothing to do)."""
    if _active is not None:
        _active.child(pid)


def untrack_child(pid: int) -> None:
    if _active is not None:
        _active.child_gone(pid)


def _guard_env() -> dict[str, str]:
    # The watchman imports pypod from wherever this pypod came from (an editable
    # checkout, a wheel, the copy shipped into a pod).
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


# -- the watchman ---------------------------------------------------------------------


def read_orders(lines: Any) -> tuple[dict[str, Any], set[str], set[int], bool]:
    """Pure: what the watchman was told, from its input lines."""
    target: dict[str, Any] = {}
    jobs: set[str] = set()
    children: set[int] = set()
    for raw in lines:
        try:
            message = json.loads(raw)
        except ValueError:
            continue
        if "target" in message:
            target = dict(message["target"])
        if "arm" in message:
            jobs.add(str(message["arm"]))
        if "disarm" in message:
            jobs.discard(str(message["disarm"]))
        if "child" in message:
            children.add(int(message["child"]))
        if "gone" in message:
            children.discard(int(message["gone"]))
        if message.get("bye"):
            return target, jobs, children, True
    return target, jobs, children, False


def _end_children(children: set[int]) -> None:
    for pid in children:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + CHILD_GRACE_S
    alive = set(children)
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            with contextlib.suppress(OSError):
                if os.waitpid(pid, os.WNOHANG) != (0, 0):
                    alive.discard(pid)
                    continue
            try:
                os.kill(pid, 0)
            except OSError:
                alive.discard(pid)
        time.sleep(0.05)
    for pid in alive:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _delete_jobs(target: dict[str, Any], jobs: set[str]) -> None:
    from lightkube.resources.batch_v1 import Job
    from lightkube.types import CascadeType

    from ..errors import NotFound, PypodError
    from ..kube.client import api_errors, connect

    client, where = connect(target.get("kubeconfig"), target.get("context"), target.get("namespace"))
    for job in sorted(jobs):
        try:
            with api_errors("delete", "jobs", where.namespace, where.server, job):
                client.delete(Job, job, namespace=where.namespace, cascade=CascadeType.BACKGROUND)
            print(f"pypod: pypod ended without cleaning up; deleted run {job}", file=sys.stderr)
        except NotFound:
            pass  # never created, or already deleted
        except PypodError as exc:
            print(f"pypod: could not delete run {job} after pypod ended: {exc.one_line()}", file=sys.stderr)


def main() -> None:
    for each in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(each, signal.SIG_IGN)  # outlive pypod long enough to clean up after it
    target, jobs, children, said_bye = read_orders(sys.stdin.buffer)
    if said_bye:
        return
    _end_children(children)
    if jobs:
        _delete_jobs(target, jobs)


if __name__ == "__main__":
    main()
