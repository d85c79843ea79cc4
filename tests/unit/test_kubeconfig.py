"""kubeconfig reading by kubectl's rules: which files, merging, relative paths, validation."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from pypod.errors import KubeconfigError
from pypod.kube.client import KubeTarget, load_selection
from pypod.kube.kubeconfig import (
    kubeconfig_files,
    merge_kubeconfigs,
    parse_cluster,
    parse_exec,
    parse_user,
    read_kubeconfig_files,
    select_context,
)
from pypod.kube.kubectl import Kubectl


def doc(clusters=(), users=(), contexts=(), current=None):  # type: ignore[no-untyped-def]
    out = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": c} for n, c in clusters],
        "users": [{"name": n, "user": u} for n, u in users],
        "contexts": [{"name": n, "context": c} for n, c in contexts],
    }
    if current is not None:
        out["current-context"] = current
    return out


def test_files_explicit_wins_over_the_environment() -> None:
    paths, from_env = kubeconfig_files("/x/config", {"KUBECONFIG": "/a:/b"})
    assert paths == [Path("/x/config")] and not from_env


def test_files_from_kubeconfig_keep_order_and_drop_duplicates_and_empty_entries() -> None:
    paths, from_env = kubeconfig_files(None, {"KUBECONFIG": "/a::/b:/a"})
    assert paths == [Path("/a"), Path("/b")] and from_env


def test_files_default_to_home_config() -> None:
    paths, from_env = kubeconfig_files(None, {})
    assert paths == [Path("~/.kube/config").expanduser()] and not from_env


def test_first_file_to_name_an_entry_wins_it_whole() -> None:
    first = doc(clusters=[("c", {"server": "https://first"})], users=[("u", {"token": "t1"})])
    second = doc(
        clusters=[
            ("c", {"server": "https://second", "insecure-skip-tls-verify": True}),
            ("d", {"server": "https://d"}),
        ],
        users=[("u", {"token": "t2", "as": "someone"})],
    )
    merged = merge_kubeconfigs([(Path("/one/config"), first), (Path("/two/config"), second)])
    # Not even non-conflicting fields of the second file's "c" and "u" are taken (client-go's rule).
    assert merged.clusters["c"] == {"server": "https://first"}
    assert merged.users["u"] == {"token": "t1"}
    assert merged.clusters["d"] == {"server": "https://d"}


def test_current_context_comes_from_the_first_file_that_sets_one() -> None:
    files = [
        (Path("/a"), doc()),
        (Path("/b"), doc(current="from-b")),
        (Path("/c"), doc(current="from-c")),
    ]
    assert merge_kubeconfigs(files).current_context == "from-b"


def test_relative_paths_are_relative_to_the_file_each_entry_came_from() -> None:
    first = doc(
        clusters=[("c", {"server": "https://x", "certificate-authority": "ca.crt"})],
        users=[("u", {"client-certificate": "certs/u.crt", "client-key": "/abs/u.key", "tokenFile": "tok"})],
    )
    second = doc(
        users=[
            ("plugin-path", {"exec": {"command": "./bin/plugin", "apiVersion": "x"}}),
            ("plugin-bare", {"exec": {"command": "aws", "apiVersion": "x"}}),
        ]
    )
    merged = merge_kubeconfigs([(Path("/home/me/.kube/config"), first), (Path("/etc/kube/extra.yaml"), second)])
    assert merged.clusters["c"]["certificate-authority"] == "/home/me/.kube/ca.crt"
    assert merged.users["u"]["client-certificate"] == "/home/me/.kube/certs/u.crt"
    assert merged.users["u"]["client-key"] == "/abs/u.key"
    assert merged.users["u"]["tokenFile"] == "/home/me/.kube/tok"
    assert merged.users["plugin-path"]["exec"]["command"] == "/etc/kube/bin/plugin"
    assert merged.users["plugin-bare"]["exec"]["command"] == "aws"  # looked up on PATH, as kubectl does


def test_a_name_twice_in_one_file_is_refused() -> None:
    twice = doc(clusters=[("c", {"server": "https://1"}), ("c", {"server": "https://2"})])
    with pytest.raises(KubeconfigError, match="names cluster 'c' twice"):
        merge_kubeconfigs([(Path("/k"), twice)])


def test_read_skips_missing_files_from_the_environment_but_not_an_explicit_one(tmp_path: Path) -> None:
    present = tmp_path / "present"
    present.write_text("current-context: x\n")
    empty = tmp_path / "empty"
    empty.write_text("")
    loaded = read_kubeconfig_files([tmp_path / "missing", present, empty], explicit=False)
    assert [p for p, _ in loaded] == [present, empty]
    with pytest.raises(KubeconfigError, match="no kubeconfig at"):
        read_kubeconfig_files([tmp_path / "missing"], explicit=True)


def test_invalid_yaml_is_one_line_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text("clusters:\n  - name: [unclosed\n")
    with pytest.raises(KubeconfigError, match=r"not valid YAML \(line \d+\)"):
        read_kubeconfig_files([bad], explicit=True)


def merged_one(**kwargs):  # type: ignore[no-untyped-def]
    return merge_kubeconfigs([(Path("/k/config"), doc(**kwargs))])


def test_select_uses_current_context_and_reports_names() -> None:
    merged = merged_one(
        clusters=[("c", {"server": "https://x"})],
        users=[("u", {"token": "secret"})],
        contexts=[("ctx", {"cluster": "c", "user": "u", "namespace": "ns1"})],
        current="ctx",
    )
    selection = select_context(merged, None, "/k/config")
    assert (selection.context, selection.cluster_name, selection.user_name, selection.namespace) == (
        "ctx",
        "c",
        "u",
        "ns1",
    )
    assert "secret" not in repr(selection)


@pytest.mark.parametrize(
    ("contexts", "current", "wanted", "message"),
    [
        ([], None, None, "sets no current-context"),
        ([("a", {"cluster": "c"})], "a", "b", "context 'b' is not in"),
        ([("a", {"cluster": "nope"})], "a", None, "names cluster 'nope'"),
        ([("a", {"cluster": "c", "user": "ghost"})], "a", None, "names user 'ghost'"),
    ],
)
def test_select_errors_say_what_is_missing(contexts, current, wanted, message) -> None:  # type: ignore[no-untyped-def]
    merged = merged_one(clusters=[("c", {"server": "https://x"})], contexts=contexts, current=current)
    with pytest.raises(KubeconfigError, match=message):
        select_context(merged, wanted, "/k/config")


def test_a_context_without_user_is_anonymous() -> None:
    merged = merged_one(clusters=[("c", {"server": "https://x"})], contexts=[("a", {"cluster": "c"})], current="a")
    assert select_context(merged, None, "k").user_name == ""


def test_cluster_fields() -> None:
    ca = b"-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n"
    folded = base64.b64encode(ca).decode()
    folded = folded[:10] + "\n" + folded[10:]  # `base64` without -w0 wraps lines
    cluster = parse_cluster(
        "c",
        {
            "server": "https://x:6443",
            "certificate-authority-data": folded,
            "tls-server-name": "kubernetes.default",
            "proxy-url": "socks5://127.0.0.1:1080",
            "extensions": [{"name": "client.authentication.k8s.io/exec", "extension": {"audience": "a"}}],
        },
    )
    assert cluster.ca_data == ca
    assert cluster.tls_server_name == "kubernetes.default"
    assert cluster.proxy_url == "socks5://127.0.0.1:1080"
    assert cluster.exec_config == {"audience": "a"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "has no server"),
        ({"server": "https://x", "certificate-authority": "/ca", "insecure-skip-tls-verify": True}, "insecure"),
        ({"server": "https://x", "certificate-authority": "/ca", "certificate-authority-data": "eA=="}, "both"),
        ({"server": "https://x", "proxy-url": "ftp://proxy"}, "unsupported scheme"),
        ({"server": "https://x", "certificate-authority-data": "not base64!"}, "not base64"),
        ({"server": "https://x", "insecure-skip-tls-verify": "yes"}, "true or false"),
    ],
)
def test_cluster_errors(body, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KubeconfigError, match=message):
        parse_cluster("c", body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"auth-provider": {"name": "oidc"}}, "auth-provider 'oidc'"),
        ({"client-certificate": "/c"}, "no client-key"),
        ({"client-key-data": "eA=="}, "no client certificate"),
        ({"token": "t", "username": "u"}, "both a token and a username"),
        (
            {"client-certificate": "/c", "client-certificate-data": "eA==", "client-key": "/k"},
            "both client-certificate",
        ),
    ],
)
def test_user_errors(body, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KubeconfigError, match=message):
        parse_user("u", body)


def test_user_impersonation_and_cert_data() -> None:
    user = parse_user(
        "u",
        {
            "client-certificate-data": base64.b64encode(b"CERT").decode(),
            "client-key-data": base64.b64encode(b"KEY").decode(),
            "as": "jane",
            "as-groups": ["devs", "ops"],
            "as-user-extra": {"scopes": ["a", "b"]},
        },
    )
    assert (user.client_cert_data, user.client_key_data) == (b"CERT", b"KEY")
    assert user.impersonate_groups == ("devs", "ops")
    assert user.impersonate_extra == (("scopes", ("a", "b")),)
    assert "KEY" not in repr(user)


def test_exec_v1_needs_interactive_mode_as_kubectl_says() -> None:
    with pytest.raises(KubeconfigError, match="sets no interactiveMode") as err:
        parse_exec("u", {"apiVersion": "client.authentication.k8s.io/v1", "command": "p"})
    assert "IfAvailable" in err.value.hint


def test_exec_v1beta1_defaults_to_if_available_and_reads_every_field() -> None:
    spec = parse_exec(
        "u",
        {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "/usr/bin/aws",
            "args": ["eks", "get-token"],
            "env": [{"name": "AWS_PROFILE", "value": "dev"}],
            "provideClusterInfo": True,
            "installHint": "Install the AWS CLI:\n  https://aws.amazon.com/cli/\n",
        },
    )
    assert spec.interactive_mode == "IfAvailable"
    assert spec.args == ("eks", "get-token") and spec.env == (("AWS_PROFILE", "dev"),)
    assert spec.provide_cluster_info and spec.name == "aws"
    assert spec.install_hint == "Install the AWS CLI: https://aws.amazon.com/cli/"  # one line


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "p"}, "v1alpha1"),
        ({"apiVersion": "client.authentication.k8s.io/v1"}, "no command"),
        (
            {"apiVersion": "client.authentication.k8s.io/v1", "command": "p", "interactiveMode": "Sometimes"},
            "Sometimes",
        ),
        (
            {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": "p", "env": [{"value": "x"}]},
            "without a name",
        ),
    ],
)
def test_exec_errors(body, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KubeconfigError, match=message):
        parse_exec("u", body)


def write_yaml(path: Path, content: dict) -> Path:  # type: ignore[type-arg]
    import yaml

    path.write_text(yaml.safe_dump(content))
    return path


def test_load_selection_merges_the_kubeconfig_list(tmp_path: Path) -> None:
    users = write_yaml(tmp_path / "users.yaml", doc(users=[("u", {"token": "t"})]))
    (tmp_path / "sub").mkdir()
    clusters = write_yaml(
        tmp_path / "sub" / "clusters.yaml",
        doc(
            clusters=[("c", {"server": "https://x", "certificate-authority": "ca.crt"})],
            contexts=[("ctx", {"cluster": "c", "user": "u"})],
            current="ctx",
        ),
    )
    env = {"KUBECONFIG": f"{tmp_path / 'missing'}:{users}:{clusters}"}
    selection = load_selection(None, None, env)
    assert selection.context == "ctx" and selection.user.token == "t"
    assert selection.cluster.ca_file == str(tmp_path / "sub" / "ca.crt")
    assert selection.source == "the merged $KUBECONFIG files"


def test_load_selection_without_any_file_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match=r"no kubeconfig at .*\(from \$KUBECONFIG\)"):
        load_selection(None, None, {"KUBECONFIG": str(tmp_path / "nothing")})


def test_kubectl_gets_the_explicit_file_or_reads_kubeconfig_itself() -> None:
    explicit = Kubectl("kubectl", KubeTarget("/k/config", "ctx", "ns", "https://x")).base()
    assert explicit == ["kubectl", "--kubeconfig=/k/config", "--context=ctx", "--namespace=ns"]
    # From $KUBECONFIG (maybe several files): kubectl inherits the variable and merges them itself.
    from_env = Kubectl("kubectl", KubeTarget(None, "ctx", "ns", "https://x")).base()
    assert from_env == ["kubectl", "--context=ctx", "--namespace=ns"]
