"""One frozen Settings, resolved flags > environment > profile > [tool.pypod] > defaults.

julia_pod's environment names are honoured (KUBERNETES_NAMESPACE,
KUBERNETES_SERVICEACCOUNT, IMAGE_REPO); every other setting X also reads PYPOD_X.
Each setting that is not pypod's default remembers where it came from (`origins`),
for `pypod plan` and `--dry-run`.
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
from .image import DEFAULT_PLATFORM
from .image.buildargs import check_build_args
from .kube.podenv import parse_threads
from .profiles import Profile, project_profiles, select_profile
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
    gpu_product: str | None = None  # the nvidia.com/gpu.product node label to run on
    queue: str | None = None  # Kueue LocalQueue; "{namespace}" stands for the run's namespace
    shm: str | None = None  # size of a memory-backed /dev/shm (an emptyDir, counted as the pod's memory)
    generate_name: bool = False  # the apiserver names the Job (metadata.generateName), as some clusters require
    env: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    pvcs: tuple[str, ...] = ()  # NAME[:MOUNT[:ro]] each: PVCs mounted in the driver (data/volumes.py)
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
    profile: str | None = None  # the active profile's name
    profile_source: str = ""  # where that profile was read from
    # setting name -> where its value came from ("--cpu", "$PYPOD_CPU", "profile eidf", "[tool.pypod]")
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


_NOT_SETTINGS = ("extra", "profile", "profile_source", "origins")
_FIELDS = {f.name: f for f in dataclasses.fields(Settings) if f.name not in _NOT_SETTINGS}


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


FLAG_NAMES = {"port_forwards": "--port-forward", "labels": "--label", "sync": "--no-sync", "pvcs": "--pvc"}


def _check_known(table: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(table) - set(_FIELDS))
    if unknown:
        raise UsageError(
            f"unknown setting(s) in {where}: {', '.join(unknown)}",
            hint=f"known settings: {', '.join(sorted(_FIELDS))}",
        )


def resolve(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    pyproject: Mapping[str, Any],
    user_profiles: Mapping[str, Profile] | None = None,
    user_config: str = "~/.config/pypod/config.toml",
) -> Settings:
    """Merge the sources; a flag given as None (or an empty tuple) counts as not given.

    `pyproject` is [tool.pypod] as read_pyproject returns it, profiles included;
    `user_profiles` those of the user's config file (profiles.read_user_profiles).
    """
    table = dict(pyproject)
    profiles = {**(user_profiles or {}), **project_profiles(table.pop("profiles", {}))}
    default_profile = table.pop("profile", None)
    _check_known(table, "[tool.pypod]")
    chosen = next(
        (
            (name, by)
            for name, by in (
                (flags.get("profile"), "--profile"),
                (environ.get("PYPOD_PROFILE"), "$PYPOD_PROFILE"),
                (default_profile, "[tool.pypod] profile"),
            )
            if name
        ),
        (None, ""),
    )
    profile = select_profile(chosen[0], profiles, chosen[1], user_config)
    if profile is not None:
        _check_known(profile.values, f"profile {profile.name} ({profile.source})")

    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name in _FIELDS:
        if flags.get(name) not in (None, ()):
            values[name] = flags[name]
            origins[name] = FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
            continue
        env_names = [f"PYPOD_{name.upper()}"]
        if name in LEGACY_ENV:
            env_names.append(LEGACY_ENV[name])
        from_env = next(((n, environ[n]) for n in env_names if environ.get(n)), None)
        if from_env:
            values[name] = _coerce(name, from_env[1], f"${from_env[0]}")
            origins[name] = f"${from_env[0]}"
        elif profile is not None and name in profile.values:
            values[name] = _coerce(name, profile.values[name], f"profile {profile.name} ({profile.source})")
            origins[name] = f"profile {profile.name}"
        elif name in table:
            values[name] = _coerce(name, table[name], "[tool.pypod]")
            origins[name] = "[tool.pypod]"
    if "git" in values:  # `git = true` in [tool.pypod] or PYPOD_GIT=1: on, with the defaults
        values["git"] = setting_value(values["git"])
    if profile is not None:
        values.update(profile=profile.name, profile_source=f"{profile.source}, chosen by {chosen[1]}")
    values["origins"] = origins
    settings = Settings(**values)
    check_quantity(settings.cpu, "cpu")
    check_quantity(settings.memory, "memory")
    check_quantity(settings.shm, "memory")
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
    from .data.volumes import parse_pvcs

    parse_pvcs(settings.pvcs)
    if settings.gpu < 0:
        raise UsageError(f"--gpu must be 0 or more, got {settings.gpu}", hint="e.g. --gpu 1")
    return settings


def describe_origins(settings: Settings) -> list[str]:
    """`name = value (from where)` for every setting that is not pypod's default, and the profile."""
    lines = []
    if settings.profile:
        lines.append(f"profile = {settings.profile} (from {settings.profile_source})")
    for name, origin in settings.origins.items():
        value = getattr(settings, name)
        if isinstance(value, tuple):
            value = ", ".join("=".join(v) if isinstance(v, tuple) else str(v) for v in value)
        lines.append(f"{name} = {value} ({origin})")
    return lines
