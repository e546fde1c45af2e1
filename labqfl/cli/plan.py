"""``labqfl plan``: key need, key rates, acquisition/distillation/training time and starving
pairs of a federated run, predicted from the station file before any acquisition
(:mod:`labqfl.planning`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from labqfl.cli.common import (
    CONFIG_OPTION,
    JSON_OPTION,
    check_duration,
    emit,
    fail,
    handle_errors,
    print_table,
)
from labqfl.planning import STARVATION_FACTOR


def _s(x: float | None) -> str:
    return "∞ (no key)" if x is None or not math.isfinite(x) else f"{x:.3g}"


def _blocks(plan: Any) -> str:
    """The range of the graph pairs' block sizes, e.g. "1.2e+07–3.4e+08"; one value where both ends print alike
    (review s40 user LOW-5: "1.67e+08–1.67e+08" for 166,658,048 and 166,709,760 slots)."""
    sizes = [p.block_slots for p in plan.pairs.values() if p.block_slots > 0]
    if not sizes:
        return "no"
    lo, hi = f"{min(sizes):.3g}", f"{max(sizes):.3g}"
    return hi if lo == hi else f"{lo}–{hi}"


def _pairs_title(shown: int, of: int) -> str:
    """The title of the plan's table of pairs: "all 6 graph pairs, slowest first" where it holds every pair (review
    s40 user LOW-5: "the 6 slowest graph pairs" of 6), else "the 12 slowest of 28 graph pairs"."""
    return f"all {of} graph pairs, slowest first" if shown >= of else f"the {shown} slowest of {of} graph pairs"


def render_plan(con: Any, plan: Any, max_rows: int = 12) -> None:
    """Rich rendering of a :class:`labqfl.planning.Plan` (also used by ``labqfl run``)."""
    con.print(Text(f"plan: {plan.task} ({plan.n_params} parameters), {plan.clients} clients, q = {plan.q}, "
                   f"{plan.rounds} rounds, graph {plan.graph}{f' k={plan.k}' if plan.graph == 'ring-k' else ''}"
                   f"{', self-masks' if plan.self_masks else ''} on {plan.station}", style="bold"))
    con.print(Text(f"key per graph pair and round: {plan.key_bits_per_pair_per_round:,} bits "
                   f"({key_breakdown(plan.key_bits_per_pair_per_round, plan.refs_tag_bits_per_pair_per_round)}); "
                   f"per round, all {len(plan.pairs)} pairs: {plan.key_bits_per_round:,} bits"))
    t = Table("pair", "share", "loss [dB]", "block [slots]", "key rate [bit/s]", "need/round [bit]",
              "acquisition/round [s]", "starving", title=_pairs_title(min(max_rows, len(plan.pairs)), len(plan.pairs)))
    slowest = sorted(plan.pairs.values(), key=lambda p: (math.isfinite(p.acquisition_s_per_round),
                                                          -p.acquisition_s_per_round, p.pair))
    for p in slowest[:max_rows]:
        name = p.pair
        t.add_row(name, f"{p.share:.3g}", f"{p.loss_db:.1f}", f"{p.block_slots:.3g}" if p.block_slots else "—",
                  _s(p.key_rate_bps), f"{p.need_bits_per_round:,}",
                  _s(p.acquisition_s_per_round), Text("yes", style="yellow") if p.starving else "")
    print_table(con, t)
    con.print(Text(f"acquisition: {_s(plan.acquisition_s_per_round)} s per round, {_s(plan.acquisition_s)} s for "
                   f"the run (blocks {_blocks(plan)} slots per pair); "
                   + (f"distillation ≈ {_s(plan.distill_s)} s; " if plan.distill_s > 0 else
                      "distillation: streamed with the acquisition; ")
                   + f"training ≈ {_s(plan.train_s)} s; "
                   + (f"node processes' start-ups and stops ≈ {_s(plan.nodes_s)} s; " if plan.nodes_s else "")
                   + f"total wall ≈ {_s(plan.total_wall_s)} s"))
    if plan.rounds_sustained is not None and plan.rounds_sustained < plan.rounds:
        con.print(Text(f"key shortfall: the acquisition holds key for {plan.rounds_sustained} of {plan.rounds} rounds "
                       f"on the slowest pair ({plan.limiting_pairs[0]}); training stalls after that", style="red"))
        _render_waits(con, plan)
    if plan.starving_pairs:
        # "starving" (planning._mark_starving): slower than STARVATION_FACTOR × the median pair, or keyless. Over a
        # continuous run they would set the round rate; here the acquisition (and any top-up) is sized for them,
        # so no round waits for them beyond the waits printed above.
        names = ", ".join(plan.starving_pairs[:10]) + (", …" if len(plan.starving_pairs) > 10 else "")
        con.print(Text(f"starving pairs ({len(plan.starving_pairs)}: acquisition per round over "
                       f"{STARVATION_FACTOR:g}× the median pair's, or no key): {names}; they set how much "
                       "acquisition the rounds need", style="yellow"))
    for what, how in plan.estimates.items():
        con.print(Text(f"  {what}: {how}", style="dim"))


def key_breakdown(per_pair: int, refs_tag: int) -> str:
    """Where a pair's key bits of a round go (review s36 F9: ``train`` and ``run`` spent 192 and 448 for one
    task): "192 masks + 256 refs tag key over nodes (docs/secure_aggregation.md §9)", or "masks only" where
    the engine spends no refs tag key (in process)."""
    if not refs_tag:
        return "masks only: in process, no refs tag key"
    return (f"{per_pair - refs_tag:,} masks + {refs_tag:,} refs tag key over nodes, docs/secure_aggregation.md §9")


def _render_waits(con: Any, plan: Any) -> None:
    """The waits for key a starving plan predicts: each top-up ``labqfl run`` will make, the run's
    station time, or the round the run stops at."""
    for t in plan.top_ups:
        if t["duration_s"] is None:
            continue
        short = ", ".join(sorted(t["deficit_bits"])[:5]) + (", …" if len(t["deficit_bits"]) > 5 else "")
        con.print(Text(f"  round {t['round']} waits for key: top-up acquisition of {t['duration_s']:.4g} s "
                       f"(short: {short})"))
    if plan.top_ups and plan.stops_at_round is None:
        con.print(Text(f"  station time of the run with its top-ups: {_s(plan.station_s)} s"))
    if plan.stops_at_round is not None:
        con.print(Text(f"  the run stops with key starvation before round {plan.stops_at_round} "
                       f"(station time {_s(plan.station_s)} s)", style="red"))


def register(app: typer.Typer) -> None:
    @app.command("plan")
    @handle_errors
    def plan_cmd(
        config: Path | None = CONFIG_OPTION,
        task: str = typer.Option("mnist-qnn", "--task", help="mnist-qnn | ntangled | magic | mnist-lenet5"),
        clients: int | None = typer.Option(None, "--clients", min=2,
                                           help="Clients N (must match the station; default: the station's)."),
        q: int = typer.Option(8, "--q", help="Bits per uploaded parameter (8, 16, 32)."),
        rounds: int = typer.Option(10, "--rounds", min=1, help="Federated rounds."),
        graph: str = typer.Option("all", "--graph", help="Mask graph: all, or ring-k with --k K, or ring-K (e.g. ring-8)."),
        k: int = typer.Option(0, "--k", help="Neighbours per client for --graph ring-k (even)."),
        self_masks: bool = typer.Option(False, "--self-masks/--no-self-masks",
                                        help="As labqfl run: add the share pads of Shamir self-masks."),
        threshold: int | None = typer.Option(
            None, "--threshold", min=1, help="As labqfl run: Shamir threshold t for --self-masks (default: a "
            "majority of each client's holders)."),
        colluders: int | None = typer.Option(
            None, "--colluders", metavar="C",
            help="As labqfl run: with --self-masks over nodes, the clients colluding with the server the consistency "
                 "stage tolerates (0 <= C < t; default t - 1). With --self-masks over nodes the plan says t, C, the "
                 "survivors every round needs, max(t, 2, floor((N + C)/2) + 1), and the dropouts it tolerates "
                 "(--json: consistency). docs/secure_aggregation.md §9."),
        duration: float | None = typer.Option(
            None, "--duration", help="Acquisition of the run [s] (labqfl run --duration; fixes the block size). "
            "Default: the duration the plan predicts."),
        eps_sec: float = typer.Option(1e-10, "--eps-sec", help="Secrecy parameter of the finite-key analysis."),
        wait_for_key: bool = typer.Option(
            True, "--wait-for-key/--no-wait-for-key", help="As labqfl run: a round without key waits for top-up "
            "acquisitions (predicted), or stops the run."),
        nodes: bool = typer.Option(
            True, "--nodes/--in-process", help="As labqfl run: the run goes over node processes (its default; "
            "the streamed acquisition + distillation and the Flower rounds at their measured cost over nodes) or "
            "in this process."),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Predict key bits per pair and round, acquisition time, total wall time and starving
        pairs of a federated run, from the key-rate model, before any acquisition."""
        from labqfl.config import load_station_config
        from labqfl.planning import make_plan

        if duration is not None:
            check_duration(duration)  # the one line `labqfl run` gives for a bad --duration
        if not (math.isfinite(eps_sec) and 0.0 < eps_sec < 1.0):
            raise fail(f"--eps-sec must be in (0, 1), got {eps_sec!r}")
        cfg = load_station_config(config)
        if duration is not None:  # the refusal `labqfl run --duration` gives (plan predicted a run there)
            from labqfl.app.distill import DistillOptions, distill_settings

            distill_settings(cfg, DistillOptions(eps_sec=eps_sec), duration, what="--duration",
                             hint="use a longer --duration")
        cons = _consistency(cfg, task, q, rounds, graph, k, self_masks, threshold, colluders, nodes)
        plan = make_plan(cfg, task, q, rounds, graph=graph, k=k, self_masks=self_masks, clients=clients,
                         duration_s=duration, eps_sec=eps_sec, wait_for_key=wait_for_key, nodes=nodes)

        def show(con: Any) -> None:
            render_plan(con, plan)
            if cons:
                con.print(cons["line"], soft_wrap=True)

        emit({**plan.as_dict(), **({"consistency": cons} if cons else {})}, as_json, show)


def _consistency(cfg: Any, task: str, q: int, rounds: int, graph: str, k: int, self_masks: bool,
                 threshold: int | None, colluders: int | None, nodes: bool) -> dict[str, Any] | None:
    """With self-masks over nodes, what ``labqfl run`` prints beside its plan: t, the colluders tolerated, the
    survivors each round needs and the dropouts it tolerates (:func:`labqfl.cli.run.consistency_of`; review s37
    F10: only visible once a run had started). ``--threshold``/``--colluders`` are refused as ``labqfl run`` refuses
    them (:meth:`labqfl.mainjob.JobSettings.validate`, the range of ``--colluders``), before any plan is made."""
    from labqfl.cli.run import consistency_of
    from labqfl.mainjob import JobSettings

    settings = JobSettings(task=task, q=q, rounds=rounds, graph=graph, k=k, self_masks=self_masks,
                           threshold=threshold, colluders=colluders, nodes=nodes)
    if threshold is not None or colluders is not None:
        settings.validate()
    return consistency_of(cfg, settings)
