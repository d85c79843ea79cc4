"""Image speed: a source-only change to a pushed image, against a warm `podman build`
of the equivalent Dockerfile (dependencies cached, `COPY . .` last) and its push, and
the same with docker buildx (the harness's buildkitd);
and tag hashing of a 50,000-file tree (julia_pod runs sha1sum over every file).

    python benchmarks/images.py

Starts the harness if it is not up (and stops it again afterwards).
"""

from __future__ import annotations

import os
import random
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
from harness.images import podman_env  # noqa: E402
from harness.layout import Layout  # noqa: E402
from pypod.image.deps import ensure_dependency_image  # noqa: E402
from pypod.image.files import scan_project  # noqa: E402
from pypod.image.registry import ImageRef  # noqa: E402
from pypod.image.ship import ship_source_image  # noqa: E402
from pypod.image.tag import source_fingerprint  # noqa: E402
from pypod.project import load_project  # noqa: E402


def bench(name: str, value: float, unit: str) -> None:
    print(f"BENCH {name} {value:.3f} {unit}", flush=True)


def make_tree(root: Path, files: int, total_bytes: int) -> None:
    rng = random.Random(7)
    size = total_bytes // files
    for i in range(files):
        folder = root / f"pkg{i % 50}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"mod{i}.py").write_bytes(rng.randbytes(size))
    (root / "pyproject.toml").write_text("[project]\nname = 'bench'\n")


def edit(root: Path, n: int) -> None:
    (root / "pkg0" / "mod0.py").write_text(f"# edit {n}\n")


def source_update(info, runs: int) -> None:  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bench"
        make_tree(root, 1000, 10_000_000)
        repo = f"{info.registry}/bench-{uuid.uuid4().hex[:8]}"

        def pypod_ship():  # type: ignore[no-untyped-def]
            """What `pypod run` does before creating the Job: the dependency image (none
            here: the base, pinned by digest), then the source on top."""
            project = load_project(root)
            deps = ensure_dependency_image(project, info.base_image, ImageRef.parse(repo))
            return ship_source_image(project, deps.reference, repo)

        pypod_ship()  # first push: the 10 MB layer
        pypod_times = []
        for n in range(runs):
            edit(root, n)
            started = time.perf_counter()
            shipped = pypod_ship()
            pypod_times.append(time.perf_counter() - started)
            assert not shipped.reused
        # The anchor: the same project as a Dockerfile whose last step is COPY . .
        (root / "Containerfile").write_text(f"FROM {info.base_image}\nWORKDIR /workspace\nCOPY . .\n")
        env = podman_env(Layout.default())
        ref = f"{info.registry}/bench-podman-{uuid.uuid4().hex[:8]}:latest"

        def podman_build_and_push() -> None:
            for cmd in (
                ["podman", "build", "--tls-verify=false", "--network=none", "-q", "-t", ref, str(root)],
                ["podman", "push", "--tls-verify=false", "-q", ref],
            ):
                subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        podman_build_and_push()  # warm: base pulled, cache filled
        podman_times = []
        for n in range(runs):
            edit(root, 100 + n)
            started = time.perf_counter()
            podman_build_and_push()
            podman_times.append(time.perf_counter() - started)
        subprocess.run(["podman", "rmi", "-f", ref], env=env, capture_output=True)
        # A second anchor where the harness has docker buildx (through its buildkitd).
        buildx_times = []
        if info.docker_config:
            buildx_env = dict(os.environ, DOCKER_CONFIG=info.docker_config)
            buildx_ref = f"{info.registry}/bench-buildx-{uuid.uuid4().hex[:8]}:latest"
            output = f"--output=type=image,name={buildx_ref},push=true,registry.insecure=true"
            buildx = ["docker", "buildx", "build", "--platform", "linux/amd64", "-q", output]
            buildx += ["-f", str(root / "Containerfile"), str(root)]

            def buildx_build_and_push() -> None:
                subprocess.run(buildx, check=True, env=buildx_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            buildx_build_and_push()  # warm
            for n in range(runs):
                edit(root, 200 + n)
                started = time.perf_counter()
                buildx_build_and_push()
                buildx_times.append(time.perf_counter() - started)
    pypod_s, podman_s = statistics.median(pypod_times), statistics.median(podman_times)
    bench("source_update_s", pypod_s, "s")
    bench("source_update_podman_build_push_s", podman_s, "s (anchor: warm podman build + push)")
    bench("source_update_speedup", podman_s / pypod_s, "x")
    if buildx_times:
        buildx_s = statistics.median(buildx_times)
        bench("source_update_buildx_build_push_s", buildx_s, "s (anchor: warm docker buildx build --push)")
        bench("source_update_speedup_vs_buildx", buildx_s / pypod_s, "x")


def tag_hash(files: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "big"
        for i in range(files):
            folder = root / f"d{i % 500}"
            if i < 500:
                folder.mkdir(parents=True)
            (folder / f"f{i}.py").write_text(f"x = {i}\n")
        git = [
            "git",
            "-C",
            str(root),
            "-c",
            "user.name=b",
            "-c",
            "user.email=b@b",
            "-c",
            "gc.auto=0",
            "-c",
            "maintenance.auto=false",
        ]
        subprocess.run([*git, "init", "-q"], check=True)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-qm", "bench"], check=True)
        (root / "d0" / "f0.py").write_text("x = 'edited'\n")  # one edit not yet committed
        cache = Path(tmp) / "cache"
        started = time.perf_counter()
        source_fingerprint(root, scan_project(root), cache)
        cold = time.perf_counter() - started
        warm_runs = []
        for _ in range(3):
            started = time.perf_counter()
            source_fingerprint(root, scan_project(root), cache)
            warm_runs.append(time.perf_counter() - started)
        started = time.perf_counter()
        subprocess.run(
            f"find {root} -path '*/.git' -prune -o -type f -print0 | sort -z | xargs -0 sha1sum | sha1sum",
            shell=True,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        sha1sum = time.perf_counter() - started
        shutil.rmtree(root)
    bench("tag_hash_50k_cold_s", cold, "s")
    bench("tag_hash_50k_s", statistics.median(warm_runs), "s (warm)")
    bench("tag_hash_50k_sha1sum_s", sha1sum, "s (anchor: julia_pod-style sha1sum of every file)")


def main() -> None:
    layout = Layout.default()
    started_here = not harness_cluster.is_up(layout)
    info = harness_cluster.up(layout, report=lambda m: print(m, file=sys.stderr))
    try:
        os.environ.setdefault("PYPOD_CACHE", tempfile.mkdtemp(prefix="pypod-bench-cache-"))
        source_update(info, runs=5)
        tag_hash(50_000)
    finally:
        if started_here:
            harness_cluster.down(layout, report=lambda m: print(m, file=sys.stderr))


if __name__ == "__main__":
    main()
