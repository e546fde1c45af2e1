"""Thorlabs PM100USB optical power meter (PM100 family, SCPI over USB-TMC).

Wraps PyMeasure's :class:`pymeasure.instruments.thorlabs.ThorlabsPM100USB` (which reads the
sensor head's ID and flags at open). PyMeasure clips out-of-range wavelengths silently; this
driver refuses them with ``ValueError`` using the head's own range (``SENS:CORR:WAV? MIN|MAX``).
Averaging uses ``SENS:AVER:COUN`` (samples, 1 … 10000); power is ``MEAS:POW?`` [W].

``MEAS:POW?`` answers in the meter's selected unit, so on open the driver writes ``SENS:POW:UNIT W``
(``SENSe:POWer[:DC]:UNIT W|DBM``, "Sets the power unit W or dBm": Thorlabs' PM100 SCPI command table as
transcribed in clade/ThorlabsPM100, ``ThorlabsPM100.py``, ``SensePowerDc.unit``; the short form leaves
out the optional DC node) and checks ``SENS:POW:UNIT?`` = W (again in :meth:`status`). A head whose
flags say it is not a power sensor (an energy head) is refused at open. ``*IDN?`` must name a Thorlabs
PM100-family console (checked first). The head's largest power range ``SENS:POW:RANG:UPP? MAX``
(``SENSe:POWer[:DC]:RANGe[:UPPer]``, same table and short form) is read at open: a ``MEAS:POW?`` reading
must be one number from the head's negative floor (photodiode heads −1 µW, thermal −1 mW) up to that
range (+10 %); a two-value reply, a reading above the range (wrong unit) and the SCPI overflow value
9.9E+37 are refused.
"""

from __future__ import annotations

import warnings
from typing import Any

from pymeasure.adapters import Adapter
from pymeasure.instruments.thorlabs import ThorlabsPM100USB as _PM100USB

from labqfl.config import InstrumentConfig
from labqfl.errors import InstrumentError, InstrumentReplyError
from labqfl.instruments.interfaces import PowerMeter

from ._base import Identity, MessageDriver

#: Plausible wavelength replies of any PM100 head [nm] (widest Thorlabs head ranges lie inside).
WAVELENGTH_NM = (100.0, 30_000.0)
#: Plausible replies to ``SENS:POW:RANG:UPP? MAX`` [W] (Thorlabs' largest thermal heads measure kW).
MAX_HEAD_RANGE_W = 1e4
#: A reading may exceed the selected range a little before the console reports overrange; above this
#: factor times the head's largest range it is not a power this head measured.
OVERRANGE = 1.1
#: Most negative reading of a photodiode head (sensor type 1) [W]: its zero offset is nW; thermal and
#: pyroelectric heads drift by up to tens of µW after zeroing, allowed down to ``NEGATIVE_FLOOR_W``.
PHOTODIODE_FLOOR_W = -1e-6


class ThorlabsPM100USB(MessageDriver, PowerMeter):
    """PM100USB console + photodiode/thermal head as a :class:`PowerMeter`.

    Takes no options; its wavelength range is the sensor head's, read at open (not declared)."""

    #: ``*IDN?`` of a PM100-family console, "Thorlabs,PM100USB,<serial>,<firmware>" (PM100D/PM100USB manuals,
    #: SCPI common commands); checked before the sensor head is queried
    IDENTITY = Identity("a Thorlabs PM100-family power meter (PM100USB, PM100D, PM100A)", r"^\s*Thorlabs\s*,\s*PM1\d\d")

    def __init__(self, name: str, config: InstrumentConfig, *, adapter: Adapter | None = None) -> None:
        super().__init__(name, config, adapter=adapter)

    def _on_open(self) -> None:
        assert self.link.adapter is not None
        self._read_identity()  # the right instrument before anything else is sent

        def build() -> _PM100USB:
            with warnings.catch_warnings():  # PyMeasure's "SCPI support unknown" FutureWarning
                warnings.simplefilter("ignore", FutureWarning)
                try:
                    return _PM100USB(self.link.adapter)  # queries SYST:SENSOR:IDN?
                except OSError as exc:  # PyMeasure: "No sensor connected."
                    raise InstrumentError(f"power meter reports no sensor head ({exc})", instrument=self.name,
                                          resource=self.resource, command="SYST:SENSOR:IDN?") from exc

        self.pm = self.link.call("SYST:SENSOR:IDN?", build)
        if not self.pm.is_power_sensor:  # e.g. an energy head (flags bit 1 clear): MEAS:POW? is meaningless
            raise InstrumentError(f"sensor head {self.pm.sensor_name} is not a power sensor (SYST:SENSOR:IDN? flags "
                                  f"{sum(b << i for i, b in enumerate(self.pm.flags))}); expected a photodiode or "
                                  f"thermal power head", instrument=self.name, resource=self.resource,
                                  command="SYST:SENSOR:IDN?")
        self._wl_range = (
            self.link.call_float("SENS:CORR:WAV? MIN", lambda: self.pm.wavelength_min, *WAVELENGTH_NM, "nm"),
            self.link.call_float("SENS:CORR:WAV? MAX", lambda: self.pm.wavelength_max, *WAVELENGTH_NM, "nm"),
        )
        # PyMeasure caches the range on first use; hand it the values already read.
        self.pm._wavelength_min, self.pm._wavelength_max = self._wl_range
        # the head's largest power range: readings above it are not this head's
        self.max_power_w = self.link.query_float("SENS:POW:RANG:UPP? MAX", 1e-9, MAX_HEAD_RANGE_W, "W")
        # MEAS:POW? answers in the selected unit: select watts and check the meter took it
        self.link.write("SENS:POW:UNIT W")
        self.check_power_unit()

    def check_power_unit(self) -> None:
        """Refuse a meter whose power unit is not W (``SENS:POW:UNIT?``; dBm would be read as watts)."""
        unit = self.link.query("SENS:POW:UNIT?")
        if unit.strip().upper() != "W":
            raise InstrumentReplyError(f"power unit is {unit!r}; expected 'W' (MEAS:POW? is read in watts)",
                                       instrument=self.name, resource=self.resource, command="SENS:POW:UNIT?")

    @property
    def sensor(self) -> str:
        """Name and serial number of the sensor head."""
        return f"{self.pm.sensor_name} #{self.pm.sensor_sn}"

    def _get_wavelength_nm(self) -> float:
        return self.link.call_float("SENSE:CORR:WAV?", lambda: self.pm.wavelength, *WAVELENGTH_NM, "nm")

    def _set_wavelength_nm(self, v: float) -> None:
        if not self.pm.wavelength_settable:
            raise ValueError(f"sensor {self.sensor} does not allow setting the wavelength")
        self.link.call("SENSE:CORR:WAV", lambda: setattr(self.pm, "wavelength", v))
        self.link.check_errors("SENSE:CORR:WAV")

    # the head's own range (SENS:CORR:WAV? MIN|MAX, read at open)
    wavelength_nm = PowerMeter.wavelength_nm.within(lambda s: s._wl_range[0], lambda s: s._wl_range[1]).via(
        _get_wavelength_nm, _set_wavelength_nm)

    averaging = PowerMeter.averaging.scpi("SENS:AVER:COUN?", "SENS:AVER:COUN {value:d}", cast=int)

    #: most negative reading accepted [W]: after a zero adjustment a head in the dark reads small
    #: negative powers (offset noise: nW for photodiode heads, up to tens of µW for thermal ones); a
    #: reading below −1 mW means a wrong zero or a wrong unit, and is refused
    NEGATIVE_FLOOR_W = -1e-3

    def power_floor_w(self) -> float:
        """Most negative reading accepted for this head [W]: :data:`PHOTODIODE_FLOOR_W` for a photodiode head
        (``SYST:SENSOR:IDN?`` type 1, PM100D manual §6.4), :data:`NEGATIVE_FLOOR_W` for thermal/pyro heads."""
        try:
            photodiode = float(self.pm.sensor_type) == 1
        except (TypeError, ValueError):
            photodiode = False
        return PHOTODIODE_FLOOR_W if photodiode else self.NEGATIVE_FLOOR_W

    def power_w(self) -> float:
        """Measured optical power [W]: one number (``MEAS:POW?``), from the head's zero-offset floor
        (:meth:`power_floor_w`) to its largest range (``SENS:POW:RANG:UPP? MAX``, read at open) times
        :data:`OVERRANGE`; anything else (two values, a reading in another unit or above the head's range,
        the SCPI overflow 9.9E+37) is one :class:`InstrumentReplyError` naming the reply and the range."""
        return self.link.query_float("MEAS:POW?", self.power_floor_w(), self.max_power_w * OVERRANGE, "W")

    def status(self) -> dict[str, Any]:
        st = super().status()
        with self.lock:
            self.check_power_unit()
            st.update(sensor=self.sensor, power_unit="W", power_w=self.power_w())
        return st
