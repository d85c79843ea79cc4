"""kubeconfigs as the clouds write them, against the harness apiserver: exec
credential plugins (v1 and v1beta1, expiring tokens, a refused token, client
certificates), client certificates from files and data, certificate-authority,
tls-server-name, insecure-skip-tls-verify, proxy-url (CONNECT and SOCKS5), merged
$KUBECONFIG files, and the real `pypod` command with them, for lightkube and kubectl.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import stat
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from lightkube.resources.authentication_v1 import SelfSubjectReview
from lightkube.resources.core_v1 import ConfigMap, Namespace, Pod

from harness.cluster import ClusterInfo
from harness.layout import Layout
from harness.pki import Pki
from pypod.errors import ClusterUnreachable, Forbidden, KubeconfigError
from pypod.kube.client import api_errors, connect
from pypod.kube.kubectl import Kubectl
from tests.pypodcli import Terminal, run_cli
from tests.tcprelay import ConnectProxy, Forwarder, Socks5Proxy, running

pytestmark = pytest.mark.cluster

V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"

# A credential plugin as the clouds ship them: an executable that prints an ExecCredential.
# It logs each call (and who ran it: pypod or kubectl) so tests can count refreshes.
PLUGIN = """\
#!{python}
import datetime, json, os, sys
settings = json.loads(open(os.environ["TEST_PLUGIN_SETTINGS"]).read())
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
calls = settings["calls"]
try:
    parent = open(f"/proc/{{os.getppid()}}/comm").read().strip()
except OSError:
    parent = "?"
with open(calls, "a") as log:
    log.write(json.dumps({{"parent": parent, "info": info, "args": sys.argv[1:]}}) + "\\n")
n = sum(1 for _ in open(calls)) - 1
print(settings.get("stderr", "test plugin: handing out credential %d" % n), file=sys.stderr)
if settings.get("exit"):
    sys.exit(settings["exit"])
if settings.get("garbage"):
    print("this is not JSON")
    sys.exit(0)
status = {{}}
tokens = settings.get("tokens")
if tokens:
    status["token"] = tokens[min(n, len(tokens) - 1)]
if settings.get("cert"):
    status["clientCertificateData"] = open(settings["cert"]).read()
    status["clientKeyData"] = open(settings["key"]).read()
if settings.get("expires_in"):
    stamp = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=settings["expires_in"])
    status["expirationTimestamp"] = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
print(json.dumps({{"apiVersion": settings.get("answer_version", info["apiVersion"]),
                  "kind": "ExecCredential", "status": status}}))
"""


@dataclass(frozen=True)
class Access:
    server: str
    ca_file: str
    admin_token: str
    pki: Pki

    @property
    def address(self) -> tuple[str, int]:
        url = urlsplit(self.server)
        return url.hostname or "", url.port or 443


@pytest.fixture(scope="module")
def access(cluster: ClusterInfo) -> Access:
    admin = yaml.safe_load(Path(cluster.admin_kubeconfig).read_text())
    return Access(
        server=admin["clusters"][0]["cluster"]["server"],
        ca_file=admin["clusters"][0]["cluster"]["certificate-authority"],
        admin_token=admin["users"][0]["user"]["token"],
        pki=Pki(Layout.default().pki),
    )


@dataclass
class Plugin:
    path: Path
    settings_file: Path
    calls_file: Path

    def configure(self, **settings: Any) -> None:
        self.settings_file.write_text(json.dumps({"calls": str(self.calls_file), **settings}))

    def calls(self) -> list[dict[str, Any]]:
        if not self.calls_file.exists():
            return []
        return [json.loads(line) for line in self.calls_file.read_text().splitlines()]

    def exec_entry(self, api_version: str = V1, **extra: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "apiVersion": api_version,
            "command": str(self.path),
            "args": ["get-token", "--cluster", "harness"],
            "env": [{"name": "TEST_PLUGIN_SETTINGS", "value": str(self.settings_file)}],
        }
        if api_version == V1:
            entry["interactiveMode"] = "Never"
        entry.update(extra)
        return entry


@pytest.fixture
def plugin(tmp_path: Path) -> Plugin:
    folder = tmp_path / "bin"
    folder.mkdir()
    path = folder / "test-auth-plugin"
    path.write_text(PLUGIN.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    made = Plugin(path, tmp_path / "plugin-settings.json", tmp_path / "plugin-calls.jsonl")
    made.configure()
    return made


def kubeconfig(
    path: Path, cluster: dict[str, Any], user: dict[str, Any], namespace: str = "default", name: str = "t"
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": name, "cluster": cluster}],
                "users": [{"name": f"{name}-user", "user": user}],
                "contexts": [
                    {"name": name, "context": {"cluster": name, "user": f"{name}-user", "namespace": namespace}}
                ],
                "current-context": name,
            }
        )
    )
    return path


def whoami(client) -> str:  # type: ignore[no-untyped-def]
    review = client.create(SelfSubjectReview.from_dict({"apiVersion": "authentication.k8s.io/v1"}))
    return review.status.userInfo.username


def issue_client_cert(pki: Pki, folder: Path, common_name: str) -> tuple[Path, Path]:
    """A client certificate from the harness's CA: CN is the user, O=system:masters its group."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{common_name}.crt", folder / f"{common_name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubectl_get_pods(client_target, env_kubeconfig: str | None, cluster: ClusterInfo):  # type: ignore[no-untyped-def]
    """kubectl run with the argv pypod builds for it, and $KUBECONFIG as pypod saw it."""
    import os

    argv = [*Kubectl(cluster.kubectl, client_target).base(), "get", "pods", "-o", "name"]
    env = dict(os.environ)
    env.pop("KUBECONFIG", None)
    if env_kubeconfig is not None:
        env["KUBECONFIG"] = env_kubeconfig
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


# -- exec credential plugins -----------------------------------------------------


@pytest.mark.parametrize("api_version", [V1, V1BETA1])
def test_exec_plugin_of_either_version_authenticates(access, cluster, plugin, namespace, tmp_path, api_version):
    plugin.configure(tokens=[access.admin_token])
    entry = plugin.exec_entry(api_version, provideClusterInfo=True)
    if api_version == V1BETA1:
        entry.pop("interactiveMode", None)  # optional in v1beta1: IfAvailable
    path = kubeconfig(
        tmp_path / "config", {"server": access.server, "certificate-authority": access.ca_file}, {"exec": entry}
    )
    client, target = connect(str(path), None, namespace)
    assert list(client.list(Pod)) == []
    assert whoami(client) == "admin"
    calls = plugin.calls()
    assert len(calls) == 1  # no expiry: fetched once, reused
    assert calls[0]["args"] == ["get-token", "--cluster", "harness"]
    info = calls[0]["info"]
    assert info["apiVersion"] == api_version and info["kind"] == "ExecCredential"
    assert info["spec"]["interactive"] is False
    assert info["spec"]["cluster"]["server"] == access.server
    assert base64.b64decode(info["spec"]["cluster"]["certificate-authority-data"]) == Path(access.ca_file).read_bytes()
    # kubectl, given what pypod gives it, authenticates through the same plugin.
    result = kubectl_get_pods(target, None, cluster)
    assert result.returncode == 0, result.stderr


def test_expiring_tokens_are_refreshed_while_a_watch_runs(access, plugin, kube, namespace, tmp_path):
    plugin.configure(tokens=[access.admin_token], expires_in=3)
    path = kubeconfig(
        tmp_path / "config",
        {"server": access.server, "certificate-authority": access.ca_file},
        {"exec": plugin.exec_entry()},
        namespace,
    )
    client, _target = connect(str(path), None, None)
    names = [f"cm-{i}" for i in range(8)]
    seen: list[str] = []
    errors: list[BaseException] = []

    def create_slowly() -> None:
        try:
            for name in names:
                time.sleep(1.2)
                kube.create(ConfigMap.from_dict({"metadata": {"name": name}}), namespace=namespace)
        except BaseException as exc:
            errors.append(exc)

    maker = threading.Thread(target=create_slowly)
    started = time.monotonic()
    maker.start()
    # Each watch request lasts 2 s on the server, so it reconnects several times past expiries.
    for event, cm in client.watch(ConfigMap, namespace=namespace, server_timeout=2):
        if event == "ADDED" and cm.metadata.name in names:  # not the namespace's own kube-root-ca.crt
            seen.append(cm.metadata.name)
        if set(names) <= set(seen) or time.monotonic() - started > 60:
            break
    maker.join()
    assert not errors
    assert sorted(seen) == sorted(names)  # each once: resumed watches neither lose nor repeat events
    # Lists between watches keep working too, long after the first token "expired".
    assert {c.metadata.name for c in client.list(ConfigMap)} >= set(names)
    elapsed = time.monotonic() - started
    assert elapsed > 9
    calls = plugin.calls()
    assert len(calls) >= 3, f"plugin ran {len(calls)} times in {elapsed:.0f}s of 3-second tokens"
    assert len(calls) <= elapsed / 2 + 2  # refreshed near expiry, not on every request


def test_a_refused_token_is_fetched_again_and_the_request_sent_once_more(access, plugin, namespace, tmp_path):
    plugin.configure(tokens=["not-a-valid-token", access.admin_token])
    path = kubeconfig(
        tmp_path / "config",
        {"server": access.server, "certificate-authority": access.ca_file},
        {"exec": plugin.exec_entry()},
        namespace,
    )
    client, _target = connect(str(path), None, None)
    # The first request is a create: its body must go out again after the 401.
    client.create(ConfigMap.from_dict({"metadata": {"name": "after-401"}, "data": {"k": "v"}}))
    assert client.get(ConfigMap, "after-401").data == {"k": "v"}
    assert len(plugin.calls()) == 2


def test_a_refused_static_token_is_one_line(access, namespace, tmp_path):
    path = kubeconfig(
        tmp_path / "config", {"server": access.server, "certificate-authority": access.ca_file}, {"token": "wrong"}
    )
    client, target = connect(str(path), None, namespace)
    with pytest.raises(Forbidden) as err, api_errors("list", "pods", namespace, target.server):
        list(client.list(Pod))
    assert "rejected our credentials" in err.value.one_line()


def test_exec_plugin_may_answer_with_a_client_certificate(access, plugin, namespace, tmp_path):
    cert, key = issue_client_cert(access.pki, tmp_path / "pki", "pypod-plugin-cert")
    plugin.configure(cert=str(cert), key=str(key))
    path = kubeconfig(
        tmp_path / "config",
        {"server": access.server, "certificate-authority": access.ca_file},
        {"exec": plugin.exec_entry()},
    )
    client, _target = connect(str(path), None, namespace)
    assert whoami(client) == "pypod-plugin-cert"
    assert list(client.list(Pod)) == []
    assert len(plugin.calls()) == 1


# -- TLS ---------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["files", "data"])
def test_client_certificates_as_files_relative_to_the_kubeconfig_or_as_data(access, namespace, tmp_path, form):
    folder = tmp_path / "kube"
    cert, key = issue_client_cert(access.pki, folder / "certs", "pypod-cert-user")
    ca = folder / "ca.crt"
    ca.write_bytes(Path(access.ca_file).read_bytes())
    if form == "files":
        user = {"client-certificate": "certs/pypod-cert-user.crt", "client-key": "certs/pypod-cert-user.key"}
        cluster = {"server": access.server, "certificate-authority": "ca.crt"}  # relative to the kubeconfig
    else:
        user = {"client-certificate-data": b64(cert), "client-key-data": b64(key)}
        cluster = {"server": access.server, "certificate-authority-data": b64(ca)}
    path = kubeconfig(folder / "config", cluster, user)
    client, _target = connect(str(path), None, namespace)
    assert whoami(client) == "pypod-cert-user"
    assert client.get(Namespace, namespace).metadata.name == namespace


def test_tls_server_name_and_insecure_skip_tls_verify(access, namespace, tmp_path):
    # The apiserver under an address its certificate does not name (127.0.0.2).
    with running(Forwarder(access.address, bind="127.0.0.2")) as forward:
        server = f"https://127.0.0.2:{forward.port}"
        user = {"token": access.admin_token}
        plain = kubeconfig(tmp_path / "plain", {"server": server, "certificate-authority": access.ca_file}, user)
        client, target = connect(str(plain), None, namespace)
        with pytest.raises(ClusterUnreachable) as err, api_errors("list", "pods", namespace, target.server):
            list(client.list(Pod))
        assert "tls-server-name" in err.value.hint

        named = kubeconfig(
            tmp_path / "named",
            {"server": server, "certificate-authority": access.ca_file, "tls-server-name": "kubernetes.default"},
            user,
        )
        client, _target = connect(str(named), None, namespace)
        assert whoami(client) == "admin"

        insecure = kubeconfig(tmp_path / "insecure", {"server": server, "insecure-skip-tls-verify": True}, user)
        client, _target = connect(str(insecure), None, namespace)
        assert whoami(client) == "admin"


# -- proxies -------------------------------------------------------------------------


def test_proxy_url_connect_proxy_for_pypod_and_kubectl(access, cluster, namespace, tmp_path):
    with running(ConnectProxy()) as proxy:
        path = kubeconfig(
            tmp_path / "config",
            {
                "server": access.server,
                "certificate-authority": access.ca_file,
                "proxy-url": f"http://127.0.0.1:{proxy.port}",
            },
            {"token": access.admin_token},
            namespace,
        )
        client, target = connect(str(path), None, None)
        assert list(client.list(Pod)) == []
        host, port = access.address
        assert proxy.seen == [f"CONNECT {host}:{port}"]
        result = kubectl_get_pods(target, None, cluster)
        assert result.returncode == 0, result.stderr
        assert len(proxy.seen) >= 2 and set(proxy.seen) == {f"CONNECT {host}:{port}"}


def test_proxy_url_socks5(access, namespace, tmp_path):
    with running(Socks5Proxy()) as proxy:
        path = kubeconfig(
            tmp_path / "config",
            {
                "server": access.server,
                "certificate-authority": access.ca_file,
                "proxy-url": f"socks5://127.0.0.1:{proxy.port}",
            },
            {"token": access.admin_token},
            namespace,
        )
        client, _target = connect(str(path), None, None)
        assert whoami(client) == "admin"
        host, port = access.address
        assert proxy.seen == [f"{host}:{port}"]


# -- merged $KUBECONFIG and the real command -------------------------------------------


def split_kubeconfig(access: Access, plugin: Plugin, tmp_path: Path, namespace: str) -> str:
    """The exec user in one file, cluster and context in another (with a relative CA), a third that
    loses every conflict: what `aws eks update-kubeconfig` next to a hand-written file gives."""
    users = tmp_path / "users.yaml"
    users.write_text(
        yaml.safe_dump(
            {"users": [{"name": "cloud", "user": {"exec": plugin.exec_entry()}}], "current-context": "cloud"}
        )
    )
    clusters_dir = tmp_path / "clusters"
    clusters_dir.mkdir()
    (clusters_dir / "harness-ca.crt").write_bytes(Path(access.ca_file).read_bytes())
    (clusters_dir / "config").write_text(
        yaml.safe_dump(
            {
                "clusters": [
                    {"name": "c", "cluster": {"server": access.server, "certificate-authority": "harness-ca.crt"}}
                ],
                "contexts": [{"name": "cloud", "context": {"cluster": "c", "user": "cloud", "namespace": namespace}}],
                "current-context": "loses",
            }
        )
    )
    loser = tmp_path / "loser.yaml"
    loser.write_text(
        yaml.safe_dump(
            {
                "users": [{"name": "cloud", "user": {"token": "wrong"}}],
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
            }
        )
    )
    return ":".join([str(tmp_path / "missing.yaml"), str(users), str(clusters_dir / "config"), str(loser)])


def test_merged_kubeconfig_files_for_pypod_and_kubectl(access, cluster, plugin, namespace, tmp_path, monkeypatch):
    plugin.configure(tokens=[access.admin_token])
    listed = split_kubeconfig(access, plugin, tmp_path, namespace)
    monkeypatch.setenv("KUBECONFIG", listed)
    client, target = connect(None, None, None)
    assert target.kubeconfig is None and target.context == "cloud" and target.namespace == namespace
    assert whoami(client) == "admin"
    result = kubectl_get_pods(target, listed, cluster)
    assert result.returncode == 0, result.stderr
    parents = [c["parent"] for c in plugin.calls()]
    assert len(parents) == 2 and parents[0].startswith("python") and parents[1] == "kubectl", parents


def test_pypod_ps_with_an_exec_plugin_kubeconfig(access, plugin, pypod_env, namespace, tmp_path):
    plugin.configure(tokens=[access.admin_token])
    env = dict(pypod_env, KUBECONFIG=split_kubeconfig(access, plugin, tmp_path, namespace))
    result = run_cli(["ps"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test plugin: handing out credential 0" in result.stderr  # the plugin's stderr reaches the user
    assert len(plugin.calls()) == 1


def test_repl_through_lightkube_and_kubectl_with_an_exec_plugin(
    access, cluster, plugin, pypod_env, namespace, tmp_path
):
    plugin.configure(tokens=[access.admin_token])
    env = dict(
        pypod_env,
        KUBECONFIG=split_kubeconfig(access, plugin, tmp_path, namespace),
        PYPOD_IMAGE=cluster.base_image,
    )
    term = Terminal([], env, cwd=tmp_path)
    term.expect(">>> ", 120)
    term.line("print(6 * 7)")
    term.expect("42\r\n")
    term.line("exit()")
    assert term.wait(60) == 0
    parents = {c["parent"] for c in plugin.calls()}
    assert "kubectl" in parents, parents  # the kubectl pypod started used the same kubeconfig and plugin


# -- errors through the real command ---------------------------------------------------


def cli_with(pypod_env: dict[str, str], config: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(["ps"], dict(pypod_env, KUBECONFIG=str(config)), cwd=tmp_path)


def assert_one_line_error(result: subprocess.CompletedProcess[str], exit_code: int) -> str:
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("pypod: ")
    return last


def test_missing_plugin_is_one_line_with_its_install_hint(access, pypod_env, tmp_path):
    entry = {
        "apiVersion": V1,
        "command": "gke-gcloud-auth-plugin-" + uuid.uuid4().hex[:6],
        "interactiveMode": "IfAvailable",
        "installHint": "Install gke-gcloud-auth-plugin for use with kubectl by following\n"
        "    https://cloud.google.com/kubernetes-engine/docs/how-to/cluster-access-for-kubectl",
    }
    config = kubeconfig(
        tmp_path / "config", {"server": access.server, "certificate-authority": access.ca_file}, {"exec": entry}
    )
    result = cli_with(pypod_env, config, tmp_path)
    line = assert_one_line_error(result, KubeconfigError.exit_code)
    assert result.stderr.strip() == line
    assert f"{entry['command']} of kubeconfig user 't-user' is not installed" in line
    assert line.endswith(
        "Install gke-gcloud-auth-plugin for use with kubectl by following "
        "https://cloud.google.com/kubernetes-engine/docs/how-to/cluster-access-for-kubectl"
    )


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"exit": 1, "stderr": "error: the SSO session has expired, run: login"}, "exited with code 1"),
        ({"garbage": True}, "printed no ExecCredential JSON"),
        ({"tokens": ["s3cr3t"], "answer_version": V1BETA1}, "answered in apiVersion"),
    ],
)
def test_failing_plugin_is_one_line_naming_it_with_its_last_stderr_line(
    access, plugin, pypod_env, tmp_path, settings, expected
):
    plugin.configure(**settings)
    config = kubeconfig(
        tmp_path / "config",
        {"server": access.server, "certificate-authority": access.ca_file},
        {"exec": plugin.exec_entry()},
    )
    result = cli_with(pypod_env, config, tmp_path)
    line = assert_one_line_error(result, KubeconfigError.exit_code)
    assert line.startswith("pypod: credential plugin test-auth-plugin of kubeconfig user 't-user'")
    assert expected in line and "you may need to log in again" in line
    assert "s3cr3t" not in result.stderr
    said = settings.get("stderr", "test plugin: handing out credential 0")
    assert f"(it said: {said})" in line


def test_v1_plugin_without_interactive_mode_is_refused_as_kubectl_refuses_it(access, plugin, pypod_env, tmp_path):
    entry = plugin.exec_entry()
    entry.pop("interactiveMode")
    config = kubeconfig(
        tmp_path / "config", {"server": access.server, "certificate-authority": access.ca_file}, {"exec": entry}
    )
    line = assert_one_line_error(cli_with(pypod_env, config, tmp_path), KubeconfigError.exit_code)
    assert "sets no interactiveMode" in line
    assert plugin.calls() == []
