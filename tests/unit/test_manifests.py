from __future__ import annotations

import pytest
import yaml

from pypod.errors import TemplateError
from pypod.kube.manifests import RunSpec, driver_job, job_command
from pypod.kube.template import DEFAULT_TEMPLATE, render_template


def spec(**changes) -> RunSpec:
    base = dict(
        name="repo-main-260101-000000-abcd",
        image="127.0.0.1:5000/x:1",
        command=("python3", "-c", "print(1)"),
        mode="job",
        repo="repo",
        branch="main",
        commit="abc1234",
        user="ana",
    )
    base.update(changes)
    return RunSpec(**base)


def container(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


def test_driver_job_has_labels_limits_and_never_restarts():
    job = driver_job(spec(cpu="2", memory="4Gi", gpu=1, env=(("A", "b"),), labels=(("team", "ml"),)))
    assert job["kind"] == "Job"
    assert job["metadata"]["name"] == "repo-main-260101-000000-abcd"
    labels = job["metadata"]["labels"]
    assert labels["pypod.dev/run"] == "repo-main-260101-000000-abcd"
    assert labels["pypod.dev/branch"] == "main"
    assert labels["pypod.dev/commit"] == "abc1234"
    assert labels["team"] == "ml"
    assert job["spec"]["template"]["metadata"]["labels"]["pypod.dev/run"] == labels["pypod.dev/run"]
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["ttlSecondsAfterFinished"] == 300
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    c = container(job)
    assert c["resources"]["requests"] == {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}
    assert c["resources"]["limits"] == {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}
    env = {e["name"]: e for e in c["env"]}
    assert env["A"]["value"] == "b"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert c["command"] == ["python3", "-c", "print(1)"]


def test_service_account_only_when_given():
    assert "serviceAccountName" not in driver_job(spec())["spec"]["template"]["spec"]
    job = driver_job(spec(service_account="runner"))
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "runner"


JULIA_POD_STYLE = """\
apiVersion: batch/v1
kind: Job
metadata:
  name: driver-$RUNID
  labels:
    owner: $GIT_REPO
spec:
  template:
    spec:
      serviceAccountName: $KUBERNETES_SERVICEACCOUNT
      containers:
      - name: driver
        image: $IMAGE_TAG
        command: [$COMMAND]
        env:
        - name: COMMIT
          value: "$GIT_COMMIT on $GIT_BRANCH"
"""


def test_template_code_with_quotes_and_newlines_cannot_break_the_yaml():
    code = "print(\"it's\")\nx: 1 # not yaml\n'''$IMAGE_TAG'''"
    job = driver_job(spec(command=("python3", "-c", code), service_account="sa"), JULIA_POD_STYLE)
    c = container(job)
    assert c["command"] == ["python3", "-c", code]
    assert c["image"] == "127.0.0.1:5000/x:1"
    assert {e["name"]: e.get("value") for e in c["env"]}["COMMIT"] == "abc1234 on main"
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "sa"
    # The run name wins over the template's name so runs are found by it.
    assert job["metadata"]["name"] == "repo-main-260101-000000-abcd"
    # And the whole thing survives a YAML round trip.
    assert yaml.safe_load(yaml.safe_dump(job)) == job


def test_placeholder_values_are_not_parsed_as_yaml():
    rendered = render_template(DEFAULT_TEMPLATE, {"RUNID": "x", "IMAGE_TAG": "a: [b", "GIT_REPO": "{r}"}, ["py"])
    assert rendered["spec"]["template"]["spec"]["containers"][0]["image"] == "a: [b"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("kind: Job\n  bad: [", "not valid YAML"),
        ("apiVersion: v1\nkind: Pod\n", "not a batch/v1 Job"),
        ("- a\n- b\n", "not a batch/v1 Job"),
        ("apiVersion: batch/v1\nkind: Job\nspec: {}\n", "no containers"),
    ],
)
def test_bad_templates_are_explained(text: str, fragment: str):
    with pytest.raises(TemplateError, match=fragment.replace("/", "/")):
        render_template(text, {}, ["py"])


def test_job_command_forms():
    assert job_command(["python3"], code="print(1)") == ("python3", "-c", "print(1)")
    assert job_command(["python3", "-u"], script="s.py", args=("a", "--b")) == ("python3", "-u", "s.py", "a", "--b")


def test_ttl_setting_applies_to_the_default_template_and_a_templates_own_value_wins():
    from pypod.kube.template import DEFAULT_TEMPLATE

    assert driver_job(spec(ttl_seconds=7))["spec"]["ttlSecondsAfterFinished"] == 7
    own = DEFAULT_TEMPLATE.replace("  backoffLimit: 0\n", "  backoffLimit: 0\n  ttlSecondsAfterFinished: 42\n")
    assert driver_job(spec(ttl_seconds=7), own)["spec"]["ttlSecondsAfterFinished"] == 42


def test_driver_gets_the_downward_api_and_thread_counts_from_its_cpu_limit():
    c = container(driver_job(spec(cpu="1500m", memory="300Mi", env=(("OMP_NUM_THREADS", "8"),))))
    env = {e["name"]: e for e in c["env"]}
    assert env["OMP_NUM_THREADS"]["value"] == "8"  # the user's --env wins
    assert [e["name"] for e in c["env"]].count("OMP_NUM_THREADS") == 1
    assert {n: env[n]["value"] for n in ("MKL_NUM_THREADS", "POLARS_MAX_THREADS", "PYTHON_CPU_COUNT")} == {
        "MKL_NUM_THREADS": "2",
        "POLARS_MAX_THREADS": "2",
        "PYTHON_CPU_COUNT": "2",
    }
    refs = {
        n: e["valueFrom"]["resourceFieldRef"] for n, e in env.items() if "resourceFieldRef" in e.get("valueFrom", {})
    }
    assert refs == {
        "POD_CPU_REQUEST_MILLICORES": {"resource": "requests.cpu", "divisor": "1m"},
        "POD_CPU_LIMIT_MILLICORES": {"resource": "limits.cpu", "divisor": "1m"},
        "POD_MEMORY_REQUEST_BYTES": {"resource": "requests.memory", "divisor": "1"},
        "POD_MEMORY_LIMIT_BYTES": {"resource": "limits.memory", "divisor": "1"},
    }
    fields = {
        n: e["valueFrom"]["fieldRef"]["fieldPath"] for n, e in env.items() if "fieldRef" in e.get("valueFrom", {})
    }
    assert fields == {
        "POD_NAME": "metadata.name",
        "POD_NAMESPACE": "metadata.namespace",
        "NODE_NAME": "spec.nodeName",
        "POD_UID": "metadata.uid",
        "POD_IP": "status.podIP",
    }
    assert env["POD_IMAGE"]["value"] == "127.0.0.1:5000/x:1"


def test_thread_counts_follow_a_template_limit_and_leave_template_env_alone():
    template = JULIA_POD_STYLE.replace(
        "        env:\n",
        "        resources:\n          limits: {cpu: '3', ephemeral-storage: 2Gi}\n"
        "        env:\n        - name: NUMEXPR_MAX_THREADS\n          value: '64'\n",
    )
    c = container(driver_job(spec(), template))
    env = {e["name"]: e for e in c["env"]}
    assert env["OMP_NUM_THREADS"]["value"] == "3"
    assert env["NUMEXPR_MAX_THREADS"]["value"] == "64"
    ref = env["POD_EPHEMERAL_STORAGE_LIMIT_BYTES"]["valueFrom"]["resourceFieldRef"]
    assert ref == {"resource": "limits.ephemeral-storage", "divisor": "1"}


def test_no_thread_counts_without_a_cpu_limit_or_with_threads_off():
    assert "OMP_NUM_THREADS" not in {e["name"] for e in container(driver_job(spec()))["env"]}
    assert "OMP_NUM_THREADS" not in {e["name"] for e in container(driver_job(spec(cpu="2", threads="off")))["env"]}
    env = {e["name"]: e.get("value") for e in container(driver_job(spec(threads="5")))["env"]}
    assert env["VECLIB_MAXIMUM_THREADS"] == env["RAYON_NUM_THREADS"] == "5"
    assert "POD_CPU_LIMIT_MILLICORES" not in env  # no limit set: it would read as the node's


def test_queue_gpu_product_and_shm():
    job = driver_job(spec(queue="team-user-queue", gpu=1, gpu_product="NVIDIA-A100-SXM4-80GB", shm="8Gi"))
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-user-queue"
    # On the Job only: Kueue admits the Job, and its pods come with it.
    assert "kueue.x-k8s.io/queue-name" not in job["spec"]["template"]["metadata"]["labels"]
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert pod["volumes"] == [{"name": "pypod-shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}]
    assert {"name": "pypod-shm", "mountPath": "/dev/shm"} in container(job)["volumeMounts"]
    env = {e["name"]: e for e in container(job)["env"]}
    assert env["PYPOD_QUEUE"]["value"] == "team-user-queue"
    assert env["PYPOD_RUN"]["value"] == "repo-main-260101-000000-abcd"


def test_generate_name_mode_leaves_the_name_to_the_apiserver():
    job = driver_job(spec(name="repo-main-", generate_name=True))
    assert job["metadata"]["generateName"] == "repo-main-"
    assert "name" not in job["metadata"]
    # The run label would be the prefix, not the name: pods are found by the Job controller's label.
    assert "pypod.dev/run" not in job["metadata"]["labels"]
    assert "pypod.dev/run" not in job["spec"]["template"]["metadata"]["labels"]
    env = {e["name"]: e for e in container(job)["env"]}
    assert env["PYPOD_RUN"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/job-name']"
