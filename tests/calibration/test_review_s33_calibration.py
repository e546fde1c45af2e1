"""Review s33 (lab), calibration: ``calibrate apply`` refuses a quantity whose uncertainty says nothing, whose
unit is not its field's, or whose delay / dead time / jitter is not physical (M2); an efficiency or visibility
consistent with 0 is refused, not clipped to 1e-6; a calibration in which every procedure failed writes no
"calibrated" station file (L8); a saturated detector's jitter failure says what was seen (L3); a jitter not
resolved from the laser's reference width is reported as the interval [0, U] (L2)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from labqfl.calibration import timing_jitter
from labqfl.calibration.core import Quantity
from labqfl.calibration.files import check_quantities, quantity_range, read_calibration
from labqfl.calibration.jitter import detector_sigma
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.config import load_station_config
from labqfl.errors import CalibrationError, DataFormatError

CFG = load_station_config(None)  # 100 MHz laser (T = 10 ns), sync divider 1024, 10 km loop (≈ 49 µs)


def _q(name: str, value: float, unc: float, unit: str) -> dict[str, Quantity]:
    return {name: Quantity(name, value, unc, unit, "test")}


@pytest.mark.parametrize(("name", "value", "unc", "unit", "match"), [
    # the reviewer's files: σ spanning the allowed range says nothing
    ("D0.efficiency", -0.2, 1.0, "", r"-0.2 ± 1: the uncertainty is too large to say anything, expected at most 0.25"),
    ("D0.efficiency", 0.5, 1e308, "", "too large to say anything"),
    ("loop.visibility", 0.0, 0.5, "", "too large to say anything"),
    ("C1.v_pi_v", 4.0, 3.0, "V", r"expected at most 2 V = 0.5 × the value"),
    # consistent with 0: no calibration, not clipped to 1e-6
    ("D0.efficiency", -0.01, 0.01, "", r"consistent with 0, expected 0 < value ≤ 1 \(not clipped"),
    ("loop.visibility", 0.0, 0.1, "", "consistent with 0"),
    # a unit that is not the field's is refused, not converted
    ("D0.cable_delay_ps", 3.15e-9, 1e-13, "s", r"has unit 's', expected 'ps'"),
    ("D0.jitter_ps", 50.0, 0.3, "ns", r"has unit 'ns', expected 'ps'"),
    ("D0.dead_time_ns", 0.03, 0.0001, "µs", r"has unit 'µs', expected 'ns'"),
    ("D0.efficiency", 80.0, 1.7, "%", r"has unit '%', expected ''"),
    # physical bounds of the timing fields
    ("D0.cable_delay_ps", 1e15, 0.4, "ps", r"expected \|value\| ≤ 4.89\de\+07 ps \(the loop's propagation time"),
    ("D0.cable_delay_ps", 3150.0, 5000.0, "ps", "expected at most 2.5e\\+03 ps"),  # σ > T/4: slot unknown
    ("D0.dead_time_ns", 1e12, 0.09, "ns", r"expected a value ≥ 0 ns and ≤ 1e6 ns"),
    ("D0.dark_count_rate_hz", 5e9, 10.0, "Hz", r"expected a value ≥ 0 Hz and ≤ 1e8 Hz"),
    ("D0.jitter_ps", 5000.0, 1.0, "ps", r"expected 0 ps ≤ value ≤ 2887 ps \(T/√12"),
    ("D0.gate_delay_ps", 25_000.0, 1.0, "ps", r"expected 0 ps ≤ value ≤ 1e\+04 ps \(one pulse period\)"),
])
def test_meaningless_or_unphysical_quantities_are_refused(name, value, unc, unit, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataFormatError, match=match) as err:
        check_quantities(CFG, _q(name, value, unc, unit), "cal.json")
    assert str(err.value).endswith("nothing written") and "\n" not in str(err.value)


@pytest.mark.parametrize(("name", "value", "unc", "unit", "written"), [
    ("loop.visibility", 1.0073, 0.0062, "", 1.0),  # held: within 3σ above 1, clipped to 1
    ("D0.afterpulse_prob", -0.002, 0.004, "", 0.0),  # held: a real bound (0) may be clipped onto
    ("D0.jitter_ps", -0.5, 1.0, "ps", 0.0),
])
def test_statistical_excursions_onto_a_real_bound_are_still_clipped(name, value, unc, unit, written) -> None:  # type: ignore[no-untyped-def]
    check = check_quantities(CFG, _q(name, value, unc, unit), "cal.json")
    assert check.applied == [name] and check.clipped[name]["written"] == written


def test_the_reviewers_good_calibration_still_applies() -> None:
    good = {"D0.efficiency": (0.799, 0.017, ""), "D0.dark_count_rate_hz": (57.8, 4.9, "Hz"),
            "D0.dead_time_ns": (30.04, 0.088, "ns"), "D0.afterpulse_prob": (0.00099, 0.0034, ""),
            "D0.jitter_ps": (50.2, 0.30, "ps"), "D0.cable_delay_ps": (3150.2, 0.36, "ps"),
            "C1.v_pi_v": (3.99, 0.0095, "V"), "loop.visibility": (0.9986, 0.0043, "")}
    qs = {n: Quantity(n, v, e, u, "test") for n, (v, e, u) in good.items()}
    assert sorted(check_quantities(CFG, qs, "cal.json").applied) == sorted(good)


def test_timing_ranges_follow_the_station_clock() -> None:
    slow = CFG.model_copy(update={"laser": CFG.laser.model_copy(update={"rep_rate_hz": 1e6})})  # T = 1 µs
    assert quantity_range(CFG, "gate_delay_ps").hi == pytest.approx(1e4)
    assert quantity_range(slow, "gate_delay_ps").hi == pytest.approx(1e6)
    assert quantity_range(slow, "jitter_ps").hi == pytest.approx(1e6 / math.sqrt(12))


def _doc(quantities: dict[str, dict]) -> dict:
    return {"kind": "labqfl-calibration", "schema_version": 1, "station": "x", "quantities": quantities,
            "procedures": {}}


def test_calibrate_apply_writes_nothing_for_the_reviewers_files(tmp_path: Path) -> None:
    runner = CliRunner()
    cases = {"vis_zero": {"loop.visibility": {"value": 0.0, "uncertainty": 0.5, "unit": ""}},
             "jitter_unit": {"D0.jitter_ps": {"value": 50.0, "uncertainty": 0.3, "unit": "ns"}},
             "empty": {}}
    for name, qs in cases.items():
        src, out = tmp_path / f"{name}.json", tmp_path / f"{name}.toml"
        src.write_text(json.dumps(_doc(qs)), encoding="utf-8")
        r = runner.invoke(app, ["calibrate", "apply", str(src), "--output", str(out)])
        assert r.exit_code == 1 and not out.exists(), (name, r.output)
        assert "nothing written" in r.output


def test_a_value_given_as_text_is_named_as_such(tmp_path: Path) -> None:
    src = tmp_path / "dark_str.json"
    src.write_text(json.dumps(_doc({"D0.dark_count_rate_hz": {"value": "50", "uncertainty": 5, "unit": "Hz"}})))
    with pytest.raises(DataFormatError, match=r"has value '50'; expected a number"):
        read_calibration(src)


# -- L8: every procedure failed → no calibrated station file ---------------------------------------------
def test_a_calibration_where_every_procedure_failed_writes_no_station_file(tmp_path: Path, calh) -> None:  # type: ignore[no-untyped-def]
    from labqfl.calibration import write_station_toml

    def novis(data: dict) -> None:
        data["loop"]["visibility"] = 1e-4  # no fringe: the vpi procedure fails
    cfg = write_station_toml(calh.make_config(novis, seed=3), tmp_path / "station.toml")
    r = CliRunner().invoke(app, ["calibrate", "vpi", "--client", "C1", "--quick", "--no-plots", "--out",
                                 str(tmp_path / "runs"), "--config", str(cfg), "--write-config", str(tmp_path / "new.toml")])
    assert r.exit_code == 1, r.output
    assert "calibration vpi: all 1 procedure(s) failed (vpi: " in r.output and "no interference fringe" in r.output
    assert "nothing calibrated, no station file written" in r.output
    assert not (tmp_path / "new.toml").exists() and not list((tmp_path / "runs").rglob("calibrated_station.toml"))


def test_the_library_writes_no_station_file_when_every_procedure_failed(tmp_path: Path, calh) -> None:  # type: ignore[no-untyped-def]
    """:func:`labqfl.app.calibrate.run_calibration` (the GUI's path) as the CLI: ``write_config`` is left
    unwritten when nothing was calibrated."""
    from labqfl.app.calibrate import run_calibration

    def novis(data: dict) -> None:
        data["loop"]["visibility"] = 1e-4
    out = run_calibration(calh.make_config(novis, seed=3), "vpi", runs_dir=tmp_path / "runs", quick=True,
                          make_plots=False, clients=["C1"], write_config=tmp_path / "new.toml")
    assert out.failures and not out.report.results
    assert "written_config" not in out.files and not (tmp_path / "new.toml").exists()


# -- L3: a saturated detector's jitter failure says what was seen ------------------------------------------
def test_a_detector_saturated_by_dark_counts_is_named_so(station_factory, calh) -> None:  # type: ignore[no-untyped-def]
    def saturated(data: dict) -> None:
        data["detectors"]["D0"].update(dark_count_rate_hz=2e7)
    st = station_factory(saturated)
    with pytest.raises(CalibrationError) as err:
        timing_jitter(calh.ctx_for(st), detectors=("D0",), duration_s=0.02)
    msg = str(err.value)
    assert "the detector never recovers (saturated by dark counts or afterpulses" in msg, msg
    assert "no light reaches the detector" not in msg


# -- L2: an unresolved detector jitter is an interval [0, U], not a value with a too-small error ----------
def test_an_unresolved_jitter_is_reported_as_an_upper_bound() -> None:
    ref2 = 21.33**2  # laser: 50 ps FWHM pulse, 2 ps jitter (the reviewer's jit0 station)
    val, err, upper = detector_sigma(21.617, 0.109, ref2)  # the reviewer's fit: gave 3.52 ± 0.67 (pull +5.2)
    assert upper is not None and val == err == pytest.approx(upper / 2) and abs(val - 0.0) <= err
    assert upper == pytest.approx(math.sqrt(21.617**2 - ref2 + 4 * 21.617 * 0.109))
    val, err, upper = detector_sigma(21.0, 0.1, ref2)  # below the reference: still a bound, never a negative
    assert upper is not None and val > 0
    val, err, upper = detector_sigma(54.66, 0.30, ref2)  # 50 ps detector: resolved, linear propagation
    assert upper is None and val == pytest.approx(math.sqrt(54.66**2 - ref2)) and err == pytest.approx(
        54.66 * 0.30 / val)
