"""A Pipfile (without its lock) read as pipenv reads it, into PEP 508 requirements.

pipenv turns each entry into a pip line (pipenv/utils/dependencies.py,
`dependency_as_pip_install_line`): `"*"` is any version, a version without an
operator means `==`, a table has `version`, `extras`, `markers` and marker
variables as keys of their own (`sys_platform = "== 'linux'"`), joined with `and`.
pypod does the same, and installs the list with uv. A `{path = "."}` entry naming
the project itself installs the project (its dependencies, and its source on the
path as an editable install would put it); git, URL, file and other path sources
are refused by name, as they are in the lockfiles.
"""

from __future__ import annotations

import posixpath
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from packaging.markers import InvalidMarker, Marker, default_environment
from packaging.requirements import InvalidRequirement, Requirement

from ..errors import ProjectError

COMPARE_OP = re.compile(r"^(<=?|>=?|={2,3}|[~!]=)\s*")
VCS_KEYS = ("git", "hg", "svn", "bzr")
MARKER_KEYS = tuple(default_environment())
# Sources that are PyPI itself: anything else is a private index pypod must not guess at.
PYPI_HOSTS = ("pypi.org", "pypi.python.org", "files.pythonhosted.org")
VERSION = re.compile(r"\d+(\.\d+)*")


@dataclass(frozen=True)
class ProjectItself:
    """A Pipfile entry that names the project's own folder."""

    name: str
    extras: tuple[str, ...] = ()
    editable: bool = False


@dataclass(frozen=True)
class Pipfile:
    packages: tuple[str, ...]
    dev_packages: tuple[str, ...]
    itself: ProjectItself | None = None  # from [packages] or [dev-packages]
    itself_is_dev: bool = False
    python_version: str | None = None  # [requires] python_full_version or python_version
    private_sources: tuple[str, ...] = field(default=())  # names of [[source]]s that are not PyPI


def _refuse(name: str, kind: str, where: str) -> ProjectError:
    return ProjectError(
        f"{where} installs {name} from a {kind} source, which pypod does not translate yet",
        hint="publish it to an index, list it in requirements.txt, or pass --image",
    )


def _markers(name: str, entry: dict[str, Any], where: str) -> str:
    parts = []
    if entry.get("markers"):
        parts.append(str(entry["markers"]))
    for key in MARKER_KEYS:
        if key in entry:
            parts.append(f"{key} {entry[key]}")
    try:
        checked = [str(Marker(part)) for part in parts]
    except InvalidMarker as exc:
        raise ProjectError(f"{where}: the markers of {name} are not valid: {exc}", hint="fix the entry") from exc
    if len(checked) == 1:
        return checked[0]
    return " and ".join(f"({part})" for part in checked)


def _version(value: str) -> str:
    value = value.strip()
    if not value or value == "*":
        return ""
    return value if COMPARE_OP.match(value) else f"=={value}"


def requirement_line(name: str, entry: Any, where: str = "Pipfile") -> str:
    """Pure: one named Pipfile entry as a PEP 508 requirement (pipenv's translation)."""
    if isinstance(entry, str):
        line = f"{name}{_version(entry)}"
    elif isinstance(entry, dict):
        vcs = next((key for key in VCS_KEYS if key in entry), None)
        if vcs:
            raise _refuse(name, vcs, where)
        if "file" in entry:
            kind = "URL" if str(entry["file"]).startswith(("http:", "https:", "ftp:")) else "file"
            raise _refuse(name, kind, where)
        if "path" in entry:
            raise _refuse(name, "path", where)
        extras = entry.get("extras") or []
        line = name + (f"[{','.join(extras)}]" if extras else "") + _version(str(entry.get("version", "*")))
        marker = _markers(name, entry, where)
        if marker:
            line = f"{line} ; {marker}"
    else:
        raise ProjectError(f"{where}: {name} = {entry!r} is not a version or a table", hint='e.g. {name} = "*"')
    try:
        Requirement(line)
    except InvalidRequirement as exc:
        raise ProjectError(f"{where}: {name} is not a valid requirement: {exc}", hint="fix the entry") from exc
    return line


def names_project(path: str, pipfile_dir: str) -> bool:
    """Whether a path entry, relative to the Pipfile's folder, is the project's root."""
    return posixpath.normpath(posixpath.join(pipfile_dir or ".", path)) == "."


def _section(table: dict[str, Any], where: str, pipfile_dir: str) -> tuple[tuple[str, ...], ProjectItself | None]:
    lines, itself = [], None
    for name, entry in table.items():
        if isinstance(entry, dict) and "path" in entry and names_project(str(entry["path"]), pipfile_dir):
            itself = ProjectItself(name, tuple(entry.get("extras") or ()), bool(entry.get("editable")))
            continue
        lines.append(requirement_line(name, entry, where))
    return tuple(lines), itself


def _python_version(requires: dict[str, Any]) -> str | None:
    """repo2docker's reading: python_full_version, else python_version, as digits."""
    for key in ("python_full_version", "python_version"):
        match = VERSION.match(str(requires.get(key, "")))
        if match:
            return match.group()
    return None


def private_sources(sources: list[dict[str, Any]]) -> tuple[str, ...]:
    """Pure: the names (never the URLs, which may hold credentials) of non-PyPI sources."""
    names = []
    for source in sources:
        url = str(source.get("url", ""))
        host = re.sub(r"^[a-z+]+://([^/@]*@)?", "", url).split("/", 1)[0].split(":", 1)[0].lower()
        if host not in PYPI_HOSTS:
            names.append(str(source.get("name") or host or "unnamed"))
    return tuple(names)


def read_pipfile(text: str, where: str = "Pipfile", pipfile_dir: str = "") -> Pipfile:
    """Pure: a Pipfile's [packages], [dev-packages], [requires] and [[source]].
    `pipfile_dir` is the Pipfile's folder relative to the project root ("" or "binder")."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProjectError(f"{where} is not valid TOML: {exc}", hint="fix the file") from exc
    packages, itself = _section(data.get("packages", {}), where, pipfile_dir)
    dev_packages, dev_itself = _section(data.get("dev-packages", {}), where, pipfile_dir)
    return Pipfile(
        packages,
        dev_packages,
        itself or dev_itself,
        itself_is_dev=itself is None and dev_itself is not None,
        python_version=_python_version(data.get("requires", {})),
        private_sources=private_sources(data.get("source", [])),
    )


def pipfile_python_version(text: str) -> str | None:
    """Pure: only a Pipfile's [requires] (beside a lock, whose entries are what count)."""
    try:
        return _python_version(tomllib.loads(text).get("requires", {}))
    except (tomllib.TOMLDecodeError, AttributeError):
        return None


def read_lock_meta(text: str) -> tuple[str | None, tuple[str, ...]]:
    """Pure: a Pipfile.lock's `_meta`: the Python it requires and its non-PyPI sources."""
    import json

    try:
        meta = json.loads(text).get("_meta", {})
    except (ValueError, AttributeError):
        return None, ()
    return _python_version(meta.get("requires", {})), private_sources(meta.get("sources", []))


def lock_itself(text: str, lock_dir: str = "") -> tuple[ProjectItself | None, bool]:
    """Pure: a Pipfile.lock entry that names the project's own folder, and whether only
    `develop` has it. Its dependencies are pinned in the lock beside it."""
    import json

    try:
        data = json.loads(text)
    except ValueError:
        return None, False
    found: dict[str, ProjectItself] = {}
    for section in ("default", "develop"):
        for name, entry in (data.get(section) or {}).items():
            if isinstance(entry, dict) and "path" in entry and names_project(str(entry["path"]), lock_dir):
                extras = tuple(entry.get("extras") or ())
                found.setdefault(section, ProjectItself(name, extras, bool(entry.get("editable"))))
    itself = found.get("default") or found.get("develop")
    return itself, "default" not in found and itself is not None
