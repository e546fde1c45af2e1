"""``labqfl distill [RECORDING.h5 | --live --duration S]``: run the post-processing pipeline.

Keys go to each node's key store (``--data-dir``, default the key store's data dir); the report
(per pair: sifted bits, error rates per basis, phase-error bound, leaked bits and efficiency f,
final key bits, secure key rate, time per stage) is printed, as JSON with ``--json``, and saved
as ``metrics.json`` in a run folder.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from labqfl.cli.common import CONFIG_OPTION, JSON_OPTION, console, emit, fail, handle_errors
from labqfl.errors import ConfigError


@handle_errors
def distill(
    recording: Path | None = typer.Argument(None, help="HDF5 recording (from `labqfl acquire --out`)", dir_okay=False),
    live: bool = typer.Option(False, "--live", help="Acquire live from the station (simulated by default)."),
    duration: float = typer.Option(1.0, "--duration", "-d", min=1e-6, help="Live acquisition time [s]."),
    config: Path | None = CONFIG_OPTION,
    engine: str = typer.Option("cascade", "--engine", "-e", help="Error correction: cascade or ldpc."),
    block_bits: int | None = typer.Option(
        None, "--block-bits", min=1000,
        help="Sifted bits per key block and pair (default: the block-size rule of labqfl.qkd.blocksize, from the "
             "key-rate model: as few blocks as the data allow, each expected to give key with a margin)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", envvar="LABQFL_DATA_DIR", file_okay=False,
                                         help="Key store directory (default: the key store's data dir)."),
    out: Path | None = typer.Option(None, "--out", help="Runs directory for the run folder (default ./runs)."),
    no_auth_bootstrap: bool = typer.Option(
        False, "--no-auth-bootstrap",
        help="Never write a simulated pre-shared authentication key: every pair's key stores must already hold "
             "authentication key (load the pair's real secret with `labqfl keys preshare`); else fail before "
             "distilling anything."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Distill keys from a recording or a live acquisition; write them to the nodes' key stores."""
    from labqfl.config import load_station_config
    from labqfl.keystore import KeyStore
    from labqfl.qkd.blocksize import BlockPlan, plan_blocks
    from labqfl.qkd.pipeline import Distiller, DistillSettings, KeyStoreSink
    from labqfl.qkd.types import ENGINES, acquisition_id
    from labqfl.runs import RunRecord
    from labqfl.station import Station, open_recording

    if (recording is None) == (not live):
        raise fail("give either a RECORDING.h5 or --live (not both, not neither)")
    if engine not in ENGINES:
        raise fail(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    rec: Any = None
    station: Station | None = None
    plan: BlockPlan | None = None
    if recording is not None:
        rec = open_recording(recording)
        cfg = rec.config if config is None else load_station_config(config)
        duration_s = rec.duration_s
        if block_bits is None:
            plan = plan_blocks(cfg, duration_s) if duration_s > 0 else None
            if plan is None or not plan.sufficient:
                rec.close()
                short = plan.shortfall(f"recording {recording}") if plan is not None else f"recording {recording} holds no data"
                raise fail(f"{short}; record longer (`labqfl acquire --duration S`) or force a block size with --block-bits")
        try:  # seeded clients' logs from the recording; CSPRNG clients' from their private folders here
            logs = {c: rec.client_log(c, data_dir) for c in cfg.client_names}
        except FileNotFoundError as exc:  # a CSPRNG client's private log is not on this machine
            rec.close()
            raise fail(str(exc)) from None
        blocks = rec.blocks()
        acq_id = acquisition_id(rec.config, rec.epoch) if rec.epoch >= 0 else None
        source = str(recording)
    else:
        cfg = load_station_config(config)
        if not cfg.all_simulated:
            raise ConfigError("live distillation needs the simulated time tagger and client logs; "
                              "record real acquisitions with their client logs and pass the recording")
        if block_bits is None:
            plan = plan_blocks(cfg, duration)
            if not plan.sufficient:
                raise fail(f"{plan.shortfall('--duration')}; use a longer --duration or force a block size with --block-bits")
        station = Station.open(cfg, base_dir=config.resolve().parent if config else None)
        try:
            blocks = station.time_tagger.stream(duration)
            logs = station.client_logs()
            acq_id = station.acquisition_id()
        except BaseException:
            station.close()
            raise
        duration_s = duration
        source = "live (simulated station)"
    total_slots = int(round(duration_s * cfg.laser.rep_rate_hz))
    if plan is not None:
        settings = plan.distill_settings(engine=engine, bootstrap_auth=not no_auth_bootstrap)
    else:
        assert block_bits is not None
        settings = DistillSettings(block_bits=block_bits, engine=engine, bootstrap_auth=not no_auth_bootstrap)
    stores: dict[str, KeyStore] = {}
    run: RunRecord | None = None
    try:
        stores = {n: KeyStore.for_node(n, data_dir) for n in cfg.client_names}
        sink = KeyStoreSink(stores)
        # built before the run folder: with --no-auth-bootstrap it refuses here, having written nothing
        d = Distiller(cfg, logs, sink, settings, acquisition_id=acq_id)
        run = RunRecord.create("distill", cfg, out)
        sink.run_id = run.name
        t0 = time.perf_counter()
        with console.status("distilling…") if not as_json else _null():
            for b in blocks:
                d.push(b)
            results = d.finish(total_slots)
        wall = time.perf_counter() - t0
    except BaseException:
        if run is not None:
            run.close()
        raise
    finally:
        for s in stores.values():
            s.close()
        if rec is not None:
            rec.close()
        if station is not None:
            station.close()
    data = {
        "source": source, "engine": engine, "duration_s": duration_s, "block_bits": settings.block_bits, "block_slots": settings.block_slots,
        "block_rule": plan.as_dict() if plan is not None else None,
        "wall_s": wall, "real_time_factor": duration_s / wall if wall > 0 else None,
        "slotting": vars(d.slotter.stats), "run": str(run.path),
        "pairs": {k: r.as_dict(duration_s) for k, r in results.items()},
    }
    import json

    from labqfl.serialize import to_jsonable

    (run.path / "metrics.json").write_text(json.dumps(to_jsonable(data), indent=2), encoding="utf-8")
    run.close()

    def render(con: Any) -> None:
        from rich.table import Table

        con.print(f"source: {source}; {duration_s:g} s of data in {wall:.2f} s; engine {engine}")
        con.print(plan.summary() if plan is not None else f"block size: {settings.block_bits:,} sifted bits on average (--block-bits)")
        from rich import box

        t = Table("pair", "sifted", "QBER X", "QBER Y", "e_ph ≤", "f", "final", "kbit/s", "aborted",
                  box=box.SIMPLE_HEAD, pad_edge=False)
        reasons: dict[str, list[str]] = {}
        for k, r in data["pairs"].items():
            er = r["error_rate"]

            def pct(v: Any) -> str:
                return "—" if v is None else f"{100 * v:.2f} %"

            rate = r["secure_key_rate_bps"]
            t.add_row(k, f"{r['sifted_bits']:,}", pct(er["X_key"]), pct(er["Y_test"]),
                      "—" if r["phase_error_bound"] is None else f"{r['phase_error_bound']:.3f}",
                      "—" if r["efficiency_f"] is None else f"{r['efficiency_f']:.3f}", f"{r['final_key_bits']:,}",
                      "—" if rate is None else f"{rate / 1e3:.1f}", f"{r['aborted_blocks']}/{r['blocks']}")
            for reason in r["abort_reasons"]:
                reasons.setdefault(reason, []).append(k)
        con.print(t)
        for reason, pairs in reasons.items():
            con.print(f"[yellow]aborted[/] ({', '.join(pairs)}): {reason}")
        if plan is None and reasons and any("phase-error" in x or "finite-size" in x for x in reasons):
            con.print("hint: these blocks are too small for finite-key key; leave out --block-bits to let the "
                      "block-size rule choose (labqfl.qkd.blocksize).")
        con.print(f"run folder: {run.path}")

    emit(data, as_json, render)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def register(app: typer.Typer) -> None:
    app.command("distill")(distill)
