"""labqfl.physics: the one definition of the loop delay and the photon energy."""

from __future__ import annotations

import math

import pytest
from labqfl.sim_backends.analysis import nominal_delays_ps

from labqfl.config import load_station_config
from labqfl.physics import C_LIGHT, H_PLANCK, loop_delay_ps, photon_energy_j


def test_loop_delay_is_n_sum_l_over_c() -> None:
    cfg = load_station_config()
    lp = cfg.loop
    want = lp.fiber_refractive_index * sum(lp.segments_km) * 1e3 / 299_792_458.0 * 1e12
    assert loop_delay_ps(lp) == pytest.approx(want, rel=1e-15)
    # 10 km of n = 1.468 fibre: 48.97 µs
    assert loop_delay_ps(lp.model_copy(update={"segments_km": [10.0]})) == pytest.approx(48.967e6, rel=1e-4)


def test_simulator_truth_uses_the_same_loop_delay() -> None:
    cfg = load_station_config()
    d = nominal_delays_ps(cfg)
    tt = cfg.time_tagger
    assert d["D0"] - tt.cable_delays_ps.get("D0", 0.0) - tt.input_delays_ps.get("D0", 0.0) == pytest.approx(loop_delay_ps(cfg.loop))


def test_photon_energy() -> None:
    assert photon_energy_j(1550.0) == pytest.approx(1.2816e-19, rel=1e-4)
    assert math.isclose(photon_energy_j(1550.0), H_PLANCK * C_LIGHT / 1550e-9)
    with pytest.raises(ValueError, match="wavelength must be > 0 nm"):
        photon_energy_j(0.0)
