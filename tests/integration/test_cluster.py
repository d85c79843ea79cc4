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
from tests.kubehelp import kubectl, phase, wait_for, wait_pod
from tests.pypodcli import run_cli

pytestmark = pytest.mark.cluster

MAIN = r"""
import sys, time, warnings
warnings.simplefilter("always")
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
# Retired workers exit on their own, and only then are their pods deleted.
left = lambda: list(Client().list(Pod, labels={"pypod.dev/cluster": cluster.cluster_id}))
wait(lambda: workers(client) == 1 and len(left()) == 1)
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
    (root / "requirements.txt").write_text("distributed==2026.8.0\nlightkube==1.0.1\nbokeh==3.9.2\n")
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


# -- workers that keep a computation alive (issue 16) -----------------------------------

PRELUDE = r"""
import gc, sys, time, warnings
warnings.simplefilter("always")  # ResourceWarning included: the quiet tests look for it
from lightkube import Client
from lightkube.resources.core_v1 import Pod
from pypod import K8sCluster

api = Client()  # one, kept open: a client per call would leave sockets for the GC to warn about

def workers(client):
    return len(client.scheduler_info()["workers"])

def pods(cluster):
    return list(api.list(Pod, labels={"pypod.dev/cluster": cluster.cluster_id}))

def wait(cond, timeout=120):
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.5)
"""

QUIET = r"""
cluster = K8sCluster(1, cpu="100m", memory="300Mi", pending_timeout=120)
client = cluster.get_client()
cluster.scale(5)
client.wait_for_workers(5, timeout=180)
print("FIVE", workers(client), flush=True)
cluster.scale(1)
wait(lambda: workers(client) == 1 and len(pods(cluster)) == 1)
print("ONE", flush=True)
cluster.adapt(minimum=1, maximum=3, interval="500ms", wait_count=2)
futures = client.map(lambda x: time.sleep(1) or x, range(30), pure=False)
wait(lambda: workers(client) > 1, 120)
print("ADAPTED_UP", flush=True)
print("SUM", sum(client.gather(futures)), flush=True)
wait(lambda: workers(client) == 1, 120)
print("ADAPTED_DOWN", flush=True)
cluster.close()  # the client still open, as it usually is
client.close()
with K8sCluster(1, cpu="100m", memory="1Ei", pending_timeout=3) as impossible:
    print("PENDING", impossible.worker_events()[0].reason, flush=True)
api.close()
gc.collect()
print("DONE", flush=True)
"""

OOM = r"""
cluster = K8sCluster(1, cpu="200m", memory="300Mi", pending_timeout=120)
client = cluster.get_client()
client.wait_for_workers(1, timeout=120)
started = time.time()
future = client.submit(lambda: len(bytearray(600 * 2**20)), pure=False)
try:
    future.result(timeout=60)
    print("NO_ERROR", flush=True)
except Exception as exc:
    print("RAISED", type(exc).__name__, time.time() - started < 60, "|", exc, flush=True)
wait(lambda: workers(client) == 1 and len(pods(cluster)) == 1, 60)
print("BACK_TO", workers(client), flush=True)
print("STILL_COMPUTES", client.submit(sum, [1, 2, 3]).result(timeout=60), flush=True)
print("ENDS", sorted({e.reason for e in cluster.worker_events()}), len(cluster.worker_events()), flush=True)
cluster.close()

lone = K8sCluster(1, cpu="200m", memory="300Mi", pending_timeout=120, replace=False)
lclient = lone.get_client()
lclient.wait_for_workers(1, timeout=120)
started = time.time()
try:
    lclient.submit(lambda: len(bytearray(600 * 2**20)), pure=False).result(timeout=60)
    print("LONE_NO_ERROR", flush=True)
except Exception as exc:
    print("LONE", type(exc).__name__, time.time() - started < 30, "|", exc, flush=True)
print("LONE_PODS", len(pods(lone)), flush=True)
lone.close()
lclient.close()
api.close()
gc.collect()
print("DONE", flush=True)
"""

REPLACE = r"""
cluster = K8sCluster(1, cpu="100m", memory="300Mi", pending_timeout=120)
client = cluster.get_client()
client.wait_for_workers(1, timeout=120)
first = next(iter(client.scheduler_info()["workers"].values()))["name"]
api.delete(Pod, first)
wait(lambda: {w["name"] for w in client.scheduler_info()["workers"].values()} - {first}, 120)
print("REPLACED", [e.reason for e in cluster.worker_events()], workers(client), flush=True)
print("SUM", client.submit(sum, [1, 2, 3]).result(timeout=60), flush=True)
cluster.close()
client.close()

def crash(pod):
    pod["spec"]["containers"][0]["command"] = ["python3", "-c", "import sys; sys.exit(3)"]
    return pod

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    doomed = K8sCluster(1, cpu="100m", memory="100Mi", pending_timeout=120, max_failures=3, configure=crash)
    gave_up = lambda: [str(w.message) for w in caught if "not replacing them any more" in str(w.message)]
    wait(gave_up, 120)
    time.sleep(6)  # time enough for a fourth pod, were one started
    ends = doomed.worker_events()
    print("GAVE_UP", len(ends), sorted({(e.reason, e.exit_code) for e in ends}), len(pods(doomed)), flush=True)
    print("WARNING", gave_up()[0], flush=True)
    dclient = doomed.get_client()
    started = time.time()
    try:
        dclient.submit(sum, [1], pure=False).result(timeout=60)
        print("STRANDED_RAN", flush=True)
    except Exception as exc:
        print("STRANDED", type(exc).__name__, time.time() - started < 10, "|", exc, flush=True)
    doomed.close()
"""

GROUPS = r"""
from distributed import get_worker

def dask_gpu_only(pod):
    # This node has no nvidia.com/gpu: the pod keeps the Dask resource GPU=1, not Kubernetes'.
    for section in ("limits", "requests"):
        pod["spec"]["containers"][0]["resources"][section].pop("nvidia.com/gpu", None)
    return pod

def by_group(cluster):
    groups = {}
    for pod in pods(cluster):
        groups.setdefault(pod.metadata.labels["pypod.dev/worker-group"], []).append(pod)
    return groups

def counts(cluster):
    return {group: len(members) for group, members in sorted(by_group(cluster).items())}

cluster = K8sCluster(1, cpu="100m", memory="300Mi", pending_timeout=120)
client = cluster.get_client()
cluster.add_worker_group("gpu", 1, gpu=1, cpu="200m", memory="400Mi", labels={"team": "ml"}, configure=dask_gpu_only)
client.wait_for_workers(2, timeout=120)
ran_on = client.gather(
    [client.submit(lambda i: get_worker().name, i, resources={"GPU": 1}, pure=False) for i in range(8)]
)
print("GPU_TASKS_ON", sorted({"gpu" if "-gpu-" in name else "default" for name in ran_on}), flush=True)
groups = by_group(cluster)
default, gpu = groups["default"][0], groups["gpu"][0]
print("LIMITS", default.spec.containers[0].resources.limits, gpu.spec.containers[0].resources.limits, flush=True)
print("GPU_FLAG", "--resources" in gpu.spec.containers[0].command, "--resources" in default.spec.containers[0].command)
print("TEAM", gpu.metadata.labels.get("team"), default.metadata.labels.get("team"), flush=True)
print("OWNED", all(p.metadata.ownerReferences for p in pods(cluster)), flush=True)
cluster.scale(2, worker_group="gpu")
client.wait_for_workers(3, timeout=120)
print("SCALED_GROUP", counts(cluster), flush=True)
cluster.adapt(minimum=1, maximum=2, interval="500ms", wait_count=2)
futures = client.map(lambda x: time.sleep(1) or x, range(30), pure=False)
wait(lambda: counts(cluster).get("default") == 2, 120)
print("ADAPT_UP", counts(cluster), flush=True)
client.gather(futures)
wait(lambda: counts(cluster).get("default") == 1, 120)
print("ADAPT_DOWN", counts(cluster), flush=True)
cluster.delete_worker_group("gpu")
wait(lambda: "gpu" not in counts(cluster), 60)
print("DELETED_GROUP", counts(cluster), sorted(cluster.worker_groups), flush=True)
cluster.close()
client.close()
api.close()
gc.collect()
print("DONE", flush=True)
"""

DASHBOARD = r"""
import socket, time
from pypod import K8sCluster
taken = socket.socket()
taken.bind(("0.0.0.0", 8787))  # Dask's usual port, taken: the cluster picks another
taken.listen()
cluster = K8sCluster(0, cpu="100m", memory="200Mi")
print("DASHBOARD_PORT", cluster.dashboard_port, flush=True)
time.sleep(600)
"""

FOREIGN_DRIVER = r"""
from pypod import K8sCluster
cluster = K8sCluster(2, cpu="100m", memory="300Mi", pending_timeout=120)
client = cluster.get_client()
client.wait_for_workers(2, timeout=120)
print("WORKERS", len(client.scheduler_info()["workers"]), flush=True)
print("SUM", client.submit(sum, [1, 2, 3]).result(), flush=True)
cluster.close()
client.close()
"""


def run_script(name: str, body: str, env, kube, namespace: str, dask_project: Path):  # type: ignore[no-untyped-def]
    grant_pod_rights(kube, namespace)
    (dask_project / name).write_text(PRELUDE + body)
    result = run_cli(["run", name], env, cwd=dask_project, timeout=900)
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def assert_quiet(out: str) -> None:
    """The driver's whole output (its pod log: stdout and stderr) has no traceback and no
    ResourceWarning."""
    for noise in ("Traceback", "ResourceWarning", "CommClosedError"):
        assert noise not in out, f"{noise} in the driver's output:\n{out}"


def test_scale_adapt_close_and_pending_timeout_are_quiet(env, kube, namespace, dask_project):
    out = run_script("quiet.py", QUIET, env, kube, namespace, dask_project)
    assert "FIVE 5" in out and "ONE" in out
    assert "ADAPTED_UP" in out and "SUM 435" in out and "ADAPTED_DOWN" in out
    assert "PENDING PendingTimeout" in out and "DONE" in out
    # Retired workers exit by design: the one worker reported is the one that never started.
    assert out.count("WorkerPodWarning: worker") == 1 and "ended: PendingTimeout" in out
    assert_quiet(out)


def test_a_task_that_kills_its_workers_fails_with_the_pods_reason(env, kube, namespace, dask_project):
    out = run_script("oom.py", OOM, env, kube, namespace, dask_project)
    # Dask's verdict after allowed-failures (3): four workers OOMKilled, each replaced.
    assert "RAISED PodKilledWorker True | Attempted to run task" in out
    assert "on 4 different workers" in out and "OOMKilled (limit 300Mi, exit code 137)" in out
    assert "BACK_TO 1" in out and "STILL_COMPUTES 6" in out
    assert "ENDS ['OOMKilled'] 4" in out
    # replace=False: the task cannot run anywhere any more, and says why, at once.
    assert "LONE WorkerPodsEnded True |" in out and "replace=False" in out
    assert "LONE_PODS 0" in out or "LONE_PODS 1" in out  # its pod is being deleted
    assert_quiet(out)


def test_ended_workers_are_replaced_up_to_a_limit(env, kube, namespace, dask_project):
    out = run_script("replace.py", REPLACE, env, kube, namespace, dask_project)
    assert "REPLACED ['Deleted'] 1" in out and "SUM 6" in out
    assert "GAVE_UP 3 [('Error', 3)]" in out
    assert "worker group 'default': 3 workers ended within 10 min (max_failures=3)" in out
    assert "STRANDED WorkerPodsEnded True |" in out and "past the replacement limit" in out


def test_worker_groups(env, kube, namespace, dask_project):
    out = run_script("groups.py", GROUPS, env, kube, namespace, dask_project)
    assert "GPU_TASKS_ON ['gpu']" in out
    assert "LIMITS {'cpu': '100m', 'memory': '300Mi'} {'cpu': '200m', 'memory': '400Mi'}" in out
    assert "GPU_FLAG True False" in out and "TEAM ml None" in out and "OWNED True" in out
    assert "SCALED_GROUP {'default': 1, 'gpu': 2}" in out
    assert "ADAPT_UP {'default': 2, 'gpu': 2}" in out and "ADAPT_DOWN {'default': 1, 'gpu': 2}" in out
    assert "DELETED_GROUP {'default': 1} ['default']" in out
    assert_quiet(out)


def test_pypod_dashboard_forwards_the_dashboard(env, kube, namespace, dask_project):
    import signal

    grant_pod_rights(kube, namespace)
    missing = run_cli(["dashboard", "nosuch"], env)
    assert missing.returncode == 71 and missing.stderr.count("\n") == 1, missing.stderr
    assert "no pod for run 'nosuch'" in missing.stderr
    (dask_project / "dashboard.py").write_text(DASHBOARD)
    holder = subprocess.Popen(
        ["python", "-m", "pypod", "run", "--runid", "dash", "--detach", "dashboard.py"],
        env=env,
        cwd=dask_project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    forward = None
    try:

        def annotated() -> str | None:
            for pod in kube.list(Pod, namespace=namespace, labels={"pypod.dev/run": "dash"}):
                return (pod.metadata.annotations or {}).get("pypod.dev/dashboard-port")
            return None

        port = wait_for(annotated, 300, interval=1)
        assert port != "8787"  # taken in the pod: another was chosen
        forward = subprocess.Popen(
            ["python", "-m", "pypod", "dashboard", "dash"], env=env, stdout=subprocess.PIPE, text=True
        )
        line = forward.stdout.readline()
        assert line.startswith("Dask dashboard of dash: http://127.0.0.1:"), line
        url = line.split()[4]
        assert url.endswith("/status")
        page = wait_for(lambda: _get(url), 30, interval=0.5)
        assert page[0] == 200 and b"Dask" in page[1]
        forward.send_signal(signal.SIGINT)
        assert forward.wait(timeout=30) == 0
    finally:
        if forward is not None and forward.poll() is None:
            forward.kill()
        holder.kill()
        holder.wait()
        run_cli(["rm", "--all"], env)


def _get(url: str) -> tuple[int, bytes] | None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def test_a_driver_made_by_kubectl_run_starts_workers(env, kube, namespace, dask_project, cluster):
    """Any pod can drive: an image with pypod, distributed and lightkube (here the project's
    own, built as `pypod run` builds it), and a service account with `pypod rbac`'s Role."""
    from pypod.image.deps import ensure_dependency_image
    from pypod.image.ship import ship_source_image, target_repository
    from pypod.project import load_project

    (dask_project / "foreign.py").write_text(FOREIGN_DRIVER)
    project = load_project(dask_project)
    deps = ensure_dependency_image(project, cluster.base_image, target_repository(env["IMAGE_REPO"]))
    image = ship_source_image(project, deps.reference, env["IMAGE_REPO"]).reference

    def run_kubectl(*args: str, **kw) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
        result = kubectl(cluster.kubectl, cluster.admin_kubeconfig, f"--namespace={namespace}", *args, **kw)
        assert result.returncode == 0, result.stderr
        return result

    run_kubectl("create", "serviceaccount", "driver")
    rbac = run_cli(["rbac", "-n", namespace, "--service-account", "driver"], env)
    run_kubectl("apply", "-f", "-", input=rbac.stdout)
    overrides = '{"spec": {"serviceAccountName": "driver"}}'
    run_kubectl(
        "run", "foreign", f"--image={image}", "--restart=Never", f"--overrides={overrides}",
        "--command", "--", "python3", "/workspace/foreign.py",
    )  # fmt: skip
    wait_pod(kube, namespace, "foreign", phase("Succeeded", "Failed"), timeout=300)
    log = run_kubectl("logs", "foreign").stdout
    assert "WORKERS 2" in log and "SUM 6" in log, log


def test_a_repl_session_forwards_the_dashboard_on_its_own(env, kube, namespace, dask_project):
    import re

    from tests.pypodcli import Terminal

    grant_pod_rights(kube, namespace)
    term = Terminal(["--no-sync"], env, cwd=dask_project)
    try:
        term.expect(">>> ", 300)
        term.line('from pypod import K8sCluster; cluster = K8sCluster(0, cpu="100m", memory="200Mi")')
        term.expect("[pypod] Dask dashboard: http://127.0.0.1:", 120)
        term.expect("/status", 5)
        url = re.findall(r"Dask dashboard: (http://127\.0\.0\.1:\d+/status)", term.text())[-1]
        page = wait_for(lambda: _get(url), 30, interval=0.5)
        assert page[0] == 200 and b"Dask" in page[1]
        term.line("cluster.close()")
        term.line("exit(0)")
        assert term.wait(60) == 0
    finally:
        if term.exit_code is None:
            term.kill()
            run_cli(["rm", "--all"], env)
