"""`harness build`: Debian packages, the Go builds and the local images, each
skipped when already present. Prints what it did and how long each step took.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .errors import HarnessError
from .gobuild import build_go_tools, build_kubernetes, build_kwok, kueue_manifests
from .images import git_rootfs, pause_archive, python_rootfs
from .layout import CNI_PACKAGE, CNI_PLUGIN_DIR, CNI_PLUGINS, HOST_TOOLS, Layout
from .storage import build_provisioner, helper_archive

Report = Callable[[str], None]


def missing_packages() -> list[str]:
    packages = [pkg for tool, pkg in HOST_TOOLS.items() if tool != "go" and shutil.which(tool) is None]
    if any(not (CNI_PLUGIN_DIR / plugin).exists() for plugin in CNI_PLUGINS):
        packages.append(CNI_PACKAGE)
    return sorted(set(packages))


def install_packages(report: Report) -> list[str]:
    packages = missing_packages()
    if not packages:
        return []
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise HarnessError(
            f"missing Debian packages: {' '.join(packages)}",
            hint=f"apt-get install {' '.join(packages)}",
        )
    started = time.monotonic()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Packages with a service (openssh-server) must not start it: the harness runs its own.
    policy = Path("/usr/sbin/policy-rc.d")
    own_policy = not policy.exists()
    if own_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
            result = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if result.returncode != 0:
                raise HarnessError(
                    f"`{' '.join(cmd[:3])}` failed (exit {result.returncode})",
                    hint=f"install by hand: apt-get install {' '.join(packages)}",
                    log_tail=result.stderr[-1500:],
                )
    finally:
        if own_policy:
            policy.unlink(missing_ok=True)
    report(f"installed {' '.join(packages)} in {time.monotonic() - started:.0f}s")
    return packages


def build(layout: Layout | None = None, report: Report = print) -> None:
    layout = layout or Layout.default()
    began = time.monotonic()
    install_packages(report)
    built = build_kubernetes(layout, report) + build_kwok(layout, report) + build_go_tools(layout, report)
    kueue_manifests(layout)
    built += build_provisioner(layout, report)
    pause_archive(layout, report)
    helper_archive(layout, report)
    python_rootfs(layout, report)
    git_rootfs(layout, report)
    what = ", ".join(built) if built else "nothing new (all cached)"
    report(f"harness build: {what}; {time.monotonic() - began:.0f}s; cache {layout.cache}")
