"""K8sCluster cost and speed.

1. 50 workers placed on the harness's kwok nodes (no container runs): API requests
   per worker, and the driver's CPU seconds from create to all Running. The anchor,
   K8sClusterManagers.jl, runs one `kubectl get` per pod every second while waiting.
2. 8 real workers on the real node: time until all are connected to the scheduler,
   minus the time Kubernetes itself took to make their pods Running.
3. A worker whose pod ends (deleted from outside, at once): time until its replacement
   is connected, beside the time Kubernetes took to start the replacement's pod
   (goal: under that pod start time + 3 s). One whole core, K8sCluster's default: at
   100m, CFS throttles the worker's imports to seconds.

    python benchmarks/cluster.py

Runs the driver on this machine (the scheduler listens on the harness bridge so the
pods reach it). Starts the harness if it is not up, and stops it again afterwards.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

try:  # the scheduler runs in this process: the `bench` extra brings it
    from importlib.metadata import version

    DISTRIBUTED = version("distributed")
except ImportError:
    sys.exit("benchmarks/cluster.py needs dask's distributed here: pip install -e '.[bench]'")

from harness import cluster as harness_cluster  # noqa: E402
from harness.layout import BRIDGE_IP, Layout  # noqa: E402


def bench(name: str, value: float, unit: str) -> None:
    print(f"BENCH {name} {value:.3f} {unit}", flush=True)


class RequestCounter:
    """Counts every HTTP request lightkube's clients send, by method."""

    def __init__(self) -> None:
        import httpx2

        self.count = 0
        self.lock = threading.Lock()
        counter = self
        original_async, original_sync = httpx2.AsyncClient.send, httpx2.Client.send

        async def async_send(client, request, *args, **kwargs):  # type: ignore[no-untyped-def]
            counter.bump()
            return await original_async(client, request, *args, **kwargs)

        def sync_send(client, request, *args, **kwargs):  # type: ignore[no-untyped-def]
            counter.bump()
            return original_sync(client, request, *args, **kwargs)

        httpx2.AsyncClient.send = async_send  # type: ignore[method-assign]
        httpx2.Client.send = sync_send  # type: ignore[method-assign]

    def bump(self) -> None:
        with self.lock:
            self.count += 1


def namespace(kubeconfig: str) -> str:
    from lightkube import Client, KubeConfig
    from lightkube.resources.core_v1 import Namespace, ServiceAccount

    client = Client(KubeConfig.from_file(kubeconfig))
    name = f"bench-{uuid.uuid4().hex[:8]}"
    client.create(Namespace.from_dict({"metadata": {"name": name}}))
    while not any(sa.metadata.name == "default" for sa in client.list(ServiceAccount, namespace=name)):
        time.sleep(0.1)
    return name


def kwok_workers(info, counter: RequestCounter, n: int = 50) -> None:  # type: ignore[no-untyped-def]
    from pypod import K8sCluster

    ns = namespace(info.admin_kubeconfig)
    before_requests, before_cpu = counter.count, time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = K8sCluster(
            n,
            image="kwok.invalid/never-pulled:1",
            namespace=ns,
            scheduler_host=BRIDGE_IP,
            cpu="100m",
            memory="64Mi",
            pending_timeout=120,
            node_selector={"type": "kwok"},
            tolerations=[{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
        )
    running = len(cluster._manager.running)
    requests, cpu = counter.count - before_requests, time.process_time() - before_cpu
    cluster.close()
    assert running == n, f"only {running} of {n} kwok workers ran"
    bench("workers50_requests_per_worker", requests / n, "requests (anchor: 1 kubectl get per pod per second)")
    bench("workers50_driver_cpu_s", cpu, "s")


def dask_image(info) -> str:  # type: ignore[no-untyped-def]
    """The harness base image plus distributed, built by pypod itself."""
    from pypod.image.deps import ensure_dependency_image
    from pypod.image.registry import ImageRef
    from pypod.project import load_project

    root = Path(tempfile.mkdtemp()) / "daskbench"
    root.mkdir()
    # The workers' distributed is the scheduler's, so their protocol versions agree.
    (root / "requirements.txt").write_text(f"distributed=={DISTRIBUTED}\n")
    deps = ensure_dependency_image(load_project(root), info.base_image, ImageRef.parse(f"{info.registry}/bench-dask"))
    shutil.rmtree(root.parent)
    return deps.reference


def real_workers(info, n: int = 8) -> None:  # type: ignore[no-untyped-def]
    from lightkube import Client, KubeConfig
    from lightkube.resources.core_v1 import Pod

    from pypod import K8sCluster

    image = dask_image(info)
    ns = namespace(info.admin_kubeconfig)
    api = Client(KubeConfig.from_file(info.admin_kubeconfig))
    started = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = K8sCluster(
            0, image=image, namespace=ns, scheduler_host=BRIDGE_IP, cpu="100m", memory="400Mi", pending_timeout=180
        )
    client = cluster.get_client()
    started = time.monotonic()
    cluster.scale(n)
    client.wait_for_workers(n, timeout=300)
    connected = time.monotonic() - started
    # Kubernetes' own share: from each pod's creation to its container's start, as the API recorded it.
    pods = list(api.list(Pod, namespace=ns))
    kube_s = max(
        pod_start_s(p) for p in pods if p.status.containerStatuses and p.status.containerStatuses[0].state.running
    )
    client.close()
    cluster.close()
    bench("workers8_connected_s", connected, "s")
    bench("workers8_kubernetes_start_s", kube_s, "s (creation to container start, 1 s resolution)")
    bench("workers8_connect_overhead_s", connected - kube_s, "s")
    replaced_worker(info, image)


def pod_start_s(pod) -> float:  # type: ignore[no-untyped-def]
    """Creation to container start, as the API recorded it (1 s resolution)."""
    started = pod.status.containerStatuses[0].state.running.startedAt
    return (started - pod.metadata.creationTimestamp).total_seconds()


def replaced_worker(info, image: str) -> None:  # type: ignore[no-untyped-def]
    from lightkube import Client, KubeConfig
    from lightkube.resources.core_v1 import Pod

    from pypod import K8sCluster

    ns = namespace(info.admin_kubeconfig)
    api = Client(KubeConfig.from_file(info.admin_kubeconfig))

    def connected_other_than(name: str, since: float) -> float:
        while not {w["name"] for w in client.scheduler_info()["workers"].values()} - {name}:
            if time.monotonic() - since > 120:
                raise SystemExit("no new worker connected within 120 s")
            time.sleep(0.02)
        return time.monotonic() - since

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = K8sCluster(
            0, image=image, namespace=ns, scheduler_host=BRIDGE_IP, cpu="1", memory="400Mi", pending_timeout=180
        )
        client = cluster.get_client()
        asked = time.monotonic()
        cluster.scale(1)
        fresh_s = connected_other_than("", asked)  # the anchor: a new worker, asked for by scale()
        first = next(iter(client.scheduler_info()["workers"].values()))["name"]
        ended = time.monotonic()
        api.delete(Pod, first, namespace=ns, grace_period=0)
        replace_s = connected_other_than(first, ended)
        replacement = next(p for p in api.list(Pod, namespace=ns) if p.metadata.name != first)
        created_s = cluster._manager.created_at[replacement.metadata.name] - ended
        start_s = pod_start_s(replacement)
        client.close()
        cluster.close()
    bench("worker_replace_s", replace_s, f"s (pod start {start_s:.0f} s; goal: under pod start + 3 s)")
    bench("worker_replace_pod_start_s", start_s, "s (creation to container start, 1 s resolution)")
    bench("worker_replace_created_s", created_s, "s (pod ended to replacement created)")
    bench("worker_fresh_connect_s", fresh_s, "s (scale(1) to a new worker connected, for comparison)")


def main() -> None:
    layout = Layout.default()
    started_here = not harness_cluster.is_up(layout)
    info = harness_cluster.up(layout, report=lambda m: print(m, file=sys.stderr))
    os.environ["KUBECONFIG"] = info.admin_kubeconfig
    try:
        counter = RequestCounter()
        kwok_workers(info, counter)
        real_workers(info)
    finally:
        if started_here:
            harness_cluster.down(layout, report=lambda m: print(m, file=sys.stderr))


if __name__ == "__main__":
    main()
