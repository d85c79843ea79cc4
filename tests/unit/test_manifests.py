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
