from __future__ import annotations

import threading
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from pypod import agent
from pypod.agent.session import FrameReader, frame
from pypod.run.history import merge_back, read_entries


def test_merge_back_appends_new_entries_and_keeps_old(tmp_path: Path):
    path = tmp_path / "hist"
    path.write_text("a\nb")
    # An entry repeating the one before it is not stored twice.
    assert merge_back(path, ["b", "c", "c", "d"]) == 2
    assert read_entries(path) == ["a", "b", "c", "d"]
    assert path.read_text().endswith("d\n")


def test_concurrent_merges_lose_nothing(tmp_path: Path):
    path = tmp_path / "hist"
    threads = [threading.Thread(target=merge_back, args=(path, [f"t{i}-{j}" for j in range(50)])) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = read_entries(path)
    assert sorted(entries) == sorted(f"t{i}-{j}" for i in range(8) for j in range(50))


@given(
    st.lists(st.tuples(st.sampled_from([b"i", b"o", b"w", b"x", b"p"]), st.binary(max_size=300)), max_size=20),
    st.integers(min_value=1, max_value=50),
)
def test_frames_survive_any_chunking(messages, chunk):
    wire = b"".join(frame(k, p) for k, p in messages)
    reader = FrameReader()
    got = []
    for i in range(0, len(wire), chunk):
        got += reader.feed(wire[i : i + chunk])
    assert got == messages


def test_agent_payload_fits_one_environment_string():
    assert len(agent.agent_payload()) < 128 * 1024
    command = agent.host_command("python3", 900, False, None)
    assert command[:2] == ["python3", "-c"]
    assert command[-2:] == ["--", "auto"]


class _Banner:
    elapsed, waited = 0.02, 0.0

    def __init__(self, line: str) -> None:
        self.line = line

    def take(self) -> str:
        return self.line


def _started(banner_wanted: bool | None, banner: _Banner | None) -> tuple[list[tuple[bytes, bytes]], list[int]]:
    """What the session host sends a first client, and whether it started the REPL."""
    import json

    from pypod.agent.session import Client, Host

    spawned: list[int] = []

    class NoFork(Host):
        def spawn(self, rows=24, cols=80, history=None, env=None):  # type: ignore[no-untyped-def]
            spawned.append(rows)
            self.child_pid = 1

    host = NoFork(["python3"], 900, False, socket_path="/nonexistent/s.sock", banner=banner)
    client = Client(None)
    start = {"rows": 30, "cols": 100} | ({} if banner_wanted is None else {"banner": banner_wanted})
    host.handle(client, b"S", json.dumps(start).encode())
    return FrameReader().feed(client.outbox), spawned


def test_the_first_client_gets_the_info_line_before_the_repl_starts():
    frames, spawned = _started(None, _Banner("pod: 2 CPUs (node 64)"))
    assert frames == [(b"o", b"pod: 2 CPUs (node 64)\r\n")] and spawned == [30]
    frames, spawned = _started(False, _Banner("pod: 2 CPUs (node 64)"))  # pypod --quiet
    assert frames == [] and spawned == [30]
    frames, spawned = _started(True, _Banner(""))  # not worked out in time: the REPL starts without it
    assert frames == [] and spawned == [30]
    assert _started(True, None) == ([], [30])


def test_the_repl_is_spawned_only_once_the_environment_is_listed(monkeypatch):
    import pytest

    from pypod.agent import session

    listed = threading.Event()
    monkeypatch.setattr(session, "listing", lambda: listed.wait(5) and {"numpy": "1.0"})
    ahead = session.Ahead()
    dists = ahead.add(session.Distributions())
    ahead.start()
    host = session.Host(["python3"], 900, False, socket_path="/nonexistent/s.sock", dists=dists)
    seen = []

    def fork():
        seen.append(host.dists)
        raise OSError("no fork in this test")

    monkeypatch.setattr(session.pty, "fork", fork)
    threading.Timer(0.2, listed.set).start()  # the listing is slower than the first client
    with pytest.raises(OSError):
        host.spawn()
    assert seen == [{"numpy": "1.0"}]


def test_the_hosts_ahead_jobs_run_in_order_in_one_thread_and_a_failure_stops_none():
    from pypod.agent import session

    ran = []

    class Step(session.Job):
        def __init__(self, name, fail=False):
            super().__init__()
            self.name, self.fail = name, fail

        def work(self):
            ran.append((self.name, threading.current_thread().name))
            if self.fail:
                raise RuntimeError("broken")
            return self.name

    spawned = threading.Event()
    ahead = session.Ahead()
    first, broken = ahead.add(Step("first")), ahead.add(Step("broken", fail=True))
    last = ahead.add(Step("last"), after=spawned)
    ahead.start()
    assert first.take() == "first" and broken.take() is None
    last.wait_s = 0.3
    assert last.take() is None and [name for name, _ in ran] == ["first", "broken"]  # waits for the REPL
    spawned.set()
    last.wait_s = 5
    assert last.take() == "last" and first.take() == "first"
    assert broken.take() is None  # failed: taken as not worked out, without the full wait
    assert [name for name, _ in ran] == ["first", "broken", "last"]
    assert {thread for _, thread in ran} == {"pypod-ahead"}


def test_the_host_reaps_kept_sync_agents_and_leaves_other_children_to_their_owners() -> None:
    """Run apart (it waits for any child): one ended child is a session leader, as a kept
    sync agent is; the other is not, as a thread's nvidia-smi is not."""
    import subprocess
    import sys

    script = (
        "import os, time\n"
        "from pypod.agent import session\n"
        "host = session.Host(['python3'], 900, False, socket_path='/nonexistent/s.sock')\n"
        "other = os.fork()\n"
        "if other == 0:\n"
        "    os._exit(3)\n"
        "kept = os.fork()\n"
        "if kept == 0:\n"
        "    os.setsid(); os._exit(0)\n"
        "time.sleep(0.3)\n"
        "host.reap_kept_agents()\n"
        "try:\n"
        "    os.waitpid(kept, 0); print('kept left')\n"
        "except ChildProcessError:\n"
        "    print('kept reaped')\n"
        "print('other', os.waitstatus_to_exitcode(os.waitpid(other, 0)[1]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.stdout.split("\n")[:2] == ["kept reaped", "other 3"], done.stderr
