"""`harness up`, `down` and `status`: start the cluster's processes in order, wait
for each to be really ready, and undo everything on the way down.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

from . import components as c
from . import host, kueue, nodefs, storage
from .errors import HarnessError
from .gobuild import GO_TOOL_NAMES
from .images import containers_conf, git_image_ref, pause_archive, push_base_image, push_git_image
from .layout import (
    BRIDGE_IP,
    CNI_PACKAGE,
    CNI_PLUGIN_DIR,
    CNI_PLUGINS,
    DNS_SERVICE_IP,
    HOST_TOOLS,
    KUBE_COMMANDS,
    KWOK_NODE_COUNT,
    NODE_NAME,
    Layout,
)
from .pki import Pki, ensure_pki
from .procs import Processes, Recorded, log_tail

Report = Callable[[str], None]

# The order `up` starts them in; `down` stops them in reverse.
COMPONENT_ORDER = (
    "registry",
    "buildkitd",
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "containerd",
    "kubelet",
    "kube-proxy",
    "coredns",
    "kueue",
    "kwok",
)
# Services beside the cluster: started by `up` after the rest, and into a running harness
# (`harness start NAME`, or `up` when only they are missing), so adding one restarts nothing.
PYINDEX_SERVICE = "pyindex"
SERVICES = (c.GIT_SERVER, c.GIT_SSH, storage.PROVISIONER_SERVICE, storage.DATA_SERVER_SERVICE, PYINDEX_SERVICE)
# The wheels the package index serves (pure-python, tiny), fetched on this machine with
# `pip download` and cached across clusters: what the tests of `pypod add` install in pods.
PYINDEX_WHEELS = ("six==1.17.0", "iniconfig==2.0.0", "tomli==2.0.1")
STORAGE_STATE = ("local-path", "data-server")


@dataclass(frozen=True)
class ClusterInfo:
    """What a client needs to use a running harness; saved as cluster.json."""

    server: str
    admin_kubeconfig: str
    restricted_kubeconfig: str
    restricted_namespace: str
    registry: str
    base_image: str
    containers_conf: str
    kubectl: str
    node: str
    ports: dict[str, int]
    # DOCKER_CONFIG whose current buildx builder is the harness's buildkitd; "" without docker.
    docker_config: str = ""

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2) + "\n"

    @classmethod
    def load(cls, path: Path) -> ClusterInfo:
        return cls(**json.loads(path.read_text()))

    def env(self) -> dict[str, str]:
        """Environment for a shell or a test that uses this cluster."""
        return {
            "KUBECONFIG": self.admin_kubeconfig,
            "PYPOD_HARNESS_REGISTRY": self.registry,
            "PYPOD_HARNESS_BASE_IMAGE": self.base_image,
            "CONTAINERS_CONF": self.containers_conf,
            "IMAGE_REPO": f"{self.registry}/pypod",
            "PYPOD_KUBECTL": self.kubectl,
            "PYPOD_BASE_IMAGE": self.base_image,
            "PYPOD_GIT_IMAGE": git_image_ref(self.registry),
        }


def check_prerequisites(layout: Layout) -> None:
    if os.geteuid() != 0:
        raise HarnessError("the harness must run as root", hint="it creates a bridge, iptables rules and cgroups")
    binaries = (*KUBE_COMMANDS, "kwok", *GO_TOOL_NAMES, storage.PROVISIONER_BINARY)
    missing_bins = [name for name in binaries if not layout.binary(name).exists()]
    if missing_bins:
        raise HarnessError(
            f"not built yet: {', '.join(missing_bins)} (looked in {layout.bin})",
            hint="run `python -m harness build` (about 30 minutes the first time)",
        )
    missing_tools = [
        f"{tool} (apt-get install {pkg})" for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None
    ]
    missing_tools += [
        f"CNI plugin {p} (apt-get install {CNI_PACKAGE})" for p in CNI_PLUGINS if not (CNI_PLUGIN_DIR / p).exists()
    ]
    if missing_tools:
        raise HarnessError("missing: " + "; ".join(missing_tools), hint="install the packages named, then retry")


def free_ports(count: int) -> list[int]:
    """Ports free on every address now; held open together so they are distinct."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("0.0.0.0", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _http_ok(url: str, token: str | None = None, ca: Path | None = None, insecure: bool = False) -> bool:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    context = None
    if url.startswith("https"):
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


class _Starter:
    """Starts components and waits for each; on failure names it and shows its log."""

    def __init__(self, layout: Layout, report: Report) -> None:
        self.layout = layout
        self.procs = Processes(layout.pids, layout.logs)
        self.report = report

    def start(self, component: c.Component) -> Recorded:
        return self.procs.start(component)

    def wait(
        self, record: Recorded, ready: Callable[[], bool], timeout: float, what: str = "", label: str = ""
    ) -> None:
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        while time.monotonic() < deadline:
            if ready():
                self.report(f"  {label or record.name} ready ({time.monotonic() - started:.1f}s)")
                return
            if not record.alive():
                raise HarnessError(
                    f"{record.name} exited during start-up",
                    hint=f"full log: {record.log}",
                    log_tail=log_tail(record.log),
                )
            time.sleep(0.1)
        raise HarnessError(
            f"{record.name} did not become ready within {timeout:.0f}s{': ' + what if what else ''}",
            hint=f"full log: {record.log}",
            log_tail=log_tail(record.log),
        )


def _kubectl(layout: Layout, *args: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        [str(layout.binary("kubectl")), f"--kubeconfig={layout.admin_kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and result.returncode != 0:
        raise HarnessError(f"kubectl {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout


def _ready_nodes(layout: Layout) -> set[str]:
    out = _kubectl(layout, "get", "nodes", "-o", "json", check=False)
    if not out:
        return set()
    ready = set()
    for node in json.loads(out)["items"]:
        for cond in node.get("status", {}).get("conditions", []):
            if cond["type"] == "Ready" and cond["status"] == "True":
                ready.add(node["metadata"]["name"])
    return ready


def _write_configs(layout: Layout, ports: c.Ports, pki: Pki) -> None:
    tokens = pki.tokens()
    server = c.apiserver_url(ports)
    layout.config.mkdir(parents=True, exist_ok=True)
    kubeconfigs = {
        layout.admin_kubeconfig: ("admin", "default"),
        layout.restricted_kubeconfig: ("restricted", c.RESTRICTED_NAMESPACE),
        layout.config / "controller-manager.kubeconfig": ("controller-manager", "default"),
        layout.config / "scheduler.kubeconfig": ("scheduler", "default"),
        layout.config / "kubelet.kubeconfig": ("kubelet", "default"),
        layout.config / "kube-proxy.kubeconfig": ("kube-proxy", "default"),
    }
    for path, (role, namespace) in kubeconfigs.items():
        path.write_text(c.kubeconfig(server, pki.ca_cert, role, tokens[role], namespace))
        path.chmod(0o600)
    paths = c.containerd_paths(layout)
    (layout.config / "containerd.toml").write_text(c.containerd_config(layout))
    hosts_dir = paths["certs_d"] / c.registry_host(ports)
    hosts_dir.mkdir(parents=True, exist_ok=True)
    (hosts_dir / "hosts.toml").write_text(c.registry_hosts_toml(ports))
    paths["cni_conf"].mkdir(parents=True, exist_ok=True)
    (paths["cni_conf"] / "10-pypod-harness.conflist").write_text(c.cni_conflist(layout))
    (layout.config / "kubelet.json").write_text(c.kubelet_config(layout, ports, pki))
    (layout.config / "kube-proxy.json").write_text(c.kube_proxy_config(layout, ports))
    (layout.config / "registry.yml").write_text(c.registry_config(layout, ports))
    (layout.config / "buildkitd.toml").write_text(c.buildkitd_config(ports))
    (layout.config / "kwok.yaml").write_text(c.kwok_config())
    (layout.config / "Corefile").write_text(c.corefile(layout, ports))


def _reset_state(layout: Layout) -> None:
    """A fresh cluster each `up`: new etcd, new kubelet and pod state. PKI and
    containerd's image store are kept, so pulled images stay cached."""
    host.unmount_all_under(layout.state)
    for sub in ("data", "kubelet", "pod-logs", "cni", "netns", "config", "pids", "logs", "kueue", *STORAGE_STATE):
        shutil.rmtree(layout.state / sub, ignore_errors=True)
    storage_info_path(layout).unlink(missing_ok=True)
    (layout.state / "storage-ports.json").unlink(missing_ok=True)
    shutil.rmtree(layout.state / "pyindex", ignore_errors=True)
    (layout.state / "pyindex.json").unlink(missing_ok=True)
    (layout.state / "pyindex-port.json").unlink(missing_ok=True)
    shutil.rmtree(c.containerd_paths(layout)["state"], ignore_errors=True)
    for sub in ("data", "kubelet", "pod-logs", "logs", "pids"):
        (layout.state / sub).mkdir(parents=True, exist_ok=True)


def is_up(layout: Layout) -> bool:
    procs = Processes(layout.pids, layout.logs)
    records = {r.name: r for r in procs.recorded()}
    return layout.env_file.exists() and all(name in records and records[name].alive() for name in COMPONENT_ORDER)


def up(layout: Layout | None = None, report: Report = print) -> ClusterInfo:
    """Start the whole cluster, or return the running one. Idempotent."""
    layout = layout or Layout.default()
    if is_up(layout):
        info = ClusterInfo.load(layout.env_file)
        start_services(layout, report)
        report(f"harness already up: KUBECONFIG={info.admin_kubeconfig}")
        return info
    check_prerequisites(layout)
    began = time.monotonic()
    # Anything half-started by an earlier attempt goes first.
    down(layout, report=lambda _m: None)
    _reset_state(layout)
    starter = _Starter(layout, report)
    try:
        info = _start_all(layout, starter, report)
    except BaseException:
        report("start-up failed; stopping what was started")
        down(layout, report=lambda _m: None)
        raise
    layout.env_file.write_text(info.to_json())
    try:
        start_services(layout, report)
    except BaseException:
        report("start-up failed; stopping what was started")
        down(layout, report=lambda _m: None)
        raise
    report(f"harness up in {time.monotonic() - began:.1f}s")
    report(f"  admin kubeconfig:      {info.admin_kubeconfig}")
    report(f"  restricted kubeconfig: {info.restricted_kubeconfig} (namespace {info.restricted_namespace})")
    report(f"  registry:              {info.registry}   base image: {info.base_image}")
    report(f"  export KUBECONFIG={info.admin_kubeconfig}")
    return info


def _start_all(layout: Layout, starter: _Starter, report: Report) -> ClusterInfo:
    ports = c.Ports(*free_ports(len(fields(c.Ports))))
    pki = ensure_pki(layout.pki)
    tokens = pki.tokens()
    host.create_bridge()
    host.add_drop_rule()
    _write_configs(layout, ports, pki)
    # Before containerd and the kubelet: their state on a filesystem cAdvisor can measure.
    nodefs.mount_node_fs(layout)
    server = c.apiserver_url(ports)

    registry = starter.start(c.registry(layout))
    layout.buildkit.mkdir(parents=True, exist_ok=True)
    buildkitd = starter.start(c.buildkitd(layout))
    etcd_bin = shutil.which("etcd") or "etcd"
    etcd = starter.start(c.etcd(layout, ports, etcd_bin))
    starter.wait(registry, lambda: _http_ok(f"http://{c.registry_host(ports)}/v2/"), 20)
    starter.wait(etcd, lambda: _http_ok(f"http://127.0.0.1:{ports.etcd_client}/health"), 30)

    # The base image push needs only the registry: do it while the control plane starts.
    pool = ThreadPoolExecutor(max_workers=1)
    base_image_future = pool.submit(push_base_image, layout, c.registry_host(ports), report)

    apiserver = starter.start(c.apiserver(layout, ports, pki))
    starter.wait(apiserver, lambda: _http_ok(f"{server}/readyz", tokens["admin"], pki.ca_cert), 120)
    cm = starter.start(c.controller_manager(layout, ports, pki))
    coredns = starter.start(c.coredns(layout))
    sched = starter.start(c.scheduler(layout, ports))
    containerd = starter.start(c.containerd(layout))
    socket_path = c.containerd_paths(layout)["socket"]
    kueue_process = _start_kueue(layout, starter, ports, pki)
    starter.wait(cm, lambda: _http_ok(f"https://127.0.0.1:{ports.controller_manager}/healthz", insecure=True), 60)
    starter.wait(sched, lambda: _http_ok(f"https://127.0.0.1:{ports.scheduler}/healthz", insecure=True), 60)
    starter.wait(containerd, lambda: _ctr(socket_path, "version", check=False) is not None, 30)
    _ctr(socket_path, "-n", "k8s.io", "images", "import", str(pause_archive(layout, report)))

    _start_kubelet(layout, starter)
    proxy = starter.start(c.kube_proxy(layout))
    starter.wait(proxy, lambda: _http_ok(f"http://127.0.0.1:{ports.proxy_healthz}/healthz"), 30)

    objects = c.kwok_nodes(KWOK_NODE_COUNT) + c.kwok_gpu_nodes()
    objects += c.restricted_user_objects("pypod-restricted") + c.kube_dns_objects()
    _kubectl(layout, "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    kwok = starter.start(c.kwok(layout, ports))
    kwok_names = {f"kwok-node-{i}" for i in range(KWOK_NODE_COUNT)} | set(c.GPU_NODES)
    starter.wait(kwok, lambda: kwok_names <= _ready_nodes(layout), 60, "kwok nodes not Ready")
    # Pods cannot be created in a namespace before its default ServiceAccount exists.
    starter.wait(
        cm,
        lambda: bool(_kubectl(layout, "get", "serviceaccount", "default", "-o", "name", check=False)),
        60,
        "default ServiceAccount not created",
    )
    # Ready once its kubernetes plugin has synced Services and EndpointSlices.
    starter.wait(coredns, lambda: coredns_ready(ports), 30, "its /ready endpoint did not answer 200")
    _finish_kueue(layout, starter, kueue_process, ports)
    try:
        base_image = base_image_future.result()
    finally:
        pool.shutdown()
    starter.wait(buildkitd, lambda: _accepts(c.buildkitd_socket(layout)), 30)
    docker_config = _buildx_builder(layout)
    return ClusterInfo(
        server=server,
        admin_kubeconfig=str(layout.admin_kubeconfig),
        restricted_kubeconfig=str(layout.restricted_kubeconfig),
        restricted_namespace=c.RESTRICTED_NAMESPACE,
        registry=c.registry_host(ports),
        base_image=base_image,
        containers_conf=str(containers_conf(layout)),
        kubectl=str(layout.binary("kubectl")),
        node=NODE_NAME,
        ports=ports.to_dict(),
        docker_config=docker_config,
    )


def _start_kueue(layout: Layout, starter: _Starter, ports: c.Ports, pki: Pki) -> Recorded:
    """Kueue's CRDs, webhooks and visibility APIServices, then Kueue itself; `_finish_kueue`
    waits for it while the node starts."""
    manifests = kueue.load_manifests(layout.kueue_manifests)
    ca = kueue.ca_bundle(pki)
    crds = kueue.crds(manifests, ports, ca)
    objects = [kueue.namespace_object(), *crds]
    objects += kueue.webhook_configurations(manifests, ports, ca) + kueue.visibility_objects(manifests, ports, ca)
    # Server-side: the Workload CRD is too large for client-side apply's annotation.
    _kubectl(
        layout,
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
    )
    names = [f"crd/{crd['metadata']['name']}" for crd in crds]
    _kubectl(layout, "wait", "--for=condition=Established", "--timeout=60s", *names)
    serving = kueue.serving_dir(layout)
    serving.mkdir(parents=True, exist_ok=True)
    for source, target in ((pki.kueue_cert, "tls.crt"), (pki.kueue_key, "tls.key")):
        shutil.copyfile(source, serving / target)
        (serving / target).chmod(0o600)
    (kueue.state_dir(layout) / "config.yaml").write_text(kueue.config(layout, ports))
    host.make_mount_points([kueue.VISIBILITY_CERT_DIR, kueue.METRICS_CERT_DIR], layout.state / KUEUE_MOUNT_RECORD)
    return starter.start(kueue.kueue_component(layout, ports))


# The folders made on the machine for Kueue's fixed certificate paths; `down` removes them.
KUEUE_MOUNT_RECORD = "kueue-mount-points.json"
VISIBILITY_APISERVICE = "apiservice/v1beta2.visibility.kueue.x-k8s.io"


def kueue_ready(ports: c.Ports) -> bool:
    return _http_ok(f"http://127.0.0.1:{ports.kueue_health}/readyz")


def _finish_kueue(layout: Layout, starter: _Starter, record: Recorded, ports: c.Ports) -> None:
    starter.wait(record, lambda: kueue_ready(ports), 90, "its /readyz did not answer 200")
    # Through Kueue's own webhooks, as a user's objects would go.
    items = kueue.queue_objects()
    try:
        _kubectl(layout, "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    except HarnessError as exc:
        raise HarnessError(f"kueue: {exc}", hint=f"full log: {record.log}", log_tail=log_tail(record.log)) from exc
    starter.wait(
        record,
        lambda: _condition_true(layout, VISIBILITY_APISERVICE, "Available"),
        60,
        f"{VISIBILITY_APISERVICE} (the visibility API) not Available",
        label="kueue visibility API",
    )


# containerd answers `ctr version` before its CRI service has initialised (about a second
# later, longer on a busy machine); a kubelet started in that window exits at once.
CRI_NOT_READY = "server is not initialized yet"


def _start_kubelet(layout: Layout, starter: _Starter) -> None:
    for attempt in range(10):
        kubelet = starter.start(c.kubelet(layout))
        try:
            starter.wait(kubelet, lambda: NODE_NAME in _ready_nodes(layout), 90, f"node {NODE_NAME} not Ready")
            return
        except HarnessError as exc:
            if CRI_NOT_READY not in exc.log_tail or attempt == 9:
                raise
            starter.report(f"  containerd's CRI is not ready yet; starting kubelet again ({attempt + 1})")
            time.sleep(1)


def _accepts(socket_path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(socket_path))
        except OSError:
            return False
    return True


BUILDX_BUILDER = "pypod-harness"


def _buildx_builder(layout: Layout) -> str:
    """A DOCKER_CONFIG with the buildx plugin whose builder is the harness's buildkitd
    (buildx's remote driver needs no Docker engine). "" when no docker CLI is installed."""
    docker = shutil.which("docker")
    if docker is None:
        return ""
    shutil.rmtree(layout.docker_config, ignore_errors=True)
    plugins = layout.docker_config / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-buildx").symlink_to(layout.binary("docker-buildx"))
    env = dict(os.environ, DOCKER_CONFIG=str(layout.docker_config))
    argv = [docker, "buildx", "create", "--name", BUILDX_BUILDER, "--driver", "remote", "--use"]
    result = subprocess.run([*argv, f"unix://{c.buildkitd_socket(layout)}"], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        hint = f"run `{' '.join(argv)}` by hand"
        raise HarnessError("docker buildx create failed", hint=hint, log_tail=result.stderr)
    return str(layout.docker_config)


@dataclass(frozen=True)
class StorageInfo:
    """Where the data components of a running harness are; saved as storage.json (beside
    cluster.json, whose fields every checkout's ClusterInfo must be able to read)."""

    data_server: str  # base URL, reachable from pods and from this machine
    data_root: str  # the folder it serves as /files/NAME
    data_log: str  # JSON lines, one per response
    provisioner_health: str
    rwo_class: str = storage.RWO_CLASS
    rwx_class: str = storage.RWX_CLASS

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2) + "\n"

    @classmethod
    def load(cls, path: Path) -> StorageInfo:
        return cls(**json.loads(path.read_text()))


def storage_info_path(layout: Layout) -> Path:
    return layout.state / "storage.json"


def _storage_ports(layout: Layout) -> dict[str, int]:
    """The two ports, kept for the life of the cluster so a restarted component keeps its URL."""
    path = layout.state / "storage-ports.json"
    if path.exists():
        return json.loads(path.read_text())
    health, data = free_ports(2)
    ports = {"provisioner_health": health, "data_server": data}
    path.write_text(json.dumps(ports))
    return ports


def storage_info(layout: Layout) -> StorageInfo:
    """Where the data components are (their ports kept for the cluster's life); saved as storage.json."""
    ports = _storage_ports(layout)
    data_dir = layout.state / "data-server"
    info = StorageInfo(
        data_server=f"http://{BRIDGE_IP}:{ports['data_server']}",
        data_root=str(data_dir / "files"),
        data_log=str(data_dir / "requests.jsonl"),
        provisioner_health=f"http://127.0.0.1:{ports['provisioner_health']}",
    )
    storage_info_path(layout).write_text(info.to_json())
    return info


def _start_provisioner(layout: Layout, starter: _Starter) -> None:
    """local-path-provisioner, with its objects and its helper image (imported into containerd)."""
    info = storage_info(layout)
    storage.build_provisioner(layout, starter.report)  # no-op when built; a checkout newer than the build
    storage.prepare_host(layout)
    socket_path = c.containerd_paths(layout)["socket"]
    _ctr(socket_path, "-n", "k8s.io", "images", "import", str(storage.helper_archive(layout, starter.report)))
    items = storage.storage_objects(layout)
    _kubectl(layout, "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    record = starter.start(storage.provisioner(layout, _storage_ports(layout)["provisioner_health"]))
    starter.wait(record, lambda: _http_ok(f"{info.provisioner_health}/ready"), 60, "its /ready did not answer 200")


def _start_data_server(layout: Layout, starter: _Starter) -> None:
    from . import dataserver

    info = storage_info(layout)
    port = _storage_ports(layout)["data_server"]
    data_dir = Path(info.data_root).parent
    data_dir.mkdir(parents=True, exist_ok=True)
    # Run from a copy: the server outlives the checkout that started it.
    script = data_dir / "dataserver.py"
    shutil.copyfile(dataserver.__file__, script)
    argv = [sys.executable, str(script), f"--host={BRIDGE_IP}", f"--port={port}"]
    argv += [f"--root={info.data_root}", f"--log={info.data_log}"]
    record = starter.start(c.Component(storage.DATA_SERVER_SERVICE, argv))
    starter.wait(record, lambda: _accepts_tcp(BRIDGE_IP, port), 20)


@dataclass(frozen=True)
class PyIndexInfo:
    """The package index of a running harness: pyindex.json beside cluster.json. Pods get
    `env()` in their environment (pypod's --env), never in an image."""

    url: str  # http://BRIDGE_IP:PORT/simple/, reachable from pods and from this machine
    root: str  # the folder of wheels it serves
    log: str  # JSON lines, one per response
    wheels: tuple[str, ...] = PYINDEX_WHEELS

    def env(self) -> dict[str, str]:
        """pip's and uv's index settings for this index (plain HTTP: pip must trust the host)."""
        host = urllib.parse.urlsplit(self.url).hostname or BRIDGE_IP
        return {
            "PIP_INDEX_URL": self.url,
            "PIP_TRUSTED_HOST": host,
            "UV_INDEX_URL": self.url,
            "UV_DEFAULT_INDEX": self.url,
        }

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "wheels": list(self.wheels)}, indent=2) + "\n"

    @classmethod
    def load(cls, path: Path) -> PyIndexInfo:
        data = json.loads(path.read_text())
        return cls(**{**data, "wheels": tuple(data.get("wheels", PYINDEX_WHEELS))})


def pyindex_info_path(layout: Layout) -> Path:
    return layout.state / "pyindex.json"


def pyindex_wheels(layout: Layout, report: Report = print) -> Path:
    """The index's wheels, fetched once into ~/.cache/pypod-harness/pyindex (pure-python
    wheels only, no dependencies: the list names everything the tests install)."""
    folder = layout.cache.parent / "pyindex"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / ".fetched"
    wanted = "\n".join(PYINDEX_WHEELS) + "\n"
    if stamp.exists() and stamp.read_text() == wanted:
        return folder
    report(f"  fetching wheels for the package index: {', '.join(PYINDEX_WHEELS)}")
    argv = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(folder)]
    result = subprocess.run([*argv, *PYINDEX_WHEELS], capture_output=True, text=True)
    if result.returncode != 0:
        raise HarnessError(
            "pip download of the package index's wheels failed",
            hint="this machine needs to reach PyPI (or PIP_INDEX_URL) once; the wheels are cached after that",
            log_tail=result.stderr,
        )
    stamp.write_text(wanted)
    return folder


def _start_pyindex(layout: Layout, starter: _Starter) -> PyIndexInfo:
    from . import pyindex

    root = pyindex_wheels(layout, starter.report)
    ports_file = layout.state / "pyindex-port.json"
    if ports_file.exists():
        port = json.loads(ports_file.read_text())["port"]
    else:
        port = free_ports(1)[0]
        ports_file.write_text(json.dumps({"port": port}))
    folder = layout.state / "pyindex"
    folder.mkdir(parents=True, exist_ok=True)
    # Run from a copy: the server outlives the checkout that started it.
    script = folder / "pyindex.py"
    shutil.copyfile(pyindex.__file__, script)
    info = PyIndexInfo(f"http://{BRIDGE_IP}:{port}/simple/", str(root), str(folder / "requests.jsonl"))
    argv = [sys.executable, str(script), f"--host={BRIDGE_IP}", f"--port={port}", f"--root={root}", f"--log={info.log}"]
    record = starter.start(c.Component(PYINDEX_SERVICE, argv))
    starter.wait(record, lambda: _http_ok(info.url), 20, "its /simple/ did not answer 200")
    pyindex_info_path(layout).write_text(info.to_json())
    return info


def restart_apiserver(layout: Layout | None = None, report: Report = print) -> float:
    """Stop and start kube-apiserver with the same flags (for tests of clients that must
    survive it); returns the seconds it was away."""
    layout = layout or Layout.default()
    info = ClusterInfo.load(layout.env_file)
    ports = c.Ports.from_dict(info.ports)
    pki = ensure_pki(layout.pki)
    starter = _Starter(layout, report)
    began = time.monotonic()
    starter.procs.stop("kube-apiserver")
    record = starter.start(c.apiserver(layout, ports, pki))
    starter.wait(record, lambda: _http_ok(f"{info.server}/readyz", pki.tokens()["admin"], pki.ca_cert), 120)
    return time.monotonic() - began


def _ctr(socket_path: Path, *args: str, check: bool = True) -> str | None:
    result = subprocess.run(["ctr", "--address", str(socket_path), *args], capture_output=True, text=True)
    if result.returncode != 0:
        if check:
            raise HarnessError(f"ctr {' '.join(args[:3])} failed: {result.stderr.strip()}")
        return None
    return result.stdout


def down(layout: Layout | None = None, report: Report = print) -> list[str]:
    """Stop exactly what the harness started and undo its changes to the machine."""
    layout = layout or Layout.default()
    procs = Processes(layout.pids, layout.logs)
    stopped: list[str] = []
    for name in ("kwok", "kube-proxy", "kubelet"):
        if procs.stop(name):
            stopped.append(name)
    proxy_bin = layout.binary("kube-proxy")
    if proxy_bin.exists() and "kube-proxy" in stopped:
        # Removes the KUBE-* chains kube-proxy wrote.
        subprocess.run([str(proxy_bin), "--cleanup"], capture_output=True)
    killed = host.kill_pod_processes()
    shims = host.kill_shims(c.containerd_paths(layout)["socket"])
    stopped += procs.stop_all()
    host.unmount_all_under(layout.state)
    host.remove_netns(c.containerd_paths(layout)["netns"])
    host.remove_kubepods_cgroups()
    host.remove_drop_rule()
    host.remove_kubelet_chains()
    host.delete_bridge()
    host.remove_mount_points(layout.state / KUEUE_MOUNT_RECORD)
    layout.env_file.unlink(missing_ok=True)
    layout.git_server_file.unlink(missing_ok=True)
    if stopped or killed or shims:
        report(f"harness down: stopped {', '.join(stopped) or 'nothing'}; {killed} pod processes, {shims} shims")
    else:
        report("harness down: nothing was running")
    return stopped


def status(layout: Layout | None = None) -> dict[str, object]:
    layout = layout or Layout.default()
    procs = Processes(layout.pids, layout.logs)
    records = {r.name: r for r in procs.recorded()}
    components = {
        name: ("running" if name in records and records[name].alive() else "stopped")
        for name in (*COMPONENT_ORDER, *SERVICES)
    }
    result: dict[str, object] = {"components": components, "up": is_up(layout)}
    if storage_info_path(layout).exists():
        result["data_server"] = StorageInfo.load(storage_info_path(layout)).data_server
    if pyindex_info_path(layout).exists() and components[PYINDEX_SERVICE] == "running":
        result["pyindex"] = PyIndexInfo.load(pyindex_info_path(layout)).url
    if layout.env_file.exists():
        info = ClusterInfo.load(layout.env_file)
        result["kubeconfig"] = info.admin_kubeconfig
        result["registry"] = info.registry
        git = GitServer.load(layout)
        if git is not None and components[c.GIT_SERVER] == "running":
            result["git_server"] = git.url
        if git is not None and git.ssh_port and components[c.GIT_SSH] == "running":
            result["git_ssh"] = f"ssh://root@{BRIDGE_IP}:{git.ssh_port}{layout.git_root}/"
        result["ready_nodes"] = sorted(_ready_nodes(layout)) if components["kube-apiserver"] == "running" else []
        if components["kube-apiserver"] == "running":
            result["health"] = health(layout, c.Ports.from_dict(info.ports))
    result["bridge"] = host.bridge_exists()
    result["drop_rule"] = host.drop_rule_present()
    return result


def coredns_ready(ports: c.Ports) -> bool:
    return _http_ok(f"http://127.0.0.1:{ports.coredns_ready}/ready")


def _condition_true(layout: Layout, resource: str, condition: str) -> bool:
    out = _kubectl(layout, "get", resource, "-o", "json", check=False)
    conditions = json.loads(out).get("status", {}).get("conditions", []) if out else []
    return any(cond["type"] == condition and cond["status"] == "True" for cond in conditions)


def _kueue_health(layout: Layout, ports: c.Ports) -> tuple[bool, str]:
    if not kueue_ready(ports):
        return False, "not ready (GET /readyz)"
    if not _condition_true(layout, f"clusterqueue/{kueue.CLUSTER_QUEUE}", "Active"):
        return False, f"ClusterQueue {kueue.CLUSTER_QUEUE} is not Active"
    if not _condition_true(layout, VISIBILITY_APISERVICE, "Available"):
        return False, f"{VISIBILITY_APISERVICE} (the visibility API) is not Available"
    return True, f"ClusterQueue {kueue.CLUSTER_QUEUE} Active; visibility API Available"


def _coredns_health(ports: c.Ports) -> tuple[bool, str]:
    if coredns_ready(ports):
        return True, f"answering on {BRIDGE_IP}:53 (kube-dns {DNS_SERVICE_IP})"
    return False, "its kubernetes plugin is not ready (GET /ready)"


def health(layout: Layout, ports: c.Ports) -> dict[str, dict[str, object]]:
    """The services whose process running is not enough: is each answering? An unhealthy
    one carries the tail of its log."""
    procs = Processes(layout.pids, layout.logs)
    checks = {"coredns": lambda: _coredns_health(ports), "kueue": lambda: _kueue_health(layout, ports)}
    result: dict[str, dict[str, object]] = {}
    for name, check in checks.items():
        record = procs.get(name)
        ok, detail = check() if record is not None and record.alive() else (False, "not running")
        entry: dict[str, object] = {"ok": ok, "detail": detail}
        if not ok and record is not None:
            entry["log_tail"] = log_tail(record.log, 8)
        result[name] = entry
    return result


@dataclass(frozen=True)
class GitServer:
    """The running git server (harness/gitserver.py, and sshd for ssh): gitserver.json."""

    url: str  # http://BRIDGE_IP:PORT; repositories at URL/public/NAME.git and URL/private/NAME.git
    root: str  # its folder: public/ and private/ hold bare repositories
    user: str
    credentials: str  # file holding `user:token`, for pushes and private reads
    ssh_port: int = 0  # sshd on the bridge: keys only, forced to git-upload-pack under `root`
    ssh_key: str = ""  # a private key sshd accepts (the tests' client key)
    known_hosts: str = ""  # a known_hosts file with sshd's host key

    def token(self) -> str:
        return Path(self.credentials).read_text().strip().partition(":")[2]

    def ssh_url(self, repository: Path) -> str:
        return c.git_ssh_url(self.ssh_port, repository)

    @classmethod
    def load(cls, layout: Layout) -> GitServer | None:
        try:
            return cls(**json.loads(layout.git_server_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save(self, layout: Layout) -> None:
        layout.git_server_file.write_text(json.dumps(self.__dict__, indent=2) + "\n")


def start_services(layout: Layout, report: Report = print, names: tuple[str, ...] = SERVICES) -> None:
    """Start each service of `names` that is not running, into the running harness."""
    if not layout.env_file.exists():
        raise HarnessError("the harness is not up", hint="run `python -m harness up`")
    procs = Processes(layout.pids, layout.logs)
    for name in names:
        if name not in SERVICES:
            raise HarnessError(f"no service {name!r}", hint=f"services: {', '.join(SERVICES)}")
        record = procs.get(name)
        if record is not None and record.alive():
            continue
        starter = _Starter(layout, report)
        if name == c.GIT_SERVER:
            _start_git_server(layout, starter)
        elif name == c.GIT_SSH:
            _start_git_ssh(layout, starter)
        elif name == storage.PROVISIONER_SERVICE:
            _start_provisioner(layout, starter)
        elif name == storage.DATA_SERVER_SERVICE:
            _start_data_server(layout, starter)
        elif name == PYINDEX_SERVICE:
            _start_pyindex(layout, starter)


def _start_git_server(layout: Layout, starter: _Starter) -> GitServer:
    import dataclasses
    import secrets

    info = ClusterInfo.load(layout.env_file)
    layout.config.mkdir(parents=True, exist_ok=True)
    credentials = layout.config / "gitserver.credentials"
    credentials.touch(mode=0o600)
    credentials.write_text(f"{c.GIT_USER}:{secrets.token_urlsafe(24)}\n")
    port = free_ports(1)[0]
    record = starter.start(c.git_server(layout, port, credentials))
    url = c.git_server_url(port)
    starter.wait(record, lambda: _http_ok(f"{url}/healthz"), 15)
    push_git_image(layout, info.registry, starter.report)
    previous = GitServer.load(layout)
    server = GitServer(url, str(layout.git_root), c.GIT_USER, str(credentials))
    if previous is not None:  # the ssh side may be running still
        server = dataclasses.replace(
            server, ssh_port=previous.ssh_port, ssh_key=previous.ssh_key, known_hosts=previous.known_hosts
        )
    server.save(layout)
    return server


def _start_git_ssh(layout: Layout, starter: _Starter) -> GitServer:
    """sshd on the bridge, its host key and a client key made here once, every key forced
    to git-shell's upload-pack (harness/components.py)."""
    import dataclasses

    folder = layout.git_ssh
    folder.mkdir(parents=True, exist_ok=True)
    for key in ("host_ed25519", "client_ed25519"):
        if not (folder / key).exists():
            _run_tool(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"pypod-harness-{key}", "-f", str(folder / key)]
            )
    forced = folder / "git-only"
    forced.write_text(c.git_ssh_forced_command(layout.git_root))
    forced.chmod(0o755)
    client = (folder / "client_ed25519.pub").read_text().strip()
    (folder / "authorized_keys").write_text(f'restrict,command="{forced}" {client}\n')
    port = free_ports(1)[0]
    (folder / "sshd_config").write_text(c.git_sshd_config(port, folder))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    record = starter.start(c.git_sshd(folder, shutil.which("sshd") or "/usr/sbin/sshd"))
    starter.wait(record, lambda: _accepts_tcp(BRIDGE_IP, port), 15)
    host_key = (folder / "host_ed25519.pub").read_text().split()
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(f"[{BRIDGE_IP}]:{port} {host_key[0]} {host_key[1]}\n")
    server = GitServer.load(layout)
    if server is None:
        raise HarnessError("the git server's ssh side needs its HTTP side", hint="run `python -m harness start`")
    server = dataclasses.replace(
        server, ssh_port=port, ssh_key=str(folder / "client_ed25519"), known_hosts=str(known_hosts)
    )
    server.save(layout)
    return server


def _run_tool(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise HarnessError(f"{argv[0]} failed (exit {result.returncode})", log_tail=result.stderr)


def _accepts_tcp(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False
