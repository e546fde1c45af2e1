"""Simulated instruments: interfaces, validation, live coupling to the physics, calibration hooks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from labqfl.sim_backends import SagnacTestbed, create_simulated_instruments
from labqfl.sim_backends.stations import edit_station

from labqfl.config import load_station_config
from labqfl.instruments import interfaces as I


@pytest.fixture
def inst():
    cfg = load_station_config()
    d = create_simulated_instruments(cfg)
    yield d
    for i in d.values():
        i.close()


def test_factory_covers_every_sim_role_with_the_right_interface(inst):
    cfg = load_station_config()
    assert list(inst) == list(cfg.roles())
    kinds = {"laser": I.PulsedLaser, "D0": I.PhotonDetector, "D1": I.PhotonDetector,
             "time_tagger": I.TimeTagger, "power_meter": I.PowerMeter}
    for role, obj in inst.items():
        want = kinds.get(role) or (I.PhaseModulator if role.endswith("phase_modulator") else I.VariableAttenuator)
        assert isinstance(obj, want)
        snap = obj.snapshot()
        assert snap["identity"].startswith("labqfl,") and set(snap["settings"]) >= {s.name for s in want.SETTINGS}
        assert not any(str(v["value"]).startswith("<error") for v in snap["settings"].values())
    tb = inst["laser"].testbed
    assert all(o.testbed is tb for o in inst.values())


def test_non_sim_roles_are_left_out():
    def edit(d):
        d["power_meter"].update(driver="ThorlabsPM100USB", resource="USB0::1::INSTR")

    inst = create_simulated_instruments(edit_station(edit))
    assert "power_meter" not in inst and "laser" in inst


@pytest.mark.parametrize("role,setting,value", [
    ("laser", "rep_rate_hz", -1.0), ("laser", "power_mw", 1e9), ("laser", "output_enabled", "yes"),
    ("C1.phase_modulator", "v_pi_v", 0.0), ("C1.phase_modulator", "amplitude_vpp", 100.0),
    ("C1.attenuator", "attenuation_db", 61.0), ("D0", "efficiency", 1.5), ("D0", "dead_time_ns", -3.0),
    ("D1", "gate_width_ns", 0.0), ("power_meter", "averaging", 0), ("power_meter", "wavelength_nm", float("nan")),
    ("time_tagger", "channels", [1, 9]), ("time_tagger", "input_delays_ps", {7: 5}),
])
def test_out_of_range_settings_name_the_setting(inst, role, setting, value):
    with pytest.raises(ValueError, match=setting.split("_")[0]):
        setattr(inst[role], setting, value)


def test_settings_drive_the_physics(inst):
    tt = inst["time_tagger"]
    base = tt.count_rates(0.005)
    assert base[2] > 1e5 and base[3] > 1e5 and base[1] > 0
    inst["laser"].output_enabled = False
    off = tt.count_rates(0.005)
    assert off[2] < 1e3 and off[3] < 1e3 and off[1] == base[1]
    inst["laser"].output_enabled = True
    inst["D1"].enabled = False
    assert tt.count_rates(0.005)[3] == 0
    inst["D1"].enabled = True
    for k in range(1, 5):
        inst[f"C{k}.attenuator"].attenuation_db = 60.0  # 10 dB above nominal: 1/10 of the photons
    dim = tt.count_rates(0.005)
    assert 0.05 < dim[2] / base[2] < 0.2
    for k in range(1, 5):
        inst[f"C{k}.attenuator"].shutter_closed = True
    assert tt.count_rates(0.005)[2] < 1e3
    tt.channels = [2, 3]
    assert 1 not in tt.count_rates(0.002)


def test_safe_state_on_close(inst):
    for obj in inst.values():
        obj.close()
    tb = inst["laser"].testbed
    assert not tb.live.laser_on and not tb.live.detectors["D0"].enabled
    assert all(c.shutter_closed and not c.pm_enabled for c in tb.live.clients.values())


def test_detector_dark_counts_follow_bias():
    def edit(d):
        d["detectors"]["D0"].update(dark_count_rate_hz=2e4, dead_time_ns=0.0)

    inst = create_simulated_instruments(edit_station(edit))
    inst["laser"].output_enabled = False
    r1 = inst["D0"].count_rate_hz(0.05)
    inst["D0"].bias = inst["D0"].bias + 1.0
    r2 = inst["D0"].count_rate_hz(0.05)
    assert abs(r1 - 2e4) < 5 * math.sqrt(2e4 / 0.05)
    assert abs(r2 / r1 - math.e) < 0.15


def test_histogram_peak_at_click_delay(inst):
    tb = inst["laser"].testbed
    cfg = tb.config
    period = 1e12 / cfg.laser.rep_rate_hz
    sync_period = period * cfg.time_tagger.sync_divider
    h = inst["time_tagger"].histogram(1, 2, 100, int(sync_period // 100), 0.01)
    delay_mod = (tb.true_delays_ps()["D0"] - tb.true_delays_ps()["sync"]) % period
    peak_mod = (h.argmax() * 100 + 50) % period
    assert abs(peak_mod - delay_mod) < 200


def test_fringe_scan_reveals_vpi_and_bias():
    def edit(d):
        d["clients"][0]["phase_modulator"].update(v_pi_v=4.0, v_pi_error=0.1, bias_phase_rad=0.7)
        d["loop"]["phase_drift_rad_per_sqrt_s"] = 0.0

    tb = SagnacTestbed(edit_station(edit))
    v = np.linspace(-6, 6, 25)
    r = tb.fringe_scan("C1", v, integration_s=0.002)
    frac = r["D0"] / (r["D0"] + r["D1"])
    # fit frac = a + b·cos(πV/Vπ + φ) by a grid over Vπ (linear least squares inside)
    best = None
    for vpi in np.linspace(3.0, 4.5, 301):
        X = np.column_stack([np.ones_like(v), np.cos(np.pi * v / vpi), np.sin(np.pi * v / vpi)])
        coef, res, *_ = np.linalg.lstsq(X, frac, rcond=None)
        sse = float(np.sum((X @ coef - frac) ** 2))
        if best is None or sse < best[0]:
            best = (sse, vpi, math.atan2(-coef[2], coef[1]))
    _, vpi, phi = best
    assert abs(vpi - 4.0 / 1.1) < 0.05
    # C2 (reference) has bias 0, so the fringe phase is C1's bias
    assert abs((phi - 0.7 + math.pi) % (2 * math.pi) - math.pi) < 0.1
    assert tb.live.pairs is None and tb.live.clients["C1"].dc_volts is None  # state restored


def test_phase_modulator_settings_change_applied_phase(inst):
    tb = inst["laser"].testbed
    before = tb._client_arrays()["phase"][0, :4].copy()
    inst["C1.phase_modulator"].v_pi_v = 5.0
    after = tb._client_arrays()["phase"][0, :4]
    np.testing.assert_allclose(after, before * 5.0 / 4.0)
    inst["C1.phase_modulator"].load_pattern(np.array([0, 2], dtype=np.uint8))
    assert tb._client_arrays()["pmode"][0] == 2
    with pytest.raises(ValueError, match="0..3"):
        inst["C1.phase_modulator"].load_pattern(np.array([4]))


def test_power_meter_taps(inst):
    pm = inst["power_meter"]
    assert abs(pm.power_w() - 1e-5) < 1e-7  # 1 % tap of 1 mW
    pm.place_at("C1")
    assert pm.tap == "C1"
    mu = load_station_config().client("C1").intensities[0]
    photon = 6.62607015e-34 * 299792458.0 / 1550e-9
    assert abs(pm.true_power_w() - mu * photon * 1e8) < 1e-20
    inst["C1.attenuator"].attenuation_db = 0.0
    assert abs(pm.true_power_w() / (mu * photon * 1e8) - 1e5) < 1
    with pytest.raises(ValueError, match="tap"):
        pm.tap = "C9"
