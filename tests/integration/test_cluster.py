"""K8sCluster from a real driver pod: workers run as real containers on the real node and
connect back to the scheduler in the driver process."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from lightkube import codecs
from lightkube.resources.core_v1 import Pod

from harness.cluster import ClusterInfo
from pypod.rbac import role_objects
from tests.kubehelp import wait_for
from tests.pypodcli import run_cli

pytestmark = pytest.mark.cluster

MAIN = r"""
import sys, time, warnings
warnings.simplefilter("always")
warnings.simplefilter("ignore", ResourceWarning)
from lightkube import Client
from lightkube.resources.core_v1 import Pod
from pypod import K8sCluster

def workers(client):
    return len(client.scheduler_info()["workers"])

def wait(cond, timeout=120):
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.5)

cluster = K8sCluster(3, cpu="200m", memory="300Mi", pending_timeout=120)
client = cluster.get_client()
client.wait_for_workers(3, timeout=120)
print("MAP", sum(client.gather(client.map(lambda x: x * x, range(10)))), flush=True)
pods = Client().list(Pod, labels={"pypod.dev/cluster": cluster.cluster_id})
print("OWNERS", sorted({p.metadata.ownerReferences[0].name for p in pods}), flush=True)
cluster.scale(1)
wait(lambda: workers(client) == 1)
print("SCALED_DOWN", workers(client), flush=True)
print("LOGS", all("Starting Worker" in text for text in cluster.logs().values()), len(cluster.logs()), flush=True)
cluster.scale(2)
client.wait_for_workers(2, timeout=120)
print("SCALED_UP", workers(client), flush=True)
cluster.adapt(minimum=1, maximum=2)
wait(lambda: workers(client) >= 1)
print("ADAPTED", workers(client) >= 1, flush=True)
cluster_id = cluster.cluster_id
cluster.close()
wait(lambda: not list(Client().list(Pod, labels={"pypod.dev/cluster": cluster_id})), 60)
print("LEFT_AFTER_CLOSE", len(list(Client().list(Pod, labels={"pypod.dev/cluster": cluster_id}))), flush=True)

with warnings.catch_warnings(record=True) as caught:
    impossible = K8sCluster(1, cpu="100m", memory="1Ei", pending_timeout=5)
    events = impossible.worker_events()
    print("PENDING", events[0].reason, "|", events[0].message, flush=True)
    print("WARNED", any("Insufficient memory" in str(w.message) for w in caught), flush=True)
    print("CARRIES_ON", len(impossible.scheduler_info["workers"]), flush=True)
    impossible.close()

def add_gpu_and_label(pod):
    pod["metadata"]["labels"]["team"] = "ml"
    pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "1"
    return pod

configured = K8sCluster(0, cpu="100m", memory="64Mi", pending_timeout=60, configure=add_gpu_and_label)
configured.scale(1)
wait(lambda: list(Client().list(Pod, labels={"pypod.dev/cluster": configured.cluster_id})), 30)
pod = next(iter(Client().list(Pod, labels={"pypod.dev/cluster": configured.cluster_id})))
print("CONFIGURED", pod.metadata.labels["team"], pod.spec.containers[0].resources.limits["nvidia.com/gpu"],
      pod.status.phase, flush=True)
configured.close()

oom = K8sCluster(1, cpu="200m", memory="150Mi", pending_timeout=120, stream_logs=True)
oclient = oom.get_client()
oclient.wait_for_workers(1, timeout=120)
future = oclient.submit(lambda: len(bytearray(600 * 2**20)), pure=False)
try:
    future.result(timeout=60)
except Exception as exc:
    print("DASK_SAID", type(exc).__name__, flush=True)
wait(lambda: oom.worker_events(), 60)
print("OOM", oom.worker_events()[0].reason, oom.worker_events()[0].exit_code, flush=True)
oom.close()
"""

HOLD = r"""
import time
from pypod import K8sCluster
cluster = K8sCluster(2, cpu="100m", memory="200Mi", pending_timeout=120)
print("HOLDING", cluster.cluster_id, flush=True)
time.sleep(600)
"""

NO_RBAC = r"""
from pypod import K8sCluster
K8sCluster(1)
"""


@pytest.fixture(scope="module")
def dask_project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dask") / "daskproject"
    root.mkdir()
    (root / "requirements.txt").write_text("distributed==2026.8.0\nlightkube==1.0.1\n")
    # No copy of pypod here: pypod ships itself into the driver image.
    (root / "main.py").write_text(MAIN)
    (root / "hold.py").write_text(HOLD)
    (root / "no_rbac.py").write_text(NO_RBAC)
    return root


@pytest.fixture
def env(pypod_env: dict[str, str], cluster: ClusterInfo) -> dict[str, str]:
    # One repository for the module: the dependency image with dask is built once.
    return dict(pypod_env, IMAGE_REPO=f"{cluster.registry}/dask-tests")


def grant_pod_rights(kube, namespace: str) -> None:  # type: ignore[no-untyped-def]
    for obj in role_objects(namespace, "ServiceAccount", "default"):
        kube.create(codecs.from_dict(obj), namespace=namespace)


def test_workers_compute_scale_adapt_report_and_clean_up(env, kube, namespace, dask_project):
    grant_pod_rights(kube, namespace)
    result = run_cli(["run", "main.py"], env, cwd=dask_project, timeout=900)
    out = result.stdout
    assert result.returncode == 0, result.stderr + out
    assert "MAP 285" in out
    assert "OWNERS ['" in out  # every worker pod is owned by the driver pod
    assert "SCALED_DOWN 1" in out and "SCALED_UP 2" in out and "ADAPTED True" in out
    assert "LEFT_AFTER_CLOSE 0" in out
    assert "PENDING PendingTimeout |" in out and "Insufficient memory" in out
    assert "WARNED True" in out and "CARRIES_ON 0" in out
    assert "CONFIGURED ml 1 Pending" in out
    assert "OOM OOMKilled 137" in out
    assert "LOGS True 1" in out
    assert "From worker " in out  # stream_logs=True: worker output, prefixed, in the driver's log
    assert not list(kube.list(Pod, namespace=namespace, labels={"app.kubernetes.io/component": "dask-worker"}))


def test_deleting_the_driver_pod_deletes_its_workers(env, kube, namespace, dask_project):
    grant_pod_rights(kube, namespace)
    holder = subprocess.Popen(
        ["python", "-m", "pypod", "run", "--runid", "holder", "--detach", "hold.py"],
        env=env,
        cwd=dask_project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        workers = {"app.kubernetes.io/component": "dask-worker"}
        wait_for(lambda: len(list(kube.list(Pod, namespace=namespace, labels=workers))) == 2, 300, interval=1)
        driver = next(iter(kube.list(Pod, namespace=namespace, labels={"pypod.dev/run": "holder"})))
        kube.delete(Pod, driver.metadata.name, namespace=namespace, grace_period=0)
        wait_for(lambda: not list(kube.list(Pod, namespace=namespace, labels=workers)), 90, interval=1)
    finally:
        holder.kill()
        holder.wait()
        run_cli(["rm", "--all"], env)


def test_a_driver_without_rights_is_told_which(env, namespace, dask_project):
    result = run_cli(["run", "no_rbac.py"], env, cwd=dask_project, timeout=900)
    assert result.returncode == 1
    assert f"not allowed to get pods in namespace '{namespace}'" in result.stdout + result.stderr
    assert "pypod rbac" in result.stdout + result.stderr


def test_worker_pod_spec_is_printable_data():
    from pypod import worker_pod_spec

    pod = worker_pod_spec(
        image="i",
        scheduler_address="tcp://1.2.3.4:8786",
        cluster_id="c",
        driver="d",
        namespace="n",
        name=f"w-{uuid.uuid4().hex[:6]}",
    )
    import yaml

    assert yaml.safe_load(yaml.safe_dump(pod)) == pod


ELSEWHERE = r"""
import os, warnings
from lightkube import Client
from lightkube.resources.core_v1 import Pod
from pypod import K8sCluster
other = os.environ["OTHER_NS"]
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    cluster = K8sCluster(1, namespace=other, service_account="runner", cpu="100m", memory="300Mi",
                         pending_timeout=120)
    client = cluster.get_client()
    client.wait_for_workers(1, timeout=120)
    pod = next(iter(Client().list(Pod, namespace=other, labels={"pypod.dev/cluster": cluster.cluster_id})))
    print("PLACED", pod.metadata.namespace, pod.spec.serviceAccountName, pod.metadata.ownerReferences, flush=True)
    print("SUM", client.submit(sum, [1, 2, 3]).result(), flush=True)
    cluster.close()
    import time
    started = time.time()
    bad = K8sCluster(1, image="127.0.0.1:1/no/such:image", cpu="100m", memory="64Mi", pending_timeout=120)
    events = bad.worker_events()
    print("BADIMAGE", events[0].reason if events else None, time.time() - started < 60, flush=True)
    bad.close()
"""


def test_namespace_and_service_account_are_honoured(env, kube, namespace, dask_project):
    from lightkube.resources.core_v1 import Namespace, ServiceAccount

    other = f"{namespace}-other"
    kube.create(Namespace.from_dict({"metadata": {"name": other}}))
    try:
        kube.create(ServiceAccount.from_dict({"metadata": {"name": "runner"}}), namespace=other)
        grant_pod_rights(kube, namespace)
        for obj in role_objects(other, "ServiceAccount", "default"):
            if obj["kind"] == "RoleBinding":
                obj["subjects"][0]["namespace"] = namespace  # the driver's account, from its own namespace
            kube.create(codecs.from_dict(obj), namespace=other)
        (dask_project / "elsewhere.py").write_text(ELSEWHERE)
        result = run_cli(["run", "--env", f"OTHER_NS={other}", "elsewhere.py"], env, cwd=dask_project, timeout=900)
        assert result.returncode == 0, result.stderr + result.stdout
        # Owner references cannot cross namespaces, so a worker elsewhere has none.
        assert f"PLACED {other} runner None" in result.stdout
        assert "SUM 6" in result.stdout
        # An image that cannot be pulled fails fast, well before pending_timeout.
        assert "BADIMAGE ErrImagePull True" in result.stdout or "BADIMAGE ImagePullBackOff True" in result.stdout
    finally:
        kube.delete(Namespace, other)
