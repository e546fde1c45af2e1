"""``labqfl plan``'s table of the slowest pairs keeps every number and unit whole at 80 columns (review s36 user
F11: rich cut ``block [slots]`` to ``1.67e+…`` and ``need/round [bit]`` to ``need/r…``); it goes through
:func:`labqfl.cli.common.print_table` like the other commands' tables."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.cli import common as cli_common

runner = CliRunner()


@pytest.mark.parametrize("width", [80, 200])
def test_plan_table_cuts_nothing(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_common.console, "_width", width)
    r = runner.invoke(app, ["plan"])
    assert r.exit_code == 0, r.output
    assert "…" not in r.output, r.output
    for head in ("block [slots]", "key rate [bit/s]", "need/round [bit]", "acquisition/round [s]"):
        assert head in " ".join(r.output.split()), (head, r.output)
