"""`/proc/self/mountinfo` as data, and what each mount is to a pod. Pure: text in, values out.

The format is the kernel's (Documentation/filesystems/proc.rst, "3.5 /proc/<pid>/mountinfo"):
``ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS``,
with space, tab, newline and backslash in paths written as octal escapes (``\\040``).

Inside a pod, the ROOT of a bind mount is the path on the node, so kubelet's volume folders
(``<kubelet root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>``; the root is
/var/lib/kubelet unless kubelet's --root-dir says otherwise) say what a mount is.
Standard library only; runs on Python >= 3.8.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SHM = "/dev/shm"

# Filesystems that hold no user data; their mounts are not disks.
_PSEUDO = "proc sysfs cgroup cgroup2 devpts devtmpfs mqueue securityfs debugfs tracefs bpf pstore hugetlbfs fusectl"
PSEUDO_FILESYSTEMS = frozenset((_PSEUDO + " configfs binfmt_misc autofs rpc_pipefs nsfs efivarfs selinuxfs").split(" "))
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "ceph", "glusterfs", "lustre", "9p", "fuse.sshfs")
# Files kubelet and the runtime bind into every container: not volumes.
KUBELET_FILES = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/dev/termination-log")
_OCTAL = re.compile(r"\\([0-7]{3})")
_VOLUME = re.compile(r"/pods/([0-9a-f-]{36})/volumes/kubernetes\.io~([a-z-]+)/([^/]+)")
_POD_DIR = re.compile(r"/pods/([0-9a-f-]{36})/(?:etc-hosts$|volumes/|containers/|plugins/)")
_PVC_NAME = re.compile(r"(pvc-[0-9a-f-]{36})")
CONFIG_PLUGINS = ("configmap", "secret", "projected", "downward-api")


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo."""

    mount_id: int
    parent_id: int
    device: str  # "major:minor"
    root: str  # the path inside the source filesystem that is mounted here
    mount_point: str
    options: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]


@dataclass(frozen=True)
class Volume:
    """What a mount is to the pod: its kind, and the name kubelet gave it."""

    mount: Mount
    kind: str  # root, shm, emptyDir, pvc, nfs, network, hostPath, tmpfs, disk, config
    name: str = ""
    on_node_disk: bool | None = None  # its bytes live on the node's own disk (None: cannot tell)


def unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Every well-formed line, in order (later mounts over the same point hide earlier ones)."""
    mounts = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        if not sep:
            continue
        fields, rest = head.split(), tail.split()
        if len(fields) < 6 or len(rest) < 2:
            continue
        try:
            mount_id, parent_id = int(fields[0]), int(fields[1])
        except ValueError:
            continue
        mounts.append(
            Mount(
                mount_id=mount_id,
                parent_id=parent_id,
                device=fields[2],
                root=unescape(fields[3]),
                mount_point=unescape(fields[4]),
                options=tuple(fields[5].split(",")),
                fstype=rest[0],
                source=unescape(rest[1]),
                super_options=tuple(rest[2].split(",")) if len(rest) > 2 else (),
            )
        )
    return mounts


def visible_mounts(mounts: list[Mount]) -> list[Mount]:
    """One mount per mount point: the last one mounted there, which is the one seen."""
    by_point = {}
    for mount in mounts:
        by_point.pop(mount.mount_point, None)
        by_point[mount.mount_point] = mount
    return list(by_point.values())


def pod_uid_from_mounts(mounts: list[Mount]) -> str:
    """The pod's UID from kubelet's folder names in mount roots ("" outside a pod)."""
    for mount in mounts:
        match = _POD_DIR.search(mount.root)
        if match:
            return match.group(1)
    return ""


def node_disk_devices(mounts: list[Mount]) -> frozenset:
    """Devices that hold kubelet's own folders: the node's disk. Every pod has some (its
    /etc/hosts comes from <kubelet root>/pods/<uid>/etc-hosts)."""
    return frozenset(m.device for m in mounts if _POD_DIR.search(m.root))


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def shared_mounts_under(mounts: list[Mount], folder: str) -> list[Mount]:
    """The network and FUSE mounts that hold any of `folder` (the one it lies on, or one
    below it): others write there unseen by this kernel's inotify."""
    on = mount_of(folder, mounts)
    parts = [m for m in visible_mounts(mounts) if m is on or _under(m.mount_point, folder)]
    return [m for m in parts if m.fstype in NETWORK_FILESYSTEMS or m.fstype.startswith("fuse")]


def classify(mount: Mount, node_devices: frozenset) -> Volume | None:
    """What `mount` is to the pod, or None for mounts that hold no data of the pod's."""
    point, root, fstype = mount.mount_point, mount.root, mount.fstype
    on_node = (mount.device in node_devices) if node_devices else None
    if point == "/":
        # A container's root is an overlay whose writable layer lives on the node's disk.
        return Volume(mount, "root", "", True if fstype == "overlay" and node_devices else on_node)
    if point == SHM:
        return Volume(mount, "shm", "", False if fstype == "tmpfs" else on_node)
    if fstype in PSEUDO_FILESYSTEMS or point in KUBELET_FILES:
        return None
    if any(_under(point, p) for p in ("/proc", "/sys", "/dev")):
        return None
    volume = _VOLUME.search(root)
    if volume:
        plugin, name = volume.group(2), volume.group(3)
        if plugin in CONFIG_PLUGINS:
            return Volume(mount, "config", name, False)
        if plugin == "empty-dir":
            return Volume(mount, "emptyDir", name, on_node)
        if plugin in ("csi", "local-volume"):
            return Volume(mount, "pvc", name, on_node)
        if plugin == "nfs":
            return Volume(mount, "nfs", name, False)
        return Volume(mount, plugin, name, on_node)
    if _POD_DIR.search(root):
        return None  # kubelet's other files (termination logs, plugin sockets)
    if fstype.startswith("nfs"):
        return Volume(mount, "nfs", mount.source, False)
    if fstype in NETWORK_FILESYSTEMS or fstype.startswith("fuse."):
        return Volume(mount, "network", mount.source, False)
    if fstype == "tmpfs":
        # Secrets and projected tokens are read-only tmpfs mounts; an emptyDir with
        # medium: Memory is a writable one, and what it holds counts as the pod's memory.
        if "ro" in mount.options:
            return Volume(mount, "config", point, False)
        return Volume(mount, "tmpfs", "", False)
    pvc = _PVC_NAME.search(root)
    if pvc:
        # A PersistentVolume backed by a node folder (hostPath, local-path-provisioner).
        return Volume(mount, "pvc", pvc.group(1), on_node)
    if root != "/":
        return Volume(mount, "hostPath", root, on_node)
    if mount.source.startswith("/dev/"):
        # A whole block filesystem: a CSI volume staged for this pod, or a disk of the host.
        return Volume(mount, "pvc" if node_devices else "disk", mount.source, on_node)
    return Volume(mount, "disk", mount.source, on_node)


def pod_volumes(mounts: list[Mount], keep: tuple[str, ...] = ()) -> list[Volume]:
    """Every mount that holds data (root, shm, volumes), in mount order. Outside a pod, as df
    does: each filesystem once, at its first mount, without bind mounts and tmpfs (a host
    has dozens, from container runtimes and kubelets), except the mount points in `keep`."""
    visible = visible_mounts(mounts)
    node_devices = node_disk_devices(visible)
    volumes, devices = [], set()
    for mount in visible:
        volume = classify(mount, node_devices)
        if volume is None:
            continue
        outside_pod = not node_devices and volume.kind not in ("root", "shm") and mount.mount_point not in keep
        hidden = volume.kind in ("tmpfs", "hostPath", "config") or mount.fstype == "overlay" or mount.device in devices
        if outside_pod and hidden:
            continue
        devices.add(mount.device)
        volumes.append(volume)
    return volumes


def mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount that holds `path` (an absolute, normalised path): the longest mount point above it."""
    best = None
    for mount in visible_mounts(mounts):
        if _under(path, mount.mount_point) and (best is None or len(mount.mount_point) > len(best.mount_point)):
            best = mount
    return best


def tmpfs_size(mount: Mount) -> int | None:
    """A tmpfs's size= option in bytes (k, m, g suffixes; % of RAM is not resolved here)."""
    for option in mount.super_options:
        if option.startswith("size="):
            value = option[5:]
            scale = {"k": 1024, "m": 1024**2, "g": 1024**3}.get(value[-1:].lower())
            try:
                return int(value[:-1]) * scale if scale else int(value)
            except ValueError:
                return None
    return None
