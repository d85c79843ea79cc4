"""Environment detection and the generated dependency build (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pypod.errors import ProjectError
from pypod.image.builders import secret_env_text
from pypod.image.detect import detect
from pypod.image.dockerfile import render


def touch(root: Path, *names: str, text: str = "") -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize(
    "files, kind",
    [
        (["Dockerfile", "uv.lock", "requirements.txt"], "dockerfile"),
        (["uv.lock", "pyproject.toml", "environment.yml"], "uv"),
        (["environment.yml", "poetry.lock", "requirements.txt"], "conda"),
        (["poetry.lock", "pyproject.toml", "requirements.txt"], "poetry"),
        (["pdm.lock", "requirements.txt"], "pdm"),
        (["Pipfile.lock", "requirements.txt"], "pipenv"),
        (["Pipfile.lock", "Pipfile", "requirements.txt"], "pipenv"),
        (["poetry.lock", "Pipfile"], "poetry"),
        (["environment.yml", "Pipfile"], "conda"),
        (["Pipfile", "requirements.txt", "setup.py", "pyproject.toml"], "pipfile"),
        (["requirements-dev.txt", "requirements.txt", "setup.py"], "requirements"),
        (["setup.py"], "setup.py"),
        ([], "none"),
    ],
)
def test_first_match_wins(tmp_path: Path, files: list[str], kind: str):
    touch(tmp_path, *files)
    assert detect(tmp_path).kind == kind


def test_pyproject_dependencies_are_read(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = ["six", "attrs>=23"]\nrequires-python = ">=3.10"\n'
    )
    spec = detect(tmp_path)
    assert (spec.kind, spec.dependencies, spec.python_version) == ("pyproject", ("six", "attrs>=23"), ">=3.10")


def test_binder_folder_takes_precedence_and_brings_apt_and_postbuild(tmp_path: Path):
    touch(tmp_path, "requirements.txt", "binder/environment.yml", "binder/apt.txt", "binder/postBuild")
    touch(tmp_path, "binder/runtime.txt", text="python-3.11\n")
    spec = detect(tmp_path)
    assert spec.kind == "conda" and spec.folder == "binder"
    assert spec.files == ("binder/environment.yml", "binder/apt.txt", "binder/postBuild")
    assert spec.python_version == "3.11"


def test_render_sees_only_environment_files_and_keys_on_them(tmp_path: Path):
    touch(tmp_path, "requirements.txt", text="six\n")
    touch(tmp_path, "apt.txt", text="git\n")
    spec = detect(tmp_path)
    files = {"requirements.txt": b"six\n", "apt.txt": b"git\n"}
    build = render(spec, "reg/base@sha256:1", files)
    assert set(build.context_files) == {"requirements.txt", "apt.txt"}
    assert "COPY requirements.txt" in build.containerfile
    assert "apt-get install" in build.containerfile
    assert "--mount=type=secret,id=pypod_env" in build.containerfile
    assert render(spec, "reg/base@sha256:1", files).key == build.key
    assert render(spec, "reg/base@sha256:2", files).key != build.key
    assert render(spec, "reg/base@sha256:1", {**files, "requirements.txt": b"six==1\n"}).key != build.key


def test_pyproject_key_ignores_everything_but_the_dependency_list(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\ndependencies = ["six"]\n')
    first = render(detect(tmp_path), "b@sha256:1", {"pyproject.toml": b""})
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "2"\ndependencies = ["six"]\n')
    assert render(detect(tmp_path), "b@sha256:1", {"pyproject.toml": b""}).key == first.key


POETRY_LOCK = """
[[package]]
name = "six"
version = "1.16.0"
groups = ["main"]
markers = 'python_version >= "3.8"'

[[package]]
name = "pytest"
version = "8.0.0"
groups = ["dev"]

[[package]]
name = "attrs"
version = "23.1.0"
category = "main"
"""

PDM_LOCK = """
[[package]]
name = "six"
version = "1.16.0"
groups = ["default"]

[[package]]
name = "iniconfig"
version = "2.0.0"
groups = ["dev"]
"""

PIPFILE_LOCK = (
    '{"default": {"six": {"version": "==1.16.0", "markers": "python_version >= \'3.8\'"}}, '
    '"develop": {"tomli": {"version": "==2.0.1"}, "six": {"version": "==1.16.0"}}}'
)


@pytest.mark.parametrize(
    "kind, name, text, runtime, dev",
    [
        (
            "poetry",
            "poetry.lock",
            POETRY_LOCK,
            'attrs==23.1.0\nsix==1.16.0 ; python_version >= "3.8"\n',
            "pytest==8.0.0",
        ),
        ("pdm", "pdm.lock", PDM_LOCK, "six==1.16.0\n", "iniconfig==2.0.0"),
        ("pipenv", "Pipfile.lock", PIPFILE_LOCK, "six==1.16.0 ; python_version >= '3.8'\n", "tomli==2.0.1"),
    ],
)
def test_lockfiles_become_exact_pins_dev_groups_included_unless_no_dev(
    tmp_path: Path, kind: str, name: str, text: str, runtime: str, dev: str
):
    touch(tmp_path, name, text=text)
    spec = detect(tmp_path)
    assert spec.kind == kind
    build = render(spec, "b@sha256:1", {name: text.encode()})
    assert sorted(build.context_files["requirements.txt"].decode().splitlines()) == sorted([*runtime.splitlines(), dev])
    assert "uv pip install" in build.containerfile
    without = render(spec, "b@sha256:1", {name: text.encode()}, include_dev=False)
    assert without.context_files["requirements.txt"].decode() == runtime
    assert without.key != build.key  # the dependency key covers the choice


def test_lockfile_sources_pypod_cannot_translate_are_named():
    from pypod.image.locks import lock_requirements

    git_dep = '[[package]]\nname = "mine"\nversion = "1"\ngroups = ["main"]\n[package.source]\ntype = "git"\n'
    with pytest.raises(ProjectError, match="mine from a git source"):
        lock_requirements("poetry", git_dep)


def test_a_conda_environment_is_created_by_micromamba_at_the_venv_path(tmp_path: Path):
    touch(tmp_path, "environment.yml", "apt.txt")
    environment = b"dependencies:\n  - python=3.11\n  - numpy\n"
    build = render(detect(tmp_path), "b@sha256:1", {"environment.yml": environment, "apt.txt": b"git\n"})
    text = build.containerfile
    assert "COPY --from=docker.io/mambaorg/micromamba:" in text and "/bin/micromamba /usr/local/bin/micromamba" in text
    assert "micromamba create -y -p /opt/venv -f /tmp/pypod-env/environment.yml" in text
    assert "compileall" in text and "--mount=type=cache,target=/opt/conda/pkgs" in text
    assert "python3 -m venv" not in text  # the conda environment is the environment
    assert build.context_files["environment.yml"] == environment
    assert text.index("apt-get install") < text.index("micromamba create")
    changed = {"environment.yml": environment + b"  - scipy\n", "apt.txt": b"git\n"}
    other = render(detect(tmp_path), "b@sha256:1", changed)
    assert other.key != build.key


def test_secret_env_carries_index_urls_and_token_but_only_as_exports(tmp_path: Path):
    token = tmp_path / "token"
    token.write_text("ghp_secret123\n")
    text = secret_env_text({"PIP_INDEX_URL": "https://u:p@idx/simple", "GITHUB_TOKEN_FILE": str(token)})
    assert "export UV_INDEX_URL=https://u:p@idx/simple" in text
    assert "x-access-token:ghp_secret123@github.com" in text


def test_setup_py_dependencies_are_read_by_egg_info_in_the_build(tmp_path: Path):
    touch(tmp_path, "setup.py", text="from setuptools import setup\nsetup(install_requires=['six'])\n")
    touch(tmp_path, "setup.cfg", text="[metadata]\nname = x\n")
    spec = detect(tmp_path)
    assert spec.files == ("setup.py", "setup.cfg")
    build = render(spec, "b@sha256:1", {"setup.py": b"a", "setup.cfg": b"b"})
    assert set(build.context_files) == {"setup.py", "setup.cfg", "pypod-requires.py"}
    assert "egg_info" in build.containerfile


def test_base_registries_name_where_a_build_pulls_from():
    from pypod.image.builders import base_registries

    text = (
        "FROM --platform=linux/amd64 127.0.0.1:5000/p/python:3 AS deps\n"
        "COPY --from=docker.io/mambaorg/micromamba:2 /bin/micromamba /usr/local/bin/micromamba\n"
        "FROM deps\nCOPY --from=deps /x /y\nCOPY --from=0 /x /z\nFROM python:3.12-slim\nFROM scratch\n"
    )
    assert base_registries(text) == {"127.0.0.1:5000", "docker.io"}
    assert base_registries("FROM localhost:5000/base\n") == {"localhost:5000"}


def _commands(
    builder_name: str,
    driver: str = "",
    push: bool = True,
    ref: str = "127.0.0.1:5000/p:deps-1",
    platform: str = "linux/amd64",
):
    from pypod.image.builders import Builder, build_commands

    builder = Builder(builder_name, f"/usr/bin/{builder_name}", driver)
    secrets = ["--secret", "id=pypod_env,src=/s/env"]
    context_from = "FROM 127.0.0.1:5000/base@sha256:1\n"
    return build_commands(
        builder,
        context_from,
        Path("/s/Containerfile"),
        Path("/ctx"),
        ref,
        secrets,
        Path("/s/digest"),
        push,
        "R:cache",
        platform,
    )


def test_buildx_pushes_with_a_registry_cache_unless_its_driver_is_the_engines_own():
    [remote] = _commands("docker", "remote")
    assert "--output=type=image,name=127.0.0.1:5000/p:deps-1,push=true,registry.insecure=true" in remote
    assert "--cache-from=type=registry,ref=R:cache,registry.insecure=true" in remote
    assert (
        "--cache-to=type=registry,ref=R:cache,mode=max,image-manifest=true,oci-mediatypes=true,"
        "ignore-error=true,registry.insecure=true"
    ) in remote
    assert "--network" not in remote
    assert remote[-1] == "/ctx" and remote[remote.index("--metadata-file") + 1] == "/s/digest"

    [engine] = _commands("docker", "docker")
    assert not [a for a in engine if a.startswith("--cache")]
    [public] = _commands("docker", "docker-container", ref="ghcr.io/team/app:deps-1")
    assert "--output=type=image,name=ghcr.io/team/app:deps-1,push=true" in public
    assert not [a for a in public if "insecure" in a]
    [local] = _commands("docker", "remote", push=False)
    assert "--load" in local and not [a for a in local if a.startswith(("--cache", "--output"))]


def test_podman_and_buildah_build_then_push_with_tls_off_only_for_loopback_registries():
    build, push = _commands("podman")
    assert build[1] == "build" and "--tls-verify=false" in build and "--secret" in build
    assert push[:3] == ["/usr/bin/podman", "push", "--tls-verify=false"]
    build, push = _commands("buildah", ref="ghcr.io/team/app:deps-1")
    assert build[1] == "bud" and "--tls-verify=false" in build  # its base is on loopback
    assert "--tls-verify=false" not in push
    [only_build] = _commands("buildah", push=False)
    assert only_build[1] == "bud"


def test_only_a_reachable_buildx_builder_counts():
    from pypod.image.builders import buildx_driver

    # `docker buildx inspect` as printed here: it exits 0 in every one of these cases.
    remote = "Name:          ci\nDriver:        remote\nLast Activity: 2026-11-23 04:07:19 +0000 UTC\n\nNodes:\n"
    assert buildx_driver(remote + "Name:     ci0\nEndpoint: unix:///run/b.sock\nStatus:   running\n") == "remote"
    assert buildx_driver(remote + "Name:     ci0\nEndpoint: unix:///gone.sock\nStatus:   inactive\n") is None
    no_engine = (
        "Name:   default\nDriver: \nError:  failed to connect to the docker API at unix:///var/run/docker.sock; "
        "check if the path is correct and if the daemon is running\n"
    )
    assert buildx_driver(no_engine) is None
    container = "Name: b\nDriver: docker-container\n\nNodes:\nName: b0\nStatus: inactive\n"
    assert buildx_driver(container) == "docker-container"  # buildx boots it
    assert buildx_driver("Name: x\n") is None


@pytest.mark.parametrize("builder", ["docker", "podman", "buildah"])
def test_every_builder_builds_for_the_clusters_platform_not_the_laptops(builder: str, tmp_path: Path):
    build = _commands(builder, "remote", platform="linux/arm64")[0]
    assert build[build.index("--platform") + 1] == "linux/arm64"
    (tmp_path / "requirements.txt").write_text("six\n")
    spec = detect(tmp_path)
    files = {"requirements.txt": b"six\n"}
    assert render(spec, "b@sha256:1", files, "linux/arm64").tag != render(spec, "b@sha256:1", files).tag


def test_an_image_config_names_its_platform_and_variants_count_only_when_both_say():
    from pypod.image.registry import config_platform, platform_matches

    assert config_platform({"os": "linux", "architecture": "arm64", "variant": "v8"}) == "linux/arm64/v8"
    assert config_platform({"os": "linux", "architecture": "amd64"}) == "linux/amd64"
    assert config_platform({"architecture": "amd64"}) == ""
    assert platform_matches("linux/arm64/v8", "linux/arm64")
    assert platform_matches("linux/arm64", "linux/arm64/v8")
    assert not platform_matches("linux/arm/v6", "linux/arm/v7")
    assert not platform_matches("linux/amd64", "linux/arm64")


@pytest.mark.parametrize(
    "tail",
    [
        # podman and buildah, then buildx, when docker.io cannot be reached (seen on these machines)
        "Trying to pull docker.io/mambaorg/micromamba:2.0.5...\n"
        "Error: COPY --from=docker.io/mambaorg/micromamba:2.0.5: no stage or image found with that name",
        "ERROR: failed to build: failed to solve: docker.io/mambaorg/micromamba:2.0.5: failed to resolve source "
        'metadata for docker.io/mambaorg/micromamba:2.0.5: failed to do request: Head "https://registry-1.docker.io'
        '/v2/mambaorg/micromamba/manifests/2.0.5": dial tcp: lookup registry-1.docker.io: no such host',
    ],
)
def test_a_base_image_that_cannot_be_pulled_is_named_as_such_not_as_bad_dependency_files(tail: str):
    from pypod.image.builders import _failure_hint, _failure_message

    hint = _failure_hint(tail, Path("/logs/deps-1.log"))
    assert hint.startswith("the builder could not pull an image the build starts from")
    assert hint.endswith("; full log: /logs/deps-1.log")
    assert "docker.io/mambaorg/micromamba:2.0.5" in _failure_message("build", 125, tail)


def test_a_push_that_cannot_reach_its_registry_is_not_called_a_pull_failure():
    from pypod.image.builders import _failure_hint

    tail = "Error: pinging container registry ghcr.io: Get https://ghcr.io/v2/: dial tcp: i/o timeout"
    assert "could not pull" not in _failure_hint(tail, None, "push")
    refused = "Error: initializing source docker://ghcr.io/team/base:1: unauthorized: authentication required"
    assert _failure_hint(refused, None, "build").startswith("the registry refused a pull the build needs: log in")


def test_uv_in_the_pod_uses_the_interpreters_venv_and_never_downloads_a_python(tmp_path: Path):
    # `uv add` in a pod's REPL must install where the running interpreter imports from,
    # not into a /workspace/.venv the sync skips; and uv must not fetch another Python.
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "0"\ndependencies = ["six"]\n')
    (tmp_path / "uv.lock").write_text("version = 1\n")
    spec = detect(tmp_path)
    build = render(spec, "b@sha256:1", {name: (tmp_path / name).read_bytes() for name in spec.files})
    env_line = next(line for line in build.containerfile.splitlines() if line.startswith("ENV "))
    assert "UV_PROJECT_ENVIRONMENT=/opt/venv " in env_line
    assert "UV_PYTHON_DOWNLOADS=never" in env_line
    assert "/opt/venv/bin/pip install -q uv" in build.containerfile  # uv is in the image
