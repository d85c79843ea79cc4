"""The local side reads a small file once: the bytes it hashed are the bytes it sends."""

from __future__ import annotations

from pathlib import Path

import pytest

from pypod.agent.tree import Excludes, Tree, blob_id


def test_held_bytes_are_the_hashed_version_whatever_the_file_holds_later(tmp_path: Path) -> None:
    tree = Tree(str(tmp_path), Excludes({}))
    tree.hold_budget = 1 << 20
    (tmp_path / "a.py").write_bytes(b"first")
    version = tree.version("a.py")
    (tmp_path / "a.py").write_bytes(b"second")  # changed before it is sent
    assert version == "-" + blob_id(b"first")
    assert tree.take_held("a.py", version) == b"first"
    assert tree.take_held("a.py", version) is None  # taken once
    assert tree.hold_budget == 1 << 20


def test_hashing_holds_small_files_within_the_budget_only(tmp_path: Path) -> None:
    tree = Tree(str(tmp_path), Excludes({}))
    tree.hold_budget = 10
    for name, size in (("a", 6), ("b", 6), ("c", 3)):
        (tmp_path / name).write_bytes(b"x" * size)
    versions = tree.scan()
    assert sorted(tree.held) == ["a", "c"] or sorted(tree.held) == ["b", "c"]
    assert tree.hold_budget == 1
    tree.release_held()
    assert tree.held == {} and tree.hold_budget == 10
    assert tree.take_held("a", versions["a"]) is None


def test_a_first_sync_opens_each_small_file_here_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pypod.sync import syncer
    from tests.synchelp import RunningSync, local_agent

    local, remote = tmp_path / "local", tmp_path / "pod"
    local.mkdir()
    for i in range(30):
        (local / f"m{i}.py").write_text(f"x = {i}\n" * 100)
    reopened: list[str] = []

    def spy_open(path, *args):  # type: ignore[no-untyped-def]
        reopened.append(str(path))
        return open(path, *args)

    monkeypatch.setattr(syncer, "open", spy_open, raising=False)
    with RunningSync(local, str(remote), local_agent()) as sync:
        pass
    assert reopened == []  # sent from the bytes held since they were hashed
    assert sync.syncer.tree.held == {}
    assert all((remote / f"m{i}.py").read_text() == f"x = {i}\n" * 100 for i in range(30))


def test_the_hold_budget_comes_back_whatever_happens_to_what_was_held(tmp_path: Path) -> None:
    tree = Tree(str(tmp_path), Excludes({}))
    tree.hold_budget = 100
    (tmp_path / "a").write_bytes(b"x" * 10)
    first = tree.version("a")
    (tmp_path / "a").write_bytes(b"y" * 20)
    second = tree.version("a")  # hashed again before it was sent: only the newer bytes are held
    assert tree.hold_budget == 80
    assert tree.take_held("a", first) is None  # another version than asked for: dropped all the same
    assert tree.hold_budget == 100 and tree.held == {}
    assert second != first


def test_an_edit_before_the_local_watches_are_up_still_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from pypod.sync import syncer
    from tests.synchelp import RunningSync, local_agent, wait_until

    local, remote = tmp_path / "local", tmp_path / "pod"
    local.mkdir()
    (local / "a.py").write_text("first\n")
    real_watch = syncer.Syncer._watch_local

    def watch_late(self):  # type: ignore[no-untyped-def]
        self.first_sync.wait(10)
        (local / "a.py").write_text("edited before any watch\n")  # no event will ever say so
        time.sleep(0.05)
        real_watch(self)

    monkeypatch.setattr(syncer.Syncer, "_watch_local", watch_late)
    with RunningSync(local, str(remote), local_agent()):
        wait_until(lambda: (remote / "a.py").read_text() == "edited before any watch\n", what="the early edit")


def test_edits_watchfiles_would_filter_out_sync_as_any_other(tmp_path: Path) -> None:
    import time

    from tests.synchelp import RunningSync, local_agent, wait_until

    local, remote = tmp_path / "local", tmp_path / "pod"
    (local / "node_modules").mkdir(parents=True)
    (local / "node_modules" / "x.js").write_text("1\n")
    (local / "notes.txt~").write_text("1\n")
    with RunningSync(local, str(remote), local_agent()):
        assert (remote / "node_modules" / "x.js").read_text() == "1\n"  # the first sync carries them
        time.sleep(1.2)  # past the one catch-up scan when the watches come up: only events count now
        (local / "node_modules" / "x.js").write_text("2\n")
        (local / "notes.txt~").write_text("2\n")
        wait_until(lambda: (remote / "node_modules" / "x.js").read_text() == "2\n", what="a node_modules edit")
        wait_until(lambda: (remote / "notes.txt~").read_text() == "2\n", what="an editor backup's edit")
