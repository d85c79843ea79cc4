"""Watch a run's Job, pod and events until the pod runs (or cannot), showing why.

One watch per kind, each in a thread, feeding a queue; each change re-explains
the run with kube.status.explain. Watches resume from their last resourceVersion
after a dropped connection or an apiserver restart, and re-list after 410 Gone.

A queued run also watches its Kueue Workload; its position in line is the one thing
asked for periodically (every POSITION_REFRESH_S, only while it waits for quota),
because the visibility API cannot be watched. Where that API is refused, the
LocalQueue is watched for its pending count instead.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import PodFailedToStart
from .manifests import JOB_NAME_LABEL
from .queue import (
    JOB_UID_LABEL,
    POSITION_REFRESH_S,
    VERSIONS,
    PositionsUnavailable,
    QueueProgress,
    QueueTarget,
    explain_workload,
    local_queue_resource,
    pending_count,
    read_position,
    status_code,
    workload_resource,
)
from .status import PodReport, explain, pending_timeout_error

RETRY_SLEEP_S = (0.2, 0.5, 1.0, 2.0, 3.0)


def _retry_with_backoff(exc: Exception, count: int):  # type: ignore[no-untyped-def]
    """Retry dropped connections and restarts; raise what retrying cannot fix (RBAC)."""
    from lightkube.types import OnErrorAction, OnErrorResult

    if status_code(exc) in (401, 403, 404):
        return OnErrorResult(OnErrorAction.RAISE)
    return OnErrorResult(OnErrorAction.RETRY, sleep=RETRY_SLEEP_S[min(count, len(RETRY_SLEEP_S) - 1)])


def _raise_on_error(exc: Exception, count: int):  # type: ignore[no-untyped-def]
    """For optional watches (Kueue's objects): retry drops, give up quietly on refusals."""
    if status_code(exc) in (401, 403, 404):
        from lightkube.types import OnErrorAction, OnErrorResult

        return OnErrorResult(OnErrorAction.RAISE)
    return _retry_with_backoff(exc, count)


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
    progress: QueueProgress | None = None
    admitted_at: float | None = None  # monotonic time the Workload was first seen admitted

    def report(self) -> PodReport:
        return explain(self.job, self.pod, list(self.events.values()), self.workload, self.progress)

    def event_lines(self, limit: int = 8) -> list[str]:
        ordered = sorted(self.events.values(), key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return [f"{e.get('type', '')} {e.get('reason', '')}: {e.get('message', '')}".strip() for e in ordered[-limit:]]


def _to_dict(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


class RunWatcher:
    """Watches one run; `updates` receives a token whenever anything changed."""

    def __init__(self, client: Any, namespace: str, run_name: str, queue_target: QueueTarget | None = None) -> None:
        self.client = client
        self.namespace = namespace
        self.run_name = run_name
        self.queue_target = queue_target
        self.state = RunState()
        if queue_target:
            self.state.progress = QueueProgress(queue_target.queue, queue_target.cluster_queue)
        self.updates: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._waiting_for_quota = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> RunWatcher:
        from lightkube.resources.batch_v1 import Job
        from lightkube.resources.core_v1 import Event, Pod

        prime_decoders(Job, Pod, Event)
        self._spawn(self._watch, "job", Job, {"fields": {"metadata.name": self.run_name}})
        self._spawn(self._watch, "pod", Pod, {"labels": {JOB_NAME_LABEL: self.run_name}})
        self._spawn(self._watch, "event", Event, {})
        if self.queue_target:
            for version in self.queue_target.versions():
                prime_decoders(workload_resource(version), local_queue_resource(version))
            self._spawn(self._watch_workload)
            self._spawn(self._refresh_position)
        return self

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
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
            elif kind == "workload":
                self.state.workload = None if event_type == "DELETED" else obj
                phase = explain_workload(obj).phase
                if phase == "admitted" and self.state.admitted_at is None:
                    self.state.admitted_at = time.monotonic()
                if phase in ("pending", "evicted") and event_type != "DELETED":
                    self._waiting_for_quota.set()
                else:
                    self._waiting_for_quota.clear()
                    progress = self.state.progress
                    if progress:  # an old position would mislead once admitted
                        self.state.progress = QueueProgress(progress.queue, progress.cluster_queue)
            elif kind == "localqueue" and self.state.progress:
                progress = self.state.progress
                self.state.progress = QueueProgress(progress.queue, progress.cluster_queue, pending=pending_count(obj))
        self.updates.put(kind)

    def _watch_kueue(self, kind: str, resource_of: Callable[[str], Any], selectors: dict[str, Any]) -> None:
        """Watch a Kueue object in the first version served; refused or absent, the run goes on without."""
        from httpx2 import HTTPStatusError

        assert self.queue_target is not None
        for version in self.queue_target.versions():
            try:
                for event_type, obj in self.client.watch(
                    resource_of(version), namespace=self.namespace, on_error=_raise_on_error, **selectors
                ):
                    if self._stop.is_set():
                        return
                    self._apply(kind, event_type, _to_dict(obj))
                return
            except HTTPStatusError as exc:
                if status_code(exc) != 404:
                    return
            except Exception:  # the wait goes on with what the Job says
                return

    def _watch_workload(self) -> None:
        assert self.queue_target is not None
        self._watch_kueue("workload", workload_resource, {"labels": {JOB_UID_LABEL: self.queue_target.job_uid}})

    def _refresh_position(self) -> None:
        """While the Workload waits for quota: its position, every POSITION_REFRESH_S."""
        assert self.queue_target is not None
        queue_name = self.queue_target.queue
        versions: tuple[str, ...] | None = None
        while not self._stop.is_set():
            if not self._waiting_for_quota.wait(timeout=1.0):
                continue
            with self._lock:
                workload = (self.state.workload or {}).get("metadata", {}).get("name", "")
            try:
                position, version = read_position(
                    self.client, self.namespace, queue_name, workload, versions or VERSIONS
                )
                versions = (version,)
            except PositionsUnavailable:
                # Quietly the next best thing: the LocalQueue's pending count, watched.
                self._watch_kueue("localqueue", local_queue_resource, {"fields": {"metadata.name": queue_name}})
                return
            except Exception:  # the aggregated API is down or slow: try again next time
                position = None
            with self._lock:
                progress = self.state.progress or QueueProgress(queue_name)
                if self._waiting_for_quota.is_set():
                    self.state.progress = QueueProgress(progress.queue, progress.cluster_queue, position=position)
            self.updates.put("position")
            self._stop.wait(POSITION_REFRESH_S)

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
            raise pending_timeout_error(report, pending_timeout)
        on_status(report, elapsed)
        try:
            token = watcher.updates.get(timeout=min(1.0, max(0.05, pending_timeout - elapsed)))
        except queue.Empty:
            token = ""
        if token.startswith("error:"):
            raise PodFailedToStart(f"watching the run failed: {token.split(':', 2)[2]}")
        report = watcher.snapshot()
