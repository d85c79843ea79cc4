"""The project: its root folder and its git identity. No git repository is fine."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT_MARKERS = ("pyproject.toml", "setup.py", "requirements.txt")


@dataclass(frozen=True)
class GitIdentity:
    repo: str
    branch: str
    commit: str  # short sha, "" outside git or before the first commit
    dirty: bool


@dataclass(frozen=True)
class Project:
    root: Path
    git: GitIdentity

    @property
    def name(self) -> str:
        return self.git.repo or self.root.name


def find_root(start: Path) -> Path:
    """The nearest folder at or above `start` with a project marker; else `start`."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if any((folder / marker).exists() for marker in ROOT_MARKERS):
            return folder
    return start


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def git_identity(root: Path) -> GitIdentity:
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None:
        return GitIdentity(repo=root.name, branch="", commit="", dirty=False)
    branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD") or ""
    if branch == "HEAD":  # detached
        branch = "detached"
    commit = _git(root, "rev-parse", "--short=7", "HEAD") or ""
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return GitIdentity(repo=Path(top).name, branch=branch, commit=commit, dirty=bool(status))


def load_project(start: Path) -> Project:
    root = find_root(start)
    return Project(root=root, git=git_identity(root))
