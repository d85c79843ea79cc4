"""The generated dependency build: pure text from an EnvSpec.

The build sees only the environment files (never the source), so a source edit
cannot invalidate it. Credentials arrive as build secrets, sourced inside each RUN,
so they never reach a layer, the config or the history.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass

from ..errors import ProjectError
from .detect import EnvSpec
from .layer import WORKDIR
from .locks import lock_requirements
from .registry import DEFAULT_PLATFORM

VENV = "/opt/venv"
# uv's project commands (`uv add`, `uv remove`, `uv sync`) use the venv the image's
# interpreter runs from, not a /workspace/.venv (which the sync skips and the running
# interpreter would not see), so `uv add X` in a pod's REPL installs X where it can be
# imported at once; and uv never downloads another Python into it.
UV_ENV = f"UV_PROJECT_ENVIRONMENT={VENV} UV_PYTHON_DOWNLOADS=never"
ENV_DIR = "/tmp/pypod-env"
# Sourced at the start of every RUN that reaches the network: exports from the
# `pypod_env` secret (index URLs, tokens) and the CA bundle from the `ca` secret.
SECRETS = "--mount=type=secret,id=pypod_env --mount=type=secret,id=ca --mount=type=cache,target=/root/.cache/uv"
PRELUDE = (
    ". /run/secrets/pypod_env; "
    "if [ -s /run/secrets/ca ]; then "
    "export SSL_CERT_FILE=/run/secrets/ca PIP_CERT=/run/secrets/ca UV_NATIVE_TLS=1; fi; "
)
SUPPORTED = (
    "requirements",
    "pyproject",
    "uv",
    "conda",
    "poetry",
    "pdm",
    "pipenv",
    "pipfile",
    "setup.py",
    "none",
)
# micromamba is one static binary; its official image keeps it at /bin/micromamba.
MICROMAMBA_IMAGE = "docker.io/mambaorg/micromamba:2.0.5"
# setup.py declares its dependencies only when run: egg_info writes them to requires.txt,
# install_requires first, then sections `[extra]`, `[:marker]` and `[extra:marker]`. This
# script (run by the base's Python, any 3.x) keeps the unconditional ones, the marked ones
# with their marker, and those of the extras it is given.
SETUP_REQUIRES_SCRIPT = b"""import glob, sys
extras = set(sys.argv[1:])
lines = []
for path in glob.glob("/tmp/pypod-egg/*.egg-info/requires.txt"):
    section = ""
    for raw in open(path):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("["):
            section = line[1:-1]
            continue
        extra, _, marker = section.partition(":")
        if extra and extra not in extras:
            continue
        lines.append(line + " ; " + marker if marker else line)
sys.stdout.write("".join(line + "\\n" for line in lines))
"""
# Every generated image has `python`, the interpreter `python3` is (the venv's, where there
# is one: venv makes both), so `#!/usr/bin/env python` works; the line it prints tells
# pypod which Python the project got (pyversion.py reads it from the build log). A builder
# prints nothing for a step it takes from its cache, so this step alone is made to run in
# every build: the ARG before it gets a new value each time (deps.py), and every builder
# counts an ARG's value in the cache key of the RUNs after it.
BUILD_ID_ARG = "PYPOD_BUILD_ID"
PYTHON_STEP = (
    "RUN if ! command -v python >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1; then "
    'ln -s "$(command -v python3)" /usr/local/bin/python; fi; '
    "python -c \"import platform; print('pypod: project python', platform.python_version())\" || true"
)
# The project itself, installed editable-style: its source arrives later, in the source
# layer at /workspace, so the venv's site-packages gets a .pth naming where it will be
# (and synced edits are live, as with `pip install -e .`).
ITSELF_PTH = "_pypod_project.pth"
# Debian package names (policy 5.6.1), with an optional :arch and =version or /release.
APT_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]*(:[a-z0-9-]+)?([=/][A-Za-z0-9.+~:_-]+)?")


def apt_packages(text: str, where: str = "apt.txt") -> list[str]:
    """Pure: the packages of an apt.txt as repo2docker reads it: `#` starts a comment (on
    its own line or after a name), blank lines are skipped, the rest are package names.
    Sorted and unique, as repo2docker installs them."""
    packages = []
    for number, line in enumerate(text.splitlines(), 1):
        for word in line.partition("#")[0].split():
            if not APT_PACKAGE.fullmatch(word):
                raise ProjectError(
                    f"{where} line {number}: {word!r} is not a Debian package name",
                    hint="list one package per line; `#` starts a comment",
                )
            packages.append(word)
    return sorted(set(packages))


@dataclass(frozen=True)
class DependencyBuild:
    containerfile: str
    context_files: dict[str, bytes]  # name in the build context -> content
    key: str  # what the dependency image's tag is derived from

    @property
    def tag(self) -> str:
        return f"deps-{self.key}"


def _requirements_file(dependencies: tuple[str, ...]) -> bytes:
    return "".join(f"{dep}\n" for dep in dependencies).encode()


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _pth_step(spec: EnvSpec) -> str:
    entries = "".join(f"/{WORKDIR}{'/' + part if part else ''}\\n" for part in spec.itself_paths)
    return (
        f'RUN {VENV}/bin/python -c "import pathlib, sysconfig; '
        f"pathlib.Path(sysconfig.get_paths()['purelib'], '{ITSELF_PTH}').write_text('{entries}')\""
    )


def _setup_py_steps(
    spec: EnvSpec, files: dict[str, bytes], context: dict[str, bytes], names: list[str], extras: tuple[str, ...]
) -> str:
    """Copy setup.py (and setup.cfg) in, run egg_info, write its requirements to
    ENV_DIR/setup-requirements.txt: the shell commands of one RUN, from ENV_DIR."""
    for name in names:
        context[_name(name)] = files[name]
    context["pypod-requires.py"] = SETUP_REQUIRES_SCRIPT
    return (
        f"uv pip install --python {VENV}/bin/python -q setuptools && "
        "mkdir -p /tmp/pypod-egg && python setup.py -q egg_info --egg-base /tmp/pypod-egg && "
        f"python pypod-requires.py {' '.join(extras)} > setup-requirements.txt".rstrip()
    )


def render(
    spec: EnvSpec,
    base_image: str,
    files: dict[str, bytes],
    platform: str = DEFAULT_PLATFORM,
    include_dev: bool = True,
) -> DependencyBuild:
    """The Containerfile and context for `spec`. `files` holds the contents of spec.files.
    Development dependencies are installed unless include_dev is False (--no-dev).

    `base_image` should be a digest reference, so the key changes when the base does.
    """
    if spec.kind not in SUPPORTED:
        raise ProjectError(
            f"pypod cannot build a dependency image from {spec.kind} files yet ({spec.reason})",
            hint="use requirements.txt, a lockfile (uv, poetry, pdm, Pipfile), a Pipfile or [project] dependencies, "
            "or pass --image",
        )
    lines = [
        "# Generated by pypod: the project's dependencies, without its source.",
        f"FROM {base_image}",
        f"ENV VIRTUAL_ENV={VENV} PATH={VENV}/bin:$PATH UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy "
        f"PIP_DISABLE_PIP_VERSION_CHECK=1 {UV_ENV}",
    ]
    context: dict[str, bytes] = {}
    uv_install = f"uv pip install --python {VENV}/bin/python"
    if spec.apt_file:
        # The cleaned list, not the file: a comment edit rebuilds nothing.
        packages = apt_packages(files[spec.apt_file].decode(errors="replace"), spec.apt_file)
        context["apt.txt"] = "".join(f"{p}\n" for p in packages).encode()
        lines += [
            f"COPY apt.txt {ENV_DIR}/apt.txt",
            f"RUN {SECRETS} {PRELUDE}apt-get update && "
            f"xargs -a {ENV_DIR}/apt.txt apt-get install -y --no-install-recommends && rm -rf /var/lib/apt/lists/*",
        ]
    needs_venv = spec.kind not in ("none", "conda") or (spec.post_build and spec.kind != "conda")
    if spec.kind == "conda":
        # The conda environment is created at the venv's path, so PATH and the rest are the same.
        name = spec.files[0]
        context["environment.yml"] = files[name]
        lines += [
            f"COPY --from={MICROMAMBA_IMAGE} /bin/micromamba /usr/local/bin/micromamba",
            f"COPY environment.yml {ENV_DIR}/environment.yml",
            f"RUN {SECRETS} --mount=type=cache,target=/opt/conda/pkgs {PRELUDE}"
            f"MAMBA_ROOT_PREFIX=/opt/conda micromamba create -y -p {VENV} -f {ENV_DIR}/environment.yml && "
            f"micromamba clean -a -y && "
            f"if [ -x {VENV}/bin/python ]; then {VENV}/bin/python -m compileall -q {VENV}/lib; fi",
        ]
    if needs_venv:
        lines.append(f"RUN {SECRETS} {PRELUDE}python3 -m venv {VENV} && {VENV}/bin/pip install -q uv")
    itself = bool(spec.install_itself) and (include_dev or not spec.itself_is_dev)
    if spec.kind == "requirements":
        names = [f for f in spec.files if _name(f).startswith("requirements")]
        main = [n for n in names if _name(n) == "requirements.txt"] or names
        for name in names:
            context[_name(name)] = files[name]
        lines.append(f"COPY {' '.join(_name(n) for n in names)} {ENV_DIR}/")
        args = " ".join(f"-r {ENV_DIR}/{_name(n)}" for n in main)
        lines.append(f"RUN {SECRETS} {PRELUDE}cd {ENV_DIR} && {uv_install} {args}")
    elif spec.kind in ("pyproject", "pipfile", "poetry", "pdm", "pipenv"):
        # Only the dependency list counts: a version bump of the project rebuilds nothing.
        # Lockfiles are read as exact pins (locks.py), installed by uv like any list.
        if spec.kind in ("pyproject", "pipfile"):
            dependencies = spec.dependencies + (spec.dev_dependencies if include_dev else ())
        else:
            companion = next((f for f in spec.files[1:] if _name(f) == "pyproject.toml"), None)
            pyproject = tomllib.loads(files[companion].decode()) if companion else None
            text = files[spec.files[0]].decode()
            dependencies = tuple(lock_requirements(spec.kind, text, include_dev, pyproject, spec.folder))
        context["requirements.txt"] = _requirements_file(tuple(dict.fromkeys(dependencies)))
        if itself and spec.install_itself == "setup.py":
            names = [n for n in spec.files if _name(n) in ("setup.py", "setup.cfg")]
            steps = _setup_py_steps(spec, files, context, names, spec.itself_extras)
            lines.append(f"COPY {' '.join(sorted(context))} {ENV_DIR}/")
            lines.append(
                f"RUN {SECRETS} {PRELUDE}cd {ENV_DIR} && {steps} && "
                f"{uv_install} -r requirements.txt -r setup-requirements.txt"
            )
        elif dependencies:
            lines.append(f"COPY requirements.txt {ENV_DIR}/requirements.txt")
            lines.append(f"RUN {SECRETS} {PRELUDE}{uv_install} -r {ENV_DIR}/requirements.txt")
        else:
            del context["requirements.txt"]
    elif spec.kind == "uv":
        for name in spec.files:
            if _name(name) in ("uv.lock", "pyproject.toml"):
                context[_name(name)] = files[name]
        lines.append(f"COPY {' '.join(sorted(n for n in context if n in ('uv.lock', 'pyproject.toml')))} {ENV_DIR}/")
        # `uv sync` installs the default groups (dev, or [tool.uv] default-groups), as uv does.
        groups = "" if include_dev else " --no-default-groups"
        lines.append(f"RUN {SECRETS} {PRELUDE}cd {ENV_DIR} && uv sync --locked --no-install-project{groups}")
    elif spec.kind == "setup.py":
        names = [n for n in spec.files if _name(n) in ("setup.py", "setup.cfg")]
        steps = _setup_py_steps(spec, files, context, names, ())
        lines.append(f"COPY {' '.join(sorted(context))} {ENV_DIR}/")
        lines.append(f"RUN {SECRETS} {PRELUDE}cd {ENV_DIR} && {steps} && {uv_install} -r setup-requirements.txt")
    if itself:
        lines.append(_pth_step(spec))
    if spec.post_build:
        context["postBuild"] = files[spec.post_build]
        lines += [
            f"COPY postBuild {ENV_DIR}/postBuild",
            f"RUN {SECRETS} {PRELUDE}chmod +x {ENV_DIR}/postBuild && {ENV_DIR}/postBuild",
        ]
    lines += [f"ARG {BUILD_ID_ARG}", PYTHON_STEP, "WORKDIR /workspace"]
    containerfile = "\n".join(lines) + "\n"
    digest = hashlib.sha256(f"{platform}\n{containerfile}".encode())
    for name in sorted(context):
        digest.update(f"\n{name}\n".encode() + hashlib.sha256(context[name]).digest())
    return DependencyBuild(containerfile, context, digest.hexdigest()[:20])
