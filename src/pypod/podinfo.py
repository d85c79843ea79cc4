"""`pypod info` and `pypod.info()`: what a pod really has, next to its node.

The figures come from the agent's stdlib module (agent/resources.py), so the same code runs
here, in-process, and in any pod with python3, shipped over the exec stream like the sync
agent; this module only renders them (a rich table) and fetches them from a run's pod.
"""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING, Any

from .agent.resources import CPU_SAMPLE_S, Info, collect, cores_text, size_text
from .errors import StreamError

if TYPE_CHECKING:
    from rich.console import RenderableType

AGENT_PYTHON = "python3"
EXEC_TIMEOUT_S = 60.0


def info(sample_s: float = CPU_SAMPLE_S) -> Info:
    """What this process has: `.cpu.effective`, `.cpu.limit`, `.memory.limit`, `.gpus`, `.disks`,
    `.shm`, `.identity`, each figure marked as the pod's or the node's (`node_*`) and with its
    source. `sample_s` is the window for current CPU usage (0: not measured).

    >>> import pypod
    >>> pypod.info().cpu.effective >= 1
    True
    """
    return collect(sample_s=sample_s)


def info_of_pod(kubectl_argv: list[str], pod: str, container: str) -> Info:
    """Run the agent's `info --json` in `pod` (any image with python3) and read its answer.
    `kubectl_argv` is the exec command's prefix up to the pod (see Kubectl.exec_argv)."""
    from . import agent

    command, archive = agent.stdin_command(AGENT_PYTHON, "info", "--json")
    argv = [*kubectl_argv, "exec", "-i", pod, "-c", container, "--", *command]
    try:
        result = subprocess.run(argv, input=archive, capture_output=True, timeout=EXEC_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise StreamError(
            f"`pypod info` in pod {pod} gave no answer within {EXEC_TIMEOUT_S:.0f}s",
            hint="check that the pod is not starved (`pypod ps`) and try again",
        ) from exc
    stderr = result.stderr.decode(errors="replace").strip()
    if result.returncode != 0:
        missing = "executable file not found" in stderr or "not found" in stderr.lower()
        hint = (
            f"the image has no {AGENT_PYTHON}; `pypod info` needs Python 3.8+ in the pod"
            if missing
            else "see the pod's state with `pypod ps` and `pypod logs`"
        )
        last = stderr.splitlines()[-1] if stderr else f"exit code {result.returncode}"
        raise StreamError(f"`pypod info` in pod {pod} failed: {last}", hint=hint)
    try:
        return Info.from_dict(json.loads(result.stdout))
    except (ValueError, KeyError, TypeError) as exc:
        raise StreamError(
            f"`pypod info` in pod {pod} answered something that is not its JSON: {exc}",
            hint="a newer pypod's agent may be needed in the pod; this is a bug if it repeats",
        ) from exc


def _percent(part: float | None, whole: float | None) -> str:
    if part is None or not whole:
        return ""
    return f" ({100 * part / whole:.0f}%)"


def render(info: Info) -> RenderableType:
    """The compact table: the pod's figures beside the node's, with where each came from."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    who = "pod" if info.identity.in_pod else "this machine"
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in ("", who, "node", "source"):
        table.add_column(column)
    cpu, memory = info.cpu, info.memory
    limit = cores_text(cpu.limit) if cpu.limit is not None else "no limit"
    table.add_row("CPU limit", limit, f"{cpu.node} CPUs", cpu.limit_source or "-")
    bounds = [f"affinity {cpu.affinity}" if cpu.affinity else "", f"cpuset {cpu.cpuset}" if cpu.cpuset else ""]
    table.add_row(
        "CPU effective", f"{cpu.effective} (bound by {cpu.effective_by})", "", ", ".join(b for b in bounds if b)
    )
    if cpu.usage is not None or cpu.node_usage is not None:
        pod_use = f"{cpu.usage:.2f} cores" if cpu.usage is not None else "?"
        node_use = f"{cpu.node_usage:.2f} cores" if cpu.node_usage is not None else "?"
        table.add_row("CPU in use", pod_use, node_use, "cgroup usage, /proc/stat")
    table.add_row(
        "memory limit",
        size_text(memory.limit) if memory.limit is not None else "no limit",
        size_text(memory.node_total),
        memory.limit_source or "-",
    )
    if memory.high is not None:
        table.add_row("memory.high", size_text(memory.high), "", "cgroup v2 (throttling starts here)")
    table.add_row(
        "memory in use",
        (size_text(memory.usage) + _percent(memory.usage, memory.limit)) if memory.usage is not None else "?",
        f"{size_text(memory.node_available)} available" if memory.node_available is not None else "",
        "usage minus inactive files",
    )
    gpus = info.gpus
    if not gpus.devices:
        table.add_row("GPUs", "none", "", gpus.source if gpus.source != "none" else "NVML, nvidia-smi: none")
    for gpu in gpus.devices:
        memory_text = ""
        if gpu.memory_total:
            memory_text = f" {size_text(gpu.memory_used)} / {size_text(gpu.memory_total)}"
        table.add_row(f"GPU {gpu.index}", f"{gpu.name or '?'}{memory_text}", "", f"{gpus.source} {gpu.uuid}".strip())
        for mig in gpu.mig_devices:
            used = f" {size_text(mig.memory_used)} / {size_text(mig.memory_total)}" if mig.memory_total else ""
            table.add_row(f"  MIG {mig.index}", f"{mig.name}{used}", "", mig.uuid)
    shm = info.shm
    if shm is not None:
        table.add_row(
            "/dev/shm",
            size_text(shm.total) + (" (the small default)" if shm.small else ""),
            "",
            "statvfs",
        )
    eph = info.ephemeral
    if eph.limit is not None:
        used = "not measured"
        if eph.usage is not None:
            used = ("at least " if not eph.complete else "") + size_text(eph.usage) + " in emptyDirs"
        table.add_row("ephemeral storage", f"{size_text(eph.limit)} limit, {used}", "", eph.limit_source)
    else:
        table.add_row("ephemeral storage", "limit unknown", "", eph.note)

    disks = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in ("disk", "kind", "free", "total", "on"):
        disks.add_column(column)
    for disk in info.disks:
        on = {True: "node's disk", False: "its own", None: ""}[disk.on_node_disk]
        if disk.kind in ("nfs", "network"):
            on = disk.source
        label = disk.path + (" (working dir)" if disk.path == info.workdir_mount else "")
        kind = disk.kind + (f" {disk.name}" if disk.name and disk.kind in ("emptyDir", "pvc") else "")
        disks.add_row(label, kind, size_text(disk.free), size_text(disk.total), on)

    ident = info.identity
    if ident.in_pod:
        parts = [f"pod {ident.pod_name or '?'}", f"namespace {ident.namespace or '?'}"]
        parts.append(f"node {ident.node_name or '?'}")
        if ident.pod_uid:
            parts.append(f"uid {ident.pod_uid}")
        header = " · ".join(parts)
    else:
        header = f"not in a pod: {ident.hostname} (cgroup {info.cgroup})"
    lines = [Text(header, style="bold")]
    details = []
    if ident.image:
        details.append(f"image {ident.image}")
    if ident.uptime_s is not None:
        details.append(f"up {_duration(ident.uptime_s)}")
    details.append(f"cgroup {info.cgroup}")
    if ident.in_pod:
        lines.append(Text(" · ".join(details)))
    lines += [Text(""), table, Text(""), disks]
    lines += [Text(f"warning: {w}", style="yellow") for w in info.warnings]
    return Group(*lines)


def _duration(seconds: float) -> str:
    """ "2d 3h", "3h 12m", "5m 20s", "40s"."""
    whole = int(seconds)
    days, hours, minutes = whole // 86400, whole % 86400 // 3600, whole % 3600 // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {whole % 60}s"
    return f"{whole}s"


def show(data: Info, console: Any = None) -> None:
    from rich.console import Console

    (console or Console(soft_wrap=True, highlight=False)).print(render(data))
