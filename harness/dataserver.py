"""A data server for the tests of `pypod data fetch`, on the pod bridge so pods reach it.

Serves the files of one folder under /files/NAME, as a real HTTP file server does:
Range and If-Range with strong ETags, HEAD, 206 and 416. Query parameters make it
misbehave on purpose:

  ?norange=1      ignore Range and If-Range: 200 with the whole body
  ?cut=N          close the connection after N bytes of each response's body
  ?cutonce=N      the same, for the first such request only (per path and query)
  ?rate=BPS       send at most BPS bytes a second
  ?status=CODE    answer CODE (e.g. 403) with a short body

Every response is logged as one JSON line (path, range, status, bytes sent), so a test
can tell what a resume fetched again. Standard library only: the harness copies this
file into its state folder and runs it from there, so it outlives the checkout that
started it.
"""

from __future__ import annotations

import argparse
import email.utils
import http.server
import json
import os
import re
import socketserver
import sys
import threading
import time
import urllib.parse

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
CHUNK = 1 << 20


def etag_of(stat: os.stat_result) -> str:
    """Strong: changes whenever the file's bytes may have (size, mtime, inode)."""
    return f'"{stat.st_size:x}-{stat.st_mtime_ns:x}-{stat.st_ino:x}"'


def parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """(first, last) of a single byte range; None when absent or not understood (serve
    the whole body, as RFC 9110 allows); "unsatisfiable" for a range past the end."""
    match = RANGE.match(header.strip()) if header else None
    if not match or match.groups() == ("", ""):
        return None
    first_text, last_text = match.groups()
    if first_text == "":
        length = int(last_text)
        if length == 0:
            return "unsatisfiable"
        return max(0, size - length), size - 1
    first = int(first_text)
    last = min(int(last_text), size - 1) if last_text else size - 1
    if first >= size:
        return "unsatisfiable"
    if last < first:
        return None
    return first, last


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: DataServer

    def log_message(self, format: str, *args: object) -> None:
        pass  # requests are logged as JSON lines instead

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        record = {
            "time": time.time(),
            "method": self.command,
            "path": url.path,
            "query": url.query,
            "range": self.headers.get("Range"),
            "if_range": self.headers.get("If-Range"),
            "client": self.client_address[0],
            "status": 0,
            "sent": 0,
            "complete": False,
        }
        self.server.begin()
        try:
            self._answer(url.path, query, head, record)
        finally:
            self.server.log(record)
            self.server.end()

    def _answer(self, path: str, query: dict[str, str], head: bool, record: dict) -> None:
        if "status" in query:
            return self._short(int(query["status"]), f"status {query['status']} as asked\n", record)
        name = urllib.parse.unquote(path[len("/files/") :]) if path.startswith("/files/") else ""
        file_path = os.path.join(self.server.root, name)
        if not name or "/" in name or name.startswith(".") or not os.path.isfile(file_path):
            return self._short(404, "not found\n", record)
        with open(file_path, "rb") as source:
            stat = os.fstat(source.fileno())
            size, etag = stat.st_size, etag_of(stat)
            last_modified = email.utils.formatdate(stat.st_mtime, usegmt=True)
            wanted = None if query.get("norange") else parse_range(self.headers.get("Range", ""), size)
            if_range = self.headers.get("If-Range")
            if wanted is not None and if_range is not None and if_range not in (etag, last_modified):
                wanted = None  # the client's copy is of another version: the whole body
            if wanted == "unsatisfiable":
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.send_header("ETag", etag)
                self.end_headers()
                record["status"] = 416
                return None
            first, last = wanted if isinstance(wanted, tuple) else (0, size - 1)
            status = 206 if isinstance(wanted, tuple) else 200
            length = last - first + 1 if size else 0
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", last_modified)
            self.send_header("Accept-Ranges", "none" if query.get("norange") else "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.end_headers()
            record["status"] = status
            if head:
                return None
            self._send_body(source, first, length, query, record)
        return None

    def _send_body(self, source, first: int, length: int, query: dict[str, str], record: dict) -> None:  # type: ignore[no-untyped-def]
        cut = int(query["cut"]) if "cut" in query else None
        if "cutonce" in query and self.server.first_time(self.path):
            cut = int(query["cutonce"])
        rate = float(query["rate"]) if "rate" in query else None
        to_send = length if cut is None else min(length, cut)
        self.wfile.flush()
        started = time.monotonic()
        offset = first
        try:
            while record["sent"] < to_send:
                count = min(CHUNK, to_send - record["sent"])
                if rate is None:
                    sent = self.connection.sendfile(source, offset, count)
                else:
                    sent = self.connection.sendfile(source, offset, min(count, max(1, int(rate / 20))))
                    ahead = record["sent"] + sent - rate * (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead / rate)
                if not sent:
                    break
                offset += sent
                record["sent"] += sent
        except OSError:
            self.close_connection = True  # the client went away
            return
        record["complete"] = record["sent"] == length
        if not record["complete"]:
            # Part-way on purpose: drop the connection as a failing server or network does.
            self.close_connection = True
            self.connection.shutdown(2)

    def _short(self, status: int, body: str, record: dict) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        record["status"] = status
        record["sent"] = len(data)


class DataServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    # TCPServer, not http.server.HTTPServer: that one resolves its own name (getfqdn)
    # before listening, which waits on DNS that cannot be reached here.
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], root: str, log_path: str) -> None:
        super().__init__(address, Handler)
        self.root = root
        self.log_path = log_path
        self._log_lock = threading.Lock()
        self._seen: set[str] = set()

    active = 0  # responses being sent; their log lines are still to come

    def begin(self) -> None:
        with self._log_lock:
            self.active += 1

    def end(self) -> None:
        with self._log_lock:
            self.active -= 1

    def first_time(self, key: str) -> bool:
        with self._log_lock:
            first = key not in self._seen
            self._seen.add(key)
            return first

    def log(self, record: dict) -> None:
        line = json.dumps(record) + "\n"
        with self._log_lock, open(self.log_path, "a") as out:
            out.write(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True, help="folder whose files are served")
    parser.add_argument("--log", required=True, help="JSON lines, one per response")
    args = parser.parse_args(argv)
    os.makedirs(args.root, exist_ok=True)
    server = DataServer((args.host, args.port), args.root, args.log)
    print(f"serving {args.root} on http://{args.host}:{args.port}/files/", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
