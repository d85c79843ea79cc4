"""pypod: a Python project on Kubernetes, as a REPL or a job, with Dask workers beside it.

    from pypod import K8sCluster
    cluster = K8sCluster(3, cpu=0.5, memory="512Mi", pending_timeout=30)
    client = cluster.get_client()

    pypod.info().cpu.effective        # what this pod really has, next to its node
    pypod.add("six>=1.16")            # installed in the pod now, and in the next run's image

The names below are imported on first use, so `import pypod` (and `pypod --help`)
stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import DependencyError, PypodError

__all__ = [
    "Change",
    "DependencyError",
    "Info",
    "K8sCluster",
    "PodKilledWorker",
    "PypodError",
    "Settings",
    "WorkerEnd",
    "WorkerPodsEnded",
    "add",
    "info",
    "remove",
    "worker_pod_spec",
]

if TYPE_CHECKING:
    from .agent.resources import Info
    from .cluster import K8sCluster, PodKilledWorker, WorkerPodsEnded
    from .deps import Change, add, remove
    from .kube.workers import WorkerEnd, worker_pod_spec
    from .podinfo import info
    from .settings import Settings

_LAZY = {
    "add": ("pypod.deps", "add"),
    "remove": ("pypod.deps", "remove"),
    "Change": ("pypod.deps", "Change"),
    "Info": ("pypod.agent.resources", "Info"),
    "info": ("pypod.podinfo", "info"),
    "K8sCluster": ("pypod.cluster", "K8sCluster"),
    "PodKilledWorker": ("pypod.cluster", "PodKilledWorker"),
    "WorkerPodsEnded": ("pypod.cluster", "WorkerPodsEnded"),
    "WorkerEnd": ("pypod.kube.workers", "WorkerEnd"),
    "worker_pod_spec": ("pypod.kube.workers", "worker_pod_spec"),
    "Settings": ("pypod.settings", "Settings"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'pypod' has no attribute {name!r}")
    import importlib

    module, attribute = _LAZY[name]
    return getattr(importlib.import_module(module), attribute)
