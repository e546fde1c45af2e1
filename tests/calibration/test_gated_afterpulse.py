"""One meaning of a gated detector's afterpulse probability (review s34 F5).

The station field ``detectors.Dk.afterpulse_prob`` is the un-gated P per click: the simulator drops the
afterpulses that fall outside a gate and the model (``contracts.channel_model``) multiplies P by the gate
fraction g = w/T. The dead-time procedure measures the registered P_reg = P·g. Before the fix
``calibrate apply`` wrote P_reg into the station field (afterpulsing understated T/w-fold, 10× here), and
without a session value the dark-count and efficiency procedures subtracted the whole P although only P·g
registers (efficiency −3 % at P = 0.03; at P = 0.4 below, −37 %).
"""

from __future__ import annotations

import pytest
from labqfl.calibration import CalContext, Quantity, gate_delay
from labqfl.calibration.dark_count_rate import dark_counts
from labqfl.calibration.dead_time import dead_time_afterpulsing
from labqfl.calibration.detection_efficiency import efficiency
from labqfl.calibration.detector import afterpulse_gate_fraction, afterpulse_probability
from labqfl.calibration.files import apply_calibration, check_quantities

from labqfl.errors import DataFormatError
from labqfl.station import Station

GATE_FRACTION = 0.1  # a 1 ns gate at 100 MHz


def _gated(p_ap: float, dcr_hz: float):
    """Gated InGaAs SPADs (1 ns gates at the default 100 MHz) with afterpulse probability ``p_ap``
    (decay 200 ns = 20 periods: the model's uniform landing holds) and dark-count rate ``dcr_hz``."""
    def edit(data: dict) -> None:
        for d in data["detectors"].values():
            d.update(kind="spad", efficiency=0.2, dark_count_rate_hz=dcr_hz, dead_time_ns=10_000.0,
                     afterpulse_prob=p_ap, afterpulse_decay_ns=200.0, jitter_ps=80.0, gated=True,
                     gate_width_ns=1.0, gate_delay_ps=0.0)
        data["power_meter"]["relative_uncertainty"] = 0.0  # the simulated meter is exact
    return edit


def test_gate_fraction_and_apply_write_the_ungated_probability(calh) -> None:
    cfg = calh.make_config(_gated(0.03, 20_000.0))
    assert cfg.laser.rep_rate_hz == 100e6
    assert afterpulse_gate_fraction(True, 1.0, 100e6) == pytest.approx(GATE_FRACTION)
    assert afterpulse_gate_fraction(True, 20.0, 100e6) == 1.0  # a gate longer than the period: free-running
    assert afterpulse_gate_fraction(False, 1.0, 100e6) == 1.0
    qs = {"D0.afterpulse_prob": Quantity("D0.afterpulse_prob", 0.003, 0.001, "", "dead_time_afterpulsing"),
          "D1.afterpulse_prob": Quantity("D1.afterpulse_prob", -0.001, 0.002, "", "dead_time_afterpulsing")}
    check = check_quantities(cfg, qs)
    new = apply_calibration(cfg, qs)
    assert new.detectors["D0"].afterpulse_prob == pytest.approx(0.03)  # P = P_reg/g, not P_reg
    assert new.detectors["D1"].afterpulse_prob == 0.0
    # the clipped value is the un-gated one (−0.01 ± 0.02), with the registered value beside it
    c = check.clipped["D1.afterpulse_prob"]
    assert c["value"] == pytest.approx(-0.01) and c["uncertainty"] == pytest.approx(0.02)
    assert c["registered"] == -0.001 and c["gate_fraction"] == pytest.approx(GATE_FRACTION)
    # a registered probability above g is no un-gated probability: refused, saying why
    bad = {"D0.afterpulse_prob": Quantity("D0.afterpulse_prob", 0.2, 0.01, "", "dead_time_afterpulsing")}
    with pytest.raises(DataFormatError, match=r"registered P_reg = 0\.2 ± 0\.01, gate fraction g = w/T = 0\.1"):
        check_quantities(cfg, bad)
    # free-running detectors (the default station's SNSPDs) keep the value as measured
    free = calh.make_config()
    assert not free.detectors["D0"].gated
    assert apply_calibration(free, qs).detectors["D0"].afterpulse_prob == pytest.approx(0.003)


def test_correction_falls_back_to_the_registered_probability(station_factory, calh) -> None:
    st = station_factory(_gated(0.03, 20_000.0))
    ctx = CalContext(st, make_plots=False)
    assert afterpulse_probability(ctx, "D0") == pytest.approx(0.03 * GATE_FRACTION)
    ctx.known["D0.afterpulse_prob"] = Quantity("D0.afterpulse_prob", -0.002, 0.01, "", "dead_time_afterpulsing")
    assert afterpulse_probability(ctx, "D0") == -0.002  # a session value is registered already: as measured
    free = CalContext(station_factory(calh.snspd_set), make_plots=False)
    assert afterpulse_probability(free, "D0") == pytest.approx(0.04)


def test_dark_counts_and_efficiency_without_afterpulse_result_recover_truth(station_factory, calh) -> None:
    """No dead-time/afterpulse result in the session: the corrections take the station's P·g. With
    P = 0.4 (registered 0.04) subtracting the whole P put DCR and η at (1 − 0.4)/(1 − 0.04) = 0.63 of the
    truth (−7σ and −40σ)."""
    st = station_factory(_gated(0.4, 1000.0), seed=1)
    ctx = CalContext(st, seed=1, make_plots=False)
    gate_delay(ctx)  # aligns the gates with the light (no afterpulse correction in it)
    results = [dark_counts(ctx), efficiency(ctx)]
    assert "D0.afterpulse_prob" not in ctx.known and "D1.afterpulse_prob" not in ctx.known
    calh.assert_recovers(results)


def test_apply_resimulate_recalibrate_recovers_the_afterpulse_probability(calh) -> None:
    """Calibrate, apply, simulate the calibrated station, calibrate again: the written (un-gated) P covers
    the truth 0.4, and the second session registers what the first did (before: P_reg 0.04 written as P,
    so the twin registered 0.004)."""
    cfg = calh.make_config(_gated(0.4, 20_000.0), seed=3)
    with Station(cfg) as st:
        ctx = CalContext(st, seed=3, make_plots=False)
        dead_time_afterpulsing(ctx, n_intervals=60_000)
    new = apply_calibration(cfg, ctx.known)
    with Station(new) as st2:
        ctx2 = CalContext(st2, seed=103, make_plots=False)
        dead_time_afterpulsing(ctx2, n_intervals=60_000)
    for d in ("D0", "D1"):
        first, second = ctx.known[f"{d}.afterpulse_prob"], ctx2.known[f"{d}.afterpulse_prob"]
        written = new.detectors[d].afterpulse_prob
        assert written == pytest.approx(first.value / GATE_FRACTION)
        assert abs(written - 0.4) < 3 * first.uncertainty / GATE_FRACTION, (d, written, first)
        sigma = (first.uncertainty**2 + second.uncertainty**2) ** 0.5
        assert abs(second.value - first.value) < 3 * sigma, (d, first, second)
        assert second.true == pytest.approx(first.value)  # the twin's truth: the written P times g


def test_the_visibility_procedure_takes_the_registered_afterpulse_probability(station_factory, calh,
                                                                              monkeypatch) -> None:
    """The loop-visibility procedure's single-client levels subtracted the station file's un-gated P for a
    gated detector (and clipped the session's value at 0), unlike the other procedures: it now asks the one
    rule, :func:`labqfl.calibration.detector.afterpulse_probability` (review s34 F5 follow-up)."""
    import labqfl.calibration.visibility as vis
    import numpy as np

    asked: list[str] = []

    def registered(ctx, d):  # type: ignore[no-untyped-def]
        asked.append(d)
        return 0.0

    monkeypatch.setattr(vis, "afterpulse_probability", registered)
    st = station_factory(None, seed=5)
    ctx = calh.ctx_for(st, 0)
    tt = ctx.config.time_tagger
    n = 1_000_000
    tags = {ch: np.sort(np.random.default_rng(ch).integers(0, n, 2000)).astype(np.int64) * 10_000
            for ch in tt.detector_channels.values()}
    vis._photons_from_tags(ctx, tags, n, ("C1", "C2"))
    assert sorted(asked) == ["D0", "D1"]


def test_an_afterpulse_decay_the_simulator_cannot_draw_is_refused_naming_the_field() -> None:
    """The simulator draws an afterpulse's delay in int64 picoseconds, which overflow past ~2.5e14 ns; the
    field took any positive value (physics-fix helper s34)."""
    import pydantic

    from labqfl.config import DetectorConfig

    assert DetectorConfig(afterpulse_decay_ns=1e9).afterpulse_decay_ns == 1e9
    with pytest.raises(pydantic.ValidationError, match="afterpulse_decay_ns"):
        DetectorConfig(afterpulse_decay_ns=3e14)


def test_calibrate_apply_says_it_converted_the_gated_afterpulse_probability(calh, tmp_path) -> None:
    """calibration.json holds the registered P_reg, the station file the un-gated P: ``calibrate apply`` said
    nothing of the conversion, so the two files seemed to disagree tenfold (F5 helper's note)."""
    from labqfl.calibration.core import ProcedureResult
    from labqfl.calibration.files import calibration_document, write_calibration

    from labqfl.app.calibrate import apply_calibration_file

    cfg = calh.make_config(_gated(0.03, 20_000.0))
    q = Quantity("D0.afterpulse_prob", 0.003, 0.001, "", "dead_time_afterpulsing")
    doc = calibration_document(cfg.name, [ProcedureResult("dead_time_afterpulsing", [q])], simulated=True)
    cal = write_calibration(tmp_path / "calibration.json", doc)
    out = apply_calibration_file(cfg, cal, tmp_path / "calibrated.toml")
    c = out["converted"]["D0.afterpulse_prob"]
    assert c["measured"] == pytest.approx(0.003) and c["written"] == pytest.approx(0.03)
    assert c["gate_fraction"] == pytest.approx(GATE_FRACTION)
