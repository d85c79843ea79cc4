"""One error hierarchy. Every error a user can cause says what happened, why it
probably happened, and what to do next, and maps to its own exit code.
"""

from __future__ import annotations


class PypodError(Exception):
    """Root of every error pypod raises on purpose."""

    exit_code = 10

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        return f"{self.message}. {self.hint}" if self.hint else self.message

    def __str__(self) -> str:
        # Raised in a user's program (e.g. from K8sCluster), the traceback's last line
        # carries the next step too.
        return self.one_line()


class UsageError(PypodError):
    """Bad flags or settings: an invalid quantity, a malformed K=V, an unknown option."""

    exit_code = 64  # EX_USAGE


class ProjectError(PypodError):
    """The project folder or its files cannot be used as they are."""

    exit_code = 65


class TemplateError(PypodError):
    """A driver template that is not valid YAML or not a Job."""

    exit_code = 66


class KubeconfigError(PypodError):
    """No kubeconfig, or an unknown context."""

    exit_code = 67


class ClusterUnreachable(PypodError):
    exit_code = 68


class Forbidden(PypodError):
    """RBAC refused a verb on a resource."""

    exit_code = 69


class AlreadyExists(PypodError):
    """A run with that name already exists."""

    exit_code = 70


class NotFound(PypodError):
    exit_code = 71


class PodFailedToStart(PypodError):
    """The pod cannot start: its image cannot be pulled, its config is broken, it crashed at once."""

    exit_code = 72


class PendingTimeout(PypodError):
    """The pod was still not running when --pending-timeout ran out."""

    exit_code = 73


class StreamError(PypodError):
    """exec, attach, logs or port-forward failed."""

    exit_code = 74


class RegistryError(PypodError):
    """The image registry is unreachable, refused us, or lacks what was asked for."""

    exit_code = 75


class BuildError(PypodError):
    """No image builder, or the dependency build or its push failed."""

    exit_code = 76


class UnsafePath(PypodError):
    """A path from the other side of a sync would land outside the sync root."""

    exit_code = 77


class Rejected(PypodError):
    """An admission webhook of the cluster (e.g. Kueue's) refused what pypod created."""

    exit_code = 78


class DataFailed(PypodError):
    """A `pypod data fetch` ended without every file done."""

    exit_code = 79


class DependencyError(PypodError):
    """A package that `pypod add` could not resolve or install (the project's files are left as they were)."""

    exit_code = 80
