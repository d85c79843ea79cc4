"""The fast `pypod --help` prints exactly what click renders, and only when it would."""

from __future__ import annotations

import click
import pytest

from pypod import cli, entry


def rendered_help() -> str:
    ctx = click.Context(
        cli.main_group, info_name="pypod", terminal_width=entry.HELP_WIDTH, **cli.main_group.context_settings
    )
    return cli.main_group.get_help(ctx) + "\n"


def test_static_help_is_clicks_help() -> None:
    assert rendered_help() == entry.HELP


@pytest.mark.parametrize(
    ("argv", "columns", "fast"),
    [
        (["--help"], "80", True),
        (["-h"], "200", True),
        (["--help"], "79", False),  # click wraps narrower: let it
        (["start", "--help"], "80", False),
        (["--help", "x"], "80", False),
        ([], "80", False),
        (["--version"], "80", False),
    ],
)
def test_is_top_help(monkeypatch: pytest.MonkeyPatch, argv: list[str], columns: str, fast: bool) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    assert entry.is_top_help(argv) is fast


def test_main_prints_help_without_click(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    with pytest.raises(SystemExit) as stop:
        entry.main(["--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == rendered_help()
