"""Kueue as a host process: its configuration, and its own manifests (CRDs, webhooks,
visibility APIServices) adapted from in-cluster Services to the bridge IP. Pure
functions, except `load_manifests` and `create_local_queue`.

What a test or a tool may rely on:
- ClusterQueue `CLUSTER_QUEUE` with `QUOTA` in ResourceFlavor `RESOURCE_FLAVOR`, open to
  every namespace;
- `create_local_queue(namespace)` makes the EIDF-style LocalQueue `<namespace>-user-queue`;
- Jobs and pods are Kueue's only when labelled `QUEUE_LABEL`.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

from .components import Component, Ports
from .errors import HarnessError
from .layout import BRIDGE_IP, Layout
from .pki import Pki

KUEUE_NAMESPACE = "kueue-system"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
RESOURCE_FLAVOR = "default-flavor"
CLUSTER_QUEUE = "harness-cluster-queue"
# Small on purpose, so that tests can fill it: the real node has 2 CPUs, the GPU kwok
# nodes 4 GPUs each.
QUOTA = {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "4"}
# batch/v1 Jobs (the driver) and plain pods (Dask workers, counted against the same quota).
FRAMEWORKS = ("batch/job", "pod")
# (apiGroup, resource) whose webhooks those frameworks serve; Kueue's own kinds besides.
_FRAMEWORK_RESOURCES = {"batch/job": ("batch", "jobs"), "pod": ("", "pods")}
# Kueue ignores these namespaces for pod-based integrations (its default, and its
# kustomization's namespaceSelector on the pod webhooks).
SYSTEM_NAMESPACES = ["kube-system", KUEUE_NAMESPACE]
# Where Kueue reads certificates when its own certificate management is off: fixed paths,
# bind-mounted from the state folder in Kueue's private mount namespace (kueue_component).
VISIBILITY_CERT_DIR = Path("/visibility")
METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")


def local_queue_name(namespace: str) -> str:
    """The LocalQueue name EIDF gives each project namespace."""
    return f"{namespace}-user-queue"


def state_dir(layout: Layout) -> Path:
    return layout.state / "kueue"


def serving_dir(layout: Layout) -> Path:
    """tls.crt and tls.key for Kueue's webhooks, visibility API and metrics alike."""
    return state_dir(layout) / "serving"


def webhook_base_url(ports: Ports) -> str:
    return f"https://{BRIDGE_IP}:{ports.kueue_webhook}"


def ca_bundle(pki: Pki) -> str:
    return base64.b64encode(pki.ca_cert.read_bytes()).decode()


def config(layout: Layout, ports: Ports) -> str:
    """Kueue's Configuration (config.kueue.x-k8s.io/v1beta2), as JSON (which is YAML)."""
    document = {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": KUEUE_NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{ports.kueue_health}"},
        "metrics": {"bindAddress": "0"},
        # Served by URL at the bridge IP with a certificate from the harness CA: Kueue's
        # own rotator writes its certificates where only a pod would find them.
        "internalCertManagement": {"enable": False},
        "webhook": {"host": BRIDGE_IP, "port": ports.kueue_webhook, "certDir": str(serving_dir(layout))},
        "visibilityServer": {"bindAddress": BRIDGE_IP},
        "leaderElection": {"leaderElect": False},
        "manageJobsWithoutQueueName": False,
        "managedJobsNamespaceSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": SYSTEM_NAMESPACES}
            ]
        },
        "integrations": {"frameworks": list(FRAMEWORKS)},
    }
    return json.dumps(document, indent=2) + "\n"


# Run in Kueue's own mount namespace: its fixed certificate paths become our files, and
# nothing of ours shows on the machine (only the empty mount points, removed by `down`).
_MOUNT_AND_EXEC = 'mount --bind "$1" "$2" && mount --bind "$3" "$4" && shift 4 && exec "$@"'


def kueue_component(layout: Layout, ports: Ports) -> Component:
    certs = serving_dir(layout)
    return Component(
        "kueue",
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            _MOUNT_AND_EXEC,
            "kueue-mounts",
            str(certs),
            str(VISIBILITY_CERT_DIR),
            str(certs),
            str(METRICS_CERT_DIR),
            str(layout.binary("kueue")),
            f"--config={state_dir(layout) / 'config.yaml'}",
            f"--kubeconfig={layout.admin_kubeconfig}",
            f"--visibility-server-port={ports.kueue_visibility}",
        ],
    )


def load_manifests(folder: Path) -> dict[str, Any]:
    """Kueue's manifests as `harness build` copied them from its module."""
    import yaml

    def documents(path: Path) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(path.read_text()) if d]

    if not (folder / ".ready").exists():
        raise HarnessError(f"Kueue's manifests are missing from {folder}", hint="run `python -m harness build`")
    crd = folder / "crd"
    kustomization = yaml.safe_load((crd / "kustomization.yaml").read_text())
    return {
        "crds": [doc for path in sorted((crd / "bases").glob("*.yaml")) for doc in documents(path)],
        # The patches Kueue's kustomization applies (commented-out ones are not in the list).
        "conversion_patches": [
            doc for entry in kustomization.get("patches", []) for doc in documents(crd / entry["path"])
        ],
        "webhooks": documents(folder / "webhook" / "manifests.yaml"),
        "apiservices": [
            doc for path in sorted((folder / "visibility").glob("apiservice_*.yaml")) for doc in documents(path)
        ],
    }


def crds(manifests: dict[str, Any], ports: Ports, ca: str) -> list[dict[str, Any]]:
    """The CRDs with the conversion stanzas of Kueue's kustomization, calling Kueue by URL:
    they serve v1beta1 beside the stored v1beta2."""
    conversions = {
        patch["metadata"]["name"]: patch["spec"]["conversion"]
        for patch in manifests["conversion_patches"]
        if "conversion" in patch.get("spec", {})
    }
    result = []
    for crd in manifests["crds"]:
        crd = json.loads(json.dumps(crd))
        conversion = conversions.get(crd["metadata"]["name"])
        if conversion is not None:
            webhook = dict(conversion["webhook"])
            path = webhook["clientConfig"]["service"]["path"]
            webhook["clientConfig"] = {"url": webhook_base_url(ports) + path, "caBundle": ca}
            crd["spec"]["conversion"] = {"strategy": conversion["strategy"], "webhook": webhook}
        result.append(crd)
    return result


def _served_kind(webhook: dict[str, Any]) -> tuple[str, str] | None:
    """The (apiGroup, resource) of a webhook Kueue serves with our frameworks, else None."""
    wanted = {_FRAMEWORK_RESOURCES[f] for f in FRAMEWORKS}
    for rule in webhook["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                kind = (group, resource.split("/")[0])
                if group == "kueue.x-k8s.io" or kind in wanted:
                    return kind
    return None


def webhook_configurations(manifests: dict[str, Any], ports: Ports, ca: str) -> list[dict[str, Any]]:
    """Kueue's admission webhooks, called by URL, for its own kinds and our frameworks only
    (the others' paths are not served, and with failurePolicy Fail would block every
    Deployment). Jobs and pods reach Kueue only when they carry its queue label, so a
    Kueue that is down never stands in the way of the rest of the cluster. (That also
    skips Kueue's defaulting of the label from a LocalQueue named `default`; the harness's
    LocalQueues are named `<namespace>-user-queue`.)"""
    result = []
    for configuration in manifests["webhooks"]:
        configuration = json.loads(json.dumps(configuration))
        configuration["metadata"]["name"] = "kueue-" + configuration["metadata"]["name"]
        kept = []
        for webhook in configuration["webhooks"]:
            kind = _served_kind(webhook)
            if kind is None:
                continue
            path = webhook["clientConfig"]["service"]["path"]
            webhook["clientConfig"] = {"url": webhook_base_url(ports) + path, "caBundle": ca}
            if kind[0] != "kueue.x-k8s.io":
                webhook["objectSelector"] = {"matchExpressions": [{"key": QUEUE_LABEL, "operator": "Exists"}]}
            if kind == ("", "pods"):
                webhook["namespaceSelector"] = {
                    "matchExpressions": [
                        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": SYSTEM_NAMESPACES}
                    ]
                }
            kept.append(webhook)
        configuration["webhooks"] = kept
        result.append(configuration)
    return result


VISIBILITY_SERVICE = "visibility-server"


def visibility_objects(manifests: dict[str, Any], ports: Ports, ca: str) -> list[dict[str, Any]]:
    """The visibility API through the aggregation layer: Kueue's APIServices, verified with
    the harness CA, and their Service without a selector, whose EndpointSlice is Kueue on
    the bridge (the apiserver runs with --enable-aggregator-routing)."""
    port = {"name": "https", "port": ports.kueue_visibility, "protocol": "TCP"}
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": VISIBILITY_SERVICE, "namespace": KUEUE_NAMESPACE},
            "spec": {"ports": [dict(port, port=443, targetPort=ports.kueue_visibility)]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{VISIBILITY_SERVICE}-kueue",
                "namespace": KUEUE_NAMESPACE,
                "labels": {
                    "kubernetes.io/service-name": VISIBILITY_SERVICE,
                    "endpointslice.kubernetes.io/managed-by": "pypod-harness",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [BRIDGE_IP], "conditions": {"ready": True}}],
            "ports": [port],
        },
    ]
    for apiservice in manifests["apiservices"]:
        apiservice = json.loads(json.dumps(apiservice))
        apiservice["spec"].pop("insecureSkipTLSVerify", None)
        apiservice["spec"]["caBundle"] = ca
        objects.append(apiservice)
    return objects


def namespace_object() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KUEUE_NAMESPACE}}


def queue_objects() -> list[dict[str, Any]]:
    """One ResourceFlavor and one ClusterQueue with a small quota, open to all namespaces."""
    return [
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "ResourceFlavor",
            "metadata": {"name": RESOURCE_FLAVOR},
        },
        {
            "apiVersion": "kueue.x-k8s.io/v1beta2",
            "kind": "ClusterQueue",
            "metadata": {"name": CLUSTER_QUEUE},
            "spec": {
                "namespaceSelector": {},
                "resourceGroups": [
                    {
                        "coveredResources": list(QUOTA),
                        "flavors": [
                            {
                                "name": RESOURCE_FLAVOR,
                                "resources": [{"name": name, "nominalQuota": value} for name, value in QUOTA.items()],
                            }
                        ],
                    }
                ],
            },
        },
    ]


def local_queue(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "LocalQueue",
        "metadata": {"name": local_queue_name(namespace), "namespace": namespace},
        "spec": {"clusterQueue": CLUSTER_QUEUE},
    }


def create_local_queue(namespace: str, layout: Layout | None = None, timeout: float = 30) -> str:
    """Create `<namespace>-user-queue` pointing at the harness's ClusterQueue and wait until
    Kueue reports it Active; returns its name. For tests, in their own namespaces."""
    layout = layout or Layout.default()
    kubectl = [str(layout.binary("kubectl")), f"--kubeconfig={layout.admin_kubeconfig}"]
    name = local_queue_name(namespace)
    wait = ["-n", namespace, "wait", "--for=condition=Active", f"localqueue/{name}", f"--timeout={timeout:.0f}s"]
    steps = [("apply", ["apply", "-f", "-"], json.dumps(local_queue(namespace))), ("wait", wait, None)]
    for verb, args, stdin in steps:
        result = subprocess.run([*kubectl, *args], input=stdin, capture_output=True, text=True, timeout=timeout + 30)
        if result.returncode != 0:
            raise HarnessError(
                f"LocalQueue {namespace}/{name}: `kubectl {verb}` failed: {result.stderr.strip()}",
                hint="is Kueue up? `python -m harness status`",
            )
    return name
