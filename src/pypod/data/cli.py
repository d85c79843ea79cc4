"""`pypod data ...`: thin click commands over data/jobs.py (heavy imports inside)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def _where(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option("--namespace", "-n", help="Namespace (default: the context's)."),
            click.option("--context", help="kubeconfig context."),
            click.option("--kubeconfig", help="kubeconfig file."),
        ]
    ):
        func = option(func)
    return func


def _settings(namespace: str | None, context: str | None, kubeconfig: str | None):  # type: ignore[no-untyped-def]
    from ..cli import _settings as resolve_settings

    settings, _project = resolve_settings({"namespace": namespace, "context": context, "kubeconfig": kubeconfig})
    return settings


def _kube(namespace: str | None, context: str | None, kubeconfig: str | None):  # type: ignore[no-untyped-def]
    from .kube import Kube

    settings = _settings(namespace, context, kubeconfig)
    return settings, Kube(settings)


@click.group()
def data() -> None:
    """Data on PVCs: download onto one (a Job that resumes and verifies), follow it, list it.

    \b
      pypod data fetch URL... --pvc NAME [--size 200Gi]   start a download Job (detached)
      pypod data status [NAME]                           per file: done/total, rate, ETA, state
      pypod data ls --pvc NAME [PATH]                    sizes on the PVC
      pypod data rm NAME                                 remove the Job (never the data)
    """


@data.command()
@click.argument("urls", nargs=-1, required=True)
@click.option("--pvc", required=True, help="PVC to download onto (created when missing and --size is given).")
@click.option("--dest", default="", help="Folder on the PVC (default: its root).")
@click.option("--sha256", help="Expected SHA-256 of the one file (hex).")
@click.option(
    "--checksums",
    type=click.Path(exists=True, dir_okay=False),
    help="sha256sum-style file (HEX  NAME per line) with a line for each file.",
)
@click.option("--size", help="Create the PVC with this size when it is missing, e.g. 200Gi.")
@click.option("--storage-class", help="StorageClass of a PVC created here (default: the cluster's default).")
@click.option(
    "--access-mode",
    type=click.Choice(["ReadWriteOnce", "ReadWriteMany"]),
    default="ReadWriteOnce",
    show_default=True,
    help="Access mode of a PVC created here.",
)
@click.option("--parallel", type=int, default=4, show_default=True, help="Files downloaded at once.")
@click.option(
    "--retries", type=int, default=5, show_default=True, help="Tries per file without progress before it fails."
)
@click.option("--image", help="Image to run the downloader in; any with python3 (default: the base image).")
@click.option("--name", help="Name of the fetch (its Job); default fetch-PVC-XXXX.")
@click.option("--follow", "-f", is_flag=True, help="Stay and show the download until it ends.")
@_where
def fetch(
    urls: tuple[str, ...],
    pvc: str,
    dest: str,
    sha256: str | None,
    checksums: str | None,
    size: str | None,
    storage_class: str | None,
    access_mode: str,
    parallel: int,
    retries: int,
    image: str | None,
    name: str | None,
    follow: bool,
    namespace: str | None,
    context: str | None,
    kubeconfig: str | None,
) -> None:
    """Download URLs onto a PVC in a Job of their own: resumable, checksummed, atomic."""
    from ..errors import UsageError
    from ..run.driver import local_user
    from ..run.output import Output
    from . import jobs
    from .kube import Kube
    from .plan import build_request, parse_checksums

    if sha256 and checksums:
        raise UsageError("--sha256 and --checksums both given", hint="use one of them")
    digests = parse_checksums(Path(checksums).read_text(), checksums) if checksums else None

    settings = _settings(namespace, context, kubeconfig)
    request = build_request(
        list(urls),
        pvc,
        image or settings.base_image,
        dest=dest,
        sha256=sha256,
        checksums=digests,
        name=name,
        parallel=parallel,
        retries=retries,
        size=size,
        storage_class=storage_class,
        access_mode=access_mode,
        user=local_user(),
    )
    out = Output()
    kube = Kube(settings)
    jobs.start_fetch(kube, request, out)
    where = f"PVC {request.pvc}:/{request.dest} (namespace {kube.namespace})"
    out.info(f"fetch {request.name} started: {len(request.files)} file(s) onto {where}")
    if not follow:
        out.info(f"it runs without you; see it with: pypod data status {request.name}")
        sys.exit(0)
    sys.exit(jobs.follow_fetch(kube, request.name, out))


@data.command()
@click.argument("name", required=False)
@_where
def status(name: str | None, namespace: str | None, context: str | None, kubeconfig: str | None) -> None:
    """Show NAME's files (or every fetch's): bytes done/total, rate, ETA, state."""
    from . import jobs

    _resolved, kube = _kube(namespace, context, kubeconfig)
    sys.exit(jobs.show_status(kube, name))


@data.command(name="ls")
@click.argument("path", default="")
@click.option("--pvc", required=True, help="PVC to list.")
@click.option("--image", help="Image of the short-lived pod that reads it (default: the base image).")
@_where
def ls_command(
    path: str, pvc: str, image: str | None, namespace: str | None, context: str | None, kubeconfig: str | None
) -> None:
    """List PATH on a PVC with sizes, through a short-lived pod."""
    from . import jobs

    settings, kube = _kube(namespace, context, kubeconfig)
    sys.exit(jobs.show_listing(kube, pvc, path, image or settings.base_image))


@data.command()
@click.argument("name")
@_where
def rm(name: str, namespace: str | None, context: str | None, kubeconfig: str | None) -> None:
    """Remove the fetch NAME (its Job, pods and plan); the data on the PVC stays."""
    from ..run.output import Output
    from . import jobs

    _resolved, kube = _kube(namespace, context, kubeconfig)
    sys.exit(jobs.remove_fetch(kube, name, Output()))
