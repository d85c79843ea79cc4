"""`pypod info`: what this process really has (CPU, memory, GPUs, disks, /dev/shm) next to
what the node has, and who it is (pod, namespace, node). Standard library only; runs on
Python >= 3.8, so it works in any image with python3 (shipped in the agent's archive).

Every figure says whose it is (`node_*` fields are the node's, the rest the pod's) and where
it came from (`*_source`): the cgroup files, the downward API environment that pypod puts in
its pods (the only way to see pod-level limits from inside a cgroup namespace), or the node.

The parsers are pure (cgroups.py, mounts.py, gpus.py); `System` is the only part that reads
files, and takes a root folder so tests can point it at fixture trees.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field

from . import cgroups, mounts
from .gpus import Gpu, Gpus, MigDevice, find_gpus
from .podvars import DOWNWARD_IDENTITY, DOWNWARD_RESOURCES, IMAGE_ENV, THREAD_VARS

SCHEMA = 1
SHM_DEFAULT = 64 * 1024 * 1024  # the container runtimes' /dev/shm when nothing else is asked for
DU_BUDGET_S = 0.5  # measuring emptyDirs stops here and says the figure is a lower bound
CPU_SAMPLE_S = 0.05

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


# -- the answer -----------------------------------------------------------------------------------
@dataclass
class Cpu:
    node: int  # the node's online CPUs
    effective: int  # CPUs this process can use at once: min(affinity, quota rounded up, cpuset), >= 1
    effective_by: str  # what set it: quota, affinity, cpuset, node
    limit: float | None = None  # the pod's CPU limit in cores (None: no limit)
    limit_source: str = ""
    request: float | None = None
    affinity: int | None = None  # sched_getaffinity
    cpuset: int | None = None
    usage: float | None = None  # cores the pod uses now (sampled), if measured
    node_usage: float | None = None  # cores the node uses now


@dataclass
class Memory:
    node_total: int  # MemTotal
    node_available: int | None = None  # MemAvailable
    limit: int | None = None  # bytes (None: no limit)
    limit_source: str = ""
    request: int | None = None
    high: int | None = None  # v2 memory.high, where set (throttling starts there)
    usage: int | None = None  # working set: what counts toward an OOM kill
    usage_source: str = ""


@dataclass
class Disk:
    path: str  # mount point
    kind: str  # root, emptyDir, pvc, nfs, network, hostPath, tmpfs, disk
    name: str = ""
    fstype: str = ""
    source: str = ""
    total: int | None = None
    free: int | None = None
    on_node_disk: bool | None = None


@dataclass
class Shm:
    total: int | None = None
    free: int | None = None
    small: bool = False  # the 64 MiB default: too small for PyTorch DataLoader workers, Ray, ...


@dataclass
class Ephemeral:
    """Ephemeral storage: the limit (kubelet evicts the pod past it) and what is measurable of
    its use from inside: disk-backed emptyDirs. The writable layer and logs are not visible."""

    limit: int | None = None
    limit_source: str = ""
    request: int | None = None
    usage: int | None = None  # bytes measured in emptyDirs (None: not measured)
    complete: bool = False  # False: the measure ran out of time and is a lower bound
    measured: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class Identity:
    in_pod: bool
    hostname: str = ""
    pod_name: str = ""
    namespace: str = ""
    node_name: str = ""
    pod_uid: str = ""
    image: str = ""
    uptime_s: float | None = None  # since this container's (PID namespace's) first process started
    sources: dict[str, str] = field(default_factory=dict)


@dataclass
class Info:
    """Everything `pypod info` reports. `pypod.info()` returns one; `--json` prints `to_dict()`."""

    cpu: Cpu
    memory: Memory
    gpus: Gpus
    disks: list[Disk]
    shm: Shm | None
    ephemeral: Ephemeral
    identity: Identity
    cgroup: str  # v1, v2, hybrid or none
    workdir: str = ""
    workdir_mount: str = ""  # the mount point holding the working directory
    warnings: list[str] = field(default_factory=list)
    schema: int = SCHEMA

    @property
    def threads(self) -> int:
        """The thread count to size pools with: the effective CPU count."""
        return self.cpu.effective

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict) -> Info:
        gpus = dict(data["gpus"])
        gpus["devices"] = [
            Gpu(**{**g, "mig_devices": [MigDevice(**m) for m in g.get("mig_devices", [])]}) for g in gpus["devices"]
        ]
        return cls(
            cpu=Cpu(**data["cpu"]),
            memory=Memory(**data["memory"]),
            gpus=Gpus(**gpus),
            disks=[Disk(**d) for d in data["disks"]],
            shm=Shm(**data["shm"]) if data.get("shm") else None,
            ephemeral=Ephemeral(**data["ephemeral"]),
            identity=Identity(**data["identity"]),
            cgroup=data["cgroup"],
            workdir=data.get("workdir", ""),
            workdir_mount=data.get("workdir_mount", ""),
            warnings=list(data.get("warnings", [])),
            schema=data.get("schema", SCHEMA),
        )


# -- pure decisions -------------------------------------------------------------------------------
def downward_values(environ: dict[str, str]) -> dict[str, float]:
    """The downward API's resource figures, in cores and bytes."""
    values: dict[str, float] = {}
    for key, (name, _resource, divisor) in DOWNWARD_RESOURCES.items():
        raw = environ.get(name, "").strip()
        if not raw.isdigit():
            continue
        values[key] = int(raw) / 1000 if divisor == "1m" else int(raw)
    return values


def decide_cpu(
    node: int,
    affinity: int | None,
    quota: tuple[int, int] | None,
    quota_source: str,
    cpuset: int | None,
    downward: dict[str, float],
) -> Cpu:
    """The pod's CPU limit (the lower of the cgroup quota and the downward API's; one at or
    above the node's count is none) and the effective count: the least of the node's CPUs,
    the affinity mask, the limit rounded up and the cpuset, at least 1."""
    source = quota_source if quota is not None else ""
    api = downward.get("cpu_limit")
    if api is not None and api < node:
        api_quota = (round(api * 1000), 1000)  # millicores, as the downward API gave them
        if quota is None or cgroups.quota_cores(api_quota) < cgroups.quota_cores(quota):
            quota, source = api_quota, "downward API"
    # On a tie the most specific bound is named: the pod's quota, then its cpuset, affinity, node.
    candidates = []
    if quota is not None:
        candidates.append((cgroups.quota_ceiling(quota), "quota"))
    if cpuset:
        candidates.append((cpuset, "cpuset"))
    if affinity:
        candidates.append((affinity, "affinity"))
    candidates.append((node, "node"))
    effective, by = min(candidates, key=lambda c: c[0])
    return Cpu(
        node=node,
        effective=max(1, effective),
        effective_by=by,
        limit=round(cgroups.quota_cores(quota), 3) if quota is not None else None,
        limit_source=source,
        request=downward.get("cpu_request"),
        affinity=affinity,
        cpuset=cpuset,
    )


def decide_memory_limit(
    cgroup_limit: int | None, cgroup_source: str, downward: dict[str, float], mem_total: int | None
) -> tuple[int | None, str]:
    limit, source = cgroup_limit, cgroup_source if cgroup_limit is not None else ""
    api = downward.get("memory_limit")
    if api is not None and (mem_total is None or api < mem_total) and (limit is None or api < limit):
        limit, source = int(api), "downward API"
    return limit, source


def thread_env(count: int) -> dict[str, str]:
    return {name: str(count) for name in THREAD_VARS}


# -- reading the machine --------------------------------------------------------------------------
class System:
    """The files `collect` reads, under `root` ("/" for this machine; a fixture tree in tests),
    and the calls it makes (affinity, statvfs, the clock), each replaceable."""

    def __init__(
        self,
        root: str = "/",
        environ: dict[str, str] | None = None,
        affinity: int | None = -1,
        nvml_library: str | None = None,
        cwd: str | None = None,
    ) -> None:
        self.root = root
        self.environ = dict(os.environ if environ is None else environ)
        self._affinity = affinity
        self.nvml_library = nvml_library
        self.cwd = cwd

    def path(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/")) if self.root != "/" else path

    def read(self, path: str) -> str | None:
        try:
            with open(self.path(path), encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            return None

    def affinity(self) -> int | None:
        if self._affinity != -1:
            return self._affinity
        try:
            return len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            return None

    def statvfs(self, path: str) -> tuple[int, int] | None:
        try:
            st = os.statvfs(self.path(path))
        except OSError:
            return None
        return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize

    def workdir(self) -> str:
        if self.cwd is not None:
            return self.cwd
        try:
            return os.getcwd()
        except OSError:
            return ""

    def hostname(self) -> str:
        return (self.read("/etc/hostname") or "").strip() if self.root != "/" else socket.gethostname()

    def find_gpus(self) -> Gpus:
        return find_gpus(self.environ, self.nvml_library)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _node_cpus(system: System) -> int:
    online = cgroups.parse_cpu_list(system.read("/sys/devices/system/cpu/online"))
    if online:
        return len(online)
    return os.cpu_count() or 1


def _meminfo(system: System) -> dict[str, int]:
    values = {}
    for line in (system.read("/proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    return values


class _Cgroups:
    """This process's cgroup folders, per controller."""

    def __init__(self, system: System, mount_list: list[mounts.Mount]) -> None:
        self.system = system
        self.entries = cgroups.parse_proc_cgroup(system.read("/proc/self/cgroup") or "")
        self.mounts = cgroups.cgroup_mounts(mount_list)
        self.layout = cgroups.layout_name(self.mounts, self.entries)

    def hierarchy(self, controller: str) -> cgroups.Hierarchy | None:
        return cgroups.find_hierarchy(controller, self.mounts, self.entries)

    def read(self, folder: str, name: str) -> str | None:
        return self.system.read(folder + "/" + name)

    def quota(self) -> tuple[tuple[int, int] | None, str]:
        found = self.hierarchy("cpu")
        if found is None:
            return None, ""
        if found.version == 2:
            quotas = [cgroups.parse_cpu_max(self.read(f, "cpu.max")) for f in found.folders]
            where = "cgroup v2 cpu.max"
        else:
            quotas = [
                cgroups.parse_cfs(self.read(f, "cpu.cfs_quota_us"), self.read(f, "cpu.cfs_period_us"))
                for f in found.folders
            ]
            where = "cgroup v1 cpu.cfs_quota_us"
        tightest = cgroups.tightest_quota(quotas)
        if tightest is None:
            return None, ""
        folder = found.folders[quotas.index(tightest)]
        return tightest, "%s (%s)" % (where, folder)

    def cpuset(self) -> int | None:
        found = self.hierarchy("cpuset")
        if found is None:
            return None
        effective = "cpuset.cpus.effective" if found.version == 2 else "cpuset.effective_cpus"
        names = (effective, "cpuset.cpus")
        # The effective file already intersects the parents'; fall back to the tightest list.
        for name in names:
            for folder in found.folders:
                cpus = cgroups.parse_cpu_list(self.read(folder, name))
                if cpus:
                    return len(cpus)
        return None

    def cpu_usage_ns(self) -> int | None:
        """CPU time used by this cgroup and below, in nanoseconds."""
        found = self.hierarchy("cpu")
        if found is not None and found.version == 2:
            stat = cgroups.parse_keyed(self.read(found.leaf, "cpu.stat"))
            return stat["usage_usec"] * 1000 if "usage_usec" in stat else None
        acct = self.hierarchy("cpuacct")
        if acct is None:
            return None
        text = self.read(acct.leaf, "cpuacct.usage")
        return int(text) if text and text.strip().isdigit() else None

    def memory(self, mem_total: int | None) -> tuple[int | None, str, int | None, int | None, str]:
        """(limit, its source, memory.high, working set, its source)."""
        found = self.hierarchy("memory")
        if found is None:
            return None, "", None, None, ""
        if found.version == 2:
            limits = [cgroups.parse_memory_limit(self.read(f, "memory.max"), mem_total) for f in found.folders]
            highs = [cgroups.parse_memory_limit(self.read(f, "memory.high"), mem_total) for f in found.folders]
            usage_text = self.read(found.leaf, "memory.current")
            where, high = "cgroup v2 memory.max", cgroups.tightest_limit(highs)
        else:
            texts = [self.read(f, "memory.limit_in_bytes") for f in found.folders]
            limits = [cgroups.parse_memory_limit(t, mem_total) for t in texts]
            usage_text = self.read(found.leaf, "memory.usage_in_bytes")
            where, high = "cgroup v1 memory.limit_in_bytes", None
        stat = cgroups.parse_keyed(self.read(found.leaf, "memory.stat"))
        source = ""
        limit = cgroups.tightest_limit(limits)
        if limit is not None:
            source = "%s (%s)" % (where, found.folders[limits.index(limit)])
        if found.version == 1 and "hierarchical_memory_limit" in stat:
            # The kernel's minimum over every ancestor, those above the mount point too.
            hierarchical = cgroups.parse_memory_limit(str(stat["hierarchical_memory_limit"]), mem_total)
            if hierarchical is not None and (limit is None or hierarchical < limit):
                limit, source = hierarchical, "cgroup v1 hierarchical_memory_limit (%s)" % found.leaf
        usage = None
        if usage_text is not None and usage_text.strip().isdigit():
            usage = cgroups.working_set(int(usage_text), stat, found.version)
        usage_source = "cgroup v%d %s" % (found.version, found.leaf) if usage is not None else ""
        return limit, source, high, usage, usage_source


def _node_busy_ns(system: System) -> tuple[int, int] | None:
    """(busy, total) CPU time of the node in ticks, from /proc/stat's first line."""
    first = (system.read("/proc/stat") or "").split("\n", 1)[0].split()
    if not first or first[0] != "cpu":
        return None
    ticks = [int(v) for v in first[1:] if v.isdigit()]
    if len(ticks) < 4:
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    total = sum(ticks[:8])
    return total - idle, total


def _uptime(system: System) -> float | None:
    """Seconds since PID 1 of this PID namespace (the container's first process) started."""
    stat = system.read("/proc/1/stat")
    uptime = system.read("/proc/uptime")
    if not stat or not uptime:
        return None
    try:
        fields = stat.rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of proc(5); fields[0] is field 3
        ticks_per_s = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        return max(0.0, float(uptime.split()[0]) - start_ticks / ticks_per_s)
    except (IndexError, ValueError, OSError):
        return None


def _du(path: str, deadline: float) -> tuple[int, bool]:
    """Bytes allocated under `path` (st_blocks, as du and kubelet count), and whether the walk
    finished before `deadline`. Hard links are counted once; other filesystems are not entered."""
    total, seen = 0, set()
    try:
        device = os.lstat(path).st_dev
    except OSError:
        return 0, True
    stack = [path]
    while stack:
        if time.monotonic() > deadline:
            return total, False
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_dev != device:
                continue
            if st.st_nlink > 1:
                if (st.st_ino, st.st_dev) in seen:
                    continue
                seen.add((st.st_ino, st.st_dev))
            total += st.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
    return total, True


def _identity(system: System, mount_list: list[mounts.Mount]) -> Identity:
    env = system.environ
    sources = {}
    values = {}
    for key, name in DOWNWARD_IDENTITY.items():
        if env.get(name):
            values[key], sources[key] = env[name], "downward API"
    if "pod_uid" not in values:
        uid = mounts.pod_uid_from_mounts(mount_list)
        if uid:
            values["pod_uid"], sources["pod_uid"] = uid, "kubelet folders in mountinfo"
    in_pod = bool(env.get("KUBERNETES_SERVICE_HOST") or values.get("pod_name") or values.get("pod_uid"))
    hostname = system.hostname()
    if in_pod and "namespace" not in values:
        namespace = (system.read(SERVICE_ACCOUNT_NAMESPACE) or "").strip()
        if namespace:
            values["namespace"], sources["namespace"] = namespace, "service account token"
    if in_pod and "pod_name" not in values and hostname:
        values["pod_name"], sources["pod_name"] = hostname, "hostname"
    image = env.get(IMAGE_ENV, "")
    if image:
        sources["image"] = IMAGE_ENV
    return Identity(in_pod=in_pod, hostname=hostname, image=image, uptime_s=_uptime(system), sources=sources, **values)


def collect(system: System | None = None, sample_s: float = CPU_SAMPLE_S, measure_ephemeral: bool = True) -> Info:
    """Read the machine (or `system`'s fixture tree) and decide every figure.

    `sample_s` > 0 measures current CPU usage over that many seconds (taken last, while this
    process sleeps, so its own reading does not count); 0 skips it.
    """
    system = system or System()
    warnings = []
    mount_list = mounts.parse_mountinfo(system.read("/proc/self/mountinfo") or "")
    groups = _Cgroups(system, mount_list)
    downward = downward_values(system.environ)
    meminfo = _meminfo(system)
    mem_total = meminfo.get("MemTotal")

    quota, quota_source = groups.quota()
    cpu = decide_cpu(_node_cpus(system), system.affinity(), quota, quota_source, groups.cpuset(), downward)

    limit, limit_source, high, usage, usage_source = groups.memory(mem_total)
    limit, limit_source = decide_memory_limit(limit, limit_source, downward, mem_total)
    memory = Memory(
        node_total=mem_total or 0,
        node_available=meminfo.get("MemAvailable"),
        limit=limit,
        limit_source=limit_source,
        request=int(downward["memory_request"]) if "memory_request" in downward else None,
        high=high,
        usage=usage,
        usage_source=usage_source,
    )

    workdir = system.workdir()
    holder = mounts.mount_of(os.path.normpath(workdir), mount_list) if workdir.startswith("/") else None
    disks, shm = [], None
    for volume in mounts.pod_volumes(mount_list, keep=(holder.mount_point,) if holder else ()):
        mount = volume.mount
        sizes = system.statvfs(mount.mount_point)
        total, free = sizes if sizes else (None, None)
        if volume.kind == "shm":
            total = total if total is not None else mounts.tmpfs_size(mount)
            shm = Shm(total, free, small=total is not None and total <= SHM_DEFAULT)
            continue
        if volume.kind == "config":
            continue
        disk = Disk(mount.mount_point, volume.kind, volume.name, mount.fstype, mount.source, total, free)
        disk.on_node_disk = volume.on_node_disk
        disks.append(disk)
    identity = _identity(system, mount_list)
    ephemeral = Ephemeral(
        limit=int(downward["ephemeral_limit"]) if "ephemeral_limit" in downward else None,
        limit_source="downward API" if "ephemeral_limit" in downward else "",
        request=int(downward["ephemeral_request"]) if "ephemeral_request" in downward else None,
    )
    empty_dirs = [d for d in disks if d.kind == "emptyDir"]
    if ephemeral.limit is None:
        ephemeral.note = (
            "no ephemeral-storage limit is known (none set, or not given to this pod by the downward API)"
            if identity.in_pod
            else "not in a pod"
        )
    elif measure_ephemeral:
        deadline = time.monotonic() + DU_BUDGET_S
        used, complete = 0, True
        for disk in empty_dirs:
            size, done = _du(system.path(disk.path), deadline)
            used, complete = used + size, complete and done
            ephemeral.measured.append(disk.path)
        ephemeral.usage, ephemeral.complete = used, complete
        ephemeral.note = (
            "emptyDirs only: the container's writable layer and logs count too, and cannot be seen from inside"
        )
        if not complete:
            ephemeral.note = "a lower bound (the count ran out of time); " + ephemeral.note

    gpus = system.find_gpus()
    if shm is not None and shm.small:
        warnings.append(
            "/dev/shm is the %d MiB default: PyTorch DataLoader workers and Ray need more; mount an emptyDir "
            "with medium: Memory there" % (SHM_DEFAULT // 2**20)
        )
    if memory.limit is None and identity.in_pod:
        warnings.append("no memory limit seen: the pod may use the node's memory until it is evicted")

    if sample_s > 0:
        pod_before, node_before, started = groups.cpu_usage_ns(), _node_busy_ns(system), time.monotonic()
        system.sleep(sample_s)
        pod_after, node_after, elapsed = groups.cpu_usage_ns(), _node_busy_ns(system), time.monotonic() - started
        if pod_before is not None and pod_after is not None and elapsed > 0:
            cpu.usage = round(max(0, pod_after - pod_before) / 1e9 / elapsed, 3)
        if node_before and node_after and node_after[1] > node_before[1]:
            share = (node_after[0] - node_before[0]) / (node_after[1] - node_before[1])
            cpu.node_usage = round(share * cpu.node, 3)

    return Info(
        cpu=cpu,
        memory=memory,
        gpus=gpus,
        disks=disks,
        shm=shm,
        ephemeral=ephemeral,
        identity=identity,
        cgroup=groups.layout,
        workdir=workdir,
        workdir_mount=holder.mount_point if holder else "",
        warnings=warnings,
    )


# -- renderings the agent prints -----------------------------------------------------------------
def size_text(value: float | None) -> str:
    """Bytes in binary units, about 3 significant digits: 300 MiB, 1.2 TiB, 64 MiB."""
    if value is None:
        return "?"
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    unit = 0
    while abs(value) >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    digits = 0 if abs(value) >= 100 or unit == 0 else 1 if abs(value) >= 10 else 2
    number = "%.*f" % (digits, value)
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    return "%s %s" % (number, units[unit])


def cores_text(cores: float) -> str:
    number = ("%.3f" % cores).rstrip("0").rstrip(".")
    return "%s CPU%s" % (number, "" if cores == 1 or cores < 1 else "s")


def banner(info: Info) -> str:
    """One line for the start of a REPL: the pod's resources beside the node's."""
    who = "pod" if info.identity.in_pod else "host"
    cpu = info.cpu
    if cpu.limit is not None:
        cpu_text = cores_text(cpu.limit)
        if cpu.effective != cpu.limit:
            cpu_text += " (%d thread%s, node %d)" % (cpu.effective, "" if cpu.effective == 1 else "s", cpu.node)
        else:
            cpu_text += " (node %d)" % cpu.node
    else:
        cpu_text = "%s (node %d, no limit)" % (cores_text(cpu.effective), cpu.node)
    memory = info.memory
    if memory.limit is not None:
        memory_text = "%s (node %s)" % (size_text(memory.limit), size_text(memory.node_total))
    else:
        memory_text = "no memory limit (node %s)" % size_text(memory.node_total)
    parts = [cpu_text, memory_text, gpu_text(info.gpus)]
    disk = next((d for d in info.disks if d.path == info.workdir_mount), None)
    if disk is not None and disk.free is not None:
        where = info.workdir if disk.path == "/" else disk.path
        parts.append("%s %s free" % (where or disk.path, size_text(disk.free)))
    for extra in info.disks:
        if extra.kind in ("pvc", "nfs", "emptyDir") and extra is not disk and extra.free is not None:
            parts.append("%s %s free" % (extra.path, size_text(extra.free)))
    if info.shm is not None and info.shm.total is not None:
        parts.append("/dev/shm %s%s" % (size_text(info.shm.total), " (small)" if info.shm.small else ""))
    return "%s: %s" % (who, " · ".join(parts))


def gpu_text(gpus: Gpus) -> str:
    """ "no GPU", "1× NVIDIA A100-SXM4-80GB 80 GiB", "2× MIG 3g.40gb (NVIDIA A100-SXM4-80GB)"."""
    if not gpus.devices:
        return "no GPU"
    slices = [(g.name, m.name.split("MIG ", 1)[-1] or "slice") for g in gpus.devices for m in g.mig_devices]
    if slices:
        kinds = sorted(set(slices))
        return ", ".join(
            "%d× MIG %s%s" % (slices.count(kind), kind[1], " (%s)" % kind[0] if kind[0] else "") for kind in kinds
        )
    names = sorted({g.name or "GPU" for g in gpus.devices})
    memory = gpus.devices[0].memory_total
    return "%d× %s%s" % (len(gpus.devices), "/".join(names), " " + size_text(memory) if memory else "")


def export_lines(info: Info) -> str:
    """Shell lines that size thread pools from the effective CPU count (`pypod info --export`)."""
    cpu = info.cpu
    why = "CPU limit %s" % cores_text(cpu.limit) if cpu.limit is not None else "no CPU limit"
    plural = "" if cpu.effective == 1 else "s"
    lines = ["# pypod info: %d effective CPU%s (%s; bound by %s)" % (cpu.effective, plural, why, cpu.effective_by)]
    lines += ["export %s=%s" % (k, v) for k, v in thread_env(cpu.effective).items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """`agent.pyz info [--json | --export | --banner]`."""
    mode = argv[0] if argv else "--json"
    if mode not in ("--json", "--export", "--banner"):
        sys.stderr.write("usage: agent.pyz info [--json | --export | --banner]\n")
        return 2
    info = collect(sample_s=CPU_SAMPLE_S if mode == "--json" else 0, measure_ephemeral=mode == "--json")
    if mode == "--json":
        sys.stdout.write(info.to_json() + "\n")
    elif mode == "--export":
        sys.stdout.write(export_lines(info))
    else:
        sys.stdout.write(banner(info) + "\n")
    return 0
