"""``labqfl station show|check``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from labqfl.cli.common import CONFIG_OPTION, JSON_OPTION, emit, fail, handle_errors
from labqfl.config import load_station_config, station_to_toml_dict

station_app = typer.Typer(help="Inspect and check the station (instruments by role).", no_args_is_help=True)


@station_app.command("show")
@handle_errors
def show(config: Path | None = CONFIG_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Show the resolved station configuration, with units, role by role."""
    cfg = load_station_config(config)
    data = {"source": str(config) if config else "embedded default", "station": station_to_toml_dict(cfg),
            "roles": {r: {"driver": ic.driver, "resource": ic.resource} for r, ic in cfg.roles().items()},
            "pairs": [list(p) for p in cfg.pairs()]}

    def render(con):  # type: ignore[no-untyped-def]
        con.print(f"[bold]{cfg.name}[/] — {cfg.description or 'no description'}  ({data['source']})")
        t = Table("role", "driver", "resource", title="instruments by role")
        for r, ic in cfg.roles().items():
            t.add_row(r, ic.driver, ic.resource or "—")
        con.print(t)
        L = cfg.loop
        con.print(f"laser: {cfg.laser.rep_rate_hz / 1e6:g} MHz, {cfg.laser.wavelength_nm:g} nm; "
                  f"loop: segments {L.segments_km} km at {L.fiber_loss_db_per_km} dB/km, V = {L.visibility}")
        t = Table("client", "seed", "intensities [photons/pulse]", "probabilities", "P(X basis)", "Vπ [V]")
        for c in cfg.clients:
            t.add_row(c.name, str(c.seed), str(c.intensities), str(c.intensity_probs), f"{c.basis_x_prob:g}",
                      f"{c.phase_modulator.v_pi_v:g}")
        con.print(t)
        t = Table("detector", "kind", "efficiency", "dark counts [Hz]", "dead time [ns]", "afterpulse", "jitter [ps]")
        for n, d in cfg.detectors.items():
            t.add_row(n, d.kind, f"{d.efficiency:g}", f"{d.dark_count_rate_hz:g}", f"{d.dead_time_ns:g}",
                      f"{d.afterpulse_prob:g}", f"{d.jitter_ps:g}")
        con.print(t)
        con.print(f"pairs (time-division, {cfg.schedule.slots_per_frame} slots per frame): "
                  + ", ".join(f"{a}-{b}" for a, b in cfg.pairs()))

    emit(data, as_json, render)


@station_app.command("check")
@handle_errors
def check(config: Path | None = CONFIG_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Open every instrument, report identity and status per role; exit 1 naming failed roles."""
    from labqfl.station import Station

    cfg = load_station_config(config)
    base_dir = config.resolve().parent if config else None
    station = Station.open(cfg, base_dir=base_dir, tolerant=True)
    try:
        report = station.check()
    finally:
        station.close()

    def render(con):  # type: ignore[no-untyped-def]
        con.print(f"[bold]{report['station']}[/] ({'embedded default' if config is None else config})")
        t = Table("role", "driver", "resource", "ok", "identity / error", title="station check")
        for role, r in report["roles"].items():
            t.add_row(role, r["driver"], r["resource"] or "—", "[green]ok[/]" if r["ok"] else "[red]FAILED[/]",
                      r["identity"] if r["ok"] else r.get("error", ""))
        con.print(t)

    emit(report, as_json, render)
    if not report["ok"]:
        failed = [role for role, r in report["roles"].items() if not r["ok"]]
        first = report["roles"][failed[0]].get("error", "")
        raise fail(f"station {report['station']!r}: {len(failed)} role(s) failed: {', '.join(failed)} "
                   f"(first: {failed[0]}: {first})")


def register(app: typer.Typer) -> None:
    app.add_typer(station_app, name="station")
