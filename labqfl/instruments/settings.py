"""Declarative instrument settings: one :class:`Setting` descriptor per setting, in the style of
PyMeasure's ``Instrument.control`` / ``measurement`` (``pymeasure/instruments/common_base.py``).

A setting is declared once, in the interface (:mod:`labqfl.instruments.interfaces`), with its
unit, its one-line doc and its rule (a validator: :func:`boolean`, :func:`in_range`,
:func:`one_of`, :func:`per_channel`, :func:`channel_list` or :func:`rule`)::

    class VariableAttenuator(Instrument):
        shutter_closed: Setting[bool] = Setting("", "beam blocked", validator=boolean())

An implementation only says how the value reaches the instrument, and may narrow the range to
what its hardware allows; the rule's kind and the error stay those of the interface::

    class KeysightN7764A(MessageDriver, VariableAttenuator):
        shutter_closed = VariableAttenuator.shutter_closed.scpi(
            ":OUTP{channel}:STAT?", ":OUTP{channel}:STAT {value}", cast=bool,
            get_process=lambda on: not on, set_process=lambda closed: 0 if closed else 1)
        wavelength_nm = VariableAttenuator.wavelength_nm.within(1260.0, 1640.0).scpi(...)

Reading a setting on an instrument queries it (``get_command``, a format string whose fields are
the instrument's attributes, e.g. ``{channel}``, through :meth:`Instrument._setting_query`), or
calls the implementation's getter (:meth:`Setting.via`, or :meth:`Setting.getter` as a
decorator for a read-only one), or returns the value kept in an
attribute (``store=``). Writing validates first — a refused value raises one
:class:`SettingError` naming the instrument, the setting, the value and what was expected — then
sends ``set_command`` (``{value}`` is the validated value after ``values`` mapping and
``set_process``) or calls the setter. A setting that says neither is abstract: the interface's
implementations must say how.

The declaration list ``Instrument.SETTINGS`` (snapshots, ``station show``, the GUI) is derived from
the descriptors on the class (:func:`declared_settings`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any, Generic, TypeVar, overload

import numpy as np

from labqfl.errors import InstrumentReplyError, LabqflError

T = TypeVar("T")

#: A bound: a number, or a function of the instrument (a range that depends on its options).
Bound = float | Callable[[Any], float]


class SettingError(LabqflError, ValueError):
    """A value refused by a setting's rule: names the instrument, the setting, the value and what
    was expected (one line)."""

    def __init__(self, instrument: str, setting: str, value: Any, expected: str) -> None:
        self.instrument, self.setting, self.value, self.expected = instrument, setting, value, expected
        super().__init__(f"{instrument}: {setting} = {value!r} is out of range; expected {expected}")


class Rejected(Exception):
    """Raised by a validator: ``expected`` says what would have been accepted; ``item`` (e.g.
    ``"[3]"``) and ``value`` name the entry of a list or mapping that was refused."""

    _WHOLE = object()

    def __init__(self, expected: str, *, item: str = "", value: Any = _WHOLE) -> None:
        super().__init__(expected)
        self.expected, self.item, self.value = expected, item, value


class Validator:
    """A setting's rule: ``validator(instrument, value)`` returns the value to use (cast) or raises
    :class:`Rejected`."""

    def __call__(self, inst: Any, value: Any) -> Any:  # pragma: no cover - every rule overrides it
        raise NotImplementedError


def _bound(b: Bound, inst: Any) -> float:
    return float(b(inst)) if callable(b) else float(b)


class InRange(Validator):
    """A finite number from ``lo`` to ``hi`` (each a number or a function of the instrument)."""

    def __init__(self, lo: Bound, hi: Bound, unit: str | Callable[[Any], str] = "", *, lo_open: bool = False,
                 integer: bool = False, round_to_int: bool = False) -> None:
        self.lo, self.hi, self.unit = lo, hi, unit
        self.lo_open, self.integer, self.round_to_int = lo_open, integer, round_to_int

    def bounds(self, inst: Any) -> tuple[float, float]:
        return _bound(self.lo, inst), _bound(self.hi, inst)

    def expected(self, inst: Any) -> str:
        lo, hi = self.bounds(inst)
        unit = self.unit(inst) if callable(self.unit) else self.unit
        u = f" {unit}" if unit else ""
        kind = "an integer " if self.integer else ""
        low = f"above {lo:g} up" if self.lo_open else f"{lo:g}"
        return f"{kind}{low} to {hi:g}{u}".strip()

    def __call__(self, inst: Any, value: Any) -> Any:
        if isinstance(value, bool | np.bool_):
            raise Rejected(f"a number, {self.expected(inst)}")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise Rejected(f"a number, {self.expected(inst)}") from None
        lo, hi = self.bounds(inst)
        inside = math.isfinite(v) and (v > lo if self.lo_open else v >= lo) and v <= hi
        if not inside or (self.integer and v != int(v)):
            raise Rejected(self.expected(inst))
        if self.integer:
            return int(v)
        return int(round(v)) if self.round_to_int else v


def in_range(lo: Bound, hi: Bound, unit: str | Callable[[Any], str] = "", *, lo_open: bool = False, integer: bool = False,
             round_to_int: bool = False) -> InRange:
    """A finite number in [lo, hi] (``lo_open``: (lo, hi]; bounds and unit may be functions of the
    instrument); ``integer``: a whole number (returned as
    ``int``); ``round_to_int``: any number in range, rounded to the nearest ``int``. A bool is not a
    number here."""
    return InRange(lo, hi, unit, lo_open=lo_open, integer=integer, round_to_int=round_to_int)


class _Boolean(Validator):
    def __call__(self, inst: Any, value: Any) -> bool:
        if isinstance(value, bool | np.bool_):
            return bool(value)
        raise Rejected("True or False")


def boolean() -> Validator:
    """``True`` or ``False`` (also ``numpy.bool_``); ``1``, ``"on"`` or ``None`` are refused."""
    return _Boolean()


class _OneOf(Validator):
    def __init__(self, choices: Callable[[Any], Iterable[Any]] | Iterable[Any]) -> None:
        self.choices = choices if callable(choices) else tuple(choices)

    def __call__(self, inst: Any, value: Any) -> Any:
        choices = list(self.choices(inst)) if callable(self.choices) else list(self.choices)
        # compared by type and value: 1 is not True, 1.0 is not "1"
        if not any(type(value) is type(c) and value == c for c in choices):
            raise Rejected(f"one of {choices}")
        return value


def one_of(choices: Callable[[Any], Iterable[Any]] | Iterable[Any]) -> Validator:
    """A member of ``choices`` (or of ``choices(instrument)``)."""
    return _OneOf(choices)


class _PerChannel(Validator):
    def __init__(self, item: Validator, channels: Callable[[Any], Sequence[int]]) -> None:
        self.item, self.channels = item, channels

    def __call__(self, inst: Any, value: Any) -> dict[int, Any]:
        if not isinstance(value, Mapping):
            raise Rejected("a mapping {channel: value}")
        valid = list(self.channels(inst))
        out: dict[int, Any] = {}
        for c, v in value.items():
            if isinstance(c, bool) or not isinstance(c, int | np.integer) or int(c) not in valid:
                raise Rejected(f"a channel from {valid}; channel {c!r} is not one", item=f"[{c!r}]", value=v)
            try:
                out[int(c)] = self.item(inst, v)
            except Rejected as r:
                raise Rejected(r.expected, item=f"[{int(c)}]", value=v) from None
        return out


def per_channel(item: Validator, channels: Callable[[Any], Sequence[int]]) -> Validator:
    """A mapping ``{channel: value}``: each channel one of ``channels(instrument)``, each value
    accepted by ``item``. Returns a ``dict`` of the cast values."""
    return _PerChannel(item, channels)


class _ChannelList(Validator):
    def __init__(self, channels: Callable[[Any], Sequence[int]]) -> None:
        self.channels = channels

    def __call__(self, inst: Any, value: Any) -> list[int]:
        valid = list(self.channels(inst))
        try:
            items = list(value)
            if any(isinstance(c, bool) or int(c) != c for c in items):
                raise ValueError
            chans = sorted({int(c) for c in items})
        except (TypeError, ValueError):
            raise Rejected(f"a non-empty list of channels from {valid}") from None
        if not chans or any(c not in valid for c in chans):
            raise Rejected(f"a non-empty list of channels from {valid}")
        return chans


def channel_list(channels: Callable[[Any], Sequence[int]]) -> Validator:
    """A non-empty list of channel numbers, each one of ``channels(instrument)``; returned sorted,
    without repeats."""
    return _ChannelList(channels)


class _Rule(Validator):
    def __init__(self, check: Callable[[Any, Any], Any]) -> None:
        self.check = check

    def __call__(self, inst: Any, value: Any) -> Any:
        return self.check(inst, value)


def rule(check: Callable[[Any, Any], Any]) -> Validator:
    """A rule written as a function ``check(instrument, value) -> value`` that raises
    :class:`Rejected` (for the few settings whose rule is more than a range)."""
    return _Rule(check)


class _Fields(dict[str, Any]):
    """``str.format_map`` fields: ``{value}`` and any attribute of the instrument (``{channel}``)."""

    def __init__(self, inst: Any, **fixed: Any) -> None:
        super().__init__(**fixed)
        self.inst = inst

    def __missing__(self, key: str) -> Any:
        return getattr(self.inst, key)


def _instrument_name(inst: Any) -> str:
    return str(getattr(inst, "name", "") or type(inst).__name__)


class Setting(Generic[T]):
    """One instrument setting: unit, doc, rule, and how it reaches the instrument (module docstring).

    ``unit``/``doc``: as shown in snapshots, ``station show`` and the GUI. ``validator``: the rule
    (``None``: any value). ``writable=False``: a reading (writes refused). ``get_command`` /
    ``set_command``: SCPI format strings (fields ``{value}`` and the instrument's attributes);
    ``cast``: how the reply is read (``float``, ``int``, ``bool``, ``str`` or a function of the
    reply text); ``values``: map from the user's value to the wire value (reversed on reading);
    ``get_process`` / ``set_process``: unit conversion after reading / before writing.
    ``fget(inst)`` / ``fset(inst, value)``: an implementation's own getter/setter (``fset`` gets the
    validated value). ``store``: name of the instrument attribute that keeps the value.
    """

    def __init__(self, unit: str = "", doc: str = "", *, validator: Validator | None = None,
                 writable: bool = True, get_command: str | None = None, set_command: str | None = None,
                 cast: Any = float, values: Mapping[Any, Any] | None = None,
                 get_process: Callable[[Any], Any] | None = None, set_process: Callable[[Any], Any] | None = None,
                 fget: Callable[[Any], Any] | None = None, fset: Callable[[Any, Any], None] | None = None,
                 store: str | None = None, name: str = "") -> None:
        self.name = name
        self.unit = unit
        self.doc = doc
        self.__doc__ = f"{doc} [{unit}]" if unit else doc
        self.validator = validator
        self.writable = writable
        self.get_command, self.set_command = get_command, set_command
        self.cast, self.values = cast, dict(values) if values is not None else None
        self.get_process, self.set_process = get_process, set_process
        self.fget, self.fset, self.store = fget, fset, store

    # -- declaring ---------------------------------------------------------------------------------
    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @property
    def __isabstractmethod__(self) -> bool:
        """A setting that says neither how to read it nor where it is kept is abstract: the
        interface's implementations must say."""
        return self.fget is None and self.get_command is None and self.store is None

    def refine(self, **changes: Any) -> Setting[T]:
        """A copy with some fields changed (``validator=``, ``doc=``, ``store=`` …)."""
        new = copy.copy(self)
        for key, val in changes.items():
            if not hasattr(new, key) or key.startswith("_"):
                raise TypeError(f"Setting has no field {key!r}")
            setattr(new, key, val)
        if "doc" in changes or "unit" in changes:
            new.__doc__ = f"{new.doc} [{new.unit}]" if new.unit else new.doc
        if "values" in changes and changes["values"] is not None:
            new.values = dict(changes["values"])
        return new

    def within(self, lo: Bound, hi: Bound, **kw: Any) -> Setting[T]:
        """A copy whose rule is ``in_range(lo, hi, <this unit>, **kw)``: an implementation's own
        range (its hardware's) for a numeric setting of the interface."""
        return self.refine(validator=in_range(lo, hi, self.unit, **kw))

    def scpi(self, get_command: str | None, set_command: str | None = None, **kw: Any) -> Setting[T]:
        """A copy read with ``get_command`` and written with ``set_command`` (SCPI format strings);
        ``kw``: ``cast``, ``values``, ``get_process``, ``set_process``, ``validator``."""
        return self.refine(get_command=get_command, set_command=set_command, fget=None, fset=None,
                           store=None, **kw)

    def getter(self, fget: Callable[[Any], T]) -> Setting[T]:
        """Decorator: a copy read by ``fget(instrument)`` (like ``property.getter``). For a setting
        that also has its own setter use :meth:`via`: a second ``def`` of the same name under
        ``@x.setter`` is a redefinition to mypy, which models only ``property`` that way."""
        return self.refine(fget=fget, get_command=None, store=None)

    def setter(self, fset: Callable[[Any, T], None]) -> Setting[T]:
        """Decorator: a copy written by ``fset(instrument, validated_value)``."""
        return self.refine(fset=fset, set_command=None)

    def via(self, fget: Callable[[Any], T], fset: Callable[[Any, T], None] | None = None) -> Setting[T]:
        """A copy read by ``fget(instrument)`` and, if given, written by
        ``fset(instrument, validated_value)``: an implementation's own getter and setter (ramps,
        vendor SDK calls), both plain methods of its class, so type checkers see one binding per
        name::

            def _get_bias(self) -> float: ...
            def _set_bias(self, v: float) -> None: ...
            bias = PhotonDetector.bias.via(_get_bias, _set_bias)
        """
        new = self.getter(fget)
        return new.setter(fset) if fset is not None else new

    def kept_in(self, attribute: str) -> Setting[T]:
        """A copy whose value is kept in ``instrument.<attribute>`` (a setting of the driver's
        own, e.g. a modulator's Vπ used to compute drive levels)."""
        return self.refine(store=attribute, fget=None, fset=None, get_command=None, set_command=None)

    # -- the rule ------------------------------------------------------------------------------------
    def validate(self, inst: Any, value: Any) -> T:
        """The value to use, or :class:`SettingError` naming instrument, setting, value, expectation."""
        if self.validator is None:
            return value  # type: ignore[no-any-return]
        try:
            return self.validator(inst, value)  # type: ignore[no-any-return]
        except Rejected as r:
            shown = value if r.value is Rejected._WHOLE else r.value
            raise SettingError(_instrument_name(inst), f"{self.name}{r.item}", shown, r.expected) from None

    def limits(self, inst: Any = None) -> tuple[float, float, str]:
        """(low, high, unit) of a range rule, or of each entry of a per-channel rule (for the
        station's config checks)."""
        rng = self.validator.item if isinstance(self.validator, _PerChannel) else self.validator
        if not isinstance(rng, InRange):
            raise TypeError(f"setting {self.name!r} has no numeric range")
        lo, hi = rng.bounds(inst)
        unit = rng.unit
        return lo, hi, unit(inst) if callable(unit) else unit

    # -- descriptor protocol ---------------------------------------------------------------------
    @overload
    def __get__(self, inst: None, owner: type | None = None) -> Setting[T]: ...

    @overload
    def __get__(self, inst: object, owner: type | None = None) -> T: ...

    def __get__(self, inst: Any, owner: type | None = None) -> Any:
        if inst is None:
            return self
        if self.fget is not None:
            return self.fget(inst)
        if self.get_command is not None:
            command = self.get_command.format_map(_Fields(inst))
            with getattr(inst, "lock", nullcontext()):
                reply = inst._setting_query(command, self.cast)
            if self.values is not None:
                reverse = {w: v for v, w in self.values.items()}
                if reply not in reverse:
                    raise InstrumentReplyError(f"unexpected reply {reply!r}; expected one of {sorted(reverse, key=str)}",
                                               instrument=_instrument_name(inst),
                                               resource=str(getattr(inst, "resource", "")), command=command)
                reply = reverse[reply]
            value = self.get_process(reply) if self.get_process is not None else reply
            self._check_reading(inst, command, reply, value)
            return value
        if self.store is not None:
            return getattr(inst, self.store)
        raise NotImplementedError(f"{type(inst).__name__} does not implement the setting {self.name!r}")

    def _check_reading(self, inst: Any, command: str, reply: Any, value: Any) -> None:
        """A numeric read-back must lie in the setting's own range (the range its writes obey,
        within a rounding margin of 1e-9 of the larger bound): a reply in another unit (nm for m) or
        out of the instrument's range is one :class:`InstrumentReplyError` naming the instrument, the
        command, the reply and the expected range, never a value passed on to a calibration."""
        rng = self.validator
        if not isinstance(rng, InRange) or isinstance(value, bool | np.bool_):
            return
        try:
            v = float(value)
        except (TypeError, ValueError):
            return  # not a number: the cast already refused or accepted it as text
        lo, hi = rng.bounds(inst)
        tol = 1e-9 * max(abs(lo), abs(hi), 1.0)
        inside = math.isfinite(v) and (v > lo if rng.lo_open else v >= lo - tol) and v <= hi + tol
        if not inside:
            unit = rng.unit(inst) if callable(rng.unit) else rng.unit
            shown = f"{v:g}{f' {unit}' if unit else ''}"
            raise InstrumentReplyError(
                f"reply {reply!r} reads as {self.name} = {shown}, outside the setting's range; expected "
                f"{rng.expected(inst)} (wrong unit, or the instrument is out of range)",
                instrument=_instrument_name(inst), resource=str(getattr(inst, "resource", "")), command=command)

    def __set__(self, inst: Any, value: T) -> None:
        if not self.writable:
            raise AttributeError(f"{_instrument_name(inst)}: {self.name} is a reading and cannot be set")
        v: Any = self.validate(inst, value)
        with getattr(inst, "lock", nullcontext()):
            if self.fset is not None:
                self.fset(inst, v)
            elif self.set_command is not None:
                wire = self.values[v] if self.values is not None else v
                if self.set_process is not None:
                    wire = self.set_process(wire)
                inst._setting_write(self.set_command.format_map(_Fields(inst, value=wire)))
            elif self.store is not None:
                setattr(inst, self.store, v)
            else:
                raise NotImplementedError(f"{type(inst).__name__} cannot write the setting {self.name!r}")
        changed = getattr(inst, "setting_changed", None)
        if changed is not None:  # an instrument's change hooks (Instrument.add_change_hook)
            changed(self.name)

    def __repr__(self) -> str:
        return f"<Setting {self.name!r} [{self.unit}]{'' if self.writable else ' read-only'}>"


def declared_settings(cls: type) -> tuple[Setting[Any], ...]:
    """The settings declared on ``cls`` and its bases, base classes' first, each once (the most
    derived declaration wins; an override by a plain ``property`` keeps the declaration)."""
    seen: dict[str, Setting[Any]] = {}
    for klass in reversed(cls.__mro__):
        for name, attr in vars(klass).items():
            if isinstance(attr, Setting):
                seen[name] = attr
    return tuple(seen.values())
