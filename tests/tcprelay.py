"""Tiny threaded TCP relays for tests: an HTTP CONNECT proxy, a SOCKS5 proxy and a
plain forwarder, each on loopback, each recording what it was asked for."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def _splice(client: socket.socket, upstream: socket.socket) -> None:
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise OSError("closed")
        data += chunk
    return data


class Relay:
    """Listens on `bind`; `seen` lists each connection's target ("host:port")."""

    def __init__(self, bind: str = "127.0.0.1") -> None:
        self.listener = socket.create_server((bind, 0))
        self.host, self.port = self.listener.getsockname()[:2]
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                threading.Thread(target=self._handle_safely, args=(client,), daemon=True).start()

    def _handle_safely(self, client: socket.socket) -> None:
        try:
            self.handle(client)
        except OSError:
            client.close()

    def handle(self, client: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.listener.close()


class ConnectProxy(Relay):
    """An HTTP proxy that only tunnels (CONNECT), as kubectl and httpx use one for https."""

    def handle(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                raise OSError("closed")
            head += chunk
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        self.seen.append(f"{method} {target}")
        if method != "CONNECT":
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            client.close()
            return
        host, _, port = target.rpartition(":")
        upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        upstream.settimeout(None)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        _splice(client, upstream)


class Socks5Proxy(Relay):
    """SOCKS5 without authentication, CONNECT only (RFC 1928)."""

    def handle(self, client: socket.socket) -> None:
        _version, count = _read_exactly(client, 2)
        _read_exactly(client, count)
        client.sendall(b"\x05\x00")
        _version, command, _reserved, kind = _read_exactly(client, 4)
        if kind == 1:
            host = socket.inet_ntoa(_read_exactly(client, 4))
        elif kind == 3:
            host = _read_exactly(client, _read_exactly(client, 1)[0]).decode()
        else:
            host = socket.inet_ntop(socket.AF_INET6, _read_exactly(client, 16))
        (port,) = struct.unpack("!H", _read_exactly(client, 2))
        self.seen.append(f"{host}:{port}")
        if command != 1:
            client.sendall(b"\x05\x07\x00\x01" + bytes(6))
            client.close()
            return
        upstream = socket.create_connection((host, port), timeout=10)
        upstream.settimeout(None)
        client.sendall(b"\x05\x00\x00\x01" + bytes(6))
        _splice(client, upstream)


class Forwarder(Relay):
    """Every connection goes to one fixed target: the apiserver under another address."""

    def __init__(self, target: tuple[str, int], bind: str = "127.0.0.1") -> None:
        self.target = target
        super().__init__(bind)

    def handle(self, client: socket.socket) -> None:
        self.seen.append(f"{self.target[0]}:{self.target[1]}")
        upstream = socket.create_connection(self.target, timeout=10)
        upstream.settimeout(None)
        _splice(client, upstream)


@contextlib.contextmanager
def running(relay: Relay) -> Iterator[Relay]:
    try:
        yield relay
    finally:
        relay.close()
