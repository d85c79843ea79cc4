"""The harness is a real cluster: these go through the real apiserver, scheduler,
controllers, kubelet, containerd, runc, CNI, kube-proxy, registry and podman.
"""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import subprocess
import time
import urllib.request

import pytest
from lightkube import codecs
from lightkube.core.exceptions import ApiError
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Event, Pod, Secret
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding

from harness.cluster import ClusterInfo
from harness.images import podman_env
from harness.layout import Layout
from tests.kubehelp import kubectl, phase, pod_manifest, wait_for, wait_pod

pytestmark = pytest.mark.cluster


# A plain TCPServer with http.server's handler: HTTPServer also looks its own address up
# in DNS before listening (getfqdn), which these tests of the node leave out of the picture
# (tests/integration/test_dns.py runs the stock server behind a Service).
HTTP_SERVER = (
    "import functools, http.server, socketserver, sys\n"
    "socketserver.TCPServer.allow_reuse_address = True\n"
    "handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory='/etc')\n"
    "socketserver.ThreadingTCPServer((sys.argv[1], int(sys.argv[2])), handler).serve_forever()\n"
)


def running(pod: Pod) -> bool:
    return pod.status is not None and pod.status.phase == "Running"


def container_terminated(pod: Pod):  # type: ignore[no-untyped-def]
    statuses = (pod.status and pod.status.containerStatuses) or []
    return statuses and statuses[0].state and statuses[0].state.terminated


def test_job_runs_base_image_from_local_registry_with_logs_and_exit_code(cluster: ClusterInfo, kube, namespace):
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "exit-three"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": cluster.base_image,
                            "command": [
                                "python3",
                                "-c",
                                "import sys; print('hello from', sys.version_info[0]); sys.exit(3)",
                            ],
                        }
                    ],
                }
            },
        },
    }
    kube.create(codecs.from_dict(job), namespace=namespace)
    pod_name = wait_for(
        lambda: next(
            (p.metadata.name for p in kube.list(Pod, namespace=namespace, labels={"job-name": "exit-three"})), None
        ),
        30,
    )
    pod = wait_pod(kube, namespace, pod_name, container_terminated, 120)
    assert pod.status.containerStatuses[0].state.terminated.exitCode == 3
    assert pod.spec.nodeName == cluster.node
    logs = "".join(kube.log(pod_name, namespace=namespace))
    assert "hello from 3" in logs

    def failed(j: Job) -> bool:
        return any(c.type == "Failed" and c.status == "True" for c in (j.status.conditions or []))

    finished = wait_for(lambda: failed(kube.get(Job, "exit-three", namespace=namespace)), 30)
    assert finished
    reasons = [c.reason for c in kube.get(Job, "exit-three", namespace=namespace).status.conditions]
    assert "BackoffLimitExceeded" in reasons


def test_impossible_memory_request_stays_pending_with_scheduler_message(cluster: ClusterInfo, kube, namespace):
    manifest = pod_manifest(
        "too-big",
        cluster.base_image,
        ["python3", "-c", "pass"],
        container={"resources": {"requests": {"memory": "1Ei"}}},
    )
    kube.create(codecs.from_dict(manifest), namespace=namespace)

    def unschedulable(pod: Pod) -> bool:
        conds = (pod.status and pod.status.conditions) or []
        return any(c.type == "PodScheduled" and c.reason == "Unschedulable" for c in conds)

    pod = wait_pod(kube, namespace, "too-big", unschedulable, 60)
    assert pod.status.phase == "Pending"
    message = next(c.message for c in pod.status.conditions if c.type == "PodScheduled")
    assert "nodes are available" in message
    assert "Insufficient memory" in message
    events = kube.list(Event, namespace=namespace, fields={"involvedObject.name": "too-big"})
    assert any(e.reason == "FailedScheduling" for e in events)


def test_memory_limit_is_enforced_by_the_kernel_as_oomkilled(cluster: ClusterInfo, kube, namespace):
    manifest = pod_manifest(
        "hog",
        cluster.base_image,
        ["python3", "-c", "b = bytearray(300 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); print('survived')"],
        container={"resources": {"limits": {"memory": "64Mi"}}},
    )
    kube.create(codecs.from_dict(manifest), namespace=namespace)
    pod = wait_pod(kube, namespace, "hog", container_terminated, 120)
    terminated = pod.status.containerStatuses[0].state.terminated
    assert terminated.reason == "OOMKilled"
    assert terminated.exitCode == 137


def test_deleting_owner_pod_garbage_collects_dependent(cluster: ClusterInfo, kube, namespace):
    sleep = ["python3", "-c", "import time; time.sleep(600)"]
    owner = kube.create(codecs.from_dict(pod_manifest("owner", cluster.base_image, sleep)), namespace=namespace)
    dependent = pod_manifest("dependent", cluster.base_image, sleep)
    dependent["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "Pod", "name": "owner", "uid": owner.metadata.uid}
    ]
    kube.create(codecs.from_dict(dependent), namespace=namespace)
    wait_pod(kube, namespace, "dependent", running, 120)
    kube.delete(Pod, "owner", namespace=namespace, grace_period=0)

    def gone() -> bool:
        try:
            kube.get(Pod, "dependent", namespace=namespace)
        except ApiError as err:
            return err.status.code == 404
        return False

    assert wait_for(gone, 60)


def test_restricted_user_is_refused_what_its_role_does_not_allow(cluster: ClusterInfo):
    from lightkube import Client, KubeConfig

    restricted = Client(KubeConfig.from_file(cluster.restricted_kubeconfig))
    ns = cluster.restricted_namespace
    # Allowed by its Role: listing pods and jobs in its namespace.
    assert isinstance(list(restricted.list(Pod, namespace=ns)), list)
    assert isinstance(list(restricted.list(Job, namespace=ns)), list)
    # Not allowed: secrets in its namespace, pods elsewhere, RBAC itself.
    for call in (
        lambda: list(restricted.list(Secret, namespace=ns)),
        lambda: list(restricted.list(Pod, namespace="default")),
        lambda: restricted.create(Role.from_dict({"metadata": {"name": "escalate"}, "rules": []}), namespace=ns),
    ):
        with pytest.raises(ApiError) as refused:
            call()
        assert refused.value.status.code == 403
        assert "pypod-restricted" in refused.value.status.message
    # And what it may do really works end to end: create and delete a pod.
    pod = restricted.create(
        codecs.from_dict(pod_manifest("mine", cluster.base_image, ["python3", "-c", "pass"])), namespace=ns
    )
    assert pod.metadata.name == "mine"
    restricted.delete(Pod, "mine", namespace=ns, grace_period=0)


def test_kubectl_exec_attach_and_port_forward_through_the_kubelet(cluster: ClusterInfo, kube, namespace):
    server = pod_manifest("web", cluster.base_image, ["python3", "-c", HTTP_SERVER, "0.0.0.0", "8000"])
    repl = pod_manifest("repl", cluster.base_image, ["python3", "-i"], container={"stdin": True, "tty": True})
    kube.create(codecs.from_dict(server), namespace=namespace)
    kube.create(codecs.from_dict(repl), namespace=namespace)
    wait_pod(kube, namespace, "web", running, 120)
    wait_pod(kube, namespace, "repl", running, 120)
    kc = (cluster.kubectl, cluster.admin_kubeconfig)

    # exec -i: stdin reaches the process, stdout comes back.
    result = kubectl(
        *kc,
        "-n",
        namespace,
        "exec",
        "-i",
        "web",
        "--",
        "python3",
        "-c",
        "import sys; print(sys.stdin.read().upper())",
        input="round trip\n",
    )
    assert result.returncode == 0, result.stderr
    assert "ROUND TRIP" in result.stdout

    # attach -it: a real terminal to the container's interactive interpreter.
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(
            cluster.kubectl,
            [cluster.kubectl, f"--kubeconfig={cluster.admin_kubeconfig}", "-n", namespace, "attach", "-it", "repl"],
        )
    try:
        output = b""
        deadline = time.monotonic() + 30
        sent = False
        while time.monotonic() < deadline and b"4242" not in output:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    output += os.read(fd, 4096)
                except OSError:
                    break
            if not sent and time.monotonic() > deadline - 28:
                os.write(fd, b"print(42 * 101)\r")
                sent = True
        assert b"4242" in output, output[-500:]
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(fd)

    # port-forward: a local port reaches the HTTP server in the pod.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        local_port = s.getsockname()[1]
    forward = subprocess.Popen(
        [
            cluster.kubectl,
            f"--kubeconfig={cluster.admin_kubeconfig}",
            "-n",
            namespace,
            "port-forward",
            "--address=127.0.0.1",
            "pod/web",
            f"{local_port}:8000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:

        def fetch() -> bytes | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{local_port}/os-release", timeout=2) as r:
                    return r.read() if r.status == 200 else None
            except OSError:
                return None

        body = wait_for(fetch, 20)
        assert b"Debian" in body
    finally:
        forward.terminate()
        forward.wait(5)


IN_CLUSTER_READ = """
import json, os, ssl, urllib.request
sa = '/var/run/secrets/kubernetes.io/serviceaccount'
token = open(sa + '/token').read()
ns = open(sa + '/namespace').read()
host = os.environ['KUBERNETES_SERVICE_HOST']
port = os.environ['KUBERNETES_SERVICE_PORT']
ctx = ssl.create_default_context(cafile=sa + '/ca.crt')
req = urllib.request.Request(f'https://{host}:{port}/api/v1/namespaces/{ns}/pods/' + os.environ['HOSTNAME'],
                             headers={'Authorization': 'Bearer ' + token})
pod = json.load(urllib.request.urlopen(req, context=ctx, timeout=10))
print('SELF', host, pod['metadata']['name'], pod['spec']['serviceAccountName'])
"""

PEER_FETCH = """
import sys, urllib.request
print('PEER', urllib.request.urlopen(f'http://{sys.argv[1]}:8000/hostname', timeout=10).read().decode().strip())
"""


def test_pods_reach_the_apiserver_through_the_service_and_each_other_by_ip(cluster: ClusterInfo, kube, namespace):
    # Let the namespace's default ServiceAccount read pods, as a driver pod would.
    kube.create(
        Role.from_dict(
            {"metadata": {"name": "read-pods"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}
        ),
        namespace=namespace,
    )
    kube.create(
        RoleBinding.from_dict(
            {
                "metadata": {"name": "read-pods"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-pods"},
                "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
            }
        ),
        namespace=namespace,
    )
    kube.create(
        codecs.from_dict(pod_manifest("reader", cluster.base_image, ["python3", "-c", IN_CLUSTER_READ])),
        namespace=namespace,
    )
    pod = wait_pod(kube, namespace, "reader", container_terminated, 120)
    logs = "".join(kube.log("reader", namespace=namespace))
    assert pod.status.containerStatuses[0].state.terminated.exitCode == 0, logs
    assert "SELF 10.0.0.1 reader default" in logs

    server = pod_manifest("server", cluster.base_image, ["python3", "-c", HTTP_SERVER, "0.0.0.0", "8000"])
    kube.create(codecs.from_dict(server), namespace=namespace)
    server_pod = wait_pod(kube, namespace, "server", running, 120)
    client = pod_manifest("client", cluster.base_image, ["python3", "-c", PEER_FETCH, server_pod.status.podIP])
    kube.create(codecs.from_dict(client), namespace=namespace)
    pod = wait_pod(kube, namespace, "client", container_terminated, 120)
    logs = "".join(kube.log("client", namespace=namespace))
    assert pod.status.containerStatuses[0].state.terminated.exitCode == 0, logs
    assert "PEER" in logs
    assert server_pod.status.podIP.startswith("10.88.")


@pytest.fixture
def outside_host():  # type: ignore[no-untyped-def]
    """A stand-in for "anywhere else": an HTTP server in a network namespace of our own,
    routed from this machine over a veth pair that is not the pod bridge."""
    ns, host_if, peer_if = "pypod-outside", "pypod-out0", "pypod-out1"
    steps = [
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if],
        ["ip", "link", "set", peer_if, "netns", ns],
        ["ip", "addr", "add", "10.250.0.1/30", "dev", host_if],
        ["ip", "link", "set", host_if, "up"],
        ["ip", "netns", "exec", ns, "ip", "addr", "add", "10.250.0.2/30", "dev", peer_if],
        ["ip", "netns", "exec", ns, "ip", "link", "set", peer_if, "up"],
        ["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"],
        # A route back to the pods only: nothing from this namespace can go further.
        ["ip", "netns", "exec", ns, "ip", "route", "add", "10.88.0.0/16", "via", "10.250.0.1"],
    ]
    server = None
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True)
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns, "python3", "-c", HTTP_SERVER, "10.250.0.2", "8080"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        yield "10.250.0.2"
    finally:
        if server:
            server.kill()
            server.wait()
        subprocess.run(["ip", "link", "delete", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


def test_pod_traffic_to_other_addresses_is_dropped(cluster: ClusterInfo, kube, namespace, outside_host):
    def reachable_from_this_machine() -> bool:
        try:
            with urllib.request.urlopen(f"http://{outside_host}:8080/hostname", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    # The other host is really there: this machine reaches it ...
    assert wait_for(reachable_from_this_machine, 10)
    probe = (
        "import socket, sys\n"
        "s = socket.socket(); s.settimeout(3)\n"
        "try:\n    s.connect((sys.argv[1], 8080)); print('CONNECTED')\n"
        "except OSError as e:\n    print('BLOCKED', type(e).__name__)\n"
    )
    kube.create(
        codecs.from_dict(pod_manifest("probe", cluster.base_image, ["python3", "-c", probe, outside_host])),
        namespace=namespace,
    )
    wait_pod(kube, namespace, "probe", container_terminated, 120)
    logs = "".join(kube.log("probe", namespace=namespace))
    # ... but a pod does not.
    assert "BLOCKED" in logs, logs


def test_image_pushed_to_registry_is_seen_by_skopeo_and_runs_under_podman(cluster: ClusterInfo, tmp_path):
    ref = f"{cluster.registry}/harness-test/hello:{os.getpid()}"
    (tmp_path / "Containerfile").write_text(
        f"FROM {cluster.base_image}\n"
        "RUN echo 'print(\"hello from podman\")' > /hello.py\n"
        'CMD ["python3", "/hello.py"]\n'
    )
    env = podman_env(Layout.default())
    build = subprocess.run(
        ["podman", "build", "--network=none", "--tls-verify=false", "-t", ref, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    push = subprocess.run(["podman", "push", "--tls-verify=false", ref], capture_output=True, text=True, env=env)
    assert push.returncode == 0, push.stderr[-2000:]
    inspect = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"], capture_output=True, text=True
    )
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["Name"] == ref.rsplit(":", 1)[0]
    subprocess.run(["podman", "rmi", "-f", ref], capture_output=True, env=env)
    run = subprocess.run(
        ["podman", "run", "--rm", "--tls-verify=false", "--network=none", ref], capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "hello from podman" in run.stdout


def test_fifty_pods_run_on_kwok_nodes(cluster: ClusterInfo, kube, namespace):
    toleration = [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "type", "operator": "In", "values": ["kwok"]}]}]
            }
        }
    }
    for i in range(50):
        manifest = pod_manifest(
            f"fake-{i}", "never-pulled.invalid/image", ["none"], tolerations=toleration, affinity=affinity
        )
        manifest["metadata"]["labels"] = {"scale": "kwok"}
        kube.create(codecs.from_dict(manifest), namespace=namespace)

    def all_running() -> list[Pod] | None:
        pods = list(kube.list(Pod, namespace=namespace, labels={"scale": "kwok"}))
        return pods if len(pods) == 50 and all(p.status.phase == "Running" for p in pods) else None

    pods = wait_for(all_running, 120, interval=1)
    assert {p.spec.nodeName for p in pods} <= {"kwok-node-0", "kwok-node-1", "kwok-node-2"}
    # The taint keeps ordinary pods off the kwok nodes.
    kube.create(
        codecs.from_dict(pod_manifest("plain", cluster.base_image, ["python3", "-c", "pass"])), namespace=namespace
    )
    pod = wait_pod(kube, namespace, "plain", phase("Running", "Succeeded"), 120)
    assert pod.spec.nodeName == cluster.node
