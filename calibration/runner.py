"""Run calibration groups on a station, save the results in a run folder and apply them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labqfl.calibration.core import CalContext, ProcedureResult, Quantity
from labqfl.calibration.delays import channel_delays
from labqfl.calibration.detector import detector_all
from labqfl.calibration.files import (
    apply_calibration,
    calibration_document,
    write_calibration,
    write_station_toml,
)
from labqfl.calibration.phase_modulator import vpi_bias
from labqfl.calibration.visibility import loop_visibility

from labqfl.config import StationConfig
from labqfl.errors import CalibrationError
from labqfl.runs import RunRecord
from labqfl.station import Station

GROUPS = ("detector", "delays", "vpi", "visibility", "all")
CALIBRATION_FILE = "calibration.json"
CALIBRATED_STATION_FILE = "calibrated_station.toml"


@dataclass
class CalibrationReport:
    """Results of one ``calibrate`` session."""

    station: str
    results: list[ProcedureResult]
    document: dict[str, Any]
    calibrated_config: StationConfig
    files: dict[str, str] = field(default_factory=dict)

    @property
    def quantities(self) -> dict[str, Quantity]:
        return {q.name: q for r in self.results for q in r.quantities}


def run_group(ctx: CalContext, group: str, *, quick: bool = False, detectors: tuple[str, ...] = ("D0", "D1"),
              clients: list[str] | None = None, pair: tuple[str, str] | None = None) -> list[ProcedureResult]:
    """Run one group (``detector``, ``delays``, ``vpi``, ``visibility`` or ``all``, in that order)."""
    if group not in GROUPS:
        raise CalibrationError(f"unknown calibration {group!r}; expected one of {', '.join(GROUPS)}")
    out: list[ProcedureResult] = []
    todo = ("detector", "delays", "vpi", "visibility") if group == "all" else (group,)
    for g in todo:
        if g == "detector":
            out += detector_all(ctx, detectors, quick=quick)
        elif g == "delays":
            out.append(channel_delays(ctx, detectors, fine_duration_s=0.02 if quick else 0.03))
        elif g == "vpi":
            out.append(vpi_bias(ctx, clients, n_points=25 if quick else 41, integration_s=0.01 if quick else 0.02))
        else:
            out.append(loop_visibility(ctx, pair, n_points=16 if quick else 24, point_duration_s=0.03 if quick else 0.05))
    return out


def calibrate(config: StationConfig, group: str, *, runs_dir: str | Path | None = None, seed: int | None = None,
              progress: Callable[[str], None] | None = None, quick: bool = False, make_plots: bool = True,
              base_dir: Path | None = None, station: Station | None = None, **kw: Any) -> CalibrationReport:
    """Open the station, run ``group``, write ``calibration.json``, the plots and the calibrated
    station file into a new run folder, close the station. ``seed`` overrides
    ``simulation.seed`` (simulated instruments) and seeds the bootstrap."""
    if seed is not None:
        sim = config.simulation.model_copy(update={"seed": int(seed)})
        config = config.model_copy(update={"simulation": sim})
    own = station is None
    st = Station(config, base_dir=base_dir) if station is None else station
    try:
        rec = RunRecord.create(f"calibrate-{group}", config, runs_dir, snapshot=st.snapshot())
        try:
            ctx = CalContext(st, record=rec, progress=progress, seed=config.simulation.seed if seed is None else int(seed),
                             make_plots=make_plots)
            results = run_group(ctx, group, quick=quick, **kw)
            doc = calibration_document(st.name, results, simulated=st.config.all_simulated, seed=ctx.seed)
            for r in results:
                doc["procedures"][r.procedure]["plots"] = [str(Path(p).relative_to(rec.path)) for p in r.plots]
            cal_path = write_calibration(rec.path / CALIBRATION_FILE, doc)
            new_cfg = apply_calibration(config, ctx.known)
            toml_path = write_station_toml(new_cfg, rec.path / CALIBRATED_STATION_FILE)
            rec.write_metrics({"calibration": str(cal_path.name), "quantities": doc["quantities"]})
            return CalibrationReport(st.name, results, doc, new_cfg,
                                     {"run": str(rec.path), "calibration": str(cal_path), "station_toml": str(toml_path)})
        finally:
            rec.close()
    finally:
        if own:
            st.close()


__all__ = ["CALIBRATED_STATION_FILE", "CALIBRATION_FILE", "GROUPS", "CalibrationReport", "calibrate", "run_group"]
