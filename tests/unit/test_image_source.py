"""The source layer and its tag: reproducible, content-addressed, within limits."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from pypod.image.files import project_files, scan_project
from pypod.image.layer import build_layer
from pypod.image.registry import ImageRef, RegistryError, appended_config, appended_manifest
from pypod.image.tag import MAX_TAG, image_tag, source_fingerprint


def make_project(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("X = 1\n")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / "pkg" / "__pycache__").mkdir()
    (root / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (root / ".pypodignore").write_text("data/\n*.log\n")
    (root / "data").mkdir()
    (root / "data" / "big.bin").write_bytes(b"0" * 10)
    (root / "debug.log").write_text("noise")
    return root


def test_files_honour_ignores_and_pypods_excludes(tmp_path: Path):
    root = make_project(tmp_path / "p")
    assert project_files(root) == [".pypodignore", "pkg/__init__.py", "run.sh"]


def test_files_follow_git_ignore_when_in_git(tmp_path: Path):
    root = make_project(tmp_path / "p")
    (root / ".gitignore").write_text("secret.txt\n")
    (root / "secret.txt").write_text("x")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    assert "secret.txt" not in project_files(root)
    assert ".gitignore" in project_files(root)


def test_layer_is_reproducible_and_keeps_the_executable_bit(tmp_path: Path):
    root = make_project(tmp_path / "p")
    files = project_files(root)
    first = build_layer(root, files, tmp_path / "out1")
    os.utime(root / "pkg" / "__init__.py", (1, 1))  # a touch changes mtimes, not the layer
    second = build_layer(root, files, tmp_path / "out2")
    assert first.digest == second.digest
    assert first.diff_id == second.diff_id
    with gzip.open(first.path) as gz:
        raw = gz.read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert list(members) == [
        "workspace",
        "workspace/pkg",
        "workspace/.pypodignore",
        "workspace/pkg/__init__.py",
        "workspace/run.sh",
    ]
    assert members["workspace/run.sh"].mode == 0o755
    assert members["workspace/pkg/__init__.py"].mode == 0o644
    assert {m.mtime for m in members.values()} == {0}
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members.values()} == {(0, 0, "", "")}


def test_fingerprint_covers_content_and_mode_not_mtime(tmp_path: Path):
    root = make_project(tmp_path / "p")
    cache = tmp_path / "cache"
    base = source_fingerprint(root, scan_project(root), cache)
    assert source_fingerprint(root, scan_project(root), cache) == base  # warm, from the stat cache
    os.utime(root / "run.sh", (5, 5))
    assert source_fingerprint(root, scan_project(root), cache) == base
    (root / "run.sh").chmod(0o644)
    assert source_fingerprint(root, scan_project(root), cache) != base
    (root / "run.sh").chmod(0o755)
    (root / "pkg" / "__init__.py").write_text("X = 2\n")
    assert source_fingerprint(root, scan_project(root), cache) != base


def test_tag_is_julia_pod_shaped_and_fits_128():
    tag = image_tag("repo", "main", "abc1234", "f" * 40, "sha256:" + "0" * 64)
    assert tag.startswith("repo_main_commit-abc1234_sha1-")
    long = image_tag("r" * 100, "feature/" + "b" * 150, "abc1234", "f" * 40, "dep")
    assert len(long) <= MAX_TAG
    assert "/" not in long
    # The dependency key is part of the hash: a new base image means a new tag.
    assert image_tag("repo", "main", "abc1234", "f" * 40, "sha256:" + "1" * 64) != tag
    assert image_tag("repo", "main", "abc1234", "f" * 40, "sha256:" + "0" * 64, "linux/arm64") != tag


def test_image_refs_parse_and_need_a_registry():
    ref = ImageRef.parse("127.0.0.1:5000/team/app:v1")
    assert (ref.registry, ref.repository, ref.tag) == ("127.0.0.1:5000", "team/app", "v1")
    assert str(ImageRef.parse("reg.io/a@sha256:ab")) == "reg.io/a@sha256:ab"
    with pytest.raises(RegistryError):
        ImageRef.parse("python:3.12")


def test_appended_config_and_manifest(tmp_path: Path):
    root = make_project(tmp_path / "p")
    layer = build_layer(root, project_files(root), tmp_path / "out")
    config = {"rootfs": {"type": "layers", "diff_ids": ["sha256:base"]}, "config": {"Cmd": ["python3"]}}
    new = appended_config(config, layer, "/workspace")
    assert new["rootfs"]["diff_ids"] == ["sha256:base", layer.diff_id]
    assert new["config"] == {"Cmd": ["python3"], "WorkingDir": "/workspace"}
    assert config["rootfs"]["diff_ids"] == ["sha256:base"]  # the input is left alone
    base = {
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": "sha256:b", "size": 3}]
    }
    manifest = appended_manifest(base, "sha256:c", 10, layer)
    assert [entry["mediaType"] for entry in manifest["layers"]] == ["application/vnd.oci.image.layer.v1.tar+gzip"] * 2
    assert manifest["layers"][-1]["digest"] == layer.digest


def test_fingerprint_is_the_same_from_git_index_and_from_the_files(tmp_path: Path):
    plain = make_project(tmp_path / "plain")
    tracked = make_project(tmp_path / "tracked")
    (tracked / "link").symlink_to("run.sh")
    (plain / "link").symlink_to("run.sh")
    subprocess.run(["git", "init", "-q"], cwd=tracked, check=True)
    subprocess.run(["git", "add", "-A"], cwd=tracked, check=True)
    from_git = source_fingerprint(tracked, scan_project(tracked), None)
    from_files = source_fingerprint(plain, scan_project(plain), None)
    assert project_files(tracked) == project_files(plain)
    assert from_git == from_files
    # An edit not yet staged is seen through git's own change detection.
    (tracked / "pkg" / "__init__.py").write_text("X = 3\n")
    assert source_fingerprint(tracked, scan_project(tracked), None) != from_git


def test_plan_layer_ships_deltas_on_the_previous_push_and_starts_over_when_needed():
    from pypod.image.ship import MAX_DELTA_DEPTH, ShipRecord, plan_layer

    entries = {f"f{i}.py": f"-{i:040d}" for i in range(10)}
    assert plan_layer(None, entries, "sha256:base").delta is False
    previous = ShipRecord("sha256:base", "sha256:img", {}, {}, dict(entries), depth=0)
    edited = dict(entries, **{"f1.py": "-" + "9" * 40, "new.py": "-" + "8" * 40})
    del edited["f2.py"]
    plan = plan_layer(previous, edited, "sha256:base")
    assert (plan.delta, plan.files, plan.deleted) == (True, ["f1.py", "new.py"], ["f2.py"])
    # A new base image, a long chain, or a change to most files: a full layer again.
    assert plan_layer(previous, edited, "sha256:other").delta is False
    deep = ShipRecord("sha256:base", "sha256:img", {}, {}, dict(entries), depth=MAX_DELTA_DEPTH)
    assert plan_layer(deep, edited, "sha256:base").delta is False
    rewritten = {rel: "x" + entry[1:] for rel, entry in entries.items()}
    assert plan_layer(previous, rewritten, "sha256:base").files == sorted(entries)


def test_python_path_is_put_first_once():
    from pypod.image.registry import with_python_path

    assert with_python_path(["A=1"], "/w/lib") == ["A=1", "PYTHONPATH=/w/lib"]
    assert with_python_path(["PYTHONPATH=/x"], "/w/lib") == ["PYTHONPATH=/w/lib:/x"]
    assert with_python_path(["PYTHONPATH=/w/lib:/x"], "/w/lib") == ["PYTHONPATH=/w/lib:/x"]


def test_pypod_ships_its_own_package_files():
    from pypod.image.ship import PYPOD_LIB, pypod_files

    files = pypod_files()
    assert f"{PYPOD_LIB}/pypod/cluster.py" in files
    assert f"{PYPOD_LIB}/pypod/agent/session.py" in files
    assert f"{PYPOD_LIB}/pypod/agent/syncd.py" in files
    assert not any("__pycache__" in name for name in files)


def test_challenges_and_the_repository_a_token_is_kept_for():
    from pypod.image.regauth import Challenge, mount_source_scope, parse_challenge, repository_of, same_origin

    header = (
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:team/app:pull,push repository:team/base:pull"'
    )
    assert parse_challenge(header) == Challenge(
        "bearer",
        "https://auth.example.com/token",
        "registry.example.com",
        ("repository:team/app:pull,push", "repository:team/base:pull"),
    )
    assert parse_challenge('Basic realm="pypod-test"') == Challenge("basic", "pypod-test")
    # Two headers joined by requests, unquoted values: the bearer one is answered.
    joined = 'Basic realm=corp, Bearer realm="https://t.example/token",service=reg'
    assert parse_challenge(joined) == Challenge("bearer", "https://t.example/token", "reg")
    assert parse_challenge("") == Challenge("")
    assert repository_of("/v2/team/app/blobs/uploads/?mount=sha256:1&from=team/base") == "team/app"
    assert repository_of("/v2/a/b/c/manifests/latest") == "a/b/c"
    assert repository_of("/v2/blobs/blobs/sha256:1") == "blobs"  # a repository may be named like a verb
    assert repository_of("/v2/a/blobs/uploads/3f2e?_state=x") == "a"
    assert repository_of("/v2/a/manifests/blobs") == "a"  # and a tag like one
    assert repository_of("/v2/") == ""
    assert mount_source_scope("/v2/app/blobs/uploads/?mount=sha256:1&from=team/base") == ("repository:team/base:pull",)
    assert mount_source_scope("/v2/app/blobs/uploads/") == ()
    assert same_origin("https://reg.example/v2/app/blobs/uploads/1", "https", "reg.example")
    assert not same_origin("https://s3.amazonaws.com/bucket/upload?sig=1", "https", "reg.example")
    assert not same_origin("http://reg.example/v2/x", "https", "reg.example")


class FakeResponse:
    def __init__(self, status: int, body: object = None, text: str | None = None) -> None:
        self.status_code, self.ok, self._body, self._text = status, status == 200, body, text

    def json(self) -> object:
        if self._text is not None:
            raise ValueError("not JSON")
        return self._body


class FakeTokenSession:
    """A token service: hands out a token naming the scopes asked for."""

    def __init__(self, status: int = 200, text: str | None = None) -> None:
        self.calls: list[tuple[str, list[tuple[str, str]], dict[str, str]]] = []
        self.status, self.text = status, text

    def get(self, url: str, params: list[tuple[str, str]], headers: dict[str, str], **_kw: object) -> FakeResponse:
        self.calls.append((url, params, headers))
        scopes = "+".join(v for k, v in params if k == "scope")
        return FakeResponse(self.status, {"token": f"t:{scopes}"}, self.text)


BEARER = 'Bearer realm="https://auth.example/token",service="reg",scope="repository:{}:pull,push"'


def test_bearer_tokens_are_kept_per_repository_and_a_repeated_grant_stops_the_retry():
    from pypod.image.regauth import HostAuth

    auth = HostAuth("reg.example", insecure=False, credentials="dTpw", looked_up=True)
    session = FakeTokenSession()
    assert auth.answer(session, BEARER.format("team/base"), "team/base")
    assert auth.answer(session, BEARER.format("team/app"), "team/app", ("repository:team/base:pull",))
    assert auth.header("team/base") == {"Authorization": "Bearer t:repository:team/base:pull,push"}
    assert auth.header("team/app") == {
        "Authorization": "Bearer t:repository:team/app:pull,push+repository:team/base:pull"
    }
    assert [c[2] for c in session.calls] == [{"Authorization": "Basic dTpw"}] * 2  # credentials to the realm
    # The same grant again (the token lacks a scope the registry wants): no endless retry.
    assert not auth.answer(session, BEARER.format("team/app"), "team/app", ("repository:team/base:pull",))


def test_basic_is_sent_once_asked_for_and_a_refusal_is_not_retried():
    from pypod.errors import RegistryError
    from pypod.image.regauth import HostAuth

    auth = HostAuth("reg.example", insecure=False, credentials="dTpw", looked_up=True)
    assert auth.header("app") == {}
    assert auth.answer(None, 'Basic realm="x"', "app")
    assert auth.header("app") == {"Authorization": "Basic dTpw"}
    assert not auth.answer(None, 'Basic realm="x"', "app")
    anonymous = HostAuth("reg.example", insecure=False, looked_up=True)
    with pytest.raises(RegistryError, match="requires a login"):
        anonymous.answer(None, 'Basic realm="x"', "app")


def test_token_service_failures_are_one_line_and_passwords_stay_off_plain_http():
    from pypod.errors import RegistryError
    from pypod.image.regauth import HostAuth

    auth = HostAuth("reg.example", insecure=False, credentials="dTpw", looked_up=True)
    with pytest.raises(RegistryError, match=r"refused our credentials \(401\)"):
        auth.answer(FakeTokenSession(status=401), BEARER.format("app"), "app")
    with pytest.raises(RegistryError, match="did not answer properly"):
        auth.answer(FakeTokenSession(text="<html>"), BEARER.format("app"), "app")
    plain = 'Bearer realm="http://auth.example/token",service="reg"'
    session = FakeTokenSession()
    with pytest.raises(RegistryError, match="plain-HTTP token service"):
        auth.answer(session, plain, "app")
    assert session.calls == []  # nothing was sent


def test_a_docker_config_that_is_not_json_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from pypod.errors import RegistryError
    from pypod.image.registry import Registry

    (tmp_path / "config.json").write_text("{not json")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    with pytest.raises(RegistryError, match="could not be read") as err:
        Registry("127.0.0.1:1")
    assert str(tmp_path / "config.json") in str(err.value) and "move it aside" in err.value.hint


def test_pypod_ships_the_pure_python_libraries_its_in_pod_code_needs_off_the_path():
    # pypod.add in a pod reads the project's files (packaging) and edits TOML (tomlkit);
    # those go to .pypod/vendor, which is not on PYTHONPATH, so a project's own versions win.
    from pypod.image.ship import PYPOD_LIB, PYPOD_VENDOR, pypod_files

    files = pypod_files()
    assert f"{PYPOD_VENDOR}/tomlkit/api.py" in files
    assert f"{PYPOD_VENDOR}/packaging/requirements.py" in files
    assert f"{PYPOD_VENDOR}/dependency_groups/__init__.py" in files
    assert f"{PYPOD_LIB}/pypod/deps/__init__.py" in files
    assert not any(rel.startswith(f"{PYPOD_LIB}/tomlkit") for rel in files)
