"""``labqfl station show|check|make``."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import typer
from rich.table import Column, Table
from rich.text import Text

from labqfl.cli.common import (
    CONFIG_OPTION,
    JSON_OPTION,
    emit,
    fail,
    handle_errors,
    print_json,
    print_table,
)
from labqfl.config import (
    MAX_CLIENTS,
    StationConfig,
    load_station_config,
    parse_station_config,
    station_to_toml_dict,
)
from labqfl.errors import ConfigError, LabqflError
from labqfl.serialize import refuse_existing

station_app = typer.Typer(help="Inspect and check the station (instruments by role).", no_args_is_help=True)

#: Columns of the ``station show`` tables as (label, unit); "" = dimensionless or not a quantity.
CLIENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("client", ""), ("randomness", ""), ("seed", ""), ("intensities", "photons/pulse"), ("probabilities", ""),
    ("P(X basis)", ""), ("Vπ", "V"), ("insertion loss", "dB"))
DETECTOR_COLUMNS: tuple[tuple[str, str], ...] = (
    ("detector", ""), ("kind", ""), ("efficiency", ""), ("dark counts", "Hz"), ("dead time", "ns"),
    ("afterpulse", ""), ("jitter", "ps"))
#: Below the clients' table: what the two columns about their randomness mean (docs/simulator.md,
#: "Clients' randomness": a CSPRNG client's choices are AES-256-CTR under a fresh OS key per acquisition,
#: and neither its seed nor the epoch enters them; a seeded client's are a function of (seed, epoch)).
RANDOMNESS_NOTE = ("randomness: csprng = a fresh OS key per acquisition (the seed is not used for its choices: '—'); "
                   "seeded = choices reproducible from the seed and the acquisition epoch, hence predictable by "
                   "anyone with this file (tests and benchmarks only, never a secret key)")


def seed_cell(randomness: str, seed: int) -> str:
    """The ``seed`` cell of a client: its seed where it enters the choices (``seeded``), else ``—``."""
    return str(seed) if randomness == "seeded" else "—"


def intensities_cell(values: list[float]) -> str:
    """A client's intensities as a cell that names them (index 0 is the signal, labqfl.config.ClientConfig):
    "signal 0.0294; decoys 0.442, 0" (review s36 F11: "[0.0294, 0.442, 0.0]" said not which was which)."""
    decoys = ", ".join(f"{v:g}" for v in values[1:])
    return f"signal {values[0]:g}" + (f"; decoys {decoys}" if decoys else "")


def column_header(label: str, unit: str) -> str:
    """``label [unit]`` as plain text (the caller wraps it in :class:`rich.text.Text`, never markup:
    rich would take a lower-case ``[ns]`` for a style tag and drop it)."""
    return f"{label} [{unit}]" if unit else label


def _table(columns: tuple[tuple[str, str], ...], **kwargs: Any) -> Table:
    return Table(*(Column(header=Text(column_header(label, unit))) for label, unit in columns), **kwargs)


@station_app.command("show")
@handle_errors
def show(config: Path | None = CONFIG_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Show the resolved station configuration, with units, role by role."""
    cfg = load_station_config(config)
    data = {"source": str(config) if config else "embedded default", "station": station_to_toml_dict(cfg),
            "roles": {r: {"driver": ic.driver, "resource": ic.resource} for r, ic in cfg.roles().items()},
            "pairs": [list(p) for p in cfg.pairs()]}

    def render(con):  # type: ignore[no-untyped-def]
        con.print(Text(f"{cfg.name} — {cfg.description or 'no description'}  ({data['source']})", style="bold"))
        t = Table("role", "driver", "resource", title="instruments by role")
        for r, ic in cfg.roles().items():
            t.add_row(Text(r), Text(ic.driver), Text(ic.resource or "—"))
        print_table(con, t)  # whole at any width (review s36 F11)
        L = cfg.loop
        con.print(Text(f"laser: {cfg.laser.rep_rate_hz / 1e6:g} MHz, {cfg.laser.wavelength_nm:g} nm, pulses "
                       f"{cfg.laser.pulse_width_ps:g} ps; loop: segments {L.segments_km} km at {L.fiber_loss_db_per_km} "
                       f"dB/km, node loss {L.node_loss_db:g} dB, V = {L.visibility}, " + _drift_text(L)))
        t = _table(CLIENT_COLUMNS)
        for c in cfg.clients:
            t.add_row(c.name, Text(c.randomness, style="bold red" if c.randomness == "seeded" else ""),
                      seed_cell(c.randomness, c.seed), Text(intensities_cell(c.intensities)), Text(str(c.intensity_probs)),
                      f"{c.basis_x_prob:g}", f"{c.phase_modulator.v_pi_v:g}", f"{c.insertion_loss_db:g}")
        print_table(con, t)  # whole at any width (review s36 F11)
        con.print(Text(RANDOMNESS_NOTE))  # wrapped at words, as every other line
        t = _table(DETECTOR_COLUMNS)
        for n, d in cfg.detectors.items():
            t.add_row(n, d.kind, f"{d.efficiency:g}", f"{d.dark_count_rate_hz:g}", f"{d.dead_time_ns:g}",
                      f"{d.afterpulse_prob:g}", f"{d.jitter_ps:g}")
        print_table(con, t)  # whole at any width (review s36 F11)
        con.print(Text(_tagger_text(cfg.time_tagger)))
        con.print(Text(f"pairs (time-division, {cfg.schedule.slots_per_frame} slots per frame): "
                       + ", ".join(f"{a}-{b}" for a, b in cfg.pairs())))
        con.print(Text(FIELDS_NOTE))

    emit(data, as_json, render)


@station_app.command("check")
@handle_errors
def check(config: Path | None = CONFIG_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Open every instrument, report identity and status per role; exit 1 naming failed roles.

    With ``--json`` a JSON document is always printed on stdout, also when the check fails: a
    station file that does not load gives ``{"station": null, "ok": false, "error": ..., "roles": {}}``.
    """
    from labqfl.station import Station

    cfg: StationConfig | None = None
    try:
        cfg = load_station_config(config)
        base_dir = config.resolve().parent if config else None
        station = Station.open(cfg, base_dir=base_dir, tolerant=True)
        try:
            report = station.check()
        finally:
            station.close()
    except LabqflError as exc:
        if as_json:
            print_json({"station": cfg.name if cfg else None, "ok": False, "error": str(exc), "roles": {}})
        raise

    def render(con):  # type: ignore[no-untyped-def]
        con.print(Text(f"{report['station']} ({'embedded default' if config is None else config})", style="bold"))
        t = Table("role", "driver", "resource", "ok", "identity / error", title="station check")
        for role, r in report["roles"].items():
            t.add_row(Text(role), Text(r["driver"]), Text(r["resource"] or "—"),
                      Text("ok", style="green") if r["ok"] else Text("FAILED", style="red"),
                      Text(str(r["identity"] if r["ok"] else r.get("error", ""))))
        print_table(con, t)  # whole at any width (review s36 F11)

    emit(report, as_json, render)
    if not report["ok"]:
        failed = [role for role, r in report["roles"].items() if not r["ok"]]
        first = report["roles"][failed[0]].get("error", "")
        raise fail(f"station {report['station']!r}: {len(failed)} role(s) failed: {', '.join(failed)} "
                   f"(first: {failed[0]}: {first})")


@station_app.command("make")
@handle_errors
def make(
    clients: int = typer.Option(..., "--clients", help=f"Number of clients N on the loop (2 to {MAX_CLIENTS})."),
    loop_km: float = typer.Option(10.0, "--loop-km", help="Total fibre length of the loop [km], split evenly "
                                  "into the N+1 segments node→C1, …, CN→node."),
    graph: str = typer.Option("all", "--graph", help="Mask graph whose pairs get slots: all, or ring-k with --k K, or ring-K "
                                                  "(e.g. ring-8)."),
    k: int = typer.Option(0, "--k", help="Neighbours per client for --graph ring-k (even)."),
    insertion_loss_db: float = typer.Option(
        0.5, "--insertion-loss-db", help="Insertion loss of each client's modulators [dB] (every pulse passing a "
        "client pays it; docs/scaling.md cites typical values)."),
    balance: str = typer.Option(
        "asymptotic", "--balance", help="What the schedule weights equalise: asymptotic (the pairs' long-run key "
        "rates) | first-key (the time to each pair's first finite-key block; ~1 s per pair to compute)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Station file to write (default: station-N{N}.toml); "
                                    "an existing file is refused unless --force."),
    force: bool = typer.Option(False, "--force", help="Overwrite the station file if it exists."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write a station file for N clients on one Sagnac loop, scheduling only the mask graph's
    pairs, weighted so that their key rates balance (docs/scaling.md). An existing file is never
    replaced unless --force."""
    from labqfl.planning import make_station, station_toml

    path = out or Path(f"station-N{clients}.toml")
    if not force:  # before the (possibly slow) planning: a user's hand-edited station is never lost
        refuse_existing(path, "--out" if out is not None else "", "" if out is not None else ", or --out to name "
                        "another file")
    cfg, info = make_station(clients, loop_km=loop_km, graph=graph, k=k, insertion_loss_db=insertion_loss_db,
                             balance=balance)
    text = station_toml(cfg)
    parse_station_config(tomllib.loads(text), str(path))  # what is written loads (checked before writing)
    _write_station_file(path, text, force)
    data = {"path": str(path), "station": cfg.name, **info}

    def render(con):  # type: ignore[no-untyped-def]
        con.print(Text(f"wrote {path}: {cfg.name} ({clients} clients, {info['pairs']} scheduled pairs, "
                       f"{info['cycle_frames']} frames per schedule cycle)", style="bold"))
        con.print(Text(f"pair loss {info['loss_db_min']:.1f}–{info['loss_db_max']:.1f} dB; asymptotic key per slot "
                       f"{info['rate_per_slot_min']:.3g}–{info['rate_per_slot_max']:.3g}; balanced key per laser "
                       f"pulse {info['balanced_per_pulse_min']:.3g}–{info['balanced_per_pulse_max']:.3g} "
                       f"(equal shares: {info['equal_per_pulse_min']:.3g}–{info['equal_per_pulse_max']:.3g})"))
        if info["no_key_pairs"]:
            con.print(Text(f"{len(info['no_key_pairs'])} pair(s) make no key in the model: "
                           + ", ".join(info["no_key_pairs"][:10]), style="yellow"))

    emit(data, as_json, render)


def _write_station_file(path: Path, text: str, force: bool) -> None:
    """Write ``text`` to ``path``; without ``force`` only as a new file (a file that appeared meanwhile is kept)."""
    try:
        with path.open("w" if force else "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise ConfigError(f"{path}: file exists; not overwritten (pass --force to replace it)") from None


#: The last line of ``station show``: the tables give values; the field names a station file uses are in --json
#: (review s38 user F7: an unknown-field error pointed here, and no field was named).
FIELDS_NOTE = ("Field names as the station file writes them (every field, with defaults): "
               "`labqfl station show --json`; docs/station.md explains each.")


def _tagger_text(tt: Any) -> str:
    """The time tagger in one line (review s38 user F7: ``station show`` left it out): resolution, channels (sync with
    its divider, detectors, markers), cable delays and frame length (labqfl.config.TimeTaggerConfig)."""
    chans = ", ".join(f"{d} → {ch}" for d, ch in tt.detector_channels.items())
    marks = ", ".join(f"{c} → {ch}" for c, ch in tt.marker_channels.items())
    delays = ", ".join(f"{k} {v:g}" for k, v in tt.cable_delays_ps.items())
    return (f"time tagger: resolution {tt.resolution_ps:g} ps; channels: sync {tt.sync_channel} (one tag per "
            f"{tt.sync_divider} pulses), {chans}" + (f", markers {marks}" if marks else "")
            + (f"; cable delays [ps]: {delays}" if delays else "") + f"; frames of {tt.frame_slots} slots")


def _drift_text(loop: Any) -> str:
    """The loop's residual phase drift in words (labqfl.config.LoopConfig)."""
    if not loop.phase_drift_rad_per_sqrt_s:
        return "no phase drift"
    tau = loop.phase_drift_correlation_s
    return (f"phase drift {loop.phase_drift_rad_per_sqrt_s:g} rad/√s "
            + (f"relaxing with τ = {tau:g} s" if tau else "(an unbounded random walk)"))


def register(app: typer.Typer) -> None:
    app.add_typer(station_app, name="station")
