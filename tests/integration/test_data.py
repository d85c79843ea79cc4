"""Data on volumes, end to end: `pypod data` onto PVCs of the real local-path-provisioner,
from the harness's data server, on the real node; `--pvc` in runs and Dask workers."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from lightkube import codecs
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Node, Pod

from harness import cluster as harness_cluster
from harness import storage as harness_storage
from harness.cluster import ClusterInfo, StorageInfo
from harness.layout import Layout
from tests.kubehelp import phase, pod_manifest, wait_for, wait_pod
from tests.pypodcli import run_cli

pytestmark = pytest.mark.cluster
MiB = 2**20


@pytest.fixture(scope="session")
def storage(cluster: ClusterInfo) -> StorageInfo:
    """The provisioner and the data server: started into the running harness if missing."""
    layout = Layout.default()
    services = (harness_storage.PROVISIONER_SERVICE, harness_storage.DATA_SERVER_SERVICE)
    harness_cluster.start_services(layout, lambda m: print(m, file=sys.stderr), services)
    return harness_cluster.storage_info(layout)


class Files:
    """Files the data server serves, made for one test and removed after it."""

    def __init__(self, storage: StorageInfo) -> None:
        self.storage = storage
        self.made: list[Path] = []

    def add(self, size: int) -> tuple[str, str]:
        name = f"{uuid.uuid4().hex[:10]}.bin"
        path = Path(self.storage.data_root) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with path.open("wb") as out:
            left = size
            while left:
                chunk = os.urandom(min(8 * MiB, left))
                out.write(chunk)
                digest.update(chunk)
                left -= len(chunk)
        self.made.append(path)
        return name, digest.hexdigest()

    def url(self, name: str, query: str = "") -> str:
        return f"{self.storage.data_server}/files/{name}" + (f"?{query}" if query else "")

    def requests(self, name: str) -> list[dict]:
        lines = Path(self.storage.data_log).read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["path"] == f"/files/{name}" and r["method"] == "GET"]

    def served(self, name: str) -> int:
        return sum(r["sent"] for r in self.requests(name))


@pytest.fixture
def files(storage: StorageInfo) -> Iterator[Files]:
    made = Files(storage)
    yield made
    for path in made.made:
        path.unlink(missing_ok=True)


@pytest.fixture
def env(pypod_env: dict[str, str], cluster: ClusterInfo, storage: StorageInfo) -> dict[str, str]:
    return dict(pypod_env, PYPOD_IMAGE=cluster.base_image)


def status_of(env: dict[str, str], name: str) -> str:
    """`pypod data status NAME`, its runs of spaces squeezed (columns are padded)."""
    result = run_cli(["data", "status", name], env, timeout=120)
    assert result.returncode == 0, result.stderr
    return re.sub(r"(?<=\S) {2,}", " ", result.stdout)


def job_done(kube, namespace: str, name: str) -> str:  # type: ignore[no-untyped-def]
    job = kube.get(Job, name, namespace=namespace)
    for condition in (job.status and job.status.conditions) or []:
        if condition.status == "True" and condition.type in ("Complete", "Failed"):
            return condition.type
    return ""


def done_bytes(status: str, name: str) -> int:
    """Bytes done of `name` in a status text, in MiB as shown."""
    line = next(line for line in status.splitlines() if line.strip().startswith(name))
    match = re.search(r"([\d.]+) (B|KiB|MiB|GiB) /", line)
    assert match, line
    return int(float(match[1]) * {"B": 1, "KiB": 2**10, "MiB": MiB, "GiB": 2**30}[match[2]])


def test_200mb_land_on_a_fresh_pvc_and_a_deleted_pod_resumes(env, kube, namespace, files):
    """The issue's first two: the right sha256 on a new PVC, and a pod deleted mid-download
    whose successor resumes (the server saw less than 1.3x the file). The status is read by
    other processes than the one that started the fetch, which has exited."""
    size = 200 * MiB
    name, digest = files.add(size)
    url = files.url(name, f"rate={25 * MiB}")  # about 8 s: time to delete the pod mid-way
    started = run_cli(
        ["data", "fetch", url, "--pvc", "big", "--size", "300Mi", "--sha256", digest, "--name", "big"], env
    )
    assert started.returncode == 0, started.stderr
    assert "created PVC big (300Mi, ReadWriteOnce, the default class)" in started.stderr
    assert "pypod data status big" in started.stderr

    def downloading_far_enough() -> bool:
        text = status_of(env, "big")
        return "downloading" in text and done_bytes(text, name) >= 60 * MiB

    wait_for(downloading_far_enough, 120, interval=0.5)
    first = next(p for p in kube.list(Pod, namespace=namespace, labels={"pypod.dev/data": "big"}))
    kube.delete(Pod, first.metadata.name, namespace=namespace, grace_period=0)
    wait_for(lambda: job_done(kube, namespace, "big"), 240, interval=1)
    assert job_done(kube, namespace, "big") == "Complete"

    text = status_of(env, "big")
    assert text.splitlines()[0] == "big pvc big:/ complete"
    assert f"{name} done (200.0 MiB / 200.0 MiB)" in text
    pods = list(kube.list(Pod, namespace=namespace, labels={"pypod.dev/data": "big"}))
    assert pods and first.metadata.name not in {p.metadata.name for p in pods}  # the retried pod did it
    requests = files.requests(name)
    resumed = [r for r in requests if r["range"]]
    assert resumed and resumed[-1]["status"] == 206
    assert files.served(name) < 1.3 * size

    # The data, read by a job of its own through --pvc (read-only), has the same digest.
    code = f"import hashlib; print('SHA', hashlib.sha256(open('/mnt/big/{name}', 'rb').read()).hexdigest())"
    result = run_cli(["--pvc", "big:/mnt/big:ro", code], env, timeout=240)
    assert result.returncode == 0, result.stderr
    assert f"SHA {digest}" in result.stdout

    listing = run_cli(["data", "ls", "--pvc", "big"], env, timeout=120)
    assert listing.returncode == 0, listing.stderr
    assert re.search(rf"^{name}\s+200\.0 MiB", listing.stdout, re.M)

    removed = run_cli(["data", "rm", "big"], env)
    assert removed.returncode == 0 and "the data on PVC big stays" in removed.stderr
    wait_for(lambda: not list(kube.list(Job, namespace=namespace, labels={"pypod.dev/data": "big"})), 30)
    again = run_cli(["data", "ls", "--pvc", "big"], env, timeout=120)
    assert name in again.stdout


def test_a_server_that_ignores_range_still_ends_with_the_file_and_says_it_restarted(env, files):
    name, digest = files.add(20 * MiB)
    url = files.url(name, f"norange=1&cutonce={6 * MiB}")
    args = ["data", "fetch", url, "--pvc", "nr", "--size", "64Mi", "--sha256", digest, "--name", "nr", "--follow"]
    result = run_cli(args, env, timeout=240)
    assert result.returncode == 0, result.stderr
    text = status_of(env, "nr")
    assert f"{name} done (20.0 MiB / 20.0 MiB)" in text
    assert "note: the server ignored Range: restarted from zero (had 6291456 bytes)" in text
    assert [r["status"] for r in files.requests(name)] == [200, 200]


def test_a_wrong_checksum_and_a_404_fail_each_in_one_line(env, files, tmp_path):
    name, digest = files.add(5 * MiB)
    wrong = "0" * 64
    missing = f"missing-{uuid.uuid4().hex[:6]}.bin"
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{wrong}  {name}\n{'1' * 64}  {missing}\n")
    args = ["data", "fetch", files.url(name), files.url(missing), "--pvc", "bad", "--size", "64Mi"]
    result = run_cli([*args, "--checksums", str(sums), "--name", "bad", "--follow"], env, timeout=240)
    assert result.returncode == 79, result.stderr
    text = status_of(env, "bad")
    assert "bad pvc bad:/ failed: a file cannot be fetched (see below)" in text
    assert f"{name} failed: sha256 mismatch: expected {wrong}, got {digest}" in text
    assert f"{missing} failed: HTTP 404 Not Found from {files.url(missing)}: the file is not there" in text
    listing = run_cli(["data", "ls", "--pvc", "bad"], env, timeout=120)
    assert name not in listing.stdout.replace(".pypod-fetch", "")  # never under its final name


def test_a_pvc_too_small_gives_pvc_full(env, files):
    name, _digest = files.add(40 * MiB)
    args = ["data", "fetch", files.url(name), "--pvc", "tiny", "--size", "16Mi", "--name", "tiny", "--follow"]
    result = run_cli(args, env, timeout=240)
    assert result.returncode == 79, result.stderr
    text = status_of(env, "tiny")
    assert re.search(rf"{name} failed: PVC full: no space left after \d+ of {40 * MiB} bytes", text), text


def test_an_unreachable_host_and_a_missing_pvc(env, kube, namespace):
    import socket

    with socket.socket() as sock:
        sock.bind(("10.88.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://10.88.0.1:{port}/files/x.bin"
    args = ["data", "fetch", url, "--pvc", "un", "--size", "16Mi", "--retries", "1", "--name", "un", "--follow"]
    result = run_cli(args, env, timeout=240)
    assert result.returncode == 79, result.stderr
    assert f"failed: unreachable host 10.88.0.1:{port}: Connection refused (after 2 tries)" in status_of(env, "un")

    missing = run_cli(["data", "fetch", url, "--pvc", "nope"], env)
    assert missing.returncode == 71
    assert f"PVC 'nope' not found in namespace '{namespace}' (PVCs there: un (16Mi RWO, Bound))" in missing.stderr


def test_a_run_with_a_missing_pvc_fails_at_once_and_a_held_rwo_claim_warns(env, kube, namespace):
    result = run_cli(["--pvc", "absent", "print(1)"], env)
    assert result.returncode == 71
    assert f"PVC 'absent' not found in namespace '{namespace}' (there are no PVCs there)" in result.stderr
    assert not list(kube.list(Job, namespace=namespace))

    # A ReadWriteOnce claim on a volume that any node may attach, held by a pod on a kwok node.
    objects = [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"held-{namespace}"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "hostPath": {"path": f"/tmp/pypod-test-held-{namespace}"},
                "storageClassName": "",
                "claimRef": {"namespace": namespace, "name": "held"},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "held", "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
                "storageClassName": "",
                "volumeName": f"held-{namespace}",
            },
        },
    ]
    for obj in objects:
        kube.create(codecs.from_dict(obj))
    try:
        holder = pod_manifest(
            "holder",
            "registry.k8s.io/pause:3.10",
            ["/pause"],
            nodeName="kwok-node-0",
            tolerations=[{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
            volumes=[{"name": "v", "persistentVolumeClaim": {"claimName": "held"}}],
        )
        kube.create(codecs.from_dict(holder), namespace=namespace)
        wait_pod(kube, namespace, "holder", phase("Running"), 60)
        result = run_cli(["--pvc", "held", "print('ran')"], env, timeout=240)
        assert result.returncode == 0, result.stderr
        assert (
            "warning: PVC held is ReadWriteOnce and in use by pod holder on node kwok-node-0: "
            "this run's pod may wait there until it is free, unless it lands on that node"
        ) in result.stderr
        assert "ran" in result.stdout
    finally:
        from lightkube.resources.core_v1 import PersistentVolume

        kube.delete(PersistentVolume, f"held-{namespace}")


def test_an_rwx_claim_is_mounted_by_two_pods_at_once(kube, namespace, cluster, storage):
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "shared"},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": storage.rwx_class,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    kube.create(codecs.from_dict(claim), namespace=namespace)
    # Each writes its name, then waits for the other's: both only end if both ran at once.
    script = (
        "import os, sys, time\n"
        "me, other = sys.argv[1], sys.argv[2]\n"
        "open(f'/shared/{me}', 'w').write(me)\n"
        "deadline = time.time() + 60\n"
        "while not os.path.exists(f'/shared/{other}'):\n"
        "    assert time.time() < deadline, 'never saw ' + other\n"
        "    time.sleep(0.2)\n"
        "print('saw', open(f'/shared/{other}').read())\n"
    )
    volume = [{"name": "s", "persistentVolumeClaim": {"claimName": "shared"}}]
    mount = {"volumeMounts": [{"name": "s", "mountPath": "/shared"}]}
    for me, other in (("a", "b"), ("b", "a")):
        pod = pod_manifest(
            f"pod-{me}", cluster.base_image, ["python3", "-c", script, me, other], volumes=volume, container=mount
        )
        kube.create(codecs.from_dict(pod), namespace=namespace)
    for me, other in (("a", "b"), ("b", "a")):
        done = wait_pod(kube, namespace, f"pod-{me}", phase("Succeeded", "Failed"), 120)
        assert done.status.phase == "Succeeded"
        assert f"saw {other}" in "".join(kube.log(f"pod-{me}", namespace=namespace))


def test_shm_1gi_gives_a_1gib_dev_shm_beside_a_pvc(env, kube, namespace, storage):
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "beside"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}},
    }
    kube.create(codecs.from_dict(claim), namespace=namespace)
    code = (
        "import os; s = os.statvfs('/dev/shm'); print('SHM', s.f_blocks * s.f_frsize); "
        "open('/dev/shm/x', 'wb').write(b'0' * (512 << 20)); print('WROTE 512 MiB'); "
        "points = [line.split()[4] for line in open('/proc/self/mountinfo')]; "
        "print('MOUNTS', sorted(p for p in points if p.startswith('/data/') or p == '/dev/shm'))"
    )
    result = run_cli(["--shm", "1Gi", "--memory", "1536Mi", "--pvc", "beside", code], env, timeout=240)
    assert result.returncode == 0, result.stderr
    assert f"SHM {2**30}" in result.stdout
    assert "WROTE 512 MiB" in result.stdout
    assert "MOUNTS ['/data/beside', '/dev/shm']" in result.stdout


DASK_READS = r"""
import hashlib, sys
from pypod import K8sCluster
cluster = K8sCluster(2, cpu="200m", memory="300Mi", pending_timeout=120, pvcs=["shared-data:/data/shared:ro"])
client = cluster.get_client()
client.wait_for_workers(2, timeout=120)
name = sys.argv[1]
digests = client.run(lambda: hashlib.sha256(open("/data/shared/" + name, "rb").read()).hexdigest())
print("DIGESTS", sorted(set(digests.values())), len(digests), flush=True)
cluster.close()
try:
    K8sCluster(1, pvcs=["no-such-claim"])
except Exception as exc:
    print("MISSING", type(exc).__name__, exc, flush=True)
"""


def test_dask_workers_of_k8scluster_pvcs_read_the_data(env, kube, namespace, files, cluster, tmp_path_factory):
    from pypod.rbac import role_objects

    name, digest = files.add(3 * MiB)
    args = ["data", "fetch", files.url(name), "--pvc", "shared-data", "--size", "1Gi", "--storage-class"]
    args += ["local-path-rwx", "--access-mode", "ReadWriteMany", "--sha256", digest, "--follow"]
    fetched = run_cli(args, env, timeout=240)
    assert fetched.returncode == 0, fetched.stderr
    for obj in role_objects(namespace, "ServiceAccount", "default"):
        kube.create(codecs.from_dict(obj), namespace=namespace)
    project = tmp_path_factory.mktemp("daskdata") / "daskproject"
    project.mkdir()
    (project / "requirements.txt").write_text("distributed==2026.8.0\nlightkube==1.0.1\n")
    (project / "reads.py").write_text(DASK_READS)
    dask_env = {k: v for k, v in env.items() if k != "PYPOD_IMAGE"}
    dask_env["IMAGE_REPO"] = f"{cluster.registry}/dask-tests"  # the dependency image test_cluster builds
    result = run_cli(["run", "reads.py", name], dask_env, cwd=project, timeout=900)
    assert result.returncode == 0, result.stderr + result.stdout
    assert f"DIGESTS ['{digest}'] 2" in result.stdout
    assert (
        f"MISSING NotFound PVC 'no-such-claim' not found in namespace '{namespace}' "
        "(PVCs there: shared-data (1Gi RWX, Bound))"
    ) in result.stdout


def test_julia_pods_template_with_its_ephemeral_storage_request_runs_to_completion(env, kube, namespace, tmp_path):
    """julia_pod's add_me_to_your_PATH/driver.yaml.template as published, but for what a
    test must change: its ${JULIA_COMMAND} is pypod's ${COMMAND}, its GITHUB_TOKEN Secret is
    made here, and its 16Gi memory limit is cut to fit the test node. The `ephemeral-storage:
    "2Gi"` request stays: it needs the node to report ephemeral-storage."""
    node = kube.get(Node, "pypod-node")
    capacity = (node.status.capacity or {}).get("ephemeral-storage")
    if not capacity:
        pytest.skip("the node reports no ephemeral-storage capacity: its kubelet needs the loop-mounted root")
    kube.create(
        codecs.from_dict(
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "gh"}, "stringData": {"GITHUB_TOKEN": "x"}}
        ),
        namespace=namespace,
    )
    template = tmp_path / "driver.yaml.template"
    template.write_text(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n    name: ${RUNID}\n    labels:\n        git_repo: ${GIT_REPO}\n"
        "        git_branch: ${GIT_BRANCH}\nspec:\n    ttlSecondsAfterFinished: 10\n    template:\n        metadata:\n"
        '            annotations:\n                cluster-autoscaler.kubernetes.io/safe-to-evict: "false"\n'
        "            labels:\n                git_repo: ${GIT_REPO}\n                git_branch: ${GIT_BRANCH}\n"
        "        spec:\n            serviceAccountName: ${KUBERNETES_SERVICEACCOUNT}\n"
        "            restartPolicy: Never\n"
        "            containers:\n                - name: driver\n                  image: ${IMAGE_TAG}\n"
        "                  env:\n                      - name: GITHUB_TOKEN\n                        valueFrom:\n"
        "                            secretKeyRef:\n                                name: gh\n"
        "                                key: GITHUB_TOKEN\n                  resources:\n"
        "                      limits:\n"
        "                          memory: 1Gi\n                          cpu: 1\n                      requests:\n"
        '                          ephemeral-storage: "2Gi"\n                  command: ${COMMAND}\n'
        "                  stdin: true\n                  tty: true\n"
    )
    began = time.monotonic()
    result = run_cli(["--template", str(template), "print('julia_pod template ran')"], env, cwd=tmp_path, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "julia_pod template ran" in result.stdout
    assert time.monotonic() - began < 240
