"""Base class of every instrument: identity, one lock, settings with units, snapshot, safe state.

Implementations (real drivers or simulated instruments) subclass an interface from
:mod:`labqfl.instruments.interfaces` and fill in the abstract methods. Public methods of an
instrument may be called from several threads at once (GUI + acquisition); implementations guard
their I/O with :attr:`Instrument.lock` (an ``RLock``).
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from labqfl.instruments.settings import Setting, declared_settings
from labqfl.log import instrument_logger

__all__ = ["Instrument", "Setting", "TagBlock", "emergency", "emergency_since", "in_emergency"]

#: The emergency stops now running (a signal handler's safe state), oldest first. No lock (review s37 lab3 L4): a
#: signal handler runs on the main thread between two bytecodes, possibly in the middle of :func:`in_emergency`
#: on that same thread, so a lock held there would deadlock the handler; ``list.append``, ``list.remove`` and a
#: slice copy are each one bytecode-level C call, atomic under the GIL and between signal handlers.
_EMERGENCY: list[emergency] = []


class emergency:  # noqa: N801 - used as a context manager, like contextlib's
    """``with emergency("signal SIGTERM"):`` — the safe states inside are an emergency stop (SIGTERM, SIGINT):
    a driver may shorten what it does to stay within a service manager's stop timeout (the PRO8000's ramp-down:
    ``options.safe_ramp_max_s``), also a ramp another thread started before the emergency (it re-checks at each
    step: :func:`emergency_since`); outside, every switch-off is the normal one. Nested, thread-safe and
    signal-safe (entered from a signal handler that interrupted :func:`in_emergency` on the same thread)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.since = 0.0  # time.monotonic() when entered

    def __enter__(self) -> emergency:
        self.since = time.monotonic()
        _EMERGENCY.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _EMERGENCY.remove(self)  # this very object (emergencies compare by identity)


def in_emergency() -> str | None:
    """The reason of the emergency stop running now (:class:`emergency`; the latest one), or None."""
    running = _EMERGENCY[:]  # one atomic copy: another thread may leave its emergency meanwhile
    return running[-1].reason if running else None


def emergency_since() -> float | None:
    """``time.monotonic()`` at which the oldest emergency stop still running began, or None."""
    running = _EMERGENCY[:]
    return min(e.since for e in running) if running else None


_NO_INTERVALS = np.empty((0, 2), dtype=np.int64)
_NO_INTERVALS.setflags(write=False)


@dataclass(frozen=True)
class TagBlock:
    """A block of time tags exactly as a hardware time tagger streams them.

    ``timestamps``: int64 picoseconds since the start of acquisition, non-decreasing.
    ``channels``: int16 tagger channel numbers (negative = falling edge, as in Swabian's API).
    ``overflow``: True if the tagger reported lost tags inside this block.
    ``lost_intervals_ps``: int64 array of shape (k, 2), rows ``[begin, end]`` (ps, same clock as
    ``timestamps``, begin <= end): the stretches in which the tagger lost data (an overflow from
    its OverflowBegin to its OverflowEnd record, missed events, an error record). The records
    themselves are not tags; slotting drops and counts every slot whose tags could fall inside
    one of these intervals (:mod:`labqfl.qkd.slotting`). Empty by default.
    """

    timestamps: np.ndarray
    channels: np.ndarray
    overflow: bool = False
    lost_intervals_ps: np.ndarray = field(default_factory=lambda: _NO_INTERVALS)

    def __post_init__(self) -> None:
        if self.timestamps.dtype != np.int64 or self.channels.dtype != np.int16:
            raise TypeError(
                f"TagBlock expects int64 timestamps and int16 channels, got {self.timestamps.dtype} and {self.channels.dtype}"
            )
        if self.timestamps.shape != self.channels.shape or self.timestamps.ndim != 1:
            raise ValueError(
                f"TagBlock arrays must be 1-D and of equal length, got {self.timestamps.shape} and {self.channels.shape}"
            )
        lost = self.lost_intervals_ps
        if not isinstance(lost, np.ndarray) or lost.dtype != np.int64 or lost.ndim != 2 or lost.shape[1] != 2:
            got = f"{lost.dtype} {lost.shape}" if isinstance(lost, np.ndarray) else type(lost).__name__
            raise TypeError(f"TagBlock.lost_intervals_ps must be an int64 array of shape (k, 2), got {got}")
        if lost.size and np.any(lost[:, 1] < lost[:, 0]):
            raise ValueError("TagBlock.lost_intervals_ps rows must be [begin, end] with begin <= end (ps)")

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])

    def channel_counts(self, into: dict[int, int] | None = None) -> dict[int, int]:
        """Tags per channel number in this block, added to ``into`` (and returned) when given,
        so a stream is counted with ``for b in blocks: b.channel_counts(counts)``."""
        out = {} if into is None else into
        if len(self):  # a histogram over the block's channel range (int16: at most 2^16 bins), not a sort
            lo = int(self.channels.min())
            c = np.bincount(self.channels.astype(np.int32) - lo)
            for k in np.flatnonzero(c).tolist():
                out[lo + k] = out.get(lo + k, 0) + int(c[k])
        return out


class Instrument(ABC):
    """Common behaviour of every instrument.

    Settings are :class:`~labqfl.instruments.settings.Setting` descriptors on the class; ``SETTINGS``
    (their declarations, for snapshots, ``station show`` and the GUI) is derived from them when the
    class is created. Subclasses implement :meth:`identity`, :meth:`safe_state` and :meth:`_close`;
    those whose settings carry SCPI commands implement :meth:`_setting_query` and
    :meth:`_setting_write`.
    """

    SETTINGS: ClassVar[tuple[Setting[Any], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.SETTINGS = declared_settings(cls)

    def __init__(self, name: str, resource: str = "sim") -> None:
        self.name = name
        self.resource = resource
        self.lock = threading.RLock()
        self.log: logging.LoggerAdapter[logging.Logger] = instrument_logger(name)
        self._closed = False
        self._change_hooks: list[Callable[[Instrument, str], None]] = []

    # -- identity / lifecycle -------------------------------------------------------------
    @abstractmethod
    def identity(self) -> str:
        """Vendor, model, serial and firmware, as the instrument reports them."""

    def status(self) -> dict[str, Any]:
        """Short health summary for ``station check`` (override to add readings)."""
        return {"connected": not self._closed}

    @abstractmethod
    def safe_state(self) -> None:
        """Put the instrument in its safe state (laser off, detector bias safe, outputs off)."""

    def reconnect(self) -> None:
        """Close and reopen the session (default: no-op for instruments without a session)."""
        with self.lock:
            self._closed = False

    def close(self) -> None:
        """Safe state, then release the resource. Idempotent."""
        with self.lock:
            if self._closed:
                return
            try:
                self.safe_state()
            except Exception as exc:  # closing must not raise on a dead instrument
                self.log.warning("safe_state failed during close: %s", exc)
            try:
                self._close()
            finally:
                self._closed = True

    def _close(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """Release the resource (override when the instrument holds a session)."""

    @property
    def closed(self) -> bool:
        return self._closed

    # -- settings ---------------------------------------------------------------------------
    def add_change_hook(self, hook: Callable[[Instrument, str], None]) -> None:
        """Call ``hook(instrument, setting_name)`` after every write of a setting (and after the writes a
        driver reports with :meth:`setting_changed`, e.g. a DC level). The Station connects a simulated loop
        that must follow a real driver's instrument state this way (``labqfl.station``); nothing else is
        passed, so a hook can only read the instrument, as the physics would."""
        self._change_hooks.append(hook)

    def setting_changed(self, name: str) -> None:
        """Tell the change hooks that setting ``name`` was written (called by the :class:`Setting`
        descriptors after each write; a hook's error propagates to the writer)."""
        for hook in tuple(getattr(self, "_change_hooks", ())):
            hook(self, name)

    def get_setting(self, name: str) -> Any:
        """Current value of a declared setting (default: the attribute of that name)."""
        return getattr(self, name)

    def _setting_query(self, command: str, cast: Any) -> Any:
        """Send a setting's query ``command`` and return the reply read as ``cast`` (``float``,
        ``int``, ``bool``, ``str`` or a function of the reply text). Instruments whose settings
        carry SCPI commands implement it (drivers: :class:`labqfl.drivers._base.MessageDriver`)."""
        raise NotImplementedError(f"{type(self).__name__} has no command link (query {command!r})")

    def _setting_write(self, command: str) -> None:
        """Send a setting's write ``command`` (see :meth:`_setting_query`)."""
        raise NotImplementedError(f"{type(self).__name__} has no command link (write {command!r})")

    def snapshot(self) -> dict[str, Any]:
        """All declared settings with units: ``{name: {"value": v, "unit": u}}`` plus identity."""
        out: dict[str, Any] = {"identity": self.identity(), "resource": self.resource,
                               "class": type(self).__name__, "settings": {}}
        for s in self.SETTINGS:
            try:
                value = self.get_setting(s.name)
            except Exception as exc:
                value = f"<error: {exc}>"
            if isinstance(value, np.ndarray):
                value = value.tolist()
            elif isinstance(value, np.generic):
                value = value.item()
            out["settings"][s.name] = {"value": value, "unit": s.unit}
        return out

    def __enter__(self) -> Instrument:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} at {self.resource!r}>"
