"""When a worker pod ends: is it replaced, after how long, and what the user is told.
Pure: no cluster here.

Like a Deployment, a K8sCluster keeps each group at the size it was asked for; unlike
one, it stops after `max_failures` ends of a group within `failure_window` seconds, so
a worker that always dies is not restarted forever. Replacements back off: the first
at once (a worker OOMKilled by one task should be back before Dask retries it), then
1 s, 2 s, 4 s ... up to a minute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .status import FATAL_WAITING
from .workers import WorkerEnd

# A new pod would end the same way: it could not be scheduled, or its image not pulled.
NOT_REPLACED = frozenset({"PendingTimeout", *FATAL_WAITING})

NEXT_STEP = {
    "OOMKilled": "give the workers more memory (memory=...), or make the task use less",
    "Evicted": "the node ran short of a resource; ask for what the task uses (memory=..., ephemeral storage)",
    "Deleted": "the pod was deleted from outside pypod",
    "PendingTimeout": "no node could take the worker; ask for less, or raise pending_timeout",
}
DEFAULT_NEXT_STEP = "see cluster.logs() or cluster.worker_events() for what the worker said"


@dataclass(frozen=True)
class ReplacePolicy:
    max_failures: int = 5
    failure_window: float = 600.0
    backoff: float = 1.0
    max_backoff: float = 60.0


@dataclass(frozen=True)
class Replacement:
    """The decision for one ended worker. `failures` counts the group's recent ends,
    this one included (0 when the end does not count, e.g. replace=False)."""

    replace: bool
    delay: float = 0.0
    failures: int = 0
    limit_reached: bool = False


def recent_failures(times: Sequence[float], now: float, window: float) -> list[float]:
    return [t for t in times if now - t <= window]


def decide_replacement(
    end: WorkerEnd, failure_times: Sequence[float], now: float, policy: ReplacePolicy | None
) -> Replacement:
    """`failure_times`: when the group's earlier replaced workers ended; `policy` None is replace=False."""
    if policy is None or end.reason in NOT_REPLACED:
        return Replacement(False)
    failures = len(recent_failures(failure_times, now, policy.failure_window)) + 1
    if failures >= policy.max_failures:
        return Replacement(False, failures=failures, limit_reached=True)
    delay = 0.0 if failures == 1 else min(policy.max_backoff, policy.backoff * 2 ** (failures - 2))
    return Replacement(True, delay, failures)


def next_step(end: WorkerEnd | None) -> str:
    return NEXT_STEP.get(end.reason, DEFAULT_NEXT_STEP) if end else DEFAULT_NEXT_STEP


def killed_worker_message(task: object, attempts: int, last_worker: str, end: WorkerEnd | None) -> str:
    """Dask's KilledWorker text, with why the last worker's pod ended and what to do."""
    why = str(end) if end else f"worker {last_worker} died, and its pod gave no reason in time"
    return (
        f"Attempted to run task {task!r} on {attempts} different workers, but all those workers died "
        f"while running it. The last: {why}. {next_step(end).capitalize()}"
    )


def stranded_task_message(task: object, end: WorkerEnd, cause: str) -> str:
    return (
        f"task {task!r} cannot run: no worker is left and none will be started ({cause}); "
        f"the last to go: {end}. {next_step(end).capitalize()}"
    )


def gave_up_message(group: str, decision: Replacement, policy: ReplacePolicy, end: WorkerEnd) -> str:
    minutes = policy.failure_window / 60
    return (
        f"worker group {group!r}: {decision.failures} workers ended within {minutes:g} min "
        f"(max_failures={policy.max_failures}), the latest: {end}; not replacing them any more. "
        f"{next_step(end).capitalize()}, then cluster.scale(n"
        + ("" if group == "default" else f", worker_group={group!r}")
        + ") starts workers again"
    )
