"""`--git` end to end: the harness's git server (smart HTTP, protocol v2, Basic auth for
private repositories), the real `pypod` command, the real node running the initContainer.

The repositories are bare ones in the git server's folder, pushed to over HTTP like any
remote; the local clone's credentials are git's own `store` helper in the test's HOME, as
a user's laptop would have them. The token never reaches pypod otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import Pod

from harness import cluster as harness_cluster
from harness.cluster import ClusterInfo, GitServer
from harness.images import git_image_ref
from harness.layout import Layout
from tests.kubehelp import kubectl, wait_for
from tests.pypodcli import Terminal, run_cli

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def git_server(cluster: ClusterInfo) -> GitServer:
    """The harness's git server, started into the running harness if it is not running
    (a harness started before it existed): nothing else is restarted."""
    layout = Layout.default()
    harness_cluster.start_services(layout, report=lambda m: print(m, flush=True))
    server = GitServer.load(layout)
    assert server is not None
    return server


@pytest.fixture
def env(pypod_env: dict[str, str], cluster: ClusterInfo) -> dict[str, str]:
    return dict(pypod_env, PYPOD_GIT_IMAGE=git_image_ref(cluster.registry))


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    identity = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
        "GIT_TERMINAL_PROMPT": "0",
    }
    result = subprocess.run(
        ["git", *args], cwd=cwd, env={**(env or os.environ), **identity}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


class Repo:
    """A bare repository on the git server and a local clone with `origin` pointing at it."""

    def __init__(self, server: GitServer, env: dict[str, str], tmp_path: Path, private: bool = False) -> None:
        kind = "private" if private else "public"
        self.name = f"t-{uuid.uuid4().hex[:8]}"
        self.bare = Path(server.root) / kind / f"{self.name}.git"
        subprocess.run(["git", "init", "-q", "--bare", str(self.bare)], check=True)
        self.url = f"{server.url}/{kind}/{self.name}.git"
        self.env = env
        home = Path(env["HOME"])
        # The laptop's credentials: git's store helper, outside any repository's config.
        host = server.url.removeprefix("http://")
        (home / ".git-credentials").write_text(f"http://{server.user}:{server.token()}@{host}\n")
        (home / ".gitconfig").write_text("[credential]\n\thelper = store\n")
        self.work = tmp_path / self.name
        self.work.mkdir()
        git(self.work, "init", "-q", "-b", "main", env=env)
        git(self.work, "remote", "add", "origin", self.url, env=env)

    def commit(self, files: dict[str, str], message: str = "change", push: bool = True) -> str:
        for rel, text in files.items():
            path = self.work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git(self.work, "add", "-A", env=self.env)
        git(self.work, "commit", "-qm", message, env=self.env)
        if push:
            git(self.work, "push", "-q", "origin", "main", env=self.env)
        return git(self.work, "rev-parse", "HEAD", env=self.env)


@pytest.fixture
def make_repo(git_server: GitServer, env: dict[str, str], tmp_path: Path):  # type: ignore[no-untyped-def]
    """Repo(...) for the test; its bare repository leaves the git server's folder afterwards."""
    made: list[Repo] = []

    def make(private: bool = False) -> Repo:
        made.append(Repo(git_server, env, tmp_path, private=private))
        return made[-1]

    yield make
    for repo in made:
        shutil.rmtree(repo.bare, ignore_errors=True)


def jobs(kube, namespace: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [j.metadata.name for j in kube.list(Job, namespace=namespace)]


def registry_tags(cluster: ClusterInfo, image_repo: str) -> dict[str, str]:
    """Tag -> manifest digest of a repository, from the registry's own API."""
    repository = image_repo.split("/", 1)[1]
    base = f"http://{cluster.registry}/v2/{repository}"
    try:
        with urllib.request.urlopen(f"{base}/tags/list") as response:
            tags = json.load(response).get("tags") or []
    except urllib.error.HTTPError:
        return {}
    digests = {}
    for tag in tags:
        request = urllib.request.Request(
            f"{base}/manifests/{tag}",
            method="HEAD",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        with urllib.request.urlopen(request) as response:
            digests[tag] = response.headers["Docker-Content-Digest"]
    return digests


def test_a_git_job_runs_the_pushed_commit_and_head_is_that_commit(
    env, cluster, git_server, kube, namespace, tmp_path, make_repo
):
    repo = make_repo()
    commit = repo.commit({"data.txt": "from the commit\n", "check.sh": "cat data.txt\ngit rev-parse HEAD\n"})
    (repo.work / "data.txt").write_text("an uncommitted edit\n")  # not in the run: a warning says so
    # The git image as the main image too: it has git and sh (the base has no git).
    args = ["run", "--git", "--image", git_image_ref(cluster.registry), "--python", "sh", "check.sh"]
    result = run_cli(args, env, cwd=repo.work)
    assert result.returncode == 0, result.stderr + result.stdout
    assert result.stdout.splitlines() == ["from the commit", commit]
    assert f"code: {repo.url} at {commit[:7]}" in result.stderr
    assert "warning: uncommitted changes are not in the run" in result.stderr
    wait_for(lambda: not jobs(kube, namespace), 30)


def test_a_new_commit_is_run_next_time_and_the_registry_receives_no_push(
    env, cluster, git_server, kube, namespace, tmp_path, make_repo
):
    repo = make_repo()
    repo.commit({"requirements.txt": "", "app.py": "print('version', 1)\n"})
    first = run_cli(["run", "--git", "app.py"], env, cwd=repo.work)
    assert first.returncode == 0, first.stderr + first.stdout
    assert first.stdout.strip() == "version 1"
    assert "no source layer" in first.stderr
    tags_before = registry_tags(cluster, env["IMAGE_REPO"])
    assert any(tag.startswith("pypod-lib_") for tag in tags_before)  # beside the dependency image

    second_commit = repo.commit({"app.py": "print('version', 2)\n"})
    second = run_cli(["run", "--git", "app.py"], env, cwd=repo.work)
    assert second.returncode == 0, second.stderr + second.stdout
    assert second.stdout.strip() == "version 2"
    assert "unchanged, nothing pushed" in second.stderr
    assert f"at {second_commit[:7]}" in second.stderr
    assert registry_tags(cluster, env["IMAGE_REPO"]) == tags_before  # same tags, same manifests


def test_an_unpushed_commit_is_refused_before_any_job_exists(env, git_server, kube, namespace, tmp_path, make_repo):
    repo = make_repo()
    repo.commit({"app.py": "print(1)\n"})
    unpushed = repo.commit({"app.py": "print(2)\n"}, push=False)
    result = run_cli(["run", "--git", "app.py"], env, cwd=repo.work)
    assert result.returncode == 65
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (
        f"pypod: the current commit {unpushed[:7]} is not on origin ({repo.url}), so the pod could not fetch it. "
        "push it first (git push), or name a ref that is on the remote: --git URL@REF"
    )
    assert jobs(kube, namespace) == []
    missing = run_cli(["run", "--git", f"{repo.url}@no-such-branch", "app.py"], env, cwd=repo.work)
    assert missing.returncode == 65
    assert "has no branch or tag 'no-such-branch'" in missing.stderr
    assert jobs(kube, namespace) == []


def test_a_commit_the_remote_lacks_fails_in_the_init_container_at_once(
    env, git_server, kube, namespace, tmp_path, make_repo
):
    repo = make_repo()
    repo.commit({"app.py": "print(1)\n"})
    absent = "0123456789abcdef0123456789abcdef01234567"  # unknown here too: only the pod can tell
    started = time.monotonic()
    result = run_cli(["run", "--git", f"{repo.url}@{absent}", "app.py"], env, cwd=repo.work)
    took = time.monotonic() - started
    assert result.returncode == 72, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("pypod: the driver pod cannot run: the git initContainer could not fetch the code (exit 1)")
    assert "push it, or name a ref" in error
    assert "  log: pypod-git: could not fetch commit" in result.stderr  # the tail of its log
    assert took < 60
    wait_for(lambda: not jobs(kube, namespace), 30)


def scan_for(token: str, *texts: str) -> list[int]:
    return [index for index, text in enumerate(texts) if token in text]


def test_a_private_repository_runs_with_git_secret_and_the_token_appears_nowhere(
    env, cluster, git_server, kube, namespace, tmp_path, make_repo
):
    repo = make_repo(private=True)
    token = git_server.token()
    repo.commit({"requirements.txt": "", "app.py": "print('private code ran')\n"})

    started = time.monotonic()
    refused = run_cli(["run", "--git", "app.py"], env, cwd=repo.work)
    assert refused.returncode == 72, refused.stderr
    assert time.monotonic() - started < 60
    line = refused.stderr.strip().splitlines()[-1]
    assert "could not fetch the code" in line and "could not read Username" in line
    assert "pypod git-secret NAME --token-file F" in line

    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    created = run_cli(["git-secret", "repo-token", "--token-file", str(token_file), "--username", git_server.user], env)
    assert created.returncode == 0, created.stderr
    assert "created Secret repo-token (token)" in created.stdout

    code = (
        "import os; print(open('.git/config').read()); print(sorted(os.environ.items())); print(open('app.py').read())"
    )
    result = run_cli(
        ["--git", "--git-secret", "repo-token", "--detach", "--runid", "private", code], env, cwd=repo.work
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "private code ran" in result.stdout
    assert f"url = {repo.url}" in result.stdout  # the .git/config of the checkout
    job = kube.get(Job, "private", namespace=namespace)
    pod = next(iter(kube.list(Pod, namespace=namespace, labels={"pypod.dev/run": "private"})))
    init_log = kubectl(
        cluster.kubectl, cluster.admin_kubeconfig, "-n", namespace, "logs", pod.metadata.name, "-c", "pypod-git"
    )
    assert f"pypod-git: {repo.url} at " in init_log.stdout
    texts = (
        json.dumps(job.to_dict()),
        json.dumps(pod.to_dict()),
        init_log.stdout + init_log.stderr,
        result.stdout,
        result.stderr,
        refused.stdout + refused.stderr,
        created.stdout + created.stderr,
    )
    assert scan_for(token, *texts) == []
    assert pod.metadata.annotations["pypod.dev/git-commit"] == git(repo.work, "rev-parse", "HEAD", env=env)
    listed = run_cli(["ps"], env)
    assert f"{pod.metadata.annotations['pypod.dev/git-commit'][:7]} (git)" in listed.stdout
    run_cli(["rm", "private"], env)


def test_a_git_repl_starts_and_imports_the_project(env, git_server, kube, namespace, tmp_path, make_repo):
    repo = make_repo()
    repo.commit({"requirements.txt": "", "project_mod.py": "VALUE = 'from git'\n"})
    term = Terminal(["--git", "--no-sync", "--python", "python3"], env, cwd=repo.work)
    term.expect(">>> ", 120)
    term.line("import project_mod; print(project_mod.VALUE.upper())")
    term.expect("FROM GIT")
    term.line("exit(0)")
    assert term.wait() == 0
    wait_for(lambda: not jobs(kube, namespace), 30)


DASK_MAIN = r"""
from pypod import K8sCluster
import helpers
cluster = K8sCluster(1, cpu="200m", memory="300Mi", pending_timeout=120)
spec = cluster.worker_pod_spec()
print("INIT", [c["name"] for c in spec["spec"].get("initContainers", [])], flush=True)
client = cluster.get_client()
client.wait_for_workers(1, timeout=120)
print("RESULT", client.submit(helpers.where_and_what, 7).result(timeout=60), flush=True)
cluster.close()
"""


def test_dask_workers_of_a_git_driver_import_a_module_of_the_project(
    env, cluster, git_server, kube, namespace, tmp_path, make_repo
):
    from lightkube import codecs

    from pypod.rbac import role_objects

    for obj in role_objects(namespace, "ServiceAccount", "default"):
        kube.create(codecs.from_dict(obj), namespace=namespace)
    repo = make_repo()
    repo.commit(
        {
            "requirements.txt": "distributed==2026.8.0\nlightkube==1.0.1\n",
            "helpers.py": "import os\ndef where_and_what(x):\n    return os.environ['POD_NAME'], x * x\n",
            "main.py": DASK_MAIN,
        }
    )
    dask_env = dict(env, IMAGE_REPO=f"{cluster.registry}/dask-tests")  # the dependency image with dask, shared
    result = run_cli(["run", "--git", "main.py"], dask_env, cwd=repo.work, timeout=900)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "INIT ['pypod-git']" in result.stdout
    result_line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT"))
    assert "-w0', 49)" in result_line  # run by the worker pod, from the project's own module


def test_ssh_with_a_key_secret_runs_and_an_unknown_host_key_is_refused(
    env, cluster, git_server, kube, namespace, tmp_path, make_repo
):
    """The ssh side of the git server: sshd on the bridge, keys only, forced to git-shell."""
    assert git_server.ssh_port, "the harness's gitssh service is not running"
    repo = make_repo(private=True)
    commit = repo.commit({"requirements.txt": "", "app.py": "print('over ssh')\n"})
    url = git_server.ssh_url(repo.bare)
    ssh = f"ssh -i {git_server.ssh_key} -o IdentitiesOnly=yes -o BatchMode=yes"
    ssh += f" -o UserKnownHostsFile={git_server.known_hosts}"
    laptop = dict(env, GIT_SSH_COMMAND=ssh)  # this machine's own ssh set-up, for ls-remote
    created = run_cli(
        ["git-secret", "repo-key", "--ssh-key", git_server.ssh_key, "--known-hosts", git_server.known_hosts], env
    )
    assert created.returncode == 0, created.stderr
    result = run_cli(["run", "--git", f"{url}@main", "--git-secret", "repo-key", "app.py"], laptop, cwd=repo.work)
    assert result.returncode == 0, result.stderr + result.stdout
    assert result.stdout.strip() == "over ssh"
    assert f"code: {url} at {commit[:7]} (main)" in result.stderr
    private_key = Path(git_server.ssh_key).read_text().splitlines()[1]
    assert private_key not in result.stdout + result.stderr

    wrong_hosts = tmp_path / "known_hosts"
    wrong_hosts.write_text(f"[10.88.0.1]:{git_server.ssh_port} {Path(git_server.ssh_key + '.pub').read_text()}")
    run_cli(["git-secret", "wrong-host", "--ssh-key", git_server.ssh_key, "--known-hosts", str(wrong_hosts)], env)
    refused = run_cli(["run", "--git", f"{url}@main", "--git-secret", "wrong-host", "app.py"], laptop, cwd=repo.work)
    assert refused.returncode == 72
    assert "known_hosts" in refused.stderr.strip().splitlines()[-1]
