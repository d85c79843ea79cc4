"""Pure functions that turn the cluster's ports and paths into each component's
configuration and command line. Nothing here touches the machine.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .layout import (
    BRIDGE,
    BRIDGE_IP,
    CLUSTER_DOMAIN,
    CNI_PLUGIN_DIR,
    DNS_SERVICE_IP,
    KWOK_TAINT_KEY,
    KWOK_TAINT_VALUE,
    NODE_NAME,
    PAUSE_IMAGE,
    POD_CIDR,
    SERVICE_CIDR,
    Layout,
)
from .nodefs import enabled as nodefs_enabled
from .pki import FRONT_PROXY_CLIENT, Pki

KWOK_POD_CIDR = "10.99.0.0/16"
# Node name -> nvidia.com/gpu.product of the GPU kwok nodes.
GPU_NODES = {"kwok-gpu-a100": "NVIDIA-A100-SXM4-80GB", "kwok-gpu-h100": "NVIDIA-H100-80GB-HBM3"}
GPUS_PER_NODE = "4"
RESTRICTED_NAMESPACE = "pypod-restricted"


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kubelet: int
    kubelet_healthz: int
    proxy_healthz: int
    proxy_metrics: int
    kwok: int
    registry: int
    coredns_health: int
    coredns_ready: int
    kueue_webhook: int
    kueue_visibility: int
    kueue_health: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, ports: dict[str, int]) -> Ports:
        """Ignores ports this version does not know: a newer harness may be running."""
        return cls(**{f.name: ports[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class Component:
    """One process the harness starts: how to run it and how to know it is up."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None


def apiserver_url(ports: Ports) -> str:
    return f"https://{BRIDGE_IP}:{ports.apiserver}"


def registry_host(ports: Ports) -> str:
    return f"127.0.0.1:{ports.registry}"


def kubeconfig(server: str, ca_file: Path, user: str, token: str, namespace: str = "default") -> str:
    """A kubeconfig with one cluster, one user and one context named `pypod-harness`."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "pypod-harness", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {"name": "pypod-harness", "context": {"cluster": "pypod-harness", "user": user, "namespace": namespace}}
        ],
        "current-context": "pypod-harness",
    }
    return json.dumps(config, indent=2) + "\n"


def etcd(layout: Layout, ports: Ports, binary: str) -> Component:
    return Component(
        "etcd",
        [
            binary,
            "--name=pypod-harness",
            f"--data-dir={layout.data / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{ports.etcd_client}",
            f"--advertise-client-urls=http://127.0.0.1:{ports.etcd_client}",
            f"--listen-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
            f"--initial-cluster=pypod-harness=http://127.0.0.1:{ports.etcd_peer}",
            "--quota-backend-bytes=4294967296",
            "--log-level=warn",
        ],
        # etcd 3.4 refuses to start on an unsupported arch without this; harmless on amd64.
        env={"ETCD_UNSUPPORTED_ARCH": "amd64"},
    )


def apiserver(layout: Layout, ports: Ports, pki: Pki) -> Component:
    return Component(
        "kube-apiserver",
        [
            str(layout.binary("kube-apiserver")),
            f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
            # Bound to the harness bridge only: reachable from this machine and from
            # pods, never from the machine's outward interface.
            f"--bind-address={BRIDGE_IP}",
            f"--advertise-address={BRIDGE_IP}",
            f"--secure-port={ports.apiserver}",
            "--endpoint-reconciler-type=lease",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--tls-cert-file={pki.apiserver_cert}",
            f"--tls-private-key-file={pki.apiserver_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--token-auth-file={pki.token_file}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--kubelet-client-certificate={pki.kubelet_client_cert}",
            f"--kubelet-client-key={pki.kubelet_client_key}",
            f"--kubelet-certificate-authority={pki.ca_cert}",
            "--kubelet-preferred-address-types=InternalIP",
            # The aggregation layer, for Kueue's visibility API: the apiserver proxies to it
            # with the front-proxy client certificate and the user in these headers, to
            # the Service's endpoint (the bridge IP) rather than its cluster IP.
            f"--requestheader-client-ca-file={pki.front_proxy_ca_cert}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.front_proxy_client_cert}",
            f"--proxy-client-key-file={pki.front_proxy_client_key}",
            "--enable-aggregator-routing=true",
            # etcd 3.4 lacks what WatchList needs; see HARNESS-NOTES.md.
            "--feature-gates=WatchList=false",
            "--profiling=false",
            "--v=1",
        ],
    )


def controller_manager(layout: Layout, ports: Ports, pki: Pki) -> Component:
    kubeconfig_path = layout.config / "controller-manager.kubeconfig"
    return Component(
        "kube-controller-manager",
        [
            str(layout.binary("kube-controller-manager")),
            f"--kubeconfig={kubeconfig_path}",
            f"--authentication-kubeconfig={kubeconfig_path}",
            f"--authorization-kubeconfig={kubeconfig_path}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.controller_manager}",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ],
    )


def scheduler(layout: Layout, ports: Ports) -> Component:
    kubeconfig_path = layout.config / "scheduler.kubeconfig"
    return Component(
        "kube-scheduler",
        [
            str(layout.binary("kube-scheduler")),
            f"--kubeconfig={kubeconfig_path}",
            f"--authentication-kubeconfig={kubeconfig_path}",
            f"--authorization-kubeconfig={kubeconfig_path}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.scheduler}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ],
    )


def containerd_paths(layout: Layout) -> dict[str, Path]:
    base = layout.state / "containerd"
    return {
        "root": base / "root",
        "state": base / "state",
        "socket": base / "containerd.sock",
        "config": layout.config / "containerd.toml",
        "certs_d": layout.config / "certs.d",
        "netns": layout.state / "netns",
        "cni_conf": layout.config / "cni",
        "cni_data": layout.state / "cni",
    }


def containerd_config(layout: Layout) -> str:
    p = containerd_paths(layout)
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""\
version = 2
root = "{p["root"]}"
state = "{p["state"]}"

[grpc]
  address = "{p["socket"]}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # Root here lacks CAP_SYS_RESOURCE: without this runc fails writing oom_score_adj.
  restrict_oom_score_adj = true
  # Pod network namespaces live in the harness's folder, so `down` can find them all.
  netns_mounts_under = "{p["netns"]}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.cni]
  bin_dir = "{CNI_PLUGIN_DIR}"
  conf_dir = "{p["cni_conf"]}"

[{cri}.registry]
  config_path = "{p["certs_d"]}"
"""


def registry_hosts_toml(ports: Ports) -> str:
    """containerd's per-registry config: the local registry speaks plain HTTP."""
    host = registry_host(ports)
    return f"""\
server = "http://{host}"

[host."http://{host}"]
  capabilities = ["pull", "resolve", "push"]
  skip_verify = true
"""


def containerd(layout: Layout) -> Component:
    return Component("containerd", ["containerd", "--config", str(containerd_paths(layout)["config"])])


def cni_conflist(layout: Layout) -> str:
    config = {
        "cniVersion": "1.0.0",
        "name": "pypod-harness",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": BRIDGE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(containerd_paths(layout)["cni_data"]),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def kubelet_config(layout: Layout, ports: Ports, pki: Pki) -> str:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": BRIDGE_IP,
        "port": ports.kubelet,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports.kubelet_healthz,
        "tlsCertFile": str(pki.kubelet_cert),
        "tlsPrivateKeyFile": str(pki.kubelet_key),
        # Only holders of a certificate from the harness CA (the apiserver) may call it.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(pki.ca_cert)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{containerd_paths(layout)['socket']}",
        "enforceNodeAllocatable": [],
        # Reports ephemeral-storage (and enforces its limits): the node's state is on a
        # loop-mounted filesystem cAdvisor can measure (harness/nodefs.py).
        "localStorageCapacityIsolation": nodefs_enabled(),
        "podLogsDir": str(layout.state / "pod-logs"),
        "serializeImagePulls": False,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 99,
        "imageGCLowThresholdPercent": 98,
        "maxPods": 110,
        "resolvConf": "/etc/resolv.conf",
        # The kube-dns Service, backed by CoreDNS on the bridge (kube_dns_objects).
        "clusterDNS": [DNS_SERVICE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "staticPodPath": "",
        "syncFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
    }
    return json.dumps(config, indent=2) + "\n"


def kubelet(layout: Layout) -> Component:
    return Component(
        "kubelet",
        [
            str(layout.binary("kubelet")),
            f"--config={layout.config / 'kubelet.json'}",
            f"--kubeconfig={layout.config / 'kubelet.kubeconfig'}",
            f"--root-dir={layout.state / 'kubelet'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={BRIDGE_IP}",
            "--node-labels=pypod.dev/harness-node=real",
            "--v=1",
        ],
    )


DNS_PORT = 53


def corefile(layout: Layout, ports: Ports) -> str:
    """CoreDNS's Corefile: a real cluster's kubernetes block, without `forward`.

    Nothing may leave the machine, so every other name (the host's search domains, the
    internet) gets NXDOMAIN at once from the catch-all block instead of a timeout, and
    reverse lookups of addresses the cluster does not know are NXDOMAIN too (no
    `fallthrough` to an upstream)."""
    bind = f"bind {BRIDGE_IP}"
    return f"""\
{CLUSTER_DOMAIN}:{DNS_PORT} in-addr.arpa:{DNS_PORT} ip6.arpa:{DNS_PORT} {{
    {bind}
    errors
    health 127.0.0.1:{ports.coredns_health}
    ready 127.0.0.1:{ports.coredns_ready}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {layout.admin_kubeconfig} pypod-harness
        pods insecure
        ttl 30
    }}
    cache 30
    loadbalance
}}

.:{DNS_PORT} {{
    {bind}
    errors
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
"""


def coredns(layout: Layout) -> Component:
    return Component("coredns", [str(layout.binary("coredns")), "-conf", str(layout.config / "Corefile")])


def kube_dns_objects() -> list[dict]:
    """The kube-dns Service clients expect, at the address the kubelet gives pods, with
    no selector: its EndpointSlice names CoreDNS on the bridge, and kube-proxy routes
    the Service IP there as it routes 10.0.0.1 to the apiserver."""
    ports = [
        {"name": "dns", "port": DNS_PORT, "protocol": "UDP"},
        {"name": "dns-tcp", "port": DNS_PORT, "protocol": "TCP"},
    ]
    labels = {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
            "spec": {"clusterIP": DNS_SERVICE_IP, "ports": [dict(p, targetPort=DNS_PORT) for p in ports]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kube-dns-coredns",
                "namespace": "kube-system",
                "labels": {
                    "kubernetes.io/service-name": "kube-dns",
                    "endpointslice.kubernetes.io/managed-by": "pypod-harness",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [BRIDGE_IP], "conditions": {"ready": True}}],
            "ports": ports,
        },
    ]


def kube_proxy_config(layout: Layout, ports: Ports) -> str:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(layout.config / "kube-proxy.kubeconfig")},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": POD_CIDR,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{ports.proxy_healthz}",
        "metricsBindAddress": f"127.0.0.1:{ports.proxy_metrics}",
        # Leave the machine's conntrack sysctls alone (no CAP_SYS_RESOURCE here).
        "conntrack": {"maxPerCore": 0, "min": 0},
    }
    return json.dumps(config, indent=2) + "\n"


def kube_proxy(layout: Layout) -> Component:
    return Component(
        "kube-proxy",
        [str(layout.binary("kube-proxy")), f"--config={layout.config / 'kube-proxy.json'}", "--v=1"],
    )


# kwok's Stage API: what kwok does to the objects it manages. Our own minimal set:
# fake nodes become Ready and keep heartbeating; their pods run at once and go
# when deleted. Go templates with kwok's helper functions fill in the status.
_NODE_STATUS = """\
{{ $now := Now }}
conditions:
{{ range NodeConditions }}
- lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $now | Quote }}
  message: {{ .message | Quote }}
  reason: {{ .reason | Quote }}
  status: {{ .status | Quote }}
  type: {{ .type | Quote }}
{{ end }}
addresses:
- address: {{ NodeIP | Quote }}
  type: InternalIP
- address: {{ NodeName | Quote }}
  type: Hostname
{{ with NodePort }}
daemonEndpoints:
  kubeletEndpoint:
    Port: {{ . }}
{{ end }}
allocatable:
{{ YAML .status.allocatable 1 }}
capacity:
{{ YAML .status.capacity 1 }}
nodeInfo:
  architecture: amd64
  operatingSystem: linux
  kubeletVersion: fake
  kubeProxyVersion: fake
  containerRuntimeVersion: fake
  kernelVersion: fake
phase: Running
"""

_POD_STATUS = """\
{{ $now := Now }}
conditions:
{{ range list "Initialized" "Ready" "ContainersReady" "PodScheduled" }}
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: {{ . }}
{{ end }}
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: true
  restartCount: 0
  started: true
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}
{{ with NodeIPsWith .spec.nodeName }}
hostIP: {{ index . 0 | Quote }}
{{ end }}
{{ with PodIPsWith .spec.nodeName false .metadata.uid .metadata.name .metadata.namespace }}
podIP: {{ index . 0 | Quote }}
podIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
phase: Running
startTime: {{ $now | Quote }}
"""


def _stage(name: str, kind: str, expressions: list[dict], next_: dict, **extra: object) -> dict:
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": kind},
            "selector": {"matchExpressions": expressions},
            "next": next_,
            **extra,
        },
    }


def kwok_stages() -> list[dict]:
    ready = '.status.conditions.[] | select( .type == "Ready" ) | .status'
    return [
        _stage(
            "node-ready",
            "Node",
            [{"key": ready, "operator": "NotIn", "values": ["True"]}],
            {"statusTemplate": _NODE_STATUS},
        ),
        _stage(
            "node-heartbeat",
            "Node",
            [{"key": ready, "operator": "In", "values": ["True"]}],
            {"statusTemplate": _NODE_STATUS},
            delay={"durationMilliseconds": 15000, "jitterDurationMilliseconds": 20000},
            immediateNextStage=True,
        ),
        _stage(
            "pod-run",
            "Pod",
            [
                {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                {"key": ".status.phase", "operator": "In", "values": ["Pending"]},
            ],
            {"statusTemplate": _POD_STATUS},
        ),
        _stage("pod-delete", "Pod", [{"key": ".metadata.deletionTimestamp", "operator": "Exists"}], {"delete": True}),
    ]


def kwok_config() -> str:
    """kwok's --config: multi-document YAML (each document written as JSON)."""
    return "\n---\n".join(json.dumps(doc) for doc in kwok_stages()) + "\n"


def kwok(layout: Layout, ports: Ports) -> Component:
    return Component(
        "kwok",
        [
            str(layout.binary("kwok")),
            f"--config={layout.config / 'kwok.yaml'}",
            f"--kubeconfig={layout.admin_kubeconfig}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_TAINT_KEY}={KWOK_TAINT_VALUE}",
            f"--server-address=127.0.0.1:{ports.kwok}",
            f"--cidr={KWOK_POD_CIDR}",
            "--node-ip=127.0.0.2",
        ],
    )


def registry_config(layout: Layout, ports: Ports) -> str:
    storage = layout.cache / "registry"
    return f"""\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {registry_host(ports)}
"""


def registry(layout: Layout) -> Component:
    return Component("registry", ["docker-registry", "serve", str(layout.config / "registry.yml")])


def buildkitd_socket(layout: Layout) -> Path:
    return layout.buildkit / "buildkitd.sock"


def buildkitd_config(ports: Ports) -> str:
    """buildkitd's config: runc workers only (no containerd of its own), and the local
    registry spoken to over plain HTTP, for base-image pulls, pushes and the build cache."""
    return f"""\
[worker.oci]
  enabled = true
[worker.containerd]
  enabled = false

[registry."{registry_host(ports)}"]
  http = true
"""


def buildkitd(layout: Layout) -> Component:
    return Component(
        "buildkitd",
        [
            str(layout.binary("buildkitd")),
            "--root",
            str(layout.buildkit / "root"),
            "--addr",
            f"unix://{buildkitd_socket(layout)}",
            "--config",
            str(layout.config / "buildkitd.toml"),
            # Builds run on the host network, as podman's do (`--network host`).
            "--allow-insecure-entitlement",
            "network.host",
        ],
    )


def _kwok_node(name: str, node_type: str, labels: dict[str, str], resources: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_TAINT_KEY: KWOK_TAINT_VALUE, "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": node_type,
                "kubernetes.io/hostname": name,
                "pypod.dev/harness-node": node_type,
                **labels,
            },
        },
        "spec": {"taints": [{"key": KWOK_TAINT_KEY, "value": KWOK_TAINT_VALUE, "effect": "NoSchedule"}]},
        "status": {"allocatable": dict(resources), "capacity": dict(resources)},
    }


_KWOK_RESOURCES = {"cpu": "32", "memory": "256Gi", "pods": "110"}


def kwok_nodes(count: int) -> list[dict]:
    """Fake nodes that kwok keeps Ready; tainted so only pods that tolerate them land there."""
    return [_kwok_node(f"kwok-node-{index}", "kwok", {}, _KWOK_RESOURCES) for index in range(count)]


def kwok_gpu_nodes() -> list[dict]:
    """Fake GPU nodes, labelled as NVIDIA's GPU feature discovery labels real ones, for GPU
    scheduling and product selection through the real scheduler. Their own `type`, so
    that scale tests on `type=kwok` do not spill onto them."""
    nodes = []
    for name, product in GPU_NODES.items():
        labels = {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": product,
            "nvidia.com/gpu.count": GPUS_PER_NODE,
        }
        nodes.append(_kwok_node(name, "kwok-gpu", labels, {**_KWOK_RESOURCES, "nvidia.com/gpu": GPUS_PER_NODE}))
    return nodes


def restricted_rules() -> list[dict]:
    """The restricted user gets exactly the minimal Role pypod documents (`pypod rbac`),
    so the tests prove that Role is enough, and that it is no more."""
    from pypod.rbac import RULES

    return RULES


def restricted_user_objects(user: str) -> list[dict]:
    """A namespace where the restricted user may run pods and Jobs, and nothing else."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RESTRICTED_NAMESPACE}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "pypod-user", "namespace": RESTRICTED_NAMESPACE},
            "rules": restricted_rules(),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "pypod-user", "namespace": RESTRICTED_NAMESPACE},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pypod-user"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    ]


GIT_SERVER = "gitserver"
GIT_USER = "pypod"


def git_server_url(port: int) -> str:
    """On the bridge, so pods reach it as they reach the apiserver."""
    return f"http://{BRIDGE_IP}:{port}"


def git_server(layout: Layout, port: int, credentials: Path) -> Component:
    """Smart HTTP through git http-backend (harness/gitserver.py), run by this Python."""
    return Component(
        GIT_SERVER,
        [
            sys.executable,
            "-m",
            "harness.gitserver",
            f"--root={layout.git_root}",
            f"--listen={BRIDGE_IP}:{port}",
            f"--credentials={credentials}",
        ],
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )


GIT_SSH = "gitssh"


def git_ssh_url(port: int, repository: Path) -> str:
    """An ssh URL of a repository on the git server (its absolute path on this machine)."""
    return f"ssh://root@{BRIDGE_IP}:{port}{repository}"


def git_ssh_forced_command(git_root: Path) -> str:
    """The only thing a key of authorized_keys may run: git-shell, and only to fetch from
    (upload-pack) repositories under the git server's folder."""
    return (
        "#!/bin/sh\n"
        'case "$SSH_ORIGINAL_COMMAND" in\n'
        "  *..*) ;;\n"
        f'  "git-upload-pack \'{git_root}/"*) exec git-shell -c "$SSH_ORIGINAL_COMMAND" ;;\n'
        "esac\n"
        'echo "only git-upload-pack of the harness\'s repositories" >&2\n'
        "exit 1\n"
    )


def git_sshd_config(port: int, folder: Path) -> str:
    """sshd on the bridge for `--git` over ssh: keys only, every key forced to git-shell."""
    lines = [
        f"Port {port}",
        f"ListenAddress {BRIDGE_IP}",
        f"HostKey {folder / 'host_ed25519'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}",
        f"PidFile {folder / 'sshd.pid'}",
        "PermitRootLogin prohibit-password",
        "AllowUsers root",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "AllowTcpForwarding no",
        "X11Forwarding no",
        "PermitTTY no",
        "PrintMotd no",
        "LogLevel VERBOSE",
    ]
    return "\n".join(lines) + "\n"


def git_sshd(folder: Path, sshd: str = "/usr/sbin/sshd") -> Component:
    return Component(GIT_SSH, [sshd, "-D", "-e", "-f", str(folder / "sshd_config")])
