"""The efficiency calibration keeps the operator's fibre work safe and closes the loop before counting
(review s36 lab2 H2).

With a real power-meter head, "at C1's output" means C1's output fibre is off the loop and on the head.
So: the detectors are un-biased (``enabled = False``, each driver's safe state) and C1's shutter closed
before the operator is asked to move the head (room light into the open connector on the loop side
latches an SNSPD / blinds a biased APD); a second confirmation that the fibre is back on the loop (the
head back on the laser's monitor tap) comes before any click is counted, and the detectors are re-armed
only after it. A 'no' at either prompt leaves the laser off, the detectors un-biased and every shutter
closed (:func:`labqfl.calibration.core.guarded` puts the station in its safe state).
"""

from __future__ import annotations

from typing import Any

import labqfl.calibration.detection_efficiency as de
import pytest
from labqfl.calibration.core import CalContext

from labqfl.errors import CalibrationError
from labqfl.instruments.interfaces import PowerMeter


def _state(st: Any) -> tuple[bool, bool, bool, bool]:
    """(laser on, D0 armed, D1 armed, C1's shutter open)."""
    return (bool(st.laser.output_enabled), bool(st.detector("D0").enabled), bool(st.detector("D1").enabled),
            not st.attenuator("C1").shutter_closed)


def _instrumented(monkeypatch: pytest.MonkeyPatch, st: Any, events: list[tuple[str, Any]]) -> None:
    """The simulated meter placed as a real one (through the interface's operator confirmation, then its tap
    follows); every reading and every click count logged with the station's state at that moment."""
    meter = st.power_meter
    sim_place, sim_read = type(meter).place_at, type(meter).power_w
    counts = de.detector_counts

    def place(self: Any, position: str, confirm: Any = None) -> None:
        PowerMeter.place_at(self, position, confirm)
        sim_place(self, position)

    def read(self: Any) -> float:
        events.append((f"read at {self.tap}", _state(st)))
        return float(sim_read(self))

    def count(ctx: Any, duration_s: float) -> Any:
        events.append(("count", _state(st)))
        return counts(ctx, duration_s)

    monkeypatch.setattr(type(meter), "place_at", place)
    monkeypatch.setattr(type(meter), "power_w", read)
    monkeypatch.setattr(de, "detector_counts", count)


def test_detectors_safe_during_the_prompts_and_the_loop_closed_before_counting(  # type: ignore[no-untyped-def]
        station_factory, calh, monkeypatch: pytest.MonkeyPatch) -> None:
    st = station_factory()
    events: list[tuple[str, Any]] = []
    _instrumented(monkeypatch, st, events)

    def confirm(pos: str) -> bool:
        events.append((f"confirm {pos}", _state(st)))
        return True

    r = efficiency(st, confirm)
    names = [e for e, _ in events]
    first_count = names.index("count")
    assert names[0] == "confirm C1" and names.count("confirm C1") == 1
    assert names.index("confirm laser") < first_count and names.count("confirm laser") == 1
    reads = [i for i, n in enumerate(names) if n.startswith("read")]
    assert reads and set(names[i] for i in reads) == {"read at C1"}
    assert names.index("confirm C1") < reads[0] and reads[-1] < names.index("confirm laser")
    # at both prompts: the laser on (its power stays stable), detectors un-biased, C1's shutter closed
    assert dict(events)["confirm C1"] == (True, False, False, False)
    assert dict(events)["confirm laser"] == (True, False, False, False)
    # clicks only with the detectors re-armed and the shutter open again (the closed-shutter count aside)
    assert events[first_count][1] == (True, True, True, True)
    calh.assert_recovers(r)


def efficiency(st: Any, confirm: Any) -> Any:
    return de.efficiency(CalContext(st, make_plots=False, confirm_placement=confirm), duration_s=0.01)


@pytest.mark.parametrize("refuse_at", ["C1", "laser"])
def test_a_no_at_either_prompt_leaves_the_station_safe(station_factory, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                                       refuse_at: str) -> None:
    st = station_factory()
    events: list[tuple[str, Any]] = []
    _instrumented(monkeypatch, st, events)
    asked: list[str] = []

    def confirm(pos: str) -> bool:
        asked.append(pos)
        return pos != refuse_at

    with pytest.raises(CalibrationError, match="power-meter head was not confirmed .*safe state"):
        efficiency(st, confirm)
    assert asked == (["C1"] if refuse_at == "C1" else ["C1", "laser"])
    assert not any(e == "count" for e, _ in events)  # no click counted with the loop open
    assert not st.laser.output_enabled
    assert not st.detector("D0").enabled and not st.detector("D1").enabled
    assert all(st.attenuator(c).shutter_closed for c in st.config.client_names)


def test_calibrate_asks_to_reconnect_the_fibre(monkeypatch: pytest.MonkeyPatch) -> None:
    """`labqfl calibrate` words the second prompt (position "laser") as reconnecting the client's fibre."""
    from pathlib import Path

    from typer.testing import CliRunner

    import labqfl.app.calibrate as app_calibrate
    import labqfl.cli.calibrate as cli_calibrate
    from labqfl.cli import app
    from labqfl.errors import LabqflError

    def fake_run(cfg: Any, group: str, *, confirm_placement: Any = None, **kw: Any) -> Any:
        assert confirm_placement("C2") and confirm_placement("laser")
        raise LabqflError("stopped after the prompts")

    monkeypatch.setattr(cli_calibrate, "_interactive", lambda as_json: not as_json)
    monkeypatch.setattr(app_calibrate, "run_calibration", fake_run)
    station = str(Path(__file__).resolve().parents[2] / "examples" / "station_pyvisa_sim.toml")
    r = CliRunner().invoke(app, ["calibrate", "detector", "--config", station], input="y\ny\n")
    text = " ".join(r.output.split())
    assert "Move the power-meter head to C2's output" in text and "detectors are off, shutter closed" in text
    assert "Reconnect C2's output fibre to the loop" in text, r.output
