"""Pinned versions and where the harness keeps its builds and its running state.

Builds are cached outside the repository, keyed by version, so a second
`harness build` is a no-op and a version bump builds beside the old one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.37.2"
# Staging modules are published as v0.<minor>.<patch> alongside v1.<minor>.<patch>.
STAGING_VERSION = "v0" + KUBERNETES_VERSION[2:]
KWOK_VERSION = "v0.8.0"
# docker buildx's builder for the tests of pypod's `--builder docker`: no Docker engine
# runs here, so buildx talks to a buildkitd of the harness's own (the "remote" driver).
BUILDKIT_VERSION = "v0.34.2"
BUILDX_VERSION = "v0.38.2"
# Cluster DNS, built with only the plugins its Corefile uses (see gobuild.COREDNS_MAIN).
COREDNS_VERSION = "v1.15.0"
# Queueing and quota: Kueue's controller, webhooks and visibility API as one host process.
KUEUE_VERSION = "v0.17.0"

KUBE_COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "kube-proxy",
)

# Debian package that provides each host tool the harness runs.
HOST_TOOLS = {
    "etcd": "etcd-server",
    "containerd": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "conntrack": "conntrack",
    "podman": "podman",
    "skopeo": "skopeo",
    "buildah": "buildah",
    "docker-registry": "docker-registry",
    "debootstrap": "debootstrap",
    "busybox": "busybox-static",
    "ip": "iproute2",
    # Kueue runs in a mount namespace of its own (harness/kueue.py).
    "unshare": "util-linux",
    "mount": "mount",
    "git": "git",  # the git server's http-backend
    "sshd": "openssh-server",  # the git server's ssh side
    "go": "golang (or the Go toolchain from go.dev)",
}
CNI_PLUGIN_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
CNI_PACKAGE = "containernetworking-plugins"

# Pod network on the harness's own bridge; the apiserver advertises the bridge IP
# so that the `kubernetes` Service (10.0.0.1) has a reachable endpoint.
BRIDGE = "pypodbr0"
POD_CIDR = "10.88.0.0/16"
BRIDGE_IP = "10.88.0.1"
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"
# The kube-dns Service pods are told to use; its EndpointSlice points at CoreDNS on the bridge.
DNS_SERVICE_IP = "10.0.0.10"
CLUSTER_DOMAIN = "cluster.local"

NODE_NAME = "pypod-node"
KWOK_NODE_COUNT = 3
KWOK_TAINT_KEY = "kwok.x-k8s.io/node"
KWOK_TAINT_VALUE = "fake"

BASE_IMAGE_NAME = "pypod/python"
BASE_IMAGE_TAG = "3-bookworm"
# The initContainer image of `pypod --git` in the tests: Debian with git and ssh.
GIT_IMAGE_NAME = "pypod/git"
GIT_IMAGE_TAG = "bookworm"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


@dataclass(frozen=True)
class Layout:
    """Every path the harness uses, derived from two roots."""

    cache: Path  # builds: binaries, Go module, rootfs tarballs
    state: Path  # one running cluster: certs, configs, data, logs, pids

    @classmethod
    def default(cls) -> Layout:
        cache_root = _env_path("PYPOD_HARNESS_CACHE", Path.home() / ".cache" / "pypod-harness")
        state = _env_path("PYPOD_HARNESS_STATE", Path.home() / ".local" / "state" / "pypod-harness")
        return cls(cache=cache_root / KUBERNETES_VERSION, state=state)

    @property
    def bin(self) -> Path:
        return self.cache / "bin"

    @property
    def gomod(self) -> Path:
        return self.cache / "gomod"

    @property
    def images(self) -> Path:
        return self.cache / "images"

    def binary(self, name: str) -> Path:
        return self.bin / name

    @property
    def kueue_manifests(self) -> Path:
        """Kueue's CRDs, webhook and visibility manifests, as its Go module ships them."""
        return self.cache / f"kueue-{KUEUE_VERSION}-config"

    @property
    def buildkit(self) -> Path:
        """buildkitd's root and socket; kept across `up`s, like containerd's image store."""
        return self.state / "buildkit"

    @property
    def docker_config(self) -> Path:
        """A DOCKER_CONFIG holding the buildx plugin and the harness's builder."""
        return self.state / "docker"

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def pids(self) -> Path:
        return self.state / "pids"

    @property
    def config(self) -> Path:
        return self.state / "config"

    @property
    def data(self) -> Path:
        return self.state / "data"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.state / "admin.kubeconfig"

    @property
    def restricted_kubeconfig(self) -> Path:
        return self.state / "restricted.kubeconfig"

    @property
    def env_file(self) -> Path:
        return self.state / "cluster.json"

    @property
    def git_root(self) -> Path:
        """The git server's repositories (public/, private/); kept across `up`s."""
        return self.state / "git"

    @property
    def git_ssh(self) -> Path:
        """The git server's ssh side: sshd's config, host key, the tests' client key."""
        return self.state / "gitssh"

    @property
    def git_server_file(self) -> Path:
        """gitserver.json: the running git server's URL and credentials file."""
        return self.state / "gitserver.json"
