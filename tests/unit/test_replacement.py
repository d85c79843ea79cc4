from __future__ import annotations

from pypod.kube.replacement import (
    ReplacePolicy,
    decide_replacement,
    gave_up_message,
    killed_worker_message,
    recent_failures,
    stranded_task_message,
)
from pypod.kube.workers import WorkerEnd, worker_end

OOM = WorkerEnd("c-w3", "c-w3", "OOMKilled", exit_code=137, memory_limit="300Mi")
POLICY = ReplacePolicy(max_failures=4, failure_window=600, backoff=1, max_backoff=5)


def test_the_first_end_is_replaced_at_once_then_with_doubling_backoff_up_to_a_cap():
    delays = [decide_replacement(OOM, [0.0] * n, 10.0, POLICY).delay for n in range(3)]
    assert delays == [0.0, 1.0, 2.0]
    capped = ReplacePolicy(max_failures=20, backoff=1, max_backoff=5)
    assert decide_replacement(OOM, [0.0] * 10, 10.0, capped).delay == 5


def test_after_max_failures_in_the_window_replacing_stops():
    decision = decide_replacement(OOM, [1.0, 2.0, 3.0], 10.0, POLICY)
    assert (decision.replace, decision.limit_reached, decision.failures) == (False, True, 4)
    # Ends older than the window no longer count.
    old = decide_replacement(OOM, [1.0, 2.0, 3.0], 1000.0, POLICY)
    assert (old.replace, old.failures, old.delay) == (True, 1, 0.0)
    assert recent_failures([1.0, 500.0, 900.0], 1000.0, 600) == [500.0, 900.0]


def test_what_would_fail_again_and_replace_false_are_not_replaced():
    for reason in ("PendingTimeout", "ErrImagePull", "InvalidImageName"):
        decision = decide_replacement(WorkerEnd("w", "w", reason), [], 0.0, POLICY)
        assert (decision.replace, decision.failures) == (False, 0)
    assert decide_replacement(OOM, [], 0.0, None).replace is False
    for reason in ("OOMKilled", "Evicted", "Error", "Completed", "Deleted"):
        assert decide_replacement(WorkerEnd("w", "w", reason), [], 0.0, POLICY).replace


def test_the_failing_task_is_told_why_the_pod_ended_and_what_to_do():
    text = killed_worker_message("f-123", 4, "c-w3 (tcp://10.0.0.9:1)", OOM)
    assert text.startswith("Attempted to run task 'f-123' on 4 different workers, but all those workers died")
    assert "The last: worker c-w3 (pod c-w3) ended: OOMKilled (limit 300Mi, exit code 137)." in text
    assert text.endswith("Give the workers more memory (memory=...), or make the task use less")
    unknown = killed_worker_message("f", 4, "c-w3 (tcp://10.0.0.9:1)", None)
    assert "worker c-w3 (tcp://10.0.0.9:1) died, and its pod gave no reason in time" in unknown


def test_stranded_tasks_and_the_limit_say_what_happened():
    stranded = stranded_task_message("g-1", OOM, "replace=False")
    assert stranded.startswith("task 'g-1' cannot run: no worker is left and none will be started (replace=False)")
    assert "OOMKilled (limit 300Mi" in stranded
    decision = decide_replacement(OOM, [1.0, 2.0, 3.0], 10.0, POLICY)
    message = gave_up_message("gpu", decision, POLICY, OOM)
    assert message.startswith("worker group 'gpu': 4 workers ended within 10 min (max_failures=4)")
    assert message.endswith("then cluster.scale(n, worker_group='gpu') starts workers again")


def test_an_oom_end_names_the_containers_limit_and_group():
    pod = {
        "metadata": {"name": "c-gpu-w1", "labels": {"pypod.dev/worker": "c-gpu-w1", "pypod.dev/worker-group": "gpu"}},
        "spec": {"containers": [{"resources": {"limits": {"memory": "300Mi", "cpu": "1"}}}]},
        "status": {
            "phase": "Failed",
            "containerStatuses": [{"state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}],
        },
    }
    end = worker_end(pod)
    assert end is not None and (end.group, end.memory_limit) == ("gpu", "300Mi")
    assert str(end) == "worker c-gpu-w1 (pod c-gpu-w1) ended: OOMKilled (limit 300Mi, exit code 137)"
    # The limit is only named where it is the reason.
    pod["status"]["containerStatuses"][0]["state"]["terminated"] = {"reason": "Error", "exitCode": 1}
    assert str(worker_end(pod)) == "worker c-gpu-w1 (pod c-gpu-w1) ended: Error (exit code 1)"
