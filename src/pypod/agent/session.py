"""The agent's interactive roles. Standard library only; runs on any Python >= 3.8.

``host``   the driver container's command. It owns the REPL's pseudo-terminal,
           so the interpreter outlives any client: clients come and go
           (``pypod attach``), and the REPL's state stays. When no client has
           been attached for ``--keep-alive`` seconds (and the run was not
           started with ``--detach``), it ends the REPL, so orphaned driver
           pods do not pile up.
``attach`` run through ``kubectl exec -i``; relays frames between its
           stdin/stdout and the host's unix socket (attach.py).

Frames (see frames.py):
  client -> host: ``S`` start (JSON: rows, cols, history, env, banner), ``i`` input,
                  ``w`` window size (JSON: rows, cols), ``p`` ping
  host -> client: ``o`` output, ``x`` exit (JSON: code, history, installed: the
                  distributions installed while the REPL ran), ``p`` pong,
                  ``m`` message from the agent itself
"""

import contextlib
import errno
import fcntl
import json
import os
import pty
import select
import shutil
import signal
import socket
import struct
import sys
import termios
import threading
import time

from .attach import AGENT_DIR, SOCKET_PATH
from .dists import installed_since, listing
from .frames import FrameReader, frame
from .tmpdir import agent_dir

# Runs the agent from its unpacked, compiled copy once there is one (made by the first
# sync, or by the host once the REPL runs), else from the archive. `pypod_agent` is
# the archive's package (PACKAGE in pypod/agent/__init__.py).
ATTACH_SCRIPT = """#!%s
import os, sys
p = %r if os.path.isfile(%r) else %r
sys.argv = [p, 'attach'] + sys.argv[1:]
sys.path.insert(0, p)
from pypod_agent.main import main
sys.exit(main(sys.argv[1:]))
"""
SCROLLBACK_BYTES = 64 * 1024
PING_GRACE_S = 30.0  # a client silent this long is gone (its stream died without a close)
START_WAIT_S = 120.0  # how long the REPL waits for a first client to send history and size
LEAVE_WAIT_S = 60.0  # at the REPL's end: how long the host waits for its clients to hang up
HISTORY_FILE = os.path.expanduser("~/.python_history")


def log(message):
    sys.stdout.write("pypod-agent: " + message + "\n")
    sys.stdout.flush()


def resolve_repl(command):
    """`auto` means ipython when the image has it, else this interpreter."""
    if command == ["auto"]:
        ipython = shutil.which("ipython")
        return [ipython] if ipython else [sys.executable]
    if command and shutil.which(command[0]) is None and command[0] in ("python", "python3"):
        return [sys.executable, *command[1:]]
    if command and "/" not in command[0] and shutil.which(command[0]) is None:
        # Shown in the client's terminal: the likely cause and the fix, not just ENOENT.
        message = "`%s` is not in this image; add it to the project's dependencies (PATH=%s)" % (
            command[0],
            os.environ.get("PATH", ""),
        )
        return [sys.executable, "-c", "import sys; sys.stderr.write(%r + '\\n'); sys.exit(127)" % message]
    return command


def set_winsize(fd, rows, cols):
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Client:
    def __init__(self, sock):
        self.sock = sock
        self.reader = FrameReader()
        self.last_seen = time.monotonic()
        self.outbox = b""


class Ahead:
    """Work the host does while its first client starts (the sync, then attach), in one
    thread: Jobs run in order, each result taken when needed. One thread,
    not one per job: imports made at once from several threads can meet a module half
    made (CPython lets one import see another's partial module rather than deadlock),
    which once failed the banner with "partially initialized module 'typing'"."""

    def __init__(self):
        self._jobs = []
        self._thread = threading.Thread(target=self._work, name="pypod-ahead", daemon=True)

    def add(self, job, after=None):
        """Run `job` after those added before it and, given an Event `after`, once it is set."""
        self._jobs.append((job, after))
        return job

    def start(self):
        self._thread.start()
        return self

    def _work(self):
        for job, after in self._jobs:
            if after is not None:
                after.wait()
            try:
                job.run()
            except Exception as exc:  # the jobs after it still run; its take() gets None
                log("%s failed: %s" % (type(job).__name__, exc))


class Job:
    """One job of Ahead's: `take()` waits for it (at most `wait_s`); None if not done."""

    wait_s = 30.0

    def __init__(self):
        self.result = None
        self.elapsed = None
        self.waited = 0.0
        self.done = threading.Event()

    def run(self):
        started = time.monotonic()
        try:
            self.result = self.work()
        finally:
            self.elapsed = time.monotonic() - started
            self.done.set()

    def work(self):
        raise NotImplementedError

    def take(self):
        waited = time.monotonic()
        self.done.wait(self.wait_s)
        self.waited = time.monotonic() - waited
        return self.result if self.done.is_set() else None


class Banner(Job):
    """`pypod info`'s one line, shown above the REPL's first prompt."""

    wait_s = 2.0  # at the first client's start: show it if ready by then, else go without

    def work(self):
        try:
            from .resources import banner, collect

            return banner(collect(sample_s=0, measure_ephemeral=False))
        except Exception as exc:  # the REPL must start whatever this finds
            return "pod: (pypod info failed: %s)" % exc

    def take(self):
        return super().take() or ""


class Distributions(Job):
    """The environment's distributions before the REPL; the REPL is spawned only once
    they are known."""

    def work(self):
        try:
            return listing()
        except Exception as exc:  # the REPL starts all the same; installs are then not reported
            log("could not list the environment's distributions: %s" % exc)
            return None


class Unpack(Job):
    """The agent's archive unpacked and compiled where the stdin loader looks for it."""

    def __init__(self, data, target):
        super().__init__()
        self.data, self.target = data, target

    def work(self):
        unpack_for_stdin_loader(self.data, self.target)


class Host:
    def __init__(self, command, keep_alive, detach, socket_path=SOCKET_PATH, banner=None, dists=None, spawned=None):
        self.banner = banner
        self.spawned = spawned  # an Event set once the REPL is spawned
        self.pending_dists = dists  # a Distributions, taken as the REPL is spawned
        self.dists = None  # the environment's distributions before the REPL, or None
        self.command = command
        self.keep_alive = keep_alive
        self.detach = detach
        self.socket_path = socket_path
        self.clients = []
        self.scrollback = b""
        self.child_pid = None
        self.master = None
        self.history_seed = []
        self.alone_since = time.monotonic()
        self.next_reap = 0.0

    # -- the REPL -------------------------------------------------------------
    def spawn(self, rows=24, cols=80, history=None, env=None):
        if self.pending_dists is not None:  # before the REPL can install anything
            self.dists, self.pending_dists = self.pending_dists.take(), None
        if history:
            self.history_seed = list(history)
            write_history(HISTORY_FILE, history)
        child_env = dict(os.environ)
        child_env.setdefault("TERM", "xterm-256color")
        child_env.update(env or {})
        pid, master = pty.fork()
        if pid == 0:
            try:
                os.execvpe(self.command[0], self.command, child_env)
            except OSError as exc:
                sys.stderr.write("pypod-agent: cannot start %s: %s\n" % (self.command[0], exc))
                os._exit(127)
        self.child_pid, self.master = pid, master
        if self.spawned is not None:
            self.spawned.set()
        set_winsize(master, rows, cols)
        log("REPL started: " + " ".join(self.command))

    def reap_kept_agents(self):
        """As the container's PID 1, this process inherits the sync agents that stay after
        their connection (handoff.py): reap those that have ended. Only session leaders
        other than the REPL: a child a thread is waiting for (nvidia-smi) is left to it."""
        now = time.monotonic()
        if now < self.next_reap:
            return  # the loop wakes for every chunk of REPL output
        self.next_reap = now + 1.0
        try:
            if os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                return  # nothing has ended: the usual case, one system call
        except ChildProcessError:
            return
        me = os.getpid()
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == self.child_pid:
                continue
            try:
                with open("/proc/%s/stat" % name) as handle:
                    stat = handle.read()
                state, ppid, _pgrp, sid = stat[stat.rindex(")") + 2 :].split()[:4]
                if state == "Z" and int(ppid) == me and int(sid) == int(name):
                    os.waitpid(int(name), os.WNOHANG)
            except (OSError, ValueError):
                continue  # gone meanwhile, or reaped by its owner first

    def child_exit_code(self, block=False):
        try:
            pid, status = os.waitpid(self.child_pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return 0
        if pid == 0:
            return None
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.WEXITSTATUS(status)

    # -- clients --------------------------------------------------------------
    def broadcast(self, data):
        for client in self.clients:
            client.outbox += data

    def drop(self, client):
        if client in self.clients:
            self.clients.remove(client)
            with contextlib.suppress(OSError):
                client.sock.close()
            log("client detached (%d attached)" % len(self.clients))
            if not self.clients:
                self.alone_since = time.monotonic()

    def handle(self, client, kind, payload):
        client.last_seen = time.monotonic()
        if kind == b"S":
            start = json.loads(payload.decode() or "{}")
            if self.child_pid is None:
                line = self.banner.take() if self.banner is not None else ""
                if line and start.get("banner", True):
                    client.outbox += frame(b"o", (line + "\r\n").encode("utf-8"))
                    took, waited = 1000 * (self.banner.elapsed or 0), 1000 * self.banner.waited
                    log("banner (%.0f ms to work out, %.0f ms waited for): %s" % (took, waited, line))
                # The banner thread has ended (or is given up on) before the fork.
                self.spawn(start.get("rows", 24), start.get("cols", 80), start.get("history"), start.get("env"))
            else:
                set_winsize(self.master, start.get("rows", 24), start.get("cols", 80))
                # Show where the session is: what it printed last, so the prompt is visible.
                client.outbox += frame(b"o", self.scrollback)
        elif kind == b"i" and self.master is not None:
            os.write(self.master, payload)
        elif kind == b"w" and self.master is not None:
            size = json.loads(payload.decode())
            set_winsize(self.master, size["rows"], size["cols"])
            if self.child_pid:
                with contextlib.suppress(OSError):
                    os.kill(self.child_pid, signal.SIGWINCH)
        elif kind == b"p":
            client.outbox += frame(b"p")

    # -- the loop -------------------------------------------------------------
    def run(self):
        os.makedirs(os.path.dirname(self.socket_path), exist_ok=True)
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self.socket_path)
        os.chmod(self.socket_path, 0o600)
        server.listen(8)
        started = time.monotonic()
        log("session host ready on " + self.socket_path)
        while True:
            if self.child_pid is None and time.monotonic() - started > START_WAIT_S:
                log("no client came within %ds; starting the REPL without one" % START_WAIT_S)
                self.spawn()
            readers = [server] + [c.sock for c in self.clients]
            if self.master is not None:
                readers.append(self.master)
            writers = [c.sock for c in self.clients if c.outbox]
            try:
                readable, writable, _ = select.select(readers, writers, [], 1.0)
            except InterruptedError:
                continue
            if server in readable:
                sock, _ = server.accept()
                sock.setblocking(False)
                self.clients.append(Client(sock))
                log("client attached (%d attached)" % len(self.clients))
            if self.master is not None and self.master in readable:
                try:
                    data = os.read(self.master, 65536)
                except OSError as exc:
                    if exc.errno != errno.EIO:
                        raise
                    data = b""
                if not data:
                    return self.finish()
                self.scrollback = (self.scrollback + data)[-SCROLLBACK_BYTES:]
                self.broadcast(frame(b"o", data))
            for client in list(self.clients):
                if client.sock in readable:
                    try:
                        data = client.sock.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        self.drop(client)
                        continue
                    for kind, payload in client.reader.feed(data):
                        self.handle(client, kind, payload)
            for client in list(self.clients):
                if client.sock in writable and client.outbox:
                    try:
                        sent = client.sock.send(client.outbox)
                        client.outbox = client.outbox[sent:]
                    except OSError:
                        self.drop(client)
            self.reap_kept_agents()
            now = time.monotonic()
            for client in list(self.clients):
                if now - client.last_seen > PING_GRACE_S:
                    log("client silent for %ds; treating it as gone" % PING_GRACE_S)
                    self.drop(client)
            if not self.clients and not self.detach and now - self.alone_since > self.keep_alive:
                log("no client attached for %ds and the run was not detached: ending it" % self.keep_alive)
                if self.child_pid:
                    with contextlib.suppress(OSError):
                        os.kill(self.child_pid, signal.SIGHUP)
                    return self.finish(default_code=129)
                return 129

    def finish(self, default_code=0):
        code = self.child_exit_code(block=True)
        code = default_code if code is None else code
        history = read_history(HISTORY_FILE)
        new_entries = (
            history[len(self.history_seed) :]
            if history[: len(self.history_seed)] == self.history_seed
            else [h for h in history if h not in set(self.history_seed)]
        )
        end = {"code": code, "history": new_entries, "installed": self.installed()}
        goodbye = frame(b"x", json.dumps(end).encode())
        for client in self.clients:
            try:
                client.sock.setblocking(True)
                client.sock.sendall(client.outbox + goodbye)
            except OSError:
                pass
        log("REPL exited with code %d" % code)
        self.wait_for_clients_to_leave()
        return code

    def wait_for_clients_to_leave(self, timeout=LEAVE_WAIT_S):
        """The container ends with this process, and with it the sync's agent: the client
        hangs up once the pod's last edits have come home (see run_terminal's on_end)."""
        deadline = time.monotonic() + timeout
        socks = [client.sock for client in self.clients]
        while socks and time.monotonic() < deadline:
            readable, _, _ = select.select(socks, [], [], max(0.0, deadline - time.monotonic()))
            for sock in readable:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    socks.remove(sock)

    def installed(self):
        """The distributions installed while the REPL ran (pip install, uv add, pypod.add)."""
        if self.dists is None:
            return []
        try:
            return installed_since(self.dists, listing())
        except Exception as exc:  # the REPL's end must not fail on this
            log("could not list the environment's distributions: %s" % exc)
            return []


def read_history(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return [line.rstrip("\n") for line in handle if line.strip() and not line.startswith("_HiStOrY_V2_")]
    except OSError:
        return []


def write_history(path, entries):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".pypod-tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write("".join(entry + "\n" for entry in entries))
    os.replace(tmp, path)


def install_attach_entrypoint(archive, unpacked):
    """Make `/tmp/pypod/attach` runnable by exec in any image: no shell is needed."""
    os.makedirs(AGENT_DIR, exist_ok=True)
    path = AGENT_DIR + "/attach"
    with open(path + ".tmp", "w") as handle:
        handle.write(ATTACH_SCRIPT % (sys.executable, unpacked, os.path.join(unpacked, "__main__.py"), archive))
    os.chmod(path + ".tmp", 0o755)
    os.replace(path + ".tmp", path)


def unpacked_path(data):
    """Where pypod's stdin loader (pypod/agent/__init__.py) keeps this archive unpacked."""
    import hashlib

    return os.path.join(agent_dir(), "agent-%s" % hashlib.sha1(data).hexdigest()[:16])


def unpack_for_stdin_loader(data, target=None):
    """Unpack the archive `data`, its modules compiled, where pypod's stdin loader looks
    for it (`target`, else unpacked_path's): the sync's first exec into a new pod then
    starts warm, and so does attach."""
    import compileall
    import io
    import zipfile

    try:
        target = target or unpacked_path(data)
        if os.path.isfile(os.path.join(target, "__main__.py")):
            return
        temp = "%s.%d" % (target, os.getpid())
        zipfile.ZipFile(io.BytesIO(data)).extractall(temp)
        compileall.compile_dir(temp, quiet=1)
        try:
            os.rename(temp, target)
        except OSError:  # a loader got there first
            shutil.rmtree(temp, True)
    except Exception as exc:  # only a head start: the loader unpacks it itself if need be
        log("could not unpack the agent ahead: %s" % exc)


def host_main(archive, rest):
    keep_alive, detach = 900.0, False
    while rest and rest[0] != "--":
        if rest[0] == "--keep-alive":
            keep_alive = float(rest[1])
            rest = rest[2:]
        elif rest[0] == "--detach":
            detach = True
            rest = rest[1:]
        else:
            sys.stderr.write("pypod-agent: unknown option %s\n" % rest[0])
            return 2
    command = rest[1:] if rest else ["auto"]
    os.environ.pop("PYPOD_AGENT", None)  # the agent's own source; the REPL need not see it
    with open(archive, "rb") as handle:
        data = handle.read()
    unpacked = unpacked_path(data)
    install_attach_entrypoint(archive, unpacked)
    ahead = Ahead()
    banner = ahead.add(Banner())
    dists = ahead.add(Distributions())
    # Once the REPL runs, not before: until then the CPU goes to the execs on the way to
    # its prompt, and the sync's first exec unpacks the archive itself (this is then a
    # no-op). Without a sync, later attaches start from the compiled copy all the same.
    spawned = threading.Event()
    ahead.add(Unpack(data, unpacked), after=spawned)
    ahead.start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    host = Host(resolve_repl(command or ["auto"]), keep_alive, detach, banner=banner, dists=dists, spawned=spawned)
    return host.run()
