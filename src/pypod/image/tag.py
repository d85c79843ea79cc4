"""Content-addressed image tags, julia_pod's form with a deterministic hash:

    <repo>_<branch>_commit-<short sha>_sha1-<hash>

The hash covers exactly the source layer's content (paths, executable bits, file
bytes, symlink targets) and the dependency key; not `.git`, not mtimes, not the
order the filesystem lists things in. File hashes are cached by (size, mtime,
ctime, inode), as git's index does, so a warm run only stats the files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

MAX_TAG = 128
_NOT_TAG = re.compile(r"[^A-Za-z0-9_.-]+")
CACHE_DIR = Path(os.environ.get("PYPOD_CACHE", "~/.cache/pypod")).expanduser() / "fingerprints"


def _file_digest(path: Path, st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return "link:" + hashlib.sha1(os.readlink(path).encode(errors="surrogateescape")).hexdigest()
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_fingerprint(root: Path, files: list[str], cache_dir: Path | None = CACHE_DIR) -> str:
    """sha1 over (path, executable?, content digest) of every file, in sorted order."""
    cache_file = None
    cache: dict[str, list] = {}
    if cache_dir is not None:
        cache_file = cache_dir / (hashlib.sha1(str(root.resolve()).encode()).hexdigest() + ".json")
        try:
            cache = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cache = {}
    fresh: dict[str, list] = {}
    total = hashlib.sha1()
    for rel in sorted(files):
        path = root / rel
        st = path.lstat()
        key = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        cached = cache.get(rel)
        digest = cached[4] if cached and cached[:4] == key else _file_digest(path, st)
        fresh[rel] = [*key, digest]
        executable = "x" if st.st_mode & 0o111 and not stat.S_ISLNK(st.st_mode) else "-"
        total.update(f"{rel}\0{executable}\0{digest}\n".encode(errors="surrogateescape"))
    if cache_file is not None and fresh != cache:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(fresh))
        os.replace(tmp, cache_file)
    return total.hexdigest()


def tag_part(text: str) -> str:
    return _NOT_TAG.sub("-", text).strip(".-") or "none"


def image_tag(repo: str, branch: str, commit: str, source_hash: str, dependency_key: str) -> str:
    """The tag; repo and branch are shortened so the whole fits in 128 characters."""
    combined = hashlib.sha1(f"{dependency_key}\n{source_hash}".encode()).hexdigest()[:20]
    tail = f"_commit-{tag_part(commit or 'none')}_sha1-{combined}"
    room = MAX_TAG - len(tail) - 1
    repo_part, branch_part = tag_part(repo), tag_part(branch or "nobranch")
    if len(repo_part) + len(branch_part) > room:
        repo_part = repo_part[: max(8, room // 3)]
        branch_part = branch_part[: room - len(repo_part)]
    return f"{repo_part}_{branch_part}{tail}"
