"""Which files of the project go into its source layer (and are synced).

What git tracks plus untracked files git does not ignore; without git, every
file. Then `.dockerignore` / `.pypodignore` patterns and pypod's own excludes.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pathspec

ALWAYS_EXCLUDED = (".git/", "__pycache__/", "*.pyc", ".venv/", ".ipynb_checkpoints/", ".pypod/")
IGNORE_FILES = (".dockerignore", ".pypodignore")


def exclusion_spec(root: Path, extra: Iterable[str] = ()) -> pathspec.GitIgnoreSpec:
    patterns = list(ALWAYS_EXCLUDED)
    for name in IGNORE_FILES:
        path = root / name
        if path.exists():
            patterns += [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    patterns += list(extra)
    return pathspec.GitIgnoreSpec.from_lines(patterns)


def _git_files(root: Path) -> list[str] | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return [p for p in result.stdout.decode(errors="surrogateescape").split("\0") if p]


def _walk_files(root: Path) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in (".git", "__pycache__", ".venv")]
        rel = os.path.relpath(folder, root)
        for name in files:
            found.append(name if rel == "." else f"{rel}/{name}")
    return found


def project_files(root: Path, extra_excludes: Iterable[str] = ()) -> list[str]:
    """Sorted relative paths (POSIX) of the regular files and symlinks to ship."""
    candidates = _git_files(root)
    if candidates is None:
        candidates = _walk_files(root)
    spec = exclusion_spec(root, extra_excludes)
    kept = []
    for rel in candidates:
        if spec.match_file(rel):
            continue
        path = root / rel
        if path.is_symlink() or path.is_file():  # git lists deleted-but-tracked files too
            kept.append(rel)
    return sorted(set(kept))
