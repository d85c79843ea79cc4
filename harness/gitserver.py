"""A git server for pods: smart HTTP through `git http-backend`, on the harness bridge.

    python -m harness.gitserver --root DIR --listen 10.88.0.1:PORT --credentials FILE

- `DIR/public/*.git` can be read by anyone; `DIR/private/*.git` only with Basic auth
  (the `user:token` line of FILE, read at start, so the token is in no argument).
- Pushes need Basic auth everywhere (http-backend enables receive-pack for an
  authenticated REMOTE_USER).
- The client's `Git-Protocol` header reaches http-backend as HTTP_GIT_PROTOCOL, so
  protocol v2 is spoken and a fetch by commit (`git fetch origin SHA`) works.

A small handler of our own instead of the standard library's removed CGI server: it
passes the request to http-backend as CGI (environment, body on stdin), and relays
http-backend's `Status:` and headers and streams its body back.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import http.server
import os
import shutil
import socketserver
import subprocess
import sys
import threading
import zlib
from pathlib import Path
from typing import BinaryIO

PUBLIC = "public"
PRIVATE = "private"
HEALTH_PATH = "/healthz"
CHUNK = 64 * 1024


def http_backend() -> str:
    """The http-backend program of the git on PATH (git --exec-path knows where)."""
    result = subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True)
    return str(Path(result.stdout.strip()) / "git-http-backend")


def needs_auth(path: str, query: str) -> bool:
    """Pure: private repositories always; pushes (receive-pack) everywhere."""
    if path.lstrip("/").startswith(PRIVATE + "/"):
        return True
    return "git-receive-pack" in path or "service=git-receive-pack" in query


def check_basic_auth(header: str | None, user: str, token: str) -> str | None:
    """Pure: the user name when the Authorization header carries `user:token`, else None."""
    if not header or not header.startswith("Basic "):
        return None
    try:
        given = base64.b64decode(header[6:], validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    name, _, secret = given.partition(":")
    if hmac.compare_digest(name.encode(), user.encode()) and hmac.compare_digest(secret.encode(), token.encode()):
        return name
    return None


def cgi_environment(
    method: str, path: str, query: str, headers: dict[str, str], root: str, remote: str, user: str | None
) -> dict[str, str]:
    """Pure: the CGI environment http-backend reads (see git-http-backend(1))."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIT_PROJECT_ROOT": root,
        "GIT_HTTP_EXPORT_ALL": "1",
        "GATEWAY_INTERFACE": "CGI/1.1",
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "REMOTE_ADDR": remote,
        "SERVER_PROTOCOL": "HTTP/1.0",
    }
    lowered = {k.lower(): v for k, v in headers.items()}
    if "content-type" in lowered:
        env["CONTENT_TYPE"] = lowered["content-type"]
    if "git-protocol" in lowered:
        env["HTTP_GIT_PROTOCOL"] = lowered["git-protocol"]
    if user:
        env["REMOTE_USER"] = user
    return env


def parse_cgi_headers(block: bytes) -> tuple[int, str, list[tuple[str, str]]]:
    """Pure: a CGI response's header block to (status, reason, headers)."""
    status, reason, headers = 200, "OK", []
    for raw in block.decode("latin-1").splitlines():
        if not raw.strip():
            continue
        name, _, value = raw.partition(":")
        value = value.strip()
        if name.lower() == "status":
            code, _, text = value.partition(" ")
            status, reason = int(code), text or "OK"
        else:
            headers.append((name.strip(), value))
    return status, reason, headers


def _read_body(rfile: BinaryIO, headers: dict[str, str]) -> bytes:
    """The request body: by Content-Length, or de-chunked (git sends big POSTs chunked);
    a gzip Content-Encoding is undone here, as http-backend's CGI has no header for it."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if lowered.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            parts.append(rfile.read(size))
            rfile.readline()
        body = b"".join(parts)
    else:
        body = rfile.read(int(lowered.get("content-length", "0") or 0))
    if lowered.get("content-encoding", "").lower() in ("gzip", "x-gzip"):
        body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
    return body


class GitHandler(http.server.BaseHTTPRequestHandler):
    server_version = "pypod-harness-git/1"
    protocol_version = "HTTP/1.0"  # one request per connection: the body ends with it
    root: str = ""
    user: str = ""
    token: str = ""
    backend: str = ""

    def do_GET(self) -> None:
        if self.path == HEALTH_PATH:
            self._reply(200, b"ok\n")
            return
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _reply(self, status: int, body: bytes, extra: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        if ".." in path.split("/"):
            self._reply(400, b"bad path\n")
            return
        headers = dict(self.headers.items())
        user = check_basic_auth(headers.get("Authorization"), self.user, self.token)
        if needs_auth(path, query) and user is None:
            self._reply(401, b"authentication required\n", (("WWW-Authenticate", 'Basic realm="pypod-harness"'),))
            return
        body = _read_body(self.rfile, headers) if self.command == "POST" else b""
        env = cgi_environment(self.command, path, query, headers, self.root, self.client_address[0], user)
        env["CONTENT_LENGTH"] = str(len(body))
        proc = subprocess.Popen(
            [self.backend], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdin and proc.stdout and proc.stderr
        feeder = threading.Thread(target=_feed, args=(proc.stdin, body), daemon=True)
        feeder.start()
        errors: list[bytes] = []
        drain = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
        drain.start()
        head = b""
        while b"\r\n\r\n" not in head and b"\n\n" not in head:
            chunk = proc.stdout.read1(CHUNK)
            if not chunk:
                break
            head += chunk
        separator = b"\r\n\r\n" if b"\r\n\r\n" in head else b"\n\n"
        block, _, rest = head.partition(separator)
        status, reason, cgi_headers = parse_cgi_headers(block)
        self.send_response(status, reason)
        for name, value in cgi_headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(rest)
        shutil.copyfileobj(proc.stdout, self.wfile, CHUNK)
        proc.wait()
        feeder.join()
        drain.join()
        if errors and errors[0].strip():
            sys.stderr.write(f"http-backend {self.command} {path}: {errors[0].decode(errors='replace').strip()}\n")

    def log_message(self, format: str, *args: object) -> None:
        # One line per request, without the Authorization header (never logged).
        sys.stderr.write(f"{self.client_address[0]} {format % args}\n")
        sys.stderr.flush()


def _feed(pipe: BinaryIO, body: bytes) -> None:
    try:
        pipe.write(body)
    except BrokenPipeError:
        pass
    finally:
        pipe.close()


class Server(socketserver.ThreadingTCPServer):
    # http.server.HTTPServer would look its own name up in DNS first: skip that.
    allow_reuse_address = True
    daemon_threads = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harness.gitserver")
    parser.add_argument("--root", required=True, help="folder with public/ and private/ repositories")
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--credentials", required=True, help="file with one line: user:token")
    args = parser.parse_args(argv)
    user, _, token = Path(args.credentials).read_text().strip().partition(":")
    root = Path(args.root)
    for sub in (PUBLIC, PRIVATE):
        (root / sub).mkdir(parents=True, exist_ok=True)
    GitHandler.root, GitHandler.user, GitHandler.token = str(root), user, token
    GitHandler.backend = http_backend()
    host, _, port = args.listen.rpartition(":")
    with Server((host, int(port)), GitHandler) as server:
        print(f"serving {root} on http://{host}:{port}/ (public/, private/ with Basic auth)", flush=True)
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
