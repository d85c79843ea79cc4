"""A lightkube Client chosen by kubectl's rules, and API failures turned into
pypod errors that say what was refused and what to do.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import AlreadyExists, ClusterUnreachable, Forbidden, KubeconfigError, NotFound, PypodError

DEFAULT_KUBECONFIG = "~/.kube/config"
IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
RBAC_HINT = "ask an admin for the minimal Role that `pypod rbac` prints, or use another --namespace"


@dataclass(frozen=True)
class KubeTarget:
    """Where pypod talks to: the kubeconfig file (None: in-cluster), context and namespace."""

    kubeconfig: str | None
    context: str | None
    namespace: str
    server: str


def kubeconfig_path(explicit: str | None) -> Path | None:
    """kubectl's order: --kubeconfig, then $KUBECONFIG (first existing entry), then ~/.kube/config."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("KUBECONFIG")
    if env:
        paths = [Path(p).expanduser() for p in env.split(os.pathsep) if p]
        return next((p for p in paths if p.exists()), paths[0] if paths else None)
    default = Path(DEFAULT_KUBECONFIG).expanduser()
    return default


def connect(kubeconfig: str | None, context: str | None, namespace: str | None):  # type: ignore[no-untyped-def]
    """A lightkube Client and the KubeTarget it points at."""
    from lightkube import Client, KubeConfig
    from lightkube.core.exceptions import ConfigError

    path = kubeconfig_path(kubeconfig)
    if path is not None and path.exists():
        try:
            config = KubeConfig.from_file(path)
        except Exception as exc:
            raise KubeconfigError(
                f"cannot read kubeconfig {path}: {exc}", hint="fix the file or set KUBECONFIG"
            ) from exc
        try:
            single = config.get(context_name=context)
        except ConfigError:
            single = None
        if single is None:
            known = ", ".join(sorted(getattr(config, "contexts", {}) or {})) or "none"
            raise KubeconfigError(
                f"context {context!r} is not in {path}",
                hint=f"known contexts: {known}; pick one with --context",
            )
        target_file: str | None = str(path)
    elif IN_CLUSTER_TOKEN.exists() and not kubeconfig:
        try:
            single = KubeConfig.from_service_account().get()
        except ConfigError as exc:
            raise KubeconfigError(f"in-cluster configuration failed: {exc}") from exc
        target_file = None
    else:
        raise KubeconfigError(
            f"no kubeconfig at {path}" + (" (from $KUBECONFIG)" if os.environ.get("KUBECONFIG") else ""),
            hint="point KUBECONFIG at your cluster's config, or start a local one: "
            "`python -m harness up` then `eval $(python -m harness env)`",
        )
    ns = namespace or single.namespace or "default"
    client = Client(single, namespace=ns, field_manager="pypod")
    return client, KubeTarget(target_file, single.context_name if target_file else None, ns, single.cluster.server)


@contextlib.contextmanager
def api_errors(verb: str, resource: str, namespace: str, server: str = "", name: str = "") -> Iterator[None]:
    """Turn lightkube/httpx failures into PypodErrors with a next step."""
    import httpx2
    from lightkube.core.exceptions import ApiError

    try:
        yield
    except ApiError as exc:
        raise translate_api_error(exc, verb, resource, namespace, name) from exc
    except (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.ReadTimeout, httpx2.RemoteProtocolError) as exc:
        raise ClusterUnreachable(
            f"cannot reach the Kubernetes API{' at ' + server if server else ''}: {exc}",
            hint="check that the cluster is up and reachable (`kubectl cluster-info`); "
            "for the local harness: `python -m harness up`",
        ) from exc


def translate_api_error(exc: Exception, verb: str, resource: str, namespace: str, name: str = "") -> PypodError:
    status = getattr(exc, "status", None)
    code = getattr(status, "code", None)
    message = getattr(status, "message", "") or str(exc)
    what = f"{resource}/{name}" if name else resource
    if code == 403:
        return Forbidden(
            f"not allowed to {verb} {resource} in namespace {namespace!r}: {message}",
            hint=RBAC_HINT,
        )
    if code == 401:
        return Forbidden(f"the API rejected our credentials: {message}", hint="refresh your kubeconfig credentials")
    if code == 404:
        return NotFound(f"{what} not found in namespace {namespace!r}", hint="`pypod ps` lists your runs")
    if code == 409:
        return AlreadyExists(
            f"{what} already exists in namespace {namespace!r}",
            hint="choose another --runid, or remove the old run with `pypod rm NAME`",
        )
    return PypodError(f"the API refused to {verb} {what} ({code}): {message}")
