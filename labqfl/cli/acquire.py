"""``labqfl acquire --duration SECONDS [--config] [--out FILE.h5] [--json]``: arm the station, run
its time tagger (simulated by default), optionally record to HDF5, and report clicks per pair.

Argument parsing and rendering only: the recipe is :func:`labqfl.app.acquire.acquire` (open the
station, arm every role, stream, record, safe state and close).

The recording holds the tags and public metadata only. Each CSPRNG client keeps its private
choice log (its 32-byte key for this acquisition, mode 0600) in its own folder,
``<data dir>/nodes/<Ci>/choices/``; ``labqfl distill REC.h5`` reads it there. Nothing printed
(JSON included) derives a client's choices.

Clients with a ``pattern_generator`` role (e.g. ``examples/station_emulated_hardware.toml``) stream
their choices to it frame by frame while the tags come in (:func:`labqfl.app.station.start_client_streams`);
the recording keeps each such client's played-frames record, so its log answers for played frames
only, and ``--json`` reports ``modulation``: frames played and lost per client (docs/lab_setup.md).

SIGTERM stops it as Ctrl-C does (:func:`labqfl.app.acquire.acquire`): every instrument in its
safe state, the recording closed and marked incomplete (``labqfl distill --allow-incomplete`` reads its
whole blocks), one line ``error: terminated (SIGTERM); …`` and exit status 143."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from labqfl.app.acquire import AcquireOptions
from labqfl.app.acquire import acquire as acquire_use_case
from labqfl.cli.common import (
    CONFIG_OPTION,
    JSON_OPTION,
    MIN_TEST_CLICKS,
    check_output_file,
    emit,
    fail,
    handle_errors,
    progress_bar,
    rate_clicks_cell,
)
from labqfl.config import load_station_config
from labqfl.errors import ConfigError


@handle_errors
def acquire(
    duration: float = typer.Option(..., "--duration", "-d", help="Acquisition time [s] (simulated seconds on the simulator)."),
    config: Path | None = CONFIG_OPTION,
    out: Path | None = typer.Option(None, "--out", "-o", help="Record the tags to this HDF5 file (layout: docs/simulator.md).", dir_okay=False),
    block: float | None = typer.Option(None, "--block", help="Block duration [s], at least 0.001 (default: simulation.block_duration_s)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", envvar="LABQFL_DATA_DIR", file_okay=False,
                                         help="Data directory holding each client's private choice logs (default: the key store's data dir)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Acquire time tags from the station and report click counts and rates per pair and channel."""
    try:
        options = AcquireOptions(duration_s=duration, block_s=block, out=out, data_dir=data_dir)
    except ConfigError as exc:
        raise fail(f"--{exc}") from None
    if out is not None:  # an unwritable --out: refused before the station opens (CLI review s32 L10)
        check_output_file(out, "--out")
    cfg = load_station_config(config)
    with progress_bar(not as_json) as prog:  # SIGTERM stops the use case as Ctrl-C does (exit 143)
        task = prog.add_task(f"acquire {duration:g} s", total=options.n_blocks(cfg))
        result = acquire_use_case(cfg, options, base_dir=config.resolve().parent if config else None,
                                  progress=lambda done, _total: prog.update(task, completed=done))
    data = result.as_dict()
    emit(data, as_json, lambda con: _render(con, cfg.name, data, out))


def _render(con, name: str, data: dict[str, Any], out: Path | None) -> None:  # type: ignore[no-untyped-def]
    """The human form of ``labqfl acquire``'s result (stderr)."""
    con.print(f"[bold]{escape(name)}[/]: {data['duration_s']:g} s acquired in {data['wall_s']:.2f} s wall "
              f"({data['speed_x_real_time']:.2f}× real time), {data['n_tags']:,} tags"
              + (f" → {escape(str(out))}" if out else ""), markup=True)
    con.print("count rates: " + ", ".join(f"{k} {v:,.0f} /s" for k, v in data["count_rates_hz"].items()))
    if data["modulation"]:
        con.print("frames played/frames (lost): " + ", ".join(
            f"{c} {m['played']}/{m['frames']} ({m['lost']})" + (f" [red]{escape(m['error'])}[/]" if m.get("error") else "")
            for c, m in data["modulation"].items()), markup=True)
    t = Table("pair", "clicks", "D0", "D1", "double", "QBER X key (clicks)", "X test (clicks)", "Y test (clicks)")
    for p, r in data["pairs"].items():
        er, n = r.get("error_rate", {}), r.get("error_rate_counts", {})
        t.add_row(p, f"{r['clicks']:,}", f"{r['detector_clicks']['D0']:,}", f"{r['detector_clicks']['D1']:,}",
                  f"{r['double_clicks']:,}", *[rate_clicks_cell(er.get(k), n.get(k)) for k in ("X_key", "X_test", "Y_test")])
    con.print(t)
    if data["pairs"]:
        con.print(CLICKS_NOTE, markup=False, highlight=False)
        con.print(RATE_NOTE, markup=False, highlight=False)


#: The note under ``acquire``'s table: what its click columns count (review s39 user F8: "double" was unexplained).
CLICKS_NOTE = (
    "clicks: the pair's slots with at least one detector click. D0, D1: slots in which that detector clicked, a "
    "double click counted in both. double: slots in which D0 and D1 both clicked (outcome 3), counted once in "
    "clicks; sifting gives such a key slot a uniformly random bit (squashing, docs/protocol.md §2 step 3).")


#: The note under ``acquire``'s table: what its three error-rate columns are (physics review s34 F4).
RATE_NOTE = (
    "Error rates on equal bases and equal intensities, the cells of `labqfl distill`, with the clicks each is "
    f"over; n/a below {MIN_TEST_CLICKS} clicks. QBER X key: both clients in X at the key intensity. X test, Y "
    "test: both in X, resp. Y, at equal non-zero intensities, the key cell left out (decoy-decoy only where the "
    "clients' signal intensities differ). A test rate is not the key QBER: equal pulses leaving two clients "
    "arrive unequal over unequal paths, which lowers the fringe contrast. Slotted with the simulator's true "
    "delays (a quick look, not the pipeline's). Counts: error_rate_counts in --json.")


def register(app: typer.Typer) -> None:
    app.command("acquire")(acquire)
