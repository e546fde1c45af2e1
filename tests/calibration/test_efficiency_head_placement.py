"""The efficiency calibration waits for the operator to move a real power-meter head (review s36 H2).

``PowerMeter.place_at`` (labqfl/instruments/interfaces.py) documents that a real head cannot move itself
and that the operator confirms; ``labqfl calibrate`` asks with ``typer.confirm`` and refuses without a
terminal or with --json. The power meter's own commands are not involved (the Thorlabs PM100 reads with
``MEAS:POW?``, tested in tests/drivers/test_thorlabs.py); what is tested here is that no reading at a
client's output is taken before the confirmation, and that a reading the laser cannot deliver there
(laser power x modelled transmission x attenuation, times calibration.detection_efficiency.PLAUSIBILITY_FACTOR)
is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from labqfl.calibration.core import CalContext
from labqfl.calibration.detection_efficiency import efficiency
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.errors import CalibrationError, LabqflError
from labqfl.instruments.interfaces import PowerMeter

ROOT = Path(__file__).resolve().parents[2]


class _Head(PowerMeter):
    """A real meter's placement (the interface's default), reading a fixed power."""

    wavelength_nm = PowerMeter.wavelength_nm.kept_in("_wl")
    averaging = PowerMeter.averaging.kept_in("_avg")

    def identity(self) -> str:
        return "Thorlabs,PM100USB,P2000000,1.7.0"

    def power_w(self) -> float:
        return 1e-9


def test_a_real_head_is_placed_only_once_the_operator_confirms() -> None:
    head = _Head("power_meter", "USB0::0x1313::0x8072::P2000000::INSTR")
    with pytest.raises(CalibrationError, match=r"efficiency needs the operator to move the power-meter head "
                       r"\(power_meter\) to C1's output; run `labqfl calibrate` interactively"):
        head.place_at("C1")
    with pytest.raises(CalibrationError, match="power-meter head was not confirmed at C1's output"):
        head.place_at("C1", confirm=lambda pos: False)
    asked: list[str] = []
    head.place_at("C1", confirm=lambda pos: asked.append(pos) is None)
    assert asked == ["C1"]


def _as_real_meter(monkeypatch: pytest.MonkeyPatch, st: Any, events: list[str]) -> None:
    """The simulated meter behaves as a real one: placement through the interface's default (the operator),
    then its tap follows; every reading is logged."""
    meter = st.power_meter
    sim_place, sim_read = type(meter).place_at, type(meter).power_w

    def place(self: Any, position: str, confirm: Any = None) -> None:
        PowerMeter.place_at(self, position, confirm)
        sim_place(self, position)

    def read(self: Any) -> float:
        events.append(f"read at {self.tap}")
        return float(sim_read(self))

    monkeypatch.setattr(type(meter), "place_at", place)
    monkeypatch.setattr(type(meter), "power_w", read)


def test_efficiency_reads_the_client_output_only_after_the_confirmation(station_factory, calh,  # type: ignore[no-untyped-def]
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    st = station_factory()
    events: list[str] = []
    _as_real_meter(monkeypatch, st, events)
    with pytest.raises(CalibrationError, match="efficiency needs the operator to move the power-meter head"):
        efficiency(CalContext(st, make_plots=False), duration_s=0.01)
    assert not events  # nothing read while the head was wherever it was
    r = efficiency(CalContext(st, make_plots=False, confirm_placement=lambda pos: events.append(f"confirm {pos}") is None),
                   duration_s=0.01)
    # the head back on the laser tap (the fibre on the loop again) after the readings: review s36 lab2 H2
    assert events[0] == "confirm C1" and events[-1] == "confirm laser" and len(events) > 3
    assert set(events[1:-1]) == {"read at C1"}
    calh.assert_recovers(r)


def test_a_reading_the_laser_cannot_deliver_at_the_output_is_refused(station_factory,  # type: ignore[no-untyped-def]
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    st = station_factory()
    laser_w = float(st.laser.power_mw) * 1e-3
    monkeypatch.setattr(type(st.power_meter), "power_w", lambda self: 3.0 * laser_w)  # 3x the laser's own power
    with pytest.raises(CalibrationError, match=r"power at C1's output .* exceeds 2 x what the laser can deliver there "
                       r".*is the power-meter head at C1's output\?"):
        efficiency(CalContext(st, make_plots=False), duration_s=0.01)


def test_calibrate_refuses_a_real_meter_without_an_operator() -> None:
    """examples/station_pyvisa_sim.toml: its power meter is the ThorlabsPM100USB driver (on pyvisa-sim)."""
    station = str(ROOT / "examples" / "station_pyvisa_sim.toml")
    r = CliRunner().invoke(app, ["calibrate", "detector", "--quick", "--config", station, "--json"])
    assert r.exit_code == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert json.loads(r.stdout)["error"] == lines[0].removeprefix("error: ")  # issue 19
    assert len(lines) == 1 and "efficiency needs the operator to move the power-meter head (ThorlabsPM100USB)" in lines[0]
    assert "--json" in lines[0]


def test_calibrate_asks_the_operator_in_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import labqfl.app.calibrate as app_calibrate
    import labqfl.cli.calibrate as cli_calibrate

    answers: list[bool] = []

    def fake_run(cfg: Any, group: str, *, confirm_placement: Any = None, **kw: Any) -> Any:
        answers.append(confirm_placement("C2"))
        raise LabqflError("stopped after the prompt")

    monkeypatch.setattr(cli_calibrate, "_interactive", lambda as_json: not as_json)
    monkeypatch.setattr(app_calibrate, "run_calibration", fake_run)
    station = str(ROOT / "examples" / "station_pyvisa_sim.toml")
    r = CliRunner().invoke(app, ["calibrate", "detector", "--config", station], input="y\n")
    assert answers == [True] and "Move the power-meter head to C2's output" in r.output
    r = CliRunner().invoke(app, ["calibrate", "detector", "--config", station], input="n\n")
    assert answers == [True, False]
