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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..project import Project
from .files import scan_project
from .layer import WORKDIR, Layer, build_layer
from .registry import (
    DEFAULT_PLATFORM,
    Appended,
    ImageRef,
    Registry,
    RegistryError,
    append_layer,
    resolve_digest,
)
from .tag import CACHE_DIR, file_entries, fingerprint, hash_files, image_tag

LAYER_DIR = CACHE_DIR.parent / "layers"
# pypod ships itself beside the project (as the agent is shipped), so a driver can
# `from pypod import K8sCluster` without installing it: /workspace/.pypod/lib/pypod.
PYPOD_LIB = ".pypod/lib"
# Beside it, the pure-python libraries pypod's in-pod code needs (`pypod.add` reads the
# project's files with detect.py and edits TOML with tomlkit). Not on PYTHONPATH: pypod
# appends the folder to sys.path only when it must (deps/vendor.py), so a project's own
# version of these libraries always wins.
PYPOD_VENDOR = ".pypod/vendor"
VENDORED = ("tomlkit", "packaging", "dependency_groups")
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
            kind = (
                f"a delta layer of {self.layer_files} files"
                if self.delta
                else f"a source layer of {self.layer_files} files, pypod's own included"
            )
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


def shipped_packages() -> list[tuple[str, Path]]:
    """(folder in the layer, package folder here): pypod itself, then what it vendors."""
    import importlib

    packages = [(f"{PYPOD_LIB}/pypod", Path(__file__).resolve().parents[1])]
    for name in VENDORED:
        module = importlib.import_module(name)
        packages.append((f"{PYPOD_VENDOR}/{name}", Path(module.__file__ or "").resolve().parent))
    return packages


def _package_files(package: Path) -> list[Path]:
    return [
        path
        for path in sorted(package.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".typed")
    ]


def pypod_files() -> dict[str, Path]:
    """pypod's own package files and its vendored libraries', by their path in the layer."""
    return {
        f"{folder}/{path.relative_to(package).as_posix()}": path
        for folder, package in shipped_packages()
        for path in _package_files(package)
    }


def _pypod_entries() -> tuple[dict[str, str], dict[str, Path]]:
    """pypod's shipped files: layer path -> entry (blob id, from the stat cache), and -> source."""
    entries: dict[str, str] = {}
    sources: dict[str, Path] = {}
    for folder, package in shipped_packages():
        rels = {
            str(path.relative_to(package.parent)): f"{folder}/{path.relative_to(package).as_posix()}"
            for path in _package_files(package)
        }
        hashed = hash_files(package.parent, sorted(rels), CACHE_DIR)
        entries |= {rels[k]: v for k, v in hashed.items()}
        sources |= {rel: package.parent / k for k, rel in rels.items()}
    return entries, sources


def _with_pypod(entries: dict[str, str]) -> tuple[dict[str, str], dict[str, Path]]:
    """Add pypod's own files to the layer's entries; returns them and their sources."""
    shipped, sources = _pypod_entries()
    return {**entries, **shipped}, sources


def _record_path(root: Path, target_repo: ImageRef, platform: str) -> Path:
    key = hashlib.sha1(f"{root.resolve()}\n{target_repo}\n{platform}".encode()).hexdigest()
    return RECORD_DIR / f"{key}.json"


def _load_record(path: Path) -> ShipRecord | None:
    try:
        return ShipRecord(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _save_record(path: Path, record: ShipRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # vars(), not asdict(): the fields are JSON already, and asdict's deep copy of the
    # manifest, config and every entry cost a fifth of a source update.
    tmp.write_text(json.dumps(vars(record)))
    os.replace(tmp, path)


def ship_source_image(
    project: Project,
    base_image: str,
    image_repo: str | None,
    excludes: tuple[str, ...] = (),
    report: Callable[[str], None] = lambda _m: None,
    platform: str = DEFAULT_PLATFORM,
) -> ShippedImage:
    started = time.monotonic()
    target_repo = target_repository(image_repo)
    base = ImageRef.parse(base_image)
    registry = Registry(target_repo.registry)
    with ThreadPoolExecutor(max_workers=1) as pool:  # the registry round trip overlaps the scan
        base_lookup = pool.submit(resolve_digest, base_image)
        scan = scan_project(project.root, excludes)
        entries, sources = _with_pypod(file_entries(project.root, scan))
        base_digest = base_lookup.result().digest or ""
    tag = image_tag(project.name, project.git.branch, project.git.commit, fingerprint(entries), base_digest, platform)
    target = target_repo.with_tag(tag)

    def shipped(reference: str, **fields: Any) -> ShippedImage:
        return ShippedImage(reference, tag, str(base), len(scan.files), seconds=time.monotonic() - started, **fields)

    existing = registry.manifest_digest(target)
    if existing:
        return shipped(str(target.with_digest(existing)), pushed_bytes=0, reused=True)

    push = _Push(
        project.root,
        base.with_digest(base_digest),
        target,
        entries,
        sources,
        _record_path(project.root, target_repo, platform),
        platform,
    )
    previous = _load_record(push.record_path)
    try:
        appended, layer, plan = _push(push, previous, report)
    except RegistryError:
        if previous is None:
            raise
        # The earlier push may be gone from the registry (garbage-collected): start over.
        previous = None
        appended, layer, plan = _push(push, previous, report)
    return shipped(
        str(target.with_digest(appended.digest)),
        pushed_bytes=appended.report.uploaded_bytes,
        reused=False,
        pushed_blobs=appended.report.uploaded_blobs,
        layer_digest=layer.digest,
        layer_files=len(plan.files) + len(plan.deleted),
        delta=plan.delta,
    )


@dataclass(frozen=True)
class _Push:
    """One push of the source: what goes up, onto what, and where its record is kept."""

    root: Path
    base: ImageRef  # by digest
    target: ImageRef
    entries: dict[str, str]
    sources: dict[str, Path]
    record_path: Path
    platform: str


def _push(push: _Push, previous: ShipRecord | None, report: Callable[[str], None]) -> tuple[Appended, Layer, LayerPlan]:
    base_digest = push.base.digest or ""
    plan = plan_layer(previous, push.entries, base_digest)
    report(f"building the source layer ({len(plan.files)} files)")
    layer = build_layer(push.root, plan.files, LAYER_DIR, prefix=WORKDIR, deleted=plan.deleted, sources=push.sources)
    python_path = f"/{WORKDIR}/{PYPOD_LIB}"
    try:
        if plan.delta and previous is not None:
            onto, known = push.target.with_digest(previous.digest), (previous.manifest, previous.config)
        else:
            onto, known = push.base, None
        appended = append_layer(
            onto, layer, push.target, "/" + WORKDIR, base_image=known, python_path=python_path, platform=push.platform
        )
    finally:
        Path(layer.path).unlink(missing_ok=True)
    depth = previous.depth + 1 if plan.delta and previous is not None else 0
    record = ShipRecord(base_digest, appended.digest, appended.manifest, appended.config, push.entries, depth)
    _save_record(push.record_path, record)
    return appended, layer, plan


# A --git run's checkout covers the working directory, so pypod's own package goes elsewhere.
PYPOD_OPT = "opt/pypod"
PYPOD_OPT_LIB = f"{PYPOD_OPT}/lib"


def ship_pypod_image(
    deps_reference: str,
    image_repo: str | None,
    report: Callable[[str], None] = lambda _m: None,
    platform: str = DEFAULT_PLATFORM,
) -> ShippedImage:
    """The dependency image plus pypod's own package at /opt/pypod/lib (on PYTHONPATH), for
    `--git` runs, whose code comes from git: one small layer per dependency image and pypod
    version, pushed once; later runs, whatever their commit, push nothing."""
    started = time.monotonic()
    target_repo = target_repository(image_repo)
    base = resolve_digest(deps_reference)
    # Under /opt/pypod: lib/pypod/... and vendor/NAME/..., as under /workspace/.pypod.
    shipped, shipped_sources = _pypod_entries()
    sources = {rel.removeprefix(".pypod/"): path for rel, path in shipped_sources.items()}
    entries = {rel.removeprefix(".pypod/"): v for rel, v in shipped.items()}
    key = hashlib.sha1(f"{base.digest}\n{platform}\n{fingerprint(entries)}".encode()).hexdigest()[:20]
    tag = f"pypod-lib_sha1-{key}"
    target = target_repo.with_tag(tag)
    registry = Registry(target_repo.registry)

    def shipped(reference: str, **fields: Any) -> ShippedImage:
        return ShippedImage(reference, tag, str(base), len(entries), seconds=time.monotonic() - started, **fields)

    existing = registry.manifest_digest(target)
    if existing:
        return shipped(str(target.with_digest(existing)), pushed_bytes=0, reused=True)
    report(f"appending pypod's own package ({len(entries)} files)")
    layer = build_layer(Path("/nonexistent"), sorted(entries), LAYER_DIR, prefix=PYPOD_OPT, sources=sources)
    try:
        appended = append_layer(base, layer, target, "/" + WORKDIR, python_path="/" + PYPOD_OPT_LIB, platform=platform)
    finally:
        Path(layer.path).unlink(missing_ok=True)
    return shipped(
        str(target.with_digest(appended.digest)),
        pushed_bytes=appended.report.uploaded_bytes,
        reused=False,
        pushed_blobs=appended.report.uploaded_blobs,
        layer_digest=layer.digest,
        layer_files=len(entries),
    )
