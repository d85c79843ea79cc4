"""Which environment spec a project has, as repo2docker reads it. Pure: files in, spec out.

First match wins: a Dockerfile; uv.lock; environment.yml; poetry.lock / pdm.lock /
Pipfile.lock; a Pipfile; requirements*.txt; pyproject.toml [project] (or
[dependency-groups]) or setup.py; nothing. A `binder/` or `.binder/` folder, when
present, is where the spec is read from (repo2docker's order: its conda, then
Pipfile, then Python buildpacks).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ProjectError
from .groups import dev_requirements
from .pipfile import lock_itself, pipfile_python_version, read_lock_meta, read_pipfile

LOCKFILES = ("poetry.lock", "pdm.lock", "Pipfile.lock")


@dataclass(frozen=True)
class EnvSpec:
    kind: str  # dockerfile, uv, conda, poetry, pdm, pipenv, pipfile, requirements, pyproject, setup.py, none
    files: tuple[str, ...]  # what the dependency build sees, relative to the project root
    reason: str
    folder: str = ""  # "", "binder" or ".binder"
    apt_file: str | None = None
    post_build: str | None = None
    python_version: str | None = None  # as asked: "3.10", "3.10.4" or a specifier (requires-python)
    python_source: str | None = None  # the file that asks for it
    dependencies: tuple[str, ...] = field(default=())  # read here for kinds pyproject and pipfile
    dev_dependencies: tuple[str, ...] = field(default=())  # likewise: installed unless --no-dev
    # A Pipfile(.lock) entry {path = "."}: the project itself is installed. Its dependencies come
    # from "pyproject" (in `dependencies`), "setup.py" (egg_info in the build) or the "lock".
    install_itself: str | None = None
    itself_extras: tuple[str, ...] = field(default=())
    itself_is_dev: bool = False  # named in [dev-packages] only: --no-dev leaves it out
    itself_paths: tuple[str, ...] = field(default=())  # where its source is importable from: "src" or ""
    private_sources: tuple[str, ...] = field(default=())  # Pipfile [[source]] names that are not PyPI


def _toml(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ProjectError(f"{path.name} is not valid TOML: {exc}", hint="fix the file") from exc


def _python_version(root: Path, folder: Path, prefix: str) -> tuple[str | None, str | None]:
    """The Python the project asks for, and where: .python-version, runtime.txt, requires-python."""
    candidates = ((folder, f"{prefix}.python-version"), (root, ".python-version"))
    for candidate, name in ((where / ".python-version", name) for where, name in candidates):
        if candidate.exists():
            text = candidate.read_text().strip().splitlines()
            if text:
                return text[0].strip(), name
    runtime = folder / "runtime.txt"
    if runtime.exists():
        match = re.match(r"python-(\d+(?:\.\d+)*)", runtime.read_text().strip())
        if match:
            return match.group(1), f"{prefix}runtime.txt"
    try:
        pyproject = _toml(root / "pyproject.toml") or {}
    except ProjectError:
        pyproject = {}
    requires = pyproject.get("project", {}).get("requires-python")
    return (str(requires), "pyproject.toml requires-python") if requires else (None, None)


def _itself(root: Path, extras: tuple[str, ...]) -> tuple[str | None, tuple[str, ...], tuple[str, ...]]:
    """How the project itself is installed: its kind, files and (for pyproject) dependencies."""
    pyproject = _toml(root / "pyproject.toml")
    if pyproject is not None and "project" in pyproject:
        project = pyproject["project"]
        deps = list(project.get("dependencies", []))
        for extra in extras:
            deps += project.get("optional-dependencies", {}).get(extra, [])
        return "pyproject", ("pyproject.toml",), tuple(deps)
    if (root / "setup.py").exists():
        return "setup.py", ("setup.py", *(["setup.cfg"] if (root / "setup.cfg").exists() else [])), ()
    raise ProjectError(
        'the Pipfile installs the project itself ({path = "."}), but it has no pyproject.toml [project] '
        "and no setup.py",
        hint="add one, or remove that entry from the Pipfile",
    )


def _import_paths(root: Path) -> tuple[str, ...]:
    """Where the project's packages are imported from, as an editable install puts them
    on the path: src/ in a src layout, else the project's root."""
    return ("src",) if (root / "src").is_dir() else ("",)


def detect(root: Path, dockerfile: str | None = None) -> EnvSpec:
    """The project's environment spec, with the reason it was chosen."""
    folder_name = next((f for f in ("binder", ".binder") if (root / f).is_dir()), "")
    folder = root / folder_name if folder_name else root
    prefix = f"{folder_name}/" if folder_name else ""

    def rel(name: str) -> str:
        return f"{prefix}{name}"

    apt_file = rel("apt.txt") if (folder / "apt.txt").exists() else None
    post_build = rel("postBuild") if (folder / "postBuild").exists() else None
    extra_files = tuple(f for f in (apt_file, post_build) if f)
    asked, asked_where = _python_version(root, folder, prefix)
    nothing = EnvSpec(
        "none",
        extra_files,
        "no environment spec found: the base image is used as it is",
        folder_name,
        apt_file,
        post_build,
        asked,
        asked_where,
    )

    def spec(kind: str, files: tuple[str, ...], reason: str, **more: Any) -> EnvSpec:
        return dataclasses.replace(nothing, kind=kind, files=files, reason=reason, **more)

    def pipenv_python(version: str | None, where: str) -> dict[str, Any]:
        # repo2docker's Pipfile buildpack takes the Python from the Pipfile(.lock) alone.
        return {"python_version": version, "python_source": where} if version else {}

    if dockerfile:
        return spec("dockerfile", (dockerfile,), f"--dockerfile {dockerfile}")
    if (folder / "Dockerfile").exists():
        return spec("dockerfile", (rel("Dockerfile"),), f"{rel('Dockerfile')} is used as given")
    if (folder / "uv.lock").exists():
        files = (rel("uv.lock"), *([rel("pyproject.toml")] if (folder / "pyproject.toml").exists() else []))
        return spec("uv", files + extra_files, f"{rel('uv.lock')} pins the environment")
    for name in ("environment.yml", "environment.yaml"):
        if (folder / name).exists():
            return spec("conda", (rel(name), *extra_files), f"{rel(name)} is a conda environment")
    for lock, kind, companion in (
        ("poetry.lock", "poetry", "pyproject.toml"),
        ("pdm.lock", "pdm", "pyproject.toml"),
        ("Pipfile.lock", "pipenv", "Pipfile"),
    ):
        if (folder / lock).exists():
            files = (rel(lock), *([rel(companion)] if (folder / companion).exists() else []), *extra_files)
            more: dict[str, Any] = {}
            if kind == "pipenv":
                version, sources = read_lock_meta((folder / lock).read_text())
                where = rel(lock)
                if not version and (folder / "Pipfile").exists():
                    version, where = pipfile_python_version((folder / "Pipfile").read_text()), rel("Pipfile")
                more = {"private_sources": sources, **pipenv_python(version, where)}
                itself, itself_is_dev = lock_itself((folder / lock).read_text(), folder_name)
                if itself:
                    more |= {"install_itself": "lock", "itself_is_dev": itself_is_dev}
                    more["itself_paths"] = _import_paths(root)
            return spec(kind, files, f"{rel(lock)} pins the environment", **more)
    if (folder / "Pipfile").exists():
        pipfile = read_pipfile((folder / "Pipfile").read_text(), rel("Pipfile"), folder_name)
        count = f"{len(pipfile.packages)} packages and {len(pipfile.dev_packages)} dev packages"
        packages, dev_packages, itself_files = pipfile.packages, pipfile.dev_packages, ()
        kind, extras = None, ()
        if pipfile.itself:
            kind, itself_files, itself_deps = _itself(root, pipfile.itself.extras)
            extras = pipfile.itself.extras
            if pipfile.itself_is_dev:
                dev_packages += itself_deps
            else:
                packages += itself_deps
        itself = f", and the project itself from its {kind}" if kind else ""
        return spec(
            "pipfile",
            (rel("Pipfile"), *itself_files, *extra_files),
            f"{rel('Pipfile')} lists {count}{itself} (no Pipfile.lock)",
            dependencies=packages,
            dev_dependencies=dev_packages,
            install_itself=kind,
            itself_extras=extras,
            itself_is_dev=pipfile.itself_is_dev,
            itself_paths=_import_paths(root) if kind else (),
            private_sources=pipfile.private_sources,
            **pipenv_python(pipfile.python_version, rel("Pipfile")),
        )
    requirements = sorted(p.name for p in folder.glob("requirements*.txt"))
    if requirements:
        return spec(
            "requirements",
            (*(rel(r) for r in requirements), *extra_files),
            f"{', '.join(rel(r) for r in requirements)} list the dependencies",
        )
    pyproject = _toml(folder / "pyproject.toml")
    if pyproject is not None and ("project" in pyproject or "dependency-groups" in pyproject):
        deps = tuple(pyproject.get("project", {}).get("dependencies", []))
        dev = dev_requirements(pyproject)
        if "project" in pyproject:
            listed = f"[project] lists {len(deps)} dependencies" + (f" and {len(dev)} dev dependencies" if dev else "")
        else:
            listed = f"[dependency-groups] list {len(dev)} dev dependencies"
        return spec(
            "pyproject",
            (rel("pyproject.toml"), *extra_files),
            f"{rel('pyproject.toml')} {listed}",
            dependencies=deps,
            dev_dependencies=dev,
        )
    if (folder / "setup.py").exists():
        setup_files = (rel("setup.py"), *([rel("setup.cfg")] if (folder / "setup.cfg").exists() else []))
        return spec("setup.py", (*setup_files, *extra_files), f"{rel('setup.py')} describes the project")
    return nothing
