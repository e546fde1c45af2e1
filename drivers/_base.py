"""Common behaviour of the drivers: what each declares for validation at station load
(:class:`DriverDeclaration`: typed options, config ranges, spectral range), and for the
message-based ones open/close/reconnect over a :class:`Link`, identity from ``*IDN?``, and the
link under the SCPI commands of their :class:`~labqfl.instruments.settings.Setting` s."""

from __future__ import annotations

import math
import re
import time
import warnings
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, NamedTuple

import numpy as np
from pydantic import AfterValidator, Field
from pymeasure.adapters import Adapter

from labqfl.config import DriverOptions, InstrumentConfig, StationConfig, validate_options
from labqfl.errors import InstrumentError, InstrumentReplyError, InstrumentTimeout
from labqfl.instruments.base import Instrument
from labqfl.instruments.interfaces import PhotonDetector
from labqfl.instruments.settings import Rejected, Setting, rule

from ._link import Link

#: A config field's valid range for one driver: (low, high, unit).
Limit = tuple[float, float, str]


class NoOptions(DriverOptions):
    """A driver that takes no options: any key is refused."""


class DriverDeclaration:
    """What a driver class declares about itself, checked when a station file is loaded (no I/O).

    * ``Options``: the pydantic model of the role's ``options`` table (unknown keys and wrong types
      are refused); the driver reads its options only through it, so defaults live there once.
    * :meth:`config_limits`: the driver's ranges for fields of the role's config table (``v_pi_v``,
      ``dead_time_ns`` …), taken from the driver's :class:`Setting` s (``Setting.limits``) where the
      field is a setting, so config ranges equal driver ranges.
    * ``SPECTRAL_RANGE_NM``: the documented wavelength range of an optical instrument; a station
      whose ``laser.wavelength_nm`` lies outside it is refused.
    """

    Options: ClassVar[type[DriverOptions]] = NoOptions
    SPECTRAL_RANGE_NM: ClassVar[tuple[float, float] | None] = None
    #: Channel numbers of a multi-channel instrument (as its manual numbers them); ``None``: one
    #: role per instrument. With channels, several roles may share one resource, one channel each.
    CHANNELS: ClassVar[tuple[int, ...] | None] = None

    @classmethod
    def channel_of(cls, options: Any) -> int | None:
        """The channel a role with these (validated) options uses; ``None`` for single-role drivers."""
        if cls.CHANNELS is None:
            return None
        return int(options.channel)

    def apply_operating_point(self, station: StationConfig) -> None:
        """Write the station file's operating point (this role's config, and the station's laser
        wavelength where the instrument is calibrated per wavelength) to the instrument.

        Called by the Station after every role opened. Outputs stay off: the laser stays off, the
        detector disarmed, the modulator output off, until a procedure turns them on. The default
        writes nothing (an instrument whose settings the station file does not describe).
        """

    @classmethod
    def config_limits(cls, options: Any) -> dict[str, Limit]:
        """Valid range per config field for this driver with these (validated) options."""
        return {}

    @classmethod
    def parse_options(cls, name: str, config: InstrumentConfig) -> Any:
        """The role's validated options (:class:`~labqfl.errors.ConfigError` naming the option)."""
        return validate_options(cls.Options, config.options, source=f"role {name!r}", field="", driver=cls.__name__)


def check_range(setting: str, value: float, lo: float, hi: float, unit: str = "") -> float:
    """Return ``float(value)`` or raise ``ValueError`` naming the argument and its valid range (for
    method arguments such as ``integration_s``; settings carry their rule in their :class:`Setting`)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{setting} must be a number, got {value!r}") from None
    if not math.isfinite(v) or not lo <= v <= hi:
        u = f" {unit}" if unit else ""
        raise ValueError(f"{setting} = {value!r}{u} is out of range; expected {lo:g} to {hi:g}{u}")
    return v


def ramp_points(start: float, target: float, step: float) -> list[float]:
    """Set points from ``start`` to ``target`` (excluded start, included target) no further apart than
    ``step``: the stepwise ramp of a laser current or a detector bias."""
    if not step > 0:
        raise ValueError(f"ramp step must be > 0, got {step!r}")
    n = max(1, math.ceil(round(abs(target - start) / step, 9)))
    return [start + (target - start) * k / n for k in range(1, n + 1)]


def run_ramp(points: list[float], rate_per_s: float, step: float, write: Callable[[float], None], *,
             cut: Callable[[], bool] | None = None) -> int:
    """Write each point of a ramp, pausing ``step / rate_per_s`` seconds between two writes (the
    ramp's pacing: at most ``rate_per_s`` units per second); how many points were written. ``cut``
    (when given) is asked before each write and every :data:`RAMP_POLL_S` of a pause: True ends the
    ramp there (the PRO8000's emergency stop, which may start while a normal ramp runs: review s37 lab3 M1)."""
    pause = step / rate_per_s if rate_per_s > 0 else 0.0
    for k, v in enumerate(points):
        if k and pause > 0:
            if cut is None:
                time.sleep(pause)
            elif _pause_cut(pause, cut):
                return k
        if cut is not None and cut():
            return k
        write(v)
    return len(points)


def _pause_cut(pause: float, cut: Callable[[], bool]) -> bool:
    """Sleep ``pause`` seconds in slices of :data:`RAMP_POLL_S`; True as soon as ``cut()`` is."""
    end = time.monotonic() + pause
    while (left := end - time.monotonic()) > 0:
        if cut():
            return True
        time.sleep(min(left, RAMP_POLL_S))
    return False


#: How often a ramp's pause asks its ``cut`` (:func:`run_ramp`) [s].
RAMP_POLL_S = 0.02


class SerialOptions(DriverOptions):
    """Options of a driver on a serial line."""

    baud_rate: int = Field(115200, ge=300, le=4_000_000, description="serial line rate [baud]")


class Identity(NamedTuple):
    """What a driver expects its instrument to answer to ``*IDN?`` (IEEE 488.2 §10.14: manufacturer,
    model, serial number, firmware, comma-separated): ``expected`` in words (for the refusal) and
    ``pattern``, a regular expression searched in the reply, case-insensitively."""

    expected: str
    pattern: str


def _regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression ({exc})") from None
    return value


#: The ``identity_pattern`` option: a regular expression the instrument's ``*IDN?`` reply must contain
#: (searched, case-insensitive) for a driver that names no model or whose reply is not documented.
IdentityPattern = Annotated[str | None, AfterValidator(_regex),
                            Field(min_length=1, description="regular expression the instrument's *IDN? reply must "
                                  "contain (searched, case-insensitive); checked on open, before anything is written")]


class MessageDriver(DriverDeclaration, Instrument):
    """Mixin for drivers talking SCPI-like text over one :class:`Link`.

    Subclasses set the termination class attributes and implement :meth:`_make_link` if they need
    a different transport (PyMeasure-based drivers build their PyMeasure instrument in
    :meth:`_on_open`).
    """

    READ_TERMINATION = "\n"
    WRITE_TERMINATION = "\n"
    ERROR_QUERY: str | None = "SYST:ERR?"
    SERIAL: dict[str, Any] = {}
    #: The instrument this driver is for, checked against ``*IDN?`` on every open (``None``: a
    #: protocol-level driver naming no model; its ``options.identity_pattern``, if set, is checked).
    IDENTITY: ClassVar[Identity | None] = None

    def __init__(self, name: str, config: InstrumentConfig, *, adapter: Adapter | None = None) -> None:
        super().__init__(name, config.resource or "")
        self.config = config
        self.opts = self.parse_options(name, config)
        serial = dict(self.SERIAL)
        if isinstance(self.opts, SerialOptions):
            serial["baud_rate"] = self.opts.baud_rate
        self.link = Link(self, config, adapter=adapter, read_termination=self.READ_TERMINATION,
                         write_termination=self.WRITE_TERMINATION, error_query=self.ERROR_QUERY,
                         serial=serial, channel=self.channel_of(self.opts))
        self._identity: str | None = None
        self.link.open()
        try:
            self._first_contact()
        except BaseException:
            self.link.close()
            self._closed = True
            raise

    def _first_contact(self) -> None:
        """Run :meth:`_on_open`; if the instrument never answered, report a failed connection.

        An absent instrument shows up as a timeout or an empty reply to whatever the driver sends
        first (``*IDN?``, or ``:SYST:ERR?`` after a setup write). That is reported as what it is —
        no instrument answered at this resource — not as a fault of that command. Warnings that
        the VISA layer raises on the way (pyvisa's "read string doesn't end with termination
        characters" for an empty read) go to the instrument's log instead of leaking.
        """
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                self._on_open()
            except (InstrumentTimeout, InstrumentReplyError) as exc:
                if self.link.heard:
                    raise
                cause = (f"no reply within {self.config.timeout_ms} ms" if isinstance(exc, InstrumentTimeout)
                         else "empty reply")
                raise type(exc)(  # same class (a timeout stays an InstrumentTimeout), connection named
                    f"cannot connect: no instrument answered at this resource ({cause}); check the address, the "
                    f"cable, that the instrument is on and its termination (replies must end in "
                    f"{self.READ_TERMINATION!r})", instrument=self.name, resource=self.resource,
                ) from exc
            except InstrumentError as exc:  # a socket refused or reset before any reply (LAN SOCKET resources)
                refused = exc.__cause__
                if self.link.heard or not isinstance(refused, ConnectionError):
                    raise
                raise InstrumentError(
                    f"cannot connect: {type(refused).__name__}: {refused}; check the address and port, and that the "
                    f"instrument is on", instrument=self.name, resource=self.resource) from exc
        for w in caught:
            self.log.warning("while opening: %s", w.message)

    def _on_open(self) -> None:
        """Hook run after the session opened (read identity, select channel, clear errors)."""
        self._read_identity()

    def expected_identity(self) -> Identity | None:
        """What ``*IDN?`` must answer on this role: the class's :attr:`IDENTITY`, or for a driver that
        names no model the role's ``options.identity_pattern`` (``None``: not checked)."""
        pattern = getattr(getattr(self, "opts", None), "identity_pattern", None)
        if pattern:
            return Identity(f"an instrument whose *IDN? matches options.identity_pattern {pattern!r}", pattern)
        return self.IDENTITY

    def _read_identity(self, reply: str | None = None) -> str:
        """Query ``*IDN?`` (or take ``reply``, already read), keep it, and refuse an instrument that is not
        the one this driver is for — before any setting is written to it."""
        ident = self.link.query("*IDN?") if reply is None else reply.strip()
        self._identity = ident
        expected = self.expected_identity()
        if expected is not None and not re.search(expected.pattern, ident, re.IGNORECASE):
            shown = " ".join(p.strip() for p in ident.split(",")[:2] if p.strip()) or ident
            raise InstrumentError(
                f"instrument at {self.resource} identifies as {shown} ({ident!r}); expected {expected.expected} "
                f"(check the address: nothing was written to it)", instrument=self.name, resource=self.resource,
                command="*IDN?")
        return ident

    def identity(self) -> str:
        with self.lock:
            if self._identity is None:
                return self._read_identity()
            return self._identity

    def status(self) -> dict[str, Any]:
        with self.lock:
            st: dict[str, Any] = {"connected": not self._closed and self.link.adapter is not None}
            if st["connected"] and self.link.error_query is not None:
                self.link.check_errors("status")
                st["error_queue"] = "empty"
            return st

    def reconnect(self) -> None:
        """Close the session (without changing the instrument's state) and open it again."""
        with self.lock:
            self.link.close()
            self._identity = None
            self.link.open()
            self._closed = False
            self._on_open()

    def _close(self) -> None:
        self.link.close()

    # -- the link under the settings' SCPI commands ----------------------------------------------
    def _setting_query(self, command: str, cast: Any) -> Any:
        if cast is float:
            return self.link.query_float(command)
        if cast is int:
            return self.link.query_int(command)
        if cast is bool:
            return self.link.query_bool(command)
        reply = self.link.query(command)
        return reply if cast is str else cast(reply)

    def _setting_write(self, command: str) -> None:
        self.link.write(command)


def _not_gated(inst: Any, value: Any) -> bool:
    if isinstance(value, bool | np.bool_) and not value:
        return False
    raise Rejected(f"False ({inst.free_running_name} is free-running)")


def _no_gate(inst: Any, value: Any) -> Any:
    raise Rejected(f"no value: {inst.free_running_name} is free-running (no gate to set)")


class FreeRunning:
    """Gate settings of a free-running photon detector: not gated, no gate width or delay to set
    (the interface's settings with a rule that refuses a gate; read: the station file's values).

    ``free_running_name`` names the detector in the refusals (e.g. ``"the ID120"``)."""

    free_running_name = "this detector"
    config: Any

    gated: Setting[bool] = PhotonDetector.gated.refine(validator=rule(_not_gated), fget=lambda s: False,
                                                       fset=lambda s, v: None)
    gate_width_ns: Setting[float] = PhotonDetector.gate_width_ns.refine(
        validator=rule(_no_gate), fget=lambda s: float(getattr(s.config, "gate_width_ns", 0.0)))
    gate_delay_ps: Setting[float] = PhotonDetector.gate_delay_ps.refine(
        validator=rule(_no_gate), fget=lambda s: float(getattr(s.config, "gate_delay_ps", 0.0)))


def _bare_message(exc: BaseException) -> str:
    """``exc``'s message without the ``(instrument …, resource …, command …)`` that
    :class:`InstrumentError` appends (it is added again by the error raised in its place)."""
    text = str(exc)
    if isinstance(exc, InstrumentError):
        where = str(InstrumentError("", instrument=exc.instrument, resource=exc.resource, command=exc.command))
        if where.strip() and text.endswith(where):
            return text[: -len(where)]
        return text
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, ValueError) else text


def off_anyway(inst: Instrument, approach: Callable[[], None], off: Callable[[], None], what: str) -> None:
    """A safe state that does not depend on read-backs: run ``approach`` (read, then ramp down);
    whatever it raised, run ``off`` (the command that stops emission or bias); then re-raise the
    first failure as one error of the same class that says the off command was sent (or that it
    failed too)."""
    first: BaseException | None = None
    try:
        approach()
    except BaseException as exc:  # noqa: BLE001 - re-raised below, after the off command (Ctrl-C too)
        first = exc
    try:
        off()
    except Exception as exc:
        if first is None:
            raise
        if not isinstance(first, Exception):
            raise first from exc  # Ctrl-C / SystemExit stay what they are
        raise _again(inst, first, f"; switching {what} off failed too: {_bare_message(exc)}") from first
    if first is not None and not isinstance(first, Exception):
        raise first  # interrupted during the ramp-down: switched off, then the interrupt goes on
    if first is not None:
        raise _again(inst, first, f"; {what} was switched off anyway") from first


def _again(inst: Instrument, first: BaseException, tail: str) -> InstrumentError:
    cls = type(first) if isinstance(first, InstrumentError) else InstrumentError
    return cls(f"safe state: {_bare_message(first)}{tail}", instrument=getattr(first, "instrument", "") or inst.name,
               resource=getattr(first, "resource", "") or getattr(inst, "resource", ""),
               command=getattr(first, "command", ""))
