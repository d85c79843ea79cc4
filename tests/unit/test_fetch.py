"""The downloader (agent/fetch.py) against the harness's data server on loopback: real
HTTP, real files; a killed process is a real SIGKILL."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.dataserver import DataServer, parse_range
from pypod.agent import fetch

SRC = Path(__file__).resolve().parents[2] / "src"
MiB = 2**20


class Served:
    def __init__(self, server: DataServer, root: Path, log: Path) -> None:
        self.server, self.root, self.log, self.port = server, root, log, server.server_address[1]

    def url(self, name: str, query: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/files/{name}" + (f"?{query}" if query else "")

    def add(self, name: str, size: int) -> str:
        data = os.urandom(size)
        (self.root / name).write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    def requests(self, name: str) -> list[dict]:
        deadline = time.monotonic() + 5
        while self.server.active and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.log.exists():
            return []
        lines = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [r for r in lines if r["path"] == f"/files/{name}"]

    def sent(self, name: str) -> int:
        return sum(r["sent"] for r in self.requests(name) if r["method"] == "GET")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    root = tmp_path / "served"
    root.mkdir()
    server = DataServer(("127.0.0.1", 0), str(root), str(tmp_path / "requests.jsonl"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Served(server, root, tmp_path / "requests.jsonl")
    server.shutdown()
    server.server_close()


def plan(dest: Path, *files: dict, **extra: object) -> dict:
    return {"dest": str(dest), "parallel": 2, "retries": 3, "retry_wait": 0.05, "files": list(files), **extra}


def state(dest: Path, name: str) -> dict:
    return json.loads((dest / fetch.STATE_DIR / f"{name}.json").read_text())


def test_a_file_lands_under_its_name_with_its_sha256_and_nothing_else_beside_it(served: Served, tmp_path: Path):
    digest = served.add("a.bin", 3 * MiB + 17)
    dest = tmp_path / "dest"
    code = fetch.run_plan(plan(dest, {"url": served.url("a.bin"), "name": "a.bin", "sha256": digest}))
    assert code == 0
    assert hashlib.sha256((dest / "a.bin").read_bytes()).hexdigest() == digest
    assert sorted(os.listdir(dest)) == [fetch.STATE_DIR, "a.bin"]
    done = state(dest, "a.bin")
    assert (done["state"], done["done"], done["total"]) == ("done", 3 * MiB + 17, 3 * MiB + 17)
    assert done["sha256"] == digest
    assert not (dest / fetch.STATE_DIR / "a.bin.part").exists()


def test_a_cut_connection_resumes_with_range_and_fetches_each_byte_once(served: Served, tmp_path: Path):
    size = 5 * MiB
    digest = served.add("cut.bin", size)
    dest = tmp_path / "dest"
    entry = {"url": served.url("cut.bin", "cut=1500000"), "name": "cut.bin", "sha256": digest}
    code = fetch.run_plan(plan(dest, entry))
    assert code == 0
    statuses = [r["status"] for r in served.requests("cut.bin")]
    assert statuses[0] == 200 and set(statuses[1:]) == {206} and len(statuses) == 4
    assert served.sent("cut.bin") == size
    assert all(r["if_range"] for r in served.requests("cut.bin")[1:])


def test_a_server_that_ignores_range_restarts_from_zero_and_says_so(served: Served, tmp_path: Path):
    size = 4 * MiB
    digest = served.add("norange.bin", size)
    dest = tmp_path / "dest"
    url = served.url("norange.bin", "norange=1&cutonce=1000000")
    assert fetch.run_plan(plan(dest, {"url": url, "name": "norange.bin", "sha256": digest})) == 0
    assert hashlib.sha256((dest / "norange.bin").read_bytes()).hexdigest() == digest
    done = state(dest, "norange.bin")
    assert done["restarts"] == 1
    assert any("the server ignored Range: restarted from zero" in note for note in done["notes"])


def test_a_wrong_checksum_fails_naming_both_digests_and_the_file_never_appears(served: Served, tmp_path: Path):
    digest = served.add("bad.bin", 100_000)
    wrong = "0" * 64
    dest = tmp_path / "dest"
    code = fetch.run_plan(plan(dest, {"url": served.url("bad.bin"), "name": "bad.bin", "sha256": wrong}))
    assert code == fetch.EXIT_FAILED
    failed = state(dest, "bad.bin")
    assert failed["state"] == "failed"
    assert f"expected {wrong}, got {digest}" in failed["error"]
    assert not (dest / "bad.bin").exists() and not (dest / fetch.STATE_DIR / "bad.bin.part").exists()


@pytest.mark.parametrize(
    ("query", "expected"),
    [("", "HTTP 404 Not Found"), ("status=403", "HTTP 403 Forbidden"), ("status=410", "HTTP 410 Gone")],
)
def test_http_refusals_fail_at_once_with_their_status(served: Served, tmp_path: Path, query: str, expected: str):
    dest = tmp_path / "dest"
    url = served.url("missing.bin", query)
    assert fetch.run_plan(plan(dest, {"url": url, "name": "missing.bin", "sha256": None})) == fetch.EXIT_FAILED
    failed = state(dest, "missing.bin")
    assert failed["error"].startswith(expected)
    assert f"from {fetch.redact(url)}" in failed["error"] and "status=" not in failed["error"]
    assert len(served.requests("missing.bin")) == 1  # not retried


def test_a_server_error_is_retried_and_then_reported(served: Served, tmp_path: Path):
    dest = tmp_path / "dest"
    url = served.url("flaky.bin", "status=503")
    assert fetch.run_plan(plan(dest, {"url": url, "name": "flaky.bin"}, retries=2)) == fetch.EXIT_FAILED
    expected = f"HTTP 503 Service Unavailable from {fetch.redact(url)} (after 3 tries)"
    assert state(dest, "flaky.bin")["error"] == expected
    assert len(served.requests("flaky.bin")) == 3


def test_an_unreachable_host_is_one_line(tmp_path: Path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again at once: nothing listens there
    dest = tmp_path / "dest"
    url = f"http://127.0.0.1:{port}/files/x"
    assert fetch.run_plan(plan(dest, {"url": url, "name": "x"}, retries=1)) == fetch.EXIT_FAILED
    error = state(dest, "x")["error"]
    assert error == f"unreachable host 127.0.0.1:{port}: Connection refused (after 2 tries)"


def test_a_part_that_is_already_whole_is_checked_by_a_416(served: Served, tmp_path: Path):
    digest = served.add("whole.bin", 200_000)
    dest = tmp_path / "dest"
    entry = {"url": served.url("whole.bin", "cut=200000"), "name": "whole.bin", "sha256": digest}
    # A first run whose pod died after the last byte, before the rename: state and part are there.
    (dest / fetch.STATE_DIR).mkdir(parents=True)
    part, state_path = fetch.state_paths(str(dest), "whole.bin")
    Path(part).write_bytes((served.root / "whole.bin").read_bytes())
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(entry["url"], method="HEAD")) as response:
        etag = response.headers["ETag"]
    fetch.write_json_atomic(state_path, {"url_digest": fetch.url_digest(entry["url"]), "etag": etag, "done": 200_000})
    assert fetch.run_plan(plan(dest, entry)) == 0
    assert [r["status"] for r in served.requests("whole.bin") if r["method"] == "GET"] == [416]
    assert state(dest, "whole.bin")["sha256"] == digest


def test_a_killed_downloader_resumes_from_its_part_and_hashes_it_back(served: Served, tmp_path: Path):
    size = 40 * MiB
    digest = served.add("big.bin", size)
    dest = tmp_path / "dest"
    entry = {"url": served.url("big.bin", f"rate={20 * MiB}"), "name": "big.bin", "sha256": digest}
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan(dest, entry)))
    env = dict(os.environ, PYTHONPATH=str(SRC))
    command = [sys.executable, "-c", "import sys; from pypod.agent.fetch import main; sys.exit(main(sys.argv[1:]))"]
    first = subprocess.Popen([*command, "fetch", str(plan_path)], env=env, stdout=subprocess.DEVNULL)
    part = dest / fetch.STATE_DIR / "big.bin.part"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not part.exists() or part.stat().st_size < 10 * MiB):
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    had = part.stat().st_size
    assert 0 < had < size
    second = subprocess.run([*command, "fetch", str(plan_path)], env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"resuming at byte {had}" in second.stdout
    assert hashlib.sha256((dest / "big.bin").read_bytes()).hexdigest() == digest
    last = served.requests("big.bin")[-1]
    assert (last["status"], last["range"]) == (206, f"bytes={had}-")
    # Each byte came once, but for what was in flight when the first process died.
    assert served.sent("big.bin") - size < 4 * MiB


def test_a_full_volume_is_reported_as_pvc_full(served: Served, tmp_path: Path):
    """A real ENOSPC: a 2 MiB tmpfs is not available without root, so /dev/full stands in
    for the part file (every write to it fails with ENOSPC)."""
    served.add("full.bin", 300_000)
    dest = tmp_path / "dest"
    (dest / fetch.STATE_DIR).mkdir(parents=True)
    os.symlink("/dev/full", dest / fetch.STATE_DIR / "full.bin.part")
    entry = {"url": served.url("full.bin"), "name": "full.bin"}
    fetcher = fetch.FileFetch(entry, str(dest), retries=1, retry_wait=0, timeout=10)
    fetcher.progress.resumable = False
    reason = fetcher.run()
    assert reason is not None and reason.startswith("PVC full: no space left after 0 of 300000 bytes")


def test_several_files_at_once_and_a_file_already_there(served: Served, tmp_path: Path):
    digests = {f"f{i}.bin": served.add(f"f{i}.bin", 50_000 + i) for i in range(5)}
    dest = tmp_path / "dest"
    files = [{"url": served.url(name), "name": name, "sha256": digest} for name, digest in digests.items()]
    assert fetch.run_plan(plan(dest, *files, parallel=3)) == 0
    assert fetch.run_plan(plan(dest, *files, parallel=3)) == 0  # again: nothing fetched twice
    assert all(len([r for r in served.requests(name) if r["method"] == "GET"]) == 1 for name in digests)
    assert {s["name"]: s["state"] for s in fetch.states(str(dest))} == dict.fromkeys(digests, "done")


def test_redact_drops_credentials_and_signatures():
    assert fetch.redact("https://u:p@host:8443/a/b.tar?X-Amz-Signature=s#f") == "https://host:8443/a/b.tar?..."
    assert fetch.redact("http://host/a") == "http://host/a"


def test_parse_content_range_and_the_servers_range_parser():
    assert fetch.parse_content_range("bytes 5-9/10") == (5, 9, 10)
    assert fetch.parse_content_range("bytes */10") == (None, None, 10)
    assert fetch.parse_content_range("bytes 0-9/*") == (0, 9, None)
    assert fetch.parse_content_range("items 0-1/2") is None
    assert parse_range("bytes=5-", 10) == (5, 9)
    assert parse_range("bytes=10-", 10) == "unsatisfiable"
    assert parse_range("bytes=-3", 10) == (7, 9)
    assert parse_range("bytes=1-2,4-5", 10) is None


def test_listing_gives_sizes_and_folders_totals(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x").write_bytes(b"12345")
    (tmp_path / "y").write_bytes(b"12")
    result = fetch.listing(str(tmp_path))
    assert [(e["name"], e["kind"], e["size"]) for e in result["entries"]] == [("sub", "dir", 5), ("y", "file", 2)]
    assert result["capacity"] > 0
