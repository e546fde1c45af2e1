"""The actual laser-diode current of the emulated Thorlabs PRO8000 (``visa/thorlabs_pro8000.yaml``), in Python.

A pyvisa-sim device answers from its YAML: a dialogue's reply is fixed and a property's is its own last value, so
the model cannot make the LDC's *actual* current (``:ILD:ACT?``; Thorlabs' PRO800/8000 VXIpnp driver ``pro8.c``
v2.5.3, ``Pro8_LdcGetLdCurrent`` value 3, which writes ``:ILD:ACT?`` and reads one number in A) follow its set
point (``:ILD:SET``) and its output (``:LASER ON|OFF``). :class:`LDCModel` adds that query to such a device: it
answers what a working LDC drives through the diode,

* 0 A while the output reads OFF (``:LASER?``);
* the set point (``:ILD:SET?``) while it reads ON,

each read from the device's own replies at the time of the query (so a model edited to keep ``:LASER?`` OFF, an
open interlock, reads 0 A too), and two faults a test may set, which make it differ:

* :attr:`LDCModel.open_circuit` — the diode's circuit is open (a loose connector, a dead diode): no current flows,
  0 A with the output on;
* :attr:`LDCModel.limit_ma` — the current is clipped at this many mA, as by the module's hardware limit ILIM set
  below the set point (the ITC8000 manual §7 "Communication with a PC": ILIM is set with a screwdriver on the
  front panel before programming, and constantly measured by the mainframe).

The model is of constant-current operation (``:MODE?`` ``CC``, the YAML's default), the only mode
:class:`~labqfl.drivers.thorlabs_pro8000.ThorlabsPRO8000` drives (it switches a ``CP`` LDC to ``CC`` at open, output
off, or refuses): in constant-power mode a real LDC's current follows its monitor diode, which is not modelled.

The reply is formatted as the YAML's other currents (``{:.6E}``, in A; ``:SYST:ANSW VALUE``: the value only).
Every other message goes to the device unchanged. Like the YAML's set point, the model is not per slot.

Where it is attached: the VISA link opening a pyvisa-sim session (``visa_library`` ``…@sim``, in process) calls
:func:`labqfl.sim_backends.visa_models.attach`, which calls :func:`emulate_ld_current` on a PRO8000 device; :class:`~labqfl.sim_backends.visa_tcp.
VisaSimTCPServer` attaches it to a PRO8000 device it serves over loopback (``@py``, another process).
:func:`ldc_model` finds it for a test (from the device, a pyvisa resource, a PyMeasure adapter or the driver).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

#: The query this model answers (``pro8.c`` ``Pro8_LdcGetLdCurrent``, value 3)
ACT_QUERY = b":ILD:ACT?"

#: The attribute of a pyvisa-sim device that holds its :class:`LDCModel`
_ATTR = "_labqfl_ldc_model"


class LDCModel:
    """The actual LD current of one pyvisa-sim PRO8000 ``device`` (see the module docstring)."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self._match = device._match  # the device's own matcher: dialogues, properties, error queue
        self._lock = threading.Lock()
        self._open_circuit = False
        self._limit_ma: float | None = None
        #: the latest ``:ILD:ACT?`` replies, in A (tests read what the driver was told)
        self.answered: deque[float] = deque(maxlen=1000)
        device._match = self._match_with_actual
        setattr(device, _ATTR, self)

    @property
    def open_circuit(self) -> bool:
        """True: no current flows through the diode whatever the set point (0 A with the output on)."""
        return self._open_circuit

    @open_circuit.setter
    def open_circuit(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"open_circuit must be True or False, got {value!r}")
        with self._lock:
            self._open_circuit = value

    @property
    def limit_ma(self) -> float | None:
        """The current is clipped at this many mA (the hardware limit ILIM below the set point); None: no clip."""
        return self._limit_ma

    @limit_ma.setter
    def limit_ma(self, value: float | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0):
            raise ValueError(f"limit_ma must be None or a number of mA >= 0, got {value!r}")
        with self._lock:
            self._limit_ma = None if value is None else float(value)

    def clear_faults(self) -> None:
        """No fault: the current follows the set point and the output again (a pyvisa-sim device, and so this model,
        lives as long as its library in the process: one test's fault would reach the next station opened on it)."""
        with self._lock:
            self._open_circuit, self._limit_ma = False, None

    def _reply(self, query: bytes) -> str | None:
        """The device's own reply to ``query`` (a getter or dialogue: no side effect), or None if it has none."""
        r = self._match(query)
        return None if r is None or not isinstance(r, bytes | bytearray) else bytes(r).decode().strip()

    def actual_a(self) -> float | None:
        """The current a working LDC drives now [A], with the faults applied; None when the device answers
        ``:LASER?`` or ``:ILD:SET?`` with nothing usable (then ``:ILD:ACT?`` is unknown to it as well)."""
        on, set_a = self._reply(b":LASER?"), self._reply(b":ILD:SET?")
        if on is None or set_a is None:
            return None
        try:
            i_a = float(set_a)
        except ValueError:
            return None
        with self._lock:
            if on.upper() not in ("ON", "1") or self._open_circuit:
                return 0.0
            if self._limit_ma is not None:
                i_a = min(i_a, self._limit_ma * 1e-3)
        return i_a

    def _match_with_actual(self, query: bytes) -> Any:
        if query.strip().upper() != ACT_QUERY:
            return self._match(query)
        i_a = self.actual_a()
        if i_a is None:
            return None  # the device's own "unknown command" path (its error queue)
        self.answered.append(i_a)
        return f"{i_a:.6E}".encode()


def emulate_ld_current(target: Any) -> LDCModel:
    """The :class:`LDCModel` of the pyvisa-sim device behind ``target`` (see :func:`sim_device`), attached once."""
    device = sim_device(target)
    model = getattr(device, _ATTR, None)
    return model if isinstance(model, LDCModel) else LDCModel(device)


def ldc_model(target: Any) -> LDCModel:
    """The :class:`LDCModel` attached to the device behind ``target``; LookupError if none is."""
    model = getattr(sim_device(target), _ATTR, None)
    if not isinstance(model, LDCModel):
        raise LookupError(f"no LDC model is attached to {target!r}; expected a PRO8000 pyvisa-sim device opened by "
                          "ThorlabsPRO8000 or served by VisaSimTCPServer")
    return model


def sim_device(target: Any) -> Any:
    """The pyvisa-sim ``Device`` behind ``target``: the device itself, a :class:`VisaSimTCPServer`, a pyvisa resource
    on a pyvisa-sim library, a PyMeasure ``VISAAdapter`` on one, or a driver whose ``link.adapter`` is one."""
    if hasattr(target, "_match") and hasattr(target, "write") and hasattr(target, "read"):
        return target
    if hasattr(target, "device") and hasattr(target.device, "_match"):  # VisaSimTCPServer
        return target.device
    link = getattr(target, "link", None)
    if link is not None and getattr(link, "adapter", None) is not None:
        target = link.adapter
    resource = getattr(target, "connection", target)  # a PyMeasure adapter's pyvisa resource
    sessions = getattr(getattr(resource, "visalib", None), "sessions", None)
    session = getattr(resource, "session", None)
    if isinstance(sessions, dict) and session in sessions and hasattr(sessions[session], "device"):
        return sessions[session].device
    raise TypeError(f"{target!r} is not a pyvisa-sim device, nor a resource, adapter or driver on one")


def is_pro8000(device: Any) -> bool:
    """The pyvisa-sim ``device`` answers ``*IDN?`` as a PRO8000/PRO800 mainframe (what ThorlabsPRO8000 expects)."""
    r = device._match(b"*IDN?")
    text = bytes(r).decode(errors="replace").upper() if isinstance(r, bytes | bytearray) else ""
    return "PRO800" in text.replace(" ", "")


__all__ = ["ACT_QUERY", "LDCModel", "emulate_ld_current", "is_pro8000", "ldc_model", "sim_device"]
