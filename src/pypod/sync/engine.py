"""Sync decisions: pure three-way merges of the local folder, the pod's copy and the
last state both sides agreed on. Nothing here reads or writes a file.

A path's version is its content digest plus executable bit (None: absent).

- One side changed since the agreed state: the change goes to the other side. A
  delete goes across only if the other side still holds the agreed version.
- Both changed, differently: the local version stays and goes to the pod; the pod's
  is kept locally as `NAME.pod-conflict-<stamp>`. A change beats a delete. So no
  write is ever lost.
- First sync (nothing agreed yet), by `initial` mode:
  ``local`` (default): local wins where both have a path and differ; paths only in
            the pod come back; nothing is deleted.
  ``pod``:  the same, but the pod's version wins where both differ.
  ``mirror``: the pod is made equal to the local folder; paths only in the pod
            are deleted there (asked for explicitly, never the default).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

INITIAL_MODES = ("local", "pod", "mirror")

Version = str  # "<x or -><digest>"; the mode bit is part of the version


@dataclass(frozen=True)
class Plan:
    """What to do to bring both sides to one state."""

    upload: tuple[str, ...] = ()  # local -> pod
    download: tuple[str, ...] = ()  # pod -> local
    delete_local: tuple[str, ...] = ()
    delete_remote: tuple[str, ...] = ()
    conflicts: tuple[tuple[str, str], ...] = ()  # (path, local copy name for the pod's version)
    agreed: Mapping[str, Version] = field(default_factory=dict)  # the state once the plan is applied

    @property
    def empty(self) -> bool:
        return not (self.upload or self.download or self.delete_local or self.delete_remote or self.conflicts)


def conflict_name(path: str, stamp: str) -> str:
    """`dir/name.ext` -> `dir/name.ext.pod-conflict-<stamp>`: beside the file, never over one."""
    return f"{path}.pod-conflict-{stamp}"


def decide(
    agreed: Mapping[str, Version] | None,
    local: Mapping[str, Version],
    remote: Mapping[str, Version],
    stamp: str,
    initial: str = "local",
) -> Plan:
    """The plan for one round. `agreed` None means the first sync."""
    upload, download, delete_local, delete_remote, conflicts = [], [], [], [], []
    result: dict[str, Version] = {}
    first = agreed is None
    base: Mapping[str, Version] = agreed or {}
    taken = set(local) | set(remote)
    for path in sorted(taken | set(base)):
        b, lv, rv = base.get(path), local.get(path), remote.get(path)
        if lv == rv:
            if lv is not None:
                result[path] = lv
            continue
        if first:
            if lv is not None and (rv is None or initial != "pod"):
                upload.append(path)
                result[path] = lv
            elif initial == "mirror":
                delete_remote.append(path)
            else:  # only in the pod (or the pod wins): it comes back, nothing is deleted
                download.append(path)
                result[path] = rv  # type: ignore[assignment]
            continue
        if lv == b:  # only the pod changed
            if rv is None:
                delete_local.append(path)
            else:
                download.append(path)
                result[path] = rv
        elif rv == b:  # only the local side changed
            if lv is None:
                delete_remote.append(path)
            else:
                upload.append(path)
                result[path] = lv
        elif lv is None:  # deleted here, changed there: the change wins
            download.append(path)
            result[path] = rv  # type: ignore[assignment]
        elif rv is None:  # changed here, deleted there
            upload.append(path)
            result[path] = lv
        else:  # both changed: local stays, the pod's version is kept beside it
            copy = conflict_name(path, stamp)
            n = 1
            while copy in taken:
                copy = conflict_name(path, f"{stamp}-{n}")
                n += 1
            taken.add(copy)
            conflicts.append((path, copy))
            upload.append(path)
            result[path] = lv
    return Plan(tuple(upload), tuple(download), tuple(delete_local), tuple(delete_remote), tuple(conflicts), result)
