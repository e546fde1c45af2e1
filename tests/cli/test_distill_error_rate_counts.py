"""``labqfl distill``'s test error rates come with their click counts (physics review s34 F4).

Its table printed "QBER Y 0.00 %" for five of six pairs of the default station: the Y-basis test data of two
clients whose signal intensities differ are their decoy–decoy clicks only, about five in 4 s, and no count
was shown or written. Now the table says "QBER X key" and "Y test (clicks)", a Y cell below
``MIN_TEST_CLICKS`` clicks reads "n/a (n clicks)", a note under the table says what the columns are, and
``--json`` adds ``error_rate_counts`` beside ``error_rate`` (whose fields stay).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from labqfl.cli.distill import MIN_TEST_CLICKS, RATE_NOTE, _render, rate_clicks_cell


@pytest.fixture(scope="module")
def distilled(distilled_small_live: dict[str, Any]) -> dict[str, Any]:
    """``labqfl distill --live --duration 0.2 --json`` on the small station (tests/cli/conftest.py)."""
    return distilled_small_live


def _table(doc: dict[str, Any]) -> str:
    con = Console(file=io.StringIO(), width=400, force_terminal=False, highlight=False)
    _render(con, doc, None, SimpleNamespace(block_bits=1000))
    return con.file.getvalue()


def _row(out: str, pair: str) -> str:
    return next(ln for ln in out.splitlines() if ln.strip().startswith(pair + " "))


def test_json_carries_each_error_rate_with_its_count(distilled: dict[str, Any]) -> None:
    for pair, r in distilled["pairs"].items():
        assert set(r["error_rate"]) == {"X_key", "X_test", "Y_test"}  # the numbers stay
        n = r["error_rate_counts"]
        assert set(n) == {"X_key", "X_test", "Y_test"}, pair
        assert all(isinstance(v, int) and v >= 0 for v in n.values())
        assert n["X_key"] == r["processed_bits"] > 0
        for k in ("X_key", "X_test", "Y_test"):
            assert (r["error_rate"][k] is None) == (n[k] == 0), (pair, k)
            if n[k]:  # a rate over n events is a multiple of 1/(2n) (a double click is half an error)
                assert abs(r["error_rate"][k] * 2 * n[k] - round(r["error_rate"][k] * 2 * n[k])) < 1e-6
    metrics = json.loads((Path(distilled["run"]) / "metrics.json").read_text())
    assert {p: v["error_rate_counts"] for p, v in metrics["pairs"].items()} == \
        {p: v["error_rate_counts"] for p, v in distilled["pairs"].items()}


def test_table_shows_the_y_test_rate_with_its_clicks(distilled: dict[str, Any]) -> None:
    out = _table(distilled)
    assert "QBER X key" in out and "Y test (clicks)" in out
    assert " ".join(RATE_NOTE.split()) in " ".join(out.split())
    for pair, r in distilled["pairs"].items():
        n = r["error_rate_counts"]["Y_test"]
        want = rate_clicks_cell(r["error_rate"]["Y_test"], n)  # the one format (a single click reads "1 click")
        assert want in _row(out, pair), (want, _row(out, pair))


def test_a_rate_from_a_few_clicks_reads_na_with_the_count(distilled: dict[str, Any]) -> None:
    """The review's case: a Y test rate of 0 from 5 decoy–decoy clicks printed "0.00 %"."""
    doc = json.loads(json.dumps(distilled))
    pair = next(iter(doc["pairs"]))
    doc["pairs"][pair]["error_rate"]["Y_test"] = 0.0
    doc["pairs"][pair]["error_rate_counts"]["Y_test"] = 5
    row = _row(_table(doc), pair)
    assert "n/a (5 clicks)" in row and "0.00 %" not in row.replace(
        f"{100 * doc['pairs'][pair]['error_rate']['X_key']:.2f} %", "")
    doc["pairs"][pair]["error_rate"]["Y_test"] = 0.0059
    doc["pairs"][pair]["error_rate_counts"]["Y_test"] = 12_345
    assert "0.59 % (12,345)" in _row(_table(doc), pair)


@pytest.mark.parametrize("rate,clicks,cell", [
    (0.0, 5, "n/a (5 clicks)"), (0.0, 0, "n/a (0 clicks)"), (0.0101, MIN_TEST_CLICKS - 1, f"n/a ({MIN_TEST_CLICKS - 1} clicks)"),
    (0.0156, MIN_TEST_CLICKS, f"1.56 % ({MIN_TEST_CLICKS})"), (0.0156, 1_234_567, "1.56 % (1,234,567)"),
    (0.0156, None, "1.56 %"), (None, None, "—")])
def test_rate_clicks_cell(rate: float | None, clicks: int | None, cell: str) -> None:
    assert rate_clicks_cell(rate, clicks) == cell


def test_distill_and_report_leave_out_rates_below_the_same_count() -> None:
    from labqfl.report import MIN_TEST_CLICKS as REPORT_MIN

    assert REPORT_MIN == MIN_TEST_CLICKS == 100
