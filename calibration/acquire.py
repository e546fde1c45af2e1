"""Acquisition helpers shared by the procedures (all through the TimeTagger interface) and plots."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from labqfl.errors import CalibrationError
from labqfl.instruments.interfaces import TimeTagger
from labqfl.log import get_logger

log = get_logger(__name__)


def collect_tags(source: Any, duration_s: float, channels: list[int]) -> dict[int, np.ndarray]:
    """Stream ``duration_s`` seconds and return the int64 ps timestamps of each channel. ``source``: a
    :class:`TimeTagger`, or the procedure's :class:`~labqfl.calibration.core.CalContext` — then its acquisition
    segments (:meth:`CalContext.tags`: with the application's, each client streams its frames to its pattern
    generator while the tags come in; without that its generator would play nothing and an emulated one would
    keep the simulated loop waiting)."""
    blocks: Any = source.stream(duration_s) if isinstance(source, TimeTagger) else source.tags(duration_s)
    parts: dict[int, list[np.ndarray]] = {c: [] for c in channels}
    overflow = 0
    for blk in blocks:
        overflow += int(blk.overflow)
        for c in channels:
            parts[c].append(blk.timestamps[blk.channels == c])
    if overflow:
        log.warning("time tagger reported overflow in %d blocks during calibration", overflow)
    return {c: (np.concatenate(p) if p else np.zeros(0, dtype=np.int64)) for c, p in parts.items()}


def delay_after_sync(det_t: np.ndarray, sync_t: np.ndarray) -> np.ndarray:
    """Delay [ps] of each detector tag after the latest sync tag (tags before the first sync dropped)."""
    if sync_t.size == 0:
        raise CalibrationError("no sync tags: check the laser sync cable and time_tagger.sync_channel")
    idx = np.searchsorted(sync_t, det_t, side="right") - 1
    ok = idx >= 0
    return (det_t[ok] - sync_t[idx[ok]]).astype(np.float64)


def fold(delays_ps: np.ndarray, period_ps: float) -> np.ndarray:
    """Delays modulo the pulse period, in [0, T)."""
    return np.mod(delays_ps, period_ps)


def circular_peak(phase_ps: np.ndarray, period_ps: float, bin_ps: float) -> tuple[float, np.ndarray, np.ndarray]:
    """Position of the densest bin of folded delays, and the histogram (centres, counts)."""
    nb_ = max(8, int(round(period_ps / bin_ps)))
    counts, edges = np.histogram(phase_ps, bins=nb_, range=(0.0, period_ps))
    centres = 0.5 * (edges[1:] + edges[:-1])
    return float(centres[int(np.argmax(counts))]), centres, counts


def centred_window(phase_ps: np.ndarray, centre_ps: float, period_ps: float) -> np.ndarray:
    """Folded delays re-expressed in (centre − T/2, centre + T/2] so a peak near 0/T is not split."""
    return centre_ps + np.mod(phase_ps - centre_ps + period_ps / 2.0, period_ps) - period_ps / 2.0


def save_plot(path: str | None, draw: Callable[[Any], None], title: str) -> str | None:
    """Draw a figure with ``draw(ax)`` and save it as PNG; returns the path.

    A :class:`matplotlib.figure.Figure` on its own Agg canvas, not pyplot: procedures run on the
    GUI's worker threads too, and pyplot's global figure registry and backend switch are not safe
    there (matplotlib's "Embedding in a web application server" pattern).
    """
    if path is None:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    draw(ax)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def integration_for(counts_wanted: float, rate_hz: float, lo: float, hi: float) -> float:
    """Integration time [s] to collect ``counts_wanted`` at ``rate_hz``, clipped to [lo, hi]."""
    if not rate_hz > 0 or not math.isfinite(rate_hz):
        return hi
    return float(min(max(counts_wanted / rate_hz, lo), hi))
