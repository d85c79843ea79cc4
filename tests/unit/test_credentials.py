"""Exec credential plugins and credential caching: the pure parts, and real plugin
processes (small Python scripts) for how they are run."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import sys
from pathlib import Path

import pytest

from pypod.errors import KubeconfigError
from pypod.kube.credentials import (
    EXEC_INFO_ENV,
    Credential,
    CredentialCache,
    ExecPluginFailed,
    credential_source,
    decide_interactive,
    exec_info,
    needs_refresh,
    parse_exec_credential,
    run_exec_plugin,
)
from pypod.kube.kubeconfig import ClusterSpec, ExecSpec, UserSpec
from pypod.kube.transport import choose_proxy, static_headers

V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"
NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


def answer(api_version: str = V1, **status) -> bytes:  # type: ignore[no-untyped-def]
    return json.dumps({"apiVersion": api_version, "kind": "ExecCredential", "status": status}).encode()


def test_parse_token_with_expiry_in_rfc3339_z() -> None:
    cred = parse_exec_credential(
        answer(token="abc", expirationTimestamp="2030-01-01T12:15:00Z"), ExecSpec(V1, "p"), NOW
    )
    assert cred.token == "abc"
    assert cred.expires_at == NOW + dt.timedelta(minutes=15)
    assert "abc" not in repr(cred)


def test_parse_client_certificate() -> None:
    cred = parse_exec_credential(
        answer(V1BETA1, clientCertificateData="CERT PEM", clientKeyData="KEY PEM"), ExecSpec(V1BETA1, "p")
    )
    assert cred.client_cert == (b"CERT PEM", b"KEY PEM") and cred.token is None and cred.expires_at is None


@pytest.mark.parametrize(
    ("stdout", "message"),
    [
        (b"Bearer s3cr3t-token\n", "printed no ExecCredential JSON"),
        (b"", "nothing at all"),
        (b"[1, 2]", "not an ExecCredential object"),
        (
            json.dumps({"apiVersion": V1, "kind": "Secret", "status": {"token": "s3cr3t-token"}}).encode(),
            "kind 'Secret'",
        ),
        (answer(V1BETA1, token="s3cr3t-token"), "apiVersion 'client.authentication.k8s.io/v1beta1'"),
        (json.dumps({"apiVersion": V1, "kind": "ExecCredential"}).encode(), "no status"),
        (answer(), "neither a token"),
        (answer(clientCertificateData="CERT"), "only one of"),
        (answer(token="s3cr3t-token", expirationTimestamp="tomorrow"), "not RFC 3339"),
    ],
)
def test_parse_errors_never_quote_the_output(stdout: bytes, message: str) -> None:
    with pytest.raises(ExecPluginFailed, match=message) as err:
        parse_exec_credential(stdout, ExecSpec(V1, "p"))
    assert "s3cr3t" not in str(err.value)


def test_needs_refresh() -> None:
    assert not needs_refresh(Credential(token="t", fetched_at=NOW), NOW + dt.timedelta(days=365))
    fifteen = Credential(token="t", expires_at=NOW + dt.timedelta(minutes=15), fetched_at=NOW)
    assert not needs_refresh(fifteen, NOW + dt.timedelta(minutes=14))
    assert needs_refresh(fifteen, NOW + dt.timedelta(minutes=14, seconds=31))  # 30 s ahead
    short = Credential(token="t", expires_at=NOW + dt.timedelta(seconds=5), fetched_at=NOW)
    assert not needs_refresh(short, NOW + dt.timedelta(seconds=3))  # margin is a fifth of 5 s
    assert needs_refresh(short, NOW + dt.timedelta(seconds=4))
    already = Credential(token="t", expires_at=NOW - dt.timedelta(seconds=1), fetched_at=NOW)
    assert needs_refresh(already, NOW)


def test_decide_interactive() -> None:
    assert decide_interactive("Never", True, "p") is False
    assert decide_interactive("IfAvailable", True, "p") is True
    assert decide_interactive("IfAvailable", False, "p") is False
    assert decide_interactive("Always", True, "p") is True
    with pytest.raises(KubeconfigError, match="needs a terminal"):
        decide_interactive("Always", False, "p")


def test_exec_info_carries_interactive_and_cluster_only_when_asked(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"PEM")
    cluster = ClusterSpec(
        server="https://x:6443",
        ca_file=str(ca),
        tls_server_name="kube",
        proxy_url="http://p:3128",
        exec_config={"a": 1},
    )
    plain = json.loads(exec_info(ExecSpec(V1, "p"), cluster, interactive=False))
    assert plain == {"kind": "ExecCredential", "apiVersion": V1, "spec": {"interactive": False}}
    full = json.loads(exec_info(ExecSpec(V1BETA1, "p", provide_cluster_info=True), cluster, interactive=True))
    assert full["apiVersion"] == V1BETA1 and full["spec"]["interactive"] is True
    assert full["spec"]["cluster"] == {
        "server": "https://x:6443",
        "tls-server-name": "kube",
        "certificate-authority-data": base64.b64encode(b"PEM").decode(),
        "proxy-url": "http://p:3128",
        "config": {"a": 1},
    }


def test_cache_fetches_once_then_again_near_expiry_and_after_a_refusal() -> None:
    issued: list[Credential] = []

    def fetch() -> Credential:
        now = dt.datetime.now(dt.UTC)
        cred = Credential(token=f"t{len(issued)}", expires_at=now + dt.timedelta(hours=1), fetched_at=now)
        issued.append(cred)
        return cred

    cache = CredentialCache(fetch, refreshable=True)
    first = cache.current()
    assert cache.current() is first and cache.fetches == 1
    second = cache.after_unauthorized(first)
    assert second.token == "t1"
    # Another request refused with the old one does not run the plugin a third time.
    assert cache.after_unauthorized(first) is second and cache.fetches == 2
    expired = Credential(token="old", expires_at=dt.datetime.now(dt.UTC), fetched_at=NOW)
    cache._current = expired
    assert cache.fresh() is None and cache.current().token == "t2"


def test_exec_is_not_used_when_the_user_has_its_own_token_or_certificate() -> None:
    cluster = ClusterSpec(server="https://x")
    plugin = ExecSpec(V1, "plugin-that-would-fail")
    assert credential_source(UserSpec(token="t", exec=plugin), "u", cluster).current().token == "t"  # type: ignore[union-attr]
    assert credential_source(UserSpec(client_cert_file="/c", client_key_file="/k", exec=plugin), "u", cluster) is None
    assert credential_source(UserSpec(), "u", cluster) is None


PLUGIN = """\
import json, os, sys
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
with open(sys.argv[1], "w") as out:
    json.dump({"info": info, "args": sys.argv[2:], "env": os.environ.get("PLUGIN_SETTING")}, out)
print("fetching a token for", info["spec"].get("cluster", {}).get("server"), file=sys.stderr)
print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential",
                  "status": {"token": "tok-from-plugin", "expirationTimestamp": "2099-01-01T00:00:00Z"}}))
"""


def plugin(tmp_path: Path, source: str) -> str:
    path = tmp_path / "plugin.py"
    path.write_text(source)
    return str(path)


def test_run_plugin_passes_args_env_and_exec_info_and_shows_its_stderr(tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    spec = ExecSpec(
        V1,
        sys.executable,
        args=(plugin(tmp_path, PLUGIN), str(seen), "--region", "x"),
        env=(("PLUGIN_SETTING", "from-kubeconfig"),),
        provide_cluster_info=True,
        interactive_mode="IfAvailable",
    )
    stderr = io.StringIO()
    cred = run_exec_plugin(spec, ClusterSpec(server="https://api:6443"), "u", stdin_is_terminal=False, stderr=stderr)
    assert cred.token == "tok-from-plugin"
    assert cred.expires_at == dt.datetime(2099, 1, 1, tzinfo=dt.UTC)
    recorded = json.loads(seen.read_text())
    assert recorded["args"] == ["--region", "x"] and recorded["env"] == "from-kubeconfig"
    assert recorded["info"]["spec"] == {"interactive": False, "cluster": {"server": "https://api:6443"}}
    assert stderr.getvalue() == "fetching a token for https://api:6443\n"


def test_exec_info_wins_over_an_inherited_variable(tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    spec = ExecSpec(V1BETA1, sys.executable, args=(plugin(tmp_path, PLUGIN), str(seen)))
    run_exec_plugin(
        spec,
        ClusterSpec(server="https://x"),
        "u",
        environ={EXEC_INFO_ENV: "stale", "PATH": "/usr/bin"},
        stdin_is_terminal=False,
        stderr=io.StringIO(),
    )
    assert json.loads(seen.read_text())["info"]["apiVersion"] == V1BETA1


def test_a_missing_plugin_is_one_line_with_its_install_hint() -> None:
    spec = ExecSpec(
        V1, "gke-gcloud-auth-plugin-not-here", install_hint="Install gke-gcloud-auth-plugin: gcloud components install"
    )
    with pytest.raises(KubeconfigError) as err:
        run_exec_plugin(spec, ClusterSpec(server="https://x"), "gke-user", stdin_is_terminal=False)
    line = err.value.one_line()
    assert "\n" not in line and err.value.exit_code == 67
    assert "gke-gcloud-auth-plugin-not-here of kubeconfig user 'gke-user' is not installed" in line
    assert line.endswith("Install gke-gcloud-auth-plugin: gcloud components install")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("import sys\nprint('token expired, run: login', file=sys.stderr)\nsys.exit(3)\n", "exited with code 3"),
        ("print('Bearer s3cr3t')\n", "printed no ExecCredential JSON"),
        (
            "import json\nprint(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1beta1', "
            "'kind': 'ExecCredential', 'status': {'token': 's3cr3t'}}))\n",
            "answered in apiVersion",
        ),
    ],
)
def test_plugin_failures_name_the_plugin_and_its_last_stderr_line(tmp_path: Path, source: str, message: str) -> None:
    script = plugin(tmp_path, "import sys\nprint('first line', file=sys.stderr)\n" + source)
    spec = ExecSpec(V1, sys.executable, args=(script,))
    with pytest.raises(KubeconfigError) as err:
        run_exec_plugin(spec, ClusterSpec(server="https://x"), "u", stdin_is_terminal=False, stderr=io.StringIO())
    line = err.value.one_line()
    assert message in line and "s3cr3t" not in line and "\n" not in line
    assert line.startswith(f"credential plugin {Path(sys.executable).name} of kubeconfig user 'u'")
    if "exited" in message:
        assert "(it said: token expired, run: login)" in line
    assert "you may need to log in again" in line


def test_always_interactive_without_a_terminal_is_refused_before_running() -> None:
    spec = ExecSpec(V1, "/nonexistent/plugin", interactive_mode="Always")
    with pytest.raises(KubeconfigError, match="needs a terminal"):
        run_exec_plugin(spec, ClusterSpec(server="https://x"), "u", stdin_is_terminal=False)


def test_choose_proxy() -> None:
    server = "https://api.corp.example:6443"
    assert (
        choose_proxy(server, "socks5://127.0.0.1:1080", {"HTTPS_PROXY": "http://env:3128"}) == "socks5://127.0.0.1:1080"
    )
    assert choose_proxy(server, None, {"HTTPS_PROXY": "env:3128"}) == "http://env:3128"
    assert choose_proxy(server, None, {"HTTP_PROXY": "http://env:3128"}) is None  # https uses HTTPS_PROXY only
    assert choose_proxy("http://api:8080", None, {"http_proxy": "http://env:3128"}) == "http://env:3128"
    for no_proxy in ("*", "corp.example", ".corp.example", "api.corp.example:6443", "other, corp.example"):
        assert choose_proxy(server, None, {"HTTPS_PROXY": "http://env:3128", "NO_PROXY": no_proxy}) is None, no_proxy
    assert choose_proxy(server, None, {"HTTPS_PROXY": "http://e:1", "NO_PROXY": "api.corp.example:443"}) == "http://e:1"
    assert choose_proxy("https://10.1.2.3", None, {"HTTPS_PROXY": "http://e:1", "NO_PROXY": "10.0.0.0/8"}) is None
    assert choose_proxy("https://127.0.0.1:6443", None, {"HTTPS_PROXY": "http://e:1"}) is None  # loopback, as Go


def test_static_headers() -> None:
    user = UserSpec(
        username="admin",
        password="pw",
        impersonate="jane",
        impersonate_groups=("a", "b"),
        impersonate_extra=(("s", ("x",)),),
    )
    assert static_headers(user) == [
        ("Authorization", "Basic " + base64.b64encode(b"admin:pw").decode()),
        ("Impersonate-User", "jane"),
        ("Impersonate-Group", "a"),
        ("Impersonate-Group", "b"),
        ("Impersonate-Extra-s", "x"),
    ]
