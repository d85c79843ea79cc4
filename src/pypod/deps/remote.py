"""`pypod add --run RUN` and `pypod remove --run RUN`: the same change made inside RUN's
driver pod (over `kubectl exec`), where it installs into the REPL's live environment; the
edited file comes home through the sync of a session attached to RUN."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

from ..errors import NotFound, StreamError
from ..kube.manifests import DRIVER_CONTAINER

if TYPE_CHECKING:
    from ..run.driver import Driver

POD_PYTHON = "python3"  # every Python 3 image has it; in pypod's images, the venv's
EXEC_TIMEOUT_S = 960.0  # the install's own limit (install.py), and some


def change_command(requirements: list[str], remove: bool) -> list[str]:
    """Pure: the command run in the pod (pypod's package is on its PYTHONPATH)."""
    return [POD_PYTHON, "-m", "pypod.deps", "remove" if remove else "add", *requirements]


def change_in_run(driver: Driver, run: str, requirements: list[str], remove: bool = False) -> int:
    """Run the change in RUN's pod; print its line; return its exit code (80 when the
    package could not be installed, as here)."""
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
    stderr = result.stderr.strip()
    # kubectl adds its own last line ("command terminated with exit code 80").
    last = stderr.splitlines()[-1] if stderr else ""
    ours = next((line for line in reversed(stderr.splitlines()) if line.startswith("pypod: ")), None)
    if result.returncode == 0:
        sys.stdout.write(f"{run}: {result.stdout.strip()}\n")
        return 0
    if ours is not None:
        sys.stderr.write(f"pypod: in {run}'s pod: {ours.removeprefix('pypod: ')}\n")
        return result.returncode
    if "No module named pypod" in stderr:
        raise NotFound(
            f"run {run}'s image has no pypod package (started with --image?)",
            hint="edit the file here with `pypod add` (no --run) and install in the pod with `uv pip install`",
        )
    raise StreamError(
        f"`pypod add` in pod {pod} failed: {last or f'exit code {result.returncode}'}",
        hint="see the pod's state with `pypod ps`",
    )
