"""The stream to the sync agent in the pod: `kubectl exec -i` running the agent,
frames on its stdin and stdout. A thread reads frames into the syncer's inbox."""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import threading
from typing import Any

from ..agent.frames import FrameReader, meta_frame_head, split_meta, widen_pipe
from ..agent.tree import HOLD_FILE_BYTES

FLUSH_BYTES = 1 << 20
BUNDLE_FILE_BYTES = HOLD_FILE_BYTES  # files up to this size travel whole, many to a frame
BUNDLE_BYTES = 1 << 20
IOV_MAX = 1024  # pieces per writev, on Linux and macOS
Message = tuple[bytes, dict[str, Any], bytes]  # kind, meta, bytes; kind b"" means the stream ended


class LinkLost(Exception):
    """The stream to the agent broke; the syncer reconnects."""


class AgentLink:
    def __init__(self, argv: list[str], preamble: bytes, inbox: queue.Queue[Message]) -> None:
        self.inbox = inbox
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stderr = b""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        widen_pipe(self.proc.stdin.fileno())
        widen_pipe(self.proc.stdout.fileno())
        # What flush() sends, as the pieces it was queued in: a file's bytes are written
        # from where they were read, never copied into a frame.
        self._outbox: list[bytes | memoryview] = []
        self._outbox_bytes = 0
        self._bundle: list[list[Any]] = []
        self._bundle_parts: list[bytes] = []
        self._bundle_bytes = 0
        self._reader = threading.Thread(target=self._read, name="pypod-sync-link", daemon=True)
        self._errors = threading.Thread(target=self._read_stderr, name="pypod-sync-stderr", daemon=True)
        self._reader.start()
        self._errors.start()
        self._write([preamble])

    def _write(self, parts: list[bytes | memoryview]) -> None:
        assert self.proc.stdin is not None
        try:
            write_parts(self.proc.stdin.fileno(), parts)
        except (BrokenPipeError, ConnectionResetError, ValueError) as exc:
            raise LinkLost(self.reason() or str(exc)) from exc

    def _queue(self, *parts: bytes | memoryview) -> None:
        self._outbox.extend(parts)
        self._outbox_bytes += sum(len(part) for part in parts)
        if self._outbox_bytes >= FLUSH_BYTES:
            self.flush()

    def send(self, kind: bytes, meta: dict[str, Any], data: bytes = b"") -> None:
        """Queue a frame; flush() sends. Many small frames go out as one write, which the
        exec stream carries as one message instead of thousands."""
        self._close_bundle()  # frames leave in the order they were queued
        self._queue(meta_frame_head(kind, meta, len(data)), data)

    def send_file(self, path: str, version: str, expect: str | None, keep_as: str | None, data: bytes) -> None:
        """Queue a put of a small file, whole. Files queued one after another go out
        as one bundle frame: one header and one JSON list for hundreds of files."""
        self._bundle.append([path, version, expect, keep_as, len(data)])
        self._bundle_parts.append(data)
        self._bundle_bytes += len(data)
        if self._bundle_bytes >= BUNDLE_BYTES:
            self._close_bundle()

    def _close_bundle(self) -> None:
        if self._bundle:
            head = meta_frame_head(b"B", {"files": self._bundle}, self._bundle_bytes)
            parts = self._bundle_parts
            self._bundle, self._bundle_parts, self._bundle_bytes = [], [], 0
            self._queue(head, *parts)

    def flush(self) -> None:
        self._close_bundle()
        if self._outbox:
            parts, self._outbox, self._outbox_bytes = self._outbox, [], 0
            self._write(parts)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        reader = FrameReader()
        fd = self.proc.stdout.fileno()
        try:
            while True:
                data = os.read(fd, 1 << 20)
                if not data:
                    break
                for kind, payload in reader.feed(data):
                    meta, body = split_meta(payload) if payload else ({}, b"")
                    self.inbox.put((kind, meta, body))
        except (OSError, ValueError):
            pass
        self._errors.join(timeout=2)
        self.inbox.put((b"", {"reason": self.reason()}, b""))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        with contextlib.suppress(OSError, ValueError):
            for line in self.proc.stderr:
                self.stderr = (self.stderr + line)[-4096:]

    def reason(self) -> str:
        """Why the stream ended, in kubectl's or the agent's words (last line)."""
        lines = [line for line in self.stderr.decode(errors="replace").splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # the agent exits on end of input
        try:
            self.proc.wait(3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(3)

    def kill(self) -> None:
        """Break the stream abruptly (tests and benchmarks use this, like a dropped connection)."""
        self.proc.kill()


def write_parts(fd: int, parts: list[bytes | memoryview]) -> None:
    """Write the pieces in order with as few system calls as the kernel allows (writev
    takes at most IOV_MAX of them, and may write less than it was given)."""
    index, offset = 0, 0  # the first piece not yet written whole, and how much of it was
    while index < len(parts):
        written = os.writev(fd, [memoryview(parts[index])[offset:], *parts[index + 1 : index + IOV_MAX]])
        while index < len(parts) and written >= len(parts[index]) - offset:
            written -= len(parts[index]) - offset
            index, offset = index + 1, 0
        offset += written
