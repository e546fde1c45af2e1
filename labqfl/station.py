"""The Station: every instrument of the testbed by role, real or simulated, behind one object.

``Station(config)`` (or ``Station.open(config)``) builds every role of
:meth:`StationConfig.roles`:

* roles with ``driver = "sim"`` come from :func:`labqfl.sim_backends.create_simulated_instruments`
  (called once: all simulated roles share one simulated testbed);
* other roles name a driver class of :mod:`labqfl.drivers` (the only import of that package in the
  code base), constructed as ``DriverClass(role, instrument_config)``.

Nothing above the Station knows which kind it holds. Instruments are closed in reverse opening
order (:meth:`close`, idempotent; also on leaving a ``with`` block). Two roles mapped to the same
resource are refused, naming both roles. ``visa_library`` values ending in ``@sim`` with a relative
path are resolved against ``base_dir`` (the station file's folder; the CLI passes it), and
``"@sim:<file>.yaml"`` names a pyvisa-sim file shipped in ``labqfl/sim_backends/visa/``.

**Several roles on one instrument.** A driver that declares channels (``CHANNELS``, e.g. the four
VOA channels of a Keysight N7764A) may serve several roles on one resource when each role picks a
different channel (``options.channel``); the roles share one I/O session. Two roles on the same
channel, or on a resource whose driver declares no channels, are refused naming both roles.

**Operating point on open.** After every role opened, the station file's operating point is
written to the real instruments (``apply_operating_point`` of each driver: laser power and
wavelength, detector bias, dead time and gate, modulator delay …), with the drivers' ramps for
laser current and detector bias. The outputs stay off (laser off, detectors disarmed, shutters
closed) until a procedure turns them on.

**Safe state on a kill.** ``guard=True`` (``labqfl`` CLI commands: :func:`guard_stations`) installs
handlers for SIGTERM and SIGINT and an ``atexit`` hook while the station is open: on a signal or
at interpreter exit every instrument goes to its safe state (laser current ramped down and
emission off, detector bias ramped down, modulator outputs off, shutters closed) and is released;
then the previous handler runs (the default one ends the process by the same signal; Python's
SIGINT handler raises ``KeyboardInterrupt``). :meth:`close` restores the previous handlers.
"""

from __future__ import annotations

import _thread
import atexit
import importlib
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, cast

from labqfl.config import InstrumentConfig, StationConfig, validate_options
from labqfl.errors import (
    AcquisitionRefused,
    ConfigError,
    InstrumentError,
    StationError,
    interrupt_inside,
)
from labqfl.instruments.base import Instrument, TagBlock, emergency, in_emergency
from labqfl.instruments.interfaces import (
    IntensityModulator,
    ModulatorBiasController,
    PatternGenerator,
    PhaseModulator,
    PhotonDetector,
    PowerMeter,
    PulsedLaser,
    PulseGenerator,
    TimeTagger,
    VariableAttenuator,
)
from labqfl.log import get_logger

if TYPE_CHECKING:
    from labqfl.drivers import DriverDeclaration

log = get_logger(__name__)


def open_driver(role: str, ic: InstrumentConfig, base_dir: Path | None, **kwargs: Any) -> Instrument:
    """Open the real instrument of ``role`` through its driver (a pyvisa session or the vendor SDK),
    its VISA library resolved against ``base_dir`` (the station file's folder). The one place outside
    the driver registry that instantiates drivers: the Station for its roles, a client node for its
    own pattern generator. ``kwargs`` go to the driver (``sdk=`` an emulated SDK: :func:`emulated_tagger_sdk`)."""
    from labqfl.drivers import get_driver, resolve_visa_library

    cls = get_driver(ic.driver)
    want = expected_interfaces(role)
    if not issubclass(cls, want):
        raise ConfigError(f"role {role!r}: driver {ic.driver!r} is a {_kinds(cls)}; "
                          f"expected a {' or '.join(w.__name__ for w in want)} driver")
    resolved = ic.model_copy(update={"visa_library": resolve_visa_library(ic.visa_library, base_dir) or None})
    return cls(role, resolved, **kwargs)  # type: ignore[call-arg]


def emulated_tagger_sdk(cfg: StationConfig, light: Any = None) -> Any:
    """The emulated Swabian SDK of ``simulation.emulate_time_tagger`` (:mod:`labqfl.sim_backends.timetagger_sdk`)
    for station ``cfg``: its light settings from the file; with ``light`` (the simulated tagger of this
    process) its read-outs from it (a fresh acquisition per stream, count rates, histograms). An acquisition's
    light is handed over by whoever runs it (``sdk.prepare``: :meth:`Station.prepare_acquisition`, the detection
    node with the optics node's tags)."""
    sdk_mod = importlib.import_module("labqfl.sim_backends.timetagger_sdk")
    return sdk_mod.EmulatedTimeTaggerSDK(
        sdk_mod.LightSettings.from_config(cfg),
        feed=None if light is None else lambda capture_s: light.stream(capture_s),
        count_rates=None if light is None else light.count_rates,
        histogram=None if light is None else light.histogram)


def emulated_detectors(cfg: StationConfig, light: Any = None) -> Any:
    """The emulated WebSQ controllers of ``simulation.emulate_detectors``
    (:class:`labqfl.sim_backends.websq.EmulatedDetectors`), started here on free loopback ports: point the
    detectors' driver at them with ``instrument_config(role, ic)`` (or ``station_config(cfg)``), close them
    after the detectors. ``light``: the simulated tagger of this process (the Station's), whose loop's
    detectors follow the controllers and whose clicks their count streams report; None (the detection node,
    the loop being the optics node's): controllers without a light."""
    websq = importlib.import_module("labqfl.sim_backends.websq")
    return websq.EmulatedDetectors(cfg, None if light is None else light.testbed)


def hold_master_clocks(instruments: Iterable[Instrument]) -> Callable[[], None] | None:
    """Slot 0 is the master clock's first pulse, and the tagger must record it
    (docs/decisions/0008-frame-markers.md): every running master clock (a :class:`PulseGenerator` with its output
    on: armed) among ``instruments`` is stopped here, and the returned restart, given to the tagger's
    ``stream(on_recording=...)``, starts them again once the tagger records, after the clients' pattern
    generators were loaded (generators triggered in hardware start on that first pulse). None when no master clock
    runs (nothing is switched on that was off). Used by the in-process ``Acquisition`` and the detection node."""
    clocks = [i for i in instruments if isinstance(i, PulseGenerator) and i.output_enabled]
    if not clocks:
        return None
    for clk in clocks:
        clk.output_enabled = False

    def restart() -> None:
        for clk in clocks:
            clk.output_enabled = True
            if not clk.output_enabled:  # read back from the instrument (review s36 lab2 M2)
                written, query = _arm_commands(clk, "output_enabled", True)
                raise InstrumentError(f"{clk.name}: {written} accepted but {query} reads output_enabled=False: the "
                                      "laser trigger does not run, so the laser stays dark; the acquisition stops",
                                      instrument=clk.name, resource=str(getattr(clk, "resource", "")), command=query)
        log.info("master clock started: the tagger records slot 0")

    return restart


def light_off_switch(instruments: Mapping[str, Instrument]) -> Callable[[], Callable[[], None]]:
    """What a detector calls (:attr:`PhotonDetector.light_off`) before its bias is reset (a latched SNSPD:
    ramped to 0 and back up): it closes every open attenuator shutter among ``instruments`` and holds every
    running master clock (:func:`hold_master_clocks`: a pulsed laser emits nothing without its trigger), and
    returns the call that opens them again and restarts the clocks, each read back (review s36 lab2 L2: the
    bias went back up under the flux that had latched the nanowire). A detection node owns the master clock
    but not the clients' shutters; without either the reset is logged as done in the light."""
    def off() -> Callable[[], None]:
        shutters = [(role, a) for role, a in instruments.items()
                    if isinstance(a, VariableAttenuator) and not a.shutter_closed]
        for role, a in shutters:
            _light_off_step(role, a, "shutter_closed", True)
        running = [(role, i) for role, i in instruments.items() if isinstance(i, PulseGenerator) and i.output_enabled]
        try:
            restart = hold_master_clocks(instruments.values())
        except Exception as exc:
            raise InstrumentError(f"holding the master clock for a detector's bias reset failed: {exc}; the bias is "
                                  "not cycled (the light may be on)") from exc
        for role, clk in running:
            if clk.output_enabled:
                _light_off_step(role, clk, "output_enabled", False, written=True)
        if not shutters and restart is None and any(isinstance(i, PulsedLaser) and i.output_enabled
                                                    for i in instruments.values()):
            log.warning("a detector's bias is reset with the laser on: no open shutter or running master clock "
                        "among %s to take the light off", ", ".join(instruments))

        def back() -> None:
            if restart is not None:
                restart()
            for role, a in shutters:
                a.shutter_closed = False
                if a.shutter_closed:
                    written, query = _arm_commands(a, "shutter_closed", False)
                    raise InstrumentError(f"{role}: {written} accepted but {query} reads shutter_closed=True after "
                                          "a detector's bias reset", instrument=role,
                                          resource=str(getattr(a, "resource", "")), command=query)
        return back
    return off


def _light_off_step(role: str, inst: Instrument, attr: str, value: bool, *, written: bool = False) -> None:
    """One step of :func:`light_off_switch`'s ``off``: ``inst.attr = value`` (unless ``written``) and read back
    (review s37 lab3 L3: a shutter that accepted the close and stayed open let the bias go back up in the light).
    One :class:`InstrumentError` naming the role and the bias reset it was for."""
    written_cmd, query = _arm_commands(inst, attr, value)
    try:
        if not written:
            setattr(inst, attr, value)
        ok = getattr(inst, attr) == value
    except Exception as exc:
        raise InstrumentError(f"{role}: {written_cmd} failed while taking the light off for a detector's bias reset: "
                              f"{exc}; the bias is not cycled", instrument=role,
                              resource=str(getattr(inst, "resource", "")), command=written_cmd) from exc
    if not ok:
        raise InstrumentError(f"{role}: {written_cmd} accepted but {query} reads {attr}={not value} while taking the "
                              "light off for a detector's bias reset; the bias is not cycled", instrument=role,
                              resource=str(getattr(inst, "resource", "")), command=query)


def give_detectors_light_off(instruments: Mapping[str, Instrument]) -> None:
    """Every detector among ``instruments`` gets :func:`light_off_switch` of them (:attr:`PhotonDetector.light_off`)."""
    switch = light_off_switch(instruments)
    for inst in instruments.values():
        if isinstance(inst, PhotonDetector):
            inst.light_off = switch


def arming_settings(instruments: Mapping[str, Instrument],
                    detectors: Container[str] | None = None) -> list[tuple[str, Instrument, str, bool]]:
    """``(role, instrument, attribute, value)`` of every setting that puts ``instruments`` (by role) in
    their operating state for acquisition and is not there yet: the master clock's laser trigger on (a
    pulsed laser without its trigger emits nothing), lasers on, detectors armed (only the roles in
    ``detectors`` when given), phase and intensity modulators on, attenuator shutters open. The one
    arming rule, applied by :func:`arm_instruments` and by calibration procedures that need light
    (:func:`labqfl.calibration.delays.light_path_on`, through their settings guard).

    In this order (review s36 lab2 L2): the detectors first, biased (and checked for a latch) while the
    laser is off and the shutters closed; then the master clock, the laser and the modulators; the shutters
    last, so light reaches the loop only once every detector is biased."""
    out: list[tuple[int, str, Instrument, str, bool]] = []
    for role, inst in instruments.items():
        if isinstance(inst, PulsedLaser | PulseGenerator | PhaseModulator | IntensityModulator):
            stage, attr, value = 1, "output_enabled", True
        elif isinstance(inst, PhotonDetector):
            if detectors is not None and role not in detectors:
                continue
            stage, attr, value = 0, "enabled", True
        elif isinstance(inst, VariableAttenuator):
            stage, attr, value = 2, "shutter_closed", False
        else:
            continue
        if getattr(inst, attr) != value:
            out.append((stage, role, inst, attr, value))
    out.sort(key=lambda item: item[0])  # stable: the roles' order within a stage
    return [(role, inst, attr, value) for _, role, inst, attr, value in out]


#: :func:`clicked_until_end`: the chance that a working detector's clicks in a block leave it as silent at the block's
#: end as a latched one (it is then read instead of skipped: a counting window, no refusal by itself)
SILENT_END_FALSE_ALARM = 1e-4


def clicked_until_end(block: TagBlock, channels: Mapping[str, int]) -> set[str]:
    """The names of ``channels`` (name -> tagger channel: the detectors) that clicked in ``block`` until its end:
    what the end check may skip (:func:`acquisition_faults`' ``clicked``). A nanowire that latched after its last
    click in the block also has tags there (session 37's notes: that latch went unseen), so a channel's clicks count
    only if the silence after its last one is plausible for a working detector: given n clicks over the block's
    span T (first to last tag of any channel), the chance that none falls in the last s is (1 − s/T)ⁿ (n points
    uniform on T); at or below :data:`SILENT_END_FALSE_ALARM` the channel is not in the set (read instead)."""
    import math

    ts, ch = block.timestamps, block.channels
    if not ts.size:
        return set()
    t0, t1 = int(ts[0]), int(ts[-1])
    span = t1 - t0
    out: set[str] = set()
    for name, tch in channels.items():
        mine = ts[ch == tch]
        n = int(mine.size)
        if not n:
            continue
        silent = t1 - int(mine[-1])
        if silent and (silent >= span or n * math.log1p(-silent / span) <= math.log(SILENT_END_FALSE_ALARM)):
            continue  # silent for too long before the block's end: not evidence of a working nanowire
        out.add(name)
    return out


def acquisition_faults(instruments: Mapping[str, Instrument], clicked: Container[str] = ()) -> list[str]:
    """What went wrong during an acquisition, read from the instruments after its last block (review s36 lab H1,
    M2): every setting of :func:`arming_settings` that is no longer in its operating state (the laser's
    ``:LASER?`` OFF after an interlock trip, a master clock no longer streaming, a detector's bias supply off, a
    shutter closed), then each instrument's own ``acquisition_fault()`` where it has one (an SNSPD that latched:
    :meth:`labqfl.drivers.singlequantum_eos.SingleQuantumEos.acquisition_fault`). One ``"role: what"`` per
    fault; empty when the tags were taken with everything as armed. Nothing is switched or reset here.
    ``clicked``: the detector roles whose channel clicked until the end of the acquisition's last block
    (:func:`clicked_until_end`); their own check is skipped: a latched nanowire clicks no more until its bias is
    taken away, so one that clicked then did not latch before (no counting window, no false alarm at a low dark
    rate: review s37 lab3 L2)."""
    faults = [f"{role}: {attr} reads {not value!r}, expected {value!r}"
              for role, _, attr, value in arming_settings(instruments)]
    for role, inst in instruments.items():
        check = getattr(inst, "acquisition_fault", None)
        if callable(check) and role not in clicked and not any(f.startswith(f"{role}: ") for f in faults):
            why = check()
            if why:
                faults.append(f"{role}: {why}")
    return faults


def refuse_faulty_acquisition(faults: list[str], what: str, cost: str = "") -> None:
    """Raise one :class:`InstrumentError` naming every fault of :func:`acquisition_faults` (nothing when none);
    ``cost``: what the refusal costs on the caller's path (review s37 lab3 L9: a recording closed as incomplete,
    or key blocks already stored kept and the rest dropped), said at the end."""
    if faults:
        raise AcquisitionRefused(f"{what}: at its end the instruments no longer read as armed: {'; '.join(faults)}; "
                                 "the tags may have been taken without light or without a working detector"
                                 + (f". Refused: {cost}" if cost else ""))


def _stop_began(stopping: Callable[[], str | None] | None) -> str | None:
    """What stops the arming (:func:`arm_instruments`): an emergency stop of this process
    (:func:`labqfl.instruments.base.in_emergency`) or ``stopping()``'s reason; None: go on."""
    reason = in_emergency()
    if reason is not None:
        return f"the emergency stop ({reason})"
    return stopping() if stopping is not None else None


def arm_instruments(instruments: Mapping[str, Instrument], *, safe_on_failure: bool = True,
                    stopping: Callable[[], str | None] | None = None) -> list[str]:
    """Put every instrument of ``instruments`` (by role) in its operating state for acquisition
    (:func:`arming_settings`). Instruments already there are left alone. Returns what was changed, as
    ``"role.attr=value"``. Used by a Station's roles (:func:`labqfl.app.station.arm`) and a node
    process's own roles (:class:`labqfl.nodes.common.NodeInstruments`).

    Each setting written is read back (review s36 M2): an instrument that accepted the write without error
    but reads back something else (a laser whose interlock is open stays off after ``:LASER ON``, a shutter
    that stays closed) is refused with one :class:`~labqfl.errors.InstrumentError` naming the role, the
    command and what it read. On any failure every instrument of ``instruments`` is put in its safe state
    (reverse order; their own failures are logged) before the error goes on, so nothing is left armed;
    ``safe_on_failure=False`` (another acquisition holds them armed: :meth:`labqfl.nodes.common.NodeInstruments.arm`)
    leaves them as they are.

    A stop (an emergency of this process, or ``stopping()`` returning its reason: a node's ``ctl/stop``) is asked
    for before each setting and once all are written: once it began, nothing more is switched on and the arming
    fails with "arming cut by …" (review s39 LAB2: a stop that put the instruments in their safe state without
    waiting for the arming must not see the arming switch the laser, clock, modulators or shutters on after it)."""
    changed: list[str] = []
    step = "before the first setting"
    give_detectors_light_off(instruments)
    try:
        for role, inst, attr, value in arming_settings(instruments):
            _cut_if_stopping(stopping, f"before {role}.{attr}={value}", changed)
            step = f"during {role}.{attr}={value}"
            setattr(inst, attr, value)
            now = getattr(inst, attr)
            if now != value:  # a stop's safe state meanwhile reads back so too: named as the stop, not a fault
                _cut_if_stopping(stopping, f"during {role}.{attr}={value} (read back {attr}={now!r})", changed)
                written, query = _arm_commands(inst, attr, value)
                raise InstrumentError(f"{role}: {written} accepted but {query} reads {attr}={now!r}; expected "
                                      f"{value!r} (every instrument put back in its safe state)",
                                      instrument=role, resource=str(getattr(inst, "resource", "")), command=query)
            changed.append(f"{role}.{attr}={value}")
        _cut_if_stopping(stopping, "after the last setting", changed)
    except BaseException as failure:
        cut = _as_cut(failure, stopping, step, changed)  # a setting failed as the stop's safe state ran
        if safe_on_failure:
            for role in reversed(list(instruments)):
                try:
                    instruments[role].safe_state()
                except Exception as exc:  # keep going: the others must be safe too
                    log.error("arming failed; role %s: safe state failed too: %s", role, exc)
        if cut is not None:
            raise cut from failure
        raise
    return changed


def _as_cut(failure: BaseException, stopping: Callable[[], str | None] | None, step: str,
            changed: list[str]) -> InstrumentError | None:
    """A setting's failure once a stop began (an Eos latch check cut, a ramp cut) as "arming cut by …" with the
    failure's own line; None when no stop began or it already reads so."""
    if not isinstance(failure, Exception) or str(failure).startswith("arming cut by "):
        return None
    why = _stop_began(stopping)
    if why is None:
        return None
    text = str(failure).strip()
    line = text.splitlines()[0] if text else type(failure).__name__
    return InstrumentError(f"arming cut by {why} {step} ({line}); "
                           f"nothing more switched on (written before: {', '.join(changed) or 'nothing'}; put back "
                           "in the safe state)", command="arm")


def _cut_if_stopping(stopping: Callable[[], str | None] | None, where: str, changed: list[str]) -> None:
    """:func:`arm_instruments`' stop check: raise "arming cut by …" once a stop began (:func:`_stop_began`)."""
    why = _stop_began(stopping)
    if why is not None:
        done = ", ".join(changed) or "nothing"
        raise InstrumentError(f"arming cut by {why} {where}: nothing more switched on (written before the stop: "
                              f"{done}; put back in the safe state)", command="arm")


def _arm_commands(inst: Instrument, attr: str, value: Any) -> tuple[str, str]:
    """(the write, the read-back) of setting ``attr`` to ``value`` on ``inst``, as SCPI strings where the
    setting is a plain SCPI one, else as ``attr = value`` / ``attr?``, for :func:`arm_instruments`' error."""
    from labqfl.instruments.settings import Setting, _Fields

    named = getattr(inst, "READBACK_COMMANDS", {}).get(attr)  # a driver that is not SCPI names its own calls
    if named is not None:
        return str(named[0]), str(named[1])
    setting = getattr(type(inst), attr, None)
    if isinstance(setting, Setting) and setting.get_command and setting.set_command:
        wire = setting.values[value] if setting.values is not None else value
        if setting.set_process is not None:
            wire = setting.set_process(wire)
        return (setting.set_command.format_map(_Fields(inst, value=wire)),
                setting.get_command.format_map(_Fields(inst)))
    return f"{attr} = {value!r}", f"{attr}?"


def expected_interfaces(role: str) -> tuple[type[Instrument], ...]:
    """Interface(s) an instrument must implement to serve ``role``."""
    if role == "laser":
        return (PulsedLaser,)
    if role.endswith(".phase_modulator"):
        return (PhaseModulator,)
    if role.endswith(".attenuator"):
        return (VariableAttenuator, IntensityModulator)
    if role in ("D0", "D1"):
        return (PhotonDetector,)
    if role == "time_tagger":
        return (TimeTagger,)
    if role == "power_meter":
        return (PowerMeter,)
    if role.endswith(".pattern_generator"):
        return (PatternGenerator,)
    if role == "master_clock":
        return (PulseGenerator,)
    raise ConfigError(f"unknown role {role!r}")


_INTERFACES: tuple[type[Instrument], ...] = (PulsedLaser, PhaseModulator, VariableAttenuator, IntensityModulator,
                                              PhotonDetector, TimeTagger, PowerMeter, PatternGenerator,
                                              PulseGenerator, ModulatorBiasController)


def _kinds(cls: type) -> str:
    return "/".join(b.__name__ for b in cls.__mro__ if b in _INTERFACES) or "different instrument"


def _role_channel(cls: type | None, ic: InstrumentConfig) -> int | None:
    """The channel a role uses on a multi-channel driver (``None``: the driver has no channels)."""
    if cls is None or not hasattr(cls, "channel_of"):
        return None
    decl = cast("type[DriverDeclaration]", cls)
    try:
        return decl.channel_of(decl.parse_options("", ic))
    except ConfigError:  # bad options are reported by the driver when it opens
        return None


def validate_driver_roles(config: StationConfig, source: str) -> None:
    """Check every real role of ``config`` against its driver's declaration, opening nothing.

    Called by :func:`labqfl.config.parse_station_config` (so by every station load,
    ``labqfl station show`` and ``station check``). Per role: the driver class exists and serves
    the role; its typed ``options`` accept the table (unknown keys and wrong types refused); the
    role's config values lie inside the driver's ranges (``config_limits``); and a driver that
    declares a spectral range covers ``laser.wavelength_nm``. The first problem raises
    :class:`ConfigError` with one line naming the file, the field, the role, the value and what was
    expected.
    """
    from labqfl.drivers import DRIVERS, DriverDeclaration

    fields = config.role_fields()
    wavelength = config.laser.wavelength_nm
    for role, ic in config.roles().items():
        if ic.simulated:
            continue
        field = fields[role]
        cls = DRIVERS.get(ic.driver)
        if cls is None:
            raise ConfigError(f"{source}: field '{field}.driver' (role {role}): unknown driver; expected 'sim' or one "
                              f"of: {', '.join(sorted(DRIVERS))}; got {ic.driver!r}")
        want = expected_interfaces(role)
        if not issubclass(cls, want):
            raise ConfigError(f"{source}: field '{field}.driver' (role {role}): {ic.driver} is a {_kinds(cls)} driver; "
                              f"expected a {' or '.join(w.__name__ for w in want)} driver or 'sim'; got {ic.driver!r}")
        decl = cast(type[DriverDeclaration], cls)
        opts = validate_options(decl.Options, ic.options, source=source, field=field, driver=ic.driver, role=role)
        band = decl.SPECTRAL_RANGE_NM
        if band is not None and not band[0] <= wavelength <= band[1]:
            raise ConfigError(f"{source}: field '{field}.driver' (role {role}): {ic.driver} works from {band[0]:g} to "
                              f"{band[1]:g} nm, which excludes the laser wavelength {wavelength:g} nm "
                              f"(laser.wavelength_nm); expected a driver for {wavelength:g} nm or 'sim'; got {ic.driver!r}")
        for name, (lo, hi, unit) in decl.config_limits(opts).items():
            value = getattr(ic, name)
            items = value.items() if isinstance(value, dict) else [("", value)]
            for key, v in items:
                if not lo <= v <= hi:
                    u = f" {unit}" if unit else ""
                    raise ConfigError(f"{source}: field '{field}.{name}{'.' + key if key else ''}' (role {role}): "
                                      f"outside what {ic.driver} can set; expected {lo:g} to {hi:g}{u}; got {v!r}")




# -- safe state on SIGTERM / SIGINT / interpreter exit ---------------------------------------------
_GUARD_DEFAULT = False
_GUARD_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
_GUARD_LOCK = threading.RLock()
_GUARDED: list[Station] = []
_EVER_GUARDED = False
_PREVIOUS: dict[int, Any] = {}
_IN_HANDLER = False
_OWNER_PID = 0  # the process that installed the handlers (a forked child inherits them: it must not act)


def guard_stations(enabled: bool = True) -> None:
    """Make every :class:`Station` opened from now on in this process guard itself (``guard=None``).

    Called once by the ``labqfl`` CLI, so a killed ``labqfl run``/``acquire``/``calibrate`` leaves
    its instruments safe. Library users pass ``Station(..., guard=True)`` instead.
    """
    global _GUARD_DEFAULT
    _GUARD_DEFAULT = bool(enabled)


def guard_was_used() -> bool:
    """Whether this process ever guarded a station (so SIGINT/SIGTERM put instruments in their safe state)."""
    return _EVER_GUARDED


def _guard_register(station: Station) -> bool:
    """Add ``station`` to the guarded set; install the handlers with the first one (main thread only)."""
    global _EVER_GUARDED
    if threading.current_thread() is not threading.main_thread():
        log.info("station %s opened outside the main thread: no SIGTERM/SIGINT safe-state handlers "
                 "(Python delivers signals to the main thread only); close it explicitly", station.name)
        return False
    global _OWNER_PID
    with _GUARD_LOCK:
        if not _GUARDED:
            _OWNER_PID = os.getpid()
            for sig in _GUARD_SIGNALS:
                prev = signal.getsignal(sig)
                if prev is signal.SIG_IGN:  # the process chose to ignore it: so do we
                    continue
                if prev is _on_signal:  # still ours (last close ran off the main thread): keep the original
                    continue
                _PREVIOUS[int(sig)] = prev
                signal.signal(sig, _on_signal)
            atexit.register(_at_exit)
        _GUARDED.append(station)
        _EVER_GUARDED = True
    return True


def _restore_handlers() -> None:
    """Put back the handlers found at install time (only where ours is still the installed one)."""
    with _GUARD_LOCK:
        if threading.current_thread() is not threading.main_thread():
            return  # signal.signal() is main-thread only; ours stays and only chains to the previous
        for sig, prev in list(_PREVIOUS.items()):
            try:
                if signal.getsignal(sig) is _on_signal:
                    signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
            except (ValueError, OSError) as exc:
                log.warning("could not restore the handler of signal %d: %s", sig, exc)
            del _PREVIOUS[sig]
        atexit.unregister(_at_exit)


def _guard_exit_hook_last() -> None:
    """Move the exit hook behind those registered while the instruments opened: ``atexit`` runs the
    last-registered hook first, and pyvisa registers one per resource manager that closes every session the
    safe state is sent through (before this, a guarded station's instruments were left on at exit)."""
    with _GUARD_LOCK:
        if _GUARDED and os.getpid() == _OWNER_PID:
            atexit.unregister(_at_exit)
            atexit.register(_at_exit)


def _guard_unregister(station: Station) -> None:
    with _GUARD_LOCK:
        if station in _GUARDED:
            _GUARDED.remove(station)
        if not _GUARDED:
            _restore_handlers()


def _emergency_close(reason: str) -> None:
    """Safe state and close every guarded station (latest first); never raises. Nothing in a forked
    child (a worker pool's process): the instruments belong to the parent."""
    if os.getpid() != _OWNER_PID:
        return
    with _GUARD_LOCK:
        stations = list(reversed(_GUARDED))
    for st in stations:
        try:
            log.warning("station %s: %s: putting every instrument in its safe state", st.name, reason)
            st.close()
        except BaseException as exc:  # noqa: BLE001 - a handler must not raise; keep closing the others
            log.error("station %s: safe state on %s failed: %s", st.name, reason, exc)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """SIGTERM/SIGINT: safe state first, then whatever the previous handler would have done."""
    global _IN_HANDLER
    if _IN_HANDLER:  # a second signal while the first one is putting instruments safe
        return
    _IN_HANDLER = True
    prev: Any = signal.SIG_DFL
    try:
        with _GUARD_LOCK:
            prev = _PREVIOUS.get(signum, signal.SIG_DFL)
        with emergency(f"signal {signal.Signals(signum).name}"):  # e.g. the PRO8000's capped ramp-down
            _emergency_close(f"signal {signal.Signals(signum).name}")
        if os.getpid() == _OWNER_PID:
            _restore_handlers()
    except BaseException as exc:  # noqa: BLE001 - never raise from the handler itself
        log.error("safe-state handler for signal %d failed: %s", signum, exc)
    finally:
        _IN_HANDLER = False
    if callable(prev):  # e.g. Python's SIGINT handler: raises KeyboardInterrupt, as without us
        prev(signum, frame)
    elif prev is None or prev == signal.SIG_DFL:  # end the process by the same signal, as without us
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def half_built_by_interrupt(info: Any) -> bool:
    """Whether an unraisable exception (``sys.unraisablehook``'s ``info``) is the ``__del__`` of an
    llvmlite object that an interrupt stopped inside its constructor: a SIGTERM or Ctrl-C raised while
    Numba compiled leaves e.g. an ``OutputString`` without its ``_ptr``, whose ``__del__`` then prints
    "Exception ignored in … AttributeError: … no attribute '_ptr'" with a traceback beside the command's one
    error line (clean-clone CI of session 34, ``test_run_sigterm``). Nothing is lost: the object never held
    anything."""
    where = getattr(info.object, "__module__", "") or getattr(type(info.object), "__module__", "") or ""
    return isinstance(info.exc_value, AttributeError) and str(where).startswith("llvmlite")


#: How soon a SIGTERM's interrupt held back inside Numba's compiler is delivered again [s] (:class:`Termination`).
REDELIVER_S = 0.05


def _inside_llvm() -> bool:
    """Whether this thread is inside Numba's compiler or holds llvmlite's LLVM lock (the modules are looked up,
    never imported). An exception a signal handler raises there is not safe (issue 19): llvmlite's lock calls
    back into Python right after it is taken (``_LLVMLock.__enter__``), so an interrupt raised there leaves it
    held for good (and is lost when it came in an llvmlite ``__del__``); the simulator's helper thread, compiling
    under Numba's lock, then waits for it while the main thread waits for Numba's lock: a deadlock. Raised
    between an LLVM call and the Python object that takes its result, it frees an LLVM object twice (a
    segmentation fault) or leaves a library half-built ("no compiled object yet" at the next compilation)."""
    compiler = sys.modules.get("numba.core.compiler_lock")
    if compiler is not None and compiler.global_compiler_lock.is_locked():
        return True
    ffi = sys.modules.get("llvmlite.binding.ffi")
    llvm = getattr(getattr(getattr(ffi, "lib", None), "_lock", None), "_lock", None)  # the RLock of _LLVMLock
    return bool(llvm is not None and llvm._is_owned())


class Termination:
    """What :func:`sigterm_as_interrupt` yields: whether a SIGTERM came (:attr:`requested`), and
    :meth:`check`, to call at every safe point of a long loop (e.g. after each block). For ``signal.SIGINT``
    (:func:`sigint_as_interrupt`) the same for Ctrl-C: its interrupt is a plain :class:`KeyboardInterrupt`."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        self.signum = signum
        self.requested = False
        #: the signal's interrupt is held back: it came inside Numba's compiler or LLVM (:func:`_inside_llvm`);
        #: the signal is delivered again to the main thread (``_thread.interrupt_main``) until its handler
        #: raises it where that is safe
        self.owed = False
        self._redelivered = False
        self._stop_listening: Callable[[], None] | None = None

    def interrupt(self) -> KeyboardInterrupt:
        """The signal's interrupt: ``KeyboardInterrupt("SIGTERM")`` (the CLI's "terminated (SIGTERM)", exit 143),
        or a plain one for Ctrl-C (as Python's own handler raises: "interrupted by user (Ctrl-C)", exit 130)."""
        return KeyboardInterrupt("SIGTERM") if self.signum == signal.SIGTERM else KeyboardInterrupt()

    def check(self) -> None:
        """Raise :meth:`interrupt` when the signal came: the handler raises it at once (or once it
        is safe: :attr:`owed`), but CPython loses an exception a signal handler raises while a ``__del__`` or
        weakref callback runs (h5py's run often), and the process would go on as if nothing had happened."""
        if self.requested:
            self.owed = False
            raise self.interrupt()

    def redeliver(self) -> None:
        """The owed signal to the main thread again: its handler runs at the next bytecode boundary there."""
        if self.owed:
            self._redelivered = True
            _thread.interrupt_main(signal.Signals(self.signum))

    def _listen_for_the_compiler(self) -> None:
        """:meth:`redeliver` as soon as the main thread has released Numba's compiler lock for good (its
        "numba:compiler_lock" end event comes after the release; a nested compilation still holds it): the
        redelivery thread's polling alone missed the gaps between back-to-back compilations, so a stop waited
        for a whole burst of them. Numba's event API (``numba.core.event``), only when Numba is loaded."""
        event = sys.modules.get("numba.core.event")
        if event is None or self._stop_listening is not None:
            return
        term = self

        class _Released(event.Listener):  # type: ignore[misc,name-defined]
            def on_start(self, ev: Any) -> None:
                pass

            def on_end(self, ev: Any) -> None:
                if term.owed and threading.current_thread() is threading.main_thread() and not _inside_llvm():
                    term.redeliver()  # raised here, right after the release (the compiled kernel is in place)

        listener = _Released()
        event.register("numba:compiler_lock", listener)
        self._stop_listening = lambda: event.unregister("numba:compiler_lock", listener)

    def _redeliver_until_raised(self) -> None:
        """:meth:`redeliver` every :data:`REDELIVER_S` seconds while the interrupt is owed (the main thread is busy
        inside Numba's compiler: no bytecode boundary outside it comes before the compilation ends)."""
        while self.owed:
            time.sleep(REDELIVER_S)
            self.redeliver()

    def on_signal(self) -> None:
        """The signal handler's part (:func:`signal_as_interrupt`): raise the interrupt, or hold it back. Another
        SIGTERM is ignored; another Ctrl-C raises again, as Python's own handler does."""
        redelivered, self._redelivered = self._redelivered, False
        if self.requested and not self.owed:
            if redelivered:  # a redelivery that came after the interrupt was raised is no second signal
                return
            if self.signum == signal.SIGTERM:
                log.warning("SIGTERM again: ignored while the process closes its files and stops")
                return
        self.requested = True
        if _inside_llvm():
            if not self.owed:  # one thread per held-back interrupt, started here once (not a thread per redelivery)
                self.owed = True
                self._listen_for_the_compiler()
                name = f"labqfl-{signal.Signals(self.signum).name.lower()}"
                threading.Thread(target=self._redeliver_until_raised, name=name, daemon=True).start()
            return
        self.owed = False
        raise self.interrupt()


@contextmanager
def sigterm_as_interrupt() -> Iterator[Termination]:
    """While inside, SIGTERM stops the process the way Ctrl-C does: :class:`KeyboardInterrupt` with
    ``args == ("SIGTERM",)`` (reported by the CLI as "terminated (SIGTERM)", exit 143), so ``finally``
    blocks run and files are closed, where the default action ends the process at once (an HDF5
    recording open for writing was left unreadable). Enter it *before* opening a guarded station: the
    station's handler puts every instrument in its safe state first, then chains to this one.

    Only the first SIGTERM raises; another one while the process winds down is logged and ignored. Its
    interrupt is not raised inside Numba's compiler or llvmlite's LLVM lock (:func:`_inside_llvm`: a deadlock,
    a segfault or a half-built kernel, issue 19) but as soon as the compilation is over. An interrupt lost in
    a ``__del__``/weakref callback is not printed as a traceback; call the yielded
    :meth:`Termination.check` at safe points to raise it again there. An interrupt that leaves the block
    (also wrapped in ``SystemError``) after a SIGTERM leaves it as ``KeyboardInterrupt("SIGTERM")``. Only
    in the main thread (where Python delivers signals); the previous handlers are restored on exit."""
    with signal_as_interrupt(signal.SIGTERM) as term:
        yield term


@contextmanager
def sigint_as_interrupt() -> Iterator[Termination]:
    """While inside, Ctrl-C raises its :class:`KeyboardInterrupt` as Python's own handler does, except inside
    Numba's compiler or llvmlite's LLVM lock, where it is held back until the compilation is over, as
    SIGTERM's (:func:`sigterm_as_interrupt`, issue 19: a Ctrl-C during a first run's compilation left the LLVM
    lock held and the process deadlocked). Only where SIGINT has Python's own handler
    (``signal.default_int_handler``): an ignored or otherwise handled SIGINT stays as it is. The CLI's commands
    run inside it (:func:`labqfl.cli.common.handle_errors`)."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield Termination(signal.SIGINT)
        return
    with signal_as_interrupt(signal.SIGINT) as term:
        yield term


@contextmanager
def signal_as_interrupt(signum: int) -> Iterator[Termination]:
    """The handler of :func:`sigterm_as_interrupt` and :func:`sigint_as_interrupt` for ``signum`` while inside:
    :meth:`Termination.on_signal` (the interrupt raised, or held back inside Numba's compiler). Only in the main
    thread (where Python delivers signals); the previous handler is restored on exit."""
    term = Termination(signum)
    if threading.current_thread() is not threading.main_thread():
        yield term
        return
    sigterm = signum == signal.SIGTERM

    def on_sig(signum: int, frame: FrameType | None) -> None:
        term.on_signal()

    def unraisable(info: Any) -> None:  # the interrupt lost in a callback: Termination.check raises it again
        if sigterm and isinstance(info.exc_value, KeyboardInterrupt) and info.exc_value.args == ("SIGTERM",):
            return
        if term.requested and half_built_by_interrupt(info):
            return
        prev_hook(info)

    prev = signal.signal(signum, on_sig)
    prev_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield term
        if term.owed:  # held back inside Numba's compiler, and the block ended before it was delivered again
            term.check()
    except BaseException as exc:
        if sigterm and term.requested and interrupt_inside(exc) and not (isinstance(exc, KeyboardInterrupt)
                                                                         and exc.args == ("SIGTERM",)):
            raise KeyboardInterrupt("SIGTERM") from exc
        raise
    finally:
        term.owed = False  # no redelivery after the block
        if term._stop_listening is not None:
            term._stop_listening()
        sys.unraisablehook = prev_hook
        with _GUARD_LOCK:
            if signal.getsignal(signum) is not on_sig and _PREVIOUS.get(int(signum)) is on_sig:
                _PREVIOUS[int(signum)] = prev  # a guarded station still open: it chains to ``prev`` now
            else:
                signal.signal(signum, prev)


def _at_exit() -> None:
    _emergency_close("interpreter exit")


def open_recording(path: str | Path, *, allow_incomplete: bool = False) -> Any:
    """An HDF5 recording of an acquisition (``labqfl acquire --out``) for replay: its station
    ``config``, ``epoch``, ``acquisition_id``, ``duration_s``, ``blocks()`` and each client's
    ``client_log(name, data_dir)``. Close it with ``close()``.

    A CSPRNG client's log is its private file in that client's own folder: ``client_log`` raises
    :class:`FileNotFoundError` naming the client and the acquisition when this machine lacks it.
    ``allow_incomplete``: also a recording whose acquisition was interrupted (its whole blocks).
    """
    recording = importlib.import_module("labqfl.sim_backends.recording")
    return recording.read_recording(path, allow_incomplete=allow_incomplete)


def _where(ic: InstrumentConfig) -> str:
    """Where a role's instrument is, for messages: its resource, or for an SDK driver without one the
    serial number it asks for, or the SDK's first device (never "at None")."""
    if ic.resource:
        return f"at {ic.resource!r}"
    serial = ic.options.get("serial") if isinstance(ic.options, dict) else None
    return f"serial {serial!r}" if serial else "on the SDK's first device"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class Station:
    """Instruments by role (see the module docstring).

    ``tolerant=True`` keeps going when a role fails to open and records the reason in
    :attr:`failures` (used by ``labqfl station check``); otherwise the first failure closes what
    was opened and raises :class:`StationError` naming the role.
    """

    def __init__(self, config: StationConfig, *, base_dir: Path | None = None, tolerant: bool = False,
                 guard: bool | None = None, apply_operating_point: bool = True) -> None:
        self.config = config
        self.name = config.name
        self.base_dir = base_dir
        self.instruments: dict[str, Instrument] = {}
        self.failures: dict[str, str] = {}
        self._closed = False
        self._close_lock = threading.RLock()
        self._skip: set[str] = set()
        #: True while SIGTERM/SIGINT/atexit put this station's instruments in their safe state.
        self.guarded = False
        #: (acquisition epoch, each streaming client's played-frames record): :meth:`attach_played_frames`.
        self._played: tuple[int, dict[str, Any]] | None = None
        #: The simulated tagger behind an emulated real tagger (``simulation.emulate_time_tagger``): the light the
        #: driver's emulated SDK records, and the holder of the simulated clients' logs. None otherwise.
        self._light: Any = None
        self._tagger_sdk: Any = None
        #: The emulated WebSQ controllers of the detectors (``simulation.emulate_detectors``), None otherwise.
        self._detector_emulators: Any = None
        #: The simulated loop of this process (the testbed behind the simulated or the emulated tagger), which
        #: follows the real drivers of the roles it models (:meth:`_follow_driver`); None without one.
        self._loop: Any = None
        #: (epoch, {client: log}) of the latest acquisition with a real tagger on real hardware, the clients'
        #: generators armed by this process (:meth:`prepare_acquisition`); None otherwise.
        self._own_logs: tuple[int, dict[str, Any]] | None = None
        self._check_duplicate_resources(tolerant)
        wants_guard = _GUARD_DEFAULT if guard is None else guard
        if wants_guard:
            self.guarded = _guard_register(self)  # before opening: a kill during the opening is covered too
        try:
            self._open_all(tolerant)
            if self.guarded:
                _guard_exit_hook_last()
            if apply_operating_point:
                self._apply_operating_point(tolerant)
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, config: StationConfig, *, base_dir: Path | None = None, tolerant: bool = False,
             guard: bool | None = None, apply_operating_point: bool = True) -> Station:
        """Build and open every role; same as ``Station(config, ...)``."""
        return cls(config, base_dir=base_dir, tolerant=tolerant, guard=guard,
                   apply_operating_point=apply_operating_point)

    # -- building -------------------------------------------------------------------------------
    def _check_duplicate_resources(self, tolerant: bool) -> None:
        """Refuse two roles on one resource unless its driver declares channels and each role has its
        own channel; ``tolerant``: record the later role as failed instead."""
        seen: dict[tuple[str, str], list[tuple[str, int | None]]] = {}
        for role, ic in self.config.roles().items():
            if ic.simulated or not ic.resource:
                continue
            # only with real roles: simulated stations never load the driver stack
            from labqfl.drivers import DRIVERS

            key = (ic.visa_library or "", ic.resource.strip().upper())
            channel = _role_channel(DRIVERS.get(ic.driver), ic)
            msg = None
            for other, other_channel in seen.get(key, []):
                other_driver = self.config.roles()[other].driver
                via = f" via {ic.visa_library}" if ic.visa_library else ""
                if channel is None or other_channel is None or other_driver != ic.driver:
                    msg = (f"roles {other!r} and {role!r} both use resource {ic.resource!r}{via}; give each role its "
                           f"own instrument (several roles may share one only when its driver has channels and "
                           f"each role picks its own options.channel)")
                elif channel == other_channel:
                    msg = (f"roles {other!r} and {role!r} both use channel {channel} of resource {ic.resource!r}{via}; "
                           f"expected a different options.channel for each role")
                if msg:
                    break
            if msg:
                if not tolerant:
                    raise StationError(msg)
                self.failures[role] = msg
                self._skip.add(role)
                continue
            seen.setdefault(key, []).append((role, channel))

    def _open_all(self, tolerant: bool) -> None:
        roles = self.config.roles()
        sim_roles = [r for r, ic in roles.items() if ic.simulated]
        emulated_tt = self.config.simulation.emulate_time_tagger
        opened: dict[str, Instrument] = {}
        if sim_roles or emulated_tt:
            try:
                sims = self._create_simulated()
                missing = [r for r in sim_roles if r not in sims]
                for r, inst in sims.items():
                    if r in sim_roles:
                        opened[r] = inst
                    elif r == "time_tagger" and emulated_tt:  # the light behind the emulated SDK
                        self._light = inst
                    else:  # the factory built a role the config makes real: not ours to keep
                        inst.close()
                if missing:
                    raise StationError(f"the simulator did not build roles {missing}")
                light = self._light if self._light is not None else opened.get("time_tagger")
                self._loop = getattr(light, "testbed", None)
                if self.config.simulation.emulate_detectors:  # their controllers, the loop's detectors following
                    light = self._light if self._light is not None else opened["time_tagger"]
                    self._detector_emulators = emulated_detectors(self.config, light)
            except Exception as exc:
                for inst in opened.values():
                    inst.close()
                opened.clear()
                if not tolerant:
                    raise StationError(f"simulated roles {sim_roles} failed to open: {_one_line(exc)}") from exc
                for r in sim_roles:
                    self.failures[r] = _one_line(exc)
        # keep the config's role order (close() goes in reverse)
        for role, ic in roles.items():
            if role in self._skip:
                continue
            if ic.simulated:
                if role in opened:
                    self._add(role, opened[role])
                continue
            try:
                self._add(role, self._open_real(role, ic))
                self._follow_driver(role)
            except Exception as exc:
                if not tolerant:
                    raise StationError(f"role {role!r} ({ic.driver} {_where(ic)}) failed to open: {_one_line(exc)}") from exc
                self.failures[role] = _one_line(exc)
                log.info("role %s failed to open: %s", role, exc)

    def _apply_operating_point(self, tolerant: bool) -> None:
        """Write the station file's operating point to every real instrument (driver ramps included).

        Simulated roles take theirs from the simulator, which builds them from the same file.
        """
        for role in list(self.instruments):
            ic = self.config.roles()[role]
            apply = getattr(self.instruments[role], "apply_operating_point", None)
            if ic.simulated or apply is None:
                continue
            try:
                apply(self.config)
            except Exception as exc:
                if not tolerant:
                    raise StationError(f"role {role!r} ({ic.driver} {_where(ic)}): the station file's operating "
                                       f"point could not be applied: {_one_line(exc)}") from exc
                self.failures[role] = f"operating point not applied: {_one_line(exc)}"
                log.info("role %s: operating point not applied: %s", role, exc)
        give_detectors_light_off(self.instruments)  # a bias reset (latch) in any procedure: light off first

    def _add(self, role: str, inst: Instrument) -> None:
        want = expected_interfaces(role)
        if not isinstance(inst, want):
            inst.close()
            raise StationError(f"role {role!r} got a {type(inst).__name__}; expected a {' or '.join(w.__name__ for w in want)}")
        self.instruments[role] = inst

    def _create_simulated(self) -> dict[str, Instrument]:
        try:
            sim_backends = importlib.import_module("labqfl.sim_backends")
            factory = sim_backends.create_simulated_instruments
        except (ImportError, AttributeError) as exc:
            raise StationError("simulated instruments are unavailable: labqfl.sim_backends has no "
                               "create_simulated_instruments(config)") from exc
        return dict(factory(self.config))

    def _follow_driver(self, role: str) -> None:
        """A real driver next to a simulated loop (an emulated station): the loop follows the instrument state
        the driver writes, for the roles it models (the laser's output and power; a bit-driven phase modulator's
        amplifier output, gain and DC bias: ``labqfl.sim_backends.instruments.driver_follower``), from the state
        the instrument holds now on."""
        if self._loop is None:
            return
        sim = importlib.import_module("labqfl.sim_backends.instruments")
        hook = sim.driver_follower(self._loop, role)
        if hook is not None:
            inst = self.instruments[role]
            inst.add_change_hook(hook)
            hook(inst, "")

    def _open_real(self, role: str, ic: InstrumentConfig) -> Instrument:
        if role == "time_tagger" and self.config.simulation.emulate_time_tagger:
            if self._light is None:
                raise StationError("the emulated time tagger has no simulated loop behind it (the simulated roles "
                                   "failed to open)")
            self._tagger_sdk = emulated_tagger_sdk(self.config, self._light)
            return open_driver(role, ic, self.base_dir, sdk=self._tagger_sdk)
        if role in ("D0", "D1") and self.config.simulation.emulate_detectors:
            if self._detector_emulators is None:
                raise StationError("the emulated detectors have no simulated loop behind them (the simulated roles "
                                   "failed to open)")
            return open_driver(role, self._detector_emulators.instrument_config(role, ic), self.base_dir)
        return open_driver(role, ic, self.base_dir)

    @property
    def _light_tagger(self) -> Any:
        """The tagger that knows the simulated clients' acquisitions: the simulated tagger, or the light behind an
        emulated real tagger."""
        return self._light if self._light is not None else self.instruments.get("time_tagger")

    def _latest_epoch(self) -> int | None:
        """Epoch of the latest acquisition whose clients' logs this station holds (None: none)."""
        if self._own_logs is not None:
            return self._own_logs[0]
        epoch = getattr(self._light_tagger, "acquisition_epoch", None)
        return None if epoch is None else int(epoch)

    def knows_client_logs(self) -> bool:
        """Whether the latest acquisition's clients' logs are known here: a simulated loop (the simulated tagger,
        or an emulated real tagger's light), or a real tagger whose clients' generators this process armed
        (:meth:`prepare_acquisition`)."""
        return self._latest_epoch() is not None

    def prepare_acquisition(self, duration_s: float, block_duration_s: float | None) -> None:
        """Before each acquisition segment (:class:`labqfl.app.acquire.Acquisition`), so that the clients' logs of
        it are known before their streams start:

        * an emulated real tagger: the simulated loop's acquisition starts now and is handed to the emulated SDK for
          the driver's next ``TimeTagStream``;
        * a real tagger on real hardware, every client on a pattern generator: each client's generator is armed
          here (:func:`labqfl.sim_backends.qrng.new_client_log`: a fresh CSPRNG key, or its seeded stream) under a
          fresh random epoch; their frames go to the pattern generators and the light is the lab's. This process
          then holds every client's randomness, as ``labqfl acquire`` in one process does; over node processes each
          client holds its own;
        * otherwise nothing (the simulated tagger arms the clients itself)."""
        if self._light is None or self._tagger_sdk is None:
            self._own_logs = None
            if not self.config.time_tagger.simulated and self.config.clients and all(
                    c.pattern_generator is not None for c in self.config.clients):
                qrng = importlib.import_module("labqfl.sim_backends.qrng")
                epoch = secrets.randbits(59)  # public: it names the acquisition; CSPRNG choices do not depend on it
                self._own_logs = (epoch, {c.name: qrng.new_client_log(c, epoch) for c in self.config.clients})
            return
        self._tagger_sdk.prepare(self._light.stream(duration_s, block_duration_s))

    # -- access ---------------------------------------------------------------------------------
    def __getitem__(self, role: str) -> Instrument:
        try:
            return self.instruments[role]
        except KeyError:
            if role in self.failures:
                raise StationError(f"role {role!r} is not available: {self.failures[role]}") from None
            raise ConfigError(f"station {self.name!r} has no role {role!r}; roles are {list(self.config.roles())}") from None

    def __contains__(self, role: object) -> bool:
        return role in self.instruments

    @property
    def roles(self) -> list[str]:
        """Roles that opened, in opening order."""
        return list(self.instruments)

    @property
    def laser(self) -> PulsedLaser:
        return cast(PulsedLaser, self["laser"])

    def phase_modulator(self, client: str) -> PhaseModulator:
        return cast(PhaseModulator, self[f"{client}.phase_modulator"])

    def attenuator(self, client: str) -> VariableAttenuator | IntensityModulator:
        return cast(VariableAttenuator | IntensityModulator, self[f"{client}.attenuator"])

    def detector(self, name: str) -> PhotonDetector:
        if name not in ("D0", "D1"):
            raise ConfigError(f"no detector {name!r}; detectors are 'D0' and 'D1'")
        return cast(PhotonDetector, self[name])

    @property
    def time_tagger(self) -> TimeTagger:
        return cast(TimeTagger, self["time_tagger"])

    @property
    def power_meter(self) -> PowerMeter:
        return cast(PowerMeter, self["power_meter"])

    # -- records, checks, shutdown ------------------------------------------------------------
    def client_logs(self) -> dict[str, Any]:
        """Each client's own modulation log (:class:`~labqfl.contracts.types.ModulationLog`) of the latest
        acquisition of the time tagger, by client name.

        Simulated clients arm a generator per acquisition (a fresh CSPRNG key, or the seeded
        stream): their logs come from the simulated tagger's clients, each with its
        ``randomness`` (``"csprng"`` | ``"seeded"``) to mark the keys made from it. A replayed
        recording gives the seeded clients' logs and the CSPRNG clients' private logs held on this
        machine. A station with a real tagger needs the clients' own recorded logs and raises
        :class:`StationError` here. Clients streaming to pattern generators in this acquisition
        (:meth:`attach_played_frames`) get their log restricted to the frames they played.
        """
        epoch = self._latest_epoch()
        if epoch is None or (self._own_logs is None and getattr(self._light_tagger, "client_logs", None) is None):
            raise StationError(
                f"station {self.name!r}: the time tagger has no acquisition with client logs; "
                "real clients must supply their recorded modulation logs (see docs/postprocessing.md)")
        logs = self._unrestricted_logs()
        if self._played is not None and self._played[0] == epoch:  # streaming:
            from labqfl.modulation import PlayedChoiceLog

            logs.update({c: PlayedChoiceLog(logs[c], rec) for c, rec in self._played[1].items() if c in logs})  # played only
        return logs

    def _unrestricted_logs(self) -> dict[str, Any]:
        """The clients' logs of the latest acquisition as the simulated tagger holds them (every frame)."""
        if self._own_logs is not None:
            return dict(self._own_logs[1])
        return dict(cast(Any, self._light_tagger).client_logs())

    def attach_played_frames(self, records: dict[str, Any]) -> None:
        """Each streaming client's live played-frames record (:class:`~labqfl.instruments.interfaces.PlayedFrames`,
        by client) of the time tagger's current acquisition: from now on :meth:`client_logs` hands out those
        clients' logs restricted to their played frames (:class:`labqfl.modulation.PlayedChoiceLog`), as a
        recording does. Set by :class:`labqfl.app.acquire.Acquisition` when it starts the clients' streams."""
        self._played = (int(cast(int, self._latest_epoch())), dict(records))

    def acquisition_id(self) -> str:
        """Identity of the latest acquisition (station, client seeds, epoch) — see
        :func:`labqfl.contracts.types.acquisition_id`; block IDs of its keys derive from it."""
        epoch = self._latest_epoch()
        if epoch is None:
            raise StationError(f"station {self.name!r}: no acquisition yet")
        from labqfl.contracts.types import acquisition_id

        return acquisition_id(self.config, int(epoch))

    def pair_report(self) -> Any | None:
        """Per-pair report of the latest acquisition (clicks per detector, basis and intensity
        pair, error rates; ``add(block)`` each streamed block, then ``finish()`` and
        ``summary()``): the node's outcomes joined with the clients' own logs, so a report only.
        None when the time tagger has no client logs (a real tagger)."""
        if not self.knows_client_logs():
            return None
        analysis = importlib.import_module("labqfl.sim_backends.analysis")
        return analysis.PairReport(self.config, self._unrestricted_logs())  # report only: every frame's choices

    def recorder(self, path: str | Path, *, data_dir: str | Path | None = None) -> Any:
        """A writer (``append(block)``, ``close(duration_s=…, complete=…)``) recording the latest
        acquisition's tags to the HDF5 file ``path`` (layout: docs/simulator.md).

        The recording holds tags and public metadata only. Each CSPRNG client's private choice
        log is saved first into that client's own folder under ``data_dir`` (default: the data
        dir), where ``labqfl distill`` finds it.
        """
        recording = importlib.import_module("labqfl.sim_backends.recording")
        epoch = self._latest_epoch()
        logs = self._unrestricted_logs() if epoch is not None else {}  # the recording keeps played frames apart
        if logs:
            recording.save_client_logs(logs, self.acquisition_id(), data_dir)
        simulated_light = self._light is not None or self.config.time_tagger.simulated
        return recording.RecordingWriter(path, self.config, epoch=epoch, client_logs=list(logs.values()),
                                         source="sim" if simulated_light else "hardware")

    def snapshot(self) -> dict[str, Any]:
        """All settings of every role with units, for run records (JSON-serialisable)."""
        roles: dict[str, Any] = {}
        for role, ic in self.config.roles().items():
            entry: dict[str, Any] = {"driver": ic.driver, "resource": ic.resource, "simulated": ic.simulated}
            if role in self.instruments:
                try:
                    entry.update(self.instruments[role].snapshot())
                except Exception as exc:
                    entry["error"] = _one_line(exc)
            else:
                entry["error"] = self.failures.get(role, "not open")
            roles[role] = entry
        return {"station": self.name, "roles": roles}

    def check(self) -> dict[str, Any]:
        """Identity and status per role: ``{"station", "ok", "roles": {role: {...}}}``."""
        roles: dict[str, Any] = {}
        for role, ic in self.config.roles().items():
            entry: dict[str, Any] = {"ok": False, "driver": ic.driver, "resource": ic.resource, "identity": None}
            inst = self.instruments.get(role)
            if inst is None:
                entry["error"] = self.failures.get(role, "not open")
            else:
                try:
                    entry["identity"] = inst.identity()
                    entry["status"] = inst.status()
                    entry["ok"] = True
                except Exception as exc:
                    entry["error"] = _one_line(exc)
            roles[role] = entry
        return {"station": self.name, "ok": all(r["ok"] for r in roles.values()), "roles": roles}

    def safe_state(self) -> dict[str, str]:
        """Every instrument to its safe state (reverse order); returns ``{role: error}`` of failures.
        Nothing to do on a closed station: its close put every instrument safe and released it (a
        SIGINT handler closes it before the interrupted ``with`` block exits; a second pass printed a
        "safe_state failed: instrument is not connected" error for every role)."""
        if self._closed:
            return {}
        failed: dict[str, str] = {}
        for role in reversed(list(self.instruments)):
            try:
                self.instruments[role].safe_state()
            except Exception as exc:
                failed[role] = _one_line(exc)
                log.error("role %s: safe_state failed: %s", role, exc)
        return failed

    def close(self) -> None:
        """Safe state and release every instrument, in reverse opening order; restore the signal
        handlers of a guarded station. Idempotent and thread-safe."""
        with self._close_lock:
            if self._closed:
                return
            try:
                for role in reversed(list(self.instruments)):
                    try:
                        self.instruments[role].close()
                    except Exception as exc:  # keep closing the others
                        log.error("role %s: close failed: %s", role, exc)
                if self._detector_emulators is not None:  # after the detectors' safe state went through them
                    self._detector_emulators.close()
                if self._light is not None:
                    self._light.close()
            finally:
                self._closed = True
                if self.guarded:
                    self.guarded = False
                    _guard_unregister(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Station:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            self.safe_state()
        self.close()

    def __repr__(self) -> str:
        return f"<Station {self.name!r}: {len(self.instruments)} roles open, {len(self.failures)} failed>"


__all__ = ["Station", "acquisition_faults", "arm_instruments", "clicked_until_end", "emulated_detectors", "emulated_tagger_sdk", "expected_interfaces", "guard_stations",
           "hold_master_clocks", "open_driver", "refuse_faulty_acquisition", "sigterm_as_interrupt", "Termination",
           "validate_driver_roles"]
