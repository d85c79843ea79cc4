"""Queued runs through the harness's real Kueue.

1. queue_admit_to_running_s: the median, over 5 runs, of the time from pypod's watch
   seeing the Workload admitted to pypod seeing the driver pod Running (goal < 1.5 s).
   Kueue unsuspends the Job, the Job controller makes the pod, the scheduler places it,
   the kubelet starts it (the image is on the node already).
2. queue_wait_requests_per_min: the HTTP requests pypod's client sends per minute while a
   run waits for quota behind another (goal: the watches, plus one position query every
   few seconds). Counted in-process at httpx2's Client.send, which every lightkube request
   goes through (a watch is one request until it is resumed), over a 60 s window.

    python benchmarks/queues.py

Runs pypod's own run code (Driver, RunWatcher) in this process against the harness.
Starts the harness if it is not up, and stops it again afterwards.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness import cluster as harness_cluster  # noqa: E402
from harness.layout import Layout  # noqa: E402

WINDOW_S = 60.0


def bench(name: str, value: float, unit: str) -> None:
    print(f"BENCH {name} {value:.3f} {unit}", flush=True)


class RequestCounter:
    """Counts the HTTP requests each httpx2 client sends; lightkube sends everything through
    one (its watches included), so one run's Driver has a count of its own."""

    def __init__(self) -> None:
        import httpx2

        self.counts: dict[int, int] = {}
        self.lock = threading.Lock()
        original = httpx2.Client.send
        counter = self

        def send(client, request, *args, **kwargs):  # type: ignore[no-untyped-def]
            with counter.lock:
                counter.counts[id(client)] = counter.counts.get(id(client), 0) + 1
            return original(client, request, *args, **kwargs)

        httpx2.Client.send = send  # type: ignore[method-assign]

    def of(self, lightkube_client: Any) -> int:
        """Requests sent so far by a lightkube Client (its GenericClient's httpx2 client)."""
        with self.lock:
            return self.counts.get(id(lightkube_client._client._client), 0)


def make_namespace(api: Any) -> str:
    from lightkube.resources.core_v1 import Namespace, ServiceAccount

    name = f"bench-{uuid.uuid4().hex[:8]}"
    api.create(Namespace.from_dict({"metadata": {"name": name}}))
    while not any(sa.metadata.name == "default" for sa in api.list(ServiceAccount, namespace=name)):
        time.sleep(0.1)
    return name


def local_queue(api: Any, namespace: str) -> tuple[str, Decimal]:
    """A LocalQueue on the harness's ClusterQueue, and that ClusterQueue's memory quota (the node
    has far more memory than that, so only Kueue holds a run back)."""
    from lightkube.generic_resource import create_global_resource

    from pypod.kube.queue import local_queue_resource
    from pypod.quantity import parse_quantity

    cluster_queues = create_global_resource("kueue.x-k8s.io", "v1beta2", "ClusterQueue", "clusterqueues")
    cq = next(iter(api.list(cluster_queues))).to_dict()
    memory = next(
        parse_quantity(str(r["nominalQuota"]), "memory")
        for g in cq["spec"]["resourceGroups"]
        for f in g["flavors"]
        for r in f["resources"]
        if r["name"] == "memory"
    )
    name = f"{namespace}-user-queue"
    body = {"metadata": {"name": name, "namespace": namespace}, "spec": {"clusterQueue": cq["metadata"]["name"]}}
    api.create(local_queue_resource("v1beta2").from_dict(body), namespace=namespace)
    return name, memory


def queued_driver(info: Any, namespace: str, queue: str, memory: str, code: str):  # type: ignore[no-untyped-def]
    """pypod's Driver with a job run planned for `queue`, as `pypod --queue` makes it."""
    from pypod.project import GitIdentity, Project
    from pypod.run.driver import Driver
    from pypod.run.output import Output
    from pypod.run.session import RunRequest, plan_run
    from pypod.settings import Settings

    settings = Settings(
        kubeconfig=info.admin_kubeconfig,
        namespace=namespace,
        image=info.base_image,
        queue=queue,
        cpu="100m",
        memory=memory,
        pending_timeout=300,
    )
    project = Project(root=Path("bench"), git=GitIdentity(repo="bench", branch="main", commit="", dirty=False))
    spec = plan_run(settings, project, RunRequest(mode="job", code=code), "bench", info.base_image, namespace=namespace)
    return Driver(settings, Output(quiet=True)), spec


def start_run(info: Any, namespace: str, queue: str, memory: str, code: str):  # type: ignore[no-untyped-def]
    from pypod.kube.manifests import driver_job
    from pypod.kube.queue import job_queue

    driver, spec = queued_driver(info, namespace, queue, memory, code)
    info_q = driver.check_queue(queue)
    job = driver_job(spec)
    name, uid = driver.create_job(job)
    return driver, name, driver.queue_target(info_q, job_queue(job), uid)


def admit_to_running(info: Any, namespace: str, queue: str) -> list[float]:
    from pypod.kube.watch import RunWatcher, wait_until_running

    samples = []
    for _ in range(5):
        driver, name, target = start_run(info, namespace, queue, "64Mi", "import time; time.sleep(2)")
        watcher = RunWatcher(driver.client, namespace, name, target).start()
        wait_until_running(watcher, 120, lambda report, elapsed: None, accept_terminated=True)
        running_at = time.monotonic()
        admitted_at = watcher.state.admitted_at
        watcher.stop()
        driver.delete_job(name)
        assert admitted_at is not None, "the Workload was never seen admitted"
        samples.append(running_at - admitted_at)
    return samples


def requests_while_waiting(info: Any, namespace: str, queue: str, quota: Decimal, counter: RequestCounter) -> float:
    from pypod.kube.watch import RunWatcher

    over_half = f"{int(quota * Decimal('0.6') / 2**20)}Mi"
    blocker, blocker_name, blocker_target = start_run(
        info, namespace, queue, over_half, f"import time; time.sleep({WINDOW_S + 60})"
    )
    watcher = RunWatcher(blocker.client, namespace, blocker_name, blocker_target).start()
    while watcher.state.admitted_at is None:
        time.sleep(0.2)
    watcher.stop()
    driver, name, target = start_run(info, namespace, queue, over_half, "print(1)")
    before = counter.of(driver.client)
    waiting = RunWatcher(driver.client, namespace, name, target).start()
    # Count only while it really waits for quota, as a user sees it.
    deadline = time.monotonic() + 30
    while not (waiting.snapshot().state == "queued" and waiting.state.progress and waiting.state.progress.position):
        assert time.monotonic() < deadline, waiting.snapshot().line
        time.sleep(0.2)
    started, begin = time.monotonic(), counter.of(driver.client)
    time.sleep(WINDOW_S)
    counted, still = counter.of(driver.client) - begin, waiting.snapshot()
    waiting.stop()
    assert still.state == "queued", f"the run stopped waiting within the window: {still.line}"
    print(f"# while waiting: {still.line}", flush=True)
    print(f"# requests to start the wait (watches, first position): {begin - before}", flush=True)
    driver.delete_job(name)
    blocker.delete_job(blocker_name)
    return counted * 60.0 / (time.monotonic() - started)


def main() -> None:
    from lightkube import Client, KubeConfig

    layout = Layout.default()
    started_here = not harness_cluster.is_up(layout)
    info = harness_cluster.up(layout, report=lambda m: print(m, file=sys.stderr))
    os.environ["KUBECONFIG"] = info.admin_kubeconfig
    try:
        api = Client(KubeConfig.from_file(info.admin_kubeconfig))
        namespace = make_namespace(api)
        counter = RequestCounter()  # before any client exists
        try:
            queue, quota = local_queue(api, namespace)
            samples = admit_to_running(info, namespace, queue)
            print(f"# admission to Running, 5 runs: {', '.join(f'{s:.3f}' for s in samples)} s", flush=True)
            bench("queue_admit_to_running_s", statistics.median(samples), "s (median of 5; goal < 1.5)")
            per_minute = requests_while_waiting(info, namespace, queue, quota, counter)
            bench("queue_wait_requests_per_min", per_minute, "requests/min (httpx2 sends while queued)")
        finally:
            from lightkube.resources.core_v1 import Namespace

            api.delete(Namespace, namespace)
    finally:
        if started_here:
            harness_cluster.down(layout, report=lambda m: print(m, file=sys.stderr))


if __name__ == "__main__":
    main()
