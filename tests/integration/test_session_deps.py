"""Dependencies added from inside a session (issue 17), on the harness: real images built
with podman, real REPLs on the node, the real sync, and the harness's package index on
the bridge (pods reach no other)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from lightkube.resources.core_v1 import Pod

from harness import cluster as harness_cluster
from harness.cluster import PYINDEX_SERVICE, PyIndexInfo, pyindex_info_path
from harness.layout import BRIDGE_IP, Layout
from tests.pypodcli import Terminal, run_cli
from tests.synchelp import wait_until

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def index(cluster) -> PyIndexInfo:  # type: ignore[no-untyped-def]
    layout = Layout.default()
    harness_cluster.start_services(layout, lambda m: None, (PYINDEX_SERVICE,))
    return PyIndexInfo.load(pyindex_info_path(layout))


def index_flags(index: PyIndexInfo) -> list[str]:
    """The pod's environment for the harness's index, through pypod's ordinary --env."""
    return [arg for key, value in index.env().items() for arg in ("--env", f"{key}={value}")]


def pod_requests(index: PyIndexInfo, since: int) -> list[dict[str, object]]:
    """The index's requests after line `since` that came from a pod (not this machine's builds)."""
    lines = Path(index.log).read_text().splitlines()[since:]
    return [r for r in map(json.loads, lines) if r["client"] != BRIDGE_IP]


def log_length(index: PyIndexInfo) -> int:
    path = Path(index.log)
    return len(path.read_text().splitlines()) if path.exists() else 0


def run_name(kube, namespace: str) -> str:  # type: ignore[no-untyped-def]
    pods = list(kube.list(Pod, namespace=namespace, labels={"pypod.dev/mode": "repl"}))
    assert len(pods) == 1
    return pods[0].metadata.labels["pypod.dev/run"]


def deps_tag(plan: subprocess.CompletedProcess[str]) -> str:
    assert plan.returncode == 0, plan.stderr
    match = re.search(r"dependency image tag: (deps-[0-9a-f]+)", plan.stdout)
    assert match, plan.stdout
    return match.group(1)


UV_PYPROJECT = """\
[project]
name = "withuv"
version = "0.1.0"
requires-python = ">=3.8"
dependencies = []
"""


def test_uv_add_in_the_repl_installs_into_the_interpreter_and_the_next_image_has_it(pypod_env, index, tmp_path):  # type: ignore[no-untyped-def]
    project = tmp_path / "withuv"
    project.mkdir()
    (project / "pyproject.toml").write_text(UV_PYPROJECT)
    subprocess.run(["uv", "lock", "-q", "--offline"], cwd=project, check=True)
    before = deps_tag(run_cli(["plan"], pypod_env, cwd=project))
    term = Terminal(index_flags(index), pypod_env, cwd=project)
    term.expect("paths in sync", 600)
    term.expect(">>> ", 60)
    # `!uv add six` in IPython; here the plain REPL runs it as a shell would.
    term.line(
        "import subprocess; r = subprocess.run(['uv', 'add', 'six'], capture_output=True, text=True); "
        "print('uv add exit', r.returncode, r.stderr.strip().splitlines()[-1:])"
    )
    term.expect("uv add exit 0", 180)
    term.line("import os, six; print('six from', six.__file__, 'venv made:', os.path.exists('/workspace/.venv'))")
    term.expect("six from /opt/venv/lib/", 30)
    term.expect("six.py venv made: False", 5)
    wait_until(lambda: '"six>=' in (project / "pyproject.toml").read_text(), 30, "pyproject.toml with six")
    wait_until(lambda: 'name = "six"' in (project / "uv.lock").read_text(), 30, "uv.lock with six")
    term.line("exit()")
    assert term.wait(60) == 0
    assert "warning: this session installed" not in term.text()  # uv add recorded it
    assert not (project / ".venv").exists()

    # The next run: a new dependency key, built once (its lock names the harness's index,
    # which the build reaches through pypod's ordinary index setting), and then reused.
    after = deps_tag(run_cli(["plan"], pypod_env, cwd=project))
    assert after != before
    build_env = dict(pypod_env, UV_INDEX_URL=index.url)
    code = "import six; print('six', six.__version__, six.__file__)"
    seen = log_length(index)
    first = run_cli([code], build_env, cwd=project, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "dependencies: built and pushed deps-" in first.stderr
    assert re.search(r"six 1\.17\.0 /opt/venv/lib/python3\.\d+/site-packages/six\.py", first.stdout), first.stdout
    assert pod_requests(index, seen) == []  # the pod installed nothing at start: the image had six
    second = run_cli([code], build_env, cwd=project, timeout=600)
    assert second.returncode == 0, second.stderr
    assert "dependencies: reused deps-" in second.stderr


def test_pypod_add_in_the_repl_and_from_the_laptop_and_a_pip_install_warned_at_exit(
    pypod_env, index, kube, namespace, tmp_path
):  # type: ignore[no-untyped-def]
    project = tmp_path / "withreqs"
    project.mkdir()
    (project / "requirements.txt").write_text("# the project's packages\n")
    before = deps_tag(run_cli(["plan"], pypod_env, cwd=project))
    term = Terminal(index_flags(index), pypod_env, cwd=project)
    term.expect("paths in sync", 600)
    term.expect(">>> ", 60)
    term.line("import pypod; print(pypod.add('six'))")
    term.expect("<pypod: added six to requirements.txt, and installed into the running environment>", 120)
    term.line("import six; print('six', six.__version__)")
    term.expect("six 1.17.0", 30)
    wait_until(lambda: "six\n" in (project / "requirements.txt").read_text(), 30, "requirements.txt with six")

    # From the laptop, into the same live interpreter.
    run = run_name(kube, namespace)
    added = run_cli(["add", "--run", run, "iniconfig==2.0.0"], pypod_env, cwd=project, timeout=300)
    assert added.returncode == 0, added.stderr
    assert f"{run}: added iniconfig==2.0.0 to requirements.txt, and installed into the running environment" in (
        added.stdout
    )
    # The Python API does the same (here again: the entry is replaced where it stands).
    api = subprocess.run(
        [sys.executable, "-c", f"import pypod; print(pypod.add('iniconfig==2.0.0', run={run!r}))"],
        env=pypod_env,
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert api.returncode == 0, api.stderr
    assert api.stdout.startswith(f"{run}: added iniconfig==2.0.0 to requirements.txt, and installed"), api.stdout
    term.line("import iniconfig; print('iniconfig', iniconfig.__name__)")
    term.expect("iniconfig iniconfig", 30)
    wait_until(lambda: "iniconfig==2.0.0" in (project / "requirements.txt").read_text(), 30, "iniconfig locally")
    listed = (project / "requirements.txt").read_text()
    assert listed == "# the project's packages\nsix\niniconfig==2.0.0\n"

    # A name no index has: the resolver's reason in one line, exit 80, the files as they were.
    refused = run_cli(["add", "--run", run, "pypod-no-such-package"], pypod_env, cwd=project, timeout=300)
    assert refused.returncode == 80, refused.stdout + refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "cannot install pypod-no-such-package" in refused.stderr
    assert "not found in the package registry" in refused.stderr
    term.line(
        "try:\n    pypod.add('pypod-no-such-package')\nexcept pypod.DependencyError as e:\n"
        "    print('refused', e.exit_code)\n"
    )
    term.expect("refused 80", 120)
    term.line("print('in the pod:', repr(open('requirements.txt').read()))")
    term.expect(f"in the pod: {listed!r}", 30)
    assert (project / "requirements.txt").read_text() == listed

    # pypod.remove: out of the environment and out of the file (which comes home).
    term.line("print(pypod.remove('six'))")
    term.expect("<pypod: removed six from requirements.txt, and uninstalled from the running environment>", 120)
    term.line(  # a fresh interpreter: this one still holds the imported module
        "import subprocess, sys; print('six left:', subprocess.run([sys.executable, '-c', 'import six'], "
        "capture_output=True).returncode == 0)"
    )
    term.expect("six left: False", 30)
    wait_until(lambda: "six" not in (project / "requirements.txt").read_text(), 30, "requirements.txt without six")

    # pip install leaves no trace in the project: the session's end says so.
    term.line(
        "import subprocess, sys; print('pip exit', subprocess.run([sys.executable, '-m', 'pip', 'install', "
        "'-q', 'tomli==2.0.1']).returncode)"
    )
    term.expect("pip exit 0", 120)
    term.line("exit()")
    assert term.wait(60) == 0
    shown = term.text()
    assert (
        "warning: this session installed tomli 2.0.1, which the project's files (requirements.txt) do not list, "
        "so the next run will not have it. To keep it, run `pypod add tomli`"
    ) in shown
    assert "six" not in shown.split("warning: this session installed")[1]  # removed again
    assert (project / "requirements.txt").read_text() == "# the project's packages\niniconfig==2.0.0\n"
    assert deps_tag(run_cli(["plan"], pypod_env, cwd=project)) != before
