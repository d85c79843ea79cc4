"""Live sync through the harness's real node: `kubectl exec` into real containers,
the agent injected into a stock Python image (no pypod in it)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from lightkube.resources.core_v1 import Pod

from harness.cluster import ClusterInfo
from tests.kubehelp import wait_pod
from tests.pypodcli import PYPOD, Terminal, run_cli
from tests.synchelp import RunningSync, local_agent, wait_until

pytestmark = pytest.mark.cluster
REMOTE = "/srv/project"


@pytest.fixture
def pod(kube, namespace: str, cluster: ClusterInfo) -> str:  # type: ignore[no-untyped-def]
    """A pod of the stock base image, doing nothing: the agent must bring itself."""
    name = "sync-target"
    kube.create(
        Pod.from_dict(
            {
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "driver", "image": cluster.base_image, "command": ["sleep", "3600"]}],
                },
            }
        )
    )
    wait_pod(kube, namespace, name, lambda p: p.status.phase == "Running", timeout=120)
    return name


def exec_prefix(cluster: ClusterInfo, namespace: str, pod: str) -> list[str]:
    return [cluster.kubectl, f"--kubeconfig={cluster.admin_kubeconfig}", "-n", namespace, "exec", "-i", pod, "--"]


def pod_sh(cluster: ClusterInfo, namespace: str, pod: str, script: str) -> str:
    argv = [*exec_prefix(cluster, namespace, pod), "sh", "-c", script]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout


def test_edits_propagate_both_ways_through_a_real_pod(cluster, namespace, pod, tmp_path):  # type: ignore[no-untyped-def]
    local = tmp_path / "project"
    (local / "pkg").mkdir(parents=True)
    (local / "pkg" / "model.py").write_text("VERSION = 1\n")
    (local / "train.sh").write_text("#!/bin/sh\necho train\n")
    (local / "train.sh").chmod(0o755)
    (local / ".gitignore").write_text("*.ckpt\n")
    (local / "big.ckpt").write_bytes(b"0" * 1000)
    prefix = exec_prefix(cluster, namespace, pod)
    with RunningSync(local, REMOTE, local_agent(prefix)) as sync:
        assert "inotify" in sync.syncer.health.watcher
        assert pod_sh(cluster, namespace, pod, f"cat {REMOTE}/pkg/model.py") == "VERSION = 1\n"
        assert pod_sh(cluster, namespace, pod, f"test -x {REMOTE}/train.sh && echo x") == "x\n"
        assert pod_sh(cluster, namespace, pod, f"ls {REMOTE}/big.ckpt 2>&1 || true").count("No such") == 1
        (local / "pkg" / "model.py").write_text("VERSION = 2\n")
        wait_until(
            lambda: pod_sh(cluster, namespace, pod, f"cat {REMOTE}/pkg/model.py") == "VERSION = 2\n",
            timeout=20,
            what="local edit in the pod",
        )
        pod_sh(cluster, namespace, pod, f"mkdir -p {REMOTE}/out && echo result > {REMOTE}/out/metrics.txt")
        wait_until(lambda: (local / "out" / "metrics.txt").read_text() == "result\n", what="pod file locally")
        pod_sh(cluster, namespace, pod, f"rm {REMOTE}/train.sh")
        wait_until(lambda: not (local / "train.sh").exists(), what="pod delete locally")
        sync.quiet()


def test_a_conflict_is_kept_and_a_killed_stream_resumes(cluster, namespace, pod, tmp_path):  # type: ignore[no-untyped-def]
    local, state = tmp_path / "project", tmp_path / "state.json"
    local.mkdir()
    for i in range(20):
        (local / f"m{i}.py").write_text(f"x = {i}\n")
    prefix = exec_prefix(cluster, namespace, pod)
    connect = local_agent(prefix)
    with RunningSync(local, REMOTE, connect, state_file=state) as sync:
        before = pod_sh(cluster, namespace, pod, f"stat -c '%n %Y %i' {REMOTE}/m*.py")
        # kill kubectl: the stream breaks like a dropped network connection
        connect.links[-1].kill()
        (local / "m1.py").write_text("x = 'edited while the stream was down'\n")
        wait_until(lambda: len(connect.links) >= 2 and sync.syncer.health.state == "watching", 30, "reconnect")
        wait_until(
            lambda: "while the stream" in pod_sh(cluster, namespace, pod, f"cat {REMOTE}/m1.py"), 20, "resumed edit"
        )
        after = pod_sh(cluster, namespace, pod, f"stat -c '%n %Y %i' {REMOTE}/m*.py")
    changed = {a for a in after.splitlines()} - set(before.splitlines())
    assert [line.split()[0] for line in changed] == [f"{REMOTE}/m1.py"]  # nothing unchanged was re-sent
    # Both sides edit m2.py while no sync runs: the local version stays, the pod's is kept beside it.
    (local / "m2.py").write_text("x = 'laptop'\n")
    pod_sh(cluster, namespace, pod, f"echo \"x = 'pod'\" > {REMOTE}/m2.py")
    with RunningSync(local, REMOTE, local_agent(prefix), state_file=state) as sync:
        wait_until(lambda: list(local.glob("m2.py.pod-conflict-*")), 20, "the pod's version kept locally")
        sync.quiet()
    copies = list(local.glob("m2.py.pod-conflict-*"))
    assert len(copies) == 1 and copies[0].read_text() == "x = 'pod'\n"
    assert pod_sh(cluster, namespace, pod, f"cat {REMOTE}/m2.py") == "x = 'laptop'\n"


def test_a_new_connection_is_answered_by_the_agent_kept_in_the_pod(cluster, namespace, pod, tmp_path):  # type: ignore[no-untyped-def]
    local, state = tmp_path / "project", tmp_path / "state.json"
    (local / "pkg").mkdir(parents=True)
    for i in range(20):
        (local / "pkg" / f"m{i}.py").write_text(f"x = {i}\n")
    connect = local_agent(exec_prefix(cluster, namespace, pod), agent_args=("--linger", "120", "itest"))
    with RunningSync(local, REMOTE, connect, state_file=state) as sync:
        assert sync.syncer.health.watcher == "inotify"
        sync.quiet()
    wait_until(lambda: "sync-itest.sock" in pod_sh(cluster, namespace, pod, "ls /tmp/pypod/agent-*/"), 20, "kept agent")
    before = pod_sh(cluster, namespace, pod, f"stat -c '%n %Y %i' {REMOTE}/pkg/m*.py")
    pod_sh(cluster, namespace, pod, f"echo made > {REMOTE}/pkg/new.txt && rm {REMOTE}/pkg/m3.py")
    (local / "pkg" / "m1.py").write_text("x = 'laptop, while away'\n")
    with RunningSync(local, REMOTE, connect, state_file=state) as sync:
        assert sync.syncer.health.watcher == "inotify (kept)"
        wait_until(lambda: (local / "pkg" / "new.txt").exists(), 20, "the pod's new file")
        sync.quiet()
        assert sync.syncer.health.problems == 0
    assert not (local / "pkg" / "m3.py").exists()
    assert pod_sh(cluster, namespace, pod, f"cat {REMOTE}/pkg/m1.py") == "x = 'laptop, while away'\n"
    after = pod_sh(cluster, namespace, pod, f"stat -c '%n %Y %i' {REMOTE}/pkg/m*.py")
    changed = set(after.splitlines()) - set(before.splitlines())
    assert [line.split()[0] for line in changed] == [f"{REMOTE}/pkg/m1.py"]  # nothing else was re-sent


@pytest.fixture
def env(pypod_env: dict[str, str], cluster: ClusterInfo) -> dict[str, str]:
    return dict(pypod_env, PYPOD_IMAGE=cluster.base_image)  # the stock image: no pypod, no project inside


def run_pod(kube, namespace: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    pods = list(kube.list(Pod, namespace=namespace, labels={"pypod.dev/mode": "repl"}))
    assert len(pods) == 1
    return pods[0].metadata.labels["pypod.dev/run"], pods[0].metadata.name


def project_folder(tmp_path, name: str, text: str):  # type: ignore[no-untyped-def]
    """A project of one file, `name` holding `text`, for a pypod session to sync."""
    project = tmp_path / "proj"
    project.mkdir()
    (project / name).write_text(text)
    return project


def test_pypod_syncs_by_default_and_the_repl_imports_edited_code(env, kube, namespace, tmp_path, cluster):  # type: ignore[no-untyped-def]
    project = project_folder(tmp_path, "mymod.py", "VALUE = 'first'\n")
    term = Terminal([], env, cwd=project)
    term.expect("paths in sync", 120)
    term.expect(">>> ", 60)
    term.line("import importlib, mymod; print('got', mymod.VALUE)")
    term.expect("got first")
    (project / "mymod.py").write_text("VALUE = 'edited locally'\n")
    time.sleep(0.5)
    term.line("importlib.reload(mymod); print('got', mymod.VALUE)")
    term.expect("got edited locally", 20)
    term.line("open('made_in_repl.txt', 'w').write('from the pod')")
    wait_until(lambda: (project / "made_in_repl.txt").read_text() == "from the pod", 20, "REPL file locally")
    run, _pod = run_pod(kube, namespace)
    listing = run_cli(["ps"], dict(env, COLUMNS="250"), cwd=project)
    assert "SYNC" in listing.stdout and "ok" in listing.stdout.split(run)[1].splitlines()[0], listing.stdout
    term.line("exit()")
    assert term.wait() == 0


def test_what_the_repl_writes_as_it_exits_comes_home_before_the_pod_ends(env, kube, namespace, tmp_path, cluster):  # type: ignore[no-untyped-def]
    # The pod ends with the REPL, and with it the sync's agent: 30 MB written on the same
    # line as exit() came home as an empty file before the session host waited for pypod.
    project = project_folder(tmp_path, "a.py", "A = 1\n")
    term = Terminal([], env, cwd=project)
    term.expect(">>> ", 120)
    term.line("open('made_at_exit.bin', 'wb').write(b'x' * 30_000_000); open('small.txt', 'w').write('last'); exit()")
    assert term.wait(120) == 0
    assert (project / "small.txt").read_text() == "last"
    made = project / "made_at_exit.bin"
    assert made.stat().st_size == 30_000_000 and made.read_bytes() == b"x" * 30_000_000


def test_pypod_sync_attaches_to_a_running_run(env, kube, namespace, tmp_path, cluster):  # type: ignore[no-untyped-def]
    project = project_folder(tmp_path, "a.py", "A = 1\n")
    term = Terminal(["--no-sync"], env, cwd=project)
    term.expect(">>> ", 120)
    run, pod = run_pod(kube, namespace)
    assert "No such" in pod_sh(cluster, namespace, pod, "ls /workspace/a.py 2>&1 || true")  # --no-sync: nothing came
    sync = subprocess.Popen([*PYPOD, "sync", run], env=env, cwd=project, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: pod_sh(cluster, namespace, pod, "cat /workspace/a.py 2>&1") == "A = 1\n", 60, "a.py")
        (project / "b.py").write_text("B = 2\n")
        wait_until(lambda: pod_sh(cluster, namespace, pod, "cat /workspace/b.py 2>&1") == "B = 2\n", 20, "b.py")
    finally:
        sync.send_signal(signal.SIGINT)
        _out, err = sync.communicate(timeout=30)
    assert sync.returncode == 0, err
    assert "sync stopped" in err
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    refused = run_cli(["sync", run], env, cwd=elsewhere)
    assert refused.returncode == 64 and "this folder is" in refused.stderr
    term.line("exit()")
    term.wait()


def test_sync_of_a_run_that_does_not_exist_is_one_line(env, tmp_path):  # type: ignore[no-untyped-def]
    result = run_cli(["sync", "no-such-run"], env, cwd=tmp_path)
    assert result.returncode == 71 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert os.path.isdir(tmp_path)
