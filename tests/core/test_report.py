"""report.html fills every cell: the distillation table reads the keys the pipeline writes."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from labqfl.config import load_station_config
from labqfl.mainjob import distill_pair_metrics
from labqfl.qkd.keyrate import predict_pair, station_pair_channel
from labqfl.qkd.pipeline import BlockResult, PairResult
from labqfl.report import NOT_AVAILABLE, write_report
from labqfl.runs import RunRecord


class _Cells(HTMLParser):
    """Text of every <td> (one entry per cell, '' for an empty one)."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []
        self._in = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "td":
            self._in = True
            self.cells.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._in = False

    def handle_data(self, data: str) -> None:
        if self._in:
            self.cells[-1] += data


def table_cells(html: str) -> list[str]:
    p = _Cells()
    p.feed(html)
    return [c.strip() for c in p.cells]


def _pair(name: str, report: dict | None, final: int, leak: int, abort_reason: str = "") -> PairResult:
    r = PairResult(name, n_slots=10**9, sifted_bits=12_000_000, processed_bits=12_000_000, key_errors=60_000,
                   leaked_ec_bits=leak, verification_bits=51, final_key_bits=final, auth_key_bits=192,
                   delivered_bits=max(final - 192, 0), test_clicks={"X": 4000, "Y": 3000},
                   test_errors_x2={"X": 80, "Y": 70})
    r.blocks.append(BlockResult(
        pair=name, block_id="b0", n_slots=10**9, sifted_bits=12_000_000, qber_key=0.005, qber_estimate=0.005,
        leaked_ec_bits=leak, verification_bits=51, efficiency_f=1.05, verified=True, keys_identical=True,
        final_key_bits=final, auth_key_bits=192, delivered_bits=max(final - 192, 0), abort=final == 0,
        abort_reason=abort_reason, report=report, times_s={}))
    return r


def _metrics(pairs: dict) -> dict:
    train = {"task": "mnist-qnn", "clients": 4, "q": 8, "rounds_run": 2, "final_test_accuracy": 0.9,
             "key_bits_total": 1000, "upload_bits_per_client": 400, "baseline_upload_bits_per_client": 1600,
             "key_source": "qkd", "rounds": [], "data": {"digits": [0, 1], "test_size": 200}}
    return {"status": "complete", "station": "s", "key_source": "qkd", "distill": {"pairs": pairs, "timeline": []},
            "train": train}


def test_report_fills_every_cell_of_a_run_with_key(tmp_path: Path) -> None:
    cfg = load_station_config()
    pred = predict_pair(station_pair_channel(cfg, ("C1", "C2")), 1e9, 6, 1e8, with_asymptotic=False)
    rep = pred.report.as_dict()
    pairs = distill_pair_metrics({"C1-C2": _pair("C1-C2", rep, 1_500_000, 600_000)}, 60.0)
    run = RunRecord.create("report-test", cfg, tmp_path)
    try:
        html = write_report(run, _metrics(pairs)).read_text(encoding="utf-8")
    finally:
        run.close()
    cells = table_cells(html)
    assert len(cells) == 9 + 10  # distillation row + training row (with its data, review s39 user F5)
    empty = [i for i, c in enumerate(cells) if not c]
    assert not empty, f"empty cells at {empty}: {cells}"
    assert NOT_AVAILABLE not in cells and "None" not in cells, cells
    # the two columns that used to be blank show the pipeline's numbers
    assert f"{100 * rep['phase_error_upper']:.2f}" in cells  # in % (review s36 F12), 2 decimals (review s40 LOW-1)
    assert "600,000" in cells


def test_report_marks_missing_numbers_instead_of_leaving_cells_empty(tmp_path: Path) -> None:
    cfg = load_station_config()
    # an aborted pair whose blocks never reached estimation: no phase-error bound, no f
    pairs = distill_pair_metrics({"C1-C4": _pair("C1-C4", None, 0, 0, "verification failed")}, 60.0)
    pairs["C1-C4"]["efficiency_f"] = None
    run = RunRecord.create("report-test", cfg, tmp_path)
    try:
        html = write_report(run, _metrics(pairs)).read_text(encoding="utf-8")
    finally:
        run.close()
    cells = table_cells(html)
    assert all(cells), cells
    assert cells.count(NOT_AVAILABLE) == 2  # phase-error bound and f
