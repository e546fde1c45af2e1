"""Exception hierarchy. Every error a user can cause is a :class:`LabqflError` whose
message is one clear line naming what was wrong and what was expected."""

from __future__ import annotations


class LabqflError(Exception):
    """Base class for every error labqfl reports to a user (exit code 1 on the CLI)."""


class ConfigError(LabqflError):
    """A station file (or other configuration) is missing, malformed or invalid."""


class InstrumentError(LabqflError):
    """An instrument failed: timeout, bad reply, error queue entry, or not connected.

    Carries the instrument name, its resource string and the command that failed.
    """

    def __init__(self, message: str, *, instrument: str = "", resource: str = "", command: str = ""):
        self.instrument = instrument
        self.resource = resource
        self.command = command
        where = ", ".join(
            p for p in (
                f"instrument {instrument!r}" if instrument else "",
                f"resource {resource!r}" if resource else "",
                f"command {command!r}" if command else "",
            ) if p
        )
        super().__init__(f"{message} ({where})" if where else message)


class AcquisitionRefused(InstrumentError):
    """An acquisition's end check refused it: at its end the instruments no longer read as armed
    (:func:`labqfl.station.refuse_faulty_acquisition`)."""


class InstrumentTimeout(InstrumentError):
    """The instrument did not answer within its timeout."""


class InstrumentReplyError(InstrumentError):
    """The instrument answered something that could not be parsed (garbage, wrong termination)."""


class InstrumentQueueError(InstrumentError):
    """The instrument's error queue reported an error after a command."""


class DataFormatError(LabqflError):
    """A data file (HDF5 recording, key export, calibration file) is corrupt, truncated or foreign."""


class KeyStoreError(LabqflError):
    """The key store refused an operation (corrupt file, unknown pair, not enough key)."""


class KeyStoreBusyError(KeyStoreError):
    """Another process (a ``sqlite3`` shell, a backup, another labqfl process) held the key store's
    write lock for longer than the store's busy timeout; nothing was changed: retry later.
    ``path`` and ``node`` name the store (``node`` may be None)."""

    def __init__(self, message: str, *, path: str = "", node: str | None = None, waited_s: float = 0.0):
        super().__init__(message)
        self.path = path
        self.node = node
        self.waited_s = waited_s


class InsufficientKeyError(KeyStoreError):
    """A pair's pool holds fewer unconsumed bits than requested."""


class SecurityAbort(LabqflError):
    """Post-processing aborted: error rate or phase-error bound above threshold; no key produced."""


class SecureAggregationError(LabqflError):
    """Secure aggregation refused or aborted a round (bit budget, too few survivors, key mismatch)."""


class BitBudgetError(SecureAggregationError, ValueError):
    """A quantisation/modulus configuration whose sum of N client values could wrap mod 2^q."""


class KeyStarvationError(InsufficientKeyError):
    """A pair lacks the key bits a federated round needs (after waiting, or at once with 'fail')."""

    def __init__(self, message: str, *, pair: str = "", needed_bits: int = 0, available_bits: int = 0):
        self.pair = pair
        self.needed_bits = needed_bits
        self.available_bits = available_bits
        super().__init__(message)


class QKDInputError(LabqflError, ValueError):
    """A post-processing stage got arrays of the wrong dtype, shape or length (names what was expected)."""


class AuthenticationError(LabqflError):
    """A classical post-processing message failed authentication (tampered, injected or replayed)."""


class VerificationError(LabqflError):
    """Error verification found the two corrected keys differ; the block is discarded."""


class StationError(LabqflError):
    """The Station could not be built: a role failed to open, or two roles share one resource."""


class CalibrationError(LabqflError):
    """A calibration procedure could not produce a trustworthy value (no light, saturated
    detector, no fringe, failed fit) or was aborted; instruments were put in their safe state."""


def interrupt_inside(exc: BaseException) -> bool:
    """Whether ``exc`` is or wraps a :class:`KeyboardInterrupt` (through ``__cause__``/``__context__``):
    CPython reports one raised inside a callback of C code (a Numba dispatcher, an h5py weakref callback) as
    "SystemError: … returned a result with an exception set", the interrupt as its cause."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False
