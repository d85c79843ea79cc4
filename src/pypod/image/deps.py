"""The dependency image: detected, generated, built once per dependency key, pushed.

Its tag is `deps-<key>`, a hash of the generated build and the environment files
(and the base image's digest, which the build names); the build is skipped when the
registry already has that tag.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..project import Project
from .builders import build_and_push, find_builder, image_exists
from .detect import EnvSpec, detect
from .dockerfile import DependencyBuild, render
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


def ensure_dependency_image(
    project: Project,
    base_image: str,
    image_repo: ImageRef,
    builder_choice: str | None = None,
    dockerfile: str | None = None,
    report: Callable[[str], None] = lambda _m: None,
    push: bool = True,
    platform: str = DEFAULT_PLATFORM,
) -> DependencyImage:
    """The dependency image, by digest in the registry; with push=False, by tag in the
    builder's own image store (for a cluster that shares it)."""
    started = time.monotonic()
    spec = detect(project.root, dockerfile)
    base = ImageRef.parse(base_image)
    base_digest = Registry(base.registry).manifest_digest(base)
    if base_digest is None:
        from ..errors import UsageError

        raise UsageError(
            f"base image {base} is not in its registry", hint="push it, or choose another with --base-image"
        )
    base_by_digest = str(base.with_digest(base_digest))
    nothing_to_install = spec.kind == "none" or (spec.kind == "pyproject" and not spec.dependencies)
    if nothing_to_install and not spec.apt_file and not spec.post_build:
        return DependencyImage(base_by_digest, spec, False, time.monotonic() - started)
    files = {name: (project.root / name).read_bytes() for name in spec.files}
    if spec.kind == "dockerfile":
        build = users_dockerfile(project, spec, files, platform)
        context_root: Path | None = project.root
    else:
        build = render(spec, base_by_digest, files, platform)
        context_root = None
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
            builder, build.containerfile, context, str(target), dict(os.environ), push, log, cache_ref, platform
        )
    if not push:
        return DependencyImage(
            str(target), spec, True, time.monotonic() - started, build.tag, local=True, builder=builder.name
        )
    if not digest:
        digest = registry.manifest_digest(target)
    reference = str(target.with_digest(digest or ""))
    return DependencyImage(reference, spec, True, time.monotonic() - started, build.tag, builder=builder.name)


def users_dockerfile(
    project: Project, spec: EnvSpec, files: dict[str, bytes], platform: str = DEFAULT_PLATFORM
) -> DependencyBuild:
    """A project's own Dockerfile, built as given with the project as context. It may
    copy any file, so its key covers the Dockerfile and every file of the project."""
    from .files import scan_project
    from .tag import file_entries, fingerprint

    dockerfile = files[spec.files[0]]
    source = fingerprint(file_entries(project.root, scan_project(project.root)))
    key = hashlib.sha256(f"{platform}\n".encode() + dockerfile + b"\n" + source.encode()).hexdigest()[:20]
    return DependencyBuild(dockerfile.decode(), {}, key)
