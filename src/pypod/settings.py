"""One frozen Settings, resolved flags > environment > [tool.pypod] > defaults.

julia_pod's environment names are honoured (KUBERNETES_NAMESPACE,
KUBERNETES_SERVICEACCOUNT, IMAGE_REPO); every other setting X also reads PYPOD_X.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ProjectError, UsageError
from .gitsource import DEFAULT_GIT_IMAGE, setting_value
from .image.buildargs import check_build_args
from .image.registry import DEFAULT_PLATFORM
from .kube.podenv import parse_threads
from .quantity import check_quantity

PLATFORM = re.compile(r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?")

# Environment names kept from julia_pod, besides PYPOD_<NAME>.
LEGACY_ENV = {
    "namespace": "KUBERNETES_NAMESPACE",
    "service_account": "KUBERNETES_SERVICEACCOUNT",
    "image_repo": "IMAGE_REPO",
}


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know, after every source has been merged."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None  # None: the context's namespace, else "default" (kubectl's rule)
    service_account: str | None = None
    image: str | None = None
    image_repo: str | None = None
    base_image: str = "docker.io/library/python:3.12-slim"
    builder: str | None = None  # docker, podman or buildah; None: the first found
    dockerfile: str | None = None
    no_push: bool = False  # build into the builder's store only, for a cluster sharing it
    no_dev: bool = False  # leave development dependencies (dev groups, [dev-packages]) out of the image
    build_args: tuple[tuple[str, str], ...] = ()  # --build-arg for a project's own Dockerfile; never secrets
    platform: str = DEFAULT_PLATFORM  # the cluster nodes' os/arch, not the laptop's (buildx's --platform)
    cpu: str | None = None
    memory: str | None = None
    gpu: int = 0
    threads: str = "auto"  # OMP_NUM_THREADS & co in the pods: auto (from cpu), off, or a count
    env: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    python: str | None = None  # None: ipython if the image has it, else python
    template: str | None = None
    runid: str | None = None
    pending_timeout: float = 600.0
    keep_alive: float = 900.0
    ttl_seconds: int = 300
    detach: bool = False
    port_forwards: tuple[str, ...] = ()
    workdir: str = "/workspace"
    history_file: str = "~/.python_history"  # shared with local Python, as julia_pod shares Julia's
    sync: bool = True  # live two-way sync of the project folder with the REPL's pod
    sync_exclude: tuple[str, ...] = ()  # gitignore patterns, besides .gitignore and .pypodignore
    sync_initial: str = "local"  # local, pod or mirror: who wins where both differ at first
    git: str | None = None  # --git [URL][@REF]: None off, "" origin at the current commit
    git_image: str = DEFAULT_GIT_IMAGE  # the initContainer's image: needs git and sh
    git_secret: str | None = None  # a Secret with `token`, or `ssh-privatekey` and `known_hosts`
    extra: Mapping[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name: f for f in dataclasses.fields(Settings) if f.name != "extra"}


def _coerce(name: str, value: Any, source: str) -> Any:
    """Turn a value from env or TOML into the field's type; complain in one line."""
    kind = str(_FIELDS[name].type)
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            return str(value).strip().lower() in ("1", "true", "yes", "on")
        if kind.startswith("tuple[tuple"):
            return tuple(parse_pairs(_as_list(value), name))
        if kind.startswith("tuple[str"):
            return tuple(_as_list(value))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{source}: {name} = {value!r} is not a valid {kind}", hint="fix or remove it") from exc
    return None if value is None else str(value)


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v for v in (s.strip() for s in value.split(",")) if v]
    if isinstance(value, Mapping):
        return [f"{k}={v}" for k, v in value.items()]
    return [str(v) for v in value]


def parse_pairs(items: list[str] | tuple[str, ...], what: str) -> list[tuple[str, str]]:
    """`K=V` strings to pairs, in order."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--{what} expects KEY=VALUE, got {item!r}", hint=f"e.g. --{what} LOG_LEVEL=debug")
        pairs.append((key.strip(), value))
    return pairs


def read_pyproject(root: Path) -> dict[str, Any]:
    """[tool.pypod] of the project's pyproject.toml, or {}."""
    path = root / "pyproject.toml"
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ProjectError(f"{path} is not valid TOML: {exc}", hint="fix the file or move it aside") from exc
    table = data.get("tool", {}).get("pypod", {})
    return {k.replace("-", "_"): v for k, v in table.items()}


def resolve(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    pyproject: Mapping[str, Any],
) -> Settings:
    """Merge the sources; a flag given as None (or an empty tuple) counts as not given."""
    values: dict[str, Any] = {}
    unknown = sorted(set(pyproject) - set(_FIELDS))
    if unknown:
        raise UsageError(
            f"unknown setting(s) in [tool.pypod]: {', '.join(unknown)}",
            hint=f"known settings: {', '.join(sorted(_FIELDS))}",
        )
    for name in _FIELDS:
        if flags.get(name) not in (None, ()):
            values[name] = flags[name]
            continue
        env_names = [f"PYPOD_{name.upper()}"]
        if name in LEGACY_ENV:
            env_names.append(LEGACY_ENV[name])
        from_env = next(((n, environ[n]) for n in env_names if environ.get(n)), None)
        if from_env:
            values[name] = _coerce(name, from_env[1], f"${from_env[0]}")
        elif name in pyproject:
            values[name] = _coerce(name, pyproject[name], "[tool.pypod]")
    if "git" in values:  # `git = true` in [tool.pypod] or PYPOD_GIT=1: on, with the defaults
        values["git"] = setting_value(values["git"])
    settings = Settings(**values)
    check_quantity(settings.cpu, "cpu")
    check_quantity(settings.memory, "memory")
    if settings.sync_initial not in ("local", "pod", "mirror"):
        raise UsageError(
            f"sync_initial must be local, pod or mirror, got {settings.sync_initial!r}", hint="e.g. --sync-initial pod"
        )
    if not PLATFORM.fullmatch(settings.platform):
        raise UsageError(
            f"platform must be os/arch[/variant], got {settings.platform!r}", hint="e.g. --platform linux/arm64"
        )
    check_build_args(settings.build_args)
    settings = settings.replace(threads=str(parse_threads(settings.threads)))
    if settings.gpu < 0:
        raise UsageError(f"--gpu must be 0 or more, got {settings.gpu}", hint="e.g. --gpu 1")
    return settings
