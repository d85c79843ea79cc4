"""Pure parts of the harness's Kueue: its configuration and the adapted manifests."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from harness import components as c
from harness import kueue
from harness.layout import BRIDGE_IP, Layout

PORTS = c.Ports(*range(30001, 30001 + len(fields(c.Ports))))
CA = "Q0E="


def _webhook(name: str, group: str, resource: str, path: str) -> dict:
    return {
        "name": name,
        "clientConfig": {"service": {"name": "webhook-service", "namespace": "system", "path": path}},
        "failurePolicy": "Fail",
        "rules": [{"apiGroups": [group], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": [resource]}],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    }


# Shaped as Kueue v0.17's config/components ship them, trimmed.
MANIFESTS = {
    "crds": [
        {"kind": "CustomResourceDefinition", "metadata": {"name": "workloads.kueue.x-k8s.io"}, "spec": {}},
        {"kind": "CustomResourceDefinition", "metadata": {"name": "resourceflavors.kueue.x-k8s.io"}, "spec": {}},
    ],
    "conversion_patches": [
        {
            "metadata": {"name": "workloads.kueue.x-k8s.io"},
            "spec": {
                "conversion": {
                    "strategy": "Webhook",
                    "webhook": {
                        "clientConfig": {"service": {"name": "webhook-service", "path": "/convert"}},
                        "conversionReviewVersions": ["v1"],
                    },
                }
            },
        }
    ],
    "webhooks": [
        {
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "mutating-webhook-configuration"},
            "webhooks": [
                _webhook("mjob.kb.io", "batch", "jobs", "/mutate-batch-v1-job"),
                _webhook("mdeployment.kb.io", "apps", "deployments", "/mutate-apps-v1-deployment"),
                _webhook("mpod.kb.io", "", "pods", "/mutate--v1-pod"),
                _webhook("mworkload.kb.io", "kueue.x-k8s.io", "workloads", "/mutate-kueue-x-k8s-io-v1beta2-workload"),
                _webhook("mrayjob.kb.io", "ray.io", "rayjobs", "/mutate-ray-io-v1-rayjob"),
            ],
        }
    ],
    "apiservices": [
        {
            "kind": "APIService",
            "metadata": {"name": "v1beta2.visibility.kueue.x-k8s.io"},
            "spec": {
                "group": "visibility.kueue.x-k8s.io",
                "insecureSkipTLSVerify": True,
                "service": {"name": "visibility-server", "namespace": "kueue-system"},
                "version": "v1beta2",
            },
        }
    ],
}


def test_config_turns_off_cert_management_and_serves_webhooks_on_the_bridge(tmp_path: Path):
    layout = Layout(cache=tmp_path / "cache", state=tmp_path / "state")
    config = json.loads(kueue.config(layout, PORTS))
    assert config["apiVersion"] == "config.kueue.x-k8s.io/v1beta2"
    assert config["internalCertManagement"] == {"enable": False}
    assert config["webhook"]["host"] == BRIDGE_IP
    assert config["webhook"]["port"] == PORTS.kueue_webhook
    assert config["visibilityServer"]["bindAddress"] == BRIDGE_IP
    assert config["health"]["healthProbeBindAddress"] == f"127.0.0.1:{PORTS.kueue_health}"
    assert config["leaderElection"]["leaderElect"] is False
    assert config["manageJobsWithoutQueueName"] is False
    assert config["integrations"]["frameworks"] == ["batch/job", "pod"]


def test_kueue_runs_in_its_own_mount_namespace_with_the_certificates_bound_in(tmp_path: Path):
    layout = Layout(cache=tmp_path / "cache", state=tmp_path / "state")
    argv = kueue.kueue_component(layout, PORTS).argv
    assert argv[:5] == ["unshare", "--mount", "--propagation", "private", "sh"]
    serving = str(kueue.serving_dir(layout))
    assert argv[8:12] == [serving, "/visibility", serving, "/etc/kueue/metrics/certs"]
    assert argv[12] == str(layout.binary("kueue"))
    assert f"--kubeconfig={layout.admin_kubeconfig}" in argv
    assert f"--visibility-server-port={PORTS.kueue_visibility}" in argv


def test_crds_get_kueues_conversion_webhook_by_url_where_its_kustomization_patches_them():
    workloads, flavors = kueue.crds(MANIFESTS, PORTS, CA)
    conversion = workloads["spec"]["conversion"]
    assert conversion["strategy"] == "Webhook"
    assert conversion["webhook"]["clientConfig"] == {
        "url": f"https://{BRIDGE_IP}:{PORTS.kueue_webhook}/convert",
        "caBundle": CA,
    }
    assert conversion["webhook"]["conversionReviewVersions"] == ["v1"]
    assert "conversion" not in flavors["spec"]
    assert "conversion" not in MANIFESTS["crds"][0]["spec"]  # the input is left alone


def test_webhooks_keep_kueues_kinds_and_our_frameworks_and_only_see_labelled_jobs_and_pods():
    (mutating,) = kueue.webhook_configurations(MANIFESTS, PORTS, CA)
    assert mutating["metadata"]["name"] == "kueue-mutating-webhook-configuration"
    hooks = {w["name"]: w for w in mutating["webhooks"]}
    assert set(hooks) == {"mjob.kb.io", "mpod.kb.io", "mworkload.kb.io"}
    for hook in hooks.values():
        assert hook["clientConfig"]["url"].startswith(f"https://{BRIDGE_IP}:{PORTS.kueue_webhook}/")
        assert hook["clientConfig"]["caBundle"] == CA
        assert hook["failurePolicy"] == "Fail"
    labelled = {"matchExpressions": [{"key": "kueue.x-k8s.io/queue-name", "operator": "Exists"}]}
    assert hooks["mjob.kb.io"]["objectSelector"] == labelled
    assert hooks["mpod.kb.io"]["objectSelector"] == labelled
    assert "objectSelector" not in hooks["mworkload.kb.io"]
    system = hooks["mpod.kb.io"]["namespaceSelector"]["matchExpressions"][0]
    assert system["operator"] == "NotIn" and system["values"] == ["kube-system", "kueue-system"]


def test_visibility_api_goes_to_a_selectorless_service_whose_endpoint_is_the_bridge():
    service, endpoints, apiservice = kueue.visibility_objects(MANIFESTS, PORTS, CA)
    assert service["metadata"] == {"name": "visibility-server", "namespace": "kueue-system"}
    assert "selector" not in service["spec"]
    assert service["spec"]["ports"][0]["port"] == 443
    assert endpoints["metadata"]["labels"]["kubernetes.io/service-name"] == "visibility-server"
    assert endpoints["endpoints"][0]["addresses"] == [BRIDGE_IP]
    assert endpoints["ports"][0] == {"name": "https", "port": PORTS.kueue_visibility, "protocol": "TCP"}
    assert apiservice["spec"]["caBundle"] == CA
    assert "insecureSkipTLSVerify" not in apiservice["spec"]


def test_cluster_queue_has_a_small_quota_of_cpu_memory_and_gpus_in_one_flavor():
    flavor, queue = kueue.queue_objects()
    assert flavor["metadata"]["name"] == kueue.RESOURCE_FLAVOR
    group = queue["spec"]["resourceGroups"][0]
    assert group["coveredResources"] == ["cpu", "memory", "nvidia.com/gpu"]
    quota = {r["name"]: r["nominalQuota"] for r in group["flavors"][0]["resources"]}
    assert quota == {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "4"}
    assert queue["spec"]["namespaceSelector"] == {}


def test_local_queues_are_named_as_eidf_names_them():
    queue = kueue.local_queue("team-a")
    assert queue["metadata"] == {"name": "team-a-user-queue", "namespace": "team-a"}
    assert queue["spec"] == {"clusterQueue": kueue.CLUSTER_QUEUE}
