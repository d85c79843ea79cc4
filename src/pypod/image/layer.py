"""The project's source as one reproducible OCI layer.

Same files, same bytes: entries sorted, mtime 0, uid/gid 0, no user names, modes
reduced to 0644/0755, and gzip without a timestamp or file name. So the same
project gives the same layer digest on any machine, and an unchanged project
pushes nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
WORKDIR = "workspace"


@dataclass(frozen=True)
class Layer:
    path: Path  # the compressed blob on disk
    digest: str  # sha256 of the compressed blob, as the registry names it
    diff_id: str  # sha256 of the uncompressed tar, as the image config lists it
    size: int
    files: int


class _HashingWriter(io.RawIOBase):
    """Counts and hashes what passes through to `target`."""

    def __init__(self, target: io.BufferedIOBase | io.RawIOBase) -> None:
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.sha.update(data)
        self.size += len(data)
        self.target.write(data)
        return len(data)


def _normalized(info: tarfile.TarInfo, mode: int) -> tarfile.TarInfo:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = mode
    return info


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def whiteout_name(rel: str) -> str:
    """The OCI whiteout entry that deletes `rel` from the layers below."""
    folder, _, name = rel.rpartition("/")
    return f"{folder}/.wh.{name}" if folder else f".wh.{name}"


def build_layer(
    root: Path,
    files: list[str],
    out_dir: Path,
    prefix: str = WORKDIR,
    deleted: list[str] | None = None,
    sources: dict[str, Path] | None = None,
) -> Layer:
    """Write the layer for `files` (relative to `root`) under /`prefix` in the image;
    `deleted` paths get whiteouts, so the layer can sit on an earlier source layer;
    `sources` maps paths whose content lives elsewhere than under `root`."""
    deleted = deleted or []
    sources = sources or {}
    out_dir.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=out_dir, suffix=".tar.gz.partial")
    with os.fdopen(handle, "wb") as raw:
        compressed = _HashingWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=6) as gz:
            plain = _HashingWriter(gz)
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                directories = sorted({d for rel in (*files, *deleted) for d in _parents(rel)})
                tar.addfile(_directory_entry(prefix))
                for directory in directories:
                    tar.addfile(_directory_entry(f"{prefix}/{directory}"))
                for rel in sorted(files):
                    _add_file(tar, sources.get(rel) or root / rel, f"{prefix}/{rel}")
                for rel in sorted(deleted):
                    tar.addfile(_normalized(tarfile.TarInfo(f"{prefix}/{whiteout_name(rel)}"), 0o644))
    digest = "sha256:" + compressed.sha.hexdigest()
    final = out_dir / f"{digest.split(':')[1]}.tar.gz"
    os.replace(tmp_name, final)
    return Layer(final, digest, "sha256:" + plain.sha.hexdigest(), compressed.size, len(files))


def _directory_entry(name: str) -> tarfile.TarInfo:
    info = _normalized(tarfile.TarInfo(name), 0o755)
    info.type = tarfile.DIRTYPE
    return info


def _add_file(tar: tarfile.TarFile, path: Path, name: str) -> None:
    st = path.lstat()
    if os.path.islink(path):
        info = _normalized(tarfile.TarInfo(name), 0o777)
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
        tar.addfile(info)
        return
    info = _normalized(tarfile.TarInfo(name), 0o755 if st.st_mode & 0o111 else 0o644)
    info.size = st.st_size
    with open(path, "rb") as data:  # streamed: large files are never held in memory
        tar.addfile(info, data)
