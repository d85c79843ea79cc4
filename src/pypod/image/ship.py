"""Get the project's image into the registry: reuse it if its tag exists, else
append the source layer to the dependency image. Returns a digest reference, so a
moving tag cannot change what a running session runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..project import Project
from .files import scan_project
from .layer import WORKDIR, build_layer
from .registry import ImageRef, Registry, append_layer
from .tag import CACHE_DIR, image_tag, source_fingerprint

LAYER_DIR = CACHE_DIR.parent / "layers"


@dataclass(frozen=True)
class ShippedImage:
    reference: str  # registry/repo@sha256:...
    tag: str
    base: str
    files: int
    pushed_bytes: int
    reused: bool
    seconds: float
    pushed_blobs: int = 0
    layer_digest: str = ""

    def summary(self) -> str:
        if self.reused:
            what = "unchanged, nothing pushed"
        else:
            what = f"pushed {_size(self.pushed_bytes)}" if self.pushed_bytes else "pushed the manifest only"
        return f"image {self.tag}: {self.files} files on {self.base}; {what} ({self.seconds:.2f}s)"


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


def target_repository(image_repo: str | None) -> ImageRef:
    if not image_repo:
        raise UsageError(
            "no IMAGE_REPO to push the project's image to",
            hint="set IMAGE_REPO (e.g. registry.example.com/team/pypod), or pass --image to skip building",
        )
    ref = ImageRef.parse(image_repo)
    if ref.tag or ref.digest:
        raise UsageError(
            f"IMAGE_REPO {image_repo!r} must be a repository, without a tag",
            hint="drop the ':tag' part; pypod chooses the tag",
        )
    return ref


def ship_source_image(
    project: Project,
    base_image: str,
    image_repo: str | None,
    excludes: tuple[str, ...] = (),
    report: Callable[[str], None] = lambda _m: None,
) -> ShippedImage:
    started = time.monotonic()
    target_repo = target_repository(image_repo)
    base = ImageRef.parse(base_image)
    registry = Registry(target_repo.registry)
    base_digest = Registry(base.registry).manifest_digest(base)
    if base_digest is None:
        raise UsageError(
            f"base image {base} is not in its registry", hint="push it, or choose another with --base-image"
        )
    scan = scan_project(project.root, excludes)
    files = scan.files
    source_hash = source_fingerprint(project.root, scan)
    tag = image_tag(project.name, project.git.branch, project.git.commit, source_hash, base_digest)
    target = target_repo.with_tag(tag)
    existing = registry.manifest_digest(target)
    if existing:
        return ShippedImage(
            str(target.with_digest(existing)), tag, str(base), len(files), 0, True, time.monotonic() - started
        )
    report(f"building the source layer ({len(files)} files)")
    layer = build_layer(project.root, files, LAYER_DIR, prefix=WORKDIR)
    try:
        digest, pushed = append_layer(base.with_digest(base_digest), layer, target, workdir="/" + WORKDIR)
    finally:
        Path(layer.path).unlink(missing_ok=True)
    return ShippedImage(
        str(target.with_digest(digest)),
        tag,
        str(base),
        len(files),
        pushed.uploaded_bytes,
        False,
        time.monotonic() - started,
        pushed.uploaded_blobs,
        layer.digest,
    )
