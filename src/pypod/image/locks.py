"""Lockfiles read as pinned requirements, so one uv install serves them all.

poetry.lock, pdm.lock and Pipfile.lock pin exact versions (and markers) of the
project's dependencies; pypod installs exactly those pins with uv rather than
running poetry, pdm or pipenv in the build. Packages from git, a path or a URL are
refused with a clear message instead of being guessed at.

Development groups are installed by default, as each tool's own install does:
`pipenv install --dev` (what repo2docker runs) takes Pipfile.lock's `develop`;
`poetry install` takes every group that is not optional; `pdm install` takes the
dev groups. With include_dev=False only the runtime pins are taken.
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

from packaging.utils import canonicalize_name

from ..errors import ProjectError
from .groups import poetry_optional_groups
from .pipfile import names_project

RUNTIME_GROUPS = {"main", "default"}


def _pin(name: str, version: str, marker: str | None) -> str:
    pin = f"{name}=={version}"
    return f"{pin} ; {marker}" if marker else pin


def _refuse(lockfile: str, name: str, kind: str) -> ProjectError:
    return ProjectError(
        f"{lockfile} installs {name} from a {kind} source, which pypod does not translate yet",
        hint="publish it to an index, list it in requirements.txt, or pass --image",
    )


def _either(markers: list[str | None]) -> str | None:
    """A package wanted by several groups, each under its own marker (None: always)."""
    if not markers or None in markers:
        return None
    unique = list(dict.fromkeys(m for m in markers if m))
    return unique[0] if len(unique) == 1 else " or ".join(f"({m})" for m in unique)


def poetry_requirements(
    text: str, include_dev: bool = True, pyproject: dict[str, Any] | None = None, folder: str = ""
) -> list[str]:
    """Packages of a poetry.lock (poetry 1.x `category` or 2.x `groups`): main, plus
    every group that pyproject.toml does not mark optional when include_dev."""
    data = tomllib.loads(text)
    optional = poetry_optional_groups(pyproject or {})
    pins = []
    for package in data.get("package", []):
        groups = set(package.get("groups") or [package.get("category", "main")])
        wanted = {g for g in groups if g in RUNTIME_GROUPS or (include_dev and g not in optional)}
        if not wanted:
            continue
        source = package.get("source") or {}
        if source.get("type") in ("git", "directory", "file", "url"):
            raise _refuse("poetry.lock", package["name"], source["type"])
        marker = package.get("markers")
        if isinstance(marker, dict):  # poetry 2: markers per group
            marker = _either([marker.get(g) for g in sorted(wanted)])
        pins.append(_pin(package["name"], package["version"], marker))
    return sorted(pins, key=str.lower)


def pdm_requirements(
    text: str, include_dev: bool = True, pyproject: dict[str, Any] | None = None, folder: str = ""
) -> list[str]:
    """Packages of a pdm.lock: the default group, plus its dev groups (every locked
    group that is not one of [project.optional-dependencies]) when include_dev."""
    data = tomllib.loads(text)
    extras = set((pyproject or {}).get("project", {}).get("optional-dependencies", {}))
    pins = []
    for package in data.get("package", []):
        groups = set(package.get("groups", ["default"]))
        if not groups & RUNTIME_GROUPS and not (include_dev and groups - extras):
            continue
        for key in ("git", "path", "url"):
            if key in package:
                raise _refuse("pdm.lock", package["name"], key)
        pins.append(_pin(package["name"], package["version"], package.get("marker")))
    return sorted(pins, key=str.lower)


def pipenv_requirements(
    text: str, include_dev: bool = True, pyproject: dict[str, Any] | None = None, folder: str = ""
) -> list[str]:
    """`default`, then `develop` when include_dev (a package in both is pinned once:
    pipenv locks develop against default, so their pins agree). An entry naming the
    project's own folder is left to the build (EnvSpec.install_itself)."""
    data: dict[str, Any] = json.loads(text)
    entries = dict(sorted(data.get("default", {}).items()))
    if include_dev:
        names = {canonicalize_name(name) for name in entries}
        for name, entry in sorted(data.get("develop", {}).items()):
            if canonicalize_name(name) not in names:
                entries[name] = entry
    pins = []
    for name, entry in entries.items():
        if "path" in entry and names_project(str(entry["path"]), folder):
            continue
        for key in ("git", "hg", "svn", "bzr", "path", "file"):
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


def lock_requirements(
    kind: str, text: str, include_dev: bool = True, pyproject: dict[str, Any] | None = None, folder: str = ""
) -> list[str]:
    """The pins of a lockfile. `pyproject` (the parsed companion) tells optional groups
    apart; `folder` is the lockfile's folder in the project ("" or "binder")."""
    lockfile, translate = TRANSLATORS[kind]
    try:
        return translate(text, include_dev, pyproject, folder)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, KeyError) as exc:
        raise ProjectError(f"cannot read {lockfile}: {exc}", hint=f"regenerate {lockfile} with its tool") from exc
