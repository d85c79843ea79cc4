"""One run's driver Job and pod: create, wait, logs, the REPL relay, port-forwards.
Used by the run's orchestrator (session) and by ps/logs/attach/rm (manage)."""

from __future__ import annotations

import contextlib
import getpass
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import agent
from ..errors import AlreadyExists, Forbidden, NotFound, PypodError, StreamError
from ..kube.client import Connection
from ..kube.manifests import DRIVER_CONTAINER, JOB_NAME_LABEL
from ..settings import Settings
from . import history
from .forward import PortForward
from .output import Output

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..kube.kubectl import Kubectl
    from ..kube.queue import LocalQueueInfo, QueueTarget
    from ..kube.status import PodReport
    from .terminal import StartedStream

# Exit code when the stream to a live REPL is lost for good: the run goes on; reattach.
LOST_CONNECTION = StreamError.exit_code


def local_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return ""


def history_path(settings: Settings) -> Path:
    return Path(settings.history_file).expanduser()


@dataclass(frozen=True)
class ReplEnd:
    """How a relayed REPL ended: its exit code, and what its environment gained meanwhile."""

    code: int
    installed: list[dict[str, Any]] = field(default_factory=list)


def warn_untracked(project_root: Path, end: ReplEnd, out: Output) -> None:
    """At a REPL's end: one warning for packages it installed that the project's files do not list."""
    if not end.installed:
        return
    from ..deps.untracked import check_untracked

    try:
        warning = check_untracked(project_root, end.installed)
    except PypodError:  # files that cannot be read now: the session's end says nothing of it
        return
    if warning:
        out.info(warning)


class Driver(Connection):
    """One run's driver Job and pod on the cluster, reached through the API and kubectl:
    the I/O around the pure plan."""

    def __init__(self, settings: Settings, out: Output) -> None:
        super().__init__(settings.kubeconfig, settings.context, settings.namespace)
        self.settings = settings
        self.out = out
        self._kubectl: Kubectl | None = None

    def kubectl(self) -> Kubectl:
        """Found on first use: a job streams its logs through the API and needs no kubectl."""
        from ..kube.kubectl import Kubectl, find_kubectl

        if self._kubectl is None:
            self._kubectl = Kubectl(find_kubectl(), self.target)
        return self._kubectl

    def create_job(self, job: dict[str, Any]) -> tuple[str, str]:
        """Create the Job; its name (the apiserver's, with generateName) and uid."""
        from lightkube import codecs

        job.setdefault("metadata", {})["namespace"] = self.namespace
        with self.api("create", "jobs", job["metadata"].get("name", "")):
            created = self.client.create(codecs.from_dict(job), namespace=self.namespace)
        return created.metadata.name, created.metadata.uid

    def check_queue(self, queue: str) -> LocalQueueInfo | None:
        """Fail at once when the LocalQueue is missing; None when there is no queue or it cannot be read."""
        from ..kube.queue import find_local_queue

        if not queue:
            return None
        with self.api("list", "localqueues.kueue.x-k8s.io"):
            return find_local_queue(self.client, self.namespace, queue)

    def queue_target(self, info: LocalQueueInfo | None, queue: str, job_uid: str) -> QueueTarget | None:
        from ..kube.queue import QueueTarget

        if not queue:
            return None
        if info is None:
            return QueueTarget(queue, job_uid)
        return QueueTarget(queue, job_uid, info.version, info.cluster_queue)

    def check_gpus(self, gpu: int, product: str | None) -> None:
        """Fail at once when no node offers `gpu` GPUs of `product`; go on when nodes are unreadable."""
        from ..kube.gpus import check_gpu_request, read_gpu_offer

        if not gpu and not product:
            return
        with self.api("list", "nodes"):
            offer = read_gpu_offer(self.client)
        if offer is not None:
            check_gpu_request(offer, gpu, product)

    def store_secret(self, manifest: dict[str, Any], replace: bool = False) -> bool:
        """Create the Secret (or with `replace`, replace one of that name); True if replaced.
        Its data is never printed: errors name the Secret only."""
        from lightkube import codecs
        from lightkube.resources.core_v1 import Secret

        name = manifest["metadata"]["name"]
        manifest = {**manifest, "metadata": {**manifest["metadata"], "namespace": self.namespace}}
        try:
            with self.api("create", "secrets", name):
                self.client.create(codecs.from_dict(manifest), namespace=self.namespace)
            return False
        except AlreadyExists:
            if not replace:
                raise AlreadyExists(
                    f"a Secret {name} already exists in namespace {self.namespace}",
                    hint="pass --force to replace it, or pick another name",
                ) from None
        with self.api("delete", "secrets", name):
            self.client.delete(Secret, name, namespace=self.namespace)
        with self.api("create", "secrets", name):
            self.client.create(codecs.from_dict(manifest), namespace=self.namespace)
        return True

    def secret_exists(self, name: str) -> bool | None:
        """Whether the Secret exists; None when we may not look (pods mount it regardless)."""
        from lightkube.resources.core_v1 import Secret

        try:
            with self.api("get", "secrets", name):
                self.client.get(Secret, name, namespace=self.namespace)
        except NotFound:
            return False
        except Forbidden:
            return None
        return True

    def delete_job(self, name: str) -> None:
        """Delete the run's Job and, in the background, its pod; gone already is fine."""
        from lightkube.resources.batch_v1 import Job
        from lightkube.types import CascadeType

        with contextlib.suppress(NotFound), self.api("delete", "jobs", name):
            self.client.delete(Job, name, namespace=self.namespace, cascade=CascadeType.BACKGROUND)

    def wait_running(
        self, name: str, accept_terminated: bool, queue_target: QueueTarget | None = None
    ) -> tuple[Any, Any]:
        """Watch until the pod runs; on failure delete the Job and show its last events."""
        from ..kube.watch import RunWatcher, wait_until_running

        watcher = RunWatcher(self.client, self.namespace, name, queue_target).start()
        started = time.monotonic()
        shown: set[str] = set()

        def show(report: PodReport, elapsed: float) -> None:
            self.out.status(f"[{elapsed:4.0f}s] {name}: {report.line}")
            self._note_admission(name, report, elapsed, shown)

        try:
            report = wait_until_running(
                watcher, self.settings.pending_timeout, show, accept_terminated=accept_terminated
            )
            self._note_admission(name, report, time.monotonic() - started, shown)
        except PypodError:
            self.out.done()
            for line in watcher.snapshot().details:
                self.out.info(f"  log: {line}")
            for line in watcher.state.event_lines():
                self.out.info(f"  event: {line}")
            self.delete_job(name)
            watcher.stop()
            raise
        self.out.done()
        return watcher, report

    def _note_admission(self, name: str, report: PodReport, elapsed: float, shown: set[str]) -> None:
        """Kueue's turns, each once as a lasting line (the live line is gone off a terminal)."""
        view = report.workload
        if view is None or view.phase in shown:
            return
        if view.phase == "admitted":
            cq = f" into ClusterQueue {view.cluster_queue}" if view.cluster_queue else ""
            waited = f" after {elapsed:.0f}s" if "pending" in shown else ""
            self.out.info(f"{name}: admitted by Kueue{cq}{waited}")
        elif view.phase in ("pending", "evicted", "reserved") and view.message:
            self.out.info(f"{name}: {report.line}")
        else:
            return
        shown.add(view.phase)

    def pod_name(self, watcher: Any) -> str:
        return watcher.state.pod["metadata"]["name"]

    # -- job mode -----------------------------------------------------------------
    def follow_logs(self, pod: str, watcher: Any) -> int:
        with self.api("get", "pods/log", pod):
            for line in self.client.log(pod, namespace=self.namespace, container=DRIVER_CONTAINER, follow=True):
                sys.stdout.write(line)
                sys.stdout.flush()
        # The log stream ends when the container does; its exit code follows shortly in the status.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            report = watcher.snapshot()
            if report.exit_code is not None:
                return report.exit_code
            with contextlib.suppress(Exception):
                watcher.updates.get(timeout=0.5)
        raise PypodError(f"the log stream of {pod} ended but its exit code never arrived", hint="see `pypod ps`")

    # -- interactive mode -----------------------------------------------------------
    def attach_argv(self, pod: str) -> list[str]:
        return self.kubectl().exec_argv(pod, DRIVER_CONTAINER, [agent.ATTACH_ENTRYPOINT])

    def start_repl(self, pod: str, seed: list[str], env: dict[str, str] | None = None) -> StartedStream:
        """Start the REPL in the pod now, while pypod does other work; see relay_repl."""
        from .terminal import start_stream

        return start_stream(self.attach_argv(pod), history=seed, env=env, banner=not self.out.quiet)

    def relay_repl(
        self,
        pod: str,
        name: str,
        seed: list[str],
        history_path: Path | None,
        env: dict[str, str] | None = None,
        started: StartedStream | None = None,
        on_end: Callable[[], None] | None = None,
    ) -> ReplEnd:
        from .terminal import run_terminal

        result = run_terminal(
            self.attach_argv(pod),
            history=seed,
            env=env,
            banner=not self.out.quiet,
            started=started,
            on_end=on_end,
            on_reconnect=lambda n: self.out.info(f"\r\n[pypod] connection lost; reconnecting (try {n})\r"),
        )
        if result.exit_code is None:
            self.out.info(f"[pypod] lost the connection; the REPL lives on. Reconnect with: pypod attach {name}")
            return ReplEnd(LOST_CONNECTION)
        if history_path is not None:
            history.merge_back(history_path, result.new_history)
        return ReplEnd(result.exit_code, result.installed)

    def port_forwards(self, pod: str, extra: tuple[str, ...] = ()) -> list[PortForward]:
        forwards = []
        kubectl = self.kubectl()
        for mapping in (*self.settings.port_forwards, *extra):
            local, _, remote = mapping.partition(":")
            remote = remote or local
            forwards.append(PortForward(kubectl.port_forward_argv(pod, f"{local}:{remote}")).start())
            self.out.info(f"port-forward: http://127.0.0.1:{local} -> {pod}:{remote}")
        return forwards


def run_pods(driver: Driver, name: str) -> list[Any]:
    from lightkube.resources.core_v1 import Pod

    with driver.api("list", "pods"):
        return list(driver.client.list(Pod, namespace=driver.namespace, labels={JOB_NAME_LABEL: name}))


def driver_pod(driver: Driver, name: str) -> Any:
    pods = run_pods(driver, name)
    if not pods:
        raise NotFound(
            f"no pod for run {name!r} in namespace {driver.namespace!r}",
            hint="`pypod ps` lists your runs; add -n NAMESPACE if it runs elsewhere",
        )
    pods.sort(key=lambda p: p.metadata.creationTimestamp)
    return pods[-1]


def running_pod(driver: Driver, run: str) -> Any:
    pod = driver_pod(driver, run)
    if pod.status is None or pod.status.phase != "Running":
        phase = pod.status.phase if pod.status else "unknown"
        raise NotFound(f"run {run!r} is not running (phase {phase})", hint="start one with `pypod`")
    return pod
