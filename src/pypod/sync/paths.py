"""Where a path from the other side may land: under the sync root, and nowhere else.

The checks live in the agent's tree module (standard library only), so the pod
and the laptop enforce the same rules as receivers; here they raise pypod's
UnsafePath error, with its hint and exit code.
"""

from __future__ import annotations

from pathlib import Path

from ..agent import tree
from ..errors import UnsafePath


def resolve_under(root: Path, rel: str) -> Path:
    """`root / rel`, or UnsafePath if `rel` is absolute, climbs out with `..`, or
    passes through a symlinked directory."""
    try:
        return Path(tree.resolve_under(str(root), rel))
    except tree.UnsafePathError as exc:
        raise UnsafePath(str(exc)) from None


def check_link_target(root: Path, rel: str, target: str) -> None:
    """A symlink at `rel` may point only inside `root` (relative targets only)."""
    try:
        tree.check_link_target(rel, target)
    except tree.UnsafePathError as exc:
        raise UnsafePath(str(exc)) from None
