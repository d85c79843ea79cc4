"""Which environment spec a project has, as repo2docker reads it. Pure: files in, spec out.

First match wins: a Dockerfile; uv.lock; environment.yml; poetry.lock / pdm.lock /
Pipfile.lock; requirements*.txt; pyproject.toml [project] or setup.py; nothing.
A `binder/` or `.binder/` folder, when present, is where the spec is read from.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

LOCKFILES = ("poetry.lock", "pdm.lock", "Pipfile.lock")


@dataclass(frozen=True)
class EnvSpec:
    kind: str  # dockerfile, uv, conda, poetry, pdm, pipenv, requirements, pyproject, setup.py, none
    files: tuple[str, ...]  # what the dependency build sees, relative to the project root
    reason: str
    folder: str = ""  # "", "binder" or ".binder"
    apt_file: str | None = None
    post_build: str | None = None
    python_version: str | None = None
    dependencies: tuple[str, ...] = field(default=())  # from [project] when kind == "pyproject"


def _python_version(root: Path, folder: Path) -> str | None:
    for candidate in (folder / ".python-version", root / ".python-version"):
        if candidate.exists():
            text = candidate.read_text().strip().splitlines()
            if text:
                return text[0].strip()
    runtime = folder / "runtime.txt"
    if runtime.exists():
        match = re.match(r"python-(\d+(?:\.\d+)*)", runtime.read_text().strip())
        if match:
            return match.group(1)
    pyproject = root / "pyproject.toml"
    if pyproject.exists():
        try:
            requires = tomllib.loads(pyproject.read_text()).get("project", {}).get("requires-python")
        except tomllib.TOMLDecodeError:
            requires = None
        if requires:
            return str(requires)
    return None


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
    nothing = EnvSpec(
        "none",
        extra_files,
        "no environment spec found: the base image is used as it is",
        folder_name,
        apt_file,
        post_build,
        _python_version(root, folder),
    )

    def spec(kind: str, files: tuple[str, ...], reason: str, **more: tuple[str, ...]) -> EnvSpec:
        return dataclasses.replace(nothing, kind=kind, files=files, reason=reason, **more)

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
            return spec(kind, files, f"{rel(lock)} pins the environment")
    requirements = sorted(p.name for p in folder.glob("requirements*.txt"))
    if requirements:
        return spec(
            "requirements",
            (*(rel(r) for r in requirements), *extra_files),
            f"{', '.join(rel(r) for r in requirements)} list the dependencies",
        )
    pyproject = folder / "pyproject.toml"
    if pyproject.exists():
        try:
            project = tomllib.loads(pyproject.read_text()).get("project")
        except tomllib.TOMLDecodeError:
            project = None
        if project is not None:
            deps = tuple(project.get("dependencies", []))
            return spec(
                "pyproject",
                (rel("pyproject.toml"), *extra_files),
                f"{rel('pyproject.toml')} [project] lists {len(deps)} dependencies",
                dependencies=deps,
            )
    if (folder / "setup.py").exists():
        setup_files = (rel("setup.py"), *([rel("setup.cfg")] if (folder / "setup.cfg").exists() else []))
        return spec("setup.py", (*setup_files, *extra_files), f"{rel('setup.py')} describes the project")
    return nothing
