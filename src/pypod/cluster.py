"""Dask workers as pods, from inside a driver pod: the Python counterpart of
K8sClusterManagers.jl's `addprocs(K8sClusterManager(n; cpu, memory, pending_timeout))`.

>>> from pypod import K8sCluster
>>> cluster = K8sCluster(3, cpu=0.5, memory="512Mi", pending_timeout=30)   # doctest: +SKIP
>>> client = cluster.get_client()                                          # doctest: +SKIP
>>> client.gather(client.map(lambda x: x * x, range(10)))                  # doctest: +SKIP

The scheduler runs in this process. Each worker is a bare pod (restartPolicy
Never) owned by the driver pod, so Kubernetes deletes the workers with it, even
after `kill -9`. One watch follows all of the cluster's pods: workers still
pending after `pending_timeout` are deleted with a warning that carries the
scheduler's message, and the cluster carries on with those that came up; a
worker that ends is reported with its reason (OOMKilled, Evicted, Error and exit
code, Deleted) in a warning and in `worker_events()`, and its pod is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import secrets
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    from distributed.deploy.spec import ProcessInterface, SpecCluster
    from distributed.scheduler import Scheduler
except ImportError as exc:  # the usual cause: a driver image without dask
    raise ImportError(
        "pypod.K8sCluster needs dask's `distributed` (and `lightkube`) where it runs: "
        "add `distributed` and `lightkube` to the project's requirements"
    ) from exc

from .errors import Forbidden, PypodError, UsageError
from .gitsource import copy_to_worker
from .kube.podenv import parse_threads
from .kube.status import FATAL_WAITING, explain
from .kube.workers import LABEL_CLUSTER, WorkerEnd, worker_end, worker_pod_spec
from .run.forward import free_port

logger = logging.getLogger("pypod.cluster")
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
RBAC_HINT = "the driver's service account needs pods: create, get, list, watch, delete; `pypod rbac` prints that Role"


class WorkerPodWarning(UserWarning):
    """A worker pod did not start, or ended."""


def _api_error(exc: Exception, verb: str, namespace: str) -> PypodError:
    code = getattr(getattr(exc, "status", None), "code", None)
    message = getattr(getattr(exc, "status", None), "message", "") or str(exc)
    if code == 403:
        return Forbidden(f"not allowed to {verb} pods in namespace {namespace!r}: {message}", hint=RBAC_HINT)
    return PypodError(f"could not {verb} a worker pod ({code}): {message}")


class WorkerPod(ProcessInterface):
    """One worker: its pod is created on start and deleted on close."""

    def __init__(self, scheduler: str, name: str, manager: _PodManager, **spec: Any) -> None:
        super().__init__(scheduler=scheduler, name=name)
        self.name = name
        self.manager = manager
        self.scheduler = scheduler
        self.spec = spec

    async def start(self) -> None:
        manifest = self.manager.manifest(self.name, self.scheduler)
        await self.manager.create(manifest)
        await super().start()

    async def close(self) -> None:
        await self.manager.delete(self.name)
        await super().close()


class _PodManager:
    """The API side of a K8sCluster: creates and deletes pods, and runs the one watch."""

    def __init__(self, cluster: K8sCluster) -> None:
        self.cluster = cluster
        self.client: Any = None
        self.pods: dict[str, dict[str, Any]] = {}
        self.created_at: dict[str, float] = {}
        self.running: set[str] = set()
        self.ended: dict[str, WorkerEnd] = {}
        self.deleting: set[str] = set()
        self.changed = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.log_tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        from lightkube.resources.core_v1 import Pod

        from .kube.client import connect_async
        from .kube.watch import prime_decoders

        prime_decoders(Pod)
        # kubectl's rules (merged $KUBECONFIG, exec plugins), else the pod's service account.
        self.client = connect_async(self.cluster.namespace, field_manager="pypod-cluster")
        self.tasks = [asyncio.create_task(self._watch()), asyncio.create_task(self._enforce_pending_timeout())]

    def manifest(self, name: str, scheduler: str) -> dict[str, Any]:
        c = self.cluster
        pod = worker_pod_spec(
            image=c.image,
            scheduler_address=scheduler,
            cluster_id=c.cluster_id,
            driver=c.driver_name,
            namespace=c.namespace,
            cpu=c.cpu,
            memory=c.memory,
            gpu=c.gpu,
            name=name,
            service_account=c.service_account,
            env=c.env,
            labels=c.labels,
            node_selector=c.node_selector,
            tolerations=c.tolerations,
            owner=c.owner,
            death_timeout=c.death_timeout,
            threads=c.threads,
        )
        if c.git_driver is not None:
            # A --git driver's code: the same initContainer fetches the same commit.
            pod = copy_to_worker(c.git_driver, pod, os.environ.get("PYTHONPATH", ""))
        return c.configure(pod) if c.configure else pod

    async def create(self, manifest: dict[str, Any]) -> None:
        from lightkube import codecs
        from lightkube.core.exceptions import ApiError

        name = manifest["metadata"]["name"]
        self.created_at[name] = time.monotonic()
        try:
            await self.client.create(codecs.from_dict(manifest), namespace=self.cluster.namespace)
        except ApiError as exc:
            raise _api_error(exc, "create", self.cluster.namespace) from exc

    async def delete(self, name: str) -> None:
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.core_v1 import Pod

        self.deleting.add(name)
        task = self.log_tasks.pop(name, None)
        if task:
            task.cancel()
        try:
            await self.client.delete(Pod, name, namespace=self.cluster.namespace, grace_period=0)
        except ApiError as exc:
            if exc.status.code != 404:
                raise _api_error(exc, "delete", self.cluster.namespace) from exc

    async def _watch(self) -> None:
        from lightkube.resources.core_v1 import Pod

        from .kube.watch import _retry_with_backoff

        labels = {LABEL_CLUSTER: self.cluster.cluster_id}
        async for event, obj in self.client.watch(
            Pod, namespace=self.cluster.namespace, labels=labels, on_error=_retry_with_backoff
        ):
            pod = obj.to_dict()
            name = pod["metadata"]["name"]
            if event == "DELETED":
                self.pods.pop(name, None)
                if name not in self.deleting and name not in self.ended:
                    self._end(WorkerEnd(name, name, "Deleted", "the pod was deleted by someone else"))
            else:
                self.pods[name] = pod
                self._observe(name, pod)
            self.changed.set()

    def _observe(self, name: str, pod: dict[str, Any]) -> None:
        # Retired workers (scaled away) end by design: nothing to report.
        if name in self.ended or name in self.deleting or name not in self.cluster.worker_spec:
            return
        end = worker_end(pod)
        if end is not None:
            self._end(end)
            return
        report = explain(None, pod)
        if report.state == "running":
            if name not in self.running:
                self.running.add(name)
                if self.cluster.stream_logs:
                    self.log_tasks[name] = asyncio.create_task(self._stream_log(name))
            return
        waiting = ((pod.get("status") or {}).get("containerStatuses") or [{}])[0].get("state", {}).get("waiting", {})
        if waiting.get("reason") in FATAL_WAITING:
            self._end(WorkerEnd(name, name, waiting["reason"], waiting.get("message", "")))

    async def _enforce_pending_timeout(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for name, created in list(self.created_at.items()):
                if name in self.running or name in self.ended or name in self.deleting:
                    continue
                if now - created > self.cluster.pending_timeout:
                    pod = self.pods.get(name)
                    line = explain(None, pod).line if pod else "the pod was never seen"
                    phase = ((pod or {}).get("status") or {}).get("phase", "unknown")
                    self._end(
                        WorkerEnd(
                            name,
                            name,
                            "PendingTimeout",
                            f"still {phase} after {self.cluster.pending_timeout:g}s: {line}",
                        )
                    )

    def _end(self, end: WorkerEnd) -> None:
        """Report a worker's end, delete its pod, and drop it from the cluster's spec."""
        self.ended[end.worker] = end
        self.cluster._events.append(end)
        warnings.warn(str(end), WorkerPodWarning, stacklevel=1)
        logger.warning("%s", end)
        self.changed.set()
        forget = asyncio.create_task(self.cluster._forget(end.worker))
        self.tasks.append(forget)  # held, so the task is not collected before it runs

    async def _stream_log(self, name: str) -> None:
        try:
            async for line in self.client.log(name, namespace=self.cluster.namespace, follow=True):
                print(f"From worker {name}: {line}", end="" if line.endswith("\n") else "\n", flush=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the worker went away mid-stream
            logger.debug("log stream of %s ended: %s", name, exc)

    async def settle(self, names: set[str], timeout: float) -> None:
        """Wait until each pod of `names` is running or has ended."""
        deadline = time.monotonic() + timeout
        while not names <= (self.running | set(self.ended)):
            self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=min(remaining, 1.0))

    async def close(self) -> None:
        for task in [*self.tasks, *self.log_tasks.values()]:
            task.cancel()
        if self.client is not None:
            from lightkube.resources.core_v1 import Pod

            # Whatever of ours is left (pods that ended, pods from a failed start).
            try:
                labels = {LABEL_CLUSTER: self.cluster.cluster_id}
                async for pod in self.client.list(Pod, namespace=self.cluster.namespace, labels=labels):
                    await self.delete(pod.metadata.name)
            except Exception as exc:  # close must not fail on a cluster that is already gone
                logger.warning("could not delete the worker pods: %s", exc)
            await self.client.close()


def _driver_pod() -> dict[str, Any] | None:
    """This pod, read from the API by its own name; None outside a pod."""
    if not (SERVICE_ACCOUNT_DIR / "token").exists():
        return None
    from lightkube import Client
    from lightkube.core.exceptions import ApiError
    from lightkube.resources.core_v1 import Pod

    namespace = (SERVICE_ACCOUNT_DIR / "namespace").read_text().strip()
    name = os.environ.get("POD_NAME") or os.environ.get("HOSTNAME", "")
    client = Client(namespace=namespace)
    try:
        return client.get(Pod, name, namespace=namespace).to_dict()
    except ApiError as exc:
        if exc.status.code == 403:
            raise Forbidden(
                f"not allowed to get pods in namespace {namespace!r} (reading the driver pod {name})", hint=RBAC_HINT
            ) from exc
        raise


class K8sCluster(SpecCluster):
    """A Dask cluster whose workers are pods beside the driver pod.

    Parameters mirror K8sClusterManagers.jl: ``n_workers``, ``cpu``, ``memory``,
    ``gpu`` (nvidia.com/gpu), ``pending_timeout`` (seconds a worker may stay
    pending), and ``configure``: a function that gets each worker pod as a dict
    and returns it, applied last. ``image``, ``namespace`` and
    ``service_account`` default to the driver pod's own; outside a pod they must
    be given, with ``scheduler_host`` (an address the workers can reach).
    ``threads`` sizes the workers' thread pools (OMP_NUM_THREADS and the rest):
    "auto" (``cpu`` rounded up, as ``--nthreads``), "off", or a count.
    A ``pypod --git`` driver's code reaches the workers the same way: its
    initContainer and volume are copied into each worker pod, the checkout is
    their working directory and on their PYTHONPATH (``git_source=False`` does not).
    """

    def __init__(
        self,
        n_workers: int = 0,
        *,
        cpu: str | float = 1,
        memory: str = "2Gi",
        gpu: int = 0,
        image: str | None = None,
        namespace: str | None = None,
        service_account: str | None = None,
        env: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        node_selector: dict[str, str] | None = None,
        tolerations: list[dict[str, Any]] | None = None,
        pending_timeout: float = 180,
        configure: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        scheduler_host: str | None = None,
        scheduler_port: int = 0,
        death_timeout: int = 60,
        threads: str | int = "auto",
        stream_logs: bool = False,
        git_source: bool = True,
        asynchronous: bool = False,
        **kwargs: Any,
    ) -> None:
        self.cpu, self.memory, self.gpu = cpu, memory, gpu
        self.env, self.labels = dict(env or {}), dict(labels or {})
        self.node_selector, self.tolerations = node_selector, tolerations
        self.pending_timeout, self.configure = pending_timeout, configure
        self.death_timeout, self.stream_logs = death_timeout, stream_logs
        self.threads = parse_threads(threads)
        self._events: list[WorkerEnd] = []
        driver = _driver_pod()
        self.git_driver = driver if git_source else None
        if driver is None:
            warnings.warn(
                "not running in a pod: the worker pods have no owner and outlive this process unless close() runs",
                WorkerPodWarning,
                stacklevel=2,
            )
            missing = [
                n for n, v in (("image", image), ("namespace", namespace), ("scheduler_host", scheduler_host)) if not v
            ]
            if missing:
                raise UsageError(
                    f"outside a pod, K8sCluster needs {', '.join(missing)}",
                    hint="pass them, or create the cluster from a driver pod started by pypod",
                )
            self.driver_name, self.owner = "pypod", None
        else:
            meta, spec = driver["metadata"], driver["spec"]
            containers = spec["containers"]
            main = next((c for c in containers if c["name"] == "driver"), containers[0])
            image = image or main["image"]
            namespace = namespace or meta["namespace"]
            service_account = service_account or spec.get("serviceAccountName")
            scheduler_host = scheduler_host or os.environ.get("POD_IP") or driver["status"]["podIP"]
            self.driver_name = meta["name"]
            self.owner = {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "uid": meta["uid"],
                "blockOwnerDeletion": False,
            }
            if namespace != meta["namespace"]:
                self.owner = None  # ownerReferences cannot cross namespaces
        self.image, self.namespace, self.service_account = image, namespace, service_account
        self.cluster_id = f"{self.driver_name[:40]}-{secrets.token_hex(3)}"
        # Workers are told the address before the scheduler binds it, so 0 means "a free port, chosen now".
        scheduler_port = scheduler_port or free_port("0.0.0.0")
        self._manager = _PodManager(self)
        scheduler = {
            "cls": Scheduler,
            "options": {
                "host": "0.0.0.0",
                "port": scheduler_port,
                "dashboard_address": ":8787",
                "contact_address": f"tcp://{scheduler_host}:{scheduler_port}",
            },
        }
        worker = {"cls": WorkerPod, "options": {"manager": self._manager}}
        self._initial = n_workers
        super().__init__(
            scheduler=scheduler,
            worker=worker,
            asynchronous=asynchronous,
            name=f"K8sCluster {self.cluster_id}",
            **kwargs,
        )

    def _new_worker_name(self, worker_number: int) -> str:
        # The spec name, the pod name and the Dask worker name are one and the same.
        return f"{self.cluster_id}-w{worker_number}"

    async def _start(self) -> None:
        await self._manager.start()
        await super()._start()
        if self._initial:
            self.scale(self._initial)
            await self._correct_state()
            # As addprocs does: return once each worker runs or has been given up on.
            await self._manager.settle(set(self.worker_spec), self.pending_timeout + 5)

    async def _forget(self, name: str) -> None:
        self.worker_spec.pop(name, None)
        await self._correct_state()

    async def _close(self) -> None:
        try:
            await super()._close()
        finally:
            await self._manager.close()

    def worker_pod_spec(self, name: str = "example") -> dict[str, Any]:
        """The pod a new worker would get (after `configure`), as a dict."""
        return copy.deepcopy(self._manager.manifest(name, self.scheduler_address))

    def worker_events(self) -> list[WorkerEnd]:
        """Every worker that did not start or has ended, with the reason."""
        return list(self._events)

    def logs(self) -> dict[str, str]:
        """The log of each worker pod still present, by pod name (Kubernetes' view;
        Dask's own `get_logs()` asks the workers instead)."""
        return self.sync(self._pod_logs)

    async def _pod_logs(self) -> dict[str, str]:
        logs = {}
        for name in list(self._manager.pods):
            lines = [line async for line in self._manager.client.log(name, namespace=self.namespace)]
            logs[name] = "".join(lines)
        return logs
