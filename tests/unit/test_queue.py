"""Kueue's view of a run: Workload conditions, positions, the status line, the LocalQueue check."""

from __future__ import annotations

import httpx2
import pytest
from lightkube.core.exceptions import ApiError

from pypod.errors import NotFound, PendingTimeout, UsageError
from pypod.kube.queue import (
    QueuePosition,
    QueueProgress,
    WorkloadView,
    expand_queue,
    explain_workload,
    find_local_queue,
    job_queue,
    missing_local_queue,
    position_in,
    queue_column,
    queue_line,
)
from pypod.kube.status import explain, pending_timeout_error

# Messages as Kueue v0.17.0 writes them (seen in the harness; see HARNESS-NOTES.md).
NO_QUOTA = (
    "couldn't assign flavors to pod set main: insufficient unused quota for cpu in flavor default-flavor, "
    "200m more needed"
)


def workload(*conditions: dict, name: str = "job-run-1-3f2a1", cluster_queue: str = "") -> dict:
    status: dict = {"conditions": list(conditions)}
    if cluster_queue:
        status["admission"] = {"clusterQueue": cluster_queue, "podSetAssignments": []}
    return {"metadata": {"name": name, "labels": {"kueue.x-k8s.io/job-uid": "u1"}}, "status": status}


def cond(kind: str, status: str, message: str = "", reason: str = "") -> dict:
    return {"type": kind, "status": status, "message": message, "reason": reason or kind}


def queued_job(suspend: bool = True, queue: str = "team-user-queue") -> dict:
    return {"metadata": {"name": "run-1", "labels": {"kueue.x-k8s.io/queue-name": queue}}, "spec": {"suspend": suspend}}


def test_a_workload_waiting_for_quota_is_pending_with_kueues_message_verbatim():
    view = explain_workload(workload(cond("QuotaReserved", "False", NO_QUOTA, reason="Pending")))
    assert view == WorkloadView("job-run-1-3f2a1", "pending", NO_QUOTA)


def test_admitted_reserved_evicted_and_finished_workloads():
    admitted = workload(
        cond("QuotaReserved", "True", "Quota reserved in ClusterQueue cq"),
        cond("Admitted", "True", "The workload is admitted"),
        cluster_queue="cq",
    )
    assert explain_workload(admitted).phase == "admitted"
    assert explain_workload(admitted).cluster_queue == "cq"
    reserved = workload(
        cond("QuotaReserved", "True", "Quota reserved in ClusterQueue cq"),
        cond("Admitted", "False", "The workload has not all checks ready"),
        cluster_queue="cq",
    )
    assert explain_workload(reserved) == WorkloadView(
        "job-run-1-3f2a1", "reserved", "The workload has not all checks ready", "cq"
    )
    evicted = workload(cond("QuotaReserved", "False", NO_QUOTA), cond("Evicted", "True", "Preempted to fit gold"))
    assert explain_workload(evicted).phase == "evicted"
    assert explain_workload(evicted).message == "Preempted to fit gold"
    finished = workload(cond("Admitted", "True"), cond("Finished", "True", "Job finished successfully"))
    assert explain_workload(finished).phase == "finished"
    fresh = explain_workload(workload())
    assert (fresh.phase, fresh.message) == ("pending", "")


def test_positions_come_from_the_visibility_summary_by_workload_name():
    summary = {
        "kind": "PendingWorkloadsSummary",
        "items": [
            {"metadata": {"name": "other"}, "positionInLocalQueue": 0, "positionInClusterQueue": 0},
            {"metadata": {"name": "mine"}, "positionInLocalQueue": 1, "positionInClusterQueue": 4},
        ],
    }
    assert position_in(summary, "mine") == QueuePosition(1, 4)
    assert position_in(summary, "absent") is None
    assert position_in({"items": None}, "mine") is None


def test_the_line_counts_positions_from_one_and_names_the_cluster_queue():
    view = WorkloadView("w", "pending", NO_QUOTA)
    progress = QueueProgress("q", "cq", position=QueuePosition(0, 2))
    assert queue_line("q", view, progress) == f"waiting in queue q, position 1 (3 in ClusterQueue cq): {NO_QUOTA}"
    counted = QueueProgress("q", pending=4)
    assert queue_line("q", view, counted) == f"waiting in queue q, 4 pending there: {NO_QUOTA}"
    assert queue_line("q", view) == f"waiting in queue q: {NO_QUOTA}"
    assert "has not considered it yet" in queue_line("q", WorkloadView("w", "pending"))
    assert "made no Workload yet" in queue_line("q", None)
    assert queue_line("q", WorkloadView("w", "evicted", "Preempted")).startswith("waiting again in queue q: ")
    assert queue_line("q", WorkloadView("w", "admitted", "", "cq")) == "admitted by ClusterQueue cq"
    reserved = queue_line("q", WorkloadView("w", "reserved", "checks pending", "cq"))
    assert reserved == "quota reserved in ClusterQueue cq, waiting for admission checks: checks pending"


def test_ps_queue_cells():
    assert queue_column(None, None) == "waiting"
    assert queue_column(WorkloadView("w", "pending"), QueuePosition(2, 5)) == "waiting #3"
    assert queue_column(WorkloadView("w", "pending"), None) == "waiting"
    assert queue_column(WorkloadView("w", "admitted"), None) == "admitted"


def test_queue_names_take_the_namespace_and_must_be_valid():
    assert expand_queue("{namespace}-user-queue", "eidf042ns") == "eidf042ns-user-queue"
    assert expand_queue(None, "ns") is None
    assert expand_queue("", "ns") is None
    with pytest.raises(UsageError, match="not a valid LocalQueue name"):
        expand_queue("Team Queue", "ns")
    assert job_queue(queued_job()) == "team-user-queue"
    assert job_queue({"metadata": {}}) == ""


def test_a_suspended_queued_job_explains_itself_with_its_workload_and_position():
    wl = workload(cond("QuotaReserved", "False", NO_QUOTA))
    report = explain(queued_job(), None, [], wl, QueueProgress("team-user-queue", "cq", QueuePosition(0, 0)))
    assert report.state == "queued"
    assert report.queue == "team-user-queue"
    assert report.workload is not None and report.workload.phase == "pending"
    assert report.line == f"waiting in queue team-user-queue, position 1 (1 in ClusterQueue cq): {NO_QUOTA}"
    # A suspended Job that nobody queued says only that.
    assert explain({"spec": {"suspend": True}}, None).line == "waiting for admission: the Job is suspended"


def test_an_admitted_job_reports_its_pod_and_keeps_its_queue():
    wl = workload(cond("QuotaReserved", "True"), cond("Admitted", "True"), cluster_queue="cq")
    pod = {
        "metadata": {"name": "run-1-abcde"},
        "spec": {},
        "status": {"phase": "Pending", "conditions": [cond("PodScheduled", "False", "0/2 nodes are available")]},
    }
    report = explain(queued_job(suspend=False), pod, [], wl)
    assert report.state == "pending"
    assert report.line == "unschedulable: 0/2 nodes are available"
    assert report.queue == "team-user-queue"
    assert report.workload is not None and report.workload.phase == "admitted"


def test_a_worker_pod_gated_by_kueue_is_queued():
    pod = {
        "metadata": {"name": "w0", "labels": {"kueue.x-k8s.io/queue-name": "q"}},
        "spec": {"schedulingGates": [{"name": "kueue.x-k8s.io/admission"}]},
        "status": {
            "phase": "Pending",
            "conditions": [cond("PodScheduled", "False", "Scheduling is blocked due to non-empty scheduling gates")],
        },
    }
    report = explain(None, pod)
    assert (report.state, report.line) == ("queued", "waiting for Kueue to admit it in queue q")


def test_pending_timeout_says_quota_or_scheduler():
    waiting = explain(queued_job(), None, [], workload(cond("QuotaReserved", "False", NO_QUOTA)))
    quota = pending_timeout_error(waiting, 30)
    assert isinstance(quota, PendingTimeout)
    assert (
        quota.message
        == f"the driver was still waiting for quota after 30s: waiting in queue team-user-queue: {NO_QUOTA}"
    )
    assert "--queue" in quota.hint
    pod = {"metadata": {}, "spec": {}, "status": {"conditions": [cond("PodScheduled", "False", "0/2 nodes")]}}
    placed = explain(queued_job(suspend=False), pod, [], workload(cond("Admitted", "True")))
    assert "admitted by Kueue but not placed on a node" in pending_timeout_error(placed, 30).message
    plain = explain({}, pod)
    assert pending_timeout_error(plain, 30).message == "the driver was not running after 30s: unschedulable: 0/2 nodes"


def test_a_missing_local_queue_lists_the_ones_there():
    error = missing_local_queue("gpu-queue", "ns", ["b-queue", "a-queue"])
    assert isinstance(error, NotFound)
    assert (
        error.message == "LocalQueue 'gpu-queue' does not exist in namespace 'ns'; LocalQueues there: a-queue, b-queue"
    )
    assert "there are no LocalQueues there" in missing_local_queue("q", "ns", []).message


def _api_error(code: int) -> ApiError:
    request = httpx2.Request("GET", "https://k/apis")
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": f"answered {code}", "code": code}
    return ApiError(request, httpx2.Response(code, json=body, request=request))


class ListingClient:
    """Answers LocalQueue lists per API version: a list of names, or an HTTP error code."""

    def __init__(self, answers: dict[str, list[str] | int | str]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def list(self, resource, namespace):  # type: ignore[no-untyped-def]
        version = resource._api_info.resource.version
        self.asked.append(version)
        answer = self.answers.get(version, "404 page not found")
        if isinstance(answer, int):
            raise _api_error(answer)
        if isinstance(answer, str):  # an unknown API path: plain text, which lightkube does not decode
            request = httpx2.Request("GET", "https://k/apis")
            response = httpx2.Response(404, text=answer, request=request)
            raise httpx2.HTTPStatusError(answer, request=request, response=response)
        return [
            resource.from_dict({"metadata": {"name": n, "namespace": namespace}, "spec": {"clusterQueue": "cq"}})
            for n in answer
        ]


def test_the_local_queue_check_uses_the_newest_version_served():
    client = ListingClient({"v1beta2": "404 page not found", "v1beta1": ["team-user-queue"]})
    info = find_local_queue(client, "ns", "team-user-queue")
    assert info is not None and (info.version, info.cluster_queue) == ("v1beta1", "cq")
    assert client.asked == ["v1beta2", "v1beta1"]


def test_the_local_queue_check_goes_on_when_refused_and_fails_when_missing_or_no_kueue():
    assert find_local_queue(ListingClient({"v1beta2": 403}), "ns", "q") is None
    assert find_local_queue(ListingClient({"v1beta2": 404, "v1beta1": 403}), "ns", "q") is None
    with pytest.raises(NotFound, match="LocalQueues there: other"):
        find_local_queue(ListingClient({"v1beta2": ["other"]}), "ns", "q")
    with pytest.raises(NotFound, match="has no Kueue"):
        find_local_queue(ListingClient({}), "ns", "q")


def recorded() -> dict:
    """Objects Kueue v0.17.0 made in the harness for three Jobs in one LocalQueue: `first`
    admitted, `second` waiting for `first`'s quota, `huge` asking more than the ClusterQueue has."""
    import json
    from pathlib import Path

    return json.loads((Path(__file__).parent / "data" / "kueue-v0.17.0.json").read_text())


def test_recorded_workloads_explain_themselves_verbatim():
    objects = recorded()
    first, second, huge = (explain_workload(objects[name]) for name in ("first", "second", "huge"))
    assert (first.phase, first.cluster_queue, first.message) == (
        "admitted",
        "harness-cluster-queue",
        "The workload is admitted",
    )
    assert second.phase == "pending"
    assert second.message == condition_message(objects["second"], "QuotaReserved")
    assert huge.phase == "pending"
    assert "maximum capacity" in huge.message  # Kueue says why it can never fit; pypod passes it on


def condition_message(workload: dict, kind: str) -> str:
    return next(c["message"] for c in workload["status"]["conditions"] if c["type"] == kind)


def test_recorded_visibility_summary_gives_each_workload_its_place():
    objects = recorded()
    summary = objects["pending"]
    assert position_in(summary, objects["second"]["metadata"]["name"]) == QueuePosition(1, 1)
    assert position_in(summary, objects["huge"]["metadata"]["name"]) == QueuePosition(0, 0)
    assert position_in(summary, objects["first"]["metadata"]["name"]) is None  # admitted: not pending


def test_recorded_local_queue_status_counts_the_pending():
    from pypod.kube.queue import pending_count

    assert pending_count(recorded()["localqueue"]) == 2
