"""Calibration of the Sagnac testbed through the Station's instrument interfaces (``labqfl.calibration``).

Procedures (each returns a :class:`ProcedureResult` of :class:`Quantity` s with 1σ uncertainties):

* :func:`dead_time_afterpulsing`, :func:`dark_counts`, :func:`gate_delay`, :func:`timing_jitter`,
  :func:`efficiency` (detectors; :func:`detector_all` runs them in order, gate delay first;
  rates and acquisition times follow each detector's dead time, SNSPD or InGaAs SPAD);
* :func:`vpi_bias` (phase-modulator Vπ and bias phase from a fringe fit);
* :func:`channel_delays` (time-tagger channel delays relative to the sync);
* :func:`loop_visibility` (interference visibility of a pair).

:func:`calibrate` runs a group on a station (every procedure, a failure recorded in
:class:`ProcedureFailure` and the rest still run) and writes ``calibration.json`` (schema
:data:`SCHEMA_VERSION`), PNG plots and a calibrated station file into a run folder;
:func:`apply_calibration` maps a calibration onto a :class:`~labqfl.config.StationConfig`.
Every procedure leaves the instruments safe on error or Ctrl-C. See docs/calibration.md.
"""

from __future__ import annotations

from labqfl.calibration.core import CalContext, ProcedureResult, Quantity
from labqfl.calibration.dark_count_rate import dark_counts
from labqfl.calibration.dead_time import dead_time_afterpulsing
from labqfl.calibration.delays import channel_delays
from labqfl.calibration.detection_efficiency import efficiency
from labqfl.calibration.files import (
    SCHEMA_VERSION,
    apply_calibration,
    calibration_document,
    quantities_from_doc,
    read_calibration,
    write_calibration,
    write_station_toml,
)
from labqfl.calibration.gate import gate_delay
from labqfl.calibration.jitter import timing_jitter
from labqfl.calibration.phase_modulator import vpi_bias
from labqfl.calibration.runner import (
    GROUPS,
    CalibrationReport,
    ProcedureFailure,
    calibrate,
    detector_all,
    detector_procedures,
    plan_group,
    run_group,
)
from labqfl.calibration.visibility import loop_visibility

__all__ = [
    "GROUPS",
    "SCHEMA_VERSION",
    "CalContext",
    "CalibrationReport",
    "ProcedureFailure",
    "ProcedureResult",
    "Quantity",
    "apply_calibration",
    "calibrate",
    "calibration_document",
    "channel_delays",
    "dark_counts",
    "dead_time_afterpulsing",
    "detector_all",
    "detector_procedures",
    "efficiency",
    "gate_delay",
    "loop_visibility",
    "plan_group",
    "quantities_from_doc",
    "read_calibration",
    "run_group",
    "timing_jitter",
    "vpi_bias",
    "write_calibration",
    "write_station_toml",
]
