"""The REPL's start frame goes ahead of the relay (the REPL starts in the pod while the
first sync runs); the relay then sends only what was typed, never a second start."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from pypod.run.terminal import run_terminal, start_stream

# Stands in for `kubectl exec ... attach` and the session host: logs each frame's kind
# and answers as a host would (output on start, the end on input).
FAKE_HOST = r"""
import json, os, sys
sys.path.insert(0, sys.argv[2])
from pypod.agent.frames import FrameReader, frame
log = open(sys.argv[1], "a", buffering=1)
reader = FrameReader()
while True:
    data = os.read(0, 65536)
    if not data:
        break
    for kind, payload in reader.feed(data):
        log.write(kind.decode() + " " + json.dumps(payload.decode()) + "\n")
        if kind == b"S":
            os.write(1, frame(b"o", b">>> "))
        elif kind == b"i":
            os.write(1, frame(b"x", json.dumps({"code": 7, "history": ["typed"]}).encode()))
"""


def test_the_start_goes_ahead_and_the_relay_sends_only_input(tmp_path: Path) -> None:
    log = tmp_path / "frames.log"
    src = str(Path(__file__).resolve().parents[2] / "src")
    argv = [sys.executable, "-c", FAKE_HOST, str(log), src]
    started = start_stream(
        argv, history=["seed"], env={"A": "1"}, banner=False, stdin_fd=os.open(os.devnull, os.O_RDONLY)
    )
    deadline = time.monotonic() + 10
    while not (log.exists() and log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.01)
    kind, payload = log.read_text().split(" ", 1)
    assert kind == "S"  # before any relay: the REPL can start now
    assert json.loads(json.loads(payload)) == {
        "rows": 24,
        "cols": 80,
        "history": ["seed"],
        "env": {"A": "1"},
        "banner": False,
    }
    typed_r, typed_w = os.pipe()
    os.write(typed_w, b"exit()\n")
    shown_r, shown_w = os.pipe()
    result = run_terminal(argv, history=["seed"], stdin_fd=typed_r, stdout_fd=shown_w, started=started)
    assert result.exit_code == 7 and result.new_history == ["typed"]
    assert [line.split(" ", 1)[0] for line in log.read_text().splitlines()] == ["S", "i"]
    assert os.read(shown_r, 100) == b">>> "  # what the REPL printed while it waited is shown


def test_a_start_no_host_answered_is_sent_again_with_its_history_and_env(tmp_path: Path) -> None:
    log = tmp_path / "frames.log"
    src = str(Path(__file__).resolve().parents[2] / "src")
    devnull = os.open(os.devnull, os.O_RDONLY)
    # The first exec dies unanswered (as an exec into a pod whose host is not up yet does).
    dead = start_stream([sys.executable, "-c", "pass"], history=["seed"], env={"A": "1"}, stdin_fd=devnull)
    typed_r, typed_w = os.pipe()

    def type_once_the_host_has_the_start() -> None:
        deadline = time.monotonic() + 10
        while not (log.exists() and log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.01)
        os.write(typed_w, b"exit()\n")

    threading.Thread(target=type_once_the_host_has_the_start, daemon=True).start()
    _shown_r, shown_w = os.pipe()
    argv = [sys.executable, "-c", FAKE_HOST, str(log), src]
    result = run_terminal(argv, history=["seed"], env={"A": "1"}, stdin_fd=typed_r, stdout_fd=shown_w, started=dead)
    assert result.exit_code == 7
    kind, payload = log.read_text().splitlines()[0].split(" ", 1)
    assert kind == "S"
    assert json.loads(json.loads(payload))["history"] == ["seed"]
    assert json.loads(json.loads(payload))["env"] == {"A": "1"}


def test_a_started_stream_pings_until_the_relay_takes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pypod.run import terminal

    monkeypatch.setattr(terminal, "PING_EVERY_S", 0.05)  # the host drops a client silent for 30 s
    log = tmp_path / "frames.log"
    src = str(Path(__file__).resolve().parents[2] / "src")
    started = start_stream([sys.executable, "-c", FAKE_HOST, str(log), src], stdin_fd=os.open(os.devnull, os.O_RDONLY))

    def kinds() -> list[str]:
        return [line.split(" ", 1)[0] for line in log.read_text().splitlines()] if log.exists() else []

    deadline = time.monotonic() + 10
    while kinds().count("p") < 3:
        assert time.monotonic() < deadline, "no pings while the first sync would run"
        time.sleep(0.02)
    proc = started.take()
    sent = kinds()
    time.sleep(0.2)
    assert kinds() == sent  # quiet once the relay has it
    assert sent[0] == "S" and set(sent[1:]) == {"p"}
    terminal.close_stream(proc)
