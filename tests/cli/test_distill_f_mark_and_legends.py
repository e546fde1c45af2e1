"""Review s39 user F4 and F8: what ``labqfl distill`` and ``labqfl acquire`` print beside their tables.

F4: the distill table printed a Cascade f of 1.128 bare although the --engine help says 1.03-1.07 and report.html
marks such a value; it now uses report.py's :func:`labqfl.report.f_cell` (same rule, same mark) and a legend line
says what f is and what the mark means. F8: "30 s of data in 72.24 s" did not say whose 72 s (it is this
command's own wall time), and acquire's "double" column was explained nowhere.
"""

from __future__ import annotations

import io
import json
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from labqfl.cli.acquire import CLICKS_NOTE
from labqfl.cli.acquire import _render as acquire_render
from labqfl.cli.distill import _render as distill_render
from labqfl.report import CASCADE_F_USUAL, F_HIGH_MARK


@pytest.fixture(scope="module")
def distilled(distilled_small_live: dict[str, Any]) -> dict[str, Any]:
    """``labqfl distill --live --duration 0.2 --json`` on the small station (tests/cli/conftest.py)."""
    return distilled_small_live


def _out(doc: dict[str, Any]) -> str:
    con = Console(file=io.StringIO(), width=400, force_terminal=False, highlight=False)
    distill_render(con, doc, None, SimpleNamespace(block_bits=1000))
    return con.file.getvalue()


def _row(out: str, pair: str) -> str:
    return next(ln for ln in out.splitlines() if ln.strip().startswith(pair + " "))


@pytest.mark.parametrize("engine", ["cascade", "ldpc"])
def test_a_cascade_f_above_the_help_range_is_marked_as_in_the_report(distilled: dict[str, Any], engine: str) -> None:
    doc = json.loads(json.dumps(distilled))
    doc["engine"] = engine
    pair = next(iter(doc["pairs"]))
    doc["pairs"][pair]["efficiency_f"] = 1.128
    out = _out(doc)
    marked = "1.128 " + F_HIGH_MARK in _row(out, pair)
    assert marked == (engine == "cascade"), _row(out, pair)
    assert "1.128" in _row(out, pair)
    lo, hi = CASCADE_F_USUAL
    flat = " ".join(out.split())
    assert f"Cascade's mean f on test frames is {lo}–{hi}" in flat and f'marked "{F_HIGH_MARK}"' in flat


def test_an_f_inside_the_range_is_not_marked(distilled: dict[str, Any]) -> None:
    doc = json.loads(json.dumps(distilled))
    doc["engine"] = "cascade"
    pair = next(iter(doc["pairs"]))
    doc["pairs"][pair]["efficiency_f"] = 1.041
    row = _row(_out(doc), pair)
    assert "1.041" in row and F_HIGH_MARK not in row


def test_the_source_line_says_the_time_is_this_commands(distilled: dict[str, Any]) -> None:
    doc = json.loads(json.dumps(distilled))
    first = _out(doc).splitlines()[0]
    assert first.startswith("source: live (simulated station); 0.2 s of data, acquired and distilled in ")
    assert " s wall (this command); engine " in first
    doc["source"], doc["duration_s"], doc["wall_s"] = "rec30.h5", 30.0, 72.24
    first = _out(doc).splitlines()[0]
    assert first == "source: rec30.h5; 30 s of data, distilled in 72.24 s wall (this command); engine " + doc["engine"]


def test_acquire_explains_its_double_column() -> None:
    pair = {"clicks": 1000, "detector_clicks": {"D0": 520, "D1": 490}, "double_clicks": 10,
            "error_rate": {}, "error_rate_counts": {}}
    data = {"duration_s": 1.0, "wall_s": 2.0, "speed_x_real_time": 0.5, "n_tags": 2000,
            "count_rates_hz": {"D0": 520.0, "D1": 490.0}, "modulation": {}, "pairs": {"C1-C2": pair}}
    con = Console(file=io.StringIO(), width=400, force_terminal=False, highlight=False)
    acquire_render(con, "station", data, None)
    flat = " ".join(con.file.getvalue().split())
    assert " ".join(CLICKS_NOTE.split()) in flat
    assert "double: slots in which D0 and D1 both clicked" in flat
    # the note's arithmetic holds for the row: clicks = D0 + D1 - double
    assert pair["clicks"] == pair["detector_clicks"]["D0"] + pair["detector_clicks"]["D1"] - pair["double_clicks"]
