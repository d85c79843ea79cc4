"""Content-addressed image tags, julia_pod's form with a deterministic hash:

    <repo>_<branch>_commit-<short sha>_sha1-<hash>

The hash covers exactly the source layer's content (paths, executable bits, file
bytes, symlink targets) and the dependency key; not `.git`, not mtimes, not the
order the filesystem lists things in. Each file is named by its git blob id. In a
git repository the index already holds those ids for unmodified tracked files,
and `git diff-files` (git's own stat cache) says which changed; everything else is
hashed here, cached by (size, mtime, ctime, inode).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

from .files import ProjectScan
from .registry import DEFAULT_PLATFORM

MAX_TAG = 128
_NOT_TAG = re.compile(r"[^A-Za-z0-9_.-]+")
CACHE_DIR = Path(os.environ.get("PYPOD_CACHE", "~/.cache/pypod")).expanduser() / "fingerprints"


def _file_digest(path: str, st: os.stat_result) -> str:
    """The git blob id of a file (or of a symlink's target)."""
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path).encode(errors="surrogateescape")
        return hashlib.sha1(b"blob %d\0" % len(target) + target).hexdigest()
    digest = hashlib.sha1(b"blob %d\0" % st.st_size)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cache_path(cache_dir: Path, root: Path) -> Path:
    return cache_dir / (hashlib.sha1(str(root.resolve()).encode()).hexdigest() + ".json")


def file_entries(root: Path, scan: ProjectScan, cache_dir: Path | None = CACHE_DIR) -> dict[str, str]:
    """Path -> "x" or "-" (executable bit) + git blob id, for every file of the scan."""
    known = scan.git_blobs
    hashed = hash_files(root, [rel for rel in scan.files if rel not in known], cache_dir)
    return {rel: known.get(rel) or hashed[rel] for rel in scan.files}


def fingerprint(entries: dict[str, str]) -> str:
    """sha1 over (path, executable?, git blob id) of every file, in sorted order."""
    lines = [f"{rel}\0{entry[0]}\0{entry[1:]}\n" for rel, entry in sorted(entries.items())]
    return hashlib.sha1("".join(lines).encode(errors="surrogateescape")).hexdigest()


def source_fingerprint(root: Path, scan: ProjectScan, cache_dir: Path | None = CACHE_DIR) -> str:
    return fingerprint(file_entries(root, scan, cache_dir))


def hash_files(root: Path, files: list[str], cache_dir: Path | None) -> dict[str, str]:
    """Path -> "<x or -><blob id>", from the stat cache where the file is unchanged."""
    result: dict[str, str] = {}
    if not files:
        return result
    cache: dict[str, list] = {}
    cache_file = _cache_path(cache_dir, root) if cache_dir is not None else None
    if cache_file is not None:
        try:
            cache = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cache = {}
    fresh: dict[str, list] = {}
    changed = False
    prefix = str(root) + os.sep
    for rel in files:
        path = prefix + rel
        st = os.lstat(path)
        cached = cache.get(rel)
        if (
            cached
            and cached[0] == st.st_size
            and cached[1] == st.st_mtime_ns
            and cached[2] == st.st_ctime_ns
            and cached[3] == st.st_ino
        ):
            digest = cached[4]
            fresh[rel] = cached
        else:
            digest = _file_digest(path, st)
            fresh[rel] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, digest]
            changed = True
        executable = "x" if st.st_mode & 0o111 and not stat.S_ISLNK(st.st_mode) else "-"
        result[rel] = executable + digest
    if cache_file is not None and (changed or len(fresh) != len(cache)):
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(fresh))
        os.replace(tmp, cache_file)
    return result


def tag_part(text: str) -> str:
    return _NOT_TAG.sub("-", text).strip(".-") or "none"


def image_tag(
    repo: str, branch: str, commit: str, source_hash: str, dependency_key: str, platform: str = DEFAULT_PLATFORM
) -> str:
    """The tag; repo and branch are shortened so the whole fits in 128 characters."""
    # The platform counts: a multi-platform dependency image has one digest for all.
    combined = hashlib.sha1(f"{dependency_key}\n{platform}\n{source_hash}".encode()).hexdigest()[:20]
    tail = f"_commit-{tag_part(commit or 'none')}_sha1-{combined}"
    room = MAX_TAG - len(tail) - 1
    repo_part, branch_part = tag_part(repo), tag_part(branch or "nobranch")
    if len(repo_part) + len(branch_part) > room:
        repo_part = repo_part[: max(8, room // 3)]
        branch_part = branch_part[: room - len(repo_part)]
    return f"{repo_part}_{branch_part}{tail}"
