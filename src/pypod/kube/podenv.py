"""The environment pypod gives its driver and worker pods so that code inside knows what it
has: the downward API (identity, and the requests and limits that a cgroup namespace hides),
the image, and thread-pool sizes from the CPU limit. Pure: containers' dicts in and out.

`pypod info` (agent/resources.py) reads these names; agent/podvars.py defines them.
"""

from __future__ import annotations

import math
from typing import Any

from ..agent.podvars import DOWNWARD_IDENTITY, DOWNWARD_RESOURCES, IMAGE_ENV, THREAD_VARS
from ..errors import UsageError
from ..quantity import parse_quantity

_IDENTITY_FIELDS = {
    "pod_name": "metadata.name",
    "namespace": "metadata.namespace",
    "node_name": "spec.nodeName",
    "pod_uid": "metadata.uid",
}


def identity_env() -> list[dict[str, Any]]:
    return [
        {"name": DOWNWARD_IDENTITY[key], "valueFrom": {"fieldRef": {"fieldPath": path}}}
        for key, path in _IDENTITY_FIELDS.items()
    ]


def resource_env(resources: dict[str, Any]) -> list[dict[str, Any]]:
    """resourceFieldRef entries for the requests and limits the container sets. A limit that is
    not set would read as the node's allocatable amount, so it gets no entry (nor its request,
    which then defaults to nothing useful either)."""
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    entries = []
    for name, resource, divisor in DOWNWARD_RESOURCES.values():
        kind, _, key = resource.partition(".")
        present = key in limits if kind == "limits" else key in requests or key in limits
        if present:
            ref = {"resource": resource, "divisor": divisor}
            entries.append({"name": name, "valueFrom": {"resourceFieldRef": ref}})
    return entries


def thread_count(cpu: str | float) -> int:
    """Threads for a CPU quantity: the limit rounded up, at least 1 (what `pypod info` calls
    the effective count; Dask workers' --nthreads uses it too)."""
    cores = parse_quantity(str(cpu), "cpu")
    return max(1, math.ceil(cores))


def parse_threads(value: str | int) -> str | int:
    """--threads: "auto" (from the CPU limit), "off", or a count >= 1."""
    text = str(value).strip().lower()
    if text in ("auto", "off"):
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise UsageError(f"--threads must be auto, off or a count of 1 or more, got {value!r}", hint="e.g. --threads 4")


def thread_env(threads: str | int, cpu_limit: str | float | None, taken: set[str]) -> list[dict[str, Any]]:
    """OMP_NUM_THREADS and the rest, unless off, or auto without a CPU limit (the pod may then
    use the whole node, which the libraries find themselves). Names in `taken` (set by the
    user or the template) are left alone."""
    mode = parse_threads(threads)
    if mode == "off" or (mode == "auto" and cpu_limit in (None, "")):
        return []
    count = mode if isinstance(mode, int) else thread_count(cpu_limit)  # type: ignore[arg-type]
    return [{"name": name, "value": str(count)} for name in THREAD_VARS if name not in taken]


def image_env(image: str) -> list[dict[str, Any]]:
    return [{"name": IMAGE_ENV, "value": image}]
