"""What a driver Job and its pod are doing, in one line, from their plain-dict
objects and events. Pure: no cluster here, so every case has a unit test.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import PendingTimeout
from .queue import ADMISSION_GATE, QUEUE_LABEL, QueueProgress, WorkloadView, explain_workload, queue_line

# Container waiting reasons that will not resolve by waiting longer.
FATAL_WAITING = {
    "ErrImagePull": "the image cannot be pulled; check the name, tag and registry access (imagePullSecrets)",
    "ImagePullBackOff": "the image cannot be pulled; check the name, tag and registry access (imagePullSecrets)",
    "InvalidImageName": "the image reference is malformed; pass a valid --image",
    "CreateContainerConfigError": "the container's configuration refers to something missing (a Secret or "
    "ConfigMap?); fix the template or create it",
    "CreateContainerError": "the runtime could not create the container; see the message",
    "RunContainerError": "the container's command could not start; check that the image has it (--python)",
    "ErrImageNeverPull": "imagePullPolicy is Never and the image is not on the node",
}


@dataclass(frozen=True)
class PodReport:
    """`state` is one of: queued, pending, starting, running, succeeded, failed.

    `queue` names the Kueue LocalQueue of a queued run, and `workload` is what its Workload
    says, from the Job's creation until its pod runs.
    """

    state: str
    line: str
    fatal: bool = False
    hint: str = ""
    node: str = ""
    exit_code: int | None = None
    details: tuple[str, ...] = ()  # e.g. the tail of a failed initContainer's log
    queue: str = ""
    workload: WorkloadView | None = None


def _conditions(obj: dict[str, Any] | None) -> list[dict[str, Any]]:
    return ((obj or {}).get("status") or {}).get("conditions") or []


def _condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    return next((c for c in _conditions(obj) if c.get("type") == kind), None)


def _latest_event(events: list[dict[str, Any]], reasons: set[str]) -> dict[str, Any] | None:
    matching = [e for e in events if e.get("reason") in reasons]
    matching.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    return matching[-1] if matching else None


def _init_secret(pod: dict[str, Any], name: str) -> str | None:
    for container in (pod.get("spec") or {}).get("initContainers") or []:
        if container.get("name") == name:
            env = {e.get("name"): e.get("value") for e in container.get("env") or []}
            return env.get("PYPOD_GIT_SECRET")
    return None


def explain_init(pod: dict[str, Any], node: str) -> PodReport | None:
    """An initContainer that failed (fatal: with restartPolicy Never the pod is over), cannot
    start, or is running; None once they are all done."""
    from ..gitsource import INIT_CONTAINER, explain_clone_failure

    for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
        name = status.get("name", "")
        state = status.get("state") or {}
        term = state.get("terminated")
        if term and term.get("exitCode") not in (0, None):
            message = term.get("message") or ""
            tail = tuple(line for line in message.splitlines() if line.strip())[-8:]
            if name == INIT_CONTAINER:
                line, hint = explain_clone_failure(term.get("exitCode"), message, _init_secret(pod, name))
            else:
                reason = term.get("reason") or "Error"
                line = f"initContainer {name} failed (exit {term.get('exitCode')}, {reason})"
                hint = f"see its log: kubectl logs {pod.get('metadata', {}).get('name', 'POD')} -c {name}"
            return PodReport("failed", line, fatal=True, hint=hint, node=node, details=tail)
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in FATAL_WAITING:
            message = waiting.get("message") or waiting["reason"]
            return PodReport(
                "failed",
                f"initContainer {name}: {waiting['reason']}: {message}",
                fatal=True,
                hint=FATAL_WAITING[waiting["reason"]],
                node=node,
            )
        if "running" in state:
            what = "fetching the code from git" if name == INIT_CONTAINER else f"running initContainer {name}"
            return PodReport("starting", f"{what} on {node}", node=node)
        if not term:
            return None  # waiting to start: the pod's own status says why
    return None


def explain(
    job: dict[str, Any] | None,
    pod: dict[str, Any] | None,
    events: list[dict[str, Any]] | None = None,
    workload: dict[str, Any] | None = None,
    progress: QueueProgress | None = None,
) -> PodReport:
    """One line for a run: its Job, its pod, their events, and (queued) its Workload and place in line."""
    events = events or []
    job_spec = (job or {}).get("spec") or {}
    queue = (((job or {}).get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL, "")
    view = explain_workload(workload) if workload else None
    if job_spec.get("suspend"):
        if not queue:
            return PodReport("queued", "waiting for admission: the Job is suspended")
        return PodReport("queued", queue_line(queue, view, progress), queue=queue, workload=view)
    report = _explain_pod(job, pod, events)
    if queue:
        report = dataclasses.replace(report, queue=queue, workload=view)
    return report


def _explain_pod(job: dict[str, Any] | None, pod: dict[str, Any] | None, events: list[dict[str, Any]]) -> PodReport:
    failed = _condition(job, "Failed")
    if pod is None:
        if failed and failed.get("status") == "True":
            return PodReport("failed", f"the Job failed: {failed.get('message') or failed.get('reason')}", fatal=True)
        return PodReport("pending", "waiting for the Job controller to create the pod")

    status = pod.get("status") or {}
    node = (pod.get("spec") or {}).get("nodeName") or ""
    phase = status.get("phase") or "Pending"
    statuses = status.get("containerStatuses") or []
    main = statuses[0] if statuses else {}
    state = main.get("state") or {}
    init = explain_init(pod, node)
    if init is not None and (init.fatal or "running" not in state):
        return init

    if "terminated" in state or phase in ("Succeeded", "Failed"):
        term = state.get("terminated") or {}
        code = term.get("exitCode")
        reason = term.get("reason") or status.get("reason") or phase
        detail = term.get("message") or status.get("message") or ""
        line = f"exited with code {code} ({reason})" if code is not None else f"{reason}: {detail}".rstrip(": ")
        return PodReport("succeeded" if code == 0 else "failed", line, node=node, exit_code=code)
    if phase == "Running" and "running" in state:
        return PodReport("running", f"running on {node}", node=node)

    waiting = state.get("waiting") or {}
    reason = waiting.get("reason") or ""
    if reason in FATAL_WAITING:
        message = waiting.get("message") or reason
        return PodReport("failed", f"{reason}: {message}", fatal=True, hint=FATAL_WAITING[reason], node=node)

    gates = [g.get("name") for g in (pod.get("spec") or {}).get("schedulingGates") or []]
    if ADMISSION_GATE in gates:
        # A bare pod (a Dask worker) queued through Kueue's pod integration.
        queue = ((pod.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL, "")
        where = f" in queue {queue}" if queue else ""
        return PodReport("queued", f"waiting for Kueue to admit it{where}", queue=queue)
    scheduled = _condition(pod, "PodScheduled")
    if scheduled and scheduled.get("status") == "False":
        message = scheduled.get("message") or scheduled.get("reason") or "not scheduled yet"
        return PodReport("pending", f"unschedulable: {message}")
    if not node:
        return PodReport("pending", "waiting for the scheduler")

    pulling = _latest_event(events, {"Pulling", "Pulled"})
    if pulling and pulling.get("reason") == "Pulling" and reason in ("", "ContainerCreating"):
        return PodReport("starting", f"pulling image on {node}: {pulling.get('message', '')}", node=node)
    if reason:
        return PodReport("starting", f"{reason} on {node}", node=node)
    return PodReport("starting", f"starting on {node}", node=node)


def container_started(pod: dict[str, Any], container: str) -> bool:
    """Whether `container` of `pod` has started (is running or has ended), so that it has a
    log to read: the apiserver answers 400 for one still waiting."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container:
            state = status.get("state") or {}
            return "running" in state or "terminated" in state
    return False


def pending_timeout_error(report: PodReport, timeout: float) -> PendingTimeout:
    """--pending-timeout ran out: say whether the run waited for quota (Kueue) or for a node."""
    if report.state == "queued" and report.queue:
        return PendingTimeout(
            f"the driver was still waiting for quota after {timeout:.0f}s: {report.line}",
            hint="Kueue has not admitted it: the queue's quota is in use or smaller than the request; "
            "wait longer (--pending-timeout), ask for less (--cpu/--memory/--gpu) or pick another --queue",
        )
    if report.queue and report.state == "pending":
        return PendingTimeout(
            f"the driver was admitted by Kueue but not placed on a node after {timeout:.0f}s: {report.line}",
            hint="the quota is there but no node fits the pod; lower --cpu/--memory/--gpu or check --gpu-product",
        )
    return PendingTimeout(
        f"the driver was not running after {timeout:.0f}s: {report.line}",
        hint="raise --pending-timeout, lower --cpu/--memory/--gpu, or pick another queue or namespace",
    )
