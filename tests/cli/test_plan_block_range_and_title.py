"""Review s40 user LOW-5 (a), (b): the plan that ``labqfl plan`` and ``labqfl run`` print said "blocks
1.67e+08–1.67e+08 slots per pair" (a range whose ends print alike: 166,658,048 and 166,709,760 slots) and titled
its table "the 6 slowest graph pairs" when the graph has exactly 6 pairs. One value where the ends print alike,
and "all 6 graph pairs, slowest first" where the table holds every pair."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from labqfl.cli import app

runner = CliRunner()


def _plan(*args: str) -> str:
    r = runner.invoke(app, ["plan", *args], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    return " ".join((r.stdout + r.stderr).split())


def test_equal_ends_print_one_value_and_a_table_of_every_pair_says_all() -> None:
    text = _plan("--duration", "10")  # labqfl run's default: every pair's block 1.67e+08 slots to 3 digits
    assert "(blocks 1.67e+08 slots per pair)" in text, text
    assert "1.67e+08–1.67e+08" not in text
    assert "all 6 graph pairs, slowest first" in text and "the 6 slowest graph pairs" not in text


def test_unequal_ends_still_print_the_range() -> None:
    lo, hi = re.search(r"\(blocks (\S+)–(\S+) slots per pair\)", _plan()).groups()  # the plan's own duration
    assert float(lo) < float(hi)


def test_a_table_of_some_pairs_says_of_how_many() -> None:
    from labqfl.cli.plan import _pairs_title

    assert _pairs_title(12, 28) == "the 12 slowest of 28 graph pairs"
    assert _pairs_title(6, 6) == "all 6 graph pairs, slowest first"
