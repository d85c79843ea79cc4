"""`pypod ps`, `logs`, `attach`, `rm`: runs found by their labels, from any folder."""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import NotFound
from ..kube.manifests import (
    ANNOTATION_DIRTY,
    DRIVER_CONTAINER,
    JOB_NAME_LABEL,
    LABEL_COMMIT,
    LABEL_USER,
    SELECTOR,
)
from ..names import label_value
from .driver import LOST_CONNECTION, Driver, driver_pod, history_path, local_user, warn_untracked


def _selector(all_users: bool) -> dict[str, str]:
    key, value = SELECTOR.split("=")
    labels = {key: value}
    user = label_value(local_user())
    if not all_users and user:
        labels[LABEL_USER] = user
    return labels


def _age(created: Any) -> str:
    if created is None:
        return "?"
    seconds = (datetime.datetime.now(datetime.UTC) - created).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def run_commit(labels: dict[str, str], annotations: dict[str, str]) -> str:
    """Pure: the commit a run has, as `pypod ps` shows it: `abc1234 (git)` when fetched by
    --git, `abc1234+dirty` for an image of a tree with uncommitted changes."""
    from ..gitsource import ANNOTATION_GIT_COMMIT

    commit = labels.get(LABEL_COMMIT, "") or "-"
    if annotations.get(ANNOTATION_GIT_COMMIT):
        return f"{annotations[ANNOTATION_GIT_COMMIT][:7]} (git)"
    return f"{commit}+dirty" if annotations.get(ANNOTATION_DIRTY) == "true" and commit != "-" else commit


def list_runs(session: Driver, all_users: bool) -> int:
    from lightkube.resources.batch_v1 import Job
    from rich.console import Console
    from rich.table import Table

    with session.api("list", "jobs"):
        jobs = list(session.client.list(Job, namespace=session.namespace, labels=_selector(all_users)))
    with session.api("list", "pods"):
        from lightkube.resources.core_v1 import Pod

        pods = {
            p.metadata.labels.get(JOB_NAME_LABEL): p
            for p in session.client.list(Pod, namespace=session.namespace, labels=_selector(all_users))
        }
    queues = queue_cells(session, [j.to_dict() for j in jobs])
    table = Table(box=None, pad_edge=False)
    from .livesync import sync_column

    columns = ("RUN", "MODE", "COMMIT", "STATUS", "AGE", "NODE", *(("QUEUE",) if queues else ()), "SYNC", "IMAGE")
    for column in columns:
        table.add_column(column)
    from ..kube.status import explain

    for job in sorted(jobs, key=lambda j: j.metadata.creationTimestamp):
        name = job.metadata.name
        pod = pods.get(name)
        report = explain(job.to_dict(), pod.to_dict() if pod else None)
        image = job.spec.template.spec.containers[0].image
        table.add_row(
            name,
            job.metadata.labels.get("pypod.dev/mode", "?"),
            run_commit(job.metadata.labels or {}, job.metadata.annotations or {}),
            report.state if report.state != "pending" else f"pending: {report.line}",
            _age(job.metadata.creationTimestamp),
            report.node or "-",
            *((queues.get(name, "-"),) if queues else ()),
            sync_column(session.namespace, name),
            image,
        )
    console = Console(soft_wrap=True)
    if not jobs:
        console.print(f"no runs in namespace {session.namespace}")
    else:
        console.print(table)
    return 0


def queue_cells(session: Driver, jobs: list[dict[str, Any]]) -> dict[str, str]:
    """QUEUE for each queued run: `<queue>: admitted`, or `<queue>: waiting #N` while it waits.

    One list of Workloads, and one visibility query per queue that has runs waiting; when
    those are refused, the runs still show admitted or waiting, without a position.
    """
    from httpx2 import HTTPStatusError

    from ..kube.queue import (
        PositionsUnavailable,
        explain_workload,
        job_queue,
        list_workloads,
        position_in,
        queue_column,
        read_pending,
    )

    queued = [j for j in jobs if job_queue(j)]
    if not queued:
        return {}
    with session.api("list", "workloads.kueue.x-k8s.io"):
        workloads = list_workloads(session.client, session.namespace) or {}
    summaries: dict[str, dict[str, Any] | None] = {}
    cells = {}
    for job in queued:
        queue = job_queue(job)
        workload = workloads.get(job["metadata"]["uid"])
        view = explain_workload(workload) if workload else None
        position = None
        if view is not None and view.phase in ("pending", "evicted"):
            if queue not in summaries:
                try:
                    summaries[queue] = read_pending(session.client, session.namespace, queue)[0]
                except (PositionsUnavailable, HTTPStatusError):  # no position then; the rest of ps stands
                    summaries[queue] = None
            summary = summaries[queue]
            position = position_in(summary, view.name) if summary else None
        cells[job["metadata"]["name"]] = f"{queue}: {queue_column(view, position)}"
    return cells


def show_logs(session: Driver, name: str, follow: bool) -> int:
    pod = driver_pod(session, name)
    if follow:
        pod = wait_for_driver_start(session, name, pod)
    with session.api("get", "pods/log", pod.metadata.name):
        for line in session.client.log(
            pod.metadata.name, namespace=session.namespace, container=DRIVER_CONTAINER, follow=follow
        ):
            sys.stdout.write(line)
            sys.stdout.flush()
    return 0


def wait_for_driver_start(session: Driver, name: str, pod: Any) -> Any:
    """The run's pod once its driver container has a log to follow (as `kubectl logs -f
    job/NAME` waits for a pod), saying why meanwhile; PodFailedToStart if it never will."""
    from ..errors import PodFailedToStart
    from ..kube.status import container_started, explain

    started = time.monotonic()
    try:
        while True:
            manifest = pod.to_dict()
            phase = (manifest.get("status") or {}).get("phase")
            if container_started(manifest, DRIVER_CONTAINER) or phase in ("Succeeded", "Failed"):
                return pod
            report = explain(None, manifest)
            if report.fatal:
                raise PodFailedToStart(f"run {name!r}: {report.line}", hint=report.hint)
            session.out.status(f"[{time.monotonic() - started:4.0f}s] {name}: {report.line}")
            time.sleep(0.5)
            pod = driver_pod(session, name)
    finally:
        session.out.done()


def attach_run(session: Driver, name: str) -> int:
    pod = driver_pod(session, name)
    if pod.metadata.labels.get("pypod.dev/mode") != "repl":
        raise NotFound(f"run {name!r} is a job, not a REPL", hint=f"follow it with: pypod logs {name} -f")
    if pod.status is None or pod.status.phase != "Running":
        phase = pod.status.phase if pod.status else "unknown"
        raise NotFound(f"run {name!r} is not running (phase {phase})", hint="start a new one with `pypod`")
    live = None
    if session.settings.sync:
        from ..project import load_project
        from .livesync import same_project, start_beside_repl

        project = load_project(Path.cwd())
        if same_project(pod.metadata.labels, project):
            live = start_beside_repl(session, pod.to_dict(), name, project, session.settings, session.out)
        else:
            session.out.info(f"sync: off (this folder is not {name}'s project)")
    from ..kube.watch import RunWatcher
    from .dashboard import SessionDashboard

    watcher = RunWatcher(session.client, session.namespace, name).start()
    dashboard = SessionDashboard(session, watcher, pod.metadata.name).start()
    try:
        end = session.relay_repl(pod.metadata.name, name, [], history_path(session.settings))
        if live is not None and end.installed:
            live.settle()
    finally:
        dashboard.stop()
        watcher.stop()
        if live is not None:
            live.stop()
    if live is not None:  # this folder is the run's project
        warn_untracked(Path(live.syncer.tree.root), end, session.out)
    code = end.code
    if code != LOST_CONNECTION:
        session.delete_job(name)
    return code


def remove_runs(session: Driver, names: tuple[str, ...], everything: bool) -> int:
    from lightkube.resources.batch_v1 import Job

    targets = list(names)
    if everything:
        with session.api("list", "jobs"):
            targets += [
                j.metadata.name for j in session.client.list(Job, namespace=session.namespace, labels=_selector(False))
            ]
    if not targets:
        session.out.info("nothing to remove (give RUN names or --all)")
        return 0
    for name in dict.fromkeys(targets):
        session.delete_job(name)
        session.out.info(f"removed {name}")
    return 0
