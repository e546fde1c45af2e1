"""``labqfl distill [RECORDING.h5 | --live --duration S]``: run the post-processing pipeline.

Keys go to each node's key store (``--data-dir``, default the key store's data dir); the report
(per pair: sifted bits, error rates per basis, phase-error bound, leaked bits and efficiency f,
final key bits, secure key rate, time per stage) is printed, as JSON with ``--json``, and saved
as ``metrics.json`` in a run folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from labqfl.cli.common import (
    EC_ENGINE_HELP,
    JSON_OPTION,
    MIN_TEST_CLICKS,
    check_duration,
    check_runs_dir,
    console,
    emit,
    fail,
    handle_errors,
    judge_key,
    key_verdict_exit,
    pct_cell,
    print_path,
    print_table,
    rate_clicks_cell,
)
from labqfl.contracts.types import DEFAULT_ENGINE
from labqfl.errors import ConfigError

#: The note under ``distill``'s table: what the two error-rate columns are (physics review s34 F4).
RATE_NOTE = (
    "QBER X key: error rate of the key cell (both clients in X at the signal intensity) over the bits error "
    "correction compared. Y test: error rate of the Y-basis test data (both clients in Y at equal non-zero "
    "intensities: decoy-decoy only where the clients' signal intensities differ), with its clicks; n/a below "
    f"{MIN_TEST_CLICKS} clicks. A test rate is not the key QBER: equal pulses leaving two clients arrive unequal "
    "over unequal paths, which lowers the fringe contrast. e_ph ≤: the upper bound on the phase-error rate from "
    "the decoy estimates (docs/protocol.md (P6)), in % as the QBER. Counts: error_rate_counts in --json.")


@handle_errors
def distill(
    recording: Path | None = typer.Argument(None, help="HDF5 recording (from `labqfl acquire --out`)"),
    live: bool = typer.Option(False, "--live", help="Acquire live from the station (simulated by default)."),
    duration: float = typer.Option(1.0, "--duration", "-d", help="Live acquisition time [s]."),
    config: Path | None = typer.Option(
        None, "--config", "-c", dir_okay=False,
        help="Station TOML file (a recording: default the station it was acquired on, and a file whose physical layer "
             "or client randomness, intensities, intensity_probs or basis_x_prob differ is refused, since the keys rest "
             "on the acquisition's; --live: default the "
             "embedded simulated 4-client station)."),
    engine: str = typer.Option(DEFAULT_ENGINE, "--engine", "-e", help=EC_ENGINE_HELP),
    block_bits: int | None = typer.Option(
        None, "--block-bits", min=1000,
        help="Sifted bits per key block and pair (default: the block-size rule of labqfl.qkd.blocksize, from the "
             "key-rate model: as few blocks as the data allow, each expected to give key with a margin)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", envvar="LABQFL_DATA_DIR", file_okay=False,
                                         help="Key store directory (default: the key store's data dir)."),
    out: Path | None = typer.Option(None, "--out", help="Runs directory for the run folder (default $LABQFL_RUNS_DIR or ./runs)."),
    no_auth_bootstrap: bool = typer.Option(
        False, "--no-auth-bootstrap",
        help="Never write a simulated pre-shared authentication key: every pair's key stores must already hold "
             "authentication key (load the pair's real secret with `labqfl keys preshare`); else fail before "
             "distilling anything."),
    allow_incomplete: bool = typer.Option(
        False, "--allow-incomplete",
        help="Also distil a recording whose acquisition was interrupted: the whole blocks it holds."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Distill keys from a recording or a live acquisition; write them to the nodes' key stores."""
    from labqfl.app.distill import DistillOptions, DistillSession
    from labqfl.runs import RunRecord
    from labqfl.serialize import to_jsonable

    if (recording is None) == (not live):
        raise fail("give either a RECORDING.h5 or --live (not both, not neither)")
    if live:
        check_duration(duration)
    else:
        _check_not_a_run_output(recording)
    check_runs_dir(out)  # before a live acquisition, not after it (CLI review s32 L10)
    try:
        options = DistillOptions(engine=engine, block_bits=block_bits, bootstrap_auth=not no_auth_bootstrap)
    except ConfigError as exc:
        raise fail(f"--{exc}") from None
    src = _Source(recording, live, duration, config, data_dir, options, allow_incomplete=allow_incomplete)
    try:
        with DistillSession(src.cfg, src.settings, data_dir=data_dir, plan=src.plan) as session:
            session.check_auth()  # --no-auth-bootstrap: refused here, before any acquisition or run folder
            tags = src.start()
            if recording is not None:
                _refuse_distilled_again(session, tags, src, recording)  # before any work or run folder
            run = RunRecord.create("distill", src.cfg, out)
            session.run_id = run.name
            try:
                t0 = time.perf_counter()
                with console.status("distilling…") if not as_json else _null():
                    results = session.run(tags)
                assert results is not None  # no stop condition: the run always finishes
                wall = time.perf_counter() - t0
                provenance = session.provenance()  # what the stored blocks rest on (review s33 M4)
            except BaseException:
                run.close()
                raise
    finally:
        src.close()
    settings, plan, duration_s = src.settings, src.plan, src.duration_s
    data = {
        "source": src.source, "engine": engine, "duration_s": duration_s, "block_bits": settings.block_bits,
        "block_slots": settings.block_slots, "block_rule": plan.as_dict() if plan is not None else None,
        "wall_s": wall, "real_time_factor": duration_s / wall if wall > 0 else None,
        "slotting": vars(session.distiller.slotter.stats), "modulation": src.modulation(), "run": str(run.path),
        "pairs": {k: r.as_dict(duration_s) for k, r in results.items()},
        "provenance": provenance,
    }
    judge_key(data)  # no pair with key: exit 1 after the summary (review s32 M2(b)); some without: a warning
    (run.path / "metrics.json").write_text(json.dumps(to_jsonable(data), indent=2), encoding="utf-8")
    run.close()
    emit(data, as_json, lambda con: _render(con, data, plan, settings))
    key_verdict_exit(data)


def _refuse_distilled_again(session: Any, tags: Any, src: _Source, recording: Path) -> None:
    """Refuse a recording every block of which, for every pair, an earlier run distilled into these stores (the
    slot ledger, :meth:`labqfl.qkd.pipeline.Distiller.distilled_before`): the run would skip every block and store
    nothing. Review s38 user F6: it slotted and sifted the whole recording (39.6 s), printed the table and left a
    run folder before saying so."""
    from labqfl.cli.common import ALREADY_DISTILLED

    total = int(round(src.duration_s * src.cfg.laser.rep_rate_hz))  # as DistillSession.run finishes
    done = session.distilled_before(tags, total)
    n = len(src.cfg.pairs())
    if len(done) == n:
        raise fail(f"{recording}: {'all ' if n > 1 else ''}{n} pair{'s' if n > 1 else ''} {ALREADY_DISTILLED}")


def _check_not_a_run_output(path: Path | None) -> None:
    """Refuse a folder (a run folder) or a file that is not HDF5 and not named as a recording (a run's
    ``metrics.json``) in one line saying what ``distill`` reads and, where the folder holds one, which recording
    to give (review s36 F20: click said only "is a directory", and a metrics.json "file signature not found").
    A ``.h5`` file that is not HDF5 is left to :func:`labqfl.station.open_recording`'s "corrupt or truncated"."""
    if path is None or not path.exists():
        return
    wants = "distill reads an HDF5 recording written by `labqfl acquire --out FILE.h5`"
    folder = path if path.is_dir() else path.parent
    found = sorted(folder.glob("*.h5")) + sorted(folder.glob("*.hdf5"))
    run_folder = (folder / "metrics.json").is_file()
    here = (f"; this folder holds {'one' if len(found) == 1 else len(found)}: `labqfl distill {found[0]}`"
            + (" …" if len(found) > 1 else "")) if found else \
        " (a run folder holds no recording: the keys of `labqfl run` are in the stores already, see `labqfl keys " \
        "status`)" if run_folder else ""
    if path.is_dir():
        raise fail(f"{path} is a folder, not a recording; {wants}{here}")
    if path.suffix.lower() not in (".h5", ".hdf5"):
        import h5py

        if not h5py.is_hdf5(str(path)):
            what = "a run's summary" if path.name == "metrics.json" else "not an HDF5 file"
            raise fail(f"{path} is not a recording ({what}); {wants}{here}")


class _Source:
    """Where the tags and the clients' logs come from (:class:`labqfl.app.distill.TagSource`): a
    recording (seeded clients' logs from it, CSPRNG clients' from their folders here) or the
    Station's time tagger (live; the Station hands out the logs and the acquisition ID). Refuses
    too little data for the block-size rule first."""

    def __init__(self, recording: Path | None, live: bool, duration: float, config: Path | None,
                 data_dir: Path | None, options: Any, *, allow_incomplete: bool = False) -> None:
        from labqfl.app.distill import TagSource, check_recording_station, distill_settings
        from labqfl.config import load_station_config
        from labqfl.station import open_recording

        self.rec: Any = None
        self.station: Any = None
        self.acquisition: Any = None
        self.config = config
        self.tags: TagSource | None = None
        if recording is not None:
            self.rec = open_recording(recording, allow_incomplete=allow_incomplete)
            try:
                self.cfg = self.rec.config if config is None else load_station_config(config)
                if config is not None:  # the keys' provenance is the recording's (review s35 F1)
                    try:
                        check_recording_station(self.rec, self.cfg)
                    except ConfigError as exc:
                        raise ConfigError(f"--config {config}: {exc}") from None
                self.duration_s = float(self.rec.duration_s)
                self.settings, self.plan = distill_settings(
                    self.cfg, options, self.duration_s, what=f"recording {recording}",
                    hint="record longer (`labqfl acquire --duration S`) or force a block size with --block-bits")
                self.tags = TagSource.from_recording(self.rec, self.cfg, data_dir)
            except (ConfigError, FileNotFoundError) as exc:  # e.g. a CSPRNG client's private log is not here
                self.rec.close()
                raise fail(str(exc)) from None
            self.source = str(recording)
            return
        self.cfg = load_station_config(config)
        tt, sim = self.cfg.time_tagger, self.cfg.simulation
        lab_light = not tt.simulated and not sim.emulate_time_tagger
        if lab_light and any(c.pattern_generator is None for c in self.cfg.clients):
            # the clients' logs: the simulated loop's, or (a real tagger) the generators this process arms and streams
            raise ConfigError("live distillation with a real time tagger needs every client on a pattern generator "
                              "(this process arms and streams their choices); record the acquisition with the "
                              "clients' logs and pass the recording, or run the clients as nodes (docs/nodes.md)")
        try:
            self.settings, self.plan = distill_settings(
                self.cfg, options, duration, what="--duration",
                hint="use a longer --duration or force a block size with --block-bits")
        except ConfigError as exc:
            raise fail(str(exc)) from None
        self.duration_s = duration
        self.source = "live (real time tagger)" if lab_light else "live (simulated station)"

    def start(self) -> Any:
        """The tags to distil (live: open the station, arm every role and start streaming)."""
        if self.tags is not None:
            return self.tags
        from labqfl.app.acquire import Acquisition
        from labqfl.app.distill import TagSource
        from labqfl.app.station import open_station

        self.station = open_station(self.cfg, base_dir=self.config.resolve().parent if self.config else None)
        self.acquisition = Acquisition(self.station)  # closing the station leaves every instrument safe
        self.acquisition.arm()
        self.tags = TagSource.from_acquisition(self.acquisition, self.duration_s)
        return self.tags

    def modulation(self) -> dict[str, dict[str, int]]:
        """Per client with a pattern generator: the acquisition's frames and those its generator played
        and lost (the played-frames record of the recording, or of the live acquisition's streams);
        ``{}`` when no client streamed. The dark padding of a last upload past the data is not counted."""
        from labqfl.modulation import PlayedChoiceLog

        if self.acquisition is not None:
            return {c: {k: m[k] for k in ("frames", "played", "lost")} for c, m in self.acquisition.modulation.items()}
        logs = self.tags.logs if self.tags is not None else {}
        n_slots = int(round(self.duration_s * self.cfg.laser.rep_rate_hz))
        out: dict[str, dict[str, int]] = {}
        for c, lg in logs.items():
            if isinstance(lg, PlayedChoiceLog):
                n = -(-n_slots // lg.record.frame_slots)
                played = sum(1 for f in lg.record.played if f < n)
                out[c] = {"frames": n, "played": played, "lost": n - played}
        return out

    def close(self) -> None:
        if self.rec is not None:
            self.rec.close()
        if self.station is not None:
            self.station.close()


def source_line(data: dict[str, Any]) -> str:
    """The first line of ``distill``'s summary: where the data came from and how long this command took on it.
    ``wall_s`` is this command's own time (a live source: acquiring and distilling together), not the
    recording's acquisition time (review s39 user F8: "30 s of data in 72.24 s" read as either)."""
    live = str(data["source"]).startswith("live")
    what = "acquired and distilled" if live else "distilled"
    return (f"source: {data['source']}; {data['duration_s']:g} s of data, {what} in {data['wall_s']:.2f} s wall "
            f"(this command); engine {data['engine']}")


def f_note() -> str:
    """The note under ``distill``'s table for its f column, with report.html's range and mark (review s39 user F4:
    Cascade f of 1.10-1.14 stood bare in this table while the report marked them)."""
    from labqfl.report import CASCADE_F_USUAL, F_HIGH_MARK  # matplotlib: only when a table is drawn

    return (f"f: error-correction efficiency, leaked / (n·h(QBER)), 1 is the Shannon limit; Cascade's mean f on test "
            f"frames is {CASCADE_F_USUAL[0]}–{CASCADE_F_USUAL[1]} (the --engine help) and a block's f varies about "
            f"it; a Cascade f above that range is marked \"{F_HIGH_MARK}\", as in report.html.")


def _render(con: Any, data: dict[str, Any], plan: Any, settings: Any) -> None:
    from rich import box
    from rich.table import Table

    from labqfl.report import F_HIGH_MARK, f_is_high

    con.print(source_line(data))
    con.print(plan.summary() if plan is not None else f"block size: {settings.block_bits:,} sifted bits on average (--block-bits)")
    mod = data.get("modulation") or {}
    if mod:
        con.print("frames played/frames (lost): " + ", ".join(f"{c} {m['played']}/{m['frames']} ({m['lost']})"
                                                              for c, m in mod.items()))
    sl = data["slotting"]
    line = (f"slotting: {sl['sync_tags']:,} sync tags ({sl['dropped_syncs']:,} dropped, {sl['spurious_syncs']:,} spurious), "
            f"{sl['clicked_slots']:,} clicked slots")
    if sl.get("marker_tags"):
        line += (f"; frame markers {sl['marker_tags']:,} ({sl['missing_markers']:,} missing, "
                 f"{sl['spurious_markers']:,} spurious)")
    if relocks := sl.get("sync_relocks", 0):  # the chain moved to another grid: check the sync input
        line += f"; sync chain re-locked {relocks:,} time(s)"
    dropped = sl.get("dropped_slots_sync", 0) + sl.get("dropped_slots_lost_data", 0) + relocks
    line += f"; slots dropped: {sl.get('dropped_slots_sync', 0):,} (sync/markers), {sl.get('dropped_slots_lost_data', 0):,} (lost data)"
    con.print(line if not dropped else f"[yellow]{escape(line)}[/]", markup=bool(dropped))
    t = Table("pair", "slots", "dropped", "sifted", "QBER X key", "Y test (clicks)", "e_ph ≤", "f", "final", "kbit/s", "aborted",
              box=box.SIMPLE_HEAD, pad_edge=False)
    reasons: dict[str, list[str]] = {}

    for k, r in data["pairs"].items():
        er = r["error_rate"]
        rate = r["secure_key_rate_bps"]
        y_test = rate_clicks_cell(er["Y_test"], (r.get("error_rate_counts") or {}).get("Y_test"))
        t.add_row(k, f"{r['n_slots']:,}", f"{r['dropped_slots']:,}", f"{r['sifted_bits']:,}", pct_cell(er["X_key"]), y_test,
                  pct_cell(r["phase_error_bound"]),  # in % as QBER and the report (review s38 user F4)
                  "—" if (f := r["efficiency_f"]) is None
                  else f"{f:.3f}" + (f" {F_HIGH_MARK}" if f_is_high(f, data["engine"]) else ""),  # as report.html
                  f"{r['final_key_bits']:,}",
                  "—" if rate is None else f"{rate / 1e3:.1f}", f"{r['aborted_blocks']}/{r['blocks']}")
        for reason in r["abort_reasons"]:
            reasons.setdefault(reason, []).append(k)
    print_table(con, t)  # whole at any width: one record per pair where the table does not fit
    con.print(RATE_NOTE, markup=False, highlight=False)
    con.print(f_note(), markup=False, highlight=False)
    for reason, pairs in reasons.items():
        con.print(f"[yellow]aborted[/] ({escape(', '.join(pairs))}): {escape(reason)}", markup=True)
    skipped = {k: r["skipped_blocks"] for k, r in data["pairs"].items() if r.get("skipped_blocks")}
    if skipped:
        con.print("skipped, distilled by an earlier run of this recording (its key is in the stores, or its raw "
                  "bits were spent): " + ", ".join(f"{k} {n} block(s)" for k, n in skipped.items()))
    if (stored := data.get("provenance")) is not None and not stored["blocks"]:
        # review s36 F21: "key provenance (blocks stored …: none): no key block stored: nothing is claimed" was cryptic
        con.print("key provenance: this run stored no key block, so it makes no claim about any key (what the keys "
                  "already in the stores rest on: `labqfl keys status`)", markup=False)
        data = {**data, "provenance": None}  # nothing more to state
    if (pv := data.get("provenance")) is not None:  # (a summary written before review s33 has none)
        blocks = ", ".join(f"{k} {n}" for k, n in pv["blocks"].items()) or "none"
        refills = pv.get("auth_refill_blocks")
        auth = f"; with them {refills} authentication-key refill(s), not blocks of their own" if refills else ""
        con.print(f"key provenance (distilled blocks stored, by physical layer/randomness: {blocks}{auth}): "
                  f"{pv['security']}", markup=False)
    if plan is None and reasons and any("phase-error" in x or "finite-size" in x for x in reasons):
        con.print("hint: these blocks are too small for finite-key key; leave out --block-bits to let the "
                  "block-size rule choose (labqfl.qkd.blocksize).")
    print_path(con, "run folder", data["run"])


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def register(app: typer.Typer) -> None:
    app.command("distill")(distill)
