"""The local end of an interactive session: the user's terminal, relayed in frames
through `kubectl exec -i` to the session host in the pod.

Keys go through raw, so Ctrl-C is delivered to the remote interpreter by its own
pseudo-terminal. A broken stream is retried with backoff; the REPL in the pod
lives on meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..agent.session import FrameReader, frame
from ..agent.tree import write_all
from .guard import track_child, untrack_child

PING_EVERY_S = 5.0
RECONNECT_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class SessionResult:
    exit_code: int | None  # None: the stream was lost for good, the REPL may still run
    new_history: list[str] = field(default_factory=list)
    # What the pod's environment gained while the REPL ran: {name, version, requires}.
    installed: list[dict[str, Any]] = field(default_factory=list)


def terminal_size(fd: int) -> tuple[int, int]:
    try:
        rows, cols = struct.unpack("HHHH", termios_winsize(fd))[:2]
        return (rows or 24, cols or 80)
    except OSError:
        return (24, 80)


def termios_winsize(fd: int) -> bytes:
    import fcntl

    return fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)  # not TCSAFLUSH: keep what was typed ahead
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class StartedStream:
    """An exec to the session host whose start frame goes out at once: the REPL starts in
    the pod while pypod does other work (the first sync), and nothing typed is sent until
    the relay takes the stream over. Meanwhile a thread writes the start (a long history
    can fill the pipe before kubectl reads it) and then pings, so the host does not
    take a long first sync's silence for a dead client."""

    def __init__(self, proc: subprocess.Popen[bytes], size: tuple[int, int], start: bytes) -> None:
        self.proc = proc
        self.size = size  # the terminal's size as the start frame gave it
        self._stop = threading.Event()
        self._keeper = threading.Thread(target=self._keep, args=(start,), name="pypod-repl-start", daemon=True)
        self._keeper.start()

    def _keep(self, start: bytes) -> None:
        assert self.proc.stdin is not None
        fd = self.proc.stdin.fileno()
        with contextlib.suppress(OSError, ValueError):  # a broken stream: the relay finds it so
            write_all(fd, start)
            while not self._stop.wait(PING_EVERY_S):
                write_all(fd, frame(b"p"))

    def take(self) -> subprocess.Popen[bytes]:
        """The stream, for the relay: nothing else writes to it from here on."""
        self._stop.set()
        self._keeper.join()
        return self.proc

    def close(self) -> None:
        self._stop.set()
        close_stream(self.proc)
        self._keeper.join(5)


def start_frame(rows: int, cols: int, history: list[str] | None, env: dict[str, str] | None, banner: bool) -> bytes:
    start = {"rows": rows, "cols": cols, "history": history or [], "env": env or {}, "banner": banner}
    return frame(b"S", json.dumps(start).encode())


def start_stream(
    exec_argv: list[str],
    history: list[str] | None = None,
    env: dict[str, str] | None = None,
    banner: bool = True,
    stdin_fd: int | None = None,
) -> StartedStream:
    """Open the exec to the session host and send the start frame at once."""
    size = terminal_size(sys.stdin.fileno() if stdin_fd is None else stdin_fd)
    return StartedStream(open_stream(exec_argv), size, start_frame(*size, history, env, banner))


def run_terminal(
    exec_argv: list[str],
    history: list[str] | None = None,
    env: dict[str, str] | None = None,
    stdin_fd: int | None = None,
    stdout_fd: int | None = None,
    on_reconnect: Callable[[int], None] | None = None,
    give_up_after_s: float = 60.0,
    banner: bool = True,
    started: StartedStream | None = None,
    on_end: Callable[[], None] | None = None,
) -> SessionResult:
    """Relay the terminal until the REPL exits; reconnect if the stream breaks. `banner`:
    whether a REPL started by this client opens with `pypod info`'s one line; `started`:
    the first connection, its start frame sent (see start_stream); `on_end`: run when the
    REPL has ended and before this client hangs up, which lets the pod end (the host
    waits for it): the sync brings the pod's last edits home then."""
    in_fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
    out_fd = sys.stdout.fileno() if stdout_fd is None else stdout_fd
    attempt = 0
    lost_since: float | None = None
    first = True
    answered = False  # the host has sent something: it has the start, with history and env
    with raw_terminal(in_fd):
        while True:
            if first and started is not None:
                proc, sent_size = started.take(), started.size
            else:
                proc, sent_size = open_stream(exec_argv), None
            first = False
            result, heard = _one_connection(
                proc,
                in_fd,
                out_fd,
                None if answered else history,
                None if answered else env,
                banner,
                sent_size,
                on_end,
            )
            answered = answered or heard
            if result is not None:
                return result
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since > give_up_after_s:
                return SessionResult(exit_code=None)
            delay = RECONNECT_BACKOFF_S[min(attempt, len(RECONNECT_BACKOFF_S) - 1)]
            attempt += 1
            if on_reconnect:
                on_reconnect(attempt)
            time.sleep(delay)


def open_stream(exec_argv: list[str]) -> subprocess.Popen[bytes]:
    """Start the exec to the session host."""
    proc = subprocess.Popen(exec_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    track_child(proc.pid)
    return proc


def close_stream(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        assert proc.stdin is not None
        proc.stdin.close()
    if proc.poll() is None:
        proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(2)
    untrack_child(proc.pid)


def _one_connection(
    proc: subprocess.Popen[bytes],
    in_fd: int,
    out_fd: int,
    history: list[str] | None,
    env: dict[str, str] | None,
    banner: bool = True,
    sent_size: tuple[int, int] | None = None,
    on_end: Callable[[], None] | None = None,
) -> tuple[SessionResult | None, bool]:
    """One exec stream. Returns the result when the REPL ended (None when the stream
    broke), and whether the host answered at all. `sent_size`: the start frame went
    ahead (start_stream), giving this terminal size."""
    assert proc.stdin is not None and proc.stdout is not None
    stream_in, stream_out = proc.stdin.fileno(), proc.stdout.fileno()
    rows, cols = terminal_size(in_fd)
    resized = sent_size is not None and sent_size != (rows, cols)  # resized since the start frame

    def on_winch(_signum: int, _frame: object) -> None:
        nonlocal resized
        resized = True

    previous = signal.signal(signal.SIGWINCH, on_winch)
    reader = FrameReader()
    last_ping = time.monotonic()
    heard = False
    try:
        if sent_size is None:
            write_all(stream_in, start_frame(rows, cols, history, env, banner))
        stdin_open = True
        while True:
            if resized:
                resized = False
                rows, cols = terminal_size(in_fd)
                write_all(stream_in, frame(b"w", json.dumps({"rows": rows, "cols": cols}).encode()))
            watch = [stream_out] + ([in_fd] if stdin_open else [])
            try:
                readable, _, _ = select.select(watch, [], [], 1.0)
            except InterruptedError:
                continue
            if in_fd in readable:
                data = os.read(in_fd, 65536)
                if data:
                    write_all(stream_in, frame(b"i", data))
                else:
                    stdin_open = False  # keep showing output; the REPL decides when to end
            if stream_out in readable:
                data = os.read(stream_out, 65536)
                if not data:
                    return None, heard
                for kind, payload in reader.feed(data):
                    heard = True
                    if kind == b"o":
                        write_all(out_fd, payload)
                    elif kind == b"x":
                        end = json.loads(payload.decode())
                        result = SessionResult(
                            exit_code=end.get("code", 0),
                            new_history=end.get("history", []),
                            installed=end.get("installed", []),
                        )
                        if on_end is not None:
                            on_end()
                        return result, heard
            if time.monotonic() - last_ping > PING_EVERY_S:
                write_all(stream_in, frame(b"p"))
                last_ping = time.monotonic()
    except (BrokenPipeError, ConnectionResetError):
        return None, heard
    finally:
        signal.signal(signal.SIGWINCH, previous)
        close_stream(proc)
