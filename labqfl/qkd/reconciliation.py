"""The shared reconciliation API: what every error-correction engine (Cascade, LDPC) and the pair
protocol (:mod:`labqfl.qkd.twoparty`) have in common.

* :class:`ReconciliationAlice` / :class:`ReconciliationBob`: the engine-neutral roles.  Reconciliation
  is Bob-driven over a request/response :class:`~labqfl.qkd.messaging.Channel`: Bob holds the noisy
  key, sends requests and corrects his bits; Alice holds the reference key and only answers
  (a :class:`~labqfl.qkd.messaging.Responder`).  ``CascadeAlice``/``CascadeBob`` and
  ``LdpcAlice``/``LdpcBob`` implement them.
* **Leakage accounting**: every key-dependent bit crosses the channel in a message's ``disclosed``
  array and is counted there (:attr:`labqfl.qkd.messaging.ChannelStats.leaked_bits`, less the
  ``credit`` of one-time random filler); :class:`ReconciliationResult` reports that count and the
  efficiency f = leaked / (n·h(Q)).
* :func:`validate_reconciliation_input`: the common input check (one clear error line),
  :class:`ReconciliationInputError`.
* :func:`binary_entropy`: re-exported from :mod:`labqfl.qkd.finite_key` (the one definition).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from labqfl.errors import LabqflError
from labqfl.qkd.finite_key import binary_entropy
from labqfl.qkd.messaging import Channel, Message

__all__ = [
    "ReconciliationAlice",
    "ReconciliationBob",
    "ReconciliationInputError",
    "ReconciliationResult",
    "binary_entropy",
    "validate_reconciliation_input",
]


class ReconciliationInputError(LabqflError, ValueError):
    """Bad input to a reconciliation function (dtype, values, lengths or QBER)."""


def validate_reconciliation_input(alice_bits: Any, bob_bits: Any, qber: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """Check the common inputs of the reconciliation functions; raise a one-line error if wrong.

    Expects two 1-D uint8 arrays of 0/1 of equal, non-zero length and a QBER in (0, 0.5).
    """
    for name, arr in (("alice_bits", alice_bits), ("bob_bits", bob_bits)):
        if not isinstance(arr, np.ndarray):
            raise ReconciliationInputError(f"{name} must be a numpy uint8 array of 0/1, got {type(arr).__name__}")
        if arr.dtype != np.uint8:
            raise ReconciliationInputError(f"{name} must have dtype uint8 (bits 0/1), got {arr.dtype}")
        if arr.ndim != 1:
            raise ReconciliationInputError(f"{name} must be 1-D, got shape {arr.shape}")
        if arr.size and int(arr.max()) > 1:
            raise ReconciliationInputError(f"{name} must hold only 0 and 1, found value {int(arr.max())}")
    if alice_bits.size != bob_bits.size:
        raise ReconciliationInputError(
            f"alice_bits and bob_bits differ in length: {alice_bits.size} vs {bob_bits.size}")
    if alice_bits.size == 0:
        raise ReconciliationInputError("alice_bits and bob_bits are empty; expected at least one bit")
    try:
        q = float(qber)
    except (TypeError, ValueError):
        raise ReconciliationInputError(f"qber must be a number in (0, 0.5), got {qber!r}") from None
    if not 0.0 < q < 0.5 or math.isnan(q):
        raise ReconciliationInputError(f"qber must lie in the open interval (0, 0.5), got {qber!r}")
    return np.ascontiguousarray(alice_bits), np.ascontiguousarray(bob_bits), q


@dataclass(frozen=True, repr=False)
class ReconciliationResult:
    """Outcome of a reconciliation run (Bob's view).

    ``corrected``: Bob's corrected bits (uint8 0/1, length n).  ``leaked_bits``: key bits revealed
    on the channel (counted there).  ``efficiency``: f = leaked / (n·h(qber)).  ``success``: the
    protocol detected no failure (LDPC: every frame's syndrome matched; Cascade: always True — it
    cannot detect residual errors, verification downstream does).  ``frame_errors``: frames whose
    decoding failed (their bits are left uncorrected and flagged in ``details['frame_ok']``).
    """

    corrected: np.ndarray
    leaked_bits: int
    qber: float
    method: str
    success: bool = True
    frame_errors: int = 0
    iterations: int = 0
    round_trips: int = 0
    messages: int = 0
    tag_bytes: int = 0
    corrected_errors: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.corrected.size)

    @property
    def efficiency(self) -> float:
        """f = leaked_bits / (n · h(qber)) with the QBER given to the call."""
        return self.leaked_bits / (self.n * binary_entropy(self.qber))

    @property
    def efficiency_observed(self) -> float:
        """f with the observed error rate (bits Bob flipped / n); nan if no error was found."""
        h = binary_entropy(self.corrected_errors / self.n)
        return self.leaked_bits / (self.n * h) if h > 0 else float("nan")

    def __repr__(self) -> str:  # never print key bits
        return (f"ReconciliationResult(method={self.method!r}, n={self.n}, leaked_bits={self.leaked_bits}, "
                f"efficiency={self.efficiency:.4f}, success={self.success}, frame_errors={self.frame_errors})")


class ReconciliationAlice(Protocol):
    """Alice's side of a reconciliation engine: answers Bob's requests from her reference bits.

    Every reply puts the key-dependent bits it reveals in ``Message.disclosed`` (so the channel
    counts them); a request that is malformed or out of order raises
    :class:`~labqfl.qkd.messaging.MessageError`.
    """

    def handle(self, request: Message) -> Message: ...


class ReconciliationBob(Protocol):
    """Bob's side of a reconciliation engine: drives the protocol over ``channel`` and returns his
    corrected bits with the leakage counted on that channel."""

    def run(self, channel: Channel) -> ReconciliationResult: ...
