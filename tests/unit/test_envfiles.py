"""Environment files read as their own tools read them: apt.txt, Pipfile, dev groups,
the Python asked for, and --build-arg (pure logic; the e2e tests build each)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pypod.errors import ProjectError, UsageError
from pypod.image.detect import detect
from pypod.image.dockerfile import PYTHON_STEP, apt_packages, render

PIPFILE = """\
[[source]]
url = "https://pypi.org/simple"
verify_ssl = true
name = "pypi"

[packages]
six = "==1.16.0"
attrs = "*"
packaging = ">=21"
iniconfig = "2.0.0"
tomli = {version = ">=1", markers = "python_version >= '3.8'"}
idna = {version = "*", extras = ["all"], sys_platform = "== 'linux'"}
pluggy = {version = "*", markers = "os_name == 'posix'", platform_machine = "!= 'armv7l'"}

[dev-packages]
pytest = "*"

[requires]
python_version = "3.10"
"""


def write(root: Path, **files: str) -> Path:
    for name, text in files.items():
        path = root / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def built(root: Path, include_dev: bool = True):  # type: ignore[no-untyped-def]
    spec = detect(root)
    files = {name: (root / name).read_bytes() for name in spec.files}
    return spec, render(spec, "b@sha256:1", files, include_dev=include_dev)


# apt.txt


def test_apt_txt_comments_blank_lines_and_inline_comments_are_ignored_as_repo2docker_does():
    text = "# tools for the notebooks\n\ngit\n  curl   # for downloads\n#vim\nlibpq-dev=15.4-0+deb12u1 tree\n\n"
    assert apt_packages(text) == ["curl", "git", "libpq-dev=15.4-0+deb12u1", "tree"]
    assert apt_packages("# only a comment\n\n") == []


def test_apt_txt_that_is_not_package_names_is_refused_with_its_line():
    with pytest.raises(ProjectError, match=r"apt.txt line 2: 'Git!' is not a Debian package name") as err:
        apt_packages("curl\nGit!\n")
    assert "`#` starts a comment" in err.value.hint


def test_an_apt_txt_comment_edit_rebuilds_nothing(tmp_path: Path):
    write(tmp_path, **{"apt.txt": "git\n# a comment\n", "requirements.txt": "six\n"})
    _spec, first = built(tmp_path)
    assert first.context_files["apt.txt"] == b"git\n"
    write(tmp_path, **{"apt.txt": "# the tools\ngit   # version control\n"})
    assert built(tmp_path)[1].key == first.key
    write(tmp_path, **{"apt.txt": "git\ncurl\n"})
    assert built(tmp_path)[1].key != first.key


# Pipfile without a lock


def test_a_pipfile_alone_is_read_as_pipenv_translates_it(tmp_path: Path):
    write(tmp_path, Pipfile=PIPFILE, **{"requirements.txt": "never\n", "setup.py": ""})
    spec, build = built(tmp_path)
    assert spec.kind == "pipfile"
    assert spec.reason == "Pipfile lists 7 packages and 1 dev packages (no Pipfile.lock)"
    assert spec.dependencies == (
        "six==1.16.0",
        "attrs",
        "packaging>=21",
        "iniconfig==2.0.0",
        'tomli>=1 ; python_version >= "3.8"',
        'idna[all] ; sys_platform == "linux"',
        'pluggy ; (os_name == "posix") and (platform_machine != "armv7l")',
    )
    assert spec.dev_dependencies == ("pytest",)
    assert (spec.python_version, spec.python_source) == ("3.10", "Pipfile")
    assert build.context_files["requirements.txt"].decode().splitlines()[-1] == "pytest"
    assert "uv pip install --python /opt/venv/bin/python -r /tmp/pypod-env/requirements.txt" in build.containerfile
    # requirements.txt came after the Pipfile: its package is not installed
    assert "never" not in build.context_files["requirements.txt"].decode().split()


def test_dev_packages_are_left_out_with_no_dev_and_the_key_says_so(tmp_path: Path):
    write(tmp_path, Pipfile=PIPFILE)
    _spec, with_dev = built(tmp_path)
    _spec, without = built(tmp_path, include_dev=False)
    assert "pytest" not in without.context_files["requirements.txt"].decode()
    assert without.key != with_dev.key


def test_binder_pipfile_alone_is_an_environment_spec(tmp_path: Path):
    write(tmp_path, binder__Pipfile='[packages]\nsix = "*"\n', **{"requirements.txt": "ignored\n"})
    spec = detect(tmp_path)
    assert (spec.kind, spec.folder, spec.files, spec.dependencies) == (
        "pipfile",
        "binder",
        ("binder/Pipfile",),
        ("six",),
    )


@pytest.mark.parametrize(
    "entry, kind",
    [
        ('{git = "https://github.com/o/mine.git", ref = "main"}', "git"),
        ('{hg = "https://hg.example/mine"}', "hg"),
        ('{file = "https://example.com/mine-1.0.tar.gz"}', "URL"),
        ('{file = "./dist/mine-1.0-py3-none-any.whl"}', "file"),
        ('{path = "./libs/mine", editable = true}', "path"),
    ],
)
def test_pipfile_sources_pypod_cannot_translate_are_refused_by_name(tmp_path: Path, entry: str, kind: str):
    write(tmp_path, Pipfile=f"[packages]\nsix = '*'\nmine = {entry}\n")
    with pytest.raises(ProjectError, match=f"Pipfile installs mine from a {kind} source") as err:
        detect(tmp_path)
    assert "publish it to an index" in err.value.hint


def test_an_editable_path_to_the_project_installs_the_project_itself(tmp_path: Path):
    write(
        tmp_path,
        Pipfile='[packages]\nselfpkg = {path = ".", editable = true, extras = ["fast"]}\nsix = "*"\n',
        **{
            "pyproject.toml": '[project]\nname = "selfpkg"\nversion = "1"\ndependencies = ["attrs"]\n'
            '[project.optional-dependencies]\nfast = ["tomli"]\nslow = ["never"]\n',
            "src__selfpkg____init__.py": "",
        },
    )
    spec, build = built(tmp_path)
    assert (
        spec.reason
        == "Pipfile lists 1 packages and 0 dev packages, and the project itself from its pyproject (no Pipfile.lock)"
    )
    assert spec.files == ("Pipfile", "pyproject.toml")
    assert spec.dependencies == ("six", "attrs", "tomli")
    assert (spec.install_itself, spec.itself_paths) == ("pyproject", ("src",))
    # Its source comes in the source layer; a .pth puts it on the path as `pip install -e .` would.
    assert "_pypod_project.pth').write_text('/workspace/src\\n')" in build.containerfile
    # The project's version is not part of the key.
    write(tmp_path, **{"pyproject.toml": (tmp_path / "pyproject.toml").read_text().replace('"1"', '"2"')})
    assert built(tmp_path)[1].key == build.key


def test_a_setup_py_project_itself_gets_its_requirements_from_egg_info_with_its_extras(tmp_path: Path):
    write(
        tmp_path,
        binder__Pipfile='[packages]\nolden = {path = "..", extras = ["x"]}\n',
        **{"setup.py": "from setuptools import setup\nsetup()\n", "olden.py": ""},
    )
    spec, build = built(tmp_path)
    assert (spec.install_itself, spec.files, spec.itself_paths) == ("setup.py", ("binder/Pipfile", "setup.py"), ("",))
    assert "egg_info --egg-base /tmp/pypod-egg && python pypod-requires.py x > setup-requirements.txt" in (
        build.containerfile
    )
    assert "-r requirements.txt -r setup-requirements.txt" in build.containerfile
    assert "write_text('/workspace\\n')" in build.containerfile


def test_the_requires_script_keeps_markers_and_chosen_extras_only(tmp_path: Path):
    import subprocess
    import sys

    from pypod.image.dockerfile import SETUP_REQUIRES_SCRIPT

    egg = Path("/tmp/pypod-egg/t.egg-info")
    egg.mkdir(parents=True, exist_ok=True)
    (egg / "requires.txt").write_text('six\n\n[:python_version < "3.8"]\nzipp\n\n[x]\nattrs\n\n[y]\nnever\n')
    script = tmp_path / "r.py"
    script.write_bytes(SETUP_REQUIRES_SCRIPT)
    try:
        out = subprocess.run([sys.executable, str(script), "x"], capture_output=True, text=True, check=True).stdout
    finally:
        (egg / "requires.txt").unlink()
        egg.rmdir()
    assert out.splitlines() == ["six", 'zipp ; python_version < "3.8"', "attrs"]


def test_a_path_that_is_not_the_project_is_still_a_path_source(tmp_path: Path):
    # In binder/, "." is the binder folder, not the project.
    write(tmp_path, binder__Pipfile='[packages]\nmine = {path = "."}\n', **{"setup.py": ""})
    with pytest.raises(ProjectError, match="mine from a path source"):
        detect(tmp_path)


def test_a_private_pipfile_source_needs_an_index_url_in_the_environment(tmp_path: Path):
    from pypod.image.deps import check_sources

    pipfile = '[[source]]\nurl = "https://user:pw@pkgs.corp.example/simple"\nname = "corp"\n[packages]\nsix = "*"\n'
    write(tmp_path, Pipfile=pipfile)
    spec = detect(tmp_path)
    assert spec.private_sources == ("corp",)
    with pytest.raises(ProjectError, match=r"names the package index corp \(\[\[source\]\]\)") as err:
        check_sources(spec, {})
    assert "pw" not in err.value.one_line()
    check_sources(spec, {"PIP_INDEX_URL": "https://pkgs.corp.example/simple"})


def test_pipfile_lock_python_version_and_its_editable_self(tmp_path: Path):
    lock = {
        "_meta": {"requires": {"python_version": "3.9"}, "sources": [{"url": "https://pypi.org/simple"}]},
        "default": {"me": {"editable": True, "path": "."}, "six": {"version": "==1.16.0"}},
        "develop": {},
    }
    write(tmp_path, **{"Pipfile.lock": json.dumps(lock), "Pipfile": '[requires]\npython_version = "3.12"\n'})
    spec, build = built(tmp_path)
    assert (spec.kind, spec.python_version, spec.python_source) == ("pipenv", "3.9", "Pipfile.lock")
    assert (spec.install_itself, spec.private_sources) == ("lock", ())
    assert build.context_files["requirements.txt"] == b"six==1.16.0\n"  # the lock pins its dependencies
    assert "_pypod_project.pth" in build.containerfile


# Dev dependencies: poetry, pdm, PEP 735, uv


POETRY_LOCK = """
[[package]]
name = "six"
version = "1.16.0"
groups = ["main"]

[[package]]
name = "iniconfig"
version = "2.0.0"
groups = ["dev"]
markers = {dev = 'sys_platform == "linux"'}

[[package]]
name = "sphinx"
version = "7.0.0"
groups = ["docs"]

[[package]]
name = "attrs"
version = "23.1.0"
category = "dev"
"""


def test_poetry_installs_every_group_that_is_not_optional(tmp_path: Path):
    pyproject = '[tool.poetry.group.dev.dependencies]\niniconfig = "*"\n[tool.poetry.group.docs]\noptional = true\n'
    write(tmp_path, **{"poetry.lock": POETRY_LOCK, "pyproject.toml": pyproject})
    _spec, build = built(tmp_path)
    assert build.context_files["requirements.txt"].decode().splitlines() == [
        "attrs==23.1.0",
        'iniconfig==2.0.0 ; sys_platform == "linux"',
        "six==1.16.0",
    ]
    assert built(tmp_path, include_dev=False)[1].context_files["requirements.txt"] == b"six==1.16.0\n"


def test_pdm_dev_groups_are_installed_but_not_optional_dependency_groups(tmp_path: Path):
    from pypod.image.locks import lock_requirements

    lock = (
        '[[package]]\nname = "six"\nversion = "1.16.0"\ngroups = ["default"]\n'
        '[[package]]\nname = "tomli"\nversion = "2.0.1"\ngroups = ["test"]\n'
        '[[package]]\nname = "idna"\nversion = "3.10"\ngroups = ["extra"]\n'
    )
    pyproject = {"project": {"optional-dependencies": {"extra": ["idna"]}}}
    assert lock_requirements("pdm", lock, True, pyproject) == ["six==1.16.0", "tomli==2.0.1"]
    assert lock_requirements("pdm", lock, False, pyproject) == ["six==1.16.0"]


PEP735 = """\
[project]
name = "grouped"
version = "0.1.0"
dependencies = ["six==1.16.0"]

[dependency-groups]
test = ["iniconfig"]
dev = ["tomli", {include-group = "test"}]
docs = ["sphinx"]

[tool.poetry.group.lint.dependencies]
attrs = "^23.1"
"""


def test_pep_735_dev_group_with_include_group_and_poetry_groups_in_pyproject(tmp_path: Path):
    write(tmp_path, **{"pyproject.toml": PEP735})
    spec, build = built(tmp_path)
    assert spec.reason == "pyproject.toml [project] lists 1 dependencies and 3 dev dependencies"
    assert spec.dev_dependencies == ("tomli", "iniconfig", "attrs<24.0,>=23.1")
    assert build.context_files["requirements.txt"].decode().splitlines() == ["six==1.16.0", *spec.dev_dependencies]
    assert built(tmp_path, include_dev=False)[1].context_files["requirements.txt"] == b"six==1.16.0\n"


def test_uv_default_groups_decide_which_groups_a_pyproject_installs(tmp_path: Path):
    write(
        tmp_path,
        **{
            "pyproject.toml": PEP735.replace('[tool.poetry.group.lint.dependencies]\nattrs = "^23.1"\n', "")
            + '[tool.uv]\ndefault-groups = ["docs"]\n'
        },
    )
    assert detect(tmp_path).dev_dependencies == ("sphinx",)
    write(tmp_path, **{"pyproject.toml": '[dependency-groups]\ndev = ["tomli"]\n'})
    spec = detect(tmp_path)  # no [project]: a folder of scripts with its groups
    assert (spec.kind, spec.dependencies, spec.dev_dependencies) == ("pyproject", (), ("tomli",))
    assert spec.reason == "pyproject.toml [dependency-groups] list 1 dev dependencies"


def test_a_broken_include_group_and_a_git_poetry_dependency_are_one_line_errors(tmp_path: Path):
    write(
        tmp_path, **{"pyproject.toml": '[project]\nname = "x"\n[dependency-groups]\ndev = [{include-group = "nope"}]\n'}
    )
    with pytest.raises(ProjectError, match=r"\[dependency-groups\] cannot be resolved"):
        detect(tmp_path)
    write(
        tmp_path,
        **{
            "pyproject.toml": '[project]\nname = "x"\n[tool.poetry.group.dev.dependencies]\n'
            'mine = {git = "https://github.com/o/mine.git"}\n'
        },
    )
    with pytest.raises(ProjectError, match="installs mine from a git source"):
        detect(tmp_path)


def test_uv_sync_installs_its_default_groups_unless_no_dev(tmp_path: Path):
    write(tmp_path, **{"uv.lock": "version = 1\n", "pyproject.toml": PEP735})
    _spec, build = built(tmp_path)
    assert "uv sync --locked --no-install-project\n" in build.containerfile
    _spec, without = built(tmp_path, include_dev=False)
    assert "uv sync --locked --no-install-project --no-default-groups" in without.containerfile
    assert without.key != build.key


def test_only_dev_dependencies_still_build_unless_no_dev(tmp_path: Path):
    from pypod.image.deps import nothing_to_install

    write(tmp_path, **{"pyproject.toml": '[project]\nname = "x"\n[dependency-groups]\ndev = ["tomli"]\n'})
    assert not nothing_to_install(detect(tmp_path))
    assert nothing_to_install(detect(tmp_path), include_dev=False)


# `python` and the Python version


@pytest.mark.parametrize(
    "files",
    [
        {"requirements.txt": "six\n"},
        {"apt.txt": "git\n"},
        {"Pipfile": '[packages]\nsix = "*"\n'},
        {"environment.yml": "dependencies: [numpy]\n"},
        {"setup.py": "from setuptools import setup\nsetup()\n"},
    ],
)
def test_every_generated_image_gets_python_and_reports_which(tmp_path: Path, files: dict[str, str]):
    write(tmp_path, **files)
    _spec, build = built(tmp_path)
    lines = build.containerfile.splitlines()
    assert lines[-3:-1] == ["ARG PYPOD_BUILD_ID", PYTHON_STEP]  # after every install, before WORKDIR
    assert 'ln -s "$(command -v python3)" /usr/local/bin/python' in PYTHON_STEP


def test_a_projects_own_dockerfile_is_built_as_given():
    from pypod.image.deps import users_dockerfile
    from pypod.image.detect import EnvSpec
    from pypod.project import load_project

    root = Path(__file__).resolve().parents[2] / "examples"
    spec = EnvSpec("dockerfile", ("Dockerfile",), "x")
    text = b"FROM scratch\nARG V\n"
    build = users_dockerfile(load_project(root), spec, {"Dockerfile": text})
    assert build.containerfile == text.decode()  # nothing added, not even `python`
    with_args = users_dockerfile(load_project(root), spec, {"Dockerfile": text}, build_args=(("V", "1"),))
    assert with_args.key != build.key
    assert users_dockerfile(load_project(root), spec, {"Dockerfile": text}, build_args=(("V", "2"),)).key != (
        with_args.key
    )


@pytest.mark.parametrize(
    "asked, have, expected",
    [
        ("3.10", "3.10.14", True),
        ("3.10", "3.11.2", False),
        ("3.10.4", "3.10.9", True),  # major.minor, as repo2docker compares
        ("3", "3.11.2", True),
        (">=3.12", "3.11.2", False),
        (">=3.8,<3.13", "3.11.2", True),
        ("pypy3.9", "3.11.2", None),
        ("3.11", "not-a-version", None),
    ],
)
def test_satisfies(asked: str, have: str, expected: bool | None):
    from pypod.image.pyversion import satisfies

    assert satisfies(asked, have) is expected


def test_the_base_python_is_read_from_its_config_or_from_the_build_log():
    from pypod.image.pyversion import build_log_python_version, config_python_version

    config = {"config": {"Env": ["PATH=/usr/local/bin:/usr/bin", "GPG_KEY=A035", "PYTHON_VERSION=3.12.7"]}}
    assert config_python_version(config) == "3.12.7"
    assert config_python_version({"config": {"Env": ["PATH=/bin"]}}) is None
    assert config_python_version({}) is None
    podman = (
        "STEP 7/8: RUN if ! command -v python ...; python -c \"import platform; print('pypod: project python', "
        'platform.python_version())" || true\npypod: project python 3.11.2\nSTEP 8/8: WORKDIR /workspace\n'
    )
    buildkit = "#9 [7/8] RUN if ! command -v python ...\n#9 0.214 pypod: project python 3.11.2\n#9 DONE 0.3s\n"
    assert build_log_python_version(podman) == build_log_python_version(buildkit) == "3.11.2"
    assert build_log_python_version("#9 CACHED\n") is None


def test_the_mismatch_warning_is_one_line_with_the_next_step(tmp_path: Path):
    from pypod.image.pyversion import mismatch_warning

    write(tmp_path, **{"runtime.txt": "python-3.10\n", "requirements.txt": "six\n"})
    spec = detect(tmp_path)
    warning = mismatch_warning(spec, "127.0.0.1:5000/base:1", "3.11.2")
    assert warning == (
        "warning: runtime.txt asks for Python 3.10, but the base image 127.0.0.1:5000/base:1 has Python 3.11.2; "
        "pypod installs into the base's Python. Pass --base-image with Python 3.10, e.g. --base-image "
        "docker.io/library/python:3.10-slim"
    )
    assert mismatch_warning(spec, "b", "3.10.14") is None
    assert mismatch_warning(spec, "b", None) is None
    write(tmp_path, **{"pyproject.toml": '[project]\nname = "x"\nrequires-python = ">=3.12"\n'})
    (tmp_path / "runtime.txt").unlink()
    spec = detect(tmp_path)
    assert "pyproject.toml requires-python asks for Python '>=3.12'" in (mismatch_warning(spec, "b", "3.11.2") or "")
    write(tmp_path, **{"environment.yml": "dependencies: [python=3.9]\n"})
    assert mismatch_warning(detect(tmp_path), "b", "3.11.2") is None  # conda brings its own Python


def test_where_each_file_asks_for_python(tmp_path: Path):
    write(tmp_path, **{".python-version": "3.9.1\n", "runtime.txt": "python-3.10\n", "requirements.txt": ""})
    assert (detect(tmp_path).python_version, detect(tmp_path).python_source) == ("3.9.1", ".python-version")
    (tmp_path / ".python-version").unlink()
    assert detect(tmp_path).python_source == "runtime.txt"
    write(tmp_path, Pipfile='[requires]\npython_full_version = "3.8.10"\n')
    # A Pipfile's own [requires] is what repo2docker reads for a Pipfile project.
    assert (detect(tmp_path).python_version, detect(tmp_path).python_source) == ("3.8.10", "Pipfile")


def test_the_base_python_seen_in_a_build_is_kept_per_base_digest(tmp_path: Path, monkeypatch):
    from pypod.image import pyversion

    monkeypatch.setattr(pyversion, "RECORD", tmp_path / "base-python.json")
    assert pyversion.recorded_python_version("sha256:1") is None
    pyversion.record_python_version("sha256:1", "3.11.2")
    pyversion.record_python_version("sha256:2", "3.12.1")
    assert pyversion.recorded_python_version("sha256:1") == "3.11.2"
    assert pyversion.recorded_python_version("sha256:2") == "3.12.1"


# --build-arg


@pytest.mark.parametrize(
    "key, value",
    [
        ("GITHUB_TOKEN", "x"),
        ("NPM_TOKEN", "x"),
        ("DB_PASSWORD", "x"),
        ("AWS_SECRET_ACCESS_KEY", "x"),
        ("api_key", "x"),
        ("PIP_INDEX_URL", "https://idx/simple"),
        ("PIP_EXTRA_INDEX_URL", "https://idx/simple"),
        ("UV_INDEX_URL", "https://idx/simple"),
        ("UV_EXTRA_INDEX_URL", "https://idx/simple"),
        ("UV_INDEX", "https://idx/simple"),
        ("PRIVATE_REGISTRY_URL", "https://idx/simple"),
        ("MIRROR", "https://user:pass@idx.example/simple"),
        ("REPO", "https://ghp_abcdefghijkl@github.com/o/r"),
        ("VALUE", "glpat-abcdefghijklmnop"),
    ],
)
def test_build_args_that_look_like_secrets_are_refused_with_the_secret_mechanism(key: str, value: str):
    from pypod.image.buildargs import check_build_args

    with pytest.raises(UsageError) as err:
        check_build_args(((key, value),))
    assert err.value.exit_code == 64
    assert f"--build-arg {key} is refused" in err.value.message
    assert value not in err.value.one_line() or value == "x"
    assert "RUN --mount=type=secret,id=pypod_env" in err.value.hint
    assert "PIP_INDEX_URL" in err.value.hint and "GITHUB_TOKEN_FILE" in err.value.hint


@pytest.mark.parametrize(
    "key, value",
    [
        ("VERSION", "1.2"),
        ("BASE", "127.0.0.1:5000/base:1"),
        ("GPG_KEY", "A035C8C1"),
        ("AUTHOR", "me"),
        ("HTTP_PROXY", "http://proxy:3128"),
        ("PYTHON_VERSION", "3.12"),
    ],
)
def test_ordinary_build_args_pass(key: str, value: str):
    from pypod.image.buildargs import check_build_args

    assert check_build_args(((key, value),)) == ((key, value),)


def test_build_args_come_from_flags_environment_and_pyproject_and_are_checked_from_each():
    from pypod.settings import resolve

    assert resolve({"build_args": (("A", "1"),)}, {}, {}).build_args == (("A", "1"),)
    assert resolve({}, {"PYPOD_BUILD_ARGS": "A=1,B=2"}, {}).build_args == (("A", "1"), ("B", "2"))
    assert resolve({}, {}, {"build_args": {"SIX": "1.16.0"}}).build_args == (("SIX", "1.16.0"),)
    with pytest.raises(UsageError, match="--build-arg HF_TOKEN is refused"):
        resolve({}, {}, {"build_args": {"HF_TOKEN": "hf_x"}})
    assert resolve({}, {"PYPOD_NO_DEV": "1"}, {}).no_dev is True
    assert resolve({}, {}, {"no_dev": True}).no_dev is True
    assert resolve({}, {}, {}).no_dev is False


@pytest.mark.parametrize("builder", ["docker", "podman", "buildah"])
def test_every_builder_gets_the_build_args(builder: str):
    from pypod.image.builders import Builder, build_commands

    command = build_commands(
        Builder(builder, f"/usr/bin/{builder}", "remote"),
        "FROM 127.0.0.1:5000/b\n",
        Path("/s/Containerfile"),
        Path("/ctx"),
        "127.0.0.1:5000/p:deps-1",
        [],
        Path("/s/digest"),
        True,
        None,
        build_args=(("SIX_VERSION", "1.16.0"), ("FLAVOUR", "a b")),
    )[0]
    assert "--build-arg=SIX_VERSION=1.16.0" in command and "--build-arg=FLAVOUR=a b" in command


def test_a_base_named_by_a_build_arg_is_pulled_from_where_the_arg_says():
    from pypod.image.builders import base_registries

    text = "ARG BASE=docker.io/library/python:3.12\nFROM ${BASE}\nFROM $OTHER AS x\n"
    assert base_registries(text) == {"docker.io"}
    args = (("BASE", "127.0.0.1:5000/b:1"), ("OTHER", "127.0.0.1:5000/o:1"))
    assert base_registries(text, args) == {"127.0.0.1:5000"}


def test_build_args_for_a_generated_build_are_refused(tmp_path: Path):
    from pypod.image.deps import ensure_dependency_image
    from pypod.image.registry import ImageRef
    from pypod.project import load_project

    write(tmp_path, **{"requirements.txt": "six\n"})
    with pytest.raises(UsageError, match="--build-arg is for a project's own Dockerfile; this project's environment"):
        ensure_dependency_image(
            load_project(tmp_path), "127.0.0.1:1/b:1", ImageRef.parse("127.0.0.1:1/p"), build_args=(("V", "1"),)
        )


def test_a_pipfile_beside_its_lock_is_asked_only_for_its_python(tmp_path: Path):
    lock = {"_meta": {"requires": {}}, "default": {"six": {"version": "==1.16.0"}}, "develop": {}}
    # The lock decides what is installed, so the Pipfile's git entry (locked as a pin) is not read.
    pipfile = '[packages]\nsix = {git = "https://github.com/o/six.git"}\n[requires]\npython_version = "3.11"\n'
    write(tmp_path, **{"Pipfile.lock": json.dumps(lock), "Pipfile": pipfile})
    spec = detect(tmp_path)
    assert (spec.kind, spec.python_version, spec.python_source) == ("pipenv", "3.11", "Pipfile")
