"""Review s34 L6: ``labqfl --help`` showed ``--verbose -v INTEGER [default: 0]``, which reads as
``labqfl -v 2`` (refused: "No such command '2'"); it is a count flag (``-v``, ``-vv``)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

import labqfl.cli
from labqfl.cli import app


def test_root_help_shows_verbose_as_a_flag_without_a_value() -> None:
    r = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    [row] = [ln for ln in r.output.splitlines() if "--verbose" in ln]
    assert re.search(r"--verbose,?\s+-v\s+More log output", row), row  # two-column help (helpfmt): "--verbose, -v"
    assert "INTEGER" not in r.output and "[default: 0]" not in r.output
    assert "-vv debug" in row


@pytest.mark.parametrize(("flags", "level"), [([], "WARNING"), (["-v"], "INFO"), (["-vv"], "DEBUG"),
                                              (["-v", "-v"], "DEBUG"), (["--verbose", "--verbose", "-v"], "DEBUG")])
def test_verbose_counts_its_repeats(monkeypatch: pytest.MonkeyPatch, flags: list[str], level: str) -> None:
    got: list[str] = []
    monkeypatch.setattr(labqfl.cli, "set_verbosity", lambda lv, **kw: got.append(lv))
    r = CliRunner().invoke(app, [*flags, "station", "show", "--json"])
    assert r.exit_code == 0, r.output
    assert got == [level]
