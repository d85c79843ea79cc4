"""Which paths of a tree changed: inotify through ctypes where the kernel and libc
offer it, else a periodic rescan. Standard library only; Python >= 3.8.

Both return relative paths to re-examine; "" means "rescan everything" (after
an inotify queue overflow, or on every poll).
"""

import ctypes
import errno
import os
import struct

IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ISDIR = 0x40000000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = 0o2000000
# Not IN_MODIFY: a write in progress is not worth hashing; its close is.
MASK = (
    IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
)
EVENT = struct.Struct("iIII")
RESCAN = ""
MAX_OWN = 100_000  # expectations kept per directory; dropping them costs only re-examinations


class InotifyWatcher:
    """One inotify instance with a watch on every synced directory."""

    def __init__(self, root, excludes, watch_tree=True):
        # The running interpreter's own symbols include libc's (glibc or musl): no
        # find_library, which can spawn ldconfig and costs more than the rest of the start.
        self.libc = ctypes.CDLL(None, use_errno=True)
        if not hasattr(self.libc, "inotify_init1"):
            from ctypes.util import find_library  # imports subprocess (~6 ms): only when needed

            self.libc = ctypes.CDLL(find_library("c") or "libc.so.6", use_errno=True)
        self.root = root
        self.excludes = excludes
        self.fd = self.libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.dirs = {}  # watch descriptor -> relative directory ("" for the root)
        self.wds = {}  # relative directory -> watch descriptor
        self.identities = {}  # watch descriptor -> (st_dev, st_ino) of the directory it holds
        # wd -> {name: the event our own write of that name will raise}: skipped once, unread.
        self.own = {}
        if watch_tree:
            self.add_tree("")
        else:
            self.watch = self._add  # the caller walks the tree, watching each directory

    def fileno(self):
        return self.fd

    def _add(self, rel):
        full = self.root + "/" + rel if rel else self.root
        identity = None
        try:  # watched through an fd, so the watch is known to hold this very directory
            fd = os.open(full, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return  # gone, or a symlink: not watched, as IN_DONT_FOLLOW refuses it
            raise
        try:
            st = os.fstat(fd)
            wd = self.libc.inotify_add_watch(self.fd, b"/proc/self/fd/%d" % fd, MASK & ~IN_DONT_FOLLOW)
            if wd >= 0:
                identity = (st.st_dev, st.st_ino)
        finally:
            os.close(fd)
        if wd < 0:  # no /proc: by name, without knowing which directory it holds
            wd = self.libc.inotify_add_watch(self.fd, full.encode("utf-8", "surrogateescape"), MASK)
        if wd < 0:
            code = ctypes.get_errno()
            if code in (errno.ENOENT, errno.ENOTDIR):
                return
            raise OSError(code, "inotify_add_watch %s: %s" % (full, os.strerror(code)))
        self.dirs[wd] = rel
        self.wds[rel] = wd
        if identity is None:
            self.identities.pop(wd, None)
        else:
            self.identities[wd] = identity

    def add_tree(self, rel):
        """Watch `rel` and every synced directory below it."""
        stack = [rel]
        while stack:
            current = stack.pop()
            self._add(current)
            full = self.root + "/" + current if current else self.root
            try:
                entries = list(os.scandir(full))
            except OSError:
                continue
            for entry in entries:
                child = current + "/" + entry.name if current else entry.name
                if entry.is_dir(follow_symlinks=False) and not self.excludes.excluded(child, True):
                    stack.append(child)

    def holds(self, rel, identity):
        """Whether a watch holds the directory `rel` that has `identity` ((st_dev, st_ino))."""
        wd = self.wds.get(rel)
        return wd is not None and self.identities.get(wd) == identity

    def expect(self, rel, directory, inode):
        """This side just linked a new file in as `rel`, in the directory `directory`
        ((st_dev, st_ino)), from an unnamed file of inode `inode`: the two events that
        raises (IN_CREATE of its name, IN_CLOSE_WRITE of the unnamed file, which the
        kernel names "#<inode>") are our own echo, not changes to report. Only where a
        watch holds that very directory, so the kernel is sure to raise them; a later
        change to the file raises events of its own."""
        parent, _, name = rel.rpartition("/")
        wd = self.wds.get(parent)
        if wd is None or self.identities.get(wd) != directory:
            return
        names = self.own.get(wd)
        if names is None:
            names = self.own[wd] = {}
        elif len(names) >= MAX_OWN:
            names.clear()
        names[name.encode("utf-8", "surrogateescape")] = IN_CREATE
        names[b"#%d" % inode] = IN_CLOSE_WRITE

    def read(self):
        """The paths touched since the last call (empty if none)."""
        changed = set()
        own = self.own
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            offset = 0
            while offset + EVENT.size <= len(data):
                wd, mask, _cookie, length = EVENT.unpack_from(data, offset)
                name = data[offset + EVENT.size : offset + EVENT.size + length].rstrip(b"\0")
                offset += EVENT.size + length
                names = own.get(wd) if own else None
                if names and names.get(name) == mask:
                    del names[name]
                    continue
                if mask & IN_Q_OVERFLOW:  # events were lost: rescan, and watch what is new
                    own.clear()
                    self.add_tree("")
                    changed.add(RESCAN)
                    continue
                base = self.dirs.get(wd)
                if mask & IN_IGNORED:
                    self.dirs.pop(wd, None)
                    self.identities.pop(wd, None)
                    if self.wds.get(base) == wd:
                        del self.wds[base]
                    own.pop(wd, None)
                    continue
                if base is None or not name:
                    continue
                rel_name = name.decode("utf-8", "surrogateescape")
                rel = base + "/" + rel_name if base else rel_name
                if self.excludes.excluded(rel, bool(mask & IN_ISDIR)):
                    continue
                if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
                    self.add_tree(rel)
                changed.add(rel)
        return changed

    def close(self):
        os.close(self.fd)


class PollingWatcher:
    """No inotify: every `interval` seconds, ask for a rescan (the stat cache keeps it cheap)."""

    def __init__(self, interval=0.5):
        self.interval = interval

    def fileno(self):
        return None

    def holds(self, rel, identity):
        return False  # no watches: every poll rescans

    def expect(self, rel, directory, inode):
        pass  # every poll rescans: there are no events to skip

    def read(self):
        return {RESCAN}

    def close(self):
        pass


def make_watcher(root, excludes, allow_inotify=True, watch_tree=True):
    """inotify when it works here, else polling; and a line saying which. With
    watch_tree False, the caller adds the watches (`watcher.watch(rel)`) as it walks."""
    if allow_inotify:
        try:
            return InotifyWatcher(root, excludes, watch_tree), "inotify"
        except (OSError, AttributeError) as exc:
            return PollingWatcher(), "polling (inotify unavailable: %s)" % exc
    return PollingWatcher(), "polling"
