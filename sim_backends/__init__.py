"""Simulated instruments and the Sagnac-loop physics model (``labqfl.sim_backends``).

Public API:

* :func:`client_log` — a seeded client's counter-based generator / modulation log;
  :class:`CsprngChoiceLog` — a CSPRNG client's (the default; its log is the client's secret).
* :class:`SagnacTestbed` — the Monte-Carlo of laser, loop, detectors and time tagger.
* :func:`create_simulated_instruments` — every ``driver = "sim"`` role of a station, sharing one
  testbed (called by the Station).
* :class:`Recording`, :func:`read_recording`, :class:`RecordingWriter`, :func:`record` — HDF5
  recordings and their replay.

See docs/simulator.md.
"""

from __future__ import annotations

from labqfl.sim_backends.instruments import (
    SimulatedAttenuator,
    SimulatedDetector,
    SimulatedLaser,
    SimulatedPhaseModulator,
    SimulatedPowerMeter,
    SimulatedTimeTagger,
    create_simulated_instruments,
)
from labqfl.sim_backends.qrng import ClientQRNGLog, CsprngChoiceLog, client_log
from labqfl.sim_backends.recording import (
    Recording,
    RecordingWriter,
    ReplayTimeTagger,
    read_recording,
    record,
)
from labqfl.sim_backends.testbed import SagnacTestbed

__all__ = [
    "ClientQRNGLog",
    "CsprngChoiceLog",
    "Recording",
    "RecordingWriter",
    "ReplayTimeTagger",
    "SagnacTestbed",
    "SimulatedAttenuator",
    "SimulatedDetector",
    "SimulatedLaser",
    "SimulatedPhaseModulator",
    "SimulatedPowerMeter",
    "SimulatedTimeTagger",
    "client_log",
    "read_recording",
    "record",
    "create_simulated_instruments",
]
