"""REPL history: seeded into the pod from the local file, new entries merged back.

The merge appends under an exclusive lock and replaces the file atomically, so a
crash or two sessions ending at once cannot leave it half-written.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path

SEED_LIMIT = 2000
HEADER = "_HiStOrY_V2_"  # libedit's marker line; not an entry


def read_entries(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if line.strip() and line != HEADER]


def seed_entries(path: Path, limit: int = SEED_LIMIT) -> list[str]:
    return read_entries(path)[-limit:]


def entries_to_add(existing: list[str], new: list[str]) -> list[str]:
    """Skip entries that would repeat the file's last line (a reattached session
    may report its tail twice); otherwise keep order and duplicates, as a REPL does."""
    out: list[str] = []
    last = existing[-1] if existing else None
    for entry in new:
        if "\n" in entry or not entry.strip():
            continue
        if entry == last:
            continue
        out.append(entry)
        last = entry
    return out


def merge_back(path: Path, new: list[str]) -> int:
    """Append `new` to the history file; returns how many entries were added."""
    if not new:
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            current_text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
            added = entries_to_add(read_entries(path), new)
            if not added:
                return 0
            if current_text and not current_text.endswith("\n"):
                current_text += "\n"
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(current_text + "".join(e + "\n" for e in added))
                if path.exists():
                    os.chmod(tmp, path.stat().st_mode & 0o777)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            return len(added)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
