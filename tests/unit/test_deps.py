"""pypod add / remove: which file, the edits, refusals, the untracked-install warning."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pypod.deps.change import change
from pypod.deps.install import in_pypod_pod, resolver_reason
from pypod.deps.record import Target, canonical, dependency_target, edit, line_name, listed_names, pipfile_value
from pypod.deps.remote import change_command
from pypod.deps.untracked import check_untracked, untracked, untracked_warning
from pypod.errors import DependencyError, ProjectError, UsageError
from pypod.image.detect import detect
from pypod.image.ship import PYPOD_LIB, pypod_files


def write(root: Path, **files: str) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


# Which file


def test_the_file_is_the_one_the_dependency_image_is_built_from(tmp_path: Path):
    write(tmp_path / "r", **{"requirements-dev.txt": "pytest\n", "requirements.txt": "six\n"})
    assert dependency_target(detect(tmp_path / "r"), ["x"]) == Target("requirements", "requirements.txt")
    write(tmp_path / "g", **{"requirements-gpu.txt": "torch\n"})
    assert dependency_target(detect(tmp_path / "g"), ["x"]).path == "requirements-gpu.txt"
    write(tmp_path / "p", **{"pyproject.toml": '[project]\nname = "p"\nversion = "0"\ndependencies = []\n'})
    assert dependency_target(detect(tmp_path / "p"), ["x"]).where == "pyproject.toml [project].dependencies"
    write(tmp_path / "f", Pipfile="[packages]\nsix = '*'\n")
    assert dependency_target(detect(tmp_path / "f"), ["x"]).where == "Pipfile [packages]"
    write(tmp_path / "b", **{"binder/requirements.txt": "six\n", "pyproject.toml": ""})
    assert dependency_target(detect(tmp_path / "b"), ["x"]).path == "binder/requirements.txt"
    # Nothing to build from yet: a requirements.txt is made.
    write(tmp_path / "n", **{"pyproject.toml": "[tool.pypod]\ncpu = '1'\n"})
    assert dependency_target(detect(tmp_path / "n"), ["x"]) == Target("requirements", "requirements.txt", create=True)


@pytest.mark.parametrize(
    ("files", "command"),
    [
        ({"uv.lock": "version = 1\n", "pyproject.toml": "[project]\nname='p'\n"}, "`uv add six`"),
        ({"poetry.lock": "", "pyproject.toml": "[tool.poetry]\nname='p'\n"}, "`poetry add six`"),
        ({"pdm.lock": "", "pyproject.toml": "[project]\nname='p'\n"}, "`pdm add six`"),
        ({"Pipfile.lock": "{}", "Pipfile": "[packages]\n"}, "`pipenv install six`"),
    ],
)
def test_lockfile_projects_are_pointed_at_their_own_tool(tmp_path: Path, files: dict[str, str], command: str):
    write(tmp_path, **files)
    with pytest.raises(ProjectError) as err:
        dependency_target(detect(tmp_path), ["six"])
    assert "pypod does not half-update a lock" in err.value.message
    assert command in err.value.hint
    assert "\n" not in err.value.one_line()
    assert ProjectError.exit_code == 65


def test_uv_projects_are_told_uv_add_works_in_the_pod_and_removal_names_uv_remove(tmp_path: Path):
    write(tmp_path, **{"uv.lock": "version = 1\n", "pyproject.toml": "[project]\nname='p'\n"})
    with pytest.raises(ProjectError, match=r"uv\.lock pins") as err:
        dependency_target(detect(tmp_path), ["six"], remove=True)
    assert "`uv remove six`" in err.value.hint
    assert "in the pod's REPL too" in err.value.hint


def test_files_pypod_does_not_write_are_refused_with_what_to_do(tmp_path: Path):
    write(tmp_path, **{"setup.py": "from setuptools import setup\nsetup()\n"})
    with pytest.raises(ProjectError, match=r"setup\.py, which pypod does not edit") as err:
        dependency_target(detect(tmp_path), ["six"])
    assert "install_requires" in err.value.hint


# The edits


def test_a_requirements_file_keeps_its_lines_and_comments(tmp_path: Path):
    target = Target("requirements", "requirements.txt")
    text = "# the project's packages\n-r base.txt\nRequests>=2   # http\nnumpy\n"
    added = edit(target, text, ["six>=1.16", "requests[socks]>=2.31"])
    assert added == "# the project's packages\n-r base.txt\nrequests[socks]>=2.31   # http\nnumpy\nsix>=1.16\n"
    assert edit(target, added, ["six", "Requests"], remove=True) == "# the project's packages\n-r base.txt\nnumpy\n"
    assert edit(target, "numpy", ["six"]) == "numpy\nsix\n"  # a last line without its newline
    assert edit(target, "", ["six"]) == "six\n"
    with pytest.raises(ProjectError, match=r"six is not in requirements\.txt"):
        edit(target, "numpy\n", ["six"], remove=True)


def test_pyproject_dependencies_are_edited_in_place_with_their_formatting(tmp_path: Path):
    target = Target("pyproject", "pyproject.toml")
    text = (
        '[project]\nname = "p"  # the name\nversion = "0"\ndependencies = [\n'
        '    "numpy>=1",  # arrays\n    "Six",\n]\n\n[tool.pypod]\ncpu = "1"\n'
    )
    added = edit(target, text, ["six>=1.16", "iniconfig"])
    assert added == (
        '[project]\nname = "p"  # the name\nversion = "0"\ndependencies = [\n'
        '    "numpy>=1",  # arrays\n    "six>=1.16",\n    "iniconfig",\n]\n\n[tool.pypod]\ncpu = "1"\n'
    )
    removed = edit(target, added, ["six", "iniconfig"], remove=True)
    assert removed == (
        '[project]\nname = "p"  # the name\nversion = "0"\ndependencies = [\n'
        '    "numpy>=1",  # arrays\n]\n\n[tool.pypod]\ncpu = "1"\n'
    )
    assert 'dependencies = ["six"]' in edit(target, '[project]\nname = "p"\n', ["six"])
    with pytest.raises(ProjectError, match=r"has no \[project\] table"):
        edit(target, "[dependency-groups]\ndev = []\n", ["six"])
    with pytest.raises(ProjectError, match="not valid TOML"):
        edit(target, "[project\n", ["six"])


def test_a_pipfile_gets_entries_as_pipenv_writes_them(tmp_path: Path):
    target = Target("pipfile", "Pipfile")
    text = '[[source]]\nurl = "https://pypi.org/simple"\n\n[packages]\nrequests = "*"\n\n[dev-packages]\npytest = "*"\n'
    added = edit(target, text, ["six>=1.16", "idna[all]; sys_platform == 'linux'", "Requests==2.31"])
    assert added == (
        '[[source]]\nurl = "https://pypi.org/simple"\n\n[packages]\nrequests = "==2.31"\nsix = ">=1.16"\n'
        'idna = {version = "*", extras = ["all"], markers = "sys_platform == \\"linux\\""}\n\n'
        '[dev-packages]\npytest = "*"\n'
    )
    assert 'six = ">=1.16"' not in edit(target, added, ["six"], remove=True)
    with pytest.raises(UsageError, match="URL requirement"):
        pipfile_value(__import__("packaging.requirements").requirements.Requirement("x @ https://h/x.whl"))


def test_what_is_not_a_requirement_is_refused_before_anything_is_done(tmp_path: Path):
    write(tmp_path, **{"requirements.txt": "numpy\n"})
    with pytest.raises(UsageError, match="'six>>' is not a requirement"):
        change(["six>>"], root=tmp_path)
    assert (tmp_path / "requirements.txt").read_text() == "numpy\n"


def test_names_and_lines(tmp_path: Path):
    assert canonical("Zope.Interface_x") == "zope-interface-x"
    assert line_name("  Foo_Bar[x]>=1 ; python_version > '3' # c") == "foo-bar"
    assert line_name("-e .") is None
    assert line_name("# six") is None


# Outside a pod only the file changes; in one, the install comes first


def test_outside_a_pod_add_only_edits_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("PYPOD_RUN", raising=False)
    write(tmp_path, **{"requirements.txt": "numpy\n"})
    done = change(["six"], root=tmp_path)
    assert (tmp_path / "requirements.txt").read_text() == "numpy\nsix\n"
    assert not done.installed
    assert done.summary() == (
        "added six to requirements.txt (not in a pypod pod: nothing installed; the next run's image has it)"
    )
    assert in_pypod_pod({"PYPOD_RUN": "r-1"}) and not in_pypod_pod({})


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("requirements.txt", "numpy  # arrays\n"),
        # TOML: tomlkit and packaging come from pypod's vendor folder, the venv has neither.
        ("pyproject.toml", '[project]\nname = "p"\nversion = "0"\ndependencies = [\n  "numpy",  # arrays\n]\n'),
        ("Pipfile", '[packages]\nnumpy = "*"  # arrays\n'),
    ],
)
def test_in_a_pod_a_package_that_cannot_be_installed_leaves_the_file_alone(tmp_path: Path, name: str, text: str):
    # A real interpreter with nothing installed, pypod laid out as in a pod's image (with
    # its vendored libraries), a real uv, and an index that has nothing.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    for rel, source in pypod_files().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, tmp_path / rel)
    project = write(tmp_path / "p", **{name: text})
    index = tmp_path / "index"
    index.mkdir()
    script = "import sys; from pypod.deps.__main__ import main; sys.exit(main(sys.argv[1:]))"
    lib = tmp_path / PYPOD_LIB
    env = dict(os.environ, PYPOD_RUN="r-1", PYTHONPATH=str(lib), UV_INDEX_URL=index.as_uri(), UV_OFFLINE="1")
    env.pop("PIP_INDEX_URL", None)
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script, "add", "pypod-no-such-package"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == DependencyError.exit_code == 80, result.stderr
    line = result.stderr.strip()
    assert "\n" not in line
    assert line.startswith("pypod: cannot install pypod-no-such-package: ")
    assert "pypod-no-such-package" in line.partition(": cannot install ")[2].partition(": ")[2]
    assert "files were left as they were" in line
    assert (project / name).read_text() == text


def test_the_resolvers_reason_is_one_line():
    uv = (
        "Using Python 3.11.7 environment at: venv\n"
        "  × No solution found when resolving dependencies:\n"
        "  ╰─▶ Because nosuch was not found in the package registry and you require nosuch, we can conclude "
        "that your requirements are unsatisfiable.\n"
    )
    assert resolver_reason(uv) == (
        "No solution found when resolving dependencies: Because nosuch was not found in the package registry and "
        "you require nosuch, we can conclude that your requirements are unsatisfiable"
    )
    plain = "error: No solution found when resolving dependencies\n  cause: Because x was not found.\n"
    assert resolver_reason(plain) == "No solution found when resolving dependencies Because x was not found"


def test_the_command_run_in_a_runs_pod():
    assert change_command(["six>=1"], remove=False) == ["python3", "-m", "pypod.deps", "add", "six>=1"]
    assert change_command(["six"], remove=True)[3] == "remove"


# Untracked installs


INSTALLED = [
    {"name": "requests", "version": "2.31.0", "requires": ["charset-normalizer", "idna", "urllib3", "certifi"]},
    {"name": "urllib3", "version": "2.2.0", "requires": []},
    {"name": "idna", "version": "3.6", "requires": []},
    {"name": "six", "version": "1.17.0", "requires": []},
]


def test_untracked_installs_name_what_was_asked_for_not_what_it_pulled_in():
    assert untracked(INSTALLED, set()) == [("requests", "2.31.0"), ("six", "1.17.0")]
    assert untracked(INSTALLED, {"six"}) == [("requests", "2.31.0")]
    assert untracked(INSTALLED, {"six", "requests"}) == []


def test_the_warning_names_them_and_the_command_that_records_them(tmp_path: Path):
    write(tmp_path, **{"requirements.txt": "numpy\n"})
    warning = untracked_warning(detect(tmp_path), [("six", "1.17.0"), ("requests", "2.31.0")])
    assert warning == (
        "warning: this session installed six 1.17.0, requests 2.31.0, which the project's files "
        "(requirements.txt) do not list, so the next run will not have them. To keep them, run "
        "`pypod add six requests`"
    )
    write(tmp_path / "uv", **{"uv.lock": "version = 1\n", "pyproject.toml": "[project]\nname='p'\n"})
    assert "run `uv add six`" in untracked_warning(detect(tmp_path / "uv"), [("six", "1.17.0")])


def test_the_projects_files_list_what_they_name_locked_ones_included(tmp_path: Path):
    root = write(
        tmp_path / "uv",
        **{"pyproject.toml": "[project]\nname='p'\n", "uv.lock": 'version = 1\n[[package]]\nname = "Six"\n'},
    )
    assert check_untracked(root, [{"name": "six", "version": "1.17.0", "requires": []}]) is None
    warning = check_untracked(root, [{"name": "iniconfig", "version": "2.0.0", "requires": []}])
    assert warning is not None and "iniconfig 2.0.0" in warning
    spec = detect(write(tmp_path / "p", Pipfile="[packages]\nsix = '*'\n[dev-packages]\npytest = '*'\n"))
    assert listed_names(spec, {}) == {"six", "pytest"}
    spec = detect(write(tmp_path / "l", **{"Pipfile.lock": json.dumps({"default": {"Six": {}}, "develop": {}})}))
    assert listed_names(spec, {"Pipfile.lock": (tmp_path / "l" / "Pipfile.lock").read_text()}) == {"six"}


def test_an_error_in_the_runs_pod_is_raised_here_as_the_same_error():
    from pypod.deps.remote import error_for

    error = error_for(80, "in r's pod: cannot install x: not found")
    assert isinstance(error, DependencyError) and error.exit_code == 80
    assert error.one_line() == "in r's pod: cannot install x: not found"
    assert type(error_for(65, "m")) is ProjectError
    assert error_for(3, "m").exit_code == 10


def test_the_session_host_reports_what_the_environment_gained(tmp_path: Path):
    # The agent's own code (stdlib, Python 3.8+), on this interpreter's real environment.
    from importlib import metadata

    from pypod.agent.dists import installed_since, listing

    now = listing()
    for name in ("click", "pytest", "packaging"):  # read off folder names, as importlib.metadata says
        assert now[name] == metadata.version(name)
    before = {k: v for k, v in now.items() if k not in ("click", "pytest")}
    before["rich"] = "0.0.1"
    gained = installed_since(before, now)
    assert [entry["name"] for entry in gained] == ["click", "pytest", "rich"]
    pytest_entry = next(e for e in gained if e["name"] == "pytest")
    assert "pluggy" in pytest_entry["requires"] and pytest_entry["version"] == now["pytest"]
    assert installed_since(now, now) == []


def test_the_environment_listing_reads_installers_folder_names(tmp_path: Path):
    from pypod.agent.dists import listing

    first, second = tmp_path / "site", tmp_path / "later"
    for folder, names in (
        (first, ["Foo_Bar-1.2.post1.dist-info", "legacy_pkg-0.9-py3.11.egg-info", "devpkg.egg-info", "foo_bar.py"]),
        (second, ["foo_bar-0.1.dist-info", "other-2.0.dist-info"]),
    ):
        folder.mkdir()
        for name in names:
            (folder / name).mkdir()
    found = listing([str(first), str(tmp_path / "gone"), str(second), str(tmp_path / "x.zip")])
    assert found == {"foo-bar": "1.2.post1", "legacy-pkg": "0.9", "devpkg": "", "other": "2.0"}
