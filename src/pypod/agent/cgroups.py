"""cgroup v1, v2 and hybrid hierarchies as data: which folders hold this process's limits,
and what their files say. Pure: text in, values out; reading the files is resources.py's job.

The rules are the kernel's (Documentation/admin-guide/cgroup-v1/, cgroup-v2.rst):
- ``/proc/self/cgroup`` has ``ID:CONTROLLERS:PATH`` per hierarchy; v2 is ``0::PATH``.
- A cgroup filesystem mounted with ROOT r at point m shows cgroup ``r/x`` at ``m/x``; cgroups
  above r (the pod's, inside a cgroup namespace or a container's bind mount) are not visible.
- A controller bound to a v1 hierarchy is not available in v2 (hybrid: v1 for cpu and
  memory, an empty v2 at /sys/fs/cgroup/unified).
- v2 ``cpu.max`` is ``QUOTA PERIOD`` or ``max PERIOD``; v1 ``cpu.cfs_quota_us`` is -1 (or any
  value <= 0) for no limit. A memory limit at or above the node's RAM is no limit: "max" in
  v2, and in v1 PAGE_COUNTER_MAX in bytes (9223372036854771712 on 4 KiB pages) or other
  page-rounded values near 2**63.
Standard library only; runs on Python >= 3.8.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from .mounts import Mount

# Beyond any real RAM: the limit to compare with when the node's MemTotal is unknown.
UNLIMITED_FLOOR = 2**60


@dataclass(frozen=True)
class ProcCgroup:
    """One line of /proc/self/cgroup."""

    hierarchy: int
    controllers: tuple[str, ...]
    path: str


@dataclass(frozen=True)
class CgroupMount:
    version: int  # 1 or 2
    controllers: tuple[str, ...]  # v1: those bound to it; v2: () (see cgroup.controllers)
    root: str
    mount_point: str


@dataclass(frozen=True)
class Hierarchy:
    """Where one controller's files are for this process: its own folder first, then every
    parent visible in this mount namespace, up to the mount point."""

    version: int
    folders: tuple[str, ...]

    @property
    def leaf(self) -> str:
        return self.folders[0]


def parse_proc_cgroup(text: str) -> list[ProcCgroup]:
    entries = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        try:
            hierarchy = int(parts[0])
        except ValueError:
            continue
        controllers = tuple(c for c in parts[1].split(",") if c)
        entries.append(ProcCgroup(hierarchy, controllers, parts[2]))
    return entries


def cgroup_mounts(mounts: list[Mount]) -> list[CgroupMount]:
    found = []
    for mount in mounts:
        if mount.fstype == "cgroup2":
            found.append(CgroupMount(2, (), mount.root, mount.mount_point))
        elif mount.fstype == "cgroup":
            controllers = tuple(o for o in mount.super_options if o not in ("rw", "ro") and "=" not in o)
            named = tuple(o for o in mount.super_options if o.startswith("name="))
            found.append(CgroupMount(1, controllers + named, mount.root, mount.mount_point))
    return found


def folders_for(mount: CgroupMount, path: str) -> tuple[str, ...] | None:
    """The folders of cgroup `path` and its visible parents under `mount`, or None when the
    cgroup is outside what this mount shows (e.g. `/../sibling` from a cgroup namespace)."""
    if not path.startswith("/") or ".." in path.split("/"):
        return None
    root = mount.root.rstrip("/")
    if root and path != root and not path.startswith(root + "/"):
        return None
    relative = path[len(root) :].strip("/")
    parts = [p for p in relative.split("/") if p]
    folders = []
    for depth in range(len(parts), -1, -1):
        folders.append(posixpath.join(mount.mount_point, *parts[:depth]))
    return tuple(folders)


def find_hierarchy(controller: str, mounts: list[CgroupMount], cgroups: list[ProcCgroup]) -> Hierarchy | None:
    """The hierarchy holding `controller` for this process: its v1 hierarchy when the
    controller is bound to one (v1 and hybrid), else the v2 one (whether the controller is
    enabled there is told by the files present: cpu.max, memory.max)."""
    for entry in cgroups:
        if entry.hierarchy == 0 or controller not in entry.controllers:
            continue
        for mount in mounts:
            if mount.version == 1 and controller in mount.controllers:
                folders = folders_for(mount, entry.path)
                if folders:
                    return Hierarchy(1, folders)
    for entry in cgroups:
        if entry.hierarchy != 0:
            continue
        for mount in mounts:
            if mount.version == 2:
                folders = folders_for(mount, entry.path)
                if folders:
                    return Hierarchy(2, folders)
    return None


def layout_name(mounts: list[CgroupMount], cgroups: list[ProcCgroup]) -> str:
    """v1, v2, hybrid (v1 controllers beside a v2 mount) or none."""
    v1 = any(m.version == 1 and not all(c.startswith("name=") for c in m.controllers) for m in mounts)
    v2 = any(m.version == 2 for m in mounts) and any(c.hierarchy == 0 for c in cgroups)
    if v1 and v2:
        return "hybrid"
    return "v1" if v1 else "v2" if v2 else "none"


# -- the files' contents -------------------------------------------------------------------------
def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def parse_cpu_max(text: str | None) -> tuple[int, int] | None:
    """v2 cpu.max: (quota, period) in microseconds, or None for "max" (no limit)."""
    if not text:
        return None
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    quota = _int(parts[0])
    period = _int(parts[1]) if len(parts) > 1 else 100000
    if quota is None or period is None or quota <= 0 or period <= 0:
        return None
    return quota, period


def parse_cfs(quota_text: str | None, period_text: str | None) -> tuple[int, int] | None:
    """v1 cpu.cfs_quota_us and cpu.cfs_period_us: (quota, period), or None for no limit (<= 0)."""
    quota, period = _int(quota_text), _int(period_text)
    if quota is None or quota <= 0:
        return None
    return quota, (period if period and period > 0 else 100000)


def quota_cores(quota: tuple[int, int]) -> float:
    return quota[0] / quota[1]


def quota_ceiling(quota: tuple[int, int]) -> int:
    """Whole CPUs that a quota lets run at once: rounded up, at least 1 (exact integer maths)."""
    return max(1, -(-quota[0] // quota[1]))


def tightest_quota(quotas: list[tuple[int, int] | None]) -> tuple[int, int] | None:
    """The lowest quota among a cgroup and its parents (each limits all below it)."""
    real = [q for q in quotas if q is not None]
    return min(real, key=lambda q: q[0] / q[1]) if real else None


def parse_cpu_list(text: str | None) -> frozenset[int] | None:
    """A cpuset list such as "0-3,8,10-11"; None when empty or unreadable."""
    if text is None or not text.strip():
        return None
    cpus = set()
    for part in text.strip().split(","):
        first, _, last = part.partition("-")
        try:
            low = int(first)
            high = int(last) if last else low
        except ValueError:
            return None
        cpus.update(range(low, high + 1))
    return frozenset(cpus)


def parse_memory_limit(text: str | None, mem_total: int | None) -> int | None:
    """A memory limit in bytes, or None for no limit: "max", or any value at or above the
    node's RAM (the v1 "unlimited" sentinels are all near 2**63)."""
    if text is None or text.strip() in ("", "max"):
        return None
    value = _int(text)
    if value is None or value <= 0:
        return None
    ceiling = mem_total if mem_total else UNLIMITED_FLOOR
    return None if value >= ceiling else value


def tightest_limit(limits: list[int | None]) -> int | None:
    real = [v for v in limits if v is not None]
    return min(real) if real else None


def parse_keyed(text: str | None) -> dict[str, int]:
    """Flat keyed files: memory.stat, cpu.stat ("key value" per line)."""
    values = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            number = _int(parts[1])
            if number is not None:
                values[parts[0]] = number
    return values


def working_set(usage: int | None, stat: dict[str, int], version: int) -> int | None:
    """Memory that counts toward an OOM kill: usage minus inactive page cache, as kubelet
    (cAdvisor) computes it: v2 inactive_file, v1 total_inactive_file (this cgroup and below)."""
    if usage is None:
        return None
    key = "inactive_file" if version == 2 else "total_inactive_file"
    inactive = stat.get(key, stat.get("inactive_file", 0))
    return max(0, usage - inactive)
