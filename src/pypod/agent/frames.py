"""Frames on pypod's streams: ``kind (1 byte) | length (4 bytes, big-endian) | payload``.

Sync frames carry a payload of ``meta length (4 bytes) | JSON meta | raw bytes``.
Standard library only; runs on Python >= 3.8.
"""

import json
import struct

HEADER = struct.Struct(">cI")
META = struct.Struct(">I")
PIPE_BYTES = 1 << 20  # the default /proc/sys/fs/pipe-max-size: what any user may ask for


def frame(kind, payload=b""):
    return HEADER.pack(kind, len(payload)) + payload


def meta_frame(kind, meta, data=b""):
    encoded = json.dumps(meta, separators=(",", ":")).encode("utf-8", "surrogateescape")
    return frame(kind, META.pack(len(encoded)) + encoded + data)


def split_meta(payload):
    (length,) = META.unpack_from(payload)
    meta = json.loads(payload[META.size : META.size + length].decode("utf-8", "surrogateescape"))
    return meta, payload[META.size + length :]


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
            frames.append((kind, bytes(self.buffer[offset + HEADER.size : end])))
            offset = end
        del self.buffer[:offset]
        return frames


def widen_pipe(fd):
    """Let the pipe hold PIPE_BYTES, not 64 KiB: the writer runs ahead while this side
    writes files, and each read takes up to that much. A socket or a pipe that
    cannot grow keeps its size."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (ImportError, OSError):
        pass
