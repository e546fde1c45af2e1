"""Keysight N7764A 4-channel variable optical attenuator (SCPI, LAN/USB/GPIB).

One labqfl role drives one channel (``options.channel``, default 1); up to four roles share one
unit, one channel each (the station opens one session for them). **Channel numbering: 1, 3, 5, 7.**
The N77xx family addresses a function by its port (slot) number in ``:INP<n>`` / ``:OUTP<n>``, and
the N7764A's four attenuators sit on ports 1, 3, 5 and 7 (each attenuator's input port; the even
ports are its outputs). Sources: the Keysight "N77xx Series Programming Guide" (SCPI commands of
the N7744A/45A/47A/48A, N7751A/52A, N7761A/62A/64A, N7766A/68A; ``:INPut[n]`` …) and two
independent open drivers that enumerate the N7764A's valid slots as ``[1, 3, 5, 7]`` (``pyinst``,
``ModelN7764A.params``, in both of its published variants). The guide's own table of port numbers
was not reachable from here; a unit that answers ``:INP2:ATT?`` with an error confirms it.
Commands (Keysight N77xx programming guide, ``:INPut`` / ``:OUTPut`` subsystems)::

    :INP<ch>:ATT <dB>          attenuation [dB]                   :INP<ch>:ATT?  → dB
    :INP<ch>:WAV <m>           calibration wavelength [m]         :INP<ch>:WAV?  → m
    :OUTP<ch>:STAT <0|1>       output (shutter) open = 1          :OUTP<ch>:STAT? → 0/1
    SYST:ERR?                  error queue, ``<code>,"<message>"``
    *IDN?                      identity, checked on open: ``Keysight Technologies,N7764A,…``

**The attenuation the analysis assumes** (review s36 H1 b). ``options.attenuation_db`` is this channel's
attenuation for the station's signal mean photon number μ (the client's ``intensities[0]``): the value the
lab's intensity calibration finds with the power meter at the client's output (docs/lab_setup.md). The
operating point writes it with ``:INP<n>:ATT`` (shutter closed) and reads it back with ``:INP<n>:ATT?``;
every attenuation written through this driver is read back the same way and refused when the unit holds
another value (difference above 0.01 dB, the resolution the driver writes being 0.001 dB). Opening the
shutter (``:OUTP<n>:STAT 1``) is refused, before the command is sent, when ``options.attenuation_db`` is
not set, or when ``:INP<n>:ATT?`` no longer reads what labqfl last set (the front panel changed it). A
procedure that sets another attenuation on purpose (the calibration's steps) may open the shutter there;
a warning says the station's μ holds only at ``options.attenuation_db``.

The attenuation limit is ``min(config.max_attenuation_db, options.max_db)`` with
``options.max_db`` = 45 dB by default (set it to your unit's specified range). The options are
typed (:class:`KeysightN7764AOptions`). The driver declares the calibrated wavelength range of
``:INP:WAV`` (1260 … 1640 nm) as its spectral range, so a station whose laser lies outside it is
refused at load.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pymeasure.adapters import Adapter

from labqfl.config import DriverOptions, InstrumentConfig, StationConfig
from labqfl.errors import InstrumentError
from labqfl.instruments.interfaces import VariableAttenuator

from ._base import Identity, MessageDriver

WAVELENGTH_NM = (1260.0, 1640.0)
DEFAULT_MAX_DB = 45.0
CHANNELS = (1, 3, 5, 7)
#: largest |read-back − written| attenuation accepted [dB] (the driver writes 0.001 dB steps)
ATT_TOLERANCE_DB = 0.01


class KeysightN7764AOptions(DriverOptions):
    """``options`` of a :class:`KeysightN7764A` role."""

    channel: Literal[1, 3, 5, 7] = Field(1, description="VOA channel serving this role (the N7764A numbers them 1, 3, 5, 7)")
    max_db: float = Field(DEFAULT_MAX_DB, gt=0, le=100.0, description="specified attenuation range of the unit [dB]")
    attenuation_db: float | None = Field(
        None, ge=0.0, le=100.0, description="this channel's attenuation for the station's signal μ [dB], from the "
        "lab's intensity calibration; written at open; None: the shutter is never opened")

    @model_validator(mode="after")
    def _within_range(self) -> KeysightN7764AOptions:
        if self.attenuation_db is not None and self.attenuation_db > self.max_db:
            raise ValueError(f"attenuation_db ({self.attenuation_db:g} dB) is above max_db ({self.max_db:g} dB); "
                             f"expected 0 to max_db")
        return self


class KeysightN7764A(MessageDriver, VariableAttenuator):
    """One channel of a Keysight N7764A VOA as a :class:`VariableAttenuator`."""

    Options = KeysightN7764AOptions
    SPECTRAL_RANGE_NM = WAVELENGTH_NM
    #: ``*IDN?`` (IEEE 488.2 common command, N77xx programming guide): "Keysight Technologies,N7764A,<serial>,
    #: <firmware>" (units sold before 2014 answer "Agilent Technologies")
    IDENTITY = Identity("a Keysight N7764A", r"^\s*(Keysight|Agilent)( Technologies)?\s*,\s*N7764A\b")
    CHANNELS = CHANNELS

    def __init__(self, name: str, config: InstrumentConfig, *, adapter: Adapter | None = None) -> None:
        opts = self.parse_options(name, config)
        self.channel = opts.channel
        self.max_attenuation_db = min(float(getattr(config, "max_attenuation_db", DEFAULT_MAX_DB)), opts.max_db)
        self.operating_attenuation_db = opts.attenuation_db
        self._att_written: float | None = None  # the attenuation labqfl last set and read back [dB]
        super().__init__(name, config, adapter=adapter)

    def apply_operating_point(self, station: StationConfig) -> None:
        """Calibration wavelength = the laser's; shutter closed until a procedure opens it; then the
        attenuation ``options.attenuation_db`` (read back), or, without one, a warning that the shutter stays
        closed."""
        with self.lock:
            self.wavelength_nm = station.laser.wavelength_nm
            self.shutter_closed = True
            if self.operating_attenuation_db is None:
                self.log.warning("options.attenuation_db is not set: the shutter stays closed (set the attenuation "
                                 "the lab's calibration finds for the signal μ)")
            else:
                self.attenuation_db = self.operating_attenuation_db

    def _setting_write(self, command: str) -> None:
        """Each write, with the attenuation checks of the module docstring: ``:OUTP<n>:STAT 1`` only after
        :meth:`_require_attenuation`, ``:INP<n>:ATT <dB>`` read back at once."""
        ch = self.channel
        if command == f":OUTP{ch}:STAT 1":
            self._require_attenuation()
        super()._setting_write(command)
        if command.startswith(f":INP{ch}:ATT "):
            wanted = float(command.split()[1])
            self._att_written = None
            now = self.attenuation_db
            if abs(now - wanted) > ATT_TOLERANCE_DB:
                raise InstrumentError(f"{self.name}: {command} accepted but :INP{ch}:ATT? reads {now:.3f} dB; expected "
                                      f"{wanted:.3f} dB", instrument=self.name, resource=self.resource,
                                      command=f":INP{ch}:ATT?")
            self._att_written = now

    def _require_attenuation(self) -> None:
        """Refuse to open the shutter without a configured attenuation, or at one labqfl did not set."""
        ch, want = self.channel, self.operating_attenuation_db
        if want is None:
            raise InstrumentError(f"{self.name}: shutter not opened (:OUTP{ch}:STAT 1): options.attenuation_db is not "
                                  f"set; expected this channel's attenuation for the station's signal μ, from the lab's "
                                  f"intensity calibration", instrument=self.name, resource=self.resource,
                                  command=f":OUTP{ch}:STAT 1")
        if self._att_written is None:  # not written since open (no operating point): set it now
            self.attenuation_db = want
        assert self._att_written is not None
        now = self.attenuation_db
        if abs(now - self._att_written) > ATT_TOLERANCE_DB:
            raise InstrumentError(f"{self.name}: shutter not opened (:OUTP{ch}:STAT 1): :INP{ch}:ATT? reads {now:.3f} "
                                  f"dB, but {self._att_written:.3f} dB was set (changed at the unit?); expected "
                                  f"options.attenuation_db = {want:g} dB", instrument=self.name,
                                  resource=self.resource, command=f":INP{ch}:ATT?")
        if abs(now - want) > ATT_TOLERANCE_DB:
            self.log.warning("shutter opened at %.3f dB, set by a procedure, not at options.attenuation_db = %g dB: "
                             "the station's μ holds only there", now, want)

    attenuation_db = VariableAttenuator.attenuation_db.scpi(":INP{channel}:ATT?", ":INP{channel}:ATT {value:.3f}")
    shutter_closed = VariableAttenuator.shutter_closed.scpi(  # the output (STAT 1) is open when the shutter is not
        ":OUTP{channel}:STAT?", ":OUTP{channel}:STAT {value}", cast=bool,
        get_process=lambda on: not on, set_process=lambda closed: 0 if closed else 1)
    wavelength_nm = VariableAttenuator.wavelength_nm.within(*WAVELENGTH_NM).scpi(
        ":INP{channel}:WAV?", ":INP{channel}:WAV {value:.6e}", get_process=lambda m: m * 1e9,
        set_process=lambda nm: nm * 1e-9)

    def status(self) -> dict[str, object]:
        st = super().status()
        st.update(channel=self.channel, attenuation_db=self.attenuation_db, shutter_closed=self.shutter_closed,
                  operating_attenuation_db=self.operating_attenuation_db)
        return st
