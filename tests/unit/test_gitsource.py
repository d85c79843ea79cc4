"""--git: the spec, the decisions about a commit and its remote, the manifests, the Secret,
and the resolution against real local repositories (plain git; the remote is a bare
repository reached through an insteadOf rewrite, so the URL stays an https one)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from pypod.errors import ProjectError, UsageError
from pypod.gitsource import (
    INIT_CONTAINER,
    INIT_SCRIPT,
    SECRET_VOLUME,
    SOURCE_VOLUME,
    GitSource,
    GitSpec,
    RemoteView,
    add_to_pod,
    apply_to_job,
    check_url,
    commit_on_remote,
    copy_to_worker,
    explain_clone_failure,
    git_secret,
    init_container,
    looks_like_git_spec,
    match_ref,
    parse_git_spec,
    parse_ls_remote,
    remote_for_url,
    resolve_git_source,
    setting_value,
)

SHA = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "ghp_SECRETtoken1234567890"


def test_git_spec_splits_url_and_ref_after_the_host_part():
    assert parse_git_spec("") == GitSpec(None, None)
    assert parse_git_spec("@main") == GitSpec(None, "main")
    assert parse_git_spec("https://host/org/repo.git") == GitSpec("https://host/org/repo.git", None)
    assert parse_git_spec("https://host/org/repo.git@v1.2") == GitSpec("https://host/org/repo.git", "v1.2")
    assert parse_git_spec("https://me@host/repo.git") == GitSpec("https://me@host/repo.git", None)
    assert parse_git_spec("https://me@host/repo.git@feature/x") == GitSpec("https://me@host/repo.git", "feature/x")
    assert parse_git_spec("git@github.com:org/repo.git") == GitSpec("git@github.com:org/repo.git", None)
    assert parse_git_spec("git@github.com:org/repo.git@" + SHA) == GitSpec("git@github.com:org/repo.git", SHA)
    assert parse_git_spec("ssh://git@host:2222/repo.git@main") == GitSpec("ssh://git@host:2222/repo.git", "main")
    with pytest.raises(UsageError, match="names no ref"):
        parse_git_spec("https://host/repo.git@")


def test_the_word_after_a_bare_git_flag_is_its_value_only_when_it_looks_like_one():
    assert looks_like_git_spec("@main")
    assert looks_like_git_spec("https://host/repo.git")
    assert looks_like_git_spec("git@github.com:org/repo.git")
    assert not looks_like_git_spec("print(1)")
    assert not looks_like_git_spec("train.py")
    assert not looks_like_git_spec("print('a@b:c')")


def test_the_setting_turns_on_with_true_words_and_off_with_false_ones():
    assert setting_value(None) is None
    assert setting_value(False) is None
    assert setting_value("off") is None
    assert setting_value(True) == ""
    assert setting_value("1") == ""
    assert setting_value("@main") == "@main"


def test_urls_with_a_password_or_a_local_path_are_refused():
    check_url("https://host/repo.git")
    check_url("https://user@host/repo.git")
    check_url("git@host:repo.git")
    with pytest.raises(UsageError, match="password or token"):
        check_url(f"https://user:{TOKEN}@host/repo.git")
    for path in ("/srv/repo.git", "file:///srv/repo.git", "../repo"):
        with pytest.raises(UsageError, match="pods cannot reach"):
            check_url(path)


def test_refs_resolve_in_gits_order_and_annotated_tags_to_their_commit():
    listing = parse_ls_remote(
        f"{'a' * 40}\tHEAD\n{'a' * 40}\trefs/heads/main\n{'b' * 40}\trefs/heads/v1\n"
        f"{'c' * 40}\trefs/tags/v1\n{'d' * 40}\trefs/tags/v1^{{}}\nnot a line\n"
    )
    assert listing["refs/heads/main"] == "a" * 40
    assert match_ref("main", listing) == "a" * 40
    assert match_ref("v1", listing) == "d" * 40  # a tag before a branch, peeled
    assert match_ref("refs/heads/v1", listing) == "b" * 40
    assert match_ref("HEAD", listing) == "a" * 40
    assert match_ref("nope", listing) is None


def view(**facts: bool) -> RemoteView:
    base = dict(
        commit_known=True,
        on_advertised_tip=False,
        reachable_from_tips=False,
        unknown_tips=False,
        tracking_contains=False,
        remote_answered=True,
    )
    return RemoteView(**{**base, **facts})


def test_a_commit_is_on_the_remote_when_a_tip_has_it_and_refused_when_the_remote_says_not():
    assert commit_on_remote(view(on_advertised_tip=True)) is True
    assert commit_on_remote(view(reachable_from_tips=True)) is True
    assert commit_on_remote(view()) is False  # the remote answered and no tip has it: unpushed
    # Tips we never fetched: our own push (remote-tracking refs) decides.
    assert commit_on_remote(view(unknown_tips=True, tracking_contains=True)) is True
    assert commit_on_remote(view(unknown_tips=True)) is False
    # The remote did not answer: what we last saw of it, else the initContainer will tell.
    assert commit_on_remote(view(remote_answered=False, tracking_contains=True)) is True
    assert commit_on_remote(view(remote_answered=False)) is None
    assert commit_on_remote(view(commit_known=False)) is None


def test_the_remote_of_a_url_is_found_among_the_configured_ones():
    config = "remote.origin.url https://host/a.git\nremote.fork.url git@host:me/a.git\n"
    assert remote_for_url(config, "git@host:me/a.git") == "fork"
    assert remote_for_url(config, "https://host/a.git") == "origin"
    assert remote_for_url(config, "https://other/a.git") is None


def test_the_init_container_fetches_the_commit_with_plain_git_and_holds_no_credential():
    source = GitSource("https://host/repo.git", SHA, "main", secret="repo-token", image="git:1")
    container = init_container(source, "/workspace", {"limits": {"cpu": "1", "memory": "1Gi"}})
    assert container["name"] == INIT_CONTAINER
    assert container["image"] == "git:1"
    assert container["command"][:2] == ["sh", "-c"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "PYPOD_GIT_URL": "https://host/repo.git",
        "PYPOD_GIT_COMMIT": SHA,
        "PYPOD_GIT_DIR": "/workspace",
        "PYPOD_GIT_SECRET": "repo-token",
    }
    assert container["resources"] == {"limits": {"cpu": "1", "memory": "1Gi"}}
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert {"name": SECRET_VOLUME, "mountPath": "/etc/pypod/git", "readOnly": True} in container["volumeMounts"]
    assert 'fetch -q --depth 1 --no-tags origin "$PYPOD_GIT_COMMIT"' in INIT_SCRIPT
    assert "protocol.version=2" in INIT_SCRIPT
    assert "GIT_ASKPASS" in INIT_SCRIPT and "GIT_SSH_COMMAND" in INIT_SCRIPT


def test_the_driver_job_mounts_the_checkout_at_the_working_directory():
    job = {
        "metadata": {"name": "r"},
        "spec": {
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "containers": [
                        {"name": "sidecar", "image": "x"},
                        {"name": "driver", "image": "deps", "env": [{"name": "K", "value": "V"}]},
                    ],
                },
            }
        },
    }
    source = GitSource("https://host/repo.git", SHA, "v1", secret="tok")
    out = apply_to_job(job, source, "/workspace", "driver")
    pod = out["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == [INIT_CONTAINER]
    assert [v["name"] for v in pod["volumes"]] == ["data", SOURCE_VOLUME, SECRET_VOLUME]
    assert pod["volumes"][2]["secret"] == {"secretName": "tok", "defaultMode": 0o400}
    driver = pod["containers"][1]
    assert driver["volumeMounts"] == [{"name": SOURCE_VOLUME, "mountPath": "/workspace"}]
    assert driver["workingDir"] == "/workspace"
    env = {e["name"]: e["value"] for e in driver["env"]}
    assert env["K"] == "V" and env["GIT_CONFIG_KEY_0"] == "safe.directory" and env["GIT_CONFIG_VALUE_0"] == "/workspace"
    assert "volumeMounts" not in pod["containers"][0]
    for metadata in (out["metadata"], out["spec"]["template"]["metadata"]):
        assert metadata["annotations"]["pypod.dev/git-commit"] == SHA
        assert metadata["annotations"]["pypod.dev/git-ref"] == "v1"
    assert "initContainers" not in job["spec"]["template"]["spec"]  # a copy
    assert add_to_pod(pod, source, "/workspace", "driver")["initContainers"] == pod["initContainers"]  # idempotent


def test_worker_pods_get_the_drivers_init_container_volumes_and_python_path():
    source = GitSource("https://host/repo.git", SHA, secret="tok")
    driver_job = apply_to_job(
        {"spec": {"template": {"spec": {"containers": [{"name": "driver", "image": "deps"}]}}}},
        source,
        "/workspace",
        "driver",
    )
    # As the API returns it: admission mounted the service account's token into every container.
    token_mount = {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
    driver_job["spec"]["template"]["spec"]["initContainers"][0]["volumeMounts"].append(token_mount)
    driver_pod = {
        "metadata": driver_job["spec"]["template"]["metadata"],
        "spec": {
            **driver_job["spec"]["template"]["spec"],
            "volumes": [
                *driver_job["spec"]["template"]["spec"]["volumes"],
                {"name": "kube-api-access", "projected": {}},
            ],
        },
    }
    worker = {"metadata": {"name": "w"}, "spec": {"containers": [{"name": "worker", "image": "deps", "env": []}]}}
    out = copy_to_worker(driver_pod, worker, python_path="/opt/pypod/lib")
    spec = out["spec"]
    assert spec["initContainers"][0]["command"] == driver_pod["spec"]["initContainers"][0]["command"]
    assert [m["name"] for m in spec["initContainers"][0]["volumeMounts"]] == [SOURCE_VOLUME, SECRET_VOLUME]
    assert [v["name"] for v in spec["volumes"]] == [SOURCE_VOLUME, SECRET_VOLUME]  # not the driver's token volume
    container = spec["containers"][0]
    assert container["volumeMounts"] == [{"name": SOURCE_VOLUME, "mountPath": "/workspace"}]
    assert container["workingDir"] == "/workspace"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["PYTHONPATH"] == "/workspace:/opt/pypod/lib"
    assert out["metadata"]["annotations"]["pypod.dev/git-commit"] == SHA
    plain = {"spec": {"containers": [{"name": "driver"}]}}
    assert copy_to_worker(plain, worker) is worker


def test_the_token_is_in_no_manifest_but_the_secret():
    source = GitSource("https://host/repo.git", SHA, secret="tok")
    job = apply_to_job({"spec": {"template": {"spec": {"containers": [{"name": "driver"}]}}}}, source, "/w", "driver")
    assert TOKEN not in json.dumps(job)
    secret = git_secret("tok", token=(TOKEN + "\n").encode(), username="bot")
    assert secret["type"] == "Opaque"
    assert base64.b64decode(secret["data"]["token"]).decode() == TOKEN
    assert base64.b64decode(secret["data"]["username"]).decode() == "bot"


def test_ssh_secrets_need_a_private_key_and_known_hosts():
    key = b"-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n"
    secret = git_secret("k", ssh_key=key, known_hosts=b"host ssh-ed25519 AAAA\n")
    assert secret["type"] == "kubernetes.io/ssh-auth"
    assert set(secret["data"]) == {"ssh-privatekey", "known_hosts"}
    with pytest.raises(UsageError, match="known_hosts"):
        git_secret("k", ssh_key=key)
    with pytest.raises(UsageError, match="not a private key"):
        git_secret("k", ssh_key=b"ssh-ed25519 AAAA public", known_hosts=b"x")
    with pytest.raises(UsageError, match="one of"):
        git_secret("k")
    with pytest.raises(UsageError, match="one line"):
        git_secret("k", token=b"two\nlines")


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("fatal: could not read Username for 'https://h': terminal prompts disabled\n", "pypod git-secret"),
        (
            "remote: Forbidden\nfatal: unable to access 'https://h/r.git/': The requested URL returned error: 403",
            "Secret",
        ),
        ("fatal: remote error: upload-pack: not our ref " + SHA, "push it"),
        ("fatal: unable to access 'http://10.0.0.9/r.git/': Failed to connect to 10.0.0.9 port 80", "cannot reach"),
        ("Host key verification failed.\nfatal: Could not read from remote repository.", "known_hosts"),
    ],
)
def test_a_failed_fetch_gets_one_line_and_a_hint_by_its_cause(message: str, expected: str):
    line, hint = explain_clone_failure(1, message + "\npypod-git: could not fetch commit\n")
    assert "\n" not in line and line.startswith("the git initContainer could not fetch the code (exit 1): ")
    assert expected in hint or expected in line
    assert "fatal:" in line or "Host key" in message


# -- real git: the init script, and the resolution -------------------------------------------


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


URL = "https://git.example.invalid/team/project.git"


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, Path]:
    """A clone whose origin is an https URL, rewritten (locally only) to a bare repository."""
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    git(work, "config", f"url.{bare}.insteadOf", URL)
    git(work, "remote", "add", "origin", URL)
    (work / "app.py").write_text("print('one')\n")
    git(work, "add", "app.py")
    git(work, "commit", "-qm", "one")
    git(work, "push", "-q", "origin", "main")
    return work, bare


def test_the_current_pushed_commit_is_run(repo):
    work, _ = repo
    source = resolve_git_source(work, GitSpec())
    assert source.url == URL and source.commit == git(work, "rev-parse", "HEAD") and source.ref == "HEAD"


def test_an_unpushed_commit_is_refused_in_one_line_and_a_dirty_tree_warned(repo):
    work, _ = repo
    (work / "app.py").write_text("print('two')\n")
    warnings: list[str] = []
    resolve_git_source(work, GitSpec(), warn=warnings.append)
    short = git(work, "rev-parse", "--short=7", "HEAD")
    assert warnings == [f"uncommitted changes are not in the run: it runs commit {short} as pushed"]
    git(work, "commit", "-qam", "two")
    with pytest.raises(ProjectError) as caught:
        resolve_git_source(work, GitSpec())
    assert "is not on origin" in caught.value.one_line() and "git push" in caught.value.one_line()
    assert "\n" not in caught.value.one_line()
    git(work, "push", "-q", "origin", "main")
    assert resolve_git_source(work, GitSpec()).commit == git(work, "rev-parse", "HEAD")


def test_a_ref_resolves_against_the_remote_not_the_local_branch(repo):
    work, _bare = repo
    first = git(work, "rev-parse", "HEAD")
    git(work, "tag", "-a", "v1", "-m", "v1")
    git(work, "push", "-q", "origin", "v1")
    (work / "app.py").write_text("print('local only')\n")
    git(work, "commit", "-qam", "local")
    assert resolve_git_source(work, GitSpec(ref="main")).commit == first  # the remote's main
    assert resolve_git_source(work, GitSpec(ref="v1")).commit == first  # the annotated tag's commit
    assert resolve_git_source(work, GitSpec(ref=first[:10])).commit == first  # a short sha known here
    with pytest.raises(ProjectError, match="is not on origin"):
        resolve_git_source(work, GitSpec(ref=git(work, "rev-parse", "HEAD")))
    with pytest.raises(ProjectError, match="has no branch or tag 'nope'"):
        resolve_git_source(work, GitSpec(ref="nope"))


def test_a_path_url_is_refused_before_git_is_asked(repo, tmp_path):
    _work, bare = repo
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(UsageError, match="pods cannot reach"):
        resolve_git_source(elsewhere, GitSpec(url=str(bare), ref="main"))


def test_the_init_script_checks_out_exactly_the_commit(repo, tmp_path):
    work, bare = repo
    commit = git(work, "rev-parse", "HEAD")
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    env = {**os.environ, "PYPOD_GIT_URL": f"file://{bare}", "PYPOD_GIT_COMMIT": commit, "PYPOD_GIT_DIR": str(checkout)}
    done = subprocess.run(["sh", "-c", INIT_SCRIPT], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (checkout / "app.py").read_text() == "print('one')\n"
    assert git(checkout, "rev-parse", "HEAD") == commit
    assert git(checkout, "status", "--porcelain") == ""
    other = tmp_path / "other"
    other.mkdir()
    missing = {**env, "PYPOD_GIT_COMMIT": "f" * 40, "PYPOD_GIT_DIR": str(other)}
    failed = subprocess.run(["sh", "-c", INIT_SCRIPT], env=missing, capture_output=True, text=True)
    assert failed.returncode == 1
    assert f"pypod-git: could not fetch commit {'f' * 40}" in failed.stderr


# -- the wiring: status, ps, the command line, the driver Job --------------------------------


def pod_with_init(init_state: dict, main_state: dict | None = None, phase: str = "Pending", secret: str = "") -> dict:
    env = [{"name": "PYPOD_GIT_SECRET", "value": secret}] if secret else []
    return {
        "metadata": {"name": "run-abc"},
        "spec": {"nodeName": "node-1", "initContainers": [{"name": INIT_CONTAINER, "env": env}]},
        "status": {
            "phase": phase,
            "initContainerStatuses": [{"name": INIT_CONTAINER, "state": init_state}],
            "containerStatuses": [
                {"name": "driver", "state": main_state or {"waiting": {"reason": "PodInitializing"}}}
            ],
        },
    }


def test_a_failed_fetch_ends_the_wait_with_its_log_tail():
    from pypod.kube.status import explain

    message = "fatal: could not read Username for 'http://h': terminal prompts disabled\npypod-git: could not fetch\n"
    report = explain(None, pod_with_init({"terminated": {"exitCode": 1, "message": message}}, phase="Failed"))
    assert report.fatal and report.state == "failed"
    assert report.line == (
        "the git initContainer could not fetch the code (exit 1): "
        "fatal: could not read Username for 'http://h': terminal prompts disabled"
    )
    assert "--git-secret NAME" in report.hint
    assert report.details == (
        "fatal: could not read Username for 'http://h': terminal prompts disabled",
        "pypod-git: could not fetch",
    )
    refused = explain(
        None,
        pod_with_init({"terminated": {"exitCode": 1, "message": "fatal: Authentication failed"}}, secret="tok"),
    )
    assert "the Secret tok was refused" in refused.hint


def test_the_wait_shows_the_fetch_and_an_unpullable_git_image_is_fatal():
    from pypod.kube.status import explain

    fetching = explain(None, pod_with_init({"running": {}}))
    assert (fetching.state, fetching.line) == ("starting", "fetching the code from git on node-1")
    pull = explain(None, pod_with_init({"waiting": {"reason": "ErrImagePull", "message": "not found"}}))
    assert pull.fatal and pull.line == f"initContainer {INIT_CONTAINER}: ErrImagePull: not found"
    done = explain(
        None,
        pod_with_init({"terminated": {"exitCode": 0}}, {"running": {}}, phase="Running"),
    )
    assert done.state == "running"


def test_ps_shows_the_commit_a_run_has():
    from pypod.run.manage import run_commit

    assert run_commit({"pypod.dev/commit": "abc1234"}, {"pypod.dev/git-commit": SHA}) == "0123456 (git)"
    assert run_commit({"pypod.dev/commit": "abc1234"}, {"pypod.dev/dirty": "true"}) == "abc1234+dirty"
    assert run_commit({"pypod.dev/commit": "abc1234"}, {"pypod.dev/dirty": "false"}) == "abc1234"
    assert run_commit({}, {}) == "-"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--git", "print(1)"], ["start", "--git=", "print(1)"]),
        (["--git", "@v1", "print(1)"], ["start", "--git=@v1", "print(1)"]),
        (["run", "--cpu", "2", "--git", "train.py", "--git"], ["run", "--cpu", "2", "--git=", "train.py", "--git"]),
        (["run", "--git", "git@host:r.git@main", "t.py"], ["run", "--git=git@host:r.git@main", "t.py"]),
        (["jupyter", "--git"], ["jupyter", "--git="]),
        (["logs", "--git"], ["logs", "--git"]),
    ],
)
def test_a_bare_git_flag_takes_a_value_only_when_it_looks_like_one(argv, expected):
    from pypod.cli import _route

    assert _route(argv) == expected


def test_the_driver_job_of_a_git_run_names_the_commit():
    from pypod.kube.manifests import RunSpec
    from pypod.run.session import with_git_source

    spec = RunSpec(name="r", image="i", command=("python3",), mode="job", branch="main", commit="fffffff", dirty=True)
    source = GitSource("https://h/r.git", SHA, "v1")
    assert with_git_source(spec, source).commit == SHA[:7]
    assert with_git_source(spec, source).branch == "v1" and not with_git_source(spec, source).dirty
    assert with_git_source(spec, GitSource("https://h/r.git", SHA)).branch == "main"
    assert with_git_source(spec, None) is spec


def test_dry_run_prints_the_init_container_and_creates_nothing(repo):
    import sys

    work, _ = repo
    (work / "requirements.txt").write_text("")
    env = {**os.environ, "HOME": str(work.parent), "IMAGE_REPO": "registry.invalid/team"}
    done = subprocess.run(
        [sys.executable, "-m", "pypod", "--dry-run", "--git", "--git-image", "git:1", "print(1)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    import yaml

    job = next(doc for doc in yaml.safe_load_all(done.stdout) if doc)
    pod = job["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["image"] == "git:1"
    env_values = {e["name"]: e["value"] for e in pod["initContainers"][0]["env"]}
    assert env_values["PYPOD_GIT_COMMIT"] == git(work, "rev-parse", "HEAD")
    assert env_values["PYPOD_GIT_URL"] == URL
    assert job["metadata"]["labels"]["pypod.dev/commit"] == git(work, "rev-parse", "--short=7", "HEAD")
    assert "no source layer" in done.stdout
