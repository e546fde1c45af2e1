"""Simple analysis of simulated tag streams: ground-truth slotting and per-pair click reports.

This is the simulator's own check and the ``labqfl acquire`` report, using the *true* delays of
the simulated station (``nominal_delays_ps``). The QKD pipeline has its own, calibrated slotting.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from labqfl.sim_backends.qrng import ChoiceLog, client_log

from labqfl.config import StationConfig
from labqfl.contracts.schedule import PairSchedule
from labqfl.contracts.types import pair_name
from labqfl.instruments.base import TagBlock
from labqfl.physics import loop_delay_ps

BASIS_PAIRS = ("XX", "XY", "YX", "YY")


def nominal_delays_ps(config: StationConfig) -> dict[str, float]:
    """Delay from a slot's emission to its tag [ps] per channel name ('sync', 'D0', 'D1'):
    cable + input delay, plus the loop propagation n·ΣL/c for the detectors (simulator truth)."""
    tt = config.time_tagger
    loop = loop_delay_ps(config.loop)
    out = {"sync": tt.cable_delays_ps.get("sync", 0.0) + tt.input_delays_ps.get("sync", 0.0)}
    for d in tt.detector_channels:
        out[d] = loop + tt.cable_delays_ps.get(d, 0.0) + tt.input_delays_ps.get(d, 0.0)
    return out


def slot_clicks(block: TagBlock, config: StationConfig, delays_ps: dict[str, float] | None = None,
                rep_rate_hz: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Map detector tags to slots: slot = round((t − delay_D)/T); outcomes per slot as
    1 (D0 only), 2 (D1 only), 3 (both). Returns (slots int64 sorted unique, outcomes uint8)."""
    d = nominal_delays_ps(config) if delays_ps is None else delays_ps
    period = 1e12 / (rep_rate_hz or config.laser.rep_rate_hz)
    parts_s, parts_b = [], []
    for bit, det in ((1, "D0"), (2, "D1")):
        ch = config.time_tagger.detector_channels[det]
        t = block.timestamps[block.channels == ch]
        parts_s.append(np.floor((t - d[det]) / period + 0.5).astype(np.int64))
        parts_b.append(np.full(t.size, bit, dtype=np.uint8))
    s = np.concatenate(parts_s)
    b = np.concatenate(parts_b)
    if s.size == 0:
        return s, b
    o = np.argsort(s, kind="stable")
    s, b = s[o], b[o]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    return s[starts], np.bitwise_or.reduceat(b, starts).astype(np.uint8)


class PairReport:
    """Accumulates, block by block, click counts per pair, detector, basis pair and intensity pair
    (the node's outcomes joined with the clients' logs — a report, not a protocol step)."""

    def __init__(self, config: StationConfig, logs: dict[str, ChoiceLog] | None = None,
                 pairs: list[tuple[str, str]] | None = None, delays_ps: dict[str, float] | None = None) -> None:
        self.config = config
        self.pairs = pairs or config.pairs()
        self.schedule = (PairSchedule.from_config(config) if pairs is None
                         else PairSchedule(self.pairs, config.schedule.slots_per_frame))
        if logs is None:
            base = config.simulation.qrng_epoch_base
            if base is None:
                raise ValueError("PairReport needs the clients' logs of the acquisition (e.g. "
                                 "{c: testbed.client_log(c) ...}); the station's QRNG epochs are not pinned")
            logs = {c.name: client_log(config, c.name, base) for c in config.clients}  # seeded clients only
        self.logs = logs
        self.delays = delays_ps
        self.counts: dict[str, dict[str, Any]] = {}
        for a, b in self.pairs:
            ki, kj = len(config.client(a).intensities), len(config.client(b).intensities)
            self.counts[pair_name(a, b)] = {
                "outcomes": np.zeros(4, dtype=np.int64),
                "combo": np.zeros((ki, kj, 4, 4, 4), dtype=np.int64),  # k_i, k_j, a_i, a_j, outcome
            }
        self._carry = TagBlock(np.zeros(0, np.int64), np.zeros(0, np.int16))

    def add(self, block: TagBlock, final: bool = False) -> None:
        t = np.concatenate([self._carry.timestamps, block.timestamps])
        c = np.concatenate([self._carry.channels, block.channels])
        if not final and t.size:
            # keep the last 20 ns back so a double click split across blocks stays one slot
            k = int(np.searchsorted(t, t[-1] - 20_000))
            self._carry = TagBlock(t[k:].copy(), c[k:].copy())
            t, c = t[:k], c[:k]
        else:
            self._carry = TagBlock(np.zeros(0, np.int64), np.zeros(0, np.int16))
        slots, outc = slot_clicks(TagBlock(t, c), self.config, self.delays)
        keep = slots >= 0
        slots, outc = slots[keep], outc[keep]
        pidx = self.schedule.pair_index(slots)
        for p, (a, b) in enumerate(self.pairs):
            m = pidx == p
            if not m.any():
                continue
            s, o = slots[m], outc[m]
            ri, rj = self.logs[a].choices(s), self.logs[b].choices(s)
            cc = self.counts[pair_name(a, b)]
            np.add.at(cc["outcomes"], o.astype(np.int64), 1)
            np.add.at(cc["combo"], (ri.intensity_idx, rj.intensity_idx, ri.phase_idx, rj.phase_idx, o), 1)

    def finish(self) -> None:
        self.add(TagBlock(np.zeros(0, np.int64), np.zeros(0, np.int16)), final=True)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary per pair."""
        out: dict[str, Any] = {}
        for name, cc in self.counts.items():
            o, combo = cc["outcomes"], cc["combo"]
            # basis of a = a % 2; combo summed over intensities
            by_phase = combo.sum(axis=(0, 1))  # a_i, a_j, outcome
            basis: dict[str, Any] = {}
            for bi in (0, 1):
                for bj in (0, 1):
                    sub = by_phase[bi::2, bj::2, :]  # a_i in {bi, bi+2}, a_j in {bj, bj+2}
                    clicks = int(sub[..., 1:].sum())
                    entry: dict[str, Any] = {"clicks": clicks}
                    if bi == bj:
                        # equal bits: a_i == a_j → D1 is an error; different bits → D0 is an error
                        same = sub[0, 0] + sub[1, 1]
                        diff = sub[0, 1] + sub[1, 0]
                        err2 = 2 * (same[2] + diff[1]) + same[3] + diff[3]
                        entry["errors"] = err2 / 2
                        entry["error_rate"] = (err2 / 2 / clicks) if clicks else None
                    basis["XY"[bi] + "XY"[bj]] = entry
            inten = {f"{ki}-{kj}": int(combo[ki, kj, :, :, 1:].sum())
                     for ki in range(combo.shape[0]) for kj in range(combo.shape[1])}
            out[name] = {"clicks": int(o[1:].sum()),
                         "detector_clicks": {"D0": int(o[1] + o[3]), "D1": int(o[2] + o[3])},
                         "double_clicks": int(o[3]), "by_basis_pair": basis, "by_intensity_pair": inten}
        return out


def pair_cell_counts(config: StationConfig, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell outcome counts of a simulated acquisition of ``duration_s`` on a station with one scheduled
    pair: (``counts[k_i, k_j, a_i, a_j, outcome]``, ``n[k_i, k_j, a_i, a_j]`` slots sent), the outcome 0 no
    click, 1 D0 only, 2 D1 only, 3 both (:func:`slot_clicks`). Only slots whose clicks all reach the tagger
    before the acquisition ends count. For checking the simulator against the analytical channel model
    (:func:`labqfl.qkd.keyrate.expected_counts`) cell by cell."""
    import math

    from labqfl.sim_backends import SagnacTestbed

    (i, j), = config.pairs()
    tb = SagnacTestbed(config)
    period = 1e12 / config.laser.rep_rate_hz
    n_valid = int(round(duration_s * config.laser.rep_rate_hz)) - int(math.ceil((tb.loop_delay_ps + 10_000) / period)) - 2
    parts = [slot_clicks(blk, config) for blk in tb.stream(duration_s)]
    slots = np.concatenate([s for s, _ in parts])
    outc = np.concatenate([o for _, o in parts])
    keep = (slots >= 0) & (slots < n_valid)
    slots, outc = slots[keep], outc[keep]
    if not np.all(np.diff(slots) > 0):
        raise ValueError("slot_clicks gave slots out of order or repeated")
    li, lj = tb.client_log(i), tb.client_log(j)
    ki, kj = len(config.client(i).intensities), len(config.client(j).intensities)
    n = np.zeros((ki, kj, 4, 4), dtype=np.int64)
    for s0 in range(0, n_valid, 1 << 22):  # the slots sent per cell, in chunks (10^8–10^9 slots)
        a = np.arange(s0, min(s0 + (1 << 22), n_valid), dtype=np.int64)
        ri, rj = li.choices(a), lj.choices(a)
        np.add.at(n, (ri.intensity_idx, rj.intensity_idx, ri.phase_idx, rj.phase_idx), 1)
    counts = np.zeros((ki, kj, 4, 4, 4), dtype=np.int64)
    ci, cj = li.choices(slots), lj.choices(slots)
    np.add.at(counts, (ci.intensity_idx, cj.intensity_idx, ci.phase_idx, cj.phase_idx, outc), 1)
    counts[..., 0] = n - counts[..., 1:].sum(axis=-1)
    return counts, n
