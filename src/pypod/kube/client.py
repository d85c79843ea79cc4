"""A lightkube Client chosen by kubectl's rules, and API failures turned into
pypod errors that say what was refused and what to do.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AlreadyExists, ClusterUnreachable, Forbidden, KubeconfigError, NotFound, PypodError, Rejected
from .kubeconfig import (
    ClusterSpec,
    Selection,
    UserSpec,
    kubeconfig_files,
    merge_kubeconfigs,
    read_kubeconfig_files,
    select_context,
)

IN_CLUSTER = Path("/var/run/secrets/kubernetes.io/serviceaccount")
IN_CLUSTER_TOKEN = IN_CLUSTER / "token"
RBAC_HINT = "ask an admin for the minimal Role that `pypod rbac` prints, or use another --namespace"


@dataclass(frozen=True)
class KubeTarget:
    """Where pypod talks to, and how the kubectl it starts finds the same place.

    `kubeconfig` is the --kubeconfig file to pass on (None: kubectl reads $KUBECONFIG,
    all of its files, or ~/.kube/config, or the pod's service account, as pypod did);
    `context` is the context pypod chose, passed on so both agree.
    """

    kubeconfig: str | None
    context: str | None
    namespace: str
    server: str


def load_selection(kubeconfig: str | None, context: str | None, environ: Mapping[str, str] | None = None) -> Selection:
    """The cluster and user pypod talks to, by kubectl's rules: kubeconfig files merged, else in-cluster."""
    env = os.environ if environ is None else environ
    paths, from_env = kubeconfig_files(kubeconfig, env)
    files = read_kubeconfig_files(paths, explicit=bool(kubeconfig))
    if files:
        source = str(files[0][0]) if len(files) == 1 else "the merged $KUBECONFIG files"
        return select_context(merge_kubeconfigs(files), context, source)
    if IN_CLUSTER_TOKEN.exists() and not kubeconfig:
        return in_cluster_selection(env)
    shown = os.pathsep.join(str(p) for p in paths)
    raise KubeconfigError(
        f"no kubeconfig at {shown}" + (" (from $KUBECONFIG)" if from_env else ""),
        hint="point KUBECONFIG at your cluster's config, or start a local one: "
        "`python -m harness up` then `eval $(python -m harness env)`",
    )


def configured_namespace(kubeconfig: str | None, context: str | None) -> str | None:
    """The context's namespace from the kubeconfig, without contacting the cluster; None if unknown."""
    try:
        return load_selection(kubeconfig, context).namespace
    except PypodError:  # a dry run does not need a working kubeconfig
        return None


def in_cluster_selection(environ: Mapping[str, str]) -> Selection:
    """The pod's service account, as client-go's InClusterConfig reads it (the token file is re-read)."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise KubeconfigError(
            "in a pod without KUBERNETES_SERVICE_HOST/PORT and without a kubeconfig",
            hint="set KUBECONFIG, or run where the pod's service links are enabled",
        )
    if ":" in host:
        host = f"[{host}]"
    namespace_file = IN_CLUSTER / "namespace"
    return Selection(
        context="in-cluster",
        namespace=namespace_file.read_text().strip() if namespace_file.exists() else None,
        cluster_name="in-cluster",
        cluster=ClusterSpec(server=f"https://{host}:{port}", ca_file=str(IN_CLUSTER / "ca.crt")),
        user_name="service account",
        user=UserSpec(token_file=str(IN_CLUSTER_TOKEN)),
        source="the pod's service account",
        in_cluster=True,
    )


def _lightkube_config(selection: Selection, namespace: str):  # type: ignore[no-untyped-def]
    """All lightkube needs to build URLs; TLS and credentials are the transport's."""
    from lightkube.config.kubeconfig import SingleConfig
    from lightkube.config.models import Cluster, Context, User

    return SingleConfig(
        context_name=selection.context,
        context=Context(cluster=selection.cluster_name, namespace=namespace),
        # lightkube builds an SSL context from this which httpx never uses (a given transport
        # is used as is, and trust_env=False mounts no proxies); insecure only spares it
        # loading the system trust store (~50 ms). Verification is the transport's: see
        # tests/integration/test_kubeconfig.py, where a wrong server name still fails.
        cluster=Cluster(server=selection.cluster.server, insecure=True),
        user=User(),
    )


def connect(kubeconfig: str | None, context: str | None, namespace: str | None):  # type: ignore[no-untyped-def]
    """A lightkube Client and the KubeTarget it points at."""
    from lightkube import Client

    from .transport import KubeTransport

    selection = load_selection(kubeconfig, context)
    ns = namespace or selection.namespace or "default"
    client = Client(
        _lightkube_config(selection, ns),
        namespace=ns,
        field_manager="pypod",
        trust_env=False,  # the transport applies the proxy environment, as kubectl does
        transport=KubeTransport(selection),
    )
    target = KubeTarget(
        str(Path(kubeconfig).expanduser()) if kubeconfig else None,
        None if selection.in_cluster else selection.context,
        ns,
        selection.cluster.server,
    )
    return client, target


def connect_async(namespace: str | None, field_manager: str, kubeconfig: str | None = None, context: str | None = None):  # type: ignore[no-untyped-def]
    """A lightkube AsyncClient by the same rules as `connect`."""
    from lightkube import AsyncClient

    from .transport import AsyncKubeTransport

    selection = load_selection(kubeconfig, context)
    ns = namespace or selection.namespace or "default"
    return AsyncClient(
        _lightkube_config(selection, ns),
        namespace=ns,
        field_manager=field_manager,
        trust_env=False,
        transport=AsyncKubeTransport(selection),
    )


@contextlib.contextmanager
def api_errors(verb: str, resource: str, namespace: str, server: str = "", name: str = "") -> Iterator[None]:
    """Turn lightkube/httpx failures into PypodErrors with a next step."""
    import httpx2
    from lightkube.core.exceptions import ApiError

    try:
        yield
    except ApiError as exc:
        raise translate_api_error(exc, verb, resource, namespace, name) from exc
    except (
        httpx2.ConnectError,
        httpx2.ConnectTimeout,
        httpx2.ReadTimeout,
        httpx2.RemoteProtocolError,
        httpx2.ProxyError,
    ) as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            hint = (
                "the server's certificate does not match the kubeconfig's certificate-authority "
                "(or tls-server-name); fix those, or get a fresh kubeconfig from your cluster"
            )
        else:
            hint = (
                "check that the cluster is up and reachable (`kubectl cluster-info`); "
                "for the local harness: `python -m harness up`"
            )
        raise ClusterUnreachable(
            f"cannot reach the Kubernetes API{' at ' + server if server else ''}: {exc}", hint=hint
        ) from exc


def translate_api_error(exc: Exception, verb: str, resource: str, namespace: str, name: str = "") -> PypodError:
    status = getattr(exc, "status", None)
    code = getattr(status, "code", None)
    message = getattr(status, "message", "") or str(exc)
    what = f"{resource}/{name}" if name else resource
    if "admission webhook" in message and "denied the request" in message:
        # A webhook (Kueue's, a policy engine's) said no: its own words are the news, not RBAC.
        return Rejected(
            f"the cluster refused to {verb} {what}: {message}",
            hint="change what the webhook names (flags, --template or the profile) and run again",
        )
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


class Connection:
    """A client, where it points, and API failures turned into one-line pypod errors:
    what every command that talks to a namespace starts from."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        self.client: Any
        self.client, self.target = connect(kubeconfig, context, namespace)

    @property
    def namespace(self) -> str:
        return self.target.namespace

    @contextlib.contextmanager
    def api(self, verb: str, resource: str, name: str = "") -> Iterator[None]:
        with api_errors(verb, resource, self.namespace, self.target.server, name):
            yield
