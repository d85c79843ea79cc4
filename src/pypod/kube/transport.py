"""The connection to the API server as kubectl makes it from a kubeconfig: TLS
(certificate-authority, client certificates, insecure-skip-tls-verify,
tls-server-name), proxy-url or the proxy environment, and credentials on every
request, refreshed when they near expiry or draw a 401 (then the request is sent
once more).

lightkube gets this as an httpx2 transport through its public `transport=`
parameter; it keeps building and decoding the API calls. Its own kubeconfig
adapter (lightkube.config.client_adapter) has no hook for these, so it is given
only the server URL.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import ssl
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Generic, TypeVar
from urllib.parse import urlsplit

import httpx2

from ..errors import KubeconfigError
from .credentials import Credential, CredentialCache, credential_source
from .kubeconfig import Selection, UserSpec

Inner = TypeVar("Inner", httpx2.HTTPTransport, httpx2.AsyncHTTPTransport)
ClientCert = tuple[bytes, bytes]


def ssl_context(selection: Selection, exec_cert: ClientCert | None = None) -> ssl.SSLContext:
    """Server verification and the client certificate, from the kubeconfig (or the exec plugin's answer)."""
    cluster = selection.cluster
    if cluster.insecure:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        try:
            if cluster.ca_data is not None:
                ctx = ssl.create_default_context(cadata=cluster.ca_data.decode("ascii", errors="replace"))
            elif cluster.ca_file:
                ctx = ssl.create_default_context(cafile=cluster.ca_file)
            else:
                ctx = ssl.create_default_context()
        except FileNotFoundError:
            raise KubeconfigError(
                f"certificate-authority {cluster.ca_file} of cluster {selection.cluster_name!r} does not exist",
                hint="fix the path in the kubeconfig (relative paths are relative to the kubeconfig's folder)",
            ) from None
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise KubeconfigError(
                f"certificate-authority of cluster {selection.cluster_name!r} is not a PEM certificate "
                f"({getattr(exc, 'reason', None) or exc})",
                hint="fix certificate-authority(-data) in the kubeconfig",
            ) from None
    _load_client_cert(ctx, selection.user, selection.user_name, exec_cert)
    return ctx


def _load_client_cert(ctx: ssl.SSLContext, user: UserSpec, user_name: str, exec_cert: ClientCert | None) -> None:
    what = f"client certificate of kubeconfig user {user_name!r}"
    try:
        if user.client_cert_file and user.client_key_file:
            ctx.load_cert_chain(user.client_cert_file, user.client_key_file)
            return
        cert = user.client_cert_data or (Path(user.client_cert_file).read_bytes() if user.client_cert_file else None)
        key = user.client_key_data or (Path(user.client_key_file).read_bytes() if user.client_key_file else None)
        if cert and key:
            _load_pem_pair(ctx, cert, key)
        elif exec_cert:
            _load_pem_pair(ctx, *exec_cert)
    except FileNotFoundError as exc:
        raise KubeconfigError(
            f"{what}: {exc.filename or 'a file'} does not exist",
            hint="fix client-certificate/client-key in the kubeconfig (relative to its folder)",
        ) from None
    except (ssl.SSLError, OSError) as exc:
        raise KubeconfigError(
            f"{what} cannot be loaded ({getattr(exc, 'reason', None) or exc.strerror or exc})",
            hint="check that the certificate and key are PEM and belong together",
        ) from None


def _load_pem_pair(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # ssl loads certificates only from files: write them into a private folder and remove it at once.
    with tempfile.TemporaryDirectory(prefix="pypod-tls-") as folder:
        cert_path, key_path = Path(folder, "client.crt"), Path(folder, "client.key")
        for path, data in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
        ctx.load_cert_chain(cert_path, key_path)


def choose_proxy(server: str, proxy_url: str | None, environ: Mapping[str, str]) -> str | None:
    """proxy-url, else the environment's proxy for `server` as Go's net/http picks it (None: connect directly)."""
    if proxy_url:
        return proxy_url
    url = urlsplit(server)
    names = ("HTTPS_PROXY", "https_proxy") if url.scheme == "https" else ("HTTP_PROXY", "http_proxy")
    proxy = next((environ[n] for n in names if environ.get(n)), "")
    host = (url.hostname or "").lower()
    if (
        not proxy
        or _is_loopback(host)
        or _bypassed(host, url.port, environ.get("NO_PROXY") or environ.get("no_proxy") or "")
    ):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    """NO_PROXY as Go reads it, with kubectl's CIDR entries: *, IPs, CIDRs, domains, .domains, host:port."""
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        try:
            network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            network = None
        if network is not None:
            if _ip_in(host, network):
                return True
            continue
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and entry_port != str(port or ""):
            continue
        name = name.lstrip("*")
        if name.startswith("."):
            if host.endswith(name):
                return True
        elif host == name or host.endswith("." + name):
            return True
    return False


def _ip_in(host: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        return ipaddress.ip_address(host) in network
    except ValueError:
        return False


def static_headers(user: UserSpec) -> list[tuple[str, str]]:
    """Basic auth and impersonation, which do not change."""
    import base64

    headers: list[tuple[str, str]] = []
    if user.username or user.password:
        pair = f"{user.username or ''}:{user.password or ''}".encode()
        headers.append(("Authorization", "Basic " + base64.b64encode(pair).decode()))
    if user.impersonate:
        headers.append(("Impersonate-User", user.impersonate))
        if user.impersonate_uid:
            headers.append(("Impersonate-Uid", user.impersonate_uid))
        headers.extend(("Impersonate-Group", group) for group in user.impersonate_groups)
        for key, values in user.impersonate_extra:
            headers.extend((f"Impersonate-Extra-{key}", value) for value in values)
    return headers


class _KubeConnection(Generic[Inner]):
    """What the sync and async transports share: settings, credentials and the pool per client certificate."""

    def __init__(self, selection: Selection, http2: bool = False, environ: Mapping[str, str] | None = None) -> None:
        self.selection = selection
        self.credentials: CredentialCache | None = credential_source(
            selection.user, selection.user_name, selection.cluster
        )
        self._http2 = http2
        self._proxy = choose_proxy(
            selection.cluster.server, selection.cluster.proxy_url, os.environ if environ is None else environ
        )
        self._headers = static_headers(selection.user)
        self._lock = threading.Lock()
        self._inner: Inner | None = None
        self._inner_cert: ClientCert | None = None
        self._retired: list[Inner] = []
        self._make_inner(ssl_context(selection))  # a broken CA or certificate fails at connect, not at first use

    def _new_transport(self, ctx: ssl.SSLContext, proxy: httpx2.Proxy | None) -> Inner:
        raise NotImplementedError

    def _make_inner(self, ctx: ssl.SSLContext, cert: ClientCert | None = None) -> Inner:
        try:
            inner = self._new_transport(ctx, httpx2.Proxy(self._proxy) if self._proxy else None)
        except ImportError:
            raise KubeconfigError(
                f"the proxy {self._proxy} of cluster {self.selection.cluster_name!r} is SOCKS, "
                "which needs the socksio package",
                hint="pip install socksio (or pypod's own dependencies again)",
            ) from None
        if self._inner is not None:
            self._retired.append(self._inner)  # responses still streaming from it keep their connection
        self._inner, self._inner_cert = inner, cert
        return inner

    def _inner_for(self, credential: Credential | None) -> Inner:
        """New connections when an exec plugin hands out a new client certificate (client-go closes them too)."""
        cert = credential.client_cert if credential else None
        with self._lock:
            if self._inner is None or (cert is not None and cert != self._inner_cert):
                return self._make_inner(ssl_context(self.selection, cert), cert)
            return self._inner

    def _prepare(self, request: httpx2.Request, credential: Credential | None) -> None:
        if self._headers:
            names = {name.lower() for name, _ in self._headers}
            kept: list[tuple[str, str]] = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in names]
            request.headers = httpx2.Headers([*kept, *self._headers])
        if credential is not None and credential.token:
            request.headers["Authorization"] = f"Bearer {credential.token}"
        if self.selection.cluster.tls_server_name:
            request.extensions = {**request.extensions, "sni_hostname": self.selection.cluster.tls_server_name}

    def _retry_after(self, response: httpx2.Response) -> bool:
        return response.status_code == 401 and self.credentials is not None and self.credentials.refreshable


class KubeTransport(_KubeConnection[httpx2.HTTPTransport], httpx2.BaseTransport):
    def _new_transport(self, ctx: ssl.SSLContext, proxy: httpx2.Proxy | None) -> httpx2.HTTPTransport:
        return httpx2.HTTPTransport(verify=ctx, proxy=proxy, http2=self._http2, trust_env=False)

    def _send(self, request: httpx2.Request, credential: Credential | None) -> httpx2.Response:
        inner = self._inner_for(credential)
        self._prepare(request, credential)
        return inner.handle_request(request)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        credential = self.credentials.current() if self.credentials else None
        response = self._send(request, credential)
        if self._retry_after(response) and credential is not None and self.credentials is not None:
            response.read()
            response.close()
            response = self._send(request, self.credentials.after_unauthorized(credential))
        return response

    def close(self) -> None:
        for inner in (*self._retired, *([self._inner] if self._inner else [])):
            inner.close()


class AsyncKubeTransport(_KubeConnection[httpx2.AsyncHTTPTransport], httpx2.AsyncBaseTransport):
    def _new_transport(self, ctx: ssl.SSLContext, proxy: httpx2.Proxy | None) -> httpx2.AsyncHTTPTransport:
        return httpx2.AsyncHTTPTransport(verify=ctx, proxy=proxy, http2=self._http2, trust_env=False)

    async def _credential(self, refused: Credential | None = None) -> Credential | None:
        cache = self.credentials
        if cache is None:
            return None
        if refused is not None:
            return await asyncio.to_thread(cache.after_unauthorized, refused)
        # A plugin may take seconds (or prompt): run it off the event loop.
        return cache.fresh() or await asyncio.to_thread(cache.current)

    async def _send(self, request: httpx2.Request, credential: Credential | None) -> httpx2.Response:
        inner = self._inner_for(credential)
        self._prepare(request, credential)
        return await inner.handle_async_request(request)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        credential = await self._credential()
        response = await self._send(request, credential)
        if self._retry_after(response) and credential is not None:
            await response.aread()
            await response.aclose()
            response = await self._send(request, await self._credential(refused=credential))
        return response

    async def aclose(self) -> None:
        for inner in (*self._retired, *([self._inner] if self._inner else [])):
            await inner.aclose()
