"""`pypod info`'s CPU and memory figures: the pure cgroup parsers, and `collect()` on fixture
trees laid out as the kernel and kubelet lay them out (v2 in a cgroup namespace, v1 with a
container's bind mounts, this machine's hybrid, nested limits, the unlimited sentinels)."""

# ruff: noqa: E501  (fixture lines are kernel output and C source, kept whole)

from __future__ import annotations

from pathlib import Path

import pytest

from pypod.agent import cgroups
from pypod.agent.cgroups import (
    CgroupMount,
    ProcCgroup,
    find_hierarchy,
    folders_for,
    parse_cfs,
    parse_cpu_list,
    parse_cpu_max,
    parse_memory_limit,
    parse_proc_cgroup,
    quota_ceiling,
)
from pypod.agent.mounts import parse_mountinfo
from pypod.agent.resources import System, collect, decide_cpu, decide_memory_limit, downward_values

GiB = 2**30
MiB = 2**20
MEM_TOTAL_KB = 263_853_568  # a 251 GiB node
MEM_TOTAL = MEM_TOTAL_KB * 1024
UID = "0f6a3d3c-5b8e-4a43-9d7e-2b1f5c6d7e8f"
CID = "4b1c" * 16


def tree(root: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root


def node_files(cpus: str = "0-63") -> dict[str, str]:
    return {
        "/proc/meminfo": f"MemTotal:       {MEM_TOTAL_KB} kB\nMemFree:        1000 kB\nMemAvailable:   {MEM_TOTAL_KB // 2} kB\n",
        "/sys/devices/system/cpu/online": cpus + "\n",
    }


def system(root: Path, affinity: int | None = 64, environ: dict[str, str] | None = None) -> System:
    return System(str(root), environ=environ or {}, affinity=affinity, nvml_library=str(root / "no-nvml.so"), cwd="/")


def info_of(root: Path, **kw):  # type: ignore[no-untyped-def]
    return collect(system(root, **kw), sample_s=0)


# -- pure parsers ------------------------------------------------------------------------------------
def test_proc_cgroup_lines_of_v1_v2_and_named_hierarchies():
    text = "12:cpu,cpuacct:/kubepods/pod1/c1\n1:name=systemd:/init.scope\n0::/user.slice\nbroken line\n"
    assert parse_proc_cgroup(text) == [
        ProcCgroup(12, ("cpu", "cpuacct"), "/kubepods/pod1/c1"),
        ProcCgroup(1, ("name=systemd",), "/init.scope"),
        ProcCgroup(0, (), "/user.slice"),
    ]


def test_cpu_max_and_cfs_quota_values():
    assert parse_cpu_max("max 100000\n") is None
    assert parse_cpu_max("50000 100000\n") == (50000, 100000)
    assert parse_cpu_max("") is None
    assert parse_cfs("-1\n", "100000\n") is None
    assert parse_cfs("0", "100000") is None  # <= 0 is no limit
    assert parse_cfs("150000\n", "100000\n") == (150000, 100000)
    assert [quota_ceiling(q) for q in ((50000, 100000), (100000, 100000), (100001, 100000), (1, 100000))] == [
        1,
        1,
        2,
        1,
    ]


def test_cpu_lists():
    assert parse_cpu_list("0-3,8,10-11\n") == frozenset({0, 1, 2, 3, 8, 10, 11})
    assert parse_cpu_list("5") == frozenset({5})
    assert parse_cpu_list("\n") is None
    assert parse_cpu_list("x-y") is None


@pytest.mark.parametrize(
    "text",
    [
        "max\n",
        "9223372036854771712\n",  # v1 PAGE_COUNTER_MAX * 4 KiB pages
        "9223372036854775807\n",  # LONG_MAX, as some kernels print it
        "9223372036854710272\n",  # rounded down to 64 KiB pages (arm64, ppc64le)
        str(MEM_TOTAL),  # a limit equal to the node's RAM limits nothing
        str(MEM_TOTAL + 4096),
        "",
        "-1",
    ],
)
def test_unlimited_memory_sentinels(text):
    assert parse_memory_limit(text, MEM_TOTAL) is None


def test_real_memory_limits_and_the_floor_without_meminfo():
    assert parse_memory_limit("314572800\n", MEM_TOTAL) == 300 * MiB
    assert parse_memory_limit("9223372036854771712", None) is None
    assert parse_memory_limit(str(512 * GiB), None) == 512 * GiB


def test_folders_of_a_cgroup_and_its_visible_parents():
    root_mount = CgroupMount(2, (), "/", "/sys/fs/cgroup")
    assert folders_for(root_mount, "/kubepods/pod1/c1") == (
        "/sys/fs/cgroup/kubepods/pod1/c1",
        "/sys/fs/cgroup/kubepods/pod1",
        "/sys/fs/cgroup/kubepods",
        "/sys/fs/cgroup",
    )
    # A container's bind mount: the container's own cgroup is the mount's root; above it is hidden.
    bound = CgroupMount(1, ("memory",), "/kubepods/pod1/c1", "/sys/fs/cgroup/memory")
    assert folders_for(bound, "/kubepods/pod1/c1") == ("/sys/fs/cgroup/memory",)
    assert folders_for(bound, "/kubepods/pod1/c1/sub") == ("/sys/fs/cgroup/memory/sub", "/sys/fs/cgroup/memory")
    assert folders_for(bound, "/kubepods/pod2/c9") is None
    # A process moved out of its cgroup namespace's root sees a path it cannot reach.
    assert folders_for(root_mount, "/../sibling") is None


def test_v1_controller_wins_over_an_empty_v2_in_a_hybrid_layout():
    mounts = [
        CgroupMount(1, ("cpu", "cpuacct"), "/", "/sys/fs/cgroup/cpu,cpuacct"),
        CgroupMount(2, (), "/", "/sys/fs/cgroup/unified"),
    ]
    entries = [ProcCgroup(4, ("cpu", "cpuacct"), "/a"), ProcCgroup(0, (), "/b")]
    cpu = find_hierarchy("cpu", mounts, entries)
    assert cpu is not None and cpu.version == 1 and cpu.leaf == "/sys/fs/cgroup/cpu,cpuacct/a"
    memory = find_hierarchy("memory", mounts, entries)  # not bound to v1: the v2 hierarchy
    assert memory is not None and memory.version == 2 and memory.leaf == "/sys/fs/cgroup/unified/b"
    assert cgroups.layout_name(mounts, entries) == "hybrid"


def test_effective_cpus_is_the_least_bound_and_at_least_one():
    cpu = decide_cpu(64, 64, (50000, 100000), "q", None, {})
    assert (cpu.limit, cpu.effective, cpu.effective_by) == (0.5, 1, "quota")
    cpu = decide_cpu(64, 64, (400000, 100000), "q", 2, {})  # cpuset narrower than the quota
    assert (cpu.limit, cpu.effective, cpu.effective_by) == (4.0, 2, "cpuset")
    cpu = decide_cpu(64, 3, None, "", None, {})
    assert (cpu.limit, cpu.effective, cpu.effective_by) == (None, 3, "affinity")
    cpu = decide_cpu(8, None, None, "", None, {})
    assert (cpu.effective, cpu.effective_by) == (8, "node")
    cpu = decide_cpu(2, 2, (150000, 100000), "q", 2, {})  # 1.5 CPUs on a 2-CPU node: the quota binds
    assert (cpu.limit, cpu.effective, cpu.effective_by) == (1.5, 2, "quota")


def test_downward_api_limits_apply_when_tighter_and_below_the_node():
    downward = downward_values({"POD_CPU_LIMIT_MILLICORES": "1500", "POD_CPU_REQUEST_MILLICORES": "250"})
    cpu = decide_cpu(64, 64, None, "", None, downward)
    assert (cpu.limit, cpu.limit_source, cpu.effective, cpu.request) == (1.5, "downward API", 2, 0.25)
    # An unset limit reads as the node's allocatable amount: that is no limit.
    cpu = decide_cpu(64, 64, None, "", None, downward_values({"POD_CPU_LIMIT_MILLICORES": "64000"}))
    assert cpu.limit is None
    # The cgroup's tighter quota wins, and keeps its source.
    cpu = decide_cpu(64, 64, (50000, 100000), "cgroup v2 cpu.max (/sys/fs/cgroup)", None, downward)
    assert (cpu.limit, cpu.limit_source) == (0.5, "cgroup v2 cpu.max (/sys/fs/cgroup)")
    memory = downward_values({"POD_MEMORY_LIMIT_BYTES": str(300 * MiB)})
    assert decide_memory_limit(None, "", memory, MEM_TOTAL) == (300 * MiB, "downward API")
    assert decide_memory_limit(200 * MiB, "cgroup", memory, MEM_TOTAL) == (200 * MiB, "cgroup")
    assert decide_memory_limit(None, "", downward_values({"POD_MEMORY_LIMIT_BYTES": str(MEM_TOTAL)}), MEM_TOTAL) == (
        None,
        "",
    )
    assert downward_values({"POD_CPU_LIMIT_MILLICORES": "lots"}) == {}


# -- whole trees ------------------------------------------------------------------------------------
def pod_mounts(cgroup_lines: str) -> str:
    return (
        f"1200 1100 0:310 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/l,upperdir=/var/lib/containerd/u/fs,workdir=/w\n"
        f"1201 1200 0:312 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n"
        f"1202 1200 0:313 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755\n"
        f"1205 1200 0:315 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro\n"
        f"{cgroup_lines}"
        f"1210 1202 0:309 / /dev/shm rw,nosuid,nodev,noexec,relatime - tmpfs shm rw,size=65536k\n"
        f"1211 1200 254:1 /var/lib/kubelet/pods/{UID}/etc-hosts /etc/hosts rw,relatime - ext4 /dev/vdb rw\n"
        f"1212 1202 254:1 /var/lib/kubelet/pods/{UID}/containers/driver/abcd /dev/termination-log rw - ext4 /dev/vdb rw\n"
    )


def test_v2_in_a_cgroup_namespace_whose_root_is_slash(tmp_path):
    """containerd on cgroup v2: a private cgroup namespace, so the container's cgroup is "/"."""
    mountinfo = pod_mounts(
        "1206 1205 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate\n"
    )
    root = tree(
        tmp_path,
        {
            **node_files(),
            "/proc/self/cgroup": "0::/\n",
            "/proc/self/mountinfo": mountinfo,
            "/sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory pids\n",
            "/sys/fs/cgroup/cpu.max": "150000 100000\n",
            "/sys/fs/cgroup/cpuset.cpus.effective": "0-63\n",
            "/sys/fs/cgroup/memory.max": "2147483648\n",
            "/sys/fs/cgroup/memory.high": "1610612736\n",
            "/sys/fs/cgroup/memory.current": "734003200\n",
            "/sys/fs/cgroup/memory.stat": "anon 400000000\nfile 300000000\ninactive_file 209715200\nactive_file 1000\n",
        },
    )
    info = info_of(root, environ={"POD_NAME": "run-1", "POD_NAMESPACE": "ns", "KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert info.cgroup == "v2"
    assert (info.cpu.node, info.cpu.limit, info.cpu.effective) == (64, 1.5, 2)
    assert info.cpu.limit_source == "cgroup v2 cpu.max (/sys/fs/cgroup)"
    assert info.memory.node_total == MEM_TOTAL
    assert (info.memory.limit, info.memory.high) == (2 * GiB, 1536 * MiB)
    assert info.memory.usage == 734003200 - 209715200  # current minus inactive_file
    assert info.identity.in_pod and (info.identity.pod_name, info.identity.namespace) == ("run-1", "ns")
    assert info.identity.pod_uid == UID and info.identity.sources["pod_uid"] == "kubelet folders in mountinfo"
    assert info.shm is not None and info.shm.small


def test_v2_namespace_hides_the_pod_level_limit_that_the_downward_api_shows(tmp_path):
    mountinfo = pod_mounts("1206 1205 0:30 / /sys/fs/cgroup ro - cgroup2 cgroup rw\n")
    root = tree(
        tmp_path,
        {
            **node_files(),
            "/proc/self/cgroup": "0::/\n",
            "/proc/self/mountinfo": mountinfo,
            "/sys/fs/cgroup/cpu.max": "max 100000\n",
            "/sys/fs/cgroup/memory.max": "max\n",
        },
    )
    environ = {"POD_CPU_LIMIT_MILLICORES": "500", "POD_MEMORY_LIMIT_BYTES": str(300 * MiB), "POD_NAME": "p"}
    info = info_of(root, environ=environ)
    assert (info.cpu.limit, info.cpu.limit_source, info.cpu.effective) == (0.5, "downward API", 1)
    assert (info.memory.limit, info.memory.limit_source) == (300 * MiB, "downward API")


def test_v1_container_with_bind_mounted_cgroups(tmp_path):
    """containerd on cgroup v1 (the harness's node): no cgroup namespace; each controller's
    mount shows the container's own cgroup at its mount point."""
    path = f"/kubepods/burstable/pod{UID}/{CID}"
    lines = "".join(
        f"{1220 + i} 1206 0:{40 + i} {path} /sys/fs/cgroup/{name} ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,{name}\n"
        for i, name in enumerate(("cpu,cpuacct", "cpuset", "memory"))
    )
    mountinfo = pod_mounts("1206 1205 0:30 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n" + lines)
    root = tree(
        tmp_path,
        {
            **node_files("0-1"),
            "/proc/self/cgroup": f"11:memory:{path}\n4:cpuset:{path}\n3:cpu,cpuacct:{path}\n1:name=systemd:{path}\n",
            "/proc/self/mountinfo": mountinfo,
            "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "50000\n",
            "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            "/sys/fs/cgroup/cpu,cpuacct/cpuacct.usage": "123456789\n",
            "/sys/fs/cgroup/cpuset/cpuset.effective_cpus": "0-1\n",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes": "314572800\n",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes": "104857600\n",
            "/sys/fs/cgroup/memory/memory.stat": (
                "cache 50000000\ninactive_file 10485760\nhierarchical_memory_limit 314572800\n"
                "total_inactive_file 20971520\n"
            ),
        },
    )
    info = info_of(root, affinity=2)
    assert info.cgroup == "v1"
    assert (info.cpu.node, info.cpu.limit, info.cpu.effective, info.cpu.effective_by) == (2, 0.5, 1, "quota")
    assert info.cpu.limit_source == "cgroup v1 cpu.cfs_quota_us (/sys/fs/cgroup/cpu,cpuacct)"
    assert info.memory.limit == 300 * MiB
    assert info.memory.usage == 100 * MiB - 20 * MiB  # usage minus total_inactive_file
    assert info.identity.in_pod and info.identity.pod_uid == UID


def test_hybrid_layout_with_a_parent_tighter_than_the_process_cgroup(tmp_path):
    """This machine's layout: v1 controllers at /sys/fs/cgroup/<name>, an empty v2 at
    /sys/fs/cgroup/unified, no cgroup namespace; the parent's limits bind the child."""
    mountinfo = (
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
        "33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
        "34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n"
        "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
        "25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24683584k\n"
    )
    cpu, memory = "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/memory"
    root = tree(
        tmp_path,
        {
            **node_files("0-7"),
            "/proc/self/cgroup": (
                "9:name=systemd:/\n4:memory:/jobs/j1\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/jobs/j1\n0::/\n"
            ),
            "/proc/self/mountinfo": mountinfo,
            "/sys/fs/cgroup/unified/cgroup.controllers": "hugetlb\n",
            f"{cpu}/cpu.cfs_quota_us": "-1\n",
            f"{cpu}/cpu.cfs_period_us": "100000\n",
            f"{cpu}/jobs/cpu.cfs_quota_us": "25000\n",
            f"{cpu}/jobs/cpu.cfs_period_us": "100000\n",
            f"{cpu}/jobs/j1/cpu.cfs_quota_us": "100000\n",
            f"{cpu}/jobs/j1/cpu.cfs_period_us": "100000\n",
            "/sys/fs/cgroup/cpuset/cpuset.effective_cpus": "0-7\n",
            f"{memory}/memory.limit_in_bytes": "9223372036854771712\n",
            f"{memory}/jobs/memory.limit_in_bytes": str(200 * MiB),
            f"{memory}/jobs/j1/memory.limit_in_bytes": str(300 * MiB),
            f"{memory}/jobs/j1/memory.usage_in_bytes": str(50 * MiB),
            f"{memory}/jobs/j1/memory.stat": "total_inactive_file 0\n",
        },
    )
    info = info_of(root, affinity=8)
    assert info.cgroup == "hybrid"
    assert (info.cpu.limit, info.cpu.effective) == (0.25, 1)
    assert info.cpu.limit_source == f"cgroup v1 cpu.cfs_quota_us ({cpu}/jobs)"
    assert info.memory.limit == 200 * MiB
    assert info.memory.limit_source == f"cgroup v1 memory.limit_in_bytes ({memory}/jobs)"
    assert not info.identity.in_pod
    assert info.shm is not None and not info.shm.small


def test_hierarchical_memory_limit_sees_ancestors_above_the_mount(tmp_path):
    """In v1 the kernel's hierarchical_memory_limit includes the pod's cgroup, which a
    container's bind mount hides."""
    path = f"/kubepods/pod{UID}/{CID}"
    mountinfo = pod_mounts(f"1230 1205 0:41 {path} /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n")
    root = tree(
        tmp_path,
        {
            **node_files(),
            "/proc/self/cgroup": f"5:memory:{path}\n",
            "/proc/self/mountinfo": mountinfo,
            "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
            "/sys/fs/cgroup/memory/memory.stat": f"hierarchical_memory_limit {512 * MiB}\ntotal_inactive_file 0\n",
        },
    )
    info = info_of(root)
    assert info.memory.limit == 512 * MiB
    assert info.memory.limit_source.startswith("cgroup v1 hierarchical_memory_limit")


def test_cpuset_narrower_than_the_quota(tmp_path):
    mountinfo = pod_mounts("1206 1205 0:30 / /sys/fs/cgroup ro - cgroup2 cgroup rw\n")
    root = tree(
        tmp_path,
        {
            **node_files(),
            "/proc/self/cgroup": "0::/\n",
            "/proc/self/mountinfo": mountinfo,
            "/sys/fs/cgroup/cpu.max": "400000 100000\n",
            "/sys/fs/cgroup/cpuset.cpus.effective": "4-5\n",
        },
    )
    info = info_of(root)
    assert (info.cpu.limit, info.cpu.cpuset, info.cpu.effective, info.cpu.effective_by) == (4.0, 2, 2, "cpuset")


def test_no_cgroup_files_at_all_gives_the_node_and_says_so(tmp_path):
    root = tree(tmp_path, {**node_files("0-3"), "/proc/self/mountinfo": "", "/proc/self/cgroup": ""})
    info = info_of(root, affinity=None)
    assert info.cgroup == "none"
    assert (info.cpu.limit, info.cpu.effective, info.cpu.effective_by) == (None, 4, "node")
    assert info.memory.limit is None and info.memory.usage is None
    assert info.ephemeral.note == "not in a pod"


def test_mountinfo_parser_keeps_escaped_paths():
    (mount,) = parse_mountinfo(
        "36 35 98:0 /mnt\\040dir /data\\011x rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"
    )
    assert (mount.root, mount.mount_point, mount.fstype, mount.source) == ("/mnt dir", "/data\tx", "ext3", "/dev/root")
    assert mount.super_options == ("rw", "errors=continue")
