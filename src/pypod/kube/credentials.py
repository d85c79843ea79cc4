"""Credentials for the API: a kubeconfig's token, token file or exec credential
plugin, cached and refreshed as client-go does.

An exec plugin is run as kubectl runs it (client-go's plugin/pkg/client/auth/exec):
the kubeconfig's `env` on top of ours, KUBERNETES_EXEC_INFO holding an
ExecCredential with `spec.interactive` (and `spec.cluster` when
`provideClusterInfo` is set), the terminal as its stdin only when interactive,
its stderr passed through to the user. Its answer may carry a token or a client
certificate and key, and an `expirationTimestamp`: the credential is fetched again
shortly before then, and after a 401.

Parsing and decisions are pure; `run_exec_plugin` and `CredentialCache` do the I/O.
A token never appears in a message, a repr or a log.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import KubeconfigError
from .kubeconfig import ClusterSpec, ExecSpec, UserSpec

EXEC_INFO_ENV = "KUBERNETES_EXEC_INFO"
# Refresh this long before a credential expires (capped at a fifth of its lifetime),
# so that a request in flight and a clock a little off do not meet an expired token.
REFRESH_MARGIN = dt.timedelta(seconds=30)
# client-go re-reads a tokenFile at most once a minute, and on a 401.
TOKEN_FILE_MAX_AGE = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class Credential:
    token: str | None = field(default=None, repr=False)
    client_cert_pem: bytes | None = field(default=None, repr=False)
    client_key_pem: bytes | None = field(default=None, repr=False)
    expires_at: dt.datetime | None = None
    fetched_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def client_cert(self) -> tuple[bytes, bytes] | None:
        if self.client_cert_pem and self.client_key_pem:
            return self.client_cert_pem, self.client_key_pem
        return None


def needs_refresh(credential: Credential, now: dt.datetime) -> bool:
    """True once `credential` is within its refresh margin of expiring (never without an expiry)."""
    if credential.expires_at is None:
        return False
    lifetime = credential.expires_at - credential.fetched_at
    margin = min(REFRESH_MARGIN, max(lifetime, dt.timedelta(0)) / 5)
    return now >= credential.expires_at - margin


def decide_interactive(mode: str, stdin_is_terminal: bool, plugin: str) -> bool:
    """Whether the plugin gets the terminal, by interactiveMode; Always without a terminal is an error."""
    if mode == "Never":
        return False
    if mode == "Always" and not stdin_is_terminal:
        raise KubeconfigError(
            f"credential plugin {plugin} needs a terminal (interactiveMode: Always), but standard input is not one",
            hint="run pypod from a terminal, or log in with the plugin first so it has a cached credential",
        )
    return stdin_is_terminal


def exec_info(spec: ExecSpec, cluster: ClusterSpec, interactive: bool) -> str:
    """The KUBERNETES_EXEC_INFO value: an ExecCredential with spec.interactive and, if asked, spec.cluster."""
    request: dict[str, Any] = {"interactive": interactive}
    if spec.provide_cluster_info:
        request["cluster"] = exec_cluster_info(cluster)
    return json.dumps({"kind": "ExecCredential", "apiVersion": spec.api_version, "spec": request})


def exec_cluster_info(cluster: ClusterSpec) -> dict[str, Any]:
    """spec.cluster as client-go fills it: the CA as data even when the kubeconfig names a file."""
    info: dict[str, Any] = {"server": cluster.server}
    if cluster.tls_server_name:
        info["tls-server-name"] = cluster.tls_server_name
    if cluster.insecure:
        info["insecure-skip-tls-verify"] = True
    ca = cluster.ca_data
    if ca is None and cluster.ca_file:
        try:
            ca = Path(cluster.ca_file).read_bytes()
        except OSError as exc:
            raise KubeconfigError(
                f"cannot read certificate-authority {cluster.ca_file}: {exc.strerror}", hint="fix the kubeconfig's path"
            ) from exc
    if ca:
        info["certificate-authority-data"] = base64.b64encode(ca).decode()
    if cluster.proxy_url:
        info["proxy-url"] = cluster.proxy_url
    if cluster.disable_compression:
        info["disable-compression"] = True
    if cluster.exec_config is not None:
        info["config"] = cluster.exec_config
    return info


def parse_exec_credential(stdout: bytes, spec: ExecSpec, now: dt.datetime | None = None) -> Credential:
    """The plugin's answer, checked as client-go checks it. Messages never quote stdout: it holds secrets."""
    try:
        doc = json.loads(stdout)
    except ValueError:
        raise ExecPluginFailed(
            "printed no ExecCredential JSON" + (" (nothing at all)" if not stdout.strip() else "")
        ) from None
    if not isinstance(doc, dict):
        raise ExecPluginFailed("printed JSON that is not an ExecCredential object")
    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    if kind != "ExecCredential":
        raise ExecPluginFailed(f"printed kind {kind!r}, not ExecCredential")
    if api_version != spec.api_version:
        raise ExecPluginFailed(
            f"answered in apiVersion {api_version!r}, but the kubeconfig asks for {spec.api_version!r}"
        )
    status = doc.get("status")
    if not isinstance(status, dict):
        raise ExecPluginFailed("returned no status")
    token = status.get("token") or None
    cert, key = status.get("clientCertificateData") or None, status.get("clientKeyData") or None
    if not (token or cert or key):
        raise ExecPluginFailed("returned neither a token nor a client certificate and key")
    if bool(cert) != bool(key):
        raise ExecPluginFailed("returned only one of clientCertificateData and clientKeyData")
    if not all(v is None or isinstance(v, str) for v in (token, cert, key)):
        raise ExecPluginFailed("returned a status whose token or certificate is not a string")
    expires_at = None
    stamp = status.get("expirationTimestamp")
    if stamp:
        try:
            expires_at = dt.datetime.fromisoformat(str(stamp))
        except ValueError:
            raise ExecPluginFailed(f"returned expirationTimestamp {stamp!r}, which is not RFC 3339") from None
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=dt.UTC)
    return Credential(
        token=token,
        client_cert_pem=cert.encode() if cert else None,
        client_key_pem=key.encode() if key else None,
        expires_at=expires_at,
        fetched_at=now or dt.datetime.now(dt.UTC),
    )


class ExecPluginFailed(Exception):
    """What was wrong with a plugin's answer; `run_exec_plugin` turns it into a KubeconfigError."""


def plugin_error(spec: ExecSpec, user: str, problem: str, stderr_tail: str = "") -> KubeconfigError:
    said = f" (it said: {stderr_tail})" if stderr_tail else ""
    return KubeconfigError(
        f"credential plugin {spec.name} of kubeconfig user {user!r} {problem}{said}",
        hint=f"run `{' '.join((spec.name, *spec.args))}` yourself to see why; you may need to log in again",
    )


def run_exec_plugin(
    spec: ExecSpec,
    cluster: ClusterSpec,
    user: str,
    environ: Mapping[str, str] | None = None,
    stdin_is_terminal: bool | None = None,
    stderr: IO[str] | None = None,
) -> Credential:
    """Run the plugin once and return its credential; every failure is one KubeconfigError."""
    if stdin_is_terminal is None:
        stdin_is_terminal = _stdin_is_terminal()
    interactive = decide_interactive(spec.interactive_mode, stdin_is_terminal, spec.name)
    env = {**(os.environ if environ is None else environ), **dict(spec.env)}
    env[EXEC_INFO_ENV] = exec_info(spec, cluster, interactive)
    try:
        proc = subprocess.Popen(
            [spec.command, *spec.args],
            env=env,
            stdin=None if interactive else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
        found = "is not installed" if isinstance(exc, FileNotFoundError) else "cannot be run"
        where = "on PATH" if os.sep not in spec.command else f"at {spec.command}"
        raise KubeconfigError(
            f"credential plugin {spec.name} of kubeconfig user {user!r} {found} ({exc.strerror} {where})",
            hint=spec.install_hint or "install it, or fix users[].user.exec.command in your kubeconfig",
        ) from None
    tee = _StderrTee(proc.stderr, stderr or sys.stderr)  # type: ignore[arg-type]
    stdout = proc.stdout.read() if proc.stdout else b""
    code = proc.wait()
    tee.join()
    if code != 0:
        raise plugin_error(spec, user, f"exited with code {code}", tee.last_line)
    try:
        return parse_exec_credential(stdout, spec)
    except ExecPluginFailed as exc:
        raise plugin_error(spec, user, str(exc), tee.last_line) from None


def _stdin_is_terminal() -> bool:
    try:
        return os.isatty(sys.stdin.fileno())
    except (AttributeError, OSError, ValueError):
        return False


class _StderrTee:
    """Copies the plugin's stderr to ours as it comes (prompts must show), keeping its last line."""

    def __init__(self, source: IO[bytes], sink: IO[str]) -> None:
        self._source, self._sink = source, sink
        self._tail = b""
        self._thread = threading.Thread(target=self._copy, name="exec-plugin-stderr", daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        for chunk in iter(lambda: self._source.read1(4096), b""):  # type: ignore[attr-defined]
            self._tail = (self._tail + chunk)[-4096:]
            try:
                self._sink.write(chunk.decode(errors="replace"))
                self._sink.flush()
            except (OSError, ValueError):
                pass

    def join(self) -> None:
        self._thread.join()

    @property
    def last_line(self) -> str:
        lines = [line.strip() for line in self._tail.decode(errors="replace").splitlines() if line.strip()]
        return lines[-1][:300] if lines else ""


class CredentialCache:
    """One source of credentials, fetched when first needed, again when near expiry or after a 401.

    Thread-safe; the lock also keeps an interactive plugin from being run twice at once.
    """

    def __init__(self, fetch: Callable[[], Credential], refreshable: bool) -> None:
        self._fetch = fetch
        self.refreshable = refreshable
        self._lock = threading.Lock()
        self._current: Credential | None = None
        self.fetches = 0

    def fresh(self) -> Credential | None:
        """The cached credential if it needs no fetch, without blocking."""
        current = self._current
        if current is not None and not needs_refresh(current, dt.datetime.now(dt.UTC)):
            return current
        return None

    def current(self) -> Credential:
        with self._lock:
            current = self._current
            if current is None or needs_refresh(current, dt.datetime.now(dt.UTC)):
                current = self._refetch()
            return current

    def after_unauthorized(self, used: Credential) -> Credential:
        """A fresh credential after `used` was refused, unless another thread already replaced it."""
        with self._lock:
            if self._current is not used and self._current is not None:
                return self._current
            return self._refetch()

    def _refetch(self) -> Credential:
        self._current = self._fetch()
        self.fetches += 1
        return self._current


def credential_source(user: UserSpec, user_name: str, cluster: ClusterSpec) -> CredentialCache | None:
    """How `user` authenticates by header: a token, a token file or an exec plugin (None: not by header).

    As in client-go, an exec plugin is used only when the user has no token,
    username/password or client certificate of its own.
    """
    if user.token:  # the kubeconfig reference: "If both Token and TokenFile are present, Token takes precedence"
        token = user.token
        return CredentialCache(lambda: Credential(token=token), refreshable=False)
    if user.token_file:
        path = user.token_file
        return CredentialCache(lambda: read_token_file(path, user_name), refreshable=True)
    if user.exec and not (user.username or user.has_client_cert):
        spec = user.exec
        return CredentialCache(lambda: run_exec_plugin(spec, cluster, user_name), refreshable=True)
    return None


def read_token_file(path: str, user: str) -> Credential:
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise KubeconfigError(
            f"cannot read tokenFile {path} of kubeconfig user {user!r}: {exc.strerror}", hint="fix the path or the file"
        ) from exc
    now = dt.datetime.now(dt.UTC)
    return Credential(token=token, expires_at=now + TOKEN_FILE_MAX_AGE, fetched_at=now)
