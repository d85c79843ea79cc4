"""Dependencies added from inside a session (or from the laptop): `pypod add`, `pypod remove`.

    pypod.add("six", "requests>=2")   # in a pod: installed now, and written into the project's file
    pypod.remove("six")

In a pypod pod the packages are installed into the running interpreter's environment
(through uv) before the file is written; elsewhere only the file changes. The file is the
one the next run's dependency image is built from, so the sync brings the edit home and
the next run has the package. Lockfile projects are pointed at their tool (`uv add`,
`poetry add`, ...).
"""

from __future__ import annotations

from .vendor import use_vendored

use_vendored()  # before anything imports packaging or tomlkit (in a pod, from .pypod/vendor)

from .change import Change, change  # noqa: E402


def add(*requirements: str, run: str | None = None) -> Change | str:
    """Add PEP 508 requirements to the project's dependency file; in a pypod pod, install
    them into the running environment first. Raises DependencyError (nothing written) when
    they cannot be installed, ProjectError for a project whose lock a tool of its own keeps.

    With `run`, the change is made in that run's pod (as `pypod add --run RUN`); its line
    is returned."""
    if run:
        from .remote import change_in_named_run

        return change_in_named_run(run, list(requirements))
    return change(list(requirements))


def remove(*names: str, run: str | None = None) -> Change | str:
    """Take packages out of the project's dependency file; in a pypod pod, uninstall them too."""
    if run:
        from .remote import change_in_named_run

        return change_in_named_run(run, list(names), remove=True)
    return change(list(names), remove=True)


__all__ = ["Change", "add", "remove"]
