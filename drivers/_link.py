"""I/O session shared by every message-based driver: one pymeasure ``Adapter`` plus error handling.

Every SCPI/serial driver in :mod:`labqfl.drivers` talks to its instrument through a :class:`Link`:

* the transport is a PyMeasure adapter — :class:`pymeasure.adapters.VISAAdapter` for real hardware
  and pyvisa-sim, or an injected adapter (``ProtocolAdapter`` in expected-protocol tests);
* VISA timeouts, undecodable bytes (serial garbage), unparsable replies and instrument error-queue
  entries (``SYST:ERR?``) become :class:`~labqfl.errors.InstrumentTimeout`,
  :class:`~labqfl.errors.InstrumentReplyError` and :class:`~labqfl.errors.InstrumentQueueError`
  naming the instrument, its resource and the command;
* every exchange runs under the owning instrument's ``RLock``, so a GUI thread and an acquisition
  thread can call the same instrument at once (a query's write and read are never interleaved);
* a process-wide registry refuses to open one resource twice (two driver objects sharing a session
  would interleave commands) — except for the channels of a multi-channel instrument: roles on
  distinct channels of one resource share one session and one lock, so their commands never
  interleave; the session closes with the last of them.

``visa_library`` values (see :func:`resolve_visa_library`): ``None``/``""`` (the system VISA),
``"@py"`` (pyvisa-py), ``"path/device.yaml@sim"`` (pyvisa-sim; a relative path is resolved
against ``base_dir``, normally the station file's folder), and ``"@sim:<file>.yaml"`` — a YAML
shipped in ``labqfl/sim_backends/visa/``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import pyvisa
from pymeasure.adapters import Adapter, VISAAdapter

from labqfl.config import InstrumentConfig
from labqfl.errors import (
    ConfigError,
    InstrumentError,
    InstrumentQueueError,
    InstrumentReplyError,
    InstrumentTimeout,
)
from labqfl.instruments.base import Instrument

T = TypeVar("T")

class _Session:
    """One open resource: its adapter, the lock every holder uses, and who holds it on which channel."""

    def __init__(self, driver: str, lock: Any) -> None:
        self.driver = driver
        self.lock = lock
        self.adapter: Adapter | None = None
        self.holders: dict[str, int | None] = {}


#: Resources currently open in this process: key -> session.
_OPEN: dict[tuple[str, str], _Session] = {}
_OPEN_LOCK = threading.Lock()

#: Maximum number of error-queue entries drained after one command.
_MAX_QUEUE = 32

PACKAGED_SIM_PREFIX = "@sim:"

#: Smallest magnitude of the SCPI overflow (9.9E+37) and not-a-number (9.91E+37) replies.
SCPI_OVERFLOW = 9.9e37


def packaged_sim_yaml(filename: str) -> Path:
    """Path of a pyvisa-sim YAML shipped in ``labqfl/sim_backends/visa/``."""
    root = resources.files("labqfl.sim_backends").joinpath("visa")
    path = Path(str(root.joinpath(filename)))
    if not path.is_file():
        shipped = sorted(p.name for p in Path(str(root)).glob("*.yaml"))
        raise ConfigError(f"no packaged pyvisa-sim file {filename!r}; shipped files are {shipped}")
    return path


def resolve_visa_library(value: str | None, base_dir: Path | None = None) -> str:
    """Turn a station file's ``visa_library`` into what ``pyvisa.ResourceManager`` expects.

    ``"@sim:<file>.yaml"`` → the packaged YAML; ``"rel/dev.yaml@sim"`` → ``base_dir/rel/dev.yaml@sim``
    (``base_dir`` defaults to the working directory); anything else is returned unchanged.
    """
    if not value:
        return ""
    if value.startswith(PACKAGED_SIM_PREFIX):
        return f"{packaged_sim_yaml(value[len(PACKAGED_SIM_PREFIX):])}@sim"
    if value.endswith("@sim") and value != "@sim":
        path = Path(value[: -len("@sim")]).expanduser()
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        if not path.is_file():
            raise ConfigError(f"pyvisa-sim file {str(path)!r} (from visa_library {value!r}) does not exist")
        return f"{path.resolve()}@sim"
    return value


def _registry_key(library: str, resource: str) -> tuple[str, str]:
    return (library, resource.strip().upper())


class Link:
    """One message-based session to one instrument (see the module docstring).

    ``adapter``: an already-built pymeasure adapter (tests); otherwise a ``VISAAdapter`` is opened
    on ``config.resource`` with ``config.visa_library`` and ``config.timeout_ms``.
    ``error_query``: the error-queue query (``None`` for instruments without one); its reply must
    start with an integer code, 0 meaning "no error".
    """

    def __init__(
        self,
        owner: Instrument,
        config: InstrumentConfig,
        *,
        adapter: Adapter | None = None,
        read_termination: str = "\n",
        write_termination: str = "\n",
        error_query: str | None = "SYST:ERR?",
        serial: dict[str, Any] | None = None,
        channel: int | None = None,
    ) -> None:
        self.owner = owner
        #: Channel of a multi-channel instrument this link serves (``None``: the whole instrument).
        self.channel = channel
        self.config = config
        self.read_termination = read_termination
        self.write_termination = write_termination
        self.error_query = error_query
        self.serial = dict(serial or {})
        self._injected = adapter
        self.adapter: Adapter | None = None
        self.library = resolve_visa_library(config.visa_library)
        self._key: tuple[str, str] | None = None
        #: True once the instrument has answered a query on this session (a live connection).
        self.heard = False

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def resource(self) -> str:
        return self.config.resource or ""

    def open(self) -> None:
        """Open the session (registers the resource as in use by this instrument)."""
        with self.owner.lock:
            if self.adapter is not None:
                return
            self.heard = False
            if self._injected is not None:
                self.adapter = self._injected
                return
            key = _registry_key(self.library, self.resource)
            with _OPEN_LOCK:
                sess = _OPEN.get(key)
                if sess is not None:
                    self._join(key, sess)
                    return
                sess = _OPEN[key] = _Session(type(self.owner).__name__, self.owner.lock)
                sess.holders[self.owner.name] = self.channel
            kwargs: dict[str, Any] = {
                "timeout": self.config.timeout_ms,
                "read_termination": self.read_termination,
                "write_termination": self.write_termination,
            }
            if self.resource.upper().startswith("ASRL"):
                kwargs.update(self.serial)
            try:
                self.adapter = VISAAdapter(self.resource, visa_library=self.library, **kwargs)
                self._check_simulated_resource(self.adapter)
                self._attach_simulated_models(self.adapter)
            except Exception as exc:
                with _OPEN_LOCK:
                    _OPEN.pop(key, None)
                    sess.holders.clear()
                adapter, self.adapter = self.adapter, None
                if adapter is not None:
                    try:
                        adapter.close()
                    except Exception as close_exc:  # the open failure is the one to report
                        self.owner.log.warning("closing the failed VISA session failed: %s", close_exc)
                if isinstance(exc, InstrumentError):
                    raise
                raise InstrumentError(
                    f"cannot connect: {_describe(exc)}", instrument=self.owner.name, resource=self.resource
                ) from exc
            with _OPEN_LOCK:
                sess.adapter = self.adapter
            self._key = key

    def _join(self, key: tuple[str, str], sess: _Session) -> None:
        """Share an open session: allowed for distinct channels of one multi-channel driver (caller holds
        ``_OPEN_LOCK``)."""
        others = ", ".join(repr(n) for n in sess.holders)
        if (self.channel is None or sess.driver != type(self.owner).__name__
                or any(c is None for c in sess.holders.values())):
            raise InstrumentError(f"resource is already open by instrument {others}; close it first or share that "
                                  f"instance", instrument=self.owner.name, resource=self.resource)
        for name, ch in sess.holders.items():
            if ch == self.channel:
                raise InstrumentError(f"channel {self.channel} of this resource is already open by instrument "
                                      f"{name!r}; expected a different channel", instrument=self.owner.name,
                                      resource=self.resource)
        if sess.adapter is None:
            raise InstrumentError(f"resource is still being opened by instrument {others}",
                                  instrument=self.owner.name, resource=self.resource)
        sess.holders[self.owner.name] = self.channel
        self.adapter = sess.adapter
        self.owner.lock = sess.lock  # one lock per session: channels never interleave a query
        self._key = key

    def _check_simulated_resource(self, adapter: Adapter) -> None:
        """pyvisa-sim opens any resource name and then answers nothing on it; refuse names that the
        simulation file does not define, as a real VISA library refuses an absent instrument."""
        if not self.library.endswith("@sim"):
            return
        defined = [str(r) for r in adapter.manager.list_resources()]  # type: ignore[attr-defined]
        if _canonical(self.resource) not in {_canonical(r) for r in defined}:
            raise InstrumentError(
                f"cannot connect: no instrument at this resource in the pyvisa-sim file "
                f"{Path(self.library[: -len('@sim')]).name}; it defines {', '.join(defined) or 'none'}",
                instrument=self.owner.name, resource=self.resource)

    def _attach_simulated_models(self, adapter: Adapter) -> None:
        """pyvisa-sim: attach the Python models its YAML cannot express (:mod:`labqfl.sim_backends.visa_models`,
        e.g. a PRO8000's actual LD current following its set point) once, when the session opens, so that no
        driver branches on the simulator."""
        if not self.library.endswith("@sim"):
            return
        from labqfl.sim_backends.visa_models import attach

        attach(adapter)

    def close(self) -> None:
        """Leave the session (closing it with its last holder); idempotent."""
        with self.owner.lock:
            adapter, self.adapter = self.adapter, None
            last = True
            if self._key is not None:
                with _OPEN_LOCK:
                    sess = _OPEN.get(self._key)
                    if sess is not None:
                        sess.holders.pop(self.owner.name, None)
                        last = not sess.holders
                        if last:
                            _OPEN.pop(self._key, None)
                self._key = None
            try:
                if adapter is not None and self._injected is None and last:
                    adapter.close()
            except Exception as exc:  # a dead session must not make close() raise
                self.owner.log.warning("closing the VISA session failed: %s", exc)

    # -- I/O ------------------------------------------------------------------------------------
    def _adapter(self, command: str) -> Adapter:
        if self.adapter is None:
            raise InstrumentError("instrument is not connected (closed); call reconnect()",
                                  instrument=self.owner.name, resource=self.resource, command=command)
        return self.adapter

    def call(self, command: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` (which does I/O on this link) under the lock, translating failures."""
        with self.owner.lock:
            self._adapter(command)
            try:
                return fn()
            except (InstrumentError, AssertionError):
                raise
            except pyvisa.errors.VisaIOError as exc:
                if exc.error_code == pyvisa.constants.StatusCode.error_timeout:
                    raise InstrumentTimeout(
                        f"no reply within {self.config.timeout_ms} ms (instrument off or busy, wrong address, "
                        f"or wrong termination: expecting replies ending in {self.read_termination!r})"
                        f"{self._queue_after_timeout(command)}",
                        instrument=self.owner.name, resource=self.resource, command=command,
                    ) from exc
                raise InstrumentError(f"VISA I/O error: {exc.description}", instrument=self.owner.name,
                                      resource=self.resource, command=command) from exc
            except UnicodeDecodeError as exc:
                raise InstrumentReplyError(
                    "reply is not text (serial garbage: check baud rate, cabling and termination)",
                    instrument=self.owner.name, resource=self.resource, command=command,
                ) from exc
            except (ValueError, TypeError, IndexError) as exc:
                raise InstrumentReplyError(f"unexpected reply: {exc}", instrument=self.owner.name,
                                           resource=self.resource, command=command) from exc
            except KeyError as exc:  # PyMeasure's map_values: "Value 2.0 not found in mapped values"
                text = exc.args[0] if exc.args else exc
                raise InstrumentReplyError(f"unexpected reply: {text}; expected one of the values this command "
                                           f"answers", instrument=self.owner.name, resource=self.resource,
                                           command=command) from exc
            except AttributeError as exc:  # PyMeasure refusing a property of this unit ("… is not a power sensor")
                raise InstrumentReplyError(f"unexpected reply: {exc}", instrument=self.owner.name,
                                           resource=self.resource, command=command) from exc
            except (OSError, ConnectionError) as exc:
                raise InstrumentError(f"I/O failed: {_describe(exc)}", instrument=self.owner.name,
                                      resource=self.resource, command=command) from exc

    def _queue_after_timeout(self, command: str) -> str:
        """After ``command`` timed out on an instrument that has answered before, drain its error queue
        and return the entries as a tail of the timeout's message: an unknown query leaves its error
        (-113 "Undefined header") in the queue, and is reported here against the command that caused it
        rather than against the next write. Nothing is drained for an instrument never heard (an absent
        one would only time out again) or when the error query itself timed out; a failing drain is
        logged and leaves the timeout as it is."""
        if self.error_query is None or command == self.error_query or not self.heard:
            return ""
        entries: list[str] = []
        try:
            for _ in range(_MAX_QUEUE):
                reply = self.query(self.error_query)
                if int(float(reply.split(",", 1)[0].strip())) == 0:
                    break
                entries.append(reply)
        except (InstrumentError, ValueError) as exc:
            self.owner.log.warning("draining the error queue after a timeout of %r failed: %s", command, exc)
        return f"; the instrument's error queue then held {'; '.join(entries)}" if entries else ""

    def write(self, command: str, *, check: bool = True) -> None:
        """Send ``command``; then drain the error queue (``check``) and raise on any entry."""
        with self.owner.lock:
            self.call(command, lambda: self._adapter(command).write(command))
            if check:
                self.check_errors(command)

    def query(self, command: str) -> str:
        """Send ``command`` and return the stripped reply text."""
        with self.owner.lock:
            def _q() -> str:
                a = self._adapter(command)
                a.write(command)
                return str(a.read())
            raw = self.call(command, _q)
            if raw.strip():
                self.heard = True
            if raw.endswith(("\r", "\n")) or raw.startswith(("\r", "\n")):
                raise InstrumentReplyError(
                    f"reply {raw!r} ends in an unexpected line ending (wrong termination: expected {self.read_termination!r})",
                    instrument=self.owner.name, resource=self.resource, command=command)
            reply = raw.strip()
            if not reply:
                raise InstrumentReplyError("empty reply (wrong resource, or the instrument does not know this query)",
                                           instrument=self.owner.name, resource=self.resource, command=command)
            if not reply.isprintable():
                raise InstrumentReplyError(f"reply {reply!r} contains control characters (serial garbage or wrong termination)",
                                           instrument=self.owner.name, resource=self.resource, command=command)
            return reply

    def number(self, command: str, reply: Any, lo: float | None = None, hi: float | None = None,
               unit: str = "") -> float:
        """``reply`` (text or number) as a float within ``lo`` … ``hi``; otherwise one
        :class:`InstrumentReplyError` naming the reply and what was expected.

        Refused always: no number, NaN/infinity, and the SCPI overflow / not-a-number values
        (9.9E+37 / 9.91E+37, IEEE 488.2 and SCPI-99 §7.2.1.5), which an instrument answers when the
        reading is out of its range or undefined.
        """
        where = {"instrument": self.owner.name, "resource": self.resource, "command": command}
        text = reply.strip() if isinstance(reply, str) else reply
        if isinstance(text, str) and not text:
            raise InstrumentReplyError("empty reply; expected a number", **where)
        if isinstance(text, bool):
            raise InstrumentReplyError(f"unexpected reply {reply!r}; expected a number", **where)
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise InstrumentReplyError(f"unexpected reply {reply!r}; expected a number", **where) from None
        u = f" {unit}" if unit else ""
        if not math.isfinite(value) or abs(value) >= SCPI_OVERFLOW:
            raise InstrumentReplyError(f"reply {reply!r} is the SCPI overflow/not-a-number value (reading out of "
                                       f"range or undefined); expected a finite reading", **where)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            expected = (f"at least {lo:g}" if hi is None else f"at most {hi:g}" if lo is None
                        else f"{lo:g} to {hi:g}")
            raise InstrumentReplyError(f"reply {reply!r} is out of range; expected {expected}{u}", **where)
        return value

    def call_float(self, command: str, fn: Callable[[], Any], lo: float | None = None, hi: float | None = None,
                   unit: str = "") -> float:
        """:meth:`call` ``fn`` (a PyMeasure read), its result converted by :meth:`number` under the same
        lock, so an unparsable or out-of-range reply is one clear error naming the command."""
        with self.owner.lock:
            return self.number(command, self.call(command, fn), lo, hi, unit)

    def query_float(self, command: str, lo: float | None = None, hi: float | None = None, unit: str = "") -> float:
        return self.number(command, self.query(command), lo, hi, unit)

    def query_int(self, command: str, lo: float | None = None, hi: float | None = None, unit: str = "") -> int:
        value = self.query_float(command, lo, hi, unit)
        if value != int(value):
            raise InstrumentReplyError(f"unexpected reply {value!r}; expected an integer",
                                       instrument=self.owner.name, resource=self.resource, command=command)
        return int(value)

    def query_bool(self, command: str) -> bool:
        reply = self.query(command).upper()
        if reply in ("1", "ON", "+1"):
            return True
        if reply in ("0", "OFF", "+0"):
            return False
        raise InstrumentReplyError(f"unexpected reply {reply!r}; expected 0/1 or ON/OFF",
                                   instrument=self.owner.name, resource=self.resource, command=command)

    def check_errors(self, command: str = "") -> None:
        """Drain the error queue; raise :class:`InstrumentQueueError` listing every entry."""
        if self.error_query is None:
            return
        with self.owner.lock:
            entries: list[str] = []
            for _ in range(_MAX_QUEUE):
                reply = self.query(self.error_query)
                code_text = reply.split(",", 1)[0].strip()
                try:
                    code = int(float(code_text))
                except ValueError:
                    raise InstrumentReplyError(
                        f"unexpected error-queue reply {reply!r}; expected '<code>,\"<message>\"'",
                        instrument=self.owner.name, resource=self.resource, command=self.error_query,
                    ) from None
                if code == 0:
                    break
                entries.append(reply)
            if entries:
                raise InstrumentQueueError(
                    f"instrument reported {'; '.join(entries)}",
                    instrument=self.owner.name, resource=self.resource, command=command,
                )


def _canonical(resource: str) -> str:
    """VISA resource name in canonical form (``TCPIP::h::INSTR`` → ``TCPIP0::h::inst0::INSTR``)."""
    try:
        return pyvisa.rname.to_canonical_name(resource.strip()).upper()
    except pyvisa.rname.InvalidResourceName:
        return resource.strip().upper()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
