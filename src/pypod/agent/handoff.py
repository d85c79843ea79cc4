"""A sync agent that outlives its connection, and the next exec that hands it the new
one. Standard library only; Python >= 3.8; Linux (SCM_RIGHTS, SO_PEERCRED).

When pypod's link to the pod ends or breaks, the agent that served it leaves a copy of
itself behind for a while, with its index and its inotify watches, listening on a socket
named by its version and by what it syncs. The next ``sync`` exec with that name gives
its own stdin and stdout to the copy over the socket, and waits until the copy is done
with them. The copy answers the hello from what it kept, re-examining what its watches
saw change meanwhile, with no new interpreter, imports, cache file or watches; then it
stats every path, as a new agent does before it answers, and reports what no watch saw.
Whatever does not fit (no copy, a busy one, another root or other excludes) gets a
fresh agent.
"""

import array
import contextlib
import errno
import os
import socket
import struct

TAKEN = b"+"  # the copy has the exec's stdin and stdout ...
GO = b"!"  # ... the exec lets it use them ...
SERVING = b"*"  # ... the copy does ...
DONE = b"."  # ... and has closed them: the exec may end
HANDSHAKE_S = 2.0
UCRED = struct.Struct("i2I")  # struct ucred: pid, uid, gid


def socket_path(agent_path, key):
    """Where the copy of this agent version (`agent_path`, its unpacked directory) for
    `key` listens; None if this agent has no versioned directory of its own."""
    if not os.path.isdir(agent_path) or not key.isalnum():
        return None
    return os.path.join(agent_path, "sync-%s.sock" % key)


def hand_over(path, in_fd=0, out_fd=1):
    """Give this exec's stdin and stdout to the copy listening at `path`, and wait for it
    to finish with them. True once it has; False, with nothing read from stdin, if no copy
    took them; None if one took them and then went away without finishing."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        serving = _offer(sock, path, in_fd, out_fd)
        if not serving:
            return serving
        sock.settimeout(None)
        last = b""
        with contextlib.suppress(OSError):
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                last = data[-1:]
        return True if last == DONE else None
    finally:
        sock.close()


def _offer(sock, path, in_fd, out_fd):
    went_ahead = False
    try:
        sock.settimeout(HANDSHAKE_S)  # a copy that does not answer at once is not waited for
        sock.connect(path)
        if not same_container(sock):
            return False  # whoever listens there is not an agent of this container
        sock.sendmsg([b"S"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [in_fd, out_fd]))])
        if sock.recv(1) != TAKEN:
            return False
        # Only on this go-ahead may the copy use them, and it says so: had either side
        # given up first, both would read stdin.
        sock.sendall(GO)
        went_ahead = True
        # Anything but SERVING: it gave up waiting for the go-ahead, and read nothing.
        return sock.recv(1) == SERVING
    except OSError:  # a timeout too (socket.timeout is an OSError on every Python 3)
        return None if went_ahead else False  # went ahead: it may be serving, or never


def same_container(sock):
    """Whether the process at the other end of `sock` runs as this user, in this
    container: its pid is visible here and it sees the same mounts (another container
    sharing /tmp through a volume does not, and must not reach the other's folder)."""
    try:
        pid, uid, _gid = UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size))
        if uid != os.getuid() or pid <= 0:
            return False
        return os.readlink("/proc/%d/ns/mnt" % pid) == os.readlink("/proc/self/ns/mnt")
    except OSError:
        return False


def done(conn):
    """Tell the exec that handed its streams over that they are closed here, and let go."""
    with contextlib.suppress(OSError):
        conn.sendall(DONE)
    conn.close()


class Listener:
    """The socket a lingering agent waits on; one connection is taken at a time."""

    def __init__(self, sock, path):
        self.sock, self.path = sock, path
        self.inode = os.stat(path).st_ino  # close() unlinks this file only, not a successor's

    @classmethod
    def bind(cls, path):
        """Listen at `path`, or None if another copy listens there (or this system cannot)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_mask = os.umask(0o077)  # the socket is this user's alone from the start
        try:
            try:
                sock.bind(path)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or someone_listens(path):
                    raise
                os.unlink(path)  # left by a copy that was killed
                sock.bind(path)
            sock.listen(4)
        except OSError:
            sock.close()
            return None
        finally:
            os.umask(old_mask)
        return cls(sock, path)

    def fileno(self):
        return self.sock.fileno()

    def take(self):
        """Accept one connection: (connection, stdin fd, stdout fd) of the exec behind
        it, or None (a probe, another user, or no descriptors sent)."""
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return None
        fds = array.array("i")
        try:
            conn.settimeout(HANDSHAKE_S)
            if not same_container(conn):
                raise OSError("not a handover from this container")
            _data, ancillary, _flags, _addr = conn.recvmsg(1, socket.CMSG_LEN(2 * fds.itemsize))
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
            if len(fds) != 2:
                raise OSError("no streams handed over")
            conn.sendall(TAKEN)
            if conn.recv(1) != GO:  # the exec gave up waiting, and serves them itself
                raise OSError("not handed over")
            conn.sendall(SERVING)
            conn.settimeout(None)
            return conn, fds[0], fds[1]
        except OSError:
            for fd in fds:
                os.close(fd)
            conn.close()
            return None

    def close(self):
        """Stop listening; the name is free for the next copy."""
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        self.sock.close()


def someone_listens(path):
    """Whether a copy listens at `path` (it takes a connection that sends nothing for none)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)  # the copy sees a connection that sends nothing, and goes on
        return True
    except OSError:
        return False
    finally:
        probe.close()


def leave_the_exec():
    """In the copy, just forked: let go of the exec's streams, so it ends as its process
    does, and of its session, so its end does not signal the copy."""
    os.setsid()
    os.chdir("/")  # nor the exec's working directory: nothing here keeps a mount busy
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
