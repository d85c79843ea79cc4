"""Pure parts of the harness: go.mod rewriting and component configuration."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

from harness import components as c
from harness.gobuild import COREDNS_MAIN, COREDNS_PLUGINS, GO_TOOLS, scratch_go_mod, staging_modules, tool_is_current
from harness.layout import BRIDGE_IP, DNS_SERVICE_IP, KWOK_TAINT_KEY, Layout
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
    return c.Ports(*range(30001, 30001 + len(fields(c.Ports))))


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


def test_corefile_serves_the_cluster_zones_on_the_bridge_and_forwards_nothing(tmp_path: Path):
    layout = Layout(cache=tmp_path / "cache", state=tmp_path / "state")
    text = c.corefile(layout, _ports())
    assert text.startswith("cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {")
    assert text.count(f"bind {BRIDGE_IP}") == 2  # both server blocks: never the outward interface
    assert f"kubeconfig {layout.admin_kubeconfig} pypod-harness" in text
    assert "pods insecure" in text
    assert "forward" not in text and "fallthrough" not in text
    catch_all = text.split(".:53 {", 1)[1]
    assert "rcode NXDOMAIN" in catch_all
    assert f"ready 127.0.0.1:{_ports().coredns_ready}" in text


def test_coredns_binary_links_every_plugin_the_corefile_uses(tmp_path: Path):
    layout = Layout(cache=tmp_path / "cache", state=tmp_path / "state")
    first_words = (line.split()[0] for line in c.corefile(layout, _ports()).splitlines() if line.strip())
    directives = {word for word in first_words if re.fullmatch(r"[a-z]+", word)}  # not zones, not braces
    # Lines inside a plugin's block are its options, not directives.
    options = {"kubeconfig", "pods", "ttl", "rcode"}
    assert directives - options == set(COREDNS_PLUGINS)
    for plugin in COREDNS_PLUGINS:
        assert f'_ "github.com/coredns/coredns/plugin/{plugin}"' in COREDNS_MAIN


def test_kubelet_points_pods_at_the_kube_dns_service(tmp_path: Path):
    layout = Layout(cache=tmp_path / "cache", state=tmp_path / "state")
    config = json.loads(c.kubelet_config(layout, _ports(), Pki(tmp_path / "pki")))
    assert config["clusterDNS"] == [DNS_SERVICE_IP]
    assert config["clusterDomain"] == "cluster.local"


def test_kube_dns_service_is_selectorless_with_an_endpointslice_at_the_bridge():
    service, endpoints = c.kube_dns_objects()
    assert service["spec"]["clusterIP"] == DNS_SERVICE_IP
    assert "selector" not in service["spec"]
    assert endpoints["metadata"]["labels"]["kubernetes.io/service-name"] == service["metadata"]["name"]
    assert endpoints["endpoints"][0]["addresses"] == [BRIDGE_IP]
    assert {p["protocol"] for p in endpoints["ports"]} == {"UDP", "TCP"}


def test_a_go_tool_is_rebuilt_when_its_pinned_version_changes(tmp_path: Path):
    layout = Layout(cache=tmp_path / "cache", state=tmp_path / "state")
    tool = next(t for t in GO_TOOLS if t.name == "coredns")
    layout.bin.mkdir(parents=True)
    assert not tool_is_current(layout, tool)
    layout.binary("coredns").write_text("binary")
    (layout.bin / ".coredns.version").write_text("v0.0.1")
    assert not tool_is_current(layout, tool)
    (layout.bin / ".coredns.version").write_text(tool.version)
    assert tool_is_current(layout, tool)


def test_gpu_kwok_nodes_advertise_gpus_with_their_product_and_the_kwok_taint():
    nodes = {n["metadata"]["name"]: n for n in c.kwok_gpu_nodes()}
    assert {name: n["metadata"]["labels"]["nvidia.com/gpu.product"] for name, n in nodes.items()} == {
        "kwok-gpu-a100": "NVIDIA-A100-SXM4-80GB",
        "kwok-gpu-h100": "NVIDIA-H100-80GB-HBM3",
    }
    for node in nodes.values():
        assert node["status"]["capacity"]["nvidia.com/gpu"] == "4"
        assert node["spec"]["taints"] == c.kwok_nodes(1)[0]["spec"]["taints"]
        assert node["metadata"]["labels"]["type"] == "kwok-gpu"  # not picked by `type=kwok` scale tests


def test_apiserver_runs_the_aggregation_layer_with_the_front_proxy_identity(tmp_path: Path):
    layout = Layout(cache=tmp_path / "cache", state=tmp_path / "state")
    pki = Pki(tmp_path / "pki")
    argv = c.apiserver(layout, _ports(), pki).argv
    assert f"--requestheader-client-ca-file={pki.front_proxy_ca_cert}" in argv
    assert "--requestheader-allowed-names=front-proxy-client" in argv
    assert f"--proxy-client-cert-file={pki.front_proxy_client_cert}" in argv
    assert "--enable-aggregator-routing=true" in argv


def test_pki_signs_certificates_added_later_with_the_ca_already_there(tmp_path: Path):
    from cryptography import x509

    from harness.pki import ensure_pki

    pki = ensure_pki(tmp_path / "pki")
    ca_before = pki.ca_cert.read_bytes()
    pki.kueue_cert.unlink()  # as in a PKI made before the harness knew Kueue
    ensure_pki(tmp_path / "pki")
    assert pki.ca_cert.read_bytes() == ca_before
    ca = x509.load_pem_x509_certificate(ca_before)
    kueue = x509.load_pem_x509_certificate(pki.kueue_cert.read_bytes())
    kueue.verify_directly_issued_by(ca)
    sans = kueue.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "visibility-server.kueue-system.svc" in sans.get_values_for_type(x509.DNSName)
    front_proxy = x509.load_pem_x509_certificate(pki.front_proxy_client_cert.read_bytes())
    front_proxy.verify_directly_issued_by(x509.load_pem_x509_certificate(pki.front_proxy_ca_cert.read_bytes()))


def test_storage_classes_configmap_and_provisioner_command(tmp_path: Path):
    from harness import storage

    layout = Layout(cache=tmp_path / "cache", state=tmp_path / "state")
    objects = {(o["kind"], o["metadata"]["name"]): o for o in storage.storage_objects(layout)}
    rwo = objects[("StorageClass", storage.RWO_CLASS)]
    rwx = objects[("StorageClass", storage.RWX_CLASS)]
    assert rwo["metadata"]["annotations"] == {storage.DEFAULT_CLASS_ANNOTATION: "true"}
    assert (rwo["volumeBindingMode"], rwx["volumeBindingMode"]) == ("WaitForFirstConsumer", "Immediate")
    data = objects[("ConfigMap", storage.CONFIGMAP)]["data"]
    config = json.loads(data["config.json"])["storageClassConfigs"]
    assert config[storage.RWX_CLASS] == {"sharedFileSystemPath": str(storage.rwx_root(layout))}
    assert config[storage.RWO_CLASS]["nodePathMap"][0]["paths"] == [str(storage.rwo_root(layout))]
    assert 'truncate -s "$VOL_SIZE_BYTES"' in data["setup"] and f"{storage.rwx_root(layout)}/*) exit 0" in data["setup"]
    helper = json.loads(data["helperPod.yaml"])["spec"]["containers"][0]
    assert helper["image"] == storage.HELPER_IMAGE and helper["securityContext"] == {"privileged": True}
    assert {"name": "data", "mountPath": "", "mountPropagation": "Bidirectional"} in helper["volumeMounts"]
    argv = storage.provisioner(layout, 4321).argv
    assert "--health-port=4321" in argv and f"--kubeconfig={layout.admin_kubeconfig}" in argv


def test_the_provisioner_is_rebuilt_when_its_version_changes(tmp_path: Path):
    from harness import storage

    layout = Layout(cache=tmp_path / "cache", state=tmp_path / "state")
    layout.bin.mkdir(parents=True)
    layout.binary(storage.PROVISIONER_BINARY).write_text("")
    assert not storage.provisioner_is_current(layout)
    (layout.bin / f".{storage.PROVISIONER_BINARY}.version").write_text("v0.0.36")
    assert not storage.provisioner_is_current(layout)
    (layout.bin / f".{storage.PROVISIONER_BINARY}.version").write_text(storage.LOCAL_PATH_VERSION)
    assert storage.provisioner_is_current(layout)


def test_the_node_keeps_its_state_on_a_filesystem_it_can_measure(tmp_path: Path):
    from harness import nodefs

    layout = Layout(cache=tmp_path / "cache", state=tmp_path / "state")
    fs = nodefs.node_fs(layout)
    assert dict(fs.binds) == {
        fs.mount / "kubelet": layout.state / "kubelet",
        fs.mount / "containerd": layout.state / "containerd",
    }
    assert c.containerd_paths(layout)["root"].is_relative_to(layout.state / "containerd")
    config = json.loads(c.kubelet_config(layout, _ports(), Pki(tmp_path / "pki")))
    assert config["localStorageCapacityIsolation"] is True


def test_the_node_filesystem_can_be_switched_off(tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    from harness import nodefs

    monkeypatch.setenv(nodefs.SWITCH, "off")
    layout = Layout(cache=tmp_path / "cache", state=tmp_path / "state")
    config = json.loads(c.kubelet_config(layout, _ports(), Pki(tmp_path / "pki")))
    assert config["localStorageCapacityIsolation"] is False
    nodefs.mount_node_fs(layout)  # does nothing: no image, no mount
    assert not nodefs.node_fs(layout).image.exists()
