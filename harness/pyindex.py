"""A PEP 503 simple package index on the pod bridge, for the tests of `pypod add` and
`uv add` in a pod: pods cannot reach the public index from the harness.

Serves the wheels of one folder:

  /simple/               every project, one link each
  /simple/NAME/          that project's files, each link with `#sha256=` and
                         `data-requires-python` when the wheel says
  /files/FILE            the wheel itself

Names are normalized as PEP 503 says, and an unknown project is a 404 (which pip and uv
read as "not in this index"). Every response is logged as one JSON line, so a test can
tell whether a pod installed anything. Standard library only: the harness copies this
file into its state folder and runs it from there, so it outlives the checkout that
started it. The wheels are fetched on the host (`pip download`, see cluster.py).
"""

from __future__ import annotations

import argparse
import hashlib
import html
import http.server
import json
import os
import re
import socketserver
import sys
import threading
import time
import urllib.parse
import zipfile


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_project(filename: str) -> str:
    """The project a wheel's file name belongs to (PEP 427: NAME-VERSION-...whl)."""
    return normalize(filename.split("-", 1)[0])


def requires_python(path: str) -> str:
    """Requires-Python from the wheel's METADATA, or ""."""
    try:
        with zipfile.ZipFile(path) as wheel:
            name = next((n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")), None)
            if name is None:
                return ""
            for line in wheel.read(name).decode("utf-8", "replace").splitlines():
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                if key.lower() == "requires-python":
                    return value.strip()
    except (OSError, zipfile.BadZipFile):
        return ""
    return ""


class Index:
    """The folder's wheels by project, read again when the folder changes."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.lock = threading.Lock()
        self.seen = -1
        self.projects: dict[str, list[tuple[str, str, str]]] = {}

    def read(self) -> dict[str, list[tuple[str, str, str]]]:
        mtime = os.stat(self.root).st_mtime_ns
        with self.lock:
            if mtime != self.seen:
                projects: dict[str, list[tuple[str, str, str]]] = {}
                for filename in sorted(os.listdir(self.root)):
                    if not filename.endswith(".whl"):
                        continue
                    path = os.path.join(self.root, filename)
                    with open(path, "rb") as handle:
                        digest = hashlib.sha256(handle.read()).hexdigest()
                    projects.setdefault(wheel_project(filename), []).append((filename, digest, requires_python(path)))
                self.projects, self.seen = projects, mtime
            return self.projects


def page(title: str, links: list[str]) -> bytes:
    body = "\n".join(links)
    return (
        f'<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.0">'
        f"<title>{html.escape(title)}</title></head>\n<body>\n{body}\n</body></html>\n"
    ).encode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: IndexServer

    def log_message(self, format: str, *args: object) -> None:
        pass  # logged as JSON lines instead

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        path = urllib.parse.urlsplit(self.path).path
        status, body, kind = self._answer(path)
        # Logged before the answer goes out: whoever got it can read the log at once.
        self.server.log({"time": time.time(), "client": self.client_address[0], "path": path, "status": status})
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _answer(self, path: str) -> tuple[int, bytes, str]:
        projects = self.server.index.read()
        parts = [p for p in path.split("/") if p]
        if parts == ["simple"]:
            links = [f'<a href="/simple/{name}/">{name}</a>' for name in sorted(projects)]
            return 200, page("Simple index", links), "text/html"
        if len(parts) == 2 and parts[0] == "simple":
            files = projects.get(normalize(parts[1]))
            if not files:
                return 404, b"not in this index\n", "text/plain"
            links = []
            for filename, digest, python in files:
                attr = f' data-requires-python="{html.escape(python)}"' if python else ""
                links.append(f'<a href="/files/{filename}#sha256={digest}"{attr}>{filename}</a>')
            return 200, page(f"Links for {parts[1]}", links), "text/html"
        if len(parts) == 2 and parts[0] == "files" and "/" not in parts[1] and parts[1].endswith(".whl"):
            file_path = os.path.join(self.server.index.root, parts[1])
            if os.path.isfile(file_path):
                with open(file_path, "rb") as handle:
                    return 200, handle.read(), "application/octet-stream"
        return 404, b"not found\n", "text/plain"


class IndexServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], root: str, log_path: str) -> None:
        super().__init__(address, Handler)
        self.index = Index(root)
        self.log_path = log_path
        self.log_lock = threading.Lock()

    def log(self, record: dict[str, object]) -> None:
        with self.log_lock, open(self.log_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True, help="the folder of wheels")
    parser.add_argument("--log", required=True, help="JSON lines, one per response")
    args = parser.parse_args(argv)
    server = IndexServer((args.host, args.port), args.root, args.log)
    sys.stdout.write(f"serving {args.root} at http://{args.host}:{args.port}/simple/\n")
    sys.stdout.flush()
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
