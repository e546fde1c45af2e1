"""Review s38 user F4: the phase-error bound was a percentage in report.html (12.5) and a fraction in `labqfl distill`
(0.113) and `labqfl keyrate` (0.103), in columns beside the QBER in %, and the abort reasons gave both rates as
fractions ("phase-error bound 0.5000 above threshold 0.4500"). Every human output gives it in % now (the JSON keeps
fractions, docs/metrics.md). F8: the keyrate plot's dotted line was labelled "32.8 kbit/s" only, and η at +20 dB
read 0.00/0.00."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.cli.common import pct_cell

runner = CliRunner()


def test_keyrate_gives_the_phase_error_bound_in_percent() -> None:
    args = ["keyrate", "--pair", "C1-C4", "--loss-db", "0:20:10"]
    r, rj = runner.invoke(app, args), runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0 and rj.exit_code == 0, r.output
    rows = json.loads(rj.stdout)["results"]
    out = r.stdout + r.stderr
    for row in rows:
        v = row["phase_error_upper"]
        assert pct_cell(v) in out and f" {v:.3f} " not in out, (v, out)
    assert "of the block (as QBER, in %)" in " ".join(out.split())
    assert "phase-error bound 50.00 % above threshold 45.00 %" in out  # +10, +20 dB: no key
    assert "0.00/0.00" not in out and f"{rows[-1]['eta_cw']:.3g}/" in out


def test_keyrate_plot_names_the_papers_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.pyplot as plt

    legends: list[list[str]] = []
    real = plt.close

    def close(fig: Any = None) -> None:
        if fig is not None and fig.axes and fig.axes[0].get_legend() is not None:
            legends.append([t.get_text() for t in fig.axes[0].get_legend().get_texts()])
        real(fig)

    monkeypatch.setattr(plt, "close", close)
    r = runner.invoke(app, ["keyrate", "--pair", "C1-C4", "--loss-db", "0:20:10", "--plot", str(tmp_path / "k.png")])
    assert r.exit_code == 0, r.output
    assert legends and "paper (QuNetQFL, arXiv 2501.12709): 32.8 kbit/s per pair" in legends[-1], legends


def test_distill_gives_the_phase_error_bound_in_percent(tmp_path: Path, small_station_file: Path) -> None:
    rec = tmp_path / "rec.h5"
    r = runner.invoke(app, ["acquire", "--config", str(small_station_file), "--duration", "0.2", "--out", str(rec),
                            "--data-dir", str(tmp_path / "d0"), "--json"])
    assert r.exit_code == 0, r.output
    for d in ("d1", "d2"):  # the clients' private choice logs are in the data dir; fresh key stores in each
        shutil.copytree(tmp_path / "d0", tmp_path / d)
    base = ["distill", str(rec), "--out", str(tmp_path / "runs")]
    rj = runner.invoke(app, [*base, "--data-dir", str(tmp_path / "d1"), "--json"])
    r = runner.invoke(app, [*base, "--data-dir", str(tmp_path / "d2")])
    assert rj.exit_code == 0 and r.exit_code == 0, r.output
    v = json.loads(rj.stdout)["pairs"]["C1-C2"]["phase_error_bound"]
    assert 0 < v < 0.45
    out = r.stdout + r.stderr
    assert pct_cell(v) in out and f"{v:.3f}" not in out, (v, out)
    assert "e_ph ≤: the upper bound on the phase-error rate" in " ".join(out.split())
