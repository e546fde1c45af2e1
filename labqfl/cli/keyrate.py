"""``labqfl keyrate``: predicted gains, error rates, phase-error bound and secure key rate per pair.

The prediction is the security analysis of docs/protocol.md (CAL19 protocol, CL21-style finite
key) applied to the expected counts of the analytical station model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from labqfl.cli.common import (
    CONFIG_OPTION,
    JSON_OPTION,
    emit,
    fail,
    handle_errors,
    pct_cell,
    print_table,
    progress_bar,
)
from labqfl.config import StationConfig, fresh_slot_rate_hz, load_station_config
from labqfl.contracts.types import split_pair

#: Block sizes [slots per pair] of the key-rate-versus-block-size plot.
BLOCK_SWEEP = (1e8, 3e8, 1e9, 3e9, 1e10, 3e10, 1e11, 1e12, 1e13)


def parse_loss_spec(spec: str | None) -> list[float]:
    """'' → [0]; '3' → [3]; '0,5,10' → list; '0:30:5' → 0, 5, …, 30 (inclusive) [dB]."""
    if spec is None or not spec.strip():
        return [0.0]
    s = spec.strip()
    try:
        if ":" in s:
            parts = [float(x) for x in s.split(":")]
            if len(parts) != 3 or parts[2] <= 0 or parts[1] < parts[0]:
                raise ValueError
            n = int(math.floor((parts[1] - parts[0]) / parts[2] + 1e-9)) + 1
            vals = [parts[0] + k * parts[2] for k in range(n)]
        else:
            vals = [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise ValueError(
            f"--loss-db {spec!r} is not a loss specification; expected a value '3', a list '0,5,10' "
            "or a range 'start:stop:step' in dB"
        ) from None
    if not vals or any(v < 0 or not math.isfinite(v) for v in vals):
        raise ValueError(f"--loss-db {spec!r}: losses must be finite and >= 0 dB")
    if len(vals) > 200:
        raise ValueError(f"--loss-db {spec!r} gives {len(vals)} points; at most 200 allowed")
    return vals


def _select_pairs(cfg: StationConfig, pair: str | None) -> list[tuple[str, str]]:
    scheduled = cfg.pairs()
    if pair is None:
        return scheduled
    try:
        a, b = split_pair(pair)
    except ValueError:
        raise ValueError(f"--pair {pair!r} is not of the form 'Ci-Cj'") from None
    for pr in scheduled:
        if {a, b} == set(pr):
            return [pr]
    raise ValueError(f"--pair {pair!r} is not a scheduled pair; scheduled pairs: "
                     + ", ".join(f"{x}-{y}" for x, y in scheduled))


def _row(pred: Any, loss: float, optimized: bool) -> dict[str, Any]:
    d = pred.as_dict()
    d["extra_loss_db"] = loss
    d["optimized"] = optimized
    return d


#: The reference line of ``keyrate --plot``: the key rate per pair the paper reports for its four-client network
#: (QuNetQFL, arXiv 2501.12709; README). Review s38 user F8: the legend said only "32.8 kbit/s".
PAPER_RATE_BPS = 32.8e3
PAPER_RATE_LABEL = "paper (QuNetQFL, arXiv 2501.12709): 32.8 kbit/s per pair"


def _plot(path: Path, results: list[dict[str, Any]], sweep: str, block: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    pairs = list(dict.fromkeys(r["pair"] for r in results))
    for k, pr in enumerate(pairs):
        rows = [r for r in results if r["pair"] == pr]
        x = [r["extra_loss_db"] if sweep == "loss" else r["n_slots"] for r in rows]
        y = [max(r["bits_per_second"], 0.0) for r in rows]
        ya = [max(r["asymptotic_bits_per_second"], 0.0) for r in rows]
        color = f"C{k % 10}"
        ax.plot(x, np.where(np.array(y) > 0, y, np.nan), "o-", color=color, label=f"{pr} (N = {block:.0e})" if sweep == "loss" else pr)
        ax.plot(x, np.where(np.array(ya) > 0, ya, np.nan), "--", color=color, alpha=0.6,
                label=f"{pr} asymptotic" if k == 0 else None)
    ax.set_yscale("log")
    if sweep == "loss":
        ax.set_xlabel("extra loss per arm [dB]")
    else:
        ax.set_xscale("log")
        ax.set_xlabel("block size [slots per pair]")
    ax.axhline(PAPER_RATE_BPS, color="grey", lw=0.8, ls=":", label=PAPER_RATE_LABEL)
    ax.set_ylabel("secure key rate per pair [bit/s]")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _write_optimized_station(cfg: StationConfig, source: Path | None, block_size: float, ec_efficiency: float,
                             out: Path, max_evaluations: int, as_json: bool,
                             floors: tuple[float, float] = (0.0, 0.0)) -> None:
    """``--optimize --write-config``: station-wide optimisation, TOML written and re-loaded."""
    from labqfl.qkd.keyrate import optimize_station
    from labqfl.runs import dump_toml

    with progress_bar(enabled=not as_json) as prog:
        task = prog.add_task("optimising the station", total=max_evaluations)
        res = optimize_station(cfg, block_size, ec_efficiency=ec_efficiency, max_evaluations=max_evaluations,
                               progress=lambda n, m: prog.update(task, completed=n),
                               min_decoy_prob=floors[0], min_y_prob=floors[1])
    src = str(source) if source is not None else "the embedded default station"
    floor_note = (f", decoy probability >= {floors[0]:g}, P(Y) >= {floors[1]:g}" if any(floors) else "")
    header = (f"# Station optimised by `labqfl keyrate --optimize --write-config` from {src}\n"
              f"# for blocks of {block_size:.3g} slots per pair (ec_efficiency {ec_efficiency:g}{floor_note}): smallest predicted "
              f"pair key rate {res.min_bits_per_second_before / 1e3:.1f} -> {res.min_bits_per_second_after / 1e3:.1f} "
              "kbit/s (docs/station.md).\n")
    out.write_text(header + dump_toml(res.config.model_dump(mode="json", exclude_none=True)), encoding="utf-8")
    load_station_config(out)  # what was written must load
    rows: list[dict[str, Any]] = [{"pair": b.pair, "bits_per_second_before": b.bits_per_second, "bits_per_second_after": a.bits_per_second,
             "phase_error_upper_after": a.phase_error_upper} for b, a in zip(res.before, res.after, strict=True)]
    clients: dict[str, dict[str, Any]] = {
        c.name: {"intensities": c.intensities, "intensity_probs": c.intensity_probs, "basis_x_prob": c.basis_x_prob}
        for c in res.config.clients}
    data = {
        "station": cfg.name, "block_size": block_size, "ec_efficiency": ec_efficiency, "written": str(out),
        "min_decoy_prob": floors[0], "min_y_prob": floors[1], "evaluations": res.evaluations, "pairs": rows, "clients": clients,
    }

    def render(con) -> None:  # type: ignore[no-untyped-def]
        t = Table("pair", "kbit/s given", "kbit/s optimised", "e_ph^U",
                  title=f"{cfg.name}: blocks of {block_size:.3g} slots per pair")
        for r in rows:
            t.add_row(r["pair"], f"{r['bits_per_second_before'] / 1e3:.1f}", f"{r['bits_per_second_after'] / 1e3:.1f}",
                      pct_cell(r['phase_error_upper_after']))
        print_table(con, t)  # whole at any width (review s36 F11)
        for name, c in clients.items():
            con.print(f"{name}: intensities {[round(x, 4) for x in c['intensities']]}, probabilities "
                      f"{[round(x, 4) for x in c['intensity_probs']]}, P(X) {c['basis_x_prob']:.4f}")
        con.print(f"station written to {out}", soft_wrap=True)  # a path on one line

    emit(data, as_json, render)


#: Largest --block-size [slots per pair]: 10^7 s (the longest acquisition any command takes) of a 1 GHz laser.
#: Beyond it the finite-key rates equal the asymptotic ones to the table's digits (CLI review s32 L8: -n 1e300).
MAX_BLOCK_SLOTS = 1e16


def _check_block_size(block_size: float) -> None:
    if not (1 <= block_size <= MAX_BLOCK_SLOTS):  # NaN fails too
        hint = " (for the infinite-block limit, read the table's asymptotic column)" if block_size > 1 else ""
        raise fail(f"--block-size must be a number of slots in [1, {MAX_BLOCK_SLOTS:.0e}], got {block_size:g}{hint}")


def _check_floors(write_config: Path | None, min_decoy_prob: float, min_y_prob: float) -> None:
    """``--min-decoy-prob`` in [0, 1) and ``--min-y-prob`` in [0, 0.5), and only with ``--write-config``
    (the per-pair optimiser has no floors)."""
    if not 0.0 <= min_decoy_prob < 1.0:  # NaN fails too
        raise fail(f"--min-decoy-prob must lie in [0, 1), got {min_decoy_prob:g}")
    if not 0.0 <= min_y_prob < 0.5:
        raise fail(f"--min-y-prob must lie in [0, 0.5) (P(X) stays the larger), got {min_y_prob:g}")
    if write_config is None and (min_decoy_prob or min_y_prob):
        raise fail("--min-decoy-prob and --min-y-prob need --optimize --write-config (the station optimiser)")


def _check_write_config(optimize: bool, write_config: Path, block_size: float, force: bool) -> None:
    """``--write-config`` needs ``--optimize``, a .toml name, a valid block size and a new file (or
    ``--force``): checked before the optimiser's ~20 s."""
    from labqfl.serialize import refuse_existing

    if not optimize:
        raise fail("--write-config needs --optimize (it writes the optimised station)")
    if write_config.suffix.lower() != ".toml":
        raise fail(f"--write-config {str(write_config)!r}: expected a .toml file name")
    _check_block_size(block_size)
    if not force:
        refuse_existing(write_config, "--write-config")


def _predict_points(cfg: StationConfig, points: list[tuple[tuple[str, str], float, float]], optimize: bool,
                    ec_efficiency: float, as_json: bool) -> list[dict[str, Any]]:
    """Predicted (or, with ``optimize``, optimised) key rate of each (pair, extra loss [dB], block size) point."""
    from labqfl.qkd.keyrate import (  # scipy: import on use
        optimize_pair,
        predict_pair,
        station_pair_channel,
        station_params,
    )

    params = station_params(cfg)  # with the station's intensity uncertainty δ, as the distiller analyses
    n_pairs = len(cfg.pairs())
    rep = fresh_slot_rate_hz(cfg)  # key-carrying slots per second (a duty cycle's dark frames carry none)
    results: list[dict[str, Any]] = []
    with progress_bar(enabled=not as_json and len(points) > 1) as prog:
        task = prog.add_task("key rate", total=len(points))
        for pr, L, n in points:
            ch = station_pair_channel(cfg, pr, L)
            if optimize:
                pred = optimize_pair(ch, n, n_pairs, rep, params, ec_efficiency=ec_efficiency).prediction
            else:
                pred = predict_pair(ch, n, n_pairs, rep, params, ec_efficiency=ec_efficiency)
            results.append(_row(pred, L, optimize))
            prog.advance(task)
    return results


#: Under the key-rate table: what its short headers mean (review s36 user F11; labqfl.qkd.keyrate.PairPrediction,
#: docs/station.md for η).
KEYRATE_LEGEND = (
    "+dB: loss added to the pair (--loss-db); η cw/ccw: transmittance Ci → node / Cj → node; μ i/j: the two "
    "clients' signal intensities [photons/pulse]; Q_X: click probability per key-setting slot; QBER: of the key "
    "bits; e_ph^U: upper bound on the phase-error rate of the block (as QBER, in %); bit/pulse: secure key bits per laser pulse; "
    "kbit/s: secure key rate with the pair's time share; asymptotic: the same for an infinite block.")


def _render_keyrate(con: Any, cfg: StationConfig, block_size: float, main: list[dict[str, Any]],
                    plot: Path | None) -> None:
    """The key-rate table of ``labqfl keyrate`` (one row per pair and extra loss), aborts and the plot's path."""
    n_pairs = len(cfg.pairs())
    rep = cfg.laser.rep_rate_hz
    con.print(f"[bold]{escape(cfg.name)}[/]: {n_pairs} scheduled pairs share {rep / 1e6:g} MHz; block N = "
              f"{block_size:.3g} slots per pair (= {block_size * n_pairs / fresh_slot_rate_hz(cfg):.3g} s of acquisition)",
              markup=True)
    t = Table("pair", "+dB", "η cw/ccw", "μ i/j", "Q_X", "QBER", "e_ph^U", "bit/pulse", "kbit/s",
              "asymptotic kbit/s", title="secure key rate per pair (bit/s include the 1/P time share)")
    for r in main:
        t.add_row(
            r["pair"], f"{r['extra_loss_db']:g}", f"{r['eta_cw']:.3g}/{r['eta_ccw']:.3g}",
            f"{r['intensities_i'][0]:.3g}/{r['intensities_j'][0]:.3g}", f"{r['gain_key']:.2e}",
            pct_cell(r['qber_key']), pct_cell(r['phase_error_upper']), f"{r['bits_per_pulse']:.2e}",
            f"{r['bits_per_second'] / 1e3:.1f}", f"{r['asymptotic_bits_per_second'] / 1e3:.1f}",
        )
    print_table(con, t, key_columns=2)  # whole at any width: one record per pair and loss where the table does not fit (review s36 F11)
    con.print(KEYRATE_LEGEND, markup=False)
    for r in main:
        if r["abort"]:
            con.print(f"{r['pair']} +{r['extra_loss_db']:g} dB: no key: {r['abort_reason']}")
    if plot is not None:
        con.print(f"plot written to {plot}", soft_wrap=True)  # a path on one line


def register(app: typer.Typer) -> None:
    @app.command("keyrate")
    @handle_errors
    def keyrate(
        config: Path | None = CONFIG_OPTION,
        pair: str | None = typer.Option(None, "--pair", help="Only this pair, e.g. C1-C4 (default: all scheduled pairs)."),
        block_size: float = typer.Option(1e10, "--block-size", "-n", help="Block size N in slots of the pair, 1 to 1e16 (finite-key analysis): acquisition s × rep rate / scheduled pairs. "
                 "The default 1e10 is 600 s on the default station; a 10 s `labqfl run` there distils blocks of "
                 "1.67e8 (-n 1.67e8 predicts its rates)."),
        loss_db: str | None = typer.Option(
            None, "--loss-db",
            help="Extra loss added to BOTH arms [dB]: a value '3', a list '0,5,10' or a range 'start:stop:step'.",
        ),
        optimize: bool = typer.Option(False, "--optimize", help="Optimise intensities and probabilities per pair and point (~20 s each)."),
        plot: Path | None = typer.Option(None, "--plot", help="Write a PNG: key rate vs loss (loss sweep) or vs block size.", dir_okay=False),
        ec_efficiency: float = typer.Option(1.1, "--ec-efficiency", help="Error-correction efficiency f (leak = f·n·h(Q))."),
        write_config: Path | None = typer.Option(
            None, "--write-config", dir_okay=False,
            help="With --optimize: optimise the station's operating point for the block size (one setting per client "
                 "serving all its pairs; maximises the smallest pair's key rate) and write the station TOML here."),
        max_evaluations: int = typer.Option(200, "--max-evaluations", min=10,
                                            help="Model evaluations of the station optimiser (--write-config)."),
        min_decoy_prob: float = typer.Option(0.0, "--min-decoy-prob",
                                             help="With --write-config: send the decoy at least this often "
                                                  "(0: free; short blocks then drop it)."),
        min_y_prob: float = typer.Option(0.0, "--min-y-prob",
                                         help="With --write-config: P(Y basis) at least this (0: free)."),
        force: bool = typer.Option(False, "--force", help="Overwrite the --write-config or --plot file if it exists."),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Predicted secure key rate per pair (gains, QBER, phase-error bound, bits/pulse, bit/s)."""
        _check_floors(write_config, min_decoy_prob, min_y_prob)
        if write_config is not None:
            _check_write_config(optimize, write_config, block_size, force)
            _write_optimized_station(load_station_config(config), config, block_size, ec_efficiency, write_config,
                                     max_evaluations, as_json, (min_decoy_prob, min_y_prob))
            return

        _check_block_size(block_size)
        if not 1.0 <= ec_efficiency <= 2.0:
            raise fail(f"--ec-efficiency must lie in [1, 2], got {ec_efficiency}")
        if plot is not None and plot.suffix.lower() != ".png":
            raise fail(f"--plot {str(plot)!r}: expected a .png file name")
        if plot is not None and not force:  # like --write-config: no file replaced unasked (review s32 L5)
            from labqfl.serialize import refuse_existing

            refuse_existing(plot, "--plot")
        cfg = load_station_config(config)
        try:
            losses = parse_loss_spec(loss_db)
            pairs = _select_pairs(cfg, pair)
        except ValueError as exc:
            raise fail(str(exc)) from None
        n_pairs = len(cfg.pairs())
        rep = cfg.laser.rep_rate_hz
        sweep = "loss" if len(losses) > 1 else "block"
        points: list[tuple[tuple[str, str], float, float]] = [(pr, L, block_size) for pr in pairs for L in losses]
        if plot is not None and sweep == "block":
            points += [(pr, losses[0], n) for pr in pairs for n in BLOCK_SWEEP if n != block_size]
        results = _predict_points(cfg, points, optimize, ec_efficiency, as_json)
        main = [r for r in results if r["n_slots"] == block_size]
        data = {
            "station": cfg.name, "block_size": block_size, "n_pairs": n_pairs, "rep_rate_hz": rep,
            "ec_efficiency": ec_efficiency, "protocol": "CAL19 (npj QI 5, 64) + finite key CL21 (npj QI 7, 22); docs/protocol.md",
            "results": main,
        }
        if plot is not None:
            rows = results if sweep == "block" else main
            rows = sorted(rows, key=lambda r: (r["pair"], r["n_slots"], r["extra_loss_db"]))
            _plot(plot, rows, sweep, block_size, f"{cfg.name}: {n_pairs} pairs, {rep / 1e6:g} MHz"
                  + (" (optimised)" if optimize else ""))
            data["plot"] = str(plot)

        emit(data, as_json, lambda con: _render_keyrate(con, cfg, block_size, main, plot))
