"""Thorlabs MBX modulator bias controller (also the bias section of an MX transmitter) holding a client's
Mach–Zehnder intensity modulator at its lock point, while the decoy levels come from the client's
pattern generator.

**Command set** (all strings from a published source; nothing here is labqfl's own):

* Thorlabs, *Remote Control User Guide for the MX / MBX / TLX1 / TLX2 Series* (TTN116413-D04,
  Rev. E, 2022), chapter 2, "Supported Commands", firmware V1.9.4 and later: the commands are
  SCPI-like; a command may end in ``<NL>``, ``<CR>``, ``<CR><NL>`` or ``<NL><CR>`` and "for every
  SCPI message that is sent to the instrument that warrants a response, the instrument terminates
  the returned response with a ``<NL>`` character" (§2, p. 4) — this driver ends commands and
  replies with LF. Its set commands are written ``<HEADER>: <value>`` and, as §2.6 says of each VOA
  set command, "returns 1 on receipt of command": this driver reads that ``1`` after every set
  command and refuses any other acknowledgement.
* The MZM section of the guide (§2.4, "Mach-Zehnder Modulator Bias Control Commands") was not
  available to this project in full; the MZM command strings, their arguments and the mode
  numbers are those of PyMeasure's maintained driver for this series
  (``pymeasure.instruments.thorlabs.thorlabsmbxseries``, ``ThorlabsMBXSeriesMZM`` and ``MzmMode``,
  with its protocol tests): ``MZM:MODE: <n>`` / ``MZM:MODE?`` (0 off, 1 auto peak, 2 auto null,
  3 auto quadrature +, 4 auto quadrature −, 5/6 hold quadrature ±, 7 manual, 8/9 auto power ±),
  ``MZM:HOLD:VOLTAGE: <mV>`` / ``MZM:HOLD:VOLTAGE?`` (manual bias set point in mV, −10 … 10 V),
  ``MZM:VOLTAGE?`` (bias voltage now applied, V), ``MZM:SETPOINT?`` (1 while stable at the set
  point), ``MZM:CALIBRATING?``, ``MZM:RESET`` (run a bias calibration; replies 1), ``MZM:TAP:MW?``
  (power at the MZM tap, mW). The acknowledgement ``1`` of ``MZM:MODE:`` and ``MZM:HOLD:VOLTAGE:``
  is taken from the guide's convention (§2.6) and PyMeasure's ``MZM:RESET`` test; PyMeasure itself
  writes those two without reading a reply and uses CR terminations — if a unit disagrees, the
  driver reports a timeout or an unexpected acknowledgement naming the command, never a silent
  misread. Identity: ``*IDN?`` (the guide's commands are modelled on IEEE 488.2; PyMeasure's class
  is a SCPI instrument). Serial: 115200 baud (PyMeasure), USB (Silicon Labs UART) or RS-232 with a
  null modem.

**Naming rule (review s31, D1), stated here as it stands.** The MZM command strings (the part of
this driver that moves the bias) come from a third-party driver, PyMeasure's
``thorlabsmbxseries.py``; no vendor manual with the MZM command table (§2.4 of the guide) was found.
PyMeasure also terminates with CR (``thorlabsmbxseries.py``), not the LF assumed here. The driver
is nevertheless named after the vendor model (``ThorlabsMBX``); whether to rename it to a generic
protocol-level driver is left to the project owner.

**Interfaces.** :class:`~labqfl.instruments.interfaces.ModulatorBiasController` (lock point ``null``
→ mode 2, ``peak`` → 1, ``quad+`` → 3, ``quad-`` → 4, ``manual`` → 7; bias output off = mode 0,
so the lock point is kept by the driver while the output is off and written when it is turned on)
and :class:`~labqfl.instruments.interfaces.IntensityModulator` for the role ``C<k>.attenuator``:
the decoy levels, their drive voltages and the extinction floor are those of
:class:`~labqfl.drivers.mz_intensity_modulator.GenericMZIntensityModulator` (ideal push–pull MZM
biased at null, T(V) = sin²(πV/(2Vπ))); the per-slot pattern comes from the pattern generator.
The MBX's built-in VOA (§2.6) is not used by this role.

Simulated counterpart: the pyvisa-sim device ``labqfl/sim_backends/visa/thorlabs_mbx.yaml``
(``visa_library = "@sim:thorlabs_mbx.yaml"``), which answers these commands as documented above.
Safe state: bias output off (``MZM:MODE: 0``).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from labqfl.config import InstrumentConfig
from labqfl.errors import InstrumentReplyError
from labqfl.instruments.interfaces import ModulatorBiasController

from ._base import Identity, SerialOptions
from .mz_intensity_modulator import GenericMZIntensityModulator, GenericMZIntensityModulatorOptions

#: ``MZM:MODE`` numbers (PyMeasure's ``MzmMode``) of the lock points labqfl uses.
MZM_OFF = 0
MZM_MODES = {"peak": 1, "null": 2, "quad+": 3, "quad-": 4, "manual": 7}
#: every mode number the instrument may report (``MzmMode``), for error messages
MZM_MODE_NAMES = {0: "OFF", 1: "AUTOPEAK", 2: "AUTONULL", 3: "AUTOQUADPOS", 4: "AUTOQUADNEG", 5: "HOLDQUADPOS",
                  6: "HOLDQUADNEG", 7: "MANUAL", 8: "AUTOPOWERPOS", 9: "AUTOPOWERNEG"}
ACK = "1"


class ThorlabsMBXOptions(GenericMZIntensityModulatorOptions, SerialOptions):
    """``options`` of a :class:`ThorlabsMBX` role: the modulator's Vπ, peak mean photon number, extinction
    ratio and the lock point written on open (as :class:`GenericMZIntensityModulatorOptions`), and the serial
    line rate."""

    baud_rate: int = Field(115200, ge=300, le=4_000_000, description="serial line rate [baud] (115200: PyMeasure's "
                           "ThorlabsMBXSeries)")


class ThorlabsMBX(GenericMZIntensityModulator):
    """Thorlabs MBX bias controller + the client's Mach–Zehnder intensity modulator (module docstring)."""

    Options = ThorlabsMBXOptions
    #: the guide gives no *IDN? example: the reply must name Thorlabs and an MBX/MX unit
    #: ("Thorlabs,MBX,<serial>,<firmware>" assumed); ``options.identity_pattern`` replaces this check
    IDENTITY = Identity("a Thorlabs MBX/MX bias controller", r"^\s*Thorlabs\s*,\s*M(BX|X)")
    READ_TERMINATION = "\n"
    WRITE_TERMINATION = "\n"
    ERROR_QUERY = None  # the guide documents no error queue: every set command is acknowledged instead

    def __init__(self, name: str, config: InstrumentConfig, **kw: Any) -> None:
        self._lock_point: str = self.parse_options(name, config).bias_mode
        super().__init__(name, config, **kw)

    # -- acknowledged set commands ------------------------------------------------------------------
    def _setting_write(self, command: str) -> None:
        """A set command, then its acknowledgement: the guide's set commands return 1 on receipt."""
        reply = self.link.query(command)
        if reply != ACK:
            raise InstrumentReplyError(f"acknowledgement {reply!r}; expected {ACK!r} (command received)",
                                       instrument=self.name, resource=self.resource, command=command)

    def _mode_number(self) -> int:
        n = self.link.query_int("MZM:MODE?")
        if n not in MZM_MODE_NAMES:
            raise InstrumentReplyError(f"unknown MZM mode {n}; expected 0..9", instrument=self.name,
                                       resource=self.resource, command="MZM:MODE?")
        return n

    # -- ModulatorBiasController ----------------------------------------------------------------------
    def _get_output_enabled(self) -> bool:
        with self.lock:
            return self._mode_number() != MZM_OFF

    def _set_output_enabled(self, on: bool) -> None:
        with self.lock:
            self._setting_write(f"MZM:MODE: {MZM_MODES[self._lock_point] if on else MZM_OFF}")

    output_enabled = ModulatorBiasController.output_enabled.refine(
        doc="bias output on (MZM:MODE = the lock point) or off (MZM:MODE 0)").via(_get_output_enabled,
                                                                                  _set_output_enabled)

    def _get_mode(self) -> str:
        with self.lock:
            n = self._mode_number()
            if n == MZM_OFF:
                return self._lock_point
            for point, code in MZM_MODES.items():
                if code == n:
                    self._lock_point = point
                    return point
            raise InstrumentReplyError(f"MZM mode {n} ({MZM_MODE_NAMES[n]}) is not one of labqfl's lock points "
                                       f"{sorted(MZM_MODES)}; set one with mode = ...", instrument=self.name,
                                       resource=self.resource, command="MZM:MODE?")

    def _set_mode(self, point: str) -> None:
        with self.lock:
            on = self._mode_number() != MZM_OFF
            self._lock_point = point
            if on:  # the output stays on, now at the new point; off: written when it is turned on
                self._setting_write(f"MZM:MODE: {MZM_MODES[point]}")

    mode = ModulatorBiasController.mode.via(_get_mode, _set_mode)

    def _get_bias_voltage_v(self) -> float:
        with self.lock:
            if self._mode_number() == MZM_MODES["manual"]:
                return self.link.query_float("MZM:HOLD:VOLTAGE?") / 1000.0
            return self.link.query_float("MZM:VOLTAGE?")

    def _set_bias_voltage_v(self, volts: float) -> None:
        self._setting_write(f"MZM:HOLD:VOLTAGE: {round(volts * 1000)}")

    bias_voltage_v = ModulatorBiasController.bias_voltage_v.refine(
        doc="manual bias set point (MZM:HOLD:VOLTAGE, mV on the wire) in manual mode, else the applied bias "
            "(MZM:VOLTAGE?)").via(_get_bias_voltage_v, _set_bias_voltage_v)
    locked = ModulatorBiasController.locked.scpi("MZM:SETPOINT?", cast=bool)

    # -- MBX extras -----------------------------------------------------------------------------------
    def calibrate(self) -> None:
        """Run the controller's bias calibration (``MZM:RESET``, acknowledged with 1)."""
        self._setting_write("MZM:RESET")

    @property
    def calibrating(self) -> bool:
        """True while a bias calibration runs (``MZM:CALIBRATING?``)."""
        return self.link.query_bool("MZM:CALIBRATING?")

    @property
    def tap_power_mw(self) -> float:
        """Optical power at the modulator's tap photodiode [mW] (``MZM:TAP:MW?``)."""
        return self.link.query_float("MZM:TAP:MW?")
