"""Gate delay of gated detectors (docs/calibration.md): the centre of the plateau of click rate
vs gate delay (equivalently the click-vs-sync peak inside the gate). Runs first: every later
procedure that uses light needs the gates on the pulses.
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
    guarded,
    sim_truth,
)
from labqfl.calibration.delays import light_path_on
from labqfl.calibration.detector import DETECTORS, detector_counts, enable_detectors, slot_period_ps

from labqfl.errors import CalibrationError
from labqfl.physics import loop_delay_ps


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
        light_path_on(ctx, guard, gated)  # also from the safe state: shutters open, modulators on
        enable_detectors(ctx, guard, gated)
        T = slot_period_ps(ctx)
        for d in gated:
            det = ctx.station.detector(d)
            w = float(det.gate_width_ns) * 1e3
            if w >= T:
                raise CalibrationError(f"{d}: gate width {w:g} ps covers the whole pulse period {T:g} ps; nothing to scan")
            n_pts = max(n_coarse, int(math.ceil(3 * T / w)))
            grid = np.arange(n_pts) * (T / n_pts)

            def rate_at(dl: float, det: Any = det, d: str = d) -> float:
                guard.set(det, "gate_delay_ps", float(dl % T))
                return detector_counts(ctx, integration_s)[d] / integration_s

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
