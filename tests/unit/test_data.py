"""pypod data's pure parts: the request checks, the manifests, status lines, --pvc."""

from __future__ import annotations

import json

import pytest

from pypod.data import plan as p
from pypod.data.status import fetch_status, render
from pypod.data.volumes import PvcMount, add_pvc_mounts, claim_problems, parse_pvc, parse_pvcs
from pypod.errors import NotFound, UsageError

DIGEST = "ab" * 32


def request(**kw: object) -> p.FetchRequest:
    args = {"urls": ["https://host/d/a.tar?X-Amz-Signature=secret"], "pvc": "data", "image": "python:3.12"}
    args.update(kw)
    return p.build_request(**args)  # type: ignore[arg-type]


def test_the_job_mounts_the_pvc_and_the_plan_and_fails_at_once_on_a_permanent_exit():
    job = p.fetch_job(request(sha256=DIGEST, name="fetch-data-1"), "ns")
    spec = job["spec"]
    assert spec["backoffLimit"] == p.BACKOFF_LIMIT
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [p.EXIT_PERMANENT]
    pod = spec["template"]["spec"]
    assert pod["volumes"][0] == {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}
    assert pod["volumes"][1]["secret"]["secretName"] == "fetch-data-1"
    container = pod["containers"][0]
    assert container["command"][:2] == ["python3", "-c"] and container["command"][-3:] == [
        "data",
        "fetch",
        "/etc/pypod-fetch/plan.json",
    ]
    # The signature is in the Secret only.
    assert "secret" not in json.dumps(job).replace("secretName", "").replace('"secret":', "")
    files = json.loads(job["metadata"]["annotations"][p.ANNOTATION_FILES])
    assert files == [{"name": "a.tar", "url": "https://host/d/a.tar?...", "sha256": DIGEST}]
    plan = json.loads(p.plan_secret(request(sha256=DIGEST), "ns")["stringData"][p.PLAN_KEY])
    assert plan["files"][0]["url"].endswith("X-Amz-Signature=secret")
    assert plan["dest"] == "/pvc"


def test_bad_requests_are_one_line_usage_errors():
    with pytest.raises(UsageError, match="presigned https URL"):
        request(urls=["s3://bucket/key"])
    with pytest.raises(UsageError, match="not an http"):
        request(urls=["ftp://host/x"])
    with pytest.raises(UsageError, match="one file's digest"):
        request(urls=["http://h/a", "http://h/b"], sha256=DIGEST)
    with pytest.raises(UsageError, match="64 hex"):
        request(sha256="abc")
    with pytest.raises(UsageError, match="same name"):
        request(urls=["http://h/x/a", "http://h/y/a"])
    with pytest.raises(UsageError, match="leaves the PVC"):
        request(dest="../up")
    with pytest.raises(UsageError, match=r"no line for 'a\.tar'"):
        request(checksums={"other": DIGEST})
    with pytest.raises(UsageError, match="not a valid PVC name"):
        request(pvc="Data_1")


def test_checksum_files_in_gnu_and_bsd_form():
    text = f"{DIGEST}  a.tar\n{'cd' * 32} *sub/b.bin\n# comment\nSHA256 (c.txt) = {'EF' * 32}\n"
    assert p.parse_checksums(text, "SUMS") == {"a.tar": DIGEST, "b.bin": "cd" * 32, "c.txt": "ef" * 32}
    with pytest.raises(UsageError, match="SUMS:1: not a sha256"):
        p.parse_checksums("md5 stuff\n", "SUMS")
    assert request(checksums={"a.tar": DIGEST}).files[0].sha256 == DIGEST


def test_a_created_pvc_asks_for_the_size_class_and_mode():
    pvc = p.pvc_manifest(request(size="200Gi", storage_class="fast", access_mode="ReadWriteMany"), "ns")
    assert pvc["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "200Gi"}},
        "storageClassName": "fast",
    }


def test_default_names_fit_and_reader_pods_follow_the_fetch_pod():
    assert p.default_job_name("x" * 80, "abcd").endswith("-abcd") and len(p.default_job_name("x" * 80)) <= 57
    pod = p.reader_pod("data", "img", ("states", "/pvc"), "ns", node="node-1")
    assert pod["spec"]["nodeName"] == "node-1"
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"] == {"claimName": "data", "readOnly": True}
    assert p.pod_path(".pypod-fetch") == "/pvc/.pypod-fetch" and p.pod_path("/") == "/pvc"


def job_with(conditions=(), failed=0) -> dict:  # type: ignore[no-untyped-def]
    files = [{"name": "a.bin", "url": "http://h/a.bin", "sha256": None}, {"name": "b.bin", "url": "u", "sha256": None}]
    return {
        "metadata": {
            "name": "f1",
            "labels": {p.LABEL_PVC: "data"},
            "annotations": {p.ANNOTATION_FILES: json.dumps(files), p.ANNOTATION_DEST: "sets"},
        },
        "status": {"conditions": list(conditions), "failed": failed},
    }


def running_pod() -> dict:
    return {"metadata": {"name": "f1-abc"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}


def test_status_lines_give_bytes_rate_eta_and_notes():
    states = [
        {
            "name": "a.bin",
            "state": "downloading",
            "done": 50 * 2**20,
            "total": 150 * 2**20,
            "rate": 10 * 2**20,
            "updated": 1000.0,
            "notes": ["the server ignored Range: restarted from zero (had 5 bytes)"],
            "restarts": 1,
        }
    ]
    status = fetch_status(job_with(failed=1), [running_pod()], states, now=1001.0)
    lines = render(status)
    assert lines[0] == "f1  pvc data:/sets  running, try 2 (f1-abc on n1)"
    assert lines[1].split() == [
        "a.bin",
        "downloading",
        "50.0",
        "MiB",
        "/",
        "150.0",
        "MiB",
        "10.0",
        "MiB/s",
        "ETA",
        "10s",
    ]
    assert "note: the server ignored Range: restarted from zero" in lines[2]
    assert lines[3].split() == ["b.bin", "queued", "0", "B", "/", "?", "-"]


def test_a_state_nobody_updates_is_stalled_and_a_failed_job_says_why():
    states = [{"name": "a.bin", "state": "downloading", "done": 1, "total": 2, "rate": 5.0, "updated": 0.0}]
    status = fetch_status(job_with(), [], states, now=1000.0)
    assert status.job_state == "waiting for a pod"
    assert status.files[0].state.startswith("downloading, stalled")
    failed = [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": "..."}]
    states = [{"name": "a.bin", "state": "failed", "error": "sha256 mismatch: expected x, got y", "done": 0}]
    lines = render(fetch_status(job_with(failed), [], states))
    assert lines[0].endswith("failed: a file cannot be fetched (see below)")
    assert lines[1].split(None, 1)[1] == "failed: sha256 mismatch: expected x, got y"
    done = [{"type": "Complete", "status": "True"}]
    assert fetch_status(job_with(done), [], []).job_state == "complete"


def test_pvc_flags_parse_with_default_mounts_and_read_only():
    assert parse_pvc("data") == PvcMount("data", "/data/data")
    assert parse_pvc("data:/mnt/d") == PvcMount("data", "/mnt/d")
    assert parse_pvc("data:/mnt/d:ro") == PvcMount("data", "/mnt/d", True)
    assert parse_pvc("data:ro") == PvcMount("data", "/data/data", True)
    for bad, message in (
        ("Data", "not a PVC name"),
        ("d:rel", "not an absolute path"),
        ("d:/dev/shm", "cannot mount"),
        ("d:/a:/b:ro", "too many"),
    ):
        with pytest.raises(UsageError, match=message):
            parse_pvc(bad)
    with pytest.raises(UsageError, match="both mount at /x"):
        parse_pvcs(["a:/x", "b:/x"])


def test_pvc_mounts_are_added_to_a_pod_and_replace_their_own():
    spec = {"volumes": [{"name": "other", "emptyDir": {}}], "containers": [{"name": "c", "volumeMounts": []}]}
    container = spec["containers"][0]
    mounts = parse_pvcs(["a", "b:/models:ro"])
    add_pvc_mounts(spec, container, mounts)
    add_pvc_mounts(spec, container, mounts)  # twice: the same result
    assert spec["volumes"] == [
        {"name": "other", "emptyDir": {}},
        {"name": "pypod-pvc-0", "persistentVolumeClaim": {"claimName": "a"}},
        {"name": "pypod-pvc-1", "persistentVolumeClaim": {"claimName": "b", "readOnly": True}},
    ]
    assert container["volumeMounts"] == [
        {"name": "pypod-pvc-0", "mountPath": "/data/a"},
        {"name": "pypod-pvc-1", "mountPath": "/models", "readOnly": True},
    ]


def claim(name: str, modes: list[str], volume: str = "") -> dict:
    return {
        "metadata": {"name": name},
        "spec": {"accessModes": modes, "resources": {"requests": {"storage": "1Gi"}}, "volumeName": volume},
        "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}},
    }


def pod_using(name: str, claim_name: str, node: str) -> dict:
    volumes = [{"name": "v", "persistentVolumeClaim": {"claimName": claim_name}}]
    return {"metadata": {"name": name}, "spec": {"nodeName": node, "volumes": volumes}, "status": {"phase": "Running"}}


def test_a_missing_claim_lists_those_there_are():
    with pytest.raises(NotFound) as caught:
        claim_problems(
            parse_pvcs(["nope"]), [claim("a", ["ReadWriteOnce"]), claim("b", ["ReadWriteMany"])], [], {}, "ns"
        )
    assert caught.value.message == (
        "PVC 'nope' not found in namespace 'ns' (PVCs there: a (1Gi RWO, Bound), b (1Gi RWX, Bound))"
    )


def test_an_rwo_claim_held_on_a_node_warns_unless_the_volume_lives_there():
    pvcs = [claim("a", ["ReadWriteOnce"], "pv-a"), claim("s", ["ReadWriteMany"])]
    pods = [pod_using("holder", "a", "node-2"), pod_using("other", "s", "node-2")]
    warnings = claim_problems(parse_pvcs(["a", "s"]), pvcs, pods, {}, "ns")
    assert warnings == [
        "warning: PVC a is ReadWriteOnce and in use by pod holder on node node-2: "
        "this run's pod may wait there until it is free, unless it lands on that node"
    ]
    pinned = {
        "pv-a": {
            "spec": {
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-2"]}
                                ]
                            }
                        ]
                    }
                }
            }
        }
    }
    assert claim_problems(parse_pvcs(["a"]), pvcs, pods, pinned, "ns") == []


def test_runs_and_settings_carry_pvcs():
    from pypod.kube.manifests import RunSpec, driver_job
    from pypod.settings import resolve

    settings = resolve({}, {"PYPOD_PVCS": "a, b:/models:ro"}, {})
    assert settings.pvcs == ("a", "b:/models:ro")
    assert resolve({}, {}, {"pvcs": ["c"]}).pvcs == ("c",)
    assert resolve({"pvcs": ("d",)}, {"PYPOD_PVCS": "a"}, {}).pvcs == ("d",)
    with pytest.raises(UsageError, match="not an absolute path"):
        resolve({"pvcs": ("d:rel",)}, {}, {})
    spec = RunSpec(name="r", image="i", command=("python3",), mode="job", pvcs=parse_pvcs(settings.pvcs))
    pod = driver_job(spec)["spec"]["template"]["spec"]
    assert [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v] == [
        "a",
        "b",
    ]
    assert {m["mountPath"]: m.get("readOnly", False) for m in pod["containers"][0]["volumeMounts"]} == {
        "/data/a": False,
        "/models": True,
    }


def test_a_profile_carries_pvcs_and_says_where_they_came_from():
    from pypod.profiles import Profile
    from pypod.settings import describe_origins, resolve

    profiles = {"eidf": Profile("eidf", {"pvcs": ["datasets:/data/datasets:ro"]}, "~/.config/pypod/config.toml")}
    settings = resolve({"profile": "eidf"}, {}, {}, profiles)
    assert settings.pvcs == ("datasets:/data/datasets:ro",)
    assert "pvcs = datasets:/data/datasets:ro (profile eidf)" in describe_origins(settings)
    assert resolve({"pvcs": ("x",)}, {}, {}).origins["pvcs"] == "--pvc"
