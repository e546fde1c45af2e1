"""Real instrument drivers, by vendor and model. Only :mod:`labqfl.station` imports this package.

:data:`DRIVERS` maps the ``driver`` name used in station files to the class; each class takes
``(role, config)`` and implements one interface of :mod:`labqfl.instruments`.
"""

from __future__ import annotations

from labqfl.errors import ConfigError
from labqfl.instruments.base import Instrument

from ._base import DriverDeclaration
from ._link import resolve_visa_library
from .bit_phase_modulator import GenericBitDrivenPhaseModulator
from .idquantique_id120 import IDQuantiqueID120
from .keysight_33500b import Keysight33500B
from .keysight_n7764a import KeysightN7764A
from .mz_intensity_modulator import GenericMZIntensityModulator
from .singlequantum_eos import SingleQuantumEos
from .swabian_pulsestreamer import SwabianPulseStreamer, SwabianPulseStreamerClock
from .swabian_timetagger import SwabianTimeTagger
from .thorlabs_mbx import ThorlabsMBX
from .thorlabs_pm100usb import ThorlabsPM100USB
from .thorlabs_pro8000 import ThorlabsPRO8000

DRIVERS: dict[str, type[Instrument]] = {
    cls.__name__: cls
    for cls in (ThorlabsPRO8000, Keysight33500B, KeysightN7764A, IDQuantiqueID120, SingleQuantumEos, SwabianTimeTagger,
                ThorlabsPM100USB, SwabianPulseStreamer, SwabianPulseStreamerClock, GenericMZIntensityModulator,
                ThorlabsMBX, GenericBitDrivenPhaseModulator)
}


def get_driver(name: str) -> type[Instrument]:
    """The driver class called ``name``; :class:`ConfigError` listing the known ones otherwise."""
    try:
        return DRIVERS[name]
    except KeyError:
        raise ConfigError(f"unknown driver {name!r}; expected 'sim' or one of {sorted(DRIVERS)}") from None


__all__ = ["DRIVERS", "DriverDeclaration", "GenericBitDrivenPhaseModulator", "GenericMZIntensityModulator", "IDQuantiqueID120", "Keysight33500B", "KeysightN7764A",
           "SingleQuantumEos", "SwabianPulseStreamer", "SwabianPulseStreamerClock", "SwabianTimeTagger",
           "ThorlabsMBX", "ThorlabsPM100USB", "ThorlabsPRO8000", "get_driver", "resolve_visa_library"]
