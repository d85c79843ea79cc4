"""`--pvc NAME[:MOUNT[:ro]]` for runs and Dask workers: parsed, added to a pod spec, and
checked against the cluster before anything is submitted.

Parsing and the pod-spec edit are pure; `check_claims` reads the namespace's PVCs,
PVs and pods and returns what to warn about (or raises for a claim that is missing).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import NotFound, UsageError


class Kube(Protocol):
    """Where the claims are looked up: data.kube.Kube, or a run's Driver."""

    client: Any

    @property
    def namespace(self) -> str: ...

    def api(self, verb: str, resource: str, name: str = "") -> AbstractContextManager[None]: ...


DEFAULT_ROOT = "/data"
_PVC_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
RESERVED_MOUNTS = ("/", "/dev", "/dev/shm", "/proc", "/sys", "/etc", "/tmp/pypod")


@dataclass(frozen=True)
class PvcMount:
    claim: str
    mount: str
    read_only: bool = False

    def __str__(self) -> str:
        return f"{self.claim}:{self.mount}" + (":ro" if self.read_only else "")


def parse_pvc(text: str) -> PvcMount:
    """`NAME`, `NAME:MOUNT`, `NAME:MOUNT:ro` or `NAME:ro`; the mount defaults to /data/NAME."""
    parts = text.strip().split(":")
    claim = parts[0]
    if not claim or len(claim) > 253 or not _PVC_NAME.match(claim):
        raise UsageError(
            f"--pvc {text!r}: {claim!r} is not a PVC name",
            hint="--pvc NAME[:MOUNT[:ro]], e.g. --pvc datasets:/data/datasets:ro",
        )
    rest = parts[1:]
    read_only = False
    if rest and rest[-1] in ("ro", "rw"):
        read_only = rest.pop() == "ro"
    if len(rest) > 1:
        raise UsageError(f"--pvc {text!r} has too many ':' parts", hint="--pvc NAME[:MOUNT[:ro]]")
    mount = rest[0] if rest and rest[0] else posixpath.join(DEFAULT_ROOT, claim)
    if not mount.startswith("/"):
        raise UsageError(f"--pvc {text!r}: the mount {mount!r} is not an absolute path", hint="e.g. /data/NAME")
    normal = posixpath.normpath(mount)
    if normal in RESERVED_MOUNTS or ".." in mount.split("/"):
        raise UsageError(
            f"--pvc {text!r}: cannot mount a volume at {mount!r}", hint="choose a folder such as /data/NAME"
        )
    return PvcMount(claim, normal, read_only)


def parse_pvcs(texts: Iterable[str]) -> tuple[PvcMount, ...]:
    mounts = tuple(parse_pvc(t) for t in texts)
    seen: dict[str, str] = {}
    for mount in mounts:
        if mount.mount in seen:
            raise UsageError(
                f"--pvc {mount.claim} and --pvc {seen[mount.mount]} both mount at {mount.mount}",
                hint="give one of them another mount: --pvc NAME:MOUNT",
            )
        seen[mount.mount] = mount.claim
    return mounts


def volume_name(index: int) -> str:
    return f"pypod-pvc-{index}"


def add_pvc_mounts(pod_spec: dict[str, Any], container: dict[str, Any], mounts: Sequence[PvcMount]) -> None:
    """Each claim as a volume of the pod and a mount of `container` (edited in place)."""
    if not mounts:
        return
    names = {volume_name(i) for i in range(len(mounts))}
    paths = {m.mount for m in mounts}
    volumes = [v for v in pod_spec.get("volumes") or [] if v.get("name") not in names]
    existing = [m for m in container.get("volumeMounts") or [] if m.get("mountPath") not in paths]
    for index, mount in enumerate(mounts):
        claim: dict[str, Any] = {"claimName": mount.claim}
        if mount.read_only:
            claim["readOnly"] = True
        volumes.append({"name": volume_name(index), "persistentVolumeClaim": claim})
        entry: dict[str, Any] = {"name": volume_name(index), "mountPath": mount.mount}
        if mount.read_only:
            entry["readOnly"] = True
        existing.append(entry)
    pod_spec["volumes"] = volumes
    container["volumeMounts"] = existing


# -- checks before submitting -----------------------------------------------------------


def claim_summary(pvc: dict[str, Any]) -> str:
    meta, spec, status = pvc["metadata"], pvc.get("spec") or {}, pvc.get("status") or {}
    size = ((status.get("capacity") or {}).get("storage")) or ((spec.get("resources") or {}).get("requests") or {}).get(
        "storage", "?"
    )
    modes = ",".join(_short_mode(m) for m in spec.get("accessModes") or [])
    return f"{meta['name']} ({size} {modes}, {status.get('phase', '?')})"


def _short_mode(mode: str) -> str:
    return {"ReadWriteOnce": "RWO", "ReadWriteMany": "RWX", "ReadOnlyMany": "ROX", "ReadWriteOncePod": "RWOP"}.get(
        mode, mode
    )


def claims_line(pvcs: list[dict[str, Any]]) -> str:
    if not pvcs:
        return "there are no PVCs there"
    return "PVCs there: " + ", ".join(claim_summary(p) for p in sorted(pvcs, key=lambda p: p["metadata"]["name"]))


def _pinned_nodes(pv: dict[str, Any] | None) -> set[str] | None:
    """The nodes a PV's nodeAffinity allows by hostname; None when it does not pin them."""
    terms = ((((pv or {}).get("spec") or {}).get("nodeAffinity") or {}).get("required") or {}).get(
        "nodeSelectorTerms"
    ) or []
    nodes: set[str] = set()
    for term in terms:
        for expression in term.get("matchExpressions") or []:
            if expression.get("key") == "kubernetes.io/hostname" and expression.get("operator") == "In":
                nodes.update(expression.get("values") or [])
    return nodes or None


def claim_problems(
    mounts: Sequence[PvcMount],
    pvcs: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    pvs: dict[str, dict[str, Any]],
    namespace: str,
) -> list[str]:
    """Pure: raises NotFound for a claim that is not there; returns one-line warnings for
    single-node claims that pods on a node already hold (the new pod may wait for them)."""
    by_name = {p["metadata"]["name"]: p for p in pvcs}
    missing = [m.claim for m in mounts if m.claim not in by_name]
    if missing:
        raise NotFound(
            f"PVC {', '.join(repr(c) for c in missing)} not found in namespace {namespace!r} ({claims_line(pvcs)})",
            hint="create it (e.g. `pypod data fetch URL --pvc NAME --size 10Gi`) or pick one of those",
        )
    warnings = []
    for mount in mounts:
        pvc = by_name[mount.claim]
        modes = set((pvc.get("spec") or {}).get("accessModes") or [])
        if modes & {"ReadWriteMany", "ReadOnlyMany"}:
            continue
        users = [pod for pod in pods if _uses_claim(pod, mount.claim) and _holds_volume(pod)]
        if not users:
            continue
        holder = users[0]
        node = (holder.get("spec") or {}).get("nodeName")
        if "ReadWriteOncePod" in modes:
            warnings.append(
                f"warning: PVC {mount.claim} is ReadWriteOncePod and pod {holder['metadata']['name']} holds it: "
                "this run's pod waits until that one ends"
            )
            continue
        pinned = _pinned_nodes(pvs.get((pvc.get("spec") or {}).get("volumeName", "")))
        if node and pinned == {node}:
            continue  # the volume lives on that node: the scheduler puts this pod there too
        where = f"on node {node}" if node else "(not yet on a node)"
        warnings.append(
            f"warning: PVC {mount.claim} is ReadWriteOnce and in use by pod {holder['metadata']['name']} {where}: "
            "this run's pod may wait there until it is free, unless it lands on that node"
        )
    return warnings


def _uses_claim(pod: dict[str, Any], claim: str) -> bool:
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        if ((volume.get("persistentVolumeClaim") or {}).get("claimName")) == claim:
            return True
    return False


def _holds_volume(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Pending", "Running") and bool(
        (pod.get("spec") or {}).get("nodeName")
    )


def describe_claims(kube: Kube) -> str:
    from lightkube.resources.core_v1 import PersistentVolumeClaim

    with kube.api("list", "persistentvolumeclaims"):
        pvcs = [c.to_dict() for c in kube.client.list(PersistentVolumeClaim, namespace=kube.namespace)]
    return claims_line(pvcs)


def check_claims(kube: Kube, mounts: Sequence[PvcMount]) -> list[str]:
    """Before submitting: every claim is there (else NotFound listing those that are); the
    warnings for claims held elsewhere. PVs are read when allowed (they are cluster-scoped)."""
    from lightkube.resources.core_v1 import PersistentVolume, PersistentVolumeClaim, Pod

    from ..errors import Forbidden

    if not mounts:
        return []
    with kube.api("list", "persistentvolumeclaims"):
        pvcs = [c.to_dict() for c in kube.client.list(PersistentVolumeClaim, namespace=kube.namespace)]
    names = {p["metadata"]["name"] for p in pvcs}
    pods: list[dict[str, Any]] = []
    pvs: dict[str, dict[str, Any]] = {}
    if all(m.claim in names for m in mounts):
        with kube.api("list", "pods"):
            pods = [pod.to_dict() for pod in kube.client.list(Pod, namespace=kube.namespace)]
        for pvc in pvcs:
            volume = (pvc.get("spec") or {}).get("volumeName")
            if volume and pvc["metadata"]["name"] in {m.claim for m in mounts}:
                try:
                    with kube.api("get", "persistentvolumes", volume):
                        pvs[volume] = kube.client.get(PersistentVolume, volume).to_dict()
                except (Forbidden, NotFound):
                    pass  # without the PV, a pinned volume is warned about too: better than silence
    return claim_problems(mounts, pvcs, pods, pvs, kube.namespace)
