"""SyncPrep: what `pypod` builds for the sync while Kubernetes starts the pod."""

from __future__ import annotations

from pathlib import Path

import pytest

from pypod.agent import sync_command
from pypod.agent.tree import Excludes
from pypod.errors import UsageError
from pypod.project import Project
from pypod.run.livesync import AGENT_PYTHON, SyncPrep
from pypod.settings import resolve
from pypod.sync.excludes import check_patterns, sync_excludes


def test_built_in_the_background_as_in_the_foreground(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("*.log\n")
    project = Project(root=tmp_path, git=None)
    settings = resolve({"sync_exclude": ("data/",)}, {}, {})
    prep = SyncPrep(project, settings).wait()
    assert prep.excludes == sync_excludes(tmp_path, ("data/",))
    assert any("log" in rule[1] for rule in prep.excludes["rules"])
    expected = sync_command(AGENT_PYTHON, settings.workdir, prep.excludes, settings.keep_alive)
    assert (prep.agent_argv, prep.preamble) == expected
    assert prep.agent_argv[-4:-1] == ["sync", "--linger", str(int(settings.keep_alive))]
    inline = SyncPrep(project, settings, background=False)
    assert (inline.excludes, inline.agent_argv) == (prep.excludes, prep.agent_argv)


def test_an_error_in_the_background_is_raised_where_the_sync_starts(tmp_path: Path) -> None:
    project = Project(root=tmp_path, git=None)
    prep = SyncPrep(project, resolve({"sync_exclude": ("!",)}, {}, {}))  # fails in its thread
    with pytest.raises(UsageError, match="'!' is not a gitignore pattern") as raised:
        prep.wait()
    assert raised.value.exit_code == 64 and "--sync-exclude" in (raised.value.hint or "")


def test_a_line_of_an_ignore_file_that_is_no_pattern_is_skipped_as_git_skips_it(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("!\n*.log\n")
    excludes = Excludes(sync_excludes(tmp_path))
    assert excludes.excluded("a.log", False) and not excludes.excluded("a.py", False)
    check_patterns(["data/", "*.log", "!keep.log"])
    with pytest.raises(UsageError):
        check_patterns(["\\"])
