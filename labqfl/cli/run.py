"""``labqfl run``: the main job — acquire, distil keys, train federatedly with them, report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.text import Text

from labqfl.cli.common import (
    CONFIG_OPTION,
    EC_ENGINE_HELP,
    JSON_OPTION,
    check_duration,
    console,
    emit,
    fail,
    handle_errors,
    pct_cell,
    print_path,
    progress_bar,
)
from labqfl.config import load_station_config
from labqfl.contracts.types import DEFAULT_DURATION_S, DEFAULT_ENGINE

#: ``--colluders`` (issue 16): the signed ``colluders`` of the specs a run over nodes trains under, as ``labqfl node
#: sign-spec``/``node train --colluders`` (:data:`labqfl.cli.node_train.COLLUDERS`); checked by the job's preflight
COLLUDERS_OPTION = typer.Option(
    None, "--colluders", metavar="C",
    help="With --self-masks over nodes: how many clients colluding with the server the consistency stage "
         "tolerates (signed in the spec; 0 <= C < t): each node unmasks only a survivor set that max(t, 2, "
         "floor((N + C)/2) + 1) survivors signed. Default t - 1 (the threshold's assumption); "
         "0 tolerates more dropouts (N = 3 or 4: one instead of none) but no colluder. `labqfl plan --self-masks "
         "--colluders C` prints the survivors needed and the dropouts tolerated. docs/secure_aggregation.md §9.")

#: ``--straggler-timeout`` (review s37 F6): the Flower spec's ``straggler_timeout_s`` of a run over nodes
STRAGGLER_OPTION = typer.Option(
    0.0, "--straggler-timeout", metavar="S",
    help="Over nodes, with --self-masks (refused without: a live client cut off after masking would have its "
         "late upload exposed): drop a client that has not answered a round's keys or mask stage S seconds after "
         "the latest reply (default 0: off; a client whose node died is then dropped when the SuperLink declares "
         "it gone, 38-60 s with Flower 1.42's heartbeats; a hung one after the 600 s stage timeout). Not applied "
         "at the consistency and unmask stages (a client lost there stops the round). A client that died while "
         "uploading its reply is reported after the SuperLink's 180 s object-push session, whatever S. Too short "
         "drops slow live clients. docs/nodes.md.")


def _refuse_options_with_resume() -> None:
    """``--resume`` continues a run with the settings in its folder: a setting given beside it was silently
    ignored (``--resume R --rounds 6`` trained the folder's rounds); now refused in one line naming it."""
    import click

    ctx = click.get_current_context()
    given = [f"--{name.replace('_', '-')}" for name in ctx.params
             if name not in ("resume", "as_json")
             and ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    if given:
        raise fail(f"--resume continues the run with the settings in its folder; {', '.join(given)} cannot change them "
                   "(start a new run to use other settings)")


@handle_errors
def run(
    config: Path | None = CONFIG_OPTION,
    duration: float = typer.Option(DEFAULT_DURATION_S, "--duration", help="Acquisition time [s] of simulated/real "
                                   "station time (10 s = 1.67e8 slots per pair on the default station; 60 s = 1e9 "
                                   "gives more key per second, as finite-key terms shrink, and takes longer; too short "
                                   "a duration for a positive-key block is refused with the duration needed)."),
    task: str = typer.Option("mnist-qnn", "--task", help="mnist-qnn | ntangled | magic | mnist-lenet5"),
    rounds: int = typer.Option(10, "--rounds", min=1, help="Federated rounds."),
    q: int = typer.Option(8, "--q", help="Bits per uploaded parameter (8, 16, 32)."),
    graph: str = typer.Option("all", "--graph", help="Mask graph: all, or ring-k with --k K, or ring-K (e.g. ring-8). Each "
                              "pair of the graph spends key every round. A station written by `labqfl station make "
                              "--graph` gives light only to that graph's pairs."),
    k: int = typer.Option(0, "--k", help="Neighbours per client for --graph ring-k (even)."),
    self_masks: bool = typer.Option(
        False, "--self-masks/--no-self-masks",
        help="Shamir-shared self-masks: a dropped client's late upload stays hidden (costs 2(q+1) key bits per "
             "parameter per pair more; the plan and the key check count it)."),
    threshold: int | None = typer.Option(
        None, "--threshold", min=1, help="Shamir threshold t for --self-masks (default: a majority of each client's holders)."),
    colluders: int | None = COLLUDERS_OPTION,
    straggler_timeout: float = STRAGGLER_OPTION,
    engine: str = typer.Option(DEFAULT_ENGINE, "--engine", help=EC_ENGINE_HELP),
    block_bits: int | None = typer.Option(None, "--block-bits", min=1000,
                                          help="Sifted bits per finite-key block (default: the block-size rule, "
                                               "labqfl.qkd.blocksize: as few blocks as the acquisition allows)."),
    eps_sec: float = typer.Option(1e-10, "--eps-sec", help="Secrecy parameter ε_sec of the finite-key analysis (docs/protocol.md)."),
    seed: int = typer.Option(0, "--seed", help="Seed of data, model and training (never of keys)."),
    out: Path | None = typer.Option(None, "--out", help="Runs directory (default $LABQFL_RUNS_DIR or ./runs)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", envvar="LABQFL_DATA_DIR", file_okay=False,
                                         help="Key store data directory (default: per-user labqfl data dir)."),
    no_auth_bootstrap: bool = typer.Option(
        False, "--no-auth-bootstrap",
        help="Never write a simulated pre-shared authentication key: every pair's key stores must already hold "
             "authentication key (`labqfl keys preshare`); else refused before a run folder is made."),
    nodes: bool = typer.Option(
        True, "--nodes/--in-process",
        help="Default --nodes: acquire and distil across node processes on loopback (optics, detector, one process "
             "per client; throwaway certificates; docs/nodes.md), then train across the federated-learning server "
             "node and one Flower SuperNode per client, each drawing its pads from its own client's key store only. "
             "--in-process: the single-process shortcut for tests and benchmarks (every party in this process; no "
             "message between parties crosses a network)."),
    wait_for_key: bool = typer.Option(
        True, "--wait-for-key/--no-wait-for-key",
        help="A round whose key the stores lack waits for a further acquisition + distillation on the station, sized "
             "by the planner for the remaining rounds (at most 8 per run; the waits are in metrics.json and the "
             "report). --no-wait-for-key: the round fails at once with 'key starvation'. Over nodes the top-ups run "
             "over node processes too, between Flower runs of the rounds the stores hold key for."),
    resume: Path | None = typer.Option(None, "--resume", file_okay=False,
                                       help="Continue an interrupted run folder (other options are taken from it)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Acquire → distil → key store → federated training masked with the distilled keys → report."""
    from labqfl.mainjob import JobSettings, MainJob

    if resume is not None:
        _refuse_options_with_resume()
    cfg = None if resume is not None else _checked_station(config, duration, engine, block_bits, eps_sec)
    with progress_bar(percent=True) as prog:
        bars: dict[str, Any] = {}

        def progress(phase: str, done: float, total: float, message: str) -> None:
            if phase not in bars:
                bars[phase] = prog.add_task(message, total=total)
            prog.update(bars[phase], completed=done, total=total, description=message)

        if resume is not None:
            job = MainJob.resume(resume, progress=progress)
        else:
            assert cfg is not None
            settings = JobSettings(duration_s=duration, task=task, rounds=rounds, q=q, engine=engine, seed=seed, eps_sec=eps_sec,
                                   block_bits=block_bits, graph=graph, k=k, self_masks=self_masks, threshold=threshold,
                                   colluders=colluders, straggler_timeout_s=straggler_timeout, nodes=nodes,
                                   data_dir=str(data_dir) if data_dir else None, bootstrap_auth=not no_auth_bootstrap,
                                   wait_for_key=wait_for_key)
            job = MainJob.create(cfg, settings, out, base_dir=config.resolve().parent if config else None, progress=progress)
        consistency = _show_start(job)
        metrics = job.run()
    _rebuild_missing_report(job.path, resumed=resume is not None)
    emit({**metrics, "run_dir": str(job.path), "report": str(job.path / "report.html"), **consistency}, as_json,
         lambda con: _render(con, metrics, job.path))


def _rebuild_missing_report(run_dir: Path, *, resumed: bool) -> None:
    """A resumed run that was complete is left as it is, but a deleted report is written anew from its
    metrics.json (review s40 user LOW-4)."""
    if resumed and not (run_dir / "report.html").exists():
        from labqfl.cli.report import rebuild_report

        rebuild_report(run_dir)
        print_path(console, "report.html was missing; rebuilt from metrics.json", run_dir / "report.html")


def _show_start(job: Any) -> dict[str, Any]:
    """The run folder and, before any acquisition, the job's key-aware plan (not for a resumed job whose
    acquisition was distilled: it goes on with training); with self-masks over nodes, the consistency stage's
    line. Returns ``{"consistency": …}`` for the JSON (:func:`_consistency`), or {}."""
    print_path(console, "run folder", job.path)
    if job.state.get("phases", {}).get("acquire") not in ("done", "distilled"):
        from labqfl.cli.plan import render_plan

        render_plan(console, job.key_plan())
    cons = _consistency(job)
    if cons:
        console.print(cons["line"], soft_wrap=True)
    return {"consistency": cons} if cons else {}


def _consistency(job: Any) -> dict[str, Any] | None:
    """With self-masks over nodes: :func:`consistency_of` the job (the job its specs are signed for: the folder's,
    as a resumed one may have recorded its own); None otherwise."""
    return consistency_of(job.cfg, job.settings, job.data_dir, job_id=str(job.state.get("fl_job_id") or ""))


def consistency_of(cfg: Any, settings: Any, data_dir: Path | None = None, job_id: str = "") -> dict[str, Any] | None:
    """With self-masks over nodes: the threshold t, the colluders c the signed spec tolerates (issue 16,
    ``--colluders``; ``colluders_default``: t − 1), the survivors each round needs and the dropouts it tolerates,
    and their line (:func:`labqfl.cli.node_train.consistency_line`: "self-masks: t = 2, 1 colluding client(s)
    tolerated (default t - 1), so every round needs 3 of 3 clients …") of the spec a job with ``settings``
    (:class:`~labqfl.mainjob.JobSettings`) trains under, for training job ``job_id`` ("": the derived one); None
    otherwise (in process there is no consistency stage). ``labqfl plan`` prints it too (review s37 F10); a
    ``colluders`` outside its range is refused (:func:`~labqfl.mainjob.check_colluders`), as by the job's preflight."""
    if not (settings.self_masks and settings.nodes):
        return None
    import dataclasses

    from labqfl.app.training import TrainingSetup
    from labqfl.cli.node_train import DROPOUT_STAGES, consistency_line
    from labqfl.keystore import default_data_dir
    from labqfl.mainjob import _training_settings, check_colluders, consistency_spec

    setup = TrainingSetup(_training_settings(cfg, settings, data_dir or default_data_dir()))  # opens no key store
    try:
        if settings.colluders is not None:
            check_colluders(consistency_spec(cfg, setup, None), settings.colluders)
        spec = dataclasses.replace(consistency_spec(cfg, setup, settings.colluders), job_id=job_id)
    finally:
        setup.close()
    need = spec.consistency_need()
    return {"threshold": spec.full_threshold(), "colluders": spec.tolerated_colluders(),
            "colluders_default": settings.colluders is None, "need": need, "clients": spec.clients,
            "dropouts_tolerated": spec.clients - need, "dropouts_tolerated_stages": list(DROPOUT_STAGES),
            "line": consistency_line(spec)}


def _checked_station(config: Path | None, duration: float, engine: str, block_bits: int | None,
                     eps_sec: float) -> Any:
    """The station of a new run, once its --duration is known to be usable: a number of seconds in
    (0, MAX_DURATION_S] and long enough for a positive-key block on every pair (the block-size rule,
    :func:`labqfl.app.distill.distill_settings`, as the job applies it). Refused before a run folder is
    made or a plan printed, in one line naming what is needed. Other bad options are left to the job's
    own checks."""
    from labqfl.app.distill import DistillOptions, distill_settings
    from labqfl.errors import ConfigError

    check_duration(duration)
    cfg = load_station_config(config)
    if block_bits is not None:
        return cfg
    try:
        opts = DistillOptions(engine=engine, eps_sec=eps_sec)
    except ConfigError:
        return cfg  # the job names the bad option itself
    try:
        distill_settings(cfg, opts, duration, what="--duration",
                         hint="use a longer --duration or force a block size with --block-bits")
    except ConfigError as exc:
        raise fail(str(exc)) from None
    return cfg


def _key_use_parts(train: dict[str, Any]) -> str:
    """Where a pair's key of a round went (review s36 F9: ``train`` said 192 bits, ``run`` 448, for one task):
    "; per pair and round 192 masks + 256 refs tag key" over nodes (the Flower rounds' ``tag_bits_per_pair``),
    "; per pair and round 192, masks only" in process; "" where the metrics do not say."""
    rounds = train.get("rounds") or []
    per_pair = rounds[-1].get("key_bits_per_pair") if rounds else None
    if not isinstance(per_pair, int):
        return ""
    tags = [r.get("tag_bits_per_pair") for r in (train.get("nodes") or {}).get("flower") or []]
    tag = tags[-1] if tags and isinstance(tags[-1], int) else 0
    if tag:
        return f"; per pair and round {per_pair - tag:,} masks + {tag:,} refs tag key, docs/secure_aggregation.md §9"
    return f"; per pair and round {per_pair:,}, masks only"


def _render(con: Any, metrics: dict[str, Any], path: Path) -> None:
    from labqfl.report import data_text

    con.print(f"[bold]labqfl run[/] {escape(str(metrics['run']))} — {escape(str(metrics['status']))}", markup=True)
    acq = metrics.get("acquisition") or {}
    if acq.get("path") == "nodes":
        con.print(f"  acquisition over node processes: start-up {acq['startup_s']['total_s']:.1f} s, "
                  f"acquisition + distillation {acq['acquisition_wall_s']:.1f} s, exit codes {acq['exit_codes']}")
    mod = acq.get("modulation") or {}
    if mod:
        con.print("  frames played/frames (lost): " + ", ".join(
            f"{c} {m['played']}/{m['frames']} ({m['lost']})" + (f" {escape(str(m['error']))}" if m.get("error") else "")
            for c, m in mod.items()))
    for name, p in (metrics.get("distill") or {}).get("pairs", {}).items():
        dropped = p.get("dropped_slots")
        con.print(f"  {name}: sifted {p['sifted_bits']:,} bits, QBER {pct_cell(p.get('qber_x'))}, "
                  f"final key {p['final_key_bits']:,} bits ({(p['secure_key_rate_bps'] or 0) / 1e3:.1f} kbit/s)"
                  + ("" if dropped is None else f", {dropped:,} slots dropped") + f" {p['status']}")
    t = metrics.get("train") or {}
    if t:
        data = data_text(t)  # the task's data and test set, as report.html (review s39 user F5)
        con.print(f"  training {t['task']}{f' ({data})' if data else ''}: final test accuracy {100 * t['final_test_accuracy']:.1f} % after "
                  f"{t['rounds_run']} rounds, {t['key_bits_total']:,} key bits used (key source: {t['key_source']}"
                  f"{_key_use_parts(t)})")
        # wrapped at words as every other line (review s36 F16: the ~600-character statement ran past the terminal)
        con.print(Text(f"  security: {t.get('security') or 'not stated (an older run)'}"))
        w = t.get("key_waits") or {}
        if w.get("rounds_waited"):
            con.print(f"  waited for key before {w['rounds_waited']} round(s) (first: round {w['first_wait_round']}): "
                      f"{w['top_ups']} top-up acquisition(s), {w['station_s_total']:.4g} s of station time, "
                      f"{w['wait_s_total']:.1f} s of wall; starved pairs: {', '.join(w['starved_pairs'])}")
    cmp_ = (metrics.get("plan") or {}).get("comparison")
    if cmp_:
        f = {k: "—" if cmp_[k] is None else f"{cmp_[k]:.3f}"
             for k in ("worst_key_use_ratio", "worst_key_rate_ratio", "worst_acquisition_ratio")}
        from labqfl.planning import wall_comparison

        wall = wall_comparison(metrics)
        wall_text = ("" if wall is None else f"; wall {wall['measured_s']:.1f} s measured / {wall['predicted_s']:.0f} s "
                     f"planned (×{wall['ratio']:.2f}; the plan's times are the development machine's, docs/scaling.md)")
        con.print(f"  plan vs run (measured/predicted, largest deviation over pairs): key use "
                  f"{f['worst_key_use_ratio']}, key rate {f['worst_key_rate_ratio']}, acquisition per round "
                  f"{f['worst_acquisition_ratio']}{wall_text}")
        kw = cmp_.get("key_waits") or {}
        if kw.get("rounds_waited") or kw.get("predicted_first_wait_round") is not None:
            first = kw.get("predicted_first_wait_round")
            planned = kw.get("predicted_station_s")
            con.print(f"  plan vs run, waits for key: first wait planned {f'round {first}' if first else 'none'}, "
                      f"run {'round ' + str(kw['measured_first_wait_round']) if kw.get('measured_first_wait_round') else 'none'}; "
                      f"station time planned {f'{planned:.4g} s' if planned is not None else '—'}, "
                      f"run {kw['measured_station_s']:.4g} s")
    print_path(con, "report", path / "report.html")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
