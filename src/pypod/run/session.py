"""The driver flow: plan the run, create the Job, wait for its pod, then either
relay the REPL (interactive) or stream logs and return the exit code (job).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import agent
from ..data.volumes import parse_pvcs
from ..errors import NotFound, PypodError, UsageError
from ..kube.manifests import DRIVER_CONTAINER, RunSpec, driver_job, job_command
from ..kube.queue import QueueTarget, expand_queue, job_queue
from ..names import name_prefix, run_name, validate_run_name
from ..project import Project
from ..settings import Settings, describe_origins
from . import history
from .driver import LOST_CONNECTION, Driver, history_path, local_user, warn_untracked
from .forward import free_port
from .guard import Guard, end_guard, start_guard
from .livesync import SyncPrep, start_beside_repl
from .output import Output
from .signals import Stopped, stop_exit_code

if TYPE_CHECKING:
    from ..gitsource import GitSource
    from ..kube.queue import LocalQueueInfo

JOB_PYTHON = "python3"  # every Python 3 image has it (PEP 394); `python` is missing from Debian's


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
    settings: Settings,
    project: Project,
    request: RunRequest,
    user: str,
    image: str,
    now: float | None = None,
    namespace: str = "default",
) -> RunSpec:
    """Pure: the RunSpec for this request, to run `image` in `namespace` (the effective one)."""
    if settings.runid:
        problem = validate_run_name(settings.runid)
        if problem:
            raise UsageError(f"run name {settings.runid!r} {problem}", hint="pick another --runid")
    if settings.generate_name:
        name = name_prefix(project.name, project.git.branch, settings.runid)  # the apiserver adds the rest
    else:
        name = settings.runid or run_name(project.name, project.git.branch, now=now)
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
        threads=settings.threads,
        gpu_product=settings.gpu_product,
        queue=expand_queue(settings.queue, namespace),
        shm=settings.shm,
        generate_name=settings.generate_name,
        env=settings.env,
        labels=settings.labels,
        pvcs=parse_pvcs(settings.pvcs),
        workdir=settings.workdir,
        ttl_seconds=settings.ttl_seconds,
        detach=settings.detach,
        extra_env=extra_env,
    )


def read_template(settings: Settings) -> tuple[str | None, str]:
    if not settings.template:
        return None, "pypod's default template"
    path = Path(settings.template).expanduser()
    try:
        return path.read_text(), str(path)
    except OSError as exc:
        raise UsageError(f"cannot read template {path}: {exc.strerror}", hint="check the --template path") from exc


def with_git_source(spec: RunSpec, source: GitSource | None) -> RunSpec:
    """Pure: the run's labels name the commit it fetches (a named ref is its branch label)."""
    if source is None:
        return spec
    branch = source.ref if source.ref not in ("HEAD", source.commit) else spec.branch
    return dataclasses.replace(spec, commit=source.short, dirty=False, branch=branch)


def build_job(
    settings: Settings, spec: RunSpec, template_text: str | None, template_source: str, source: GitSource | None
) -> dict[str, Any]:
    job = driver_job(spec, template_text, template_source)
    if source is None:
        return job
    from ..gitsource import apply_to_job

    return apply_to_job(job, source, settings.workdir, DRIVER_CONTAINER)


def resolve_git(settings: Settings, project: Project, out: Output) -> GitSource | None:
    """--git: the commit to run, checked against its remote before anything is created."""
    if settings.git is None:
        return None
    from ..gitsource import parse_git_spec, resolve_git_source

    source = resolve_git_source(
        project.root,
        parse_git_spec(settings.git),
        settings.git_image,
        settings.git_secret,
        warn=lambda message: out.info(f"warning: {message}"),
    )
    out.info(f"code: {source.describe()}, fetched by an initContainer ({source.image})")
    return source


def start(settings: Settings, project: Project, request: RunRequest, out: Output) -> int:
    """`pypod`, `pypod CODE`, `pypod run SCRIPT`: returns pypod's exit code."""
    template_text, template_source = read_template(settings)
    if settings.git_secret and settings.git is None:
        raise UsageError("--git-secret is for --git runs", hint="add --git, or drop --git-secret")
    source = resolve_git(settings, project, out)
    if request.dry_run:
        import yaml

        what = "pypod's own package (the code comes from git)" if source else "this project's source"
        image = settings.image or f"{settings.image_repo or '<IMAGE_REPO>'}:<tag of {what}>"
        from ..kube.client import configured_namespace

        namespace = settings.namespace or configured_namespace(settings.kubeconfig, settings.context) or "default"
        spec = with_git_source(plan_run(settings, project, request, local_user(), image, namespace=namespace), source)
        job = build_job(settings, spec, template_text, template_source, source)
        sys.stdout.write(yaml.safe_dump(_redact_agent(job), sort_keys=False))
        for line in describe_origins(settings) or ["every setting is pypod's default"]:
            sys.stdout.write(f"# {line}\n")
        if settings.image:
            sys.stdout.write(f"# image: {settings.image} (given; nothing to build)\n")
        elif source:
            sys.stdout.write(
                f"# image: the dependency image on {settings.base_image} with pypod's own package, pushed to "
                f"{settings.image_repo or '<IMAGE_REPO>'}; no source layer\n"
            )
        else:
            sys.stdout.write(
                f"# image: would append the project's source to {settings.base_image} "
                f"and push it to {settings.image_repo or '<IMAGE_REPO>'}\n"
            )
        return 0
    session = Driver(settings, out)
    if source is not None and source.secret and session.secret_exists(source.secret) is False:
        raise NotFound(
            f"no Secret {source.secret} in namespace {session.namespace} for --git-secret",
            hint=f"create it with `pypod git-secret {source.secret} --token-file FILE` (or --ssh-key)",
        )
    # Checked before anything is built or created: a wrong queue or GPU product fails at once.
    # The queue may also come from the template's or --label's kueue.x-k8s.io/queue-name.
    preview = plan_run(settings, project, request, local_user(), "<image>", namespace=session.namespace)
    queue_info = session.check_queue(job_queue(driver_job(preview, template_text, template_source)))
    session.check_gpus(settings.gpu, settings.gpu_product)
    check_volumes(session, settings, out)
    if settings.sync and settings.sync_exclude:
        from ..sync.excludes import check_patterns

        check_patterns(settings.sync_exclude)
    ship = ship_git_image if source else ship_image
    image = settings.image or ship(settings, project, out)
    spec = plan_run(settings, project, request, local_user(), image, namespace=session.namespace)
    spec = with_git_source(spec, source)
    job = build_job(settings, spec, template_text, template_source, source)
    guard = start_guard(session.target.kubeconfig, session.target.context, session.namespace)
    try:
        code = _run(session, guard, spec, job, project, request, queue_info)
    except BaseException:
        end_guard(clean=False)
        raise
    end_guard()
    return code


def _run(
    session: Driver,
    guard: Guard,
    spec: RunSpec,
    job: dict[str, Any],
    project: Project,
    request: RunRequest,
    queue_info: LocalQueueInfo | None = None,
) -> int:
    """From creating the Job to the end of the run; every way out cleans up after it."""
    settings, out = session.settings, session.out
    in_repl = False
    # Armed before the create: a pypod killed while the request is in flight leaves nothing.
    # A generated name is known only from the answer, so such a Job is armed just after it.
    name = spec.name
    if not spec.generate_name:
        guard.arm(name)
    try:
        try:
            name, uid = session.create_job(job)
        except PypodError:
            guard.disarm(name)  # refused: there is nothing to clean up
            raise
        if spec.generate_name:
            guard.arm(name)
        queue = job_queue(job)
        out.info(f"run {name} created in namespace {session.namespace}" + (f" in queue {queue}" if queue else ""))
        target: QueueTarget | None = session.queue_target(queue_info, queue, uid)
        # Built while Kubernetes starts the pod: the sync then starts as soon as it runs.
        prep = SyncPrep(project, settings) if settings.sync and request.mode != "job" else None
        watcher, _ = session.wait_running(name, accept_terminated=request.mode == "job", queue_target=target)
        pod = session.pod_name(watcher)
        if request.mode == "job":
            if settings.detach:
                guard.disarm(name)
            code = session.follow_logs(pod, watcher)
            watcher.stop()
            if not settings.detach:
                session.delete_job(name)
            return code
        notebook = ()
        if request.notebook_port:
            local = free_port()
            notebook = (f"{local}:{request.notebook_port}",)
        # The REPL starts in the pod while the first sync runs; nothing typed reaches it
        # before the sync agrees (the relay starts after), so it runs on the local code.
        seed = history.seed_entries(history_path(settings))
        repl = None
        try:
            repl = session.start_repl(pod, seed, dict(request.session_env))
            live = None
            if prep is not None:
                live = start_beside_repl(session, watcher.state.pod, name, project, settings, out, prep)
            forwards = session.port_forwards(pod, notebook)
            from .dashboard import SessionDashboard  # after the create: its imports cost ~20 ms

            dashboard = SessionDashboard(session, watcher, pod).start()
        except BaseException:
            if repl is not None:
                repl.close()
            raise
        if notebook:
            token = dict(request.session_env).get("JUPYTER_TOKEN", "")
            out.info(f"JupyterLab: http://127.0.0.1:{notebook[0].split(':')[0]}/lab?token={token}")
        # From here on the REPL outlives its client for --keep-alive, as it does when
        # the connection drops: a killed pypod must not take it down.
        guard.disarm(name)
        in_repl = True
        try:
            # The pod's last edits of the project's files come home before pypod hangs up
            # and so lets the pod end (the session host waits for that).
            settle = live.settle if live is not None else None
            end = session.relay_repl(
                pod, name, seed, history_path(settings), dict(request.session_env), repl, on_end=settle
            )
        finally:
            dashboard.stop()
            for forward in forwards:
                forward.stop()
            if live is not None:
                live.stop()
        warn_untracked(project.root, end, out)
        code = end.code
        watcher.stop()
        if code != LOST_CONNECTION:
            session.delete_job(name)
        return code
    except KeyboardInterrupt as exc:
        out.done()
        why = f"stopped by {exc.name}" if isinstance(exc, Stopped) else "interrupted"
        if in_repl:
            # Only a signal gets here: Ctrl-C in the REPL goes to the remote interpreter.
            keep = "(--detach)" if settings.detach else f"for {settings.keep_alive:.0f}s without a client"
            out.info(f"{why}; the REPL lives on {keep}. Reconnect with: pypod attach {name}")
            return stop_exit_code(exc)
        if settings.detach:
            out.info(f"{why}; detached, the run goes on. Follow it with: pypod logs {name} -f")
            return stop_exit_code(exc)
        session.delete_job(name)
        guard.disarm(name)
        out.info(f"{why}; deleted {name}")
        return stop_exit_code(exc)


def check_volumes(session: Driver, settings: Settings, out: Output) -> None:
    """Before anything is built or submitted: every --pvc is there (else one line listing
    those that are), and a warning for each single-node claim that a pod holds elsewhere."""
    if not settings.pvcs:
        return
    from ..data.volumes import check_claims

    for warning in check_claims(session, parse_pvcs(settings.pvcs)):
        out.info(warning)


def ship_image(settings: Settings, project: Project, out: Output) -> str:
    """The dependency image (built once per dependency key), plus the source as a layer."""
    from ..image.ship import ship_source_image

    deps = dependency_image(settings, project, out)
    if settings.no_push:
        from ..image.local import build_local_image

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


def ship_git_image(settings: Settings, project: Project, out: Output) -> str:
    """--git: the dependency image with pypod's own package (pushed once), no source layer."""
    from ..image.ship import ship_pypod_image

    deps = dependency_image(settings, project, out)
    if settings.no_push:
        out.info("image: the dependency image alone (--no-push): pypod's own package is not in it")
        return deps.reference
    shipped = ship_pypod_image(deps.reference, settings.image_repo, report=out.status, platform=settings.platform)
    out.done()
    pushed = "unchanged, nothing pushed" if shipped.reused else f"pushed pypod's own package ({shipped.files} files)"
    out.info(f"image {shipped.tag}: the dependency image and pypod; {pushed}; no source layer ({shipped.seconds:.2f}s)")
    return shipped.reference


def dependency_image(settings: Settings, project: Project, out: Output) -> Any:
    """The dependency image, built once per dependency key."""
    from ..image.deps import ensure_dependency_image
    from ..image.ship import target_repository

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
        no_dev=settings.no_dev,
        build_args=settings.build_args,
        warn=out.info,
    )
    out.done()
    out.info(deps.summary())
    return deps


def _redact_agent(job: dict[str, Any]) -> dict[str, Any]:
    """The agent's payload is long and opaque; show a placeholder in printed manifests."""
    import copy

    shown = copy.deepcopy(job)
    for container in shown["spec"]["template"]["spec"]["containers"]:
        for entry in container.get("env", []):
            if entry.get("name") == agent.AGENT_ENV:
                entry["value"] = f"<pypod agent, {len(entry['value'])} bytes>"
    return shown
