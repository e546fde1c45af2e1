"""Phase-modulator calibration: half-wave voltage Vπ and bias phase φ0 from an interference fringe.

Only the client under test and a reference client send light (other shutters closed); the
reference modulator holds 0 V, the client's modulator steps a DC voltage V over about two fringe
periods. The click counts follow (REFERENCES "Phase modulator")

    C(V) = C_bg + (C0/2)·[1 + v·cos(πV/Vπ + φ0)]           (D0; D1 with −v)

which is identifiable only as M + A·cos(πV/Vπ + φ0) (C_bg and C0 enter only through M and A); D0
and D1 are fitted jointly with shared Vπ and φ0 (Poisson weights, ``curve_fit`` covariance,
errors scaled by √(χ²/ν) when above 1). The fringe contrast |A|/M is reported (it is a lower bound
on the visibility: frames in which only one of the two clients is active add a constant). φ0 is
the bias phase of the client relative to the reference client (plus the loop's residual phase
drift during the scan). The optical QBER floor is ≈ (1 − v)/2.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from labqfl.calibration.acquire import save_plot
from labqfl.calibration.core import (
    CalContext,
    ProcedureResult,
    Quantity,
    SettingsGuard,
    gates_to_optimum,
    guarded,
    restore_dc,
    sim_truth,
    wrap_phase,
)
from labqfl.calibration.detector import detector_dead_time_s, dim_for_rate, guard_original
from labqfl.calibration.fitting import FitResult, fit_poisson
from labqfl.calibration.pg_fringe import (
    ideal_gain_quantity_value,
    loop_truth,
    pg_driven,
    pg_fringe_scan,
    scheduled_reference,
)

from labqfl.errors import CalibrationError

_OFF = 1.0e6  # x-offset that marks D1 points in the joint fit


def _joint(x: np.ndarray, m0: float, a0: float, m1: float, a1: float, vpi: float, phi: float) -> np.ndarray:
    is1 = x > _OFF / 2
    v = np.where(is1, x - _OFF, x)
    c = np.cos(np.pi * v / vpi + phi)
    return np.where(is1, m1 + a1 * c, m0 + a0 * c)


def fit_fringe(volts: np.ndarray, n0: np.ndarray, n1: np.ndarray, vpi_guess: float, what: str) -> FitResult:
    """Joint fringe fit of D0 and D1 counts vs voltage; raises CalibrationError without a fringe."""
    volts = np.asarray(volts, dtype=np.float64)
    n0 = np.asarray(n0, dtype=np.float64)
    n1 = np.asarray(n1, dtype=np.float64)
    if n0.sum() + n1.sum() < 100:
        raise CalibrationError(f"{what}: only {int(n0.sum() + n1.sum())} clicks in the whole scan; no light reaches the detectors")
    # initial values: grid over Vπ, linear least squares for (M, a·cos φ, a·sin φ)
    best: tuple[float, float, float] | None = None
    y = n0 - n1
    for vpi in np.linspace(0.4, 2.5, 85) * vpi_guess:
        X = np.column_stack([np.ones_like(volts), np.cos(np.pi * volts / vpi), np.sin(np.pi * volts / vpi)])
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        r = float(np.sum((X @ coef - y) ** 2))
        if best is None or r < best[0]:
            best = (r, float(vpi), float(math.atan2(-coef[2], coef[1])))
    assert best is not None
    _, vpi0, phi0 = best
    amp0 = max(0.25 * float(np.ptp(n0)), 1.0)
    amp1 = -max(0.25 * float(np.ptp(n1)), 1.0)
    x = np.concatenate([volts, volts + _OFF])
    n = np.concatenate([n0, n1])
    fit = fit_poisson(_joint, x, n, [float(n0.mean()), amp0, float(n1.mean()), amp1, vpi0, phi0],
                      ("m0", "a0", "m1", "a1", "vpi", "phi"), what,
                      bounds=([0.0, -np.inf, 0.0, -np.inf, 0.2 * vpi_guess, -10.0], [np.inf, np.inf, np.inf, np.inf, 5.0 * vpi_guess, 10.0]))
    sig0 = abs(fit["a0"]) / max(fit.err("a0"), 1e-300)
    sig1 = abs(fit["a1"]) / max(fit.err("a1"), 1e-300)
    if max(sig0, sig1) < 8.0:
        raise CalibrationError(f"{what}: no interference fringe (amplitude {sig0:.1f}σ on D0, {sig1:.1f}σ on D1); "
                               "check that both clients' light reaches the node and the modulator is driven")
    # scale errors with χ²/ν (curve fit inside fit_poisson does not)
    if fit.dof > 0 and fit.red_chi2 > 1:
        s = math.sqrt(fit.red_chi2)
        fit = FitResult(fit.names, fit.params, fit.errors * s, fit.cov * s * s, fit.chi2, fit.dof)
    return fit


def _reference(names: list[str], client: str, reference: str | None) -> str:
    if reference is not None and reference != client:
        return reference
    return names[0] if client != names[0] else names[1]


def _prepare_fringe(ctx: CalContext, guard: SettingsGuard, k: str, ref: str, integration_s: float,
                    min_counts_per_point: int) -> float:
    """Only ``k`` and ``ref`` open, their modulators at 0 V, both dimmed together until R·τ_d ≤ 0.1.

    Returns the integration time per fringe point [s]."""
    st = ctx.station
    for c in ctx.config.client_names:
        att = st.attenuator(c)
        if hasattr(att, "shutter_closed"):
            guard.set(att, "shutter_closed", c not in (k, ref))
    if not pg_driven(ctx, k):  # a pattern-generator scan sets its modulators itself (pg_fringe.prepare_modulators)
        pm, pm_ref = st.phase_modulator(k), st.phase_modulator(ref)
        for p in (pm, pm_ref):
            guard.set(p, "output_enabled", True)
            restore_dc(guard, p)
        pm_ref.set_dc_voltage(0.0)
        pm.set_dc_voltage(0.0)
    # keep R·τ_d ≤ 0.1 on both detectors (InGaAs SPADs with µs dead times saturate at the
    # operating attenuation): the two clients dimmed by the same ΔA from their own settings
    for c in (k, ref):
        att = st.attenuator(c)
        if hasattr(att, "attenuation_db"):
            guard.set(att, "attenuation_db", guard_original(guard, att, "attenuation_db"))
    rates = dim_for_rate(ctx, guard, ("D0", "D1"), {d: 0.1 / max(detector_dead_time_s(ctx, d), 1e-12) for d in ("D0", "D1")})
    # enough clicks per point for the 8σ fringe test at dimmed (dead-time-limited) rates
    return float(min(max(integration_s, min_counts_per_point / max(min(rates.values()), 1.0)), 0.5))


def _scan_fringe(ctx: CalContext, k: str, ref: str, n_points: int, t_pt: float,
                 periods: float) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Clicks on D0 and D1 against ``k``'s modulator voltage over ±``periods``·V_π.

    Returns (nominal V_π [V], voltages [V], counts D0, counts D1)."""
    st = ctx.station
    tt_cfg = ctx.config.time_tagger
    ch0, ch1 = tt_cfg.detector_channels["D0"], tt_cfg.detector_channels["D1"]
    pm = st.phase_modulator(k)
    vpi_nom = float(ctx.value(f"{k}.v_pi_v", pm.v_pi_v))
    vmax = min(periods * vpi_nom, float(pm.amplitude_vpp) / 2.0 if pm.amplitude_vpp > 0 else periods * vpi_nom)
    if vmax < 0.75 * vpi_nom:
        raise CalibrationError(f"{k}: drive amplitude ±{vmax:.3g} V cannot span a fringe (Vπ ≈ {vpi_nom:.3g} V)")
    volts = np.linspace(-vmax, vmax, n_points)
    n0 = np.zeros(n_points)
    n1 = np.zeros(n_points)
    ctx.step(f"{k}: fringe scan against {ref} ({n_points} points, ±{vmax:.3g} V)")
    for i, v in enumerate(volts):
        pm.set_dc_voltage(float(v))
        r = st.time_tagger.count_rates(t_pt)
        n0[i] = round(r.get(ch0, 0.0) * t_pt)
        n1[i] = round(r.get(ch1, 0.0) * t_pt)
    pm.set_dc_voltage(0.0)
    return vpi_nom, volts, n0, n1


def _truth(ctx: CalContext, k: str, roles: tuple[str, ...], value: Any) -> float | None:
    """The simulator's value for ``k``'s quantity: its roles simulated, or (a pattern-generator-driven
    modulator) the loop simulated from the station file (:func:`~labqfl.calibration.pg_fringe.loop_truth`)."""
    if pg_driven(ctx, k):
        return float(value(ctx.config)) if loop_truth(ctx, tuple(r.split(".")[0] for r in roles)) else None
    return sim_truth(ctx.station, roles, value)


def _fringe_quantities(ctx: CalContext, k: str, ref: str, fit: FitResult) -> tuple[list[Quantity], float, list[float]]:
    """V_π and bias phase of ``k`` (relative to ``ref``) from its fringe fit; for a modulator fed by its
    pattern generator's bits also the ideal amplifier gain for that V_π (``<k>.rf_gain_db``, G·w0 = V_π/2).

    Returns (the quantities, wrapped bias phase [rad], fringe contrast on D0 and D1)."""
    vpi, e_vpi = fit["vpi"], fit.err("vpi")
    phi = fit["phi"] + (math.pi if fit["a0"] < 0 else 0.0)
    phi_w = wrap_phase(phi)
    q_vpi = Quantity(
        f"{k}.v_pi_v", vpi, e_vpi, "V", "vpi",
        true=_truth(ctx, k, (f"{k}.phase_modulator",),
                    lambda c, k=k: c.client(k).phase_modulator.v_pi_v / (1.0 + c.client(k).phase_modulator.v_pi_error)),
        details={"reference_client": ref})
    true_phi = _truth(ctx, k, (f"{k}.phase_modulator", f"{ref}.phase_modulator"),
                      lambda c, k=k, ref=ref: c.client(k).phase_modulator.bias_phase_rad
                      - c.client(ref).phase_modulator.bias_phase_rad)
    if true_phi is not None:  # express the truth on the branch nearest the estimate
        true_phi = phi_w + wrap_phase(true_phi - phi_w)
    contrast = [abs(fit["a0"]) / fit["m0"] if fit["m0"] > 0 else float("nan"),
                abs(fit["a1"]) / fit["m1"] if fit["m1"] > 0 else float("nan")]
    q_phi = Quantity(
        f"{k}.bias_phase_rad", phi_w, fit.err("phi"), "rad", "vpi", true=true_phi,
        details={"reference_client": ref, "relative_to": f"{ref}.bias_phase_rad",
                 "fringe_contrast_D0": contrast[0], "fringe_contrast_D1": contrast[1]})
    qs = [q_vpi, q_phi]
    if pg_driven(ctx, k):
        pm = ctx.station.phase_modulator(k)
        g, e_g = ideal_gain_quantity_value(pm, vpi, e_vpi)
        qs.append(Quantity(f"{k}.rf_gain_db", g, e_g, "dB", "vpi",
                           details={"bit_levels_v": list(pm.bit_levels_v),  # type: ignore[attr-defined]
                                    "rule": "G·w0 = Vπ/2 (phase code 1 → π/2)"}))
    return qs, phi_w, contrast


def vpi_bias(ctx: CalContext, clients: list[str] | None = None, reference: str | None = None, n_points: int = 41,
             integration_s: float = 0.02, periods: float = 2.0, min_counts_per_point: int = 1000) -> ProcedureResult:
    """Vπ and bias phase of each client's modulator (default: every client; the reference for all
    is the first client, and the second client for the first).

    The two clients are dimmed together until R·τ_d ≤ 0.1 on both detectors (µs dead times), and
    each point integrates at least ``integration_s`` and long enough for ≈ ``min_counts_per_point``
    clicks (at most 0.5 s)."""
    cfg = ctx.config
    names = cfg.client_names
    todo = clients or names
    for c in todo:
        if c not in names:
            raise CalibrationError(f"unknown client {c!r}; clients are {names}")
    quantities: list[Quantity] = []
    raw: dict[str, Any] = {}
    plots: list[str] = []
    with guarded(ctx, "vpi") as guard:
        st = ctx.station
        for d in ("D0", "D1"):  # biased in the dark first, then the light: the arming order (review s37 lab3 L8)
            guard.set(st.detector(d), "enabled", True)
        guard.set(st.laser, "output_enabled", True)
        gates_to_optimum(ctx, guard)
        for k in todo:
            ref = _reference(names, k, reference)
            pg = pg_driven(ctx, k)  # its phase is what its pattern generator plays: scan through it
            if pg:
                ref = scheduled_reference(ctx, k, ref, reference is not None and reference != k)
            t_pt = _prepare_fringe(ctx, guard, k, ref, integration_s, min_counts_per_point)
            if pg:
                vpi_nom, volts, n0, n1 = pg_fringe_scan(ctx, guard, k, ref, n_points, t_pt, periods)
            else:
                vpi_nom, volts, n0, n1 = _scan_fringe(ctx, k, ref, n_points, t_pt, periods)
            fit = fit_fringe(volts, n0, n1, vpi_nom, f"{k} fringe")
            vpi, e_vpi = fit["vpi"], fit.err("vpi")
            qs, phi_w, contrast = _fringe_quantities(ctx, k, ref, fit)
            quantities.extend(qs)
            raw[k] = {"reference": ref, "voltages_v": volts, "counts_D0": n0, "counts_D1": n1,
                      "integration_s": t_pt, "fit": fit.summary(),
                      "qber_floor_estimate": (1 - max(contrast)) / 2 if all(math.isfinite(c) for c in contrast) else None}
            p = save_plot(ctx.plot_path(f"vpi_{k}.png"),
                          lambda ax, volts=volts, n0=n0, n1=n1, fit=fit: _plot_fringe(ax, volts, n0, n1, fit),
                          f"{k} vs {ref}: Vπ = {vpi:.4f} ± {e_vpi:.4f} V, φ0 = {phi_w:.3f} ± {fit.err('phi'):.3f} rad")
            if p:
                plots.append(p)
    return ctx.remember(ProcedureResult("vpi", quantities, raw, plots))


def _plot_fringe(ax: Any, volts: np.ndarray, n0: np.ndarray, n1: np.ndarray, fit: FitResult) -> None:
    vv = np.linspace(volts.min(), volts.max(), 400)
    ax.errorbar(volts, n0, yerr=np.sqrt(np.maximum(n0, 1)), fmt="o", ms=3, label="D0")
    ax.errorbar(volts, n1, yerr=np.sqrt(np.maximum(n1, 1)), fmt="s", ms=3, label="D1")
    ax.plot(vv, _joint(vv, *fit.params), "-", color="C0")
    ax.plot(vv, _joint(vv + _OFF, *fit.params), "-", color="C1")
    ax.set_xlabel("drive voltage [V]")
    ax.set_ylabel("clicks per point")
    ax.legend(fontsize=8)


__all__ = ["fit_fringe", "vpi_bias"]
