"""Detector calibration: dead time and afterpulsing, dark-count rate (vs bias, with temperature),
timing jitter, gate delay (gated detectors) and detection efficiency.

Formulas (docs/calibration.md; REFERENCES "Instrument and calibration facts"):

* dead-time correction, non-paralysable: R = R_m/(1 − R_m·τ_d) (Knoll, *Radiation Detection and
  Measurement*, 4th ed., §4.VII); under pulsed light p = p_m/(1 − n_b·p_m) with n_b the pulses a
  click blinds the detector to;
* dark-count rate DCR = R_m/(1 − R_m·τ_d)·(1 − P_ap) (each click triggers on average
  P_ap/(1 − P_ap) afterpulses); gated detectors: free-running equivalent −ln(1 − P_dc)/w_gate;
* dead time: the edge of the inter-arrival histogram of Poisson (dark) clicks, fitted with a
  jitter-smeared step; afterpulse probability: the excess of the inter-arrival histogram over the
  exponential fitted to its tail and extrapolated to the dead time (Ziarkash et al., "Comparative
  study of afterpulsing behavior and models in single photon counting avalanche photo diode
  detectors", Sci. Rep. 8, 5076 (2018); Humer et al., Opt. Express 23, 2013 (2015));
* timing jitter: width of the click-vs-sync histogram peak, laser contributions removed in
  quadrature;
* gate delay: the centre of the plateau of click rate vs gate delay (equivalently the click-vs-sync
  peak inside the gate);
* efficiency (gated form, Bethune & Risk / ID Quantique application note; REFERENCES):
  η = ln[(1 − P_dc)/(1 − P_det)]/μ with μ = P·10^(−ΔA/10)/(hν·f_rep) from the power meter, the
  extra attenuation ΔA and the photon energy hν, times the transmission from the reference point.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
    blocked_pulses,
    continuous_dead_time_correction,
    gates_to_optimum,
    guarded,
    pulsed_dead_time_correction,
    restore_dc,
    sim_truth,
)
from labqfl.calibration.fitting import (
    FitResult,
    edge_bootstrap,
    fit_curve,
    fit_edge_unbinned,
    fit_gaussian_peak,
    fit_poisson,
    plot_peak,
    smoothed_edge,
)
from scipy.optimize import brentq

from labqfl.config import StationConfig
from labqfl.errors import CalibrationError
from labqfl.physics import loop_delay_ps, photon_energy_j
from labqfl.qkd.channel_model import transmittances
from labqfl.qkd.schedule import PairSchedule

DETECTORS = ("D0", "D1")


# -- small helpers -------------------------------------------------------------------------------
def _chan(cfg: StationConfig, d: str) -> int:
    return cfg.time_tagger.detector_channels[d]


def _bias_unit(cfg: StationConfig, d: str) -> str:
    return "µA" if cfg.detectors[d].kind == "snspd" else "V"


def _period_ps(ctx: CalContext) -> float:
    return 1e12 / float(ctx.station.laser.rep_rate_hz)


def _darken(ctx: CalContext, guard: SettingsGuard) -> None:
    """Laser off and every client shutter closed (no light anywhere)."""
    guard.set(ctx.station.laser, "output_enabled", False)
    for c in ctx.config.client_names:
        att = ctx.station.attenuator(c)
        if hasattr(att, "shutter_closed"):
            guard.set(att, "shutter_closed", True)


def _enable(ctx: CalContext, guard: SettingsGuard, dets: tuple[str, ...]) -> None:
    for d in dets:
        guard.set(ctx.station.detector(d), "enabled", True)
    tt = ctx.station.time_tagger
    want = sorted({ctx.config.time_tagger.sync_channel, *(_chan(ctx.config, d) for d in DETECTORS)})
    if sorted(tt.channels) != want:
        guard.set(tt, "channels", want)


def _dead_time_s(ctx: CalContext, d: str) -> float:
    return ctx.value(f"{d}.dead_time_ns", ctx.config.detectors[d].dead_time_ns) * 1e-9


def _p_ap(ctx: CalContext, d: str) -> float:
    """Afterpulse probability for the corrections: the calibrated value as measured, negative
    included. Clipping a noisy estimate at 0 (as this did) biases every correction that uses it:
    for gated InGaAs SPADs (P_ap in the gates ≈ 0.005 ± 0.01) the efficiency came out low by
    0.6σ on average. The error of P_ap is propagated where it is used."""
    return min(max(ctx.value(f"{d}.afterpulse_prob", ctx.config.detectors[d].afterpulse_prob), -0.5), 0.9)


def _counts(ctx: CalContext, integration_s: float) -> dict[str, int]:
    """Clicks of D0 and D1 in one integration (through the time tagger's counters)."""
    r = ctx.station.time_tagger.count_rates(integration_s)
    return {d: int(round(r.get(_chan(ctx.config, d), 0.0) * integration_s)) for d in DETECTORS}


# -- dead time and afterpulsing ---------------------------------------------------------------------
def _raise_dark_rate(ctx: CalContext, guard: SettingsGuard, d: str, target_hz: float) -> tuple[float, float]:
    """Raise the bias of ``d`` (laser off) until its dark-count rate is near ``target_hz``.

    Uses the measured d ln(rate)/d bias (secant steps from a nominal slope). Returns (bias, rate).
    """
    det = ctx.station.detector(d)
    slope = ctx.value(f"{d}.dark_log_slope", 1.0 if ctx.config.detectors[d].kind == "snspd" else 2.0)
    bias = float(det.bias)
    rate = max(_counts(ctx, 0.2)[d] / 0.2, 1.0)
    for _ in range(8):
        if 0.5 * target_hz <= rate <= 2.0 * target_hz:
            return bias, rate
        step = math.log(target_hz / rate) / max(slope, 1e-3)
        step = max(min(step, 12.0 / max(slope, 1e-3)), -12.0 / max(slope, 1e-3))
        new_bias = bias + step
        try:
            guard.set(det, "bias", new_bias)
        except ValueError:
            # clamp into the instrument's range: halve the step until it is accepted
            for _ in range(20):
                step /= 2
                try:
                    guard.set(det, "bias", bias + step)
                    new_bias = bias + step
                    break
                except ValueError:
                    continue
            else:
                break
        integ = min(max(2000.0 / max(rate * math.exp(slope * (new_bias - bias)), 1.0), 0.01), 0.5)
        new_rate = max(_counts(ctx, integ)[d] / integ, 1.0 / integ)
        if new_bias != bias and new_rate > 2.0 / integ and rate > 1.0:
            slope = max(math.log(new_rate / rate) / (new_bias - bias), 1e-3)
        if abs(new_bias - bias) < 1e-9:
            break
        bias, rate = new_bias, new_rate
    if rate < target_hz / 20:
        raise CalibrationError(
            f"{d}: cannot raise the dark-count rate to ~{target_hz:.3g} Hz within the bias range "
            f"(reached {rate:.3g} Hz at bias {bias:.4g}); dead time/afterpulsing need a Poisson click source")
    return bias, rate


def _interarrival_analysis(ctx: CalContext, d: str, intervals_ps: np.ndarray, gated: bool, period_ps: float,
                           gate_width_ps: float, tail_start_ps: float | None) -> dict[str, Any]:
    """Dead-time edge and afterpulse excess from inter-arrival times [ps] of one detector."""
    x = np.sort(intervals_ps.astype(np.float64))
    n_tot = x.size
    if n_tot < 2000:
        raise CalibrationError(f"{d}: only {n_tot} inter-arrival times; need ≥ 2000 (too few clicks)")
    out: dict[str, Any] = {"n_intervals": int(n_tot)}
    d_in: np.ndarray | None = None
    d_cut: float | None = None
    if gated:
        # first populated gate: the smallest one seen. (A 0.01 % percentile used to skip the first
        # few intervals as "stray"; when τ_d ends near the end of a gate that gate holds only a few
        # intervals, so n_min came out one period late and τ_d fell outside its interval: gated
        # τ_d pulls up to 3.8 with |pull| ≤ √3 promised.) Dead time admits no shorter interval.
        # With µs dead times the intervals spread over ~1/λ ≈ 10⁴ gates: a few per gate, and an
        # open gate is empty with probability e^(−ρ) (ρ: mean intervals per gate just after the
        # edge; measured: 1 detector in 24 had its first open gate empty and τ_d one period high,
        # pull 3.1). The interval below n_min is widened by the m gates that could all be empty
        # with probability ≥ 0.1 %: e^(−m·ρ) ≥ 10⁻³.
        k = np.rint(x / period_ps).astype(np.int64)
        n_min = int(k.min())
        rho = float(np.count_nonzero(k < n_min + 50)) / 50.0
        m_empty = max(0, math.ceil(math.log(1000.0) / max(rho, 1e-3)) - 1)
        out["empty_gates_allowed"] = m_empty
        lo, hi = (n_min - 1 - m_empty) * period_ps, n_min * period_ps + gate_width_ps
        out.update(tau_ps=0.5 * (lo + hi), tau_err_ps=(hi - lo) / math.sqrt(12.0), edge_fit=None)
        unit_x = k.astype(np.float64) - n_min  # gates after the first open one
        bw = 1.0
        # Offset difference d of the two clicks inside their gates [ps]: Poisson (dark) pairs are
        # triangular on (−w, w) in every gate. When τ_d ends inside gate n_min, that gate is only
        # open for d ≥ τ_d − n_min·T; the tail extrapolation assumes fully open gates and would
        # then overestimate the Poisson intervals by ≈ λ·(1 − open fraction)·N, biasing P_ap low
        # by up to λ per gate (measured: −0.6σ on average). Fix: compare only intervals with
        # d ≥ d_cut (open in every gate; 5 pair-jitters above the lowest d seen in gate n_min) and
        # divide by their share s of the Poisson tail (afterpulses of a decay ≫ T fall uniformly in
        # the gate, like dark counts, so the cut keeps the same share of them).
        d_in = x - k * period_ps
        first = d_in[k == n_min]
        s_pair = math.sqrt(2.0) * ctx.value(f"{d}.jitter_ps", ctx.config.detectors[d].jitter_ps)
        if first.size and float(first.min()) > -gate_width_ps + 3.0 * s_pair:
            d_cut = float(first.min()) + 5.0 * s_pair
            if d_cut > gate_width_ps - 3.0 * s_pair:
                # only a sliver of gate n_min is open: no cut leaves enough intervals. Leave that
                # gate out (its few intervals too) and start at the next, fully open gate
                # (τ_d < n_min·T + w ≤ (n_min + 1)·T − w for T ≥ 2w).
                keep = k > n_min
                x, k, d_in = x[keep], k[keep], d_in[keep]
                n_min += 1
                d_cut = None
                out["sliver_gate_dropped"] = True
                unit_x = k.astype(np.float64) - n_min
            else:
                out["offset_cut_ps"] = d_cut
    else:
        # rough edge: where the intervals start (3rd smallest, robust to one stray short interval);
        # fit a jitter-smeared step there. The window must open well below the edge: a rough edge
        # taken as the median of the first ~20 intervals sat up to ~1.5 ns above a sparse edge
        # (no afterpulses, ~10 intervals/ns), so the window began at the edge and the fit lost it
        # (6 % of seeds gave τ_d off by ns with errors of µs). It extends upwards until it holds
        # ≥ 300 intervals (at most 20 ns: the linear term must still describe the density).
        # For µs dead times (InGaAs) with afterpulses decaying over µs and a dark rate of a few kHz,
        # 20 ns hold only a handful of intervals; the cap then grows to what the density stays
        # linear over: 0.1 of the afterpulse decay and 0.1 of the mean Poisson gap.
        # The window opens 1.5 ns below the *shortest* interval: no interval is shorter than τ_d
        # (minus jitter). Opening it below the 3rd-shortest failed for InGaAs (afterpulses spread
        # over µs: < 1 interval/ns at the edge, the 3rd-shortest 4 ns above it, the window began
        # above the edge and τ_d came out 4 ns high, +6.7σ).
        rough = float(x[0])
        lo_w = rough - 1500.0
        mean_gap_ps = float(np.mean(x)) - rough
        cap = max(20_000.0, min(0.1 * ctx.config.detectors[d].afterpulse_decay_ns * 1e3, 0.1 * mean_gap_ps))
        hi_w = rough + min(max(3000.0, float(x[min(300, n_tot - 1)]) - rough), cap)
        s_edge = math.sqrt(2.0) * ctx.value(f"{d}.jitter_ps", ctx.config.detectors[d].jitter_ps)
        fit = fit_edge_unbinned(x, lo_w, hi_w, rough + s_edge, s_edge, f"{d} dead-time edge")
        n_win = int(np.count_nonzero((x >= lo_w) & (x < hi_w)))
        spacing = (hi_w - fit["tau"]) / max(n_win, 1)  # mean gap between intervals above the edge
        tau_fit, tau_err = fit["tau"], fit.err("tau")
        if spacing > 0.5 * fit["s"]:  # sparse edge: non-regular likelihood, see edge_bootstrap
            bias, sd, nb_ = edge_bootstrap(fit, n_win, lo_w, hi_w, ctx.rng(0xED + DETECTORS.index(d)),
                                           f"{d} dead-time edge")
            tau_fit, tau_err = tau_fit - bias, math.hypot(sd, sd / math.sqrt(nb_))
            out["edge_bootstrap"] = {"bias_ps": bias, "sd_ps": sd, "replicates": nb_, "spacing_ps": spacing}
        bins = np.arange(lo_w, hi_w + 1e-9, 25.0)
        n_e, _ = np.histogram(x, bins=bins)
        c_e = 0.5 * (bins[1:] + bins[:-1])
        sel = n_e[c_e > fit["tau"] + 3 * fit["s"]]
        scale = float(np.mean(sel)) if sel.size else 1.0
        model = smoothed_edge(c_e, fit["tau"], fit["s"], scale, scale * fit["b"])
        out.update(tau_ps=tau_fit, tau_err_ps=tau_err, edge_fit=fit.summary(),
                   edge_hist={"centres_ps": c_e, "counts": n_e, "model": model})
        unit_x = x - tau_fit
        bw = 0.0
    # afterpulsing: exponential tail fit, extrapolated from the edge
    mean_gap = float(np.mean(unit_x[unit_x >= 0])) if np.any(unit_x >= 0) else 1.0
    lam_rough = 1.0 / max(mean_gap, 1e-9)
    tau_ap = ctx.config.detectors[d].afterpulse_decay_ns * 1e3
    if gated:
        t0 = float(math.ceil(max(0.3 / lam_rough, 5.0, 20.0 * tau_ap / period_ps) if tail_start_ps is None
                             else tail_start_ps / period_ps))
        bw = max(1.0, float(math.floor(0.02 / lam_rough)))
    else:
        t0 = max(0.3 / lam_rough, 20.0 * tau_ap) if tail_start_ps is None else tail_start_ps
        bw = 0.02 / lam_rough
    t_max = float(np.quantile(unit_x, 0.998))
    if t_max <= t0 + 20 * bw:
        raise CalibrationError(
            f"{d}: inter-arrival tail too short to fit (dark rate {lam_rough / (period_ps if gated else 1.0) * 1e12:.3g} Hz "
            f"against an afterpulse decay of {tau_ap / 1e3:.4g} ns; lower the dark-count rate)")
    edges = np.arange(t0 - 0.5, t_max, bw) if gated else np.arange(t0, t_max, bw)  # gated: integer gates
    n_t, _ = np.histogram(unit_x, bins=edges)
    c_t = 0.5 * (edges[1:] + edges[:-1])

    # the decay is fitted relative to the rough rate (k = λ/λ_rough ≈ 1): with λ itself as the
    # parameter (1e-8 /ps next to log_a ≈ 7) the least-squares steps were badly scaled and the fit
    # stopped early, scattering the bootstrap replicates (σ_λ/λ 2.4 % where 1/√N_tail = 0.5 %)
    def tail_model(xx: np.ndarray, log_a: float, k: float) -> np.ndarray:
        return np.exp(log_a - k * lam_rough * (xx - t0))

    def ap_estimate(ux: np.ndarray, dd: np.ndarray | None) -> tuple[float, FitResult, np.ndarray]:
        share = 1.0
        n_all = float(ux.size)
        if d_cut is not None and dd is not None:
            keep = dd >= d_cut
            tail = ux >= t0
            share = float(np.count_nonzero(keep & tail)) / max(float(np.count_nonzero(tail)), 1.0)
            if share <= 0.0:
                raise CalibrationError(f"{d}: no interval passes the in-gate offset cut")
            ux = ux[keep]
        nn, _ = np.histogram(ux, bins=edges)
        nn = nn.astype(np.float64)
        f = fit_poisson(tail_model, c_t, nn, [math.log(max(nn[0], 1.0)), 1.0], ("log_a", "lam_rel"),
                        f"{d} inter-arrival tail", bounds=([-50.0, 1e-6], [50.0, np.inf]))
        la, lam = f["log_a"], f["lam_rel"] * lam_rough
        # Poisson intervals in [0, ∞) with the same bin width, from bin centres bw/2, 3bw/2, …
        if gated:
            expected = math.exp(la + lam * t0) / bw / -math.expm1(-lam)  # Σ_{k≥0} (A/bw)·e^{−λk}
        else:
            expected = math.exp(la + lam * t0) * math.exp(-lam * bw / 2) / -math.expm1(-lam * bw)
        return (float(ux.size) - expected) / (share * n_all), f, nn

    p_ap, tfit, n_tail = ap_estimate(unit_x, d_in)
    rng = ctx.rng(0xA9 + DETECTORS.index(d))
    boots = []
    for _ in range(40):
        idx = rng.integers(0, unit_x.size, unit_x.size)
        try:
            boots.append(ap_estimate(unit_x[idx], None if d_in is None else d_in[idx])[0])
        except CalibrationError:
            continue
    if len(boots) < 20:
        raise CalibrationError(f"{d}: afterpulse tail fit unstable under resampling")
    out.update(p_ap=p_ap, p_ap_err=float(np.std(boots, ddof=1)), tail_fit=tfit.summary(),
               tail_hist={"centres": c_t, "counts": n_tail, "model": tail_model(c_t, *tfit.params)},
               tail_start=t0, bin_width=bw, x_unit="gates" if gated else "ps",
               dark_rate_hz=(tfit["lam_rel"] * lam_rough / period_ps * 1e12) if gated else tfit["lam_rel"] * lam_rough * 1e12)
    return out


def dark_target_rate_hz(dead_time_s: float, afterpulse_decay_s: float, dead_fraction: float = 0.1,
                        preemption: float = 0.01, ceiling_hz: float = 2e5) -> float:
    """Dark-count rate R for the inter-arrival measurement of a detector with dead time τ_d and
    afterpulse decay τ_ap: R = min(``dead_fraction``/τ_d, ``preemption``/τ_ap, ``ceiling_hz``).

    R·τ_d ≤ 0.1 keeps the detector live ≥ 90 % of the time (a rate fixed for SNSPDs, 2e5 Hz,
    is above 1/τ_d = 1e5 Hz for a 10 µs InGaAs SPAD: the detector saturates and the exponential
    tail shrinks to nothing); R·τ_ap ≤ 0.01 bounds the afterpulses lost to a dark count that
    pre-empts them (relative bias ≈ R·τ_ap, ≤ 1 %) and puts the tail fit's start
    (max(0.3/R, 20·τ_ap)) at 0.3/R, well inside the tail."""
    return float(min(dead_fraction / max(dead_time_s, 1e-12), preemption / max(afterpulse_decay_s, 1e-12), ceiling_hz))


def _scout_dead_time_s(ctx: CalContext, d: str, rate_hz: float, max_duration_s: float) -> float | None:
    """Rough dead time [s] from a short dark acquisition: the 3rd-shortest inter-arrival time
    (robust to one stray short interval). None when fewer than 50 intervals were seen."""
    duration = min(max(400.0 / max(rate_hz, 1.0), 0.01), max_duration_s)
    ch = _chan(ctx.config, d)
    tags = collect_tags(ctx.station.time_tagger, duration, [ch])[ch]
    gaps = np.diff(tags)
    if gaps.size < 50:
        return None
    return float(np.partition(gaps, 2)[2]) * 1e-12


def dead_time_afterpulsing(ctx: CalContext, detectors: tuple[str, ...] = DETECTORS, target_rate_hz: float | None = None,
                           n_intervals: int = 150_000, max_duration_s: float = 60.0,
                           tail_start_ps: float | None = None) -> ProcedureResult:
    """Dead time τ_d and afterpulse probability P_ap of each detector from dark-count inter-arrival
    times (laser off, bias raised until the dark-count rate is ``target_rate_hz``; by default
    :func:`dark_target_rate_hz` of the detector met: the bias is first raised for the station
    file's τ_d, a short scout acquisition measures τ_d roughly (shortest intervals), and when that
    asks for another rate the bias is moved again).

    Dark counts are a Poisson source in continuous time, so the inter-arrival density is
    λe^{−λ(t−τ_d)} for t ≥ τ_d plus afterpulses concentrated just after τ_d. τ_d is the edge
    (jitter-smeared step fit; gated detectors: the first populated gate, ± half a gate period);
    P_ap = (N − N_Poisson)/N with N_Poisson the tail exponential extrapolated to τ_d. The target
    rate is kept low (λ ≪ 1/τ_ap) so afterpulses are rarely pre-empted by a dark count; the
    uncertainty of P_ap is a bootstrap over the intervals. A sparse free-running edge is
    bias-corrected by a parametric bootstrap (:func:`~labqfl.calibration.fitting.edge_bootstrap`);
    a gate left partly open by τ_d is handled by an in-gate offset cut (see
    :func:`_interarrival_analysis`). Coverage over seeds: docs/calibration.md.
    """
    quantities: list[Quantity] = []
    raw: dict[str, Any] = {}
    plots: list[str] = []
    cfg = ctx.config
    with guarded(ctx, "dead_time_afterpulsing") as guard:
        _darken(ctx, guard)
        _enable(ctx, guard, detectors)
        for d in detectors:
            det = ctx.station.detector(d)
            gated = bool(det.gated)
            tau_ap_s = cfg.detectors[d].afterpulse_decay_ns * 1e-9
            target = target_rate_hz or dark_target_rate_hz(_dead_time_s(ctx, d), tau_ap_s)
            ctx.step(f"{d}: raising the bias for a {target:.3g} Hz dark-count rate")
            bias, rate = _raise_dark_rate(ctx, guard, d, target)
            if target_rate_hz is None:
                tau_seen = _scout_dead_time_s(ctx, d, rate, max_duration_s / 10.0)
                if tau_seen is not None:
                    target2 = dark_target_rate_hz(tau_seen, tau_ap_s)
                    if not 0.5 * target2 <= rate <= 2.0 * target2:
                        ctx.step(f"{d}: dead time ≈ {tau_seen * 1e9:.4g} ns seen; retuning for {target2:.3g} Hz")
                        bias, rate = _raise_dark_rate(ctx, guard, d, target2)
                        target = target2
            duration = min(max(n_intervals / rate, 0.05), max_duration_s)
            ctx.step(f"{d}: recording {duration:.3g} s of dark counts at {rate:.3g} Hz")
            ch = _chan(cfg, d)
            tags = collect_tags(ctx.station.time_tagger, duration, [ch])[ch]
            res = _interarrival_analysis(ctx, d, np.diff(tags), gated, _period_ps(ctx),
                                         float(det.gate_width_ns) * 1e3, tail_start_ps)
            guard.set(det, "bias", guard_original(guard, det, "bias"))
            tau_ns, tau_err = res["tau_ps"] / 1e3, res["tau_err_ps"] / 1e3
            quantities.append(Quantity(f"{d}.dead_time_ns", tau_ns, tau_err, "ns", "dead_time_afterpulsing",
                                       true=sim_truth(ctx.station, d, lambda c, d=d: c.detectors[d].dead_time_ns),
                                       details={"method": "gate quantised" if gated else "edge fit"}))
            # truth: the simulator's afterpulse probability; a gated detector only sees the afterpulses
            # that fall in a gate (decay ≫ period: the duty cycle w/T of them)
            quantities.append(Quantity(f"{d}.afterpulse_prob", res["p_ap"], res["p_ap_err"], "", "dead_time_afterpulsing",
                                       true=sim_truth(ctx.station, d, lambda c, d=d: c.detectors[d].afterpulse_prob * (
                                           min(1.0, c.detectors[d].gate_width_ns * 1e3 * c.laser.rep_rate_hz / 1e12)
                                           if c.detectors[d].gated else 1.0)),
                                       details={"method": "excess over exponential tail", "bootstrap": 40}))
            raw[d] = {"bias": bias, "dark_rate_hz": rate, "target_rate_hz": target, "duration_s": duration,
                      "n_intervals": res["n_intervals"],
                      "edge_fit": res["edge_fit"], "tail_fit": res["tail_fit"], "tail_start": res["tail_start"],
                      "x_unit": res["x_unit"]}
            p = save_plot(ctx.plot_path(f"dead_time_{d}.png"), lambda ax, res=res: _plot_interarrival(ax, res),
                          f"{d}: inter-arrival histogram (τ_d = {tau_ns:.3f} ± {tau_err:.3f} ns, "
                          f"P_ap = {res['p_ap']:.4f} ± {res['p_ap_err']:.4f})")
            if p:
                plots.append(p)
    return ctx.remember(ProcedureResult("dead_time_afterpulsing", quantities, raw, plots))


def guard_original(guard: SettingsGuard, obj: Any, attr: str) -> Any:
    """The value ``obj.attr`` had before the guard first changed it (current value otherwise)."""
    for o, a, old in guard._saved:
        if o is obj and a == attr:
            return old
    return getattr(obj, attr)


def _plot_interarrival(ax: Any, res: dict[str, Any]) -> None:
    th = res["tail_hist"]
    ax.semilogy(th["centres"], np.maximum(th["counts"], 0.5), ".", ms=3, label="tail histogram")
    ax.semilogy(th["centres"], th["model"], "-", label="exponential fit")
    ax.set_xlabel(f"inter-arrival − τ_d [{res['x_unit']}]")
    ax.set_ylabel("intervals per bin")
    if res.get("edge_hist") is not None:
        inset = ax.inset_axes([0.55, 0.55, 0.42, 0.4])
        eh = res["edge_hist"]
        inset.plot(eh["centres_ps"] / 1e3, eh["counts"], ".", ms=2)
        inset.plot(eh["centres_ps"] / 1e3, eh["model"], "-")
        inset.set_xlabel("ns", fontsize=7)
        inset.tick_params(labelsize=6)
    ax.legend(fontsize=8, loc="lower left")


# -- dark counts ----------------------------------------------------------------------------------
def _dcr_from_counts(ctx: CalContext, d: str, n: int, t: float, var_n: float | None = None) -> tuple[float, float, dict[str, Any]]:
    """Dark-count rate (free-running equivalent for gated detectors) and its 1σ error.

    The error of the count N is √(N+1) (the Gamma(N+1) posterior width, sane for small N), or the
    scatter between sub-integrations ``var_n`` (variance of N) when that is larger (drifts,
    afterpulse clustering)."""
    det = ctx.station.detector(d)
    rm = n / t
    var = max(n + 1.0, var_n or 0.0)
    s_rel = math.sqrt(var) / max(n, 1)
    p_ap = _p_ap(ctx, d)
    if det.gated:
        f_gate = float(ctx.station.laser.rep_rate_hz)
        w = float(det.gate_width_ns) * 1e-9
        p_m = rm / f_gate
        p_dc = pulsed_dead_time_correction(p_m, _dead_time_s(ctx, d) * 1e12, 1e12 / f_gate) * (1.0 - p_ap)
        dcr = -math.log1p(-p_dc) / w
        return dcr, dcr * s_rel if n > 0 else 1.0 / t / (w * f_gate), {"p_dc_per_gate": p_dc, "gate_width_s": w}
    r = continuous_dead_time_correction(rm, _dead_time_s(ctx, d)) * (1.0 - p_ap)
    return r, (r * s_rel if n > 0 else 1.0 / t), {}


def dark_counts(ctx: CalContext, detectors: tuple[str, ...] = DETECTORS, integration_s: float = 2.0,
                bias_steps: tuple[float, ...] = (-0.1, -0.05, 0.05, 0.1), sweep_integration_s: float = 1.0) -> ProcedureResult:
    """Dark-count rate at the operating bias, and its dependence on bias (with the detector
    temperature recorded at every point; the temperature is read-only on these interfaces).

    Laser off, shutters closed. DCR = R_m/(1 − R_m·τ_d)·(1 − P_ap) with Poisson error √N/t; the
    bias sweep (relative steps of the operating bias) is fitted with DCR(b) = DCR_0·e^{k(b − b_0)}
    (Poisson-weighted), k reported as ``<D>.dark_log_slope``.
    """
    quantities: list[Quantity] = []
    raw: dict[str, Any] = {}
    plots: list[str] = []
    with guarded(ctx, "dark_counts") as guard:
        _darken(ctx, guard)
        _enable(ctx, guard, detectors)
        dets = {d: ctx.station.detector(d) for d in detectors}
        b0 = {d: float(dets[d].bias) for d in detectors}
        ctx.step(f"dark counts at the operating bias ({integration_s:g} s in 8 parts)")
        parts = [_counts(ctx, integration_s / 8) for _ in range(8)]
        n0 = {d: sum(p[d] for p in parts) for d in detectors}
        var0 = {d: 8.0 * float(np.var([p[d] for p in parts], ddof=1)) for d in detectors}
        points: dict[str, list[dict[str, float]]] = {d: [] for d in detectors}
        for d in detectors:
            dcr, err, extra = _dcr_from_counts(ctx, d, n0[d], integration_s, var0[d])
            points[d].append({"bias": b0[d], "counts": n0[d], "t_s": integration_s, "dcr_hz": dcr, "err_hz": err,
                              "temperature_k": float(dets[d].temperature_k)})
            quantities.append(Quantity(f"{d}.dark_count_rate_hz", dcr, err, "Hz", "dark_counts",
                                       true=sim_truth(ctx.station, d, lambda c, d=d: c.detectors[d].dark_count_rate_hz),
                                       details={"counts": n0[d], "integration_s": integration_s, "bias": b0[d],
                                                "temperature_k": float(dets[d].temperature_k), **extra}))
        for st in bias_steps:
            ok = []
            for d in detectors:
                if b0[d] <= 0:
                    continue
                try:
                    guard.set(dets[d], "bias", b0[d] * (1.0 + st))
                    ok.append(d)
                except ValueError as exc:
                    ctx.step(f"{d}: bias {b0[d] * (1 + st):.4g} not allowed ({exc}); point skipped")
            if not ok:
                continue
            ctx.step(f"dark counts at bias ×{1 + st:.3f}")
            n = _counts(ctx, sweep_integration_s)
            for d in ok:
                dcr, err, _ = _dcr_from_counts(ctx, d, n[d], sweep_integration_s)
                points[d].append({"bias": float(dets[d].bias), "counts": n[d], "t_s": sweep_integration_s,
                                  "dcr_hz": dcr, "err_hz": err, "temperature_k": float(dets[d].temperature_k)})
        for d in detectors:
            guard.set(dets[d], "bias", b0[d])
        for d in detectors:
            pts = sorted(points[d], key=lambda p: p["bias"])
            raw[d] = {"points": pts}
            fit = None
            if len(pts) >= 3 and sum(p["counts"] for p in pts) >= 30:
                b = np.array([p["bias"] for p in pts])
                y = np.array([p["dcr_hz"] for p in pts])
                e = np.array([p["err_hz"] for p in pts])
                y0 = max(float(y[np.argmin(np.abs(b - b0[d]))]), 1e-3)

                def model(bb: np.ndarray, log_r0: float, k: float, b0d: float = b0[d]) -> np.ndarray:
                    return np.exp(log_r0 + k * (bb - b0d))
                try:
                    fit = fit_curve(model, b, y, e, [math.log(y0), 1.0], ("log_r0", "k"), f"{d} dark counts vs bias")
                except CalibrationError as exc:
                    ctx.step(f"{d}: bias-sweep fit failed ({exc}); slope not reported")
                if fit is not None:
                    unit = _bias_unit(ctx.config, d)
                    quantities.append(Quantity(
                        f"{d}.dark_log_slope", fit["k"], fit.err("k"), f"1/{unit}", "dark_counts",
                        true=sim_truth(ctx.station, d, lambda c, d=d: 1.0 / float(c.detectors[d].options.get(
                            "dark_bias_scale", 1.0 if c.detectors[d].kind == "snspd" else 0.5))),
                        details={"model": "DCR(b) = DCR0·exp(k·(b − b0))", "b0": b0[d], "fit": fit.summary()}))
                    raw[d]["fit"] = fit.summary()
            p = save_plot(ctx.plot_path(f"dark_counts_{d}.png"),
                          lambda ax, pts=pts, fit=fit, d=d: _plot_dark(ax, pts, fit, b0[d], _bias_unit(ctx.config, d)),
                          f"{d}: dark-count rate vs bias")
            if p:
                plots.append(p)
    return ctx.remember(ProcedureResult("dark_counts", quantities, raw, plots))


def _plot_dark(ax: Any, pts: list[dict[str, float]], fit: FitResult | None, b0: float, unit: str) -> None:
    b = np.array([p["bias"] for p in pts])
    ax.errorbar(b, [p["dcr_hz"] for p in pts], yerr=[p["err_hz"] for p in pts], fmt="o", label="measured")
    if fit is not None:
        bb = np.linspace(b.min(), b.max(), 100)
        ax.plot(bb, np.exp(fit["log_r0"] + fit["k"] * (bb - b0)), "-", label=f"fit k = {fit['k']:.3f}/{unit}")
    ax.set_yscale("log")
    ax.set_xlabel(f"bias [{unit}]")
    ax.set_ylabel("dark-count rate [Hz]")
    ax.legend(fontsize=8)


# -- timing jitter and gate delay ---------------------------------------------------------------------
def folded_click_phases(ctx: CalContext, duration_s: float, detectors: tuple[str, ...],
                        min_gap_ps: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Click delays after the latest sync, folded modulo the pulse period [ps], per detector.

    ``min_gap_ps[d]``: keep only clicks of ``d`` that follow the previous click of ``d`` by more
    than this (see :func:`recovered_gap_ps`; the first click, whose history is unknown, is dropped)."""
    cfg = ctx.config
    chans = [cfg.time_tagger.sync_channel, *(_chan(cfg, d) for d in detectors)]
    tags = collect_tags(ctx.station.time_tagger, duration_s, chans)
    sync = tags[cfg.time_tagger.sync_channel]
    T = _period_ps(ctx)
    out = {}
    for d in detectors:
        t = tags[_chan(cfg, d)]
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
    T = _period_ps(ctx)
    tau = _dead_time_s(ctx, d) * 1e12 + n_decays * ctx.config.detectors[d].afterpulse_decay_ns * 1e3
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
    chans = {d: _chan(ctx.config, d) for d in dets}
    rates = ctx.station.time_tagger.count_rates(integration_s)
    for _ in range(2):
        excess = 1.0
        for d in dets:
            rm = float(rates.get(chans[d], 0.0))
            tau = _dead_time_s(ctx, d)
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


def timing_jitter(ctx: CalContext, detectors: tuple[str, ...] = DETECTORS, duration_s: float | None = None,
                  bin_ps: float | None = None, target_clicks: int = 50_000, max_duration_s: float = 5.0,
                  min_duration_s: float = 0.02) -> ProcedureResult:
    """Detector timing jitter (rms) from the width of the click-vs-sync histogram peak.

    σ_sys from a Gaussian + background fit (Poisson errors, the Gaussian integrated over each bin);
    σ_det = √(σ_sys² − σ_laser² − (FWHM_pulse/2.355)² − res²/12), the laser's timing jitter and
    pulse width taken from the station file (the laser data sheet) as the reference.

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
        guard.set(ctx.station.laser, "output_enabled", True)
        _enable(ctx, guard, detectors)
        gates_to_optimum(ctx, guard, detectors)
        T = _period_ps(ctx)
        res_ps = float(ctx.station.time_tagger.resolution_ps)
        ref2 = cfg.laser.timing_jitter_ps**2 + (cfg.laser.pulse_width_ps / 2.3548) ** 2 + res_ps**2 / 12.0
        gaps = {d: recovered_gap_ps(ctx, d) for d in detectors}
        limit = {d: 1.0 / max(_dead_time_s(ctx, d), gaps[d] * 1e-12 - _dead_time_s(ctx, d)) for d in detectors}
        rates = dim_for_rate(ctx, guard, detectors, limit)
        if duration_s is None:
            kept = []
            for d in detectors:
                rm, tau = rates[d], _dead_time_s(ctx, d)
                r_true = rm / max(1.0 - rm * tau, 0.02)
                kept.append(rm * math.exp(-r_true * (gaps[d] * 1e-12 - tau)))
            duration_s = float(min(max(target_clicks / max(min(kept), 1e-9), min_duration_s), max_duration_s))
        ctx.step(f"jitter: recording {duration_s:.3g} s of clicks (clicks ≥ {min(gaps.values()) / 1e3:.4g} ns "
                 "after the previous one)")
        phases = folded_click_phases(ctx, duration_s, detectors, gaps)
        for d in detectors:
            ph = phases[d]
            gated = bool(ctx.station.detector(d).gated)
            if ph.size < 200:
                hint = "; is the gate delay calibrated (run gate_delay first)?" if gated else ""
                raise CalibrationError(f"{d}: only {ph.size} clicks in {duration_s:g} s; no light reaches the detector{hint}")
            s_nom = math.sqrt(ctx.value(f"{d}.jitter_ps", cfg.detectors[d].jitter_ps) ** 2 + ref2)
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
            s_sys, e_sys = fit["sigma"], fit.err("sigma")
            var = s_sys**2 - ref2
            if var <= 0:
                val, err = 0.0, e_sys
            else:
                val = math.sqrt(var)
                err = s_sys * e_sys / val
            quantities.append(Quantity(f"{d}.jitter_ps", val, err, "ps", "timing_jitter",
                                       true=sim_truth(ctx.station, (d, "laser"), lambda c, d=d: c.detectors[d].jitter_ps),
                                       details={"system_sigma_ps": s_sys, "system_sigma_err_ps": e_sys,
                                                "reference_sigma_ps": math.sqrt(ref2),
                                                "system_fwhm_ps": 2.3548 * s_sys, "min_gap_ps": gaps[d]}))
            raw[d] = {"clicks": int(ph.size), "duration_s": duration_s, "rate_hz": rates[d], "min_gap_ps": gaps[d],
                      "peak_ps": fit["mu"], "fit": fit.summary(), "bin_ps": bw}
            p = save_plot(ctx.plot_path(f"jitter_{d}.png"),
                          lambda ax, c=c, n=n, fit=fit: plot_peak(ax, c, n, fit, "Gaussian + background"),
                          f"{d}: click-vs-sync peak, σ_sys = {s_sys:.2f} ± {e_sys:.2f} ps, σ_det = {val:.2f} ps")
            if p:
                plots.append(p)
    return ctx.remember(ProcedureResult("timing_jitter", quantities, raw, plots))


def gate_delay(ctx: CalContext, detectors: tuple[str, ...] = DETECTORS, n_coarse: int = 40,
               integration_s: float = 0.01, resolution_ps: float = 0.5) -> ProcedureResult:
    """Gate delay that centres the optical pulse in the gate of a gated detector.

    The gate delay is scanned over one pulse period (``n_coarse`` points), the plateau of the
    click rate found, and its rising and falling edges located by bisection to ``resolution_ps``
    at half height; the optimum is the plateau centre (mod T), uncertainty from the final
    brackets (uniform, /√12). Free-running detectors are skipped.
    """
    quantities: list[Quantity] = []
    raw: dict[str, Any] = {}
    plots: list[str] = []
    gated = tuple(d for d in detectors if ctx.station.detector(d).gated)
    if not gated:
        return ProcedureResult("gate_delay", [], {"skipped": "no gated detector"}, [])
    with guarded(ctx, "gate_delay") as guard:
        guard.set(ctx.station.laser, "output_enabled", True)
        _enable(ctx, guard, gated)
        T = _period_ps(ctx)
        for d in gated:
            det = ctx.station.detector(d)
            w = float(det.gate_width_ns) * 1e3
            if w >= T:
                raise CalibrationError(f"{d}: gate width {w:g} ps covers the whole pulse period {T:g} ps; nothing to scan")
            n_pts = max(n_coarse, int(math.ceil(3 * T / w)))
            grid = np.arange(n_pts) * (T / n_pts)

            def rate_at(dl: float, det: Any = det, d: str = d) -> float:
                guard.set(det, "gate_delay_ps", float(dl % T))
                return _counts(ctx, integration_s)[d] / integration_s

            ctx.step(f"{d}: gate-delay scan over one period ({n_pts} points)")
            rates = np.array([rate_at(g) for g in grid])
            r_max, r_min = float(rates.max()), float(rates.min())
            if r_max * integration_s < 50 or (r_max - r_min) < 10 * math.sqrt(max(r_max * integration_s, 1.0)) / integration_s:
                raise CalibrationError(f"{d}: no light in any gate position (max {r_max:.3g} Hz); check the laser and attenuators")
            thr = 0.5 * (r_max + r_min)
            inside = rates > thr
            k_r = next(k for k in range(n_pts) if inside[k] and not inside[k - 1])
            k_f = next(k for k in range(n_pts) if inside[k] and not inside[(k + 1) % n_pts])

            def bisect(lo: float, hi: float, thr: float = thr) -> tuple[float, float]:
                # lo: outside, hi: inside (delays may run past T; rate_at wraps)
                while abs(hi - lo) > resolution_ps:
                    mid = 0.5 * (lo + hi)
                    if rate_at(mid) > thr:
                        hi = mid
                    else:
                        lo = mid
                return 0.5 * (lo + hi), abs(hi - lo) / math.sqrt(12.0)

            ctx.step(f"{d}: locating the gate edges by bisection")
            g_prev = grid[k_r - 1] if k_r > 0 else grid[-1] - T
            rise, e_r = bisect(g_prev, grid[k_r])
            g_next = grid[k_f + 1] if k_f + 1 < n_pts else T
            fall, e_f = bisect(g_next, grid[k_f])
            width = (fall - rise) % T
            centre = (rise + width / 2.0) % T
            err = 0.5 * (e_r + e_f)  # both brackets sit on the same scan grid: fully correlated
            lp = loop_delay_ps(ctx.config.loop)
            quantities.append(Quantity(
                f"{d}.gate_delay_ps", centre, err, "ps", "gate_delay",
                true=sim_truth(ctx.station, (d, "laser"),
                               lambda c, w=w, lp=lp: (math.floor(lp + 0.5) - w / 2.0) % (1e12 / c.laser.rep_rate_hz)),
                details={"plateau_width_ps": width, "gate_width_ps": w, "rising_edge_ps": rise, "falling_edge_ps": fall}))
            raw[d] = {"scan_delays_ps": grid, "scan_rates_hz": rates, "threshold_hz": thr}
            p = save_plot(ctx.plot_path(f"gate_delay_{d}.png"),
                          lambda ax, grid=grid, rates=rates, rise=rise, fall=fall, centre=centre: _plot_gate(
                              ax, grid, rates, rise, fall, centre),
                          f"{d}: click rate vs gate delay, optimum {centre:.1f} ± {err:.1f} ps")
            if p:
                plots.append(p)
    return ctx.remember(ProcedureResult("gate_delay", quantities, raw, plots))


def _plot_gate(ax: Any, grid: np.ndarray, rates: np.ndarray, rise: float, fall: float, centre: float) -> None:
    ax.plot(grid, rates, "o-", ms=3, label="click rate")
    for v, lab in ((rise, "edges"), (fall, None)):
        ax.axvline(v % grid[-1] if grid[-1] else v, ls=":", color="gray", label=lab)
    ax.axvline(centre, color="red", label="optimum")
    ax.set_xlabel("gate delay [ps]")
    ax.set_ylabel("click rate [Hz]")
    ax.legend(fontsize=8)


# -- efficiency ------------------------------------------------------------------------------------
def _source_weights(cfg: StationConfig, source: str, n_slots: int) -> list[tuple[float, float, float]]:
    """(slot fraction, D0 factor, D1 factor) per scheduled pair containing ``source``: the factor is
    the station model's transmittance from the source's output to that detector (fibre, insertion
    and node losses × splitter port), see :mod:`labqfl.qkd.channel_model`."""
    sched = PairSchedule.from_config(cfg)
    t = cfg.loop.beam_splitter_ratio
    out = []
    for (a, b), name in zip(sched.pairs, sched.names, strict=True):
        if source not in (a, b):
            continue
        frac = sched.slots_of_pair(name, n_slots) / n_slots
        eta_cw, eta_ccw = transmittances(cfg, a, b)
        if source == a:  # modulates the clockwise pulse: A term
            out.append((frac, t * eta_cw, (1 - t) * eta_cw))
        else:
            out.append((frac, (1 - t) * eta_ccw, t * eta_ccw))
    if not out:
        raise CalibrationError(f"source client {source!r} is in no scheduled pair; it never sends light")
    return out


def _dim_source(ctx: CalContext, guard: SettingsGuard, att: Any, detectors: tuple[str, ...],
                dead_time_fraction: float) -> float:
    """Raise the source's attenuation until every detector's measured rate satisfies
    R_m·τ_d ≤ ``dead_time_fraction`` (true rate R = R_m/(1 − R_m·τ_d) scaled down by the extra
    attenuation; two passes). Returns the attenuation [dB] the clicks are then counted at."""
    cfg = ctx.config
    a = float(att.attenuation_db)
    # light cannot be dimmed out of a detector saturated without it (dark counts, stray light)
    guard.set(att, "shutter_closed", True)
    bg = ctx.station.time_tagger.count_rates(0.02)
    guard.set(att, "shutter_closed", False)
    for d in detectors:
        rb, tau = float(bg.get(_chan(cfg, d), 0.0)), _dead_time_s(ctx, d)
        if rb * tau > 0.5:
            raise CalibrationError(f"{d}: detector saturated without light from the source ({rb:.3g} Hz with its "
                                   f"shutter closed, dead time {tau * 1e9:.4g} ns); stray light or dark counts?")
    for _ in range(2):
        rates = ctx.station.time_tagger.count_rates(0.02)
        excess = 1.0
        for d in detectors:
            rm, tau = float(rates.get(_chan(cfg, d), 0.0)), _dead_time_s(ctx, d)
            r_true = rm / max(1.0 - rm * tau, 0.02)
            r_goal = dead_time_fraction / tau / (1.0 + dead_time_fraction) if tau > 0 else math.inf
            excess = max(excess, r_true / r_goal)
        if excess <= 1.2:
            break
        step = 10.0 * math.log10(excess)
        for s_ in (step, step / 2, step / 4):
            try:
                guard.set(att, "attenuation_db", a + s_)
                a += s_
                ctx.step(f"efficiency: source attenuation raised by {s_:.1f} dB (detector dead time)")
                break
            except ValueError:
                continue
        else:
            break
    return a


def efficiency(ctx: CalContext, detectors: tuple[str, ...] = DETECTORS, source_client: str | None = None,
               duration_s: float = 0.2, reference_attenuation_delta_db: float = 30.0, power_readings: int = 5,
               attenuation_uncertainty_db: float = 0.02, transmission_rel_uncertainty: float = 0.0,
               dead_time_fraction: float = 0.05, target_clicks: int = 20_000, max_duration_s: float = 5.0) -> ProcedureResult:
    """Detection efficiency with an attenuated laser and the power meter as reference.

    1. Only ``source_client`` sends light (other shutters closed), its modulator held at a constant
       level (every pulse at its signal intensity).
    2. The power meter at the client's output reads P with the attenuation lowered by ΔA
       (``reference_attenuation_delta_db``) so the reading is far above the meter's floor; then
       μ = P·10^(−ΔA/10)/(hν·f_rep) photons per pulse at the measurement setting.
    3. Clicks with the source open and closed (background: dark counts, stray light) give the
       per-pulse click probability in the source's frames, dead-time and afterpulse corrected.
    4. η solves Σ_p w_p·[1 − e^{−η·g_p·μ}] = P_det − P_dc (the gated formula
       η = ln[(1 − P_dc)/(1 − P_det)]/μ generalised to the frames p of the schedule, g_p the
       transmission from the client to the detector from the station model).

    Adapted to the detector: the source's attenuation is first raised (by a known ΔA, within the
    attenuator's range) until R_m·τ_d ≤ ``dead_time_fraction`` on every detector, so the dead-time
    correction stays a few per cent (a 10 µs InGaAs SPAD at the operating attenuation is
    saturated); the counting lasts until about ``target_clicks`` clicks (at least ``duration_s``,
    at most ``max_duration_s``).

    Uncertainty: Poisson counts (statistical) ⊕ the power meter's relative calibration uncertainty
    (``power_meter.relative_uncertainty``) ⊕ reading scatter ⊕ ΔA accuracy ⊕ transmission model.
    """
    cfg = ctx.config
    src = source_client or cfg.client_names[0]
    if src not in cfg.client_names:
        raise CalibrationError(f"source client {src!r} is not one of {cfg.client_names}")
    quantities: list[Quantity] = []
    raw: dict[str, Any] = {}
    with guarded(ctx, "efficiency") as guard:
        st = ctx.station
        guard.set(st.laser, "output_enabled", True)
        _enable(ctx, guard, detectors)
        gates_to_optimum(ctx, guard, detectors)
        for c in cfg.client_names:
            att = st.attenuator(c)
            if not hasattr(att, "shutter_closed"):
                raise CalibrationError(f"{c}.attenuator has no shutter; the efficiency procedure needs variable attenuators")
            guard.set(att, "shutter_closed", c != src)
        pm_src = st.phase_modulator(src)
        guard.set(pm_src, "output_enabled", True)
        restore_dc(guard, pm_src)
        pm_src.set_dc_voltage(0.0)
        att = st.attenuator(src)
        att_meas = _dim_source(ctx, guard, att, detectors, dead_time_fraction)
        att_ref = max(att_meas - reference_attenuation_delta_db, 0.0)
        delta = att_meas - att_ref
        # power-meter reference
        ctx.step(f"power meter at {src}'s output, attenuation {att_ref:g} dB")
        meter = st.power_meter
        wl = float(st.laser.wavelength_nm)
        guard.set(meter, "wavelength_nm", wl)
        guard.set(meter, "averaging", 100)
        meter.place_at(src)
        guard.set(att, "attenuation_db", att_ref)
        readings = np.array([meter.power_w() for _ in range(max(2, power_readings))])
        guard.set(att, "attenuation_db", att_meas)
        meter.place_at("laser")
        p_mean = float(readings.mean())
        p_sem = float(readings.std(ddof=1) / math.sqrt(readings.size))
        if not p_mean > 5 * max(p_sem, 1e-30):
            raise CalibrationError(f"no light at the power meter ({p_mean:.3g} ± {p_sem:.2g} W at {src}'s output); "
                                   "is the laser on and the fibre connected?")
        f_rep = float(st.laser.rep_rate_hz)
        h_nu = photon_energy_j(wl)
        mu = p_mean * 10 ** (-delta / 10.0) / (h_nu * f_rep)
        rel_mu = math.sqrt((p_sem / p_mean) ** 2 + cfg.power_meter.relative_uncertainty**2
                           + (math.log(10) / 10 * attenuation_uncertainty_db) ** 2 + transmission_rel_uncertainty**2)
        # clicks with the source open and closed: long enough for ~target_clicks signal clicks
        rate_on = ctx.station.time_tagger.count_rates(0.02)
        r_min = min(float(rate_on.get(_chan(cfg, d), 0.0)) for d in detectors)
        duration_s = float(min(max(duration_s, target_clicks / max(r_min, 1.0)), max_duration_s))
        ctx.step(f"counting clicks with {src} open ({duration_s:g} s)")
        n_on = _counts(ctx, duration_s)
        ctx.step(f"counting background with {src} closed ({duration_s:g} s)")
        guard.set(att, "shutter_closed", True)
        n_off = _counts(ctx, duration_s)
        guard.set(att, "shutter_closed", False)
        n_slots = int(round(duration_s * f_rep))
        weights = _source_weights(cfg, src, n_slots)
        w_light = sum(w for w, _, _ in weights)
        T_ps = 1e12 / f_rep
        for d in detectors:
            k = DETECTORS.index(d)
            nm, nb_ = n_on[d], n_off[d]
            light_pulses = w_light * n_slots
            sig_err = math.sqrt(max(nm, 1) + max(nb_, 1)) / light_pulses
            if nm - nb_ < 5 * math.sqrt(max(nm + nb_, 1)):
                raise CalibrationError(f"{d}: no light detected from {src} ({nm} clicks with the source open, "
                                       f"{nb_} closed); check the attenuator, laser and fibre path")
            # Dead-time correction of the lit frames and of the background separately, then the
            # difference: p_lit = clicks per lit pulse (the unlit frames hold only background,
            # nb_·(1 − w) of it), s + b = p_lit/(1 − n_b·p_lit), b = p_off/(1 − n_b·p_off).
            # Correcting the difference with a factor from all clicks per lit pulse (as before)
            # charged the unlit frames' dark clicks to the lit ones: η high by ≈ R_dark·τ_d, +7 %
            # (+4σ) for a free-running InGaAs SPAD with 3 kHz of dark counts and τ_d = 23 µs.
            tau_ps = _dead_time_s(ctx, d) * 1e12
            p_lit = max(nm - nb_ * (1.0 - w_light), 0.0) / light_pulses
            s_plus_b = pulsed_dead_time_correction(p_lit, tau_ps, T_ps)
            b_true = pulsed_dead_time_correction(nb_ / n_slots, tau_ps, T_ps)
            corr = s_plus_b / p_lit if p_lit > 0 else 1.0
            p_ap = _p_ap(ctx, d)
            p_det = (s_plus_b - b_true) * (1.0 - p_ap)
            if p_det >= 0.5:
                raise CalibrationError(f"{d}: detector saturated ({p_det:.2f} clicks per pulse); increase the attenuation")

            def expected(eta: float, k: int = k) -> float:
                return sum(w / w_light * -math.expm1(-eta * g[k] * mu) for w, *g in weights)

            hi = 2.0
            if expected(hi) < p_det:
                raise CalibrationError(f"{d}: measured click probability {p_det:.3g} exceeds what η = 2 would give; "
                                       "check the power-meter reading, the attenuation and the transmission model")
            eta = brentq(lambda e, p_det=p_det: expected(e) - p_det, 0.0, hi, xtol=1e-12)
            deta_dp = 1.0 / max((expected(eta * 1.001) - expected(eta * 0.999)) / (0.002 * eta), 1e-300)
            p_ap_err = ctx.known[f"{d}.afterpulse_prob"].uncertainty if f"{d}.afterpulse_prob" in ctx.known else 0.0
            stat = deta_dp * sig_err * corr * (1 - p_ap)
            e_ap = eta * p_ap_err / max(1 - p_ap, 1e-9)
            sys_ = eta * rel_mu
            err = math.sqrt(stat**2 + sys_**2 + e_ap**2)
            if eta > 1.0 + 3 * err:
                raise CalibrationError(f"{d}: efficiency {eta:.3f} ± {err:.3f} is above 1; check the power-meter wavelength, "
                                       "the attenuation and the loop-loss fields of the station file")
            quantities.append(Quantity(
                f"{d}.efficiency", eta, err, "", "efficiency",
                true=sim_truth(ctx.station, (d, "power_meter", f"{src}.attenuator"), lambda c, d=d: c.detectors[d].efficiency),
                details={"statistical": stat, "systematic_mu": sys_, "afterpulse": e_ap, "mu_photons_per_pulse": mu,
                         "p_det_per_pulse": p_det, "dead_time_correction": corr, "source_client": src}))
            raw[d] = {"clicks_on": nm, "clicks_off": nb_, "duration_s": duration_s, "light_slot_fraction": w_light}
        raw["reference"] = {"source_client": src, "power_w_mean": p_mean, "power_w_sem": p_sem, "readings": readings,
                            "attenuation_measure_db": att_meas, "attenuation_reference_db": att_ref,
                            "photon_energy_j": h_nu, "mu_photons_per_pulse": mu, "mu_rel_uncertainty": rel_mu,
                            "power_meter_rel_uncertainty": cfg.power_meter.relative_uncertainty}
    plots: list[str] = []
    p = save_plot(ctx.plot_path("efficiency.png"), lambda ax: _plot_eff(ax, quantities), "detection efficiency")
    if p:
        plots.append(p)
    return ctx.remember(ProcedureResult("efficiency", quantities, raw, plots))


def _plot_eff(ax: Any, qs: list[Quantity]) -> None:
    xs = np.arange(len(qs))
    ax.errorbar(xs, [q.value for q in qs], yerr=[q.uncertainty for q in qs], fmt="o", label="measured ±1σ")
    tr = [q.true for q in qs]
    if all(t is not None for t in tr):
        ax.plot(xs, tr, "x", ms=10, label="simulator truth")
    ax.set_xticks(xs, [q.name for q in qs])
    ax.set_ylabel("η")
    ax.legend(fontsize=8)


def detector_procedures(ctx: CalContext, detectors: tuple[str, ...] = DETECTORS,
                        quick: bool = False) -> list[tuple[str, Callable[[], ProcedureResult]]]:
    """The detector procedures in dependency order, as (name, call) pairs: gate delay (gated
    detectors; first, because every later procedure that uses light needs the gates on the
    pulses) → dead time/afterpulsing (laser off) → dark counts (uses τ_d, P_ap) → jitter (uses τ_d
    to select recovered clicks and set the count rate) → efficiency (uses τ_d, P_ap, the gate)."""
    return [
        ("gate_delay", lambda: gate_delay(ctx, detectors)),
        ("dead_time_afterpulsing", lambda: dead_time_afterpulsing(ctx, detectors, n_intervals=60_000 if quick else 150_000)),
        ("dark_counts", lambda: dark_counts(ctx, detectors, integration_s=1.0 if quick else 2.0,
                                           sweep_integration_s=0.5 if quick else 1.0)),
        ("timing_jitter", lambda: timing_jitter(ctx, detectors, target_clicks=20_000 if quick else 50_000)),
        ("efficiency", lambda: efficiency(ctx, detectors, duration_s=0.1 if quick else 0.2)),
    ]


def detector_all(ctx: CalContext, detectors: tuple[str, ...] = DETECTORS, quick: bool = False) -> list[ProcedureResult]:
    """Every detector procedure in the order of :func:`detector_procedures`; the first failure raises
    (``labqfl.calibration.calibrate`` instead records it and runs the others)."""
    return [call() for _, call in detector_procedures(ctx, detectors, quick=quick)]


__all__ = ["blocked_pulses", "dark_counts", "dead_time_afterpulsing", "detector_all", "detector_procedures", "efficiency",
           "folded_click_phases", "gate_delay", "timing_jitter"]
