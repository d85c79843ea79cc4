"""Port-forwards that last the whole session.

`kubectl port-forward` exits for good when one connection to the pod fails (say,
a browser asks before the server in the pod listens). A forward here is a small
supervisor that starts it again, until the session stops it.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Sequence

from .guard import track_child, untrack_child

RESTART_DELAY_S = 0.3


class PortForward:
    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.restarts = 0
        self._stopped = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, daemon=True)

    def start(self) -> PortForward:
        self._thread.start()
        return self

    def _supervise(self) -> None:
        while not self._stopped.is_set():
            with self._lock:
                if self._stopped.is_set():
                    return
                self._proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                # Nothing ends a forward on its own: a killed pypod's guard must.
                track_child(self._proc.pid)
            self._proc.wait()
            untrack_child(self._proc.pid)
            if self._stopped.wait(RESTART_DELAY_S):
                return
            self.restarts += 1

    def stop(self) -> None:
        with self._lock:
            self._stopped.set()
            if self._proc is not None and self._proc.poll() is None:
                self._proc.terminate()
        self._thread.join(timeout=5)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now (for a local forward, or a listener announced before it binds)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
