"""The sync agent that stays after its connection (agent/handoff.py), run as real local
processes: what it answers the next connection, and when it goes."""

from __future__ import annotations

import array
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pypod import agent
from pypod.agent.frames import FrameReader, meta_frame, split_meta
from pypod.agent.tree import blob_id, index_digest
from pypod.sync.excludes import compile_excludes
from pypod.sync.link import AgentLink
from tests.synchelp import RunningSync, oldest_python, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the agent stays only on Linux")

KEY = "k1"


class Pod:
    """A folder synced by local agents that keep their files under their own temp dir."""

    def __init__(self, tmp_path: Path, python: str = sys.executable) -> None:
        self.python = python
        self.root = tmp_path / "pod"
        self.root.mkdir()
        self.env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"))
        Path(self.env["TMPDIR"]).mkdir()

    def argv(self, linger: float | None, key: str = KEY) -> tuple[list[str], bytes]:
        args = ("--linger", str(linger), key) if linger is not None else ()
        return agent.stdin_command(self.python, "sync", *args)

    def hello(self, linger: float | None = 30, excludes: Any = None, expect: str | None = None, key: str = KEY) -> dict:
        """One connection: the hello's answer; the exec has ended when this returns."""
        return self.frames(linger, excludes, expect, key)[0][1]

    def frames(
        self, linger: float | None = 30, excludes: Any = None, expect: str | None = None, key: str = KEY
    ) -> list[tuple[bytes, dict]]:
        """One connection: every frame the agent sent, the hello's answer first."""
        argv, preamble = self.argv(linger, key)
        meta = {"root": str(self.root), "excludes": excludes or compile_excludes([])}
        if expect:
            meta["expect"] = expect
        hello = preamble + meta_frame(b"H", meta)
        done = subprocess.run(argv, input=hello, capture_output=True, timeout=30, env=self.env)
        assert done.returncode == 0, done.stderr
        frames = [(kind, split_meta(payload)[0]) for kind, payload in FrameReader().feed(done.stdout)]
        assert frames and frames[0][0] == b"I", frames
        return frames

    def sockets(self) -> list[Path]:
        return sorted(Path(self.env["TMPDIR"]).glob("pypod/agent-*/sync-*.sock"))

    def copies(self) -> list[int]:
        """The pids of the agents kept for this folder (forked: no parent but init's)."""
        found = []
        for name in os.listdir("/proc"):
            try:
                environ = Path(f"/proc/{name}/environ").read_bytes().split(b"\0")
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
                stat = Path(f"/proc/{name}/stat").read_text()
            except (OSError, ValueError):
                continue
            session = int(stat[stat.rindex(")") + 2 :].split()[3])
            mine = f"TMPDIR={self.env['TMPDIR']}".encode() in environ and b"--linger" in cmdline
            if mine and session == int(name):  # the copy leads a session of its own
                found.append(int(name))
        return found

    def connect(self, linger: float | None = 30):  # type: ignore[no-untyped-def]
        """A Syncer's connect that runs these agents (as pypod runs its pod's)."""
        argv, preamble = self.argv(linger)
        links: list[AgentLink] = []

        def connect(inbox):  # type: ignore[no-untyped-def]
            links.append(AgentLink(["env", f"TMPDIR={self.env['TMPDIR']}", *argv], preamble, inbox))
            return links[-1]

        connect.links = links  # type: ignore[attr-defined]
        return connect


@pytest.fixture(params=["this", "3.8"])
def pod(tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Agents run by this Python, and by the oldest the agent promises (3.8)."""
    python = sys.executable if request.param == "this" else oldest_python()
    if python is None:
        pytest.skip("no Python 3.8 on this machine to run the agent with")
    pod = Pod(tmp_path, python)
    yield pod
    shutil.rmtree(pod.root, ignore_errors=True)  # a kept agent goes with its folder
    wait_until(lambda: not pod.sockets(), what="kept agents to go")


def test_a_kept_agent_answers_as_a_fresh_scan_would(pod: Pod) -> None:
    (pod.root / "pkg").mkdir()
    for i in range(20):
        (pod.root / "pkg" / f"m{i}.py").write_text(f"x = {i}\n")
    (pod.root / "old").mkdir()
    (pod.root / "old" / "a.txt").write_text("a\n")
    first = pod.hello()
    assert "kept" not in first and len(first["entries"]) == 23
    assert len(pod.sockets()) == 1
    # While nobody is connected: edits, deletes, a directory renamed, new trees, a mode.
    (pod.root / "pkg" / "m1.py").write_text("x = 'changed'\n")
    (pod.root / "pkg" / "m2.py").unlink()
    (pod.root / "old").rename(pod.root / "renamed")
    (pod.root / "new" / "deep").mkdir(parents=True)
    (pod.root / "new" / "deep" / "b.txt").write_text("b\n")
    (pod.root / "pkg" / "m3.py").chmod(0o755)
    kept = pod.hello()
    assert kept.get("kept") is True
    fresh = pod.hello(linger=None)
    assert "kept" not in fresh
    assert kept["entries"] == fresh["entries"]
    assert "renamed/a.txt" in kept["entries"] and "old" not in kept["entries"]
    assert kept["entries"]["pkg/m3.py"].startswith("x")
    # Matching what pypod expects, it says so, and only that.
    same = pod.hello(expect=index_digest(fresh["entries"]))
    assert same.get("kept") is True and same.get("same") is True and "entries" not in same
    assert len(pod.sockets()) == 1


def test_other_excludes_get_a_new_scan_from_the_kept_agent(pod: Pod) -> None:
    (pod.root / "a.py").write_text("a\n")
    (pod.root / "data.csv").write_text("1,2\n")
    pod.hello()
    other = pod.hello(excludes=compile_excludes(["*.csv"]))
    assert "kept" not in other and sorted(other["entries"]) == ["a.py"]
    (pod.root / "b.csv").write_text("3\n")
    (pod.root / "b.py").write_text("b\n")
    again = pod.hello(excludes=compile_excludes(["*.csv"]))
    assert again.get("kept") is True and sorted(again["entries"]) == ["a.py", "b.py"]


def test_a_probe_a_stranger_or_an_exec_that_gave_up_leaves_the_kept_agent_be(pod: Pod) -> None:
    (pod.root / "a.py").write_text("a\n")
    pod.hello()
    [path] = pod.sockets()
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.connect(str(path))
    probe.sendall(b"S")  # no descriptors with it
    assert probe.recv(1) == b""  # refused
    probe.close()
    # Descriptors sent, taken, but the go-ahead never comes (that exec serves them itself):
    # the copy must not read what is meant for that exec.
    read_end, write_end = os.pipe()
    late = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    late.connect(str(path))
    late.sendmsg([b"S"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [read_end, write_end]))])
    assert late.recv(1) == b"+"
    late.close()
    os.write(write_end, b"meant for the exec")
    time.sleep(0.3)
    os.set_blocking(read_end, False)
    assert os.read(read_end, 100) == b"meant for the exec"
    os.close(read_end)
    os.close(write_end)
    assert pod.hello().get("kept") is True


def test_the_kept_agent_goes_when_its_time_is_up(pod: Pod) -> None:
    (pod.root / "a.py").write_text("a\n")
    pod.hello(linger=0.5)
    assert len(pod.sockets()) == 1
    wait_until(lambda: not pod.sockets(), timeout=5, what="the kept agent to go")
    assert "kept" not in pod.hello(linger=None)


def test_the_kept_agent_goes_with_its_folder(pod: Pod) -> None:
    (pod.root / "a.py").write_text("a\n")
    pod.hello()
    assert len(pod.sockets()) == 1
    shutil.rmtree(pod.root)
    wait_until(lambda: not pod.sockets(), timeout=5, what="the kept agent to go")


def test_an_agent_whose_connection_is_served_elsewhere_keeps_nothing_twice(pod: Pod) -> None:
    """Two connections at once (the second cannot be handed to the busy copy): when both
    end, one copy stays, and the next connection still gets it."""
    (pod.root / "a.py").write_text("a\n")
    argv, preamble = pod.argv(30)
    hello = meta_frame(b"H", {"root": str(pod.root), "excludes": compile_excludes([])})
    first = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=pod.env)
    assert first.stdin is not None and first.stdout is not None
    first.stdin.write(preamble + hello)
    first.stdin.flush()
    assert first.stdout.read(1)  # its index is on the way: it serves
    pod.hello()  # a second agent, meanwhile
    first.stdin.close()
    first.wait(10)
    time.sleep(0.2)
    assert len(pod.sockets()) == 1
    assert pod.hello().get("kept") is True


def test_a_reconnect_to_the_kept_agent_converges_with_changes_on_both_sides(pod: Pod, tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.mkdir()
    for i in range(30):
        (local / f"m{i}.py").write_text(f"x = {i}\n")
    state = tmp_path / "state.json"
    connect = pod.connect()
    with RunningSync(local, str(pod.root), connect, state_file=state) as sync:
        sync.quiet()
    assert len(pod.sockets()) == 1
    (local / "m1.py").write_text("x = 'local, while away'\n")
    (pod.root / "m2.py").write_text("x = 'pod, while away'\n")
    (pod.root / "m3.py").unlink()
    (pod.root / "made_in_pod.txt").write_text("p\n")
    os.truncate(pod.root / "m4.py", 2)  # no event the watches hear
    with RunningSync(local, str(pod.root), connect, state_file=state) as sync:
        assert sync.syncer.health.watcher == "inotify (kept)"
        wait_until(lambda: (local / "m4.py").read_text() == "x ", what="the truncate, found after the index")
        sync.quiet()  # "watching" only once the kept agent's check of every path is in
        assert sync.syncer.pod_checked.is_set()
        assert sync.syncer.health.problems == 0
    assert (pod.root / "m1.py").read_text() == "x = 'local, while away'\n"
    assert (local / "m2.py").read_text() == "x = 'pod, while away'\n"
    assert not (local / "m3.py").exists() and (local / "made_in_pod.txt").read_text() == "p\n"
    assert sorted(p.name for p in local.iterdir()) == sorted(p.name for p in pod.root.iterdir())


def test_an_exec_too_slow_to_say_go_serves_its_streams_itself(pod: Pod, monkeypatch: pytest.MonkeyPatch) -> None:
    """Descheduled between the copy's TAKEN and its own go-ahead for longer than the copy
    waits: the copy lets go, says so, and the exec knows to serve its streams itself."""
    from pypod.agent import handoff

    (pod.root / "a.py").write_text("a\n")
    pod.hello()
    [path] = pod.sockets()
    send = socket.socket.sendall

    def slow_go(self: socket.socket, data: bytes, *args: Any) -> None:
        if data == handoff.GO:
            time.sleep(handoff.HANDSHAKE_S + 2)  # well past the copy's wait, even on a busy machine
        send(self, data, *args)

    monkeypatch.setattr(socket.socket, "sendall", slow_go)
    read_end, write_end = os.pipe()
    assert handoff.hand_over(str(path), read_end, write_end) is False
    monkeypatch.undo()
    os.write(write_end, b"meant for the exec")
    os.set_blocking(read_end, False)
    time.sleep(0.2)
    assert os.read(read_end, 100) == b"meant for the exec"
    os.close(read_end)
    os.close(write_end)
    assert pod.hello().get("kept") is True


def test_a_kept_agent_finds_what_its_watches_cannot_see(pod: Pod, tmp_path: Path) -> None:
    """No close, no event in the folder: a truncate, and a write through a hard link from
    outside it. The kept agent reports them right after its index, so what pypod hears
    adds up to a new agent's scan."""
    (pod.root / "t.txt").write_text("some bytes\n")
    (pod.root / "shared.bin").write_text("v1\n")
    pod.hello()
    os.link(pod.root / "shared.bin", tmp_path / "outside.bin")
    time.sleep(0.1)
    os.truncate(pod.root / "t.txt", 3)
    (tmp_path / "outside.bin").write_text("v2, written through another name\n")
    (kind, kept), *after = pod.frames()
    assert kept.get("kept") is True and kept.get("checking") is True
    assert [meta.get("checked") for _, meta in after] == [True]  # one check, marked
    # The watches' index first, then the stat of every path: what they missed follows.
    seen = dict(kept["entries"])
    for kind, meta in after:
        assert kind == b"E"
        seen.update(meta["changes"])
    assert seen == pod.hello(linger=None)["entries"]
    assert seen["t.txt"] == "-" + blob_id(b"som")
    assert seen["shared.bin"] == "-" + blob_id(b"v2, written through another name\n")


def test_a_root_moved_away_is_not_answered_from_the_kept_watches(pod: Pod) -> None:
    (pod.root / "a.py").write_text("a\n")
    pod.hello()
    pod.root.rename(pod.root.with_name("pod.old"))
    pod.root.mkdir()
    (pod.root / "b.py").write_text("b\n")
    answer = pod.hello()
    assert "kept" not in answer and sorted(answer["entries"]) == ["b.py"]
    shutil.rmtree(pod.root.with_name("pod.old"))


def test_an_exec_whose_kept_agent_dies_mid_connection_ends_with_the_reason(pod: Pod) -> None:
    (pod.root / "a.py").write_text("a\n")
    pod.hello()
    [copy] = pod.copies()
    argv, preamble = pod.argv(30)
    hello = meta_frame(b"H", {"root": str(pod.root), "excludes": compile_excludes([])})
    served = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=pod.env)
    assert served.stdin is not None and served.stdout is not None and served.stderr is not None
    served.stdin.write(preamble + hello)
    served.stdin.flush()
    assert served.stdout.read(1)  # the kept agent answers
    os.kill(copy, signal.SIGKILL)
    assert served.wait(10) == 1
    assert "went away mid-connection" in served.stderr.read().decode()
    served.stdin.close()


def test_a_process_that_sees_other_mounts_cannot_take_the_kept_agent(pod: Pod) -> None:
    """As another container sharing /tmp through a volume would: same user, same socket
    file, another mount namespace. The copy refuses it, and stays for its own container."""
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a mount namespace here (needs root or user namespaces)")
    (pod.root / "a.py").write_text("a\n")
    pod.hello()
    [path] = pod.sockets()
    script = (
        "import os, sys\nfrom pypod.agent import handoff\n"
        "r, w = os.pipe()\nprint(handoff.hand_over(sys.argv[1], r, w))\n"
    )
    elsewhere = subprocess.run(
        ["unshare", "--mount", sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=30
    )
    assert elsewhere.stdout.strip() == "False", elsewhere.stderr
    assert pod.hello().get("kept") is True


@pytest.mark.parametrize("seconds", ["nan", "inf", "-1", "soon"])
def test_a_linger_that_is_no_finite_time_is_a_usage_error(pod: Pod, seconds: str) -> None:
    argv, preamble = agent.stdin_command(pod.python, "sync", "--linger", seconds, KEY)
    done = subprocess.run(argv, input=preamble, capture_output=True, timeout=30, env=pod.env)
    assert done.returncode == 2 and b"usage: sync [--linger SECONDS KEY]" in done.stderr
    assert not pod.sockets()
