"""Where a project records its dependencies, and the edits `pypod add` and `pypod remove`
make there. Pure: the environment spec (image/detect.py) and file texts in, texts out.

The file is the one the dependency image is built from: the detected requirements
file, `[project].dependencies` of pyproject.toml, or a Pipfile's `[packages]`; a project
with none gets a requirements.txt. Projects whose environment a lockfile pins are
answered with their own tool's command: writing the requirement without the lock would
leave the lock stale, and a half-update of it would be worse.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from ..errors import ProjectError, UsageError
from ..image.detect import EnvSpec
from .vendor import use_vendored

# The tools that keep each lockfile, and their commands for add and remove.
LOCK_TOOLS = {
    "uv": ("uv add", "uv remove"),
    "poetry": ("poetry add", "poetry remove"),
    "pdm": ("pdm add", "pdm remove"),
    "pipenv": ("pipenv install", "pipenv uninstall"),
}
# Environments whose dependencies pypod cannot write: what to do instead.
BY_HAND = {
    "dockerfile": "install {what} in the Dockerfile",
    "conda": "add {what} to environment.yml (under `- pip:` for PyPI packages)",
    "setup.py": "add {what} to install_requires in setup.py",
}
NAME = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")
COMMENT = re.compile(r"\s+#.*$")


def canonical(name: str) -> str:
    """PEP 503's normalized name: `Foo.Bar_baz` and `foo-bar-baz` are one project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirement(text: str) -> Requirement:
    """A PEP 508 requirement, or a UsageError saying why it is not one."""
    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise UsageError(
            f"{text!r} is not a requirement: {str(exc).splitlines()[0]}", hint="e.g. pypod add 'six>=1.16'"
        ) from exc


def line_name(line: str) -> str | None:
    """The project a requirements-file line names (canonical), None for comments, blank lines
    and options (-r, -e, --index-url ...)."""
    text = line.split(" #", 1)[0].strip()
    if not text or text.startswith(("#", "-")):
        return None
    match = NAME.match(text)
    return canonical(match.group(1)) if match else None


@dataclass(frozen=True)
class Target:
    """The file a project's requirements are written into."""

    kind: str  # "requirements", "pyproject" or "pipfile"
    path: str  # relative to the project's root
    create: bool = False  # it does not exist yet

    @property
    def where(self) -> str:
        return {"pyproject": f"{self.path} [project].dependencies", "pipfile": f"{self.path} [packages]"}.get(
            self.kind, self.path
        )


def tool_command(spec: EnvSpec, names: list[str], remove: bool = False) -> str:
    """Pure: the command that records `names` in this project (`pypod add six`, `uv add six`),
    or what to do by hand where no command can."""
    what = " ".join(names)
    if spec.kind in LOCK_TOOLS:
        return f"{LOCK_TOOLS[spec.kind][remove]} {what}"
    if spec.kind in BY_HAND:
        return BY_HAND[spec.kind].format(what=what)
    return f"pypod {'remove' if remove else 'add'} {what}"


def dependency_target(spec: EnvSpec, names: list[str], remove: bool = False) -> Target:
    """Pure: where `pypod add`/`remove` writes for this project, or one line saying why not
    and what to run instead."""
    command = tool_command(spec, names, remove)
    if spec.kind in LOCK_TOOLS:
        lock = spec.files[0]
        where = (
            f" (in the pod's REPL too: `!{command}` changes the running interpreter's environment)"
            if spec.kind == "uv"
            else ""
        )
        raise ProjectError(
            f"{lock} pins this project's environment, and {LOCK_TOOLS[spec.kind][0].split()[0]} keeps it: "
            "pypod does not half-update a lock",
            hint=f"run `{command}` instead{where}; it updates the lock, and the next run's image follows it",
        )
    if spec.kind in BY_HAND:
        raise ProjectError(
            f"this project's environment comes from {spec.files[0]}, which pypod does not edit",
            hint=f"{command}; the next run's image has it",
        )
    prefix = f"{spec.folder}/" if spec.folder else ""
    if spec.kind == "requirements":
        names_found = [f for f in spec.files if f.rsplit("/", 1)[-1].startswith("requirements")]
        main = [f for f in names_found if f.rsplit("/", 1)[-1] == "requirements.txt"]
        return Target("requirements", (main or names_found)[0])
    if spec.kind == "pyproject":
        return Target("pyproject", f"{prefix}pyproject.toml")
    if spec.kind == "pipfile":
        return Target("pipfile", f"{prefix}Pipfile")
    return Target("requirements", f"{prefix}requirements.txt", create=True)


def _not_listed(target: Target, names: list[str]) -> ProjectError:
    return ProjectError(
        f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} not in {target.where}",
        hint=f"`pypod remove` takes what {target.path} lists; see the file",
    )


def edit(target: Target, text: str, requirements: list[str], remove: bool = False) -> str:
    """Pure: the file's new text with `requirements` added (an entry of the same project is
    replaced in place) or, with remove, the entries of those projects taken out. Formatting,
    comments and order are kept."""
    parsed = [parse_requirement(r) for r in requirements]
    if target.kind == "requirements":
        return _edit_requirements(target, text, parsed, remove)
    use_vendored()
    import tomlkit

    try:
        document = tomlkit.parse(text)
    except Exception as exc:  # tomlkit's parse errors share no public base class
        raise ProjectError(f"{target.path} is not valid TOML: {exc}", hint="fix the file") from exc
    if target.kind == "pyproject":
        _edit_pyproject(target, document, parsed, remove)
    else:
        _edit_pipfile(target, document, parsed, remove)
    return tomlkit.dumps(document)


def _edit_requirements(target: Target, text: str, parsed: list[Requirement], remove: bool) -> str:
    lines = text.splitlines()
    wanted = {canonical(r.name): r for r in parsed}
    if remove:
        listed = {line_name(line) for line in lines}
        missing = [r.name for r in parsed if canonical(r.name) not in listed]
        if missing:
            raise _not_listed(target, missing)
        kept = [line for line in lines if line_name(line) not in wanted]
        return "".join(f"{line}\n" for line in kept)
    done: set[str] = set()
    out = []
    for line in lines:
        name = line_name(line)
        if name in wanted and name not in done:
            comment = COMMENT.search(line)
            out.append(f"{wanted[name]}{comment.group(0) if comment else ''}")
            done.add(name)
        elif name not in wanted:
            out.append(line)
    out += [str(r) for key, r in wanted.items() if key not in done]
    return "".join(f"{line}\n" for line in out)


def _edit_pyproject(target: Target, document: Any, parsed: list[Requirement], remove: bool) -> None:
    import tomlkit

    project = document.get("project")
    if project is None:
        raise ProjectError(
            f"{target.path} has no [project] table to list dependencies in",
            hint="add [project] with a name and version, or list them in requirements.txt",
        )
    dependencies = project.get("dependencies")
    if dependencies is None:
        dependencies = tomlkit.array()
        project["dependencies"] = dependencies
    names = [_entry_name(str(item)) for item in dependencies]
    if remove:
        missing = [r.name for r in parsed if canonical(r.name) not in names]
        if missing:
            raise _not_listed(target, missing)
        gone = {canonical(r.name) for r in parsed}
        for index in reversed(range(len(names))):
            if names[index] in gone:
                del dependencies[index]
        return
    for requirement in parsed:
        key = canonical(requirement.name)
        if key in names:
            dependencies[names.index(key)] = str(requirement)
        else:
            dependencies.append(str(requirement))
            names.append(key)


def _entry_name(text: str) -> str:
    match = NAME.match(text)
    return canonical(match.group(1)) if match else ""


def pipfile_value(requirement: Requirement) -> Any:
    """Pure: a requirement as a Pipfile [packages] value: "*", ">=1", or a table with
    version, extras and markers. URLs are refused (pipenv takes them as tables of its own)."""
    if requirement.url:
        raise UsageError(
            f"{requirement} is a URL requirement, which a Pipfile writes as a table of its own",
            hint="add it to the Pipfile by hand ({git = ...} or {file = ...})",
        )
    version = str(requirement.specifier) or "*"
    if not requirement.extras and not requirement.marker:
        return version
    import tomlkit

    table = tomlkit.inline_table()
    table["version"] = version
    if requirement.extras:
        table["extras"] = sorted(requirement.extras)
    if requirement.marker:
        table["markers"] = str(requirement.marker)
    return table


def _edit_pipfile(target: Target, document: Any, parsed: list[Requirement], remove: bool) -> None:
    import tomlkit

    packages = document.get("packages")
    if packages is None:
        packages = tomlkit.table()
        document["packages"] = packages
    keys = {canonical(key): key for key in packages}
    if remove:
        missing = [r.name for r in parsed if canonical(r.name) not in keys]
        if missing:
            raise _not_listed(target, missing)
        for requirement in parsed:
            del packages[keys[canonical(requirement.name)]]
        return
    for requirement in parsed:
        key = keys.get(canonical(requirement.name), requirement.name)
        packages[key] = pipfile_value(requirement)


def listed_names(spec: EnvSpec, files: dict[str, str]) -> set[str]:
    """Pure: every project (canonical name) the project's environment files name, locked
    transitive ones included; `files` holds the texts of spec.files. Kinds pypod cannot read
    (a Dockerfile, environment.yml, setup.py) list nothing here."""
    if spec.kind in ("pyproject", "pipfile"):
        return {_entry_name(r) for r in (*spec.dependencies, *spec.dev_dependencies)}
    if spec.kind == "requirements":
        return {n for name in spec.files if name in files for n in map(line_name, files[name].splitlines()) if n}
    if spec.kind in ("uv", "poetry", "pdm", "pipenv"):
        lock = files.get(spec.files[0], "")
        if spec.kind == "pipenv":
            import json

            data = json.loads(lock or "{}")
            return {canonical(n) for section in ("default", "develop") for n in data.get(section, {})}
        try:
            packages = tomllib.loads(lock).get("package", [])
        except tomllib.TOMLDecodeError:
            return set()
        return {canonical(p["name"]) for p in packages if isinstance(p, dict) and "name" in p}
    return set()
