"""Review s40 user LOW-1: report.html's tables formatted every decimal with ``:.4g``, so trailing zeros were dropped
and a column mixed 1, 2 and 3 decimals (key rate "82.7, 71.66, 58.71", f "1.04" beside "1.039"), and integers had
no thousands separators ("2159122") while every CLI table has them. Each column now has one number of decimals, the
CLI's for the same quantity (``labqfl run``/``distill``: kbit/s to 0.1, QBER and e_ph in % to 0.01, f to 0.001,
accuracy to 0.1 %), and counts have separators. Checked on the report of a real ``labqfl run``
(``data/run_nodes_metrics.json``). Review s40 LOW-5 (c): the float32 baseline column names its unit."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from labqfl.cli.common import pct_cell
from labqfl.report import write_report
from labqfl.runs import RunRecord

METRICS = Path(__file__).parent / "data" / "run_nodes_metrics.json"


def _tables(page: str) -> dict[str, list[dict[str, str]]]:
    """{h2 heading: rows as {column title: cell text}} of the tables right after an <h2> (and its notes)."""
    out: dict[str, list[dict[str, str]]] = {}
    for heading, body in re.findall(r"<h2>(.*?)</h2>(.*?)(?=<h2>|$)", page, flags=re.S):
        table = re.search(r"<table>(.*?)</table>", body, flags=re.S)
        if not table:
            continue
        rows = [[html.unescape(c) for c in re.findall(r"<t[dh]>(.*?)</t[dh]>", r)]
                for r in re.findall(r"<tr>(.*?)</tr>", table.group(1))]
        out[html.unescape(heading)] = [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    return out


def _decimals(cell: str) -> int:
    return len(cell.split(".")[1]) if "." in cell else 0


def _report(tmp_path: Path) -> tuple[dict[str, list[dict[str, str]]], dict]:
    m = json.loads(METRICS.read_text(encoding="utf-8"))
    with RunRecord.create("run", None, tmp_path, capture_log=False) as run:
        page = write_report(run, m).read_text(encoding="utf-8")
    return _tables(page), m


def test_each_decimal_column_has_one_number_of_decimals_the_clis(tmp_path: Path) -> None:
    tables, m = _report(tmp_path)
    rows = tables["Key distillation"]
    pairs = m["distill"]["pairs"]
    assert len(rows) == len(pairs) == 6
    for col, decimals in (("QBER X (key) [%]", 2), ("phase-error bound [%]", 2), ("f (EC efficiency)", 3),
                          ("key rate [kbit/s]", 1)):
        assert {_decimals(r[col]) for r in rows} == {decimals}, (col, [r[col] for r in rows])
    for r in rows:
        p = pairs[r["pair"]]
        # the CLI's cells for the same quantities (labqfl/cli/run.py, distill.py)
        assert r["QBER X (key) [%]"] + " %" == pct_cell(p["qber_x"])
        assert r["phase-error bound [%]"] + " %" == pct_cell(p["phase_error_bound"])
        assert r["key rate [kbit/s]"] == f"{p['secure_key_rate_bps'] / 1e3:.1f}"
        assert r["f (EC efficiency)"] == f"{p['efficiency_f']:.3f}"
    assert [r["key rate [kbit/s]"] for r in rows] == ["82.7", "71.7", "58.7", "84.6", "70.6", "82.7"]
    assert rows[2]["f (EC efficiency)"] == "1.040"  # was "1.04" beside "1.039"
    train = tables["Federated training"][0]
    assert train["final test accuracy [%]"] == "97.0"  # as labqfl run's closing line
    assert train["float32 baseline [bits/client/round]"] == "768"


def test_counts_have_thousands_separators(tmp_path: Path) -> None:
    tables, m = _report(tmp_path)
    c12 = next(r for r in tables["Key distillation"] if r["pair"] == "C1-C2")
    assert c12["sifted [bits]"] == "2,159,122" == f"{m['distill']['pairs']['C1-C2']['sifted_bits']:,}"
    assert c12["leaked (EC) [bits]"] == "160,336" and c12["final key [bits]"] == "827,049"
    dropped = next(r for r in tables["Dropped slots"] if r["pair"] == "C1-C2")
    assert dropped["pair's slots [slots]"] == "166,709,760"
    assert tables["Federated training"][0]["key bits used"] == "26,880"


def test_number_cell() -> None:
    from labqfl.report import number_cell

    assert [number_cell(v, 2) for v in (82.7, 71.66, 0, 1234.5)] == ["82.70", "71.66", "0.00", "1,234.50"]
    assert number_cell(2159122) == "2,159,122" and number_cell(0) == "0"
    assert number_cell(True) == "True" and number_cell("no key") == "no key"
