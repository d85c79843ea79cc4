"""The sync decision engine: random interleavings on both sides converge, lose no write,
and keep every conflict as a copy. And hostile paths are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pypod.agent.tree import UnsafePathError, check_link_target, resolve_under
from pypod.sync.engine import decide

PATHS = ["a.py", "b.py", "pkg/c.py", "pkg/d.txt"]
CONTENTS = [f"-v{i}" for i in range(6)] + ["xv-exec"]


def apply(plan, local: dict, remote: dict) -> None:  # type: ignore[no-untyped-def]
    for path, copy in plan.conflicts:
        local[copy] = remote[path]
    for path in plan.upload:
        remote[path] = local[path]
    for path in plan.download:
        local[path] = remote[path]
    for path in plan.delete_local:
        local.pop(path, None)
    for path in plan.delete_remote:
        remote.pop(path, None)


def sync_until_quiet(agreed, local, remote):  # type: ignore[no-untyped-def]
    for round_ in range(4):
        plan = decide(agreed, local, remote, stamp=f"t{round_}")
        apply(plan, local, remote)
        agreed = dict(plan.agreed)
        if plan.empty:
            return agreed
    raise AssertionError("sync did not converge")


edit = st.tuples(
    st.sampled_from(["write", "delete", "rename"]),
    st.sampled_from(PATHS),
    st.sampled_from(PATHS),
    st.sampled_from(CONTENTS),
)


def run(ops, side: dict) -> None:  # type: ignore[no-untyped-def]
    for kind, path, other, content in ops:
        if kind == "write":
            side[path] = content
        elif kind == "delete":
            side.pop(path, None)
        elif kind == "rename" and path in side and other != path:
            side[other] = side.pop(path)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(st.sampled_from(PATHS), st.sampled_from(CONTENTS)),
    st.lists(edit, max_size=6),
    st.lists(edit, max_size=6),
)
def test_random_interleavings_converge_and_lose_nothing(start, local_ops, remote_ops):
    local, remote = dict(start), dict(start)
    agreed = sync_until_quiet(dict(start), local, remote)
    run(local_ops, local)
    run(remote_ops, remote)
    before_local, before_remote = dict(local), dict(remote)
    sync_until_quiet(agreed, local, remote)
    assert local == remote
    for path, content in before_local.items():
        if content != agreed.get(path):  # a local write: it is where it was written
            assert local[path] == content
    for path, content in before_remote.items():
        if content != agreed.get(path):  # a pod write: at its path, or kept as a conflict copy
            assert local.get(path) == content or any(
                name.startswith(f"{path}.pod-conflict-") and value == content for name, value in local.items()
            )


def test_first_sync_local_wins_and_pod_only_files_come_back():
    plan = decide(None, {"a": "-1", "b": "-2"}, {"a": "-9", "c": "-3"}, stamp="s")
    assert plan.upload == ("a", "b")
    assert plan.download == ("c",)
    assert not plan.delete_local and not plan.delete_remote and not plan.conflicts


def test_delete_goes_across_only_over_the_agreed_version():
    agreed = {"a": "-1"}
    assert decide(agreed, {}, {"a": "-1"}, "s").delete_remote == ("a",)
    changed_there = decide(agreed, {}, {"a": "-2"}, "s")
    assert changed_there.download == ("a",) and not changed_there.delete_remote


def test_concurrent_edits_keep_local_and_save_the_pods_copy():
    plan = decide({"a.py": "-1"}, {"a.py": "-2"}, {"a.py": "-3", "a.py.pod-conflict-s": "-0"}, "s")
    assert plan.upload == ("a.py",)
    assert plan.conflicts == (("a.py", "a.py.pod-conflict-s-1"),)


@pytest.mark.parametrize("rel", ["/etc/passwd", "../x", "a/../../x", "a/./b", "", "a\\b", "a//b", "x\0y"])
def test_hostile_paths_are_refused(tmp_path: Path, rel: str):
    with pytest.raises(UnsafePathError):
        resolve_under(str(tmp_path), rel)


def test_symlinked_parent_directories_and_escaping_links_are_refused(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "escape").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="symlink"):
        resolve_under(str(root), "escape/evil.py")
    assert resolve_under(str(root), "pkg/ok.py") == str(root / "pkg" / "ok.py")
    check_link_target("pkg/link", "../other.py")
    for target in ("../../etc/passwd", "/etc/passwd"):
        with pytest.raises(UnsafePathError):
            check_link_target("pkg/link", target)


def test_first_sync_modes_pod_wins_and_mirror():
    local, remote = {"a": "-1", "b": "-2"}, {"a": "-9", "c": "-3"}
    pod_wins = decide(None, local, remote, stamp="s", initial="pod")
    assert pod_wins.download == ("a", "c") and pod_wins.upload == ("b",) and not pod_wins.delete_remote
    mirror = decide(None, local, remote, stamp="s", initial="mirror")
    assert mirror.upload == ("a", "b") and mirror.delete_remote == ("c",) and not mirror.download


# -- Concurrency: edits land while a round's operations are in flight ------------------
# Every write is a fresh token. The syncer applies each operation only if its target
# still holds what the plan saw (as the agent and the local side do). A token may
# disappear only if a person overwrote or deleted it where they could see it.

SIDES = ("local", "remote")


class World:
    def __init__(self) -> None:
        self.sides: dict[str, dict[str, str]] = {"local": {}, "remote": {}}
        self.agreed: dict[str, str] | None = None
        self.written: set[str] = set()
        self.superseded: set[str] = set()
        self.counter = 0
        self.conflicts = 0

    def edit(self, side: str, kind: str, path: str, other: str) -> None:
        files = self.sides[side]
        if kind == "write":
            self.counter += 1
            token = f"-{side[0]}{self.counter}"
            if path in files:
                self.superseded.add(files[path])  # the person saw it and replaced it
            files[path] = token
            self.written.add(token)
        elif kind == "delete" and path in files:
            self.superseded.add(files.pop(path))
        elif kind == "rename" and path in files and other != path:
            if other in files:
                self.superseded.add(files[other])
            files[other] = files.pop(path)

    def round(self, concurrent: list[tuple[str, str, str, str]], stamp: str) -> bool:
        """Plan on a snapshot, let `concurrent` edits land, then apply conditionally."""
        local, remote = dict(self.sides["local"]), dict(self.sides["remote"])
        plan = decide(self.agreed, local, remote, stamp=stamp)
        self.conflicts += len(plan.conflicts)
        if self.agreed is None:
            self.agreed = {}
        # As the syncer does for every path it decides on, which includes those gone from
        # both sides: a stale agreed version would make a later rename look like a delete.
        for path in set(local) | set(remote) | set(self.agreed):
            if local.get(path) == remote.get(path):
                self._agree(path, local.get(path))
        for side, kind, path, other in concurrent:
            self.edit(side, kind, path, other)
        live_local, live_remote = self.sides["local"], self.sides["remote"]
        keep = dict(plan.conflicts)
        for path in plan.upload:
            if live_local.get(path) == local[path] and live_remote.get(path) == remote.get(path):
                copy = keep.get(path)
                if copy is not None and path in live_remote:
                    # The pod keeps what it replaces under the copy's name, in the same step;
                    # a taken name refuses the whole put.
                    if copy in live_remote:
                        continue
                    live_remote[copy] = live_remote[path]
                live_remote[path] = local[path]
                self._agree(path, local[path])
        for path in plan.download:
            if live_remote.get(path) == remote[path] and live_local.get(path) == local.get(path):
                live_local[path] = remote[path]
                self._agree(path, remote[path])
        for path in plan.delete_local:
            if live_local.get(path) == local.get(path):
                live_local.pop(path, None)
                self._agree(path, None)
        for path in plan.delete_remote:
            if live_remote.get(path) == remote.get(path):
                live_remote.pop(path, None)
                self._agree(path, None)
        return plan.empty and not concurrent

    def _agree(self, path: str, version: str | None) -> None:
        assert self.agreed is not None
        if version is None:
            self.agreed.pop(path, None)
        else:
            self.agreed[path] = version


concurrent_edit = st.tuples(
    st.sampled_from(SIDES),
    st.sampled_from(["write", "delete", "rename"]),
    st.sampled_from(PATHS),
    st.sampled_from(PATHS),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.lists(concurrent_edit, max_size=4), min_size=1, max_size=6))
# Found by Hypothesis: both sides rename b.py to a.py, then the laptop renames it back.
@example(
    [
        [("local", "write", "b.py", "a.py")],
        [],
        [("local", "rename", "b.py", "a.py"), ("remote", "rename", "b.py", "a.py")],
        [("local", "rename", "a.py", "b.py")],
    ]
)
def test_edits_racing_with_sync_rounds_converge_and_lose_no_write(batches):
    world = World()
    for number, batch in enumerate(batches):
        world.round(batch, stamp=f"r{number}")
    for number in range(10):
        if world.round([], stamp=f"quiet{number}"):
            break
    else:
        raise AssertionError("sync did not converge")
    assert world.sides["local"] == world.sides["remote"]
    present = set(world.sides["local"].values())
    lost = world.written - world.superseded - present
    assert not lost, f"writes lost: {lost}"
