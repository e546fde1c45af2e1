"""Shared helpers for the post-processing tests: synthetic tag streams with known slots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labqfl.config import StationConfig, load_station_config
from labqfl.instruments.base import TagBlock
from labqfl.qkd.slotting import SlottingParams

SYNC, D0, D1 = 1, 2, 3


def make_params(period: float = 10_000.0, divider: int = 16, delays: tuple[int, int] = (3150, 3420),
                sync_delay: int = 0, window: float | None = None) -> SlottingParams:
    w = period if window is None else window
    return SlottingParams(period_ps=period, sync_divider=divider, sync_channel=SYNC, detector_channels=(D0, D1),
                          sync_delay_ps=sync_delay, delays_ps=delays, window_ps=(w, w))


def synth_stream(rng: np.random.Generator, params: SlottingParams, n_slots: int, p_click: float = 0.05,
                 drift: float = 0.0, jitter_ps: float = 0.0, drop_sync: float = 0.0,
                 start_slot: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tags for ``n_slots`` pulses: returns (timestamps, channels, true clicked slots, true outcomes).

    Clock: slot s is emitted at s·T·(1 + drift); jitter is Gaussian on detector tags only.
    """
    T, D = params.period_ps, params.sync_divider
    slots = np.arange(start_slot, start_slot + n_slots, dtype=np.int64)
    emit_t = slots * T * (1.0 + drift)
    sync_slots = slots[slots % D == 0]
    keep = rng.random(sync_slots.size) >= drop_sync
    if keep.size:
        keep[0] = True
    sync_slots = sync_slots[keep]
    sync_t = np.round(sync_slots * T * (1.0 + drift)).astype(np.int64) + params.sync_delay_ps
    clicked = np.flatnonzero(rng.random(n_slots) < p_click)
    out = rng.integers(1, 4, clicked.size).astype(np.uint8)
    ts, ch = [sync_t], [np.full(sync_t.size, SYNC, np.int16)]
    for d, chan in ((0, D0), (1, D1)):
        sel = (out & (1 << d)) != 0
        t = emit_t[clicked[sel]] + params.delays_ps[d] + rng.normal(0.0, jitter_ps, int(sel.sum())) if jitter_ps else \
            emit_t[clicked[sel]] + params.delays_ps[d]
        ts.append(np.round(t).astype(np.int64))
        ch.append(np.full(int(sel.sum()), chan, np.int16))
    t_all = np.concatenate(ts)
    c_all = np.concatenate(ch)
    order = np.argsort(t_all, kind="stable")
    return t_all[order], c_all[order], slots[clicked], out


def split_blocks(rng: np.random.Generator, ts: np.ndarray, ch: np.ndarray, n_blocks: int) -> list[TagBlock]:
    cuts = np.sort(rng.integers(0, ts.size + 1, max(n_blocks - 1, 0)))
    bounds = [0, *cuts.tolist(), ts.size]
    return [TagBlock(ts[a:b].copy(), ch[a:b].copy()) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def small_station(intercept: bool = False) -> StationConfig:
    """One pair on a short loop with balanced choices, so 0.1–0.2 s (10^7 slots) yields a key."""
    cfg = load_station_config()
    cfg.schedule.pairs = [("C1", "C2")]
    cfg.loop.segments_km = [0.2] * 5
    for c in cfg.clients:
        c.insertion_loss_db = 0.2
        c.intensities = [0.03, 0.1, 0.0]  # its own point: the embedded station's optimised decoy (0.44)
        c.intensity_probs = [0.6, 0.2, 0.2]  # at 20 % would triple the light and the dead-time loss
        c.basis_x_prob = 0.7
        c.randomness = "seeded"  # reproducible test data (recordings rebuild seeded logs)
    cfg.simulation.intercept_resend.enabled = intercept
    return cfg


def record_small_station(out_dir: Path, dur: float = 0.02, cfg: StationConfig | None = None) -> Path:
    """Record ``dur`` seconds of the small station (or ``cfg``) to ``out_dir/rec.h5``; returns the path."""
    from labqfl.sim_backends import SagnacTestbed
    from labqfl.sim_backends.recording import RecordingWriter

    cfg = small_station() if cfg is None else cfg
    tb = SagnacTestbed(cfg)
    path = Path(out_dir) / "rec.h5"
    blocks = tb.stream(dur)
    with RecordingWriter(path, cfg, epoch=tb.last_epoch, client_logs=[tb.client_log(c) for c in cfg.client_names]) as w:
        for b in blocks:
            w.append(b)
        w.close(duration_s=dur)
    return path

