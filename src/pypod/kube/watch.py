"""Watch a run's Job, pod and events until the pod runs (or cannot), showing why.

One watch per kind, each in a thread, feeding a queue; each change re-explains
the run with kube.status.explain. Watches resume from their last resourceVersion
after a dropped connection or an apiserver restart, and re-list after 410 Gone.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import PendingTimeout, PodFailedToStart
from .status import PodReport, explain

RETRY_SLEEP_S = (0.2, 0.5, 1.0, 2.0, 3.0)


def _retry_with_backoff(exc: Exception, count: int):  # type: ignore[no-untyped-def]
    """Retry dropped connections and restarts; raise what retrying cannot fix (RBAC)."""
    from lightkube.types import OnErrorAction, OnErrorResult

    code = getattr(getattr(exc, "status", None), "code", None)
    if code in (401, 403, 404):
        return OnErrorResult(OnErrorAction.RAISE)
    return OnErrorResult(OnErrorAction.RETRY, sleep=RETRY_SLEEP_S[min(count, len(RETRY_SLEEP_S) - 1)])


def prime_decoders(*resources: Any) -> None:
    """Build msgspec's type info for `resources` in the calling thread.

    lightkube decodes with msgspec, which builds a type's decoder on first use; two
    threads doing that at once for related types crashed the process (SIGSEGV seen
    with msgspec 0.22 in lightkube 1.0.1's watch). Built once up front, it is only read.
    """
    import msgspec

    for resource in resources:
        msgspec.json.Decoder(resource)


@dataclass
class RunState:
    """The latest of everything watched, as plain dicts."""

    job: dict[str, Any] | None = None
    pod: dict[str, Any] | None = None
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    workload: dict[str, Any] | None = None

    def report(self) -> PodReport:
        return explain(self.job, self.pod, list(self.events.values()), self.workload)

    def event_lines(self, limit: int = 8) -> list[str]:
        ordered = sorted(self.events.values(), key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return [f"{e.get('type', '')} {e.get('reason', '')}: {e.get('message', '')}".strip() for e in ordered[-limit:]]


def _to_dict(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


class RunWatcher:
    """Watches one run; `updates` receives a token whenever anything changed."""

    def __init__(self, client: Any, namespace: str, run_name: str) -> None:
        self.client = client
        self.namespace = namespace
        self.run_name = run_name
        self.state = RunState()
        self.updates: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> RunWatcher:
        from lightkube.resources.batch_v1 import Job
        from lightkube.resources.core_v1 import Event, Pod

        prime_decoders(Job, Pod, Event)
        run_label = {"pypod.dev/run": self.run_name}
        self._spawn("job", Job, fields={"metadata.name": self.run_name})
        self._spawn("pod", Pod, labels=run_label)
        self._spawn("event", Event)
        return self

    def _spawn(self, kind: str, resource: Any, **selectors: Any) -> None:
        thread = threading.Thread(target=self._watch, args=(kind, resource, selectors), daemon=True)
        thread.start()
        self._threads.append(thread)

    def _watch(self, kind: str, resource: Any, selectors: dict[str, Any]) -> None:
        try:
            for event_type, obj in self.client.watch(
                resource, namespace=self.namespace, on_error=_retry_with_backoff, **selectors
            ):
                if self._stop.is_set():
                    return
                self._apply(kind, event_type, _to_dict(obj))
        except Exception as exc:  # surfaced to the waiting loop, never swallowed
            self.updates.put(f"error:{kind}:{exc}")

    def _apply(self, kind: str, event_type: str, obj: dict[str, Any]) -> None:
        with self._lock:
            if kind == "job":
                self.state.job = None if event_type == "DELETED" else obj
            elif kind == "pod":
                self.state.pod = None if event_type == "DELETED" else obj
            elif kind == "event":
                involved = (obj.get("involvedObject") or {}).get("name", "")
                if not involved.startswith(self.run_name):
                    return
                self.state.events[obj["metadata"]["uid"]] = obj
        self.updates.put(kind)

    def stop(self) -> None:
        self._stop.set()

    def snapshot(self) -> PodReport:
        with self._lock:
            return self.state.report()


def wait_until_running(
    watcher: RunWatcher,
    pending_timeout: float,
    on_status: Callable[[PodReport, float], None],
    accept_terminated: bool = False,
) -> PodReport:
    """Block until the pod runs. Raises PodFailedToStart or PendingTimeout with the last status.

    `accept_terminated`: a job run may finish before we look; that is success here.
    """
    started = time.monotonic()
    report = watcher.snapshot()
    while True:
        elapsed = time.monotonic() - started
        if report.state == "running":
            return report
        if report.state in ("succeeded", "failed") and not report.fatal and accept_terminated:
            return report
        if report.fatal or report.state in ("succeeded", "failed"):
            raise PodFailedToStart(
                f"the driver pod cannot run: {report.line}",
                hint=report.hint or "see `pypod logs` and the events above",
            )
        if elapsed > pending_timeout:
            raise PendingTimeout(
                f"the driver was not running after {pending_timeout:.0f}s: {report.line}",
                hint="raise --pending-timeout, lower --cpu/--memory/--gpu, or pick another queue or namespace",
            )
        on_status(report, elapsed)
        try:
            token = watcher.updates.get(timeout=min(1.0, max(0.05, pending_timeout - elapsed)))
        except queue.Empty:
            token = ""
        if token.startswith("error:"):
            raise PodFailedToStart(f"watching the run failed: {token.split(':', 2)[2]}")
        report = watcher.snapshot()
