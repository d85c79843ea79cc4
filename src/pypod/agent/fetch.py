"""Download files onto a volume: resumable, verified, atomic. Standard library only;
Python >= 3.8, so any image with python3 runs it.

The plan (JSON, from a Secret: URLs may carry credentials) names a destination folder
and the files: {"dest", "parallel", "retries", "files": [{"url", "name", "sha256"}]}.
Beside the files, in DEST/.pypod-fetch/, each file has:

- NAME.part: the bytes so far. A restarted pod sends `Range: bytes=N-` with `If-Range`
  (the strong ETag, else Last-Modified), appends a 206, starts again from zero on a 200
  (and says so), and on a 416 checks that the part is the whole file.
- NAME.json: its state (queued, downloading, verifying, done, failed, with the reason),
  bytes done and total, rate, what happened. `pypod data status` reads these, from a
  running pod or a short-lived one, long after the logs are gone.

sha256 is computed while writing, over the part already there too (read back once on
resume). The file gets its final name (os.replace, same folder's filesystem) only when
its length matches Content-Length and its digest the one asked for; a mismatch deletes
the part and names both digests.

Exit codes: 0 all done; 3 a file failed for a reason another try would not change (the
Job's podFailurePolicy fails the Job at once); anything else is a crash, retried by the
Job's backoffLimit, which continues where the part ends.
"""

import concurrent.futures
import contextlib
import errno
import hashlib
import http.client
import json
import os
import queue
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

STATE_DIR = ".pypod-fetch"
# Read into and written from a few reused 256 KiB buffers: measured here, fresh 1 MiB
# reads were 2-3x slower (each above glibc's mmap threshold), and reused 256 KiB ones
# beat 64 KiB by a fifth.
CHUNK = 1 << 18
HASH_CHUNK = 1 << 22
WRITEBACK_EVERY = 1 << 24
STATE_EVERY_S = 1.0
RATE_WINDOW_S = 10.0
EXIT_FAILED = 3
USER_AGENT = "pypod-fetch/1"
SCHEMES = ("http", "https")


class Permanent(Exception):
    """A failure another try would not change: its message is the one-line reason."""


class Transient(Exception):
    """A failure worth another try (after a pause), resuming where the part ends."""


def redact(url):
    """The URL without credentials: no user:password, no query (presigned signatures), no fragment."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = "%s:%d" % (host, parts.port)
    shown = "%s://%s%s" % (parts.scheme, host, parts.path)
    return shown + ("?..." if parts.query else "")


def state_paths(dest, name):
    folder = os.path.join(dest, STATE_DIR)
    return os.path.join(folder, name + ".part"), os.path.join(folder, name + ".json")


def write_json_atomic(path, data):
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as out:
        json.dump(data, out, indent=1, sort_keys=True)
    os.replace(tmp, path)


def read_json(path):
    try:
        with open(path) as source:
            return json.load(source)
    except (OSError, ValueError):
        return None


def strong_etag(value):
    """A strong ETag, or None: a weak one (W/"...") may not be used with If-Range."""
    if value and not value.startswith("W/") and value.startswith('"'):
        return value
    return None


def parse_content_range(value):
    """`bytes FIRST-LAST/SIZE` -> (first, last, size); `bytes */SIZE` -> (None, None, size);
    size None when `*`. None when absent or malformed."""
    if not value or not value.startswith("bytes "):
        return None
    spec, _, size_text = value[6:].partition("/")
    size = None if size_text.strip() == "*" else _int(size_text)
    if spec.strip() == "*":
        return None, None, size
    first, _, last = spec.partition("-")
    if _int(first) is None or _int(last) is None:
        return None
    return _int(first), _int(last), size


def _int(text):
    try:
        return int(text.strip())
    except (ValueError, AttributeError):
        return None


def describe_network_error(exc, url):
    """One line for a failure to reach the server at all."""
    parts = urllib.parse.urlsplit(url)
    where = parts.hostname or "?"
    if parts.port:
        where = "%s:%d" % (where, parts.port)
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, socket.gaierror):
        return "unreachable host %s: name not resolved (%s)" % (where, reason.strerror or reason)
    if isinstance(reason, ssl.SSLError):
        return "TLS with %s failed: %s" % (where, reason)
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "unreachable host %s: timed out" % where
    text = getattr(reason, "strerror", None) or str(reason)
    return "unreachable host %s: %s" % (where, text)


class Progress:
    """A file's state, written to its .json at most once a second (and at every change of state)."""

    def __init__(self, path, entry, dest):
        self.path = path
        self.lock = threading.Lock()
        previous = read_json(path) or {}
        same = previous.get("url_digest") == url_digest(entry["url"])
        # A part is continued only under the state that says which URL and version it holds.
        self.resumable = same
        self.data = {
            "name": entry["name"],
            "url": redact(entry["url"]),
            "url_digest": url_digest(entry["url"]),
            "dest": dest,
            "state": "queued",
            "done": 0,
            "total": None,
            "rate": 0.0,
            "expected_sha256": entry.get("sha256"),
            "sha256": None,
            "error": None,
            "notes": previous.get("notes", []) if same else [],
            "attempts": previous.get("attempts", 0) if same else 0,
            "restarts": previous.get("restarts", 0) if same else 0,
            "etag": previous.get("etag") if same else None,
            "last_modified": previous.get("last_modified") if same else None,
            "started": previous.get("started") if same else None,
            "pod": os.environ.get("POD_NAME") or socket.gethostname(),
            "updated": time.time(),
        }
        self.samples = []
        self.last_write = 0.0

    def set(self, **changes):
        with self.lock:
            self.data.update(changes)
            self._write()

    def note(self, text):
        with self.lock:
            self.data["notes"] = (self.data["notes"] + [text])[-20:]
            self._write()

    def advance(self, done):
        now = time.monotonic()
        if now - self.last_write >= STATE_EVERY_S:
            self.samples.append((now, done))
            while len(self.samples) > 1 and now - self.samples[0][0] > RATE_WINDOW_S:
                self.samples.pop(0)
            first_t, first_done = self.samples[0]
            rate = (done - first_done) / (now - first_t) if now > first_t else 0.0
            with self.lock:
                self.data.update(done=done, rate=round(rate, 1))
                self._write()

    def _write(self):
        self.data["updated"] = time.time()
        self.last_write = time.monotonic()
        write_json_atomic(self.path, self.data)


def url_digest(url):
    """Which URL a state belongs to, without keeping the URL (it may carry a signature)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def log(message):
    sys.stdout.write("%s %s\n" % (time.strftime("%H:%M:%S"), message))
    sys.stdout.flush()


class FileFetch:
    """One file, from its state on the volume to its final name."""

    def __init__(self, entry, dest, retries, retry_wait, timeout):
        self.url = entry["url"]
        self.name = entry["name"]
        self.expected = (entry.get("sha256") or "").lower() or None
        self.dest = dest
        self.final = os.path.join(dest, self.name)
        self.part, state_path = state_paths(dest, self.name)
        self.retries = retries
        self.retry_wait = retry_wait
        self.timeout = timeout
        self.progress = Progress(state_path, entry, dest)
        self.shown = redact(self.url)

    # -- the whole life of one file ---------------------------------------------------
    def run(self):
        """Returns None when done, else the one-line reason it failed."""
        try:
            if os.path.exists(self.final):
                return self._already_there()
            self._download()
            self._verify_and_rename()
            return None
        except Permanent as exc:
            reason = str(exc)
        except Exception as exc:  # a bug or an OS error not foreseen: still one line
            reason = "%s: %s" % (type(exc).__name__, exc)
        self.progress.set(state="failed", error=reason)
        log("%s: failed: %s" % (self.name, reason))
        return reason

    def _already_there(self):
        size = os.path.getsize(self.final)
        if self.expected:
            digest = self._hash_file(self.final, size)
            if digest != self.expected:
                raise Permanent(
                    "%s already exists with sha256 %s, not the %s asked for; "
                    "it was left alone (remove it to fetch again)" % (self.name, digest, self.expected)
                )
        else:
            digest = self.progress.data.get("sha256")
        self.progress.set(state="done", done=size, total=size, sha256=digest, error=None)
        log("%s: already there (%d bytes)" % (self.name, size))
        return None

    def _download(self):
        progress = self.progress
        self.have = os.path.getsize(self.part) if progress.resumable and os.path.exists(self.part) else 0
        self.hasher = hashlib.sha256()
        if not progress.data["started"]:
            progress.data["started"] = time.time()
        if self.have:
            progress.set(state="downloading", done=self.have, error=None)
            log("%s: resuming at byte %d; reading the part back for sha256" % (self.name, self.have))
            self._hash_into(self.hasher, self.part, self.have)
        else:
            with open(self.part, "wb"):
                pass
        progress.set(state="downloading", done=self.have, error=None, attempts=progress.data["attempts"] + 1)
        failures = 0
        while True:
            before = self.have
            try:
                self._one_request()
                return
            except Transient as exc:
                failures = 0 if self.have > before else failures + 1
                if failures > self.retries:
                    raise Permanent("%s (after %d tries)" % (exc, failures)) from exc
                wait = min(30.0, self.retry_wait * (2 ** (failures - 1))) if failures else 0.0
                what = "retrying in %.0fs" % wait if wait else "resuming"
                progress.note("%s at byte %d; %s" % (exc, self.have, what))
                log("%s: %s at byte %d; %s" % (self.name, exc, self.have, what))
                time.sleep(wait)

    def _one_request(self):
        """One HTTP request, its body appended to the part; raises Transient to try again."""
        progress = self.progress
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        validator = progress.data.get("etag") or progress.data.get("last_modified")
        if self.have:
            headers["Range"] = "bytes=%d-" % self.have
            if validator:
                headers["If-Range"] = validator
        request = urllib.request.Request(self.url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            return self._http_error(exc)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise Transient(describe_network_error(exc, self.url)) from exc
        with response:
            status = response.status
            etag = strong_etag(response.headers.get("ETag"))
            last_modified = response.headers.get("Last-Modified")
            length = _int(response.headers.get("Content-Length") or "")
            if status == 206:
                content_range = parse_content_range(response.headers.get("Content-Range"))
                if not content_range or content_range[0] != self.have:
                    self._restart("the server sent another range than asked (%s)" % (content_range,))
                if etag and progress.data.get("etag") and etag != progress.data["etag"]:
                    self._restart("the file changed on the server (its ETag)")
                total = content_range[2]
            elif status == 200:
                if self.have:
                    changed = validator and etag and progress.data.get("etag") and etag != progress.data["etag"]
                    reason = "the file changed on the server" if changed else "the server ignored Range"
                    text = "%s: restarted from zero (had %d bytes)" % (reason, self.have)
                    progress.set(restarts=progress.data["restarts"] + 1)
                    progress.note(text)
                    log("%s: %s" % (self.name, text))
                    self._truncate()
                total = length
            else:
                raise Transient("HTTP %d %s from %s" % (status, response.reason, self.shown))
            progress.set(etag=etag, last_modified=last_modified, total=total, done=self.have)
            self._stream(response, total)
        return None

    def _http_error(self, exc):
        if exc.code == 416 and self.have:
            content_range = parse_content_range(exc.headers.get("Content-Range"))
            size = content_range[2] if content_range else None
            exc.close()
            if size == self.have:
                self.progress.set(total=size, done=self.have)
                log("%s: 416 for bytes=%d-: the part is the whole file" % (self.name, self.have))
                return None
            self._restart("416 with size %s for a part of %d bytes" % (size, self.have))
        exc.close()
        text = "HTTP %d %s from %s" % (exc.code, exc.reason, self.shown)
        if exc.code in (408, 425, 429) or exc.code >= 500:
            raise Transient(text)
        hints = {
            404: "the file is not there: check the URL",
            410: "the file is gone: check the URL",
            403: "refused: the URL needs credentials, or a presigned URL has expired",
            401: "refused: the URL needs credentials",
        }
        raise Permanent(text + (": " + hints[exc.code] if exc.code in hints else ""))

    def _truncate(self):
        with open(self.part, "wb"):
            pass
        self.have, self.hasher = 0, hashlib.sha256()

    def _restart(self, why):
        """The part cannot be continued: empty it, and try again from zero."""
        text = "%s: starting from zero (had %d bytes)" % (why, self.have)
        self._truncate()
        self.progress.note(text)
        log("%s: %s" % (self.name, text))
        self.progress.set(restarts=self.progress.data["restarts"] + 1, done=0, etag=None, last_modified=None)
        raise Transient(why)

    def _stream(self, response, total):
        """Append the body to the part: this thread reads from the network while a writer
        thread writes and hashes (both release the GIL), so the three overlap."""
        progress = self.progress
        writer = PartWriter(self.part, self.hasher, self.have)
        broke = None
        try:
            while True:
                buffer = writer.free_buffer()
                if buffer is None:
                    break  # the writer failed: its error is raised below
                try:
                    count = response.readinto(buffer)
                except (http.client.HTTPException, OSError) as exc:
                    broke = Transient("the connection broke (%s)" % (exc.__class__.__name__,))
                    writer.give_back(buffer)
                    break
                if not count:
                    writer.give_back(buffer)
                    break
                writer.put(buffer, count)
                progress.advance(writer.received)
        finally:
            writer.close()
            self.have = writer.written
            progress.set(done=self.have)
        if writer.error is not None:
            self._write_failed(writer.error, self.have)
        if broke is not None:
            raise broke
        if total is not None and self.have < total:
            raise Transient("the connection closed after %d of %d bytes" % (self.have, total))
        if total is not None and self.have > total:
            self._restart("got %d bytes, more than the %d announced" % (self.have, total))

    def _write_failed(self, exc, have):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            stat = os.statvfs(self.dest)
            size = stat.f_blocks * stat.f_frsize
            total = self.progress.data.get("total")
            need = " of %d" % total if total else ""
            raise Permanent(
                "PVC full: no space left after %d%s bytes (the volume holds %d bytes); "
                "the part is kept: give the PVC more room and fetch again to resume" % (have, need, size)
            ) from exc
        raise Permanent("writing %s failed: %s" % (self.part, exc.strerror or exc)) from exc

    def _verify_and_rename(self):
        progress = self.progress
        progress.set(state="verifying")
        size = os.path.getsize(self.part)
        total = progress.data.get("total")
        if total is not None and size != total:
            raise Permanent("length mismatch: %d bytes on disk, the server announced %d" % (size, total))
        digest = self.hasher.hexdigest()
        if self.expected and digest != self.expected:
            os.remove(self.part)
            raise Permanent(
                "sha256 mismatch: expected %s, got %s; the download was deleted, the file not created"
                % (self.expected, digest)
            )
        os.replace(self.part, self.final)
        _fsync_dir(self.dest)
        progress.set(state="done", done=size, total=size, sha256=digest, rate=0.0, error=None, finished=time.time())
        log("%s: done, %d bytes, sha256 %s" % (self.name, size, digest))

    def _hash_file(self, path, size):
        hasher = hashlib.sha256()
        self._hash_into(hasher, path, size)
        return hasher.hexdigest()

    def _hash_into(self, hasher, path, size):
        with open(path, "rb") as source:
            left = size
            while left:
                chunk = source.read(min(HASH_CHUNK, left))
                if not chunk:
                    break
                hasher.update(chunk)
                left -= len(chunk)


class PartWriter:
    """Writes buffers to the part in a thread of its own, hashing what it wrote; a few
    buffers of CHUNK bytes go round between it and the reader, so memory stays bounded.
    `written` counts the bytes on disk (and in the hash); after close() the part is
    flushed and fsynced, or `error` holds the OSError that stopped it."""

    BUFFERS = 8

    def __init__(self, path, hasher, have):
        self.hasher = hasher
        self.received = have
        self.written = have
        self._advised = have
        self.error = None
        self._free = queue.Queue()
        self._full = queue.Queue()
        for _ in range(self.BUFFERS):
            self._free.put(bytearray(CHUNK))
        self._path = path
        self._thread = threading.Thread(target=self._run, name="pypod-part-writer", daemon=True)
        self._thread.start()

    def free_buffer(self):
        """A buffer to read into; None once the writer has failed."""
        buffer = self._free.get()
        return None if self.error is not None else buffer

    def give_back(self, buffer):
        self._free.put(buffer)

    def put(self, buffer, count):
        self.received += count
        self._full.put((buffer, count))

    def close(self):
        self._full.put(None)
        self._thread.join()

    def _run(self):
        try:
            with open(self._path, "ab", buffering=0) as part:
                while True:
                    item = self._full.get()
                    if item is None:
                        break
                    buffer, count = item
                    if self.error is None:
                        self._write(part, memoryview(buffer)[:count])
                    self._free.put(buffer)
                if self.error is None:
                    os.fsync(part.fileno())
        except OSError as exc:
            self.error = exc
            # Drain, so a reader waiting for a buffer or the close wakes up.
            item = self._full.get()
            while item is not None:
                self._free.put(item[0])
                item = self._full.get()
        finally:
            self._free.put(bytearray(0))

    def _write(self, part, view):
        try:
            while view:
                done = part.write(view)
                self.hasher.update(view[:done])
                self.written += done
                view = view[done:]
        except OSError as exc:
            self.error = exc
            return
        if self.written - self._advised >= WRITEBACK_EVERY:
            # Starts the kernel's writeback of what came before (without waiting for it)
            # and lets those pages go: the final fsync has little left to wait for, and a
            # download of terabytes does not fill the node's page cache.
            with contextlib.suppress(AttributeError, OSError):
                os.posix_fadvise(part.fileno(), self._advised, self.written - self._advised, os.POSIX_FADV_DONTNEED)
            self._advised = self.written


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def run_plan(plan):
    """Fetch every file of the plan, `parallel` at once; returns the exit code."""
    dest = plan["dest"]
    os.makedirs(os.path.join(dest, STATE_DIR), exist_ok=True)
    fetches = [
        FileFetch(entry, dest, plan.get("retries", 5), plan.get("retry_wait", 1.0), plan.get("timeout", 60))
        for entry in plan["files"]
    ]
    for fetch in fetches:
        if fetch.progress.data["state"] != "done":
            fetch.progress.set(state="queued", error=None)
    log("fetching %d file(s) into %s, %d at once" % (len(fetches), dest, plan.get("parallel", 1)))
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, plan.get("parallel", 1))) as pool:
        results = list(pool.map(lambda fetch: fetch.run(), fetches))
    failed = [reason for reason in results if reason]
    if failed:
        log("%d of %d file(s) failed" % (len(failed), len(fetches)))
        return EXIT_FAILED
    log("all %d file(s) done" % len(fetches))
    return 0


def states(dest):
    """Every file's state under dest, for `pypod data status`."""
    folder = os.path.join(dest, STATE_DIR)
    found = []
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return found
    for name in names:
        if name.endswith(".json"):
            data = read_json(os.path.join(folder, name))
            if data is not None:
                found.append(data)
    return found


def listing(path):
    """`pypod data ls`: each entry of path with its size (a folder's: everything in it)."""
    entries = []
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        return {"path": path, "error": exc.strerror or str(exc), "entries": []}
    for name in names:
        full = os.path.join(path, name)
        try:
            info = os.lstat(full)
        except OSError:
            continue
        kind = "dir" if os.path.isdir(full) and not os.path.islink(full) else "file"
        size = _tree_size(full) if kind == "dir" else info.st_size
        entries.append({"name": name, "kind": kind, "size": size, "mtime": info.st_mtime})
    stat = os.statvfs(path)
    return {
        "path": path,
        "entries": entries,
        "capacity": stat.f_blocks * stat.f_frsize,
        "free": stat.f_bavail * stat.f_frsize,
    }


def _tree_size(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def main(argv):
    """fetch PLAN.json | states DEST | ls PATH: the last two print one JSON document."""
    if len(argv) == 2 and argv[0] == "fetch":
        with open(argv[1]) as source:
            plan = json.load(source)
        return run_plan(plan)
    if len(argv) == 2 and argv[0] == "states":
        sys.stdout.write(json.dumps({"states": states(argv[1])}) + "\n")
        return 0
    if len(argv) == 2 and argv[0] == "ls":
        sys.stdout.write(json.dumps(listing(argv[1])) + "\n")
        return 0
    sys.stderr.write("usage: agent.pyz data fetch PLAN.json | states DEST | ls PATH\n")
    return 2
