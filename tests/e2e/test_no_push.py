"""`--no-push`: the image built into podman's own store, nothing sent to the registry."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from harness.cluster import ClusterInfo
from harness.images import podman_env
from harness.layout import Layout
from pypod.image.deps import ensure_dependency_image
from pypod.image.local import build_local_image
from pypod.image.registry import ImageRef, Registry
from pypod.image.ship import target_repository
from pypod.project import load_project

pytestmark = pytest.mark.cluster


def podman_run(image: str, code: str) -> subprocess.CompletedProcess[str]:
    argv = ["podman", "run", "--rm", "--network=none", image, "python", "-c", code]
    return subprocess.run(argv, capture_output=True, text=True, env=podman_env(Layout.default()), timeout=120)


# buildah and podman share one image store (containers/storage), so podman runs either's.
@pytest.mark.parametrize("builder", ["podman", "buildah"])
def test_no_push_builds_into_the_local_store_and_pushes_nothing(builder, cluster: ClusterInfo, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CONTAINERS_CONF", cluster.containers_conf)
    monkeypatch.setenv("PYPOD_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "localonly"
    (root / "app").mkdir(parents=True)
    (root / "requirements.txt").write_text("six==1.16.0\n")
    (root / "app" / "__init__.py").write_text("")
    (root / "app" / "main.py").write_text("import six\nprint('six', six.__version__, 'v1')\n")
    repo = f"{cluster.registry}/nopush-{uuid.uuid4().hex[:8]}"

    def build():  # type: ignore[no-untyped-def]
        project = load_project(root)
        deps = ensure_dependency_image(project, cluster.base_image, target_repository(repo), builder, push=False)
        return deps, build_local_image(project, deps, repo, builder)

    deps, image = build()
    assert deps.built and deps.local and image.built and deps.builder == builder
    ran = podman_run(image.reference, "import app.main, pypod; print('pypod', bool(pypod.__file__))")
    assert ran.returncode == 0, ran.stderr
    assert "six 1.16.0 v1" in ran.stdout and "pypod True" in ran.stdout
    registry = Registry(cluster.registry)
    for reference in (image.reference, deps.reference):
        assert registry.manifest_digest(ImageRef.parse(reference)) is None  # nothing was pushed

    deps_again, image_again = build()
    assert not deps_again.built and not image_again.built and image_again.reference == image.reference
    (root / "app" / "main.py").write_text("import six\nprint('six', six.__version__, 'v2')\n")
    deps_edit, image_edit = build()
    assert not deps_edit.built and image_edit.built and image_edit.reference != image.reference
    assert "v2" in podman_run(image_edit.reference, "import app.main").stdout


def test_no_push_with_docker_and_no_engine_is_one_clear_line(cluster: ClusterInfo, pypod_env, tmp_path):  # type: ignore[no-untyped-def]
    """buildx can build here (through the harness's buildkitd) but has no engine to load into."""
    from tests.pypodcli import run_cli

    assert cluster.docker_config, "the harness made no buildx builder: install the docker CLI (.ci/run does)"
    root = tmp_path / "engineless"
    root.mkdir()
    (root / "requirements.txt").write_text("six==1.16.0\n")
    env = dict(pypod_env, DOCKER_CONFIG=cluster.docker_config)
    result = run_cli(["--no-push", "--builder", "docker", "print(1)"], env, cwd=root, timeout=120)
    assert result.returncode == 76, result.stderr
    assert result.stderr.strip() == (
        "pypod: --no-push with docker needs a running Docker engine to load the image into. "
        "start the engine, use --builder podman or buildah, or push to a registry (drop --no-push)"
    )
