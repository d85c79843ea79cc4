"""`pypod info` on this machine (cgroup v1, as root): the test makes a cgroup of its own with a
CPU quota of 0.5 and a memory limit of 300 MiB, runs the real `pypod info --json` inside it,
and checks the figures against the kernel's and /proc's. No cluster needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

MiB = 2**20
CGROUP_ROOT = Path("/sys/fs/cgroup")


def own_cgroup_path(controller: str) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    raise AssertionError(f"no {controller} hierarchy in /proc/self/cgroup")


@pytest.fixture
def limited_cgroup() -> Iterator[tuple[Path, Path]]:
    """A child of this process's cpu and memory cgroups: 50000/100000 µs and 300 MiB."""
    if not (CGROUP_ROOT / "cpu" / "cpu.cfs_quota_us").exists() or os.geteuid() != 0:
        pytest.skip("needs root on a cgroup v1 host (this project's machines are); cgroup v2 is covered by fixtures")
    name = f"pypod-info-{uuid.uuid4().hex[:8]}"
    cpu = CGROUP_ROOT / "cpu" / own_cgroup_path("cpu").lstrip("/") / name
    memory = CGROUP_ROOT / "memory" / own_cgroup_path("memory").lstrip("/") / name
    cpu.mkdir()
    memory.mkdir()
    try:
        (cpu / "cpu.cfs_period_us").write_text("100000")
        (cpu / "cpu.cfs_quota_us").write_text("50000")
        (memory / "memory.limit_in_bytes").write_text(str(300 * MiB))
        yield cpu, memory
    finally:
        for folder in (cpu, memory):
            folder.rmdir()  # the child has exited, so the cgroup is empty


def test_info_inside_a_cgroup_with_a_half_cpu_quota_and_300_mib(limited_cgroup: tuple[Path, Path]):
    cpu, memory = limited_cgroup

    def join() -> None:  # runs in the child before exec: move it into the cgroup
        for folder in (cpu, memory):
            (folder / "cgroup.procs").write_text(str(os.getpid()))

    result = subprocess.run(
        [sys.executable, "-m", "pypod", "info", "--json"],
        preexec_fn=join,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_total = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemTotal:"))

    assert (data["cpu"]["limit"], data["cpu"]["effective"], data["cpu"]["effective_by"]) == (0.5, 1, "quota")
    assert data["cpu"]["limit_source"] == f"cgroup v1 cpu.cfs_quota_us ({cpu})"
    assert data["cpu"]["node"] == os.cpu_count()  # the node's online CPUs, unaffected by the quota
    assert data["memory"]["limit"] == 300 * MiB
    assert str(memory) in data["memory"]["limit_source"]
    assert data["memory"]["node_total"] == mem_total
    assert 0 < data["memory"]["usage"] < 300 * MiB  # the process's own working set, counted in its cgroup
    assert data["identity"]["in_pod"] is False
    assert data["cgroup"] in ("v1", "hybrid")


def test_export_lines_in_the_same_cgroup(limited_cgroup: tuple[Path, Path]):
    cpu, _memory = limited_cgroup
    result = subprocess.run(
        [sys.executable, "-m", "pypod", "info", "--export"],
        preexec_fn=lambda: (cpu / "cgroup.procs").write_text(str(os.getpid())),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    exports = dict(
        line[len("export ") :].split("=") for line in result.stdout.splitlines() if line.startswith("export ")
    )
    assert exports["OMP_NUM_THREADS"] == exports["PYTHON_CPU_COUNT"] == exports["POLARS_MAX_THREADS"] == "1"
    assert len(exports) == 10
    shell = subprocess.run(["sh", "-c", result.stdout + 'echo "$OPENBLAS_NUM_THREADS"'], capture_output=True, text=True)
    assert shell.stdout.strip() == "1"
