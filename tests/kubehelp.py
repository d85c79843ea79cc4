"""Small helpers the integration tests share: waiting on pods by watch, running kubectl."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

from lightkube import Client
from lightkube.resources.core_v1 import Pod


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def wait_pod(kube: Client, namespace: str, name: str, done: Callable[[Pod], bool], timeout: float = 120) -> Pod:
    """Watch one pod until `done(pod)`; returns that pod. Fails with its last status."""
    deadline = time.monotonic() + timeout
    last: Pod | None = None
    while time.monotonic() < deadline:
        remaining = max(1, int(deadline - time.monotonic()))
        try:
            for _event, pod in kube.watch(
                Pod, namespace=namespace, fields={"metadata.name": name}, server_timeout=remaining
            ):
                last = pod
                if done(pod):
                    return pod
        except Exception:  # a dropped watch is retried until the deadline
            time.sleep(0.2)
    status = last.status if last else None
    raise AssertionError(f"pod {namespace}/{name} not done within {timeout}s; last status: {status}")


def phase(*phases: str) -> Callable[[Pod], bool]:
    return lambda pod: pod.status is not None and pod.status.phase in phases


def pod_manifest(name: str, image: str, command: list[str], **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": image, "command": command}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "containers": [container], **spec},
    }


def kubectl(
    kubectl_bin: str, kubeconfig: str, *args: str, timeout: float = 60, **kw: Any
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [kubectl_bin, f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True, timeout=timeout, **kw
    )
