"""Shared helpers of the calibration tests: simulated stations with non-default parameters."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from labqfl.calibration import CalContext, ProcedureResult

from labqfl.config import StationConfig, load_station_config
from labqfl.station import Station


def make_config(edit: Callable[[dict], None] | None = None, seed: int = 7) -> StationConfig:
    """The default station with seeded clients and ``edit`` applied to its dict form (validated again)."""
    cfg = load_station_config()
    data = cfg.model_dump(mode="json")
    data["simulation"]["seed"] = seed
    # the seeded clients' choices are a function of (seed, epoch): a fixed epoch base per seed makes every
    # read-out reproducible (None would draw a fresh base from the OS per testbed, and CI's outcome would
    # differ from the last local run's)
    data["simulation"]["qrng_epoch_base"] = (seed % (1 << 24) + 1) << 34
    for c in data["clients"]:  # reproducible read-outs: the coverage tests' seeds fix every draw
        c["randomness"] = "seeded"
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


# -- detector families (issue 19): parameters drawn at random across realistic ranges ----------------
FAMILIES = ("snspd", "spad_gated", "spad_free")


def draw_detector_family(family: str, rng: np.random.Generator) -> Callable[[dict], None]:
    """An ``edit`` for :func:`make_config` putting both detectors (drawn independently) of one family
    on the station, with the laser and delays drawn too:

    * ``snspd``: free-running, dead time 10–100 ns, afterpulsing 0–5 % (decay 10–200 ns), jitter
      20–90 ps, dark counts 10–300 Hz, efficiency 0.6–0.9; laser 100, 250 or 500 MHz;
    * ``spad_gated``: InGaAs, gated (gate 0.5–2.5 ns, gate delay anywhere in the period, i.e.
      uncalibrated), dead time 1–25 µs, afterpulsing 1–7 % (decay 0.2–2 µs), jitter 60–250 ps,
      dark counts 100–1000 Hz, efficiency 0.1–0.25, bias 3 V; laser 50 or 100 MHz;
    * ``spad_free``: InGaAs, free-running, the same ranges, dark counts 300–3000 Hz.
    """
    if family not in FAMILIES:
        raise ValueError(f"family {family!r}; expected one of {FAMILIES}")
    u = rng.uniform
    if family == "snspd":
        rep = float(rng.choice([100e6, 250e6, 500e6]))
        dets = [dict(kind="snspd", gated=False, dead_time_ns=u(10, 100), afterpulse_prob=u(0, 0.05),
                     afterpulse_decay_ns=u(10, 200), jitter_ps=u(20, 90), dark_count_rate_hz=10 ** u(1, math.log10(300)),
                     efficiency=u(0.6, 0.9)) for _ in range(2)]
    else:
        rep = float(rng.choice([50e6, 100e6]))
        gated = family == "spad_gated"
        dets = []
        for _ in range(2):
            d = dict(kind="spad", gated=gated, bias_current_ua=3.0, dead_time_ns=u(1000, 25_000),
                     afterpulse_prob=u(0.01, 0.07), afterpulse_decay_ns=u(200, 2000), jitter_ps=u(60, 250),
                     efficiency=u(0.1, 0.25), temperature_k=233.0,
                     dark_count_rate_hz=10 ** (u(2, 3) if gated else u(math.log10(300), math.log10(3000))))
            if gated:
                d.update(gate_width_ns=u(0.5, 2.5), gate_delay_ps=u(0, 1e12 / rep))
            dets.append(d)
    cable = {"sync": 0.0, "D0": u(1000, 9000), "D1": u(1000, 9000)}
    extra_km = u(0, 1e-3)

    def edit(data: dict) -> None:
        data["laser"]["rep_rate_hz"] = rep
        for name, d in zip(("D0", "D1"), dets, strict=True):
            data["detectors"][name].update({k: (float(v) if isinstance(v, float | np.floating) else v) for k, v in d.items()})
        data["time_tagger"]["cable_delays_ps"] = cable
        data["loop"]["segments_km"][0] += extra_km
        data["power_meter"]["relative_uncertainty"] = 0.0  # the simulated meter is exact (Type-B term off)

    return edit


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
    draw_detector_family = staticmethod(draw_detector_family)
    FAMILIES = FAMILIES
    snspd_set = staticmethod(snspd_set)
    spad_set = staticmethod(spad_set)
    assert_recovers = staticmethod(assert_recovers)
    ctx_for = staticmethod(ctx_for)


@pytest.fixture
def calh() -> type[_Helpers]:
    """The helpers of this conftest (test modules cannot import it under --import-mode=importlib)."""
    return _Helpers
