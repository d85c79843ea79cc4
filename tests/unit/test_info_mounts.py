"""`pypod info`'s disks: what each mount of a pod is (emptyDir, PVC on a device, NFS, a
node-folder PV, /dev/shm, config volumes), from mountinfo lines as kubelet and containerd
make them; and the ephemeral-storage figure measured against the downward API's limit."""

# ruff: noqa: E501  (fixture lines are kernel output and C source, kept whole)

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pypod.agent.mounts import (
    mount_of,
    parse_mountinfo,
    pod_uid_from_mounts,
    pod_volumes,
    shared_mounts_under,
    tmpfs_size,
)
from pypod.agent.resources import System, banner, collect

UID = "7d5c2a10-1f3e-4b8a-9c6d-0e1f2a3b4c5d"
PVC = "pvc-3e0c9b8a-7d6f-4e5a-9b8c-1d2e3f4a5b6c"
KUBELET = f"/var/lib/kubelet/pods/{UID}"

POD_MOUNTINFO = f"""\
1500 1400 0:320 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/var/lib/containerd/l,upperdir=/var/lib/containerd/u/fs,workdir=/w
1501 1500 0:322 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1502 1500 0:323 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
1503 1502 0:324 / /dev/pts rw,nosuid,noexec,relatime - devpts devpts rw,gid=5,mode=620,ptmxmode=666
1504 1502 0:318 / /dev/mqueue rw,nosuid,nodev,noexec,relatime - mqueue mqueue rw
1505 1500 0:325 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
1506 1505 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw
1507 1500 254:1 {KUBELET}/volumes/kubernetes.io~empty-dir/scratch /scratch rw,relatime - ext4 /dev/vdb rw
1508 1500 0:330 / /fast rw,relatime - tmpfs tmpfs rw,size=1048576k
1509 1500 8:16 / /data rw,relatime - ext4 /dev/sdb rw
1510 1500 0:52 / /shared rw,relatime - nfs4 10.0.0.5:/exports/team rw,vers=4.2,rsize=1048576
1511 1500 254:1 /opt/local-path-provisioner/{PVC}_ns_claim /models rw,relatime - ext4 /dev/vdb rw
1512 1500 254:1 {KUBELET}/volumes/kubernetes.io~configmap/settings /etc/app ro,relatime - ext4 /dev/vdb rw
1513 1500 0:331 / /var/run/secrets/kubernetes.io/serviceaccount ro,relatime - tmpfs tmpfs rw,size=7901056k
1514 1500 254:1 {KUBELET}/etc-hosts /etc/hosts rw,relatime - ext4 /dev/vdb rw
1515 1502 254:1 {KUBELET}/containers/driver/1a2b3c4d /dev/termination-log rw,relatime - ext4 /dev/vdb rw
1516 1500 254:1 /var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/abc/hostname /etc/hostname rw - ext4 /dev/vdb rw
1517 1500 254:1 /var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/abc/resolv.conf /etc/resolv.conf rw - ext4 /dev/vdb rw
1518 1502 0:317 / /dev/shm rw,nosuid,nodev,noexec,relatime - tmpfs shm rw,size=65536k
1519 1502 0:340 / /dev/shm rw,nosuid,nodev,relatime - tmpfs tmpfs rw,size=2097152k
"""


def kinds() -> dict[str, tuple[str, str, bool | None]]:
    return {v.mount.mount_point: (v.kind, v.name, v.on_node_disk) for v in pod_volumes(parse_mountinfo(POD_MOUNTINFO))}


def test_each_pod_mount_is_named_for_what_it_is():
    assert kinds() == {
        "/": ("root", "", True),
        "/scratch": ("emptyDir", "scratch", True),
        "/fast": ("tmpfs", "", False),  # an emptyDir with medium: Memory
        "/data": ("pvc", "/dev/sdb", False),  # a PVC staged on its own device
        "/shared": ("nfs", "10.0.0.5:/exports/team", False),
        "/models": ("pvc", PVC, True),  # a PV in a node folder (local-path-provisioner)
        "/etc/app": ("config", "settings", False),
        "/var/run/secrets/kubernetes.io/serviceaccount": (
            "config",
            "/var/run/secrets/kubernetes.io/serviceaccount",
            False,
        ),
        "/dev/shm": ("shm", "", False),  # the later mount over /dev/shm is the one seen
    }


def test_pod_uid_shm_size_and_the_mount_holding_a_path():
    mounts = parse_mountinfo(POD_MOUNTINFO)
    assert pod_uid_from_mounts(mounts) == UID
    shm = [m for m in mounts if m.mount_point == "/dev/shm"]
    assert [tmpfs_size(m) for m in shm] == [64 * 2**20, 2 * 2**30]
    holder = mount_of("/scratch/run/1", mounts)
    assert holder is not None and holder.mount_point == "/scratch"
    holder = mount_of("/workspace", mounts)
    assert holder is not None and holder.mount_point == "/"


def test_outside_a_pod_nothing_is_called_the_node_disk():
    text = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n30 25 0:27 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24683584k\n"
    volumes = pod_volumes(parse_mountinfo(text))
    assert [(v.kind, v.on_node_disk) for v in volumes] == [("root", None), ("shm", False)]


class SizedSystem(System):
    """The fixture tree's files, with the sizes statvfs would give on a real node."""

    SIZES: ClassVar[dict[str, tuple[int, int]]] = {
        "/": (100 * 2**30, 60 * 2**30),
        "/scratch": (100 * 2**30, 60 * 2**30),
        "/fast": (2**30, 2**30),
        "/data": (1100 * 2**30, 1000 * 2**30),
        "/shared": (10 * 2**40, 5 * 2**40),
        "/models": (100 * 2**30, 60 * 2**30),
        "/dev/shm": (2 * 2**30, 2 * 2**30),
    }

    def statvfs(self, path: str) -> tuple[int, int] | None:
        return self.SIZES.get(path)


def test_disks_shm_and_ephemeral_storage_measured_against_the_limit(tmp_path: Path):
    root = tmp_path
    files = {
        "/proc/self/mountinfo": POD_MOUNTINFO,
        "/proc/self/cgroup": "0::/\n",
        "/proc/meminfo": "MemTotal: 16384000 kB\n",
        "/sys/devices/system/cpu/online": "0-3\n",
        "/etc/hostname": "run-abc-xyz\n",
    }
    for path, text in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    for folder in ("scratch", "fast", "data", "shared", "models", "dev/shm", "workspace"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "scratch" / "a.bin").write_bytes(b"x" * 300_000)
    (root / "scratch" / "sub").mkdir()
    (root / "scratch" / "sub" / "b.bin").write_bytes(b"y" * 100_000)
    environ = {
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "POD_EPHEMERAL_STORAGE_LIMIT_BYTES": str(2 * 2**30),
        "POD_EPHEMERAL_STORAGE_REQUEST_BYTES": str(2**30),
        "POD_IMAGE": "registry/app:tag",
    }
    system = SizedSystem(str(root), environ=environ, affinity=4, nvml_library=str(root / "none.so"), cwd="/workspace")
    info = collect(system, sample_s=0)
    paths = {d.path: d.kind for d in info.disks}
    assert paths == {
        "/": "root",
        "/scratch": "emptyDir",
        "/fast": "tmpfs",
        "/data": "pvc",
        "/shared": "nfs",
        "/models": "pvc",
    }
    assert {d.path: d.free for d in info.disks} == {p: s[1] for p, s in SizedSystem.SIZES.items() if p != "/dev/shm"}
    assert info.shm is not None and (info.shm.total, info.shm.small) == (2 * 2**30, False)
    assert (info.workdir, info.workdir_mount) == ("/workspace", "/")
    eph = info.ephemeral
    assert (eph.limit, eph.request, eph.limit_source) == (2 * 2**30, 2**30, "downward API")
    assert eph.measured == ["/scratch"] and eph.complete
    assert 400_000 <= eph.usage < 400_000 + 64 * 1024  # allocated blocks of the two files, and the folder
    assert "writable layer" in eph.note
    assert info.identity.pod_name == "run-abc-xyz" and info.identity.sources["pod_name"] == "hostname"
    assert info.identity.image == "registry/app:tag"
    line = banner(info)
    assert line == (
        "pod: 4 CPUs (node 4, no limit) · no memory limit (node 15.6 GiB) · no GPU · /workspace 60 GiB free"
        " · /scratch 60 GiB free · /data 1000 GiB free · /shared 5 TiB free · /models 60 GiB free · /dev/shm 2 GiB"
    )


# Recorded in a pod on the harness's node, whose kubelet runs with --root-dir outside /var/lib/kubelet.
HARNESS_POD = """\
394 249 0:147 / / rw,relatime - overlay overlay rw,lowerdir=/root/.local/state/pypod-harness/containerd/root/io.containerd.snapshotter.v1.overlayfs/snapshots/10/fs,upperdir=/root/.local/state/pypod-harness/containerd/root/io.containerd.snapshotter.v1.overlayfs/snapshots/102/fs,workdir=/root/.local/state/pypod-harness/containerd/root/io.containerd.snapshotter.v1.overlayfs/snapshots/102/work
396 394 0:150 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
400 399 0:152 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,mode=755
401 400 0:29 /kubepods/pod693735e4-3d5c-41fe-9a13-e0cf3cb0a79c/94c17562244af8cd14d6538ba6e8a83cb43903df96100dda7c87ec5c559b5e80 /sys/fs/cgroup/cpu ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu
422 394 254:0 /root/.local/state/pypod-harness/kubelet/pods/693735e4-3d5c-41fe-9a13-e0cf3cb0a79c/volumes/kubernetes.io~empty-dir/scratch /scratch rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
423 396 0:134 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=262144k,noswap
424 394 254:0 /root/.local/state/pypod-harness/kubelet/pods/693735e4-3d5c-41fe-9a13-e0cf3cb0a79c/etc-hosts /etc/hosts rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
425 396 254:0 /root/.local/state/pypod-harness/kubelet/pods/693735e4-3d5c-41fe-9a13-e0cf3cb0a79c/containers/driver/37661487 /dev/termination-log rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
426 394 254:0 /root/.local/state/pypod-harness/containerd/root/io.containerd.grpc.v1.cri/sandboxes/2c543db3/hostname /etc/hostname rw,relatime - ext4 /dev/vda rw,discard
428 394 0:135 / /run/secrets/kubernetes.io/serviceaccount ro,relatime - tmpfs tmpfs rw,size=307200k,noswap
255 395 0:150 /null /proc/interrupts rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
"""


def test_a_kubelet_root_dir_elsewhere_is_recognised_too():
    mounts = parse_mountinfo(HARNESS_POD)
    assert pod_uid_from_mounts(mounts) == "693735e4-3d5c-41fe-9a13-e0cf3cb0a79c"
    assert {v.mount.mount_point: (v.kind, v.name, v.on_node_disk) for v in pod_volumes(mounts)} == {
        "/": ("root", "", True),
        "/scratch": ("emptyDir", "scratch", True),
        "/dev/shm": ("shm", "", False),
        "/run/secrets/kubernetes.io/serviceaccount": ("config", "/run/secrets/kubernetes.io/serviceaccount", False),
    }


def test_the_network_mounts_that_hold_part_of_a_folder() -> None:
    """A kept sync agent trusts its watches only where no other machine writes (handoff.py)."""
    mounts = parse_mountinfo(POD_MOUNTINFO)
    points = {
        path: [m.mount_point for m in shared_mounts_under(mounts, path)]
        for path in ("/", "/workspace", "/shared/x", "/scratch")
    }
    assert points == {"/": ["/shared"], "/workspace": [], "/shared/x": ["/shared"], "/scratch": []}
    fuse = parse_mountinfo(POD_MOUNTINFO + "1520 1500 0:341 / /workspace/data rw - fuse.gcsfuse bucket rw\n")
    assert [m.mount_point for m in shared_mounts_under(fuse, "/workspace")] == ["/workspace/data"]
