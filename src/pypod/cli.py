"""The `pypod` command: parse, call the library, render errors as one line.

Heavy imports (lightkube, rich, yaml) happen inside commands, so `pypod --help`
starts fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .errors import PypodError, UsageError

COMMANDS = (
    "start",
    "run",
    "attach",
    "sync",
    "ps",
    "logs",
    "rm",
    "info",
    "template",
    "rbac",
    "plan",
    "jupyter",
    "git-secret",
    "dashboard",
    "data",
    "add",
    "remove",
)
RUN_COMMANDS = ("start", "run", "jupyter")


def run_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by every command that starts a run."""
    options = [
        click.option("--image", help="Image to run (skips building)."),
        click.option("--base-image", help="Base for the built image (default python:3.12-slim)."),
        click.option("--builder", type=click.Choice(["docker", "podman", "buildah"]), help="Image builder."),
        click.option("--dockerfile", help="Build dependencies from this Dockerfile."),
        click.option("--platform", help="os/arch of the cluster's nodes, to build for (default linux/amd64)."),
        click.option(
            "--no-push", is_flag=True, default=None, help="Keep the built image in the builder's store (shared node)."
        ),
        click.option("--no-dev", is_flag=True, default=None, help="Leave development dependencies out of the image."),
        click.option(
            "--build-arg", "build_args", multiple=True, help="KEY=VALUE for the project's own Dockerfile (repeatable)."
        ),
        click.option("--namespace", "-n", help="Namespace (default: the context's, else 'default')."),
        click.option("--context", help="kubeconfig context."),
        click.option("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)."),
        click.option("--service-account", help="Service account of the driver pod."),
        click.option("--cpu", help="CPU request and limit, e.g. 2 or 500m."),
        click.option("--memory", help="Memory request and limit, e.g. 4Gi."),
        click.option("--gpu", type=int, help="nvidia.com/gpu count."),
        click.option(
            "--threads",
            help="OMP_NUM_THREADS, MKL_NUM_THREADS, ... in the pod: auto (from --cpu, the default), N, or off.",
        ),
        click.option("--gpu-product", help="Node label nvidia.com/gpu.product to run on, e.g. NVIDIA-A100-SXM4-80GB."),
        click.option("--queue", help="Kueue LocalQueue to wait in; {namespace} stands for the namespace."),
        click.option("--shm", help="Size of a memory-backed /dev/shm, e.g. 8Gi (counts as the pod's memory)."),
        click.option(
            "--generate-name", is_flag=True, default=None, help="Let the apiserver name the Job (generateName)."
        ),
        click.option("--profile", help="Settings profile ([tool.pypod.profiles.NAME] or the user config)."),
        click.option("--env", "-e", "env", multiple=True, help="KEY=VALUE for the driver (repeatable)."),
        click.option("--label", "-l", "labels", multiple=True, help="KEY=VALUE label on the Job (repeatable)."),
        click.option(
            "--pvc", "pvcs", multiple=True, help="NAME[:MOUNT[:ro]]: mount a PVC (default /data/NAME; repeatable)."
        ),
        click.option("--python", help="Interpreter command (default: ipython if the image has it, else python)."),
        click.option("--template", type=click.Path(dir_okay=False), help="julia_pod-style driver.yaml.template."),
        click.option("--runid", help="Name of the run (default: repo-branch-time-random)."),
        click.option("--pending-timeout", type=float, help="Seconds to wait for the pod to run (default 600)."),
        click.option("--keep-alive", type=float, help="Seconds a REPL waits for a client before ending (900)."),
        click.option("--detach", is_flag=True, default=None, help="Keep the run going without a client."),
        click.option("--port-forward", "port_forwards", multiple=True, help="LOCAL:REMOTE (repeatable)."),
        click.option("--no-sync", "sync", flag_value=False, default=None, help="Do not sync the project folder."),
        click.option("--sync-exclude", multiple=True, help="gitignore pattern not to sync (repeatable)."),
        click.option(
            "--sync-initial",
            type=click.Choice(["local", "pod", "mirror"]),
            help="First sync: local wins (default), pod wins, or mirror local (deletes pod-only files).",
        ),
        click.option(
            "--git",
            metavar="[URL][@REF]",
            help="Run a commit fetched from git in an initContainer, not a source layer "
            "(default: origin at the current commit, which must be pushed).",
        ),
        click.option("--git-image", help="initContainer image for --git; needs git and sh (alpine/git)."),
        click.option("--git-secret", help="Secret for a private --git repository (see `pypod git-secret`)."),
        click.option("--dry-run", is_flag=True, help="Print the manifests and stop."),
        click.option("--quiet", "-q", is_flag=True, help="No status output, and no info line at the REPL's start."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _settings(flags: dict[str, Any]):  # type: ignore[no-untyped-def]
    from .profiles import read_user_profiles, shown_path, user_config_path
    from .project import load_project
    from .settings import parse_pairs, read_pyproject, resolve

    project = load_project(Path.cwd())
    flags = dict(flags)
    flags["env"] = tuple(parse_pairs(flags.get("env") or (), "env"))
    flags["labels"] = tuple(parse_pairs(flags.get("labels") or (), "label"))
    flags["build_args"] = tuple(parse_pairs(flags.get("build_args") or (), "build-arg"))
    user_config = shown_path(user_config_path(os.environ), os.environ)
    settings = resolve(flags, os.environ, read_pyproject(project.root), read_user_profiles(os.environ), user_config)
    return settings, project


def _start(request_kwargs: dict[str, Any], flags: dict[str, Any]) -> int:
    from .run.output import Output
    from .run.session import RunRequest, start

    dry_run = flags.pop("dry_run", False)
    quiet = flags.pop("quiet", False)
    settings, project = _settings(flags)
    request = RunRequest(dry_run=dry_run, **request_kwargs)
    return start(settings, project, request, Output(quiet=quiet))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pypod")
def main_group() -> None:
    """Run a Python project on Kubernetes: a REPL in a pod, or a job.

    \b
      pypod                      REPL in a pod (same as `pypod start`)
      pypod 'print(1)'           run code as a job; exit code is pypod's
      pypod run script.py ARGS   run a script as a job
      pypod attach RUN           reconnect to a live REPL
    """


@main_group.command()
@click.argument("code", required=False)
@run_options
def start(code: str | None, **flags: Any) -> None:
    """Start a REPL in a pod, or with CODE, run it as a job."""
    request = {"mode": "job", "code": code} if code is not None else {"mode": "repl"}
    sys.exit(_start(request, flags))


@main_group.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("script")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@run_options
def run(script: str, args: tuple[str, ...], **flags: Any) -> None:
    """Run SCRIPT (a path in the image's working directory) with ARGS as a job."""
    sys.exit(_start({"mode": "job", "script": script, "args": args}, flags))


@main_group.command()
@run_options
def jupyter(**flags: Any) -> None:
    """Start JupyterLab in a pod, forwarded to a local port; prints the URL with its token.

    The image needs jupyterlab (add it to the project's requirements). The token travels
    over the exec stream, so it is in no manifest and no pod log.
    """
    import secrets

    token = secrets.token_hex(24)
    command = (
        "jupyter",
        "lab",
        "--ip=0.0.0.0",
        "--port=8888",
        "--no-browser",
        "--allow-root",
        "--ServerApp.root_dir=/workspace",
    )
    request = {
        "mode": "repl",
        "interactive_command": command,
        "session_env": (("JUPYTER_TOKEN", token),),
        "notebook_port": 8888,
    }
    sys.exit(_start(request, flags))


def _connect(target: dict[str, Any]):  # type: ignore[no-untyped-def]
    from .run.driver import Driver
    from .run.output import Output

    settings, _project = _settings(target)
    return Driver(settings, Output())


def target_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Where the runs are: gathered into one `target` dict for _connect."""
    options = [
        click.option("--namespace", "-n", help="Namespace."),
        click.option("--context", help="kubeconfig context."),
        click.option("--kubeconfig", help="kubeconfig file."),
        click.option("--profile", help="Settings profile (its namespace and context apply)."),
    ]
    names = ("namespace", "context", "kubeconfig", "profile")

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["target"] = {name: kwargs.pop(name) for name in names}
        return func(*args, **kwargs)

    import functools

    wrapped = functools.update_wrapper(wrapper, func)
    for option in reversed(options):
        wrapped = option(wrapped)
    return wrapped


@main_group.command()
@click.argument("run_name")
@target_options
def attach(run_name: str, target: dict[str, Any]) -> None:
    """Reconnect to the live REPL of RUN."""
    from .run.manage import attach_run

    sys.exit(attach_run(_connect(target), run_name))


@main_group.command()
@click.argument("run_name")
@click.option("--sync-exclude", multiple=True, help="gitignore pattern not to sync (repeatable).")
@click.option("--sync-initial", type=click.Choice(["local", "pod", "mirror"]), help="Who wins at first (local).")
@click.option("--remote", help="Folder in the pod (default: the run's working directory, /workspace).")
@target_options
def sync(
    run_name: str,
    sync_exclude: tuple[str, ...],
    sync_initial: str | None,
    remote: str | None,
    target: dict[str, Any],
) -> None:
    """Sync this project folder with RUN's pod, live, until Ctrl-C."""
    from .run.livesync import sync_run

    flags = dict(target)
    flags |= {"sync_exclude": sync_exclude, "sync_initial": sync_initial, "workdir": remote}
    settings, project = _settings(flags)
    sys.exit(sync_run(settings, project, run_name))


@main_group.command()
@click.option("--all-users", is_flag=True, help="Show everyone's runs, not only yours.")
@target_options
def ps(all_users: bool, target: dict[str, Any]) -> None:
    """List runs: status, age, node, image."""
    from .run.manage import list_runs

    sys.exit(list_runs(_connect(target), all_users))


@main_group.command()
@click.argument("run_name")
@click.option("--follow", "-f", is_flag=True, help="Follow the log.")
@target_options
def logs(run_name: str, follow: bool, target: dict[str, Any]) -> None:
    """Print the driver's log of RUN."""
    from .run.manage import show_logs

    sys.exit(show_logs(_connect(target), run_name, follow))


@main_group.command()
@click.argument("run_name")
@click.option("--port", type=int, help="Local port (default: the dashboard's own when free here, else any).")
@target_options
def dashboard(run_name: str, port: int | None, target: dict[str, Any]) -> None:
    """Forward the Dask dashboard of a K8sCluster in RUN to this machine; prints its URL."""
    from .run.dashboard import open_dashboard

    sys.exit(open_dashboard(_connect(target), run_name, port))


@main_group.command()
@click.argument("run_names", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Remove all of your runs.")
@target_options
def rm(run_names: tuple[str, ...], everything: bool, target: dict[str, Any]) -> None:
    """Delete runs (their Jobs and pods)."""
    from .run.manage import remove_runs

    sys.exit(remove_runs(_connect(target), run_names, everything))


@main_group.command("git-secret")
@click.argument("name")
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="File holding the token, for https remotes ('-': standard input).",
)
@click.option("--username", help="User name sent with the token (default x-access-token, as GitHub's).")
@click.option("--ssh-key", type=click.Path(exists=True, dir_okay=False), help="Private key, for ssh remotes.")
@click.option(
    "--known-hosts",
    type=click.Path(exists=True, dir_okay=False),
    help="known_hosts for --ssh-key (default ~/.ssh/known_hosts).",
)
@click.option("--force", is_flag=True, help="Replace an existing Secret of that name.")
@target_options
def git_secret(
    name: str,
    token_file: str | None,
    username: str | None,
    ssh_key: str | None,
    known_hosts: str | None,
    force: bool,
    target: dict[str, Any],
) -> None:
    """Create the Secret NAME for `--git-secret NAME`: a token (https) or an ssh key.

    The token is read from a file, never from the command line, and reaches the
    initContainer only as a mounted file.
    """
    import re

    from .gitsource import git_secret as secret_manifest

    if len(name) > 253 or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name):
        raise UsageError(f"{name!r} is not a valid Secret name", hint="use lower-case letters, digits, '-' and '.'")
    token = _read_input(token_file) if token_file else None
    key = Path(ssh_key).read_bytes() if ssh_key else None
    hosts = None
    if key is not None:
        default_hosts = Path.home() / ".ssh" / "known_hosts"
        hosts_path = Path(known_hosts) if known_hosts else default_hosts
        hosts = hosts_path.read_bytes() if hosts_path.exists() else None
    manifest = secret_manifest(name, token=token, username=username, ssh_key=key, known_hosts=hosts)
    driver = _connect(target)
    replaced = driver.store_secret(manifest, force)
    kind = "token" if token is not None else "ssh key"
    verb = "replaced" if replaced else "created"
    click.echo(f"{verb} Secret {name} ({kind}) in namespace {driver.namespace}; use it with --git-secret {name}")


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}", hint="check the --token-file path") from exc


@main_group.command(name="info")
@click.argument("run_name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine output: every figure and its source.")
@click.option("--export", is_flag=True, help="Shell `export` lines sizing thread pools (OMP_NUM_THREADS, ...).")
@target_options
def info_command(
    run_name: str | None,
    as_json: bool,
    export: bool,
    target: dict[str, Any],
) -> None:
    """What this machine, or RUN's pod, really has (CPU, memory, GPUs, disks, /dev/shm), next to the node.

    \b
      pypod info                 this machine or pod, as a table
      pypod info RUN             RUN's pod (the figures are read inside it)
      eval "$(pypod info --export)"   thread pools sized to the CPU limit
    """
    from . import podinfo
    from .agent.resources import export_lines

    if as_json and export:
        raise UsageError("--json and --export are two outputs; pick one", hint="e.g. pypod info --json")
    if run_name is None:
        data = podinfo.info()
    else:
        from .kube.manifests import DRIVER_CONTAINER
        from .run.driver import running_pod

        driver = _connect(target)
        pod = running_pod(driver, run_name)
        data = podinfo.info_of_pod(driver.kubectl().base(), pod.metadata.name, DRIVER_CONTAINER)
    if as_json:
        click.echo(data.to_json())
    elif export:
        click.echo(export_lines(data), nl=False)
    else:
        podinfo.show(data)


def _change(requirements: tuple[str, ...], run_name: str | None, target: dict[str, Any], remove: bool) -> int:
    if run_name:
        from .deps.remote import change_in_run

        click.echo(change_in_run(_connect(target), run_name, list(requirements), remove))
        return 0
    if any(target.values()):
        raise UsageError("--namespace, --context, --kubeconfig and --profile are for --run", hint="add --run RUN")
    from .deps import change

    click.echo(change(list(requirements), remove=remove).summary())
    return 0


@main_group.command()
@click.argument("requirements", nargs=-1, required=True)
@click.option("--run", "run_name", help="Make the change in RUN's pod, installing into its live environment.")
@target_options
def add(requirements: tuple[str, ...], run_name: str | None, target: dict[str, Any]) -> None:
    """Add REQUIREMENTS (PEP 508: six, 'requests>=2') to the project's dependency file.

    \b
    In a pypod pod (or with --run RUN), they are installed into the running environment
    first; a package that cannot be installed leaves the file as it was (exit 80). The file
    is the one the dependency image is built from: the requirements file, pyproject.toml's
    [project].dependencies, or the Pipfile. Lockfile projects: use their tool (uv add, ...).
    """
    sys.exit(_change(requirements, run_name, target, remove=False))


@main_group.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--run", "run_name", help="Make the change in RUN's pod, uninstalling from its live environment.")
@target_options
def remove(names: tuple[str, ...], run_name: str | None, target: dict[str, Any]) -> None:
    """Take NAMES out of the project's dependency file (and, in a pod or with --run, uninstall them)."""
    sys.exit(_change(names, run_name, target, remove=True))


@main_group.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False), default="driver.yaml.template", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def template(output: str, force: bool) -> None:
    """Write the default driver template for editing."""
    from .kube.template import DEFAULT_TEMPLATE

    path = Path(output)
    if path.exists() and not force:
        raise PypodError(f"{path} already exists", hint="pass --force to overwrite it, or -o another path")
    path.write_text(DEFAULT_TEMPLATE)
    click.echo(f"wrote {path}; use it with: pypod --template {path}")


@main_group.command()
@click.option("--namespace", "-n", default="default", show_default=True)
@click.option("--user", help="Grant it to this User.")
@click.option("--service-account", default="default", show_default=True, help="Or to this ServiceAccount.")
def rbac(namespace: str, user: str | None, service_account: str) -> None:
    """Print the minimal Role (and RoleBinding) pypod needs; pipe it to `kubectl apply -f -`."""
    import yaml

    from .rbac import role_objects

    kind, name = ("User", user) if user else ("ServiceAccount", service_account)
    click.echo(yaml.safe_dump_all(role_objects(namespace, kind, name), sort_keys=False), nl=False)


@main_group.command()
@click.option("--base-image", help="Base for the built image.")
@click.option("--dockerfile", help="Build dependencies from this Dockerfile.")
@click.option("--platform", help="os/arch to build for (default linux/amd64).")
@click.option("--no-dev", is_flag=True, default=None, help="Leave development dependencies out.")
@click.option("--profile", help="Settings profile to show.")
def plan(
    base_image: str | None, dockerfile: str | None, platform: str | None, no_dev: bool | None, profile: str | None
) -> None:
    """Show the settings and where each came from, the environment spec found, and its build."""
    from .image.detect import detect
    from .image.dockerfile import SUPPORTED, render
    from .settings import describe_origins

    flags = {"base_image": base_image, "dockerfile": dockerfile, "platform": platform, "no_dev": no_dev}
    settings, project = _settings(flags | {"profile": profile})
    click.echo("settings:" + ("" if settings.origins or settings.profile else "     all of them pypod's defaults"))
    for line in describe_origins(settings):
        click.echo(f"  {line}")
    spec = detect(project.root, settings.dockerfile)
    click.echo(f"project:      {project.root}")
    click.echo(f"environment:  {spec.kind}: {spec.reason}")
    click.echo(f"files:        {', '.join(spec.files) or '-'}")
    for line in _python_lines(spec, settings.base_image, settings.platform):
        click.echo(line)
    if spec.kind not in ("dockerfile", "conda", "none", "requirements", "setup.py"):
        dev = "left out (--no-dev)" if settings.no_dev else "installed (--no-dev leaves them out)"
        click.echo(f"dev deps:     {dev}")
    click.echo(f"base image:   {settings.base_image}")
    click.echo(f"platform:     {settings.platform}")
    if spec.kind in SUPPORTED and spec.kind != "none":
        files = {name: (project.root / name).read_bytes() for name in spec.files}
        build = render(spec, settings.base_image, files, settings.platform, include_dev=not settings.no_dev)
        click.echo(f"dependency image tag: {build.tag} (the base's digest is part of the key when built)")
        click.echo("generated Containerfile:")
        click.echo("".join(f"  {line}\n" for line in build.containerfile.splitlines()), nl=False)


def _python_lines(spec: Any, base_image: str, platform: str) -> list[str]:
    """`python:` of `pypod plan`: what the project asks for, and what the base has when known."""
    from .image.deps import base_python_version
    from .image.pyversion import OWN_PYTHON, mismatch_warning
    from .image.registry import RegistryError, resolve_digest

    if spec.kind in OWN_PYTHON:
        where = "the project's Dockerfile" if spec.kind == "dockerfile" else "the conda environment"
        return [f"python:       from {where}"]
    if not spec.python_version:
        return ["python:       the base image's (the project asks for no version)"]
    asked = f"{spec.python_version} (asked by {spec.python_source})"
    try:
        have = base_python_version(resolve_digest(base_image), platform)
    except (RegistryError, OSError):
        have = None
    base = (
        f"the base image has {have}"
        if have
        else "the base image's is not known (its config names none, no build saw it)"
    )
    lines = [f"python:       {asked}; {base}"]
    warning = mismatch_warning(spec, base_image, have)
    return [*lines, f"              {warning}"] if warning else lines


def _add_data_commands() -> None:
    from .data.cli import data

    main_group.add_command(data)


_add_data_commands()


def _route(argv: list[str]) -> list[str]:
    """`pypod [OPTIONS] [CODE]` is `pypod start ...`; everything else goes to its command."""
    if not argv:
        return ["start"]
    if argv[0] in COMMANDS or argv[0] in ("-h", "--help", "--version"):
        return _git_values(argv)
    return _git_values(["start", *argv])


def _git_values(args: list[str]) -> list[str]:
    """`--git` takes a value only when the next word looks like one (URL, user@host:path,
    @REF): `pypod --git 'print(1)'` and `pypod run --git train.py` run code from git.
    Rewritten to `--git=VALUE` (or `--git=` for the defaults) before click parses."""
    from .gitsource import looks_like_git_spec

    if not args or args[0] not in RUN_COMMANDS:
        return args
    command = main_group.commands[args[0]]
    takes_value = {
        name
        for param in command.params
        if isinstance(param, click.Option) and not param.is_flag and param.name != "git"
        for name in param.opts
    }
    out, rest = [args[0]], args[1:]
    while rest:
        word = rest.pop(0)
        if word == "--":
            out += [word, *rest]
            break
        if word == "--git":
            if rest and looks_like_git_spec(rest[0]):
                out.append(f"--git={rest.pop(0)}")
            else:
                out.append("--git=")
            continue
        out.append(word)
        if word in takes_value and rest:
            out.append(rest.pop(0))
        elif not word.startswith("-") and args[0] == "run":
            out += rest  # SCRIPT: what follows is the script's
            break
    return out


def main(argv: list[str] | None = None) -> None:
    from .run.signals import Stopped, stopping_on_signals

    args = _route(list(sys.argv[1:] if argv is None else argv))
    try:
        with stopping_on_signals():
            main_group.main(args=args, prog_name="pypod", standalone_mode=False)
    except PypodError as exc:
        click.echo(f"pypod: {exc.one_line()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(64 if exc.exit_code == 2 else exc.exit_code)
    except (Stopped, click.exceptions.Abort) as exc:
        # click turns a KeyboardInterrupt (Stopped is one) into Abort; the cause tells which.
        stopped = exc if isinstance(exc, Stopped) else exc.__cause__
        if isinstance(stopped, Stopped):
            with contextlib.suppress(OSError):
                click.echo(f"pypod: stopped by {stopped.name}", err=True)
            sys.exit(stopped.exit_code)
        click.echo("pypod: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("pypod: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: one line, and the traceback on request
        if os.environ.get("PYPOD_DEBUG"):
            raise
        click.echo(
            f"pypod: internal error: {type(exc).__name__}: {exc}. This is a bug in pypod; "
            "rerun with PYPOD_DEBUG=1 for the traceback and report it",
            err=True,
        )
        sys.exit(1)
    sys.exit(0)
