"""What the sync leaves alone, as plain data both sides apply (see agent/tree.py's
Excludes): pypod's fixed exclusions, then `.gitignore` files (nested ones too),
`.pypodignore` and `--sync-exclude`, compiled to regexes by pathspec."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pathspec

from ..errors import UsageError
from ..image.files import EXCLUDED_DIRS, EXCLUDED_SUFFIXES

IGNORE_FILES = (".gitignore", ".pypodignore")
LARGE_FILE_BYTES = 50 * 1024 * 1024


def rebase_pattern(pattern: str, directory: str) -> str:
    """A pattern from `directory/.gitignore`, as the root would say it."""
    negate = pattern.startswith("!")
    body = pattern[1:] if negate else pattern
    if directory:
        anchored = "/" in body.rstrip("/")
        body = f"{directory}/{body.lstrip('/')}" if anchored else f"{directory}/**/{body}"
    return ("!" if negate else "") + body


def _read_patterns(path: Path) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line.rstrip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def ignore_patterns(root: Path) -> list[str]:
    """Every ignore file's patterns, rebased to the root, outer files first."""
    patterns: list[str] = []
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_DIRS)
        rel_dir = os.path.relpath(current, root).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir
        for name in IGNORE_FILES:
            if name in files:
                patterns += [rebase_pattern(p, rel_dir) for p in _read_patterns(Path(current) / name)]
    return patterns


def compile_excludes(patterns: Iterable[str]) -> dict[str, Any]:
    """The spec both sides use: fixed names, then (excludes?, regex) rules, last match wins."""
    spec = pathspec.GitIgnoreSpec.from_lines(list(patterns))
    rules = [
        [bool(p.include), p.regex.pattern]
        for p in spec.patterns
        if isinstance(p, pathspec.pattern.RegexPattern) and p.include is not None and p.regex is not None
    ]
    return {"dirs": sorted(EXCLUDED_DIRS), "suffixes": list(EXCLUDED_SUFFIXES), "rules": rules}


def _parses(pattern: str) -> bool:
    try:
        pathspec.GitIgnoreSpec.from_lines([pattern])
    except ValueError:
        return False
    return True


def check_patterns(patterns: Iterable[str]) -> None:
    """A `sync_exclude` setting that is no gitignore pattern is the user's to fix."""
    for pattern in patterns:
        if not _parses(pattern):
            raise UsageError(
                f"sync exclude {pattern!r} is not a gitignore pattern",
                hint="fix --sync-exclude (or sync_exclude in [tool.pypod], PYPOD_SYNC_EXCLUDE): e.g. 'data/', '*.log'",
            )


def sync_excludes(root: Path, extra: Iterable[str] = ()) -> dict[str, Any]:
    """The excludes of a project folder. A line of an ignore file that is no pattern is
    skipped, as git skips it."""
    extra = list(extra)
    check_patterns(extra)
    from_files = ignore_patterns(root)
    try:
        return compile_excludes([*from_files, *extra])
    except ValueError:
        return compile_excludes([*(p for p in from_files if _parses(p)), *extra])
