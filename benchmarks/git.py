"""--git against the image path: from `pypod run` to the driver container starting, on a
1,000-file repository.

- git_run_start_s: `pypod run --git` after a new commit was pushed (the initContainer
  fetches the commit; the image, the dependency image with pypod, is unchanged);
- image_run_start_s: `pypod run` after a one-file edit (a delta source layer is pushed).

Both in the same run, each the median of several after a warm-up; the container's first
line is its start time (time.time()), so the figure ends when the code starts running.

    python benchmarks/git.py

Starts the harness if it is not up (and stops it again afterwards); starts the git
server into it if missing.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness import cluster as harness_cluster  # noqa: E402
from harness.cluster import ClusterInfo, GitServer  # noqa: E402
from harness.images import git_image_ref  # noqa: E402
from harness.layout import Layout  # noqa: E402

RUNS = 5
APP = "import time; print(time.time(), flush=True)\n"


def bench(name: str, value: float, unit: str) -> None:
    print(f"BENCH {name} {value:.3f} {unit}", flush=True)


def git(cwd: Path, env: dict[str, str], *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def make_repo(root: Path, server: GitServer, env: dict[str, str]) -> Path:
    for i in range(1000):
        folder = root / f"pkg{i % 50}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"mod{i}.py").write_text(f"VALUE = {i}\n" + "# padding\n" * 40)
    (root / "requirements.txt").write_text("")
    (root / "app.py").write_text(APP)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    bare = Path(server.root) / "public" / f"{name}.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    git(root, env, "init", "-q", "-b", "main")
    git(root, env, "remote", "add", "origin", f"{server.url}/public/{name}.git")
    git(root, env, "add", "-A")
    git(root, env, "commit", "-qm", "start")
    git(root, env, "push", "-q", "origin", "main")
    return bare


def run_start(cwd: Path, env: dict[str, str], *flags: str) -> float:
    """Seconds from starting `pypod run` to the container's first line (its own clock)."""
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "pypod", "run", *flags, "app.py"], cwd=cwd, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"pypod run failed: {done.stderr[-2000:]}")
    return float(done.stdout.split()[0]) - started


def measure(info: ClusterInfo, server: GitServer) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        host = server.url.removeprefix("http://")
        (home / ".git-credentials").write_text(f"http://{server.user}:{server.token()}@{host}\n")
        (home / ".gitconfig").write_text("[credential]\n\thelper = store\n[user]\n\tname = b\n\temail = b@e\n")
        env = {
            **os.environ,
            **info.env(),
            "HOME": str(home),
            "PYPOD_CACHE": str(home / "cache"),
            "IMAGE_REPO": f"{info.registry}/bench-git-{uuid.uuid4().hex[:8]}",
            "PYPOD_GIT_IMAGE": git_image_ref(info.registry),
        }
        root = Path(tmp) / "project"
        root.mkdir()
        bare = make_repo(root, server, env)
        run_start(root, env, "--git")  # warm-up: the dependency image and pypod's layer
        run_start(root, env)  # warm-up: the first (full) source layer
        git_times, image_times = [], []
        for n in range(RUNS):
            (root / "pkg0" / "mod0.py").write_text(f"VALUE = {n}\n")
            git(root, env, "commit", "-qam", f"edit {n}")
            git(root, env, "push", "-q", "origin", "main")
            git_times.append(run_start(root, env, "--git"))
            (root / "pkg1" / "mod1.py").write_text(f"VALUE = {n}\n")  # uncommitted: the image path ships it
            image_times.append(run_start(root, env))
        bench("git_run_start_s", statistics.median(git_times), "s")
        bench("image_run_start_s", statistics.median(image_times), "s")
        shutil.rmtree(bare, ignore_errors=True)


def main() -> None:
    layout = Layout.default()
    started_here = not harness_cluster.is_up(layout)
    info = harness_cluster.up(layout, report=lambda m: print(m, file=sys.stderr))
    try:
        harness_cluster.start_services(layout, report=lambda m: print(m, file=sys.stderr))
        server = GitServer.load(layout)
        assert server is not None
        measure(info, server)
    finally:
        if started_here:
            harness_cluster.down(layout, report=lambda m: print(m, file=sys.stderr))


if __name__ == "__main__":
    main()
