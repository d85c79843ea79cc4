"""`pypod info RUN` against the harness's real node: a REPL run with --cpu 500m --memory 300Mi,
an emptyDir and a memory-backed /dev/shm, in an image built with numpy and threadpoolctl.
The figures read inside the pod must match what the API says of the node and the pod."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from lightkube.resources.core_v1 import Node, Pod

from tests.kubehelp import wait_for
from tests.pypodcli import Terminal, run_cli

pytestmark = pytest.mark.cluster

MiB = 2**20
TEMPLATE = """\
apiVersion: batch/v1
kind: Job
metadata:
  name: $RUNID
spec:
  template:
    spec:
      containers:
      - name: driver
        image: $IMAGE_TAG
        command: [$COMMAND]
        volumeMounts:
        - {name: scratch, mountPath: /scratch}
        - {name: shm, mountPath: /dev/shm}
      volumes:
      - {name: scratch, emptyDir: {}}
      - {name: shm, emptyDir: {medium: Memory, sizeLimit: 128Mi}}
"""


def kib(quantity: str) -> int:
    assert quantity.endswith("Ki"), quantity
    return int(quantity[:-2]) * 1024


def test_info_of_a_run_reports_the_pods_limits_beside_the_nodes_capacity(pypod_env, kube, namespace, tmp_path: Path):
    root = tmp_path / "proj"
    root.mkdir()
    (root / "requirements.txt").write_text("numpy\nthreadpoolctl\n")
    (root / "driver.yaml.template").write_text(TEMPLATE)
    run = "infopod"
    args = ["--runid", run, "--cpu", "500m", "--memory", "300Mi", "--template", "driver.yaml.template"]
    term = Terminal([*args, "--detach", "--no-sync"], pypod_env, cwd=root)
    try:
        term.expect(">>> ", 900)  # the first build installs numpy
        # The REPL opens with pypod info's line, the pod's figures beside the node's.
        banner = re.search(
            r"pod: 0\.5 CPU \(1 thread, node \d+\) · 300 MiB \(node [\d.]+ GiB\) · no GPU · [^\r\n]*", term.text()
        )
        assert banner, term.text()[-2000:]
        assert " · /scratch " in banner.group(0) and banner.group(0).endswith(" · /dev/shm 128 MiB")
        # The marker is split in the source, so only the printed line matches it.
        term.line(
            "import os, numpy, threadpoolctl; print('RES' + 'ULT', os.environ['OMP_NUM_THREADS'],"
            " os.environ['PYTHON_CPU_COUNT'], os.cpu_count(),"
            " sorted({p['num_threads'] for p in threadpoolctl.threadpool_info()}), 'END')"
        )
        term.expect("RESULT", 60)
        term.expect("END", 30)
        shown = term.text()[term.text().rindex("RESULT") :]
    finally:
        term.kill()  # detached: the run lives on without its client
    threads = re.match(r"RESULT (\d+) (\d+) (\d+) \[([\d, ]+)\] END", shown)
    assert threads, shown
    omp, python_cpu_count, os_cpu_count, pools = threads.groups()
    assert omp == python_cpu_count == "1"
    assert pools == "1"  # numpy's OpenBLAS follows OPENBLAS_NUM_THREADS
    # The reason for the variables: os.cpu_count() of this Python (< 3.13) sees the node.

    result = run_cli(["info", run, "--json"], pypod_env, cwd=root)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    pod = next(iter(kube.list(Pod, namespace=namespace, labels={"pypod.dev/run": run})))
    node = kube.get(Node, pod.spec.nodeName)

    cpu, memory = data["cpu"], data["memory"]
    assert (cpu["limit"], cpu["effective"], cpu["effective_by"]) == (0.5, 1, "quota")
    assert cpu["limit_source"].startswith("cgroup v1 cpu.cfs_quota_us")
    assert cpu["request"] == 0.5  # from the downward API
    assert cpu["node"] == int(node.status.capacity["cpu"]) == int(os_cpu_count)
    assert memory["limit"] == 300 * MiB and memory["request"] == 300 * MiB
    assert memory["node_total"] == kib(node.status.capacity["memory"])
    assert 0 < memory["usage"] < 300 * MiB
    disks = {d["path"]: d for d in data["disks"]}
    assert disks["/scratch"]["kind"] == "emptyDir" and disks["/scratch"]["on_node_disk"] is True
    assert disks["/"]["kind"] == "root" and disks["/"]["free"] > 0
    assert data["shm"]["total"] == 128 * MiB and not data["shm"]["small"]
    ident = data["identity"]
    assert ident["in_pod"] is True
    assert (ident["pod_name"], ident["namespace"], ident["node_name"], ident["pod_uid"]) == (
        pod.metadata.name,
        namespace,
        pod.spec.nodeName,
        pod.metadata.uid,
    )
    assert ident["sources"]["pod_uid"] == "downward API"
    assert ident["image"] == pod.spec.containers[0].image
    assert data["gpus"]["devices"] == [] and data["gpus"]["source"] == "none"
    if "ephemeral-storage" not in (node.status.capacity or {}):
        assert data["ephemeral"]["limit"] is None
        assert "no ephemeral-storage limit is known" in data["ephemeral"]["note"]

    table = run_cli(["info", run], pypod_env, cwd=root)
    assert table.returncode == 0, table.stderr
    assert f"pod {pod.metadata.name}" in table.stdout and "0.5 CPU" in table.stdout
    assert "/scratch" in table.stdout and "emptyDir scratch" in table.stdout
    exported = run_cli(["info", run, "--export"], pypod_env, cwd=root)
    assert "export OMP_NUM_THREADS=1\n" in exported.stdout and "export RAYON_NUM_THREADS=1\n" in exported.stdout

    assert run_cli(["rm", run], pypod_env).returncode == 0
    wait_for(lambda: not list(kube.list(Pod, namespace=namespace, labels={"pypod.dev/run": run})), 60)


def test_quiet_drops_the_banner(pypod_env, cluster, tmp_path: Path):
    env = dict(pypod_env, PYPOD_IMAGE=cluster.base_image)  # a given image: nothing is built
    term = Terminal(["--quiet", "--no-sync", "--cpu", "1"], env, cwd=tmp_path)
    term.expect(">>> ", 120)
    term.line("import os; print('OMP=' + os.environ['OMP_NUM_THREADS'])")
    term.expect("OMP=1", 30)
    term.line("exit()")
    assert term.wait(60) == 0
    assert "pod: " not in term.text() and "CPU" not in term.text()


def test_info_of_an_unknown_run_is_one_line(pypod_env, tmp_path: Path):
    result = run_cli(["info", "no-such-run"], pypod_env, cwd=tmp_path)
    assert result.returncode == 71, result.stderr
    assert result.stderr.startswith("pypod: no pod for run 'no-such-run'") and result.stderr.count("\n") == 1
