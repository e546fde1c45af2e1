"""``labqfl acquire --duration SECONDS [--config] [--out FILE.h5] [--json]``: run the station's
time tagger (simulated by default), optionally record to HDF5, and report clicks per pair.

The recording holds the tags and public metadata only. Each CSPRNG client keeps its private
choice log (its 32-byte key for this acquisition, mode 0600) in its own folder,
``<data dir>/nodes/<Ci>/choices/``; ``labqfl distill REC.h5`` reads it there. Nothing printed
(JSON included) derives a client's choices.

Clients with a ``pattern_generator`` role (e.g. ``examples/station_emulated_hardware.toml``) stream
their choices to it frame by frame while the tags come in (:func:`labqfl.app.station.start_client_streams`);
the recording keeps each such client's played-frames record, so its log answers for played frames
only, and ``--json`` reports ``modulation``: frames played and lost per client (docs/lab_setup.md)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from labqfl.app.station import start_client_streams
from labqfl.cli.common import CONFIG_OPTION, JSON_OPTION, emit, fail, handle_errors, progress_bar
from labqfl.config import load_station_config
from labqfl.modulation import played_table


@handle_errors
def acquire(
    duration: float = typer.Option(..., "--duration", "-d", help="Acquisition time [s] (simulated seconds on the simulator)."),
    config: Path | None = CONFIG_OPTION,
    out: Path | None = typer.Option(None, "--out", "-o", help="Record the tags to this HDF5 file (layout: docs/simulator.md).", dir_okay=False),
    block: float | None = typer.Option(None, "--block", help="Block duration [s] (default: simulation.block_duration_s)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", envvar="LABQFL_DATA_DIR", file_okay=False,
                                         help="Data directory holding each client's private choice logs (default: the key store's data dir)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Acquire time tags from the station and report click counts and rates per pair and channel."""
    from labqfl.station import Station

    _check_options(duration, block, out)
    cfg = load_station_config(config)
    bd = block or cfg.simulation.block_duration_s
    n_blocks = max(1, math.ceil(round(duration / bd, 9)))
    station = Station.open(cfg, base_dir=config.resolve().parent if config else None)
    writer = None
    streams = None
    modulation: dict[str, dict[str, Any]] = {}
    try:
        tagger = station.time_tagger
        blocks = tagger.stream(duration, bd)
        epoch = getattr(tagger, "acquisition_epoch", None)
        logs = station.client_logs() if epoch is not None else None
        acq_id = station.acquisition_id() if epoch is not None else None
        report = station.pair_report()
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            writer = station.recorder(out, data_dir=data_dir)  # CSPRNG logs: each client's own folder, 0600
        if logs is not None:  # clients with a pattern generator stream their choices to it, frame by frame
            streams = start_client_streams(station, logs, duration)
        counts: dict[int, int] = {}
        n_tags = 0
        t0 = time.perf_counter()
        with progress_bar(not as_json) as prog:
            task = prog.add_task(f"acquire {duration:g} s", total=n_blocks)
            for blk in blocks:
                if writer is not None:
                    writer.append(blk)
                if report is not None:
                    report.add(blk)
                blk.channel_counts(counts)
                n_tags += len(blk)
                prog.advance(task)
        wall = time.perf_counter() - t0
        if streams is not None:
            records = streams.finish()
            modulation, streams = streams.summary(), None
            for c, rec in records.items():
                if writer is not None:  # the client's side keeps its played frames only
                    writer.add_played_frames(c, played_table(rec), rec.frame_slots)
        if report is not None:
            report.finish()
        if writer is not None:
            writer.close(duration_s=duration, complete=True)
            writer = None
    finally:
        if streams is not None:
            streams.finish(timeout_s=5.0)
        if writer is not None:
            writer.close(complete=False)
        station.close()

    tt = cfg.time_tagger
    names = {tt.sync_channel: "sync", **{ch: d for d, ch in tt.detector_channels.items()}}
    data = {
        "station": cfg.name, "duration_s": duration, "acquisition_id": acq_id, "out": str(out) if out else None,
        "client_randomness": {c: lg.randomness for c, lg in (logs or {}).items()},
        "n_tags": n_tags, "wall_s": wall, "speed_x_real_time": duration / wall if wall > 0 else None,
        "count_rates_hz": {names.get(ch, str(ch)): n / duration for ch, n in sorted(counts.items())},
        "pairs": report.summary() if report is not None else {},
        "modulation": modulation,
        "note": "per-pair basis/intensity counts join the node's outcomes with the clients' logs (report only)",
    }

    emit(data, as_json, lambda con: _render(con, cfg.name, data, out))


def _render(con, name: str, data: dict[str, Any], out: Path | None) -> None:  # type: ignore[no-untyped-def]
    """The human form of ``labqfl acquire``'s result (stderr)."""
    con.print(f"[bold]{name}[/]: {data['duration_s']:g} s acquired in {data['wall_s']:.2f} s wall "
              f"({data['speed_x_real_time']:.2f}× real time), {data['n_tags']} tags" + (f" → {out}" if out else ""))
    con.print("count rates: " + ", ".join(f"{k} {v:,.0f} /s" for k, v in data["count_rates_hz"].items()))
    if data["modulation"]:
        con.print("frames played (lost): " + ", ".join(f"{c} {m['played']} ({m['lost']})"
                                                       for c, m in data["modulation"].items()))
    t = Table("pair", "clicks", "D0", "D1", "double", "QBER XX", "QBER YY")
    for p, r in data["pairs"].items():
        q = [r["by_basis_pair"][b].get("error_rate") for b in ("XX", "YY")]
        t.add_row(p, str(r["clicks"]), str(r["detector_clicks"]["D0"]), str(r["detector_clicks"]["D1"]),
                  str(r["double_clicks"]), *[f"{x:.4f}" if x is not None else "—" for x in q])
    con.print(t)


def _check_options(duration: float, block: float | None, out: Path | None) -> None:
    """One clear line for a bad --duration, --block or --out."""
    if not (math.isfinite(duration) and duration > 0):
        raise fail(f"--duration must be a number of seconds > 0, got {duration}")
    if block is not None and not (math.isfinite(block) and block > 0):
        raise fail(f"--block must be a number of seconds > 0, got {block}")
    if out is not None and out.suffix.lower() not in (".h5", ".hdf5"):
        raise fail(f"--out {out}: expected a file name ending in .h5 or .hdf5")


def register(app: typer.Typer) -> None:
    app.command("acquire")(acquire)
