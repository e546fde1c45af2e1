"""Detection efficiency (docs/calibration.md).

Gated form (Bethune & Risk / ID Quantique application note; REFERENCES):
η = ln[(1 − P_dc)/(1 − P_det)]/μ with μ = P·10^(−ΔA/10)/(hν·f_rep) from the power meter, the
extra attenuation ΔA and the photon energy hν (:func:`labqfl.physics.photon_energy_j`), times the
transmission from the reference point.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from labqfl.calibration.acquire import (
    save_plot,
)
from labqfl.calibration.core import (
    CalContext,
    ProcedureResult,
    Quantity,
    SettingsGuard,
    gates_to_optimum,
    guarded,
    pulsed_dead_time_correction,
    restore_dc,
    sim_truth,
)
from labqfl.calibration.detector import (
    DETECTORS,
    afterpulse_probability,
    detector_channel,
    detector_counts,
    detector_dead_time_s,
    enable_detectors,
)
from scipy.optimize import brentq

from labqfl.config import StationConfig
from labqfl.contracts.channel_model import transmittances
from labqfl.contracts.schedule import PairSchedule
from labqfl.errors import CalibrationError
from labqfl.physics import photon_energy_j

#: A reading at a client's output above the laser's power x the modelled transmission to that output x
#: this factor is refused (the head is not where it should be): 3 dB for the laser's power read-back,
#: the head's calibration and the loss fields of the station file together.
PLAUSIBILITY_FACTOR = 2.0


# -- efficiency ------------------------------------------------------------------------------------
def laser_to_output_transmittance(cfg: StationConfig, client: str) -> float:
    """Upper bound of the modelled transmittance from the laser to ``client``'s output, before its
    attenuator: the larger of the clockwise path (segments before the client, insertion losses of the
    clients before it) and the counter-clockwise one (segments and clients after it), the loop's fibre
    loss from the station file (the same fields :func:`labqfl.contracts.channel_model.transmittances`
    uses). The modulator, the client's own insertion loss and the node only lower it."""
    names = cfg.client_names
    k = names.index(client) + 1  # 1-based position on the loop
    seg, a = cfg.loop.segments_km, cfg.loop.fiber_loss_db_per_km
    il = [c.insertion_loss_db for c in cfg.clients]
    cw_db = a * sum(seg[:k]) + sum(il[: k - 1])
    ccw_db = a * sum(seg[k:]) + sum(il[k:])
    return 10.0 ** (-min(cw_db, ccw_db) / 10.0)


def _check_plausible(ctx: CalContext, src: str, p_mean: float, att_ref: float) -> None:
    """Refuse a reading at ``src``'s output that the laser cannot deliver there (:data:`PLAUSIBILITY_FACTOR`):
    the head sits elsewhere (the laser tap, another client) or a loss field of the station is wrong."""
    p_laser = float(ctx.station.laser.power_mw) * 1e-3
    t = laser_to_output_transmittance(ctx.config, src)
    bound = p_laser * t * 10.0 ** (-att_ref / 10.0)
    if p_mean > PLAUSIBILITY_FACTOR * bound:
        raise CalibrationError(f"power at {src}'s output {p_mean:.3g} W exceeds {PLAUSIBILITY_FACTOR:g} x what the laser "
                               f"can deliver there ({p_laser:.3g} W x modelled transmission {t:.3g} x attenuation "
                               f"{att_ref:g} dB = {bound:.3g} W); is the power-meter head at {src}'s output?")


def _source_weights(cfg: StationConfig, source: str, n_slots: int) -> list[tuple[float, float, float]]:
    """(slot fraction, D0 factor, D1 factor) per scheduled pair containing ``source``: the factor is
    the station model's transmittance from the source's output to that detector (fibre, insertion
    and node losses × splitter port), see :mod:`labqfl.contracts.channel_model`."""
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
        rb, tau = float(bg.get(detector_channel(cfg, d), 0.0)), detector_dead_time_s(ctx, d)
        if rb * tau > 0.5:
            raise CalibrationError(f"{d}: detector saturated without light from the source ({rb:.3g} Hz with its "
                                   f"shutter closed, dead time {tau * 1e9:.4g} ns); stray light or dark counts?")
    for _ in range(2):
        rates = ctx.station.time_tagger.count_rates(0.02)
        excess = 1.0
        for d in detectors:
            rm, tau = float(rates.get(detector_channel(cfg, d), 0.0)), detector_dead_time_s(ctx, d)
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


def _isolate_source(ctx: CalContext, guard: SettingsGuard, detectors: tuple[str, ...], src: str) -> Any:
    """Laser on, detectors enabled and gated, only ``src``'s shutter open, its modulator at a constant
    level. Returns ``src``'s attenuator."""
    cfg = ctx.config
    st = ctx.station
    enable_detectors(ctx, guard, detectors)  # biased in the dark first, then the light (review s37 lab3 L8)
    guard.set(st.laser, "output_enabled", True)
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
    return st.attenuator(src)


def _safe_for_the_operator(ctx: CalContext, guard: SettingsGuard, att: Any) -> None:
    """Every detector un-biased (``enabled = False``, each driver's safe state) and ``att``'s shutter closed
    before the operator opens a fibre joint: room light into a connector on the loop side latches an SNSPD
    or blinds a biased APD (review s36 lab2 H2). The laser stays on so its power does not drift between the
    power reference and the clicks; the guard re-arms nothing by itself."""
    for d in DETECTORS:
        guard.set(ctx.station.detector(d), "enabled", False)
    guard.set(att, "shutter_closed", True)


def _power_reference(ctx: CalContext, guard: SettingsGuard, att: Any, src: str, att_meas: float, att_ref: float,
                     power_readings: int) -> tuple[np.ndarray, float, float, float]:
    """Power-meter readings at ``src``'s output with the attenuation lowered to ``att_ref``.

    A real head means unplugging ``src``'s output from the loop: the detectors are made safe and the
    shutter closed before the operator is asked (:meth:`PowerMeter.place_at`), the shutter is open only
    for the readings, and the head goes back to the laser's monitor tap (the operator reconnects the
    fibre to the loop, second confirmation) with the shutter closed again. A refusal at either prompt
    raises; :func:`guarded` then puts every instrument in its safe state. The caller re-arms the
    detectors only after this returns.

    Returns (readings [W], mean [W], standard error of the mean [W], wavelength [nm])."""
    st = ctx.station
    ctx.step(f"power meter at {src}'s output, attenuation {att_ref:g} dB")
    meter = st.power_meter
    wl = float(st.laser.wavelength_nm)
    guard.set(meter, "wavelength_nm", wl)
    guard.set(meter, "averaging", 100)
    _safe_for_the_operator(ctx, guard, att)
    meter.place_at(src, confirm=ctx.confirm_placement)  # a real head: only once the operator confirms it moved
    guard.set(att, "attenuation_db", att_ref)
    guard.set(att, "shutter_closed", False)
    readings = np.array([meter.power_w() for _ in range(max(2, power_readings))])
    guard.set(att, "shutter_closed", True)
    guard.set(att, "attenuation_db", att_meas)
    # the fibre back on the loop before any click is counted (the removed place_at("laser") of 9c14bf5)
    meter.place_at("laser", confirm=ctx.confirm_placement)
    p_mean = float(readings.mean())
    p_sem = float(readings.std(ddof=1) / math.sqrt(readings.size))
    if not p_mean > 5 * max(p_sem, 1e-30):
        raise CalibrationError(f"no light at the power meter ({p_mean:.3g} ± {p_sem:.2g} W at {src}'s output); "
                               "is the laser on and the fibre connected?")
    _check_plausible(ctx, src, p_mean, att_ref)
    return readings, p_mean, p_sem, wl


def _rearm(ctx: CalContext, guard: SettingsGuard, att: Any, detectors: tuple[str, ...]) -> None:
    """The detectors biased again in the dark (``att``'s shutter still closed), then the shutter opened."""
    enable_detectors(ctx, guard, detectors)
    guard.set(att, "shutter_closed", False)


def _count_on_off(ctx: CalContext, guard: SettingsGuard, att: Any, src: str, detectors: tuple[str, ...],
                  duration_s: float, target_clicks: int,
                  max_duration_s: float) -> tuple[float, dict[str, int], dict[str, int]]:
    """Clicks with the source open and closed, long enough for ~``target_clicks`` signal clicks.

    Returns (counting duration [s], clicks open, clicks closed)."""
    rate_on = ctx.station.time_tagger.count_rates(0.02)
    r_min = min(float(rate_on.get(detector_channel(ctx.config, d), 0.0)) for d in detectors)
    duration_s = float(min(max(duration_s, target_clicks / max(r_min, 1.0)), max_duration_s))
    ctx.step(f"counting clicks with {src} open ({duration_s:g} s)")
    n_on = detector_counts(ctx, duration_s)
    ctx.step(f"counting background with {src} closed ({duration_s:g} s)")
    guard.set(att, "shutter_closed", True)
    n_off = detector_counts(ctx, duration_s)
    guard.set(att, "shutter_closed", False)
    return duration_s, n_on, n_off


def _detector_efficiency(ctx: CalContext, d: str, src: str, nm: int, nb_: int, weights: list[tuple[float, float, float]], w_light: float,
                         n_slots: int, T_ps: float, mu: float, rel_mu: float) -> Quantity:
    """η of detector ``d`` from its clicks with the source open (``nm``) and closed (``nb_``)."""
    k = DETECTORS.index(d)
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
    tau_ps = detector_dead_time_s(ctx, d) * 1e12
    p_lit = max(nm - nb_ * (1.0 - w_light), 0.0) / light_pulses
    s_plus_b = pulsed_dead_time_correction(p_lit, tau_ps, T_ps)
    b_true = pulsed_dead_time_correction(nb_ / n_slots, tau_ps, T_ps)
    corr = s_plus_b / p_lit if p_lit > 0 else 1.0
    p_ap = afterpulse_probability(ctx, d)  # registered: P·w/T of a gated detector's station P (review s34 F5)
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
    return Quantity(
        f"{d}.efficiency", eta, err, "", "efficiency",
        true=sim_truth(ctx.station, (d, "power_meter", f"{src}.attenuator"), lambda c, d=d: c.detectors[d].efficiency),
        details={"statistical": stat, "systematic_mu": sys_, "afterpulse": e_ap, "mu_photons_per_pulse": mu,
                 "p_det_per_pulse": p_det, "dead_time_correction": corr, "source_client": src})


def efficiency(ctx: CalContext, detectors: tuple[str, ...] = DETECTORS, source_client: str | None = None,
               duration_s: float = 0.2, reference_attenuation_delta_db: float = 30.0, power_readings: int = 5,
               attenuation_uncertainty_db: float = 0.02, transmission_rel_uncertainty: float = 0.0,
               dead_time_fraction: float = 0.05, target_clicks: int = 20_000, max_duration_s: float = 5.0) -> ProcedureResult:
    """Detection efficiency with an attenuated laser and the power meter as reference.

    1. Only ``source_client`` sends light (other shutters closed), its modulator held at a constant
       level (every pulse at its signal intensity).
    2. The power meter at the client's output reads P with the attenuation lowered by ΔA
       (``reference_attenuation_delta_db``) so the reading is far above the meter's floor; then
       μ = P·10^(−ΔA/10)/(hν·f_rep) photons per pulse at the measurement setting. With a real head
       the detectors are un-biased and the shutter closed while the operator moves it, and the
       operator confirms the fibre is back on the loop before the detectors are re-armed
       (:func:`_power_reference`).
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
        att = _isolate_source(ctx, guard, detectors, src)
        att_meas = _dim_source(ctx, guard, att, detectors, dead_time_fraction)
        att_ref = max(att_meas - reference_attenuation_delta_db, 0.0)
        delta = att_meas - att_ref
        # power-meter reference
        readings, p_mean, p_sem, wl = _power_reference(ctx, guard, att, src, att_meas, att_ref, power_readings)
        _rearm(ctx, guard, att, detectors)  # only after the operator reconnected the fibre
        f_rep = float(st.laser.rep_rate_hz)
        h_nu = photon_energy_j(wl)
        mu = p_mean * 10 ** (-delta / 10.0) / (h_nu * f_rep)
        rel_mu = math.sqrt((p_sem / p_mean) ** 2 + cfg.power_meter.relative_uncertainty**2
                           + (math.log(10) / 10 * attenuation_uncertainty_db) ** 2 + transmission_rel_uncertainty**2)
        # clicks with the source open and closed: long enough for ~target_clicks signal clicks
        duration_s, n_on, n_off = _count_on_off(ctx, guard, att, src, detectors, duration_s, target_clicks,
                                                max_duration_s)
        n_slots = int(round(duration_s * f_rep))
        weights = _source_weights(cfg, src, n_slots)
        w_light = sum(w for w, _, _ in weights)
        T_ps = 1e12 / f_rep
        for d in detectors:
            nm, nb_ = n_on[d], n_off[d]
            quantities.append(_detector_efficiency(ctx, d, src, nm, nb_, weights, w_light, n_slots, T_ps, mu, rel_mu))
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
