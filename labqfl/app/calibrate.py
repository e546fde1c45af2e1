"""Calibration as one use case: run a group of procedures, write what succeeded, say what failed.

``labqfl calibrate {detector,delays,vpi,visibility,all}`` and the GUI's calibration panel call
:func:`run_calibration`; ``labqfl calibrate apply`` calls :func:`apply_calibration_file`::

    outcome = run_calibration(cfg, "all", runs_dir=out, quick=True, progress=print,
                              write_config=Path("station.cal.toml"))
    outcome.as_dict()          # station, group, files, quantities (value, uncertainty, unit, truth), failures
    outcome.failure_summary()  # None, or "2 of 7 calibration procedures failed (vpi, visibility); …"

A procedure that fails does not stop the others (:func:`labqfl.calibration.calibrate`): the run
folder's ``calibration.json`` and calibrated station file hold every procedure that succeeded, and
:attr:`CalibrationOutcome.failures` names the rest with their reasons (docs/calibration.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labqfl.config import StationConfig
from labqfl.serialize import refuse_existing

#: The fields of a calibrated quantity that a report shows (``true``: the simulator's value, simulated instruments only).
QUANTITY_FIELDS = ("value", "uncertainty", "unit", "true")


def groups() -> tuple[str, ...]:
    """The calibration groups, in the order ``labqfl calibrate all`` runs them (plus ``all``)."""
    from labqfl.calibration import GROUPS

    return tuple(GROUPS)


@dataclass
class CalibrationOutcome:
    """One calibration session: the library's :class:`~labqfl.calibration.CalibrationReport`, the
    group it ran, and the files written (``run``, ``calibration``, ``station_toml`` and, when asked
    for, ``written_config``)."""

    report: Any
    group: str
    files: dict[str, str]

    @property
    def station(self) -> str:
        return str(self.report.station)

    @property
    def failures(self) -> dict[str, str]:
        """Procedures that failed → their one-line reason, in the order they ran."""
        return {f.procedure: f.message for f in self.report.failures}

    @property
    def quantities(self) -> dict[str, dict[str, Any]]:
        """Every calibrated quantity: value, 1σ uncertainty, unit and (simulated) the true value."""
        return {n: {k: v for k, v in q.items() if k in QUANTITY_FIELDS}
                for n, q in self.report.document["quantities"].items()}

    def quantity_rows(self) -> list[dict[str, Any]]:
        """One row per quantity, procedure by procedure: name, the quantity's fields and its pull
        (deviation from the simulator's truth in σ; ``None`` on hardware)."""
        return [{"name": q.name, **q.as_dict(), "pull": q.pull} for r in self.report.results for q in r.quantities]

    def plots(self) -> list[str]:
        """Every fit's PNG plot, procedure by procedure."""
        return [str(p) for r in self.report.results for p in r.plots if p]

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` document of ``labqfl calibrate GROUP``."""
        doc = self.report.document
        return {"station": self.station, "group": self.group, "simulated": doc["simulated"],
                "schema_version": doc["schema_version"], "files": dict(self.files), "quantities": self.quantities,
                "failures": self.failures}

    def failure_summary(self) -> str | None:
        """``None`` when every procedure succeeded; else one line: how many failed, which, and that
        the files hold the ones that succeeded."""
        failures = self.failures
        if not failures:
            return None
        ok = len(self.report.results)
        return (f"{len(failures)} of {len(failures) + ok} calibration procedures failed "
                f"({', '.join(failures)}); the files hold the {ok} that succeeded")


def acquisition_segment(station: Any, duration_s: float) -> Any:
    """A calibration's acquisition of ``duration_s`` seconds: with clients on pattern generators one segment of an
    :class:`~labqfl.app.acquire.Acquisition` (not armed: the procedure armed what it needs), so each client streams
    its frames while the tags come in; otherwise the time tagger's stream."""
    if any(c.pattern_generator is not None for c in station.config.clients):
        from labqfl.app.acquire import Acquisition

        return Acquisition(station, arm=False).start(duration_s)
    return station.time_tagger.stream(duration_s)


def run_calibration(cfg: StationConfig, group: str, *, runs_dir: Path | None = None, seed: int | None = None,
                    quick: bool = False, make_plots: bool = True, base_dir: Path | None = None,
                    station: Any = None, write_config: Path | None = None, overwrite_config: bool = False,
                    progress: Callable[[str], None] | None = None,
                    confirm_placement: Callable[[str], bool] | None = None, **procedure_options: Any) -> CalibrationOutcome:
    """Run calibration ``group`` (:func:`groups`) on the station of ``cfg``.

    ``station``: an open Station to use (the GUI's; left open); ``None``: the station is opened
    (``base_dir``: folder of the station file) and closed again, its instruments safe. ``seed``
    overrides ``simulation.seed`` and seeds the bootstrap; ``quick``: shorter acquisitions;
    ``make_plots``: a PNG of every fit. The run folder goes under ``runs_dir`` (default
    ``$LABQFL_RUNS_DIR`` or ``./runs``); ``write_config`` also writes the calibrated station TOML
    there (only when at least one procedure succeeded: lab review s33 L8), refusing an existing file before
    anything runs unless ``overwrite_config``. ``progress(message)`` before each step; an exception it raises ends the session (a
    cancel). ``confirm_placement(position)``: asks the operator to move a real power-meter head and returns True
    once they confirm (efficiency; None: a real meter's placement is refused, the procedure fails).
    ``procedure_options``: ``detectors`` (detector), ``clients`` (vpi), ``pair`` (visibility).
    A failing procedure does not raise: see :attr:`CalibrationOutcome.failures`."""
    from labqfl.calibration import calibrate, write_station_toml

    if write_config is not None and not overwrite_config:
        refuse_existing(write_config)
    report = calibrate(cfg, group, runs_dir=runs_dir, seed=seed, progress=progress, quick=quick,
                       make_plots=make_plots, base_dir=base_dir, station=station, segments=acquisition_segment,
                       confirm_placement=confirm_placement, **procedure_options)
    files = dict(report.files)
    if write_config is not None and report.results:  # every procedure failed: nothing calibrated, nothing written
        files["written_config"] = str(write_station_toml(report.calibrated_config, write_config,
                                                         overwrite=overwrite_config))
    return CalibrationOutcome(report, group, files)


def apply_calibration_file(cfg: StationConfig, calibration: Path, output: Path, *,
                           overwrite: bool = False) -> dict[str, Any]:
    """Apply the calibration file ``calibration`` (``calibration.json`` of an earlier run) to the
    station ``cfg`` and write the result to the station TOML ``output`` (an existing one only when
    ``overwrite``): the station's name, both paths, the names of the quantities applied, those not
    applied (name → why) and those clipped into their allowed range (name → value, written, allowed).

    Nothing is written when a quantity is unknown, names a client or detector the station lacks, or
    lies outside its allowed range by more than its uncertainties allow
    (:func:`labqfl.calibration.files.check_quantities`, one-line :class:`~labqfl.errors.DataFormatError`)."""
    from labqfl.calibration import (
        apply_calibration,
        quantities_from_doc,
        read_calibration,
        write_station_toml,
    )
    from labqfl.calibration.files import check_quantities, station_quantity

    if not overwrite:
        refuse_existing(output)
    doc = read_calibration(calibration)
    quantities = quantities_from_doc(doc)
    check = check_quantities(cfg, quantities, str(calibration))
    new = apply_calibration(cfg, quantities)
    path = write_station_toml(new, output, overwrite=overwrite)
    # quantities written in another form than measured: a gated detector's afterpulse probability, measured
    # as registered (P·g) and written un-gated (P = P_reg/g) — say so, or calibration.json and the station
    # file seem to disagree 10-fold (F5 helper's note, review s34)
    converted = {}
    for n in check.applied:
        q = station_quantity(cfg, quantities[n])
        if q is not quantities[n] and q.details:
            converted[n] = {"measured": quantities[n].value, "written": q.value,
                            "gate_fraction": q.details.get("gate_fraction"), "why": "registered P·g → un-gated P"}
    return {"station": new.name, "calibration": str(calibration), "written": str(path),
            "applied": sorted(check.applied), "not_applied": check.not_applied, "clipped": check.clipped,
            "converted": converted}


__all__ = ["CalibrationOutcome", "acquisition_segment", "apply_calibration_file", "groups", "run_calibration"]
