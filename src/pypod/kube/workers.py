"""Dask worker pods as data: the manifest, and what a worker pod's status means.
Pure: no cluster here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..names import label_value, shorten
from ..quantity import parse_quantity
from .gpus import GPU_PRODUCT_LABEL, GPU_RESOURCE
from .podenv import identity_env, image_env, resource_env, thread_count, thread_env
from .queue import QUEUE_LABEL

LABEL_CLUSTER = "pypod.dev/cluster"
LABEL_DRIVER = "pypod.dev/driver"
LABEL_WORKER = "pypod.dev/worker"
LABEL_GROUP = "pypod.dev/worker-group"
COMPONENT = "dask-worker"
DEFAULT_GROUP = "default"
# On the driver pod: the port of the Dask dashboard a K8sCluster in it serves (`pypod dashboard`).
ANNOTATION_DASHBOARD = "pypod.dev/dashboard-port"


def worker_threads(cpu: str | float) -> int:
    """--nthreads from a cpu quantity: the limit rounded up, at least one; the same count as
    the pod's OMP_NUM_THREADS and the rest, and as `pypod info`'s effective CPUs."""
    return thread_count(cpu)


def worker_memory_bytes(memory: str) -> int:
    return int(parse_quantity(memory, "memory").to_integral_value(rounding="ROUND_FLOOR"))


def worker_pod_spec(
    *,
    image: str,
    scheduler_address: str,
    cluster_id: str,
    driver: str,
    namespace: str,
    cpu: str | float = 1,
    memory: str = "2Gi",
    gpu: int = 0,
    gpu_product: str | None = None,
    queue: str | None = None,
    name: str | None = None,
    service_account: str | None = None,
    env: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    node_selector: dict[str, str] | None = None,
    tolerations: list[dict[str, Any]] | None = None,
    owner: dict[str, Any] | None = None,
    death_timeout: int = 60,
    threads: str | int = "auto",
    group: str = DEFAULT_GROUP,
) -> dict[str, Any]:
    """A worker pod: the driver's image running `dask worker` against the driver's scheduler.

    requests = limits for cpu and memory (so the kernel enforces what Dask is told);
    `gpu` adds nvidia.com/gpu and the Dask resource GPU=N (so tasks submitted with
    resources={"GPU": 1} land there), and `gpu_product` the nvidia.com/gpu.product node
    selector; `queue` labels the pod for Kueue's pod integration, so the worker waits for
    and counts against that LocalQueue's quota; `owner` (the driver pod) makes Kubernetes
    delete the worker with it; `group` is the worker group's label. Without `name`, the
    pod is named by generateName. `threads` sets OMP_NUM_THREADS and the other thread-pool
    variables: "auto" (from `cpu`), "off", or a count; variables given in `env` are left
    as given.
    """
    cpu_text = str(cpu)
    limits: dict[str, str] = {"cpu": cpu_text, "memory": memory}
    if gpu:
        limits[GPU_RESOURCE] = str(gpu)
    worker_name = name or "$(POD_NAME)"
    metadata: dict[str, Any] = {
        "namespace": namespace,
        "labels": {
            "app.kubernetes.io/managed-by": "pypod",
            "app.kubernetes.io/component": COMPONENT,
            LABEL_CLUSTER: label_value(cluster_id),
            LABEL_DRIVER: label_value(driver),
            LABEL_GROUP: label_value(group),
            **({LABEL_WORKER: label_value(name)} if name else {}),
            **({QUEUE_LABEL: queue} if queue else {}),
            **(labels or {}),
        },
    }
    if name:
        metadata["name"] = name
    else:
        metadata["generateName"] = shorten(f"{driver}-worker", 57) + "-"
    if owner:
        # Not a controller reference: Kueue's pod integration leaves alone a pod whose
        # controller chain leads to a Job it manages (the driver's), and the worker would
        # escape the quota. Garbage collection needs no controller flag.
        metadata["ownerReferences"] = [{k: v for k, v in owner.items() if k != "controller"}]
    container: dict[str, Any] = {
        "name": "worker",
        "image": image,
        "command": [
            "dask",
            "worker",
            scheduler_address,
            "--name",
            worker_name,
            "--nthreads",
            str(worker_threads(cpu_text)),
            "--memory-limit",
            str(worker_memory_bytes(memory)),
            "--death-timeout",
            str(death_timeout),
            "--no-dashboard",
            # The worker is the container's process: when the kernel kills it (OOM), the
            # pod ends with the reason, instead of a nanny quietly restarting it.
            "--no-nanny",
            *(["--resources", f"GPU={gpu}"] if gpu else []),
        ],
        "resources": {"requests": dict(limits), "limits": dict(limits)},
    }
    container["env"] = [
        *identity_env(),
        *resource_env(container["resources"]),
        *image_env(image),
        *thread_env(threads, cpu_text, set(env or {})),
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        *({"name": k, "value": v} for k, v in (env or {}).items()),
    ]
    spec: dict[str, Any] = {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5, "containers": [container]}
    if service_account:
        spec["serviceAccountName"] = service_account
    selector = {**(node_selector or {}), **({GPU_PRODUCT_LABEL: gpu_product} if gpu_product else {})}
    if selector:
        spec["nodeSelector"] = selector
    if tolerations:
        spec["tolerations"] = list(tolerations)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


@dataclass(frozen=True)
class WorkerEnd:
    """Why a worker pod is no longer running."""

    worker: str
    pod: str
    reason: str  # OOMKilled, Evicted, Error, Completed, Deleted, PendingTimeout, ErrImagePull, ...
    message: str = ""
    exit_code: int | None = None
    memory_limit: str = ""  # the container's limit, named when the kernel killed it for memory
    group: str = DEFAULT_GROUP

    def __str__(self) -> str:
        details = [f"limit {self.memory_limit}"] if self.reason == "OOMKilled" and self.memory_limit else []
        if self.exit_code is not None:
            details.append(f"exit code {self.exit_code}")
        shown = f" ({', '.join(details)})" if details else ""
        detail = f": {self.message}" if self.message else ""
        return f"worker {self.worker} (pod {self.pod}) ended: {self.reason}{shown}{detail}"


def worker_end(pod: dict[str, Any]) -> WorkerEnd | None:
    """The end of a worker pod, from its status; None while it is not over."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    name = meta.get("name", "?")
    labels = meta.get("labels") or {}
    worker = labels.get(LABEL_WORKER, name)
    group = labels.get(LABEL_GROUP, DEFAULT_GROUP)
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    limit = str(((containers[0].get("resources") or {}).get("limits") or {}).get("memory", ""))
    if status.get("reason") == "Evicted":
        return WorkerEnd(worker, name, "Evicted", status.get("message", ""), group=group)
    for container in status.get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated")
        if terminated:
            return WorkerEnd(
                worker,
                name,
                terminated.get("reason") or "Error",
                terminated.get("message") or "",
                terminated.get("exitCode"),
                memory_limit=limit,
                group=group,
            )
    if status.get("phase") in ("Failed", "Succeeded"):
        return WorkerEnd(worker, name, status.get("reason") or status["phase"], status.get("message", ""), group=group)
    return None
