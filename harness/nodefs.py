"""The node's own filesystem: the kubelet's and containerd's state on a loop-mounted ext4
image, so the node reports ephemeral-storage.

Why: the kubelet learns its disk from cAdvisor, which matches the device of the kubelet's
root folder (here /dev/vda, 254:0) against /proc/diskstats. This machine's diskstats lists
no vda (only loop devices), so cAdvisor logs "cannot find filesystem info for device
/dev/vda", the node reports no ephemeral-storage capacity, and every pod that requests
some (julia_pod's template asks for 2Gi) stays Unschedulable. A loop device is listed
there: an ext4 image mounted at state/node-fs, with its kubelet/ and containerd/ folders
bind-mounted where the kubelet and containerd keep their state, gives cAdvisor a device
it can measure. (cAdvisor skips the bind mounts, which share the loop device's source,
and registers the loop mount itself.) The kubelet then also needs
localStorageCapacityIsolation on (components.kubelet_config), or it reports none anyway.

The image is sparse and kept across `up`s (containerd's image store lives in it); each
`up` empties the kubelet's state and containerd's runtime state inside it, as
_reset_state does for the folders on the machine's disk.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import HarnessError
from .layout import Layout

DEFAULT_SIZE_GIB = 40
# PYPOD_HARNESS_NODE_FS=off keeps the node's state on the machine's disk, as before (and
# without ephemeral-storage): a way back should a machine refuse loop devices.
SWITCH = "PYPOD_HARNESS_NODE_FS"


def enabled() -> bool:
    return os.environ.get(SWITCH, "on").lower() not in ("off", "0", "false", "no")


@dataclass(frozen=True)
class NodeFs:
    image: Path  # the ext4 image file (sparse)
    mount: Path  # where it is loop-mounted
    binds: tuple[tuple[Path, Path], ...]  # (folder inside the mount, where it is bind-mounted)


def node_fs(layout: Layout) -> NodeFs:
    mount = layout.state / "node-fs"
    return NodeFs(
        image=layout.state / "node-fs.img",
        mount=mount,
        binds=(
            (mount / "kubelet", layout.state / "kubelet"),
            (mount / "containerd", layout.state / "containerd"),
        ),
    )


def size_gib() -> int:
    return int(os.environ.get("PYPOD_HARNESS_NODE_FS_GIB", DEFAULT_SIZE_GIB))


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise HarnessError(f"`{' '.join(command)}` failed: {result.stderr.strip()}", hint="the harness needs root")


def _mounted(point: Path) -> bool:
    target = str(point)
    return any(line.split()[4] == target for line in Path("/proc/self/mountinfo").read_text().splitlines())


def mount_node_fs(layout: Layout, gib: int | None = None) -> NodeFs:
    """Make (once), mount and bind the node's filesystem; empty the state of the last cluster.
    Call after _reset_state (which unmounts everything under the state folder) and before
    containerd and the kubelet start."""
    fs = node_fs(layout)
    if not enabled():
        return fs
    if not fs.image.exists():
        fs.image.parent.mkdir(parents=True, exist_ok=True)
        with open(fs.image, "wb") as image:
            image.truncate((gib or size_gib()) << 30)
        # lazy_itable_init: the inode tables are written in the background, not now.
        _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1", str(fs.image)])
    fs.mount.mkdir(parents=True, exist_ok=True)
    if not _mounted(fs.mount):
        _run(["mount", "-o", "loop", str(fs.image), str(fs.mount)])
    # A fresh node each `up`, but for containerd's image store (its "root").
    shutil.rmtree(fs.mount / "kubelet", ignore_errors=True)
    shutil.rmtree(fs.mount / "containerd" / "state", ignore_errors=True)
    for inside, outside in fs.binds:
        inside.mkdir(parents=True, exist_ok=True)
        outside.mkdir(parents=True, exist_ok=True)
        if not _mounted(outside):
            _run(["mount", "--bind", str(inside), str(outside)])
    return fs


def loop_device(fs: NodeFs) -> str | None:
    """The loop device the image is mounted from (what cAdvisor will find), if mounted."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(fs.mount):
            return line.split(" - ", 1)[1].split()[1]
    return None
