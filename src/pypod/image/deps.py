"""The dependency image: detected, generated, built once per dependency key, pushed.

Its tag is `deps-<key>`, a hash of the generated build and the environment files
(and the base image's digest, which the build names; so also of --no-dev, which
changes what the build installs); the build is skipped when the registry already
has that tag. A project's own Dockerfile is keyed on itself, the project's files and
its --build-arg values.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ProjectError, RegistryError, UsageError
from ..project import Project
from .builders import SECRET_ENV, build_and_push, find_builder, image_exists
from .detect import EnvSpec, detect
from .dockerfile import BUILD_ID_ARG, DependencyBuild, render
from .pyversion import (
    OWN_PYTHON,
    build_log_python_version,
    config_python_version,
    mismatch_warning,
    record_python_version,
    recorded_python_version,
)
from .registry import DEFAULT_PLATFORM, ImageRef, Registry
from .tag import tag_part

BUILD_LOG_DIR = Path(os.environ.get("PYPOD_CACHE", "~/.cache/pypod")).expanduser() / "build-logs"


@dataclass(frozen=True)
class DependencyImage:
    reference: str  # by digest
    spec: EnvSpec
    built: bool
    seconds: float
    tag: str = ""
    local: bool = False  # in the builder's image store only (--no-push)
    builder: str = ""  # the builder that built it, when built

    def summary(self) -> str:
        if not self.built and not self.tag:
            return f"dependencies: none ({self.spec.reason})"
        verb = ("built" if self.local else "built and pushed") if self.built else "reused"
        by = f" with {self.builder}" if self.built and self.builder else ""
        return f"dependencies: {verb} {self.tag}{by} ({self.spec.reason}; {self.seconds:.1f}s)"


def nothing_to_install(spec: EnvSpec, include_dev: bool = True) -> bool:
    """Pure: whether the base image can be used as it is (no build, no builder needed)."""
    if spec.apt_file or spec.post_build or spec.kind not in ("none", "pyproject", "pipfile"):
        return False
    dev = spec.dev_dependencies if include_dev else ()
    itself = spec.install_itself and (include_dev or not spec.itself_is_dev)
    return not (spec.dependencies or dev or itself)


def check_sources(spec: EnvSpec, environ: dict[str, str]) -> None:
    """A Pipfile's non-PyPI [[source]] is a private index: pypod installs from the index
    URLs in the environment (handed to the build as a secret), so one must be set, or
    its packages would be looked for on PyPI, where anyone may have taken their names."""
    if spec.private_sources and not any(environ.get(name) for name in SECRET_ENV):
        where = spec.files[0]
        raise ProjectError(
            f"{where} names the package index {', '.join(spec.private_sources)} ([[source]]), and pypod does not "
            "take index URLs from a Pipfile",
            hint="set PIP_INDEX_URL (or PIP_EXTRA_INDEX_URL) to that index for pypod, which hands it to the build "
            "as a secret, or pass --image",
        )


def base_python_version(base: ImageRef, platform: str) -> str | None:
    """The base image's Python as its config's Env says (PYTHON_VERSION), else as an
    earlier build on this machine saw it; None when neither knows."""
    try:
        registry = Registry(base.registry)
        _digest, manifest = registry.manifest(base, platform)
        found = config_python_version(registry.blob_json(base, manifest["config"]["digest"]))
    except (RegistryError, KeyError, TypeError, ValueError):
        found = None
    return found or recorded_python_version(base.digest or "")


def ensure_dependency_image(
    project: Project,
    base_image: str,
    image_repo: ImageRef,
    builder_choice: str | None = None,
    dockerfile: str | None = None,
    report: Callable[[str], None] = lambda _m: None,
    push: bool = True,
    platform: str = DEFAULT_PLATFORM,
    no_dev: bool = False,
    build_args: tuple[tuple[str, str], ...] = (),
    warn: Callable[[str], None] = lambda _m: None,
) -> DependencyImage:
    """The dependency image, by digest in the registry; with push=False, by tag in the
    builder's own image store (for a cluster that shares it). `warn` gets one-line
    warnings (a Python version the base lacks)."""
    started = time.monotonic()
    spec = detect(project.root, dockerfile)
    if build_args and spec.kind != "dockerfile":
        raise UsageError(
            f"--build-arg is for a project's own Dockerfile; this project's environment is {spec.kind} ({spec.reason})",
            hint="drop --build-arg (and build-args in [tool.pypod]), or build from a Dockerfile",
        )
    check_sources(spec, dict(os.environ))
    base = ImageRef.parse(base_image)
    base_digest = Registry(base.registry).manifest_digest(base)
    if base_digest is None:
        raise UsageError(
            f"base image {base} is not in its registry", hint="push it, or choose another with --base-image"
        )
    base_by_digest = str(base.with_digest(base_digest))
    checks_python = bool(spec.python_version) and spec.kind not in OWN_PYTHON
    known_python = base_python_version(base.with_digest(base_digest), platform) if checks_python else None
    warning = mismatch_warning(spec, str(base), known_python)
    if warning:
        warn(warning)
    if nothing_to_install(spec, not no_dev):
        return DependencyImage(base_by_digest, spec, False, time.monotonic() - started)
    files = {name: (project.root / name).read_bytes() for name in spec.files}
    if spec.kind == "dockerfile":
        build = users_dockerfile(project, spec, files, platform, build_args)
        context_root: Path | None = project.root
    else:
        build = render(spec, base_by_digest, files, platform, include_dev=not no_dev)
        context_root = None
        build_args = ((BUILD_ID_ARG, uuid.uuid4().hex[:16]),)  # not in the key: see dockerfile.BUILD_ID_ARG
    target = image_repo.with_tag(build.tag)
    registry = Registry(image_repo.registry)
    builder = None
    if push:
        existing = registry.manifest_digest(target)
        if existing:
            reference = str(target.with_digest(existing))
            return DependencyImage(reference, spec, False, time.monotonic() - started, build.tag)
    else:
        builder = find_builder(builder_choice, local=True)
        if image_exists(builder, str(target)):
            return DependencyImage(str(target), spec, False, time.monotonic() - started, build.tag, local=True)
    builder = builder or find_builder(builder_choice)
    report(f"building the dependency image with {builder.name} ({spec.reason})")
    BUILD_LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = BUILD_LOG_DIR / f"{build.tag}.log"
    log.write_text("")
    with tempfile.TemporaryDirectory(prefix="pypod-context-") as context_dir:
        context = context_root or Path(context_dir)
        for name, content in build.context_files.items():
            (context / name).write_bytes(content)
        # One cache per project and platform: builds for two platforms would overwrite one.
        cache_ref = str(image_repo.with_tag(f"buildcache-{tag_part(project.name)}-{tag_part(platform)}"))
        digest = build_and_push(
            builder,
            build.containerfile,
            context,
            str(target),
            dict(os.environ),
            push,
            log,
            cache_ref,
            platform,
            build_args,
        )
    if spec.kind not in OWN_PYTHON:
        built_python = build_log_python_version(log.read_text(errors="replace"))
        if built_python:
            record_python_version(base_digest, built_python)
            if known_python is None and checks_python:
                warning = mismatch_warning(spec, str(base), built_python)
                if warning:
                    warn(warning)
    if not push:
        return DependencyImage(
            str(target), spec, True, time.monotonic() - started, build.tag, local=True, builder=builder.name
        )
    if not digest:
        digest = registry.manifest_digest(target)
    reference = str(target.with_digest(digest or ""))
    return DependencyImage(reference, spec, True, time.monotonic() - started, build.tag, builder=builder.name)


def users_dockerfile(
    project: Project,
    spec: EnvSpec,
    files: dict[str, bytes],
    platform: str = DEFAULT_PLATFORM,
    build_args: tuple[tuple[str, str], ...] = (),
) -> DependencyBuild:
    """A project's own Dockerfile, built as given with the project as context (pypod adds
    nothing to it, not even `python`). It may copy any file, so its key covers the
    Dockerfile, every file of the project and the --build-arg values."""
    from .files import scan_project
    from .tag import file_entries, fingerprint

    dockerfile = files[spec.files[0]]
    source = fingerprint(file_entries(project.root, scan_project(project.root)))
    text = f"{platform}\n".encode() + dockerfile + b"\n" + source.encode()
    if build_args:
        text += b"\n" + "".join(f"{k}={v}\n" for k, v in sorted(dict(build_args).items())).encode()
    return DependencyBuild(dockerfile.decode(), {}, hashlib.sha256(text).hexdigest()[:20])
