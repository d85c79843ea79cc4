"""Build and push the dependency image with whichever builder is present:
docker buildx, podman or buildah (`--builder` chooses). Thin: argv and a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import BuildError
from .registry import DEFAULT_PLATFORM, is_insecure

BUILDERS = ("docker", "podman", "buildah")
# Environment variables handed to dependency installs as a build secret, never as build args.
SECRET_ENV = {
    "PIP_INDEX_URL": ("PIP_INDEX_URL", "UV_INDEX_URL"),
    "UV_INDEX_URL": ("UV_INDEX_URL", "PIP_INDEX_URL"),
    "PIP_EXTRA_INDEX_URL": ("PIP_EXTRA_INDEX_URL", "UV_EXTRA_INDEX_URL"),
    "PRIVATE_REGISTRY_URL": ("PIP_EXTRA_INDEX_URL", "UV_EXTRA_INDEX_URL"),
}


@dataclass(frozen=True)
class Builder:
    name: str
    binary: str
    # docker only: buildx's driver. "docker" (the engine's own builder) keeps its cache in
    # the engine; the others (docker-container, remote, kubernetes) export it to the registry.
    driver: str = ""

    @property
    def registry_cache(self) -> bool:
        return self.name == "docker" and self.driver not in ("", "docker")


def find_builder(choice: str | None, local: bool = False) -> Builder:
    """The chosen builder, or the first usable one. With local=True (--no-push) the
    image must stay in the builder's store: docker then needs a running engine to load
    into, and without one the next builder is tried (or, when docker was chosen, refused)."""
    names = [choice] if choice else list(BUILDERS)
    for name in names:
        if name not in BUILDERS:
            raise BuildError(f"unknown builder {name!r}", hint=f"choose one of: {', '.join(BUILDERS)}")
        binary = shutil.which(name)
        if binary and name == "docker":
            driver = _buildx_driver(binary)
            if driver is None:
                continue
            if local and not _engine_running(binary):
                if choice:
                    hint = "start the engine, use --builder podman or buildah, or push to a registry (drop --no-push)"
                    raise BuildError(
                        "--no-push with docker needs a running Docker engine to load the image into", hint=hint
                    )
                continue
            return Builder(name, binary, driver)
        if binary:
            return Builder(name, binary)
    wanted = choice or " or ".join(BUILDERS)
    raise BuildError(
        f"no image builder found ({wanted})",
        hint="install podman (apt-get install podman) or docker with buildx, or pass --image to skip building",
    )


def _engine_running(docker: str) -> bool:
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def base_registries(containerfile: str, build_args: tuple[tuple[str, str], ...] = ()) -> set[str]:
    """The registries of the images a Containerfile starts from or copies from, with
    `$NAME` / `${NAME}` taken from `build_args`, else from the ARG's default."""
    found = set()
    stages = set()
    values = {}
    for line in containerfile.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0].upper() == "ARG" and len(words) > 1:
            name, _, default = words[1].partition("=")
            values.setdefault(name, default)
        values.update(build_args)
        words = [re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), w) for w in words]
        refs = []
        if words[0].upper() == "FROM":
            args = [w for w in words[1:] if not w.startswith("--")]
            if args:
                refs.append(args[0])
            if len(args) >= 3 and args[1].upper() == "AS":
                stages.add(args[2].lower())
        elif words[0].upper() in ("COPY", "ADD"):
            refs += [w.split("=", 1)[1] for w in words[1:] if w.startswith("--from=")]
        for ref in refs:
            if ref.lower() in stages or ref.isdigit() or ref.lower() == "scratch":
                continue
            first = ref.split("/", 1)[0]
            registry = first if "/" in ref and ("." in first or ":" in first or first == "localhost") else "docker.io"
            found.add(registry)
    return found


def image_exists(builder: Builder, ref: str) -> bool:
    """Whether the builder's own image store holds `ref` (for --no-push)."""
    command = {
        "podman": [builder.binary, "image", "exists", ref],
        "buildah": [builder.binary, "inspect", "--type", "image", ref],
        "docker": [builder.binary, "image", "inspect", ref],
    }[builder.name]
    return subprocess.run(command, capture_output=True).returncode == 0


def _buildx_driver(docker: str) -> str | None:
    """The driver of buildx's current builder, or None when buildx is missing or its
    builder cannot be reached."""
    try:
        result = subprocess.run([docker, "buildx", "inspect"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return buildx_driver(result.stdout) if result.returncode == 0 else None


def buildx_driver(inspect_output: str) -> str | None:
    """Pure: the driver of a usable builder from `docker buildx inspect`, else None.
    inspect exits 0 even when it cannot reach the builder: the default builder without
    an engine prints an empty driver and an `Error:` line; a remote builder whose
    daemon is gone shows every node `inactive` (a docker-container builder is booted
    by buildx when inactive, so that one counts)."""
    driver = ""
    statuses = []
    for line in inspect_output.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Error":
            return None
        if key.strip() == "Driver" and not driver:
            driver = value.strip()
        if key.strip() == "Status":
            statuses.append(value.strip())
    if not driver or (driver == "remote" and statuses and all(s == "inactive" for s in statuses)):
        return None
    return driver


def build_commands(
    builder: Builder,
    containerfile: str,
    dockerfile: Path,
    context: Path,
    ref: str,
    secrets: list[str],
    digest_file: Path,
    push: bool,
    cache_ref: str | None,
    platform: str = DEFAULT_PLATFORM,
    build_args: tuple[tuple[str, str], ...] = (),
) -> list[list[str]]:
    """Pure: the builder's commands that build `ref` (and push it, with push=True).
    `build_args` become `--build-arg K=V`, which all three builders take."""
    insecure = is_insecure(ref.split("/", 1)[0])
    args = [f"--build-arg={key}={value}" for key, value in build_args]
    if builder.name == "docker":
        tls = ",registry.insecure=true" if insecure else ""
        output = [f"--output=type=image,name={ref},push=true{tls}"] if push else ["-t", ref, "--load"]
        cache = []
        if cache_ref and builder.registry_cache and push:
            # mode=max keeps every stage's layers, so an edit to one requirement reuses
            # the venv and uv layers from any machine that can read the registry. The
            # cache is an optimisation: a registry refusing it (immutable tags) must not
            # fail the build. image-manifest: registries such as ECR take only manifests.
            cache = [f"--cache-from=type=registry,ref={cache_ref}{tls}"]
            cache += [
                f"--cache-to=type=registry,ref={cache_ref},mode=max,image-manifest=true,oci-mediatypes=true,"
                f"ignore-error=true{tls}"
            ]
        # No --network host here: a remote or kubernetes builder may not allow that
        # entitlement, and the builder's own network reaches the package indexes.
        build = [builder.binary, "buildx", "build", "--platform", platform, *args, *secrets]
        build += ["-f", str(dockerfile)]
        return [[*build, *output, *cache, "--metadata-file", str(digest_file), str(context)]]
    verb = "build" if builder.name == "podman" else "bud"
    # Pulls from a plain-HTTP loopback registry need TLS off; only when every base
    # image comes from one, so no public pull goes unverified.
    bases = base_registries(containerfile, build_args)
    plain = ["--tls-verify=false"] if bases and all(is_insecure(r) for r in bases) else []
    build = [builder.binary, verb, "--platform", platform, "--network", "host", *plain, *args, *secrets]
    build += ["-f", str(dockerfile)]
    commands = [[*build, "-t", ref, str(context)]]
    if push:
        tls_off = ["--tls-verify=false"] if insecure else []
        commands.append([builder.binary, "push", *tls_off, "--digestfile", str(digest_file), ref])
    return commands


def secret_env_text(environ: dict[str, str]) -> str:
    """`export` lines for the secret file: index URLs and a GitHub token (for git+https)."""
    lines = []
    for source, targets in SECRET_ENV.items():
        if environ.get(source):
            lines += [f"export {t}={shlex.quote(environ[source])}" for t in targets]
    token_file = environ.get("GITHUB_TOKEN_FILE")
    if token_file and Path(token_file).expanduser().exists():
        token = Path(token_file).expanduser().read_text().strip()
        # git reads these for the one command; nothing is written to a config file.
        lines += [
            "export GIT_CONFIG_COUNT=1",
            f"export GIT_CONFIG_KEY_0={shlex.quote(f'url.https://x-access-token:{token}@github.com/.insteadOf')}",
            "export GIT_CONFIG_VALUE_0=https://github.com/",
        ]
    return "\n".join(lines) + "\n"


def ca_bundle(environ: dict[str, str]) -> Path | None:
    for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = environ.get(name)
        if value and Path(value).is_file():
            return Path(value)
    return None


def build_and_push(
    builder: Builder,
    containerfile: str,
    context: Path,
    ref: str,
    environ: dict[str, str],
    push: bool = True,
    log: Path | None = None,
    cache_ref: str | None = None,
    platform: str = DEFAULT_PLATFORM,
    build_args: tuple[tuple[str, str], ...] = (),
) -> str | None:
    """Build `ref` from `containerfile` in `context`, push it, return its digest
    (None with push=False). `cache_ref` names a registry build cache, for builders
    that keep one there (docker buildx, but for its engine's own driver)."""
    with tempfile.TemporaryDirectory(prefix="pypod-secrets-") as secrets_dir:
        secret_file = Path(secrets_dir) / "env"
        secret_file.write_text(secret_env_text(environ))
        secret_file.chmod(0o600)
        ca = ca_bundle(environ)
        ca_file = Path(secrets_dir) / "ca"
        ca_file.write_bytes(ca.read_bytes() if ca else b"")
        dockerfile = Path(secrets_dir) / "Containerfile"
        dockerfile.write_text(containerfile)
        digest_file = Path(secrets_dir) / "digest"
        secrets = ["--secret", f"id=pypod_env,src={secret_file}", "--secret", f"id=ca,src={ca_file}"]
        commands = build_commands(
            builder,
            containerfile,
            dockerfile,
            context,
            ref,
            secrets,
            digest_file,
            push,
            cache_ref,
            platform,
            build_args,
        )
        for command in commands:
            _run(command, log)
        if not push:
            return None
        text = digest_file.read_text().strip()
        if builder.name == "docker":
            return json.loads(text).get("containerimage.digest")
        return text


def _run(command: list[str], log: Path | None) -> None:
    env = dict(os.environ)
    out = open(log, "a") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT if log else subprocess.PIPE, env=env)
    finally:
        if log:
            out.close()  # type: ignore[union-attr]
    if result.returncode != 0:
        tail = ""
        if log and log.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-6:])
        elif result.stderr:
            tail = result.stderr.decode(errors="replace")[-600:]
        step = "push" if "push" in command[1:2] else "build"
        raise BuildError(_failure_message(step, result.returncode, tail), hint=_failure_hint(tail, log, step))


def _failure_message(step: str, code: int, tail: str) -> str:
    last = tail.strip().splitlines()[-1] if tail.strip() else ""
    return f"the dependency image {step} failed (exit {code}): {last}"


# How podman/buildah and buildx say that an image in FROM or COPY --from could not be had.
PULL_FAILED = (
    "no stage or image found with that name",
    "failed to resolve source metadata",
    "pinging container registry",
)


def _failure_hint(tail: str, log: Path | None, step: str = "build") -> str:
    where = f"; full log: {log}" if log else ""
    if "needs to be updated" in tail or "--locked" in tail:
        return "uv.lock is out of sync with pyproject.toml: run `uv lock` and retry" + where
    if "postBuild" in tail:
        return "the project's postBuild script failed: fix it and retry" + where
    if "unauthorized" in tail.lower() and step == "build":
        return "the registry refused a pull the build needs: log in to it (podman login / docker login)" + where
    if step == "build" and any(sign in tail for sign in PULL_FAILED):
        return (
            "the builder could not pull an image the build starts from: check that it reaches that registry, "
            "or give it a mirror (registries.conf for podman and buildah, buildkitd.toml for buildx)" + where
        )
    if "unauthorized" in tail.lower() or "403" in tail or "401" in tail:
        return "the registry refused the push: log in (podman login / docker login) and retry" + where
    return "fix the dependency files and retry" + where
