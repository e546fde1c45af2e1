"""Common behaviour of the message-based drivers: open/close/reconnect over a :class:`Link`,
identity from ``*IDN?``, range validation with one clear ``ValueError``."""

from __future__ import annotations

import math
from typing import Any

from pymeasure.adapters import Adapter

from labqfl.config import InstrumentConfig
from labqfl.instruments.base import Instrument

from ._link import Link


def check_range(setting: str, value: float, lo: float, hi: float, unit: str = "") -> float:
    """Return ``float(value)`` or raise ``ValueError`` naming the setting and its valid range."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{setting} must be a number, got {value!r}") from None
    if not math.isfinite(v) or not lo <= v <= hi:
        u = f" {unit}" if unit else ""
        raise ValueError(f"{setting} = {value!r}{u} is out of range; expected {lo:g} to {hi:g}{u}")
    return v


def check_bool(setting: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{setting} must be True or False, got {value!r}")


class MessageDriver(Instrument):
    """Mixin for drivers talking SCPI-like text over one :class:`Link`.

    Subclasses set the termination class attributes and implement :meth:`_make_link` if they need
    a different transport (PyMeasure-based drivers build their PyMeasure instrument in
    :meth:`_on_open`).
    """

    READ_TERMINATION = "\n"
    WRITE_TERMINATION = "\n"
    ERROR_QUERY: str | None = "SYST:ERR?"
    SERIAL: dict[str, Any] = {}

    def __init__(self, name: str, config: InstrumentConfig, *, adapter: Adapter | None = None) -> None:
        super().__init__(name, config.resource or "")
        self.config = config
        self.options: dict[str, Any] = dict(config.options)
        serial = dict(self.SERIAL)
        if "baud_rate" in self.options:
            serial["baud_rate"] = int(self.options["baud_rate"])
        self.link = Link(self, config, adapter=adapter, read_termination=self.READ_TERMINATION,
                         write_termination=self.WRITE_TERMINATION, error_query=self.ERROR_QUERY,
                         serial=serial)
        self._identity: str | None = None
        self.link.open()
        try:
            self._on_open()
        except BaseException:
            self.link.close()
            self._closed = True
            raise

    def _on_open(self) -> None:
        """Hook run after the session opened (read identity, select channel, clear errors)."""
        self._identity = self.link.query("*IDN?")

    def identity(self) -> str:
        with self.lock:
            if self._identity is None:
                self._identity = self.link.query("*IDN?")
            return self._identity

    def status(self) -> dict[str, Any]:
        with self.lock:
            st: dict[str, Any] = {"connected": not self._closed and self.link.adapter is not None}
            if st["connected"]:
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
