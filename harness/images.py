"""Images built on this machine, since nothing can be pulled from the internet.

- the pod sandbox ("pause") image: busybox-static in an empty image, sleeping forever;
- a Python base image: a Debian minbase rootfs with python3, pushed to the local registry;
- a git image (git, openssh-client) for `pypod --git`'s initContainer, pushed beside it.

Both are cached as tarballs under the build cache; podman turns them into images.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .errors import HarnessError
from .layout import BASE_IMAGE_NAME, BASE_IMAGE_TAG, GIT_IMAGE_NAME, GIT_IMAGE_TAG, PAUSE_IMAGE, Layout

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("PYPOD_HARNESS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "procps")
# The base image has no git; `pypod --git`'s initContainer gets an image of its own.
GIT_PACKAGES = ("git", "openssh-client", "ca-certificates")

CONTAINERS_CONF = """\
# Written by the pypod harness. Root here lacks CAP_SYS_RESOURCE, so runc cannot
# raise rlimits above the current ones, and there is no systemd to manage cgroups.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


def containers_conf(layout: Layout) -> Path:
    """A containers.conf that lets podman run containers here; point CONTAINERS_CONF at it."""
    path = layout.cache / "containers.conf"
    if not path.exists() or path.read_text() != CONTAINERS_CONF:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(CONTAINERS_CONF)
    return path


def podman_env(layout: Layout) -> dict[str, str]:
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(containers_conf(layout))
    return env


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None, stdin: int | None = None) -> str:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=stdin)
    if result.returncode != 0:
        raise HarnessError(
            f"{what} failed (exit {result.returncode})",
            hint=f"command: {' '.join(cmd)}",
            log_tail=(result.stderr or result.stdout)[-2000:],
        )
    return result.stdout


def pause_archive(layout: Layout, report: Callable[[str], None]) -> Path:
    """A docker-archive of the sandbox image, tagged as the kubelet's default pause image."""
    archive = layout.images / "pause.tar"
    if archive.exists():
        return archive
    layout.images.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    busybox = shutil.which("busybox") or "/bin/busybox"
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        with tarfile.open(rootfs, "w") as tar:
            info = tar.gettarinfo(busybox, arcname="bin/busybox")
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with open(busybox, "rb") as data:
                tar.addfile(info, data)
        env = podman_env(layout)
        local = "localhost/pypod-harness/pause:build"
        _run(
            ["podman", "import", "--change", 'ENTRYPOINT ["/bin/busybox", "sleep", "2147483647"]', str(rootfs), local],
            "podman import of the pause image",
            env,
        )
        _run(["podman", "tag", local, PAUSE_IMAGE], "podman tag", env)
        partial = archive.with_suffix(".partial")
        _run(
            ["podman", "save", "--format", "docker-archive", "-o", str(partial), PAUSE_IMAGE],
            "podman save of the pause image",
            env,
        )
        partial.rename(archive)
    report(f"built the pause image in {time.monotonic() - started:.1f}s")
    return archive


def python_rootfs(layout: Layout, report: Callable[[str], None]) -> Path:
    """A tarball of a Debian minbase rootfs with python3 (debootstrap, a few minutes cold)."""
    return debian_rootfs(layout, "python", BASE_PACKAGES, "the Python base image", report)


def git_rootfs(layout: Layout, report: Callable[[str], None]) -> Path:
    """A tarball of a Debian minbase rootfs with git and ssh, for `pypod --git`'s initContainer."""
    return debian_rootfs(layout, "git", GIT_PACKAGES, "the git image", report)


def debian_rootfs(
    layout: Layout, name: str, packages: tuple[str, ...], what: str, report: Callable[[str], None]
) -> Path:
    """A tarball of a Debian minbase rootfs with `packages` (debootstrap), cached by name."""
    archive = layout.images / f"{name}-{DEBIAN_SUITE}-rootfs.tar"
    if archive.exists():
        return archive
    if shutil.which("debootstrap") is None:
        raise HarnessError("debootstrap is not installed", hint="apt-get install debootstrap")
    layout.images.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=layout.images) as tmp:
        rootfs = Path(tmp) / "rootfs"
        log = layout.images / f"debootstrap-{name}.log"
        with log.open("w") as out:
            result = subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(packages)}",
                    DEBIAN_SUITE,
                    str(rootfs),
                    DEBIAN_MIRROR,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if result.returncode != 0:
            raise HarnessError(
                f"debootstrap of {what} failed (exit {result.returncode})",
                hint=f"is {DEBIAN_MIRROR} reachable? Set PYPOD_HARNESS_DEBIAN_MIRROR to another mirror; log: {log}",
                log_tail="\n".join(log.read_text(errors="replace").splitlines()[-10:]),
            )
        # Slim what no container needs: apt lists and caches, docs.
        for sub in ("var/lib/apt/lists", "var/cache/apt/archives", "usr/share/doc", "usr/share/man"):
            shutil.rmtree(rootfs / sub, ignore_errors=True)
        partial = archive.with_suffix(".partial")
        _run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], "tar of the rootfs")
        partial.rename(archive)
    report(f"built the rootfs of {what} in {time.monotonic() - started:.0f}s")
    return archive


def base_image_ref(registry: str) -> str:
    return f"{registry}/{BASE_IMAGE_NAME}:{BASE_IMAGE_TAG}"


def registry_has(ref: str) -> bool:
    result = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
        capture_output=True,
        text=True,
    )
    return result.returncode == 0


def push_base_image(layout: Layout, registry: str, report: Callable[[str], None]) -> str:
    """Make sure the Python base image is in the registry; returns its reference."""
    ref = base_image_ref(registry)
    if registry_has(ref):
        return ref
    rootfs = python_rootfs(layout, report)
    started = time.monotonic()
    env = podman_env(layout)
    _run(
        [
            "podman",
            "import",
            "--change",
            'CMD ["python3"]',
            "--change",
            "ENV LANG=C.UTF-8",
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            str(rootfs),
            ref,
        ],
        "podman import of the Python base image",
        env,
    )
    _run(["podman", "push", "--tls-verify=false", ref], "podman push of the Python base image", env)
    report(f"pushed {ref} in {time.monotonic() - started:.1f}s")
    return ref


def git_image_ref(registry: str) -> str:
    return f"{registry}/{GIT_IMAGE_NAME}:{GIT_IMAGE_TAG}"


def push_git_image(layout: Layout, registry: str, report: Callable[[str], None]) -> str:
    """Make sure the git image is in the registry; returns its reference."""
    ref = git_image_ref(registry)
    if registry_has(ref):
        return ref
    rootfs = git_rootfs(layout, report)
    started = time.monotonic()
    env = podman_env(layout)
    path = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    _run(
        ["podman", "import", "--change", 'CMD ["git"]', "--change", path, str(rootfs), ref],
        "podman import of the git image",
        env,
    )
    _run(["podman", "push", "--tls-verify=false", ref], "podman push of the git image", env)
    report(f"pushed {ref} in {time.monotonic() - started:.1f}s")
    return ref
