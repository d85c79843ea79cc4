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
    assert result.returncode == 0, result.stdout + result.stderr
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


GROUPED = """\
[project]
name = "lockme"
version = "0.1.0"
requires-python = ">=3.8"
dependencies = ["six==1.16.0"]

[dependency-groups]
test = ["iniconfig"]
dev = [{include-group = "test"}]
lint = ["tomli"]
docs = ["sphinx"]

[tool.uv]
default-groups = ["dev", "lint"]
"""


def found(*modules: str) -> str:
    """Lines of a main.py that print which of `modules` the image has."""
    return "import importlib.util as u\n" + "".join(
        f"print('{m} installed:', u.find_spec('{m}') is not None)\n" for m in modules
    )


def test_pyproject_and_uv_lock_projects_with_their_default_dependency_groups(env, tmp_path):
    # PEP 735 groups: uv's default groups (here dev, with its include-group, and lint) are
    # installed from a plain pyproject.toml as `uv sync` installs them from uv.lock.
    main = MAIN + found("iniconfig", "tomli", "sphinx")
    plain = project(tmp_path / "plain", **{"pyproject.toml": GROUPED, "main.py": main})
    result = run_cli(["run", "main.py"], env, cwd=plain, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[project] lists 1 dependencies and 2 dev dependencies" in result.stderr
    assert "six 1.16.0" in result.stdout
    assert "iniconfig installed: True\ntomli installed: True\nsphinx installed: False" in result.stdout

    locked = project(tmp_path / "locked", **{"pyproject.toml": GROUPED, "main.py": main})
    subprocess.run(["uv", "lock", "-q"], cwd=locked, check=True)
    result = run_cli(["run", "main.py"], env, cwd=locked, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "uv.lock pins the environment" in result.stderr
    assert "six 1.16.0" in result.stdout
    assert "iniconfig installed: True\ntomli installed: True\nsphinx installed: False" in result.stdout

    # A lock out of step with pyproject.toml is explained, not silently re-resolved.
    (locked / "pyproject.toml").write_text(GROUPED.replace("six==1.16.0", "six==1.17.0"))
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
    assert result.returncode == 0, result.stdout + result.stderr
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
    # Each builder's log shows the Python the project got: how pypod knows a base's Python
    # when the base's config does not say (Debian's python3 here).
    log = (Path(env["PYPOD_CACHE"]) / "build-logs" / f"{deps_tag}.log").read_text()
    assert re.search(r"^(#\d+ [\d.]+ )?pypod: project python 3\.11\.\d+$", log, re.MULTILINE), log[-2000:]
    assert "3.11." in (Path(env["PYPOD_CACHE"]) / "base-python.json").read_text()


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


def test_a_poetry_lock_installs_exactly_its_pins_with_its_dev_group(env, tmp_path):
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
    assert result.returncode == 0, result.stdout + result.stderr
    assert "poetry.lock pins the environment" in result.stderr
    assert "six 1.16.0" in result.stdout
    assert "dev installed: True" in result.stdout  # `poetry install` installs non-optional groups


def test_a_setup_py_project_gets_its_install_requires(env, tmp_path):
    setup = (
        "from setuptools import setup\n"
        "setup(name='olden', version='0.1', install_requires=['six==1.16.0'], extras_require={'x': ['attrs']})\n"
    )
    root = project(tmp_path / "olden", **{"setup.py": setup, "main.py": MAIN})
    result = run_cli(["run", "main.py"], env, cwd=root, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "setup.py describes the project" in result.stderr
    assert "six 1.16.0" in result.stdout


@pytest.mark.parametrize(
    "lockfile, text, reason",
    [
        ("pdm.lock", PDM_LOCK, "pdm.lock pins the environment"),
        ("Pipfile.lock", PIPFILE_LOCK, "Pipfile.lock pins the environment"),
    ],
)
def test_pdm_and_pipfile_locks_install_their_pins_dev_included_in_a_pod(env, tmp_path, lockfile, text, reason):  # type: ignore[no-untyped-def]
    main = MAIN + found("iniconfig" if lockfile == "pdm.lock" else "tomli")
    root = project(tmp_path / lockfile.split(".")[0].lower(), **{lockfile: text, "main.py": main})
    result = run_cli(["run", "main.py"], env, cwd=root, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert reason in result.stderr
    assert "six 1.16.0" in result.stdout
    assert "installed: True" in result.stdout  # the dev group (pdm) and develop (Pipfile.lock)


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
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Dockerfile" in result.stderr.split("dependencies:")[1].splitlines()[0]  # it won over requirements.txt
    assert "six 1.16.0" in result.stdout


# Where python, and which: the venv's (sys.prefix /opt/venv), also for `#!/usr/bin/env python`.
PYTHON_CHECK = """\
import os, shutil, subprocess, sys
print('python on PATH:', shutil.which('python'))
print('python prefix:', subprocess.run(['python', '-c', 'import sys; print(sys.prefix)'],
      capture_output=True, text=True).stdout.strip())
print('shebang script:', subprocess.run(['./tool.py'], capture_output=True, text=True).stdout.strip())
"""
TOOL = "#!/usr/bin/env python\nimport sys\nprint('tool ran by', sys.executable)\n"

SELF_PIPFILE = """\
[[source]]
url = "https://pypi.org/simple"
verify_ssl = true
name = "pypi"

[packages]
selfpkg = {path = ".", editable = true}
packaging = {version = ">=21", markers = "python_version >= '3.8'"}
iniconfig = {version = "*", sys_platform = "== 'linux'"}
attrs = "*"

[dev-packages]
tomli = "*"
"""


def test_a_pipfile_alone_installs_its_packages_dev_packages_and_the_project_itself(env, tmp_path):
    root = project(
        tmp_path / "selfpkg",
        **{
            "Pipfile": SELF_PIPFILE,
            # The Pipfile comes before these: were requirements.txt used, the build would fail.
            "requirements.txt": "pypod-no-such-package-anywhere==0\n",
            "pyproject.toml": '[project]\nname = "selfpkg"\nversion = "0.1.0"\ndependencies = ["six==1.16.0"]\n',
            "runtime.txt": "python-3.10\n",
            "tool.py": TOOL,
            "main.py": MAIN
            + found("packaging", "iniconfig", "attrs", "tomli")
            + "import selfpkg; print('selfpkg from', selfpkg.WHERE)\n"
            + PYTHON_CHECK,
        },
    )
    (root / "tool.py").chmod(0o755)
    (root / "src" / "selfpkg").mkdir(parents=True)
    (root / "src" / "selfpkg" / "__init__.py").write_text("WHERE = __file__\n")
    result = run_cli(["run", "main.py"], env, cwd=root, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Pipfile lists 3 packages and 1 dev packages, and the project itself from its pyproject" in result.stderr
    assert "six 1.16.0" in result.stdout  # the project's own dependency
    for module in ("packaging", "iniconfig", "attrs", "tomli"):
        assert f"{module} installed: True" in result.stdout
    # The project is importable from any folder, from its src layout in /workspace (editable).
    assert "selfpkg from /workspace/src/selfpkg/__init__.py" in result.stdout
    assert "python on PATH: /opt/venv/bin/python\npython prefix: /opt/venv" in result.stdout
    assert "shebang script: tool ran by /opt/venv/bin/python" in result.stdout
    # runtime.txt asks for 3.10; the harness's base is Debian's 3.11: one line says so.
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1, result.stderr
    assert re.match(
        r"warning: runtime\.txt asks for Python 3\.10, but the base image \S+ has Python 3\.11\.\d+; .*"
        r"Pass --base-image with Python 3\.10",
        warning[0],
    ), warning
    deps_tag = result.stderr.split("dependencies: built and pushed ")[1].split()[0]

    plan = run_cli(["plan"], env, cwd=root)
    assert plan.returncode == 0, plan.stderr
    assert re.search(
        r"python: +3\.10 \(asked by runtime\.txt\); the base image has 3\.11\.\d+\n +warning:", plan.stdout
    )

    no_dev = run_cli(["run", "--no-dev", "main.py"], env, cwd=root, timeout=600)
    assert no_dev.returncode == 0, no_dev.stderr
    assert "tomli installed: False" in no_dev.stdout and "attrs installed: True" in no_dev.stdout
    assert "dependencies: built and pushed " in no_dev.stderr and deps_tag not in no_dev.stderr
    assert "warning: runtime.txt asks for Python 3.10" in no_dev.stderr  # known before this build


def test_binder_pipfile_alone_is_the_environment(env, tmp_path):
    root = project(
        tmp_path / "binderpipfile",
        **{
            "binder/Pipfile": '[packages]\nattrs = "*"\n',
            "main.py": "import attrs\nprint('attrs', attrs.__version__)\n",
        },
    )
    result = run_cli(["run", "main.py"], env, cwd=root, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "binder/Pipfile lists 1 packages and 0 dev packages (no Pipfile.lock)" in result.stderr
    assert "attrs " in result.stdout


def test_apt_txt_comments_are_comments_and_python_is_the_base_python3(env, tmp_path):
    apt = "# tools the notebooks shell out to\n\ntree   # shows folders\n#   not-a-package\n\n"
    root = project(
        tmp_path / "apt",
        **{
            "apt.txt": apt,
            "tool.py": TOOL,
            "main.py": "import shutil\nprint('tree at', shutil.which('tree'))\n" + PYTHON_CHECK,
        },
    )
    (root / "tool.py").chmod(0o755)
    result = run_cli(["run", "main.py"], env, cwd=root, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tree at /usr/bin/tree" in result.stdout
    # No venv here: `python` is a link to the base's python3.
    assert "python on PATH: /usr/local/bin/python\npython prefix: /usr" in result.stdout
    assert "shebang script: tool ran by /usr/local/bin/python" in result.stdout


def test_a_projects_own_dockerfile_gets_its_build_args_and_never_secrets(env, cluster, tmp_path):  # type: ignore[no-untyped-def]
    dockerfile = (
        "ARG BASE\n"
        "FROM ${BASE}\n"
        "ARG SIX_VERSION\n"
        "RUN --mount=type=secret,id=ca if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; "
        "python3 -m venv /opt/own && /opt/own/bin/pip install -q six==$SIX_VERSION\n"
        "ENV PATH=/opt/own/bin:$PATH\n"
    )
    root = project(tmp_path / "args", **{"Dockerfile": dockerfile, "main.py": MAIN})
    # The base comes from the harness's plain-HTTP registry, named only by the argument.
    args = ["--build-arg", f"BASE={cluster.base_image}", "--build-arg", "SIX_VERSION=1.16.0"]
    result = run_cli(["run", *args, "main.py"], env, cwd=root, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "six 1.16.0" in result.stdout
    # The arguments are part of the key: another value builds another image.
    args[-1] = "SIX_VERSION=1.17.0"
    again = run_cli(["run", *args, "main.py"], env, cwd=root, timeout=900)
    assert again.returncode == 0, again.stderr
    assert "six 1.17.0" in again.stdout
    assert "dependencies: built and pushed" in again.stderr

    secret = "https://builder:hunter2@pkgs.example/simple"
    for refused in (["--build-arg", f"PIP_INDEX_URL={secret}"], ["--build-arg", f"MIRROR={secret}"]):
        refusal = run_cli(["run", *refused, "main.py"], env, cwd=root)
        assert refusal.returncode == 64, refusal.stderr
        assert "is refused" in refusal.stderr and "id=pypod_env" in refusal.stderr
        assert "hunter2" not in refusal.stderr + refusal.stdout
        assert len(refusal.stderr.strip().splitlines()) == 1


def test_a_base_whose_config_names_its_python_is_checked_before_any_build(env, cluster, tmp_path):  # type: ignore[no-untyped-def]
    # As the official python images do: ENV PYTHON_VERSION in the config.
    base = f"{cluster.registry}/pyver-{uuid.uuid4().hex[:8]}:1"
    context = project(tmp_path / "base", Containerfile=f"FROM {cluster.base_image}\nENV PYTHON_VERSION=3.9.18\n")
    podman = podman_env(Layout.default())
    for command in (
        ["podman", "build", "--tls-verify=false", "-t", base, str(context)],
        ["podman", "push", "--tls-verify=false", base],
    ):
        subprocess.run(command, env=podman, check=True, capture_output=True)
    root = project(tmp_path / "wants312", **{"requirements.txt": "six\n", "runtime.txt": "python-3.12\n"})
    plan = run_cli(["plan", "--base-image", base], env, cwd=root)
    assert plan.returncode == 0, plan.stderr
    assert "python:       3.12 (asked by runtime.txt); the base image has 3.9.18\n" in plan.stdout
    assert f"warning: runtime.txt asks for Python 3.12, but the base image {base} has Python 3.9.18" in plan.stdout
    assert not (Path(env["PYPOD_CACHE"]) / "build-logs").exists()  # nothing was built
