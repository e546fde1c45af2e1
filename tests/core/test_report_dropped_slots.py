"""report.html shows the dropped slots (issue 17, item 4): per pair, and per acquisition by cause
(the tagger's overflow / missed-event intervals, missing or duplicated frame markers, frames a
client did not play), with units; a zero reads 0, a counter its path does not report n/a."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from labqfl.config import load_station_config
from labqfl.mainjob import distill_pair_metrics
from labqfl.nodes.runjob import NodesAcquisition
from labqfl.qkd.pipeline import PairResult
from labqfl.qkd.slotting import SlottingStats
from labqfl.report import NOT_AVAILABLE, write_report
from labqfl.runs import RunRecord


class _Tables(HTMLParser):
    """Every table after an <h2>: {heading: [[cell text, ...] per row]} (header rows left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._h2: str | None = None
        self._heading = ""
        self._cell: str | None = None
        self._row: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[Any]) -> None:
        if tag == "h2":
            self._h2 = ""
        elif tag == "tr":
            self._row = []
        elif tag == "td":
            self._cell = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2" and self._h2 is not None:
            self._heading, self._h2 = self._h2, None
        elif tag == "td" and self._cell is not None and self._row is not None:
            self._row.append(self._cell.strip())
            self._cell = None
        elif tag == "tr" and self._row:
            self.tables.setdefault(self._heading, []).append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._h2 is not None:
            self._h2 += data
        elif self._cell is not None:
            self._cell += data


def _pairs(dropped: dict[str, int]) -> dict[str, Any]:
    return distill_pair_metrics({p: PairResult(p, n_slots=4_000_000, dropped_slots=n, sifted_bits=10_000)
                                 for p, n in dropped.items()}, 10.0)


def _report(tmp_path: Path, acquisition: dict[str, Any], dropped: dict[str, int]) -> dict[str, list[list[str]]]:
    m = {"status": "complete", "station": "s", "key_source": "qkd", "acquisition": acquisition,
         "distill": {"pairs": _pairs(dropped), "timeline": []}}
    run = RunRecord.create("report-test", load_station_config(), tmp_path)
    try:
        doc = write_report(run, m).read_text(encoding="utf-8")
    finally:
        run.close()
    p = _Tables()
    p.feed(doc)
    return p.tables


def _cause(rows: list[list[str]], start: str) -> tuple[str, str]:
    hits = [r for r in rows if r[0].startswith(start)]
    assert len(hits) == 1, (start, rows)
    return hits[0][1], hits[0][2]


def test_in_process_run_shows_dropped_slots_per_pair_and_by_cause(tmp_path: Path) -> None:
    stats = SlottingStats(lost_intervals=3, overflow_blocks=2, dropped_slots_lost_data=1234, missing_markers=2,
                          spurious_markers=1, dropped_slots_sync=131_072)
    acq = {"path": "in-process", "slotting": vars(stats),
           "modulation": {"C1": {"frames": 100, "played": 97, "lost": 3, "late": 1, "error": None},
                          "C2": {"frames": 100, "played": 100, "lost": 0, "late": 0, "error": None}}}
    tables = _report(tmp_path, acq, {"C1-C2": 132_306 + 6 * 65_536, "C1-C3": 0})
    rows = tables["Dropped slots"]
    per_pair = {r[0]: r[1:] for r in rows if r[0] in ("C1-C2", "C1-C3")}
    assert per_pair["C1-C2"][:2] == [f"{132_306 + 6 * 65_536:,}", "4,000,000"]  # separators (review s40 LOW-1)
    assert per_pair["C1-C2"][2] == f"{1e6 * (132_306 + 6 * 65_536) / 4_000_000:,.2f}"
    assert per_pair["C1-C3"] == ["0", "4,000,000", "0.00"]  # zero is 0, never blank or n/a
    assert _cause(rows, "tagger overflow / missed-event intervals") == ("3", "intervals")
    assert _cause(rows, "tag blocks flagged overflow") == ("2", "blocks")
    assert _cause(rows, "slots dropped for lost tagger data") == ("1,234", "slots")
    assert _cause(rows, "missing frame markers") == ("2", "markers")
    assert _cause(rows, "duplicated or stray frame markers") == ("1", "markers")
    assert _cause(rows, "slots dropped for sync") == ("131,072", "slots")
    assert _cause(rows, "frames not played by C1") == ("3", "frames")
    assert _cause(rows, "frames not played by C2") == ("0", "frames")
    cells = [c for r in rows for c in r]
    assert all(cells) and NOT_AVAILABLE not in cells, cells


def test_nodes_run_shows_the_detector_total_and_marks_causes_it_does_not_report(tmp_path: Path) -> None:
    acq = {"path": "nodes", "startup_s": {"nodes": {"detector": 1.0}}, "exit_codes": {"detector": 0},
           "detector": {"slots": 10**6, "dropped": 777}}
    rows = _report(tmp_path, acq, {"C1-C2": 777})["Dropped slots"]
    assert _cause(rows, "slots dropped by the detector's slotting") == ("777", "slots")
    assert _cause(rows, "tagger overflow / missed-event intervals") == (NOT_AVAILABLE, "intervals")
    assert _cause(rows, "frames not played") == ("0", "frames")  # no client streams to a pattern generator
    assert all(c for r in rows for c in r)


def test_nodes_run_shows_the_detector_nodes_counters_by_cause_and_the_taggers_own_counts(tmp_path: Path) -> None:
    """The detection node's ``ctl/ran`` carries its slotter's counters by cause and, with the real tagger
    driver, the stream's overflows and missed events: the nodes path's metrics and report show them."""
    stats = SlottingStats(lost_intervals=2, dropped_slots_lost_data=5021, missing_markers=1, dropped_slots_sync=65_536)
    ran = {"slots": 10**6, "tags": 5, "clicks": 3, "blocks": 1, "dropped": 70_557, "wall_s": 1.0,
           "channel_counts": "{}", "slotting": json.dumps(vars(stats)), "tagger_overflows": 2,
           "tagger_missed_events": 4417}
    acq = NodesAcquisition("a", {}, {}, [], 1.0, startup_s={"nodes": {"detector": 1.0}}, exit_codes={"detector": 0},
                           detector=ran).path_metrics()
    assert acq["slotting"] == vars(stats) and acq["detector"]["tagger_missed_events"] == 4417
    rows = _report(tmp_path, acq, {"C1-C2": 70_557})["Dropped slots"]
    assert _cause(rows, "tagger overflow / missed-event intervals") == ("2", "intervals")
    assert _cause(rows, "slots dropped for lost tagger data") == ("5,021", "slots")
    assert _cause(rows, "missing frame markers") == ("1", "markers")
    assert _cause(rows, "slots dropped for sync") == ("65,536", "slots")
    assert _cause(rows, "slots dropped by the detector's slotting") == ("70,557", "slots")
    assert _cause(rows, "tagger overflows") == ("2", "overflows")
    assert _cause(rows, "tags the tagger missed") == ("4,417", "tags")
    cells = [c for r in rows for c in r]
    assert all(cells) and NOT_AVAILABLE not in cells, cells
