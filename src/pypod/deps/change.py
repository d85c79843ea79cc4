"""`pypod add` and `pypod remove` in a project folder: the file edit, and in a pypod pod
the install into the live environment first (so a package that cannot be installed
leaves the files as they were)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..image.detect import detect
from ..project import find_root
from . import install as live
from .record import dependency_target, edit, parse_requirement


@dataclass(frozen=True)
class Change:
    """What `pypod.add` or `pypod.remove` did."""

    verb: str  # "added" or "removed"
    requirements: tuple[str, ...]
    where: str  # the file (and table) written
    installed: bool  # the live environment changed too (in a pypod pod)

    def summary(self) -> str:
        what = " ".join(self.requirements)
        into = "to" if self.verb == "added" else "from"
        if self.installed:
            done = "installed into" if self.verb == "added" else "uninstalled from"
            return f"{self.verb} {what} {into} {self.where}, and {done} the running environment"
        nothing = "installed" if self.verb == "added" else "uninstalled"
        image = "has it" if self.verb == "added" else "leaves it out"
        why = f"not in a pypod pod: nothing {nothing}; the next run's image {image}"
        return f"{self.verb} {what} {into} {self.where} ({why})"

    def __repr__(self) -> str:
        return f"<pypod: {self.summary()}>"


def _write(path: Path, text: str) -> None:
    """Atomically (the sync sees one change), keeping the file's mode."""
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".pypod-tmp")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def change(requirements: list[str], remove: bool = False, root: Path | None = None) -> Change:
    """Add (or remove) `requirements` in the project at or above `root` (default: the
    working directory). In a pypod pod they are installed (uninstalled) first."""
    if not requirements:
        raise UsageError("no package named", hint="e.g. pypod add six 'requests>=2'")
    names = [parse_requirement(r).name for r in requirements]
    project = find_root(root or Path.cwd())
    spec = detect(project)
    target = dependency_target(spec, names if remove else list(requirements), remove)
    path = project / target.path
    text = path.read_text() if path.exists() else ""
    new_text = edit(target, text, names if remove else list(requirements), remove)
    in_pod = live.in_pypod_pod()
    if in_pod:
        if remove:
            live.uninstall(names)
        else:
            live.install(list(requirements))
    if new_text != text or not path.exists():
        _write(path, new_text)
    return Change("removed" if remove else "added", tuple(names if remove else requirements), target.where, in_pod)
