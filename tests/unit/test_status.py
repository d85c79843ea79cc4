from __future__ import annotations

from pypod.kube.status import container_started, explain


def pod(phase="Pending", node="", conditions=(), waiting=None, running=False, terminated=None) -> dict:
    state = {}
    if waiting:
        state = {"waiting": waiting}
    if running:
        state = {"running": {}}
    if terminated:
        state = {"terminated": terminated}
    status = {"phase": phase, "conditions": list(conditions)}
    if state:
        status["containerStatuses"] = [{"name": "driver", "state": state}]
    return {"metadata": {"name": "p"}, "spec": {"nodeName": node}, "status": status}


def test_scheduler_message_is_shown_verbatim():
    msg = "0/4 nodes are available: 1 Insufficient memory, 3 node(s) had untolerated taint."
    report = explain({}, pod(conditions=[{"type": "PodScheduled", "status": "False", "message": msg}]))
    assert report.state == "pending"
    assert report.line == f"unschedulable: {msg}"
    assert not report.fatal


def test_image_pull_errors_are_fatal_with_hint():
    for reason in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError"):
        report = explain({}, pod(node="n", waiting={"reason": reason, "message": "boom"}))
        assert report.fatal, reason
        assert report.line == f"{reason}: boom"
        assert report.hint


def test_pulling_event_is_reported():
    events = [{"reason": "Pulling", "message": 'Pulling image "x"', "lastTimestamp": "2026-01-01T00:00:01Z"}]
    report = explain({}, pod(node="n", waiting={"reason": "ContainerCreating"}), events)
    assert report.state == "starting"
    assert "pulling image" in report.line


def test_suspended_job_shows_kueue_admission_message():
    job = {"metadata": {"labels": {"kueue.x-k8s.io/queue-name": "gpu"}}, "spec": {"suspend": True}}
    workload = {
        "status": {
            "conditions": [
                {"type": "QuotaReserved", "status": "False", "message": "couldn't assign flavors: insufficient quota"}
            ]
        }
    }
    report = explain(job, None, [], workload)
    assert report.state == "queued"
    assert report.line == "waiting in queue gpu: couldn't assign flavors: insufficient quota"
    assert explain({"spec": {"suspend": True}}, None).line == "waiting for admission: the Job is suspended"


def test_running_and_terminated():
    assert explain({}, pod("Running", "n", running=True)).state == "running"
    done = explain({}, pod("Failed", "n", terminated={"exitCode": 3, "reason": "Error"}))
    assert (done.state, done.exit_code, done.line) == ("failed", 3, "exited with code 3 (Error)")
    oom = explain({}, pod("Failed", "n", terminated={"exitCode": 137, "reason": "OOMKilled"}))
    assert oom.line == "exited with code 137 (OOMKilled)"


def test_a_container_has_started_once_running_or_ended_not_while_waiting() -> None:
    def with_state(state: dict) -> dict:
        return {"status": {"containerStatuses": [{"name": "driver", "state": state}]}}

    assert not container_started(with_state({"waiting": {"reason": "ContainerCreating"}}), "driver")
    assert container_started(with_state({"running": {"startedAt": "now"}}), "driver")
    assert container_started(with_state({"terminated": {"exitCode": 0}}), "driver")
    assert not container_started(with_state({"running": {}}), "sidecar")
    assert not container_started({"status": {}}, "driver")
