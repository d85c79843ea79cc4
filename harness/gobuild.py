"""Build the Kubernetes components and kwok from their Go modules, cached by version.

k8s.io/kubernetes is not meant to be a dependency: its go.mod points its staging
modules at ./staging/... . A scratch module that requires it must replace each of
those with the published k8s.io/<m> at the matching v0.x version.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import HarnessError
from .layout import (
    BUILDKIT_VERSION,
    BUILDX_VERSION,
    COREDNS_VERSION,
    KUBE_COMMANDS,
    KUBERNETES_VERSION,
    KUEUE_VERSION,
    KWOK_VERSION,
    STAGING_VERSION,
    Layout,
)

_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[\w.\-/]+)\s+=>\s+\./staging/\S+\s*$", re.MULTILINE)


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """The module paths that k8s.io/kubernetes's go.mod replaces with ./staging folders."""
    return sorted(set(_STAGING_REPLACE.findall(kubernetes_go_mod)))


def scratch_go_mod(modules: Iterable[str], go_version: str) -> str:
    """The go.mod of the scratch module that builds k8s.io/kubernetes's commands."""
    lines = [
        "module pypod.local/harness-build",
        "",
        f"go {go_version}",
        "",
        f"require k8s.io/kubernetes {KUBERNETES_VERSION}",
        "",
    ]
    lines += [f"replace {module} => {module} {STAGING_VERSION}" for module in modules]
    return "\n".join(lines) + "\n"


def version_ldflags() -> str:
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    pkg = "k8s.io/component-base/version"
    return " ".join(
        [
            "-s -w",
            f"-X {pkg}.gitVersion={KUBERNETES_VERSION}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    )


def _go_env(layout: Layout) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-p=2")
    env["CGO_ENABLED"] = "0"
    env["GOTOOLCHAIN"] = env.get("GOTOOLCHAIN", "auto")
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        result = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise HarnessError(
            f"`{' '.join(cmd[:3])} ...` failed (exit {result.returncode})",
            hint=f"full log: {log}",
            log_tail=tail,
        )


def _go_version() -> str:
    out = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=True)
    match = re.match(r"go(\d+\.\d+)", out.stdout.strip())
    return match.group(1) if match else "1.24"


def _prepare_scratch_module(layout: Layout, env: dict[str, str], log: Path) -> None:
    mod_dir = layout.gomod
    mod_dir.mkdir(parents=True, exist_ok=True)
    ready = mod_dir / ".ready"
    if ready.exists():
        return
    info = subprocess.run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"],
        cwd=mod_dir.parent,
        env=env,
        capture_output=True,
        text=True,
    )
    if info.returncode != 0:
        raise HarnessError(
            f"could not download k8s.io/kubernetes@{KUBERNETES_VERSION}: {info.stderr.strip()[-300:]}",
            hint="check that the Go module proxy is reachable (go env GOPROXY)",
        )
    go_mod_path = Path(json.loads(info.stdout)["GoMod"])
    modules = staging_modules(go_mod_path.read_text())
    if not modules:
        raise HarnessError(f"no staging replace lines found in {go_mod_path}")
    (mod_dir / "go.mod").write_text(scratch_go_mod(modules, _go_version()))
    (mod_dir / "tools.go").write_text("package main\n\nfunc main() {}\n")
    for command in KUBE_COMMANDS:
        _run(["go", "get", f"k8s.io/kubernetes/cmd/{command}@{KUBERNETES_VERSION}"], mod_dir, env, log)
    ready.touch()


def build_kubernetes(layout: Layout, report: Callable[[str], None]) -> list[str]:
    """Build each missing Kubernetes command; returns the names built."""
    missing = [c for c in KUBE_COMMANDS if not layout.binary(c).exists()]
    if not missing:
        return []
    _require_go()
    layout.bin.mkdir(parents=True, exist_ok=True)
    env = _go_env(layout)
    log = layout.cache / "build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    _prepare_scratch_module(layout, env, log)
    report(f"go modules ready in {time.monotonic() - started:.0f}s")
    for command in missing:
        started = time.monotonic()
        tmp = layout.bin / f".{command}.tmp"
        _run(
            [
                "go",
                "build",
                "-trimpath",
                "-tags",
                "selinux,notest",
                "-ldflags",
                version_ldflags(),
                "-o",
                str(tmp),
                f"k8s.io/kubernetes/cmd/{command}",
            ],
            layout.gomod,
            env,
            log,
        )
        tmp.rename(layout.binary(command))
        report(f"built {command} in {time.monotonic() - started:.0f}s")
    return missing


def build_kwok(layout: Layout, report: Callable[[str], None]) -> list[str]:
    if layout.binary("kwok").exists():
        return []
    _require_go()
    env = _go_env(layout)
    env["GOBIN"] = str(layout.bin)
    log = layout.cache / "build.log"
    started = time.monotonic()
    _run(["go", "install", f"sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"], layout.cache, env, log)
    report(f"built kwok in {time.monotonic() - started:.0f}s")
    return ["kwok"]


@dataclass(frozen=True)
class GoTool:
    """A command built in a scratch module of its own, rebuilt when `version` changes.

    A scratch module rather than `go install module@version`, which refuses modules
    whose go.mod has exclude or replace directives (buildkit, buildx)."""

    name: str  # the binary's name under layout.bin
    module: str
    version: str
    package: str  # what `go build` builds; "." for the scratch module's own main.go
    ldflags: str = "-s -w"
    main_go: str = ""  # that main.go, for a tool assembled from a module's packages
    get: tuple[str, ...] = ()  # packages to `go get` (default: `package`)


# CoreDNS's own main links all ~60 plugins, the cloud DNS providers' SDKs among them.
# CoreDNS documents building a binary with a chosen set instead: a main that imports
# coremain and those plugins. The directive order stays CoreDNS's own (dnsserver's list).
COREDNS_PLUGINS = ("bind", "cache", "errors", "health", "kubernetes", "loadbalance", "ready", "template")
COREDNS_MAIN = (
    "package main\n\nimport (\n"
    + '\t"github.com/coredns/coredns/coremain"\n'
    + "".join(f'\t_ "github.com/coredns/coredns/plugin/{p}"\n' for p in COREDNS_PLUGINS)
    + ")\n\nfunc main() { coremain.Run() }\n"
)

GO_TOOLS = (
    # Both report the version from <module>/version.Version (else "v0.0.0+unknown").
    GoTool(
        "buildkitd",
        "github.com/moby/buildkit",
        BUILDKIT_VERSION,
        "github.com/moby/buildkit/cmd/buildkitd",
        f"-s -w -X github.com/moby/buildkit/version.Version={BUILDKIT_VERSION}",
    ),
    GoTool(
        "docker-buildx",
        "github.com/docker/buildx",
        BUILDX_VERSION,
        "github.com/docker/buildx/cmd/buildx",
        f"-s -w -X github.com/docker/buildx/version.Version={BUILDX_VERSION}",
    ),
    GoTool(
        "coredns",
        "github.com/coredns/coredns",
        COREDNS_VERSION,
        ".",
        main_go=COREDNS_MAIN,
        get=(
            "github.com/coredns/coredns/coremain",
            *(f"github.com/coredns/coredns/plugin/{p}" for p in COREDNS_PLUGINS),
        ),
    ),
    GoTool(
        "kueue",
        "sigs.k8s.io/kueue",
        KUEUE_VERSION,
        "sigs.k8s.io/kueue/cmd/kueue",
        f"-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion={KUEUE_VERSION}",
    ),
)
GO_TOOL_NAMES = tuple(tool.name for tool in GO_TOOLS)


def _stamp(layout: Layout, name: str) -> Path:
    return layout.bin / f".{name}.version"


def tool_is_current(layout: Layout, tool: GoTool) -> bool:
    stamp = _stamp(layout, tool.name)
    return layout.binary(tool.name).exists() and stamp.exists() and stamp.read_text() == tool.version


def build_go_tools(layout: Layout, report: Callable[[str], None], tools: Iterable[GoTool] = GO_TOOLS) -> list[str]:
    """Build each tool that is missing or was built at another version; returns the names built."""
    built = []
    for tool in tools:
        if tool_is_current(layout, tool):
            continue
        _require_go()
        env = _go_env(layout)
        log = layout.cache / "build.log"
        started = time.monotonic()
        mod_dir = layout.cache / f"gomod-{tool.name}"
        mod_dir.mkdir(parents=True, exist_ok=True)
        layout.bin.mkdir(parents=True, exist_ok=True)
        if not (mod_dir / "go.mod").exists():
            _run(["go", "mod", "init", f"pypod.local/harness-{tool.name}"], mod_dir, env, log)
        if tool.main_go:
            (mod_dir / "main.go").write_text(tool.main_go)
        packages = tool.get or (tool.package,)
        _run(["go", "get", *(f"{package}@{tool.version}" for package in packages)], mod_dir, env, log)
        tmp = layout.bin / f".{tool.name}.tmp"
        _run(["go", "build", "-trimpath", "-ldflags", tool.ldflags, "-o", str(tmp), tool.package], mod_dir, env, log)
        tmp.rename(layout.binary(tool.name))
        _stamp(layout, tool.name).write_text(tool.version)
        report(f"built {tool.name} {tool.version} in {time.monotonic() - started:.0f}s")
        built.append(tool.name)
    return built


def _require_go() -> None:
    if shutil.which("go") is None:
        raise HarnessError(
            "the Go toolchain is not on PATH",
            hint="install Go (apt-get install golang, or from go.dev) and run `harness build` again",
        )


# Kueue's manifests as its module ships them; `harness up` adapts them (harness/kueue.py).
KUEUE_MANIFEST_DIRS = ("crd", "webhook", "visibility")


def kueue_manifests(layout: Layout) -> Path:
    """Kueue's config/components/{crd,webhook,visibility}, copied out of the Go module
    cache (which `go clean -modcache` may empty) beside the binary."""
    target = layout.kueue_manifests
    if (target / ".ready").exists():
        return target
    env = _go_env(layout)
    info = subprocess.run(
        ["go", "list", "-m", "-json", "sigs.k8s.io/kueue"],
        cwd=layout.cache / "gomod-kueue",
        env=env,
        capture_output=True,
        text=True,
    )
    if info.returncode != 0:
        raise HarnessError(
            f"cannot find the sigs.k8s.io/kueue module: {info.stderr.strip()[-300:]}",
            hint="run `python -m harness build` again",
        )
    source = Path(json.loads(info.stdout)["Dir"]) / "config" / "components"
    shutil.rmtree(target, ignore_errors=True)
    for sub in KUEUE_MANIFEST_DIRS:
        shutil.copytree(source / sub, target / sub)
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # the module cache's copies are read-only
    (target / ".ready").touch()
    return target
