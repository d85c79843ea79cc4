"""The agent's ``attach`` role, run through ``kubectl exec -i``: relays frames between its
stdin/stdout and the session host's unix socket (session.py). Kept apart from the host so
that a client starts on a few imports: it is on the way to every prompt. Standard library
only; runs on any Python >= 3.8."""

import os
import select
import socket
import sys
import time

AGENT_DIR = "/tmp/pypod"
SOCKET_PATH = AGENT_DIR + "/session.sock"


def attach(socket_path=SOCKET_PATH, wait_s=60.0):
    """Relay stdin -> host socket and host socket -> stdout, both already framed."""
    deadline = time.monotonic() + wait_s
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    while True:
        try:
            sock.connect(socket_path)
            break
        except OSError:
            if time.monotonic() > deadline:
                sys.stderr.write("pypod-agent: no session host at %s\n" % socket_path)
                return 3
            time.sleep(0.05)
    stdin = sys.stdin.buffer.raw if hasattr(sys.stdin.buffer, "raw") else sys.stdin.buffer
    stdout = sys.stdout.buffer
    in_fd = stdin.fileno()
    while True:
        readable, _, _ = select.select([in_fd, sock], [], [])
        if in_fd in readable:
            data = os.read(in_fd, 65536)
            if not data:
                return 0
            sock.sendall(data)
        if sock in readable:
            data = sock.recv(65536)
            if not data:
                return 0
            stdout.write(data)
            stdout.flush()
