"""Detector timing jitter (docs/calibration.md): the width of the click-vs-sync histogram peak,
laser contributions removed in quadrature, from clicks clear of dead time and afterpulses.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from labqfl.calibration.acquire import (
    centred_window,
    circular_peak,
    save_plot,
)
from labqfl.calibration.core import (
    CalContext,
    ProcedureResult,
    Quantity,
    gates_to_optimum,
    guarded,
    sim_truth,
)
from labqfl.calibration.delays import light_path_on
from labqfl.calibration.detector import (
    DETECTORS,
    detector_dead_time_s,
    dim_for_rate,
    enable_detectors,
    folded_click_phases,
    recovered_gap_ps,
    slot_period_ps,
)
from labqfl.calibration.fitting import (
    FitResult,
    fit_gaussian_peak,
    plot_peak,
)

from labqfl.errors import CalibrationError


def _jitter_duration(ctx: CalContext, detectors: tuple[str, ...], rates: dict[str, float], gaps: dict[str, float],
                     target_clicks: int, min_duration_s: float, max_duration_s: float) -> float:
    """Acquisition time [s] for about ``target_clicks`` clicks past the recovered-gap cut on every detector."""
    kept = []
    for d in detectors:
        rm, tau = rates[d], detector_dead_time_s(ctx, d)
        r_true = rm / max(1.0 - rm * tau, 0.02)
        kept.append(rm * math.exp(-r_true * (gaps[d] * 1e-12 - tau)))
    return float(min(max(target_clicks / max(min(kept), 1e-9), min_duration_s), max_duration_s))


def _too_few_clicks(d: str, kept: int, duration_s: float, rate_hz: float, gap_ps: float, gated: bool) -> str:
    """What was seen when fewer than 200 clicks passed the recovered-gap cut: a detector that clicks at a
    high rate but never recovers (saturated by dark counts or afterpulses), or one that hardly clicks."""
    seen = f"{d}: only {kept} of its clicks in {duration_s:g} s came ≥ {gap_ps / 1e3:.4g} ns after the previous one"
    if rate_hz * duration_s >= 200:
        return (f"{seen}, while it clicks at {rate_hz:.3g} Hz with the light dimmed: the detector never recovers "
                f"(saturated by dark counts or afterpulses; check its dark-count rate, bias and dead time)")
    hint = "; is the gate delay calibrated (run gate_delay first)?" if gated else ""
    return f"{seen} (it clicks at {rate_hz:.3g} Hz): no light reaches the detector{hint}"


def _click_sync_peak(ctx: CalContext, d: str, ph: np.ndarray, T: float, s_nom: float, bin_ps: float | None,
                     duration_s: float, rate_hz: float, gap_ps: float) -> tuple[float, np.ndarray, np.ndarray, FitResult]:
    """Histogram of ``d``'s folded click phases [ps] around their peak and its Gaussian + background fit.

    Returns (bin width [ps], bin centres, counts, fit)."""
    gated = bool(ctx.station.detector(d).gated)
    if ph.size < 200:
        raise CalibrationError(_too_few_clicks(d, int(ph.size), duration_s, rate_hz, gap_ps, gated))
    bw = float(bin_ps) if bin_ps is not None else float(max(2, int(round(s_nom / 8.0))))
    peak, _, _ = circular_peak(ph, T, max(20.0, bw))
    x = centred_window(ph, peak, T)
    half = min(T / 2.0, max(1500.0, 8.0 * s_nom))
    if gated:  # dark counts and afterpulses fill only the gate: stay inside it
        half = min(half, 0.45 * float(ctx.station.detector(d).gate_width_ns) * 1e3)
    edges = np.arange(math.floor(peak - half) - 0.5, peak + half + 1e-9, bw)  # half-integer edges: tags are integer ps
    n, _ = np.histogram(x, bins=edges)
    c = 0.5 * (edges[1:] + edges[:-1])
    hint = " (gate delay not calibrated?)" if gated else ""
    fit = fit_gaussian_peak(c, n, f"{d} click-vs-sync peak{hint}")
    return bw, c, n, fit


#: Below this many σ of the subtraction σ_sys² − σ_ref² from 0 the detector's term is not resolved (the
#: reference width comes from the station file, not measured: a few-% error in it moves a small difference
#: by more than its statistical error): an upper bound is reported instead of a value.
RESOLVED_SIGMAS = 3.0


def detector_sigma(s_sys: float, e_sys: float, ref2: float) -> tuple[float, float, float | None]:
    """(value, uncertainty, upper bound or ``None``) of σ_det = √(σ_sys² − σ_ref²) from the fitted σ_sys ± e_sys.

    Resolved (the difference v = σ_sys² − σ_ref² at least :data:`RESOLVED_SIGMAS` times its error
    2·σ_sys·e_sys above 0): √v ± σ_sys·e_sys/√v (linear propagation). Otherwise the linear error is
    not honest near 0 (review s33 L2: a true 0 came out 3.5 ± 0.7 ps): the bound U = √(max(v, 0) + 2·err_v)
    is reported as the interval [0, U], i.e. U/2 ± U/2, with U in ``upper``."""
    var = s_sys**2 - ref2
    err_v = 2.0 * s_sys * e_sys
    if var > RESOLVED_SIGMAS * err_v and var > 0:
        val = math.sqrt(var)
        return val, s_sys * e_sys / val, None
    upper = math.sqrt(max(var, 0.0) + 2.0 * err_v)
    return upper / 2.0, upper / 2.0, upper


def timing_jitter(ctx: CalContext, detectors: tuple[str, ...] = DETECTORS, duration_s: float | None = None,
                  bin_ps: float | None = None, target_clicks: int = 50_000, max_duration_s: float = 5.0,
                  min_duration_s: float = 0.02) -> ProcedureResult:
    """Detector timing jitter (rms) from the width of the click-vs-sync histogram peak.

    σ_sys from a Gaussian + background fit (Poisson errors, the Gaussian integrated over each bin);
    σ_det = √(σ_sys² − σ_laser² − (FWHM_pulse/2.355)² − res²/12), the laser's timing jitter and
    pulse width taken from the station file (the laser data sheet) as the reference; a detector term
    not resolved from that reference is reported as the interval [0, U] (:func:`detector_sigma`).

    Adapted to the detector: only clicks from a recovered detector with no afterpulse pending are
    used (:func:`recovered_gap_ps`: no click of the same detector in the τ_d + 10·τ_ap before); the
    light is dimmed (all clients' attenuators by the same ΔA) until the true rate R is below both
    1/τ_d and 1/(10·τ_ap), so most clicks pass that cut; the acquisition lasts until about
    ``target_clicks`` clicks pass it (``duration_s`` fixes it instead), within
    [``min_duration_s``, ``max_duration_s``]. The bin width is about σ_sys/8 (≥ 2 ps, integer ps:
    tags are integer ps) unless ``bin_ps`` is given. Gated detectors: the gate delay must be
    calibrated first (the session runs :func:`gate_delay` before this) and the fit window stays
    inside the gate (dark counts fill only the gate).
    """
    quantities: list[Quantity] = []
    raw: dict[str, Any] = {}
    plots: list[str] = []
    cfg = ctx.config
    with guarded(ctx, "timing_jitter") as guard:
        light_path_on(ctx, guard, detectors)  # also from the safe state: shutters open, modulators on
        enable_detectors(ctx, guard, detectors)
        gates_to_optimum(ctx, guard, detectors)
        T = slot_period_ps(ctx)
        res_ps = float(ctx.station.time_tagger.resolution_ps)
        ref2 = cfg.laser.timing_jitter_ps**2 + (cfg.laser.pulse_width_ps / 2.3548) ** 2 + res_ps**2 / 12.0
        gaps = {d: recovered_gap_ps(ctx, d) for d in detectors}
        limit = {d: 1.0 / max(detector_dead_time_s(ctx, d), gaps[d] * 1e-12 - detector_dead_time_s(ctx, d)) for d in detectors}
        rates = dim_for_rate(ctx, guard, detectors, limit)
        if duration_s is None:
            duration_s = _jitter_duration(ctx, detectors, rates, gaps, target_clicks, min_duration_s, max_duration_s)
        ctx.step(f"jitter: recording {duration_s:.3g} s of clicks (clicks ≥ {min(gaps.values()) / 1e3:.4g} ns "
                 "after the previous one)")
        phases = folded_click_phases(ctx, duration_s, detectors, gaps)
        for d in detectors:
            ph = phases[d]
            s_nom = math.sqrt(ctx.value(f"{d}.jitter_ps", cfg.detectors[d].jitter_ps) ** 2 + ref2)
            bw, c, n, fit = _click_sync_peak(ctx, d, ph, T, s_nom, bin_ps, duration_s, rates[d], gaps[d])
            s_sys, e_sys = fit["sigma"], fit.err("sigma")
            val, err, upper = detector_sigma(s_sys, e_sys, ref2)
            quantities.append(Quantity(f"{d}.jitter_ps", val, err, "ps", "timing_jitter",
                                       true=sim_truth(ctx.station, (d, "laser"), lambda c, d=d: c.detectors[d].jitter_ps),
                                       details={"system_sigma_ps": s_sys, "system_sigma_err_ps": e_sys,
                                                "reference_sigma_ps": math.sqrt(ref2), "upper_bound_ps": upper,
                                                "system_fwhm_ps": 2.3548 * s_sys, "min_gap_ps": gaps[d]}))
            raw[d] = {"clicks": int(ph.size), "duration_s": duration_s, "rate_hz": rates[d], "min_gap_ps": gaps[d],
                      "peak_ps": fit["mu"], "fit": fit.summary(), "bin_ps": bw}
            p = save_plot(ctx.plot_path(f"jitter_{d}.png"),
                          lambda ax, c=c, n=n, fit=fit: plot_peak(ax, c, n, fit, "Gaussian + background"),
                          f"{d}: click-vs-sync peak, σ_sys = {s_sys:.2f} ± {e_sys:.2f} ps, σ_det = {val:.2f} ps")
            if p:
                plots.append(p)
    return ctx.remember(ProcedureResult("timing_jitter", quantities, raw, plots))
