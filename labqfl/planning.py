"""Key-aware planning: before any acquisition, how much key a federated run needs, how fast the
station makes it, how long the run takes, and which pairs will starve (``labqfl plan``).

Everything follows from the station file, the task's model and the secure-aggregation settings:

* **Key need per pair and round** — every edge of the mask graph
  (:func:`labqfl.fl.masks.mask_graph`) spends ``SecAggConfig.key_bits_per_pair(n)`` bits per
  round: q·n for the one-time-pad mask, plus 2·(q+1)·n for the share pads with self-masks
  (:mod:`labqfl.fl.selfmask`); n = the task model's parameter count (:func:`labqfl.fl.tasks.make_model`).
* **Key rate per pair** — the finite-key model (:mod:`labqfl.qkd.keyrate`, through the block-size
  rule :func:`labqfl.qkd.blocksize.plan_blocks` that ``labqfl run`` uses for the same duration):
  ℓ(B_p)/B_p secure bits per slot of the pair at the pair's own block size B_p (the rule at the
  pair's share), times the pair's slots per second, share_p · rep_rate (share_p = w_p/W of the
  schedule, :class:`labqfl.contracts.schedule.PairSchedule`; rep_rate: the station's key-carrying slot
  rate, :func:`labqfl.config.fresh_slot_rate_hz`, 1/(n + 1) of the laser's with a Pulse Streamer duty
  cycle of n dark frames after each fresh one), less the authentication key each block
  refills (64·(3 or 2) bits; the measured rate is delivered key).
* **Acquisition time** — per pair and round: need / rate; per round: the slowest graph pair (all
  pairs acquire at once, in turns of the schedule); for the run: R rounds of it, but never less
  than the block-size rule's first key (no key exists before every pair has one block). Without
  a given duration, the plan chooses the shortest acquisition whose blocks (as large as that
  data allows) hold all R rounds' key, × :data:`KEY_MARGIN`, on every graph pair
  (:func:`_duration_for_rounds`).
* **Distillation time** — the pipeline's post-processing throughput on the development machine: sifted bits
  to correct over :data:`DISTILL_SIFTED_BITS_PER_S` (measured, docs/scaling.md; override
  ``distill_bps``).
* **Training time** — R rounds × the task's seconds per round on the development machine (× N for the
  quantum-data tasks, whose clients each hold their own samples; :data:`TRAIN_ROUND_COST`,
  measured, docs/scaling.md; override ``train_s_per_round``).
* **Starvation** — a graph pair whose acquisition time per round exceeds the median pair's by
  more than :data:`STARVATION_FACTOR`, or that makes no key at all (or is not scheduled), stalls
  every round: training waits for its key (``labqfl train --keys qkd`` waits or fails there).
* **Waits for key** — with a given duration that holds key for fewer rounds than asked
  (``rounds_sustained``), the top-ups ``labqfl run`` will wait for (:func:`predict_top_ups`); the
  run's station time ``station_s`` is the duration plus theirs, and the distillation and total wall
  time are those of ``station_s``. With ``wait_for_key`` off the run stops at the first round
  without key (``stops_at_round``).

:func:`compare` puts a plan next to what a ``labqfl run`` measured (its metrics.json).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from labqfl.config import MAX_CLIENTS, StationConfig, fresh_slot_rate_hz
from labqfl.errors import ConfigError

#: Sifted bits per second through the whole post-processing (slotting, two-party sifting,
#: reconciliation, verification, estimation, amplification, delivery; Cascade), measured on this
#: 2-core machine while other jobs shared it: the N = 4 run of docs/scaling.md (2.5e6 sifted bits,
#: 27 CPU s in those stages).
DISTILL_SIFTED_BITS_PER_S = 1.0e5
#: Seconds of one training round (local training + masking + aggregation), measured on this
#: machine shared with other jobs (`labqfl train --clients 4 --rounds 2`, second round;
#: docs/scaling.md), as (seconds, per_client): the MNIST tasks split the whole training set among
#: the clients, so a round costs the same at any N (per_client False: seconds per round); the
#: quantum-data tasks give every client its own ``samples_per_client`` states (per_client True:
#: seconds per client and round). mnist-qnn: 0.06 CPU s and 0.09–0.2 s of wall per round with a
#: warm Numba cache (issue 22 sweeps, docs/scaling.md; the earlier 1.8 s predates the Numba QNN path).
TRAIN_ROUND_COST: dict[str, tuple[float, bool]] = {
    "mnist-qnn": (0.2, False), "mnist-lenet5": (55.7, False), "ntangled": (0.52, True), "magic": (0.17, True),
}
#: Over node processes (``labqfl run``'s default path) the acquisition and its distillation are one
#: streamed phase: sifted bits per wall second of that phase, the simulated optical layer included,
#: measured in default ``labqfl run``\ s on the 2-core Intel Xeon development machine (2026-12-06:
#: ≈ 1.29e7 sifted bits in 8.5–9.6 s of the nodes' acquisition, ``acquisition.acquisition_wall_s``;
#: the slowest of four runs; 4.4e5 on a Zen 3 with the code of 2026-12-04, 7.76e7 bits in 175.5 s;
#: docs/scaling.md). The plan's ``distill_s`` over nodes is that phase's wall time beyond the station
#: time (never below 0).
NODE_STREAM_SIFTED_BITS_PER_S = 1.35e6
#: Over node processes: starting and stopping them, on top of the phases — the QKD network (the
#: launcher's warm-up, optics, detector and client nodes listening: 5.2–5.5 s; stop 0.24 s) and the FL
#: network (server node and SuperNodes: 10.9–11.5 s; stop 1.3 s), measured in the same runs.
NODE_PROCESSES_S = 18.0
#: What a federated round costs over the Flower nodes on top of the task's own round
#: (:data:`TRAIN_ROUND_COST`): the SuperNodes' pulls, a forked ClientApp per message (keys, mask;
#: setup and end once per run), the tunnels and TLS, the run's ServerApp start amortised over its
#: rounds. Was 6.6 s (68.4 s for 10 mnist-qnn rounds in a quiet default run), then 3.2 s after the
#: latency cuts of issue 18 item 3 (docs/nodes.md; 2026-12-04). Since the next round's keys message
#: ends the previous round (no end message between rounds, 2026-12-06) 10 rounds took 24.4 and
#: 26.4 s in ``docs/scripts/flower_round_overhead.py`` (server node + 4 SuperNodes, csprng keys; the
#: tree before: 31.4 and 33.4 s between them) and 23.6 / 24.1 / 26.2 s in default ``labqfl run``\ s
#: on the 2-core Intel Xeon: ≈ 2.4 s a round, the task's own 0.2 s included.
NODE_ROUND_OVERHEAD_S = 2.2
#: A pair needing more than this many times the median pair's acquisition time is starving.
STARVATION_FACTOR = 2.0
#: Headroom of the acquisition the plan chooses (no --duration): it must hold this many times all
#: rounds' key on every graph pair in the model. Measured runs deliver 0.85–0.97 of the model's key
#: at N = 4 and 16 (docs/scaling.md; the model over-counts sifted bits by ~5–10 %); without
#: headroom a LeNet-5 round on the N = 4 ring-2 station starved by 2.8 % (479 963 of 493 648 bits).
KEY_MARGIN = 1.15


@dataclass
class PairPlan:
    """The plan of one mask-graph pair."""

    pair: str
    scheduled: bool
    share: float  # fraction of the laser's slots
    loss_db: float  # total loss of the two arms (η_cw · η_ccw), dB
    key_bits_per_slot: float  # secure bits per slot of the pair at the rule's block size
    key_rate_bps: float  # secure bits per second of acquisition
    need_bits_per_round: int
    acquisition_s_per_round: float  # need / rate (inf: no key)
    starving: bool = False
    block_slots: float = 0.0  # the pair's block size [slots of the pair] (0: no key in the model)

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in self.__dict__.items()}


@dataclass
class Plan:
    """A run's predicted key budget and timing (module docstring)."""

    station: str
    task: str
    n_params: int
    clients: int
    q: int
    rounds: int
    graph: str
    k: int
    self_masks: bool
    rep_rate_hz: float
    block_slots: int
    first_key_s: float
    key_bits_per_pair_per_round: int
    key_bits_per_round: int
    pairs: dict[str, PairPlan]
    acquisition_s_per_round: float
    acquisition_s: float
    distill_s: float
    train_s: float
    total_wall_s: float
    limiting_pairs: list[str]
    starving_pairs: list[str]
    #: with a given --duration: rounds whose key that acquisition holds on every graph pair (training
    #: stalls after them); None when the plan chose the duration
    rounds_sustained: int | None = None
    estimates: dict[str, str] = field(default_factory=dict)
    #: with a given --duration that holds fewer than all rounds' key: the top-up acquisitions the run
    #: will wait for (:func:`predict_top_ups`: round, duration_s, short pairs' deficits and predicted key)
    top_ups: list[dict[str, Any]] = field(default_factory=list)
    #: station time of the whole run: the acquisition, plus the predicted top-ups when it starves
    #: (up to ``stops_at_round``); the run measures the same (``acquire.station_s_total``)
    station_s: float | None = None
    #: the round before which the run stops with key starvation (None: every round runs): with
    #: ``wait_for_key`` off, the first round the acquisition lacks key for; with it, the round of a
    #: predicted top-up that cannot feed a short pair (no key in the model at any length)
    stops_at_round: int | None = None
    #: over node processes: their start-ups and stops (:data:`NODE_PROCESSES_S`), in ``total_wall_s``
    nodes_s: float = 0.0
    #: of ``key_bits_per_pair_per_round``, the master's refs tag key over nodes (:data:`REFS_TAG_BITS
    #: <labqfl.fl.flower.keys.REFS_TAG_BITS>`; 0 in process): the rest are the masks (review s36 F9)
    refs_tag_bits_per_pair_per_round: int = 0

    @property
    def duration_s(self) -> float:
        """Acquisition duration that gives every graph pair the key of all rounds."""
        return self.acquisition_s

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "pairs"}
        d["pairs"] = {k: v.as_dict() for k, v in self.pairs.items()}
        for k, v in list(d.items()):
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None
        return d


def _loss_db(cfg: StationConfig, a: str, b: str) -> float:
    """Loss of the pair's two arms together [dB], finite however lossy the loop: beyond ~3000 dB an arm's
    transmission underflows to 0, so the loop is then evaluated with every loss in dB scaled down and
    the result scaled back up (dB add; CLI review s32 L7: a 10^6 km loop showed 'inf dB')."""
    from labqfl.contracts.channel_model import transmittances

    e_cw, e_ccw = transmittances(cfg, a, b)
    if e_cw > 0 and e_ccw > 0:
        return -10.0 * (math.log10(e_cw) + math.log10(e_ccw))
    L = cfg.loop
    total_db = L.fiber_loss_db_per_km * sum(L.segments_km) + sum(c.insertion_loss_db for c in cfg.clients) + L.node_loss_db
    f = 100.0 / total_db  # > 0 here; each arm then loses at most 100 dB
    small = cfg.model_copy(update={
        "loop": L.model_copy(update={"fiber_loss_db_per_km": L.fiber_loss_db_per_km * f, "node_loss_db": L.node_loss_db * f}),
        "clients": [c.model_copy(update={"insertion_loss_db": c.insertion_loss_db * f}) for c in cfg.clients]})
    e_cw, e_ccw = transmittances(small, a, b)
    return -10.0 * (math.log10(e_cw) + math.log10(e_ccw)) / f


def _delivered(key_bits: float, first: bool) -> float:
    """Key a block delivers: its final key less the authentication key the pipeline takes back from
    it to refill the pair's ``auth`` pool (what the block's tags used: 3·64 bits per lane on a pair's first
    block, 2·64 after, :data:`~labqfl.qkd.authentication.DEFAULT_AUTH_LANES` lanes; :mod:`labqfl.qkd.pipeline`),
    never below 0."""
    from labqfl.qkd.authentication import DEFAULT_AUTH_LANES
    from labqfl.qkd.pipeline import _auth_bits_per_block

    return max(key_bits - _auth_bits_per_block(DEFAULT_AUTH_LANES, first=first), 0.0) if key_bits > 0 else 0.0


def _cut_into_blocks(cfg: StationConfig, pair: tuple[str, str], bp: Any, n_slots: float, params: Any) -> float:
    """Key bits per slot that a pair with ``n_slots`` slots in the acquisition delivers, cut as the
    pipeline cuts them: full blocks of the pair's own ``block_slots`` (the rule's, at the pair's
    schedule share) and a final rest that is distilled only if it holds the pair's
    ``min_final_bits`` sifted bits (:class:`labqfl.qkd.pipeline.DistillSettings`); each block less
    the authentication key it refills (:func:`_delivered`)."""
    from labqfl.contracts.channel_model import pair_channel
    from labqfl.qkd.keyrate import predict_pair

    B = float(bp.block_slots)
    full = math.floor(n_slots / B + 1e-9)
    rest = n_slots - full * B
    if rest <= 1e-6 * B + 2:  # the rule's own cut: whole blocks
        rest = 0.0
    elif B - rest <= 1e-6 * B + 2:
        full, rest = full + 1, 0.0
    key = sum(_delivered(bp.expected_key_bits, first=i == 0) for i in range(min(full, 2)))
    key += max(full - 2, 0) * _delivered(bp.expected_key_bits, first=False)
    if rest >= 1000 and rest * bp.sifted_per_slot >= bp.min_final_bits:
        pred = predict_pair(pair_channel(cfg, *pair), rest, 1, fresh_slot_rate_hz(cfg), params,
                            with_asymptotic=False)
        key += _delivered(max(pred.report.key_length_bits, 0), first=full == 0)
    return key / n_slots if n_slots > 0 else 0.0


def key_bits_per_pair_per_round(secagg: Any, n_params: int, nodes: bool) -> int:
    """Key bits a mask-graph pair spends per round: the mask (and self-mask share pads,
    :meth:`~labqfl.fl.secure.SecAggConfig.key_bits_per_pair`), plus over nodes (the Flower engine) the
    master's refs tag key (:data:`~labqfl.fl.flower.keys.REFS_TAG_BITS`, docs/secure_aggregation.md §9)."""
    from labqfl.fl.flower.keys import REFS_TAG_BITS

    return int(secagg.key_bits_per_pair(n_params)) + (REFS_TAG_BITS if nodes else 0)


def make_plan(cfg: StationConfig, task: str, q: int, rounds: int, *, graph: str = "all", k: int = 0,
              self_masks: bool = False, clients: int | None = None, duration_s: float | None = None,
              eps_sec: float = 1e-10, distill_bps: float = DISTILL_SIFTED_BITS_PER_S,
              train_s_per_round: float | None = None, wait_for_key: bool = True, nodes: bool = False) -> Plan:
    """The plan of ``rounds`` rounds of ``task`` on station ``cfg`` (module docstring).

    ``duration_s``: the acquisition the run will make (``labqfl run --duration``); it fixes the
    block-size rule's block size. ``None``: the duration the plan itself predicts (two passes:
    the rule for an open-ended stream, then for the predicted duration).

    With a ``duration_s`` that holds fewer than ``rounds`` rounds' key: ``wait_for_key`` (``labqfl
    run``'s default) predicts the top-ups the run will wait for (:func:`predict_top_ups`), and the
    run's station time, distillation and total wall time include them; without it (``labqfl run
    --no-wait-for-key``) the run stops before round ``rounds_sustained`` + 1 (``stops_at_round``),
    and only the rounds before it are trained.

    ``nodes``: the run goes over node processes (``labqfl run``'s default): the streamed acquisition and
    distillation at :data:`NODE_STREAM_SIFTED_BITS_PER_S` (``distill_s`` is what that phase takes beyond the
    station time) and every round :data:`NODE_ROUND_OVERHEAD_S` longer."""
    from labqfl.contracts.schedule import PairSchedule
    from labqfl.fl.secure import SecAggConfig
    from labqfl.fl.tasks import make_model
    from labqfl.qkd.estimation import SecurityParameters

    names = cfg.client_names
    _check_plan_args(cfg, task, rounds, q, clients, duration_s, distill_bps)
    try:
        secagg = SecAggConfig(q=q, graph=graph, k=k, self_masks=self_masks)
        graph_pairs = secagg.pairs(names)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    n_params = int(make_model(task).n_params)
    need = key_bits_per_pair_per_round(secagg, n_params, nodes)
    sched = PairSchedule.from_config(cfg)
    params = SecurityParameters(eps_sec=eps_sec).with_intensity_rel_uncertainty(cfg.intensity_rel_uncertainty())
    rep = float(cfg.laser.rep_rate_hz)

    block, pairs, acq_round = _plan_blocks_and_pairs(cfg, duration_s, rounds, graph_pairs, sched, params, need)
    # no key before the rule's blocks are full: the run lasts at least its duration (given or chosen)
    first = block.duration_s if block.duration_s is not None else (
        block.first_key_s if math.isfinite(block.first_key_s) else 0.0)
    acq_total = max(acq_round * rounds, first) if math.isfinite(acq_round) else math.inf
    order = _mark_starving(pairs)
    sustained = None
    top_ups: list[dict[str, Any]] = []
    station = acq_total
    stops_at: int | None = None
    if duration_s is not None:
        sustained = min((math.floor(p.key_rate_bps * duration_s / need + 1e-9) if need > 0 else 0
                         for p in pairs.values()), default=0)
        if sustained < rounds and need > 0 and wait_for_key:  # the run waits for top-ups (docs/scaling.md)
            top_ups = predict_top_ups(cfg, {n: p.key_rate_bps * duration_s for n, p in pairs.items()}, need, rounds,
                                      eps_sec=eps_sec)
            # a top-up that cannot feed a short pair is never acquired: the run stops there at once
            station = duration_s + sum(float(t["duration_s"]) for t in top_ups if t["duration_s"] is not None)
            stops_at = next((int(t["round"]) for t in top_ups if t["duration_s"] is None), None)
        elif sustained < rounds and need > 0:  # --no-wait-for-key: the round without key stops the run
            station, stops_at = float(duration_s), sustained + 1
    # the run's station time (with a given duration: the acquisition and the top-ups it waits for) is
    # what gets distilled; only the rounds before a stop are trained
    run_acq = station if duration_s is not None else acq_total
    distill_s = _phase_distill_seconds(cfg, sched, run_acq, distill_bps, nodes)
    cost, per_client = TRAIN_ROUND_COST[task]
    if train_s_per_round is not None:
        cost, per_client = float(train_s_per_round), False
    trained = rounds if stops_at is None else stops_at - 1
    train_s = trained * (cost * (len(names) if per_client else 1) + (NODE_ROUND_OVERHEAD_S if nodes else 0.0))
    nodes_s = NODE_PROCESSES_S if nodes else 0.0
    return Plan(
        station=cfg.name, task=task, n_params=n_params, clients=len(names), q=q, rounds=rounds,
        graph=secagg.graph, k=secagg.k, self_masks=self_masks, rep_rate_hz=rep, block_slots=block.block_slots,
        first_key_s=block.first_key_s, key_bits_per_pair_per_round=need, key_bits_per_round=need * len(graph_pairs),
        pairs=pairs, acquisition_s_per_round=acq_round, acquisition_s=acq_total, distill_s=distill_s,
        train_s=train_s, total_wall_s=run_acq + distill_s + train_s + nodes_s,
        limiting_pairs=[p.pair for p in order[:5]], starving_pairs=[p.pair for p in order if p.starving],
        rounds_sustained=sustained,
        estimates=_plan_estimates(task, distill_bps, cost, per_client, nodes),
        top_ups=top_ups, station_s=station, stops_at_round=stops_at, nodes_s=nodes_s,
        refs_tag_bits_per_pair_per_round=need - int(secagg.key_bits_per_pair(n_params)),
    )


#: Top-up acquisitions a run makes at most before it stops (``JobSettings.max_top_ups``'s default).
MAX_TOP_UPS = 8


def predict_top_ups(cfg: StationConfig, first_key_bits: Mapping[str, float], need: int, rounds: int, *,
                    eps_sec: float = 1e-10, max_top_ups: int = MAX_TOP_UPS) -> list[dict[str, Any]]:
    """The top-up acquisitions a run whose first acquisition gives each graph pair
    ``first_key_bits`` (model) will wait for, as ``labqfl run`` makes them
    (:meth:`labqfl.mainjob.MainJob._wait_for_key`): rounds run while every pair holds ``need`` bits;
    before the first round some pair lacks, one top-up (:func:`plan_top_up`) for the key all remaining
    rounds lack on every pair, which adds its predicted key to the short pairs; again until all
    ``rounds`` are fed, at most ``max_top_ups`` times. Each entry: ``round`` (the one that waits),
    ``duration_s`` (station time; None: a short pair makes no key in the model, the run stops there),
    ``deficit_bits`` and ``predicted_key_bits`` per short pair."""
    held = {p: float(b) for p, b in first_key_bits.items()}
    out: list[dict[str, Any]] = []
    done = 0
    while done < rounds and len(out) < max_top_ups:
        can = min((math.floor(h / need + 1e-9) for h in held.values()), default=rounds)
        if done + can >= rounds:
            break
        done += can
        for p in held:
            held[p] -= can * need
        left = rounds - done
        deficit = {p: math.ceil(need * left - h - 1e-9) for p, h in held.items() if need * left - h > 1e-9}
        tp = plan_top_up(cfg, deficit, eps_sec=eps_sec)
        out.append({"round": done + 1, "duration_s": tp.duration_s if math.isfinite(tp.duration_s) else None,
                    "deficit_bits": tp.deficit_bits,
                    "predicted_key_bits": tp.predicted_key_bits, "no_key_pairs": tp.no_key_pairs})
        if tp.no_key_pairs or not math.isfinite(tp.duration_s):
            break
        for p, b in tp.predicted_key_bits.items():
            held[p] += b
    return out


def _check_plan_args(cfg: StationConfig, task: str, rounds: int, q: int, clients: int | None,
                     duration_s: float | None, distill_bps: float) -> None:
    """One clear :class:`ConfigError` for a bad :func:`make_plan` argument."""
    from labqfl.contracts.types import duration_problem
    from labqfl.fl.quantize import q_problem
    from labqfl.fl.tasks import TASK_DEFAULTS

    names = cfg.client_names
    if clients is not None and clients != len(names):
        hint = (f"make a station of {clients} clients with `labqfl station make --clients {clients}`"
                if 2 <= clients <= MAX_CLIENTS else f"a station holds 2 to {MAX_CLIENTS} clients")
        raise ConfigError(f"--clients {clients} but station {cfg.name!r} has {len(names)} clients; expected "
                          f"{len(names)} ({hint})")
    if task not in TASK_DEFAULTS:
        raise ConfigError(f"task {task!r} unknown; expected one of {', '.join(TASK_DEFAULTS)}")
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {rounds}")
    if duration_s is not None and (problem := duration_problem(duration_s)) is not None:
        raise ConfigError(f"--duration {problem}")
    if (problem := q_problem(q)) is not None:
        raise ConfigError(f"--q {problem}")
    if not distill_bps > 0:
        raise ConfigError(f"distillation throughput must be > 0 sifted bits/s, got {distill_bps}")


def _pair_plans(cfg: StationConfig, pair_blocks: Mapping[str, Any], duration_s: float | None, graph_pairs: list[str],
                sched: Any, params: Any, need: int) -> dict[str, PairPlan]:
    """Every graph pair's plan at the block-size rule's blocks ``pair_blocks`` (per pair,
    :class:`labqfl.qkd.blocksize.PairBlockPlan`, for ``duration_s`` of data; None: open-ended): key
    per slot, key rate, and the acquisition time one round's ``need`` of key takes (slots: fresh ones, at
    the station's fresh slot rate)."""
    rep = fresh_slot_rate_hz(cfg)
    out: dict[str, PairPlan] = {}
    for name in graph_pairs:
        a, b = name.split("-")
        on = name in sched.names
        share = sched.share(name) if on else 0.0
        bp = pair_blocks.get(name) if on else None
        kps = rate = 0.0
        if bp is not None and bp.block_slots > 0:
            kps = _delivered(bp.expected_key_bits, first=False) / bp.block_slots
            rate = kps * rep * share
            if duration_s is not None and share > 0:  # the key of the pair's exact slots in the data
                n_slots = sched.slots_of_pair(name, round(duration_s * rep))
                kps = _cut_into_blocks(cfg, (a, b), bp, n_slots, params)
                rate = kps * n_slots / duration_s
        out[name] = PairPlan(pair=name, scheduled=on, share=share, loss_db=_loss_db(cfg, a, b),
                             key_bits_per_slot=kps, key_rate_bps=rate, need_bits_per_round=need,
                             acquisition_s_per_round=need / rate if rate > 0 else math.inf,
                             block_slots=float(bp.block_slots) if bp is not None else 0.0)
    return out


def _plan_blocks_and_pairs(cfg: StationConfig, duration_s: float | None, rounds: int, graph_pairs: list[str],
                           sched: Any, params: Any, need: int) -> tuple[Any, dict[str, PairPlan], float]:
    """The block-size rule's blocks, the pair plans and the acquisition time per round (the slowest
    pair's). Without ``duration_s``: the rule for an open-ended stream, then for the duration predicted."""
    from labqfl.qkd.blocksize import plan_blocks

    block = plan_blocks(cfg, duration_s, params=params)
    pairs = _pair_plans(cfg, block.pairs, block.duration_s, graph_pairs, sched, params, need)
    acq_round = max(p.acquisition_s_per_round for p in pairs.values())
    if duration_s is None and math.isfinite(acq_round) and block.sufficient:  # the rule for the duration predicted
        # every pair must fill one block of its own rule size, at its own schedule share, before any key
        # exists, and the data must hold every round's key on every graph pair at the blocks of that data
        d = _duration_for_rounds(cfg, block.pairs, graph_pairs, sched, params, KEY_MARGIN * need * rounds,
                                 start_s=_first_block_s(cfg, block, sched))
        if math.isfinite(d) and d > 0:
            block = plan_blocks(cfg, d, params=params)
            pairs = _pair_plans(cfg, block.pairs, block.duration_s, graph_pairs, sched, params, need)
            acq_round = max(p.acquisition_s_per_round for p in pairs.values())
    return block, pairs, acq_round


def _first_block_s(cfg: StationConfig, block: Any, sched: Any) -> float:
    """Seconds of data in which every scheduled pair's own slots fill its rule block (``block``: the
    rule for an open-ended stream): the schedule hands a pair its slots frame by frame, so
    ``needed_duration_s`` = N_rule / (share · rate) can end inside another pair's frame, short of the
    block, and the rule then refuses that duration (as :func:`plan_top_up` counts it)."""
    rate = fresh_slot_rate_hz(cfg)
    ends = [sched.slot_end(n, math.ceil(pp.rule_slots)) / rate for n, pp in block.pairs.items()
            if math.isfinite(pp.rule_slots)]
    return max([float(block.needed_duration_s), *ends])


def _key_of_slots(ch: Any, n_slots: float, bp: Any, params: Any) -> float:
    """Key that ``n_slots`` slots of one pair deliver when a timed acquisition holds exactly them: the
    block-size rule cuts them into as few equal blocks as memory allows
    (:func:`labqfl.qkd.blocksize.plan_blocks`: ⌈sifted / max(MAX_BLOCK_BITS, 2·min_final_bits)⌉
    blocks; ``bp``: the pair's :class:`labqfl.qkd.blocksize.PairBlockPlan`), each less the
    authentication key it refills (:func:`_delivered`)."""
    from labqfl.qkd.blocksize import MAX_BLOCK_BITS, _evaluate
    from labqfl.qkd.keyrate import DEFAULT_EC_EFFICIENCY

    k = max(1, math.ceil(bp.sifted_per_slot * n_slots / max(MAX_BLOCK_BITS, 2 * bp.min_final_bits)))
    per_block = float(max(_evaluate(ch, n_slots / k, params, DEFAULT_EC_EFFICIENCY)[0].key_length_bits, 0))
    return sum(_delivered(per_block, first=i == 0) for i in range(k))


def _duration_for_rounds(cfg: StationConfig, pair_blocks: Mapping[str, Any], graph_pairs: list[str], sched: Any,
                         params: Any, need_total: float | Mapping[str, float], start_s: float) -> float:
    """The shortest acquisition [s], not below ``start_s``, after which every graph pair holds
    ``need_total`` bits of key (all rounds' key; a mapping: each pair's own need) at the rule's
    blocks for an open-ended stream (``pair_blocks``: per pair, its
    :class:`labqfl.qkd.blocksize.PairBlockPlan`; the pairs missing or without key there are
    skipped). ``start_s``: e.g. :attr:`labqfl.qkd.blocksize.BlockPlan.needed_duration_s`, the
    data every pair needs for one block of its rule size.

    A timed acquisition distils each pair's slots in blocks as large as the data allows, so the
    key per slot grows with the duration (finite-key effects): the duration is searched per pair
    (bisection on the pair's slots, ~15 evaluations of the finite-key model, ~40 ms each) on the
    key of the pair's slots at that size (:func:`_key_of_slots`), not extrapolated from the rate
    of a rule-size block, which underrates a long acquisition (LeNet-5 on the default station:
    62 s from the rule-size rate against 9 s needed, docs/scaling.md)."""
    from labqfl.qkd.keyrate import station_pair_channel

    rep = fresh_slot_rate_hz(cfg)  # the pairs' fresh slots per second
    d = float(start_s)
    for name in graph_pairs:
        bp = pair_blocks.get(name) if name in sched.names else None
        if bp is None or bp.block_slots <= 0:
            continue  # no key in the model: starving whatever the duration (the plan says so)
        need = float(need_total[name] if isinstance(need_total, Mapping) else need_total)
        share = sched.share(name)
        a, b = name.split("-")
        ch = station_pair_channel(cfg, (a, b))
        lo = float(bp.rule_slots)
        if _key_of_slots(ch, lo, bp, params) >= need:
            continue  # one rule-size block holds every round's key
        hi = 2.0 * lo
        while _key_of_slots(ch, hi, bp, params) < need:
            lo, hi = hi, 2.0 * hi
            if hi * bp.sifted_per_slot > 1e13:  # > 10^13 sifted bits: no duration this side of years
                return math.inf
        while hi / lo > 1.0 + 1e-3:
            mid = math.sqrt(lo * hi)
            lo, hi = (lo, mid) if _key_of_slots(ch, mid, bp, params) >= need else (mid, hi)
        d = max(d, hi * (1.0 + 1e-3) / (rep * share))  # + the schedule's rounding of the pair's slots
    return d


@dataclass
class TopUpPlan:
    """A further acquisition that training waits for (``labqfl run``, issue 22): how long, and the
    key the model expects it to give each pair that lacks key.

    ``deficit_bits``: per short graph pair, the key the remaining rounds need beyond what its
    stores hold; ``duration_s``: the shortest acquisition whose blocks hold :data:`KEY_MARGIN` × that
    on every short pair in the finite-key model (and fill one rule block on every scheduled pair, so
    the block-size rule accepts it); ``predicted_key_bits``: the delivered key the model expects from
    it per short pair; ``no_key_pairs``: short pairs the model gives no key at any acquisition length
    (unscheduled, or beyond break-even): no top-up can feed them.
    """

    duration_s: float
    deficit_bits: dict[str, int]
    predicted_key_bits: dict[str, float]
    no_key_pairs: list[str]
    margin: float = KEY_MARGIN

    def as_dict(self) -> dict[str, Any]:
        return {"duration_s": self.duration_s if math.isfinite(self.duration_s) else None,
                "deficit_bits": dict(self.deficit_bits), "predicted_key_bits": dict(self.predicted_key_bits),
                "no_key_pairs": list(self.no_key_pairs), "margin": self.margin}


def plan_top_up(cfg: StationConfig, deficit_bits: Mapping[str, int], *, eps_sec: float = 1e-10,
                block_bits: int | None = None, margin: float = KEY_MARGIN) -> TopUpPlan:
    """The acquisition a starving run makes before it continues (:class:`TopUpPlan`).

    Same model as :func:`make_plan`: the block-size rule (:func:`labqfl.qkd.blocksize.plan_blocks`)
    for an open-ended stream gives the shortest duration in which every scheduled pair fills one
    rule block; from there a bisection per short pair on the key of its slots cut into the rule's
    blocks (:func:`_duration_for_rounds`) finds the shortest duration holding ``margin`` ×
    ``deficit_bits[pair]``. With a forced ``block_bits`` (``--block-bits``), also at least
    ``margin`` × one such block of sifted bits on every short pair. The duration is at least the first
    at which every pair's own slots fill its rule block, frame by frame
    (:meth:`labqfl.contracts.schedule.PairSchedule.slot_end`), and is rounded up to 4 significant digits.

    Cost: only the short pairs get the rule's finite-key evaluations
    (:func:`labqfl.qkd.blocksize.plan_pair_blocks`, at no data and at the chosen duration); every other
    scheduled pair needs only its rule size (:func:`labqfl.qkd.blocksize.rule_slots`, a break-even
    search cached per channel, already made by the run's own plan), and every finite-key evaluation is
    cached (:func:`labqfl.qkd.blocksize._evaluate`). The plan equals the one computed from
    :func:`labqfl.qkd.blocksize.plan_blocks` for the whole station
    (tests/mainjob/test_top_up_planner_fast.py).
    """
    from labqfl.contracts.schedule import PairSchedule
    from labqfl.qkd.blocksize import plan_pair_blocks, rule_slots
    from labqfl.qkd.estimation import SecurityParameters

    short = {p: int(b) for p, b in deficit_bits.items() if b > 0}
    params = SecurityParameters(eps_sec=eps_sec).with_intensity_rel_uncertainty(cfg.intensity_rel_uncertainty())
    sched = PairSchedule.from_config(cfg)
    rep = fresh_slot_rate_hz(cfg)  # the rule's slots are fresh slots
    # the rule for an open-ended stream, short pairs only (a pair's rule depends on nothing but its own data)
    bps = plan_pair_blocks(cfg, [p for p in short if p in sched.names], None, params=params, schedule=sched)
    no_key = sorted(p for p in short if p not in bps or bps[p].block_slots <= 0)
    keyed = [p for p in short if p not in no_key]
    if no_key or not keyed:
        return TopUpPlan(math.inf if no_key else 0.0, short, dict.fromkeys(short, 0.0), no_key, margin)
    # the first slot count at which the pairs' own slots fill their rule blocks (every scheduled pair's, so
    # that the rule accepts the duration; with --block-bits the short pairs'): the schedule hands a pair its
    # slots frame by frame, so rule_slots / (share · rep) can end inside another pair's frame, short of the block
    rules = ({n: rule_slots(cfg, n, params=params) for n in sched.names} if block_bits is None
             else {n: bps[n].rule_slots for n in keyed})
    start = max(sched.slot_end(n, math.ceil(r)) / rep for n, r in rules.items() if math.isfinite(r))
    if block_bits is not None:
        start = max(start, *(margin * block_bits / (bps[p].sifted_per_slot * rep * sched.share(p)) for p in keyed))
    d = _duration_for_rounds(cfg, bps, keyed, sched, params, {p: margin * short[p] for p in keyed}, start_s=start)
    if not math.isfinite(d):
        return TopUpPlan(math.inf, short, dict.fromkeys(short, 0.0), sorted(keyed), margin)
    step = 10.0 ** (math.floor(math.log10(d)) - 3)
    d = round(math.ceil(d / step - 1e-9) * step, 12)
    at_d = _pair_plans(cfg, plan_pair_blocks(cfg, keyed, d, params=params, schedule=sched), d, keyed, sched,
                       params, 1)
    return TopUpPlan(d, short, {p: at_d[p].key_rate_bps * d for p in keyed}, [], margin)


def _mark_starving(pairs: dict[str, PairPlan]) -> list[PairPlan]:
    """Mark the pairs slower than :data:`STARVATION_FACTOR` × the median acquisition time per round
    (or without key) as starving; return the pairs slowest first (those without key leading)."""
    finite = sorted(p.acquisition_s_per_round for p in pairs.values() if math.isfinite(p.acquisition_s_per_round))
    median = statistics.median(finite) if finite else math.inf
    for p in pairs.values():
        p.starving = (not math.isfinite(p.acquisition_s_per_round)
                      or p.acquisition_s_per_round > STARVATION_FACTOR * median)
    order = sorted(pairs.values(), key=lambda p: -p.acquisition_s_per_round if math.isfinite(
        p.acquisition_s_per_round) else -math.inf)
    return [p for p in pairs.values() if not math.isfinite(p.acquisition_s_per_round)] + [
        p for p in order if math.isfinite(p.acquisition_s_per_round)]


def _phase_distill_seconds(cfg: StationConfig, sched: Any, run_acq: float, distill_bps: float, nodes: bool) -> float:
    """The plan's ``distill_s``: in process the sifted bits over ``distill_bps``; over nodes what the
    streamed acquisition + distillation (at :data:`NODE_STREAM_SIFTED_BITS_PER_S`) takes beyond the
    station time ``run_acq``."""
    if not nodes:
        return _distill_seconds(cfg, sched, run_acq, distill_bps)
    stream_s = _distill_seconds(cfg, sched, run_acq, NODE_STREAM_SIFTED_BITS_PER_S)
    return max(stream_s - run_acq, 0.0) if math.isfinite(stream_s) else math.inf


def _distill_seconds(cfg: StationConfig, sched: Any, acq_total: float, distill_bps: float) -> float:
    """Distillation: every scheduled pair's sifted bits over the acquisition / ``distill_bps``."""
    from labqfl.contracts.types import KEY_BASIS, KEY_INTENSITY_INDEX

    k0, b0 = KEY_INTENSITY_INDEX, KEY_BASIS
    rep = fresh_slot_rate_hz(cfg)  # only fresh slots give sifted bits
    sifted = 0.0
    if math.isfinite(acq_total):
        from labqfl.contracts.channel_model import pair_channel
        from labqfl.qkd.keyrate import expected_counts

        for (a, b), name in zip(sched.pairs, sched.names, strict=True):
            per_slot = float(expected_counts(pair_channel(cfg, a, b), 1.0).clicks[k0, k0, b0, b0])
            sifted += per_slot * acq_total * rep * sched.share(name)
    return sifted / distill_bps if math.isfinite(acq_total) else math.inf


#: Where the plan's time constants come from: measured once on the development machine, not on the one running
#: the plan (review s36 F10); a run prints its own wall time next to the plan's (:func:`wall_comparison`).
DEV_MACHINE = "measured on the development machine, docs/scaling.md; not on this one"


def wall_comparison(metrics: dict[str, Any]) -> dict[str, float] | None:
    """The run's whole wall time against the plan's (``phases_s.total_s`` of a finished run's metrics against
    ``plan.predicted.total_wall_s``): ``{"measured_s", "predicted_s", "ratio"}`` (ratio = measured / predicted),
    None where either is missing or the plan predicts no finite time."""
    measured = (metrics.get("phases_s") or {}).get("total_s")
    predicted = ((metrics.get("plan") or {}).get("predicted") or {}).get("total_wall_s")
    if measured is None or predicted is None or not math.isfinite(float(predicted)) or float(predicted) <= 0:
        return None
    return {"measured_s": float(measured), "predicted_s": float(predicted),
            "ratio": float(measured) / float(predicted)}


def _plan_estimates(task: str, distill_bps: float, cost: float, per_client: bool,
                    nodes: bool = False) -> dict[str, str]:
    """How each of the plan's figures is estimated (printed with the plan)."""
    est = {
        "key_rate": "finite-key model (labqfl.qkd.keyrate) at the block-size rule's block size, times the "
                    "pair's schedule share of the laser's slots",
        "acquisition": "rounds x the slowest graph pair's key need / key rate, at least the acquisition the "
                       "block-size rule needs before any key exists (the given --duration, or the one chosen: it "
                       f"holds {KEY_MARGIN:g}x all rounds' key in the model)",
        "distill": f"sifted bits of the acquisition / {distill_bps:.3g} sifted bits/s (post-processing "
                   f"throughput {DEV_MACHINE})",
        "train": (f"rounds x clients x {cost:g} s per client and round" if per_client else
                  f"rounds x {cost:g} s per round (the training set is split among the clients)")
                 + f" for {task} ({DEV_MACHINE})",
    }
    if nodes:
        est["distill"] = (f"over node processes: sifted bits of the acquisition / {NODE_STREAM_SIFTED_BITS_PER_S:.3g} "
                          f"sifted bits/s for the streamed acquisition + distillation ({DEV_MACHINE}), minus the "
                          "station time")
        est["train"] += f", plus {NODE_ROUND_OVERHEAD_S:g} s per round over the Flower nodes"
        est["nodes"] = f"starting and stopping the QKD and FL node processes: {NODE_PROCESSES_S:g} s ({DEV_MACHINE})"
    return est


def compare(plan: Plan | dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """Plan (a :class:`Plan` or its :meth:`Plan.as_dict`) next to what a ``labqfl run`` measured
    (its metrics.json, docs/metrics.md).

    Per graph pair: key used per round (``train.rounds[*].key_bits_per_pair``) against the plan's
    need, and the measured key rate (delivered bits / acquisition duration) with the acquisition
    time per round it implies (measured use / measured rate) against the predicted one.
    ``*_ratio`` = measured / predicted; ``worst_*`` = the ratio furthest from 1 over the pairs, for each metric
    on its own (the largest deviation over pairs; not one "worst pair": each may be another pair).
    """
    p = plan.as_dict() if isinstance(plan, Plan) else plan
    acq = metrics.get("acquire") or {}
    dur = float(acq.get("duration_s") or 0.0)
    dist = ((metrics.get("distill") or {}).get("pairs")) or {}
    rounds = ((metrics.get("train") or {}).get("rounds")) or []

    def ratio(m: float | None, pred: float | None) -> float | None:
        return m / pred if m is not None and pred else None

    rows: dict[str, Any] = {}
    for name, pp in p["pairs"].items():
        # a round's key_bits_per_pair: the bits each graph pair spent (an int, labqfl.fl.training), or per pair
        used = [int(kb.get(name, 0) if isinstance(kb, dict) else kb)
                for kb in (r.get("key_bits_per_pair") or 0 for r in rounds)]
        used_round = sum(used) / len(used) if used else None
        delivered = (dist.get(name) or {}).get("delivered_bits")
        rate = delivered / dur if delivered is not None and dur > 0 else None
        acq_round = used_round / rate if used_round is not None and rate else None
        rows[name] = {
            "predicted_key_bits_per_round": pp["need_bits_per_round"], "measured_key_bits_per_round": used_round,
            "key_use_ratio": ratio(used_round, pp["need_bits_per_round"]),
            "predicted_key_rate_bps": pp["key_rate_bps"], "measured_key_rate_bps": rate,
            "key_rate_ratio": ratio(rate, pp["key_rate_bps"]),
            "predicted_acquisition_s_per_round": pp["acquisition_s_per_round"],
            "measured_acquisition_s_per_round": acq_round,
            "acquisition_ratio": ratio(acq_round, pp["acquisition_s_per_round"]),
        }

    def worst(key: str) -> float | None:
        xs = [r[key] for r in rows.values() if r[key] is not None]
        return max(xs, key=lambda x: abs(x - 1.0)) if xs else None

    return {"pairs": rows, "worst_key_use_ratio": worst("key_use_ratio"),
            "worst_key_rate_ratio": worst("key_rate_ratio"), "worst_acquisition_ratio": worst("acquisition_ratio"),
            "measured_wall_s": {"acquire_distill": acq.get("wall_s"),
                                "train": sum(float(r.get("seconds") or 0.0) for r in rounds) if rounds else None},
            # station time the run acquires (with the top-ups it waits for), as the plan's distill/train figures count it
            "predicted_wall_s": {"acquire": p["station_s"] if p.get("station_s") is not None else p["acquisition_s"],
                                 "distill": p["distill_s"], "train": p["train_s"]},
            "key_waits": _compare_waits(p, metrics, dur, ratio)}


def _compare_waits(p: dict[str, Any], metrics: dict[str, Any], dur: float,
                   ratio: Any) -> dict[str, Any]:
    """The waits for key against the plan: the first round the plan expects to starve (after
    ``rounds_sustained`` rounds of the given --duration) and the first that waited; the station time
    of the whole run, planned (``acquisition_s``) and acquired (the first acquisition and every
    top-up); and per top-up, the key its own plan (:func:`plan_top_up`) expected on each short
    pair against the key delivered (``key_ratio`` = delivered / predicted)."""
    waits = ((metrics.get("train") or {}).get("key_waits")) or {}
    top_ups = waits.get("acquisitions") or []
    sustained = p.get("rounds_sustained")
    rounds = p.get("rounds")
    station = dur + sum(float(t["duration_s"]) for t in top_ups)
    # a plan made before the top-ups were predicted has no station_s: its acquisition is the prediction
    pred_station = p["station_s"] if "station_s" in p else p.get("acquisition_s")
    rows = []
    for t in top_ups:
        pred = t["plan"]["predicted_key_bits"]
        rows.append({"round": t["round"], "top_up": t["top_up"], "duration_s": t["duration_s"],
                     "pairs": {q: {"deficit_bits": t["plan"]["deficit_bits"][q], "predicted_key_bits": pred[q],
                                   "delivered_bits": (t["pairs"].get(q) or {}).get("delivered_bits", 0),
                                   "key_ratio": ratio((t["pairs"].get(q) or {}).get("delivered_bits", 0), pred[q])}
                               for q in pred}})
    ratios = [r["key_ratio"] for t in rows for r in t["pairs"].values() if r["key_ratio"] is not None]
    return {"predicted_rounds_sustained": sustained,
            "predicted_first_wait_round": (sustained + 1 if sustained is not None and rounds is not None
                                           and sustained < rounds else None),
            "measured_first_wait_round": waits.get("first_wait_round"),
            "rounds_waited": waits.get("rounds_waited", 0),
            "predicted_station_s": pred_station, "measured_station_s": station,
            "station_s_ratio": ratio(station, pred_station),
            "predicted_top_ups": [{"round": t["round"], "duration_s": t["duration_s"]} for t in p.get("top_ups") or []],
            "top_ups": rows, "worst_top_up_key_ratio": max(ratios, key=lambda x: abs(x - 1.0)) if ratios else None}


# ---------------------------------------------------------------- stations of any size

#: Loss figures written by :func:`make_station` (docs/scaling.md cites the sources).
FIBRE_LOSS_DB_PER_KM = 0.2  # ITU-T G.652 / Corning SMF-28 at 1550 nm: ≤ 0.18–0.20 dB/km


def balance_frames(rates: list[float], resolution: int = 8, max_frames: int = 512) -> list[int]:
    """Frames per cycle w_p ∝ 1/r_p, so that the key rates share_p · r_p are equal: the fastest pair
    gets ``resolution`` frames (the rounding error of a weight is ≤ 1/(2·resolution)). A pair that
    would need more than ``max_frames`` (a rate below resolution/max_frames of the best), or has no
    key in the model, gets one frame: balancing it would take the others' time for little or no
    key; it stays scheduled so that its data can be measured, and the planner reports it starving."""
    pos = [r for r in rates if r > 0]
    if not pos:
        return [1] * len(rates)
    top = max(pos)
    out = []
    for r in rates:
        w = round(resolution * top / r) if r > 0 else max_frames + 1
        out.append(max(1, w) if w <= max_frames else 1)
    return out


#: ``station make --balance``: what the schedule weights equalise (docs/scaling.md)
BALANCE_MODES = ("asymptotic", "first-key")


def make_station(n_clients: int, *, loop_km: float = 10.0, graph: str = "all", k: int = 0,
                 insertion_loss_db: float = 0.5, max_frames: int = 512,
                 balance: str = "asymptotic") -> tuple[StationConfig, dict[str, Any]]:
    """A simulated station of ``n_clients`` clients on one Sagnac loop (``labqfl station make``).

    Everything but the clients, the loop and the schedule comes from the embedded default station
    (laser, detectors, tagger, node loss, operating point of its client C1 for every client).
    Loop: ``loop_km`` of fibre at :data:`FIBRE_LOSS_DB_PER_KM` split evenly into N+1 segments;
    each client's modulators cost ``insertion_loss_db`` to every pulse passing it
    (:mod:`labqfl.contracts.channel_model`). Schedule: only the pairs of the mask graph
    (:func:`labqfl.fl.masks.mask_graph`), with weights from the key-rate model so the key rates
    balance: w_p ∝ 1/R_p with R_p = :func:`labqfl.qkd.keyrate.ideal_decoy_asymptotic_rate` (key
    bits per slot of the pair; the finite-block model costs ~0.5 s per pair, too slow for the
    2016 pairs of N = 64), the best pair at 8 frames (:func:`balance_frames`); a pair that would need more than
    ``max_frames``, or has no key, gets one frame. ``balance="first-key"`` instead equalises the
    time each pair needs for its first finite-key block: w_p ∝ N_rule,p, the block-size rule's
    size of the pair (:func:`labqfl.qkd.blocksize.break_even_slots` × 1.25, ~0.5–1 s per pair), so
    all pairs reach key together after Σ_p N_rule,p / rep_rate seconds, the shortest time in which
    every pair can have key; the asymptotic rates then differ (short runs of one block per pair
    gain, long runs lose balance).
    Returns the config and a summary (loss and rate ranges, pairs without key).
    """
    from labqfl.config import parse_station_config
    from labqfl.contracts.channel_model import pair_channel
    from labqfl.fl.masks import mask_graph, split_pair
    from labqfl.qkd.keyrate import ideal_decoy_asymptotic_rate

    _check_station_args(n_clients, loop_km, insertion_loss_db, balance)
    names = [f"C{i + 1}" for i in range(n_clients)]
    try:
        pairs = [split_pair(p) for p in mask_graph(names, graph, k)]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    base = _station_dict(names, pairs, loop_km=loop_km, graph=graph, k=k, insertion_loss_db=insertion_loss_db)
    cfg = parse_station_config(base, "<labqfl station make>")
    rates = [ideal_decoy_asymptotic_rate(pair_channel(cfg, a, b)) for a, b in pairs]
    frames = _schedule_frames(cfg, pairs, rates, balance, max_frames)
    cfg.schedule.weights = {f"{a}-{b}": w for (a, b), w in zip(pairs, frames, strict=True)}
    cfg = parse_station_config(cfg.model_dump(mode="json", exclude_none=True), "<labqfl station make>")
    W = sum(frames)
    losses = [_loss_db(cfg, a, b) for a, b in pairs]
    if max(rates) <= 0:  # asymptotic (infinite-block) rates: no key at any block size on any pair
        raise ConfigError(_no_key_station(names, pairs, losses, loop_km=loop_km, insertion_loss_db=insertion_loss_db))
    bal = [r * w / W for r, w in zip(rates, frames, strict=True)]
    eq = [r / len(pairs) for r in rates]
    pos = [x for x in bal if x > 0] or [0.0]
    info = {"clients": n_clients, "pairs": len(pairs), "cycle_frames": W, "loop_km": loop_km, "balance": balance,
            "insertion_loss_db": insertion_loss_db, "graph": graph, "k": k,
            "loss_db_min": min(losses), "loss_db_max": max(losses),
            "rate_per_slot_min": min(rates), "rate_per_slot_max": max(rates),
            "balanced_per_pulse_min": min(pos), "balanced_per_pulse_max": max(pos),
            "equal_per_pulse_min": min(eq), "equal_per_pulse_max": max(eq),
            "no_key_pairs": [f"{a}-{b}" for (a, b), r in zip(pairs, rates, strict=True) if r <= 0],
            "unbalanced_pairs": [f"{a}-{b}" for (a, b), r, w in zip(pairs, rates, frames, strict=True)
                                 if r > 0 and w == 1 and r < max(rates)]}
    return cfg, info


def _no_key_station(names: list[str], pairs: list[tuple[str, str]], losses: list[float], *, loop_km: float,
                    insertion_loss_db: float) -> str:
    """Why :func:`make_station` refuses a station whose every pair is beyond key: the pairs' loss and the
    longest loop on which the least lossy pairs would still make key (bisection on the loop length)."""
    from labqfl.config import parse_station_config
    from labqfl.contracts.channel_model import pair_channel
    from labqfl.qkd.keyrate import ideal_decoy_asymptotic_rate

    least = [p for p, x in zip(pairs, losses, strict=True) if x <= min(losses) * (1 + 1e-9)]
    least = least[:: max(1, len(least) // 8)]  # the least lossy pairs, balanced and not, at most ~8

    def has_key(km: float) -> bool:
        d = _station_dict(names, least, loop_km=km, graph="all", k=0, insertion_loss_db=insertion_loss_db)
        cfg = parse_station_config(d, "<labqfl station make>")
        return any(ideal_decoy_asymptotic_rate(pair_channel(cfg, a, b)) > 0 for a, b in least)

    head = (f"no pair of the station makes key at any block size: pair loss {min(losses):,.1f}–{max(losses):,.1f} dB "
            f"on a {loop_km:g} km loop, {insertion_loss_db:g} dB per client")
    if not has_key(0.0):
        return f"{head}; not even a 0 km loop gives key: lower --insertion-loss-db or --clients (nothing written)"
    lo, hi = 0.0, loop_km
    while hi - lo > 0.005 * hi:
        lo, hi = ((lo + hi) / 2, hi) if has_key((lo + hi) / 2) else (lo, (lo + hi) / 2)
    return (f"{head}; with {len(names)} clients the key-rate model gives key on loops up to about {lo:.3g} km: "
            "use a shorter --loop-km (nothing written)")


def _check_station_args(n_clients: int, loop_km: float, insertion_loss_db: float, balance: str) -> None:
    """One clear :class:`ConfigError` for a bad :func:`make_station` argument."""
    if not 2 <= n_clients <= MAX_CLIENTS:
        raise ConfigError(f"--clients: a station holds 2 to {MAX_CLIENTS} clients, got {n_clients}")
    if balance not in BALANCE_MODES:
        raise ConfigError(f"--balance {balance!r} unknown; expected one of {', '.join(BALANCE_MODES)}")
    if not (math.isfinite(loop_km) and loop_km >= 0):
        raise ConfigError(f"--loop-km must be a finite length >= 0 km, got {loop_km}")
    if not (math.isfinite(insertion_loss_db) and insertion_loss_db >= 0):
        raise ConfigError(f"--insertion-loss-db must be >= 0 dB, got {insertion_loss_db}")


def _station_dict(names: list[str], pairs: list[tuple[str, str]], *, loop_km: float, graph: str, k: int,
                  insertion_loss_db: float) -> dict[str, Any]:
    """The station's TOML dict: the embedded default station with ``names`` as clients (each with
    the default C1's operating point), the loop split evenly, and a schedule of ``pairs`` (no weights yet)."""
    import tomllib

    from labqfl.config import default_station_text

    n_clients = len(names)
    base = tomllib.loads(default_station_text())
    c0 = base["clients"][0]
    base["name"] = f"sagnac-{n_clients}client-{graph if graph != 'ring-k' else f'ring-{k}'}-sim"
    base["description"] = (f"Simulated {n_clients}-client Sagnac loop, {loop_km:g} km, {insertion_loss_db:g} dB per "
                           f"client, schedule for the {graph}{f' k={k}' if graph == 'ring-k' else ''} mask graph "
                           "(labqfl station make)")
    seg = loop_km / (n_clients + 1)
    base["loop"]["segments_km"] = [seg] * (n_clients + 1)
    base["loop"]["fiber_loss_db_per_km"] = FIBRE_LOSS_DB_PER_KM
    base["clients"] = [{**{k_: v for k_, v in c0.items() if k_ not in ("name", "seed", "phase_modulator")},
                        "name": n, "seed": 1001 + i, "insertion_loss_db": insertion_loss_db,
                        "phase_modulator": dict(c0.get("phase_modulator", {}))} for i, n in enumerate(names)]
    base["schedule"] = {**base.get("schedule", {}), "pairs": [list(p) for p in pairs], "weights": None}
    base["schedule"].pop("weights")
    return base


def _schedule_frames(cfg: StationConfig, pairs: list[tuple[str, str]], rates: list[float], balance: str,
                     max_frames: int) -> list[int]:
    """Frames per cycle of each pair: balanced asymptotic key rates, or (``"first-key"``) w_p ∝ N_rule,p."""
    if balance == "first-key":  # w_p ∝ N_rule,p: slots per second ∝ the slots the pair's first block needs
        from labqfl.contracts.channel_model import pair_channel
        from labqfl.qkd.blocksize import BLOCK_MARGIN, break_even_slots

        rule = [(1.0 + BLOCK_MARGIN) * break_even_slots(pair_channel(cfg, a, b)) for a, b in pairs]
        return balance_frames([1.0 / r if math.isfinite(r) and r > 0 else 0.0 for r in rule], max_frames=max_frames)
    return balance_frames(rates, max_frames=max_frames)


def station_toml(cfg: StationConfig) -> str:
    """TOML text of a station (loads back with :func:`labqfl.config.load_station_config`)."""
    from labqfl.config import station_to_toml_dict
    from labqfl.runs import dump_toml

    head = (f"# {cfg.name}: written by `labqfl station make` (labqfl.planning.make_station).\n"
            "# schedule.weights: frames per cycle of each pair, from the key-rate model so that the key rates\n"
            "# balance (docs/scaling.md).\n")
    return head + dump_toml(station_to_toml_dict(cfg))
