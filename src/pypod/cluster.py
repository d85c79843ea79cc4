"""Dask workers as pods, from inside a driver pod: the Python counterpart of
K8sClusterManagers.jl's `addprocs(K8sClusterManager(n; cpu, memory, pending_timeout))`.

>>> from pypod import K8sCluster
>>> cluster = K8sCluster(3, cpu=0.5, memory="512Mi", pending_timeout=30)   # doctest: +SKIP
>>> client = cluster.get_client()                                          # doctest: +SKIP
>>> client.gather(client.map(lambda x: x * x, range(10)))                  # doctest: +SKIP
>>> cluster.add_worker_group("gpu", 2, gpu=1, memory="16Gi")               # doctest: +SKIP
>>> client.submit(train, resources={"GPU": 1})                             # doctest: +SKIP

The scheduler runs in this process. Each worker is a bare pod (restartPolicy
Never) owned by the driver pod, so Kubernetes deletes the workers with it, even
after `kill -9`. One watch follows all of the cluster's pods:
- workers still pending after `pending_timeout` are deleted with a warning that
  carries the scheduler's message, and the cluster carries on with those that came up;
- a worker that ends (OOMKilled, Evicted, Error, deleted from outside) is reported in
  a warning and in `worker_events()`, and replaced, as a Deployment would, with
  backoff and up to a limit (kube/replacement.py);
- a task that kills `distributed.scheduler.allowed-failures` + 1 workers fails with
  Dask's KilledWorker (PodKilledWorker), whose text says why the last pod ended;
- scaling down retires a worker through the scheduler, lets it close its connections
  and exit, and only then deletes its pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import itertools
import logging
import os
import pickle
import secrets
import socket
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    from distributed.core import Status
    from distributed.deploy.adaptive import Adaptive
    from distributed.deploy.cluster import Cluster
    from distributed.deploy.spec import ProcessInterface, SpecCluster
    from distributed.scheduler import KilledWorker, Scheduler, WorkerState
    from distributed.utils import NoOpAwaitable
except ImportError as exc:  # the usual cause: a driver image without dask
    raise ImportError(
        "pypod.K8sCluster needs dask's `distributed` (and `lightkube`) where it runs: "
        "add `distributed` and `lightkube` to the project's requirements"
    ) from exc

from .data.volumes import PvcMount, add_pvc_mounts, claim_problems, parse_pvcs
from .errors import Forbidden, PypodError, UsageError
from .gitsource import copy_to_worker
from .kube.groups import (
    PodHook,
    WorkerGroup,
    check_group,
    check_group_name,
    configure_pod,
    derive_group,
    group_pod,
    worker_pod_name,
    workers_for,
)
from .kube.podenv import parse_threads
from .kube.queue import ENV_QUEUE
from .kube.replacement import (
    ReplacePolicy,
    decide_replacement,
    gave_up_message,
    killed_worker_message,
    recent_failures,
    stranded_task_message,
)
from .kube.status import FATAL_WAITING, explain
from .kube.workers import ANNOTATION_DASHBOARD, DEFAULT_GROUP, LABEL_CLUSTER, WorkerEnd, worker_end
from .run.forward import free_port

logger = logging.getLogger("pypod.cluster")
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
RBAC_HINT = (
    "the driver's service account needs pods: create, get, list, watch, delete, patch; `pypod rbac` prints that Role"
)
DASHBOARD_PORT = 8787
# How long Dask's verdict on a task that killed its workers waits for the pod's reason:
# the connection drops a second or so before the kubelet reports OOMKilled.
REASON_WAIT_S = 10.0
# How long a retired worker gets to close its connections and exit before its pod is deleted.
WORKER_EXIT_TIMEOUT_S = 20.0


class WorkerPodWarning(UserWarning):
    """A worker pod did not start, or ended."""


class PodKilledWorker(KilledWorker):
    """Dask's KilledWorker, naming why the last worker's pod ended (``end``, a WorkerEnd)."""

    def __init__(self, task: Any, last_worker: WorkerState, allowed_failures: int, end: WorkerEnd | None) -> None:
        Exception.__init__(self, task, last_worker, allowed_failures, end)

    @property
    def end(self) -> WorkerEnd | None:
        return self.args[3]

    def __str__(self) -> str:
        worker = f"{self.last_worker.name} ({self.last_worker.address})"
        return killed_worker_message(self.task, self.allowed_failures + 1, worker, self.end)


class WorkerPodsEnded(Exception):
    """A task that can run nowhere: every worker has ended and none will be started."""

    def __init__(self, task: Any, end: WorkerEnd, cause: str) -> None:
        super().__init__(task, end, cause)

    def __str__(self) -> str:
        return stranded_task_message(*self.args)


def _api_error(exc: Exception, verb: str, namespace: str) -> PypodError:
    code = getattr(getattr(exc, "status", None), "code", None)
    message = getattr(getattr(exc, "status", None), "message", "") or str(exc)
    if code == 403:
        return Forbidden(f"not allowed to {verb} pods in namespace {namespace!r}: {message}", hint=RBAC_HINT)
    return PypodError(f"could not {verb} a worker pod ({code}): {message}")


class PodScheduler(Scheduler):
    """Dask's scheduler, which asks the pod watch why a worker's pod ended before it fails
    a task with KilledWorker."""

    pod_manager: _PodManager | None = None
    retired_names: set[str]  # names of workers it retired or closed itself: their exit is by design

    async def remove_worker(self, address: str, *, stimulus_id: str, expected: bool = False, close: bool = True) -> Any:
        manager = self.pod_manager
        if expected and address in self.workers:
            self.retired_names.add(str(self.workers[address].name))
        if manager is not None and not expected and self.status == Status.running:
            ws = self.workers.get(self.coerce_address(address))
            if ws is not None and manager.owns(str(ws.name)) and self._dooms_a_task(ws):
                self.handle_worker_status_change(Status.paused, ws, stimulus_id)  # no new tasks meanwhile
                end = await manager.end_of(str(ws.name), REASON_WAIT_S)
                if self.workers.get(ws.address) is ws:
                    self._fail_killed_tasks(ws, end, stimulus_id)
        return await super().remove_worker(address, stimulus_id=stimulus_id, expected=expected, close=close)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.retired_names = set()
        super().__init__(*args, **kwargs)

    def _dooms_a_task(self, ws: WorkerState) -> bool:
        return any(ts.suspicious + 1 > self.allowed_failures for ts in ws.processing)

    def _fail_killed_tasks(self, ws: WorkerState, end: WorkerEnd | None, stimulus_id: str) -> None:
        """Dask's own verdict (Scheduler.remove_worker) on each task that has now been on
        allowed-failures + 1 workers that died, with the pod's reason in the exception."""
        for ts in list(ws.processing):
            if ts.suspicious + 1 <= self.allowed_failures:
                continue
            ts.suspicious += 1
            ts.prefix.suspicious += 1
            error = pickle.dumps(PodKilledWorker(ts.key, ws.clean(), self.allowed_failures, end))
            recommendations = self.transition(
                ts.key, "erred", exception=error, cause=ts.key, stimulus_id=stimulus_id, worker=ws.address
            )
            self.transitions(recommendations, stimulus_id)
            logger.error("task %s failed: %d workers died running it, the last: %s", ts.key, ts.suspicious, end)


class WorkerPod(ProcessInterface):
    """One worker: its pod is created on start; on close the worker is retired through
    the scheduler, and its pod deleted once the worker has exited."""

    def __init__(self, scheduler: str, name: str, manager: _PodManager, group: WorkerGroup, **spec: Any) -> None:
        super().__init__(scheduler=scheduler, name=name)
        self.name = name
        self.manager = manager
        self.scheduler = scheduler
        self.group = group
        self.spec = spec

    async def start(self) -> None:
        manifest = self.manager.manifest(self.name, self.scheduler, self.group)
        await self.manager.create(manifest)
        await super().start()

    async def close(self) -> None:
        try:
            await self.manager.retire(self.name)
        except Exception as exc:  # an unreachable apiserver must not break scale-down or close
            logger.warning("could not delete worker pod %s: %s", self.name, exc)
        await super().close()


class _PodManager:
    """The API side of a K8sCluster: creates, retires and deletes pods, and runs the one watch."""

    def __init__(self, cluster: K8sCluster) -> None:
        self.cluster = cluster
        self.client: Any = None
        self.pods: dict[str, dict[str, Any]] = {}
        self.created_at: dict[str, float] = {}
        self.running: set[str] = set()
        self.ended: dict[str, WorkerEnd] = {}
        self.deleting: set[str] = set()  # retired or given up by us: their end is by design
        self.timing_out: set[str] = set()  # queued workers past pending_timeout, their Workload being read
        self.gone: set[str] = set()  # pods whose container has exited, or that are deleted
        self._changed = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.log_tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        from lightkube.resources.core_v1 import Pod

        from .kube.client import connect_async
        from .kube.watch import prime_decoders

        prime_decoders(Pod)
        # kubectl's rules (merged $KUBECONFIG, exec plugins), else the pod's service account.
        self.client = connect_async(self.cluster.namespace, field_manager="pypod-cluster")
        await self._check_claims()
        self.tasks = [asyncio.create_task(self._watch()), asyncio.create_task(self._every_half_second())]

    async def _check_claims(self) -> None:
        """A missing PVC fails before any worker is made, naming those there are."""
        if not self.cluster.pvcs:
            return
        from lightkube.resources.core_v1 import PersistentVolumeClaim

        namespace = self.cluster.namespace
        claims = [c.to_dict() async for c in self.client.list(PersistentVolumeClaim, namespace=namespace)]
        claim_problems(self.cluster.pvcs, claims, [], {}, namespace)

    def _notify(self) -> None:
        """Wake everyone waiting on a change (each waiter holds the event of its time)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _changed_within(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout=max(0.0, timeout))

    def owns(self, name: str) -> bool:
        return name in self.created_at

    def manifest(self, name: str, scheduler: str, group: WorkerGroup) -> dict[str, Any]:
        c = self.cluster
        pod = group_pod(
            group,
            name=name,
            image=c.image,
            scheduler_address=scheduler,
            cluster_id=c.cluster_id,
            driver=c.driver_name,
            namespace=c.namespace,
            service_account=c.service_account,
            owner=c.owner,
            death_timeout=c.death_timeout,
            threads=c.threads,
            queue=c.queue,
        )
        if c.git_driver is not None:
            # A --git driver's code: the same initContainer fetches the same commit.
            pod = copy_to_worker(c.git_driver, pod, os.environ.get("PYTHONPATH", ""))
        add_pvc_mounts(pod["spec"], pod["spec"]["containers"][0], c.pvcs)
        return configure_pod(group, pod)

    async def create(self, manifest: dict[str, Any]) -> None:
        from lightkube import codecs
        from lightkube.core.exceptions import ApiError

        name = manifest["metadata"]["name"]
        self.created_at[name] = time.monotonic()
        try:
            await self.client.create(codecs.from_dict(manifest), namespace=self.cluster.namespace)
        except ApiError as exc:
            raise _api_error(exc, "create", self.cluster.namespace) from exc

    async def delete(self, name: str, grace_period: int | None = 0) -> None:
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.core_v1 import Pod

        self.deleting.add(name)
        task = self.log_tasks.pop(name, None)
        if task:
            task.cancel()
        try:
            await self.client.delete(Pod, name, namespace=self.cluster.namespace, grace_period=grace_period)
        except ApiError as exc:
            if exc.status.code != 404:
                raise _api_error(exc, "delete", self.cluster.namespace) from exc

    async def retire(self, name: str) -> None:
        """Close a worker quietly: the scheduler retires it (moving its data) and tells it to
        close; it closes its connections and exits, its pod ends, and then it is deleted."""
        self.deleting.add(name)
        if name in self.ended:
            await self.delete(name, grace_period=None)  # over already (or being deleted by someone)
            return
        scheduler = self.cluster.scheduler
        ws = next((w for w in scheduler.workers.values() if str(w.name) == name), None)
        stream = scheduler.stream_comms.get(ws.address) if ws is not None else None
        if ws is None or stream is None or stream.closed() or scheduler.status != Status.running:
            await self.delete(name)  # never connected (pending, starting), or its connection is gone
            return
        stimulus_id = f"pypod-retire-{time.time()}"
        if self.cluster.status == Status.running:
            await scheduler.retire_workers(names=[name], close_workers=True, remove=True, stimulus_id=stimulus_id)
        if scheduler.workers.get(ws.address) is ws:  # the cluster is closing, or its data had nowhere to go
            await scheduler.remove_worker(ws.address, expected=True, close=True, stimulus_id=stimulus_id)
        exited = await self.wait_gone(name, WORKER_EXIT_TIMEOUT_S)
        # A worker that did not exit in time gets the pod's grace period (SIGTERM: Dask closes).
        await self.delete(name, grace_period=0 if exited else None)

    async def wait_gone(self, name: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while name not in self.gone:
            if time.monotonic() >= deadline:
                return False
            await self._changed_within(deadline - time.monotonic())
        return True

    async def end_of(self, name: str, timeout: float) -> WorkerEnd | None:
        """Why worker `name`'s pod ended, once the watch knows; None if it does not within `timeout`."""
        deadline = time.monotonic() + timeout
        while name not in self.ended and time.monotonic() < deadline:
            await self._changed_within(deadline - time.monotonic())
        return self.ended.get(name)

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
                self.gone.add(name)
                if name not in self.deleting and name not in self.ended:
                    self._end(WorkerEnd(name, name, "Deleted", "the pod was deleted by someone else"))
            else:
                self.pods[name] = pod
                if worker_end(pod) is not None:
                    self.gone.add(name)
                self._observe(name, pod)
            self._notify()

    def _observe(self, name: str, pod: dict[str, Any]) -> None:
        # Retired workers (scaled away) end by design: nothing to report.
        if name in self.ended or name in self.deleting or name not in self.cluster.worker_spec:
            return
        end = worker_end(pod)
        if end is not None and end.exit_code == 0 and name in getattr(self.cluster.scheduler, "retired_names", ()):
            # Retired through the scheduler (adapt, client.retire_workers): it closed and exited.
            self.deleting.add(name)
            self.cluster._forget(name)
            return
        if end is not None:
            self._end(end)
            return
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            # Deleted from outside: known now, seconds before the kubelet stops the container.
            self._end(WorkerEnd(name, name, "Deleted", "the pod was deleted by someone else", group=end_group(pod)))
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
            self._end(WorkerEnd(name, name, waiting["reason"], waiting.get("message", ""), group=end_group(pod)))

    async def _every_half_second(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            try:
                self._enforce_pending_timeout()
                self.cluster._fail_stranded_tasks()
            except Exception as exc:  # keep watching: one bad round must not end the timeouts
                logger.warning("worker pod check failed: %s: %s", type(exc).__name__, exc)

    def _enforce_pending_timeout(self) -> None:
        now = time.monotonic()
        for name, created in list(self.created_at.items()):
            if name in self.running or name in self.ended or name in self.deleting:
                continue
            if now - created > self.cluster.pending_timeout and name not in self.timing_out:
                pod = self.pods.get(name)
                report = explain(None, pod) if pod else None
                line = report.line if report else "the pod was never seen"
                phase = ((pod or {}).get("status") or {}).get("phase", "unknown")
                message = f"still {phase} after {self.cluster.pending_timeout:g}s: {line}"
                end = WorkerEnd(name, name, "PendingTimeout", message, group=end_group(pod or {}))
                if report is not None and report.state == "queued":
                    # Waiting for Kueue: its Workload says why; one request, off this loop.
                    self.timing_out.add(name)
                    self.tasks.append(asyncio.create_task(self._end_queued(end, pod or {})))
                else:
                    self._end(end)

    async def _end_queued(self, end: WorkerEnd, pod: dict[str, Any]) -> None:
        why = await self._kueue_message(pod)
        self._end(dataclasses.replace(end, message=f"{end.message}: {why}") if why else end)

    async def _kueue_message(self, pod: dict[str, Any]) -> str:
        """What the Workload of a worker waiting for Kueue says; "" when it cannot be read."""
        from .kube.queue import JOB_UID_LABEL, VERSIONS, explain_workload, workload_resource

        for version in VERSIONS:
            try:
                labels = {JOB_UID_LABEL: pod["metadata"]["uid"]}
                resource = workload_resource(version)
                async for workload in self.client.list(resource, namespace=self.cluster.namespace, labels=labels):
                    return explain_workload(workload.to_dict()).message
                return ""
            except Exception:  # another version, or no rights to read Workloads: the line stays as it is
                continue
        return ""

    def _end(self, end: WorkerEnd) -> None:
        """Report a worker's end, and let the cluster replace it or let it go."""
        self.ended[end.worker] = end
        self.cluster._events.append(end)
        warnings.warn(str(end), WorkerPodWarning, stacklevel=1)
        self._notify()
        self.cluster._worker_ended(end)

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
        while not names <= (self.running | set(self.ended)) and time.monotonic() < deadline:
            await self._changed_within(min(deadline - time.monotonic(), 1.0))

    async def annotate_driver(self, annotations: dict[str, str | None]) -> bool:
        """Merge `annotations` into the driver pod's (None removes one); a refusal is a warning."""
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.core_v1 import Pod
        from lightkube.types import PatchType

        c = self.cluster
        if c.owner is None or self.client is None:
            return False
        try:
            await self.client.patch(
                Pod,
                c.driver_name,
                {"metadata": {"annotations": annotations}},
                namespace=c.namespace,
                patch_type=PatchType.MERGE,
            )
        except ApiError as exc:
            warnings.warn(
                f"could not annotate the driver pod {c.driver_name} with the dashboard port "
                f"({exc.status.code}: {exc.status.message}), so `pypod dashboard` will not find it; {RBAC_HINT}",
                WorkerPodWarning,
                stacklevel=1,
            )
            return False
        return True

    async def driver_annotation(self, key: str) -> str | None:
        from lightkube.resources.core_v1 import Pod

        pod = await self.client.get(Pod, self.cluster.driver_name, namespace=self.cluster.namespace)
        return (pod.metadata.annotations or {}).get(key)

    async def close(self) -> None:
        tasks = [*self.tasks, *self.log_tasks.values()]
        for task in tasks:
            task.cancel()
        # Let them finish, so their HTTP streams are closed before the client is.
        await asyncio.gather(*tasks, return_exceptions=True)
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


def end_group(pod: dict[str, Any]) -> str:
    from .kube.workers import LABEL_GROUP

    return ((pod.get("metadata") or {}).get("labels") or {}).get(LABEL_GROUP, DEFAULT_GROUP)


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
    finally:
        client.close()


def _dashboard_address() -> str:
    """Dask's usual port when it is free here, else one that is (quietly: Dask would warn)."""
    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", DASHBOARD_PORT))
        except OSError:
            return f":{free_port('0.0.0.0')}"
    return f":{DASHBOARD_PORT}"


class DefaultGroupAdaptive(Adaptive):
    """Dask's Adaptive, sizing the default worker group only: other groups keep the
    size they were given (as dask-kubernetes' autoscaler does)."""

    cluster: K8sCluster

    @property
    def plan(self) -> set[str]:
        return self.cluster._names_of(DEFAULT_GROUP)

    @property
    def requested(self) -> set[str]:
        return self.plan & set(self.cluster.workers)

    @property
    def observed(self) -> set[str]:
        return {n for n in self.cluster.observed if self.cluster._group_names.get(n) == DEFAULT_GROUP}

    async def workers_to_close(self, target: int) -> list[str]:
        others = len(self.cluster.observed) - len(self.observed)
        names = await super().workers_to_close(target + others)
        return [n for n in names if n in self.plan]

    async def scale_up(self, n: int) -> None:
        self.cluster._scale_group(DEFAULT_GROUP, n, explicit=False)


def _check_local_queue(namespace: str, queue: str) -> None:
    """A worker queue that does not exist fails here, listing those that do (403: go on)."""
    from lightkube import Client

    from .kube.queue import find_local_queue

    find_local_queue(Client(namespace=namespace), namespace, queue)


class K8sCluster(SpecCluster):
    """A Dask cluster whose workers are pods beside the driver pod.

    Parameters mirror K8sClusterManagers.jl: ``n_workers``, ``cpu``, ``memory``,
    ``gpu`` (nvidia.com/gpu, and the Dask resource ``GPU``), ``pending_timeout``
    (seconds a worker may stay pending), and ``configure``: a function that gets each
    worker pod as a dict and returns it, applied last. ``image``, ``namespace`` and
    ``service_account`` default to the driver pod's own; outside a pod they must be
    given, with ``scheduler_host`` (an address the workers can reach).
    ``threads`` sizes the workers' thread pools (OMP_NUM_THREADS and the rest):
    "auto" (``cpu`` rounded up, as ``--nthreads``), "off", or a count.
    A ``pypod --git`` driver's code reaches the workers the same way: its
    initContainer and volume are copied into each worker pod, the checkout is
    their working directory and on their PYTHONPATH (``git_source=False`` does not).

    Ended workers are replaced (``replace=True``) until ``max_failures`` workers of a
    group have ended within ``failure_window`` seconds; then the cluster warns and
    stops replacing them. With ``replace=False``, or past the limit, tasks that no
    worker is left to run fail with WorkerPodsEnded instead of waiting forever.

    ``queue`` is a Kueue LocalQueue: workers are admitted through it (Kueue's pod
    integration) and count against its quota. It defaults to the driver's own queue
    (``pypod --queue``); ``queue=""`` opts out. ``gpu_product`` selects nodes by their
    ``nvidia.com/gpu.product`` label.
    ``pvcs`` mounts PVCs in every worker, as ``--pvc`` does in the driver:
    ``pvcs=["datasets:/data/datasets:ro"]`` (``NAME[:MOUNT[:ro]]``, default mount
    /data/NAME), so the workers see the same data.
    """

    def __init__(
        self,
        n_workers: int = 0,
        *,
        cpu: str | float = 1,
        memory: str = "2Gi",
        gpu: int = 0,
        gpu_product: str | None = None,
        queue: str | None = None,
        image: str | None = None,
        namespace: str | None = None,
        service_account: str | None = None,
        env: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        node_selector: dict[str, str] | None = None,
        tolerations: list[dict[str, Any]] | None = None,
        pvcs: list[str | PvcMount] | None = None,
        pending_timeout: float = 180,
        configure: PodHook | None = None,
        replace: bool = True,
        max_failures: int = 5,
        failure_window: float = 600,
        scheduler_host: str | None = None,
        scheduler_port: int = 0,
        death_timeout: int = 60,
        threads: str | int = "auto",
        stream_logs: bool = False,
        git_source: bool = True,
        asynchronous: bool = False,
        **kwargs: Any,
    ) -> None:
        if max_failures < 1 or failure_window <= 0:
            raise UsageError(
                f"max_failures={max_failures} and failure_window={failure_window} cannot both hold",
                hint="pass max_failures >= 1 and failure_window > 0 seconds, or replace=False",
            )
        self._groups: dict[str, WorkerGroup] = {
            DEFAULT_GROUP: check_group(
                WorkerGroup(
                    cpu=cpu,
                    memory=memory,
                    gpu=gpu,
                    gpu_product=gpu_product,
                    env=dict(env or {}),
                    labels=dict(labels or {}),
                    node_selector=dict(node_selector or {}),
                    tolerations=tuple(tolerations or ()),
                    configures=(configure,) if configure else (),
                )
            )
        }
        self.pending_timeout, self.death_timeout, self.stream_logs = pending_timeout, death_timeout, stream_logs
        self.queue = os.environ.get(ENV_QUEUE) if queue is None else queue
        self.pvcs = tuple(p if isinstance(p, PvcMount) else parse_pvcs([p])[0] for p in pvcs or ())
        self.threads = parse_threads(threads)
        self.replace_policy = ReplacePolicy(max_failures, failure_window) if replace else None
        self._events: list[WorkerEnd] = []
        self._numbers = itertools.count()
        self._group_names: dict[str, str] = {}  # every worker name ever made -> its group
        self._failures: dict[str, list[float]] = {DEFAULT_GROUP: []}
        self._gave_up: set[str] = set()
        self._resized: dict[str, int] = {DEFAULT_GROUP: 0}  # bumped by each scale: a pending replacement yields
        self._stranded_by: WorkerEnd | None = None  # the end that left no worker, until one is asked for again
        self._replacements: set[asyncio.Future[None]] = set()
        self._announced = False
        driver = _driver_pod()
        self.git_driver = driver if git_source else None
        self.driver_mode = ""
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
            self.driver_mode = (meta.get("labels") or {}).get("pypod.dev/mode", "")
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
        if self.queue:
            _check_local_queue(namespace, self.queue)  # type: ignore[arg-type]
        self.cluster_id = f"{self.driver_name[:40]}-{secrets.token_hex(3)}"
        # Workers are told the address before the scheduler binds it, so 0 means "a free port, chosen now".
        scheduler_port = scheduler_port or free_port("0.0.0.0")
        self._manager = _PodManager(self)
        scheduler = {
            "cls": PodScheduler,
            "options": {
                "host": "0.0.0.0",
                "port": scheduler_port,
                "dashboard_address": _dashboard_address(),
                "contact_address": f"tcp://{scheduler_host}:{scheduler_port}",
            },
        }
        self._initial = n_workers
        super().__init__(
            scheduler=scheduler,
            worker=self._spec_options(self._groups[DEFAULT_GROUP]),
            asynchronous=asynchronous,
            name=f"K8sCluster {self.cluster_id}",
            **kwargs,
        )

    # -- specs ------------------------------------------------------------------------
    def _spec_options(self, group: WorkerGroup) -> dict[str, Any]:
        # nthreads and memory_limit let Dask's scale(cores=, memory=) and adapt(maximum_memory=) work.
        options = {"manager": self._manager, "group": group, "nthreads": group.nthreads}
        return {"cls": WorkerPod, "options": {**options, "memory_limit": group.memory_bytes}}

    def _spec_for(self, group: WorkerGroup) -> dict[str, dict[str, Any]]:
        # Never reused: a replacement must not collide with its predecessor's pod, still terminating.
        name = worker_pod_name(self.cluster_id, group.name, next(self._numbers))
        self._group_names[name] = group.name
        return {name: self._spec_options(group)}

    def new_worker_spec(self) -> dict[str, dict[str, Any]]:
        return self._spec_for(self._groups[DEFAULT_GROUP])

    def _names_of(self, group: str) -> set[str]:
        return {n for n, s in self.worker_spec.items() if s["options"]["group"].name == group}

    def _group(self, name: str) -> WorkerGroup:
        if name not in self._groups:
            known = ", ".join(sorted(self._groups))
            raise UsageError(f"no worker group {name!r} in this cluster (it has: {known})", hint="add_worker_group()")
        return self._groups[name]

    # -- scaling ----------------------------------------------------------------------
    def scale(
        self, n: int = 0, memory: str | None = None, cores: float | None = None, worker_group: str | None = None
    ) -> Any:
        """Ask for `n` workers of `worker_group` (default: the default group), or enough for
        `memory` bytes or `cores` threads. Restarts replacing a group that was given up on."""
        group = self._group(worker_group or DEFAULT_GROUP)
        from dask.utils import parse_bytes

        n = workers_for(n, group, parse_bytes(memory) if memory is not None else None, cores)
        return self._scale_group(group.name, n, explicit=True)

    def _scale_group(self, name: str, n: int, explicit: bool) -> Any:
        if explicit:
            self._gave_up.discard(name)
            self._failures[name] = []
        elif name in self._gave_up:  # adapt does not restart what the limit stopped
            return NoOpAwaitable() if self.asynchronous else None
        group = self._groups[name]
        self._resized[name] += 1
        members = self._names_of(name)
        names = [k for k in self.worker_spec if k in members]  # oldest first
        if len(names) > n:
            connected = self.observed
            # Those not connected yet go first, the newest first.
            for k in sorted(reversed(names), key=lambda k: k in connected)[: len(names) - n]:
                del self.worker_spec[k]
        if self.status not in (Status.closing, Status.closed):
            for _ in range(n - len(names)):
                self.worker_spec.update(self._spec_for(group))
            if n:
                self._stranded_by = None
        self.loop.add_callback(self._correct_state)
        return NoOpAwaitable() if self.asynchronous else None

    async def scale_down(self, workers: Any) -> None:
        for name in {self._group_names.get(str(w), DEFAULT_GROUP) for w in workers}:
            self._resized[name] = self._resized.get(name, 0) + 1
        await super().scale_down(workers)

    def adapt(self, Adaptive: type[Adaptive] = DefaultGroupAdaptive, **kwargs: Any) -> Adaptive:
        """Dask's adapt(), over the default worker group."""
        return super().adapt(Adaptive=Adaptive, **kwargs)

    # -- groups -----------------------------------------------------------------------
    def add_worker_group(
        self,
        name: str,
        n: int = 0,
        *,
        cpu: str | float | None = None,
        memory: str | None = None,
        gpu: int | None = None,
        gpu_product: str | None = None,
        image: str | None = None,
        env: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        configure: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        """A group of `n` workers unlike the default ones; what is not given is the default
        group's (env and labels are merged, `configure` runs after the cluster's). Workers
        with gpu=N advertise the Dask resource GPU=N. Returns at once, like scale()."""
        check_group_name(name, self._groups)
        self._groups[name] = derive_group(
            self._groups[DEFAULT_GROUP],
            name,
            cpu=cpu,
            memory=memory,
            gpu=gpu,
            gpu_product=gpu_product,
            image=image,
            env=env,
            labels=labels,
            configure=configure,
        )
        self._failures[name], self._resized[name] = [], 0
        self.scale(n, worker_group=name)

    def delete_worker_group(self, name: str) -> Any:
        """Retire the group's workers (gracefully, as scale-down does) and forget the group."""
        if name == DEFAULT_GROUP:
            raise UsageError("the default worker group cannot be deleted", hint="cluster.scale(0) empties it")
        self._group(name)
        result = self._scale_group(name, 0, explicit=True)
        del self._groups[name]
        return result

    @property
    def worker_groups(self) -> dict[str, WorkerGroup]:
        return dict(self._groups)

    # -- ends and replacements --------------------------------------------------------
    def _worker_ended(self, end: WorkerEnd) -> None:
        """On the loop, from the watch: replace the worker, or let it go (and say so)."""
        spec = self.worker_spec.pop(end.worker, None)
        self._manager.deleting.add(end.worker)
        self.loop.add_callback(self._correct_state)  # closes its WorkerPod: the pod is deleted
        if spec is None or self.status != Status.running:
            return
        group: WorkerGroup = spec["options"]["group"]
        now = time.monotonic()
        failures = self._failures.setdefault(group.name, [])
        failures[:] = recent_failures(failures, now, self.replace_policy.failure_window if self.replace_policy else 0)
        decision = decide_replacement(end, failures, now, self.replace_policy)
        if decision.failures:
            failures.append(now)
        if decision.replace:
            task = asyncio.ensure_future(self._replace(group, decision.delay, self._resized.get(group.name, 0)))
            self._replacements.add(task)
            task.add_done_callback(self._replacements.discard)
            return
        if decision.limit_reached and self.replace_policy is not None:
            self._gave_up.add(group.name)
            message = gave_up_message(group.name, decision, self.replace_policy, end)
            warnings.warn(message, WorkerPodWarning, stacklevel=1)
        self._stranded_by = end

    def _forget(self, name: str) -> None:
        self.worker_spec.pop(name, None)
        self.loop.add_callback(self._correct_state)

    async def _replace(self, group: WorkerGroup, delay: float, resized: int) -> None:
        await asyncio.sleep(delay)
        # A scale() since the end set the group's size anew: nothing to make up for.
        if self.status != Status.running or self._resized.get(group.name) != resized or group.name in self._gave_up:
            return
        if self._groups.get(group.name) is not group:
            return  # the group was deleted meanwhile
        self.worker_spec.update(self._spec_for(group))
        await self._correct_state()

    def _fail_stranded_tasks(self) -> None:
        """Tasks that no worker is left to run, and none will be started for, fail now, with
        the reason, instead of waiting forever (what Dask does when its workers are gone)."""
        end, scheduler = self._stranded_by, self.scheduler
        if end is None or scheduler is None or scheduler.status != Status.running or scheduler.workers:
            return
        if self._replacements or self.worker_spec:
            return  # a worker is on its way
        adaptive = getattr(self, "_adaptive", None)
        if adaptive is not None and adaptive.state == "running" and DEFAULT_GROUP not in self._gave_up:
            return  # adapt starts workers for them
        stranded = [ts for ts in (*scheduler.unrunnable, *scheduler.queued) if ts.state in ("no-worker", "queued")]
        if not stranded:
            return
        cause = "replace=False" if self.replace_policy is None else "past the replacement limit"
        if end.reason == "PendingTimeout":
            cause = "no worker could be scheduled"
        stimulus_id = f"pypod-no-workers-{time.time()}"
        for ts in stranded:
            if ts.state not in ("no-worker", "queued"):
                continue  # erred already, as a dependent of one failed before it
            error = pickle.dumps(WorkerPodsEnded(ts.key, end, cause))
            recommendations = scheduler.transition(
                ts.key, "erred", exception=error, cause=ts.key, stimulus_id=stimulus_id
            )
            scheduler.transitions(recommendations, stimulus_id)
        logger.error("%d tasks failed: no worker is left (%s); the last to go: %s", len(stranded), cause, end)

    def _update_worker_status(self, op: str, msg: Any) -> None:
        # Not SpecCluster's: after a lost worker it closes the WorkerPod but keeps its spec, so
        # a pod of the same name would be created again. The pod watch decides about pods.
        Cluster._update_worker_status(self, op, msg)

    # -- lifecycle --------------------------------------------------------------------
    async def _start(self) -> None:
        await self._manager.start()
        await super()._start()
        if isinstance(self.scheduler, PodScheduler):
            self.scheduler.pod_manager = self._manager
        await self._announce_dashboard()
        if self._initial:
            self.scale(self._initial)
            await self._correct_state()
            # As addprocs does: return once each worker runs or has been given up on.
            await self._manager.settle(set(self.worker_spec), self.pending_timeout + 5)

    @property
    def dashboard_port(self) -> int | None:
        server = getattr(self.scheduler, "http_server", None)
        return getattr(server, "port", None)

    async def _announce_dashboard(self) -> None:
        port = self.dashboard_port
        if port is None:
            return
        self._announced = await self._manager.annotate_driver({ANNOTATION_DASHBOARD: str(port)})
        run = os.environ.get("PYPOD_RUN")
        if run and self.driver_mode == "job":  # a REPL's session forwards it on its own
            print(f"Dask dashboard: `pypod dashboard {run}` forwards it to your machine", file=sys.stderr, flush=True)

    async def _withdraw_dashboard(self) -> None:
        """Remove the annotation, unless a later cluster in this driver has put its own there."""
        if not self._announced:
            return
        try:
            if await self._manager.driver_annotation(ANNOTATION_DASHBOARD) == str(self.dashboard_port):
                await self._manager.annotate_driver({ANNOTATION_DASHBOARD: None})
        except Exception as exc:  # closing must not fail on this
            logger.debug("could not remove the dashboard annotation: %s", exc)

    async def _close(self) -> None:
        try:
            if self.status == Status.running:
                with contextlib.suppress(AttributeError):
                    self._adaptive.stop()
                for task in list(self._replacements):
                    task.cancel()
                self.worker_spec.clear()  # every group: SpecCluster's scale(0) is the default group's
                await self._withdraw_dashboard()
            await super()._close()
        finally:
            await self._manager.close()

    # -- reports ----------------------------------------------------------------------
    def worker_pod_spec(self, name: str = "example", worker_group: str = DEFAULT_GROUP) -> dict[str, Any]:
        """The pod a new worker of `worker_group` would get (after `configure`), as a dict."""
        group = self._group(worker_group)
        return copy.deepcopy(self._manager.manifest(name, self.scheduler_address, group))

    def worker_events(self) -> list[WorkerEnd]:
        """Every worker that did not start or has ended, with the reason (and its group)."""
        return list(self._events)

    def logs(self) -> dict[str, str]:
        """The log of each worker pod still present, by pod name (Kubernetes' view;
        Dask's own `get_logs()` asks the workers instead)."""
        return self.sync(self._pod_logs)

    async def _pod_logs(self) -> dict[str, str]:
        from lightkube.core.exceptions import ApiError

        logs = {}
        for name in list(self._manager.pods):
            try:
                lines = [line async for line in self._manager.client.log(name, namespace=self.namespace)]
            except ApiError as exc:
                if exc.status.code == 404:
                    continue  # deleted since the watch last saw it
                raise
            logs[name] = "".join(lines)
        return logs
