"""What a fetch's state means, per file and for the Job: pure functions from the Job's
status, its pods and the state files on the PVC to the lines `pypod data status` shows.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from .plan import ANNOTATION_DEST, ANNOTATION_FILES, LABEL_PVC

# A state file not touched for this long, while the state says downloading, is a pod
# that died mid-file (the Job starts another, which resumes).
STALE_S = 30.0


@dataclass(frozen=True)
class FileLine:
    name: str
    state: str  # queued, downloading, verifying, done, failed: REASON (and stalled)
    done: int
    total: int | None
    rate: float
    eta: float | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class FetchStatus:
    name: str
    pvc: str
    dest: str
    job_state: str  # running, complete, failed: REASON, waiting for a pod
    pod: str
    files: tuple[FileLine, ...]


def human_bytes(count: float | None) -> str:
    if count is None:
        return "?"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def human_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def job_state(job: dict[str, Any], pods: list[dict[str, Any]]) -> tuple[str, str]:
    """The Job's state in words, and the pod (name on node) working on it, if any."""
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "complete", ""
        if condition.get("type") == "Failed":
            reason = condition.get("reason") or "failed"
            message = condition.get("message") or ""
            if reason == "PodFailurePolicy":
                return "failed: a file cannot be fetched (see below)", ""
            return f"failed: {reason}" + (f": {message}" if message else ""), ""
    live = [p for p in pods if (p.get("status") or {}).get("phase") in ("Pending", "Running")]
    if live:
        pod = live[-1]
        phase = pod["status"]["phase"]
        where = (pod.get("spec") or {}).get("nodeName") or "no node yet"
        retries = status.get("failed") or 0
        again = f", try {retries + 1}" if retries else ""
        return ("running" if phase == "Running" else "pending") + again, f"{pod['metadata']['name']} on {where}"
    return "waiting for a pod", ""


def file_lines(
    files: list[dict[str, Any]], states: list[dict[str, Any]], live: bool, now: float | None = None
) -> list[FileLine]:
    """One line per file of the Job (its annotation), from its state file when there is one."""
    now = time.time() if now is None else now
    by_name = {s.get("name"): s for s in states}
    lines = []
    for entry in files:
        state = by_name.get(entry["name"])
        if state is None:
            lines.append(FileLine(entry["name"], "queued", 0, None, 0.0, None))
            continue
        done, total = int(state.get("done") or 0), state.get("total")
        words = state.get("state") or "queued"
        rate = float(state.get("rate") or 0.0)
        if words == "failed":
            words = f"failed: {state.get('error') or 'unknown'}"
            rate = 0.0
        elif words in ("downloading", "verifying") and (not live or now - float(state.get("updated") or 0) > STALE_S):
            words = f"{words}, stalled (no pod is working on it now)"
            rate = 0.0
        eta = (total - done) / rate if rate > 0 and total is not None and total >= done else None
        notes = tuple(state.get("notes") or ())
        restarts = state.get("restarts") or 0
        if restarts and not any("restarted from zero" in n or "starting from zero" in n for n in notes):
            notes = (*notes, f"restarted from zero {restarts} time(s)")
        lines.append(FileLine(entry["name"], words, done, total, rate, eta, notes))
    return lines


def fetch_status(
    job: dict[str, Any], pods: list[dict[str, Any]], states: list[dict[str, Any]], now: float | None = None
) -> FetchStatus:
    meta = job["metadata"]
    annotations = meta.get("annotations") or {}
    files = json.loads(annotations.get(ANNOTATION_FILES) or "[]")
    words, pod = job_state(job, pods)
    live = words.startswith("running")
    return FetchStatus(
        name=meta["name"],
        pvc=(meta.get("labels") or {}).get(LABEL_PVC, "?"),
        dest=annotations.get(ANNOTATION_DEST, ""),
        job_state=words,
        pod=pod,
        files=tuple(file_lines(files, states, live, now)),
    )


def render(status: FetchStatus) -> list[str]:
    """The lines of `pypod data status` for one fetch."""
    where = f"pvc {status.pvc}:/{status.dest}"
    head = f"{status.name}  {where}  {status.job_state}" + (f" ({status.pod})" if status.pod else "")
    lines = [head]
    width = max([len(f.name) for f in status.files] + [4])
    for file in status.files:
        amount = f"{human_bytes(file.done)} / {human_bytes(file.total)}"
        rate = f"{human_bytes(file.rate)}/s" if file.rate else "-"
        eta = f"ETA {human_seconds(file.eta)}" if file.eta is not None else ""
        if file.state.startswith("failed") and not file.done:
            lines.append(f"  {file.name:<{width}}  {file.state}")
        elif file.state.startswith("failed") or file.state == "done":
            lines.append(f"  {file.name:<{width}}  {file.state}  ({amount})")
        else:
            lines.append(f"  {file.name:<{width}}  {file.state}  {amount}  {rate}  {eta}".rstrip())
        # Restarts from zero always show (they cost a whole download); of the rest, the latest.
        restarts = [n for n in file.notes if "from zero" in n]
        others = [n for n in file.notes if "from zero" not in n][-2:]
        for note in [*restarts[-3:], *others]:
            lines.append(f"  {'':<{width}}    note: {note}")
    return lines
