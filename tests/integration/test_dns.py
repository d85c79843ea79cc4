"""Cluster DNS: CoreDNS on the bridge behind the kube-dns Service, as pods in a real
cluster see it. Names resolve, outside names fail at once, and nothing stalls."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from lightkube import codecs
from lightkube.resources.core_v1 import Event, Pod, Service
from lightkube.resources.discovery_v1 import EndpointSlice

from harness.cluster import ClusterInfo
from harness.layout import BRIDGE_IP, DNS_SERVICE_IP
from tests.kubehelp import pod_manifest, wait_pod

pytestmark = pytest.mark.cluster

# Run in a client pod: resolve, connect, and time the lookups that have nowhere to go.
RESOLVE_AND_FETCH = """
import json, socket, sys, time, urllib.request
service, namespace = sys.argv[1], sys.argv[2]
def address(name):
    return socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
def timed(call):
    began = time.monotonic()
    try:
        value = call()
    except OSError as exc:
        value = type(exc).__name__
    return value, round(time.monotonic() - began, 3)
def fetch(url):
    # kube-proxy programs the Service a moment after its endpoint turns Ready; until then
    # it rejects connections.
    deadline = time.monotonic() + 20
    while True:
        try:
            return urllib.request.urlopen(url, timeout=10).read().decode().strip()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
report = {
    "short": address(service),
    "fqdn": address(f"{service}.{namespace}.svc.cluster.local"),
    "kubernetes": address("kubernetes.default.svc"),
    "body": fetch(f"http://{service}/hostname"),
    "reverse_service": timed(lambda: socket.gethostbyaddr(address(service))[0]),
    "reverse_unknown": timed(lambda: socket.gethostbyaddr("10.88.254.254")),
    "outside": timed(lambda: address("pypi.org")),
    "resolv_conf": open("/etc/resolv.conf").read(),
}
print("REPORT " + json.dumps(report))
"""


def running(pod: Pod) -> bool:
    return pod.status is not None and pod.status.phase == "Running"


def terminated(pod: Pod) -> bool:
    statuses = (pod.status and pod.status.containerStatuses) or []
    return bool(statuses and statuses[0].state and statuses[0].state.terminated)


def test_pod_resolves_a_service_by_short_and_full_name_and_fetches_from_it(cluster: ClusterInfo, kube, namespace):
    # The stock http.server looks its own address up in DNS before it listens: with no
    # cluster DNS that stalled here; now it starts at once.
    server = pod_manifest("web", cluster.base_image, ["python3", "-m", "http.server", "8000", "--directory", "/etc"])
    server["metadata"]["labels"] = {"app": "web"}
    server["spec"]["containers"][0]["readinessProbe"] = {"tcpSocket": {"port": 8000}, "periodSeconds": 1}
    kube.create(codecs.from_dict(server), namespace=namespace)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8000}]},
    }
    kube.create(codecs.from_dict(service), namespace=namespace)
    cluster_ip = kube.get(Service, "web", namespace=namespace).spec.clusterIP
    wait_pod(kube, namespace, "web", lambda p: running(p) and bool(p.status.podIP), 120)

    def ready(pod: Pod) -> bool:
        return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))

    wait_pod(kube, namespace, "web", ready, 60)

    client = pod_manifest("client", cluster.base_image, ["python3", "-c", RESOLVE_AND_FETCH, "web", namespace])
    kube.create(codecs.from_dict(client), namespace=namespace)
    pod = wait_pod(kube, namespace, "client", terminated, 120)
    logs = "".join(kube.log("client", namespace=namespace))
    assert pod.status.containerStatuses[0].state.terminated.exitCode == 0, logs
    report = json.loads(logs.split("REPORT ", 1)[1])

    assert f"nameserver {DNS_SERVICE_IP}" in report["resolv_conf"]
    assert f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local" in report["resolv_conf"]
    assert report["short"] == report["fqdn"] == cluster_ip
    assert report["kubernetes"] == "10.0.0.1"
    assert report["body"] == "web"  # /etc/hostname of the server pod, through the Service
    # Reverse lookups: a Service IP has its name; an unknown address fails, and fast.
    assert report["reverse_service"][0] == f"web.{namespace}.svc.cluster.local"
    name, seconds = report["reverse_unknown"]
    assert name == "herror" and seconds < 1.0, report["reverse_unknown"]
    # Names outside the cluster are NXDOMAIN at once, not a timeout towards the internet.
    name, seconds = report["outside"]
    assert name == "gaierror" and seconds < 1.0, report["outside"]

    events = kube.list(Event, namespace=namespace)
    assert not [e for e in events if e.reason == "MissingClusterDNS"]


def test_harness_status_reports_coredns_health(cluster: ClusterInfo):
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "harness", "status", "--json"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)
    assert state["components"]["coredns"] == "running"
    assert state["health"]["coredns"]["ok"] is True, state["health"]["coredns"]
    assert time.monotonic() - began < 30


def test_kube_dns_service_points_at_coredns(cluster: ClusterInfo, kube):
    service = kube.get(Service, "kube-dns", namespace="kube-system")
    assert service.spec.clusterIP == DNS_SERVICE_IP
    assert {(p.protocol, p.port) for p in service.spec.ports} == {("UDP", 53), ("TCP", 53)}
    assert service.spec.selector is None  # its endpoints are ours, not a controller's
    slices = list(kube.list(EndpointSlice, namespace="kube-system", labels={"kubernetes.io/service-name": "kube-dns"}))
    assert [address for s in slices for e in s.endpoints for address in e.addresses] == [BRIDGE_IP]
