"""Every command that takes --namespace/--context/--kubeconfig/--profile gets them as one
target, and reaches the cluster through it (no cluster here: the connection is stood in for)."""

from __future__ import annotations

import pytest

from pypod import cli
from pypod.errors import UsageError


class Connected(Exception):
    pass


@pytest.mark.parametrize(
    "args",
    [
        ["attach", "r"],
        ["ps"],
        ["logs", "r"],
        ["dashboard", "r"],
        ["rm", "r"],
        ["info", "r"],
    ],
)
def test_target_options_reach_connect(monkeypatch, tmp_path, args):
    seen = {}

    def connect(target):  # type: ignore[no-untyped-def]
        seen.update(target)
        raise Connected

    monkeypatch.setattr(cli, "_connect", connect)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Connected):
        cli.main_group.main(
            [*args, "-n", "ns", "--context", "c", "--kubeconfig", "k", "--profile", "p"], standalone_mode=False
        )
    assert seen == {"namespace": "ns", "context": "c", "kubeconfig": "k", "profile": "p"}


def test_git_secret_takes_the_target_options_too():
    with pytest.raises(UsageError, match="not a valid Secret name"):
        cli.main_group.main(["git-secret", "Not Valid", "-n", "ns", "--profile", "p"], standalone_mode=False)
