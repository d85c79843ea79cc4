"""Where a path from the other side may land: under the sync root, and nowhere else.

Enforced by the receiver, on both sides, so a compromised pod cannot write outside
the local project folder (nor a confused client outside the pod's).
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from ..errors import UnsafePath


def resolve_under(root: Path, rel: str) -> Path:
    """`root / rel`, or UnsafePath if `rel` is absolute, climbs out with `..`, or
    passes through a symlinked directory."""
    if not rel or "\0" in rel or "\\" in rel:
        raise UnsafePath(f"refusing path {rel!r}: empty, NUL or backslash")
    if rel.startswith("/") or posixpath.isabs(rel):
        raise UnsafePath(f"refusing absolute path {rel!r}")
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafePath(f"refusing path {rel!r}: '..', '.' or empty components")
    current = root
    for part in parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise UnsafePath(f"refusing path {rel!r}: {current.relative_to(root)} is a symlink")
    return root / rel


def check_link_target(root: Path, rel: str, target: str) -> None:
    """A symlink at `rel` may point only inside `root` (relative targets only)."""
    if os.path.isabs(target):
        raise UnsafePath(f"refusing symlink {rel!r} -> {target!r}: absolute target")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    if joined == ".." or joined.startswith("../"):
        raise UnsafePath(f"refusing symlink {rel!r} -> {target!r}: points outside the sync root")
