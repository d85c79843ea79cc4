"""Installing into the live environment of a pypod pod, through uv: the thin I/O of
`pypod add` and `pypod remove` in a pod."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import DependencyError

RUN_ENV = "PYPOD_RUN"  # set in every driver pod pypod starts (kube/manifests.py ENV_RUN)
INSTALL_TIMEOUT_S = 900.0
# uv's and pip's decorations around the resolver's words.
DECORATION = re.compile(r"^[\s×╰─▶│├└┬┴┼•]+|^(error|ERROR|cause|hint|help):\s*", re.UNICODE)


def in_pypod_pod(environ: dict[str, str] | None = None) -> bool:
    """Whether this process runs in a driver pod pypod started (its manifest sets PYPOD_RUN)."""
    return bool((os.environ if environ is None else environ).get(RUN_ENV))


def resolver_reason(output: str) -> str:
    """Pure: the resolver's or installer's reason as one line, from uv's or pip's stderr
    (its box-drawing and `error:`/`cause:` prefixes dropped, its lines joined)."""
    parts = []
    for raw in output.splitlines():
        line = raw.strip()
        while True:
            stripped = DECORATION.sub("", line).strip()
            if stripped == line:
                break
            line = stripped
        if line and not line.startswith(("Using Python", "Resolved ", "Prepared ", "Audited ")):
            parts.append(line)
    reason = " ".join(parts) or "no reason given"
    return reason.rstrip(".")


def installer(python: str = sys.executable) -> tuple[list[str], bool]:
    """uv's `pip` for this interpreter (uv on PATH, or beside the interpreter), and True;
    pip's, and False, when the image has no uv."""
    uv = shutil.which("uv") or str(Path(python).parent / "uv")
    if os.access(uv, os.X_OK):
        return [uv, "pip"], True
    return [python, "-m", "pip"], False


def install(requirements: list[str], python: str = sys.executable) -> None:
    """Install into the environment `python` runs from; DependencyError with the resolver's
    reason when that cannot be done (nothing is changed then)."""
    tool, uv = installer(python)
    argv = [*tool, "install", *(["--python", python] if uv else []), *requirements]
    _run(argv, f"cannot install {' '.join(requirements)}")


def uninstall(names: list[str], python: str = sys.executable) -> None:
    tool, uv = installer(python)
    argv = [*tool, "uninstall", *(["--python", python] if uv else ["-y"]), *names]
    _run(argv, f"cannot uninstall {' '.join(names)}")


def _run(argv: list[str], what: str) -> None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except FileNotFoundError as exc:
        raise DependencyError(f"{what}: {exc}", hint="the image needs uv or pip in its environment") from exc
    except subprocess.TimeoutExpired as exc:
        raise DependencyError(
            f"{what}: no answer within {INSTALL_TIMEOUT_S:.0f}s", hint="check that the package index is reachable"
        ) from exc
    if result.returncode != 0:
        raise DependencyError(
            f"{what}: {resolver_reason(result.stderr or result.stdout)}",
            hint="check the name and version, and that the package index (UV_INDEX_URL, PIP_INDEX_URL) has it; "
            "the project's files were left as they were",
        )
