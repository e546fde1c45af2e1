"""Open a station and put it in its operating state (one recipe for every front end)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labqfl.config import StationConfig


def open_station(cfg: StationConfig, *, base_dir: Path | None = None, tolerant: bool = False) -> Any:
    """Open every role of ``cfg`` (:class:`labqfl.station.Station`); ``base_dir``: folder of the
    station file (relative pyvisa-sim paths). Use it as a context manager or call ``close()``."""
    from labqfl.station import Station

    return Station.open(cfg, base_dir=base_dir, tolerant=tolerant)


def config_for_acquisition(cfg: StationConfig, index: int) -> StationConfig:
    """``cfg`` for the ``index``-th acquisition (0: the first) of a job that opens a fresh station for
    each one (``labqfl run``: the first acquisition, a resumed run's, every top-up). A pinned
    ``simulation.qrng_epoch_base`` would give every fresh testbed the same first epoch, hence the
    same acquisition ID and the same seeded choices; here the testbed starts ``index`` epochs later,
    numbering the job's acquisitions as one testbed making them all would (base, base + 1, ...).
    An unpinned base (a fresh random one per testbed) is left as it is."""
    base = cfg.simulation.qrng_epoch_base
    if base is None or index == 0:
        return cfg
    if index < 0:
        raise ValueError(f"config_for_acquisition: index must be >= 0 (the job's acquisitions before this one), "
                         f"got {index}")
    sim = type(cfg.simulation).model_validate({**cfg.simulation.model_dump(), "qrng_epoch_base": base + index})
    return cfg.model_copy(update={"simulation": sim})


def arm(station: Any) -> list[str]:
    """Put every instrument of ``station`` in its operating state for acquisition: the master clock's laser
    trigger on, lasers on, every detector armed, phase and intensity modulators on, attenuator shutters
    open. Instruments already there are left alone. Returns what was changed, as ``"role.attr=value"``
    (:func:`labqfl.station.arm_instruments`, the rule the node processes apply to their own roles too)."""
    from labqfl.station import arm_instruments

    return arm_instruments(station.instruments)


def start_client_streams(station: Any, logs: dict[str, Any], duration_s: float | None, *,
                         max_wait_s: float = 1.0) -> Any | None:
    """Start every client's frame stream for the acquisition just begun (``station.time_tagger.stream``
    called, ``logs`` = :meth:`Station.client_logs` of it): each client with a ``pattern_generator`` role
    streams its own log to it (:class:`labqfl.modulation.ClientStreams`, ``ceil(duration·f_rep / F)``
    frames from frame 0; ``duration_s`` None: open-ended, until ``finish()``). None when no client has a
    pattern generator. Call ``finish()`` on the result
    after the last block: it returns each client's played-frames record."""
    from labqfl.modulation import ClientStreams

    gens = {c.name: station[f"{c.name}.pattern_generator"] for c in station.config.clients
            if c.pattern_generator is not None}
    return ClientStreams.start_for(gens, logs, duration_s, station.config.laser.rep_rate_hz, max_wait_s=max_wait_s)


def channel_names(cfg: StationConfig) -> dict[int, str]:
    """Time-tagger channel number → name: the sync channel ``"sync"``, each detector by its name."""
    tt = cfg.time_tagger
    return {tt.sync_channel: "sync", **{ch: name for name, ch in tt.detector_channels.items()}}


__all__ = ["arm", "channel_names", "config_for_acquisition", "open_station", "start_client_streams"]
