"""Pure functions from a RunSpec to the driver Job. Nothing here talks to a cluster."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..data.volumes import PvcMount, add_pvc_mounts
from ..names import label_value
from .gpus import GPU_PRODUCT_LABEL, GPU_RESOURCE
from .podenv import identity_env, image_env, resource_env, thread_env
from .queue import ENV_QUEUE, QUEUE_LABEL
from .template import DEFAULT_TEMPLATE, render_template

MANAGED_BY = "pypod"
LABEL_RUN = "pypod.dev/run"
LABEL_REPO = "pypod.dev/repo"
LABEL_BRANCH = "pypod.dev/branch"
LABEL_COMMIT = "pypod.dev/commit"
LABEL_MODE = "pypod.dev/mode"
LABEL_USER = "pypod.dev/user"
ANNOTATION_BRANCH = "pypod.dev/branch-full"
ANNOTATION_DIRTY = "pypod.dev/dirty"
ANNOTATION_DETACH = "pypod.dev/detach"
SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
# The Job controller's label on every pod of a Job (Kubernetes >= 1.27): how a run's pods are
# found, also when the apiserver chose the Job's name (generateName).
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
DRIVER_CONTAINER = "driver"
ENV_RUN = "PYPOD_RUN"
SHM_VOLUME = "pypod-shm"


@dataclass(frozen=True)
class RunSpec:
    """Everything the driver Job is built from."""

    name: str  # the Job's name; with generate_name, its prefix (ending in "-")
    image: str
    command: tuple[str, ...]
    mode: str  # "repl" or "job"
    repo: str = ""
    branch: str = ""
    commit: str = ""
    dirty: bool = False
    user: str = ""
    namespace: str | None = None
    service_account: str | None = None
    cpu: str | None = None
    memory: str | None = None
    gpu: int = 0
    gpu_product: str | None = None
    queue: str | None = None
    shm: str | None = None
    generate_name: bool = False
    env: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    pvcs: tuple[PvcMount, ...] = ()
    workdir: str | None = None
    ttl_seconds: int = 300
    detach: bool = False
    threads: str = "auto"  # thread-pool variables: auto (from the CPU limit), off, or a count
    extra_env: tuple[tuple[str, str], ...] = field(default=())  # pypod's own, set before the user's

    def selector_labels(self) -> dict[str, str]:
        # A generated name is not known before the Job is created: its pods are found by
        # JOB_NAME_LABEL instead.
        run = {} if self.generate_name else {LABEL_RUN: self.name}
        return {"app.kubernetes.io/managed-by": MANAGED_BY, **run}


def run_labels(spec: RunSpec) -> dict[str, str]:
    labels = {
        **spec.selector_labels(),
        LABEL_MODE: spec.mode,
        LABEL_REPO: label_value(spec.repo),
        LABEL_BRANCH: label_value(spec.branch),
        LABEL_COMMIT: label_value(spec.commit),
        LABEL_USER: label_value(spec.user),
    }
    labels = {k: v for k, v in labels.items() if v}
    labels.update(dict(spec.labels))
    return labels


def template_values(spec: RunSpec) -> dict[str, str]:
    return {
        "IMAGE_TAG": spec.image,
        "RUNID": spec.name.rstrip("-"),
        "KUBERNETES_SERVICEACCOUNT": spec.service_account or "",
        "KUBERNETES_NAMESPACE": spec.namespace or "",
        "GIT_REPO": spec.repo,
        "GIT_BRANCH": spec.branch,
        "GIT_COMMIT": spec.commit,
    }


def _resources(spec: RunSpec, existing: dict[str, Any]) -> dict[str, Any]:
    resources = copy.deepcopy(existing)
    requests = resources.setdefault("requests", {})
    limits = resources.setdefault("limits", {})
    for key, value in (("cpu", spec.cpu), ("memory", spec.memory)):
        if value:
            requests[key] = value
            limits[key] = value
    if spec.gpu:
        limits[GPU_RESOURCE] = str(spec.gpu)
        requests[GPU_RESOURCE] = str(spec.gpu)
    return {k: v for k, v in resources.items() if v}


def _downward_env(resources: dict[str, Any]) -> list[dict[str, Any]]:
    pod_ip = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    return [*identity_env(), pod_ip, *resource_env(resources)]


def _run_env(spec: RunSpec) -> list[dict[str, Any]]:
    run: dict[str, Any]
    if spec.generate_name:
        # The name is the apiserver's: the pod reads it from the Job controller's label.
        run = {"valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{JOB_NAME_LABEL}']"}}}
    else:
        run = {"value": spec.name}
    queue = [{"name": ENV_QUEUE, "value": spec.queue}] if spec.queue else []
    return [{"name": ENV_RUN, **run}, *queue]


def _add_shm(pod: dict[str, Any], driver: dict[str, Any], size: str) -> None:
    """A memory-backed /dev/shm of `size` (Docker's 64 MiB default is too small for PyTorch loaders)."""
    volumes = [v for v in pod.get("volumes") or [] if v.get("name") != SHM_VOLUME]
    pod["volumes"] = [*volumes, {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": size}}]
    mounts = [m for m in driver.get("volumeMounts") or [] if m.get("mountPath") != "/dev/shm"]
    driver["volumeMounts"] = [*mounts, {"name": SHM_VOLUME, "mountPath": "/dev/shm"}]


def _merge_env(existing: list[dict[str, Any]], additions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Later entries win by name; order is kept for the rest."""
    merged: dict[str, dict[str, Any]] = {e["name"]: e for e in existing}
    for entry in additions:
        merged.pop(entry["name"], None)
        merged[entry["name"]] = entry
    return list(merged.values())


def apply_run_options(job: dict[str, Any], spec: RunSpec) -> dict[str, Any]:
    """Apply the structured options to a parsed Job (a copy is returned)."""
    job = copy.deepcopy(job)
    labels = run_labels(spec)
    metadata = job.setdefault("metadata", {})
    if spec.generate_name:
        metadata.pop("name", None)
        metadata["generateName"] = spec.name
    else:
        metadata["name"] = spec.name
        metadata.pop("generateName", None)
    if spec.namespace:
        metadata["namespace"] = spec.namespace
    metadata.setdefault("labels", {})
    metadata["labels"] = {k: label_value(str(v)) for k, v in metadata["labels"].items() if v} | labels
    if spec.queue:
        # On the Job only: Kueue admits the Job, and its pods come with it.
        metadata["labels"][QUEUE_LABEL] = spec.queue
    annotations = metadata.setdefault("annotations", {})
    annotations[ANNOTATION_BRANCH] = spec.branch
    annotations[ANNOTATION_DIRTY] = str(spec.dirty).lower()
    annotations[ANNOTATION_DETACH] = str(spec.detach).lower()

    job_spec = job.setdefault("spec", {})
    job_spec["backoffLimit"] = 0
    job_spec.setdefault("ttlSecondsAfterFinished", spec.ttl_seconds)
    template = job_spec.setdefault("template", {})
    template_meta = template.setdefault("metadata", {})
    template_meta["labels"] = {**template_meta.get("labels", {}), **labels}
    pod = template.setdefault("spec", {})
    pod["restartPolicy"] = "Never"
    if spec.gpu_product:
        pod["nodeSelector"] = {**(pod.get("nodeSelector") or {}), GPU_PRODUCT_LABEL: spec.gpu_product}
    if spec.service_account:
        pod["serviceAccountName"] = spec.service_account
    elif not pod.get("serviceAccountName"):
        pod.pop("serviceAccountName", None)

    containers = pod["containers"]
    driver = next((c for c in containers if c.get("name") == DRIVER_CONTAINER), containers[0])
    driver["image"] = spec.image
    driver["command"] = list(spec.command)
    driver.pop("args", None)
    if spec.workdir:
        driver["workingDir"] = spec.workdir
    resources = _resources(spec, driver.get("resources", {}))
    if resources:
        driver["resources"] = resources
    if spec.shm:
        _add_shm(pod, driver, spec.shm)
    add_pvc_mounts(pod, driver, spec.pvcs)
    existing = driver.get("env") or []
    taken = {e["name"] for e in existing} | {k for k, _ in spec.env}
    cpu_limit = (resources.get("limits") or {}).get("cpu")
    env_additions = [
        *_downward_env(resources),
        *image_env(spec.image),
        *_run_env(spec),
        *thread_env(spec.threads, cpu_limit, taken),
        *({"name": k, "value": v} for k, v in (*spec.extra_env, *spec.env)),
    ]
    driver["env"] = _merge_env(existing, env_additions)
    return job


def driver_job(spec: RunSpec, template_text: str | None = None, template_source: str = "template") -> dict[str, Any]:
    """The driver Job: the template (pypod's default if none) rendered, then the options applied."""
    parsed = render_template(template_text or DEFAULT_TEMPLATE, template_values(spec), spec.command, template_source)
    return apply_run_options(parsed, spec)


def job_command(
    python: Sequence[str], code: str | None = None, script: str | None = None, args: Sequence[str] = ()
) -> tuple[str, ...]:
    """The container command of a job run: `python -c CODE` or `python SCRIPT ARGS...`."""
    if code is not None:
        return (*python, "-c", code)
    if script is not None:
        return (*python, script, *args)
    return tuple(python)
