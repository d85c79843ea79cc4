"""Dependency images built with podman, pushed to the harness's registry, run on its node."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from harness.images import podman_env
from harness.layout import Layout
from tests.pypodcli import run_cli
from tests.unit.test_image_deps import PDM_LOCK, PIPFILE_LOCK

pytestmark = pytest.mark.cluster


@pytest.fixture
def env(pypod_env: dict[str, str]) -> dict[str, str]:
    return pypod_env


def project(root: Path, **files: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name.replace("__", "/")).parent.mkdir(parents=True, exist_ok=True)
        (root / name.replace("__", "/")).write_text(text)
    return root


MAIN = "import six\nprint('six', six.__version__)\n"


def test_requirements_project_runs_in_a_pod_and_under_podman(env, tmp_path):
    root = project(tmp_path / "req", **{"requirements.txt": "six==1.16.0\n", "main.py": MAIN})
    result = run_cli(["run", "main.py"], env, cwd=root, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "six 1.16.0" in result.stdout
    assert "dependencies: built and pushed deps-" in result.stderr
    deps_tag = result.stderr.split("dependencies: built and pushed ")[1].split()[0]
    image = f"{env['IMAGE_REPO']}:{deps_tag}"
    podman = subprocess.run(
        [
            "podman",
            "run",
            "--rm",
            "--tls-verify=false",
            "--network=none",
            image,
            "python",
            "-c",
            "import six; print('podman', six.__version__)",
        ],
        capture_output=True,
        text=True,
        env=podman_env(Layout.default()),
    )
    assert podman.returncode == 0, podman.stderr
    assert "podman 1.16.0" in podman.stdout

    # A source edit reuses the dependency image; a dependency edit rebuilds it.
    (root / "main.py").write_text(MAIN + "print('edited')\n")
    again = run_cli(["run", "main.py"], env, cwd=root, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"dependencies: reused {deps_tag}" in again.stderr
    assert "edited" in again.stdout
    (root / "requirements.txt").write_text("six==1.17.0\n")
    rebuilt = run_cli(["run", "main.py"], env, cwd=root, timeout=600)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "six 1.17.0" in rebuilt.stdout
    assert "dependencies: built and pushed" in rebuilt.stderr


def test_pyproject_and_uv_lock_projects(env, tmp_path):
    pyproject = (
        '[project]\nname = "lockme"\nversion = "0.1.0"\nrequires-python = ">=3.8"\ndependencies = ["six==1.16.0"]\n'
    )
    plain = project(tmp_path / "plain", **{"pyproject.toml": pyproject, "main.py": MAIN})
    result = run_cli(["run", "main.py"], env, cwd=plain, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "[project] lists 1 dependencies" in result.stderr
    assert "six 1.16.0" in result.stdout

    locked = project(tmp_path / "locked", **{"pyproject.toml": pyproject, "main.py": MAIN})
    subprocess.run(["uv", "lock", "-q"], cwd=locked, check=True)
    result = run_cli(["run", "main.py"], env, cwd=locked, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "uv.lock pins the environment" in result.stderr
    assert "six 1.16.0" in result.stdout

    # A lock out of step with pyproject.toml is explained, not silently re-resolved.
    (locked / "pyproject.toml").write_text(pyproject.replace("six==1.16.0", "six==1.17.0"))
    stale = run_cli(["run", "main.py"], env, cwd=locked, timeout=600)
    assert stale.returncode == 76, stale.stderr
    assert "uv lock" in stale.stderr
    assert "Traceback" not in stale.stderr


def with_builder(env: dict[str, str], cluster, builder: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The environment in which `--builder NAME` finds that builder. docker buildx uses
    the harness's buildkitd through its remote driver (no Docker engine runs here)."""
    if builder != "docker":
        return env
    assert cluster.docker_config, "the harness made no buildx builder: install the docker CLI (.ci/run does)"
    return dict(env, DOCKER_CONFIG=cluster.docker_config)


@pytest.mark.parametrize("builder", ["podman", "buildah", "docker"])
def test_each_builder_builds_with_a_secret_that_never_lands_in_the_image(builder, env, cluster, tmp_path):  # type: ignore[no-untyped-def]
    env = with_builder(env, cluster, builder)
    token = f"ghp_pypodtest{uuid.uuid4().hex}"
    token_file = tmp_path / "token"
    token_file.write_text(token)
    root = project(
        tmp_path / "secret",
        **{
            "requirements.txt": "six==1.16.0\n",
            "main.py": MAIN,
            # postBuild proves the secret was there during the build, without printing it.
            "postBuild": '#!/bin/sh\nset -e\ntest -n "$GIT_CONFIG_KEY_0"\necho secret-was-available > /opt/proof\n',
        },
    )
    (root / "postBuild").chmod(0o755)
    argv = ["run", "--builder", builder, "main.py"]
    result = run_cli(argv, dict(env, GITHUB_TOKEN_FILE=str(token_file)), cwd=root, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "six 1.16.0" in result.stdout  # the driver pod ran the project on the built image
    assert f"with {builder} (" in result.stderr
    assert token not in result.stdout + result.stderr
    deps_tag = result.stderr.split("dependencies: built and pushed ")[1].split()[0]
    copied = tmp_path / "copied"
    # --all: every manifest under the tag too (buildx adds a provenance attestation).
    source = f"docker://{env['IMAGE_REPO']}:{deps_tag}"
    subprocess.run(
        ["skopeo", "copy", "--all", "--src-tls-verify=false", source, f"dir:{copied}"],
        check=True,
        capture_output=True,
    )
    found_proof = False
    files = list(copied.iterdir()) + list((Path(env["PYPOD_CACHE"]) / "build-logs").iterdir())
    assert len(files) >= 4
    for path in files:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        assert token.encode() not in data, f"the token is in {path.name}"
        found_proof |= b"secret-was-available" in data
    assert found_proof


def test_buildx_reuses_its_registry_cache_when_its_own_cache_is_gone(env, cluster, tmp_path):  # type: ignore[no-untyped-def]
    env = with_builder(env, cluster, "docker")
    root = project(tmp_path / "cached", **{"requirements.txt": "six==1.16.0\n", "main.py": MAIN})
    first = run_cli(["run", "--builder", "docker", "main.py"], env, cwd=root, timeout=600)
    assert first.returncode == 0, first.stderr
    # An empty builder, as on a fresh CI machine: only the registry still has the layers.
    subprocess.run(["docker", "buildx", "prune", "--all", "--force"], env=env, check=True, capture_output=True)
    (root / "requirements.txt").write_text("six==1.16.0\nidna==3.10\n")
    second = run_cli(["run", "--builder", "docker", "main.py"], env, cwd=root, timeout=600)
    assert second.returncode == 0, second.stderr
    assert "six 1.16.0" in second.stdout
    deps_tag = second.stderr.split("dependencies: built and pushed ")[1].split()[0]
    log = (Path(env["PYPOD_CACHE"]) / "build-logs" / f"{deps_tag}.log").read_text()
    # buildkit logs a step taken from a cache import as its layers being extracted;
    # a step it runs shows no extraction.
    venv_step = re.search(r"^#(\d+) \[.*python3 -m venv", log, re.MULTILINE)
    install_step = re.search(r"^#(\d+) \[.*uv pip install", log, re.MULTILINE)
    assert venv_step and install_step, log[-2000:]
    assert f"#{venv_step.group(1)} extracting sha256:" in log, log[-3000:]
    assert f"#{install_step.group(1)} extracting sha256:" not in log  # the changed step ran


def test_a_failing_postbuild_and_a_missing_builder_are_explained(env, tmp_path):
    root = project(tmp_path / "broken", **{"requirements.txt": "six\n", "postBuild": "#!/bin/sh\nexit 3\n"})
    (root / "postBuild").chmod(0o755)
    result = run_cli(["print(1)"], env, cwd=root, timeout=600)
    assert result.returncode == 76, result.stderr
    assert "postBuild" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    missing = run_cli(["--builder", "docker", "print(1)"], env, cwd=root)
    assert missing.returncode == 76, missing.stderr
    assert "no image builder found (docker)" in missing.stderr


def test_jupyter_runs_in_the_pod_behind_a_forward_and_its_token_stays_private(env, kube, namespace, tmp_path):
    import time
    import urllib.request

    from lightkube.resources.batch_v1 import Job
    from lightkube.resources.core_v1 import Pod

    from tests.kubehelp import wait_for
    from tests.pypodcli import Terminal

    root = project(tmp_path / "notebooks", **{"requirements.txt": "jupyterlab\n", "analysis.py": "x = 1\n"})
    term = Terminal(["jupyter", "--runid", "lab"], env, cwd=root)
    term.expect("JupyterLab: http://127.0.0.1:", 900)
    term.expect("\n", 10)
    url = re.search(r"JupyterLab: (http://127\.0\.0\.1:\d+)/lab\?token=([0-9a-f]+)", term.text())
    assert url, term.text()[-2000:]
    base, token = url.group(1), url.group(2)

    def status() -> int | None:
        try:
            with urllib.request.urlopen(f"{base}/api/contents?token={token}", timeout=3) as response:
                return response.status if b"analysis.py" in response.read() else None
        except OSError:
            return None

    assert wait_for(status, 180, interval=1) == 200
    # The token is in no manifest and no pod log.
    job = kube.get(Job, "lab", namespace=namespace)
    assert token not in json.dumps(job.to_dict())
    pod = next(iter(kube.list(Pod, namespace=namespace, labels={"pypod.dev/run": "lab"})))
    assert token not in json.dumps(pod.to_dict())
    assert token not in "".join(kube.log(pod.metadata.name, namespace=namespace))
    term.send("\x03")
    time.sleep(0.5)
    term.send("\x03")  # twice: JupyterLab shuts down without asking
    assert term.wait(60) == 0


POETRY_PROJECT = """\
[project]
name = "poetic"
version = "0.1.0"
dependencies = ["six"]

[tool.poetry.group.dev.dependencies]
pytest = "*"
"""

POETRY_LOCK = """\
# This file is automatically @generated by Poetry 2.1 and should not be changed by hand.

[[package]]
name = "six"
version = "1.16.0"
description = "Python 2 and 3 compatibility utilities"
optional = false
python-versions = ">=2.7, !=3.0.*, !=3.1.*, !=3.2.*"
groups = ["main"]
files = []

[[package]]
name = "iniconfig"
version = "2.0.0"
description = "brain-dead simple config-ini parsing"
optional = false
python-versions = ">=3.7"
groups = ["dev"]
files = []

[metadata]
lock-version = "2.1"
python-versions = ">=3.8"
content-hash = "0"
"""


def test_a_poetry_lock_installs_exactly_its_runtime_pins(env, tmp_path):
    root = project(
        tmp_path / "poetic",
        **{
            "pyproject.toml": POETRY_PROJECT,
            "poetry.lock": POETRY_LOCK,
            "main.py": MAIN + "import importlib.util as u\n"
            "print('dev installed:', u.find_spec('iniconfig') is not None)\n",
        },
    )
    result = run_cli(["run", "main.py"], env, cwd=root, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "poetry.lock pins the environment" in result.stderr
    assert "six 1.16.0" in result.stdout
    assert "dev installed: False" in result.stdout


def test_a_setup_py_project_gets_its_install_requires(env, tmp_path):
    setup = (
        "from setuptools import setup\n"
        "setup(name='olden', version='0.1', install_requires=['six==1.16.0'], extras_require={'x': ['attrs']})\n"
    )
    root = project(tmp_path / "olden", **{"setup.py": setup, "main.py": MAIN})
    result = run_cli(["run", "main.py"], env, cwd=root, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "setup.py describes the project" in result.stderr
    assert "six 1.16.0" in result.stdout


@pytest.mark.parametrize(
    "lockfile, text, reason",
    [
        ("pdm.lock", PDM_LOCK, "pdm.lock pins the environment"),
        ("Pipfile.lock", PIPFILE_LOCK, "Pipfile.lock pins the environment"),
    ],
)
def test_pdm_and_pipfile_locks_install_their_runtime_pins_in_a_pod(env, tmp_path, lockfile, text, reason):  # type: ignore[no-untyped-def]
    root = project(tmp_path / lockfile.split(".")[0].lower(), **{lockfile: text, "main.py": MAIN})
    result = run_cli(["run", "main.py"], env, cwd=root, timeout=600)
    assert result.returncode == 0, result.stderr
    assert reason in result.stderr
    assert "six 1.16.0" in result.stdout


def test_a_projects_own_dockerfile_is_built_as_given_and_runs_in_a_pod(env, cluster, tmp_path):  # type: ignore[no-untyped-def]
    dockerfile = (
        f"FROM {cluster.base_image}\n"
        # pypod hands every build the machine's CA bundle as the `ca` secret (a TLS proxy here).
        "RUN --mount=type=secret,id=ca if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; "
        "python3 -m venv /opt/own && /opt/own/bin/pip install -q six==1.16.0\n"
        "ENV PATH=/opt/own/bin:$PATH\n"
    )
    root = project(tmp_path / "own", **{"Dockerfile": dockerfile, "requirements.txt": "attrs\n", "main.py": MAIN})
    result = run_cli(["run", "main.py"], env, cwd=root, timeout=900)
    assert result.returncode == 0, result.stderr
    assert "Dockerfile" in result.stderr.split("dependencies:")[1].splitlines()[0]  # it won over requirements.txt
    assert "six 1.16.0" in result.stdout
