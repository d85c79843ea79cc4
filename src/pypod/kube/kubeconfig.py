"""kubeconfig files read as kubectl reads them: which files, how several merge,
where relative paths point, and what one context selects.

The rules are client-go's (tools/clientcmd/loader.go and validation.go):
- `--kubeconfig` names one file, which must exist; otherwise every file in
  $KUBECONFIG (missing ones skipped, duplicates dropped), else ~/.kube/config.
- Merging: the first file to name a cluster, user or context wins that name
  whole; `current-context` comes from the first file that sets one.
- Relative paths (certificate-authority, client-certificate, client-key,
  tokenFile, and an exec command with a slash in it) are relative to the folder
  of the file the entry came from.

Everything here but `read_kubeconfig_files` is pure.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import KubeconfigError

DEFAULT_KUBECONFIG = "~/.kube/config"
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
INTERACTIVE_MODES = ("Never", "IfAvailable", "Always")
PROXY_SCHEMES = ("http", "https", "socks5")
# The cluster extension whose value an exec plugin gets as spec.cluster.config.
EXEC_EXTENSION = "client.authentication.k8s.io/exec"

_CLUSTER_PATHS = ("certificate-authority",)
_USER_PATHS = ("client-certificate", "client-key", "tokenFile")


@dataclass(frozen=True)
class ExecSpec:
    """users[].user.exec: a credential plugin."""

    api_version: str
    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    provide_cluster_info: bool = False
    interactive_mode: str = "IfAvailable"
    install_hint: str = ""

    @property
    def name(self) -> str:
        return os.path.basename(self.command)


@dataclass(frozen=True)
class ClusterSpec:
    server: str
    ca_file: str | None = None
    ca_data: bytes | None = None  # PEM, decoded from certificate-authority-data
    insecure: bool = False
    tls_server_name: str | None = None
    proxy_url: str | None = None
    disable_compression: bool = False
    exec_config: Any = None  # extensions[client.authentication.k8s.io/exec], for exec plugins


@dataclass(frozen=True)
class UserSpec:
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_cert_file: str | None = None
    client_cert_data: bytes | None = field(default=None, repr=False)
    client_key_file: str | None = None
    client_key_data: bytes | None = field(default=None, repr=False)
    exec: ExecSpec | None = None
    impersonate: str | None = None
    impersonate_uid: str | None = None
    impersonate_groups: tuple[str, ...] = ()
    impersonate_extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def has_client_cert(self) -> bool:
        return bool(self.client_cert_file or self.client_cert_data)


@dataclass(frozen=True)
class Selection:
    """What one context of a (merged) kubeconfig points at."""

    context: str
    namespace: str | None
    cluster_name: str
    cluster: ClusterSpec
    user_name: str
    user: UserSpec
    source: str  # for messages: the file(s) it came from
    in_cluster: bool = False  # from the pod's service account, not a kubeconfig


@dataclass
class MergedKubeconfig:
    clusters: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    contexts: dict[str, dict[str, Any]] = field(default_factory=dict)
    current_context: str = ""


def kubeconfig_files(explicit: str | None, environ: Mapping[str, str]) -> tuple[list[Path], bool]:
    """The files kubectl would read, and whether they came from $KUBECONFIG."""
    if explicit:
        return [Path(explicit).expanduser()], False
    listed = environ.get("KUBECONFIG", "")
    if listed:
        paths: list[Path] = []
        for entry in listed.split(os.pathsep):
            path = Path(entry).expanduser()
            if entry and path not in paths:
                paths.append(path)
        return paths, True
    return [Path(DEFAULT_KUBECONFIG).expanduser()], False


def read_kubeconfig_files(paths: Sequence[Path], explicit: bool) -> list[tuple[Path, Any]]:
    """Parse each existing file; an explicit file must exist, others may be missing."""
    import yaml

    loaded: list[tuple[Path, Any]] = []
    for path in paths:
        try:
            text = path.read_text()
        except FileNotFoundError:
            if explicit:
                raise KubeconfigError(f"no kubeconfig at {path}", hint="check the --kubeconfig path") from None
            continue
        except OSError as exc:
            raise KubeconfigError(
                f"cannot read kubeconfig {path}: {exc.strerror}", hint="check its permissions"
            ) from exc
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise KubeconfigError(
                f"kubeconfig {path} is not valid YAML{where}", hint="fix the file or point KUBECONFIG elsewhere"
            ) from exc
        loaded.append((path.absolute(), doc or {}))
    return loaded


def merge_kubeconfigs(files: Sequence[tuple[Path, Any]]) -> MergedKubeconfig:
    """Merge parsed files by kubectl's rules; paths come out absolute."""
    merged = MergedKubeconfig()
    for path, doc in files:
        if not isinstance(doc, dict):
            raise KubeconfigError(
                f"kubeconfig {path} is not a mapping", hint="fix the file or point KUBECONFIG elsewhere"
            )
        folder = path.parent
        for section, key, target, path_keys in (
            ("clusters", "cluster", merged.clusters, _CLUSTER_PATHS),
            ("users", "user", merged.users, _USER_PATHS),
            ("contexts", "context", merged.contexts, ()),
        ):
            for name, body in _named_entries(doc, section, key, path):
                if name not in target:
                    target[name] = _resolve_paths(body, folder, path_keys)
        current = doc.get("current-context")
        if not merged.current_context and isinstance(current, str) and current:
            merged.current_context = current
    return merged


def _named_entries(doc: dict[str, Any], section: str, key: str, path: Path) -> list[tuple[str, dict[str, Any]]]:
    entries = doc.get(section) or []
    if not isinstance(entries, list):
        raise KubeconfigError(f"kubeconfig {path}: {section} is not a list", hint="fix the file")
    seen: set[str] = set()
    result: list[tuple[str, dict[str, Any]]] = []
    for entry in entries:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise KubeconfigError(f"kubeconfig {path}: an entry of {section} has no name", hint="fix the file")
        if name in seen:
            raise KubeconfigError(f"kubeconfig {path} names {key} {name!r} twice", hint="remove one of them")
        seen.add(name)
        body = entry.get(key) or {}
        if not isinstance(body, dict):
            raise KubeconfigError(f"kubeconfig {path}: {key} {name!r} is not a mapping", hint="fix the file")
        result.append((name, body))
    return result


def _resolve_paths(body: dict[str, Any], folder: Path, path_keys: Sequence[str]) -> dict[str, Any]:
    resolved = dict(body)
    for key in path_keys:
        value = resolved.get(key)
        if isinstance(value, str) and value and not os.path.isabs(value):
            resolved[key] = str(folder / value)
    exec_body = resolved.get("exec")
    if isinstance(exec_body, dict):
        command = exec_body.get("command")
        # As client-go: a bare name is looked up on PATH; only a path with a slash is file-relative.
        if isinstance(command, str) and os.sep in command and not os.path.isabs(command):
            resolved["exec"] = {**exec_body, "command": str(folder / command)}
    return resolved


def select_context(merged: MergedKubeconfig, context: str | None, source: str) -> Selection:
    """The cluster and user of `context` (default: current-context), checked as kubectl checks them."""
    name = context or merged.current_context
    known = ", ".join(sorted(merged.contexts)) or "none"
    if not name:
        raise KubeconfigError(f"{source} sets no current-context", hint=f"pick one with --context (known: {known})")
    if name not in merged.contexts:
        raise KubeconfigError(
            f"context {name!r} is not in {source}", hint=f"known contexts: {known}; pick one with --context"
        )
    body = merged.contexts[name]
    cluster_name = _str(body, "cluster", f"context {name!r}")
    if not cluster_name or cluster_name not in merged.clusters:
        raise KubeconfigError(
            f"context {name!r} names cluster {cluster_name!r}, which is not in {source}",
            hint="fix the context's cluster, or pick another --context",
        )
    user_name = _str(body, "user", f"context {name!r}") or ""
    if user_name and user_name not in merged.users:
        raise KubeconfigError(
            f"context {name!r} names user {user_name!r}, which is not in {source}",
            hint="fix the context's user, or pick another --context",
        )
    return Selection(
        context=name,
        namespace=_str(body, "namespace", f"context {name!r}"),
        cluster_name=cluster_name,
        cluster=parse_cluster(cluster_name, merged.clusters[cluster_name]),
        user_name=user_name,
        user=parse_user(user_name, merged.users.get(user_name, {})),
        source=source,
    )


def parse_cluster(name: str, body: dict[str, Any]) -> ClusterSpec:
    what = f"cluster {name!r}"
    server = _str(body, "server", what)
    if not server:
        raise KubeconfigError(f"{what} has no server", hint="set clusters[].cluster.server to the API's https URL")
    ca_file = _str(body, "certificate-authority", what)
    ca_data = _base64(body, "certificate-authority-data", what)
    if ca_file and ca_data:
        raise KubeconfigError(
            f"{what} sets both certificate-authority and certificate-authority-data",
            hint="keep one (kubectl refuses both)",
        )
    insecure = _bool(body, "insecure-skip-tls-verify", what)
    if insecure and (ca_file or ca_data):
        raise KubeconfigError(
            f"{what} sets insecure-skip-tls-verify together with a certificate-authority",
            hint="drop one of them (kubectl refuses both)",
        )
    proxy_url = _str(body, "proxy-url", what)
    if proxy_url:
        scheme = proxy_url.partition("://")[0].lower() if "://" in proxy_url else ""
        if scheme not in PROXY_SCHEMES:
            raise KubeconfigError(
                f"{what} has proxy-url {proxy_url!r} with an unsupported scheme",
                hint="use an http://, https:// or socks5:// proxy URL",
            )
    exec_config = None
    for entry in body.get("extensions") or []:
        if isinstance(entry, dict) and entry.get("name") == EXEC_EXTENSION:
            exec_config = entry.get("extension")
    return ClusterSpec(
        server=server,
        ca_file=ca_file,
        ca_data=ca_data,
        insecure=insecure,
        tls_server_name=_str(body, "tls-server-name", what),
        proxy_url=proxy_url,
        disable_compression=_bool(body, "disable-compression", what),
        exec_config=exec_config,
    )


def parse_user(name: str, body: dict[str, Any]) -> UserSpec:
    what = f"user {name!r}"
    if body.get("auth-provider"):
        provider = body["auth-provider"].get("name", "?") if isinstance(body["auth-provider"], dict) else "?"
        raise KubeconfigError(
            f"{what} logs in through auth-provider {provider!r}, which pypod does not support",
            hint="use the provider's exec credential plugin instead (kubelogin for oidc and Azure, "
            "gke-gcloud-auth-plugin for GKE), as kubectl itself recommends",
        )
    token = _str(body, "token", what)
    username, password = _str(body, "username", what), _str(body, "password", what)
    if token and (username or password):
        raise KubeconfigError(
            f"{what} sets both a token and a username/password", hint="keep one (kubectl refuses both)"
        )
    cert_file, cert_data = _str(body, "client-certificate", what), _base64(body, "client-certificate-data", what)
    key_file, key_data = _str(body, "client-key", what), _base64(body, "client-key-data", what)
    if cert_file and cert_data:
        raise KubeconfigError(f"{what} sets both client-certificate and client-certificate-data", hint="keep one")
    if key_file and key_data:
        raise KubeconfigError(f"{what} sets both client-key and client-key-data", hint="keep one")
    if (cert_file or cert_data) and not (key_file or key_data):
        raise KubeconfigError(
            f"{what} has a client certificate but no client-key", hint="add client-key or client-key-data"
        )
    if (key_file or key_data) and not (cert_file or cert_data):
        raise KubeconfigError(
            f"{what} has a client-key but no client certificate",
            hint="add client-certificate or client-certificate-data",
        )
    groups = body.get("as-groups") or []
    extra = body.get("as-user-extra") or {}
    if not isinstance(groups, list) or not isinstance(extra, dict):
        raise KubeconfigError(f"{what}: as-groups must be a list and as-user-extra a mapping", hint="fix the file")
    return UserSpec(
        token=token,
        token_file=_str(body, "tokenFile", what),
        username=username,
        password=password,
        client_cert_file=cert_file,
        client_cert_data=cert_data,
        client_key_file=key_file,
        client_key_data=key_data,
        exec=parse_exec(name, body["exec"]) if body.get("exec") else None,
        impersonate=_str(body, "as", what),
        impersonate_uid=_str(body, "as-uid", what),
        impersonate_groups=tuple(str(g) for g in groups),
        impersonate_extra=tuple((str(k), tuple(str(v) for v in (vs or []))) for k, vs in extra.items()),
    )


def parse_exec(user: str, body: Any) -> ExecSpec:
    what = f"the exec plugin of user {user!r}"
    if not isinstance(body, dict):
        raise KubeconfigError(f"{what} is not a mapping", hint="fix users[].user.exec")
    api_version = _str(body, "apiVersion", what) or ""
    command = _str(body, "command", what) or ""
    if not command:
        raise KubeconfigError(f"{what} has no command", hint="set users[].user.exec.command")
    if api_version not in EXEC_API_VERSIONS:
        raise KubeconfigError(
            f"{what} asks for apiVersion {api_version!r}",
            hint="use client.authentication.k8s.io/v1 or v1beta1 (kubectl supports only these)",
        )
    mode = _str(body, "interactiveMode", what)
    if not mode:
        if api_version.endswith("/v1"):
            raise KubeconfigError(
                f"{what} sets no interactiveMode, which apiVersion v1 requires",
                hint="add interactiveMode: IfAvailable (or Never) under exec; kubectl refuses it too",
            )
        mode = "IfAvailable"
    if mode not in INTERACTIVE_MODES:
        raise KubeconfigError(f"{what} has interactiveMode {mode!r}", hint="use Never, IfAvailable or Always")
    args = body.get("args") or []
    env = body.get("env") or []
    if not isinstance(args, list) or not isinstance(env, list):
        raise KubeconfigError(f"{what}: args and env must be lists", hint="fix users[].user.exec")
    pairs: list[tuple[str, str]] = []
    for item in env:
        if not isinstance(item, dict) or not item.get("name"):
            raise KubeconfigError(
                f"{what} has an env entry without a name", hint="give each env entry a name and value"
            )
        pairs.append((str(item["name"]), str(item.get("value", ""))))
    return ExecSpec(
        api_version=api_version,
        command=command,
        args=tuple(str(a) for a in args),
        env=tuple(pairs),
        provide_cluster_info=_bool(body, "provideClusterInfo", what),
        interactive_mode=mode,
        install_hint=" ".join(str(body.get("installHint") or "").split()),
    )


def _str(body: dict[str, Any], key: str, what: str) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise KubeconfigError(f"{what}: {key} must be a string", hint="fix the kubeconfig")
    return value


def _bool(body: dict[str, Any], key: str, what: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise KubeconfigError(f"{what}: {key} must be true or false", hint="fix the kubeconfig")
    return value


def _base64(body: dict[str, Any], key: str, what: str) -> bytes | None:
    value = _str(body, key, what)
    if value is None:
        return None
    try:
        # Go's decoder skips line breaks, which YAML folding and `base64` (no -w0) leave in.
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise KubeconfigError(f"{what}: {key} is not base64", hint="paste the PEM file base64-encoded") from None
