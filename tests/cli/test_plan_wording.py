"""Review s36 user F10: the plan called constants from docs/scaling.md "measured on this machine", printed
"distillation ≈ 0 s" for a distillation streamed with the acquisition, and the run's closing "plan vs run" line
compared key ratios only, under "worst pair" although each ratio's worst may be another pair. The constants are
"measured on the development machine" now, the streamed distillation says so, and the line names the largest
deviation over pairs and adds the whole wall time, measured against planned."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from rich.console import Console
from typer.testing import CliRunner

from labqfl.cli import app

runner = CliRunner()


def test_plan_names_where_its_constants_were_measured() -> None:
    r = runner.invoke(app, ["plan", "--rounds", "10"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    text = " ".join((r.stdout + r.stderr).split())
    assert "measured on this machine" not in text
    assert "measured on the development machine, docs/scaling.md" in text
    assert "distillation: streamed with the acquisition" in text and "distillation ≈ 0 s" not in text


def _metrics() -> dict[str, Any]:
    return {"run": "r", "status": "complete", "phases_s": {"acquire": 25.0, "train": 72.5, "total_s": 100.515},
            "plan": {"predicted": {"total_wall_s": 52.0},
                     "comparison": {"worst_key_use_ratio": 1.0, "worst_key_rate_ratio": 1.0156,
                                    "worst_acquisition_ratio": 0.9846}}}


def test_wall_comparison() -> None:
    from labqfl.planning import wall_comparison

    assert wall_comparison(_metrics()) == {"measured_s": 100.515, "predicted_s": 52.0, "ratio": 100.515 / 52.0}
    assert wall_comparison({"phases_s": {"acquire": 1.0}, "plan": {"predicted": {"total_wall_s": 52.0}}}) is None


def test_plan_vs_run_line_gives_wall_and_says_per_metric() -> None:
    from labqfl.cli.run import _render

    con = Console(file=io.StringIO(), width=300, force_terminal=False)
    _render(con, _metrics(), Path("run"))
    text = " ".join(con.file.getvalue().split())  # type: ignore[attr-defined]
    assert ("plan vs run (measured/predicted, largest deviation over pairs): key use 1.000, key rate 1.016, "
            "acquisition per round 0.985; wall 100.5 s measured / 52 s planned (×1.93") in text
    assert "worst pair" not in text
