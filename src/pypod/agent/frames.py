"""Frames on pypod's streams: ``kind (1 byte) | length (4 bytes, big-endian) | payload``.

Sync frames carry a payload of ``meta length (4 bytes) | JSON meta | raw bytes``.
Standard library only; runs on Python >= 3.8.
"""

import json
import struct
import sys

HEADER = struct.Struct(">cI")
META = struct.Struct(">I")
PIPE_BYTES = 1 << 20  # the default /proc/sys/fs/pipe-max-size: what any user may ask for


def frame(kind, payload=b""):
    return HEADER.pack(kind, len(payload)) + payload


def meta_frame_head(kind, meta, data_size):
    """A sync frame up to its raw bytes, which the caller sends after it (no copy of them)."""
    encoded = json.dumps(meta, separators=(",", ":")).encode("utf-8", "surrogateescape")
    return HEADER.pack(kind, META.size + len(encoded) + data_size) + META.pack(len(encoded)) + encoded


def meta_frame(kind, meta, data=b""):
    return meta_frame_head(kind, meta, len(data)) + data


def split_meta(payload):
    """A sync frame's meta, and its raw bytes as a view into `payload` (not a copy)."""
    (length,) = META.unpack_from(payload)
    meta = json.loads(payload[META.size : META.size + length].decode("utf-8", "surrogateescape"))
    return meta, memoryview(payload)[META.size + length :]


class FrameReader:
    """Accumulates bytes and yields complete frames."""

    def __init__(self):
        self.buffer = bytearray()

    def feed(self, data):
        self.buffer += data
        frames = []
        offset = 0
        while len(self.buffer) - offset >= HEADER.size:
            kind, length = HEADER.unpack_from(self.buffer, offset)
            end = offset + HEADER.size + length
            if len(self.buffer) < end:
                break
            with memoryview(self.buffer) as view:  # one copy of the payload, not two
                frames.append((kind, bytes(view[offset + HEADER.size : end])))
            offset = end
        del self.buffer[:offset]
        return frames


def widen_pipe(fd):
    """Let the pipe hold PIPE_BYTES, not 64 KiB: the writer runs ahead while this side
    writes files, and each read takes up to that much. A socket or a pipe that
    cannot grow keeps its size, and so does any pipe off Linux."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import fcntl

        # Python < 3.10 does not name it; 1031 is Linux's F_SETPIPE_SZ.
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (ImportError, OSError):
        pass
