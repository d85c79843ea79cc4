"""Packages installed in a session that the project's files do not list: the next run's
image would lack them. Pure but for check_untracked, which reads the project's files."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from ..image.detect import EnvSpec, detect
from .record import BY_HAND, canonical, listed_names, tool_command


def untracked(installed: list[dict[str, Any]], listed: set[str]) -> list[tuple[str, str]]:
    """(name, version) of what was installed and is listed nowhere, leaving out what those
    packages themselves required (`pip install requests` names requests, not urllib3)."""
    names = {canonical(entry["name"]) for entry in installed}
    required = {canonical(r) for entry in installed for r in entry.get("requires", []) if canonical(r) != entry["name"]}
    return [
        (entry["name"], entry.get("version", ""))
        for entry in installed
        if canonical(entry["name"]) not in listed and canonical(entry["name"]) not in required & names
    ]


def untracked_warning(spec: EnvSpec, found: list[tuple[str, str]]) -> str:
    """Pure: the one line shown at the end of a session that installed `found`."""
    packages = ", ".join(f"{name} {version}".strip() for name, version in found)
    files = ", ".join(spec.files) if spec.kind != "none" else "there are none yet"
    command = tool_command(spec, [name for name, _ in found])
    it = "it" if len(found) == 1 else "them"
    how = command if spec.kind in BY_HAND else f"run `{command}`"
    return (
        f"warning: this session installed {packages}, which the project's files ({files}) do not list, "
        f"so the next run will not have {it}. To keep {it}, {how}"
    )


def check_untracked(root: Path, installed: list[dict[str, Any]]) -> str | None:
    """The warning for what a session installed in the project at `root` (its files read
    here), or None when its files list all of it."""
    spec = detect(root)
    files = {}
    for name in spec.files:
        with contextlib.suppress(OSError):
            files[name] = (root / name).read_text(errors="replace")
    found = untracked(installed, listed_names(spec, files))
    return untracked_warning(spec, found) if found else None
