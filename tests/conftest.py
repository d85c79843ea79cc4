"""Session fixtures: the harness cluster, started once and stopped only if we started it."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness import cluster as harness_cluster  # noqa: E402
from harness.cluster import ClusterInfo  # noqa: E402
from harness.layout import Layout  # noqa: E402


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterInfo]:
    layout = Layout.default()
    started_here = not harness_cluster.is_up(layout)
    info = harness_cluster.up(layout, report=lambda m: print(m, file=sys.stderr, flush=True))
    previous = {k: os.environ.get(k) for k in info.env()}
    os.environ.update(info.env())
    yield info
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if started_here:
        harness_cluster.down(layout, report=lambda m: print(m, file=sys.stderr))


@pytest.fixture(scope="session")
def kube(cluster: ClusterInfo):  # type: ignore[no-untyped-def]
    from lightkube import Client, KubeConfig

    return Client(KubeConfig.from_file(cluster.admin_kubeconfig), field_manager="pypod-tests")


@pytest.fixture
def namespace(kube) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A fresh namespace per test, deleted afterwards with everything in it."""
    from lightkube.resources.core_v1 import Namespace, ServiceAccount

    from tests.kubehelp import wait_for

    name = f"t-{uuid.uuid4().hex[:10]}"
    kube.create(Namespace.from_dict({"metadata": {"name": name, "labels": {"pypod.dev/test": "true"}}}))
    # Pods are refused until the namespace's default ServiceAccount exists.
    wait_for(lambda: any(sa.metadata.name == "default" for sa in kube.list(ServiceAccount, namespace=name)), 30)
    yield name
    kube.delete(Namespace, name, grace_period=0)


@pytest.fixture
def pypod_env(cluster: ClusterInfo, namespace: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a `pypod` command in a test: the harness's cluster and registry,
    the test's namespace, a private HOME and cache, and a fresh IMAGE_REPO (the registry's
    storage outlives harness restarts, so a shared one would hide first pushes)."""
    from tests.pypodcli import cli_env

    home = tmp_path / "home"
    home.mkdir()
    return cli_env(
        home,
        {
            "KUBECONFIG": cluster.admin_kubeconfig,
            "KUBERNETES_NAMESPACE": namespace,
            "PYPOD_KUBECTL": cluster.kubectl,
            "PYPOD_BASE_IMAGE": cluster.base_image,
            "IMAGE_REPO": f"{cluster.registry}/t-{uuid.uuid4().hex[:8]}",
            "CONTAINERS_CONF": cluster.containers_conf,
            "PYPOD_CACHE": str(home / "cache"),
        },
    )
