"""Detector dark-count rate, vs bias and with the temperature (laser off; docs/calibration.md).

DCR = R_m/(1 − R_m·τ_d)·(1 − P_ap) (each click triggers on average P_ap/(1 − P_ap) afterpulses; P_ap
the registered probability, :func:`~labqfl.calibration.detector.afterpulse_probability`: for a gated
detector only the share w/T of the station file's P falls in a gate);
gated detectors: the free-running equivalent −ln(1 − P_dc)/w_gate.
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
    continuous_dead_time_correction,
    guarded,
    pulsed_dead_time_correction,
    sim_truth,
)
from labqfl.calibration.detector import (
    DETECTORS,
    afterpulse_probability,
    darken,
    detector_counts,
    detector_dead_time_s,
    enable_detectors,
)
from labqfl.calibration.fitting import (
    FitResult,
    fit_curve,
)

from labqfl.config import StationConfig
from labqfl.errors import CalibrationError


def _bias_unit(cfg: StationConfig, d: str) -> str:
    return "µA" if cfg.detectors[d].kind == "snspd" else "V"


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
    p_ap = afterpulse_probability(ctx, d)
    if det.gated:
        f_gate = float(ctx.station.laser.rep_rate_hz)
        w = float(det.gate_width_ns) * 1e-9
        p_m = rm / f_gate
        p_dc = pulsed_dead_time_correction(p_m, detector_dead_time_s(ctx, d) * 1e12, 1e12 / f_gate) * (1.0 - p_ap)
        dcr = -math.log1p(-p_dc) / w
        return dcr, dcr * s_rel if n > 0 else 1.0 / t / (w * f_gate), {"p_dc_per_gate": p_dc, "gate_width_s": w}
    r = continuous_dead_time_correction(rm, detector_dead_time_s(ctx, d)) * (1.0 - p_ap)
    return r, (r * s_rel if n > 0 else 1.0 / t), {}


def _operating_point_counts(ctx: CalContext, detectors: tuple[str, ...], integration_s: float, min_counts: int,
                            max_integration_s: float) -> tuple[dict[str, int], dict[str, float], float, dict[str, int] | None]:
    """Clicks per detector at the operating bias in 8 parts, their variance (from the parts' scatter), the
    integration [s], and the scout's clicks if the first look had fewer than ``min_counts``.

    When ``integration_s`` gives a detector fewer than ``min_counts`` clicks (a gated InGaAs SPAD sees its
    dark counts only in its gates: 300 Hz in 0.5 ns gates at 100 MHz is 15 clicks/s), that first look is
    a scout and the rate is measured again, for the time the scouted rate needs for ``min_counts`` (at most
    ``max_integration_s``). Only the second measurement is returned: its length does not depend on its own
    counts, so the stopping rule does not bias the rate. With 15 clicks the rate was ±26 %, its error taken
    from the count itself, and a low fluctuation (2 clicks, Poisson probability 4·10⁻⁵) came out as
    40 ± 40 Hz against 300 Hz, a −6.5σ pull (docs/calibration.md)."""
    ctx.step(f"dark counts at the operating bias ({integration_s:g} s in 8 parts)")
    t0 = integration_s
    parts = [detector_counts(ctx, t0 / 8) for _ in range(8)]
    n0 = {d: sum(p[d] for p in parts) for d in detectors}
    scout: dict[str, int] | None = None
    fewest = min(n0.values())
    if fewest < min_counts:
        scout = n0
        t0 = min(max(min_counts * integration_s / max(fewest, 1), integration_s), max_integration_s)
        ctx.step(f"{fewest} clicks in {integration_s:g} s: measuring again for {t0:.3g} s "
                 f"(≈ {min_counts} clicks), the first look only a scout")
        parts = [detector_counts(ctx, t0 / 8) for _ in range(8)]
        n0 = {d: sum(p[d] for p in parts) for d in detectors}
    var0 = {d: 8.0 * float(np.var([p[d] for p in parts], ddof=1)) for d in detectors}
    return n0, var0, t0, scout


def dark_counts(ctx: CalContext, detectors: tuple[str, ...] = DETECTORS, integration_s: float = 2.0,
                bias_steps: tuple[float, ...] = (-0.1, -0.05, 0.05, 0.1), sweep_integration_s: float = 1.0,
                min_counts: int = 400, max_integration_s: float = 30.0) -> ProcedureResult:
    """Dark-count rate at the operating bias, and its dependence on bias (with the detector
    temperature recorded at every point; the temperature is read-only on these interfaces).

    Laser off, shutters closed. DCR = R_m/(1 − R_m·τ_d)·(1 − P_ap) with Poisson error √N/t; the
    bias sweep (relative steps of the operating bias) is fitted with DCR(b) = DCR_0·e^{k(b − b_0)}
    (Poisson-weighted), k reported as ``<D>.dark_log_slope``.

    The integration adapts to the detector (:func:`_operating_point_counts`: at least ``min_counts``
    clicks, at most ``max_integration_s``); each sweep point integrates for ``min_counts``/4 clicks at the
    operating rate (at least ``sweep_integration_s``, at most half of ``max_integration_s``).
    """
    quantities: list[Quantity] = []
    raw: dict[str, Any] = {}
    plots: list[str] = []
    with guarded(ctx, "dark_counts") as guard:
        darken(ctx, guard)
        enable_detectors(ctx, guard, detectors)
        dets = {d: ctx.station.detector(d) for d in detectors}
        b0 = {d: float(dets[d].bias) for d in detectors}
        n0, var0, t0, scout = _operating_point_counts(ctx, detectors, integration_s, min_counts, max_integration_s)
        points: dict[str, list[dict[str, float]]] = {d: [] for d in detectors}
        for d in detectors:
            dcr, err, extra = _dcr_from_counts(ctx, d, n0[d], t0, var0[d])
            points[d].append({"bias": b0[d], "counts": n0[d], "t_s": t0, "dcr_hz": dcr, "err_hz": err,
                              "temperature_k": float(dets[d].temperature_k)})
            scouted = {"scout_counts": scout[d], "scout_s": integration_s} if scout is not None else {}
            quantities.append(Quantity(f"{d}.dark_count_rate_hz", dcr, err, "Hz", "dark_counts",
                                       true=sim_truth(ctx.station, d, lambda c, d=d: c.detectors[d].dark_count_rate_hz),
                                       details={"counts": n0[d], "integration_s": t0, "bias": b0[d],
                                                "temperature_k": float(dets[d].temperature_k), **extra, **scouted}))
        # each sweep point long enough for ≈ min_counts/4 clicks at the operating rate (a bias step of −10 % still
        # gets about half of them), set from the operating point's counts, not from the point's own
        rate_min = max(min(n0.values()), 1) / t0
        sweep_t = min(max(sweep_integration_s, min_counts / 4.0 / rate_min), max_integration_s / 2.0)
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
            ctx.step(f"dark counts at bias ×{1 + st:.3f} ({sweep_t:.3g} s)")
            n = detector_counts(ctx, sweep_t)
            for d in ok:
                dcr, err, _ = _dcr_from_counts(ctx, d, n[d], sweep_t)
                points[d].append({"bias": float(dets[d].bias), "counts": n[d], "t_s": sweep_t,
                                  "dcr_hz": dcr, "err_hz": err, "temperature_k": float(dets[d].temperature_k)})
        for d in detectors:
            guard.set(dets[d], "bias", b0[d])
        for d in detectors:
            pts = sorted(points[d], key=lambda p: p["bias"])
            raw[d] = {"points": pts}
            fit = _bias_sweep_fit(ctx, d, pts, b0[d])
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


def _bias_sweep_fit(ctx: CalContext, d: str, pts: list[dict[str, float]], b0: float) -> FitResult | None:
    """DCR(b) = DCR0·e^{k(b − b0)} fitted to the sweep's points (sorted by bias); None with fewer than
    3 points or 30 clicks, or when the fit fails (the slope is then not reported)."""
    if len(pts) < 3 or sum(p["counts"] for p in pts) < 30:
        return None
    b = np.array([p["bias"] for p in pts])
    y = np.array([p["dcr_hz"] for p in pts])
    e = np.array([p["err_hz"] for p in pts])
    y0 = max(float(y[np.argmin(np.abs(b - b0))]), 1e-3)

    def model(bb: np.ndarray, log_r0: float, k: float) -> np.ndarray:
        return np.exp(log_r0 + k * (bb - b0))
    try:
        return fit_curve(model, b, y, e, [math.log(y0), 1.0], ("log_r0", "k"), f"{d} dark counts vs bias")
    except CalibrationError as exc:
        ctx.step(f"{d}: bias-sweep fit failed ({exc}); slope not reported")
        return None


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
