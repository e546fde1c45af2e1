"""Thorlabs PRO8000 modular laser-diode controller driving the central node's pulsed laser.

Wraps PyMeasure's :class:`pymeasure.instruments.thorlabs.ThorlabsPro8000`: an LDC module (slot
``options.ld_slot``, default 1) sets the diode current and switches the laser; a TED module (slot
``options.tec_slot``, default 2) sets the diode temperature. The pulse train itself comes from the
external pattern generator that gates the diode, so:

* ``power_mw`` ↔ LD current through the diode's L–I line, P = slope·(I − I_th) for I > I_th
  (``options.slope_mw_per_ma`` default 0.1 mW/mA, ``options.threshold_ma`` default 10 mA,
  ``options.max_current_ma`` default 100 mA — take them from the diode's test sheet);
* ``wavelength_nm`` ↔ TEC set temperature, λ = λ0 + k·(T − T0) with λ0 = the station's
  ``laser.wavelength_nm`` at T0 = ``options.t0_c`` (25 °C), k = ``options.tuning_nm_per_k``
  (0.1 nm/K, typical DFB), T within ``options.temp_min_c`` … ``options.temp_max_c`` (15 … 35 °C);
* the options are typed (:class:`ThorlabsPRO8000Options`); ``laser.power_mw`` must lie on the
  L–I line within ``max_current_ma`` and is checked at station load;
* ``rep_rate_hz`` is the nominal rate of the external clock (the PRO8000 does not set it); it is
  recorded here so snapshots carry it;
* **current ramps**: while emission is on, the diode current only moves stepwise, at most
  ``options.ramp_step_ma`` (1 mA) per step and ``options.ramp_ma_per_s`` (20 mA/s) on average.
  Switching on sets 0 mA, turns the LDC on and ramps up to the set point; switching off (and the
  safe state, also on SIGTERM/SIGINT through the Station) ramps down to 0 mA, turns the LDC off and
  puts the set point back, so the operating point survives. A normal switch-off ramps all the way at the
  chosen rate; only an emergency stop (SIGTERM/SIGINT: the Station's and a node's signal handlers) lasts at
  most ``options.safe_ramp_max_s`` (30 s): a longer one (up to 4000 mA at 20 mA/s is 200 s, past systemd's 90 s
  stop timeout) is cut there with ``:LASER OFF`` at once, logged as a warning; the options warn when they are
  loaded if ``max_current_ma / ramp_ma_per_s`` exceeds it (review s36 lab2 L4). With emission off a set point is
  written directly (no current flows);
* on open the station's operating point is written (:meth:`apply_operating_point`): TEC set
  temperature for ``laser.wavelength_nm`` and the LD set point for ``laser.power_mw``, emission off;
* **operating mode**: the driver sets the diode *current* (``:ILD:SET``), so the LDC must run in constant-current
  mode. On open it reads ``:MODE?`` (``pro8.c`` v2.5.3 ``Pro8_LdcGetMode``: writes ``:MODE?``, reads one word,
  ``CC`` constant current or ``CP`` constant power; any other reply is refused). In ``CP`` mode with the output
  OFF it writes ``:MODE CC`` (``Pro8_LdcSetMode``, which sends ``:MODE CC`` or ``:MODE CP``), reads the mode back
  and logs a warning; with the output ON it refuses to open, in one line, and writes nothing more. Why switch
  rather than refuse: with the output off no current flows whatever the mode, and in ``CC`` mode the current
  is what this driver bounds (the ``:LIMC:SET`` software limit written just before, a set point read back within
  ``max_current_ma`` before every ``:LASER ON``, ramps), so switching is harmless and leaves the diode under the
  driver's checks; refusing would only send someone to the front panel. Why not switch with the output ON: the
  current would jump from what the monitor-diode loop drives to whatever ``:ILD:SET`` holds, unramped; and the
  driver's ramps act on ``:ILD:SET``, which does not drive a diode in ``CP`` mode, so the lab must switch the
  output off itself. :attr:`ThorlabsPRO8000.ld_mode` reads the mode; :meth:`status` and :meth:`snapshot` show it
  with the actual LD current (``:ILD:ACT?``).

Commands (PRO8000 manual, via PyMeasure): ``:SYST:ANSW VALUE``, ``:SLOT <n>``, ``:ILD:SET <A>``,
``:LASER ON|OFF``, ``:TEMP:SET <°C>``, error queue ``:SYST:ERR?``; the LD software current limit
``:LIMC:SET <A>`` (PyMeasure ``ThorlabsPro8000.LDCCurrentLimit``; Thorlabs' PRO800/8000 VXIpnp driver
``pro8.c`` v2.5.3, ``Pro8_LdcSetLdLimit``), the TEC output ``:TEC ON|OFF`` / ``:TEC?`` (PyMeasure
``TEDStatus``; ``pro8.c`` ``Pro8_TecSetPtOutput`` / ``Pro8_TecGetPtOutput``) and the actual TEC
temperature ``:TEMP:ACT?`` (``pro8.c`` ``Pro8_TecGetTemp``; not in PyMeasure 0.16's class); the actual LD current
``:ILD:ACT?`` (``pro8.c`` ``Pro8_LdcGetLdCurrent`` value 3, one number in A; not in PyMeasure 0.16's class); the
LDC operating mode ``:MODE?`` / ``:MODE CC|CP`` (``pro8.c`` ``Pro8_LdcGetMode`` / ``Pro8_LdcSetMode``; not in
PyMeasure 0.16's class).

**Safety checks.** On open ``:LIMC:SET`` is written with ``max_current_ma``, so the LDC itself refuses
more. ``apply_operating_point`` switches the TEC on (``:TEC ON``). Before ``:LASER ON`` the driver
requires a set point read back within 0 … ``max_current_ma``, the TEC on and ``|:TEMP:ACT? −
:TEMP:SET?|`` ≤ ``options.temp_tolerance_k`` (0.5 K), and refuses otherwise; after ``:LASER ON`` it reads
``:LASER?`` back and refuses (``:LASER OFF`` sent) when the LDC stayed off (interlock open), before any
current is ramped. The safe state does not
depend on read-backs: if ``:LASER?`` or ``:ILD:SET?`` answers garbage, or a ramp write fails,
``:LASER OFF`` and ``:ILD:SET 0`` are sent at once and the first failure is raised after them.
**End of an acquisition** (:meth:`acquisition_fault`, asked by :func:`labqfl.station.acquisition_faults`): the
actual LD current (``:ILD:ACT?``) must lie within ``options.current_tolerance_ma`` (default 1 mA) of what the LDC
should drive: the set point (``:ILD:SET?``) with the output on, 0 mA with it off. An open circuit or a current
clipped by the module's hardware limit (ILIM) reads otherwise and refuses the acquisition in one line naming
the LDC slot, both currents and the tolerance. The LDC module's accuracy figure could not be read here: set the
option from your module's data sheet (its laser-current accuracy, plus the reading's) if 1 mA does not fit. The
check assumes constant-current operation (in constant-power mode the current follows the monitor diode, not
``:ILD:SET``), which the driver makes sure of at open (``:MODE?``, above); a switch to ``CP`` at the front panel
during a run is not looked for at the end. A pyvisa-sim session (``…@sim``) gets the Python model of that
current (:mod:`labqfl.sim_backends.pro8000`, attached by the VISA link when it opens): its YAML cannot express it.
``wavelength_nm`` is computed from the TEC *set* temperature; :meth:`snapshot` says so and adds the
actual temperature and the wavelength it gives (``tec``).
"""

from __future__ import annotations

import contextvars
import time
import warnings
from typing import Any

from pydantic import Field, model_validator
from pymeasure.adapters import Adapter
from pymeasure.instruments.thorlabs import ThorlabsPro8000

from labqfl.config import DriverOptions, InstrumentConfig, StationConfig
from labqfl.errors import InstrumentError, InstrumentReplyError
from labqfl.instruments.base import emergency_since, in_emergency
from labqfl.instruments.interfaces import PulsedLaser
from labqfl.log import get_logger

from ._base import Identity, Limit, MessageDriver, off_anyway, ramp_points, run_ramp

_log = get_logger(__name__)

REP_RATE_HZ = (1.0, 10e9)
SLOTS = (1, 8)
TEC_C = (-50.0, 150.0)


class _RampCut(InstrumentError):
    """A current ramp stopped by an emergency stop (:meth:`ThorlabsPRO8000._ramp_to`) at ``reached_ma``."""

    def __init__(self, message: str, reached_ma: float, **where: Any) -> None:
        super().__init__(message, **where)
        self.reached_ma = reached_ma


#: True while a :class:`ThorlabsPRO8000` parses its options at open: the station's load said the warning already
_OPENING: contextvars.ContextVar[bool] = contextvars.ContextVar("pro8000_opening", default=False)


class ThorlabsPRO8000Options(DriverOptions):
    """``options`` of a :class:`ThorlabsPRO8000` role (take the diode values from its test sheet)."""

    ld_slot: int = Field(1, ge=SLOTS[0], le=SLOTS[1], description="mainframe slot of the LDC (current) module")
    tec_slot: int = Field(2, ge=SLOTS[0], le=SLOTS[1], description="mainframe slot of the TED (temperature) module")
    slope_mw_per_ma: float = Field(0.1, ge=1e-6, le=10.0, description="slope of the diode's L–I line [mW/mA]")
    threshold_ma: float = Field(10.0, ge=0.0, le=1000.0, description="threshold current [mA]")
    max_current_ma: float = Field(100.0, gt=0.0, le=4000.0, description="highest current the driver will set [mA]")
    t0_c: float = Field(25.0, ge=TEC_C[0], le=TEC_C[1], description="temperature at which λ = laser.wavelength_nm [°C]")
    tuning_nm_per_k: float = Field(0.1, ge=1e-4, le=10.0, description="temperature tuning of λ [nm/K]")
    temp_min_c: float = Field(15.0, ge=TEC_C[0], le=TEC_C[1], description="lowest TEC set point [°C]")
    temp_max_c: float = Field(35.0, ge=TEC_C[0], le=TEC_C[1], description="highest TEC set point [°C]")
    ramp_ma_per_s: float = Field(20.0, gt=0.0, le=100_000.0, description="average ramp rate of the diode current [mA/s]")
    ramp_step_ma: float = Field(1.0, gt=0.0, le=100.0, description="largest current step of a ramp [mA]")
    temp_tolerance_k: float = Field(0.5, gt=0.0, le=10.0, description="largest |actual − set| TEC temperature "
                                    "at which the laser may be switched on [K]")
    safe_ramp_max_s: float = Field(30.0, ge=0.0, le=3600.0, description="longest ramp-down when switching off "
                                   "(safe state, SIGTERM) [s]; a longer one is cut there by :LASER OFF at once")
    current_tolerance_ma: float = Field(1.0, gt=0.0, le=1000.0, description="largest |actual (:ILD:ACT?) − expected| "
                                        "LD current at the end of an acquisition (expected: the set point with the "
                                        "output on, 0 mA off) [mA]; take it from the LDC module's accuracy")

    @model_validator(mode="after")
    def _consistent(self) -> ThorlabsPRO8000Options:
        if self.ld_slot == self.tec_slot:
            raise ValueError(f"ld_slot and tec_slot are both {self.ld_slot}; expected two different slots")
        if self.max_current_ma <= self.threshold_ma:
            raise ValueError(f"max_current_ma ({self.max_current_ma:g}) must be above threshold_ma ({self.threshold_ma:g})")
        if self.temp_min_c >= self.temp_max_c:
            raise ValueError(f"temp_min_c ({self.temp_min_c:g}) must be below temp_max_c ({self.temp_max_c:g})")
        ramp_s = self.max_current_ma / self.ramp_ma_per_s
        # review s36 lab2 L4: said at load, not at the first stop; not again when the driver opens (review s37 lab3)
        if ramp_s > self.safe_ramp_max_s and not _OPENING.get():
            _log.warning("ThorlabsPRO8000 options: a ramp-down from max_current_ma = %g mA at ramp_ma_per_s = %g mA/s "
                         "takes %.1f s, more than safe_ramp_max_s = %g s: a normal switch-off ramps all the way, but a "
                         "stop on SIGTERM/SIGINT is cut at %g s by :LASER OFF at the current reached (up to %.0f mA); "
                         "raise ramp_ma_per_s or safe_ramp_max_s (and the service's stop timeout above it) to avoid "
                         "that", self.max_current_ma, self.ramp_ma_per_s, ramp_s, self.safe_ramp_max_s,
                         self.safe_ramp_max_s, self.max_current_ma - self.ramp_ma_per_s * self.safe_ramp_max_s)
        return self

    @property
    def max_power_mw(self) -> float:
        """Highest average power the L–I line gives within ``max_current_ma`` [mW]."""
        return self.slope_mw_per_ma * (self.max_current_ma - self.threshold_ma)


class ThorlabsPRO8000(MessageDriver, PulsedLaser):
    """LDC + TED modules of a PRO8000 mainframe as a :class:`PulsedLaser`."""

    ERROR_QUERY = ":SYST:ERR?"
    Options = ThorlabsPRO8000Options
    #: ``*IDN?`` of a PRO8000/PRO800 mainframe: "PROFILE,PRO8000,<serial>,<firmware>" (PROFILE, the maker
    #: Thorlabs bought, as the PRO8000 manual's *IDN? example shows; later firmware may say Thorlabs)
    IDENTITY = Identity("a Thorlabs (PROFILE) PRO8000/PRO800 mainframe", r"^\s*(PROFILE|Thorlabs)\s*,\s*PRO\s*80{2,3}\b")

    @classmethod
    def config_limits(cls, options: Any) -> dict[str, Limit]:
        return {"rep_rate_hz": cls.rep_rate_hz.limits(), "power_mw": (0.0, options.max_power_mw, "mW")}

    @classmethod
    def parse_options(cls, name: str, config: InstrumentConfig) -> Any:
        """The options, without the load warning of a ramp longer than ``safe_ramp_max_s``: every station load
        (``validate_driver_roles``) gave it once already (it was logged two more times at open)."""
        token = _OPENING.set(True)
        try:
            return super().parse_options(name, config)
        finally:
            _OPENING.reset(token)

    def __init__(self, name: str, config: InstrumentConfig, *, adapter: Adapter | None = None) -> None:
        o = self.parse_options(name, config)
        self.ld_slot, self.tec_slot = o.ld_slot, o.tec_slot
        self.slope_mw_per_ma, self.threshold_ma, self.max_current_ma = o.slope_mw_per_ma, o.threshold_ma, o.max_current_ma
        self.t0_c, self.tuning_nm_per_k = o.t0_c, o.tuning_nm_per_k
        self.temp_range_c = (o.temp_min_c, o.temp_max_c)
        self.ramp_ma_per_s, self.ramp_step_ma = o.ramp_ma_per_s, o.ramp_step_ma
        self.temp_tolerance_k = o.temp_tolerance_k
        self.safe_ramp_max_s = o.safe_ramp_max_s
        self.current_tolerance_ma = o.current_tolerance_ma
        self.lambda0_nm = float(getattr(config, "wavelength_nm", 1550.0))
        self.name = name  # for the setting's error before the session opens
        self._rep_rate = ThorlabsPRO8000.rep_rate_hz.validate(self, getattr(config, "rep_rate_hz", 100e6))
        super().__init__(name, config, adapter=adapter)

    def _on_open(self) -> None:
        assert self.link.adapter is not None

        def build() -> ThorlabsPro8000:
            with warnings.catch_warnings():  # PyMeasure's "SCPI support unknown" FutureWarning
                warnings.simplefilter("ignore", FutureWarning)
                return ThorlabsPro8000(self.link.adapter)  # writes :SYST:ANSW VALUE

        self._read_identity()  # the right instrument before anything is written to it
        self.pm = self.link.call(":SYST:ANSW VALUE", build)
        self.link.check_errors(":SYST:ANSW VALUE")
        # the LDC's software current limit: the module itself refuses a set point above max_current_ma
        self._set(self.ld_slot, ":LIMC:SET", "LDCCurrentLimit", round(self.max_current_ma * 1e-3, 9))
        self._require_constant_current()

    def _require_constant_current(self) -> None:
        """The LDC in constant-current mode (``:MODE?`` ``CC``): a ``CP`` LDC with its output off is switched to
        ``CC`` (``:MODE CC``, read back), one with its output on is refused, left as it is (module docstring)."""
        mode = self.ld_mode
        if mode == "CC":
            return
        where = {"instrument": self.name, "resource": self.resource}
        if self._get_output_enabled():
            raise InstrumentError(
                f"LDC slot {self.ld_slot} runs in constant-power mode (:MODE? reads {mode}) with its output ON; "
                "expected constant current (CC): left as it is (no mode switch under current); switch the LDC "
                "output off at the front panel, then open again", command=":MODE?", **where)
        self._send(self.ld_slot, ":MODE CC")
        back = self.ld_mode
        if back != "CC":
            raise InstrumentError(f"LDC slot {self.ld_slot}: :MODE CC accepted but :MODE? reads {back}; expected CC "
                                  "(constant current): output left off", command=":MODE?", **where)
        self.log.warning("LDC slot %d was in constant-power mode (:MODE? %s) with its output off: switched to "
                         "constant current (:MODE CC), as this driver sets the diode current", self.ld_slot, mode)

    @property
    def ld_mode(self) -> str:
        """LDC operating mode: ``CC`` (constant current) or ``CP`` (constant power) (``:MODE?``, ``pro8.c``
        ``Pro8_LdcGetMode``); any other reply is refused."""
        reply = self._ask(self.ld_slot, ":MODE?").upper()
        if reply not in ("CC", "CP"):
            raise InstrumentReplyError(f"unexpected reply {reply!r}; expected CC (constant current) or CP (constant "
                                       "power)", instrument=self.name, resource=self.resource, command=":MODE?")
        return reply

    # -- slot-addressed I/O ------------------------------------------------------------------
    def _get(self, slot: int, label: str, attr: str) -> Any:
        def get() -> Any:
            self.pm.slot = slot
            return getattr(self.pm, attr)

        with self.lock:
            return self.link.call(label, get)

    def _ask(self, slot: int, command: str) -> str:
        """``command`` (a query PyMeasure's class lacks) to ``slot``; the stripped reply."""
        def ask() -> Any:
            self.pm.slot = slot
            return self.pm.ask(command)

        with self.lock:
            return str(self.link.call(command, ask)).strip()

    def _send(self, slot: int, command: str) -> None:
        """``command`` (a command PyMeasure's class lacks) to ``slot``, then the error queue."""
        def put() -> None:
            self.pm.slot = slot
            self.pm.write(command)

        with self.lock:
            self.link.call(command, put)
            self.link.check_errors(command)

    def _set(self, slot: int, label: str, attr: str, value: Any) -> None:
        def put() -> None:
            self.pm.slot = slot
            setattr(self.pm, attr, value)

        with self.lock:
            self.link.call(label, put)
            self.link.check_errors(label)

    # -- settings -------------------------------------------------------------------------------
    def _on_off(self, slot: int, command: str, attr: str) -> bool:
        reply = str(self._get(slot, command, attr)).strip().upper()
        if reply in ("ON", "1", "1.0"):
            return True
        if reply in ("OFF", "0", "0.0"):
            return False
        raise InstrumentReplyError(f"unexpected reply {reply!r}; expected ON or OFF", instrument=self.name,
                                   resource=self.resource, command=command)

    def _get_output_enabled(self) -> bool:
        return self._on_off(self.ld_slot, ":LASER?", "LDCStatus")

    def _set_output_enabled(self, on: bool) -> None:
        with self.lock:
            if on:
                self._switch_on()
            else:
                self._switch_off()

    def _switch_on(self) -> None:
        """From 0 mA up to the set point, stepwise — only with a set point within ``max_current_ma``
        and the TEC on and settled."""
        if self.output_enabled:
            return
        reason = in_emergency()  # before the first write: no :LASER ON, even at 0 mA, in an emergency (s39 LAB5)
        if reason is not None:
            raise InstrumentError(f"{self.name}: laser not switched on: the emergency stop ({reason}) runs; left off",
                                  instrument=self.name, resource=self.resource, command=":LASER ON")
        target = self.current_ma
        if target > self.max_current_ma + 1e-9:
            raise InstrumentReplyError(
                f"LD set point {target:g} mA (reply {target * 1e-3:g} A) is out of range; expected 0 to "
                f"{self.max_current_ma:g} mA (options.max_current_ma): laser left off", instrument=self.name,
                resource=self.resource, command=":ILD:SET?")
        self._require_tec_ready()
        self._write_current(0.0)
        self._set_ldc(True)
        self._require_emission(target)
        try:
            self._ramp_to(target, start=0.0)
        except _RampCut as cut:  # an emergency stop began: back to 0 mA from there, emission off, set point kept
            self._ramp_down_capped(cut.reached_ma)
            self._write_current(0.0)  # at 0 mA (again) before the LDC goes off
            self._set_ldc(False)
            self._write_current(target)
            raise

    def _require_emission(self, target_ma: float) -> None:
        """``:LASER?`` read back after ``:LASER ON`` (PyMeasure ``LDCStatus``; ``pro8.c``
        ``Pro8_LdcGetLdOutput``, which writes ``:LASER?`` and reads ON or OFF): an LDC that accepted the
        command without error but stays off (for example an open interlock or a protection trip) is refused before any current is ramped, with ``:LASER OFF`` sent and the set point put back."""
        if self._get_output_enabled():
            return
        try:
            self._set_ldc(False)
        finally:
            self._write_current(target_ma)
        raise InstrumentError(f"{self.name}: :LASER ON accepted but :LASER? reads OFF — interlock open? "
                              f"(emission stays off; set point kept at {target_ma:g} mA)", instrument=self.name,
                              resource=self.resource, command=":LASER?")

    def _switch_off(self) -> None:
        """Down to 0 mA stepwise, LDC off, set point back. A failed read or write on the way still ends
        with ``:LASER OFF`` (and the set point at 0 mA); the first failure is raised after that."""
        state: dict[str, Any] = {"on": True, "target": None, "ramped": False}

        def approach() -> None:
            if not self.output_enabled:
                state["on"] = False
                return
            state["target"] = self.current_ma
            self._ramp_down_capped(state["target"])
            state["ramped"] = True

        def off() -> None:
            if not state["on"]:
                return
            if not state["ramped"]:  # the ramp did not finish: emission off at once, set point to 0
                for command in (":LASER OFF", ":ILD:SET 0"):  # both sent before anything is read
                    self.link.call(f":SLOT {self.ld_slot}", lambda: setattr(self.pm, "slot", self.ld_slot))
                    self.link.write(command, check=False)
                self.link.check_errors(":LASER OFF")
                return
            self._set_ldc(False)
            self._write_current(state["target"])

        off_anyway(self, approach, off, "the laser (:LASER OFF)")

    def _ramp_down_capped(self, i0_ma: float) -> None:
        """From ``i0_ma`` to 0 mA at ``ramp_ma_per_s``. In an emergency stop only (SIGTERM/SIGINT:
        :func:`labqfl.instruments.base.in_emergency`; review s36 lab2 L4: not every switch-off) it lasts at most
        ``options.safe_ramp_max_s``: a ramp that would take longer (a high-current diode at a slow rate outlasts
        systemd's 90 s stop timeout and is SIGKILLed with emission on, review s36 L4) is cut there, logged; the
        caller then sends ``:LASER OFF`` at the current reached. The options warn at load when that can happen.
        A normal ramp already running when an emergency begins (another thread's switch-off: the emergency's
        own safe state waits for this driver's lock) is cut ``safe_ramp_max_s`` after the emergency began, at
        the latest (re-checked at each step and every 20 ms of a pause; review s37 lab3 M1)."""
        if i0_ma < 1e-9:
            return
        points = ramp_points(i0_ma, 0.0, self.ramp_step_ma)
        pause = self.ramp_step_ma / self.ramp_ma_per_s
        fit = int(self.safe_ramp_max_s / pause + 1e-9) + 1  # writes within the cap (the first one waits for none)
        if len(points) > fit and in_emergency():  # a normal stop: the lab's chosen ramp, all the way
            self.log.warning("ramp-down from %g mA at %g mA/s would take %.1f s, more than options.safe_ramp_max_s "
                             "= %g s: ramping for %g s, then :LASER OFF at once at %g mA", i0_ma,
                             self.ramp_ma_per_s, (len(points) - 1) * pause, self.safe_ramp_max_s,
                             (fit - 1) * pause, points[fit - 1])
            points = points[:fit]
        started = time.monotonic()

        def cut() -> bool:  # an emergency that began after this ramp did: its cap counts from its start
            since = emergency_since()
            return since is not None and since > started and time.monotonic() >= since + self.safe_ramp_max_s

        with self.lock:
            done = run_ramp(points, self.ramp_ma_per_s, self.ramp_step_ma, self._write_current, cut=cut)
        if done < len(points):
            self.log.warning("emergency stop (%s) during a normal ramp-down from %g mA: cut %g s after it began "
                             "(options.safe_ramp_max_s), :LASER OFF at once at %g mA", in_emergency(), i0_ma,
                             self.safe_ramp_max_s, points[done - 1] if done else i0_ma)

    def _require_tec_ready(self) -> None:
        """The TEC output on and the diode at its set temperature (within ``options.temp_tolerance_k``)."""
        if not self._on_off(self.tec_slot, ":TEC?", "TEDStatus"):
            raise InstrumentError(f"TEC (slot {self.tec_slot}) is off; expected it on before :LASER ON "
                                  f"(apply_operating_point switches it on)", instrument=self.name,
                                  resource=self.resource, command=":TEC?")
        t_set, t_act = self.temperature_c, self.temperature_act_c
        if abs(t_act - t_set) > self.temp_tolerance_k:
            raise InstrumentError(f"TEC not settled: actual {t_act:g} °C, set {t_set:g} °C; expected within "
                                  f"{self.temp_tolerance_k:g} K (options.temp_tolerance_k) before :LASER ON",
                                  instrument=self.name, resource=self.resource, command=":TEMP:ACT?")

    output_enabled = PulsedLaser.output_enabled.via(_get_output_enabled, _set_output_enabled)

    def _set_ldc(self, on: bool) -> None:
        self._set(self.ld_slot, f":LASER {'ON' if on else 'OFF'}", "LDCStatus", "ON" if on else "OFF")

    def _write_current(self, i_ma: float) -> None:
        self._set(self.ld_slot, ":ILD:SET", "LDCCurrent", round(i_ma * 1e-3, 9))

    def _ramp_to(self, target_ma: float, *, start: float | None = None) -> None:
        """Move the LD current to ``target_ma`` in steps of at most ``ramp_step_ma``, paced at
        ``ramp_ma_per_s``. An emergency stop (:func:`~labqfl.instruments.base.emergency_since`) stops it at
        the next step with :class:`InstrumentError` (switching on: ramped back down from there, emission off,
        the set point kept; review s37 lab3 M1)."""
        with self.lock:
            i0 = self.current_ma if start is None else start
            if abs(target_ma - i0) < 1e-9:
                return
            points = ramp_points(i0, target_ma, self.ramp_step_ma)
            done = run_ramp(points, self.ramp_ma_per_s, self.ramp_step_ma, self._write_current,
                            cut=lambda: emergency_since() is not None)
        if done < len(points):  # an emergency stop began: no current goes up any more (review s37 lab3 M1)
            reached = points[done - 1] if done else i0
            raise _RampCut(f"{self.name}: ramp to {target_ma:g} mA stopped at {reached:g} mA by an emergency stop "
                           f"({in_emergency()})", reached, instrument=self.name, resource=self.resource,
                           command=":ILD:SET")

    def safe_state(self) -> None:
        """Current ramped down to 0 mA, then emission off (the set point is kept). A bad read-back or a
        failed write still ends with ``:LASER OFF`` (set point 0 mA); the first failure is raised after."""
        self.output_enabled = False

    def apply_operating_point(self, station: StationConfig) -> None:
        """TEC temperature for ``laser.wavelength_nm`` and TEC output on, then the set point for
        ``laser.power_mw`` (emission stays off)."""
        cfg = station.laser
        with self.lock:
            self.wavelength_nm = cfg.wavelength_nm
            self._set(self.tec_slot, ":TEC ON", "TEDStatus", "ON")
            self.power_mw = cfg.power_mw

    def _get_number(self, slot: int, command: str, attr: str, lo: float | None, hi: float | None,
                    unit: str) -> float:
        def get() -> Any:
            self.pm.slot = slot
            return getattr(self.pm, attr) if attr else self.pm.ask(command)

        with self.lock:
            return self.link.call_float(command, get, lo, hi, unit)

    @property
    def current_ma(self) -> float:
        """LD current set point [mA] (a negative or non-numeric reply is refused)."""
        return self._get_number(self.ld_slot, ":ILD:SET?", "LDCCurrent", 0.0, None, "A") * 1e3

    @property
    def current_act_ma(self) -> float:
        """Actual LD current [mA], as the LDC measures it (``:ILD:ACT?``; a non-numeric reply is refused)."""
        return self._get_number(self.ld_slot, ":ILD:ACT?", "", None, None, "A") * 1e3

    def acquisition_fault(self) -> str | None:
        """After an acquisition (:func:`labqfl.station.acquisition_faults`): why the diode did not carry the current
        it should, or None. Expected: the set point (``:ILD:SET?``) with the output on (``:LASER?``), 0 mA with it
        off; the actual current (``:ILD:ACT?``) must lie within ``options.current_tolerance_ma`` of it. Read only."""
        with self.lock:
            on = self.output_enabled
            set_ma = self.current_ma
            act_ma = self.current_act_ma
        expected = set_ma if on else 0.0
        if abs(act_ma - expected) <= self.current_tolerance_ma:
            return None
        return (f"LDC slot {self.ld_slot}: actual LD current {act_ma:.4g} mA (:ILD:ACT?) differs from the "
                f"{expected:.4g} mA expected (set point {set_ma:.4g} mA, :ILD:SET?; output {'ON' if on else 'OFF'}) by "
                f"more than {self.current_tolerance_ma:g} mA (options.current_tolerance_ma): open circuit, or the "
                "current clipped by the module's limit?")

    @property
    def max_power_mw(self) -> float:
        """Highest average power of the L–I line within ``max_current_ma`` [mW]."""
        return self.slope_mw_per_ma * (self.max_current_ma - self.threshold_ma)

    def _get_power_mw(self) -> float:
        """Average optical power [mW] from the current set point through the L–I line."""
        return max(0.0, self.slope_mw_per_ma * (self.current_ma - self.threshold_ma))

    def _set_power_mw(self, p: float) -> None:
        i_ma = self.threshold_ma + p / self.slope_mw_per_ma if p > 0 else 0.0
        if self.output_enabled:
            self._ramp_to(i_ma)
        else:
            self._write_current(i_ma)

    power_mw = PulsedLaser.power_mw.within(0.0, lambda s: s.max_power_mw).via(_get_power_mw, _set_power_mw)

    @property
    def temperature_c(self) -> float:
        """TEC set temperature [°C]."""
        return self._get_number(self.tec_slot, ":TEMP:SET?", "TEDSetTemperature", *TEC_C, "°C")

    @property
    def temperature_act_c(self) -> float:
        """Actual (measured) TEC temperature [°C] (``:TEMP:ACT?``)."""
        return self._get_number(self.tec_slot, ":TEMP:ACT?", "", *TEC_C, "°C")

    @property
    def tec_on(self) -> bool:
        """TEC output on (``:TEC?``)."""
        return self._on_off(self.tec_slot, ":TEC?", "TEDStatus")

    def _wavelength_at(self, t_c: float) -> float:
        return self.lambda0_nm + self.tuning_nm_per_k * (t_c - self.t0_c)

    # the wavelengths the TEC range reaches
    def _get_wavelength_nm(self) -> float:
        return self._wavelength_at(self.temperature_c)

    def _set_wavelength_nm(self, lam: float) -> None:
        t = self.t0_c + (lam - self.lambda0_nm) / self.tuning_nm_per_k
        self._set(self.tec_slot, ":TEMP:SET", "TEDSetTemperature", round(t, 4))

    wavelength_nm = PulsedLaser.wavelength_nm.within(lambda s: s._wavelength_at(s.temp_range_c[0]),
                                      lambda s: s._wavelength_at(s.temp_range_c[1])).via(_get_wavelength_nm, _set_wavelength_nm)

    def _get_rep_rate_hz(self) -> float:
        return self._rep_rate

    def _set_rep_rate_hz(self, v: float) -> None:
        self._rep_rate = v
        self.log.info("rep_rate_hz recorded as %g Hz; set the external pulse generator to match", self._rep_rate)

    rep_rate_hz = PulsedLaser.rep_rate_hz.within(*REP_RATE_HZ).via(_get_rep_rate_hz, _set_rep_rate_hz)

    def status(self) -> dict[str, Any]:
        st = super().status()
        with self.lock:
            t_act = self.temperature_act_c
            st.update(output_enabled=self.output_enabled, current_ma=round(self.current_ma, 4),
                      current_act_ma=round(self.current_act_ma, 4), ld_mode=self.ld_mode,
                      temperature_c=self.temperature_c, temperature_act_c=t_act, tec_on=self.tec_on,
                      wavelength_act_nm=round(self._wavelength_at(t_act), 4))
        return st

    def snapshot(self) -> dict[str, Any]:
        """The settings (``wavelength_nm`` from the TEC *set* temperature), plus what the modules report now:
        ``tec`` = output on/off, actual temperature and the wavelength it gives; ``ldc`` = the actual LD current
        (``:ILD:ACT?``) and the operating mode (``:MODE?``)."""
        out = super().snapshot()
        out["wavelength_source"] = "wavelength_nm is from the TEC set temperature (:TEMP:SET?), not the actual one"
        try:
            with self.lock:
                t_act = self.temperature_act_c
                out["tec"] = {"on": self.tec_on, "temperature_act_c": t_act,
                              "wavelength_at_actual_nm": round(self._wavelength_at(t_act), 4),
                              "source": "TEC actual temperature (:TEMP:ACT?)"}
        except Exception as exc:
            out["tec"] = f"<error: {exc}>"
        try:
            with self.lock:
                out["ldc"] = {"current_act_ma": round(self.current_act_ma, 4), "mode": self.ld_mode,
                              "source": "LDC actual current (:ILD:ACT?) and operating mode (:MODE?)"}
        except Exception as exc:
            out["ldc"] = f"<error: {exc}>"
        return out
