"""``labqfl run`` prints the key-aware plan at its start and compares it with what happened at the
end (issue 22 item 2), on a run that waits for key: the console text, checked against the run's
own metrics.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labqfl.cli import app

# q = 32: 768 key bits per round on the one pair; 0.0185 s of the small station delivers ~1 000 bits,
# so a later round waits for a top-up (tests/mainjob/test_key_wait.py)
ARGS = ["--duration", "0.0185", "--rounds", "3", "--q", "32", "--eps-sec", "1e-4", "--in-process"]


@pytest.mark.slow
def test_run_prints_the_plan_first_and_the_plan_against_the_run_last(small_station_file, tmp_path):
    r = CliRunner().invoke(app, ["run", "--config", str(small_station_file), *ARGS,
                                 "--data-dir", str(tmp_path / "keys"), "--out", str(tmp_path / "runs")])
    assert r.exit_code == 0, r.output
    text = " ".join(r.stderr.split())
    folder = re.search(r"run folder: (\S+)", text)
    assert folder is not None
    m = json.loads((Path(folder.group(1)) / "metrics.json").read_text())
    assert m["status"] == "complete"
    plan, cmp_ = m["plan"]["predicted"], m["plan"]["comparison"]
    waits = cmp_["key_waits"]

    # at the start, before anything was acquired: the plan, with the top-up the run will wait for
    start = text.index(f"plan: mnist-qnn (24 parameters), 2 clients, q = 32, 3 rounds, graph all on {plan['station']}")
    top = plan["top_ups"][0]
    assert text.index(f"round {top['round']} waits for key: top-up acquisition of {top['duration_s']:.4g} s") > start
    assert f"station time of the run with its top-ups: {plan['station_s']:.3g} s" in text
    assert text.index(f"total wall ≈ {plan['total_wall_s']:.3g} s") > start

    # at the end: the plan against the run, from the comparison in metrics.json
    end = text.index("plan vs run (measured/predicted, largest deviation over pairs): key use 1.000, key rate "
                     f"{cmp_['worst_key_rate_ratio']:.3f}, acquisition per round {cmp_['worst_acquisition_ratio']:.3f}")
    assert end > start
    assert m["train"]["key_waits"]["rounds_waited"] >= 1
    assert (f"plan vs run, waits for key: first wait planned round {waits['predicted_first_wait_round']}, "
            f"run round {waits['measured_first_wait_round']}; station time planned {waits['predicted_station_s']:.4g} s, "
            f"run {waits['measured_station_s']:.4g} s") in text
    assert text.index("plan vs run, waits for key") > end
