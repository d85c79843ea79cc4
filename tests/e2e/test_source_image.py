"""The source layer against the harness's real registry, skopeo, and the real node."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from harness.cluster import ClusterInfo
from pypod.image.ship import ship_source_image
from pypod.project import load_project
from tests.pypodcli import run_cli

pytestmark = pytest.mark.cluster


def project(root: Path, name: str = "shipme") -> Path:
    root = root / name
    (root / "app").mkdir(parents=True)
    (root / "pyproject.toml").write_text(f"[project]\nname = '{name}'\n")
    (root / "app" / "__init__.py").write_text("")
    (root / "app" / "main.py").write_text("print('answer', 6 * 7)\n")
    (root / "notes.txt").write_text("x" * 5000)
    return root


@pytest.fixture
def repo(cluster: ClusterInfo, request) -> str:  # type: ignore[no-untyped-def]
    # The registry's storage outlives harness restarts: a fresh repository per test run.
    return f"{cluster.registry}/e2e-{request.node.name.replace('_', '-')[:30]}-{uuid.uuid4().hex[:8]}"


def test_unchanged_project_pushes_nothing_and_a_source_edit_pushes_one_layer(cluster, repo, tmp_path):
    root = project(tmp_path)
    first = ship_source_image(load_project(root), cluster.base_image, repo)
    assert not first.reused
    assert first.pushed_blobs == 2  # the source layer and the config; base layers are mounted
    again = ship_source_image(load_project(root), cluster.base_image, repo)
    assert again.reused and again.pushed_bytes == 0
    assert again.reference == first.reference
    (root / "app" / "main.py").write_text("print('answer', 43)\n")
    edited = ship_source_image(load_project(root), cluster.base_image, repo)
    assert not edited.reused
    assert edited.pushed_blobs == 2
    assert edited.pushed_bytes < 10_000  # a few kB of source, no dependency layers
    assert edited.tag != first.tag


def test_same_project_gives_same_tag_and_layer_digest(cluster, repo, tmp_path):
    a = project(tmp_path / "a")
    b = project(tmp_path / "b")
    shutil.copystat(a / "app" / "main.py", b / "app" / "main.py")
    first = ship_source_image(load_project(a), cluster.base_image, repo)
    # Another checkout of the same content: same tag, so the registry already has it.
    second = ship_source_image(load_project(b), cluster.base_image, repo)
    assert second.tag == first.tag
    assert second.reused
    assert first.layer_digest.startswith("sha256:")


def test_other_tools_agree_with_the_pushed_image(cluster, repo, tmp_path):
    root = project(tmp_path)
    (root / ".git").mkdir()  # not a real repository: must never be shipped
    (root / ".git" / "config").write_text("[core]\n")
    shipped = ship_source_image(load_project(root), cluster.base_image, repo)
    inspect = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{shipped.reference}"],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(inspect.stdout)
    base = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", f"docker://{cluster.base_image}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert len(info["Layers"]) == len(base["Layers"]) + 1
    config = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--config", "--tls-verify=false", f"docker://{shipped.reference}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert config["config"]["WorkingDir"] == "/workspace"
    copied = tmp_path / "copied"
    subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", f"docker://{shipped.reference}", f"dir:{copied}"],
        capture_output=True,
        check=True,
    )
    layer_file = copied / info["Layers"][-1].split(":")[1]
    with tarfile.open(layer_file) as tar:
        names = tar.getnames()
    assert "workspace/app/main.py" in names
    assert not any(".git" in n for n in names)


def test_pypod_run_without_image_runs_the_projects_code_in_a_pod(pypod_env, tmp_path):
    root = project(tmp_path)
    env = pypod_env
    result = run_cli(["run", "-m", "app.main"], env, cwd=root)
    assert result.returncode == 0, result.stderr
    assert "answer 42" in result.stdout
    assert "image shipme_" in result.stderr


def test_an_image_for_another_platform_is_refused_in_one_line(pypod_env, tmp_path):
    """The harness's base image is linux/amd64 only: an arm64 cluster could not run it."""
    root = project(tmp_path, "armed")
    result = run_cli(["run", "--platform", "linux/arm64", "-m", "app.main"], pypod_env, cwd=root)
    assert result.returncode == 75, result.stderr
    [line] = [text for text in result.stderr.splitlines() if text.startswith("pypod:")]
    assert result.stderr.strip().endswith(line)  # the error is the last line, and the only one
    assert "is built for linux/amd64, not linux/arm64" in line
    assert "--platform linux/amd64 if the cluster's nodes are linux/amd64" in line
    assert "Traceback" not in result.stderr


def test_a_delta_layer_edits_and_deletes_files_in_the_pod(cluster, pypod_env, tmp_path):
    root = project(tmp_path, "deltas")
    (root / "gone.py").write_text("print('should be deleted')\n")
    repo = f"{cluster.registry}/e2e-delta-{uuid.uuid4().hex[:8]}"
    first = ship_source_image(load_project(root), cluster.base_image, repo)
    assert not first.delta
    (root / "gone.py").unlink()
    (root / "app" / "main.py").write_text("print('answer', 'edited')\n")
    second = ship_source_image(load_project(root), cluster.base_image, repo)
    assert second.delta and second.layer_files == 2  # one edit, one whiteout
    assert second.pushed_bytes < 2_000
    env = pypod_env
    code = "import os, runpy; print(sorted(os.listdir('.'))); runpy.run_module('app.main', run_name='__main__')"
    result = run_cli(["--image", second.reference, code], env, cwd=root)
    assert result.returncode == 0, result.stderr
    assert "'gone.py'" not in result.stdout
    assert "answer edited" in result.stdout
