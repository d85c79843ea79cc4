"""One side of a synced folder: what is in it, and safe changes to it.

Used by both ends of the sync (the agent in the pod, pypod on the laptop), so
both enforce the same rules as receivers. Standard library only; Python >= 3.8.

A path is POSIX and relative to the root. Its version is
  ``d``                 a directory
  ``l:<target>``        a symbolic link
  ``x<blob id>`` / ``-<blob id>``  a regular file, executable or not, named by its
                        git blob id (sha1 of ``blob <size>\\0<bytes>``)
Other kinds of file (sockets, fifos, devices) are not synced.
"""

import contextlib
import errno
import hashlib
import itertools
import os
import posixpath
import re
import stat

TMP_PREFIX = ".pypod-tmp-"
CHUNK = 1 << 20
HOLD_FILE_BYTES = 256 << 10  # files up to this size can be held once hashed, and travel whole
DIR = "d"
LINK = "l:"
UNREADABLE = "?"  # exists but cannot be read here: nothing is decided for it


class UnsafePathError(ValueError):
    """A path from the other side would land outside the sync root."""


def check_rel(rel):
    if not rel or "\0" in rel or "\\" in rel:
        raise UnsafePathError("refusing path %r: empty, NUL or backslash" % (rel,))
    if rel.startswith("/") or posixpath.isabs(rel):
        raise UnsafePathError("refusing absolute path %r" % (rel,))
    if any(part in ("", ".", "..") for part in rel.split("/")):
        raise UnsafePathError("refusing path %r: '..', '.' or empty components" % (rel,))


def resolve_under(root, rel):
    """`root/rel`, or UnsafePathError if `rel` is absolute, climbs out with `..`, or
    passes through a symlink (a symlinked parent could point anywhere)."""
    check_rel(rel)
    current = root
    for part in rel.split("/")[:-1]:
        current = current + "/" + part
        if os.path.islink(current):
            raise UnsafePathError("refusing path %r: %s is a symlink" % (rel, current[len(root) + 1 :]))
    return root + "/" + rel


def check_link_target(rel, target):
    """A symlink at `rel` may point only inside the root: a relative target whose `..`
    components all come first, no more of them than the link is deep. (Lexical checks
    alone are not enough: `s -> .` then `t -> s/..` would climb out through `s`.)"""
    if not target or "\0" in target or target.startswith("/"):
        raise UnsafePathError("refusing symlink %r -> %r: absolute or empty target" % (rel, target))
    parts = [p for p in target.split("/") if p not in ("", ".")]
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    if ".." in parts[ups:] or ups > rel.count("/"):
        raise UnsafePathError("refusing symlink %r -> %r: points outside the sync root" % (rel, target))


def is_file_version(version):
    return bool(version) and version[0] in "x-"


def file_chunks(path):
    """A file's bytes, CHUNK at a time: never the whole file in memory."""
    with open(path, "rb") as handle:
        while True:
            block = handle.read(CHUNK)
            if not block:
                return
            yield block


def blob_id(data):
    """The git blob id of bytes held in memory."""
    digest = hashlib.sha1(b"blob %d\0" % len(data))
    digest.update(data)
    return digest.hexdigest()


def index_digest(entries):
    """One id for a whole index ({path: version}), computed alike on both sides: an
    agent whose scan matches what pypod expects answers with it instead of the index."""
    digest = hashlib.sha1()
    for path in sorted(entries):
        digest.update(("%s\0%s\n" % (path, entries[path])).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def blob_digest(path, size):
    digest = hashlib.sha1(b"blob %d\0" % size)
    for block in file_chunks(path):
        digest.update(block)
    return digest.hexdigest()


class Excludes:
    """What is never synced. `spec` is plain data so it can cross the stream:
    {"dirs": [names], "suffixes": [...], "rules": [[excludes?, regex], ...]}; the
    rules are gitignore patterns compiled to regexes, and the last match wins."""

    def __init__(self, spec):
        self.spec = spec
        # Case-folded: on a case-insensitive disk `.GIT` is `.git`. Suffixes are of names.
        self.dirs = frozenset(name.lower() for name in spec.get("dirs", ()))
        self.suffixes = tuple(suffix.lower() for suffix in spec.get("suffixes", ()))
        self.rules = [(bool(excludes), re.compile(regex)) for excludes, regex in spec.get("rules", ())]
        self._dir_cache = {}

    def _match(self, candidate):
        result = False
        for excludes, regex in self.rules:
            if regex.match(candidate):
                result = excludes
        return result

    def _dir_excluded(self, rel):
        cached = self._dir_cache.get(rel)
        if cached is None:
            parent = rel.rpartition("/")[0]
            cached = (
                (bool(parent) and self._dir_excluded(parent))
                or rel.rpartition("/")[2].lower() in self.dirs
                or self._match(rel + "/")
            )
            self._dir_cache[rel] = cached
        return cached

    def excluded_entry(self, rel, name, is_dir):
        """excluded() for `name` in a directory known not to be excluded (a scan's
        inner loop: a third of its time went to the general case)."""
        if name.startswith(TMP_PREFIX):
            return True
        if is_dir:
            return self._dir_excluded(rel)
        lower = name.lower()
        return lower in self.dirs or lower.endswith(self.suffixes) or (bool(self.rules) and self._match(rel))

    def excluded(self, rel, is_dir=False):
        parent, _, name = rel.rpartition("/")
        if name.startswith(TMP_PREFIX):
            return True
        if parent and self._dir_excluded(parent):
            return True
        if is_dir:
            return self._dir_excluded(rel)
        return name.lower() in self.dirs or name.lower().endswith(self.suffixes) or self._match(rel)


class Tree:
    """The sync root on this side, with a stat cache so unchanged files are not re-read."""

    def __init__(self, root, excludes, cache=None):
        self.root = os.path.abspath(root)
        self.excludes = excludes
        self.cache = cache if cache is not None else {}  # rel -> [size, mtime_ns, ctime_ns, ino, version]
        self._checked_dirs = set()  # parents already seen not to be symlinks, in this batch
        self._existing_dirs = set()
        self.unnamed_files = hasattr(os, "O_TMPFILE")  # until this disk says it cannot
        # Small files hashed afresh keep their bytes, up to this many in all, for the
        # sender to send without reading them again: rel -> (version, bytes).
        self.hold_budget = 0
        self.held = {}
        self._dir_fds = {}  # directory -> (an open fd on it, its (st_dev, st_ino)), in this batch
        # Called as (rel, directory's (st_dev, st_ino), inode) right after this side links
        # a new file in: the watcher then knows the events that follow are its own echo.
        self.on_linked = None

    def new_batch(self):
        """Forget which directories were checked: what is on disk may have changed since."""
        self._checked_dirs.clear()
        self._existing_dirs.clear()
        for fd, _identity in self._dir_fds.values():
            os.close(fd)
        self._dir_fds.clear()

    def _dir_fd(self, directory):
        """An fd on `directory` and the directory's (st_dev, st_ino)."""
        opened = self._dir_fds.get(directory)
        if opened is None:
            # O_NOFOLLOW: a directory swapped for a symlink since it was checked is refused.
            flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
            fd = os.open(directory, flags)
            st = os.fstat(fd)
            opened = self._dir_fds[directory] = (fd, (st.st_dev, st.st_ino))
        return opened

    def path(self, rel):
        """The absolute path of `rel`, refusing unsafe paths (see resolve_under). Parent
        directories are checked once per batch: thousands of files share a few."""
        parent = rel.rpartition("/")[0]
        if not parent or parent in self._checked_dirs:
            check_rel(rel)
            return self.root + "/" + rel
        full = resolve_under(self.root, rel)
        while parent and parent not in self._checked_dirs:
            self._checked_dirs.add(parent)
            parent = parent.rpartition("/")[0]
        return full

    # -- reading ----------------------------------------------------------------
    def _version(self, rel, full, st):
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            return DIR
        if stat.S_ISLNK(mode):
            return LINK + os.readlink(full)
        if not stat.S_ISREG(mode):
            return None
        cached = self.cache.get(rel)
        # Field by field, no key list built: a resync's 10,000 unchanged files all come here.
        if (
            cached is not None
            and cached[1] == st.st_mtime_ns
            and cached[2] == st.st_ctime_ns
            and cached[0] == st.st_size
            and cached[3] == st.st_ino
        ):
            return cached[4]
        try:
            version = self._hash(rel, full, mode, st.st_size)
        except PermissionError:
            return UNREADABLE
        self.cache[rel] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, version]
        return version

    def _hash(self, rel, full, mode, size):
        """The version of the file's bytes, read now; a small one's bytes are held while
        the budget lasts."""
        kind = "x" if mode & 0o111 else "-"
        if not 0 < size <= min(self.hold_budget, HOLD_FILE_BYTES):
            return kind + blob_digest(full, size)
        fd = os.open(full, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            data = os.read(fd, size + 1)
        finally:
            os.close(fd)
        if len(data) != size:  # changing as we read: as blob_digest would, and hold nothing
            return kind + blob_digest(full, size)
        version = kind + blob_id(data)
        self._drop_held(rel)  # hashed again before it was sent: the newer bytes count
        self.held[rel] = (version, data)
        self.hold_budget -= size
        return version

    def _drop_held(self, rel):
        held = self.held.pop(rel, None)
        if held is not None:
            self.hold_budget += len(held[1])
        return held

    def take_held(self, rel, version):
        """The bytes hashed as `version` for `rel`, if held (they are that version, whatever
        the file holds now), else None."""
        held = self._drop_held(rel)
        return held[1] if held is not None and held[0] == version else None

    def release_held(self):
        for _version, data in self.held.values():
            self.hold_budget += len(data)
        self.held.clear()

    def version(self, rel):
        """The path's version now, or None if absent, excluded or not a syncable kind."""
        try:
            full = self.path(rel)
            st = os.lstat(full)
            if self.excludes.excluded(rel, stat.S_ISDIR(st.st_mode)):
                return None
            return self._version(rel, full, st)
        except UnsafePathError:
            return None
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                self.cache.pop(rel, None)
                return None
            raise

    def scan(self, under="", before_listing=None, on_listed=None):
        """Every syncable path below `under` (the root by default), with its version;
        `before_listing(rel)` is called for each directory before it is listed (so a
        watch added then misses nothing the listing does not see), and
        `on_listed({rel: version})` with what each listing found, parents before
        their contents (so a caller can act on them while the scan goes on)."""
        found = {}
        if under:
            top = self.version(under)
            if top is None:
                return found
            found[under] = top
            if top != DIR:
                return found
        stack = [under]
        while stack:
            rel_dir = stack.pop()
            prefix = rel_dir + "/" if rel_dir else ""
            if before_listing is not None:
                before_listing(rel_dir)
            try:
                entries = os.scandir(self.root + "/" + rel_dir if rel_dir else self.root)
            except OSError:
                continue
            excluded = self.excludes.excluded_entry
            listed = {} if on_listed is not None else found
            with entries:
                for entry in entries:
                    name = entry.name
                    rel = prefix + name
                    try:
                        st = entry.stat(follow_symlinks=False)
                        is_dir = stat.S_ISDIR(st.st_mode)
                        if excluded(rel, name, is_dir):
                            continue
                        version = self._version(rel, entry.path, st)
                    except OSError:
                        continue  # vanished while we looked: its event will follow
                    if version is None:
                        continue
                    listed[rel] = version
                    if is_dir:
                        stack.append(rel)
            if on_listed is not None:
                found.update(listed)
                on_listed(listed)
        return found

    def refresh(self, rels, known, on_listed=None):
        """What changed at `rels` (and below, for directories) against `known`, which is
        updated in place. Returns {rel: version or None (gone)}. `on_listed` is scan()'s."""
        changes = {}
        scanned = {}  # rel -> what its scan found, for the directories known as such
        wanted = set(rels)
        for rel in sorted(wanted):
            if rel and _covered(rel, wanted, known):
                continue  # the scan of a directory above it covers it
            now = self.scan(rel, on_listed=on_listed)
            if not rel:  # everything
                changes.update((p, None) for p in known if p not in now)
            before = known.get(rel)
            if before == DIR:
                scanned[rel] = now
            if before is not None and rel not in now:
                changes[rel] = None
            changes.update((p, v) for p, v in now.items() if known.get(p) != v)
        if scanned:
            # Gone from below a rescanned directory: one pass over `known` for all of
            # them (a pass per directory costs seconds when thousands of files arrive),
            # which looks closer only at the paths below one of them.
            below = tuple(directory + "/" for directory in scanned)
            for path in known:
                if not path.startswith(below):
                    continue
                parent = path.rpartition("/")[0]
                while parent:
                    now = scanned.get(parent)
                    if now is not None and path not in now:
                        changes[path] = None
                        break
                    parent = parent.rpartition("/")[0]
        for path, version in changes.items():
            if version is None:
                known.pop(path, None)
            else:
                known[path] = version
        return changes

    # -- writing ----------------------------------------------------------------
    def check_incoming(self, rel, version):
        """Refuse what must not be written here: unsafe paths, excluded paths, links out."""
        full = self.path(rel)
        if self.excludes.excluded(rel, version == DIR):
            raise UnsafePathError("refusing %r: excluded from sync on this side" % (rel,))
        if version.startswith(LINK):
            check_link_target(rel, version[len(LINK) :])
        elif version != DIR and not is_file_version(version):
            raise UnsafePathError("refusing %r: unknown version %r" % (rel, version[:10]))
        return full

    def begin(self, rel, version, size):
        """An Incoming file for `rel`; its bytes go to a temp file beside the target."""
        return Incoming(self, rel, version, size)

    def commit(self, rel, version, expect, temp=None, keep_as=None):
        """Make `rel` hold `version` if it still holds `expect` (None: absent); `temp`
        holds a file's bytes; `keep_as` names a new path that first receives what is
        replaced (a conflict copy: never overwriting, or nothing happens). Returns the
        version at `rel` afterwards: the write took effect (or was not needed) exactly
        when that equals `version`."""
        full = self.check_incoming(rel, version)
        current = self.version(rel)
        if current == version or current != expect:
            _discard(temp)
            return current
        try:
            if keep_as and current is not None:
                self.check_incoming(keep_as, current)
                _make_parents(self, keep_as)
                os.link(full, self.path(keep_as))  # fails if the name is taken
            _make_parents(self, rel)
            if current == DIR and version != DIR:
                os.rmdir(full)  # only when empty: its contents are separate decisions
            elif current is not None and current != DIR and version == DIR:
                os.unlink(full)
            if version == DIR:
                os.mkdir(full)
            elif version.startswith(LINK):
                link_temp = _temp_name(os.path.dirname(full))
                os.symlink(version[len(LINK) :], link_temp)
                os.replace(link_temp, full)
            else:
                os.replace(temp, full)
                temp = None
                st = os.lstat(full)
                self.cache[rel] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, version]
        except OSError:
            _discard(temp)
            return self.version(rel)
        return version

    def put_bytes(self, rel, version, expect, data, keep_as=None):
        """commit() for a file whose bytes are all here (and were checked against
        `version`). A file new to this side is written unnamed (O_TMPFILE) and linked
        in only if its name is still free: no temp name, no rename, never visible half
        written, and never overwriting what appeared meanwhile."""
        full = self.check_incoming(rel, version)
        mode = 0o755 if version[0] == "x" else 0o644
        _make_parents(self, rel)
        if expect is None and keep_as is None and self.unnamed_files:
            directory, name = full.rsplit("/", 1)
            dir_fd, identity = self._dir_fd(directory)
            try:
                st = _link_new_file(dir_fd, name, mode, data)
            except FileExistsError:
                return self.version(rel)
            except OSError as exc:
                if exc.errno not in UNNAMED_UNSUPPORTED:
                    raise
                self.unnamed_files = False  # this disk or kernel cannot: the temp name it is
            else:
                if self.on_linked is not None:
                    self.on_linked(rel, identity, st.st_ino)
                self.cache[rel] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, version]
                return version
        fd, temp = _create_temp(os.path.dirname(full), mode)
        try:
            write_all(fd, data)
        except OSError:
            os.close(fd)
            _discard(temp)
            raise
        os.close(fd)
        return self.commit(rel, version, expect, temp, keep_as)

    def remove(self, rel, expect):
        """Delete `rel` if it still holds `expect`. Returns the version there afterwards
        (None: the delete took effect, or there was nothing to delete)."""
        full = self.path(rel)
        current = self.version(rel)
        if current is None or current != expect:
            return current
        try:
            if current == DIR:
                os.rmdir(full)  # only when empty: its contents are separate decisions
            else:
                os.unlink(full)
        except OSError:
            return current
        self.cache.pop(rel, None)
        return None

    def copy_to_temp(self, source_rel, version):
        """A temp file beside nothing yet, holding `source_rel`'s bytes, if they are `version`."""
        incoming = None
        try:
            source = self.path(source_rel)
            incoming = Incoming(self, source_rel, version, os.lstat(source).st_size, directory=os.path.dirname(source))
            for block in file_chunks(source):
                incoming.write(block)
        except (OSError, UnsafePathError):
            if incoming is not None:
                incoming.abort()
            return None
        if incoming.finish() != version[1:]:
            incoming.abort()
            return None
        return incoming.temp


class Incoming:
    """A file arriving in pieces: written to a temp file, hashed as it goes."""

    def __init__(self, tree, rel, version, size, directory=None):
        self.rel, self.version, self.expected_size = rel, version, size
        if directory is None:
            full = tree.check_incoming(rel, version)
            _make_parents(tree, rel)
            directory = os.path.dirname(full)
        # Created with its final mode (no chmod later: one metadata write less per file).
        fd, self.temp = _create_temp(directory, 0o755 if version[0] == "x" else 0o644)
        self.handle = os.fdopen(fd, "wb")
        self.size = 0
        self.digest = hashlib.sha1(b"blob %d\0" % size)

    def write(self, data):
        self.handle.write(data)
        self.size += len(data)
        self.digest.update(data)

    def finish(self):
        """Close the file; the blob id of what was written ("" if the size was wrong)."""
        self.handle.close()
        return self.digest.hexdigest() if self.size == self.expected_size else ""

    def abort(self):
        if not self.handle.closed:
            self.handle.close()
        _discard(self.temp)


def _make_parents(tree, rel):
    """Create the missing parent directories of `rel`, checking each against symlinks."""
    parent = rel.rpartition("/")[0]
    if not parent or parent in tree._existing_dirs:
        return
    tree.path(rel)  # refuses symlinked parents
    full = tree.root + "/" + parent
    if not os.path.isdir(full):
        os.makedirs(full, exist_ok=True)
        tree._checked_dirs.discard(parent)
        tree.path(rel)  # and again, against a race with the other side's writes
    tree._existing_dirs.add(parent)


_temp_counter = itertools.count()
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _create_temp(directory, mode):
    """A new file beside its target (O_EXCL: never an existing one), named so both
    sides ignore it."""
    while True:
        name = "%s/%s%d-%d" % (directory, TMP_PREFIX, os.getpid(), next(_temp_counter))
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
        except FileExistsError:
            continue
        if mode & _UMASK:  # the umask took bits away
            os.fchmod(fd, mode)
        return fd, name


def _covered(rel, rels, known):
    """Whether a directory above `rel` is rescanned too, and known as one (so what
    went missing below it is found): the root, or a parent in `rels`."""
    if "" in rels:
        return True
    parent = rel.rpartition("/")[0]
    while parent:
        if parent in rels and known.get(parent) == DIR:
            return True
        parent = parent.rpartition("/")[0]
    return False


# O_TMPFILE unknown to the kernel (EISDIR, EINVAL), or to the filesystem (EOPNOTSUPP);
# no /proc to link it in from (ENOENT, EXDEV).
UNNAMED_UNSUPPORTED = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT, errno.EXDEV)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _link_new_file(dir_fd, name, mode, data):
    """Write `data` to an unnamed file in the directory `dir_fd` and link it in as
    `name`; FileExistsError if that name is taken. Returns the file's stat once named."""
    fd = os.open(".", os.O_WRONLY | os.O_TMPFILE | getattr(os, "O_CLOEXEC", 0), mode, dir_fd=dir_fd)
    try:
        if mode & _UMASK:
            os.fchmod(fd, mode)
        write_all(fd, data)
        # linkat(AT_SYMLINK_FOLLOW) from /proc names the open file (os.link calls
        # linkat only when given a directory fd); it fails if `name` exists.
        os.link("/proc/self/fd/%d" % fd, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=True)
        return os.fstat(fd)  # after the link: linking changed its ctime
    finally:
        os.close(fd)


def _temp_name(directory):
    fd, name = _create_temp(directory, 0o644)
    os.close(fd)
    os.unlink(name)
    return name


def _discard(temp):
    if temp:
        with contextlib.suppress(OSError):
            os.unlink(temp)
