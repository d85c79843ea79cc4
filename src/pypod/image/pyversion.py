"""Does the base image have the Python the project asks for?

pypod builds on the base image's Python; it does not install another. So when
runtime.txt, .python-version, requires-python or a Pipfile asks for a version the
base lacks, pypod says so (one line, with the next step) instead of building on it
silently.

The base's version is known, in this order, from:
1. the base image's config, `PYTHON_VERSION` in its Env (the official python images
   and most images built from them set it): read from the registry before any build,
   so it works with every builder and for images that are only reused;
2. the build itself: every generated build prints `pypod: project python X.Y.Z`
   (dockerfile.PYTHON_STEP), which pypod reads from the build log and keeps per base
   digest, so later reuses of that base know it too.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from .detect import EnvSpec

RECORD = Path(os.environ.get("PYPOD_CACHE", "~/.cache/pypod")).expanduser() / "base-python.json"
BUILD_LINE = re.compile(r"pypod: project python (\d+\.\d+(?:\.\d+)?)")
VERSION_PREFIX = re.compile(r"\d+(\.\d+)*")
# Kinds whose Python does not come from the base image.
OWN_PYTHON = ("conda", "dockerfile")


def satisfies(asked: str, have: str) -> bool | None:
    """Pure: whether Python `have` is what `asked` asks for (None: cannot tell).

    A version ("3.10", "3.10.4", "3") is compared on major.minor, as repo2docker does;
    anything else is read as a specifier (requires-python: ">=3.10,<3.13")."""
    try:
        found = Version(have)
    except InvalidVersion:
        return None
    match = VERSION_PREFIX.fullmatch(asked.strip())
    if match:
        wanted = [int(part) for part in asked.strip().split(".")][:2]
        return list(found.release[: len(wanted)]) == wanted
    try:
        return found in SpecifierSet(asked)
    except InvalidSpecifier:
        return None


def config_python_version(config: dict[str, Any]) -> str | None:
    """Pure: PYTHON_VERSION from an image config's Env, if it names a version."""
    for item in (config.get("config") or {}).get("Env") or []:
        key, _, value = item.partition("=")
        if key == "PYTHON_VERSION" and VERSION_PREFIX.match(value):
            return value
    return None


def build_log_python_version(log: str) -> str | None:
    """Pure: the version a generated build printed (the last, should a log hold two)."""
    found = BUILD_LINE.findall(log)
    return found[-1] if found else None


def mismatch_warning(spec: EnvSpec, base_image: str, have: str | None) -> str | None:
    """Pure: the one-line warning when the base's Python is not the one asked for."""
    if not spec.python_version or not have or spec.kind in OWN_PYTHON:
        return None
    if satisfies(spec.python_version, have) is not False:
        return None
    asked = spec.python_version
    exact = VERSION_PREFIX.fullmatch(asked.strip())
    wanted = f"Python {asked}" if exact else f"Python {asked!r}"
    example = ""
    if exact:
        major_minor = ".".join(asked.strip().split(".")[:2])
        example = f", e.g. --base-image docker.io/library/python:{major_minor}-slim"
    return (
        f"warning: {spec.python_source} asks for {wanted}, but the base image {base_image} has Python {have}; "
        f"pypod installs into the base's Python. Pass --base-image with {wanted}{example}"
    )


def _records() -> dict[str, str]:
    try:
        data = json.loads(RECORD.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def recorded_python_version(base_digest: str) -> str | None:
    """The version an earlier build on this machine saw for this base (by digest)."""
    value = _records().get(base_digest)
    return value if isinstance(value, str) else None


def record_python_version(base_digest: str, version: str) -> None:
    records = _records()
    if records.get(base_digest) == version:
        return
    records[base_digest] = version
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    tmp = RECORD.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(records, sort_keys=True))
    os.replace(tmp, RECORD)
