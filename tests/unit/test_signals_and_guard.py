"""SIGTERM/SIGHUP as Ctrl-C, and the guard that cleans up after a SIGKILLed pypod."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pypod.run.guard import Guard, read_orders
from pypod.run.signals import Stopped, stop_exit_code, stopping_on_signals


def test_orders_follow_arm_disarm_and_bye() -> None:
    lines = [
        json.dumps({"target": {"kubeconfig": "/k", "context": None, "namespace": "ns"}}),
        json.dumps({"arm": "a"}),
        json.dumps({"arm": "b"}),
        json.dumps({"child": 11}),
        json.dumps({"child": 12}),
        json.dumps({"gone": 11}),
        json.dumps({"disarm": "a"}),
        "not json",
    ]
    target, jobs, children, bye = read_orders(lines)
    assert target == {"kubeconfig": "/k", "context": None, "namespace": "ns"}
    assert (jobs, children, bye) == ({"b"}, {12}, False)
    assert read_orders([*lines, json.dumps({"bye": True})])[3] is True


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_raises_stopped_once(signum: int) -> None:
    with pytest.raises(Stopped) as caught, stopping_on_signals():
        os.kill(os.getpid(), signum)
        time.sleep(1)
    assert caught.value.signum == signum
    assert stop_exit_code(caught.value) == 128 + signum
    assert stop_exit_code(KeyboardInterrupt()) == 130
    # The handlers are restored afterwards.
    assert signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler)


def test_a_second_signal_during_cleanup_is_ignored() -> None:
    cleaned = False
    with pytest.raises(Stopped), stopping_on_signals():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        finally:
            os.kill(os.getpid(), signal.SIGHUP)  # would interrupt the cleanup
            time.sleep(0.2)
            cleaned = True
    assert cleaned


def _sleeper() -> subprocess.Popen[bytes]:
    # Its own session, as a kubectl port-forward outlives a killed pypod.
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def test_guard_ends_tracked_children_when_pypod_hangs_up_without_bye() -> None:
    child = _sleeper()
    guard = Guard(None, None, "default")
    guard.child(child.pid)
    guard.abandon()  # what the kernel does for a SIGKILLed pypod: stdin closes
    assert child.wait(10) == -signal.SIGTERM
    assert guard.proc.returncode == 0


def test_guard_does_nothing_after_bye() -> None:
    child = _sleeper()
    try:
        guard = Guard(None, None, "default")
        guard.child(child.pid)
        guard.close()
        assert guard.proc.returncode == 0
        time.sleep(0.3)
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


def test_guard_survives_the_signals_that_stop_pypod() -> None:
    child = _sleeper()
    guard = Guard(None, None, "default")
    guard.child(child.pid)
    time.sleep(0.5)  # let it install its handlers
    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        guard.proc.send_signal(signum)
    time.sleep(0.2)
    assert guard.proc.poll() is None
    guard.abandon()
    assert child.wait(10) == -signal.SIGTERM


def test_guard_process_imports_only_the_standard_library_until_it_must_act() -> None:
    probe = (
        "import sys, runpy; sys.stdin = open('/dev/null'); sys.argv=['guard'];"
        "import pypod.run.guard as g; g.read_orders([]);"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightkube', 'rich', 'httpx', 'yaml', 'click')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_signals_wait_for_a_deferred_block_then_act() -> None:
    from pypod.run.signals import signals_deferred

    finished = False
    with pytest.raises(Stopped), stopping_on_signals():
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
            finished = True
        time.sleep(1)
    assert finished


def test_a_deferred_block_holds_the_signal_while_other_threads_run() -> None:
    # pypod always has other threads; a process signal may be taken by any of them, and
    # Python then runs its handler in the main thread at once (this failed in the full suite).
    import threading

    from pypod.run.signals import signals_deferred

    stop = threading.Event()
    others = [threading.Thread(target=stop.wait, daemon=True) for _ in range(4)]
    for thread in others:
        thread.start()
    finished = False
    try:
        with pytest.raises(Stopped), stopping_on_signals():
            with signals_deferred():
                for _ in range(20):
                    os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)
                finished = True
            time.sleep(1)
    finally:
        stop.set()
    assert finished


def test_a_signal_deferred_while_the_status_line_stops_lets_the_cleanup_clear_it_again() -> None:
    # SIGTERM arrives while rich stops the live line; it acts as that block ends, and the
    # cleanup it starts clears the output again: that must not stop the line twice.
    import io

    from rich.console import Console

    from pypod.run.output import Output

    out = Output(console=Console(file=io.StringIO(), force_terminal=True))
    out.status("waiting")
    live = out._status
    real_stop = live.stop

    def stop_with_a_signal() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        real_stop()

    live.stop = stop_with_a_signal
    cleaned = []

    def cleanup(signum: int, frame: object) -> None:
        out.done()
        cleaned.append(signum)
        raise Stopped(signum)

    previous = signal.signal(signal.SIGTERM, cleanup)
    try:
        with pytest.raises(Stopped):
            out.done()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert cleaned == [signal.SIGTERM]
    assert out._status is None
