"""Loop interference visibility V of a pair of clients.

Model (:mod:`labqfl.contracts.channel_model`; Lucamarini et al., Nature 557, 400 (2018), Methods): in a
frame of pair (Ci, Cj) the mean photon number reaching D0 is

    m0(δ) = c_A + c_B + 2V·√(c_A·c_B)·cos δ,      c_A = η_D0·t·A,  c_B = η_D0·(1 − t)·B,

(D1 likewise with 1 − t ↔ t and −cos δ), i.e. m0 = (c_A + c_B)·(1 + V·2√(c_A·c_B)/(c_A + c_B)·cos δ).
Measuring c_A (only Ci open) and c_B (only Cj open) in the pair's frames and the fringe's mean M and
amplitude a of m0 vs the voltage on Ci's modulator (both modulators at DC, other clients dark) gives

    V = (|a|/M)·(c_A + c_B)/(2√(c_A·c_B)),

independently of the detector efficiency, the splitter ratio, the intensity balance and of a level
common to both clients that differs between the separate acquisitions (only c_A/c_B enters; see
:func:`_detector_visibilities`). Mean photon numbers per pulse come from click probabilities per
slot of the pair's frames, m = −ln[(1 − p)/(1 − p_dc)] with p dead-time- and afterpulse-corrected
(the number of pulses blinded after a click checked on the clicks' own spacings:
:func:`~labqfl.calibration.core.blocked_pulses_from_clicks`). Clicks are assigned to slots (hence
frames) with the station's delays, as the pipeline does (acquisition starts at slot 0). An estimate
above 1 within its uncertainty is reported unclipped and flagged (:func:`_above_one`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from labqfl.calibration.acquire import collect_tags, save_plot
from labqfl.calibration.core import (
    BlockedPulses,
    CalContext,
    ProcedureResult,
    Quantity,
    SettingsGuard,
    blocked_pulses_from_clicks,
    gates_to_optimum,
    guarded,
    pulsed_dead_time_correction,
    restore_dc,
    sim_truth,
)
from labqfl.calibration.detector import afterpulse_probability, detector_dead_time_s, dim_for_rate
from labqfl.calibration.pg_fringe import (
    constant_code_tags,
    loop_truth,
    pg_drive_scan,
    pg_driven,
    played_pair_slots,
    prepare_modulators,
    scan_codes,
    signal_code,
    vacuum_code,
)
from labqfl.calibration.phase_modulator import _joint, fit_fringe

from labqfl.contracts.schedule import PairSchedule
from labqfl.contracts.types import pair_name
from labqfl.errors import CalibrationError
from labqfl.physics import loop_delay_ps

DETECTORS = ("D0", "D1")


def _frame_photons(ctx: CalContext, duration_s: float, pair: tuple[str, str]) -> dict[str, tuple[float, float, int, float]]:
    """Mean photon number per pulse (m, σ_m, clicks, pulses blinded after a click) at each detector in the
    frames of ``pair``."""
    tt = ctx.config.time_tagger
    n_slots = int(round(duration_s * float(ctx.station.laser.rep_rate_hz)))
    return _photons_from_tags(ctx, collect_tags(ctx.station.time_tagger, duration_s,
                                                [tt.detector_channels[d] for d in DETECTORS]), n_slots, pair)


def _pg_frame_photons(ctx: CalContext, duration_s: float, codes: dict[str, int],
                      pair: tuple[str, str]) -> dict[str, tuple[float, float, int, float]]:
    """:func:`_frame_photons` of an acquisition in which the clients' pattern generators play ``codes``
    (:func:`~labqfl.calibration.pg_fringe.constant_code_tags`)."""
    seg = constant_code_tags(ctx, duration_s, codes)
    return _photons_from_tags(ctx, seg.tags, seg.n_slots, pair, seg.played)


def _photons_from_tags(ctx: CalContext, tags: dict[int, np.ndarray], n_slots: int, pair: tuple[str, str],
                       played: dict[str, set[int]] | None = None) -> dict[str, tuple[float, float, int, float]]:
    """Mean photon number per pulse (m, σ_m, clicks, pulses blinded after a click) at each detector in the
    frames of ``pair`` from the detectors' tags of an acquisition of ``n_slots`` slots (``played``: the frames each client's pattern
    generator played; only frames both played count, :func:`~labqfl.calibration.pg_fringe.played_pair_slots`)."""
    cfg = ctx.config
    tt = cfg.time_tagger
    st = ctx.station
    T = 1e12 / float(st.laser.rep_rate_hz)
    sched = PairSchedule.from_config(cfg)
    name = pair_name(*pair)
    if name not in sched.names:
        raise CalibrationError(f"pair {name} is not scheduled; scheduled pairs: {sched.names}")
    p_idx = sched.names.index(name)
    ind = st.time_tagger.input_delays_ps
    loop = loop_delay_ps(cfg.loop)
    out = {}
    for d in DETECTORS:
        ch = tt.detector_channels[d]
        cable = ctx.value(f"{d}.cable_delay_ps", tt.cable_delays_ps.get(d, 0.0))
        delay = loop + cable + float(ind.get(ch, 0))
        # the light of the last loop + cable delay arrives after the tagger's window closes: only slots
        # whose light it records count (review s31: counting every slot of the pair biased V low by up to
        # 3σ when an acquisition ended inside the pair's frame, ≈ 1 % of the clicks at 30 ms)
        n_seen = max(n_slots - math.ceil(delay / T), 0)
        if played is not None:  # only the pair's frames that both clients' generators played
            n_pair, keep = played_pair_slots(ctx, pair, n_seen, played)
        else:
            n_pair, keep = sched.slots_of_pair(name, n_seen), None
        if n_pair == 0:
            raise CalibrationError(f"no frame of pair {name} in the {n_seen} of {n_slots} slots whose light reaches "
                                   f"{d} within the acquisition (played by both clients); increase the integration time")
        slots = np.floor((tags[ch] - delay) / T + 0.5).astype(np.int64)
        if keep is not None:
            k = int(np.count_nonzero(keep(slots)))
        else:
            ok = (slots >= 0) & (slots < n_seen)
            k = int(np.count_nonzero(sched.pair_index(slots[ok]) == p_idx))
        p_m = k / n_pair
        nb = _blocked(ctx, d, tags[ch], T)
        # registered afterpulses per click (a gated detector registers P·gate/T of the station file's P;
        # the session's measured value unclipped): the one rule of the other procedures (review s34 F5)
        p_ap = min(afterpulse_probability(ctx, d), 0.9)
        tau_ps = ctx.value(f"{d}.dead_time_ns", cfg.detectors[d].dead_time_ns) * 1e3
        p = pulsed_dead_time_correction(p_m, tau_ps, T, nb.n) * (1.0 - p_ap)
        dcr = ctx.value(f"{d}.dark_count_rate_hz", cfg.detectors[d].dark_count_rate_hz)
        det = st.detector(d)
        window_ps = min(float(det.gate_width_ns) * 1e3, T) if det.gated else T  # dark counts only inside a gate
        p_dc = -math.expm1(-dcr * window_ps * 1e-12)
        if p >= 0.5:
            raise CalibrationError(f"{d}: detector saturated ({p:.2f} clicks per pulse); increase the attenuation")
        m = max(-math.log((1.0 - p) / (1.0 - p_dc)), 0.0)
        sm = math.sqrt(max(k, 1)) / n_pair / (1.0 - p) * (p / p_m if p_m > 0 else 1.0)
        if nb.ambiguous and 1.0 - nb.hi * p_m > 0.5:  # too few clicks to tell n_b: the candidates' spread is an error
            p_lo, p_hi = (pulsed_dead_time_correction(p_m, tau_ps, T, n) * (1.0 - p_ap) for n in (nb.lo, nb.hi))
            sm = math.hypot(sm, 0.5 * (p_hi - p_lo) / (1.0 - p))
        out[d] = (m, sm, k, nb.n)
    return out


def _blocked(ctx: CalContext, d: str, times_ps: np.ndarray, period_ps: float) -> BlockedPulses:
    """Pulses a click of ``d`` blinds it to, from the calibrated dead time and, when that lies near a multiple
    of the pulse period, from the clicks' own spacings (:func:`~labqfl.calibration.core.blocked_pulses_from_clicks`)."""
    cfg = ctx.config
    q_tau = ctx.known.get(f"{d}.dead_time_ns")
    tau_ps = ctx.value(f"{d}.dead_time_ns", cfg.detectors[d].dead_time_ns) * 1e3
    tau_err_ps = float(q_tau.uncertainty) * 1e3 if q_tau is not None else 0.0
    pair_jitter_ps = math.sqrt(2.0) * ctx.value(f"{d}.jitter_ps", cfg.detectors[d].jitter_ps)
    return blocked_pulses_from_clicks(times_ps, tau_ps, tau_err_ps, period_ps, pair_jitter_ps)


def _prepare_pair(ctx: CalContext, guard: SettingsGuard, i: str, j: str, pg: bool) -> tuple[dict[str, Any], Any, Any]:
    """Laser and detectors on, only ``i`` and ``j`` open, their modulators at 0 V, both dimmed so the
    detectors stay far from saturation. Returns (attenuators by client, modulator of i, modulator of j).
    ``pg``: the clients' light and phases come from their pattern generators (no shutters: a client is dark
    when its generator plays its vacuum level; :mod:`labqfl.calibration.pg_fringe`)."""
    cfg = ctx.config
    st = ctx.station
    for d in DETECTORS:  # biased in the dark first, then the light: the arming order (review s37 lab3 L8)
        guard.set(st.detector(d), "enabled", True)
    guard.set(st.laser, "output_enabled", True)
    gates_to_optimum(ctx, guard)
    atts = {}
    for c in ([] if pg else cfg.client_names):
        att = st.attenuator(c)
        if not hasattr(att, "shutter_closed"):
            raise CalibrationError(f"{c}.attenuator has no shutter; the visibility procedure needs variable attenuators")
        atts[c] = att
        guard.set(att, "shutter_closed", c not in (i, j))
    pm_i, pm_j = st.phase_modulator(i), st.phase_modulator(j)
    if pg:
        prepare_modulators(ctx, guard, (i, j))
    for p in ([] if pg else [pm_i, pm_j]):
        guard.set(p, "output_enabled", True)
        restore_dc(guard, p)
        p.set_dc_voltage(0.0)
    # keep R·τ_d ≤ 0.05 in the lit frames on both detectors (measured: at 0.2 a free-running
    # InGaAs SPAD with τ_d = 23 µs still reached the 50 % refusal at the fringe maximum): InGaAs
    # SPADs with µs dead times saturate at the operating attenuation; both clients are dimmed
    # by the same ΔA, which leaves V (a ratio, independent of the intensity balance) unchanged.
    # Light arrives only in the frames of pairs that contain i or j (share f_lit), where the
    # rate is 1/f_lit times the mean the counters see.
    sched = PairSchedule.from_config(cfg)
    n_ref = 1 << 20
    f_lit = sum(sched.slots_of_pair(nm_, n_ref) for pr, nm_ in zip(sched.pairs, sched.names, strict=True)
                if i in pr or j in pr) / n_ref
    dim_for_rate(ctx, guard, DETECTORS, {d: 0.05 * max(f_lit, 1e-3) / max(detector_dead_time_s(ctx, d), 1e-12)
                                         for d in DETECTORS})
    return atts, pm_i, pm_j


def _single_client_photons(ctx: CalContext, guard: SettingsGuard, atts: dict[str, Any], i: str, j: str,
                           single_duration_s: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mean photon numbers with ``i`` alone, then ``j`` alone (the fringe's normalisation)."""
    ctx.step(f"visibility: {i} alone ({single_duration_s:g} s)")
    guard.set(atts[j], "shutter_closed", True)
    only_a = _frame_photons(ctx, single_duration_s, (i, j))
    ctx.step(f"visibility: {j} alone ({single_duration_s:g} s)")
    guard.set(atts[j], "shutter_closed", False)
    guard.set(atts[i], "shutter_closed", True)
    only_b = _frame_photons(ctx, single_duration_s, (i, j))
    guard.set(atts[i], "shutter_closed", False)
    return only_a, only_b


def _pg_single_client_photons(ctx: CalContext, i: str, j: str,
                              single_duration_s: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`_single_client_photons` on a pattern-generator station: ``i`` at its signal level while ``j``'s
    generator plays its vacuum level, then the other way round."""
    for c in (i, j):
        if min(ctx.config.client(c).intensities) > 0:
            raise CalibrationError(f"{c}: no vacuum level among its intensities {ctx.config.client(c).intensities}; "
                                   "the single-client normalisation needs one client dark")
    ctx.step(f"visibility: {i} alone ({single_duration_s:g} s, {j}'s pattern generator at its vacuum level)")
    only_a = _pg_frame_photons(ctx, single_duration_s, {i: signal_code(ctx, i, 0), j: vacuum_code(ctx, j)}, (i, j))
    ctx.step(f"visibility: {j} alone ({single_duration_s:g} s)")
    only_b = _pg_frame_photons(ctx, single_duration_s, {i: vacuum_code(ctx, i), j: signal_code(ctx, j, 0)}, (i, j))
    return only_a, only_b


def _pg_fringe_scan(ctx: CalContext, guard: SettingsGuard, i: str, j: str, n_points: int, point_duration_s: float,
                    periods: float) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_fringe_scan` through the pattern generators: ``i`` plays code 3 and ``j`` code 0 at their
    signal levels while ``i``'s amplifier gain steps the drive (:func:`~labqfl.calibration.pg_fringe.pg_drive_scan`)."""
    codes = scan_codes(ctx, i, j)
    vpi_nom, volts, got = pg_drive_scan(ctx, guard, i, n_points, periods,
                                        lambda: _pg_frame_photons(ctx, point_duration_s, codes, (i, j)))
    m = np.array([[r[d][0] for r in got] for d in DETECTORS])
    sm = np.array([[r[d][1] for r in got] for d in DETECTORS])
    return vpi_nom, volts, m, sm


def _fringe_scan(ctx: CalContext, pm_i: Any, i: str, j: str, n_points: int, point_duration_s: float,
                 periods: float) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Scan ``i``'s modulator voltage over ±``periods``·V_π. Returns (nominal V_π, voltages,
    mean photon numbers per detector and point, their errors)."""
    vpi_nom = ctx.value(f"{i}.v_pi_v", float(pm_i.v_pi_v))
    vmax = min(periods * vpi_nom, float(pm_i.amplitude_vpp) / 2.0)
    volts = np.linspace(-vmax, vmax, n_points)
    m = np.zeros((2, n_points))
    sm = np.zeros((2, n_points))
    ctx.step(f"visibility: fringe of {i}–{j} ({n_points} points)")
    for k, v in enumerate(volts):
        pm_i.set_dc_voltage(float(v))
        r = _frame_photons(ctx, point_duration_s, (i, j))
        for q, d in enumerate(DETECTORS):
            m[q, k], sm[q, k] = r[d][0], r[d][1]
    return vpi_nom, volts, m, sm


def _detector_visibilities(fit: Any, scales: tuple[float, float], only_a: dict[str, Any], only_b: dict[str, Any],
                           i: str, j: str, raw: dict[str, Any]) -> list[tuple[float, float]]:
    """V ± σ on each detector from the fringe's own contrast and the single-client balance. Fills ``raw``.

    The fringe is m(δ) = M·(1 + C·cos δ) with M = c_A + c_B and C = V·2√(c_A·c_B)/(c_A + c_B)
    (module docstring), so

        V = (|a|/M)·(c_A + c_B)/(2√(c_A·c_B)),

    a and M the fitted amplitude and mean of the fringe, c_A and c_B the single-client levels.
    The separate single-client acquisitions enter only through their ratio r = c_A/c_B, as
    g(r) = (1 + r)/(2√r), which is stationary at r = 1 (g − 1 ≈ (r − 1)²/8): a level common to both
    that differs between them and the fringe (laser power drift, a dead-time correction that is off)
    cancels. The former estimator |a|/(2√(c_A·c_B)) took the fringe's absolute level from the other
    acquisitions; its bias is that level mismatch M/(c_A + c_B) − 1 (review s34 F1: +0.5 % on average,
    V up to 1.0096 reported). The mismatch is kept in ``raw`` as a check; as the part of it that may
    belong to one client alone it is propagated into r (harmless near balance, where g′(r) ≈ 0)."""
    per_det = []
    for q, d in enumerate(DETECTORS):
        sc = scales[q]
        ka, km = ("a0", "a1")[q], ("m0", "m1")[q]
        a, ea = abs(fit[ka]) / sc, fit.err(ka) / sc
        mean, em = fit[km] / sc, fit.err(km) / sc
        cov_am = float(fit.cov[fit.names.index(ka), fit.names.index(km)]) / sc**2 * math.copysign(1.0, fit[ka])
        ca, ea_ = only_a[d][0], only_a[d][1]
        cb, eb_ = only_b[d][0], only_b[d][1]
        if ca <= 0 or cb <= 0 or only_a[d][2] < 20 or only_b[d][2] < 20:
            raise CalibrationError(f"{d}: no light from {i if only_a[d][2] < 20 else j} alone; cannot normalise the fringe")
        if mean <= 0:
            raise CalibrationError(f"{d}: fitted fringe mean {mean:.3g} photons per pulse is not positive")
        r = ca / cb
        g = (ca + cb) / (2.0 * math.sqrt(ca * cb))
        contrast = a / mean
        v = contrast * g
        mismatch = mean / (ca + cb) - 1.0
        e_mismatch = (1.0 + mismatch) * math.hypot(em / mean, math.hypot(ea_, eb_) / (ca + cb))
        # r's error: the two acquisitions' statistics and the level mismatch as if one client alone drifted
        sr = r * math.hypot(math.hypot(ea_ / ca, eb_ / cb), abs(mismatch) * (ca + cb) / min(ca, cb))
        dg = (r - 1.0) / (4.0 * r**1.5)
        rel2 = max((ea / a) ** 2 + (em / mean) ** 2 - 2.0 * cov_am / (a * mean), 0.0)
        ev = math.sqrt(v**2 * rel2 + (contrast * dg * sr) ** 2)
        per_det.append((v, ev))
        raw[d] = {"c_A": ca, "c_A_err": ea_, "c_B": cb, "c_B_err": eb_, "fringe_amplitude": a,
                  "fringe_amplitude_err": ea, "fringe_mean": mean, "fringe_mean_err": em, "balance_factor": g,
                  "level_mismatch": mismatch, "level_mismatch_err": e_mismatch,
                  "visibility_from_single_levels": a / (2.0 * math.sqrt(ca * cb)),
                  "blocked_pulses": {"alone_A": only_a[d][3], "alone_B": only_b[d][3]}, "visibility": v, "err": ev}
    return per_det


def _combined_visibility(per_det: list[tuple[float, float]]) -> tuple[float, float]:
    """Weighted mean of the detectors' visibilities, its error inflated when they disagree."""
    w = np.array([1.0 / e**2 for _, e in per_det])
    vals = np.array([v for v, _ in per_det])
    vis = float(np.sum(w * vals) / np.sum(w))
    err = float(1.0 / math.sqrt(np.sum(w)))
    chi2 = float(np.sum(w * (vals - vis) ** 2))
    if chi2 > 1.0:  # D0 and D1 disagree beyond their errors: inflate (PDG scale factor, 1 dof)
        err *= math.sqrt(chi2)
    if vis > 1.0 + 3 * err:
        raise CalibrationError(f"visibility {vis:.3f} ± {err:.3f} above 1; the single-client normalisation is off "
                               "(check the delays/schedule, or light leaking past a closed shutter)")
    return vis, err


def _above_one(ctx: CalContext, vis: float, err: float) -> dict[str, Any]:
    """What a visibility estimate above 1 (but within 3σ of it; beyond, :func:`_combined_visibility` refuses)
    is reported with. The estimate itself is kept: it is unbiased, and a value clipped onto the bound
    would bias every average and coverage study low; V > 1 is unphysical, so the physical statement is
    the one-sided interval V ∈ [V̂ − 1.645σ, 1] (95 %), and the calibrated station file takes 1
    (:mod:`labqfl.calibration.files` clips onto the allowed range 0 < V ≤ 1)."""
    lower = min(vis - 1.645 * err, 1.0)
    ctx.step(f"visibility: estimate {vis:.4f} ± {err:.4f} is above the physical limit 1 (within "
             f"{(vis - 1.0) / err:.1f}σ); the station file gets 1, the 95 % one-sided interval is [{lower:.4f}, 1]")
    return {"above_physical_limit": True, "station_file_value": 1.0, "one_sided_95": [lower, 1.0],
            "note": "estimate above 1 within its uncertainty: kept unclipped (unbiased); V <= 1 physically, "
                    "so the one-sided 95 % interval is [value - 1.645 sigma, 1] and the station file gets 1"}


def loop_visibility(ctx: CalContext, pair: tuple[str, str] | None = None, n_points: int = 24,
                    point_duration_s: float = 0.05, single_duration_s: float = 0.3, periods: float = 2.0) -> ProcedureResult:
    """Interference visibility of ``pair`` (default: the first scheduled pair); see module docstring."""
    cfg = ctx.config
    i, j = pair or cfg.pairs()[0]
    names = cfg.client_names
    if i not in names or j not in names or i == j:
        raise CalibrationError(f"pair ({i}, {j}) must name two different clients from {names}")
    if names.index(i) > names.index(j):
        i, j = j, i
    quantities: list[Quantity] = []
    raw: dict[str, Any] = {}
    plots: list[str] = []
    with guarded(ctx, "visibility") as guard:
        st = ctx.station
        pg = pg_driven(ctx, i) and cfg.client(j).pattern_generator is not None  # phases from the generators
        atts, pm_i, _pm_j = _prepare_pair(ctx, guard, i, j, pg)
        if pg:
            only_a, only_b = _pg_single_client_photons(ctx, i, j, single_duration_s)
            vpi_nom, volts, m, sm = _pg_fringe_scan(ctx, guard, i, j, n_points, point_duration_s, periods)
        else:
            only_a, only_b = _single_client_photons(ctx, guard, atts, i, j, single_duration_s)
            vpi_nom, volts, m, sm = _fringe_scan(ctx, pm_i, i, j, n_points, point_duration_s, periods)
        # fringe fit on mean photon numbers: scale to pseudo-counts so the Poisson-weighted fitter applies
        scale = 1.0 / np.maximum(sm**2 / np.maximum(m, 1e-300), 1e-300)
        s0, s1 = float(np.median(scale[0])), float(np.median(scale[1]))
        fit = fit_fringe(volts, m[0] * s0, m[1] * s1, vpi_nom, f"{i}–{j} visibility fringe")
        per_det = _detector_visibilities(fit, (s0, s1), only_a, only_b, i, j, raw)
        vis, err = _combined_visibility(per_det)
        details = {"pair": f"{i}-{j}", "D0": per_det[0], "D1": per_det[1], "qber_floor_estimate": max((1 - vis) / 2, 0.0)}
        if vis > 1.0:
            details.update(_above_one(ctx, vis, err))
        quantities.append(Quantity("loop.visibility", vis, err, "", "visibility",
                                   true=cfg.loop.visibility if pg and loop_truth(ctx, (i, j)) else
                                   sim_truth(st, ("D0", "D1", "laser", f"{i}.phase_modulator", f"{j}.phase_modulator"),
                                             lambda c: c.loop.visibility),
                                   details=details))
        raw["scan"] = {"voltages_v": volts, "m_D0": m[0], "m_D1": m[1], "fit": fit.summary(),
                       "point_duration_s": point_duration_s}
        p = save_plot(ctx.plot_path("visibility.png"),
                      lambda ax: _plot(ax, volts, m, sm, fit, (s0, s1), only_a, only_b),
                      f"{i}–{j}: V = {vis:.4f} ± {err:.4f}")
        if p:
            plots.append(p)
    return ctx.remember(ProcedureResult("visibility", quantities, raw, plots))


def _plot(ax: Any, volts: np.ndarray, m: np.ndarray, sm: np.ndarray, fit: Any, scales: tuple[float, float],
          only_a: dict[str, Any], only_b: dict[str, Any]) -> None:
    vv = np.linspace(volts.min(), volts.max(), 400)
    for q, d in enumerate(DETECTORS):
        ax.errorbar(volts, m[q], yerr=sm[q], fmt="os"[q], ms=3, label=f"{d}")
        off = 0.0 if q == 0 else 1e6
        ax.plot(vv, _joint(vv + off, *fit.params) / scales[q], "-", color=f"C{q}")
        ax.axhline(only_a[d][0] + only_b[d][0], ls=":", color=f"C{q}")
    ax.set_xlabel("DC voltage on the first client's modulator [V]")
    ax.set_ylabel("mean photons per pulse")
    ax.legend(fontsize=8)


__all__ = ["loop_visibility"]
