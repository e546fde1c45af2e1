"""Detector dead time and afterpulsing (laser off; docs/calibration.md).

Dead time: the edge of the inter-arrival histogram of Poisson (dark) clicks, fitted with a
jitter-smeared step; afterpulse probability: the excess of the inter-arrival histogram over the
exponential fitted to its tail and extrapolated to the dead time (Ziarkash et al., "Comparative
study of afterpulsing behavior and models in single photon counting avalanche photo diode
detectors", Sci. Rep. 8, 5076 (2018); Humer et al., Opt. Express 23, 2013 (2015)).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from labqfl.calibration.acquire import (
    collect_tags,
    save_plot,
)
from labqfl.calibration.core import (
    CalContext,
    ProcedureResult,
    Quantity,
    SettingsGuard,
    guarded,
    sim_truth,
)
from labqfl.calibration.detector import (
    DETECTORS,
    darken,
    detector_channel,
    detector_counts,
    detector_dead_time_s,
    enable_detectors,
    guard_original,
    slot_period_ps,
)
from labqfl.calibration.fitting import (
    FitResult,
    edge_bootstrap,
    fit_edge_unbinned,
    fit_poisson,
    smoothed_edge,
)

from labqfl.errors import CalibrationError


# -- dead time and afterpulsing ---------------------------------------------------------------------
def _raise_dark_rate(ctx: CalContext, guard: SettingsGuard, d: str, target_hz: float) -> tuple[float, float]:
    """Raise the bias of ``d`` (laser off) until its dark-count rate is near ``target_hz``.

    Uses the measured d ln(rate)/d bias (secant steps from a nominal slope). Returns (bias, rate).
    """
    det = ctx.station.detector(d)
    slope = ctx.value(f"{d}.dark_log_slope", 1.0 if ctx.config.detectors[d].kind == "snspd" else 2.0)
    bias = float(det.bias)
    rate = max(detector_counts(ctx, 0.2)[d] / 0.2, 1.0)
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
        new_rate = max(detector_counts(ctx, integ)[d] / integ, 1.0 / integ)
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


def _gated_edge(ctx: CalContext, d: str, x: np.ndarray, period_ps: float, gate_width_ps: float,
                out: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None, float | None]:
    """Gated detector: τ_d from the first populated gate; returns (intervals in gates after that gate,
    in-gate offset differences [ps], in-gate offset cut [ps] or None). Fills ``out``."""
    # first populated gate: the smallest one seen. (A 0.01 % percentile used to skip the first
    # few intervals as "stray"; when τ_d ends near the end of a gate that gate holds only a few
    # intervals, so n_min came out one period late and τ_d fell outside its interval: gated
    # τ_d pulls up to 3.8 with |pull| ≤ √3 promised.) Dead time admits no shorter interval.
    # With µs dead times the intervals spread over ~1/λ ≈ 10⁴ gates: a few per gate, and an
    # open gate is empty with probability e^(−ρ) (ρ: mean intervals per gate just after the
    # edge; measured: 1 detector in 24 had its first open gate empty and τ_d one period high,
    # pull 3.1). The interval below n_min is widened by the m gates that could all be empty
    # with probability ≥ 0.1 %: e^(−m·ρ) ≥ 10⁻³.
    d_cut: float | None = None
    k = np.rint(x / period_ps).astype(np.int64)
    n_min = int(k.min())
    rho = float(np.count_nonzero(k < n_min + 50)) / 50.0
    m_empty = max(0, math.ceil(math.log(1000.0) / max(rho, 1e-3)) - 1)
    out["empty_gates_allowed"] = m_empty
    lo, hi = (n_min - 1 - m_empty) * period_ps, n_min * period_ps + gate_width_ps
    out.update(tau_ps=0.5 * (lo + hi), tau_err_ps=(hi - lo) / math.sqrt(12.0), edge_fit=None)
    unit_x = k.astype(np.float64) - n_min  # gates after the first open one
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
    return unit_x, d_in, d_cut


def _free_running_edge(ctx: CalContext, d: str, x: np.ndarray, out: dict[str, Any]) -> np.ndarray:
    """Free-running detector: τ_d from a jitter-smeared step fitted to the sorted intervals ``x`` [ps];
    returns the intervals minus τ_d [ps]. Fills ``out``."""
    n_tot = x.size
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
    return x - tau_fit


def _afterpulse_tail(ctx: CalContext, d: str, unit_x: np.ndarray, d_in: np.ndarray | None, d_cut: float | None,
                     gated: bool, period_ps: float, tail_start_ps: float | None, out: dict[str, Any]) -> None:
    """Afterpulse probability: exponential tail fit of the intervals ``unit_x`` past τ_d, extrapolated
    to the edge, with a bootstrap error. Fills ``out``."""
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


def _interarrival_analysis(ctx: CalContext, d: str, intervals_ps: np.ndarray, gated: bool, period_ps: float,
                           gate_width_ps: float, tail_start_ps: float | None,
                           edge_intervals_ps: np.ndarray | None = None) -> dict[str, Any]:
    """Dead-time edge and afterpulse excess from inter-arrival times [ps] of one detector
    (``edge_intervals_ps``: a free-running detector's intervals at a higher dark rate, for the edge
    alone: :func:`_dense_edge_intervals`)."""
    x = np.sort(intervals_ps.astype(np.float64))
    n_tot = x.size
    if n_tot < 2000:
        raise CalibrationError(f"{d}: only {n_tot} inter-arrival times; need ≥ 2000 (too few clicks)")
    out: dict[str, Any] = {"n_intervals": int(n_tot)}
    d_in: np.ndarray | None = None
    d_cut: float | None = None
    if gated:
        unit_x, d_in, d_cut = _gated_edge(ctx, d, x, period_ps, gate_width_ps, out)
    elif edge_intervals_ps is not None:
        xe = np.sort(edge_intervals_ps.astype(np.float64))
        edge: dict[str, Any] = {}
        _free_running_edge(ctx, d, xe, edge)
        out.update(edge, edge_intervals=int(xe.size))
        unit_x = x - edge["tau_ps"]
    else:
        unit_x = _free_running_edge(ctx, d, x, out)
    # afterpulsing: exponential tail fit, extrapolated from the edge
    _afterpulse_tail(ctx, d, unit_x, d_in, d_cut, gated, period_ps, tail_start_ps, out)
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


def _dense_edge_intervals(ctx: CalContext, guard: SettingsGuard, d: str, tau_s: float, rate_hz: float,
                          n_intervals: int, max_duration_s: float) -> np.ndarray | None:
    """Inter-arrival times [ps] of a free-running detector recorded at a higher dark rate, for the
    dead-time edge alone; None when the intervals at ``rate_hz`` already make a dense edge or the rate
    cannot usefully be raised.

    Why (review s34 F2): at the rate the afterpulse tail needs (R·τ_ap ≤ 0.01, ≈ 0.1 MHz for
    τ_ap = 100 ns) N = 60,000 intervals put ≈ N·R ≈ 6 intervals per ns at the edge, a spacing
    (≈ 170 ps) above the smearing √2·jitter (≈ 75 ps): the edge estimate then behaves like a minimum
    of exponential spacings, with a one-sided upper tail (4 of 82 quick-mode estimates beyond +3.8σ,
    all high) that no symmetric ±σ describes. The edge itself only needs R·τ_d ≤ 0.1 (detector live
    ≥ 90 %; the edge position does not depend on the rate): at R = 0.1/τ_d the density N·R is
    ~30× higher for SNSPDs, and a few tens of ms make the edge regular. Regular needs more than a
    spacing below s: the ≈ ρ·s intervals inside the smeared step (ρ = N·R per ps) fix τ_d, and only with ρ·s ≳ 50 is the likelihood near-quadratic (synthetic
    edges, 200–1000 replicates at R = 3.3 MHz, s = 71 ps: ρ·s = 4 gives pull rms 1.29 and up to 6σ;
    ρ·s = 50 gives rms 0.99). So N = 50/(R·s) intervals are recorded (≈ 2·10⁵, 65 ms for τ_d = 30 ns).
    InGaAs detectors (rate already ~0.1/τ_d) are left to the bootstrap of :func:`_free_running_edge`."""
    s_ps = math.sqrt(2.0) * ctx.value(f"{d}.jitter_ps", ctx.config.detectors[d].jitter_ps)
    lam = rate_hz * 1e-12  # per ps
    if n_intervals * lam * s_ps >= 50.0:
        return None  # already dense
    target = 0.1 / max(tau_s, 1e-12)  # R·τ_d = 0.1, the dead_fraction of dark_target_rate_hz
    if target < 2.0 * rate_hz:
        return None
    ctx.step(f"{d}: raising the bias for a {target:.3g} Hz dark-count rate (dead-time edge)")
    try:
        _bias, rate = _raise_dark_rate(ctx, guard, d, target)
    except CalibrationError as e:
        ctx.step(f"{d}: no dense edge ({e}); the edge is taken from the afterpulse acquisition")
        return None
    if rate < 2.0 * rate_hz:
        return None
    n_edge = int(min(max(50.0 / (rate * 1e-12 * max(s_ps, 1.0)), 5000.0), 400_000.0))
    duration = min(max(n_edge / rate, 0.002), max_duration_s)
    ctx.step(f"{d}: recording {duration:.3g} s of dark counts at {rate:.3g} Hz (dead-time edge)")
    ch = detector_channel(ctx.config, d)
    return np.diff(collect_tags(ctx, duration, [ch])[ch])


def _scout_dead_time_s(ctx: CalContext, d: str, rate_hz: float, max_duration_s: float) -> float | None:
    """Rough dead time [s] from a short dark acquisition: the 3rd-shortest inter-arrival time
    (robust to one stray short interval). None when fewer than 50 intervals were seen."""
    duration = min(max(400.0 / max(rate_hz, 1.0), 0.01), max_duration_s)
    ch = detector_channel(ctx.config, d)
    tags = collect_tags(ctx, duration, [ch])[ch]
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
    uncertainty of P_ap is a bootstrap over the intervals. A free-running detector's edge comes from
    a second, short acquisition at R·τ_d = 0.1 dense enough for a regular fit
    (:func:`_dense_edge_intervals`); where the rate cannot be raised (InGaAs) a sparse edge is
    bias-corrected by a parametric bootstrap (:func:`~labqfl.calibration.fitting.edge_bootstrap`);
    a gate left partly open by τ_d is handled by an in-gate offset cut (see
    :func:`_interarrival_analysis`). Coverage over seeds: docs/calibration.md.
    """
    quantities: list[Quantity] = []
    raw: dict[str, Any] = {}
    plots: list[str] = []
    cfg = ctx.config
    with guarded(ctx, "dead_time_afterpulsing") as guard:
        darken(ctx, guard)
        enable_detectors(ctx, guard, detectors)
        for d in detectors:
            det = ctx.station.detector(d)
            gated = bool(det.gated)
            tau_ap_s = cfg.detectors[d].afterpulse_decay_ns * 1e-9
            target = target_rate_hz or dark_target_rate_hz(detector_dead_time_s(ctx, d), tau_ap_s)
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
            ch = detector_channel(cfg, d)
            tags = collect_tags(ctx, duration, [ch])[ch]
            tau_seen_s = float(np.partition(np.diff(tags), 2)[2]) * 1e-12 if tags.size > 3 else detector_dead_time_s(ctx, d)
            edge_x = None if gated else _dense_edge_intervals(ctx, guard, d, tau_seen_s, rate, n_intervals,
                                                                max_duration_s)
            res = _interarrival_analysis(ctx, d, np.diff(tags), gated, slot_period_ps(ctx),
                                         float(det.gate_width_ns) * 1e3, tail_start_ps, edge_x)
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
                      "n_intervals": res["n_intervals"], "edge_intervals": res.get("edge_intervals"),
                      "edge_bootstrap": res.get("edge_bootstrap"),
                      "edge_fit": res["edge_fit"], "tail_fit": res["tail_fit"], "tail_start": res["tail_start"],
                      "x_unit": res["x_unit"]}
            p = save_plot(ctx.plot_path(f"dead_time_{d}.png"), lambda ax, res=res: _plot_interarrival(ax, res),
                          f"{d}: inter-arrival histogram (τ_d = {tau_ns:.3f} ± {tau_err:.3f} ns, "
                          f"P_ap = {res['p_ap']:.4f} ± {res['p_ap_err']:.4f})")
            if p:
                plots.append(p)
    return ctx.remember(ProcedureResult("dead_time_afterpulsing", quantities, raw, plots))


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
