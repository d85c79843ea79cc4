"""Which files of the project go into its source layer (and are synced).

What git tracks plus untracked files git does not ignore; without git, every
file. Then `.dockerignore` / `.pypodignore` patterns and pypod's own excludes.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

# Never shipped, never synced: checked per path component, without pattern matching.
EXCLUDED_DIRS = frozenset({".git", "__pycache__", ".venv", ".ipynb_checkpoints", ".pypod"})
EXCLUDED_SUFFIXES = (".pyc",)
IGNORE_FILES = (".dockerignore", ".pypodignore")


def user_exclusions(root: Path, extra: Iterable[str] = ()) -> pathspec.GitIgnoreSpec | None:
    """The patterns of .dockerignore, .pypodignore and `extra`; None when there are none."""
    patterns: list[str] = []
    for name in IGNORE_FILES:
        path = root / name
        if path.exists():
            patterns += [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    patterns += list(extra)
    return pathspec.GitIgnoreSpec.from_lines(patterns) if patterns else None


def always_excluded(rel: str) -> bool:
    return rel.endswith(EXCLUDED_SUFFIXES) or not EXCLUDED_DIRS.isdisjoint(rel.split("/"))


def _git_list(root: Path, *args: str) -> list[str] | None:
    try:
        result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return [p for p in result.stdout.decode(errors="surrogateescape").split("\0") if p]


@dataclass(frozen=True)
class ProjectScan:
    """The files to ship, and the git blob ids git already knows for unchanged ones
    (path -> "x" or "-" for the executable bit, then the blob id)."""

    files: list[str]
    git_blobs: dict[str, str] = field(default_factory=dict)


def _git_scan(root: Path) -> tuple[list[str], dict[str, str]] | None:
    """Three git calls, each a C loop over the index or the tree: what is tracked (with
    blob ids), what is untracked and not ignored, and what changed since the index."""
    staged = _git_list(root, "ls-files", "-z", "--stage")
    if staged is None:
        return None
    untracked = _git_list(root, "ls-files", "-z", "--others", "--exclude-standard") or []
    status = _git_list(root, "diff-files", "-z", "--name-status") or []
    # --name-status -z alternates status and path.
    changed = dict(zip(status[1::2], status[0::2], strict=False))
    files, blobs = [], {}
    for line in staged:
        meta, _, rel = line.partition("\t")
        mode, blob, stage = meta.split()
        if changed.get(rel) == "D" or mode == "160000":  # deleted from the work tree; submodules
            continue
        files.append(rel)
        if stage == "0" and rel not in changed:
            blobs[rel] = ("x" if mode == "100755" else "-") + blob
    return files + untracked, blobs


def _walk_files(root: Path) -> list[str]:
    """Regular files and symlinks below `root`, from directory entries alone (no stat)."""
    found: list[str] = []
    stack = [("", str(root))]
    while stack:
        rel_dir, abs_dir = stack.pop()
        with os.scandir(abs_dir) as entries:
            for entry in entries:
                rel = f"{rel_dir}{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    if entry.name not in EXCLUDED_DIRS:
                        stack.append((rel + "/", entry.path))
                elif entry.is_file(follow_symlinks=False) or entry.is_symlink():
                    found.append(rel)
    return found


def scan_project(root: Path, extra_excludes: Iterable[str] = ()) -> ProjectScan:
    """What to ship: git's view of the project (or every file, outside git), less exclusions."""
    scanned = _git_scan(root)
    candidates, blobs = scanned if scanned is not None else (_walk_files(root), {})
    spec = user_exclusions(root, extra_excludes)
    kept = [rel for rel in candidates if not always_excluded(rel)]
    if spec is not None:
        kept = [rel for rel in kept if not spec.match_file(rel)]
    files = sorted(set(kept))
    return ProjectScan(files, {rel: blobs[rel] for rel in files if rel in blobs})


def project_files(root: Path, extra_excludes: Iterable[str] = ()) -> list[str]:
    """Sorted relative paths (POSIX) of the regular files and symlinks to ship."""
    return scan_project(root, extra_excludes).files
