"""Review s38 user F3: report.html showed f = 1.131 for a pair under a legend saying "Cascade reaches 1.04–1.05",
while the --engine help says 1.03–1.07; nothing marked the value. The legend states the range of the --engine help
(docs/reconciliation.md), and a Cascade f above it is marked in its cell."""

from __future__ import annotations

import html
import re
from pathlib import Path

from labqfl.cli.common import EC_ENGINE_HELP
from labqfl.report import write_report
from labqfl.runs import RunRecord

F_HIGH_MARK = "(above Cascade's usual range)"
CASCADE_F_USUAL = (1.03, 1.07)  # the --engine help's range


def _pair(f: float) -> dict:
    return {"sifted_bits": 2_000_000, "qber_x": 0.0052, "phase_error_bound": 0.14, "leaked_ec_bits": 100_000,
            "efficiency_f": f, "final_key_bits": 800_000, "secure_key_rate_bps": 80_000.0, "status": "ok"}


def _cells(tmp_path: Path, engine: str) -> tuple[dict[str, str], str]:
    m = {"status": "complete", "settings": {"engine": engine},
         "distill": {"pairs": {"C1-C3": _pair(1.041), "C2-C3": _pair(1.131)}}}
    with RunRecord.create("run", None, tmp_path / engine, capture_log=False) as run:
        page = html.unescape(write_report(run, m).read_text(encoding="utf-8"))
    rows = re.findall(r"<tr><td>(C\d-C\d)</td>(.*?)</tr>", page)
    f_col = re.findall(r"<th>(.*?)</th>", page).index("f (EC efficiency)")
    return {p: re.findall(r"<td>(.*?)</td>", "<td>" + p + "</td>" + rest)[f_col] for p, rest in rows}, page


def test_a_cascade_f_above_its_usual_range_is_marked(tmp_path: Path) -> None:
    cells, page = _cells(tmp_path, "cascade")
    assert cells == {"C1-C3": "1.041", "C2-C3": f"1.131 {F_HIGH_MARK}"}
    lo, hi = CASCADE_F_USUAL
    assert f"mean f on test frames is {lo}–{hi}" in page and "1.04–1.05" not in page
    assert f"f ≈ {lo}–{hi}" in EC_ENGINE_HELP  # the report and the --engine help quote one range


def test_ldpc_f_is_not_judged_by_cascades_range(tmp_path: Path) -> None:
    cells, _ = _cells(tmp_path, "ldpc")
    assert cells == {"C1-C3": "1.041", "C2-C3": "1.131"}
