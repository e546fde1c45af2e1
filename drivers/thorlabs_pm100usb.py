"""Thorlabs PM100USB optical power meter (PM100 family, SCPI over USB-TMC).

Wraps PyMeasure's :class:`pymeasure.instruments.thorlabs.ThorlabsPM100USB` (which reads the
sensor head's ID and flags at open). PyMeasure clips out-of-range wavelengths silently; this
driver refuses them with ``ValueError`` using the head's own range (``SENS:CORR:WAV? MIN|MAX``).
Averaging uses ``SENS:AVER:COUN`` (samples, 1 … 10000); power is ``MEAS:POW?`` [W].
"""

from __future__ import annotations

import warnings
from typing import Any

from pymeasure.adapters import Adapter
from pymeasure.instruments.thorlabs import ThorlabsPM100USB as _PM100USB

from labqfl.config import InstrumentConfig
from labqfl.errors import InstrumentError
from labqfl.instruments.interfaces import PowerMeter

from ._base import MessageDriver


class ThorlabsPM100USB(MessageDriver, PowerMeter):
    """PM100USB console + photodiode/thermal head as a :class:`PowerMeter`.

    Takes no options; its wavelength range is the sensor head's, read at open (not declared)."""

    def __init__(self, name: str, config: InstrumentConfig, *, adapter: Adapter | None = None) -> None:
        super().__init__(name, config, adapter=adapter)

    def _on_open(self) -> None:
        assert self.link.adapter is not None

        def build() -> _PM100USB:
            with warnings.catch_warnings():  # PyMeasure's "SCPI support unknown" FutureWarning
                warnings.simplefilter("ignore", FutureWarning)
                try:
                    return _PM100USB(self.link.adapter)  # queries SYST:SENSOR:IDN?
                except OSError as exc:  # PyMeasure: "No sensor connected."
                    raise InstrumentError(f"power meter reports no sensor head ({exc})", instrument=self.name,
                                          resource=self.resource, command="SYST:SENSOR:IDN?") from exc

        self.pm = self.link.call("SYST:SENSOR:IDN?", build)
        self._identity = self.link.query("*IDN?")
        self._wl_range = (
            float(self.link.call("SENS:CORR:WAV? MIN", lambda: self.pm.wavelength_min)),
            float(self.link.call("SENS:CORR:WAV? MAX", lambda: self.pm.wavelength_max)),
        )
        # PyMeasure caches the range on first use; hand it the values already read.
        self.pm._wavelength_min, self.pm._wavelength_max = self._wl_range

    @property
    def sensor(self) -> str:
        """Name and serial number of the sensor head."""
        return f"{self.pm.sensor_name} #{self.pm.sensor_sn}"

    def _get_wavelength_nm(self) -> float:
        return float(self.link.call("SENSE:CORR:WAV?", lambda: self.pm.wavelength))

    def _set_wavelength_nm(self, v: float) -> None:
        if not self.pm.wavelength_settable:
            raise ValueError(f"sensor {self.sensor} does not allow setting the wavelength")
        self.link.call("SENSE:CORR:WAV", lambda: setattr(self.pm, "wavelength", v))
        self.link.check_errors("SENSE:CORR:WAV")

    # the head's own range (SENS:CORR:WAV? MIN|MAX, read at open)
    wavelength_nm = PowerMeter.wavelength_nm.within(lambda s: s._wl_range[0], lambda s: s._wl_range[1]).via(
        _get_wavelength_nm, _set_wavelength_nm)

    averaging = PowerMeter.averaging.scpi("SENS:AVER:COUN?", "SENS:AVER:COUN {value:d}", cast=int)

    def power_w(self) -> float:
        """Measured optical power [W]."""
        return float(self.link.call("MEAS:POW?", lambda: self.pm.power))

    def status(self) -> dict[str, Any]:
        st = super().status()
        st.update(sensor=self.sensor, power_w=self.power_w())
        return st
