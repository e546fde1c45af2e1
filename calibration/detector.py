"""Detector calibration: what the procedures share (docs/calibration.md; REFERENCES "Instrument
and calibration facts").

The procedures live one per module: :mod:`~labqfl.calibration.gate` (gate delay, gated detectors),
:mod:`~labqfl.calibration.dead_time` (dead time and afterpulsing),
:mod:`~labqfl.calibration.dark_count_rate` (dark-count rate vs bias, with temperature),
:mod:`~labqfl.calibration.jitter` (timing jitter) and
:mod:`~labqfl.calibration.detection_efficiency`; :func:`labqfl.calibration.runner.detector_procedures`
runs them in dependency order.

Shared here: the detector names and channels, darkening the station and enabling detectors
under a :class:`~labqfl.calibration.core.SettingsGuard`, counting clicks, each detector's dead time
and afterpulse probability (config or an earlier result), folding clicks onto the slot period,
and dimming the light to a click rate a detector can follow. The dead-time correction used by all
of them, non-paralysable: R = R_m/(1 − R_m·τ_d) (Knoll, *Radiation Detection and Measurement*,
4th ed., §4.VII); under pulsed light p = p_m/(1 − n_b·p_m) with n_b the pulses a click blinds the
detector to.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from labqfl.calibration.acquire import (
    collect_tags,
    delay_after_sync,
    fold,
)
from labqfl.calibration.core import (
    CalContext,
    SettingsGuard,
)

from labqfl.config import StationConfig

DETECTORS = ("D0", "D1")


# -- small helpers -------------------------------------------------------------------------------
def detector_channel(cfg: StationConfig, d: str) -> int:
    return cfg.time_tagger.detector_channels[d]


def slot_period_ps(ctx: CalContext) -> float:
    return 1e12 / float(ctx.station.laser.rep_rate_hz)


def darken(ctx: CalContext, guard: SettingsGuard) -> None:
    """Laser off and every client shutter closed (no light anywhere)."""
    guard.set(ctx.station.laser, "output_enabled", False)
    for c in ctx.config.client_names:
        att = ctx.station.attenuator(c)
        if hasattr(att, "shutter_closed"):
            guard.set(att, "shutter_closed", True)


def enable_detectors(ctx: CalContext, guard: SettingsGuard, dets: tuple[str, ...]) -> None:
    for d in dets:
        guard.set(ctx.station.detector(d), "enabled", True)
    tt = ctx.station.time_tagger
    want = sorted({ctx.config.time_tagger.sync_channel, *(detector_channel(ctx.config, d) for d in DETECTORS)})
    if sorted(tt.channels) != want:
        guard.set(tt, "channels", want)


def detector_dead_time_s(ctx: CalContext, d: str) -> float:
    return ctx.value(f"{d}.dead_time_ns", ctx.config.detectors[d].dead_time_ns) * 1e-9


def afterpulse_probability(ctx: CalContext, d: str) -> float:
    """Afterpulse probability for the corrections: the calibrated value as measured, negative
    included. Clipping a noisy estimate at 0 (as this did) biases every correction that uses it:
    for gated InGaAs SPADs (P_ap in the gates ≈ 0.005 ± 0.01) the efficiency came out low by
    0.6σ on average. The error of P_ap is propagated where it is used."""
    return min(max(ctx.value(f"{d}.afterpulse_prob", ctx.config.detectors[d].afterpulse_prob), -0.5), 0.9)


def detector_counts(ctx: CalContext, integration_s: float) -> dict[str, int]:
    """Clicks of D0 and D1 in one integration (through the time tagger's counters)."""
    r = ctx.station.time_tagger.count_rates(integration_s)
    return {d: int(round(r.get(detector_channel(ctx.config, d), 0.0) * integration_s)) for d in DETECTORS}


def guard_original(guard: SettingsGuard, obj: Any, attr: str) -> Any:
    """The value ``obj.attr`` had before the guard first changed it (current value otherwise)."""
    for o, a, old in guard._saved:
        if o is obj and a == attr:
            return old
    return getattr(obj, attr)


# -- timing jitter and gate delay ---------------------------------------------------------------------
def folded_click_phases(ctx: CalContext, duration_s: float, detectors: tuple[str, ...],
                        min_gap_ps: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Click delays after the latest sync, folded modulo the pulse period [ps], per detector.

    ``min_gap_ps[d]``: keep only clicks of ``d`` that follow the previous click of ``d`` by more
    than this (see :func:`recovered_gap_ps`; the first click, whose history is unknown, is dropped)."""
    cfg = ctx.config
    chans = [cfg.time_tagger.sync_channel, *(detector_channel(cfg, d) for d in detectors)]
    tags = collect_tags(ctx, duration_s, chans)
    sync = tags[cfg.time_tagger.sync_channel]
    T = slot_period_ps(ctx)
    out = {}
    for d in detectors:
        t = tags[detector_channel(cfg, d)]
        gap = (min_gap_ps or {}).get(d)
        if gap is not None and t.size:
            t = t[1:][np.diff(t) > gap]
        out[d] = fold(delay_after_sync(t, sync), T)
    return out


def recovered_gap_ps(ctx: CalContext, d: str, n_decays: float = 10.0) -> float:
    """Minimum time since the previous click for a click to count as coming from a recovered
    detector with no afterpulse pending: τ_d + ``n_decays``·τ_ap, rounded up to a half-integer
    number of pulse periods.

    Afterpulses arrive τ_d + Exp(τ_ap) after their parent click; folded modulo T they form a
    background that is *not* flat when τ_ap is not ≫ T (a wrapped exponential with a step at
    τ_d mod T), and a step under the click-vs-sync peak biases the fitted width (measured: pulls
    up to +1.6σ on average for some SNSPD τ_d/τ_ap). Dropping every click that follows another
    within this gap removes all but e^(−n_decays) of the afterpulses. The cut sits half a period
    away from any pulse, so whether a photon click passes does not depend on its own jitter
    (σ ≪ T/2) and the kept clicks' timing distribution is unchanged. τ_ap is the station file's
    nominal afterpulse decay (data sheet; no procedure measures it)."""
    T = slot_period_ps(ctx)
    tau = detector_dead_time_s(ctx, d) * 1e12 + n_decays * ctx.config.detectors[d].afterpulse_decay_ns * 1e3
    return (math.ceil(tau / T - 0.5) + 0.5) * T


def _dark_click_rate_hz(ctx: CalContext, d: str) -> float:
    """Dark clicks per second before dead time: the (calibrated or nominal) free-running dark-count
    rate, times the gate duty cycle w·f for a gated detector."""
    dcr = ctx.value(f"{d}.dark_count_rate_hz", ctx.config.detectors[d].dark_count_rate_hz)
    det = ctx.station.detector(d)
    if det.gated:
        return dcr * min(1.0, float(det.gate_width_ns) * 1e-9 * float(ctx.station.laser.rep_rate_hz))
    return dcr


def dim_for_rate(ctx: CalContext, guard: SettingsGuard, dets: tuple[str, ...], max_true_rate_hz: dict[str, float],
                  integration_s: float = 0.02) -> dict[str, float]:
    """Lower the laser power (or, where it cannot be set, raise every open client's attenuation
    by the same ΔA) until each detector's true photon rate
    (R = R_m/(1 − R_m·τ_d) less the dark clicks, which light cannot change) is at most
    ``max_true_rate_hz[d]`` (two passes, since R_m is not linear in
    the light; the guard restores the setting). Returns the measured rates R_m [Hz] at the end."""
    chans = {d: detector_channel(ctx.config, d) for d in dets}
    rates = ctx.station.time_tagger.count_rates(integration_s)
    for _ in range(2):
        excess = 1.0
        for d in dets:
            rm = float(rates.get(chans[d], 0.0))
            tau = detector_dead_time_s(ctx, d)
            r_true = rm / max(1.0 - rm * tau, 0.02)
            # dark counts do not dim: compare only the light's share with the limit
            r_light = max(r_true - _dark_click_rate_hz(ctx, d), 0.0)
            excess = max(excess, r_light / max_true_rate_hz[d])
        if excess <= 1.5:
            break
        delta = 10.0 * math.log10(excess)
        moved = False
        laser = ctx.station.laser
        try:  # the laser power dims every client alike (one knob, no attenuator range to run into)
            guard.set(laser, "power_mw", float(laser.power_mw) / excess)
            ctx.step(f"count rate too high for the dead time: laser power lowered by {delta:.1f} dB")
            rates = ctx.station.time_tagger.count_rates(integration_s)
            continue
        except (ValueError, AttributeError):
            pass
        for c in ctx.config.client_names:
            att = ctx.station.attenuator(c)
            if getattr(att, "shutter_closed", False) or not hasattr(att, "attenuation_db"):
                continue
            a0 = float(att.attenuation_db)
            for step in (delta, delta / 2, delta / 4):
                try:
                    guard.set(att, "attenuation_db", a0 + step)
                    moved = True
                    break
                except ValueError:
                    continue
        if not moved:
            break
        ctx.step(f"count rate too high for the dead time: attenuation raised by up to {delta:.1f} dB")
        rates = ctx.station.time_tagger.count_rates(integration_s)
    return {d: float(rates.get(chans[d], 0.0)) for d in dets}
