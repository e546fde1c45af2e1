"""``labqfl calibrate {detector,delays,vpi,visibility,all}`` and ``labqfl calibrate apply``.

Each run writes a run folder (``--out``/``$LABQFL_RUNS_DIR``/``./runs``) with ``calibration.json``
(versioned, per quantity value/uncertainty/unit and, for simulated instruments, the simulator's
``true`` value), PNG plots of every fit and ``calibrated_station.toml`` (the station file with the
calibration applied; ``--write-config FILE`` writes it elsewhere too, never over an existing file
unless ``--force``). See docs/calibration.md.

A procedure that fails does not stop the others: the table shows every result, one line per
failure follows, the files hold what succeeded, and the command exits with status 1. When every
procedure failed, nothing was calibrated: one error line, no calibrated station file (none in the run
folder, no ``--write-config`` file), status 1.

The detection efficiency (groups ``detector`` and ``all``) with a real power meter needs the operator
to move its head to a client's output: the command asks to confirm (``typer.confirm``) before any
reading there; without a terminal, or with ``--json``, it refuses before opening anything. A simulated
meter needs no one.

Argument parsing and rendering only: the recipe is :func:`labqfl.app.calibrate.run_calibration`
(and :func:`~labqfl.app.calibrate.apply_calibration_file` for ``apply``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from labqfl.cli.common import (
    CONFIG_OPTION,
    JSON_OPTION,
    check_runs_dir,
    emit,
    fail,
    handle_errors,
    print_path,
    progress_bar,
)
from labqfl.config import load_station_config
from labqfl.errors import ConfigError

calibrate_app = typer.Typer(help="Calibrate detectors, phase modulators, delays and the loop visibility.",
                            no_args_is_help=True)

OUT_OPTION = typer.Option(None, "--out", help="Folder for the run folder (default $LABQFL_RUNS_DIR or ./runs).")
SEED_OPTION = typer.Option(None, "--seed", help="Seed of the simulated instruments and the bootstrap.")
WRITE_OPTION = typer.Option(None, "--write-config", help="Also write the calibrated station TOML to this file "
                            "(an existing file is refused unless --force).", dir_okay=False)
FORCE_OPTION = typer.Option(False, "--force", help="Overwrite the --write-config file if it exists.")
QUICK_OPTION = typer.Option(False, "--quick", help="Shorter acquisitions (larger uncertainties).")
PLOTS_OPTION = typer.Option(True, "--plots/--no-plots", help="Write a PNG plot of every fit.")


def _fmt(q: dict[str, Any]) -> tuple[str, str, str, str]:
    v, e = q["value"], q["uncertainty"]
    true = q.get("true")
    pull = "" if true is None or not e > 0 else f"{(v - true) / e:+.1f}σ"
    d = _decimals(e)
    sigma = f"{e:.2g}" if d is None else f"{e:.{d}f}"  # "0.0090", not "0.009", beside a value to 4 decimals
    return rounded_to(v, e), sigma, q["unit"] or "—", ("—" if true is None else f"{true:.6g}  ({pull})")


def _decimals(sigma: float) -> int | None:
    """The decimals of an uncertainty at two significant digits (0 from 10 on), None if it is not finite and
    positive."""
    import math

    if not (math.isfinite(sigma) and sigma > 0):
        return None
    return max(0, 1 - math.floor(math.log10(float(f"{sigma:.2g}"))))


def rounded_to(value: float, sigma: float) -> str:
    """``value`` to the last decimal of its 1σ uncertainty at two significant digits, as the σ column shows it
    (the GUM's convention, JCGM 100:2008 §7.2.6): -0.0158694 ± 0.0077 → "-0.0159", 49.7713 ± 4.4 → "49.8",
    29.9878 ± 0.010 → "29.988" (review s36 F22: six digits beside a two-digit σ); an uncertainty of 10 or more
    rounds to the unit; no finite positive uncertainty: six significant digits."""
    import math

    d = _decimals(sigma)
    return f"{value:.6g}" if d is None or not math.isfinite(value) else f"{value:.{d}f}"


#: Groups that run the detection efficiency (its power-meter reference needs the head at a client's output).
EFFICIENCY_GROUPS = ("detector", "all")


def _interactive(as_json: bool) -> bool:
    """An operator can answer a prompt: a terminal on stdin, and no --json (whose stdout is a document)."""
    return not as_json and sys.stdin.isatty()


def _refuse_unattended_head(cfg: Any, group: str, as_json: bool) -> bool:
    """Whether the efficiency will ask the operator to move a real power-meter head; refused (one line,
    before anything opens) when nobody can answer."""
    if group not in EFFICIENCY_GROUPS or cfg.power_meter.simulated:
        return False
    if not _interactive(as_json):
        how = "--json" if as_json else "no terminal on stdin"
        raise fail(f"calibrate {group}: efficiency needs the operator to move the power-meter head "
                   f"({cfg.power_meter.driver}) to a client's output and confirm ({how}); run it interactively "
                   "in a terminal without --json, or calibrate the other groups (delays, vpi, visibility)")
    return True


def _run(group: str, config: Path | None, as_json: bool, out: Path | None, seed: int | None, write_config: Path | None,
         quick: bool, plots: bool, force: bool = False, **kw: Any) -> None:
    from labqfl.app.calibrate import run_calibration
    from labqfl.serialize import refuse_existing

    if write_config is not None and not force:
        refuse_existing(write_config, "--write-config")  # before any instrument is opened or run folder made
    check_runs_dir(out)  # a file or unwritable: refused before the instruments (CLI review s32 L10)
    cfg = load_station_config(config)
    _check_names(cfg, kw.get("clients"), kw.get("pair"))
    operator = _refuse_unattended_head(cfg, group, as_json)
    base_dir = config.resolve().parent if config else None
    import logging
    import time

    # each step's line stays on screen only with -v (info); without it the spinner shows the current step
    step_lines = not as_json and logging.getLogger("labqfl").isEnabledFor(logging.INFO)
    with progress_bar(True, percent=True) as prog:  # no total: no "0/?" count (review s36 F22), the bar pulses
        task = prog.add_task(f"calibrate {group}", total=None)

        def progress(msg: str) -> None:
            prog.update(task, description=msg)
            if step_lines:
                prog.console.print(f"{time.strftime('%H:%M:%S')} {msg}", soft_wrap=True)

        placed: list[str] = []

        def confirm(position: str) -> bool:
            if position == "laser":  # after the readings at a client's output: the loop closed again
                client = f"{placed[-1]}'s" if placed else "the client's"
                question = (f"Reconnect {client} output fibre to the loop and put the power-meter head back on the "
                            "laser's monitor tap (detectors are off, shutter closed). Done?")
            else:
                placed.append(position)
                question = (f"Move the power-meter head to {position}'s output (towards the node; detectors are off, "
                            "shutter closed). Is it there now?")
            prog.stop()  # the prompt on a quiet terminal
            try:
                return typer.confirm(question, default=False, err=True)
            finally:
                prog.start()

        outcome = run_calibration(cfg, group, runs_dir=out, seed=seed, progress=progress, quick=quick,
                                  make_plots=plots, base_dir=base_dir, confirm_placement=confirm if operator else None,
                                  **kw)
        prog.update(task, description=f"calibrate {group}: done", total=1, completed=1)
    if not outcome.report.results:  # every procedure failed: no calibrated station file (review s33 L8)
        reasons = "; ".join(f"{name}: {msg}" for name, msg in outcome.failures.items())
        raise fail(f"calibration {group}: all {len(outcome.failures)} procedure(s) failed ({reasons}); nothing "
                   f"calibrated, no station file written")
    if write_config is not None:  # the run folder's calibrated station file, copied (written only on success)
        outcome.files["written_config"] = _copy_station_file(Path(outcome.files["station_toml"]), write_config, force)
    data = outcome.as_dict()
    emit(data, as_json, lambda con: _render(con, outcome.station, data))
    summary = outcome.failure_summary()
    if summary is not None:
        raise fail(summary)


def _copy_station_file(src: Path, dst: Path, force: bool) -> str:
    """Copy the calibrated station file ``src`` to ``--write-config`` ``dst`` (an existing one only with
    ``--force``)."""
    try:
        with dst.open("wb" if force else "xb") as f:
            f.write(src.read_bytes())
    except FileExistsError:
        raise ConfigError(f"{dst}: file exists; not overwritten (--force replaces it)") from None
    return str(dst)


def _render(con: Any, station: str, data: dict[str, Any]) -> None:
    """The human form of a calibration's result (stderr)."""
    files = data["files"]
    t = Table("quantity", "value", "±1σ", "unit", "simulator truth", title=f"calibration of {station}")
    for n, q in data["quantities"].items():
        t.add_row(n, *_fmt(q))
    con.print(t)
    print_path(con, "run folder", files["run"])
    if "station_toml" in files:
        print_path(con, "calibrated station file", files["station_toml"])
    if "written_config" in files:
        print_path(con, "written", files["written_config"])
    for name, msg in data["failures"].items():
        con.print(f"[bold red]failed:[/] {escape(name)}: {escape(msg)}", soft_wrap=True, markup=True)


def _split_pair(pair: str | None) -> tuple[str, str] | None:
    if pair is None:
        return None
    parts = pair.replace(",", "-").split("-")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"--pair {pair!r} is not of the form 'Ci-Cj'")
    return parts[0], parts[1]


def _check_names(cfg: Any, clients: list[str] | None, pair: tuple[str, str] | None) -> None:
    """Refuse --client / --pair names the station does not have before a run folder is made or an
    instrument opened (they used to fail inside the procedure, after both)."""
    names = cfg.client_names
    what, given = ("--pair", list(pair)) if pair is not None else ("--client", list(clients or []))
    unknown = [c for c in given if c not in names]
    if unknown:
        raise ConfigError(f"{what}: unknown client(s) {', '.join(unknown)}; station {cfg.name!r} has {', '.join(names)}")
    if pair is not None and pair[0] == pair[1]:
        raise ConfigError(f"--pair {pair[0]}-{pair[1]}: expected two different clients")


@calibrate_app.command("detector")
@handle_errors
def detector_cmd(config: Path | None = CONFIG_OPTION, as_json: bool = JSON_OPTION, out: Path | None = OUT_OPTION,
                 seed: int | None = SEED_OPTION, write_config: Path | None = WRITE_OPTION, quick: bool = QUICK_OPTION,
                 plots: bool = PLOTS_OPTION, force: bool = FORCE_OPTION,
                 detector: list[str] | None = typer.Option(
                     None, "--detector", help="Detector to calibrate, D0 or D1; repeat for both (default: both)."),
                 detector_short: list[str] | None = typer.Option(None, "-d", hidden=True,
                                                                 help="Old short name of --detector.")) -> None:
    """Dead time, afterpulsing, dark counts (vs bias), gate delay, jitter and efficiency."""
    # -d is --duration in acquire/distill; here it stays accepted for old scripts, but unlisted (CLI review s32 L2)
    chosen = list(dict.fromkeys([*(detector or []), *(detector_short or [])])) or ["D0", "D1"]
    bad = [d for d in chosen if d not in ("D0", "D1")]
    if bad:
        raise fail(f"--detector must be D0 or D1, got {', '.join(bad)}")
    _run("detector", config, as_json, out, seed, write_config, quick, plots, force, detectors=tuple(chosen))


@calibrate_app.command("delays")
@handle_errors
def delays_cmd(config: Path | None = CONFIG_OPTION, as_json: bool = JSON_OPTION, out: Path | None = OUT_OPTION,
               seed: int | None = SEED_OPTION, write_config: Path | None = WRITE_OPTION, quick: bool = QUICK_OPTION,
               plots: bool = PLOTS_OPTION, force: bool = FORCE_OPTION) -> None:
    """Time-tagger channel (cable) delays of D0 and D1 relative to the sync."""
    _run("delays", config, as_json, out, seed, write_config, quick, plots, force)


@calibrate_app.command("vpi")
@handle_errors
def vpi_cmd(config: Path | None = CONFIG_OPTION, as_json: bool = JSON_OPTION, out: Path | None = OUT_OPTION,
            seed: int | None = SEED_OPTION, write_config: Path | None = WRITE_OPTION, quick: bool = QUICK_OPTION,
            plots: bool = PLOTS_OPTION, force: bool = FORCE_OPTION,
            client: list[str] = typer.Option([], "--client", help="Client(s) to calibrate (default: all).")) -> None:
    """Phase-modulator Vπ and bias phase of each client from a fringe fit."""
    _run("vpi", config, as_json, out, seed, write_config, quick, plots, force, clients=list(client) or None)


@calibrate_app.command("visibility")
@handle_errors
def visibility_cmd(config: Path | None = CONFIG_OPTION, as_json: bool = JSON_OPTION, out: Path | None = OUT_OPTION,
                   seed: int | None = SEED_OPTION, write_config: Path | None = WRITE_OPTION, quick: bool = QUICK_OPTION,
                   plots: bool = PLOTS_OPTION, force: bool = FORCE_OPTION,
                   pair: str | None = typer.Option(None, "--pair", help="Pair 'Ci-Cj' (default: the first scheduled).")) -> None:
    """Interference visibility of the loop for one pair of clients."""
    _run("visibility", config, as_json, out, seed, write_config, quick, plots, force, pair=_split_pair(pair))


@calibrate_app.command("all")
@handle_errors
def all_cmd(config: Path | None = CONFIG_OPTION, as_json: bool = JSON_OPTION, out: Path | None = OUT_OPTION,
            seed: int | None = SEED_OPTION, write_config: Path | None = WRITE_OPTION, quick: bool = QUICK_OPTION,
            plots: bool = PLOTS_OPTION, force: bool = FORCE_OPTION) -> None:
    """Everything, in order: detectors (gate delay first), delays, Vπ/bias, visibility; every
    procedure runs even when another failed (exit status 1 then)."""
    _run("all", config, as_json, out, seed, write_config, quick, plots, force)


@calibrate_app.command("apply")
@handle_errors
def apply_cmd(calibration: Path = typer.Argument(..., help="calibration.json of an earlier run.", dir_okay=False),
              out: Path | None = typer.Option(None, "--out", "-o", help="Station TOML to write (required; an "
                                              "existing file is refused unless --force).", dir_okay=False),
              output: Path | None = typer.Option(None, "--output", hidden=True, dir_okay=False,
                                                 help="Old name of --out."),
              config: Path | None = CONFIG_OPTION, as_json: bool = JSON_OPTION,
              force: bool = typer.Option(False, "--force", help="Overwrite the --out file if it exists.")) -> None:
    """Apply a calibration file to a station file and write the updated station TOML (--out FILE).

    A quantity the station has no field for, a client or detector it lacks, or a value outside its
    allowed range (beyond its uncertainties) refuses the file; nothing is written then."""
    from labqfl.app.calibrate import apply_calibration_file
    from labqfl.serialize import refuse_existing

    # --out as every other written file (CLI review s32 L2); --output, its old name, still works
    if out is not None and output is not None and out != output:
        raise fail(f"--out {out} and --output {output} name two files; give --out only (--output is its old name)")
    option, output = ("--out", out) if out is not None else ("--output", output)
    if output is None:
        raise fail("missing --out FILE: the station TOML to write")
    if not force:
        refuse_existing(output, option)
    data = apply_calibration_file(load_station_config(config), calibration, output, overwrite=force)
    emit(data, as_json, lambda con: _render_applied(con, data))


def _render_applied(con: Any, data: dict[str, Any]) -> None:
    """The human form of ``calibrate apply``: what was written, and every quantity not applied or clipped."""
    con.print(f"wrote {data['written']} with {len(data['applied'])} calibrated quantities", soft_wrap=True)
    for name, reason in data["not_applied"].items():
        con.print(f"not applied: {name}: {reason}", soft_wrap=True)
    for name, c in data["clipped"].items():
        con.print(f"clipped: {name} = {c['value']:g} ± {c['uncertainty']:.2g} written as {c['written']:g} "
                  f"(allowed: {c['allowed']})", soft_wrap=True)
    for name, c in (data.get("converted") or {}).items():
        con.print(f"converted: {name} measured {c['measured']:.3g} (registered in the gate) written as {c['written']:.3g} "
                  f"(un-gated: ÷ gate fraction {c['gate_fraction']:.3g})", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(calibrate_app, name="calibrate")
