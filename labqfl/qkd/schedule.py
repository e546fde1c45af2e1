"""Time-division schedule of pairs on the loop.

Slots are grouped into frames of ``slots_per_frame`` consecutive pulses; frame f belongs to pair
``pairs[f mod P]``. Only the two clients of the active pair modulate; the others pass pulses
unchanged.
"""

from __future__ import annotations

import numpy as np

from labqfl.config import StationConfig
from labqfl.qkd.types import pair_name


class PairSchedule:
    def __init__(self, pairs: list[tuple[str, str]], slots_per_frame: int) -> None:
        if not pairs:
            raise ValueError("schedule needs at least one pair")
        if slots_per_frame < 1:
            raise ValueError(f"slots_per_frame must be >= 1, got {slots_per_frame}")
        self.pairs = list(pairs)
        self.names = [pair_name(a, b) for a, b in pairs]
        self.slots_per_frame = int(slots_per_frame)

    @classmethod
    def from_config(cls, cfg: StationConfig) -> PairSchedule:
        return cls(cfg.pairs(), cfg.schedule.slots_per_frame)

    def pair_index(self, slots: np.ndarray) -> np.ndarray:
        """Index into :attr:`pairs` of the pair active in each slot (int64 array)."""
        return (np.asarray(slots, dtype=np.int64) // self.slots_per_frame) % len(self.pairs)

    def slots_of_pair(self, pair: str, n_slots: int) -> int:
        """How many of the first ``n_slots`` slots belong to ``pair`` (exact)."""
        p = self.names.index(pair)
        F, P = self.slots_per_frame, len(self.pairs)
        full_cycles, rem = divmod(n_slots, F * P)
        extra = min(max(rem - p * F, 0), F)
        return full_cycles * F + extra
