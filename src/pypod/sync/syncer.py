"""The live sync's local end: watches the folder, talks to the agent, and carries
out the engine's decisions on both sides.

One thread owns all state (`run`); the local watcher and the stream reader only
put messages into its inbox. Every operation is conditional on the version the
target is believed to hold, on both sides, so a change racing with a write is
never overwritten: the write is refused and the path decided again.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..agent.tree import (
    CHUNK,
    DIR,
    UNREADABLE,
    Excludes,
    Incoming,
    Tree,
    UnsafePathError,
    check_rel,
    index_digest,
    is_file_version,
)
from .engine import decide
from .excludes import LARGE_FILE_BYTES
from .link import BUNDLE_FILE_BYTES, AgentLink, LinkLost, Message

PING_EVERY_S = 2.0
SILENCE_LIMIT_S = 15.0  # no frame at all for this long: the stream is dead
HELLO_TIMEOUT_S = 120.0
RECONNECT_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)
SAVE_EVERY_S = 2.0
WATCH_STEP_MS = 5  # report local changes after this much quiet (watchfiles' step)
WATCH_DEBOUNCE_MS = 50
LOCAL = b"local"  # inbox kinds for the local watcher's events and its failure
WATCH_FAILED = b"watch-failed"
BYTES_CHANGED = "bytes did not match"  # the agent's reason when a file changed while sent
NO_PYTHON = ("executable file not found", "exit code 127", "No such file or directory")
GIVE_UP_AFTER = 6  # failed connections in a row before one answer
HOLD_BYTES = 128 << 20  # small files' bytes kept from their hashing to their upload, at most


@dataclass
class SyncHealth:
    """What `pypod ps` and the status line show."""

    state: str = "starting"  # starting, syncing, watching, reconnecting, stopped, failed
    detail: str = ""
    since: float = field(default_factory=time.time)
    last_synced: float = 0.0
    files: int = 0
    conflicts: int = 0
    problems: int = 0
    watcher: str = ""
    pid: int = field(default_factory=os.getpid)

    def line(self) -> str:
        parts = [self.state]
        if self.detail:
            parts.append(self.detail)
        parts.append(f"{self.files} paths")
        if self.conflicts:
            parts.append(f"{self.conflicts} conflicts kept")
        if self.problems:
            parts.append(f"{self.problems} not applied")
        return ", ".join(parts)


@dataclass
class Download:
    path: str
    expect: str | None  # what the local path must still hold for the download to land
    incoming: Incoming | None = None


Connect = Callable[["queue.Queue[Message]"], AgentLink]


class Syncer:
    def __init__(
        self,
        local_root: Path,
        remote_root: str,
        connect: Connect,
        excludes: dict[str, Any],
        state_file: Path | None = None,
        status_file: Path | None = None,
        cache_file: Path | None = None,
        initial: str = "local",
        report: Callable[[str], None] = lambda message: None,
        allow_inotify: bool = True,
    ) -> None:
        self.remote_root = remote_root
        self.connect = connect
        self.excludes_spec = excludes
        self.state_file = state_file
        self.status_file = status_file
        self.cache_file = cache_file  # the local stat cache, if kept apart from the state
        self.initial = initial
        self.report = report
        self.allow_inotify = allow_inotify
        self.tree = Tree(str(local_root), Excludes(excludes))
        self.tree.hold_budget = HOLD_BYTES
        self.inbox: queue.Queue[Message] = queue.Queue()
        self.health = SyncHealth()
        self.first_sync = threading.Event()  # set once both sides agree for the first time
        # Set once the pod's copy has been stat-ed path by path since this stream began: a
        # new agent does so before its index, an agent kept in the pod (handoff.py) just
        # after it, and says so in an E frame marked "checked"; until then, not "watching".
        self.pod_checked = threading.Event()
        self.stop_event = threading.Event()
        # Started by the first connection (see _session), and kept across reconnections.
        self._watcher = threading.Thread(target=self._watch_local, name="pypod-sync-watch", daemon=True)
        self.link: AgentLink | None = None
        self.local: dict[str, str] = {}
        self.remote: dict[str, str] = {}
        self.agreed: dict[str, str] | None = None
        self.dirty: set[str] = set()
        # Operations sent to the agent and not answered yet: path -> the version it expected there.
        self.pending: dict[str, str | None] = {}
        self.downloads: collections.deque[Download] = collections.deque()
        self.receiving: Download | None = None
        self.no_copy: set[str] = set()
        self.warned: set[str] = set()
        self._saved_at = 0.0
        self._state_changed = False
        self._load_state()

    # -- persistence --------------------------------------------------------------
    def _load_state(self) -> None:
        if self.cache_file is not None:
            with contextlib.suppress(OSError, ValueError):
                saved = json.loads(self.cache_file.read_text())
                if saved.get("local_root") == self.tree.root:
                    self.tree.cache.update(saved.get("cache", {}))
        if self.state_file is None:
            return
        try:
            saved = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return
        if saved.get("remote_root") == self.remote_root and saved.get("local_root") == self.tree.root:
            self.agreed = saved.get("agreed")
            self.tree.cache.update(saved.get("cache", {}))

    def save_state(self, force: bool = False) -> None:
        now = time.monotonic()
        due = force or now - self._saved_at > SAVE_EVERY_S
        if self.state_file is not None and self.agreed is not None and self._state_changed and due:
            cache = {p: self.tree.cache[p] for p in self.local if p in self.tree.cache}
            state = {"local_root": self.tree.root, "remote_root": self.remote_root, "agreed": self.agreed}
            if self.cache_file is None:
                state["cache"] = cache
            else:
                _atomic_write(self.cache_file, json.dumps({"local_root": self.tree.root, "cache": cache}))
            _atomic_write(self.state_file, json.dumps(state))
            self._saved_at, self._state_changed = now, False
        self._write_status()

    def _write_status(self) -> None:
        if self.status_file is not None:
            with contextlib.suppress(OSError):
                _atomic_write(self.status_file, json.dumps(self.health.__dict__))

    def set_state(self, state: str, detail: str = "") -> None:
        if (state, detail) != (self.health.state, self.health.detail):
            self.health.state, self.health.detail, self.health.since = state, detail, time.time()
            self._write_status()

    # -- the loop -------------------------------------------------------------------
    def run(self) -> None:
        """Sync until stop(); reconnects when the stream breaks. Gives up (state
        "failed") only when the agent cannot be started at all."""
        self._failures = 0
        try:
            while not self.stop_event.is_set():
                try:
                    self._session()
                    return
                except LinkLost as exc:
                    if self.stop_event.is_set():
                        return
                    reason = str(exc) or "the stream ended"
                    self._failures += 1
                    if any(sign in reason for sign in NO_PYTHON) and self._failures > 1:
                        reason = f"{reason}; sync needs python3 (3.8 or newer) in the pod's image"
                    if self._failures >= GIVE_UP_AFTER or (any(s in reason for s in NO_PYTHON) and self._failures > 1):
                        self.set_state("failed", reason)
                        self.report(f"sync: stopped: {reason}")
                        return
                    self.set_state("reconnecting", reason)
                    # Said after the pause, not before: when a REPL ends its pod ends too,
                    # and the session stops the sync within that pause; that is no news.
                    if self.stop_event.wait(RECONNECT_BACKOFF_S[min(self._failures - 1, len(RECONNECT_BACKOFF_S) - 1)]):
                        return
                    self.report(f"sync: connection lost ({reason}); reconnecting")
                finally:
                    if self.link is not None:
                        self.link.close()
                        self.link = None
        except Exception as exc:  # a bug or an unexpected OS error: say so, stop syncing
            self.set_state("failed", f"{type(exc).__name__}: {exc}")
            self.report(f"sync: stopped by an unexpected error: {type(exc).__name__}: {exc}")
        finally:
            with contextlib.suppress(OSError):
                self.save_state(force=True)
            if self.health.state != "failed":
                self.set_state("stopped")

    def busy(self) -> bool:
        """Whether anything is in flight either way (read from another thread: a hint for
        polling, as health is)."""
        return bool(self.pending or self.downloads or self.dirty or self.receiving)

    def stop(self) -> None:
        self.stop_event.set()
        self.inbox.put((b"", {"stop": True}, b""))

    def _session(self) -> None:
        self._reset_stream_state()
        self.link = self.connect(self.inbox)
        if self._watcher.ident is None:  # not started yet
            # After the agent's exec starts, not before: setting up the watches holds the
            # GIL for ~20 ms on 10,000 files, and the agent's start is the longer path.
            self._watcher.start()
        self.set_state("syncing", "connecting")
        hello: dict[str, Any] = {"root": self.remote_root, "excludes": self.excludes_spec, "create": True}
        hello["inotify"] = self.allow_inotify
        if self.agreed:
            hello["expect"] = index_digest(self.agreed)
        self.link.send(b"H", hello)
        self.link.flush()
        self._scan_while_connecting()
        self.dirty.update(self._undecided())
        self._plan()
        heard = time.monotonic()
        pinged = heard
        while not self.stop_event.is_set():
            if not self.busy():
                if not self.first_sync.is_set():
                    self.first_sync.set()
                if self.health.state != "watching" and self.pod_checked.is_set():
                    self.health.last_synced = time.time()
                    self.set_state("watching")
                self.health.files = len(self.local)
                self.save_state()
            try:
                message = self.inbox.get(timeout=PING_EVERY_S)
            except queue.Empty:
                message = None
            now = time.monotonic()
            while message is not None:
                if message[0] != LOCAL:
                    heard = now
                self._handle(message)
                try:
                    message = self.inbox.get_nowait()
                except queue.Empty:
                    message = None
            self._plan()
            if now - pinged > PING_EVERY_S:
                self.link.send(b"p", {})
                self.link.flush()
                pinged = now
            if now - heard > SILENCE_LIMIT_S:
                raise LinkLost(f"no answer from the pod for {SILENCE_LIMIT_S:.0f}s")

    def _scan_while_connecting(self) -> None:
        """Scan the folder while the agent starts and scans the pod's copy, then take in
        the agent's index. Once the index is in, what the scan finds that the pod has
        never had goes out as it is found: hashing here overlaps writing there."""
        indexed = False
        held_back: list[Message] = []  # what came before the index: handled after the scan
        found: dict[str, str] = {}  # what the scan found before the index came, in its order
        by_version: dict[str, str] = {}

        def listed(entries: dict[str, str]) -> None:
            nonlocal indexed, by_version
            if indexed:
                self._upload_new(entries, by_version)
                return
            found.update(entries)
            while True:
                try:
                    message = self.inbox.get_nowait()
                except queue.Empty:
                    return
                if message[0] == b"I":
                    break
                held_back.append(message)
            self._take_index(message[1])
            indexed = True
            by_version = {v: p for p, v in self.remote.items() if is_file_version(v)}
            self._upload_new(found, by_version)

        self.tree.new_batch()
        self._readable(self.tree.refresh({""}, self.local, on_listed=listed), self.local, "here")
        for message in held_back:
            self._handle(message)
        if not indexed:
            self._take_index(self._wait_for(b"I", HELLO_TIMEOUT_S)[1])

    def _take_index(self, index: dict[str, Any]) -> None:
        self._failures = 0
        self.health.watcher = index.get("watcher", "")
        if not index.get("checking"):
            self.pod_checked.set()
        if index.get("same") and self.agreed:
            self.remote = dict(self.agreed)  # the pod holds what was agreed, no more and no less
            return
        self.remote = {}
        for path, version in index.get("entries", {}).items():
            if self._acceptable_remote(path) and not self._unreadable(path, version, self.remote, "in the pod"):
                self.remote[path] = version

    def _upload_new(self, entries: dict[str, str], by_version: dict[str, str]) -> None:
        """Send the paths of one listing that neither the pod nor the agreed state has,
        under a directory the pod has (or is being sent): every decision would upload
        them, whatever the initial mode. The rest wait for the whole scan."""
        remote, agreed = self.remote, self.agreed or {}
        for path, version in entries.items():
            if version == UNREADABLE or path in remote or path in agreed or path in self.pending:
                continue
            parent = path.rpartition("/")[0]
            if parent and remote.get(parent) != DIR and not (parent in self.pending and self.local.get(parent) == DIR):
                continue
            self.set_state("syncing", "sending")  # a no-op once it says so
            self.local[path] = version  # as the scan records it when it ends
            self._upload(path, by_version)

    def _undecided(self) -> set[str]:
        """The paths to decide on (re)connecting: all of them on a first sync; after
        that, those where the two sides and the agreed version are not all one."""
        local, remote, agreed = self.local, self.remote, self.agreed
        if agreed is None:
            return {*local, *remote}
        return {p for p in (*local, *remote, *agreed) if not local.get(p) == remote.get(p) == agreed.get(p)}

    def _reset_stream_state(self) -> None:
        """What the previous stream had in flight is void; the pod's index will say
        what took effect."""
        if self.receiving is not None and self.receiving.incoming is not None:
            self.receiving.incoming.abort()
        self.pending.clear()
        self.downloads.clear()
        self.receiving = None
        self.pod_checked.clear()
        kept = []
        while True:
            try:
                message = self.inbox.get_nowait()
            except queue.Empty:
                break
            if message[0] == WATCH_FAILED:
                kept.append(message)
        for message in kept:
            self.inbox.put(message)

    def _wait_for(self, kind: bytes, timeout: float) -> Message:
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self.inbox.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise LinkLost(f"the sync agent did not answer within {timeout:.0f}s") from None
            if message[0] == kind:
                return message
            if self.stop_event.is_set():
                raise LinkLost("stopped")
            self._handle(message)

    # -- messages -----------------------------------------------------------------
    def _handle(self, message: Message) -> None:
        kind, meta, data = message
        if kind == LOCAL:
            self.tree.new_batch()
            changes = self._readable(self.tree.refresh(meta["paths"], self.local), self.local, "here")
            self.dirty.update(changes)
            for path, version in changes.items():
                self._warn_large(path, version)
        elif kind == WATCH_FAILED:
            self.report(f"sync: {meta['message']}")
            self.set_state("failed", meta["message"])
            self.stop_event.set()
        elif kind == b"":
            if meta.get("stop"):
                return
            raise LinkLost(meta.get("reason") or "the stream ended")
        elif kind == b"E":
            for path, version in meta["changes"].items():
                if not self._acceptable_remote(path) or self._unreadable(path, version, self.remote, "in the pod"):
                    continue
                if version is None:
                    self.remote.pop(path, None)
                else:
                    self.remote[path] = version
                self.dirty.add(path)
            if meta.get("checked"):
                self.pod_checked.set()
        elif kind == b"A":
            self._results(meta)
        elif kind == b"F":
            self._download_start(meta, data)
        elif kind == b"D":
            self._download_chunk(meta, data)
        elif kind == b"N":
            self.report(f"sync: {meta.get('message', '')}")
            if meta.get("fatal"):
                raise LinkLost(meta.get("message", "the sync agent failed"))
        elif kind == b"p":
            pass
        else:
            raise LinkLost(f"unexpected frame {kind!r} from the pod")

    def _unreadable(self, path: str, version: str | None, versions: dict[str, str], where: str) -> bool:
        """A file that exists but cannot be read is neither changed nor deleted: it keeps
        the version last agreed, and nothing is decided for it."""
        if version != UNREADABLE:
            return False
        self._problem(path, f"cannot be read {where}; it is left alone")
        self._set(versions, path, (self.agreed or {}).get(path))
        return True

    def _readable(self, changes: dict[str, str | None], versions: dict[str, str], where: str) -> dict:
        return {p: v for p, v in changes.items() if not self._unreadable(p, v, versions, where)}

    def _acceptable_remote(self, path: str) -> bool:
        """The pod names a path: refuse what could not be written here anyway."""
        try:
            check_rel(path)
        except UnsafePathError as exc:
            self._problem(path, str(exc))
            return False
        return not self.tree.excludes.excluded(path)

    def _results(self, meta: dict[str, Any]) -> None:
        for path, version in meta.get("done", []):
            self.pending.pop(path, None)
            self._set(self.remote, path, version)
            self._agree(path, version)
        for path, found, reason in meta.get("rejected", []):
            was_pending = path in self.pending
            expect = self.pending.pop(path, None)
            self._set(self.remote, path, found)
            if reason == "source":
                self.no_copy.add(path)
                self.dirty.add(path)
            elif reason == BYTES_CHANGED:  # the file changed while it was sent (or the cache was stale)
                self.tree.cache.pop(path, None)
                self.dirty.update(self.tree.refresh([path], self.local) or {path: None})
            elif not was_pending or found != expect:
                self.dirty.add(path)  # it changed in the pod meanwhile: decide again
            else:
                self._problem(path, f"not applied in the pod: {reason}")

    # -- deciding and acting --------------------------------------------------------
    def _plan(self) -> None:
        """Decide what is ready and send it, as one write."""
        self._decide_and_act()
        if self.link is not None:
            self.link.flush()

    def _decide_and_act(self) -> None:
        try:
            self._decide_and_act_on_ready()
        finally:
            self.tree.release_held()  # what was not sent now is read again when it is

    def _decide_and_act_on_ready(self) -> None:
        self.tree.new_batch()
        ready = {p for p in self.dirty if p not in self.pending}
        if ready and self.downloads:
            ready -= {d.path for d in self.downloads}
        if not ready or self.link is None:
            return
        self.dirty -= ready

        def part(versions: dict[str, str]) -> dict[str, str]:
            return {p: versions[p] for p in ready if p in versions}

        first = self.agreed is None
        plan = decide(
            None if first else part(self.agreed or {}),
            part(self.local),
            part(self.remote),
            stamp=time.strftime("%Y%m%d-%H%M%S"),
            initial=self.initial,
        )
        if first:
            self.agreed = {}
        for path in ready:
            if self.local.get(path) == self.remote.get(path):
                self._agree(path, self.local.get(path))
        if plan.empty:
            return
        self.set_state("syncing", f"{len(plan.upload)} up, {len(plan.download)} down")
        # A conflict: the pod first keeps its version as the copy (a hard link, in the same
        # step as the put, so no stream failure can lose it); the copy then comes back
        # like any file made in the pod.
        keep = dict(plan.conflicts)
        for path, copy in plan.conflicts:
            self.health.conflicts += 1
            self.report(f"sync: conflict on {path}: both sides changed it; the pod's version is kept as {copy}")
        by_version = {v: p for p, v in self.remote.items() if is_file_version(v)}
        dir_to_file = {p for p in plan.upload if self.remote.get(p) == DIR and self.local.get(p) != DIR}
        first = [d for d in plan.delete_remote if any(d.startswith(p + "/") for p in dir_to_file)]
        for path in sorted(first, reverse=True):  # a directory's contents go before a file takes its place
            self._delete_remote(path)
        for path in plan.upload:
            self._upload(path, by_version, keep.get(path))
        local_by_version = {v: p for p, v in self.local.items() if is_file_version(v)}
        for path in plan.download:
            self._download(path, local_by_version)
        for path in sorted(plan.delete_local, reverse=True):
            self._delete_local(path)
        for path in sorted(set(plan.delete_remote) - set(first), reverse=True):
            self._delete_remote(path)

    def _delete_remote(self, path: str) -> None:
        assert self.link is not None
        expect = self.remote.get(path)
        self.pending[path] = expect
        self.link.send(b"X", {"path": path, "expect": expect})

    def _upload(self, path: str, by_version: dict[str, str], keep_as: str | None = None) -> None:
        assert self.link is not None
        version, expect = self.local[path], self.remote.get(path)
        self.pending[path] = expect
        op = {"path": path, "version": version, "expect": expect, "keep_as": keep_as}
        if not is_file_version(version):
            self.link.send(b"P", op)
            return
        source = by_version.get(version)
        if source is not None and source != path and path not in self.no_copy:
            self.link.send(b"K", {**op, "source": source})
            return
        self.no_copy.discard(path)
        held = self.tree.take_held(path, version)
        if held is not None:  # read once, when it was hashed: these bytes are `version`
            self.link.send_file(path, version, expect, keep_as, held)
            return
        open_stream = False
        try:
            with open(self.tree.path(path), "rb") as handle:
                block = handle.read(CHUNK)
                if len(block) <= BUNDLE_FILE_BYTES:  # the whole file (a short read is its end)
                    self.link.send_file(path, version, expect, keep_as, block)
                    return
                size = os.fstat(handle.fileno()).st_size
                more = size > CHUNK
                self.link.send(b"P", {**op, "size": size, "more": more}, block)
                open_stream = more
                while more:
                    block = handle.read(CHUNK)
                    more = len(block) == CHUNK
                    self.link.send(b"D", {"more": more}, block)
                    open_stream = more
        except (OSError, UnsafePathError):
            # Gone or changing under us. An open upload is ended short: the agent refuses it.
            if open_stream:
                self.link.send(b"D", {"more": False}, b"")
            else:
                self.pending.pop(path, None)
            self.dirty.update(self.tree.refresh([path], self.local) or {path: None})

    def _download(self, path: str, by_version: dict[str, str]) -> None:
        version, expect = self.remote[path], self.local.get(path)
        if is_file_version(version):
            local_copy = by_version.get(version)
            temp = self.tree.copy_to_temp(local_copy, version) if local_copy and local_copy != path else None
            if temp is None:
                self._request(Download(path, expect))
                return
        else:
            temp = None
        try:
            found = self.tree.commit(path, version, expect, temp)
        except UnsafePathError as exc:
            self._problem(path, str(exc))
            return
        self._settle_local(path, version, found, expect)

    def _request(self, download: Download) -> None:
        assert self.link is not None
        self.downloads.append(download)
        self.link.send(b"G", {"path": download.path})

    def _download_start(self, meta: dict[str, Any], data: bytes) -> None:
        if not self.downloads or self.downloads[0].path != meta.get("path"):
            raise LinkLost("the pod sent a file that was not asked for")
        download = self.downloads[0]
        version = meta.get("version")
        if not is_file_version(version):
            self.downloads.popleft()
            if not self._unreadable(download.path, version, self.remote, "in the pod"):
                self._set(self.remote, download.path, version)
                self.dirty.add(download.path)
            return
        try:
            download.incoming = self.tree.begin(download.path, version, int(meta["size"]))
        except (UnsafePathError, OSError) as exc:
            self._problem(download.path, str(exc))
            download.incoming = None
        self.receiving = download
        self._download_chunk(meta, data)

    def _download_chunk(self, meta: dict[str, Any], data: bytes) -> None:
        download = self.receiving
        if download is None:
            raise LinkLost("the pod sent file bytes that were not asked for")
        incoming = download.incoming
        if incoming is not None:
            incoming.write(data)
        if meta.get("more"):
            return
        self.receiving = None
        self.downloads.popleft()
        if incoming is None:
            return
        if incoming.finish() != incoming.version[1:]:
            incoming.abort()  # it changed while it was read: its event follows
            self.dirty.add(download.path)
            return
        try:
            found = self.tree.commit(download.path, incoming.version, download.expect, incoming.temp)
        except (OSError, UnsafePathError) as exc:
            incoming.abort()
            self._problem(download.path, str(exc))
            return
        self._settle_local(download.path, incoming.version, found, download.expect)

    def _settle_local(self, path: str, wanted: str, found: str | None, expect: str | None) -> None:
        self._set(self.local, path, found)
        if found == wanted:
            self._agree(path, found)
        elif found != expect:
            self.dirty.add(path)  # it changed here meanwhile: decide again
        else:
            self._problem(path, "could not be written here (see the folder's permissions and space)")

    def _delete_local(self, path: str) -> None:
        expect = self.local.get(path)
        try:
            found = self.tree.remove(path, expect)
        except UnsafePathError as exc:
            self._problem(path, str(exc))
            return
        self._set(self.local, path, found)
        if found is None:
            self._agree(path, None)
        elif found != expect:
            self.dirty.add(path)

    # -- bookkeeping ----------------------------------------------------------------
    @staticmethod
    def _set(versions: dict[str, str], path: str, version: str | None) -> None:
        if version is None:
            versions.pop(path, None)
        else:
            versions[path] = version

    def _agree(self, path: str, version: str | None) -> None:
        if self.agreed is None:
            self.agreed = {}
        if self.agreed.get(path) != version:
            self._set(self.agreed, path, version)
            self._state_changed = True

    def _problem(self, path: str, message: str) -> None:
        self.health.problems += 1
        if path not in self.warned:
            self.warned.add(path)
            self.report(f"sync: {path}: {message}")

    def _warn_large(self, path: str, version: str | None) -> None:
        if version is None or not is_file_version(version) or f"large:{path}" in self.warned:
            return
        with contextlib.suppress(OSError, UnsafePathError):
            size = os.lstat(self.tree.path(path)).st_size
            if size > LARGE_FILE_BYTES:
                self.warned.add(f"large:{path}")
                self.report(f"sync: {path} is {size / 1e6:.0f} MB; add it to .pypodignore if it need not be synced")

    # -- the local watcher ------------------------------------------------------------
    def _watch_local(self) -> None:
        try:
            self._watch_local_changes()
        except Exception as exc:  # the loop must hear of it: without a watcher, nothing syncs
            self.inbox.put((WATCH_FAILED, {"message": f"the local folder watcher failed: {exc}"}, b""))

    def _watch_local_changes(self) -> None:
        import watchfiles

        root = self.tree.root
        prefix = root + os.sep
        watching = False
        for changes in watchfiles.watch(
            root,
            # The sync's own excludes decide (below), not watchfiles' default filter, which
            # drops node_modules/, .idea/, .tox/, *.swp and more that the sync does carry.
            watch_filter=None,
            stop_event=self.stop_event,
            debounce=WATCH_DEBOUNCE_MS,
            step=WATCH_STEP_MS,
            rust_timeout=500,
            yield_on_timeout=True,
            raise_interrupt=False,
        ):
            if not watching:
                # The watches are up (this is their first answer): an edit made after the
                # first scan passed its file but before they were up is found by one more.
                watching = True
                self.inbox.put((LOCAL, {"paths": {""}}, b""))
            paths = set()
            for _change, full in changes:
                if full.startswith(prefix):
                    rel = full[len(prefix) :].replace(os.sep, "/")
                    if not self.tree.excludes.excluded(rel):
                        paths.add(rel)
            if paths:
                self.inbox.put((LOCAL, {"paths": paths}, b""))


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(text)
    os.replace(temp, path)
