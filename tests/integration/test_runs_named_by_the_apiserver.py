"""generateName runs, /dev/shm and GPU products through the real `pypod` command and the
harness's apiserver and node (no Kueue needed here; tests/integration/test_queue.py has those)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Node

from harness.cluster import ClusterInfo
from tests.kubehelp import wait_for
from tests.pypodcli import Terminal, run_cli

pytestmark = pytest.mark.cluster
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def env(pypod_env: dict[str, str], cluster: ClusterInfo) -> dict[str, str]:
    return dict(pypod_env, PYPOD_IMAGE=cluster.base_image)


def created_name(stderr: str) -> str:
    match = re.search(r"^run (\S+) created in namespace", stderr, re.MULTILINE)
    assert match, stderr
    return match.group(1)


def test_a_generate_name_repl_can_be_attached_to_followed_and_removed(env, kube, namespace, tmp_path):
    tmp_path = tmp_path / "gen"
    tmp_path.mkdir()
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'gen'\n")
    (tmp_path / "hello.py").write_text("SYNCED = 'yes'\n")
    term = Terminal(["--generate-name", "--detach"], env, cwd=tmp_path)
    term.expect(">>> ", 90)
    name = created_name(term.text())
    assert re.fullmatch(r"gen-[a-z0-9]{5}", name), name  # the apiserver's five characters
    term.line("import hello; print('made by', 'the apiserver', hello.SYNCED)")
    term.expect("made by the apiserver yes", 30)  # the project was synced into the pod
    term.kill()
    again = Terminal(["attach", name], env, cwd=tmp_path)
    again.expect("made by the apiserver", 60)  # the same interpreter, its screen shown again
    again.line("import os; print('run is', os.environ['PYPOD_RUN'])")
    again.expect(f"run is {name}", 30)
    again.kill()
    listed = run_cli(["ps"], env)
    assert name in listed.stdout and "running" in listed.stdout, listed.stdout
    removed = run_cli(["rm", name], env)
    assert removed.returncode == 0, removed.stderr
    wait_for(lambda: not list(kube.list(Job, namespace=namespace)), 30)


def test_a_generate_name_job_logs_follow_it(env, kube, namespace, tmp_path):
    code = "import time\nfor i in range(3):\n    print('tick', i, flush=True); time.sleep(1)"
    started = subprocess.Popen(
        ["python", "-m", "pypod", "--generate-name", "--runid", "ticker", "--detach", code],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        jobs = wait_for(lambda: list(kube.list(Job, namespace=namespace)), 60, interval=0.3)
        name = jobs[0].metadata.name
        assert name.startswith("ticker-") and len(name) == len("ticker-") + 5
        followed = run_cli(["logs", name, "-f"], env)
        assert followed.returncode == 0, followed.stderr
        assert "tick 2" in followed.stdout
        assert started.wait(60) == 0
    finally:
        started.kill()
        run_cli(["rm", "--all"], env)


def test_shm_is_a_memory_backed_dev_shm_of_that_size(env, tmp_path):
    code = "import os; s = os.statvfs('/dev/shm'); print('SHM', s.f_blocks * s.f_frsize)"
    result = run_cli(["--shm", "96Mi", "--memory", "256Mi", code], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"SHM {96 * 2**20}" in result.stdout


def eidf_profile_from_readme() -> str:
    """The README's eidf example, as documented."""
    block = re.search(r"```toml\n(# ~/.config/pypod/config.toml\n\[profiles\.eidf\].*?)```", README.read_text(), re.S)
    assert block, "the README documents an eidf profile"
    return block.group(1)


def test_the_readmes_eidf_profile_dry_run(env, tmp_path):
    home = Path(env["HOME"])
    (home / ".config/pypod").mkdir(parents=True)
    (home / ".config/pypod/config.toml").write_text(eidf_profile_from_readme())
    namespace = tomllib.loads(eidf_profile_from_readme())["profiles"]["eidf"]["namespace"]
    env = {k: v for k, v in env.items() if k != "KUBERNETES_NAMESPACE"}  # the profile's namespace applies
    result = run_cli(["run", "--profile", "eidf", "--dry-run", "train.py"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    import yaml

    job = yaml.safe_load(result.stdout)
    assert "name" not in job["metadata"] and job["metadata"]["generateName"].endswith("-")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == f"{namespace}-user-queue"
    pod = job["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["requests"] == resources["limits"]
    assert set(resources["limits"]) == {"cpu", "memory", "nvidia.com/gpu"}
    shm = next(v for v in pod["volumes"] if v["name"] == "pypod-shm")
    assert shm["emptyDir"]["medium"] == "Memory" and shm["emptyDir"]["sizeLimit"]
    assert {"name": "pypod-shm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]
    assert "nvidia.com/gpu.product" in pod["nodeSelector"]
    # Where each setting came from.
    assert "# profile = eidf (from ~/.config/pypod/config.toml, chosen by --profile)" in result.stdout
    assert "# queue = {namespace}-user-queue (profile eidf)" in result.stdout
    assert "# image = " in result.stdout and "($PYPOD_IMAGE)" in result.stdout


def test_an_unknown_profile_is_one_line_naming_those_there_are(env, tmp_path):
    home = Path(env["HOME"])
    (home / ".config/pypod").mkdir(parents=True)
    (home / ".config/pypod/config.toml").write_text(eidf_profile_from_readme())
    (tmp_path / "pyproject.toml").write_text("[project]\nname='p'\n[tool.pypod.profiles.small]\ncpu = '100m'\n")
    result = run_cli(["--profile", "edif", "print(1)"], env, cwd=tmp_path)
    assert result.returncode == 64
    assert result.stderr.strip() == (
        "pypod: unknown profile 'edif' (from --profile). profiles found: eidf (from ~/.config/pypod/config.toml); "
        "small (from pyproject.toml [tool.pypod.profiles])"
    )


def test_an_absent_gpu_product_fails_fast_listing_the_products_there_are(env, kube, namespace, tmp_path):
    products = {n.metadata.labels.get("nvidia.com/gpu.product") for n in kube.list(Node)} - {None}
    result = run_cli(["--gpu", "1", "--gpu-product", "Tesla-K80-absent", "print(1)"], env, cwd=tmp_path)
    assert result.returncode == 64, result.stderr
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "no node offers 1 nvidia.com/gpu of product Tesla-K80-absent" in line
    for product in products:
        assert product in line
    assert not list(kube.list(Job, namespace=namespace))  # nothing was created


def test_plan_shows_the_active_profile_and_where_each_setting_came_from(env, tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        "[project]\nname='p'\n[tool.pypod]\nmemory = '1Gi'\nprofile = 'small'\n"
        "[tool.pypod.profiles.small]\ncpu = '100m'\nqueue = '{namespace}-user-queue'\n"
    )
    result = run_cli(["plan"], dict(env, PYPOD_SHM="64Mi"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "settings:"
    assert "  profile = small (from pyproject.toml [tool.pypod.profiles], chosen by [tool.pypod] profile)" in lines
    assert "  cpu = 100m (profile small)" in lines
    assert "  memory = 1Gi ([tool.pypod])" in lines
    assert "  shm = 64Mi ($PYPOD_SHM)" in lines
