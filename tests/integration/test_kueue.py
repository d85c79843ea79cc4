"""Real Kueue in the harness: its webhooks suspend labelled Jobs, its scheduler admits them
against the ClusterQueue's quota, and its visibility API answers through the apiserver."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from lightkube import codecs
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Node, Pod

from harness import kueue
from harness.cluster import ClusterInfo
from tests.kubehelp import kubectl, pod_manifest, wait_for, wait_pod

pytestmark = pytest.mark.cluster

Workload = create_namespaced_resource("kueue.x-k8s.io", "v1beta2", "Workload", "workloads")


def queued_job(name: str, image: str, queue: str, cpu: str, seconds: float) -> dict[str, Any]:
    container = {
        "name": "main",
        "image": image,
        "command": ["python3", "-c", f"import time; time.sleep({seconds}); print('done')"],
        "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}, "limits": {"cpu": cpu, "memory": "64Mi"}},
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {kueue.QUEUE_LABEL: queue}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "containers": [container]}
            },
        },
    }


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == kind), None)


def workload_of(kube, namespace: str, job: str) -> dict[str, Any] | None:  # type: ignore[no-untyped-def]
    for workload in kube.list(Workload, namespace=namespace):
        owners = workload.metadata.ownerReferences or []
        if any(o.kind == "Job" and o.name == job for o in owners):
            return workload
    return None


def job_succeeded(kube, namespace: str, name: str) -> bool:  # type: ignore[no-untyped-def]
    job = kube.get(Job, name, namespace=namespace)
    return any(c.type == "Complete" and c.status == "True" for c in (job.status.conditions or []))


def test_labelled_job_is_suspended_by_the_webhook_then_admitted_and_runs(cluster: ClusterInfo, kube, namespace):
    queue = kueue.create_local_queue(namespace)
    assert queue == f"{namespace}-user-queue"
    created = kube.create(
        codecs.from_dict(queued_job("first", cluster.base_image, queue, "500m", 0.5)), namespace=namespace
    )
    assert created.spec.suspend is True  # Kueue's mutating webhook, at creation
    workload = wait_for(lambda: workload_of(kube, namespace, "first"), 30)
    admitted = wait_for(lambda: condition(dict(workload_of(kube, namespace, "first")), "Admitted"), 30)
    assert admitted["status"] == "True", admitted
    assert workload["spec"]["queueName"] == queue
    assert wait_for(lambda: job_succeeded(kube, namespace, "first"), 120, interval=0.5)


def test_job_beyond_the_remaining_quota_waits_with_kueues_message_then_runs(cluster: ClusterInfo, kube, namespace):
    queue = kueue.create_local_queue(namespace)
    kube.create(codecs.from_dict(queued_job("holder", cluster.base_image, queue, "1200m", 15)), namespace=namespace)
    wait_for(lambda: (w := workload_of(kube, namespace, "holder")) and condition(dict(w), "Admitted"), 30)
    kube.create(codecs.from_dict(queued_job("waiter", cluster.base_image, queue, "1200m", 0.5)), namespace=namespace)

    def waiting_message() -> str | None:
        workload = workload_of(kube, namespace, "waiter")
        reserved = workload and condition(dict(workload), "QuotaReserved")
        return reserved["message"] if reserved and reserved["status"] == "False" else None

    message = wait_for(waiting_message, 30)
    assert "insufficient unused quota for cpu" in message, message
    assert kube.get(Job, "waiter", namespace=namespace).spec.suspend is True

    # The visibility API, through the apiserver's aggregation layer.
    kc = (cluster.kubectl, cluster.admin_kubeconfig)
    base = "/apis/visibility.kueue.x-k8s.io/v1beta2"
    paths = {
        "cluster": f"{base}/clusterqueues/{kueue.CLUSTER_QUEUE}/pendingworkloads",
        "local": f"{base}/namespaces/{namespace}/localqueues/{queue}/pendingworkloads",
    }
    answers = {}
    for scope, path in paths.items():
        result = kubectl(*kc, "get", "--raw", path)
        assert result.returncode == 0, result.stderr
        answers[scope] = json.loads(result.stdout)
    pending = {(w["metadata"]["namespace"], w["localQueueName"]): w for w in answers["cluster"]["items"]}
    mine = pending[(namespace, queue)]
    assert mine["metadata"]["name"] == workload_of(kube, namespace, "waiter").metadata.name
    assert mine["positionInLocalQueue"] == 0
    assert [w["metadata"]["name"] for w in answers["local"]["items"]] == [mine["metadata"]["name"]]

    # Admitted and run once the first one's quota is released.
    assert wait_for(lambda: job_succeeded(kube, namespace, "holder"), 120, interval=0.5)
    assert wait_for(lambda: job_succeeded(kube, namespace, "waiter"), 120, interval=0.5)


def test_labelled_pod_is_gated_until_admitted_and_unlabelled_work_is_left_alone(cluster: ClusterInfo, kube, namespace):
    queue = kueue.create_local_queue(namespace)
    manifest = pod_manifest(
        "worker",
        cluster.base_image,
        ["python3", "-c", "print('worker ran')"],
        container={"resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
    )
    manifest["metadata"]["labels"] = {kueue.QUEUE_LABEL: queue}
    created = kube.create(codecs.from_dict(manifest), namespace=namespace)
    assert "kueue.x-k8s.io/admission" in [g.name for g in created.spec.schedulingGates or []]
    pod = wait_pod(kube, namespace, "worker", lambda p: p.status.phase == "Succeeded", 120)
    assert pod.metadata.labels["kueue.x-k8s.io/managed"] == "true"

    plain = queued_job("plain", cluster.base_image, queue, "100m", 0)
    del plain["metadata"]["labels"]
    created_job = kube.create(codecs.from_dict(plain), namespace=namespace)
    assert not created_job.spec.suspend
    assert wait_for(lambda: job_succeeded(kube, namespace, "plain"), 120, interval=0.5)
    assert workload_of(kube, namespace, "plain") is None


def test_gpu_kwok_nodes_carry_their_products_and_take_gpu_pods(cluster: ClusterInfo, kube, namespace):
    nodes = {n.metadata.name: n for n in kube.list(Node, labels={"type": "kwok-gpu"})}
    products = {name: n.metadata.labels["nvidia.com/gpu.product"] for name, n in nodes.items()}
    assert products == {"kwok-gpu-a100": "NVIDIA-A100-SXM4-80GB", "kwok-gpu-h100": "NVIDIA-H100-80GB-HBM3"}
    for node in nodes.values():
        assert node.status.allocatable["nvidia.com/gpu"] == "4"
        assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    manifest = pod_manifest(
        "gpu",
        "never-pulled.invalid/image",
        ["none"],
        container={"resources": {"limits": {"nvidia.com/gpu": "2"}}},
        nodeSelector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        tolerations=[{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
    )
    kube.create(codecs.from_dict(manifest), namespace=namespace)
    pod: Pod = wait_pod(kube, namespace, "gpu", lambda p: p.status.phase == "Running", 60)
    assert pod.spec.nodeName == "kwok-gpu-h100"


def test_harness_status_reports_kueue_health(cluster: ClusterInfo):
    result = subprocess.run(
        [sys.executable, "-m", "harness", "status", "--json"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)
    assert state["components"]["kueue"] == "running"
    assert state["health"]["kueue"]["ok"] is True, state["health"]["kueue"]
