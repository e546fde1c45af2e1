"""Instrument interfaces. ``drivers/`` (real) and ``sim_backends/`` (simulated) implement them;
nothing above the :class:`~labqfl.station.Station` knows which one it holds."""

from labqfl.instruments.base import Instrument, Setting, TagBlock
from labqfl.instruments.interfaces import (
    PHASE_ALPHABET_RAD,
    IntensityModulator,
    PhaseModulator,
    PhotonDetector,
    PowerMeter,
    PulsedLaser,
    TimeTagger,
    VariableAttenuator,
)
from labqfl.instruments.settings import SettingError

__all__ = [
    "PHASE_ALPHABET_RAD",
    "Instrument",
    "IntensityModulator",
    "PhaseModulator",
    "PhotonDetector",
    "PowerMeter",
    "PulsedLaser",
    "Setting",
    "SettingError",
    "TagBlock",
    "TimeTagger",
    "VariableAttenuator",
]
