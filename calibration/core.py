"""Shared machinery of the calibration procedures: results with uncertainties, the context a
procedure runs in (station, run record, progress, already-calibrated values), and the safety guard.

Every procedure drives only the Station's instrument interfaces (:mod:`labqfl.instruments`), so
the same code calibrates real instruments and the simulator. For simulated roles the simulator's
truth (taken from the station config, see :func:`sim_truth`) is attached to each quantity as
``true`` so tests and users can check the procedure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labqfl.config import StationConfig
from labqfl.errors import CalibrationError, LabqflError
from labqfl.log import get_logger
from labqfl.runs import RunRecord
from labqfl.station import Station

log = get_logger(__name__)

@dataclass
class Quantity:
    """One calibrated number: ``value ± uncertainty`` (1σ, standard uncertainty) in ``unit``.

    ``true`` is the simulator's value for a simulated instrument (None for real ones);
    ``details`` holds components of the uncertainty and other context (JSON-safe).
    """

    name: str
    value: float
    uncertainty: float
    unit: str
    procedure: str
    true: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"value": float(self.value), "uncertainty": float(self.uncertainty), "unit": self.unit,
                             "procedure": self.procedure}
        if self.true is not None:
            d["true"] = float(self.true)
        if self.details:
            d["details"] = self.details
        return d

    @property
    def pull(self) -> float | None:
        """(value − true)/uncertainty, or None without a truth."""
        if self.true is None or not self.uncertainty > 0:
            return None
        return (self.value - self.true) / self.uncertainty


@dataclass
class ProcedureResult:
    """Output of one procedure: its quantities, a summary of the raw data and fit, its plots."""

    procedure: str
    quantities: list[Quantity]
    raw: dict[str, Any] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"quantities": [q.name for q in self.quantities], "raw": self.raw, "plots": list(self.plots)}


@dataclass
class CalContext:
    """What a procedure runs in.

    ``known`` holds values calibrated earlier in the same session (name → Quantity): later
    procedures use them (e.g. the efficiency uses the dark-count rate and dead time) and fall back
    to the station config otherwise. ``plots_dir`` receives PNG plots (None: no plots).
    ``segments(station, duration_s)``: the tag blocks of one acquisition segment as the application
    runs them (the clients stream their frames to their pattern generators meanwhile:
    :class:`labqfl.app.acquire.Acquisition`); None: the time tagger's stream alone (:meth:`tags`).
    """

    station: Station
    record: RunRecord | None = None
    progress: Callable[[str], None] | None = None
    seed: int = 0
    known: dict[str, Quantity] = field(default_factory=dict)
    make_plots: bool = True
    segments: Callable[[Station, float], Iterable[Any]] | None = None
    #: ``confirm_placement(position)``: asks the operator to move the power-meter head to ``position``
    #: ("laser" or a client) and returns True once they confirm (:meth:`PowerMeter.place_at`); None: no
    #: operator (a real meter's placement is then refused).
    confirm_placement: Callable[[str], bool] | None = None

    def tags(self, duration_s: float) -> Iterable[Any]:
        """The tag blocks of ``duration_s`` seconds of acquisition (``segments``, or the tagger's stream)."""
        if self.segments is not None:
            return self.segments(self.station, duration_s)
        return self.station.time_tagger.stream(duration_s)

    @property
    def config(self) -> StationConfig:
        return self.station.config

    def step(self, message: str) -> None:
        log.info("calibration: %s", message)
        if self.progress is not None:
            self.progress(message)

    def rng(self, salt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, salt])

    def value(self, name: str, default: float) -> float:
        q = self.known.get(name)
        return float(q.value) if q is not None else float(default)

    def plot_path(self, filename: str) -> str | None:
        if self.record is None or not self.make_plots:
            return None
        return str(self.record.plot_path(filename))

    def remember(self, result: ProcedureResult) -> ProcedureResult:
        for q in result.quantities:
            self.known[q.name] = q
        return result


# -- simulator truth ---------------------------------------------------------------------------
def is_simulated(station: Station, role: str) -> bool:
    try:
        return station.config.role(role).simulated
    except LabqflError:
        return False


def sim_truth(station: Station, roles: str | tuple[str, ...], value: Callable[[StationConfig], float]) -> float | None:
    """``value(config)`` if every role in ``roles`` is simulated (the config is then the
    simulator's truth), else None."""
    rs = (roles,) if isinstance(roles, str) else roles
    if all(is_simulated(station, r) for r in rs):
        return float(value(station.config))
    return None


def wrap_phase(x: float) -> float:
    """Phase wrapped into (−π, π]."""
    y = math.remainder(x, 2 * math.pi)
    return math.pi if y == -math.pi else y


def blocked_pulses(dead_time_ps: float, period_ps: float) -> int:
    """Number of later pulses a click blinds a non-paralysable detector to under pulsed light:
    #{k ≥ 1 : k·T < τ_d} (a pulse arriving exactly when the detector recovers is detected)."""
    if dead_time_ps <= 0:
        return 0
    return max(0, int(math.ceil(dead_time_ps / period_ps - 1e-9)) - 1)


@dataclass(frozen=True)
class BlockedPulses:
    """The number of pulses a click blinds the detector to, as :func:`blocked_pulses_from_clicks` found it:
    ``n`` (used; a mean, fractional where a pulse is live only part of the time), the range ``lo``..``hi``
    the dead time's uncertainty allows, and whether the clicks themselves decided between them
    (``from_clicks``)."""

    n: float
    lo: int
    hi: int
    from_clicks: bool

    @property
    def ambiguous(self) -> bool:
        """True when the dead time allows several values and the clicks did not decide."""
        return self.lo != self.hi and not self.from_clicks


def blocked_pulses_from_clicks(times_ps: np.ndarray, dead_time_ps: float, dead_time_err_ps: float, period_ps: float,
                               pair_jitter_ps: float, min_events: float = 100.0) -> BlockedPulses:
    """Pulses blinded after a click under pulsed light, from the clicks' own spacings when the dead time
    lies near a multiple of the pulse period.

    ``n_b`` (:func:`blocked_pulses`) jumps by one where τ_d crosses a multiple k·T: a station whose
    τ_d sits on such a multiple (30 ns at 10 ns) gets n_b = 2 or 3 depending on which side of it the
    calibrated τ_d falls (review s34 F1: 30.00 ± 0.16 ns gave n_b = 3 in ~70 % of sessions, the
    dead-time correction p_m/(1 − n_b·p_m) over-corrected the bright fringe points by ≈ p_m and the
    loop visibility came out +1σ high on average). Whether pulse k after a click is live is directly
    observable: a live pulse k puts a peak of consecutive-click spacings at k·T (width √2·jitter),
    a blind one leaves only the continuum of dark counts and afterpulses there. For every candidate
    pulse k in (lo, hi] (the range of n_b over τ_d ± 4σ, σ including the pair jitter: a real detector's
    recovery is no sharp step) the peak at k·T, minus the continuum half a period later, over the peak
    at (hi + 1)·T (certainly live) is the fraction of clicks after which pulse k is live (1 or 0 where it
    is within 4σ of either, else clipped to [0, 1]); n_b = lo + Σ_k (1 − that fraction), the mean number
    of pulses blinded. Near τ_d = k·T the pulse is live part of the time (the photons' arrival spread,
    docs/simulator.md "Dead time near a multiple of the period": half the time at τ_d = 3T exactly,
    n_b = 2.5), so n_b is not rounded.
    When the reference peak holds fewer than ``min_events`` spacings (too few clicks, e.g. at a fringe
    minimum, where the correction hardly matters) the value from τ_d is used and
    :attr:`BlockedPulses.ambiguous` says so."""
    err = math.hypot(max(dead_time_err_ps, 0.0), pair_jitter_ps)
    nominal = blocked_pulses(dead_time_ps, period_ps)
    lo = blocked_pulses(max(dead_time_ps - 4.0 * err, 0.0), period_ps)
    hi = blocked_pulses(dead_time_ps + 4.0 * err, period_ps)
    if lo == hi:
        return BlockedPulses(nominal, lo, hi, False)
    gaps = np.sort(np.diff(np.sort(np.asarray(times_ps, dtype=np.float64))))
    w = min(max(3.0 * pair_jitter_ps, 100.0), period_ps / 4.0)

    def n_in(c: float) -> int:
        return int(np.searchsorted(gaps, c + w) - np.searchsorted(gaps, c - w))

    def peak(k: int) -> tuple[float, float]:  # spacings at k·T above the continuum, and their variance
        a, b = n_in(k * period_ps), n_in((k + 0.5) * period_ps)
        return float(a - b), float(a + b)

    ref, var_ref = peak(hi + 1)
    if ref < min_events:
        return BlockedPulses(nominal, lo, hi, False)

    def live(k: int) -> float:  # pulse k's live fraction: 0 or 1 where the clicks cannot tell it from either
        pk, var_k = peak(k)
        f = pk / ref
        sf = math.sqrt(var_k + f * f * var_ref) / ref
        return 1.0 if abs(f - 1.0) < 4.0 * sf else 0.0 if abs(f) < 4.0 * sf else min(max(f, 0.0), 1.0)

    return BlockedPulses(lo + sum(1.0 - live(k) for k in range(lo + 1, hi + 1)), lo, hi, True)


def pulsed_dead_time_correction(p_measured: float, dead_time_ps: float, period_ps: float,
                                blocked: float | None = None) -> float:
    """Per-pulse click probability before dead time from the measured one.

    A non-paralysable detector blinded for ``n_b`` pulses after each click measures
    p_m = p/(1 + n_b·p) under uniform pulsed illumination (the pulsed form of
    R_m = R/(1 + R·τ_d)); hence p = p_m/(1 − n_b·p_m). ``blocked``: n_b when known otherwise
    (:func:`blocked_pulses_from_clicks`); default :func:`blocked_pulses` of τ_d."""
    nb_ = blocked_pulses(dead_time_ps, period_ps) if blocked is None else blocked
    den = 1.0 - nb_ * p_measured
    if den <= 0.5:  # beyond half dead time the correction amplifies every error: refuse
        raise CalibrationError(
            f"detector saturated: {p_measured:.3g} clicks per pulse with {nb_:g} pulses dead after each click; "
            "reduce the light level (increase the attenuation)")
    return p_measured / den


def continuous_dead_time_correction(rate_hz: float, dead_time_s: float) -> float:
    """True rate of a Poisson process from the measured rate of a non-paralysable detector,
    R = R_m/(1 − R_m·τ_d) (REFERENCES 'Detector calibration'; Knoll, Radiation Detection and
    Measurement, 4th ed., §4.VII)."""
    den = 1.0 - rate_hz * dead_time_s
    if den <= 0.5:  # beyond half dead time the correction amplifies every error: refuse
        raise CalibrationError(
            f"detector saturated: measured {rate_hz:.4g} Hz is close to the dead-time limit 1/τ_d = "
            f"{1.0 / dead_time_s:.4g} Hz; reduce the light level or bias")
    return rate_hz / den


# -- safety ------------------------------------------------------------------------------------
class SettingsGuard:
    """Remembers instrument settings a procedure changes and restores them (reverse order)."""

    def __init__(self) -> None:
        self._saved: list[tuple[Any, str, Any]] = []

    def set(self, obj: Any, attr: str, value: Any) -> None:
        """Set ``obj.attr = value``, remembering the old value the first time."""
        if not any(o is obj and a == attr for o, a, _ in self._saved):
            self._saved.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, value)

    def remember_call(self, obj: Any, attr: str, restore: Callable[[], None]) -> None:
        """Register a restore action that is not a plain attribute (e.g. clearing a DC level)."""
        if not any(o is obj and a == attr for o, a, _ in self._saved):
            self._saved.append((obj, attr, restore))

    def restore(self) -> list[str]:
        """Restore everything; return one line per failure (never raises)."""
        errors: list[str] = []
        for obj, attr, old in reversed(self._saved):
            try:
                if callable(old) and attr.startswith("__call__"):
                    old()
                else:
                    setattr(obj, attr, old)
            except Exception as exc:  # keep restoring the rest
                errors.append(f"{getattr(obj, 'name', obj)}.{attr}: {exc}")
        self._saved.clear()
        return errors


def gates_to_optimum(ctx: CalContext, guard: SettingsGuard, detectors: tuple[str, ...] = ("D0", "D1")) -> None:
    """Put each gated detector's gate on the pulses using a gate delay calibrated earlier in this
    session (``<D>.gate_delay_ps``); the guard restores the old delay afterwards."""
    for d in detectors:
        det = ctx.station.detector(d)
        q = ctx.known.get(f"{d}.gate_delay_ps")
        if det.gated and q is not None:
            guard.set(det, "gate_delay_ps", float(q.value))


def restore_dc(guard: SettingsGuard, pm: Any) -> None:
    """Register that ``pm`` (a PhaseModulator) must leave DC mode when the guard restores."""
    def _undo() -> None:
        clear = getattr(pm, "clear_dc", None)
        if clear is not None:
            clear()
    guard.remember_call(pm, "__call__clear_dc", _undo)


@contextmanager
def guarded(ctx: CalContext, procedure: str) -> Iterator[SettingsGuard]:
    """Run a procedure body with a :class:`SettingsGuard`.

    On success the changed settings are restored. On any error or Ctrl-C the settings are restored
    (bias back to nominal, DC levels cleared, …) and then ``station.safe_state()`` puts every
    instrument in its safe state (laser off, detector bias off, shutters closed, modulators off).
    Errors are re-raised as :class:`CalibrationError` naming the procedure and saying that the
    station was made safe; ``KeyboardInterrupt`` is re-raised after the same clean-up.
    """
    guard = SettingsGuard()
    try:
        yield guard
    except BaseException as exc:
        restore_errors = guard.restore()
        safe_errors = ctx.station.safe_state()
        safe_note = "instruments put in their safe state (laser off, detector bias off)"
        if safe_errors:
            safe_note += "; safe state FAILED for " + ", ".join(f"{r} ({e})" for r, e in safe_errors.items())
        if restore_errors:
            log.warning("calibration %s: restoring settings failed: %s", procedure, "; ".join(restore_errors))
        if isinstance(exc, KeyboardInterrupt):
            log.error("calibration %s interrupted by user; %s", procedure, safe_note)
            raise
        if isinstance(exc, GeneratorExit):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, CalibrationError):
            msg = f"calibration {procedure} failed: {first}; {safe_note}"
        else:
            msg = f"calibration {procedure} failed: {type(exc).__name__}: {first}; {safe_note}"
        log.error("%s", msg)
        raise CalibrationError(msg) from exc
    else:
        errs = guard.restore()
        if errs:
            log.warning("calibration %s: restoring settings failed: %s", procedure, "; ".join(errs))
