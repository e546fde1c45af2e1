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


def afterpulse_gate_fraction(gated: bool, gate_width_ns: float, rep_rate_hz: float) -> float:
    """Fraction g of a detector's afterpulses that register: min(1, w/T) for a gated detector (gate
    width w, pulse period T = 1/rep_rate), 1 for a free-running one (review s34 F5).

    The station file's ``detectors.Dk.afterpulse_prob`` is the un-gated P: the probability that a click
    schedules an afterpulse at t + τ_d + Exp(τ_ap), whether or not a gate is open then. So the simulator
    reads it (``sim_backends/_kernels.detector_kernel``: P per accepted click; an afterpulse that falls
    outside a gate is dropped) and so does the analytical model (``labqfl.contracts.channel_model``,
    "Afterpulsing": a_d = P·g_d·r_d per slot with g_d = gate/T for a gated detector). What a measurement
    sees is the registered probability P_reg = P·g: the dead-time procedure's excess of short intervals
    (``dead_time.dead_time_afterpulsing``, whose simulator truth is P·min(1, w/T)) and the clicks that
    the (1 − P_ap) corrections of the dark-count, efficiency and visibility procedures remove.

    g = w/T is exact when the afterpulses spread over many periods, τ_ap ≫ T (the model asks for
    τ_ap ≥ ``channel_model.GATED_AFTERPULSE_MIN_DECAY_SLOTS``·T = 10·T; its ``model_limits`` warns
    below): their phase in the period is then uniform. With τ_ap ≲ T the share that lands in a gate
    depends on τ_d mod T and the gate's position (with τ_ap ≪ T nearly all of them register when a
    click's t + τ_d falls in a gate, nearly none when it falls between gates); P = P_reg/g then still makes the model
    reproduce the measured registered rate (a_d = P·g·r = P_reg·r), but a simulated twin of the station
    registers a different share."""
    if not gated:
        return 1.0
    return float(min(1.0, max(gate_width_ns, 0.0) * 1e-9 * rep_rate_hz))


def afterpulse_probability(ctx: CalContext, d: str) -> float:
    """Registered afterpulse probability per click P_reg, for the corrections: afterpulse clicks are a
    fraction P_reg/(1 − P_reg) of the primaries (hence the (1 − P_ap) factors of the procedures).

    The session's calibrated value (``Dk.afterpulse_prob`` of the dead-time procedure: a registered
    probability) as measured, negative included: clipping a noisy estimate at 0 (as this did) biases
    every correction that uses it (gated InGaAs SPADs: P_reg ≈ 0.005 ± 0.01, efficiency low by 0.6σ on
    average); its error is propagated where it is used. Without one, the station file's un-gated P
    times the gate fraction :func:`afterpulse_gate_fraction` of the detector as set now: subtracting
    the whole P for a gated detector (as this did) put the efficiency of gated InGaAs SPADs 3 % low
    (P = 0.03, gate 1 ns at 100 MHz: −1.3σ over 14 values; review s34 F5)."""
    q = ctx.known.get(f"{d}.afterpulse_prob")
    if q is not None:
        p = float(q.value)
    else:
        det = ctx.station.detector(d)
        p = ctx.config.detectors[d].afterpulse_prob * afterpulse_gate_fraction(
            bool(det.gated), float(det.gate_width_ns), float(ctx.station.laser.rep_rate_hz))
    return min(max(p, -0.5), 0.9)


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
