"""Live sync of the project folder with a run's pod: started beside the REPL by
`pypod` and `pypod attach`, or on its own by `pypod sync RUN`. The work is done by
sync.syncer; this module finds the pod, picks the files, and shows the health."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StreamError, UsageError
from ..kube.manifests import DRIVER_CONTAINER
from ..project import Project
from ..settings import Settings

if TYPE_CHECKING:
    from .driver import Driver
    from .output import Output

AGENT_PYTHON = "python3"
FIRST_SYNC_TIMEOUT_S = 300.0
STATE_DIR = Path(os.environ.get("PYPOD_STATE", "~/.local/state/pypod")).expanduser() / "sync"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def status_file(namespace: str, run: str) -> Path:
    return STATE_DIR / f"{_safe(namespace)}.{_safe(run)}.status.json"


def state_file(namespace: str, run: str, pod_uid: str) -> Path:
    """Agreed state per pod: a new pod of the run starts from a first sync."""
    return STATE_DIR / f"{_safe(namespace)}.{_safe(run)}.{_safe(pod_uid)}.json"


def cache_file(local_root: Path) -> Path:
    """The local stat cache of a project folder: about local files only, so every pod
    and run of the project shares it (a new pod's first sync hashes nothing here)."""
    key = hashlib.sha1(str(local_root.resolve()).encode()).hexdigest()[:16]
    return STATE_DIR / f"cache-{key}.json"


def own_files_under(root: Path) -> list[str]:
    """Patterns for pypod's own state and cache when they sit inside the project (a HOME
    inside it): syncing the sync's own state would never settle."""
    from ..image.tag import CACHE_DIR

    patterns = []
    for directory in (STATE_DIR, CACHE_DIR.parent):
        try:
            rel = directory.resolve().relative_to(root.resolve())
        except ValueError:
            continue
        patterns.append(f"/{rel.as_posix()}/")
    return patterns


def sync_column(namespace: str, run: str, now: float | None = None) -> str:
    """The SYNC cell of `pypod ps`: the syncer's state while its process lives."""
    try:
        status = json.loads(status_file(namespace, run).read_text())
    except (OSError, ValueError):
        return "-"
    if status.get("state") == "stopped" or not _alive(int(status.get("pid", 0))):
        return "-"
    state = status.get("state", "?")
    if state == "watching":
        ago = (now or time.time()) - float(status.get("last_synced") or status.get("since") or 0)
        return f"ok ({status.get('files', 0)} paths, in sync {ago:.0f}s ago)" if ago > 5 else "ok"
    return f"{state}: {status.get('detail', '')}".rstrip(": ")


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SyncPrep:
    """What a sync needs that does not depend on the pod: its modules, the excludes and the
    agent's archive. `pypod` builds them in a thread while Kubernetes starts the pod, since
    the imports alone (pathspec's among them) held the prompt back by about 0.1 s."""

    def __init__(self, project: Project, settings: Settings, background: bool = True) -> None:
        self._done = threading.Event()
        self._error: BaseException | None = None
        self.agent_argv: list[str] = []
        self.preamble = b""
        self.excludes: dict[str, Any] = {}
        if background:
            threading.Thread(target=self._build, args=(project, settings), name="pypod-sync-prep", daemon=True).start()
        else:
            self._build(project, settings)

    def _build(self, project: Project, settings: Settings) -> None:
        try:
            from ..agent import sync_command
            from ..sync import link, syncer  # noqa: F401  (imported here for their import time)
            from ..sync.excludes import sync_excludes

            self.excludes = sync_excludes(project.root, (*settings.sync_exclude, *own_files_under(project.root)))
            # After each connection the pod's agent stays --keep-alive seconds, as long as
            # an undetached REPL waits for its client: a reconnect finds it warm.
            linger = settings.keep_alive
            self.agent_argv, self.preamble = sync_command(AGENT_PYTHON, settings.workdir, self.excludes, linger)
        except BaseException as exc:  # raised again where the sync starts, in the main thread
            self._error = exc
        finally:
            self._done.set()

    def wait(self) -> SyncPrep:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self


class LiveSync:
    """A Syncer running in a thread for one pod."""

    def __init__(
        self,
        session: Driver,
        pod: str,
        pod_uid: str,
        run: str,
        project: Project,
        settings: Settings,
        report: Callable[[str], None],
        prep: SyncPrep | None = None,
    ) -> None:
        from ..sync.link import AgentLink
        from ..sync.syncer import Syncer

        parts = (prep or SyncPrep(project, settings, background=False)).wait()
        argv = session.kubectl().exec_argv(pod, DRIVER_CONTAINER, parts.agent_argv)
        preamble = parts.preamble
        self.syncer = Syncer(
            project.root,
            settings.workdir,
            lambda inbox: AgentLink(argv, preamble, inbox),
            parts.excludes,
            state_file=state_file(session.namespace, run, pod_uid),
            status_file=status_file(session.namespace, run),
            cache_file=cache_file(project.root),
            initial=settings.sync_initial,
            report=report,
        )
        self.thread = threading.Thread(target=self.syncer.run, name="pypod-sync", daemon=True)

    def start(self) -> LiveSync:
        self.thread.start()
        return self

    def wait_first(self, timeout: float = FIRST_SYNC_TIMEOUT_S, tick: Callable[[str], None] | None = None) -> bool:
        """Block until both sides agree once; False if the sync failed or took too long."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.syncer.first_sync.wait(0.2):
                return True
            if self.syncer.health.state in ("failed", "stopped"):
                return False
            if tick:
                tick(self.syncer.health.line())
        return False

    def settle(self, quiet_s: float = 0.5, timeout: float = 5.0) -> bool:
        """Wait until the sync has had nothing to do for `quiet_s` (at most `timeout`), so
        edits the pod made just before the REPL ended are here; False if it never was."""
        deadline = time.monotonic() + timeout
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            if self.syncer.health.state in ("failed", "stopped"):
                return False
            if self.syncer.health.state == "watching" and not self.syncer.busy():
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= quiet_s:
                    return True
            else:
                quiet_since = None
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self.syncer.stop()
        self.thread.join(15)


def same_project(labels: dict[str, str] | None, project: Project) -> bool:
    """Syncing a folder into another project's pod would mix two projects' files."""
    from ..kube.manifests import LABEL_REPO
    from ..names import label_value

    return (labels or {}).get(LABEL_REPO) == label_value(project.name)


def start_beside_repl(
    session: Driver,
    pod: dict[str, Any],
    run: str,
    project: Project,
    settings: Settings,
    out: Output,
    prep: SyncPrep | None = None,
) -> LiveSync:
    """Start syncing and wait for the first agreement, so the REPL starts on the local code."""
    import sys

    def report(message: str) -> None:
        # \r\n: the terminal may be raw (the REPL's), where \n alone does not return.
        sys.stderr.write(f"\r[pypod] {message}\r\n")
        sys.stderr.flush()

    name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
    live = LiveSync(session, name, uid, run, project, settings, report, prep).start()
    out.status("sync: connecting")
    in_sync = live.wait_first(tick=lambda line: out.status(f"sync: {line}"))
    out.done()
    health = live.syncer.health
    if in_sync:
        where = f"{project.root} <-> {settings.workdir}"
        out.info(f"sync: {where}: {health.files} paths in sync ({health.watcher} in the pod)")
    else:
        out.info(f"sync: not in sync ({health.line()}); the REPL starts anyway. `pypod ps` shows the sync's health")
    return live


def sync_run(settings: Settings, project: Project, run: str) -> int:
    """`pypod sync RUN`: sync until Ctrl-C, with a status line."""
    from rich.console import Console

    from .driver import Driver, running_pod
    from .output import Output

    session = Driver(settings, Output())
    pod = running_pod(session, run)
    if not same_project(pod.metadata.labels, project):
        raise UsageError(
            f"run {run!r} is of project {(pod.metadata.labels or {}).get('pypod.dev/repo')!r}, "
            f"but this folder is {project.name!r}",
            hint="run `pypod sync` from that project's folder",
        )
    console = Console(stderr=True, highlight=False)
    live = LiveSync(
        session,
        pod.metadata.name,
        pod.metadata.uid,
        run,
        project,
        settings,
        lambda message: console.print(f"[pypod] {message}", markup=False),
    )
    console.print(f"syncing {project.root} <-> {run}:{settings.workdir} (Ctrl-C to stop)", markup=False)
    live.start()
    try:
        with console.status("connecting") as status:
            while live.thread.is_alive():
                live.thread.join(0.5)
                status.update(f"sync: {live.syncer.health.line()}")
    except KeyboardInterrupt:
        live.stop()
        console.print(f"sync stopped: {live.syncer.health.line()}", markup=False)
        return 0
    health = live.syncer.health
    if health.state == "failed":
        raise StreamError(f"sync with {run} failed: {health.detail}", hint=f"check the pod: pypod logs {run}")
    return 0
