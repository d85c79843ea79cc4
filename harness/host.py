"""What the harness changes on the machine itself: the pod bridge, one iptables
rule, pod mounts, network namespaces and cgroups; and how it undoes each.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from .errors import HarnessError
from .layout import BRIDGE, BRIDGE_IP, POD_CIDR

# Pod traffic may go to the bridge (other pods) and to this machine (the apiserver),
# nowhere else. The bridge plugin re-enables ip_forward, so this rule is what holds.
DROP_RULE = ["FORWARD", "-s", POD_CIDR, "!", "-o", BRIDGE, "-j", "DROP"]


def _run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise HarnessError(f"`{' '.join(cmd)}` failed: {result.stderr.strip()}", hint="the harness needs root")
    return result


def bridge_exists() -> bool:
    return Path(f"/sys/class/net/{BRIDGE}").exists()


def create_bridge() -> None:
    """The pod bridge, made before the apiserver so it can bind and advertise its IP."""
    if not bridge_exists():
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    addresses = _run(["ip", "-o", "-4", "addr", "show", "dev", BRIDGE]).stdout
    if f"{BRIDGE_IP}/" not in addresses:
        _run(["ip", "addr", "add", f"{BRIDGE_IP}/16", "dev", BRIDGE])
    _run(["ip", "link", "set", BRIDGE, "up"])


def delete_bridge() -> None:
    if bridge_exists():
        _run(["ip", "link", "delete", BRIDGE], check=False)


def add_drop_rule() -> None:
    if _run(["iptables", "-C", *DROP_RULE], check=False).returncode != 0:
        _run(["iptables", "-I", *DROP_RULE])


def remove_drop_rule() -> None:
    while _run(["iptables", "-C", *DROP_RULE], check=False).returncode == 0:
        _run(["iptables", "-D", *DROP_RULE], check=False)


def drop_rule_present() -> bool:
    return _run(["iptables", "-C", *DROP_RULE], check=False).returncode == 0


# Chains the kubelet itself creates (kube-proxy --cleanup removes kube-proxy's own).
KUBELET_CHAINS = ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT")


def remove_kubelet_chains() -> None:
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            listing = _run([tool, "-t", table, "-S"], check=False).stdout.splitlines()
            for rule in listing:
                parts = rule.split()
                if parts[:1] == ["-A"] and any(f"-j {c}" in rule for c in KUBELET_CHAINS):
                    _run([tool, "-t", table, "-D", *parts[1:]], check=False)
            for chain in KUBELET_CHAINS:
                if f"-N {chain}" in listing:
                    _run([tool, "-t", table, "-F", chain], check=False)
                    _run([tool, "-t", table, "-X", chain], check=False)


def mounts_under(folder: Path) -> list[str]:
    """Mount points below `folder`, deepest first (the order to unmount them in)."""
    prefix = str(folder.resolve()) + "/"
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if point.startswith(prefix):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def unmount_all_under(folder: Path) -> None:
    for point in mounts_under(folder):
        _run(["umount", "-l", point], check=False)


def _pids_in_cgroup_tree(root: Path) -> set[int]:
    pids: set[int] = set()
    if not root.exists():
        return pids
    for procs in root.rglob("cgroup.procs"):
        try:
            pids.update(int(p) for p in procs.read_text().split())
        except OSError:
            continue
    return pids


def kubepods_cgroups() -> list[Path]:
    """Every cgroup hierarchy's `kubepods` folder (cgroup v1 has one per controller)."""
    base = Path("/sys/fs/cgroup")
    candidates = [base / "kubepods", *(d / "kubepods" for d in base.iterdir() if d.is_dir())]
    return [c for c in candidates if c.is_dir()]


def kill_pod_processes() -> int:
    """SIGKILL every process the kubelet placed in a pod cgroup; returns how many."""
    pids: set[int] = set()
    for root in kubepods_cgroups():
        pids |= _pids_in_cgroup_tree(root)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def remove_kubepods_cgroups() -> None:
    for root in kubepods_cgroups():
        # Children before parents; a cgroup with live tasks refuses and stays.
        for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()


def kill_shims(containerd_socket: Path) -> int:
    """containerd's shims re-parent themselves away from containerd; find ours by socket."""
    count = 0
    needle = str(containerd_socket).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in cmdline and needle in cmdline:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                count += 1
            except ProcessLookupError:
                pass
    return count


def remove_netns(netns_dir: Path) -> None:
    if not netns_dir.exists():
        return
    for ns in netns_dir.iterdir():
        _run(["umount", "-l", str(ns)], check=False)
        with contextlib.suppress(OSError):
            ns.unlink()


def wait_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.05)


def make_mount_points(paths: list[Path], record: Path) -> None:
    """Create the folders among `paths` (and their parents) that do not exist, noting
    each in `record` so that `remove_mount_points` takes away exactly those."""
    created = json.loads(record.read_text()) if record.exists() else []
    for path in paths:
        missing = [p for p in (path, *path.parents) if not p.exists()]
        for folder in reversed(missing):
            folder.mkdir()
            created.append(str(folder))
    record.write_text(json.dumps(created))


def remove_mount_points(record: Path) -> None:
    if not record.exists():
        return
    for folder in sorted(json.loads(record.read_text()), key=lambda p: p.count("/"), reverse=True):
        with contextlib.suppress(OSError):  # not empty: something else put files there
            Path(folder).rmdir()
    record.unlink()
