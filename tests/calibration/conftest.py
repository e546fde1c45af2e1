"""Shared helpers of the calibration tests: simulated stations with non-default parameters."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from labqfl.calibration import CalContext, ProcedureResult

from labqfl.config import StationConfig, load_station_config
from labqfl.station import Station


def make_config(edit: Callable[[dict], None] | None = None, seed: int = 7) -> StationConfig:
    """The default station with ``edit`` applied to its dict form (validated again)."""
    cfg = load_station_config()
    data = cfg.model_dump(mode="json")
    data["simulation"]["seed"] = seed
    if edit is not None:
        edit(data)
    return StationConfig.model_validate(data)


def snspd_set(data: dict) -> None:
    """Non-default free-running SNSPDs, delays and loop."""
    data["detectors"]["D0"].update(efficiency=0.55, dark_count_rate_hz=300.0, dead_time_ns=45.0, afterpulse_prob=0.04,
                                   jitter_ps=80.0, afterpulse_decay_ns=60.0)
    data["detectors"]["D1"].update(efficiency=0.68, dark_count_rate_hz=120.0, dead_time_ns=22.5, afterpulse_prob=0.0,
                                   jitter_ps=35.0, options={"dark_bias_scale": 1.5})
    data["time_tagger"]["cable_delays_ps"] = {"sync": 250.0, "D0": 5123.0, "D1": 1877.0}
    data["loop"]["visibility"] = 0.93
    pm = data["clients"][1]["phase_modulator"]
    pm.update(v_pi_v=3.5, v_pi_error=0.08, bias_phase_rad=1.2)
    data["clients"][2]["phase_modulator"].update(v_pi_v=5.0, v_pi_error=-0.1, bias_phase_rad=-2.5)


def spad_set(data: dict) -> None:
    """Gated InGaAs SPADs at 3 V bias with a mis-set gate delay, and a 50 MHz laser."""
    for d, eff, dcr, dead, ap, jit in (("D0", 0.25, 2000.0, 50.0, 0.05, 100.0), ("D1", 0.3, 800.0, 20.0, 0.02, 70.0)):
        data["detectors"][d].update(kind="spad", gated=True, gate_width_ns=1.5, bias_current_ua=3.0, efficiency=eff,
                                    dark_count_rate_hz=dcr, dead_time_ns=dead, afterpulse_prob=ap,
                                    afterpulse_decay_ns=200.0, jitter_ps=jit, gate_delay_ps=1234.0)
    data["laser"]["rep_rate_hz"] = 50e6
    data["loop"]["visibility"] = 0.97
    data["time_tagger"]["cable_delays_ps"] = {"sync": 0.0, "D0": 9000.0, "D1": 2500.0}


@pytest.fixture
def station_factory() -> Iterator[Callable[..., Station]]:
    opened: list[Station] = []

    def make(edit: Callable[[dict], None] | None = None, seed: int = 7) -> Station:
        st = Station(make_config(edit, seed))
        opened.append(st)
        return st

    yield make
    for st in opened:
        st.close()


def assert_recovers(results: list[ProcedureResult] | ProcedureResult, n_sigma: float = 3.0) -> None:
    """Every quantity with a simulator truth lies within n_sigma of it (and has a positive error)."""
    rs = results if isinstance(results, list) else [results]
    checked = 0
    for r in rs:
        for q in r.quantities:
            assert q.uncertainty > 0, q
            if q.true is None:
                continue
            checked += 1
            assert abs(q.value - q.true) < n_sigma * q.uncertainty, (
                f"{q.name}: {q.value:.6g} ± {q.uncertainty:.3g}, true {q.true:.6g} ({(q.value - q.true) / q.uncertainty:+.2f}σ)")
    assert checked > 0


def ctx_for(st: Station, seed: int = 0) -> CalContext:
    return CalContext(st, seed=seed)


class _Helpers:
    make_config = staticmethod(make_config)
    snspd_set = staticmethod(snspd_set)
    spad_set = staticmethod(spad_set)
    assert_recovers = staticmethod(assert_recovers)
    ctx_for = staticmethod(ctx_for)


@pytest.fixture
def calh() -> type[_Helpers]:
    """The helpers of this conftest (test modules cannot import it under --import-mode=importlib)."""
    return _Helpers
