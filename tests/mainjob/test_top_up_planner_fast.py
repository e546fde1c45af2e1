"""The top-up planner (issue 22: training that waits for key) plans only the pairs that starve and
caches the finite-key model's evaluations; its plan must equal the one computed the slow way, from
the block-size rule for the whole station with every evaluation made afresh."""

from __future__ import annotations

import math

import pytest

from labqfl.config import load_station_config
from labqfl.contracts.schedule import PairSchedule
from labqfl.planning import KEY_MARGIN, _duration_for_rounds, _pair_plans, make_station, plan_top_up
from labqfl.qkd import blocksize
from labqfl.qkd.estimation import SecurityParameters
from labqfl.qkd.keyrate import _key_length_from_model


def _uncached(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every finite-key evaluation and break-even search made afresh (no cache at all)."""
    def evaluate(ch, n_slots, params, ec):
        rep, n_x, _ = _key_length_from_model(ch, n_slots, params, ec)
        return rep, n_x

    monkeypatch.setattr(blocksize, "_evaluate", evaluate)
    monkeypatch.setattr(blocksize, "break_even_slots",
                        lambda ch, p=None, ec=blocksize.DEFAULT_EC_EFFICIENCY, m=blocksize.MIN_KEY_BITS:
                        blocksize._search_break_even(ch, p or SecurityParameters(), ec, m))
    monkeypatch.setattr(blocksize, "_CACHE", {})


def _slow_top_up(cfg, deficit_bits, *, eps_sec=1e-10, block_bits=None, margin=KEY_MARGIN):
    """plan_top_up as it was before it planned the short pairs alone: the block-size rule for the
    whole station, open-ended and again at the chosen duration (labqfl.planning at 411f0ce)."""
    short = {p: int(b) for p, b in deficit_bits.items() if b > 0}
    params = SecurityParameters(eps_sec=eps_sec)
    sched = PairSchedule.from_config(cfg)
    rep = float(cfg.laser.rep_rate_hz)
    block = blocksize.plan_blocks(cfg, None, params=params)
    bps = {p: block.pairs.get(p) if p in sched.names else None for p in short}
    no_key = sorted(p for p, bp in bps.items() if bp is None or bp.block_slots <= 0)
    keyed = [p for p in short if p not in no_key]
    if no_key or not keyed:
        return (math.inf if no_key else 0.0), dict.fromkeys(short, 0.0), no_key
    ruled = [n for n in (sched.names if block_bits is None else keyed) if block.pairs[n].block_slots > 0]
    start = max(sched.slot_end(n, math.ceil(block.pairs[n].rule_slots)) / rep for n in ruled)
    if block_bits is not None:
        start = max(start, *(margin * block_bits / (bps[p].sifted_per_slot * rep * sched.share(p)) for p in keyed))
    d = _duration_for_rounds(cfg, block.pairs, keyed, sched, params, {p: margin * short[p] for p in keyed},
                             start_s=start)
    step = 10.0 ** (math.floor(math.log10(d)) - 3)
    d = round(math.ceil(d / step - 1e-9) * step, 12)
    at = blocksize.plan_blocks(cfg, d, params=params)
    at_d = _pair_plans(cfg, at.pairs, at.duration_s, keyed, sched, params, 1)
    return d, {p: at_d[p].key_rate_bps * d for p in keyed}, []


def _cases(small_station_file):
    small = load_station_config(small_station_file)
    ring, _ = make_station(4, graph="ring-k", k=2)
    return [
        (small, {"C1-C2": 20_000}, {"eps_sec": 1e-4}),
        (small, {"C1-C2": 10}, {"eps_sec": 1e-4, "block_bits": 4000}),
        (ring, {"C1-C4": 100}, {}),  # the block floor of every scheduled pair decides
        (ring, {"C1-C2": 300_000, "C3-C4": 5_000, "C2-C3": 0}, {}),  # the bisection decides
        (ring, {"C1-C3": 100}, {}),  # not a graph pair of this station: no top-up can feed it
    ]


def test_fast_top_up_plan_equals_the_whole_station_plan(small_station_file, monkeypatch):
    cases = _cases(small_station_file)
    fast = []
    for cfg, deficit, kw in cases:
        blocksize._EVAL.clear(), blocksize._BREAK_EVEN.clear(), blocksize._CACHE.clear()
        fast.append(plan_top_up(cfg, deficit, **kw))
    _uncached(monkeypatch)
    for (cfg, deficit, kw), tp in zip(cases, fast, strict=True):
        d, predicted, no_key = _slow_top_up(cfg, deficit, **kw)
        assert (tp.duration_s, tp.predicted_key_bits, tp.no_key_pairs) == (d, predicted, no_key), deficit
    assert fast[-1].no_key_pairs == ["C1-C3"] and math.isinf(fast[-1].duration_s)
    assert fast[3].duration_s > fast[2].duration_s  # the cases reach both ends of the planner


def test_the_top_up_planner_evaluates_the_finite_key_model_only_for_short_pairs(monkeypatch):
    """Every other scheduled pair costs only its rule size (break-even search, cached per channel;
    a run's own plan has made it already): the planner no longer reruns the block-size rule for
    the whole station, which took ~35 s per top-up at N = 16 (docs/scaling.md)."""
    cfg, _ = make_station(6, graph="ring-k", k=2)
    params = SecurityParameters()
    for name in PairSchedule.from_config(cfg).names:  # what the run's plan has done before any top-up
        blocksize.rule_slots(cfg, name, params=params)
    seen: list[tuple[str, str]] = []

    def spy(ch, n_slots, p, ec):
        seen.append(ch.pair)
        return _key_length_from_model(ch, n_slots, p, ec)

    monkeypatch.setattr(blocksize, "_key_length_from_model", spy)
    blocksize._EVAL.clear()
    tp = plan_top_up(cfg, {"C1-C2": 2_000})
    assert tp.no_key_pairs == [] and tp.predicted_key_bits["C1-C2"] >= KEY_MARGIN * 2_000
    assert seen and set(seen) == {("C1", "C2")}
    n = len(seen)
    assert plan_top_up(cfg, {"C1-C2": 2_000}) == tp and len(seen) == n  # the same plan again: all from the cache


def test_a_starving_plan_predicts_the_top_ups_and_the_station_time_of_the_run(small_station_file):
    """With a --duration that holds fewer rounds than asked, the plan predicts the top-ups the run
    will wait for (as MainJob._wait_for_key sizes them), so its station time is the run's: the first
    acquisition plus every top-up, not R × the acquisition per round (docs/scaling.md: 1.37-1.69x off)."""
    from labqfl.planning import make_plan

    cfg = load_station_config(small_station_file)
    plan = make_plan(cfg, "mnist-qnn", 32, 6, duration_s=0.015, eps_sec=1e-4)
    need = plan.key_bits_per_pair_per_round
    assert plan.rounds_sustained is not None and plan.rounds_sustained < 6 and plan.top_ups
    first = plan.top_ups[0]
    held = plan.pairs["C1-C2"].key_rate_bps * 0.015 - plan.rounds_sustained * need
    left = 6 - plan.rounds_sustained
    assert first["round"] == plan.rounds_sustained + 1
    assert first["deficit_bits"] == {"C1-C2": math.ceil(need * left - held)}
    assert first["duration_s"] == plan_top_up(cfg, first["deficit_bits"], eps_sec=1e-4).duration_s
    assert plan.station_s == pytest.approx(0.015 + sum(t["duration_s"] for t in plan.top_ups))
    # every predicted top-up feeds the rounds after it, until all are fed
    key = plan.pairs["C1-C2"].key_rate_bps * 0.015 + sum(t["predicted_key_bits"]["C1-C2"] for t in plan.top_ups)
    assert key >= 6 * need
    enough = make_plan(cfg, "mnist-qnn", 32, 1, duration_s=0.02, eps_sec=1e-4)
    assert enough.top_ups == [] and enough.station_s == enough.acquisition_s
