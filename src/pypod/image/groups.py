"""Development dependencies declared in pyproject.toml, as the tools that own them install them.

- PEP 735 `[dependency-groups]`: the groups `uv sync` installs by default, which is
  `dev` unless `[tool.uv] default-groups` names others (or "all"); `{include-group}`
  entries are resolved by pypa's `dependency-groups`.
- poetry's groups (`[tool.poetry.group.<name>.dependencies]`, and poetry 1's
  `[tool.poetry.dev-dependencies]`): `poetry install` installs every group that is
  not `optional = true`. Poetry's version syntax (`^1.2`, `~1.2`, tables) is turned
  into PEP 508 by poetry-core itself.
"""

from __future__ import annotations

from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from ..errors import ProjectError

NON_INDEX_KEYS = ("git", "path", "url", "file")


def uv_default_groups(pyproject: dict[str, Any]) -> list[str]:
    """Pure: the [dependency-groups] that `uv sync` installs without flags."""
    groups = pyproject.get("dependency-groups", {})
    chosen = pyproject.get("tool", {}).get("uv", {}).get("default-groups", ["dev"])
    if chosen == "all":
        return list(groups)
    return [name for name in chosen if name in groups]


def dependency_group_requirements(pyproject: dict[str, Any], names: list[str]) -> list[str]:
    """Pure: the requirements of PEP 735 groups, include-group entries resolved."""
    if not names:
        return []
    from dependency_groups import resolve

    try:
        return list(resolve(pyproject.get("dependency-groups", {}), *names))
    except (LookupError, ValueError, TypeError) as exc:
        raise ProjectError(
            f"pyproject.toml [dependency-groups] cannot be resolved: {exc}", hint="fix the group named there"
        ) from exc


def poetry_dev_groups(pyproject: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Pure: poetry's non-main groups that `poetry install` installs (not optional)."""
    poetry = pyproject.get("tool", {}).get("poetry", {})
    groups = {
        name: table.get("dependencies", {})
        for name, table in poetry.get("group", {}).items()
        if name != "main" and not table.get("optional", False)
    }
    if poetry.get("dev-dependencies"):
        groups.setdefault("dev", {}).update(poetry["dev-dependencies"])
    return groups


def poetry_optional_groups(pyproject: dict[str, Any]) -> set[str]:
    poetry = pyproject.get("tool", {}).get("poetry", {})
    return {name for name, table in poetry.get("group", {}).items() if table.get("optional", False)}


def poetry_requirement(name: str, constraint: Any) -> str:
    """Pure: one poetry dependency as PEP 508, through poetry-core; non-index sources refused."""
    entries = constraint if isinstance(constraint, list) else [constraint]
    for entry in entries:
        if isinstance(entry, dict):
            kind = next((key for key in NON_INDEX_KEYS if key in entry), None)
            if kind:
                raise ProjectError(
                    f"pyproject.toml [tool.poetry] installs {name} from a {kind} source, "
                    "which pypod does not translate yet",
                    hint="publish it to an index, list it in requirements.txt, or pass --image",
                )
    from poetry.core.factory import Factory

    try:
        # A list of constraints is poetry's per-marker alternatives: one line each.
        if isinstance(constraint, list):
            return "\n".join(str(Requirement(Factory.create_dependency(name, c).to_pep_508())) for c in constraint)
        return str(Requirement(Factory.create_dependency(name, constraint).to_pep_508()))
    except (InvalidRequirement, ValueError, TypeError, RuntimeError) as exc:
        raise ProjectError(
            f"pyproject.toml [tool.poetry]: {name} = {constraint!r} cannot be read: {exc}", hint="fix the entry"
        ) from exc


def dev_requirements(pyproject: dict[str, Any]) -> tuple[str, ...]:
    """Pure: every development requirement pyproject.toml declares, in a stable order."""
    lines = dependency_group_requirements(pyproject, uv_default_groups(pyproject))
    for _group, dependencies in sorted(poetry_dev_groups(pyproject).items()):
        for name, constraint in dependencies.items():
            lines += poetry_requirement(name, constraint).splitlines()
    return tuple(dict.fromkeys(lines))
