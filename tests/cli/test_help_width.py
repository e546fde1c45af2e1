"""Every ``--help`` is readable in an 80-column terminal (session 35): typer's six-column options panel cut
option names and help words with "…" there (``labqfl run --help`` showed ``--no-auth-boots…``,
``--no-wait-for-k…`` and ``labqfl.qkd.block…``); labqfl.cli.helpfmt lays each option out in two columns."""

from __future__ import annotations

import re
from collections.abc import Iterator

import click
import pytest
import typer.main
from typer.testing import CliRunner

from labqfl.cli import app


def _commands(cmd: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


def _words(text: str) -> list[str]:
    return re.findall(r"\S+", re.sub(r"[│╭╮╰╯─]", " ", text))


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=[" ".join(p) or "labqfl" for p, _ in COMMANDS])
def test_help_at_80_columns_cuts_no_option_name_and_no_word(path: tuple[str, ...], cmd: click.Command) -> None:
    r = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert max(len(x) for x in lines) <= 80, "a line wider than the terminal"
    written = " ".join(getattr(p, "help", None) or "" for p in cmd.params) + (cmd.help or "")
    assert r.output.count("…") == written.count("…"), f"labqfl {' '.join(path)} --help cuts text:\n{r.output}"
    shown = set(_words(r.output))
    for param in cmd.params:
        if getattr(param, "hidden", False):
            continue
        for name in [*param.opts, *param.secondary_opts]:
            assert name in shown or f"{name}," in shown, (
                f"labqfl {' '.join(path)} --help does not show {name} whole:\n{r.output}")
