"""`pypod data fetch` as data: the request checked, then the Job, its plan Secret, the
PVC and the short-lived reader pods, as dicts. Pure: nothing here talks to a cluster.

The plan (the URLs, which may carry credentials such as presigned signatures) travels
in a Secret mounted into the pod; the Job's manifest and its annotations name each file
with its URL redacted, as the downloader's state and log do.
"""

from __future__ import annotations

import json
import posixpath
import re
import secrets
import urllib.parse
from dataclasses import dataclass
from typing import Any

from .. import agent
from ..agent.fetch import STATE_DIR, redact
from ..errors import UsageError
from ..names import DNS_LABEL, MAX_RUN_NAME, dns_fragment, label_value, shorten
from ..quantity import check_quantity

COMPONENT = "data-fetch"
READER_COMPONENT = "data-reader"
LABEL_DATA = "pypod.dev/data"
LABEL_PVC = "pypod.dev/pvc"
LABEL_USER = "pypod.dev/user"
ANNOTATION_DEST = "pypod.dev/fetch-dest"
ANNOTATION_FILES = "pypod.dev/fetch-files"
CONTAINER = "fetch"
VOLUME_MOUNT = "/pvc"  # where the downloader's pod sees the PVC
PLAN_MOUNT = "/etc/pypod-fetch"
PLAN_KEY = "plan.json"
PYTHON = "python3"
# A file that cannot be fetched as asked (404, checksum, PVC full) ends the Job at once;
# a pod that dies (killed, evicted, OOM, node lost) is retried and resumes.
EXIT_PERMANENT = 3
BACKOFF_LIMIT = 6
TTL_SECONDS = 7 * 24 * 3600  # `pypod data status` works for a week after the end; `pypod data rm` before that
SCHEMES = ("http", "https")
LATER_SCHEMES = {"s3": "aws s3 presign s3://BUCKET/KEY", "gs": "gcloud storage sign-url gs://BUCKET/OBJECT"}
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_GNU_LINE = re.compile(r"^(?P<digest>[0-9a-fA-F]{64}) [ *](?P<name>.+)$")
_BSD_LINE = re.compile(r"^SHA256 \((?P<name>.+)\) = (?P<digest>[0-9a-fA-F]{64})$")


@dataclass(frozen=True)
class FetchFile:
    url: str
    name: str  # its name in the destination folder
    sha256: str | None = None


@dataclass(frozen=True)
class FetchRequest:
    """What `pypod data fetch` was asked, checked."""

    name: str  # the Job's
    pvc: str
    dest: str  # folder on the PVC, relative ("" for its root)
    files: tuple[FetchFile, ...]
    image: str
    parallel: int = 4
    retries: int = 5
    size: str | None = None  # create the PVC with this much, if it is missing
    storage_class: str | None = None
    access_mode: str = "ReadWriteOnce"
    user: str = ""

    @property
    def pod_dest(self) -> str:
        return posixpath.join(VOLUME_MOUNT, self.dest) if self.dest else VOLUME_MOUNT


def file_name(url: str) -> str:
    """The last segment of the URL's path, decoded: the name the file gets."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    name = posixpath.basename(path)
    if not name or name in (".", ".."):
        raise UsageError(
            f"cannot tell a file name from {redact(url)!r}", hint="give the URL of a file, not of a folder"
        )
    return name


def check_url(url: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in LATER_SCHEMES:
        raise UsageError(
            f"{scheme}:// URLs are not fetched directly yet",
            hint=f"pass a presigned https URL instead (e.g. `{LATER_SCHEMES[scheme]}`)",
        )
    if scheme not in SCHEMES or not urllib.parse.urlsplit(url).hostname:
        raise UsageError(f"cannot fetch {redact(url)!r}: not an http(s) URL", hint="give http:// or https:// URLs")


def parse_checksums(text: str, source: str) -> dict[str, str]:
    """A sha256sum file (`HEX  NAME`, `HEX *NAME`) or BSD-style (`SHA256 (NAME) = HEX`):
    name -> digest, by the file's base name."""
    digests: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _GNU_LINE.match(line) or _BSD_LINE.match(line)
        if not match:
            raise UsageError(
                f"{source}:{number}: not a sha256 checksum line: {line[:60]!r}",
                hint="use the output of `sha256sum FILES` (HEX  NAME per line)",
            )
        digests[posixpath.basename(match["name"].strip())] = match["digest"].lower()
    return digests


def check_dest(dest: str) -> str:
    """A folder on the PVC, relative to its root; "" is the root."""
    cleaned = posixpath.normpath(dest.strip("/")) if dest.strip("/") else ""
    if cleaned in (".",):
        return ""
    if cleaned.startswith("..") or "/../" in f"/{cleaned}/":
        raise UsageError(
            f"--dest {dest!r} leaves the PVC", hint="give a folder inside it, e.g. --dest datasets/imagenet"
        )
    if cleaned.split("/")[0] == STATE_DIR:
        raise UsageError(f"--dest {dest!r} is pypod's own folder", hint="choose another --dest")
    return cleaned


def check_pvc_name(name: str) -> str:
    if len(name) > 253 or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name):
        raise UsageError(
            f"{name!r} is not a valid PVC name",
            hint="lower-case letters, digits, '-' and '.', starting and ending with a letter or digit",
        )
    return name


def default_job_name(pvc: str, token: str | None = None) -> str:
    tail = token or secrets.token_hex(2)
    head = shorten(dns_fragment(f"fetch-{pvc}"), MAX_RUN_NAME - len(tail) - 1).strip("-")
    return f"{head}-{tail}"


def build_request(
    urls: list[str],
    pvc: str,
    image: str,
    dest: str = "",
    sha256: str | None = None,
    checksums: dict[str, str] | None = None,
    name: str | None = None,
    parallel: int = 4,
    retries: int = 5,
    size: str | None = None,
    storage_class: str | None = None,
    access_mode: str = "ReadWriteOnce",
    user: str = "",
) -> FetchRequest:
    """Check everything the user gave, before anything is created."""
    if not urls:
        raise UsageError("no URL given", hint="e.g. pypod data fetch https://host/file.tar --pvc data")
    check_pvc_name(pvc)
    if sha256 is not None:
        if len(urls) != 1:
            raise UsageError("--sha256 names one file's digest", hint="for several URLs use --checksums FILE")
        if not _HEX64.match(sha256):
            raise UsageError(f"--sha256 {sha256!r} is not 64 hex digits", hint="give the file's SHA-256 in hex")
    if parallel < 1:
        raise UsageError(f"--parallel must be at least 1, got {parallel}", hint="e.g. --parallel 4")
    if retries < 0:
        raise UsageError(f"--retries must be 0 or more, got {retries}", hint="e.g. --retries 5")
    files = []
    seen: set[str] = set()
    for url in urls:
        check_url(url)
        file = file_name(url)
        if file in seen:
            raise UsageError(f"two URLs end in the same name {file!r}", hint="fetch them in two runs with --dest")
        seen.add(file)
        digest = sha256.lower() if sha256 else (checksums or {}).get(file)
        if checksums is not None and digest is None:
            raise UsageError(f"--checksums has no line for {file!r}", hint="add its sha256, or leave --checksums out")
        files.append(FetchFile(url, file, digest))
    job = name or default_job_name(pvc)
    if len(job) > MAX_RUN_NAME or not DNS_LABEL.match(job):
        raise UsageError(
            f"fetch name {job!r} is not usable",
            hint=f"at most {MAX_RUN_NAME} lower-case letters, digits and '-'",
        )
    if size is not None:
        check_quantity(size, "storage")
    if access_mode not in ("ReadWriteOnce", "ReadWriteMany"):
        raise UsageError(f"unknown access mode {access_mode!r}", hint="ReadWriteOnce or ReadWriteMany")
    return FetchRequest(
        name=job,
        pvc=pvc,
        dest=check_dest(dest),
        files=tuple(files),
        image=image,
        parallel=parallel,
        retries=retries,
        size=size,
        storage_class=storage_class,
        access_mode=access_mode,
        user=user,
    )


def labels(request: FetchRequest, component: str = COMPONENT) -> dict[str, str]:
    found = {
        "app.kubernetes.io/managed-by": "pypod",
        "app.kubernetes.io/component": component,
        LABEL_DATA: request.name,
        LABEL_PVC: label_value(request.pvc),
        LABEL_USER: label_value(request.user),
    }
    return {k: v for k, v in found.items() if v}


def downloader_plan(request: FetchRequest) -> dict[str, Any]:
    """What the downloader reads (agent/fetch.py run_plan): the full URLs."""
    return {
        "dest": request.pod_dest,
        "parallel": request.parallel,
        "retries": request.retries,
        "files": [{"url": f.url, "name": f.name, "sha256": f.sha256} for f in request.files],
    }


def plan_secret(request: FetchRequest, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": request.name, "namespace": namespace, "labels": labels(request)},
        "type": "Opaque",
        "stringData": {PLAN_KEY: json.dumps(downloader_plan(request))},
    }


def owned_by(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The Secret's ownerReferences once the Job exists: deleted with it."""
    meta = job["metadata"]
    return [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"]}]


def _agent_env() -> list[dict[str, Any]]:
    return [
        {"name": agent.AGENT_ENV, "value": agent.agent_payload()},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]


def agent_command(*args: str) -> list[str]:
    return [PYTHON, "-c", agent.BOOTSTRAP, "data", *args]


def fetch_job(request: FetchRequest, namespace: str) -> dict[str, Any]:
    """One lightweight Job: the downloader in `image`, the PVC at /pvc, the plan Secret."""
    files = [{"name": f.name, "url": redact(f.url), "sha256": f.sha256} for f in request.files]
    container = {
        "name": CONTAINER,
        "image": request.image,
        "command": agent_command("fetch", posixpath.join(PLAN_MOUNT, PLAN_KEY)),
        "env": _agent_env(),
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "volumeMounts": [
            {"name": "data", "mountPath": VOLUME_MOUNT},
            {"name": "plan", "mountPath": PLAN_MOUNT, "readOnly": True},
        ],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": request.name,
            "namespace": namespace,
            "labels": labels(request),
            "annotations": {
                ANNOTATION_DEST: request.dest,
                ANNOTATION_FILES: json.dumps(files),
            },
        },
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "ttlSecondsAfterFinished": TTL_SECONDS,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_PERMANENT]},
                    },
                    # Evicted or preempted pods come back without spending a retry.
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                ]
            },
            "template": {
                "metadata": {"labels": labels(request)},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 5,
                    "containers": [container],
                    "volumes": [
                        {"name": "data", "persistentVolumeClaim": {"claimName": request.pvc}},
                        {"name": "plan", "secret": {"secretName": request.name, "defaultMode": 0o400}},
                    ],
                },
            },
        },
    }


def pvc_manifest(request: FetchRequest, namespace: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": [request.access_mode],
        "resources": {"requests": {"storage": request.size}},
    }
    if request.storage_class:
        spec["storageClassName"] = request.storage_class
    meta = {"name": request.pvc, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "pypod"}}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}


def reader_pod(
    pvc: str, image: str, args: tuple[str, ...], namespace: str, node: str | None = None, owner: str = "pypod"
) -> dict[str, Any]:
    """A short-lived pod that mounts the PVC read-only and prints one JSON document
    (`data states DEST` or `data ls PATH`): for status and listing when no fetch pod runs."""
    name = f"{shorten(dns_fragment(f'{owner}-read'), MAX_RUN_NAME - 5)}-{secrets.token_hex(2)}"
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 0,
        "activeDeadlineSeconds": 300,
        "containers": [
            {
                "name": "read",
                "image": image,
                "command": agent_command(*args),
                "env": _agent_env(),
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                "volumeMounts": [{"name": "data", "mountPath": VOLUME_MOUNT, "readOnly": True}],
            }
        ],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": pvc, "readOnly": True}}],
    }
    if node:
        spec["nodeName"] = node  # beside the running fetch pod: a ReadWriteOnce volume is attached there
    meta_labels = {"app.kubernetes.io/managed-by": "pypod", "app.kubernetes.io/component": READER_COMPONENT}
    meta = {"name": name, "namespace": namespace, "labels": meta_labels}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def pod_path(path: str) -> str:
    """A path on the PVC as the reader pod sees it (pypod's own folder may be looked at)."""
    cleaned = posixpath.normpath(path.strip("/")) if path.strip("/") else ""
    if cleaned.startswith("..") or "/../" in f"/{cleaned}/":
        raise UsageError(f"{path!r} leaves the PVC", hint="give a path inside it")
    return posixpath.join(VOLUME_MOUNT, cleaned) if cleaned not in ("", ".") else VOLUME_MOUNT
