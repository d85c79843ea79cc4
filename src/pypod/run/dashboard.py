"""The Dask dashboard of a run, on this machine.

A K8sCluster writes its dashboard's port into the driver pod's annotations; from
there `pypod dashboard RUN` forwards it (supervised, like every forward), and an
interactive session forwards it on its own as soon as the annotation appears: the
session already watches its pod and supervises its forwards, and a forward it owns
ends with it, where a printed command would need a second terminal.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import NotFound
from ..kube.workers import ANNOTATION_DASHBOARD
from .driver import Driver, running_pod
from .forward import PortForward, free_port

CHECK_EVERY_S = 3.0


def dashboard_port(pod: dict[str, Any] | None) -> int | None:
    """The port the pod's annotation names, if it names one."""
    value = (((pod or {}).get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_DASHBOARD, "")
    return int(value) if value.isdigit() and 0 < int(value) < 65536 else None


def dashboard_url(local_port: int) -> str:
    return f"http://127.0.0.1:{local_port}/status"


def local_port_for(remote: int) -> int:
    """The pod's port number here too when it is free, so the URL reads as Dask's does."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", remote))
        except OSError:
            return free_port()
    return remote


def wait_listening(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
        time.sleep(0.1)
    return False


class DashboardForward:
    """Forwards a pod's dashboard port to a local one while the annotation names it."""

    def __init__(self, driver: Driver, pod: str, announce: Callable[[str], None]) -> None:
        self.driver = driver
        self.pod = pod
        self.announce = announce
        self.remote: int | None = None
        self.local: int | None = None
        self._forward: PortForward | None = None

    def follow(self, remote: int | None, local: int | None = None) -> None:
        """Forward `remote` (None: stop forwarding); announces each new local URL."""
        if remote == self.remote:
            return
        self.stop()
        self.remote = remote
        if remote is None:
            return
        self.local = local or local_port_for(remote)
        argv = self.driver.kubectl().port_forward_argv(self.pod, f"{self.local}:{remote}")
        self._forward = PortForward(argv).start()
        wait_listening(self.local, 10)
        self.announce(dashboard_url(self.local))

    def stop(self) -> None:
        if self._forward is not None:
            self._forward.stop()
            self._forward = None
        self.remote = None


class SessionDashboard:
    """In an interactive session: follows the run's watched pod and forwards the
    dashboard of a K8sCluster started in the REPL, printing its local URL."""

    def __init__(self, driver: Driver, watcher: Any, pod: str) -> None:
        self.watcher = watcher
        self.forward = DashboardForward(
            driver, pod, lambda url: driver.out.info(f"\r\n[pypod] Dask dashboard: {url}\r")
        )
        self._stopped = threading.Event()
        self._following = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SessionDashboard:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopped.is_set():
            with contextlib.suppress(queue.Empty):
                self.watcher.updates.get(timeout=1.0)
            with self._following:
                if self._stopped.is_set():
                    return
                self.forward.follow(dashboard_port(self.watcher.state.pod))

    def stop(self) -> None:
        """At once, not after the thread's next wake-up (up to 1 s, on the way out of every
        session): the lock keeps a forward from starting after this one is stopped."""
        with self._following:
            self._stopped.set()
            self.forward.stop()


def open_dashboard(driver: Driver, run: str, local_port: int | None) -> int:
    """`pypod dashboard RUN`: forward the run's dashboard here until Ctrl-C or the run ends."""
    pod = running_pod(driver, run)
    remote = dashboard_port(pod.to_dict())
    if remote is None:
        raise NotFound(
            f"run {run!r} has no Dask dashboard: no K8sCluster has started in it (its pod has no "
            f"{ANNOTATION_DASHBOARD} annotation)",
            hint="start a K8sCluster in the run, then run this again",
        )
    forward = DashboardForward(
        driver,
        pod.metadata.name,
        lambda url: print(f"Dask dashboard of {run}: {url} (Ctrl-C stops the forward)", flush=True),
    )
    try:
        forward.follow(remote, local_port)
        while True:
            time.sleep(CHECK_EVERY_S)
            try:
                current = running_pod(driver, run)
            except NotFound:
                driver.out.info(f"run {run} has ended; the dashboard forward stops")
                return 0
            remote = dashboard_port(current.to_dict())
            if remote is None:
                driver.out.info(f"the K8sCluster in {run} has closed; the dashboard forward stops")
                return 0
            forward.follow(remote, forward.local)
    except KeyboardInterrupt:
        return 0
    finally:
        forward.stop()
