from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pypod.names import DNS_LABEL, MAX_RUN_NAME, label_value, run_name, validate_run_name


def test_run_name_is_descriptive_and_unique_per_run():
    a = run_name("myrepo", "main", now=0, suffix="ab12")
    assert a == "myrepo-main-700101-000000-ab12"
    assert run_name("myrepo", "main") != run_name("myrepo", "main")


def test_hundred_character_branch_fits_and_keeps_the_unique_tail():
    branch = "feature/" + "x" * 100
    name = run_name("repo", branch, now=0, suffix="ab12")
    assert len(name) <= MAX_RUN_NAME
    assert name.endswith("-700101-000000-ab12")
    assert DNS_LABEL.match(name)
    # Two long branches differing only at the end still give different names.
    other = run_name("repo", branch + "y", now=0, suffix="ab12")
    assert other != name


@given(st.text(max_size=200), st.text(max_size=200))
def test_any_repo_and_branch_give_a_valid_name(repo: str, branch: str):
    name = run_name(repo, branch)
    assert validate_run_name(name) is None, name


@given(st.text(max_size=300))
def test_label_values_are_always_valid(text: str):
    value = label_value(text)
    assert len(value) <= 63
    assert value == "" or (value[0].isalnum() and value[-1].isalnum())
    assert all(c.isascii() and (c.isalnum() or c in "-._") for c in value)


@pytest.mark.parametrize("bad", ["Upper", "a_b", "-lead", "x" * 60, "trail-"])
def test_invalid_run_ids_are_explained(bad: str):
    assert validate_run_name(bad)


def test_generate_name_prefix_leaves_room_for_the_apiservers_five_characters():
    from pypod.names import name_prefix

    assert name_prefix("My_Repo", "feature/x") == "my-repo-feature-x-"
    assert name_prefix("repo", "main", runid="train") == "train-"
    long = name_prefix("r" * 40, "b" * 40)
    assert long.endswith("-") and len(long) + 5 <= MAX_RUN_NAME
    assert DNS_LABEL.match(long + "abcde")
