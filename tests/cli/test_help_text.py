"""Help texts and tables show what was written: a unit such as ``[s]``, ``[dB]`` or ``[bit/s]`` is not
taken for a rich style tag and dropped (``labqfl run --help`` once read "Acquisition time  of …", and
``labqfl plan``'s table headers "loss", "key rate" without their units)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import click
import pytest
import typer.main
from rich.table import Table
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.cli.common import console

#: bracketed units/placeholders, and angle-bracket placeholders (markdown would take those for HTML)
TOKEN = re.compile(r"\[[^\]\s]+\]|<[^>\s]+>")


def _commands(cmd: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from _commands(sub, (*path, name))


COMMANDS = [(p, c) for p, c in _commands(typer.main.get_command(app)) if p]


def _squash(text: str) -> str:
    return re.sub(r"[\s│╭╮╰╯─]+", " ", text)


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_help_text_keeps_its_units_and_placeholders(path: tuple[str, ...], cmd: click.Command) -> None:
    r = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    shown = _squash(r.output)
    for param in cmd.params:
        written = getattr(param, "help", None) or ""
        for token in TOKEN.findall(written):
            assert token in shown, f"labqfl {' '.join(path)} --help drops {token!r} of {param.name}'s help: {written!r}"
        assert not re.search(r"<[^>\s]+>", written), (
            f"{param.name}: write placeholders in capitals (NAME), not <name>, which the help renders as HTML")


def test_the_console_prints_units_in_tables_and_messages() -> None:
    with console.capture() as cap:
        t = Table("loss [dB]", "key rate [bit/s]", "acquisition/round [s]")
        t.add_row("1", "2", "3")
        console.print(t)
        console.print("need/round [bit], wait [s]")
    out = cap.get()
    for unit in ("[dB]", "[bit/s]", "[s]", "[bit]"):
        assert unit in out


def test_positional_arguments_show_their_help() -> None:
    """Review s32 L1: with click 8.5 (and the typer flwr allows) `labqfl distill -h` listed RECORDING without its
    text, as every command's positional arguments; pyproject keeps click < 8.5."""
    from typer.testing import CliRunner

    from labqfl.cli import app

    for argv, text in ((["distill", "--help"], "HDF5 recording (from labqfl acquire --out)"),
                       (["keys", "import", "--help"], "Export file")):
        r = CliRunner().invoke(app, argv, env={"COLUMNS": "200"})
        assert r.exit_code == 0 and text in r.output, (argv, r.output)
