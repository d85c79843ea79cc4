"""Registry auth against real docker-registries: one that demands a password (Basic) and
one that hands out bearer tokens from a token service (as ECR, GHCR, Docker Hub and Harbor
do). Refused without credentials (one clear line), accepted from ~/.docker/config.json and
from a credential helper (as ECR's is used)."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import bcrypt
import pytest

from harness.cluster import ClusterInfo
from pypod.errors import RegistryError
from pypod.image.ship import ship_source_image
from pypod.project import load_project
from tests.pypodcli import run_cli
from tests.tokenauth import ISSUER, SERVICE, TokenService

pytestmark = pytest.mark.cluster
USER, PASSWORD = "pypod", f"pw-{uuid.uuid4().hex[:12]}"


def serve_registry(folder: Path, auth: str, cluster: ClusterInfo):  # type: ignore[no-untyped-def]
    """A docker-registry on loopback with `auth` (YAML under `auth:`), holding the
    harness's base image as base/python:3 (copied with the test user's credentials)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = folder / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"auth:\n{auth}"
    )
    server = subprocess.Popen(
        ["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    host = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://{host}/v2/", timeout=1)
        except urllib.error.HTTPError as answer:
            if answer.code == 401:
                break
        except OSError:
            time.sleep(0.1)
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--dest-creds",
            f"{USER}:{PASSWORD}",
            f"docker://{cluster.base_image}",
            f"docker://{host}/base/python:3",
        ],
        check=True,
        capture_output=True,
    )
    return host, server


@pytest.fixture(scope="module")
def locked_registry(cluster: ClusterInfo, tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    """A registry that asks for Basic auth (htpasswd)."""
    folder = tmp_path_factory.mktemp("locked-registry")
    htpasswd = folder / "htpasswd"
    htpasswd.write_text(f"{USER}:{bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()}\n")
    host, server = serve_registry(folder, f"  htpasswd:\n    realm: pypod-test\n    path: {htpasswd}\n", cluster)
    yield host
    server.terminate()
    server.wait(10)


@pytest.fixture(scope="module")
def token_registry(cluster: ClusterInfo, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A registry that hands out bearer tokens from a token service (anonymous: pull only)."""
    folder = tmp_path_factory.mktemp("token-registry")
    tokens = TokenService({USER: PASSWORD})
    realm = tokens.start()
    root_cert = tokens.write_root_cert(folder / "token-signer.pem")
    auth = (
        f"  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {root_cert}\n"
    )
    host, server = serve_registry(folder, auth, cluster)
    yield host, tokens
    server.terminate()
    server.wait(10)
    tokens.stop()


def project(tmp_path: Path) -> Path:
    root = tmp_path / "authproj"
    root.mkdir(parents=True)
    (root / "main.py").write_text("print('hi')\n")
    return root


def docker_config(folder: Path, content: dict) -> str:  # type: ignore[type-arg]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(content))
    return str(folder)


def test_without_credentials_the_registry_refusal_is_one_clear_line(locked_registry, tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", docker_config(tmp_path / "empty", {}))
    with pytest.raises(RegistryError, match=f"registry {locked_registry}"):
        ship_source_image(load_project(project(tmp_path)), f"{locked_registry}/base/python:3", f"{locked_registry}/app")
    env = dict(
        os.environ,
        DOCKER_CONFIG=str(tmp_path / "empty"),
        PYPOD_BASE_IMAGE=f"{locked_registry}/base/python:3",
        IMAGE_REPO=f"{locked_registry}/app",
        HOME=str(tmp_path),
    )
    result = run_cli(["--dry-run", "print(1)"], env, cwd=project(tmp_path / "x"))
    assert result.returncode == 0  # dry-run touches no registry
    refused = run_cli(["print(1)"], env, cwd=tmp_path / "x" / "authproj")
    assert refused.returncode == 75, refused.stderr
    assert "log in" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_credentials_from_docker_config(locked_registry, tmp_path, monkeypatch):
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    monkeypatch.setenv(
        "DOCKER_CONFIG", docker_config(tmp_path / "auths", {"auths": {locked_registry: {"auth": token}}})
    )
    shipped = ship_source_image(
        load_project(project(tmp_path)), f"{locked_registry}/base/python:3", f"{locked_registry}/app"
    )
    assert not shipped.reused and shipped.reference.startswith(f"{locked_registry}/app@sha256:")


def test_credentials_from_a_credential_helper(locked_registry, tmp_path, monkeypatch):
    helpers = tmp_path / "bin"
    helpers.mkdir()
    helper = helpers / "docker-credential-pypodtest"
    helper.write_text(
        "#!/bin/sh\nread host\n"
        f'[ "$host" = "{locked_registry}" ] || exit 1\n'
        f'echo \'{{"ServerURL": "\'$host\'", "Username": "{USER}", "Secret": "{PASSWORD}"}}\'\n'
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helpers}:{os.environ['PATH']}")
    monkeypatch.setenv(
        "DOCKER_CONFIG", docker_config(tmp_path / "helpers", {"credHelpers": {locked_registry: "pypodtest"}})
    )
    shipped = ship_source_image(
        load_project(project(tmp_path)), f"{locked_registry}/base/python:3", f"{locked_registry}/helped"
    )
    assert shipped.reference.startswith(f"{locked_registry}/helped@sha256:")


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_bearer_tokens_anonymous_for_pulls_and_with_credentials_for_the_push(token_registry, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    host, tokens = token_registry
    base = f"{host}/base/python:3"
    monkeypatch.setenv("DOCKER_CONFIG", docker_config(tmp_path / "none", {}))
    # Anonymous: the token service grants pull, so the base resolves; the push is refused.
    with pytest.raises(RegistryError, match=f"registry {host}"):
        ship_source_image(load_project(project(tmp_path / "anon")), base, f"{host}/app")
    anonymous = [grant for r in tokens.requests if r.account == "" for grant in r.granted]
    assert anonymous and all(g["actions"] == ["pull"] or not g["actions"] for g in anonymous), anonymous
    assert any(g["name"] == "base/python" and g["actions"] == ["pull"] for g in anonymous), anonymous

    tokens.requests.clear()
    monkeypatch.setenv(
        "DOCKER_CONFIG", docker_config(tmp_path / "auths", {"auths": {host: {"auth": basic(USER, PASSWORD)}}})
    )
    shipped = ship_source_image(load_project(project(tmp_path / "user")), base, f"{host}/app")
    assert not shipped.reused and shipped.reference.startswith(f"{host}/app@sha256:")
    assert tokens.requests and all(r.account == USER for r in tokens.requests)
    # (A mount's challenge names two scopes, in an order that varies: look at every grant.)
    grants = [grant for r in tokens.requests for grant in r.granted]
    assert any(g["name"] == "app" and "push" in g["actions"] for g in grants), grants
    # Tokens are kept per repository: no grant is asked for twice (a single kept token
    # would be refetched each time the push moves between the base and the target).
    asked = [tuple(r.scopes) for r in tokens.requests]
    assert len(asked) == len(set(asked)), asked
    # Another tool, with its own token flow, finds the pushed image.
    inspected = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--creds", f"{USER}:{PASSWORD}", f"docker://{shipped.reference}"],
        capture_output=True,
        text=True,
    )
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Layers"][-1] == shipped.layer_digest


def test_a_wrong_password_at_the_token_service_is_one_clear_line(token_registry, tmp_path):  # type: ignore[no-untyped-def]
    host, _tokens = token_registry
    env = dict(
        os.environ,
        DOCKER_CONFIG=docker_config(tmp_path / "wrong", {"auths": {host: {"auth": basic(USER, "not-the-password")}}}),
        PYPOD_BASE_IMAGE=f"{host}/base/python:3",
        IMAGE_REPO=f"{host}/app",
        HOME=str(tmp_path),
    )
    refused = run_cli(["print(1)"], env, cwd=project(tmp_path))
    assert refused.returncode == 75, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert host in line and "log in" in line
    assert "not-the-password" not in refused.stderr
    assert basic(USER, "not-the-password") not in refused.stderr and "Basic " not in refused.stderr


def test_an_unreachable_registry_is_one_line_naming_it(tmp_path):  # type: ignore[no-untyped-def]
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    env = dict(os.environ, IMAGE_REPO=f"{closed}/app", PYPOD_BASE_IMAGE=f"{closed}/base:1", HOME=str(tmp_path))
    result = run_cli(["print(1)"], env, cwd=project(tmp_path), timeout=60)
    assert result.returncode == 75, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"pypod: registry {closed} is unreachable while trying to look up {closed}/base:1")
    assert "IMAGE_REPO, --base-image or --image" in line
