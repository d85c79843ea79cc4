"""Get the project's image into the registry: reuse it if its tag exists, else append
the source to the dependency image. Returns a digest reference, so a moving tag
cannot change what a running session runs.

The first push of a project appends one layer with all of its source. After that,
a change is shipped as a small delta layer (changed files, whiteouts for deleted
ones) on top of the previous push, so an edit costs kilobytes, not the whole tree;
after MAX_DELTA_DEPTH deltas, or when most files changed, a full layer starts over.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..project import Project
from .files import scan_project
from .layer import WORKDIR, build_layer
from .registry import ImageRef, Registry, RegistryError, append_layer, resolve_digest
from .tag import CACHE_DIR, file_entries, fingerprint, image_tag

LAYER_DIR = CACHE_DIR.parent / "layers"
RECORD_DIR = CACHE_DIR.parent / "shipped"
MAX_DELTA_DEPTH = 8
MAX_DELTA_SHARE = 0.5  # a delta touching more than this share of the files is not worth it


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
    layer_files: int = 0  # files in the pushed layer: all of them, or a delta's
    delta: bool = False

    def summary(self) -> str:
        if self.reused:
            what = "unchanged, nothing pushed"
        else:
            kind = f"a delta layer of {self.layer_files} files" if self.delta else f"{self.layer_files} files"
            what = f"pushed {kind}, {_size(self.pushed_bytes)}"
        return f"image {self.tag}: {self.files} files on {self.base}; {what} ({self.seconds:.2f}s)"


@dataclass(frozen=True)
class ShipRecord:
    """What this project last pushed to this repository (kept in the local cache)."""

    base_digest: str
    digest: str
    manifest: dict[str, Any]
    config: dict[str, Any]
    entries: dict[str, str]
    depth: int


@dataclass(frozen=True)
class LayerPlan:
    files: list[str]
    deleted: list[str]
    delta: bool


def plan_layer(previous: ShipRecord | None, entries: dict[str, str], base_digest: str) -> LayerPlan:
    """Pure: a delta on the previous push when that is valid and small, else a full layer."""
    full = LayerPlan(sorted(entries), [], False)
    if previous is None or previous.base_digest != base_digest or previous.depth >= MAX_DELTA_DEPTH:
        return full
    changed = sorted(rel for rel, entry in entries.items() if previous.entries.get(rel) != entry)
    deleted = sorted(set(previous.entries) - set(entries))
    if len(changed) + len(deleted) > MAX_DELTA_SHARE * max(len(entries), 1):
        return full
    return LayerPlan(changed, deleted, True)


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


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


def _record_path(root: Path, target_repo: ImageRef) -> Path:
    key = hashlib.sha1(f"{root.resolve()}\n{target_repo}".encode()).hexdigest()
    return RECORD_DIR / f"{key}.json"


def _load_record(path: Path) -> ShipRecord | None:
    try:
        return ShipRecord(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _save_record(path: Path, record: ShipRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)))
    os.replace(tmp, path)


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
    with ThreadPoolExecutor(max_workers=1) as pool:  # the registry round trip overlaps the scan
        base_lookup = pool.submit(resolve_digest, base_image)
        scan = scan_project(project.root, excludes)
        entries = file_entries(project.root, scan)
        base_digest = base_lookup.result().digest or ""
    tag = image_tag(project.name, project.git.branch, project.git.commit, fingerprint(entries), base_digest)
    target = target_repo.with_tag(tag)

    def shipped(reference: str, **fields: Any) -> ShippedImage:
        return ShippedImage(reference, tag, str(base), len(scan.files), seconds=time.monotonic() - started, **fields)

    existing = registry.manifest_digest(target)
    if existing:
        return shipped(str(target.with_digest(existing)), pushed_bytes=0, reused=True)

    record_path = _record_path(project.root, target_repo)
    previous = _load_record(record_path)
    try:
        return _push(project, base, base_digest, target, target_repo, entries, previous, record_path, shipped, report)
    except RegistryError:
        if previous is None:
            raise
        # The earlier push may be gone from the registry (garbage-collected): start over.
        return _push(project, base, base_digest, target, target_repo, entries, None, record_path, shipped, report)


def _push(
    project: Project,
    base: ImageRef,
    base_digest: str,
    target: ImageRef,
    target_repo: ImageRef,
    entries: dict[str, str],
    previous: ShipRecord | None,
    record_path: Path,
    shipped: Callable[..., ShippedImage],
    report: Callable[[str], None],
) -> ShippedImage:
    plan = plan_layer(previous, entries, base_digest)
    report(f"building the source layer ({len(plan.files)} files)")
    layer = build_layer(project.root, plan.files, LAYER_DIR, prefix=WORKDIR, deleted=plan.deleted)
    try:
        if plan.delta and previous is not None:
            appended = append_layer(
                target_repo.with_digest(previous.digest),
                layer,
                target,
                "/" + WORKDIR,
                base_image=(previous.manifest, previous.config),
            )
        else:
            appended = append_layer(base.with_digest(base_digest), layer, target, "/" + WORKDIR)
    finally:
        Path(layer.path).unlink(missing_ok=True)
    depth = previous.depth + 1 if plan.delta and previous is not None else 0
    _save_record(
        record_path, ShipRecord(base_digest, appended.digest, appended.manifest, appended.config, entries, depth)
    )
    return shipped(
        str(target.with_digest(appended.digest)),
        pushed_bytes=appended.report.uploaded_bytes,
        reused=False,
        pushed_blobs=appended.report.uploaded_blobs,
        layer_digest=layer.digest,
        layer_files=len(plan.files) + len(plan.deleted),
        delta=plan.delta,
    )
