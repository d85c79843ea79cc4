"""The pod's side of the live folder sync. Standard library only; Python >= 3.8.

pypod decides; this side reports and obeys. It answers ``H`` (hello: root,
excludes, and the index digest pypod expects) with ``I`` (every synced path and
its version, or "same" when they match that digest), then reports changes
in the pod's copy as ``E`` frames and applies pypod's operations:

  ``P`` put a file (its bytes in this and following ``D`` frames), a directory or
        a link, if the path still holds the version pypod expects;
  ``B`` a bundle of small files, whole: [[path, version, expect, keep_as, size]] and
        their bytes one after another, each put as by ``P``;
  ``K`` the same from another path's bytes here (a rename: nothing is transferred);
  ``X`` delete, if the path still holds the expected version;
  ``G`` send a file back: ``F`` then ``D`` frames; ``p`` ping, answered with ``p``.

Results come back batched in ``A`` frames, {"done": [[path, version]],
"rejected": [[path, version found, reason]]}. Every path is checked here, by the
receiver, against the root and the excludes.
"""

import contextlib
import hashlib
import json
import os
import select
import sys
import time

from . import handoff
from .frames import FrameReader, meta_frame, split_meta, widen_pipe
from .tmpdir import agent_dir
from .tree import (
    CHUNK,
    UNREADABLE,
    Excludes,
    Tree,
    UnsafePathError,
    blob_id,
    index_digest,
    is_file_version,
    write_all,
)
from .watcher import RESCAN, PollingWatcher, make_watcher

BYTES_CHANGED = "bytes did not match"
SETTLE_S = 0.005  # wait this long for more events before reporting a burst
MAX_SETTLE_S = 0.05
MAX_PENDING = 100_000
BUSY_SETTLE_S = 0.5  # while pypod's operations stream in, report at most this often


def _cache_file(root):
    key = hashlib.sha1(root.encode("utf-8", "surrogateescape")).hexdigest()
    return os.path.join(agent_dir(), "sync-cache-%s.json" % key)


class Receiving:
    """A put whose bytes are still arriving (incoming None: they are being skipped)."""

    def __init__(self, path, expect, incoming):
        self.path, self.expect, self.incoming = path, expect, incoming
        self.keep_as = None


class SyncAgent:
    def __init__(self, out_fd):
        self.out_fd = out_fd
        self.tree = None
        self.known = {}
        self.watcher = None
        self.receiving = None
        self.done = []
        self.rejected = []
        self.outbox = bytearray()
        self.saved_cache = None
        self.watcher_kind = ""
        self.pending = set()  # what the watches named while no one was connected (linger)

    # -- output -----------------------------------------------------------------
    def emit(self, data):
        """Queue bytes for pypod; drain() writes them, in as few writes as possible."""
        self.outbox += data
        if len(self.outbox) >= CHUNK:
            self.drain()

    def drain(self):
        self.flush()
        if self.outbox:
            data, self.outbox = bytes(self.outbox), bytearray()
            write_all(self.out_fd, data)

    def flush(self):
        if self.done or self.rejected:
            done, rejected = self.done, self.rejected
            self.done, self.rejected = [], []
            self.emit(meta_frame(b"A", {"done": done, "rejected": rejected}))

    def send(self, kind, meta, data=b""):
        self.flush()  # results first: frames leave in the order things happened here
        self.emit(meta_frame(kind, meta, data))

    def settle(self, path, wanted, found, reason="changed in the pod"):
        """Record the outcome of an operation that wanted `path` to hold `wanted`."""
        if found:
            self.known[path] = found
        else:
            self.known.pop(path, None)
        if found == wanted:
            self.done.append([path, found])
        else:
            self.rejected.append([path, found, reason])

    # -- requests -----------------------------------------------------------------
    def handle(self, kind, meta, data):
        if kind == b"p":
            self.send(b"p", {})
        elif kind == b"H":
            self.hello(meta)
        elif self.tree is None:
            raise ValueError("frame %r before hello" % kind)
        elif kind == b"B":
            self.put_bundle(meta, data)
        elif kind == b"P":
            self.put(meta, data)
        elif kind == b"D":
            self.chunk(meta, data)
        elif kind == b"K":
            self.copy(meta)
        elif kind == b"X":
            path = meta["path"]
            try:
                self.settle(path, None, self.tree.remove(path, meta.get("expect")))
            except (UnsafePathError, OSError) as exc:
                self.settle(path, None, self.tree.version(path), str(exc))
        elif kind == b"G":
            self.get(meta["path"])
        else:
            raise ValueError("unknown frame %r" % kind)

    def hello(self, meta):
        root = os.path.abspath(meta["root"])
        if self.tree is not None:  # a lingering copy (handoff.py), handed a new connection
            if self._kept_fits(root, meta):
                self._answer_from_kept(meta)
                return
            self.watcher.close()  # kept for another root or other excludes: start afresh
            self.tree, self.watcher, self.pending = None, None, set()
        if meta.get("create"):
            os.makedirs(root, exist_ok=True)
        cache = {}
        with contextlib.suppress(OSError, ValueError), open(_cache_file(root)) as handle:
            cache = json.load(handle)
        self.saved_cache = dict(cache)
        self.tree = Tree(root, Excludes(meta["excludes"]), cache)
        # Each directory is watched, then listed: an edit during the scan is reported, not missed.
        self.watcher, self.watcher_kind = make_watcher(
            self.tree.root, self.tree.excludes, meta.get("inotify", True), False
        )
        try:
            self.known = self.tree.scan(before_listing=getattr(self.watcher, "watch", None))
        except OSError as exc:  # e.g. out of inotify watches (fs.inotify.max_user_watches)
            self.watcher.close()
            self.watcher = PollingWatcher()
            self.watcher_kind = "polling (inotify: %s)" % exc
            self.known = self.tree.scan()
        self.tree.on_linked = self.watcher.expect
        self._answer(meta, {})

    def _kept_fits(self, root, meta):
        """Whether this copy's watches answer for `meta`'s folder: the same root and
        excludes, and inotify still watching the very directory at the root."""
        return (
            root == self.tree.root
            and meta["excludes"] == self.tree.excludes.spec
            and meta.get("inotify", True)
            and self._root_watched()
        )

    def _root_watched(self):
        """inotify watches the directory that is at the root now (not one moved away)."""
        try:
            st = os.lstat(self.tree.root)
        except OSError:
            return False
        return self.watcher.holds("", (st.st_dev, st.st_ino))

    def _answer_from_kept(self, meta):
        """The index as the watches kept it, with what they named since re-examined, marked
        "checking"; then the stat of every path a new agent makes before it answers, whose
        findings follow in an E frame marked "checked" (empty when there are none). A watch
        misses a few kinds of change (a truncate, a write through a hard link from
        elsewhere); the stat does not, and pypod's conditional writes hold meanwhile: an
        upload over a version the pod no longer has is refused."""
        self.tree.new_batch()
        self.note(self.watcher.read())
        if self.pending:
            changed, self.pending = self.pending, set()
            self.tree.refresh(changed, self.known)
        self._answer(meta, {"kept": True, "checking": True, "watcher": self.watcher_kind + " (kept)"})
        self.report({RESCAN}, checked=True)

    def note(self, paths):
        """Paths the watches named while no one was connected, to re-examine at the next
        hello; past MAX_PENDING, one rescan of everything costs less than the set."""
        self.pending |= paths
        if len(self.pending) > MAX_PENDING:
            self.pending = {RESCAN}

    def _answer(self, meta, answer):
        answer.setdefault("watcher", self.watcher_kind)
        answer["python"] = sys.version.split()[0]
        if meta.get("expect") and index_digest(self.known) == meta["expect"]:
            answer["same"] = True  # as pypod expects: no need to send 10,000 entries back
        else:
            answer["entries"] = self.known
        self.send(b"I", answer)
        self.drain()  # the index leaves now: pypod waits for it, not for the cache below
        self.save_cache()

    def save_cache(self):
        if self.tree is None:
            return
        with contextlib.suppress(OSError):
            os.makedirs(agent_dir(), exist_ok=True)
            temp = _cache_file(self.tree.root) + ".%d" % os.getpid()
            entries = {p: self.tree.cache[p] for p in self.known if p in self.tree.cache}
            if entries == self.saved_cache:
                return  # a resync that changed nothing writes nothing
            # dumps, not dump: dump streams through the pure-Python encoder, 10x slower on 10,000 paths.
            text = json.dumps(entries)
            with open(temp, "w") as handle:
                handle.write(text)
            os.replace(temp, _cache_file(self.tree.root))
            self.saved_cache = entries

    def put(self, meta, data):
        path, version, expect = meta["path"], meta["version"], meta.get("expect")
        try:
            if not is_file_version(version):
                self.settle(path, version, self.tree.commit(path, version, expect, None, meta.get("keep_as")))
                return
            incoming = self.tree.begin(path, version, meta["size"])
        except (UnsafePathError, OSError) as exc:
            self.settle(path, version, self.tree.version(path), str(exc))
            incoming = None
        self.receiving = Receiving(path, expect, incoming)
        self.receiving.keep_as = meta.get("keep_as")
        self.chunk(meta, data)

    def put_bundle(self, meta, data):
        view = memoryview(data)
        offset = 0
        for path, version, expect, keep_as, size in meta["files"]:
            body = view[offset : offset + size]
            offset += size
            try:
                if not is_file_version(version):
                    raise UnsafePathError("refusing %r: a bundle carries files only" % (path,))
                if blob_id(body) != version[1:]:
                    self.settle(path, version, self.tree.version(path), BYTES_CHANGED)
                    continue
                found = self.tree.put_bytes(path, version, expect, body, keep_as)
            except (UnsafePathError, OSError) as exc:
                self.settle(path, version, self.tree.version(path), str(exc))
                continue
            self.settle(path, version, found)

    def chunk(self, meta, data):
        receiving = self.receiving
        if receiving is None:
            raise ValueError("file bytes with no put before them")
        incoming = receiving.incoming
        if incoming is not None:
            try:
                incoming.write(data)
            except OSError as exc:  # e.g. a full disk: refuse this file, keep serving
                incoming.abort()
                receiving.incoming = incoming = None
                self.settle(receiving.path, None, self.tree.version(receiving.path), "cannot write: %s" % exc.strerror)
        if meta.get("more"):
            return
        self.receiving = None
        if incoming is None:
            return
        try:
            if incoming.finish() != incoming.version[1:]:
                incoming.abort()
                self.settle(incoming.rel, incoming.version, self.tree.version(incoming.rel), BYTES_CHANGED)
                return
            found = self.tree.commit(incoming.rel, incoming.version, receiving.expect, incoming.temp, receiving.keep_as)
        except (OSError, UnsafePathError) as exc:
            incoming.abort()
            self.settle(incoming.rel, incoming.version, self.tree.version(incoming.rel), str(exc))
            return
        self.settle(incoming.rel, incoming.version, found)

    def copy(self, meta):
        path, version, source = meta["path"], meta["version"], meta["source"]
        try:
            self.tree.check_incoming(path, version)
            temp = self.tree.copy_to_temp(source, version)
            if temp is None:
                self.settle(path, version, self.tree.version(path), "source")
                return
            self.settle(path, version, self.tree.commit(path, version, meta.get("expect"), temp, meta.get("keep_as")))
        except (UnsafePathError, OSError) as exc:
            self.settle(path, version, self.tree.version(path), str(exc))

    def get(self, path):
        """Stream a file's bytes back, with its version hashed afresh (a stale stat cache
        must not name other bytes); pypod checks the bytes against it."""
        self.flush()
        self.tree.cache.pop(path, None)
        sent_first = False
        try:
            version = self.tree.version(path)
            if not is_file_version(version):
                self.send(b"F", {"path": path, "version": version, "size": 0, "more": False})
                return
            full = self.tree.path(path)
            size = os.lstat(full).st_size
            with open(full, "rb") as handle:
                block = handle.read(CHUNK)
                more = size > CHUNK
                self.send(b"F", {"path": path, "version": version, "size": size, "more": more}, block)
                sent_first = True
                while more:
                    block = handle.read(CHUNK)
                    more = len(block) == CHUNK
                    self.emit(meta_frame(b"D", {"more": more}, block))
        except (OSError, UnsafePathError):
            if sent_first:  # end the stream short: pypod sees the size is wrong and asks again
                self.emit(meta_frame(b"D", {"more": False}, b""))
            else:
                self.send(b"F", {"path": path, "version": UNREADABLE, "size": 0, "more": False})

    # -- connections ----------------------------------------------------------------
    def run_session(self, in_fd):
        """Serve one connection until its stdin closes; 0, or 1 after a fatal error."""
        return _Session(self, in_fd).run()

    def linger(self, path, seconds):
        """Leave a copy of this agent listening at `path` for `seconds` after each of its
        connections (see handoff.py); return at once in this process. Only with inotify
        on the root, and where it sees every change made to the folder."""
        if self.tree is None or not self._root_watched():  # (never for a polling watcher)
            return
        if not self._watches_see_all() or handoff.someone_listens(path):
            return  # (another copy keeps this folder already)
        if os.fork():
            return
        listener = None
        try:
            # Listening from this process (an exec checks who listens: SO_PEERCRED names
            # the process that called listen, and the one that forked is gone), and before
            # the exec ends, so the next one finds it.
            listener = handoff.Listener.bind(path)
            handoff.leave_the_exec()
            self.tree.new_batch()  # no directory of the folder held open while it waits
            while listener is not None:
                taken = self._wait_for_connection(listener, seconds)
                listener.close()  # one connection at a time
                if taken is None:
                    break
                conn, in_fd, out_fd = taken
                self.out_fd = out_fd
                try:
                    code = self.run_session(in_fd)
                    self.tree.new_batch()
                finally:
                    os.close(in_fd)
                    os.close(out_fd)
                    handoff.done(conn)  # after the streams: the exec that handed them over ends now
                listener = handoff.Listener.bind(path) if code == 0 else None
        finally:
            if listener is not None:
                listener.close()  # (after an error: the name is free again)
            os._exit(0)

    def _watches_see_all(self):
        """Whether every change to the folder passes through this kernel: on a network or
        FUSE filesystem other machines write unseen, and only a new scan finds that."""
        from .mounts import parse_mountinfo, shared_mounts_under

        try:
            with open("/proc/self/mountinfo") as handle:
                mounts = parse_mountinfo(handle.read())
        except OSError:
            return False
        return bool(mounts) and not shared_mounts_under(mounts, os.path.realpath(self.tree.root))

    def _wait_for_connection(self, listener, seconds):
        """The next connection handed over; None after `seconds` without one, or once the
        root is gone or moved. What the watches name meanwhile is noted (and new
        directories get watches), for the next hello."""
        deadline = time.monotonic() + seconds
        watch_fd = self.watcher.fileno()
        while self._root_watched():
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            readable, _, _ = select.select([listener.fileno(), watch_fd], [], [], left)
            if watch_fd in readable:
                self.note(self.watcher.read())
            if listener.fileno() in readable:
                taken = listener.take()
                if taken is not None:
                    return taken
        return None

    # -- events -------------------------------------------------------------------
    def report(self, paths, checked=False):
        """Send what changed at `paths`; `checked` marks the stat of every path that a kept
        copy makes after its index, sent even when nothing changed."""
        self.tree.new_batch()
        changes = self.tree.refresh(paths, self.known)
        if checked:
            self.send(b"E", {"changes": changes, "checked": True})
        elif changes:
            self.send(b"E", {"changes": changes})


def serve(in_fd=0, out_fd=1, linger=None):
    """Run until stdin closes (pypod went away or the stream broke). With `linger`
    ((socket path, seconds)), then leave a copy behind for the next connection."""
    agent = SyncAgent(out_fd)
    code = agent.run_session(in_fd)
    if linger is not None and code == 0:
        agent.linger(*linger)
    return code


class _Session:
    """The serving loop of one connection: frames in, watcher events, results out."""

    def __init__(self, agent, in_fd):
        self.agent, self.in_fd = agent, in_fd
        self.reader = FrameReader()
        self.pending = set()  # paths the watcher named, not yet re-examined
        self.first_pending = self.last_event = self.next_poll = 0.0

    def run(self):
        agent, in_fd = self.agent, self.in_fd
        widen_pipe(in_fd)
        widen_pipe(agent.out_fd)
        try:
            while self.turn():
                pass
            return 0
        except (BrokenPipeError, ConnectionResetError):
            return 0
        except Exception as exc:  # reported to pypod, which shows it
            with contextlib.suppress(OSError):
                agent.outbox = bytearray()
                agent.send(b"N", {"fatal": True, "message": "sync agent failed: %s: %s" % (type(exc).__name__, exc)})
                agent.drain()
            return 1
        finally:
            if agent.receiving is not None and agent.receiving.incoming is not None:
                agent.receiving.incoming.abort()
            agent.receiving = None
            agent.save_cache()

    def turn(self):
        """One wait and what it brought; False once stdin has closed."""
        agent, in_fd = self.agent, self.in_fd
        watcher = agent.watcher
        watch_fd = watcher.fileno() if watcher is not None else None
        now = time.monotonic()
        timeout = 5.0
        if self.pending:
            timeout = max(0.0, min(self.last_event + SETTLE_S, self.first_pending + MAX_SETTLE_S) - now)
        elif watcher is not None and watch_fd is None:
            timeout = max(0.0, self.next_poll - now)
        readable, _, _ = select.select([in_fd] + ([watch_fd] if watch_fd is not None else []), [], [], timeout)
        busy = in_fd in readable
        if busy:
            data = os.read(in_fd, CHUNK + 4096)
            if not data:
                return False
            if agent.tree is not None:
                agent.tree.new_batch()
            for kind, payload in self.reader.feed(data):
                meta, body = split_meta(payload) if payload else ({}, b"")
                agent.handle(kind, meta, body)
        now = time.monotonic()
        if watcher is not None:
            fresh = set()
            if watch_fd is not None and watch_fd in readable:
                fresh = watcher.read()
            elif watch_fd is None and now >= self.next_poll:
                fresh = {RESCAN}
                self.next_poll = now + watcher.interval
            if fresh:
                self.first_pending = self.first_pending if self.pending else now
                self.last_event = now
                self.pending |= fresh
            # Mostly the echo of our own writes while pypod streams: each report
            # re-examines what it names, so fewer, larger ones cost less.
            settled = now - self.last_event >= SETTLE_S or now - self.first_pending >= MAX_SETTLE_S
            if busy and now - self.first_pending < BUSY_SETTLE_S:
                settled = False
            if self.pending and (settled or watch_fd is None):
                paths, self.pending = self.pending, set()
                agent.report(paths)
        agent.drain()
        return True
