"""Time-tagger channel delays: the delay of each detector channel relative to the laser sync.

The peak of the sync–click correlation (delays of clicks after the latest sync, folded modulo the
pulse period T) gives the relative delay Δ_D mod T; a Gaussian fit of the peak refines it
(REFERENCES "Channel delays"; Swabian Instruments, Time Tagger user manual, "Correlation" and
"setInputDelay"). The integer number of periods comes from a coarse acquisition at a low laser
repetition rate (delay mod T_c, T_c ≫ T) when the laser allows it, otherwise from the station
file's nominal delay (which must then be right to ±T/2).

The pipeline's slot model (:mod:`labqfl.qkd.slotting`) is
``tag = emission + n·ΣL/c (detectors) + cable_delays_ps[c] + input_delays_ps[c]``, so the
calibrated quantity is the detector's *cable delay*

    cable_D = Δ_D + (cable_sync + input_sync) − n·ΣL/c − input_D,

with the sync's own cable delay as the reference (fixed to its configured value).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from labqfl.calibration.acquire import (
    centred_window,
    circular_peak,
    collect_tags,
    delay_after_sync,
    fold,
    save_plot,
)
from labqfl.calibration.core import (
    CalContext,
    ProcedureResult,
    Quantity,
    SettingsGuard,
    gates_to_optimum,
    guarded,
    sim_truth,
)
from labqfl.calibration.fitting import FitResult, fit_gaussian_peak, plot_peak

from labqfl.errors import CalibrationError, InstrumentError
from labqfl.physics import loop_delay_ps
from labqfl.station import arming_settings

DETECTORS = ("D0", "D1")


def light_path_on(ctx: CalContext, guard: SettingsGuard, detectors: tuple[str, ...] = DETECTORS) -> list[str]:
    """Put the light path in its operating state through ``guard`` (restored when the procedure ends):
    the master clock's laser trigger and the laser on, ``detectors`` armed, every client's attenuator
    shutter open and its intensity and phase modulators on — the arming rule of an acquisition
    (:func:`labqfl.station.arm_instruments`), so a procedure that needs light also works from the safe
    state (after Stop, Safe state or a failed procedure), which closes the shutters and switches the
    modulators off. Returns what was changed, as ``"role.attr=value"``."""
    changed: list[str] = []
    for role, inst, attr, value in arming_settings(ctx.station.instruments, detectors):
        guard.set(inst, attr, value)
        changed.append(f"{role}.{attr}={value}")
    return changed


def _fine_peaks(ctx: CalContext, tags: dict[int, np.ndarray], detectors: tuple[str, ...], T: float,
                bin_ps: float) -> dict[str, tuple[float, float, FitResult, np.ndarray, np.ndarray]]:
    """Sync–click peak of each detector folded modulo the pulse period ``T`` [ps], Gaussian-fitted.

    Returns per detector (peak mod T [ps], its error [ps], fit, bin centres, counts)."""
    tt_cfg = ctx.config.time_tagger
    fine: dict[str, tuple[float, float, FitResult, np.ndarray, np.ndarray]] = {}
    for d in detectors:
        ph = fold(delay_after_sync(tags[tt_cfg.detector_channels[d]], tags[tt_cfg.sync_channel]), T)
        if ph.size < 200:
            raise CalibrationError(f"{d}: only {ph.size} clicks after sync tags; no light or no sync")
        peak, _, _ = circular_peak(ph, T, 20.0)
        x = centred_window(ph, peak, T)
        half = min(T / 2.0, 1500.0)
        edges = np.arange(math.floor(peak - half) - 0.5, peak + half + 1e-9, bin_ps)  # half-integer edges: tags are integer ps
        n, _ = np.histogram(x, bins=edges)
        c = 0.5 * (edges[1:] + edges[:-1])
        fit = fit_gaussian_peak(c, n, f"{d} sync–click peak")
        fine[d] = (fit["mu"] % T, fit.err("mu"), fit, c, n)
    return fine


def _coarse_peaks(ctx: CalContext, guard: SettingsGuard, detectors: tuple[str, ...], chans: list[int],
                  coarse_rep_rate_hz: float | None, coarse_duration_s: float, f_nom: float,
                  T: float) -> tuple[dict[str, float], str]:
    """Delay of each detector modulo the coarse period, from an acquisition at ``coarse_rep_rate_hz``
    (skipped for gated detectors, or when the laser cannot run at that rate).

    Returns (coarse peak per detector [ps], how the integer number of periods is chosen)."""
    st = ctx.station
    tt_cfg = ctx.config.time_tagger
    coarse: dict[str, float] = {}
    coarse_note = "nominal delay from the station file"
    gated = any(st.detector(d).gated for d in detectors)
    if gated and coarse_rep_rate_hz is not None:
        ctx.step("delays: gated detectors lose the pulses at another repetition rate; coarse stage skipped")
    if coarse_rep_rate_hz is not None and coarse_rep_rate_hz < f_nom and not gated:
        try:
            guard.set(st.laser, "rep_rate_hz", float(coarse_rep_rate_hz))
        except (ValueError, InstrumentError) as exc:
            ctx.step(f"delays: laser cannot run at {coarse_rep_rate_hz:g} Hz ({exc}); using nominal delays")
        else:
            Tc = 1e12 / float(coarse_rep_rate_hz)
            ctx.step(f"delays: coarse acquisition at {coarse_rep_rate_hz:.3g} Hz ({coarse_duration_s:g} s)")
            tc = collect_tags(ctx, coarse_duration_s, chans)
            guard.set(st.laser, "rep_rate_hz", f_nom)
            sync_t = tc[tt_cfg.sync_channel]
            want = Tc * tt_cfg.sync_divider
            got = float(np.median(np.diff(sync_t))) if sync_t.size > 2 else float("nan")
            if not abs(got - want) <= 0.01 * want:  # the pulses did not follow the laser's new rate (e.g. a
                ctx.step(f"delays: the sync period stayed {got:.6g} ps at {coarse_rep_rate_hz:g} Hz (expected "
                         f"{want:.6g} ps): the pulse rate is not the laser's to set here; using nominal delays")
                return coarse, coarse_note  # diode driver whose pulses come from elsewhere)
            for d in detectors:
                ph = fold(delay_after_sync(tc[tt_cfg.detector_channels[d]], tc[tt_cfg.sync_channel]), Tc)
                if ph.size < 30:
                    raise CalibrationError(f"{d}: only {ph.size} clicks in the coarse acquisition; no light?")
                peak, _, _ = circular_peak(ph, Tc, max(T / 10.0, 50.0))
                x = centred_window(ph, peak, Tc)
                near = x[np.abs(x - peak) < T / 4]
                coarse[d] = float(np.median(near)) % Tc
            coarse_note = f"coarse acquisition at {coarse_rep_rate_hz:g} Hz (delay mod {Tc:g} ps)"
    return coarse, coarse_note


def channel_delays(ctx: CalContext, detectors: tuple[str, ...] = DETECTORS, fine_duration_s: float = 0.03,
                   coarse_rep_rate_hz: float | None = 1e6, coarse_duration_s: float = 0.3, bin_ps: float = 2.0,
                   prior_cable_delays_ps: dict[str, float] | None = None) -> ProcedureResult:
    """Cable delay of each detector channel [ps] relative to the sync (see the module docstring).

    ``prior_cable_delays_ps``: prior cable delay per detector (default: the station file's
    ``cable_delays_ps``); it picks the integer number of coarse periods (must be right to ±T_c/2,
    ±500 ns at 1 MHz) or, without a coarse stage, of pulse periods (±T/2).
    """
    cfg = ctx.config
    tt_cfg = cfg.time_tagger
    loop = loop_delay_ps(cfg.loop)
    quantities: list[Quantity] = []
    raw: dict[str, Any] = {}
    plots: list[str] = []
    with guarded(ctx, "delays") as guard:
        st = ctx.station
        tagger = st.time_tagger
        changed = light_path_on(ctx, guard, detectors)
        if changed:
            ctx.step(f"delays: light path on ({', '.join(changed)})")
        gates_to_optimum(ctx, guard)
        ind = tagger.input_delays_ps
        in_sync = float(ind.get(tt_cfg.sync_channel, 0))
        sync_ref = tt_cfg.cable_delays_ps.get("sync", 0.0) + in_sync
        f_nom = float(st.laser.rep_rate_hz)
        T = 1e12 / f_nom
        # fine stage at the operating repetition rate
        ctx.step(f"delays: fine acquisition ({fine_duration_s:g} s at {f_nom:.4g} Hz)")
        chans = [tt_cfg.sync_channel, *(tt_cfg.detector_channels[d] for d in detectors)]
        tags = collect_tags(ctx, fine_duration_s, chans)
        fine = _fine_peaks(ctx, tags, detectors, T, bin_ps)
        # coarse stage: integer number of periods
        coarse, coarse_note = _coarse_peaks(ctx, guard, detectors, chans, coarse_rep_rate_hz, coarse_duration_s,
                                            f_nom, T)
        for d in detectors:
            mu, e_mu, fit, c, n = fine[d]
            in_d = float(ind.get(tt_cfg.detector_channels[d], 0))
            prior = (prior_cable_delays_ps or {}).get(d, tt_cfg.cable_delays_ps.get(d, 0.0))
            nominal = loop + float(prior) + in_d - sync_ref
            if d in coarse:
                Tc = 1e12 / float(coarse_rep_rate_hz)  # type: ignore[arg-type]
                c_mod = mu + T * round((coarse[d] - mu) / T)  # fine position, placed by the coarse peak
                total = c_mod + Tc * round((nominal - c_mod) / Tc)
            else:
                total = mu + T * round((nominal - mu) / T)
            res = float(tagger.resolution_ps)
            err = math.hypot(e_mu, res / math.sqrt(12.0) if res > 1 else 0.0)
            cable = total + sync_ref - loop - in_d
            quantities.append(Quantity(
                f"{d}.cable_delay_ps", cable, err, "ps", "delays",
                true=sim_truth(st, "time_tagger", lambda cc, d=d: math.floor(loop + cc.time_tagger.cable_delays_ps.get(d, 0.0) + 0.5) - loop),
                details={"relative_delay_ps": total, "folded_peak_ps": mu, "period_ps": T, "integer_periods_from": coarse_note,
                         "loop_delay_ps": loop, "input_delay_ps": in_d, "sync_reference_ps": sync_ref,
                         "peak_sigma_ps": fit["sigma"]}))
            raw[d] = {"fit": fit.summary(), "clicks": int(n.sum()), "coarse_peak_ps": coarse.get(d), "nominal_relative_ps": nominal}
            p = save_plot(ctx.plot_path(f"delay_{d}.png"), lambda ax, c=c, n=n, fit=fit: plot_peak(ax, c, n, fit, "Gaussian fit", mark_centre=True),
                          f"{d}: sync–click peak at {mu:.2f} ± {e_mu:.2f} ps (mod T); cable delay {cable:.1f} ps")
            if p:
                plots.append(p)
    return ctx.remember(ProcedureResult("delays", quantities, raw, plots))


__all__ = ["channel_delays", "light_path_on"]
