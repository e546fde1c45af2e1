"""Time-division schedule of pairs on the loop.

Slots are grouped into frames of ``slots_per_frame`` consecutive pulses. A *cycle* is
W = Σ_p w_p frames, w_p = the pair's weight (``schedule.weights`` of the station, frames per
cycle; 1 each when the station gives none). Frame f belongs to pair ``frame_pair[f mod W]``.
Only the two clients of the active pair modulate; the others pass pulses unchanged.

Order inside a cycle (stride scheduling, Waldspurger & Weihl, "Stride scheduling", MIT/LCS/TM-528,
1995): frame t = 0 … w_p − 1 of pair p has the virtual time (t + ½)/w_p; the cycle lists all
frames by virtual time, ties by pair index. A pair's frames are therefore spread evenly over the
cycle, and with equal weights the cycle is 0, 1, …, P − 1 (frame f → pair f mod P, the schedule
of stations without weights).

The pair's time share is w_p / W: the key-rate analysis (:mod:`labqfl.planning`) multiplies the
per-slot key rate of the pair by ``share(pair) · rep_rate``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from labqfl.config import StationConfig
from labqfl.contracts.types import pair_name


def frame_order(frames: Sequence[int]) -> np.ndarray:
    """Pair index of each frame of one cycle (int64, length Σ frames), stride-scheduled (module
    docstring). ``frames[p]``: frames per cycle of pair p (each >= 1)."""
    w = np.asarray(frames, dtype=np.int64)
    if w.ndim != 1 or w.size == 0 or (w < 1).any():
        raise ValueError(f"frames per cycle must be a non-empty list of integers >= 1, got {list(frames)}")
    pair = np.repeat(np.arange(w.size, dtype=np.int64), w)
    t = np.arange(pair.size, dtype=np.int64) - np.repeat(np.cumsum(w) - w, w)  # t = 0..w_p−1 within each pair
    vtime = (t + 0.5) / w[pair]
    return pair[np.lexsort((pair, vtime))]


class PairSchedule:
    """Which pair owns each slot. ``frames``: frames per cycle of each pair (default 1 each)."""

    def __init__(self, pairs: list[tuple[str, str]], slots_per_frame: int, frames: Sequence[int] | None = None) -> None:
        if not pairs:
            raise ValueError("schedule needs at least one pair")
        if slots_per_frame < 1:
            raise ValueError(f"slots_per_frame must be >= 1, got {slots_per_frame}")
        self.pairs = list(pairs)
        self.names = [pair_name(a, b) for a, b in pairs]
        self.slots_per_frame = int(slots_per_frame)
        w = [1] * len(self.pairs) if frames is None else [int(x) for x in frames]
        if len(w) != len(self.pairs):
            raise ValueError(f"need one frame count per pair: {len(self.pairs)} pairs, {len(w)} frame counts")
        self.frames = w
        #: pair index of each frame of the cycle (int64, length :attr:`cycle_frames`)
        self.frame_pair = frame_order(w)
        self.cycle_frames = int(self.frame_pair.size)
        self._positions: dict[int, np.ndarray] = {}

    @classmethod
    def from_config(cls, cfg: StationConfig) -> PairSchedule:
        return cls(cfg.pairs(), cfg.schedule.slots_per_frame, cfg.pair_frames())

    def share(self, pair: str) -> float:
        """Fraction of the laser's slots that belong to ``pair`` (w_p / W)."""
        return self.frames[self.names.index(pair)] / self.cycle_frames

    def _frames_of(self, p: int) -> np.ndarray:
        """Positions in the cycle of pair p's frames (sorted int64)."""
        pos = self._positions.get(p)
        if pos is None:
            pos = self._positions[p] = np.flatnonzero(self.frame_pair == p).astype(np.int64)
        return pos

    def pair_index(self, slots: np.ndarray) -> np.ndarray:
        """Index into :attr:`pairs` of the pair active in each slot (int64 array).

        Sorted slots (each end's announcements, a batch of clicks) spanning no more frames than
        there are slots take the frames' runs: one search per frame boundary and a fill, no
        per-slot division (a tenth of the CPU time); the same array either way."""
        s = np.asarray(slots, dtype=np.int64)
        F = self.slots_per_frame
        if s.ndim == 1 and s.size > 64:
            f0, f1 = int(s[0]) // F, int(s[-1]) // F
            if 0 <= f1 - f0 <= s.size and bool(np.all(s[1:] >= s[:-1])):
                cuts = np.searchsorted(s, np.arange(f0 + 1, f1 + 1, dtype=np.int64) * F)
                return np.repeat(self.frame_pair[np.arange(f0, f1 + 1) % self.cycle_frames],
                                 np.diff(cuts, prepend=0, append=s.size))
        return self.frame_pair[(s // F) % self.cycle_frames]

    def slots_of_pair(self, pair: str, n_slots: int) -> int:
        """How many of the first ``n_slots`` slots belong to ``pair`` (exact)."""
        p = self.names.index(pair)
        F, C = self.slots_per_frame, self.cycle_frames
        full_cycles, rem = divmod(int(n_slots), F * C)
        f_rem, s_rem = divmod(rem, F)
        pos = self._frames_of(p)
        whole = int(np.searchsorted(pos, f_rem))  # the pair's frames complete before frame f_rem
        part = s_rem if (f_rem < C and self.frame_pair[f_rem] == p) else 0
        return full_cycles * self.frames[p] * F + whole * F + part

    def slot_end(self, pair: str, m: int) -> int:
        """Smallest acquisition slot g with ``slots_of_pair(pair, g) == m`` (the end, exclusive, of
        the pair's first ``m`` slots)."""
        if m <= 0:
            return 0
        p = self.names.index(pair)
        F, C = self.slots_per_frame, self.cycle_frames
        cycles, r = divmod(int(m) - 1, self.frames[p] * F)
        k, off = divmod(r, F)
        return cycles * C * F + int(self._frames_of(p)[k]) * F + off + 1
