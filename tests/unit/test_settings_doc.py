"""The README's settings table is what ``python -m tools.settings_doc`` makes of ``models.settings.Settings``."""

from __future__ import annotations

import pytest
from pydantic import Field, SecretStr

from models.settings import Settings
from tools.settings_doc import END, README, START, UndocumentedSetting, render_table, rewrite


def test_the_readme_table_is_the_generated_one() -> None:
    text = README.read_text()
    assert rewrite(text, render_table()) == text, "README.md is stale: run `python -m tools.settings_doc`"


def test_every_setting_has_a_row() -> None:
    table = render_table()
    rows = table.splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == [name.upper() for name in Settings.model_fields]


def test_a_setting_without_a_description_stops_the_generator() -> None:
    class WithUndocumented(Settings):
        brand_new_knob: int = 3

    with pytest.raises(UndocumentedSetting, match="brand_new_knob"):
        render_table(WithUndocumented)


def test_secret_defaults_never_reach_the_readme() -> None:
    class WithSecret(Settings):
        some_password: SecretStr = Field(SecretStr("hunter2-default"), description="a password")

    table = render_table(WithSecret)
    assert "hunter2-default" not in table
    assert "dev-only-change-me" not in table and "testsecret" not in table  # the real defaults, too
    assert "| `SOME_PASSWORD` | secret | secret, not shown | a password |" in table


def test_a_changed_table_is_noticed_and_only_the_marked_part_is_rewritten() -> None:
    text = f"intro\n{START}\n| old | table |\n{END}\noutro\n"
    assert rewrite(text, "| new |") == f"intro\n{START}\n| new |\n{END}\noutro\n"
    with pytest.raises(ValueError, match="markers"):
        rewrite("no markers here", "| new |")
