"""The namespace pypod data works in: a lightkube Client chosen by kubectl's rules."""

from __future__ import annotations

from ..kube.client import Connection
from ..settings import Settings


class Kube(Connection):
    """A client, where it points, and API failures turned into one-line pypod errors."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.kubeconfig, settings.context, settings.namespace)
