"""Run calibration groups on a station, save the results in a run folder and apply them.

A session runs every procedure of its group even when one fails: each failure is recorded (one
line naming the procedure and the cause; the instruments were made safe by the procedure's guard)
and the next procedure runs. The calibration file and the calibrated station file hold what
succeeded; :attr:`CalibrationReport.failures` says what did not (the CLI exits non-zero then).
A progress callback that raises (e.g. the GUI's cancel button) or Ctrl-C still ends the session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labqfl.calibration.core import CalContext, ProcedureResult, Quantity
from labqfl.calibration.dark_count_rate import dark_counts
from labqfl.calibration.dead_time import dead_time_afterpulsing
from labqfl.calibration.delays import channel_delays
from labqfl.calibration.detection_efficiency import efficiency
from labqfl.calibration.detector import DETECTORS
from labqfl.calibration.files import (
    apply_calibration,
    calibration_document,
    write_calibration,
    write_station_toml,
)
from labqfl.calibration.gate import gate_delay
from labqfl.calibration.jitter import timing_jitter
from labqfl.calibration.phase_modulator import vpi_bias
from labqfl.calibration.visibility import loop_visibility

from labqfl.config import StationConfig
from labqfl.errors import CalibrationError
from labqfl.runs import RunRecord
from labqfl.station import Station

GROUPS = ("detector", "delays", "vpi", "visibility", "all")
CALIBRATION_FILE = "calibration.json"
CALIBRATED_STATION_FILE = "calibrated_station.toml"


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
                                           sweep_integration_s=0.5 if quick else 1.0,
                                           min_counts=100 if quick else 400,
                                           max_integration_s=10.0 if quick else 30.0)),
        ("timing_jitter", lambda: timing_jitter(ctx, detectors, target_clicks=20_000 if quick else 50_000)),
        ("efficiency", lambda: efficiency(ctx, detectors, duration_s=0.1 if quick else 0.2)),
    ]


def detector_all(ctx: CalContext, detectors: tuple[str, ...] = DETECTORS, quick: bool = False) -> list[ProcedureResult]:
    """Every detector procedure in the order of :func:`detector_procedures`; the first failure raises
    (``labqfl.calibration.calibrate`` instead records it and runs the others)."""
    return [call() for _, call in detector_procedures(ctx, detectors, quick=quick)]


@dataclass(frozen=True)
class ProcedureFailure:
    """A procedure that did not produce a result: its name and the one-line reason."""

    procedure: str
    message: str


@dataclass
class CalibrationReport:
    """Results of one ``calibrate`` session (``failures``: procedures that failed, in order)."""

    station: str
    results: list[ProcedureResult]
    document: dict[str, Any]
    calibrated_config: StationConfig
    files: dict[str, str] = field(default_factory=dict)
    failures: list[ProcedureFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def quantities(self) -> dict[str, Quantity]:
        return {q.name: q for r in self.results for q in r.quantities}


def _needs_gates(ctx: CalContext, detectors: tuple[str, ...]) -> bool:
    """Some gated detector has no gate delay calibrated in this session."""
    return any(ctx.station.detector(d).gated and f"{d}.gate_delay_ps" not in ctx.known for d in detectors)


def _arming(station: Station) -> list[tuple[Any, str, Any]]:
    """The on/off settings a failed procedure's safe state switches off (laser output, detectors
    armed, shutters, modulator outputs), as (instrument, attribute, value) at session start."""
    cfg = station.config
    objs: list[Any] = [station.laser]
    objs += [station.detector(d) for d in cfg.detectors]
    for c in cfg.client_names:
        objs += [station.attenuator(c), station.phase_modulator(c)]
    out = []
    for obj in objs:
        for attr in ("output_enabled", "enabled", "shutter_closed"):
            if hasattr(type(obj), attr) or attr in getattr(obj, "__dict__", {}):
                try:
                    out.append((obj, attr, getattr(obj, attr)))
                except Exception:  # an unreadable setting is simply not re-armed
                    continue
    return out


def _rearm(ctx: CalContext, arming: list[tuple[Any, str, Any]]) -> None:
    """After a failure left the station in its safe state, put the on/off settings back to where
    the session found them so the next procedure starts from the operator's state."""
    for obj, attr, value in arming:
        try:
            if getattr(obj, attr) != value:
                setattr(obj, attr, value)
        except Exception as exc:  # the next procedure will report what it cannot do
            ctx.step(f"could not restore {getattr(obj, 'name', obj)}.{attr} after a failure ({exc})")


def plan_group(ctx: CalContext, group: str, *, quick: bool = False, detectors: tuple[str, ...] = ("D0", "D1"),
               clients: list[str] | None = None,
               pair: tuple[str, str] | None = None) -> list[tuple[str, Callable[[], ProcedureResult]]]:
    """The procedures of ``group`` in the order they run, as (name, call) pairs.

    Order in ``all``: detectors (gate delay first, see :func:`detector_procedures`) → delays → Vπ →
    visibility. Every procedure that needs light in the gates of a gated detector comes after the
    gate delay: a group other than ``detector`` that meets a gated detector without a gate delay
    calibrated in this session starts with :func:`gate_delay`.
    """
    if group not in GROUPS:
        raise CalibrationError(f"unknown calibration {group!r}; expected one of {', '.join(GROUPS)}")
    out: list[tuple[str, Callable[[], ProcedureResult]]] = []
    todo = ("detector", "delays", "vpi", "visibility") if group == "all" else (group,)
    if todo[0] != "detector" and _needs_gates(ctx, ("D0", "D1")):
        out.append(("gate_delay", lambda: gate_delay(ctx, ("D0", "D1"))))
    for g in todo:
        if g == "detector":
            out += detector_procedures(ctx, detectors, quick=quick)
        elif g == "delays":
            out.append(("delays", lambda: channel_delays(ctx, detectors, fine_duration_s=0.02 if quick else 0.03)))
        elif g == "vpi":
            out.append(("vpi", lambda: vpi_bias(ctx, clients, n_points=25 if quick else 41,
                                                integration_s=0.01 if quick else 0.02)))
        else:
            out.append(("visibility", lambda: loop_visibility(ctx, pair, n_points=16 if quick else 24,
                                                              point_duration_s=0.03 if quick else 0.05)))
    return out


def run_group(ctx: CalContext, group: str, *, quick: bool = False, detectors: tuple[str, ...] = ("D0", "D1"),
              clients: list[str] | None = None, pair: tuple[str, str] | None = None,
              failures: list[ProcedureFailure] | None = None) -> list[ProcedureResult]:
    """Run one group (``detector``, ``delays``, ``vpi``, ``visibility`` or ``all``; order in
    :func:`plan_group`).

    ``failures`` None: the first failing procedure raises its CalibrationError. Otherwise each
    failure is appended to ``failures`` and the remaining procedures still run; a progress
    callback that raises, and Ctrl-C, still end the session (re-raised).
    """
    plan = plan_group(ctx, group, quick=quick, detectors=detectors, clients=clients, pair=pair)
    arming = _arming(ctx.station) if failures is not None else []
    out: list[ProcedureResult] = []
    stopped: list[BaseException] = []
    user_progress = ctx.progress
    if user_progress is not None:
        def progress(message: str) -> None:
            try:
                user_progress(message)
            except BaseException as exc:  # the caller asked to stop: end the session, not just this procedure
                stopped.append(exc)
                raise
        ctx.progress = progress
    try:
        for name, call in plan:
            try:
                out.append(call())
            except CalibrationError as exc:
                if failures is None or stopped:
                    raise
                failures.append(ProcedureFailure(name, str(exc).strip().splitlines()[0] if str(exc).strip() else name))
                ctx.step(f"{name} failed; continuing with the next procedure")
                _rearm(ctx, arming)
    finally:
        ctx.progress = user_progress
    return out


def calibrate(config: StationConfig, group: str, *, runs_dir: str | Path | None = None, seed: int | None = None,
              progress: Callable[[str], None] | None = None, quick: bool = False, make_plots: bool = True,
              base_dir: Path | None = None, station: Station | None = None,
              segments: Callable[[Station, float], Any] | None = None,
              confirm_placement: Callable[[str], bool] | None = None, **kw: Any) -> CalibrationReport:
    """Open the station, run ``group``, write ``calibration.json``, the plots and the calibrated
    station file into a new run folder, close the station. ``seed`` overrides
    ``simulation.seed`` (simulated instruments) and seeds the bootstrap. ``confirm_placement``:
    :attr:`CalContext.confirm_placement` (the operator's confirmation that a real power-meter head moved).

    A failing procedure does not stop the session: the files hold every procedure that succeeded
    and ``calibration.json`` lists the failures (``"failures": {procedure: reason}``), as does
    :attr:`CalibrationReport.failures`. When every procedure failed no calibrated station file is
    written (``files`` has no ``station_toml``; ``calibration.json`` records the failures, with no
    quantity, and ``calibrate apply`` refuses it)."""
    if seed is not None:
        sim = config.simulation.model_copy(update={"seed": int(seed)})
        config = config.model_copy(update={"simulation": sim})
    own = station is None
    st = Station(config, base_dir=base_dir) if station is None else station
    try:
        rec = RunRecord.create(f"calibrate-{group}", config, runs_dir, snapshot=st.snapshot())
        try:
            ctx = CalContext(st, record=rec, progress=progress, seed=config.simulation.seed if seed is None else int(seed),
                             make_plots=make_plots, segments=segments, confirm_placement=confirm_placement)
            failures: list[ProcedureFailure] = []
            results = run_group(ctx, group, quick=quick, failures=failures, **kw)
            doc = calibration_document(st.name, results, simulated=st.config.all_simulated, seed=ctx.seed)
            for r in results:
                doc["procedures"][r.procedure]["plots"] = [str(Path(p).relative_to(rec.path)) for p in r.plots]
            doc["failures"] = {f.procedure: f.message for f in failures}
            cal_path = write_calibration(rec.path / CALIBRATION_FILE, doc)
            files = {"run": str(rec.path), "calibration": str(cal_path)}
            new_cfg = apply_calibration(config, ctx.known)
            if results:  # every procedure failed: the station is not calibrated, no "calibrated" file of it
                files["station_toml"] = str(write_station_toml(new_cfg, rec.path / CALIBRATED_STATION_FILE))
            rec.write_metrics({"calibration": str(cal_path.name), "quantities": doc["quantities"],
                               "failures": doc["failures"]})
            return CalibrationReport(st.name, results, doc, new_cfg, files, failures)
        finally:
            rec.close()
    finally:
        if own:
            st.close()


__all__ = ["CALIBRATED_STATION_FILE", "CALIBRATION_FILE", "GROUPS", "CalibrationReport", "ProcedureFailure", "calibrate",
           "plan_group", "run_group"]
