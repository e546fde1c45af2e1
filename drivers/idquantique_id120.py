"""ID Quantique ID120 free-running silicon SPAD module over USB-TMC (VISA ``USB0::0x1DDC::0x0330::<sn>::INSTR``).

**Where the command set comes from.** ID Quantique's ID120 remote-control manual was not available
to us. The commands below are the ones of the open-source Instrumental driver for this module
(``instrumental/drivers/spad/id120.py``, "Driver for IDQuantique ID120 SPAD Module", class
``ID120``), written and used against real units at ``USB0::0x1DDC::0x0330::…::INSTR`` (lab scripts
that import it set the bias as ``Q_(int(bias_V * 1e6), 'uV')``, the threshold in µV, the
temperature in m°C, the integration time in ms, then ``run = True``). Every command is a plain
``<header> <integer>`` write or a ``<header>?`` query; replies end in LF. Below, "[I]" cites that
driver's attribute. The unit's own ``…:CAPABILITY?`` queries report its ranges.

==================================  =========================  ===================================
command                              meaning                    unit / range ([I])
==================================  =========================  ===================================
``*IDN?``                            identity                   ``identify()``
``BIAS:VOLTAGE <µV>`` / ``?``         APD bias voltage           µV, 0 … 250 000 000, step 80 000 [I ``bias``]
``BIAS:ERROR_STATUS?``               bias fault                 ``TRUE``/``FALSE`` [I ``bias_error``]
``THRESHOLD:VOLTAGE <µV>`` / ``?``    discriminator threshold    µV, 0 … 1 047 000, step 500 [I ``threshold``]
``DEADTIME:TIME <n>`` / ``?``         dead time                  declared µs, 40 … 1 000 000, step 40 [I ``deadtime``]
``COUNTERS:INTEGRATION_TIME <ms>``   counter window             ms, 200 … 100 000, step 200 [I ``integration_time``]
``COUNTERS:DETECTION_FREQ?``         count rate (last window)   Hz [I ``freq``]
``COUNTERS:DETECTION_COUNT?``        counts (last window)       [I ``count``]
``REG:TEMP_SET_POINT <m°C>`` / ``?``  cooler set point           m°C, −50 000 … −10 000, step 1000 [I ``set_temp``]
``REG:MEASURED_TEMP?``               measured temperature       m°C [I ``temp``]
``REG:RUN TRUE|FALSE`` / ``?``        run the module             [I ``run``]
``REG:STATE?``                       state text                 [I ``state``]
==================================  =========================  ===================================

**Naming rule (review s31, D1), stated here as it stands.** Every command string of this driver
comes from that third-party driver (Instrumental), not from an ID Quantique manual or SDK; no vendor
document with the ID120's remote-control commands was found. The driver is nevertheless named and
registered after the vendor model (``IDQuantiqueID120``); whether to rename it to a protocol-level
generic driver (as ``GenericBitDrivenPhaseModulator``) is left to the project owner.

The dead-time unit is the one that driver declares (µs); it is the least certain entry: check
``DEADTIME:CAPABILITY?`` on your unit. There is no error queue in that command set, so a refused
value is seen by reading the setting back.

**labqfl's use.** ``enabled`` = ``REG:RUN``; arming ramps ``BIAS:VOLTAGE`` up to the operating bias
(the role's ``bias_current_ua`` field, which holds a voltage [V] for SPADs) in steps of at most
``options.bias_step_v`` at ``options.bias_ramp_v_per_s``; disarming and the safe state (also on
SIGTERM/SIGINT through the Station) ramp it down to 0 V and stop the module. The safe state does
not depend on the bias read-back: if ``BIAS:VOLTAGE?`` answers garbage (or a write fails) the bias
is ramped down from the last value written in this session (or set to 0 V at once when none was),
``REG:RUN FALSE`` is sent in any case, and the first failure is raised after it. Replies out of the
table's range (a negative count rate, a bias outside 0 … 250 V) are refused. The module is
free-running: ``gated`` is always False, and the ID120 sets no efficiency of its own (it follows
the bias): ``efficiency`` is the nominal value of the station file. On open the station's
operating point is written: dead time and cooler set point (``temperature_k``); the bias stays 0 V
until the detector is armed.

**Spectral range.** The ID120 is a silicon SPAD: 350 … 1000 nm (ID Quantique, ID120 datasheet,
"spectral range"). It is blind at 1550 nm, so a station whose ``laser.wavelength_nm`` lies outside
that range is refused at load.
"""

from __future__ import annotations

import time
from typing import Any, cast

from pydantic import Field
from pymeasure.adapters import Adapter

from labqfl.config import DetectorConfig, DriverOptions, InstrumentConfig, StationConfig
from labqfl.errors import InstrumentReplyError
from labqfl.instruments.interfaces import PhotonDetector
from labqfl.instruments.settings import Setting, in_range

from ._base import (
    FreeRunning,
    Identity,
    IdentityPattern,
    Limit,
    MessageDriver,
    check_range,
    off_anyway,
    ramp_points,
    run_ramp,
)

BIAS_UV = (0, 250_000_000, 80_000)
THRESHOLD_UV = (0, 1_047_000, 500)
DEADTIME_US = (40, 1_000_000, 40)
INTEGRATION_MS = (200, 100_000, 200)
TEMP_MC = (-50_000, -10_000, 1000)
SPECTRAL_RANGE_NM = (350.0, 1000.0)


class IDQuantiqueID120Options(DriverOptions):
    """``options`` of an :class:`IDQuantiqueID120` role."""

    threshold_mv: float = Field(25.0, ge=0.0, le=THRESHOLD_UV[1] / 1e3, description="discriminator threshold [mV]")
    bias_ramp_v_per_s: float = Field(50.0, gt=0.0, le=10_000.0, description="average bias ramp rate [V/s]")
    bias_step_v: float = Field(5.0, gt=0.0, le=250.0, description="largest bias step of a ramp [V]")
    identity_pattern: IdentityPattern = None


def _snap(value: float, lo: int, hi: int, step: int) -> int:
    """Nearest allowed integer setting (the module accepts multiples of ``step`` from ``lo``)."""
    return min(hi, max(lo, lo + round((value - lo) / step) * step))


class IDQuantiqueID120(FreeRunning, MessageDriver, PhotonDetector):
    """Free-running Si SPAD module (USB-TMC command set of the module docstring)."""

    free_running_name = "the ID120"

    READ_TERMINATION = "\n"
    WRITE_TERMINATION = "\r\n"  # pyvisa's default, as in the source driver (it sets only the read termination)
    ERROR_QUERY = None
    Options = IDQuantiqueID120Options
    #: the model name is public, the exact *IDN? reply is not (no vendor manual): the reply must name the
    #: ID120; ``options.identity_pattern`` replaces this check for a unit that answers otherwise
    IDENTITY = Identity("an ID Quantique ID120", r"\bID\s*120\b")
    SPECTRAL_RANGE_NM = SPECTRAL_RANGE_NM

    max_bias = BIAS_UV[1] / 1e6
    bias_unit = "V"

    @classmethod
    def config_limits(cls, options: Any) -> dict[str, Limit]:
        lo, hi, _ = cls.bias.limits(cls)
        return {"dead_time_ns": cls.dead_time_ns.limits(), "bias_current_ua": (lo, hi, "V (SPAD bias)"),
                "temperature_k": cls.temperature_setpoint_k.limits()}

    def __init__(self, name: str, config: InstrumentConfig, *, adapter: Adapter | None = None) -> None:
        o = self.parse_options(name, config)
        self.name = name  # for the setting's error before the session opens
        self._nominal_efficiency = float(getattr(config, "efficiency", 0.1))
        self._bias_setpoint_v = IDQuantiqueID120.bias.validate(self, getattr(config, "bias_current_ua", 0.0))
        self.bias_ramp_v_per_s, self.bias_step_v = o.bias_ramp_v_per_s, o.bias_step_v
        self._last_bias_v: float | None = None  # last bias written in this session [V]
        super().__init__(name, config, adapter=adapter)

    # -- low level --------------------------------------------------------------------------------
    def _query_flag(self, command: str) -> bool:
        reply = self.link.query(command).upper()
        if reply not in ("TRUE", "FALSE"):
            raise InstrumentReplyError(f"unexpected reply {reply!r}; expected TRUE or FALSE", instrument=self.name,
                                       resource=self.resource, command=command)
        return reply == "TRUE"

    def _write_bias_v(self, volts: float) -> None:
        uv = _snap(volts * 1e6, *BIAS_UV)
        self.link.write(f"BIAS:VOLTAGE {uv:d}")
        self._last_bias_v = uv / 1e6

    @property
    def bias_voltage_v(self) -> float:
        """Bias voltage applied now [V] (``BIAS:VOLTAGE?``, µV on the wire, 0 … 250 V)."""
        return self.link.query_int("BIAS:VOLTAGE?", BIAS_UV[0], BIAS_UV[1], "µV") / 1e6

    def _ramp_bias(self, target_v: float) -> None:
        with self.lock:
            v0 = self.bias_voltage_v
            if abs(v0 - target_v) * 1e6 < BIAS_UV[2] / 2:
                return
            run_ramp(ramp_points(v0, target_v, self.bias_step_v), self.bias_ramp_v_per_s, self.bias_step_v,
                     self._write_bias_v)

    # -- settings (rules: PhotonDetector's; ranges and units on the wire: the table above) -------------
    def _get_enabled(self) -> bool:
        """Module running (``REG:RUN?``)."""
        return self._query_flag("REG:RUN?")

    def _set_enabled(self, on: bool) -> None:
        if on:
            self.link.write("REG:RUN TRUE")
            self._ramp_bias(self._bias_setpoint_v)
        else:
            with self.lock:
                off_anyway(self, self._bias_down, self._stop, "the module (REG:RUN FALSE)")

    def _bias_down(self) -> None:
        """Bias ramped to 0 V from the value read back; if that read fails, from the last bias written in
        this session (steps down only), else straight to 0 V — then the read failure is raised."""
        try:
            self._ramp_bias(0.0)
        except Exception:
            try:
                if self._last_bias_v is not None and self._last_bias_v > 0:
                    run_ramp(ramp_points(self._last_bias_v, 0.0, self.bias_step_v), self.bias_ramp_v_per_s,
                             self.bias_step_v, self._write_bias_v)
                else:
                    self._write_bias_v(0.0)
            except Exception as exc:  # the read failure is the one to report
                self.log.warning("bias ramp-down after a failed read failed too: %s", exc)
            raise

    def _stop(self) -> None:
        self.link.write("REG:RUN FALSE")

    enabled = PhotonDetector.enabled.via(_get_enabled, _set_enabled)

    def _get_bias(self) -> float:
        """Operating bias voltage [V], applied (ramped) while the module is armed."""
        return self._bias_setpoint_v

    def _set_bias(self, v: float) -> None:
        self._bias_setpoint_v = v
        if self.enabled:
            self._ramp_bias(v)

    bias = PhotonDetector.bias.via(_get_bias, _set_bias)

    # nominal detection efficiency from the station file (the ID120 sets it through the bias)
    efficiency = PhotonDetector.efficiency.kept_in("_nominal_efficiency")
    threshold_mv: Setting[float] = Setting(
        "mV", "discriminator threshold", validator=in_range(0.0, THRESHOLD_UV[1] / 1e3, "mV"),
        get_command="THRESHOLD:VOLTAGE?", set_command="THRESHOLD:VOLTAGE {value:d}", cast=int,
        get_process=lambda uv: uv / 1e3, set_process=lambda mv: _snap(mv * 1e3, *THRESHOLD_UV))
    dead_time_ns = PhotonDetector.dead_time_ns.within(DEADTIME_US[0] * 1e3, DEADTIME_US[1] * 1e3).scpi(
        "DEADTIME:TIME?", "DEADTIME:TIME {value:d}", cast=int, get_process=lambda us: us * 1e3,
        set_process=lambda ns: _snap(ns / 1e3, *DEADTIME_US))
    temperature_setpoint_k: Setting[float] = Setting(
        "K", "cooler set point", validator=in_range(TEMP_MC[0] / 1e3 + 273.15, TEMP_MC[1] / 1e3 + 273.15, "K"),
        get_command="REG:TEMP_SET_POINT?", set_command="REG:TEMP_SET_POINT {value:d}", cast=int,
        get_process=lambda mc: mc / 1e3 + 273.15, set_process=lambda k: _snap((k - 273.15) * 1e3, *TEMP_MC))
    # measured APD temperature (the module reports m°C)
    temperature_k = PhotonDetector.temperature_k.scpi("REG:MEASURED_TEMP?", cast=int,
                                                      get_process=lambda mc: mc / 1e3 + 273.15)

    def apply_operating_point(self, station: StationConfig) -> None:
        """Dead time, cooler set point and threshold of the station file; bias 0 V until armed."""
        cfg = cast(DetectorConfig, self.config)
        with self.lock:
            self.dead_time_ns = cfg.dead_time_ns
            self.temperature_setpoint_k = cfg.temperature_k
            self.threshold_mv = self.opts.threshold_mv
            if not self.enabled:
                self._ramp_bias(0.0)

    def safe_state(self) -> None:
        """Bias ramped down to 0 V, module stopped."""
        self.enabled = False

    # -- measurements -----------------------------------------------------------------------------
    def count_rate_hz(self, integration_s: float = 0.2) -> float:
        """Counts per second over one counter window (0.2 … 100 s, in 0.2 s steps)."""
        s = check_range("integration_s", integration_s, INTEGRATION_MS[0] / 1e3, INTEGRATION_MS[1] / 1e3, "s")
        ms = _snap(s * 1e3, *INTEGRATION_MS)
        with self.lock:
            self.link.write(f"COUNTERS:INTEGRATION_TIME {ms:d}")
            time.sleep(ms / 1e3)  # the module publishes the rate after the window closes
            return float(self.link.query_int("COUNTERS:DETECTION_FREQ?", 0, None, "Hz"))

    def status(self) -> dict[str, Any]:
        st = super().status()
        with self.lock:
            st.update(enabled=self.enabled, bias_v=self.bias_voltage_v, bias_fault=self._query_flag("BIAS:ERROR_STATUS?"),
                      state=self.link.query("REG:STATE?"), temperature_k=round(self.temperature_k, 2))
        return st
