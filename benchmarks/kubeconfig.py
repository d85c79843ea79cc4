"""What kubectl-style kubeconfig handling costs per API call: pypod's transport
(exec plugin credential cached) against lightkube's own client on a token
kubeconfig, and the one-off cost of connecting and of the first plugin run.

    python benchmarks/kubeconfig.py

Starts the harness if it is not up (and stops it again afterwards).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from harness import cluster as harness_cluster  # noqa: E402
from harness.layout import Layout  # noqa: E402

CALLS = 200


def bench(name: str, value: float, unit: str) -> None:
    print(f"BENCH {name} {value:.3f} {unit}", flush=True)


def exec_kubeconfig(folder: Path, admin_kubeconfig: str) -> Path:
    admin = yaml.safe_load(Path(admin_kubeconfig).read_text())
    token = admin["users"][0]["user"]["token"]
    plugin = folder / "plugin"
    answer = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": {"token": token}}
    plugin.write_text(f"#!{sys.executable}\nprint({json.dumps(json.dumps(answer))})\n")
    plugin.chmod(0o700)
    cluster = admin["clusters"][0]["cluster"]
    config = {
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [
            {
                "name": "u",
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1",
                        "command": str(plugin),
                        "interactiveMode": "Never",
                    }
                },
            }
        ],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = folder / "config"
    path.write_text(yaml.safe_dump(config))
    return path


def per_call_ms(*clients) -> list[float]:  # type: ignore[no-untyped-def]
    """Median time of one GET per client, calls interleaved so load on the machine hits all alike."""
    from lightkube.resources.core_v1 import Namespace

    samples: list[list[float]] = [[] for _ in clients]
    for _ in range(CALLS):
        for client, times in zip(clients, samples, strict=True):
            started = time.perf_counter()
            client.get(Namespace, "default")
            times.append(time.perf_counter() - started)
    return [statistics.median(times) * 1000 for times in samples]


def main() -> None:
    from lightkube import Client, KubeConfig

    from pypod.kube.client import connect

    layout = Layout.default()
    started_here = not harness_cluster.is_up(layout)
    info = harness_cluster.up(layout, report=lambda m: print(m, file=sys.stderr))
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = exec_kubeconfig(Path(folder), info.admin_kubeconfig)
            from lightkube.resources.core_v1 import Namespace

            connect(str(path), None, "default")  # imports and caches out of the way
            started = time.perf_counter()
            client, _target = connect(str(path), None, "default")
            bench("kubeconfig_connect", (time.perf_counter() - started) * 1000, "ms")

            started = time.perf_counter()
            client.get(Namespace, "default")  # runs the plugin once
            bench("kubeconfig_first_call_with_exec_plugin", (time.perf_counter() - started) * 1000, "ms")
            pypod_ms, plain_ms = per_call_ms(client, Client(KubeConfig.from_file(info.admin_kubeconfig)))
            bench("kubeconfig_call_pypod_transport_median", pypod_ms, "ms")
            bench("kubeconfig_call_lightkube_plain_median", plain_ms, "ms")
            bench("kubeconfig_call_overhead", pypod_ms - plain_ms, "ms")
    finally:
        if started_here:
            harness_cluster.down(layout, report=lambda m: print(m, file=sys.stderr))


if __name__ == "__main__":
    main()
