"""Launch speed: `pypod --help` against `kubectl --help` in a clean venv, and pypod's
own overhead from invocation to the REPL prompt, net of the time Kubernetes takes to make the pod run.
Both run the pypod of a clean venv (the worktree pip-installed): what a user gets.

    python benchmarks/launch.py [--runs 5] [--venv PATH]

Starts the harness if it is not up (and stops it again afterwards).
Prints `BENCH <name> <value> <unit>` lines, and the overhead against one `kubectl exec`
into a just-started pod on the same machine (these machines differ ~2x in speed). The
anchor, julia_pod, sleeps 8 s and then polls kubectl in a loop; it needs docker and
devspace, so it cannot run here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness import cluster as harness_cluster  # noqa: E402
from harness.layout import Layout  # noqa: E402
from tests import pypodcli  # noqa: E402
from tests.pypodcli import Terminal  # noqa: E402


def bench(name: str, value: float, unit: str) -> None:
    print(f"BENCH {name} {value:.3f} {unit}", flush=True)


def time_command(argv: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def clean_venv(where: Path) -> Path:
    """A fresh venv from the real interpreter (not pyenv's shims), with the worktree
    pip-installed into it non-editable: what a user gets from `pip install pypod`."""
    base = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    subprocess.run([str(base), "-m", "venv", str(where)], check=True)
    subprocess.run([str(where / "bin" / "pip"), "install", "-q", str(REPO)], check=True)
    return where / "bin" / "pypod"


def help_ratio(pypod: Path, runs: int) -> None:
    """`pypod --help` against `kubectl --help`, in a clean venv (the issue's anchor), and
    against `python -c pass` there (what Python's own start-up costs)."""
    python = pypod.parent / "python"
    pypod_help = time_command([str(pypod), "--help"], runs)
    kubectl_help = time_command(["kubectl", "--help"], runs)
    python_pass = time_command([str(python), "-c", "pass"], runs)
    bench("help_s", pypod_help, "s")
    bench("kubectl_help_s", kubectl_help, "s (the anchor)")
    bench("help_vs_kubectl", pypod_help / kubectl_help, "ratio")
    bench("python_pass_s", python_pass, "s (clean venv)")
    bench("help_ratio", pypod_help / python_pass, "ratio (against python -c pass)")


class PodClock:
    """Watches a namespace and notes when the Job appeared and when its pod first ran."""

    def __init__(self, client, namespace: str) -> None:  # type: ignore[no-untyped-def]
        self.client = client
        self.namespace = namespace
        self.job_seen: float | None = None
        self.pod_running: float | None = None
        threading.Thread(target=self._jobs, daemon=True).start()
        threading.Thread(target=self._pods, daemon=True).start()

    def _jobs(self) -> None:
        from lightkube.resources.batch_v1 import Job

        for _event, _job in self.client.watch(Job, namespace=self.namespace):
            if self.job_seen is None:
                self.job_seen = time.monotonic()

    def _pods(self) -> None:
        from lightkube.resources.core_v1 import Pod

        for _event, pod in self.client.watch(Pod, namespace=self.namespace):
            if self.pod_running is None and pod.status and pod.status.phase == "Running":
                self.pod_running = time.monotonic()


def new_namespace(client) -> str:  # type: ignore[no-untyped-def]
    """A namespace of the benchmark's own, once its default ServiceAccount exists (pods wait for it)."""
    from lightkube.resources.core_v1 import Namespace, ServiceAccount

    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    client.create(Namespace.from_dict({"metadata": {"name": namespace}}))
    while not any(sa.metadata.name == "default" for sa in client.list(ServiceAccount, namespace=namespace)):
        time.sleep(0.1)
    return namespace


def launch_overhead(info, pypod: Path, runs: int) -> None:  # type: ignore[no-untyped-def]
    pypodcli.PYPOD[:] = [str(pypod)]  # the clean venv's pypod, as a user installs it
    from lightkube import Client, KubeConfig
    from lightkube.resources.batch_v1 import Job
    from lightkube.resources.core_v1 import Namespace, Pod

    from pypod.kube.watch import prime_decoders

    prime_decoders(Job, Pod)
    client = Client(KubeConfig.from_file(info.admin_kubeconfig))
    totals, kube_times, overheads = [], [], []
    with tempfile.TemporaryDirectory() as home:
        for _ in range(runs):
            namespace = new_namespace(client)
            clock = PodClock(client, namespace)
            time.sleep(0.5)  # let the watches start
            env = dict(
                os.environ,
                HOME=home,
                KUBECONFIG=info.admin_kubeconfig,
                KUBERNETES_NAMESPACE=namespace,
                PYPOD_IMAGE=info.base_image,
                PYPOD_KUBECTL=info.kubectl,
            )
            started = time.monotonic()
            term = Terminal([], env, cwd=Path(home))
            term.expect(">>> ", 120)
            prompt = time.monotonic()
            term.line("exit()")
            term.wait(60)
            assert clock.job_seen and clock.pod_running, "the watches missed the run"
            kube_time = clock.pod_running - clock.job_seen
            totals.append(prompt - started)
            kube_times.append(kube_time)
            overheads.append(prompt - started - kube_time)
            client.delete(Namespace, namespace)
    bench("launch_total_s", statistics.median(totals), "s")
    bench("launch_kubernetes_pod_start_s", statistics.median(kube_times), "s")
    bench("launch_overhead_s", statistics.median(overheads), "s")
    bench("launch_overhead_julia_pod_sleep_s", 8.0, "s (julia_pod's fixed sleep before polling; not run here)")
    floor = exec_floor(info, client, runs)
    bench("launch_exec_floor_s", floor, "s (one `kubectl exec POD -- true` into a pod as it starts running)")
    ratio = statistics.median(overheads) / floor
    bench("launch_overhead_vs_exec_floor", ratio, "ratio (this machine's speed divided out)")


def exec_floor(info, client, runs: int) -> float:  # type: ignore[no-untyped-def]
    """What one exec into a pod that has just started running costs here: pypod needs at
    least one such exec (its REPL's) before a prompt, so its overhead is read against it."""
    from lightkube.resources.core_v1 import Namespace, Pod

    namespace = new_namespace(client)
    samples = []
    try:
        for i in range(runs):
            name = f"floor-{i}"
            container = {"name": "driver", "image": info.base_image, "command": ["sleep", "600"]}
            spec = {"terminationGracePeriodSeconds": 0, "containers": [container]}
            client.create(Pod.from_dict({"metadata": {"name": name, "namespace": namespace}, "spec": spec}))
            for _event, pod in client.watch(Pod, namespace=namespace, fields={"metadata.name": name}):
                if pod.status and pod.status.phase == "Running":
                    break
            started = time.perf_counter()
            subprocess.run(
                [info.kubectl, f"--kubeconfig={info.admin_kubeconfig}", "-n", namespace, "exec", name, "--", "true"],
                check=True,
                capture_output=True,
            )
            samples.append(time.perf_counter() - started)
    finally:
        client.delete(Namespace, namespace)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--venv", help="reuse this clean venv (pypod installed in it) for every figure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        pypod = Path(args.venv) / "bin" / "pypod" if args.venv else clean_venv(Path(scratch) / "venv")
        help_ratio(pypod, max(args.runs, 15))
        layout = Layout.default()
        started_here = not harness_cluster.is_up(layout)
        info = harness_cluster.up(layout, report=lambda m: print(m, file=sys.stderr))
        try:
            launch_overhead(info, pypod, args.runs)
        finally:
            if started_here:
                harness_cluster.down(layout, report=lambda m: print(m, file=sys.stderr))


if __name__ == "__main__":
    main()
