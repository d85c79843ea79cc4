"""Dynamic PersistentVolumes for the test cluster: rancher/local-path-provisioner as a
host process, with two StorageClasses.

- `local-path` (the default): ReadWriteOnce, WaitForFirstConsumer. Each volume is a
  filesystem of its own, the size the claim asks for: the setup script makes an ext2
  image of that size and loop-mounts it (from a privileged helper pod, with Bidirectional
  mount propagation into the harness's shared folder). Upstream's example enforces sizes
  with XFS project quotas instead; a loop filesystem needs only busybox, and it gives a
  claim that is too small a real ENOSPC, as a cloud disk would.
- `local-path-rwx`: ReadWriteMany through the provisioner's `sharedFileSystemPath`, one
  folder every node sees (a stand-in for cephfs); no size is enforced there.

The helper pods run busybox-static in an image the harness builds (nothing is pulled).
Pure functions build the objects and the command line; `start` does the I/O.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .components import Component
from .errors import HarnessError
from .layout import Layout

LOCAL_PATH_VERSION = "v0.0.37"
LOCAL_PATH_MODULE = "github.com/rancher/local-path-provisioner"
PROVISIONER_BINARY = "local-path-provisioner"
PROVISIONER_SERVICE = "local-path-provisioner"  # its name among the harness's services
DATA_SERVER_SERVICE = "data-server"
PROVISIONER_NAME = "rancher.io/local-path"
NAMESPACE = "local-path-storage"
SERVICE_ACCOUNT = "local-path-provisioner-service-account"
CONFIGMAP = "local-path-config"
RWO_CLASS = "local-path"
RWX_CLASS = "local-path-rwx"
# Imported into containerd beside the pause image; IfNotPresent keeps the kubelet from pulling.
HELPER_IMAGE = "docker.io/pypod-harness/busybox:1.35"
DEFAULT_NODE = "DEFAULT_PATH_FOR_NON_LISTED_NODES"  # the provisioner's key for "every node"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"

Report = Callable[[str], None]


def storage_root(layout: Layout) -> Path:
    """Bind-mounted onto itself and made shared, so the helper pods' loop mounts reach the host."""
    return layout.state / "local-path"


def rwo_root(layout: Layout) -> Path:
    return storage_root(layout) / "rwo"


def rwx_root(layout: Layout) -> Path:
    return storage_root(layout) / "shared"


def provisioner_config(layout: Layout) -> dict:
    """config.json: one entry per StorageClass (the provisioner picks by the claim's class)."""
    return {
        "storageClassConfigs": {
            RWO_CLASS: {"nodePathMap": [{"node": DEFAULT_NODE, "paths": [str(rwo_root(layout))]}]},
            RWX_CLASS: {"sharedFileSystemPath": str(rwx_root(layout))},
        },
        "cmdTimeoutSeconds": 120,
    }


def setup_script(layout: Layout) -> str:
    """Run by a helper pod for each new volume, with VOL_DIR and VOL_SIZE_BYTES set."""
    return f"""\
#!/bin/sh
set -eu
mkdir -m 0777 -p "$VOL_DIR"
case "$VOL_DIR" in
  {rwx_root(layout)}/*) exit 0 ;;
esac
# A filesystem of the claim's size: a full claim is ENOSPC, as on a real disk.
image="$VOL_DIR.img"
rm -f "$image"
truncate -s "$VOL_SIZE_BYTES" "$image"
mke2fs -q -F -b 4096 -m 0 -i 65536 "$image" >/dev/null
mount -o loop "$image" "$VOL_DIR"
chmod 0777 "$VOL_DIR"
"""


def teardown_script() -> str:
    return """\
#!/bin/sh
set -eu
if grep -q " $VOL_DIR " /proc/mounts; then umount "$VOL_DIR"; fi
rm -rf "$VOL_DIR" "$VOL_DIR.img"
"""


def helper_pod() -> dict:
    """The helper pod template. Privileged with Bidirectional propagation on the provisioner's
    own `data` volume (the parent folder), so its mount is the host's; the host's /dev gives
    it loop devices made after the container started."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "helper-pod"},
        "spec": {
            "nodeSelector": {"pypod.dev/harness-node": "real"},
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "helper-pod",
                    "image": HELPER_IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "securityContext": {"privileged": True},
                    "volumeMounts": [
                        {"name": "data", "mountPath": "", "mountPropagation": "Bidirectional"},
                        {"name": "host-dev", "mountPath": "/dev"},
                    ],
                }
            ],
            "volumes": [{"name": "host-dev", "hostPath": {"path": "/dev"}}],
        },
    }


def storage_objects(layout: Layout) -> list[dict]:
    """The provisioner's namespace, the helper pods' ServiceAccount, its ConfigMap, the classes."""
    config = {
        "config.json": json.dumps(provisioner_config(layout), indent=2),
        "setup": setup_script(layout),
        "teardown": teardown_script(),
        "helperPod.yaml": json.dumps(helper_pod(), indent=2),  # JSON is YAML
    }

    def storage_class(name: str, binding: str, default: bool) -> dict:
        annotations = {DEFAULT_CLASS_ANNOTATION: "true"} if default else {}
        return {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": name, "annotations": annotations},
            "provisioner": PROVISIONER_NAME,
            "volumeBindingMode": binding,
            "reclaimPolicy": "Delete",
        }

    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CONFIGMAP, "namespace": NAMESPACE},
            "data": config,
        },
        storage_class(RWO_CLASS, "WaitForFirstConsumer", default=True),
        # Shared storage binds at once, as cephfs classes usually do: no node to wait for.
        storage_class(RWX_CLASS, "Immediate", default=False),
    ]


def provisioner(layout: Layout, health_port: int) -> Component:
    return Component(
        PROVISIONER_SERVICE,
        [
            str(layout.binary(PROVISIONER_BINARY)),
            "start",
            f"--kubeconfig={layout.admin_kubeconfig}",
            f"--namespace={NAMESPACE}",
            f"--configmap-name={CONFIGMAP}",
            f"--service-account-name={SERVICE_ACCOUNT}",
            f"--helper-image={HELPER_IMAGE}",
            f"--provisioner-name={PROVISIONER_NAME}",
            # Its health server listens on every address (":PORT"); 8080 by default, which
            # anything else may hold: a free port chosen at start.
            f"--health-port={health_port}",
            # The helper pod is privileged and mounts /dev (see helper_pod).
            "--allow-unsafe-helper-pod-template",
        ],
        env={"HOME": str(layout.state)},
    )


# -- build -------------------------------------------------------------------------


def _stamp(layout: Layout) -> Path:
    return layout.bin / f".{PROVISIONER_BINARY}.version"


def provisioner_is_current(layout: Layout) -> bool:
    stamp = _stamp(layout)
    binary = layout.binary(PROVISIONER_BINARY)
    return binary.exists() and stamp.exists() and stamp.read_text() == LOCAL_PATH_VERSION


def build_provisioner(layout: Layout, report: Report) -> list[str]:
    """`go install` of the pinned version, into the cache; rebuilt when the version changes."""
    if provisioner_is_current(layout):
        return []
    if shutil.which("go") is None:
        raise HarnessError("the Go toolchain is not on PATH", hint="install Go and run `harness build` again")
    layout.bin.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-p=2")
    env["CGO_ENABLED"] = "0"
    # The checksum database answers 404 for this version (seen here); the Go module proxy
    # serves it when asked for exactly, so only this module skips the database.
    env["GONOSUMDB"] = ",".join(filter(None, [env.get("GONOSUMDB"), LOCAL_PATH_MODULE]))
    log = layout.cache / "build.log"
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=layout.cache) as gobin:
        env["GOBIN"] = gobin
        command = [
            "go",
            "install",
            "-trimpath",
            "-ldflags",
            f"-s -w -X main.VERSION={LOCAL_PATH_VERSION}",
            f"{LOCAL_PATH_MODULE}@{LOCAL_PATH_VERSION}",
        ]
        with log.open("a") as out:
            out.write(f"$ {' '.join(command)}\n")
            out.flush()
            result = subprocess.run(command, cwd=layout.cache, env=env, stdout=out, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise HarnessError(
                f"building {LOCAL_PATH_MODULE}@{LOCAL_PATH_VERSION} failed", hint=f"full log: {log}", log_tail=tail
            )
        shutil.move(str(Path(gobin) / PROVISIONER_BINARY), layout.binary(PROVISIONER_BINARY))
    _stamp(layout).write_text(LOCAL_PATH_VERSION)
    report(f"built {PROVISIONER_BINARY} {LOCAL_PATH_VERSION} in {time.monotonic() - started:.0f}s")
    return [PROVISIONER_BINARY]


def helper_archive(layout: Layout, report: Report) -> Path:
    """A docker-archive of the helper image: busybox-static with a link per applet, so the
    provisioner's `/bin/sh /script/setup` and the scripts' commands all resolve."""
    from .images import _run, podman_env

    busybox = shutil.which("busybox") or "/bin/busybox"
    version = subprocess.run([busybox], capture_output=True, text=True).stdout.split("\n", 1)[0]
    archive = layout.images / "local-path-helper.tar"
    stamp = archive.with_suffix(".version")
    if archive.exists() and stamp.exists() and stamp.read_text() == version:
        return archive
    layout.images.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        with tarfile.open(rootfs, "w") as tar:
            for folder in ("bin", "tmp", "script"):
                info = tarfile.TarInfo(folder)
                info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
                tar.addfile(info)
            info = tar.gettarinfo(busybox, arcname="bin/busybox")
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with open(busybox, "rb") as data:
                tar.addfile(info, data)
            for applet in applets:
                if applet == "busybox":
                    continue
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        env = podman_env(layout)
        _run(
            ["podman", "import", "--change", "ENV PATH=/bin", "--change", 'CMD ["/bin/sh"]', str(rootfs), HELPER_IMAGE],
            "podman import of the local-path helper image",
            env,
        )
        partial = archive.with_suffix(".partial")
        _run(
            ["podman", "save", "--format", "docker-archive", "-o", str(partial), HELPER_IMAGE],
            "podman save of the local-path helper image",
            env,
        )
        partial.rename(archive)
    stamp.write_text(version)
    report(f"built the local-path helper image in {time.monotonic() - started:.1f}s")
    return archive


# -- start -------------------------------------------------------------------------


def prepare_host(layout: Layout) -> None:
    """The volumes' folders, and the bind mount that makes them a shared mount (helper pods
    mount with Bidirectional propagation, which containerd allows only on a shared mount)."""
    root = storage_root(layout)
    for folder in (rwo_root(layout), rwx_root(layout)):
        folder.mkdir(parents=True, exist_ok=True)
    mounted = any(line.split()[4] == str(root) for line in Path("/proc/self/mountinfo").read_text().splitlines())
    if not mounted:
        _host(["mount", "--bind", str(root), str(root)])
    _host(["mount", "--make-shared", str(root)])


def _host(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise HarnessError(f"`{' '.join(command)}` failed: {result.stderr.strip()}", hint="the harness needs root")
