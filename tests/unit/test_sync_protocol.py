"""The sync protocol end to end between the syncer and the real agent, run as a
local process over pipes (the same bytes kubectl exec carries; the integration
tests run it through a pod)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pypod.agent.tree import Excludes, Tree, UnsafePathError
from pypod.sync.excludes import compile_excludes
from tests.synchelp import RunningSync, local_agent, oldest_python, scan_after_the_index, wait_until


@pytest.fixture
def sides(tmp_path: Path) -> tuple[Path, Path]:
    local, remote = tmp_path / "local", tmp_path / "pod"
    local.mkdir()
    remote.mkdir()
    return local, remote


def test_first_sync_local_wins_pod_only_comes_back_nothing_deleted(sides: tuple[Path, Path]) -> None:
    local, remote = sides
    (local / "same.py").write_text("same\n")
    (remote / "same.py").write_text("same\n")
    (local / "differs.py").write_text("local\n")
    (remote / "differs.py").write_text("pod\n")
    (remote / "notebook.ipynb").write_text("{}\n")
    (remote / ".git").mkdir()
    (remote / ".git" / "config").write_text("pod's git\n")
    (local / "run.sh").write_text("#!/bin/sh\n")
    (local / "run.sh").chmod(0o755)
    (local / "empty").mkdir()
    (local / "pkg").mkdir()
    (local / "pkg" / "link").symlink_to("../same.py")
    with RunningSync(local, str(remote), local_agent()):
        pass
    assert (remote / "differs.py").read_text() == "local\n"
    assert (local / "notebook.ipynb").read_text() == "{}\n"
    assert os.access(remote / "run.sh", os.X_OK)
    assert (remote / "empty").is_dir()
    assert os.readlink(remote / "pkg" / "link") == "../same.py"
    assert not (local / ".git").exists() and (remote / ".git" / "config").read_text() == "pod's git\n"


def snapshot(root: Path) -> dict[str, object]:
    """Every path below root: a directory, a link's target, or a file's bytes and mode."""
    found: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = (path.read_bytes(), os.access(path, os.X_OK))
    return found


def mixed_first_sync(local: Path, remote: Path, clash: bool) -> None:
    """Two folders that differ in every way a first sync meets (`clash`: a directory
    here where the pod has a file)."""
    for side in (local, remote):
        (side / "same.py").write_text("same\n")
        (side / "shared").mkdir()
        (side / "shared" / "both.py").write_text(f"{side.name}\n")
    (local / "differs.py").write_text("local\n")
    (remote / "differs.py").write_text("pod\n")
    (local / "new" / "deeper").mkdir(parents=True)
    (local / "new" / "deeper" / "a.py").write_text("a\n")
    (local / "shared" / "only_here.py").write_text("here\n")
    (local / "run.sh").write_text("#!/bin/sh\n")
    (local / "run.sh").chmod(0o755)
    (local / "link").symlink_to("same.py")
    if clash:
        (local / "out").mkdir()
        (local / "out" / "part.txt").write_text("part\n")
        (remote / "out").write_text("a file in the pod\n")
    (remote / "results").mkdir()  # only in the pod
    (remote / "results" / "r.txt").write_text("r\n")
    (remote / "notebook.ipynb").write_text("{}\n")


@pytest.mark.parametrize("initial", ["local", "pod", "mirror"])
def test_a_first_sync_that_sends_during_the_scan_ends_as_one_that_waits_for_it(tmp_path: Path, initial: str) -> None:
    outcomes = []
    for order in ("scan first", "index first"):
        local, remote = tmp_path / order / "local", tmp_path / order / "pod"
        local.mkdir(parents=True)
        remote.mkdir()
        mixed_first_sync(local, remote, clash=initial != "pod")
        running = RunningSync(local, str(remote), local_agent(), initial=initial)
        in_flight = scan_after_the_index(running.syncer) if order == "index first" else []
        with running as sync:
            sync.quiet()
        if order == "index first":
            assert in_flight and in_flight[0] > 0, "nothing went out during the scan"
        assert sync.syncer.health.problems == 0, sync.messages
        outcomes.append((snapshot(local), snapshot(remote)))
    assert outcomes[0] == outcomes[1]
    local_tree, pod_tree = outcomes[1]
    assert pod_tree["new/deeper/a.py"] == (b"a\n", False) and pod_tree["run.sh"] == (b"#!/bin/sh\n", True)
    assert pod_tree["link"] == ("link", "same.py")
    assert pod_tree["differs.py"] == local_tree["differs.py"] == ({"pod": b"pod\n"}.get(initial, b"local\n"), False)
    assert initial == "pod" or pod_tree["out/part.txt"] == (b"part\n", False)
    assert ("results/r.txt" in pod_tree) == ("results/r.txt" in local_tree) == (initial != "mirror")


def test_edits_renames_deletes_and_large_files_propagate_both_ways(sides: tuple[Path, Path]) -> None:
    local, remote = sides
    (local / "a.py").write_text("a = 1\n")
    with RunningSync(local, str(remote), local_agent()) as sync:
        (local / "a.py").write_text("a = 2\n")
        wait_until(lambda: (remote / "a.py").read_text() == "a = 2\n", what="local edit in the pod")
        (remote / "made_in_pod.txt").write_text("from the pod\n")
        wait_until(lambda: (local / "made_in_pod.txt").exists(), what="pod file locally")
        os.rename(local / "a.py", local / "b.py")
        wait_until(lambda: (remote / "b.py").exists() and not (remote / "a.py").exists(), what="rename")
        big = os.urandom(5 * 1024 * 1024 + 123)  # several chunks
        (remote / "data.bin").write_bytes(big)
        wait_until(lambda: (local / "data.bin").read_bytes() == big, what="large file from the pod")
        (remote / "made_in_pod.txt").unlink()
        wait_until(lambda: not (local / "made_in_pod.txt").exists(), what="pod delete locally")
        (local / "sub" / "deeper").mkdir(parents=True)
        wait_until(lambda: (remote / "sub" / "deeper").is_dir(), what="empty directories")
        sync.quiet()
    assert sync.syncer.health.conflicts == 0
    assert sorted(p.name for p in remote.iterdir()) == sorted(p.name for p in local.iterdir())


def test_both_sides_changed_keeps_local_and_the_pods_copy(sides: tuple[Path, Path], tmp_path: Path) -> None:
    local, remote = sides
    state = tmp_path / "state.json"
    (local / "model.py").write_text("v0\n")
    (local / "gone_here.py").write_text("keep me\n")
    with RunningSync(local, str(remote), local_agent(), state_file=state):
        pass
    # While nothing syncs, both sides edit model.py; the pod edits a file deleted locally.
    (local / "model.py").write_text("local edit\n")
    (remote / "model.py").write_text("pod edit\n")
    (local / "gone_here.py").unlink()
    (remote / "gone_here.py").write_text("edited in the pod\n")
    with RunningSync(local, str(remote), local_agent(), state_file=state) as sync:
        wait_until(lambda: list(local.glob("model.py.pod-conflict-*")), what="the pod's version kept locally")
        sync.quiet()
    copies = list(local.glob("model.py.pod-conflict-*"))
    assert [p.name for p in remote.glob("model.py.pod-conflict-*")] == [copies[0].name]  # kept in the pod too
    assert len(copies) == 1 and copies[0].read_text() == "pod edit\n"
    assert (local / "model.py").read_text() == "local edit\n" == (remote / "model.py").read_text()
    assert (local / "gone_here.py").read_text() == "edited in the pod\n"  # a change beats a delete
    assert any("conflict on model.py" in m for m in sync.messages)


def test_delete_propagates_only_over_the_agreed_version(sides: tuple[Path, Path], tmp_path: Path) -> None:
    local, remote = sides
    state = tmp_path / "state.json"
    (local / "old.py").write_text("old\n")
    (local / "also.py").write_text("also\n")
    with RunningSync(local, str(remote), local_agent(), state_file=state):
        pass
    (local / "old.py").unlink()
    (local / "also.py").unlink()
    (remote / "also.py").write_text("changed in the pod\n")
    with RunningSync(local, str(remote), local_agent(), state_file=state) as sync:
        sync.quiet()
    assert not (remote / "old.py").exists()
    assert (remote / "also.py").read_text() == "changed in the pod\n" == (local / "also.py").read_text()


def test_a_new_pods_first_sync_hashes_nothing_here_with_the_shared_stat_cache(
    sides: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pypod.agent import tree

    local, remote = sides
    for i in range(20):
        (local / f"m{i}.py").write_text(f"x = {i}\n")
    cache = tmp_path / "cache.json"
    with RunningSync(local, str(remote), local_agent(), state_file=tmp_path / "pod1.json", cache_file=cache):
        pass
    assert "cache" not in json.loads((tmp_path / "pod1.json").read_text())  # kept apart, once
    hashed: list[str] = []
    real_hash = tree.Tree._hash
    monkeypatch.setattr(
        tree.Tree,
        "_hash",
        lambda self, rel, full, mode, size: hashed.append(full) or real_hash(self, rel, full, mode, size),
    )
    (local / "m3.py").write_text("x = 'changed'\n")
    other_pod = tmp_path / "other-pod"
    with RunningSync(local, str(other_pod), local_agent(), state_file=tmp_path / "pod2.json", cache_file=cache):
        pass
    assert hashed == [str(local / "m3.py")]  # only the file that changed since
    assert (other_pod / "m3.py").read_text() == "x = 'changed'\n" and len(list(other_pod.iterdir())) == 20


def test_resume_after_a_killed_stream_sends_nothing_unchanged(sides: tuple[Path, Path]) -> None:
    local, remote = sides
    for i in range(50):
        (local / f"m{i}.py").write_text(f"x = {i}\n")
    connect = local_agent()
    with RunningSync(local, str(remote), connect) as sync:
        connect.links[-1].kill()
        (local / "m1.py").write_text("x = 'while down'\n")
        wait_until(lambda: len(connect.links) == 2 and sync.syncer.health.state == "watching", what="reconnect")
        wait_until(lambda: (remote / "m1.py").read_text() == "x = 'while down'\n", what="edit made while down")
        stats = {p.name: p.stat().st_mtime_ns for p in remote.iterdir() if p.name != "m1.py"}
        connect.links[-1].kill()
        wait_until(lambda: len(connect.links) == 3 and sync.syncer.health.state == "watching", what="reconnect")
        sync.quiet()
    assert {p.name: p.stat().st_mtime_ns for p in remote.iterdir() if p.name != "m1.py"} == stats
    assert any("reconnecting" in m for m in sync.messages)


def test_the_agent_runs_on_python_3_8_and_can_poll_without_inotify(sides: tuple[Path, Path]) -> None:
    python = oldest_python()
    if python is None:
        pytest.skip("no Python 3.8 on this machine to run the agent with")
    local, remote = sides
    (local / "a.py").write_text("a\n")
    with RunningSync(local, str(remote), local_agent(python=python), allow_inotify=False) as sync:
        assert sync.syncer.health.watcher == "polling"
        (remote / "b.py").write_text("b\n")
        wait_until(lambda: (local / "b.py").exists(), what="polled pod change")
        (local / "a.py").write_text("a2\n")
        wait_until(lambda: (remote / "a.py").read_text() == "a2\n", what="local change")
    assert (remote / "a.py").read_text() == "a2\n"


def test_the_local_side_refuses_what_a_hostile_pod_names(sides: tuple[Path, Path], tmp_path: Path) -> None:
    local, remote = sides
    outside = tmp_path / "outside"
    outside.mkdir()
    (remote / "escape").symlink_to(str(outside))  # absolute: never recreated locally
    (remote / "up").symlink_to("../outside")  # relative but leaving the root
    (remote / ".git").mkdir()
    (remote / ".git" / "hooks").mkdir()
    (remote / ".git" / "hooks" / "pre-commit").write_text("#!/bin/sh\nevil\n")
    with RunningSync(local, str(remote), local_agent()) as sync:
        sync.quiet()
    assert not (local / "escape").exists() and not (local / "up").exists()
    assert not (local / ".git").exists()
    assert list(outside.iterdir()) == []
    assert any("escape" in m for m in sync.messages) and any("up" in m for m in sync.messages)


@pytest.mark.parametrize("rel", ["../x", "/etc/passwd", "a/../../x", "a/./b", "", "a\\b", "a\0b"])
def test_both_sides_refuse_paths_out_of_the_root(tmp_path: Path, rel: str) -> None:
    tree = Tree(str(tmp_path), Excludes(compile_excludes([])))
    with pytest.raises(UnsafePathError):
        tree.commit(rel, "d", None)


def test_writes_through_a_symlinked_directory_are_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "data").symlink_to(str(outside))
    tree = Tree(str(root), Excludes(compile_excludes([])))
    with pytest.raises(UnsafePathError):
        tree.commit("data/evil.py", "d", None)
    with pytest.raises(UnsafePathError):
        tree.begin("data/evil.py", "-" + "0" * 40, 1)
    with pytest.raises(UnsafePathError):
        tree.commit("link", "l:../outside", None)
    with pytest.raises(UnsafePathError):
        tree.commit(".git/hooks/pre-commit", "d", None)
    assert list(outside.iterdir()) == []


def test_the_agent_refuses_hostile_puts(tmp_path: Path) -> None:
    import hashlib
    import subprocess
    import sys

    from pypod import agent
    from pypod.agent.frames import FrameReader, meta_frame, split_meta

    root = tmp_path / "pod"
    root.mkdir()
    (root / "link").symlink_to(str(tmp_path))
    argv, preamble = agent.stdin_command(sys.executable, "sync")
    body = b"evil\n"
    version = "-" + hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()
    frames = [meta_frame(b"H", {"root": str(root), "excludes": compile_excludes([])})]
    for path in ("../evil", "link/evil", "/tmp/evil", ".git/evil", "ok.txt"):
        frames.append(meta_frame(b"P", {"path": path, "version": version, "size": len(body), "expect": None}, body))
    frames.append(meta_frame(b"P", {"path": "out", "version": "l:../../x", "expect": None}))
    # The same, bundled; plus bytes that do not match their version, and a bundled link.
    bundled = ["../b-evil", "link/b-evil", "/tmp/b-evil", ".git/b-evil", "b-ok.txt", "b-changed.txt"]
    files = [[path, version, None, None, len(body)] for path in bundled]
    files.append(["b-link", "l:x", None, None, 0])
    data = body * 5 + b"other"
    frames.append(meta_frame(b"B", {"files": files}, data))
    proc = subprocess.run(argv, input=preamble + b"".join(frames), capture_output=True, timeout=30)
    results = {"done": [], "rejected": []}
    for kind, payload in FrameReader().feed(proc.stdout):
        meta, _ = split_meta(payload)
        if kind == b"A":
            results["done"] += meta["done"]
            results["rejected"] += meta["rejected"]
    assert [p for p, _ in results["done"]] == ["ok.txt", "b-ok.txt"]
    hostile = ["../evil", "link/evil", "/tmp/evil", ".git/evil", "out", *bundled[:4], "b-changed.txt", "b-link"]
    assert sorted(p for p, _, _ in results["rejected"]) == sorted(hostile)
    reasons = {p: reason for p, _, reason in results["rejected"]}
    assert reasons["b-changed.txt"] == "bytes did not match"
    assert not (tmp_path / "evil").exists() and not (tmp_path / "b-evil").exists()
    assert not (root / "out").exists() and not (root / ".git").exists() and not (root / "b-link").exists()
    assert (root / "b-ok.txt").read_bytes() == body and not (root / "b-changed.txt").exists()


def _version_of(data: bytes, executable: bool = False) -> str:
    from pypod.agent.tree import blob_id

    return ("x" if executable else "-") + blob_id(data)


@pytest.mark.parametrize("unnamed", [True, False], ids=["o_tmpfile", "temp_and_rename"])
def test_whole_file_puts_never_overwrite_what_appeared_and_leave_no_temp_files(tmp_path: Path, unnamed: bool) -> None:
    tree = Tree(str(tmp_path), Excludes(compile_excludes([])))
    tree.unnamed_files = unnamed
    new = _version_of(b"new\n", executable=True)
    assert tree.put_bytes("pkg/run.sh", new, None, b"new\n") == new
    assert (tmp_path / "pkg" / "run.sh").read_bytes() == b"new\n" and os.access(tmp_path / "pkg" / "run.sh", os.X_OK)
    assert tree.version("pkg/run.sh") == new  # the stat cache holds the file as named
    # Someone else wrote the name first: expecting it absent, the put must not land.
    (tmp_path / "pkg" / "raced.txt").write_bytes(b"theirs\n")
    theirs = _version_of(b"theirs\n")
    assert tree.put_bytes("pkg/raced.txt", _version_of(b"ours\n"), None, b"ours\n") == theirs
    assert (tmp_path / "pkg" / "raced.txt").read_bytes() == b"theirs\n"
    # Replacing goes only over the version expected.
    assert tree.put_bytes("pkg/raced.txt", _version_of(b"v2\n"), "-" + "0" * 40, b"v2\n") == theirs
    assert tree.put_bytes("pkg/raced.txt", _version_of(b"v2\n"), theirs, b"v2\n") == _version_of(b"v2\n")
    assert sorted(p.name for p in (tmp_path / "pkg").iterdir()) == ["raced.txt", "run.sh"]
    assert tree.unnamed_files is unnamed


def test_a_rescan_of_a_directory_covers_the_events_below_it(tmp_path: Path) -> None:
    tree = Tree(str(tmp_path), Excludes(compile_excludes([])))
    (tmp_path / "d").mkdir()
    for name in ("a", "b", "c"):
        (tmp_path / "d" / name).write_text(name)
    known: dict[str, str] = {}
    tree.refresh({""}, known)
    (tmp_path / "d" / "a").write_text("a2")
    (tmp_path / "d" / "b").unlink()
    (tmp_path / "d" / "new").write_text("n")
    changes = tree.refresh({"d", "d/a", "d/new"}, known)  # d/b's event is not among them
    assert changes == {"d/a": _version_of(b"a2"), "d/b": None, "d/new": _version_of(b"n")}
    assert sorted(known) == ["d", "d/a", "d/c", "d/new"]


def test_a_rescan_finds_what_went_missing_deeper_down_and_nowhere_else(tmp_path: Path) -> None:
    tree = Tree(str(tmp_path), Excludes(compile_excludes([])))
    for rel in ("d/e/x", "d/y", "dd/x", "z"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    known: dict[str, str] = {}
    tree.refresh({""}, known)
    (tmp_path / "d" / "e" / "x").unlink()
    (tmp_path / "dd" / "x").unlink()  # not below d: its own event would report it
    assert tree.refresh({"d"}, known) == {"d/e/x": None}
    assert "dd/x" in known


def test_symlink_chains_cannot_climb_out(tmp_path: Path) -> None:
    tree = Tree(str(tmp_path), Excludes(compile_excludes([])))
    assert tree.commit("s", "l:.", None) == "l:."  # a link to its own directory is fine
    for rel, target in (("t", "s/.."), ("u", "s/../x"), ("a/v", "../../x"), ("w", "..")):
        with pytest.raises(UnsafePathError):
            tree.commit(rel, "l:" + target, None)
    assert tree.commit("a/up", "l:../s", None) == "l:../s"


def test_a_directory_replaced_by_a_file_reaches_the_pod(sides: tuple[Path, Path]) -> None:
    local, remote = sides
    (local / "out").mkdir()
    (local / "out" / "part.txt").write_text("part\n")
    with RunningSync(local, str(remote), local_agent()) as sync:
        wait_until(lambda: (remote / "out" / "part.txt").exists(), what="first sync")
        (local / "out" / "part.txt").unlink()
        (local / "out").rmdir()
        (local / "out").write_text("now a file\n")
        wait_until(lambda: (remote / "out").is_file() and (remote / "out").read_text() == "now a file\n", what="file")
        sync.quiet()
    assert sync.syncer.health.problems == 0


def test_the_agent_answers_same_only_when_its_scan_matches_the_expected_digest(tmp_path: Path) -> None:
    import subprocess
    import sys

    from pypod import agent
    from pypod.agent.frames import FrameReader, meta_frame, split_meta
    from pypod.agent.tree import index_digest

    root = tmp_path / "pod"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("a\n")
    excludes = compile_excludes([])
    entries = Tree(str(root), Excludes(excludes)).scan()

    def answer(expect: str) -> dict:
        argv, preamble = agent.stdin_command(sys.executable, "sync")
        hello = meta_frame(b"H", {"root": str(root), "excludes": excludes, "expect": expect})
        out = subprocess.run(argv, input=preamble + hello, capture_output=True, timeout=30).stdout
        return next(split_meta(payload)[0] for kind, payload in FrameReader().feed(out) if kind == b"I")

    assert answer(index_digest(entries)).get("same") is True
    assert "entries" not in answer(index_digest(entries))
    (root / "pkg" / "b.py").write_text("made in the pod while nobody watched\n")
    changed = answer(index_digest(entries))
    assert "same" not in changed and sorted(changed["entries"]) == ["pkg", "pkg/a.py", "pkg/b.py"]


def test_the_host_unpacks_the_agent_where_the_stdin_loader_finds_it_compiled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    from pypod import agent
    from pypod.agent.session import unpack_for_stdin_loader

    archive = tmp_path / "agent.pyz"
    archive.write_bytes(agent.agent_archive())
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    unpack_for_stdin_loader(archive.read_bytes())
    (unpacked,) = (scratch / "pypod").iterdir()
    assert sorted(p.name for p in (unpacked / "pypod_agent" / "__pycache__").iterdir() if "syncd" in p.name)
    main_inode = (unpacked / "__main__.py").stat().st_ino
    argv, preamble = agent.stdin_command(sys.executable, "sync")
    env = {**os.environ, "TMPDIR": str(scratch)}
    done = subprocess.run(argv, input=preamble, capture_output=True, timeout=30, env=env)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in (scratch / "pypod").iterdir()] == [unpacked.name]  # used as it was
    assert (unpacked / "__main__.py").stat().st_ino == main_inode


def test_attach_runs_the_unpacked_agent_once_there_else_the_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import zipfile

    from pypod.agent import session

    def main_module(where: str) -> str:
        return f"import sys\ndef main(argv):\n    print({where!r}, argv)\n    return 0\n"

    from pypod.agent import PACKAGE

    assert f"from {PACKAGE}.main import main" in session.ATTACH_SCRIPT
    archive, unpacked = tmp_path / "agent.pyz", tmp_path / "agent-unpacked"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("__main__.py", "")
        zipped.writestr("pypod_agent/__init__.py", "")
        zipped.writestr("pypod_agent/main.py", main_module("archive"))
    monkeypatch.setattr(session, "AGENT_DIR", str(tmp_path / "pypod"))
    session.install_attach_entrypoint(str(archive), str(unpacked))
    entrypoint = tmp_path / "pypod" / "attach"
    assert subprocess.run([entrypoint], capture_output=True, text=True).stdout == "archive ['attach']\n"
    (unpacked / "pypod_agent").mkdir(parents=True)
    (unpacked / "__main__.py").write_text("")
    (unpacked / "pypod_agent" / "__init__.py").write_text("")
    (unpacked / "pypod_agent" / "main.py").write_text(main_module("unpacked"))
    assert subprocess.run([entrypoint], capture_output=True, text=True).stdout == "unpacked ['attach']\n"


@pytest.mark.parametrize("tmpdir_var", [None, "missing", "given"])
def test_the_agent_picks_the_temp_dir_tempfile_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmpdir_var: str | None
) -> None:
    import tempfile

    from pypod.agent.tmpdir import temp_dir

    for name in ("TMPDIR", "TEMP", "TMP"):
        monkeypatch.delenv(name, raising=False)
    if tmpdir_var == "missing":
        monkeypatch.setenv("TMPDIR", str(tmp_path / "not-there"))
        monkeypatch.setenv("TEMP", str(tmp_path))
    elif tmpdir_var == "given":
        monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile caches its choice
    assert temp_dir() == tempfile.gettempdir()


def test_queued_pieces_reach_the_pipe_whole_and_in_order() -> None:
    import random
    import threading

    from pypod.sync.link import IOV_MAX, write_parts

    chance = random.Random(7)
    sizes = [chance.choice([0, 1, 100, 70_000, 300_000]) for _ in range(3 * IOV_MAX)]
    parts: list[bytes | memoryview] = [os.urandom(size) for size in sizes]
    parts[5] = memoryview(parts[5])
    reader_fd, writer_fd = os.pipe()  # 64 KiB: most writes are partial
    received = bytearray()

    def read() -> None:
        while chunk := os.read(reader_fd, 50_000):
            received.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    write_parts(writer_fd, parts)
    os.close(writer_fd)
    reader.join(30)
    os.close(reader_fd)
    assert received == b"".join(parts)


def test_the_sync_pipes_hold_a_whole_chunk_and_other_fds_are_left_alone(tmp_path: Path) -> None:
    import fcntl
    import sys

    from pypod.agent.frames import PIPE_BYTES, widen_pipe

    if not sys.platform.startswith("linux"):
        pytest.skip("pipe sizes are Linux's")
    reader_fd, writer_fd = os.pipe()
    widen_pipe(writer_fd)
    assert fcntl.fcntl(reader_fd, getattr(fcntl, "F_GETPIPE_SZ", 1032)) == PIPE_BYTES
    with open(tmp_path / "file", "wb") as handle:
        widen_pipe(handle.fileno())  # not a pipe: nothing happens, nothing is raised
    os.close(reader_fd)
    os.close(writer_fd)
