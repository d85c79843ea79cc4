"""`pypod data fetch|status|ls|rm`: the I/O around data/plan.py and data/status.py."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from typing import Any

from ..errors import DataFailed, NotFound, PodFailedToStart, PypodError, StreamError
from ..run.output import Output
from . import plan as p
from .kube import Kube
from .status import FetchStatus, fetch_status, human_bytes, render
from .volumes import describe_claims

READER_TIMEOUT_S = 120.0


def _job_dict(cluster: Kube, name: str) -> dict[str, Any]:
    from lightkube.resources.batch_v1 import Job

    try:
        with cluster.api("get", "jobs", name):
            job = cluster.client.get(Job, name, namespace=cluster.namespace).to_dict()
    except NotFound:
        raise NotFound(
            f"no fetch named {name!r} in namespace {cluster.namespace!r}",
            hint="`pypod data status` lists the fetches there; add -n NAMESPACE if it runs elsewhere",
        ) from None
    if (job["metadata"].get("labels") or {}).get("app.kubernetes.io/component") != p.COMPONENT:
        raise NotFound(f"Job {name!r} is not a pypod data fetch", hint="`pypod data status` lists the fetches")
    return job


def _pods(cluster: Kube, job: str) -> list[dict[str, Any]]:
    from lightkube.resources.core_v1 import Pod

    with cluster.api("list", "pods"):
        pods = [
            pod.to_dict() for pod in cluster.client.list(Pod, namespace=cluster.namespace, labels={p.LABEL_DATA: job})
        ]
    return sorted(pods, key=lambda pod: pod["metadata"].get("creationTimestamp") or "")


# -- fetch -------------------------------------------------------------------------


def ensure_pvc(cluster: Kube, request: p.FetchRequest, out: Output) -> None:
    """The PVC is there, or is created when a size was given; else one line listing those there are."""
    from lightkube import codecs
    from lightkube.resources.core_v1 import PersistentVolumeClaim

    try:
        with cluster.api("get", "persistentvolumeclaims", request.pvc):
            cluster.client.get(PersistentVolumeClaim, request.pvc, namespace=cluster.namespace)
        return
    except NotFound:
        pass
    if request.size is None:
        raise NotFound(
            f"PVC {request.pvc!r} not found in namespace {cluster.namespace!r} ({describe_claims(cluster)})",
            hint="pick one of those with --pvc, or give --size (and --storage-class) to create it",
        )
    with cluster.api("create", "persistentvolumeclaims", request.pvc):
        cluster.client.create(codecs.from_dict(p.pvc_manifest(request, cluster.namespace)))
    klass = request.storage_class or "the default class"
    out.info(f"created PVC {request.pvc} ({request.size}, {request.access_mode}, {klass})")


def start_fetch(cluster: Kube, request: p.FetchRequest, out: Output) -> dict[str, Any]:
    """The PVC if needed, the plan Secret, then the Job; the Secret is then owned by the Job."""
    from lightkube import codecs
    from lightkube.resources.core_v1 import Secret

    ensure_pvc(cluster, request, out)
    secret = p.plan_secret(request, cluster.namespace)
    with cluster.api("create", "secrets", request.name):
        cluster.client.create(codecs.from_dict(secret))
    try:
        with cluster.api("create", "jobs", request.name):
            job = cluster.client.create(codecs.from_dict(p.fetch_job(request, cluster.namespace))).to_dict()
    except PypodError:
        with contextlib.suppress(PypodError), cluster.api("delete", "secrets", request.name):
            cluster.client.delete(Secret, request.name, namespace=cluster.namespace)
        raise
    with cluster.api("patch", "secrets", request.name):
        cluster.client.patch(
            Secret,
            request.name,
            {"metadata": {"ownerReferences": p.owned_by(job)}},
            namespace=cluster.namespace,
        )
    return job


def follow_fetch(cluster: Kube, name: str, out: Output, timeout: float | None = None) -> int:
    """Stream the pods' logs (a retried pod's too) until the Job ends; then its status."""
    seen: set[str] = set()
    deadline = None if timeout is None else time.monotonic() + timeout
    while deadline is None or time.monotonic() < deadline:
        job = _job_dict(cluster, name)
        pods = _pods(cluster, name)
        finished = _finished(job)
        for pod in pods:
            pod_name = pod["metadata"]["name"]
            phase = (pod.get("status") or {}).get("phase")
            if pod_name in seen or phase not in ("Running", "Succeeded", "Failed"):
                continue
            seen.add(pod_name)
            with contextlib.suppress(Exception):  # a pod deleted mid-stream: its successor follows
                for line in cluster.client.log(
                    pod_name, namespace=cluster.namespace, container=p.CONTAINER, follow=True
                ):
                    sys.stdout.write(f"[{pod_name}] {line}")
                    sys.stdout.flush()
        for pod in pods:
            waiting = _fatal_waiting(pod)
            if waiting:
                raise PodFailedToStart(
                    f"the fetch pod {pod['metadata']['name']} cannot start: {waiting}", hint="check --image"
                )
        if finished:
            break
        time.sleep(1.0)
    status = read_status(cluster, name)
    for line in render(status):
        out.info(line)
    if status.job_state != "complete":
        failed = [f for f in status.files if f.state != "done"]
        why = failed[0].state if failed else status.job_state
        raise DataFailed(f"fetch {name} did not complete: {why}", hint=f"`pypod data status {name}` for every file")
    return 0


def _finished(job: dict[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)


def _fatal_waiting(pod: dict[str, Any]) -> str:
    from ..kube.status import FATAL_WAITING

    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in FATAL_WAITING:
            return f"{waiting['reason']}: {waiting.get('message', '')}".strip(": ")
    return ""


# -- reading the PVC ---------------------------------------------------------------------


def _exec_json(cluster: Kube, pod: str, args: tuple[str, ...]) -> dict[str, Any] | None:
    """The agent already in a running fetch pod, asked over exec; None when that fails."""
    from ..kube.kubectl import Kubectl, find_kubectl

    try:
        kubectl = Kubectl(find_kubectl(), cluster.target)
    except StreamError:
        return None
    argv = kubectl.exec_argv(pod, p.CONTAINER, [p.PYTHON, "/tmp/pypod/agent.pyz", "data", *args], stdin=False)
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def read_with_pod(
    cluster: Kube, pvc: str, image: str, args: tuple[str, ...], node: str | None = None, owner: str = "pypod"
) -> dict[str, Any]:
    """A short-lived pod that mounts the PVC read-only, prints JSON and ends; its log is the answer."""
    from lightkube import codecs
    from lightkube.resources.core_v1 import Pod

    manifest = p.reader_pod(pvc, image, args, cluster.namespace, node=node, owner=owner)
    name = manifest["metadata"]["name"]
    with cluster.api("create", "pods", name):
        cluster.client.create(codecs.from_dict(manifest))
    try:
        pod = _wait_pod_done(cluster, name)
        with cluster.api("get", "pods/log", name):
            text = "".join(cluster.client.log(name, namespace=cluster.namespace))
        if (pod.get("status") or {}).get("phase") != "Succeeded":
            raise PypodError(f"the pod reading PVC {pvc} failed: {text.strip()[-300:] or 'no output'}")
        return json.loads(text.strip().splitlines()[-1])
    finally:
        with contextlib.suppress(PypodError), cluster.api("delete", "pods", name):
            cluster.client.delete(Pod, name, namespace=cluster.namespace, grace_period=0)


def _wait_pod_done(cluster: Kube, name: str) -> dict[str, Any]:
    from lightkube.resources.core_v1 import Pod

    from ..kube.status import explain

    deadline = time.monotonic() + READER_TIMEOUT_S
    pod: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with cluster.api("get", "pods", name):
            pod = cluster.client.get(Pod, name, namespace=cluster.namespace).to_dict()
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return pod
        waiting = _fatal_waiting(pod)
        if waiting:
            raise PodFailedToStart(f"the pod reading the PVC cannot start: {waiting}", hint="check --image")
        time.sleep(0.3)
    raise PodFailedToStart(
        f"the pod reading the PVC did not finish within {READER_TIMEOUT_S:.0f}s: {explain(None, pod).line}",
        hint="is the PVC bound and its node up? `kubectl describe pvc`",
    )


def read_status(cluster: Kube, name: str, job: dict[str, Any] | None = None) -> FetchStatus:
    """The Job's status and the state files on the PVC: from the running fetch pod, else a reader pod."""
    job = job or _job_dict(cluster, name)
    pods = _pods(cluster, name)
    dest = (job["metadata"].get("annotations") or {}).get(p.ANNOTATION_DEST, "")
    state_dir = p.pod_path(dest)
    running = [pod for pod in pods if (pod.get("status") or {}).get("phase") == "Running"]
    answer = _exec_json(cluster, running[-1]["metadata"]["name"], ("states", state_dir)) if running else None
    if answer is None:
        spec = job["spec"]["template"]["spec"]
        pvc = spec["volumes"][0]["persistentVolumeClaim"]["claimName"]
        image = spec["containers"][0]["image"]
        node = running[-1]["spec"].get("nodeName") if running else None
        answer = read_with_pod(cluster, pvc, image, ("states", state_dir), node=node, owner=name)
    return fetch_status(job, pods, answer.get("states", []))


def list_fetches(cluster: Kube) -> list[dict[str, Any]]:
    from lightkube.resources.batch_v1 import Job

    labels = {"app.kubernetes.io/component": p.COMPONENT}
    with cluster.api("list", "jobs"):
        jobs = [j.to_dict() for j in cluster.client.list(Job, namespace=cluster.namespace, labels=labels)]
    return sorted(jobs, key=lambda j: j["metadata"].get("creationTimestamp") or "")


def show_status(cluster: Kube, name: str | None) -> int:
    jobs = [_job_dict(cluster, name)] if name else list_fetches(cluster)
    if not jobs:
        print(f"no data fetches in namespace {cluster.namespace}")
        return 0
    for index, job in enumerate(jobs):
        if index:
            print()
        for line in render(read_status(cluster, job["metadata"]["name"], job)):
            print(line)
    return 0


def show_listing(cluster: Kube, pvc: str, path: str, image: str) -> int:
    from lightkube.resources.core_v1 import PersistentVolumeClaim

    p.check_pvc_name(pvc)
    try:
        with cluster.api("get", "persistentvolumeclaims", pvc):
            cluster.client.get(PersistentVolumeClaim, pvc, namespace=cluster.namespace)
    except NotFound:
        raise NotFound(
            f"PVC {pvc!r} not found in namespace {cluster.namespace!r} ({describe_claims(cluster)})",
            hint="pick one of those with --pvc",
        ) from None
    answer = read_with_pod(cluster, pvc, image, ("ls", p.pod_path(path)), owner=pvc)
    shown = p.pod_path(path)[len(p.VOLUME_MOUNT) :] or "/"
    if answer.get("error"):
        raise NotFound(f"{pvc}:{shown}: {answer['error']}", hint="`pypod data ls --pvc NAME` lists its root")
    entries = answer["entries"]
    width = max([len(e["name"]) + (1 if e["kind"] == "dir" else 0) for e in entries] + [4])
    for entry in entries:
        label = entry["name"] + ("/" if entry["kind"] == "dir" else "")
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry["mtime"]))
        print(f"{label:<{width}}  {human_bytes(entry['size']):>10}  {when}")
    used = answer["capacity"] - answer["free"]
    print(
        f"{pvc}:{shown}: {len(entries)} entries; volume {human_bytes(used)} used of {human_bytes(answer['capacity'])}"
    )
    return 0


def remove_fetch(cluster: Kube, name: str, out: Output) -> int:
    """The Job, its pods and its plan Secret; never the PVC or its data."""
    from lightkube.resources.batch_v1 import Job
    from lightkube.resources.core_v1 import Secret
    from lightkube.types import CascadeType

    job = _job_dict(cluster, name)
    pvc = (job["metadata"].get("labels") or {}).get(p.LABEL_PVC, "?")
    with cluster.api("delete", "jobs", name):
        cluster.client.delete(Job, name, namespace=cluster.namespace, cascade=CascadeType.BACKGROUND)
    with contextlib.suppress(NotFound), cluster.api("delete", "secrets", name):
        cluster.client.delete(Secret, name, namespace=cluster.namespace)
    out.info(f"removed fetch {name}; the data on PVC {pvc} stays (delete the PVC itself to free it)")
    return 0
