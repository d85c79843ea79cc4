from __future__ import annotations

from pypod.kube.workers import worker_end, worker_pod_spec, worker_threads


def spec(**kw):  # type: ignore[no-untyped-def]
    base = dict(
        image="reg/app@sha256:1",
        scheduler_address="tcp://10.88.0.5:8786",
        cluster_id="drv-abc123",
        driver="drv",
        namespace="ns",
    )
    base.update(kw)
    return worker_pod_spec(**base)


def test_worker_pod_runs_dask_worker_against_the_driver_with_requests_equal_limits():
    pod = spec(cpu="1500m", memory="512Mi", name="drv-abc123-w0")
    container = pod["spec"]["containers"][0]
    assert pod["metadata"]["name"] == "drv-abc123-w0"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert container["command"][:3] == ["dask", "worker", "tcp://10.88.0.5:8786"]
    cmd = container["command"]
    assert cmd[cmd.index("--name") + 1] == "drv-abc123-w0"
    assert cmd[cmd.index("--nthreads") + 1] == "2"  # 1.5 CPUs rounded up, as OMP_NUM_THREADS
    assert cmd[cmd.index("--memory-limit") + 1] == str(512 * 2**20)
    assert cmd[cmd.index("--death-timeout") + 1] == "60"
    assert container["resources"]["requests"] == container["resources"]["limits"] == {"cpu": "1500m", "memory": "512Mi"}
    assert pod["metadata"]["labels"]["pypod.dev/cluster"] == "drv-abc123"


def test_generate_name_gpu_owner_and_scheduling_options():
    owner = {"apiVersion": "v1", "kind": "Pod", "name": "drv", "uid": "u-1"}
    pod = spec(
        gpu=2,
        owner=owner,
        node_selector={"gpu": "a100"},
        tolerations=[{"key": "k", "operator": "Exists"}],
        service_account="runner",
    )
    assert pod["metadata"]["generateName"] == "drv-worker-"
    assert pod["metadata"]["ownerReferences"] == [owner]
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod["spec"]["nodeSelector"] == {"gpu": "a100"}
    assert pod["spec"]["serviceAccountName"] == "runner"
    assert "$(POD_NAME)" in pod["spec"]["containers"][0]["command"]


def test_threads_from_cpu():
    assert [worker_threads(c) for c in ("100m", "1", "1001m", "2.5", 4)] == [1, 1, 2, 3, 4]


def test_worker_env_has_the_downward_api_the_image_and_thread_counts_matching_nthreads():
    pod = spec(cpu="2500m", memory="1Gi", env={"MKL_NUM_THREADS": "1"})
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    nthreads = container["command"][container["command"].index("--nthreads") + 1]
    assert nthreads == env["OMP_NUM_THREADS"]["value"] == env["PYTHON_CPU_COUNT"]["value"] == "3"
    assert env["MKL_NUM_THREADS"]["value"] == "1"  # the user's own stays
    assert [e["name"] for e in container["env"]].count("MKL_NUM_THREADS") == 1
    assert env["POD_UID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["POD_CPU_LIMIT_MILLICORES"]["valueFrom"]["resourceFieldRef"] == {
        "resource": "limits.cpu",
        "divisor": "1m",
    }
    assert env["POD_MEMORY_LIMIT_BYTES"]["valueFrom"]["resourceFieldRef"] == {
        "resource": "limits.memory",
        "divisor": "1",
    }
    assert "POD_EPHEMERAL_STORAGE_LIMIT_BYTES" not in env  # not set: it would read as the node's
    assert env["POD_IMAGE"]["value"] == "reg/app@sha256:1"
    off = spec(cpu="2", threads="off")["spec"]["containers"][0]
    assert "OMP_NUM_THREADS" not in {e["name"] for e in off["env"]}
    four = spec(cpu="1", threads=4)["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in four["env"]}["RAYON_NUM_THREADS"] == "4"


def test_worker_end_reasons():
    def pod(status):  # type: ignore[no-untyped-def]
        return {"metadata": {"name": "p", "labels": {"pypod.dev/worker": "w0"}}, "status": status}

    oom = worker_end(
        pod(
            {
                "phase": "Failed",
                "containerStatuses": [{"state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}],
            }
        )
    )
    assert (oom.reason, oom.exit_code, oom.worker) == ("OOMKilled", 137, "w0")
    assert str(oom) == "worker w0 (pod p) ended: OOMKilled (exit code 137)"
    evicted = worker_end(pod({"phase": "Failed", "reason": "Evicted", "message": "low on memory"}))
    assert (evicted.reason, evicted.message) == ("Evicted", "low on memory")
    assert worker_end(pod({"phase": "Running", "containerStatuses": [{"state": {"running": {}}}]})) is None


def test_queued_workers_carry_the_queue_label_gpu_product_and_a_non_controller_owner():
    owner = {"apiVersion": "v1", "kind": "Pod", "name": "drv", "uid": "u-1", "controller": True}
    pod = spec(queue="team-user-queue", gpu=1, gpu_product="NVIDIA-A100-SXM4-80GB", owner=owner)
    assert pod["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-user-queue"
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    # A controller chain to the driver's Kueue-managed Job would make Kueue skip the worker.
    assert pod["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod", "name": "drv", "uid": "u-1"}]
    assert "kueue.x-k8s.io/queue-name" not in spec()["metadata"]["labels"]
