"""The namespace pypod data works in: a lightkube Client chosen by kubectl's rules."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..settings import Settings


class Kube:
    """A client, where it points, and API failures turned into one-line pypod errors."""

    def __init__(self, settings: Settings) -> None:
        from ..kube.client import connect

        self.client: Any
        self.client, self.target = connect(settings.kubeconfig, settings.context, settings.namespace)

    @property
    def namespace(self) -> str:
        return self.target.namespace

    @contextlib.contextmanager
    def api(self, verb: str, resource: str, name: str = "") -> Iterator[None]:
        from ..kube.client import api_errors

        with api_errors(verb, resource, self.namespace, self.target.server, name):
            yield
