"""kubectl for the streams lightkube does not carry: interactive exec and port-forward.

Only argv building lives here (pure); callers run the processes.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from ..errors import StreamError
from .client import KubeTarget


def find_kubectl() -> str:
    explicit = os.environ.get("PYPOD_KUBECTL")
    if explicit:
        return explicit
    found = shutil.which("kubectl")
    if not found:
        raise StreamError(
            "kubectl is not on PATH; pypod uses it for exec, attach and port-forward",
            hint="install kubectl, or set PYPOD_KUBECTL to its path",
        )
    return found


@dataclass(frozen=True)
class Kubectl:
    binary: str
    target: KubeTarget

    def base(self) -> list[str]:
        argv = [self.binary]
        if self.target.kubeconfig:
            argv.append(f"--kubeconfig={self.target.kubeconfig}")
        if self.target.context:
            argv.append(f"--context={self.target.context}")
        argv.append(f"--namespace={self.target.namespace}")
        return argv

    def exec_argv(self, pod: str, container: str, command: list[str], stdin: bool = True) -> list[str]:
        return [*self.base(), "exec", *(["-i"] if stdin else []), pod, "-c", container, "--", *command]

    def port_forward_argv(self, pod: str, mapping: str) -> list[str]:
        return [*self.base(), "port-forward", "--address=127.0.0.1", f"pod/{pod}", mapping]
