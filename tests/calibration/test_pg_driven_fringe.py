"""Vπ/bias calibration and darkening on a station whose phases come from pattern generators (issue 17): the
emulated-hardware station cut to two clients (C1-C2), each modulator a GenericBitDrivenPhaseModulator on its
pyvisa-sim device fed by an emulated Pulse Streamer's phase bits, the laser a Thorlabs PRO8000 on pyvisa-sim.
The simulated loop follows what those drivers write (GAIN, OUTP, BIAS:VOLT; laser output and power), and the
fringe is scanned through the client's pattern generator by the amplifier gain (calibration/pg_fringe.py)."""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from labqfl.calibration import CalContext
from labqfl.calibration.core import SettingsGuard
from labqfl.calibration.detector import darken, detector_counts, enable_detectors
from labqfl.calibration.files import apply_calibration
from labqfl.calibration.phase_modulator import vpi_bias
from labqfl.calibration.visibility import loop_visibility

from labqfl.cli import app
from labqfl.config import StationConfig, load_station_config, parse_station_config
from labqfl.serialize import dump_toml
from labqfl.station import Station

pytest.importorskip("pulsestreamer")
CliRunner = pytest.importorskip("typer.testing").CliRunner

W0 = 0.25  # the example's combiner level of phase bit 0 [V]


def _station(emulated_pair_station: Callable[..., Path], edit: Callable[[dict[str, Any]], None]) -> tuple[StationConfig, Path]:
    path = emulated_pair_station(2, emulated_detectors=False)
    d = tomllib.loads(path.read_text(encoding="utf-8"))
    for c in d["clients"]:
        c["randomness"] = "seeded"
    d.setdefault("simulation", {})["qrng_epoch_base"] = 1 << 34  # reproducible: seeded choices depend on the epoch
    edit(d)
    return parse_station_config(d, "pg-pair"), path.parent


def _true_vpi(cfg: StationConfig, client: str) -> float:
    pm = cfg.client(client).phase_modulator
    return pm.v_pi_v / (1.0 + pm.v_pi_error)


def test_the_loop_follows_the_modulator_and_laser_drivers(emulated_pair_station: Any) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["clients"][1]["phase_modulator"].update(v_pi_v=3.8, v_pi_error=0.05, bias_phase_rad=0.4)

    cfg, base = _station(emulated_pair_station, edit)
    with Station(cfg, base_dir=base) as st:
        loop = st._loop
        c2 = loop.live.clients["C2"]
        assert not loop.live.laser_on and not c2.pm_enabled  # the operating point leaves both outputs off
        pm, laser = st.phase_modulator("C2"), st.laser
        pm.rf_gain_db = 20.0  # G = 10
        pm.set_dc_voltage(-1.5)
        pm.output_enabled = True
        assert c2.pm_enabled and c2.bias_port_v == pytest.approx(-1.5)
        assert c2.bit_drive_v == pytest.approx((0.0, 2.5, 5.0, 7.5))
        vpi = _true_vpi(cfg, "C2")
        phases = loop._client_arrays()["phase"][1, :4]
        assert phases == pytest.approx([math.pi * (v - 1.5) / vpi + 0.4 for v in (0.0, 2.5, 5.0, 7.5)])
        pm.output_enabled = False  # amplifier off: no RF drive, every code the DC port's phase
        assert loop._client_arrays()["phase"][1, :4] == pytest.approx([math.pi * -1.5 / vpi + 0.4] * 4)
        laser.output_enabled = True
        laser.power_mw = 0.5
        assert loop.live.laser_on and loop.live.power_mw == pytest.approx(0.5)
        laser.output_enabled = False
        assert not loop.live.laser_on


def test_vpi_bias_through_the_pattern_generator_recovers_the_loop_and_corrects_a_wrong_gain(
        emulated_pair_station: Any) -> None:
    def edit(d: dict[str, Any]) -> None:  # the station file's Vπ is 10 % off, its gain fixed at a wrong value
        d["clients"][1]["phase_modulator"].update(v_pi_v=3.8, v_pi_error=0.1, bias_phase_rad=0.7)
        d["clients"][1]["phase_modulator"]["options"]["rf_gain_db"] = 15.0

    cfg, base = _station(emulated_pair_station, edit)
    with Station(cfg, base_dir=base) as st:
        res = vpi_bias(CalContext(st, make_plots=False), clients=["C2"], n_points=25)
        gain_after = st.phase_modulator("C2").rf_gain_db  # the guard put the file's gain back
    q = {x.name: x for x in res.quantities}
    vpi_true = _true_vpi(cfg, "C2")
    assert q["C2.v_pi_v"].true == pytest.approx(vpi_true)
    assert abs(q["C2.v_pi_v"].value - vpi_true) < 3 * q["C2.v_pi_v"].uncertainty
    assert abs(q["C2.bias_phase_rad"].value - 0.7) < 3 * q["C2.bias_phase_rad"].uncertainty
    ideal = 20 * math.log10(vpi_true / (2 * W0))
    assert abs(q["C2.rf_gain_db"].value - ideal) < 3 * q["C2.rf_gain_db"].uncertainty + 0.005
    assert gain_after == pytest.approx(15.0)
    new = apply_calibration(cfg, q)
    pm = new.client("C2").phase_modulator
    assert _true_vpi(new, "C2") == pytest.approx(vpi_true)  # the loop's truth kept, the file's Vπ corrected
    assert pm.v_pi_v == pytest.approx(q["C2.v_pi_v"].value)
    g = 10 ** (pm.options["rf_gain_db"] / 20)  # the written gain encodes code 1 as π/2 in the true loop
    assert math.pi * g * W0 / vpi_true == pytest.approx(math.pi / 2, abs=0.005)
    assert math.pi * 10 ** (15.0 / 20) * W0 / vpi_true == pytest.approx(1.2785, abs=0.001)  # the wrong gain's π/2


def test_darken_on_the_pro8000_station_darkens_the_loop(emulated_pair_station: Any) -> None:
    cfg, base = _station(emulated_pair_station, lambda d: None)
    with Station(cfg, base_dir=base) as st:
        ctx = CalContext(st, make_plots=False)
        guard = SettingsGuard()
        enable_detectors(ctx, guard, ("D0", "D1"))
        guard.set(st.laser, "output_enabled", True)
        for c in cfg.client_names:
            guard.set(st.phase_modulator(c), "output_enabled", True)
        lit = detector_counts(ctx, 0.02)
        darken(ctx, guard)
        dark = detector_counts(ctx, 0.02)
        guard.restore()
    for d in ("D0", "D1"):
        expected_dark = cfg.detectors[d].dark_count_rate_hz * 0.02
        assert lit[d] > 100 * (expected_dark + 10)
        assert dark[d] <= expected_dark + 5 * math.sqrt(expected_dark) + 3


def test_loop_visibility_through_the_pattern_generators_recovers_the_loop(emulated_pair_station: Any) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["loop"]["visibility"] = 0.93
        d["clients"][0]["phase_modulator"].update(v_pi_error=-0.05)

    cfg, base = _station(emulated_pair_station, edit)
    with Station(cfg, base_dir=base) as st:
        res = loop_visibility(CalContext(st, make_plots=False), n_points=16, point_duration_s=0.03,
                              single_duration_s=0.15)
    (q,) = res.quantities
    assert q.true == pytest.approx(0.93)
    assert abs(q.value - 0.93) < 3 * q.uncertainty
    assert q.uncertainty < 0.005


def test_calibrate_vpi_and_apply_from_the_command_line_write_the_ideal_gain(emulated_pair_station: Any,
                                                                             tmp_path: Path) -> None:
    path = emulated_pair_station(2, emulated_detectors=False)
    d = tomllib.loads(path.read_text(encoding="utf-8"))
    d["clients"][1]["phase_modulator"].update(v_pi_v=3.8, v_pi_error=-0.08)
    d["clients"][1]["phase_modulator"]["options"]["rf_gain_db"] = 19.0
    station = tmp_path / "pg_wrong_gain.toml"
    station.write_text(dump_toml(d), encoding="utf-8")
    r = CliRunner().invoke(app, ["calibrate", "vpi", "--config", str(station), "--client", "C2",
                                 "--out", str(tmp_path / "cal"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    q = out["quantities"]
    vpi_true = 3.8 / (1 - 0.08)
    assert abs(q["C2.v_pi_v"]["value"] - vpi_true) < 3 * q["C2.v_pi_v"]["uncertainty"]
    assert q["C2.v_pi_v"]["true"] == pytest.approx(vpi_true)
    new_path = tmp_path / "calibrated.toml"
    r = CliRunner().invoke(app, ["calibrate", "apply", out["files"]["calibration"], "-o", str(new_path),
                                 "--config", str(station), "--json"])
    assert r.exit_code == 0, r.output
    new = load_station_config(new_path)
    pm = new.client("C2").phase_modulator
    assert pm.options["rf_gain_db"] == pytest.approx(20 * math.log10(vpi_true / (2 * W0)), abs=0.03)
    assert _true_vpi(new, "C2") == pytest.approx(vpi_true)
