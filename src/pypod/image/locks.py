"""Lockfiles read as pinned requirements, so one uv install serves them all.

poetry.lock, pdm.lock and Pipfile.lock pin exact versions (and markers) of the
project's runtime dependencies; pypod installs exactly those pins with uv rather
than running poetry, pdm or pipenv in the build. Packages from git, a path or a
URL are refused with a clear message instead of being guessed at.
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

from ..errors import ProjectError

RUNTIME_GROUPS = {"main", "default"}


def _pin(name: str, version: str, marker: str | None) -> str:
    pin = f"{name}=={version}"
    return f"{pin} ; {marker}" if marker else pin


def _refuse(lockfile: str, name: str, kind: str) -> ProjectError:
    return ProjectError(
        f"{lockfile} installs {name} from a {kind} source, which pypod does not translate yet",
        hint="publish it to an index, list it in requirements.txt, or pass --image",
    )


def poetry_requirements(text: str) -> list[str]:
    """Runtime packages of a poetry.lock (poetry 1.x `category` or 2.x `groups`)."""
    data = tomllib.loads(text)
    pins = []
    for package in data.get("package", []):
        groups = set(package.get("groups") or [package.get("category", "main")])
        if not groups & RUNTIME_GROUPS:
            continue
        source = package.get("source") or {}
        if source.get("type") in ("git", "directory", "file", "url"):
            raise _refuse("poetry.lock", package["name"], source["type"])
        marker = package.get("markers")
        if isinstance(marker, dict):  # poetry 2: markers per group
            marker = marker.get("main")
        pins.append(_pin(package["name"], package["version"], marker))
    return sorted(pins, key=str.lower)


def pdm_requirements(text: str) -> list[str]:
    data = tomllib.loads(text)
    pins = []
    for package in data.get("package", []):
        if not set(package.get("groups", ["default"])) & RUNTIME_GROUPS:
            continue
        for key in ("git", "path", "url"):
            if key in package:
                raise _refuse("pdm.lock", package["name"], key)
        pins.append(_pin(package["name"], package["version"], package.get("marker")))
    return sorted(pins, key=str.lower)


def pipenv_requirements(text: str) -> list[str]:
    data: dict[str, Any] = json.loads(text)
    pins = []
    for name, entry in sorted(data.get("default", {}).items()):
        for key in ("git", "path", "file"):
            if key in entry:
                raise _refuse("Pipfile.lock", name, key)
        version = str(entry.get("version", "")).removeprefix("==")
        if not version:
            raise ProjectError(f"Pipfile.lock pins no version for {name}", hint="run `pipenv lock` again")
        pins.append(_pin(name, version, entry.get("markers")))
    return pins


TRANSLATORS = {
    "poetry": ("poetry.lock", poetry_requirements),
    "pdm": ("pdm.lock", pdm_requirements),
    "pipenv": ("Pipfile.lock", pipenv_requirements),
}


def lock_requirements(kind: str, text: str) -> list[str]:
    lockfile, translate = TRANSLATORS[kind]
    try:
        return translate(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, KeyError) as exc:
        raise ProjectError(f"cannot read {lockfile}: {exc}", hint=f"regenerate {lockfile} with its tool") from exc
