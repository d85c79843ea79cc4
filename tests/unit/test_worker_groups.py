from __future__ import annotations

import pytest

from pypod.errors import UsageError
from pypod.kube.groups import (
    WorkerGroup,
    check_group_name,
    configure_pod,
    derive_group,
    group_pod,
    worker_pod_name,
    workers_for,
)
from pypod.kube.workers import LABEL_GROUP


def pod_of(group: WorkerGroup) -> dict:
    return configure_pod(
        group,
        group_pod(
            group,
            name="c-gpu-w3",
            image="reg/driver@sha256:1",
            scheduler_address="tcp://10.0.0.5:8786",
            cluster_id="c",
            driver="drv",
            namespace="ns",
            service_account="runner",
            owner={"apiVersion": "v1", "kind": "Pod", "name": "drv", "uid": "u"},
            death_timeout=60,
        ),
    )


def test_a_group_takes_what_it_does_not_set_from_the_default_group():
    calls = []

    def cluster_hook(pod):  # type: ignore[no-untyped-def]
        calls.append("cluster")
        return pod

    def group_hook(pod):  # type: ignore[no-untyped-def]
        calls.append("group")
        pod["metadata"]["labels"]["hooked"] = "yes"
        return pod

    base = WorkerGroup(cpu="500m", memory="1Gi", env={"A": "1"}, labels={"team": "x"}, configures=(cluster_hook,))
    gpu = derive_group(base, "gpu", gpu=2, gpu_product="NVIDIA-A100-SXM4-40GB", env={"B": "2"}, configure=group_hook)
    assert (gpu.cpu, gpu.memory, gpu.gpu, gpu.image) == ("500m", "1Gi", 2, None)
    assert dict(gpu.env) == {"A": "1", "B": "2"} and dict(gpu.labels) == {"team": "x"}

    pod = pod_of(gpu)
    container = pod["spec"]["containers"][0]
    assert calls == ["cluster", "group"]  # the cluster's configure first, then the group's
    assert pod["metadata"]["labels"][LABEL_GROUP] == "gpu" and pod["metadata"]["labels"]["hooked"] == "yes"
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"}
    assert container["image"] == "reg/driver@sha256:1"  # no image of its own: the driver's
    assert container["resources"]["limits"] == {"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": "2"}
    command = container["command"]
    assert command[command.index("--resources") + 1] == "GPU=2"  # so resources={"GPU": 1} lands here
    assert {"name": "B", "value": "2"} in container["env"]


def test_a_group_with_its_own_image_and_no_gpu_advertises_no_resource():
    pod = pod_of(derive_group(WorkerGroup(), "big", memory="8Gi", image="reg/other:1"))
    container = pod["spec"]["containers"][0]
    assert container["image"] == "reg/other:1"
    assert "--resources" not in container["command"]
    assert container["command"][container["command"].index("--memory-limit") + 1] == str(8 * 2**30)


def test_bad_groups_are_refused_with_the_reason():
    with pytest.raises(UsageError, match="exists already"):
        check_group_name("default", {"default": WorkerGroup()})
    with pytest.raises(UsageError, match="does not fit in a pod name"):
        check_group_name("GPU_nodes", {})
    with pytest.raises(UsageError, match="does not fit in a pod name"):
        check_group_name("a" * 21, {})
    with pytest.raises(UsageError, match="invalid memory quantity"):
        derive_group(WorkerGroup(), "x", memory="lots")
    with pytest.raises(UsageError, match="is not a count"):
        derive_group(WorkerGroup(), "x", gpu=-1)


def test_pod_names_are_unique_per_number_and_fit_in_63():
    assert worker_pod_name("drv-abc123", "default", 0) == "drv-abc123-w0"
    assert worker_pod_name("drv-abc123", "gpu", 7) == "drv-abc123-gpu-w7"
    long_id = "a" * 40 + "-abc123"
    names = {worker_pod_name(long_id, "b" * 20, n) for n in (9, 10, 1234)}
    assert len(names) == 3 and all(len(n) <= 63 and n.endswith(("-w9", "-w10", "-w1234")) for n in names)


def test_scale_by_memory_or_cores_counts_workers_of_the_group():
    group = WorkerGroup(cpu="2", memory="4Gi")
    assert workers_for(1, group) == 1
    assert workers_for(0, group, memory=9 * 2**30) == 3
    assert workers_for(0, group, cores=5) == 3
    assert workers_for(4, group, cores=2) == 4
