"""The application layer: the use cases that the CLI, the GUI and the main job share.

Each front end parses its own arguments, makes **one** call here and renders the result; the
recipe itself (which instruments to arm, how distillation settings, key stores and the acquisition
ID are put together, how training is set up and its key supply checked) lives only here, so the
front ends cannot drift apart (issue 20; ARCHITECTURE.md "Rules between layers").

- :mod:`labqfl.app.station` — open a station, arm it for acquisition, name its tagger channels.
- :mod:`labqfl.app.acquire` — :func:`~labqfl.app.acquire.acquire` (``labqfl acquire``: open, arm,
  stream with progress, record, safe state, close) and :class:`~labqfl.app.acquire.Acquisition`
  (arm, stream in segments, count clicks per channel, safe state) for a station held open.
- :mod:`labqfl.app.calibrate` — :func:`~labqfl.app.calibrate.run_calibration` (every procedure
  of a group, the failures named, the files holding what succeeded) and
  :func:`~labqfl.app.calibrate.apply_calibration_file`.
- :mod:`labqfl.app.distill` — :class:`DistillSession`: block-size rule or forced block size, the
  nodes' key stores (always closed), the acquisition ID and the clients' logs asked from the
  Station (or the recording), the Distiller.
- :mod:`labqfl.app.training` — :class:`TrainingSetup`: task defaults, the secure-aggregation
  config (self-masks, threshold, DP), the bit budget, the key source with its pre-flight key
  check, the run and the summary extras (key cost, provenance), close.
- :mod:`labqfl.app.nodes` — :class:`NodeSet`: start a local set of node processes or connect to
  running nodes by address, check that each answers, acquire → distil across them (per-pair
  results and what each key's security rests on), stop only what it started.

Qt-free and free of CLI code (no typer, no rich): the import-graph test keeps it so.
"""

from __future__ import annotations

from labqfl.app.acquire import AcquireOptions, AcquireResult, Acquisition
from labqfl.app.calibrate import CalibrationOutcome, apply_calibration_file, run_calibration
from labqfl.app.distill import DistillOptions, DistillSession, distill_settings
from labqfl.app.nodes import NodeAcquisition, NodeSet, NodeSetError, PairOutcome, read_addresses
from labqfl.app.station import arm, channel_names, open_station
from labqfl.app.training import TrainingSettings, TrainingSetup

__all__ = ["AcquireOptions", "AcquireResult", "Acquisition", "CalibrationOutcome", "DistillOptions", "DistillSession",
           "NodeAcquisition", "NodeSet", "NodeSetError", "PairOutcome", "TrainingSettings", "TrainingSetup",
           "apply_calibration_file", "arm", "channel_names", "distill_settings", "open_station", "read_addresses",
           "run_calibration"]
