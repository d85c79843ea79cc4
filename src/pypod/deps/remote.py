"""`pypod add --run RUN` and `pypod remove --run RUN`: the same change made inside RUN's
driver pod (over `kubectl exec`), where it installs into the REPL's live environment; the
edited file comes home through the sync of a session attached to RUN."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import NotFound, PypodError, StreamError
from ..kube.manifests import DRIVER_CONTAINER

if TYPE_CHECKING:
    from ..run.driver import Driver

POD_PYTHON = "python3"  # every Python 3 image has it; in pypod's images, the venv's
EXEC_TIMEOUT_S = 960.0  # the install's own limit (install.py), and some


def change_command(requirements: list[str], remove: bool) -> list[str]:
    """Pure: the command run in the pod (pypod's package is on its PYTHONPATH)."""
    return [POD_PYTHON, "-m", "pypod.deps", "remove" if remove else "add", *requirements]


def error_for(exit_code: int, message: str) -> PypodError:
    """Pure: the error an in-pod `pypod.deps` exit code stands for (DependencyError for 80),
    carrying its one line."""
    classes = [PypodError, *_subclasses(PypodError)]
    cls = next((c for c in classes if c.exit_code == exit_code), PypodError)
    return cls(message)


def _subclasses(cls: type[PypodError]) -> list[type[PypodError]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def change_in_run(driver: Driver, run: str, requirements: list[str], remove: bool = False) -> str:
    """Make the change in RUN's pod; its one line, prefixed by the run. An error in the pod
    is raised here as the same error (DependencyError, exit 80, when the package could not
    be installed)."""
    from ..run.driver import running_pod

    pod = running_pod(driver, run).metadata.name
    argv = driver.kubectl().exec_argv(pod, DRIVER_CONTAINER, change_command(requirements, remove), stdin=False)
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=EXEC_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise StreamError(
            f"`pypod add` in pod {pod} gave no answer within {EXEC_TIMEOUT_S:.0f}s",
            hint="check the pod with `pypod ps` and its package index",
        ) from exc
    if result.returncode == 0:
        return f"{run}: {result.stdout.strip()}"
    stderr = result.stderr.strip()
    # kubectl adds its own last line ("command terminated with exit code 80").
    last = stderr.splitlines()[-1] if stderr else ""
    ours = next((line for line in reversed(stderr.splitlines()) if line.startswith("pypod: ")), None)
    if ours is not None:
        raise error_for(result.returncode, f"in {run}'s pod: {ours.removeprefix('pypod: ')}")
    if "No module named pypod" in stderr:
        raise NotFound(
            f"run {run}'s image has no pypod package (started with --image?)",
            hint="edit the file here with `pypod add` (no --run) and install in the pod with `uv pip install`",
        )
    raise StreamError(
        f"`pypod add` in pod {pod} failed: {last or f'exit code {result.returncode}'}",
        hint="see the pod's state with `pypod ps`",
    )


def change_in_named_run(run: str, requirements: list[str], remove: bool = False) -> str:
    """change_in_run for the Python API: the cluster and namespace as `pypod` would find
    them from here (environment, [tool.pypod], kubeconfig)."""
    import os

    from ..profiles import read_user_profiles
    from ..project import find_root
    from ..run.driver import Driver
    from ..run.output import Output
    from ..settings import read_pyproject, resolve

    settings = resolve({}, os.environ, read_pyproject(find_root(Path.cwd())), read_user_profiles(os.environ))
    return change_in_run(Driver(settings, Output(quiet=True)), run, requirements, remove)
