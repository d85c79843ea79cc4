"""Pure parts of the harness: go.mod rewriting and component configuration."""

from __future__ import annotations

import json
from pathlib import Path

from harness import components as c
from harness.gobuild import scratch_go_mod, staging_modules
from harness.layout import BRIDGE_IP, KWOK_TAINT_KEY, Layout
from harness.pki import Pki

KUBERNETES_GO_MOD = """\
module k8s.io/kubernetes

go 1.24.0

require (
\tgithub.com/foo/bar v1.2.3
\tk8s.io/api v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tgithub.com/other/thing => github.com/fork/thing v1.0.0
)
"""


def test_staging_modules_are_read_from_the_replace_block():
    assert staging_modules(KUBERNETES_GO_MOD) == ["k8s.io/api", "k8s.io/client-go"]


def test_scratch_module_replaces_each_staging_module_with_published_version():
    text = scratch_go_mod(["k8s.io/api", "k8s.io/client-go"], "1.26")
    assert "require k8s.io/kubernetes v1.37.2" in text
    assert "replace k8s.io/api => k8s.io/api v0.37.2" in text
    assert "replace k8s.io/client-go => k8s.io/client-go v0.37.2" in text
    assert "./staging" not in text


def _ports() -> c.Ports:
    return c.Ports(*range(30001, 30012))


def test_apiserver_binds_and_advertises_the_bridge_only(tmp_path: Path):
    layout = Layout(cache=tmp_path / "cache", state=tmp_path / "state")
    argv = c.apiserver(layout, _ports(), Pki(tmp_path / "pki")).argv
    assert f"--bind-address={BRIDGE_IP}" in argv
    assert f"--advertise-address={BRIDGE_IP}" in argv
    assert "--authorization-mode=Node,RBAC" in argv
    assert "--feature-gates=WatchList=false" in argv


def test_kubelet_config_uses_cgroupfs_on_cgroup_v1_and_only_trusts_the_ca(tmp_path: Path):
    layout = Layout(cache=tmp_path / "cache", state=tmp_path / "state")
    config = json.loads(c.kubelet_config(layout, _ports(), Pki(tmp_path / "pki")))
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["failCgroupV1"] is False
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["port"] == _ports().kubelet
    assert config["containerRuntimeEndpoint"].endswith("containerd.sock")


def test_containerd_config_restricts_oom_score_adj_and_keeps_netns_in_state(tmp_path: Path):
    layout = Layout(cache=tmp_path / "cache", state=tmp_path / "state")
    text = c.containerd_config(layout)
    assert "restrict_oom_score_adj = true" in text
    assert f'netns_mounts_under = "{tmp_path / "state" / "netns"}"' in text


def test_registry_is_plain_http_on_loopback():
    assert c.registry_host(_ports()) == "127.0.0.1:30011"
    assert 'server = "http://127.0.0.1:30011"' in c.registry_hosts_toml(_ports())


def test_buildkitd_uses_runc_only_speaks_http_to_the_local_registry_and_allows_host_network(tmp_path: Path):
    import tomllib

    config = tomllib.loads(c.buildkitd_config(_ports()))
    assert config["worker"] == {"oci": {"enabled": True}, "containerd": {"enabled": False}}
    assert config["registry"] == {"127.0.0.1:30011": {"http": True}}
    layout = Layout(cache=tmp_path / "cache", state=tmp_path / "state")
    argv = c.buildkitd(layout).argv
    assert argv[0] == str(layout.binary("buildkitd"))
    assert argv[argv.index("--addr") + 1] == f"unix://{layout.buildkit}/buildkitd.sock"
    assert argv[argv.index("--allow-insecure-entitlement") + 1] == "network.host"


def test_kwok_nodes_are_tainted_and_annotated_for_kwok():
    nodes = c.kwok_nodes(2)
    assert [n["metadata"]["name"] for n in nodes] == ["kwok-node-0", "kwok-node-1"]
    for node in nodes:
        assert node["metadata"]["annotations"][KWOK_TAINT_KEY] == "fake"
        assert node["spec"]["taints"][0]["effect"] == "NoSchedule"


def test_kubeconfig_carries_token_ca_and_namespace(tmp_path: Path):
    config = json.loads(c.kubeconfig("https://10.88.0.1:6443", tmp_path / "ca.crt", "bob", "t0k", "ns1"))
    assert config["users"][0]["user"]["token"] == "t0k"
    assert config["contexts"][0]["context"]["namespace"] == "ns1"
    assert config["clusters"][0]["cluster"]["server"] == "https://10.88.0.1:6443"
