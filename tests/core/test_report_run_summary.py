"""Review s36 user F12: report.html gave no acquisition duration, block size, ε_sec, wall time or labqfl version,
showed QBER and accuracy as bare fractions (the CLI says %), and `leaked (EC)` and `f` without unit or meaning.
It has a run summary, percentages with units, and a legend under the key-distillation table now."""

from __future__ import annotations

import html
import re
from pathlib import Path

from labqfl import __version__
from labqfl.report import write_report
from labqfl.runs import RunRecord

METRICS = {
    "status": "complete", "settings": {"duration_s": 10.0, "eps_sec": 1e-10, "engine": "cascade", "seed": 0,
                                       "task": "mnist-qnn", "rounds": 10, "q": 8, "block_bits": None},
    "acquire": {"duration_s": 10.0, "station_s_total": 10.0},
    "plan": {"predicted": {"block_slots": 166709760}},
    "phases_s": {"setup": 0.0, "acquire": 25.0, "train": 72.5, "report": 3.0, "total_s": 100.5},
    "written_utc": "2026-12-07T05:02:37+00:00",
    "acquisition": {"path": "nodes", "startup_s": {"nodes": {"C1": 6.2}}, "exit_codes": {"C1": 0, "C2": 0}},
    "distill": {"pairs": {"C1-C2": {"sifted_bits": 2271056, "qber_x": 0.005779, "phase_error_bound": 0.1412,
                                    "leaked_ec_bits": 121527, "efficiency_f": 1.043, "final_key_bits": 815434,
                                    "secure_key_rate_bps": 81543.4, "status": "ok"}}},
    "train": {"task": "mnist-qnn", "clients": 4, "q": 8, "rounds_run": 10, "final_test_accuracy": 0.97,
              "key_bits_total": 26880, "key_source": "qkd"},
}


def _text(tmp_path: Path) -> str:
    with RunRecord.create("run", None, tmp_path, capture_log=False) as run:
        page = write_report(run, METRICS).read_text()
    return html.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<img[^>]*>", "", page)))


def test_report_has_a_run_summary_and_units(tmp_path: Path) -> None:
    t = " ".join(_text(tmp_path).split())
    assert "Run summary" in t
    assert "acquisition (station time): 10.0 s" in t
    assert "block size: 1.67e+08 slots per pair" in t
    assert "ε_sec (security parameter per block): 1e-10" in t
    assert "wall time: 100.5 s (setup 0.0 s, acquire 25.0 s, train 72.5 s, report 3.0 s)" in t
    assert f"labqfl version: {__version__}" in t
    # percentages where the CLI gives them, units and a legend for the EC columns
    assert "QBER X (key) [%]" in t and " 0.58 " in t and "0.005779" not in t
    assert "final test accuracy [%]" in t and " 97.0 " in t
    assert "leaked (EC) [bits]" in t and "f (EC efficiency)" in t and "1 is the Shannon limit" in t
    assert "key rate [kbit/s]" in t and " 81.5 " in t
    assert "all exited with code 0" in t and "[0]" not in t
