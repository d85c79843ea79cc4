"""The libraries pypod's in-pod code needs, shipped beside it (image/ship.py VENDORED):
found through sys.path only when the environment lacks them."""

from __future__ import annotations

import sys
from pathlib import Path


def use_vendored() -> None:
    """In a pod, append pypod's vendor folder (`.pypod/vendor` beside `.pypod/lib`) to
    sys.path, last: a library the project's environment has is still imported from there."""
    lib = Path(__file__).resolve().parents[2]
    vendor = lib.parent / "vendor"
    if lib.name == "lib" and vendor.is_dir() and str(vendor) not in sys.path:
        sys.path.append(str(vendor))
