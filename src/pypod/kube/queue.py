"""Kueue: the queue a run waits in, what its Workload says, and where it stands.

A Job labelled `kueue.x-k8s.io/queue-name` is suspended by Kueue's webhook and gets a
Workload (labelled with the Job's uid) whose conditions say why it waits. Those
messages are shown verbatim: Kueue's reason strings change between versions, so
nothing here matches on them. Positions come from Kueue's visibility API (an
aggregated API, `visibility.kueue.x-k8s.io`); where that answers 403 or 404 the
LocalQueue's own pending count stands in.

The functions above the line are pure; the ones below make one request each.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import NotFound, UsageError

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"  # on the Workload Kueue makes for a Job (or a Pod)
ADMISSION_GATE = "kueue.x-k8s.io/admission"  # the scheduling gate on pods Kueue has not admitted
KUEUE_GROUP = "kueue.x-k8s.io"
VISIBILITY_GROUP = "visibility.kueue.x-k8s.io"
# Newest first: v0.17 serves both and stores v1beta2; older releases serve v1beta1 only.
VERSIONS = ("v1beta2", "v1beta1")
ENV_QUEUE = "PYPOD_QUEUE"  # in a queued driver: K8sCluster's default queue for its workers
POSITION_REFRESH_S = 5.0  # the one periodic request while a run waits: positions are not watchable
_NAMESPACE_PLACEHOLDER = "{namespace}"
_QUEUE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")


# -- pure -------------------------------------------------------------------------------


def expand_queue(queue: str | None, namespace: str) -> str | None:
    """`{namespace}-user-queue` (as EIDF names its LocalQueues) for the run's namespace."""
    if not queue:
        return None
    name = queue.replace(_NAMESPACE_PLACEHOLDER, namespace)
    if not _QUEUE_NAME.match(name):
        raise UsageError(
            f"queue name {name!r} is not a valid LocalQueue name",
            hint="use lower-case letters, digits, '-' and '.', at most 63 characters, e.g. --queue team-queue",
        )
    return name


def job_queue(job: Mapping[str, Any]) -> str:
    """The LocalQueue a Job is labelled for, "" if none."""
    return ((job.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL, "")


@dataclass(frozen=True)
class WorkloadView:
    """What a Workload's conditions say. `phase`: pending, reserved (quota reserved, admission
    checks outstanding), admitted, evicted or finished."""

    name: str
    phase: str
    message: str = ""
    cluster_queue: str = ""


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), None)


def _is_true(condition: Mapping[str, Any] | None) -> bool:
    return bool(condition) and condition.get("status") == "True"  # type: ignore[union-attr]


def explain_workload(workload: Mapping[str, Any]) -> WorkloadView:
    name = (workload.get("metadata") or {}).get("name", "")
    cluster_queue = ((workload.get("status") or {}).get("admission") or {}).get("clusterQueue", "")
    finished, evicted = _condition(workload, "Finished"), _condition(workload, "Evicted")
    admitted, reserved = _condition(workload, "Admitted"), _condition(workload, "QuotaReserved")
    if _is_true(finished):
        return WorkloadView(name, "finished", finished.get("message", ""), cluster_queue)  # type: ignore[union-attr]
    if _is_true(admitted):
        return WorkloadView(name, "admitted", admitted.get("message", ""), cluster_queue)  # type: ignore[union-attr]
    if _is_true(reserved):
        # Quota is held; admission checks (e.g. provisioning) decide the rest.
        message = (admitted or {}).get("message") or reserved.get("message", "")  # type: ignore[union-attr]
        return WorkloadView(name, "reserved", message, cluster_queue)
    if _is_true(evicted):
        return WorkloadView(name, "evicted", evicted.get("message", ""), cluster_queue)  # type: ignore[union-attr]
    return WorkloadView(name, "pending", (reserved or {}).get("message", ""), cluster_queue)


@dataclass(frozen=True)
class QueuePosition:
    """0-based, as Kueue counts: 0 is next in line."""

    local: int
    cluster: int


def position_in(summary: Mapping[str, Any], workload: str) -> QueuePosition | None:
    """Our Workload's positions in a visibility API PendingWorkloadsSummary; None if absent."""
    for item in summary.get("items") or []:
        if (item.get("metadata") or {}).get("name") == workload:
            return QueuePosition(int(item.get("positionInLocalQueue", 0)), int(item.get("positionInClusterQueue", 0)))
    return None


def pending_count(local_queue: Mapping[str, Any]) -> int | None:
    status = local_queue.get("status") or {}
    value = status.get("pendingWorkloads")
    return int(value) if value is not None else None


@dataclass(frozen=True)
class QueueProgress:
    """What is known about a queued run besides its Workload: where it stands."""

    queue: str
    cluster_queue: str = ""
    position: QueuePosition | None = None
    pending: int | None = None  # the LocalQueue's pending count, when positions cannot be read


def _standing(progress: QueueProgress | None) -> str:
    if progress is None:
        return ""
    if progress.position is not None:
        where = f"ClusterQueue {progress.cluster_queue}" if progress.cluster_queue else "its ClusterQueue"
        return f", position {progress.position.local + 1} ({progress.position.cluster + 1} in {where})"
    if progress.pending is not None:
        return f", {progress.pending} pending there"
    return ""


def queue_line(queue: str, view: WorkloadView | None, progress: QueueProgress | None = None) -> str:
    """The status line of a suspended, queued Job."""
    if view is None:
        return f"waiting for admission in queue {queue}: the Job is suspended and Kueue has made no Workload yet"
    cluster_queue = view.cluster_queue or (progress.cluster_queue if progress else "")
    cq = f"ClusterQueue {cluster_queue}" if cluster_queue else "the ClusterQueue"
    if view.phase == "admitted":
        return f"admitted by {cq}" + (f": {view.message}" if view.message else "")
    if view.phase == "reserved":
        return f"quota reserved in {cq}, waiting for admission checks" + (f": {view.message}" if view.message else "")
    if view.phase == "finished":
        return f"the Workload finished: {view.message}"
    again = " again" if view.phase == "evicted" else ""
    message = view.message or "Kueue has not considered it yet"
    return f"waiting{again} in queue {queue}{_standing(progress)}: {message}"


def queue_column(view: WorkloadView | None, position: QueuePosition | None) -> str:
    """`pypod ps`'s QUEUE cell for a queued run."""
    if view is None:
        return "waiting"
    if view.phase in ("admitted", "finished"):
        return "admitted"
    if view.phase == "reserved":
        return "quota reserved"
    return f"waiting #{position.local + 1}" if position is not None else "waiting"


def missing_local_queue(queue: str, namespace: str, existing: Iterable[str]) -> NotFound:
    names = sorted(existing)
    if names:
        there = f"LocalQueues there: {', '.join(names)}"
        hint = "pass one of them with --queue (or the profile's queue), or ask the cluster's admins for one"
    else:
        there = "there are no LocalQueues there"
        hint = "use the namespace your queue is in (-n, or the profile's namespace), or ask the cluster's admins"
    return NotFound(f"LocalQueue {queue!r} does not exist in namespace {namespace!r}; {there}", hint=hint)


# -- one request each -------------------------------------------------------------------


def kueue_resource(kind: str, plural: str, version: str) -> Any:
    from lightkube.generic_resource import create_namespaced_resource

    return create_namespaced_resource(KUEUE_GROUP, version, kind, plural)


def workload_resource(version: str) -> Any:
    return kueue_resource("Workload", "workloads", version)


def local_queue_resource(version: str) -> Any:
    return kueue_resource("LocalQueue", "localqueues", version)


_PENDING_CLASSES: dict[str, Any] = {}


def pending_workloads_resource(version: str) -> Any:
    """The visibility API's `localqueues/NAME/pendingworkloads`, as a lightkube subresource."""
    if version not in _PENDING_CLASSES:
        from lightkube.core.resource import ApiInfo, ResourceDef
        from lightkube.generic_resource import GenericNamespacedStatus

        info = ApiInfo(
            resource=ResourceDef(VISIBILITY_GROUP, version, "PendingWorkloadsSummary"),
            parent=ResourceDef(VISIBILITY_GROUP, version, "LocalQueue"),
            plural="localqueues",
            verbs=["get"],
            action="pendingworkloads",
        )
        _PENDING_CLASSES[version] = type("PendingWorkloadsSummary", (GenericNamespacedStatus,), {"_api_info": info})
    return _PENDING_CLASSES[version]


def status_code(exc: BaseException) -> int | None:
    """The HTTP status of a failed request: lightkube's ApiError carries the Status object, but
    an unknown API path is answered in plain text, which lightkube leaves an HTTPStatusError."""
    code = getattr(getattr(exc, "status", None), "code", None)
    if code is None:
        code = getattr(getattr(exc, "response", None), "status_code", None)
    return code


@dataclass(frozen=True)
class LocalQueueInfo:
    name: str
    version: str  # the kueue.x-k8s.io version that answered
    cluster_queue: str = ""


def find_local_queue(client: Any, namespace: str, queue: str) -> LocalQueueInfo | None:
    """The LocalQueue `queue`, checked before anything is created.

    Raises NotFound listing the LocalQueues there when it is missing, or when the cluster
    serves no Kueue API at all; None when LocalQueues cannot be read (403): go on.
    """
    from httpx2 import HTTPStatusError

    for version in VERSIONS:
        try:
            queues = [q.to_dict() for q in client.list(local_queue_resource(version), namespace=namespace)]
        except HTTPStatusError as exc:
            if status_code(exc) == 404:
                continue  # this version is not served
            if status_code(exc) in (401, 403):
                return None
            raise
        for item in queues:
            if item["metadata"]["name"] == queue:
                return LocalQueueInfo(queue, version, (item.get("spec") or {}).get("clusterQueue", ""))
        raise missing_local_queue(queue, namespace, (q["metadata"]["name"] for q in queues))
    raise NotFound(
        f"the cluster has no Kueue (no {KUEUE_GROUP} API), so queue {queue!r} cannot admit the run",
        hint="drop --queue (and the profile's queue) for this cluster, or ask its admins about Kueue",
    )


class PositionsUnavailable(Exception):
    """The visibility API answered 403 or 404: positions cannot be had here."""


def read_pending(client: Any, namespace: str, queue: str, versions: Iterable[str] = VERSIONS):
    """(the LocalQueue's PendingWorkloadsSummary as a dict, the version that answered).
    Raises PositionsUnavailable on 403/404."""
    from httpx2 import HTTPStatusError

    for version in versions:
        try:
            summary = client.get(pending_workloads_resource(version), queue, namespace=namespace)
        except HTTPStatusError as exc:
            if status_code(exc) == 404:
                continue
            if status_code(exc) in (401, 403):
                raise PositionsUnavailable(str(exc)) from exc
            raise
        return summary.to_dict(), version
    raise PositionsUnavailable("the visibility API is not served")


def read_position(client: Any, namespace: str, queue: str, workload: str, versions: Iterable[str] = VERSIONS):
    """(our QueuePosition or None, the version that answered). Raises PositionsUnavailable on 403/404."""
    summary, version = read_pending(client, namespace, queue, versions)
    return position_in(summary, workload), version


def list_workloads(client: Any, namespace: str) -> dict[str, dict[str, Any]] | None:
    """The namespace's Workloads by the uid of the Job they stand for; None when unreadable."""
    from httpx2 import HTTPStatusError

    for version in VERSIONS:
        try:
            items = [w.to_dict() for w in client.list(workload_resource(version), namespace=namespace)]
        except HTTPStatusError as exc:
            if status_code(exc) == 404:
                continue
            if status_code(exc) in (401, 403):
                return None
            raise
        return {uid: w for w in items if (uid := (w["metadata"].get("labels") or {}).get(JOB_UID_LABEL))}
    return None


@dataclass(frozen=True)
class QueueTarget:
    """A queued run's Job, as the watcher needs it: its queue, its uid (the Workload's label),
    and what the LocalQueue check learnt (the version that answered, the ClusterQueue)."""

    queue: str
    job_uid: str
    version: str | None = None  # None: unknown (LocalQueues unreadable); each of VERSIONS is tried
    cluster_queue: str = ""

    def versions(self) -> tuple[str, ...]:
        return (self.version,) if self.version else VERSIONS
