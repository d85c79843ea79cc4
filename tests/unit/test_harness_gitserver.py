"""The harness's git server: its pure parts (auth decisions, the CGI bridge)."""

from __future__ import annotations

import base64

from harness import components as c
from harness.gitserver import cgi_environment, check_basic_auth, needs_auth, parse_cgi_headers
from harness.layout import BRIDGE_IP, Layout


def basic(user: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


def test_private_repositories_and_every_push_need_auth_public_reads_do_not():
    assert not needs_auth("/public/a.git/info/refs", "service=git-upload-pack")
    assert not needs_auth("/public/a.git/git-upload-pack", "")
    assert needs_auth("/private/a.git/info/refs", "service=git-upload-pack")
    assert needs_auth("/private/a.git/git-upload-pack", "")
    assert needs_auth("/public/a.git/info/refs", "service=git-receive-pack")
    assert needs_auth("/public/a.git/git-receive-pack", "")


def test_basic_auth_must_carry_the_user_and_token():
    assert check_basic_auth(basic("pypod", "t0k"), "pypod", "t0k") == "pypod"
    assert check_basic_auth(basic("pypod", "wrong"), "pypod", "t0k") is None
    assert check_basic_auth(basic("other", "t0k"), "pypod", "t0k") is None
    assert check_basic_auth(None, "pypod", "t0k") is None
    assert check_basic_auth("Bearer t0k", "pypod", "t0k") is None
    assert check_basic_auth("Basic !!notbase64", "pypod", "t0k") is None


def test_cgi_environment_hands_the_git_protocol_header_to_http_backend():
    headers = {"Content-Type": "application/x-git-upload-pack-request", "Git-Protocol": "version=2"}
    env = cgi_environment("POST", "/public/a.git/git-upload-pack", "", headers, "/srv/git", "10.88.0.5", None)
    assert env["HTTP_GIT_PROTOCOL"] == "version=2"
    assert env["GIT_PROJECT_ROOT"] == "/srv/git"
    assert env["PATH_INFO"] == "/public/a.git/git-upload-pack"
    assert env["CONTENT_TYPE"] == "application/x-git-upload-pack-request"
    assert env["GIT_HTTP_EXPORT_ALL"] == "1"
    assert "REMOTE_USER" not in env
    pushed = cgi_environment("POST", "/public/a.git/git-receive-pack", "", {}, "/srv/git", "127.0.0.1", "pypod")
    assert pushed["REMOTE_USER"] == "pypod"  # http-backend enables receive-pack for an authenticated user
    assert "Authorization" not in str(pushed)


def test_cgi_headers_give_status_and_headers():
    block = b"Status: 404 Not Found\r\nContent-Type: text/plain\r\nExpires: Fri, 01 Jan 1980 00:00:00 GMT"
    assert parse_cgi_headers(block) == (
        404,
        "Not Found",
        [("Content-Type", "text/plain"), ("Expires", "Fri, 01 Jan 1980 00:00:00 GMT")],
    )
    assert parse_cgi_headers(b"Content-Type: application/x-git-upload-pack-result") == (
        200,
        "OK",
        [("Content-Type", "application/x-git-upload-pack-result")],
    )


def test_git_server_component_listens_on_the_bridge_with_credentials_from_a_file(tmp_path):
    layout = Layout(cache=tmp_path / "cache", state=tmp_path / "state")
    component = c.git_server(layout, 4242, tmp_path / "creds")
    assert component.name == "gitserver"
    assert f"--listen={BRIDGE_IP}:4242" in component.argv
    assert f"--credentials={tmp_path / 'creds'}" in component.argv
    assert f"--root={layout.git_root}" in component.argv
    assert c.git_server_url(4242) == f"http://{BRIDGE_IP}:4242"


def test_the_ssh_side_takes_keys_only_and_forces_git_upload_pack_under_the_root(tmp_path):
    config = c.git_sshd_config(2222, tmp_path)
    assert f"ListenAddress {BRIDGE_IP}" in config and "Port 2222" in config
    assert "PasswordAuthentication no" in config and "AllowTcpForwarding no" in config
    forced = c.git_ssh_forced_command(tmp_path / "git")
    assert f'"git-upload-pack \'{tmp_path / "git"}/"*) exec git-shell' in forced
    assert "*..*) ;;" in forced  # a path with .. falls through to the refusal
    assert c.git_ssh_url(2222, tmp_path / "git" / "private" / "a.git") == (
        f"ssh://root@{BRIDGE_IP}:2222{tmp_path}/git/private/a.git"
    )
