"""The README's table of commands says every verb, and every option of ``record`` with
each of its choices (it missed ``raw`` and ``--durability``, issue 18): read from the
click commands, so a new option or choice fails here until the table names it."""

from __future__ import annotations

from pathlib import Path

import click

from tools.cli import cli

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _row(verb: str) -> str:
    rows = [ln for ln in README.splitlines() if ln.startswith("|") and f"`framestore {verb} " in ln]
    assert rows, f"README's command table has no row for `framestore {verb}`"
    return "\n".join(rows)


def test_every_verb_has_a_row():
    for verb in cli.commands:
        _row(verb)


def test_the_record_row_names_every_option_and_choice():
    row = _row("record").replace("\\|", "|")
    for param in cli.commands["record"].params:
        if not isinstance(param, click.Option) or param.name == "help":
            continue
        assert any(opt in row for opt in param.opts), f"{param.opts} missing from the row"
        if isinstance(param.type, click.Choice):
            for choice in param.type.choices:
                assert choice in row, f"{param.opts[0]} {choice} missing from the row"
