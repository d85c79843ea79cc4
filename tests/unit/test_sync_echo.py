"""The agent's own writes are not read back as changes (their inotify echo is
skipped), and nothing else is skipped with them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pypod.agent.tree import Excludes, Tree, blob_id
from pypod.agent.watcher import InotifyWatcher


def put(tree: Tree, rel: str, data: bytes) -> None:
    tree.new_batch()
    version = "-" + blob_id(data)
    assert tree.put_bytes(rel, version, None, data) == version


@pytest.fixture
def watched(tmp_path: Path) -> tuple[Path, Tree, InotifyWatcher]:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    tree = Tree(str(root), Excludes({}))
    watcher = InotifyWatcher(str(root), tree.excludes)
    tree.on_linked = watcher.expect
    yield root, tree, watcher
    watcher.close()


def test_a_file_this_side_created_raises_no_change_but_later_changes_do(watched) -> None:  # type: ignore[no-untyped-def]
    root, tree, watcher = watched
    if not tree.unnamed_files:
        pytest.skip("this disk has no O_TMPFILE: new files are renamed in, their echo is read")
    put(tree, "a.txt", b"a")
    put(tree, "d/b.txt", b"b")
    assert watcher.read() == set()
    (root / "a.txt").write_text("changed in the pod\n")
    os.unlink(root / "d" / "b.txt")
    os.symlink("a.txt", root / "d" / "b.txt")  # a symlink raises IN_CREATE only, as our writes do
    assert watcher.read() == {"a.txt", "d/b.txt"}


def test_a_write_into_a_directory_no_watch_holds_skips_nothing_later(watched) -> None:  # type: ignore[no-untyped-def]
    root, tree, watcher = watched
    os.rename(root / "d", root / "moved")  # the watch on d now holds `moved`
    (root / "d").mkdir()  # a new directory under the old name, not watched yet
    put(tree, "d/x", b"x")  # into the new d: no watch raises its event
    assert watcher.read() >= {"moved", "d"}
    os.symlink("elsewhere", root / "moved" / "x")  # the same name, in the directory the old watch holds
    assert "moved/x" in watcher.read()
