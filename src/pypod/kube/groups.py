"""Worker groups as data: what each group's workers are (resources, image, selectors),
how their pods are named, and their manifests. Pure: no cluster here.

A K8sCluster has a "default" group made from its own arguments; `add_worker_group`
derives another from it: whatever the group does not set is the default group's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import UsageError
from ..names import DNS_LABEL, MAX_LABEL, shorten
from .workers import DEFAULT_GROUP, GPU_PRODUCT_LABEL, worker_memory_bytes, worker_pod_spec, worker_threads

MAX_GROUP_NAME = 20  # leaves room in a 63-character pod name for the cluster id and the number

PodHook = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class WorkerGroup:
    """One kind of worker. `image=None` runs the driver's image; `configures` are applied
    to each pod in order (the cluster's `configure`, then the group's)."""

    name: str = DEFAULT_GROUP
    cpu: str | float = 1
    memory: str = "2Gi"
    gpu: int = 0
    gpu_product: str | None = None
    image: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    configures: tuple[PodHook, ...] = ()

    @property
    def nthreads(self) -> int:
        return worker_threads(self.cpu)

    @property
    def memory_bytes(self) -> int:
        return worker_memory_bytes(self.memory)

    def selectors(self) -> dict[str, str]:
        selected = dict(self.node_selector)
        if self.gpu_product:
            selected[GPU_PRODUCT_LABEL] = self.gpu_product
        return selected


def check_group(group: WorkerGroup) -> WorkerGroup:
    """The group as given, or a UsageError naming what is wrong with it."""
    if group.gpu < 0 or int(group.gpu) != group.gpu:
        raise UsageError(f"worker group {group.name!r}: gpu={group.gpu!r} is not a count", hint="pass gpu=0, 1, 2, ...")
    group.nthreads  # noqa: B018 (parses cpu: a bad quantity is a UsageError here, not at pod creation)
    group.memory_bytes  # noqa: B018
    return group


def check_group_name(name: str, existing: Mapping[str, WorkerGroup]) -> None:
    if name in existing:
        raise UsageError(
            f"worker group {name!r} exists already",
            hint="pick another name, or cluster.scale(n, worker_group=name) to resize it",
        )
    if len(name) > MAX_GROUP_NAME or not DNS_LABEL.match(name):
        raise UsageError(
            f"worker group name {name!r} does not fit in a pod name",
            hint=f"use at most {MAX_GROUP_NAME} lower-case letters, digits and '-', starting and ending with "
            "a letter or digit",
        )


def derive_group(
    base: WorkerGroup,
    name: str,
    *,
    cpu: str | float | None = None,
    memory: str | None = None,
    gpu: int | None = None,
    gpu_product: str | None = None,
    image: str | None = None,
    env: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    configure: PodHook | None = None,
) -> WorkerGroup:
    """A group like `base` but for what is given: env and labels are merged over base's,
    `configure` runs after base's."""
    return check_group(
        replace(
            base,
            name=name,
            cpu=base.cpu if cpu is None else cpu,
            memory=memory or base.memory,
            gpu=base.gpu if gpu is None else gpu,
            gpu_product=gpu_product or base.gpu_product,
            image=image or base.image,
            env={**base.env, **(env or {})},
            labels={**base.labels, **(labels or {})},
            configures=(*base.configures, *((configure,) if configure else ())),
        )
    )


def worker_pod_name(cluster_id: str, group: str, number: int) -> str:
    """`<cluster>-w<n>` for the default group, `<cluster>-<group>-w<n>` for others; at most 63."""
    suffix = f"-w{number}"
    prefix = cluster_id if group == DEFAULT_GROUP else f"{cluster_id}-{group}"
    return shorten(prefix, MAX_LABEL - len(suffix)).rstrip("-") + suffix


def workers_for(n: int, group: WorkerGroup, memory: int | None = None, cores: float | None = None) -> int:
    """How many workers of `group` give at least `n` workers, `memory` bytes and `cores` threads."""
    if memory is not None:
        n = max(n, math.ceil(memory / group.memory_bytes))
    if cores is not None:
        n = max(n, math.ceil(cores / group.nthreads))
    return n


def group_pod(
    group: WorkerGroup,
    *,
    name: str,
    image: str,
    scheduler_address: str,
    cluster_id: str,
    driver: str,
    namespace: str,
    service_account: str | None,
    owner: dict[str, Any] | None,
    death_timeout: int,
    threads: str | int = "auto",
    queue: str | None = None,
) -> dict[str, Any]:
    """The pod of one worker of `group` (`image` is the driver's, used when the group has none),
    before its `configures` (configure_pod). `queue`: the Kueue LocalQueue the cluster's workers
    are admitted through."""
    return worker_pod_spec(
        image=group.image or image,
        scheduler_address=scheduler_address,
        cluster_id=cluster_id,
        driver=driver,
        namespace=namespace,
        cpu=group.cpu,
        memory=group.memory,
        gpu=group.gpu,
        name=name,
        service_account=service_account,
        env=dict(group.env),
        labels=dict(group.labels),
        node_selector=group.selectors(),
        tolerations=[dict(t) for t in group.tolerations],
        owner=owner,
        death_timeout=death_timeout,
        threads=threads,
        group=group.name,
        queue=queue,
    )


def configure_pod(group: WorkerGroup, pod: dict[str, Any]) -> dict[str, Any]:
    """`pod` after the group's `configures`, in order: applied last, after everything pypod adds."""
    for hook in group.configures:
        pod = hook(pod)
    return pod
