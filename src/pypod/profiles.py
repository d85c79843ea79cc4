"""Cluster profiles: named bundles of settings, e.g. everything a shared GPU cluster
asks for (queue, generateName, GPU product, /dev/shm) behind one `--profile NAME`.

They are read from `[tool.pypod.profiles.NAME]` in the project's pyproject.toml and
from `[profiles.NAME]` in the user's config file, `$XDG_CONFIG_HOME/pypod/config.toml`
(XDG's default for `$XDG_CONFIG_HOME` is `~/.config`). A project's profile of the same
name replaces the user's. Selection: `--profile` > `$PYPOD_PROFILE` > `profile = ...`
in `[tool.pypod]`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError

PROJECT_SOURCE = "pyproject.toml [tool.pypod.profiles]"


@dataclass(frozen=True)
class Profile:
    """One profile: its settings (keys as in [tool.pypod], dashes or underscores) and where it was read."""

    name: str
    values: Mapping[str, Any] = field(default_factory=dict)
    source: str = PROJECT_SOURCE


def user_config_path(environ: Mapping[str, str]) -> Path:
    """The XDG base directory rule: `$XDG_CONFIG_HOME` if set and absolute, else `~/.config`."""
    base = environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path(environ.get("HOME") or Path.home()) / ".config"
    return root / "pypod" / "config.toml"


def shown_path(path: Path, environ: Mapping[str, str]) -> str:
    """`path` with the home folder as `~`, as the user would type it."""
    home = environ.get("HOME") or str(Path.home())
    text = str(path)
    return "~" + text[len(home) :] if home and text.startswith(home.rstrip("/") + "/") else text


def _profiles_from_table(table: Any, source: str) -> dict[str, Profile]:
    if not isinstance(table, Mapping):
        raise UsageError(f"{source}: profiles must be tables, e.g. [profiles.eidf]", hint="fix the file")
    profiles = {}
    for name, values in table.items():
        if not isinstance(values, Mapping):
            raise UsageError(f"{source}: profile {name!r} must be a table of settings", hint="fix the file")
        profiles[name] = Profile(name, {k.replace("-", "_"): v for k, v in values.items()}, source)
    return profiles


def read_user_profiles(environ: Mapping[str, str]) -> dict[str, Profile]:
    """The profiles of the user's config file; none if there is no such file."""
    path = user_config_path(environ)
    if not path.is_file():
        return {}
    shown = shown_path(path, environ)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{shown} is not valid TOML: {exc}", hint="fix the file or move it aside") from exc
    except OSError as exc:
        raise UsageError(f"cannot read {shown}: {exc.strerror}", hint="fix its permissions") from exc
    unknown = sorted(set(data) - {"profiles"})
    if unknown:
        raise UsageError(
            f"{shown}: unknown table(s) {', '.join(unknown)}",
            hint="the user config holds [profiles.NAME] tables only",
        )
    return _profiles_from_table(data.get("profiles", {}), shown)


def project_profiles(table: Any) -> dict[str, Profile]:
    return _profiles_from_table(table, PROJECT_SOURCE)


def select_profile(
    name: str | None, profiles: Mapping[str, Profile], chosen_by: str, user_config: str = "~/.config/pypod/config.toml"
) -> Profile | None:
    """The profile called `name`, None when none is asked for; an unknown name is one line
    that lists the profiles there are and where they were read from."""
    if not name:
        return None
    if name in profiles:
        return profiles[name]
    if profiles:
        known = "; ".join(f"{p.name} (from {p.source})" for p in sorted(profiles.values(), key=lambda p: p.name))
        hint = f"profiles found: {known}"
    else:
        hint = (
            "no profiles are defined: add [tool.pypod.profiles.NAME] to pyproject.toml "
            f"or [profiles.NAME] to {user_config}"
        )
    raise UsageError(f"unknown profile {name!r} (from {chosen_by})", hint=hint)
