"""Review s38 user F11: the Calibration tab gave bias phases with 6 significant digits (`-0.00611983`, up to 9
decimals) beside a 1σ of 0.0049, and Vπ with 4. A value is shown to its uncertainty's second significant digit
now (GUM §7.2.6), the simulator's truth to the same place."""

from __future__ import annotations

from typing import Any

import pytest
from labqfl.gui.controller import Controller
from labqfl.gui.panels.calibration import CalibrationPanel


@pytest.fixture
def panel(qtbot, small_config, tmp_path):  # type: ignore[no-untyped-def]
    ctl = Controller(small_config, data_dir=tmp_path / "data", runs_dir=tmp_path / "runs")
    p = CalibrationPanel(ctl)
    qtbot.addWidget(p)
    yield p
    ctl.shutdown(5.0)


def _q(name: str, value: float, unc: float, true: float) -> dict[str, Any]:
    return {"name": name, "value": value, "uncertainty": unc, "unit": "rad", "true": true, "pull": -1.2}


def test_values_are_shown_to_their_uncertainty(panel: CalibrationPanel) -> None:
    qs = [_q("C1.bias_phase_rad", -0.00611983, 0.0049, 0.0), _q("C3.bias_phase_rad", 0.000412277, 0.00648, 0.0),
          _q("C1.v_pi_v", 3.994, 0.00601, 4.0), _q("D0.cable_delay_ps", 3150.27, 0.5, 3150.0)]
    panel.show_result({"procedure": "phase", "title": "Phase", "status": "done", "quantities": qs, "plots": [],
                       "run": "/runs/r1", "station_toml": "", "failures": {}, "succeeded": 1, "seconds": 0.2})
    rows = [[panel.qtable.item(r, c).text() for c in (1, 2, 4)] for r in range(len(qs))]
    assert rows == [["-0.0061", "0.0049", "0.0000"], ["0.0004", "0.0065", "0.0000"],
                    ["3.9940", "0.0060", "4.0000"], ["3150.27", "0.50", "3150.00"]]
