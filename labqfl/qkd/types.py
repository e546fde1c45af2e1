"""Data types that flow between the QKD stages (the contract between simulator, measurement
node, clients and post-processing).

Conventions (see docs/protocol.md):

* A **slot** is one laser pulse, indexed from 0 at the start of acquisition (int64).
* Each client, in each slot where it is active, chooses an **intensity index** k (uint8, index
  into its ``intensities``; 0 = signal) and a **phase index** a ∈ {0,1,2,3} (uint8), phase a·π/2.
  basis = a % 2 (0 = X = {0, π}, 1 = Y = {π/2, 3π/2}); bit = a // 2.
* The untrusted measurement node announces, per slot with a click, the **outcome**:
  1 = only D0 clicked, 2 = only D1 clicked, 3 = both.  D0 is the output where the two pulses
  interfere constructively for phase difference 0 (bit equal); a click in D1 for equal bases
  therefore means the bits differ.
* Pairs are named ``"Ci-Cj"`` with Ci before Cj on the loop; client i modulates the clockwise
  pulse, client j the counter-clockwise one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

OUTCOME_D0 = 1
OUTCOME_D1 = 2
OUTCOME_BOTH = 3


def pair_name(a: str, b: str) -> str:
    return f"{a}-{b}"


def split_pair(name: str) -> tuple[str, str]:
    a, sep, b = name.partition("-")
    if not sep or not a or not b:
        raise ValueError(f"pair name {name!r} is not of the form 'Ci-Cj'")
    return a, b


@dataclass(frozen=True)
class Announcements:
    """What the measurement node publishes for one pair: clicked slots and their outcomes."""

    pair: str
    slots: np.ndarray  # int64, strictly increasing
    outcomes: np.ndarray  # uint8 in {1, 2, 3}

    def __post_init__(self) -> None:
        if self.slots.dtype != np.int64 or self.outcomes.dtype != np.uint8:
            raise TypeError(f"Announcements expect int64 slots and uint8 outcomes, got {self.slots.dtype}/{self.outcomes.dtype}")
        if self.slots.shape != self.outcomes.shape:
            raise ValueError(f"slots and outcomes differ in length: {self.slots.shape} vs {self.outcomes.shape}")


@dataclass(frozen=True)
class ModulationRecord:
    """One client's own choices for a set of slots (its side of the pipeline only)."""

    client: str
    slots: np.ndarray  # int64
    intensity_idx: np.ndarray  # uint8
    phase_idx: np.ndarray  # uint8 in 0..3


class ModulationLog(Protocol):
    """A client's record of what it sent (its QRNG output / AWG pattern), queried by slot."""

    client: str

    def choices(self, slots: np.ndarray) -> ModulationRecord:
        """The client's intensity and phase indices in the given slots (int64 array)."""
        ...
