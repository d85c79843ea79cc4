"""The driver flow: plan the run, create the Job, wait for its pod, then either
relay the REPL (interactive) or stream logs and return the exit code (job).
"""

from __future__ import annotations

import contextlib
import getpass
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import agent, history
from .errors import NotFound, PypodError, StreamError, UsageError
from .forward import PortForward, free_port
from .kube.manifests import DRIVER_CONTAINER, RunSpec, driver_job, job_command
from .names import run_name, validate_run_name
from .project import Project
from .settings import Settings

JOB_PYTHON = "python3"
# Exit code when the stream to a live REPL is lost for good: the run goes on; reattach.
LOST_CONNECTION = StreamError.exit_code  # every Python 3 image has it (PEP 394); `python` is missing from Debian's


@dataclass(frozen=True)
class RunRequest:
    """What the user asked for: a REPL, inline code, or a script with arguments."""

    mode: str  # "repl" or "job"
    code: str | None = None
    script: str | None = None
    args: tuple[str, ...] = ()
    dry_run: bool = False
    # Interactive runs of something other than the REPL (e.g. JupyterLab): the command the
    # session host runs, and environment handed to it over the exec stream, never the manifest.
    interactive_command: tuple[str, ...] = ()
    session_env: tuple[tuple[str, str], ...] = ()
    notebook_port: int | None = None  # forwarded, and announced with session_env's token


def plan_run(
    settings: Settings, project: Project, request: RunRequest, user: str, image: str, now: float | None = None
) -> RunSpec:
    """Pure: the RunSpec for this request, to run `image`."""
    name = settings.runid or run_name(project.name, project.git.branch, now=now)
    problem = validate_run_name(name)
    if problem:
        raise UsageError(f"run name {name!r} {problem}", hint="pick another --runid")
    if request.mode == "repl":
        repl = list(request.interactive_command) or (settings.python.split() if settings.python else None)
        command = tuple(agent.host_command(JOB_PYTHON, settings.keep_alive, settings.detach, repl))
        extra_env: tuple[tuple[str, str], ...] = ((agent.AGENT_ENV, agent.agent_payload()),)
    else:
        python = settings.python.split() if settings.python else [JOB_PYTHON]
        command = job_command(python, code=request.code, script=request.script, args=request.args)
        extra_env = (("PYTHONUNBUFFERED", "1"),)
    return RunSpec(
        name=name,
        image=image,
        command=command,
        mode=request.mode,
        repo=project.name,
        branch=project.git.branch,
        commit=project.git.commit,
        dirty=project.git.dirty,
        user=user,
        namespace=settings.namespace,
        service_account=settings.service_account,
        cpu=settings.cpu,
        memory=settings.memory,
        gpu=settings.gpu,
        env=settings.env,
        labels=settings.labels,
        workdir=settings.workdir,
        ttl_seconds=settings.ttl_seconds,
        detach=settings.detach,
        extra_env=(("PYPOD_RUN", name), *extra_env),
    )


def read_template(settings: Settings) -> tuple[str | None, str]:
    if not settings.template:
        return None, "pypod's default template"
    path = Path(settings.template).expanduser()
    try:
        return path.read_text(), str(path)
    except OSError as exc:
        raise UsageError(f"cannot read template {path}: {exc.strerror}", hint="check the --template path") from exc


def local_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return ""


class Output:
    """Status on stderr (a live line on a terminal), program output on stdout."""

    def __init__(self, quiet: bool = False) -> None:
        from rich.console import Console

        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        self.quiet = quiet
        self._status: Any = None

    def info(self, message: str) -> None:
        if not self.quiet:
            self._clear()
            self.err.print(message, markup=False)

    def status(self, message: str) -> None:
        if self.quiet:
            return
        if not self.err.is_terminal:
            return
        if self._status is None:
            self._status = self.err.status(message)
            self._status.start()
        else:
            self._status.update(message)

    def _clear(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def done(self) -> None:
        self._clear()


class Session:
    """One run: its client, target and Job; the I/O around the pure plan."""

    def __init__(self, settings: Settings, out: Output) -> None:
        from .kube.client import connect
        from .kube.kubectl import Kubectl, find_kubectl

        self.settings = settings
        self.out = out
        self.client, self.target = connect(settings.kubeconfig, settings.context, settings.namespace)
        self._kubectl_factory = lambda: Kubectl(find_kubectl(), self.target)

    @property
    def namespace(self) -> str:
        return self.target.namespace

    @contextlib.contextmanager
    def api(self, verb: str, resource: str, name: str = "") -> Iterator[None]:
        from .kube.client import api_errors

        with api_errors(verb, resource, self.namespace, self.target.server, name):
            yield

    def create_job(self, job: dict[str, Any]) -> None:
        from lightkube import codecs

        job.setdefault("metadata", {})["namespace"] = self.namespace
        with self.api("create", "jobs", job["metadata"]["name"]):
            self.client.create(codecs.from_dict(job), namespace=self.namespace)

    def delete_job(self, name: str) -> None:
        """Delete the run's Job and, in the background, its pod; gone already is fine."""
        from lightkube.resources.batch_v1 import Job
        from lightkube.types import CascadeType

        with contextlib.suppress(NotFound), self.api("delete", "jobs", name):
            self.client.delete(Job, name, namespace=self.namespace, cascade=CascadeType.BACKGROUND)

    def wait_running(self, name: str, accept_terminated: bool) -> tuple[Any, Any]:
        """Watch until the pod runs; on failure delete the Job and show its last events."""
        from .kube.watch import RunWatcher, wait_until_running

        watcher = RunWatcher(self.client, self.namespace, name).start()
        try:
            report = wait_until_running(
                watcher,
                self.settings.pending_timeout,
                lambda r, elapsed: self.out.status(f"[{elapsed:4.0f}s] {name}: {r.line}"),
                accept_terminated=accept_terminated,
            )
        except PypodError:
            self.out.done()
            for line in watcher.state.event_lines():
                self.out.info(f"  event: {line}")
            self.delete_job(name)
            watcher.stop()
            raise
        self.out.done()
        return watcher, report

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
    def relay_repl(
        self, pod: str, name: str, seed: list[str], history_path: Path | None, env: dict[str, str] | None = None
    ) -> int:
        from .terminal import run_terminal

        kubectl = self._kubectl_factory()
        argv = kubectl.exec_argv(pod, DRIVER_CONTAINER, [agent.ATTACH_ENTRYPOINT])
        result = run_terminal(
            argv,
            history=seed,
            env=env,
            on_reconnect=lambda n: self.out.info(f"\r\n[pypod] connection lost; reconnecting (try {n})\r"),
        )
        if result.exit_code is None:
            self.out.info(f"[pypod] lost the connection; the REPL lives on. Reconnect with: pypod attach {name}")
            return LOST_CONNECTION
        if history_path is not None:
            history.merge_back(history_path, result.new_history)
        return result.exit_code

    def port_forwards(self, pod: str, extra: tuple[str, ...] = ()) -> list[PortForward]:
        forwards = []
        kubectl = self._kubectl_factory()
        for mapping in (*self.settings.port_forwards, *extra):
            local, _, remote = mapping.partition(":")
            remote = remote or local
            forwards.append(PortForward(kubectl.port_forward_argv(pod, f"{local}:{remote}")).start())
            self.out.info(f"port-forward: http://127.0.0.1:{local} -> {pod}:{remote}")
        return forwards


def history_path(settings: Settings) -> Path:
    return Path(settings.history_file).expanduser()


def start(settings: Settings, project: Project, request: RunRequest, out: Output) -> int:
    """`pypod`, `pypod CODE`, `pypod run SCRIPT`: returns pypod's exit code."""
    import yaml

    template_text, template_source = read_template(settings)
    if request.dry_run:
        image = settings.image or f"{settings.image_repo or '<IMAGE_REPO>'}:<tag of this project's source>"
        spec = plan_run(settings, project, request, local_user(), image)
        job = driver_job(spec, template_text, template_source)
        sys.stdout.write(yaml.safe_dump(_redact_agent(job), sort_keys=False))
        if settings.image:
            sys.stdout.write(f"# image: {settings.image} (given; nothing to build)\n")
        else:
            sys.stdout.write(
                f"# image: would append the project's source to {settings.base_image} "
                f"and push it to {settings.image_repo or '<IMAGE_REPO>'}\n"
            )
        return 0
    image = settings.image or ship_image(settings, project, out)
    spec = plan_run(settings, project, request, local_user(), image)
    job = driver_job(spec, template_text, template_source)
    session = Session(settings, out)
    session.create_job(job)
    out.info(f"run {spec.name} created in namespace {session.namespace}")
    try:
        watcher, _ = session.wait_running(spec.name, accept_terminated=request.mode == "job")
        pod = session.pod_name(watcher)
        if request.mode == "job":
            code = session.follow_logs(pod, watcher)
            watcher.stop()
            if not settings.detach:
                session.delete_job(spec.name)
            return code
        notebook = ()
        if request.notebook_port:
            local = free_port()
            notebook = (f"{local}:{request.notebook_port}",)
        live = None
        if settings.sync:
            from .livesync import start_beside_repl

            live = start_beside_repl(session, watcher.state.pod, spec.name, project, settings, out)
        forwards = session.port_forwards(pod, notebook)
        if notebook:
            token = dict(request.session_env).get("JUPYTER_TOKEN", "")
            out.info(f"JupyterLab: http://127.0.0.1:{notebook[0].split(':')[0]}/lab?token={token}")
        try:
            seed = history.seed_entries(history_path(settings))
            code = session.relay_repl(pod, spec.name, seed, history_path(settings), dict(request.session_env))
        finally:
            for forward in forwards:
                forward.stop()
            if live is not None:
                live.stop()
        watcher.stop()
        if code != LOST_CONNECTION:
            session.delete_job(spec.name)
        return code
    except KeyboardInterrupt:
        out.done()
        if settings.detach:
            out.info(f"detached; the run goes on. Follow it with: pypod logs {spec.name} -f")
            return 130
        out.info(f"interrupted; deleting {spec.name}")
        session.delete_job(spec.name)
        return 130


def ship_image(settings: Settings, project: Project, out: Output) -> str:
    """The dependency image (built once per dependency key), plus the source as a layer."""
    from .image.deps import ensure_dependency_image
    from .image.ship import ship_source_image, target_repository

    out.status("preparing the project's image")
    deps = ensure_dependency_image(
        project,
        settings.base_image,
        target_repository(settings.image_repo),
        settings.builder,
        settings.dockerfile,
        report=out.status,
        push=not settings.no_push,
        platform=settings.platform,
    )
    out.done()
    out.info(deps.summary())
    if settings.no_push:
        from .image.local import build_local_image

        local = build_local_image(
            project, deps, settings.image_repo, settings.builder, report=out.status, platform=settings.platform
        )
        out.done()
        out.info(local.summary())
        return local.reference
    shipped = ship_source_image(
        project, deps.reference, settings.image_repo, report=out.status, platform=settings.platform
    )
    out.done()
    out.info(shipped.summary())
    return shipped.reference


def _redact_agent(job: dict[str, Any]) -> dict[str, Any]:
    """The agent's payload is long and opaque; show a placeholder in printed manifests."""
    import copy

    shown = copy.deepcopy(job)
    for container in shown["spec"]["template"]["spec"]["containers"]:
        for entry in container.get("env", []):
            if entry.get("name") == agent.AGENT_ENV:
                entry["value"] = f"<pypod agent, {len(entry['value'])} bytes>"
    return shown
