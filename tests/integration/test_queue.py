"""Queued runs against the harness's real Kueue (v0.17, webhooks and visibility API): what
a user types, what a user sees, and what Kueue itself records."""

from __future__ import annotations

import subprocess
import threading
from decimal import Decimal
from pathlib import Path

import pytest
from lightkube import codecs
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Node, Pod

from harness.cluster import ClusterInfo
from harness.kueue import CLUSTER_QUEUE, create_local_queue
from pypod.quantity import parse_quantity
from pypod.rbac import role_objects
from tests.kubehelp import wait_for
from tests.pypodcli import Terminal, run_cli

pytestmark = pytest.mark.cluster

ClusterQueue = create_global_resource("kueue.x-k8s.io", "v1beta2", "ClusterQueue", "clusterqueues")
LocalQueue = create_namespaced_resource("kueue.x-k8s.io", "v1beta2", "LocalQueue", "localqueues")
Workload = create_namespaced_resource("kueue.x-k8s.io", "v1beta2", "Workload", "workloads")


@pytest.fixture
def env(pypod_env: dict[str, str], cluster: ClusterInfo) -> dict[str, str]:
    # A wide terminal, so the live status line is never cut.
    return dict(pypod_env, PYPOD_IMAGE=cluster.base_image, COLUMNS="1000")


@pytest.fixture
def cluster_queue(kube) -> dict:  # type: ignore[no-untyped-def]
    return kube.get(ClusterQueue, CLUSTER_QUEUE).to_dict()


@pytest.fixture
def queue(cluster: ClusterInfo, namespace: str) -> str:
    """The namespace's LocalQueue, `<namespace>-user-queue` as EIDF names them, Active."""
    return create_local_queue(namespace)


def nominal(cluster_queue: dict, resource: str) -> Decimal:
    for group in cluster_queue["spec"]["resourceGroups"]:
        for flavor in group["flavors"]:
            for entry in flavor["resources"]:
                if entry["name"] == resource:
                    return parse_quantity(str(entry["nominalQuota"]), resource)
    raise AssertionError(f"the ClusterQueue has no {resource} quota")


def mebibytes(value: Decimal) -> str:
    return f"{int(value / 2**20)}Mi"


def workload_of(kube, namespace: str, job_name: str) -> dict | None:  # type: ignore[no-untyped-def]
    jobs = [j for j in kube.list(Job, namespace=namespace) if j.metadata.name == job_name]
    if not jobs:
        return None
    labels = {"kueue.x-k8s.io/job-uid": jobs[0].metadata.uid}
    found = [w.to_dict() for w in kube.list(Workload, namespace=namespace, labels=labels)]
    return found[0] if found else None


def condition(workload: dict | None, kind: str) -> dict | None:
    conditions = ((workload or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), None)


def quota_message(kube, namespace: str, job_name: str) -> str:  # type: ignore[no-untyped-def]
    """The QuotaReserved=False message Kueue wrote on the Job's Workload, once it has."""

    def message() -> str:
        reserved = condition(workload_of(kube, namespace, job_name), "QuotaReserved")
        return reserved["message"] if reserved and reserved["status"] == "False" and reserved.get("message") else ""

    return wait_for(message, 60)


def test_a_queued_job_shows_its_admission_and_runs(env, kube, namespace, queue, tmp_path):
    result = run_cli(
        ["--queue", queue, "--runid", "admitted", "--cpu", "100m", "--memory", "64Mi", "print('ran after admission')"],
        env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert f"run admitted created in namespace {namespace} in queue {queue}" in result.stderr
    assert "admitted: admitted by Kueue into ClusterQueue " in result.stderr
    assert "ran after admission" in result.stdout


def test_a_second_job_waits_at_position_one_with_kueues_message_then_runs(
    env, kube, namespace, queue, cluster_queue, tmp_path
):
    # Memory is what fills the quota: the node has far more of it than the ClusterQueue grants,
    # so both jobs would fit the node, and only Kueue holds the second back.
    over_half = mebibytes(nominal(cluster_queue, "memory") * Decimal("0.6"))
    first = subprocess.Popen(
        ["python", "-m", "pypod", "--queue", queue, "--runid", "first", "--cpu", "100m", "--memory", over_half,
         "import time; time.sleep(20); print('first done')"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(
            lambda: any(p.status.phase == "Running" for p in kube.list(Pod, namespace=namespace)), 90, interval=0.3
        )
        second = Terminal(
            ["--queue", queue, "--runid", "second", "--cpu", "100m", "--memory", over_half, "print('second ran')"],
            env,
            cwd=tmp_path,
        )
        # First in its LocalQueue; in the shared ClusterQueue, behind whatever else waits there.
        second.expect(f"waiting in queue {queue}, position 1 (", 60)
        # Kueue's own words, verbatim, on the same line.
        second.expect(f" in ClusterQueue {CLUSTER_QUEUE}): {quota_message(kube, namespace, 'second')}", 30)
        listed = run_cli(["ps"], env)
        assert "QUEUE" in listed.stdout, listed.stdout
        assert f"{queue}: waiting #1" in listed.stdout
        assert f"{queue}: admitted" in listed.stdout
        second.expect("second: admitted by Kueue into ClusterQueue ", 90)
        second.expect("second ran", 60)
        assert second.wait(60) == 0
        assert first.wait(60) == 0
        assert "first done" in first.stdout.read()  # type: ignore[union-attr]
    finally:
        first.kill()
        run_cli(["rm", "--all"], env)


def test_a_missing_local_queue_fails_before_anything_is_created(env, kube, namespace, queue, tmp_path):
    result = run_cli(["--queue", "no-such-queue", "print(1)"], env, cwd=tmp_path)
    assert result.returncode == 71, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"pypod: LocalQueue 'no-such-queue' does not exist in namespace '{namespace}'; LocalQueues there: {queue}. "
        "pass one of them with --queue (or the profile's queue), or ask the cluster's admins for one"
    ]
    # A template's own queue label is checked the same way.
    template = tmp_path / "driver.yaml.template"
    template.write_text(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: $RUNID\n  labels:\n"
        "    kueue.x-k8s.io/queue-name: research\nspec:\n  template:\n    spec:\n"
        "      containers:\n      - name: driver\n        image: $IMAGE_TAG\n        command: [$COMMAND]\n"
    )
    templated = run_cli(["--template", str(template), "print(1)"], env, cwd=tmp_path)
    assert templated.returncode == 71 and "LocalQueue 'research' does not exist" in templated.stderr
    assert not list(kube.list(Job, namespace=namespace))


def test_a_job_larger_than_the_cluster_queue_times_out_with_kueues_message(
    env, kube, namespace, queue, cluster_queue, tmp_path
):
    too_much = mebibytes(nominal(cluster_queue, "memory") * 2)
    run = subprocess.Popen(
        ["python", "-m", "pypod", "--queue", queue, "--runid", "huge", "--memory", too_much, "--pending-timeout", "12",
         "print(1)"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    message = quota_message(kube, namespace, "huge")
    _, stderr = run.communicate(timeout=90)
    assert run.returncode == 73, stderr
    assert f"the driver was still waiting for quota after 12s: waiting in queue {queue}" in stderr
    assert message in stderr
    assert "pick another --queue" in stderr
    wait_for(lambda: not list(kube.list(Job, namespace=namespace)), 30)


def test_kueues_webhook_refusal_is_one_line_with_its_message(env, kube, namespace, queue, tmp_path):
    result = run_cli(
        ["--queue", queue, "--label", "kueue.x-k8s.io/max-exec-time-seconds=0", "print(1)"], env, cwd=tmp_path
    )
    assert result.returncode == 78, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pypod: the cluster refused to create jobs/")
    assert "admission webhook" in lines[0] and "should be greater than 0" in lines[0]


WORKERS = r"""
import time
from lightkube import Client
from lightkube.resources.core_v1 import Pod
from pypod import K8sCluster
cluster = K8sCluster(2, cpu="100m", memory="300Mi", pending_timeout=120)
client = cluster.get_client()
client.wait_for_workers(2, timeout=120)
pods = list(Client().list(Pod, labels={"pypod.dev/cluster": cluster.cluster_id}))
print("QUEUES", sorted({p.metadata.labels.get("kueue.x-k8s.io/queue-name", "") for p in pods}), flush=True)
print("SUM", client.submit(sum, [1, 2, 3]).result(), flush=True)
print("WORKERS_UP", flush=True)
time.sleep(30)
cluster.close()
"""


@pytest.fixture(scope="module")
def dask_project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("queued") / "queueddask"
    root.mkdir()
    (root / "requirements.txt").write_text("distributed==2026.8.0\nlightkube==1.0.1\n")
    (root / "workers.py").write_text(WORKERS)
    return root


def test_dask_workers_of_a_queued_driver_are_admitted_and_counted(
    pypod_env, cluster, kube, namespace, queue, cluster_queue, dask_project
):
    env = dict(pypod_env, IMAGE_REPO=f"{cluster.registry}/dask-tests")  # the image test_cluster.py builds
    for obj in role_objects(namespace, "ServiceAccount", "default"):
        kube.create(codecs.from_dict(obj), namespace=namespace)
    driver = subprocess.Popen(
        ["python", "-m", "pypod", "run", "--queue", queue, "--cpu", "200m", "--memory", "512Mi", "workers.py"],
        env=env, cwd=dask_project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(driver.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        wait_for(lambda: any("WORKERS_UP" in line for line in lines), 900, interval=1)
        assert f"QUEUES ['{queue}']\n" in lines and "SUM 6\n" in lines, lines
        workers = list(kube.list(Pod, namespace=namespace, labels={"app.kubernetes.io/component": "dask-worker"}))
        assert len(workers) == 2
        for pod in workers:
            labels = {"kueue.x-k8s.io/job-uid": pod.metadata.uid}
            workload = next(iter(kube.list(Workload, namespace=namespace, labels=labels))).to_dict()
            assert condition(workload, "Admitted")["status"] == "True"  # type: ignore[index]
        # The driver and both workers hold quota in the LocalQueue, and so in its ClusterQueue.
        local = kube.get(LocalQueue, queue, namespace=namespace).to_dict()
        assert local["status"]["admittedWorkloads"] == 3
        usage = kube.get(ClusterQueue, cluster_queue["metadata"]["name"]).to_dict()["status"]["flavorsUsage"]
        cpu_used = sum(
            parse_quantity(str(r["total"]), "cpu") for f in usage for r in f["resources"] if r["name"] == "cpu"
        )
        assert cpu_used >= Decimal("0.4")  # 200m driver + 2 x 100m workers, at least
        _, stderr = driver.communicate(timeout=120)
        assert driver.returncode == 0, stderr
    finally:
        driver.kill()
        run_cli(["rm", "--all"], env)


def gpu_node(kube) -> Node:  # type: ignore[no-untyped-def]
    nodes = [n for n in kube.list(Node) if (n.metadata.labels or {}).get("nvidia.com/gpu.product")]
    assert nodes, "the harness adds kwok nodes advertising nvidia.com/gpu"
    return nodes[0]


def test_gpu_and_product_run_on_the_gpu_node(env, kube, namespace, tmp_path):
    node = gpu_node(kube)
    product = node.metadata.labels["nvidia.com/gpu.product"]
    # The kwok nodes are tainted; a template carries the tolerations (pypod adds none of its own).
    tolerations = "".join(
        f"      - key: {t.key}\n        operator: Exists\n        effect: {t.effect}\n" for t in node.spec.taints or []
    )
    template = tmp_path / "driver.yaml.template"
    template.write_text(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: $RUNID\nspec:\n  template:\n    spec:\n"
        f"      tolerations:\n{tolerations}"
        "      containers:\n      - name: driver\n        image: $IMAGE_TAG\n        command: [$COMMAND]\n"
    )
    run = subprocess.Popen(
        ["python", "-m", "pypod", "--template", str(template), "--runid", "ongpu", "--gpu", "1",
         "--gpu-product", product, "--detach", "print(1)"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def placed() -> Pod | None:
            pods = list(kube.list(Pod, namespace=namespace, labels={"batch.kubernetes.io/job-name": "ongpu"}))
            return next((p for p in pods if p.status and p.status.phase == "Running"), None)

        pod = wait_for(placed, 90, interval=0.5)
        assert pod.spec.nodeName == node.metadata.name
        assert pod.spec.nodeSelector == {"nvidia.com/gpu.product": product}
        assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    finally:
        run.kill()
        run_cli(["rm", "ongpu"], env)
