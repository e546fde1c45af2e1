"""One block-size rule for every distillation path (``labqfl distill``, ``labqfl run``, the GUI).

A finite-key block gives key only when it is large enough for the decoy statistics to bound the
phase error (docs/protocol.md §4–§5). The rule picks block sizes from the key-rate model
(:mod:`labqfl.qkd.keyrate`: the analytical station model's expected counts fed to the same
:func:`~labqfl.qkd.estimation.secure_key_length` that judges real blocks):

1. **break-even size** N₀ of a pair: the smallest block (slots of the pair) whose *expected*
   statistics give at least ``MIN_KEY_BITS`` final bits (enough to pay the block's own
   authentication, :mod:`labqfl.qkd.pipeline`), found by bracketing and bisection in log N;
2. **rule size** N_rule = (1 + ``margin``)·N₀ (default margin 25 %). On the default station
   the expected key grows from ~1.4·10³ bits at N₀ to ~6·10³ bits at N_rule (pair C1-C4,
   N_rule = 1.3·10⁷ slots), while the key length of a block fluctuates by ~3–4·10² bits (sd over
   20 seeds of Poisson-sampled counts, tests/qkd/security/test_blocksize_rule.py), so the margin
   keeps a block ~15 standard deviations away from abort; it also absorbs what the model leaves
   out (phase drift, the actual error-correction efficiency). The model includes the detectors'
   dead time and afterpulsing (:mod:`labqfl.contracts.channel_model`): before it did, the margin
   covered dead time at 100 MHz only, and at 1 GHz (30 ns = 29 blocked slots, −24 % clicks)
   every rule-size block aborted. A station outside what the model was checked for
   (:func:`~labqfl.contracts.channel_model.model_limits`) gets a :class:`UserWarning` from
   :func:`plan_blocks` and :func:`rule_slots`;
3. **with a known amount of data** (a recording, ``labqfl run --duration``) the data are cut into
   as few blocks as possible (the finite-key rate grows with the block), k = ⌈bits / cap⌉ blocks
   of ``max_block_bits`` at most (memory of one block in the pipeline), each ≥ N_rule, per pair; with too
   little data for N_rule on every pair the plan says how much is needed (:attr:`BlockPlan.sufficient`,
   :meth:`BlockPlan.shortfall`) instead of distilling blocks that can only abort.
   Open-ended streams (the GUI's live tab) use N_rule: the earliest key that is expected to come.

Units. The pipeline closes a pair's block after a fixed number of the pair's slots,
``block_slots`` (:class:`~labqfl.qkd.pipeline.DistillSettings`, docs/protocol.md §5.1). Every
pair gets its own: a pair owns the share w_p/W of the laser's slots (time-division schedule,
:mod:`labqfl.contracts.schedule`; ``labqfl station make`` weights pairs by their key rate), so N slots
of pair p take N/(share_p·rep_rate) seconds and T seconds of data hold T·share_p·rep_rate of its
slots (exactly: :meth:`~labqfl.contracts.schedule.PairSchedule.slots_of_pair`). With a duty cycle
(``pattern_generator.options.dark_frames_between = n``: 1 fresh frame in n + 1, the dark ones recorded
lost) only fresh slots carry key: the rule counts fresh slots and converts them to seconds at the
fresh slot rate rep_rate/(n + 1) (:func:`labqfl.config.fresh_slot_rate_hz`), and the pipeline, which
counts every slot of the pair (the dark ones as dropped, sent without a click), gets blocks of
(n + 1)·N slots so that each holds the N fresh ones (:meth:`BlockPlan.distill_settings`). With known data each
pair's slots are cut into its own k_p equal blocks; open-ended, each pair closes blocks of its own
N_rule,p. The last, shorter block of a stream is distilled only with at least the pair's
``min_final_bits`` = s_p·N_rule,p sifted bits (s_p: the model's sifted bits per slot; a smaller
rest is dropped and reported, never distilled into an abort). One block size for all pairs, the
largest rule size at an equal share 1/P (this module before issue 22), starved every pair whose
weight gave it fewer slots: its only block was a short "rest" below the largest pair's threshold
and was dropped (docs/scaling.md).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

from labqfl.config import StationConfig, fresh_frames_cycle, fresh_slot_rate_hz
from labqfl.contracts.channel_model import PairChannel, model_limits
from labqfl.contracts.schedule import PairSchedule
from labqfl.contracts.types import KEY_BASIS, KEY_INTENSITY_INDEX
from labqfl.qkd.estimation import KeyLengthReport, SecurityParameters
from labqfl.qkd.keyrate import (
    DEFAULT_EC_EFFICIENCY,
    _key_length_from_model,
    expected_counts,
    station_pair_channel,
    station_params,
)

__all__ = ["BLOCK_MARGIN", "MIN_KEY_BITS", "MAX_BLOCK_BITS", "PairBlockPlan", "BlockPlan", "break_even_slots",
           "plan_blocks", "plan_pair_blocks", "rule_slots"]

#: Rule size = (1 + BLOCK_MARGIN) × break-even size.
BLOCK_MARGIN = 0.25
#: Final key bits a block must be expected to give at break-even (pays its own authentication:
#: 3·64 bits per lane on a pair's first block, docs/postprocessing.md).
MIN_KEY_BITS = 1024
#: Largest block the plan asks for [sifted bits per pair]: the pipeline holds one block per pair
#: in memory (two uint8 arrays + the reconciliation state; 2^25 bits ≈ 0.1 GB per pair).
MAX_BLOCK_BITS = 1 << 25
#: Relative precision of the break-even search (ratio of the bracket ends; the upper end is kept).
_SEARCH_RATIO = 1.05
#: Block sizes searched [slots of the pair], bracketing steps of ×4; a pair without key at the
#: upper end never gives key.
_N_START, _N_STEP, _N_MAX = 1e7, 4.0, 1e14


#: Finite-key evaluations of the model per (channel, block size, security parameters, EC efficiency):
#: deterministic, and each costs ~0.05–0.1 s (the decoy bounds' linear programs), while the block
#: rule, the planner and the top-up planner ask for the same ones again (``n_rule`` at every
#: duration, a pair's bisection from its rule block). Cleared when full.
_EVAL: dict[tuple[Any, ...], tuple[KeyLengthReport, float]] = {}
_EVAL_MAX = 1 << 14


def _evaluate(ch: PairChannel, n_slots: float, params: SecurityParameters, ec: float) -> tuple[KeyLengthReport, float]:
    """The model's key-length report and expected sifted bits of one block of ``n_slots`` slots
    (:func:`labqfl.qkd.keyrate._key_length_from_model`), cached in :data:`_EVAL`. The report is
    shared between callers: read it, never change it."""
    key = (ch, float(n_slots), params, ec)
    hit = _EVAL.get(key)
    if hit is None:
        rep, n_x, _ = _key_length_from_model(ch, n_slots, params, ec)
        if len(_EVAL) >= _EVAL_MAX:
            _EVAL.clear()
        hit = _EVAL[key] = (rep, n_x)
    return hit


def break_even_slots(ch: PairChannel, params: SecurityParameters | None = None,
                     ec_efficiency: float = DEFAULT_EC_EFFICIENCY, min_key_bits: int = MIN_KEY_BITS) -> float:
    """Smallest block [slots of the pair] whose expected counts give ≥ ``min_key_bits`` final bits
    without abort (from above, within a factor 1.05); ``math.inf`` if none up to 10¹⁴ slots."""
    p = params or SecurityParameters()
    key = (repr(ch), p, ec_efficiency, min_key_bits)
    if key not in _BREAK_EVEN:
        if len(_BREAK_EVEN) > 4096:  # 2016 pairs at N = 64 with every pair in the graph
            _BREAK_EVEN.clear()
        _BREAK_EVEN[key] = _search_break_even(ch, p, ec_efficiency, min_key_bits)
    return _BREAK_EVEN[key]


_BREAK_EVEN: dict[tuple[Any, ...], float] = {}


def _search_break_even(ch: PairChannel, p: SecurityParameters, ec_efficiency: float, min_key_bits: int) -> float:
    def ok(n: float) -> bool:
        rep, _ = _evaluate(ch, n, p, ec_efficiency)
        return (not rep.abort) and rep.key_length_real >= min_key_bits

    hi = _N_START
    while not ok(hi):
        hi *= _N_STEP
        if hi > _N_MAX:
            return math.inf
    lo = hi / _N_STEP
    if hi == _N_START:  # already positive at the start: search downwards
        while lo > 1.0 and ok(lo):
            hi, lo = lo, lo / _N_STEP
        if lo <= 1.0:
            return hi
    while hi / lo > _SEARCH_RATIO:
        mid = math.sqrt(lo * hi)
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


@dataclass(frozen=True)
class PairBlockPlan:
    """The rule applied to one pair (slots of the pair; bits are sifted key bits).

    ``share``: the pair's fraction of the laser's slots (schedule weight w_p / W);
    ``block_slots``: the pair's block size (0: the model gives this pair no key at any size);
    ``n_blocks``: blocks the known data are cut into; ``min_final_bits``: sifted bits the last,
    shorter block of a stream needs to be distilled (s_p·N_rule,p); ``data_time_per_block_s``:
    seconds of data per block at the pair's share; ``needed_duration_s``: seconds of data for
    one rule-size block of this pair.
    """

    pair: str
    share: float
    sifted_per_slot: float
    break_even_slots: float
    rule_slots: float
    expected_key_bits_at_rule: float
    block_slots: float
    n_blocks: int
    min_final_bits: int
    expected_key_bits: float
    data_time_per_block_s: float
    needed_duration_s: float

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class BlockPlan:
    """Block sizes for a station (all scheduled pairs, each at its own schedule share) and,
    optionally, a known amount of data.

    ``pairs``: the rule per pair (:class:`PairBlockPlan`); the pipeline gets every pair's own
    ``block_slots`` and ``min_final_bits`` (:meth:`distill_settings`). ``block_slots`` /
    ``block_bits`` / ``min_block_bits``: the largest over the pairs (for display, and the
    pipeline's default for a pair without key in the model). ``duration_s``: seconds of data
    available (None: open-ended stream). ``n_blocks``: most blocks per pair the data are cut into
    (1 for an open-ended stream: the first one). ``sufficient``: every pair gets at least one
    block of its rule size. ``needed_duration_s``: seconds of data for one rule-size block on
    every pair (the limiting pair's). ``first_key_s``: seconds of data until every pair has
    distilled its first block.
    """

    station: str
    n_pairs: int
    rep_rate_hz: float
    margin: float
    duration_s: float | None
    pairs: dict[str, PairBlockPlan]
    block_slots: int
    block_bits: int
    min_block_bits: int
    n_blocks: int
    sufficient: bool
    needed_duration_s: float
    limiting_pair: str
    first_key_s: float
    #: frames per duty cycle (n + 1; 1: every frame fresh): the plan's slots are fresh slots, the
    #: pipeline's blocks count every slot (:func:`labqfl.config.fresh_frames_cycle`)
    fresh_cycle: int = 1

    def distill_settings(self, **kw: Any) -> Any:
        """:class:`~labqfl.qkd.pipeline.DistillSettings` with this plan's block sizes, per pair
        (``kw``: the other fields, e.g. ``engine``, ``params``)."""
        from labqfl.qkd.pipeline import DistillSettings

        keyed = {n: pp for n, pp in self.pairs.items() if pp.block_slots > 0}
        c = int(self.fresh_cycle)  # the pipeline counts the dark slots too: c x the fresh ones
        return DistillSettings(block_slots=max(self.block_slots * c, 1000), block_bits=max(self.block_bits, 1000),
                               min_final_block_bits=self.min_block_bits,
                               pair_block_slots={n: int(pp.block_slots) * c for n, pp in keyed.items()},
                               pair_min_final_block_bits={n: pp.min_final_bits for n, pp in keyed.items()}, **kw)

    def shortfall(self, what: str = "the data") -> str:
        """One line: why the data cannot give key and how much is needed."""
        have = "an open-ended stream" if self.duration_s is None else f"{self.duration_s:g} s"
        need = self.needed_duration_s
        needs = "no block size gives key on this station" if not math.isfinite(need) else (
            f"a positive-key block on every pair needs ≥ {need:.3g} s of data "
            f"(limiting pair {self.limiting_pair}: {self.pairs[self.limiting_pair].rule_slots:.3g} of its slots at "
            f"{100 * self.pairs[self.limiting_pair].share:.3g} % of the laser's{self._fresh_note()})")
        return f"{what} ({have}) is too short for the block-size rule: {needs}"

    def _fresh_note(self) -> str:
        c = int(self.fresh_cycle)
        return "" if c == 1 else f", fresh slots only: 1 frame in {c} by the duty cycle"

    def summary(self) -> str:
        """One line for logs and the CLI."""
        sizes = [pp.block_slots for pp in self.pairs.values() if pp.block_slots > 0] or [0.0]
        lo, hi = min(sizes), max(sizes)
        per = f"{hi:.3g}" if lo == hi else f"{lo:.3g}–{hi:.3g}"
        blk = f"{per} slots per pair (≈ {self.block_bits:,} sifted bits expected in the largest)"
        if self.duration_s is None:
            return (f"block-size rule: {blk}; first key expected after {self.first_key_s:.3g} s of data "
                    f"(limiting pair {self.limiting_pair})")
        return f"block-size rule: {self.n_blocks} block(s) per pair of {blk} ({self.duration_s:g} s of data)"

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "pairs" and (k != "fresh_cycle" or v != 1)}
        d["pairs"] = {k: v.as_dict() for k, v in self.pairs.items()}
        for k in ("needed_duration_s", "first_key_s"):
            if not math.isfinite(d[k]):
                d[k] = None
        return d


_CACHE: dict[tuple[Any, ...], BlockPlan] = {}


def plan_blocks(cfg: StationConfig, duration_s: float | None = None, *, params: SecurityParameters | None = None,
                ec_efficiency: float = DEFAULT_EC_EFFICIENCY, margin: float = BLOCK_MARGIN,
                max_block_bits: int = MAX_BLOCK_BITS) -> BlockPlan:
    """The block-size rule (module docstring) for the station's scheduled pairs, each at its own
    schedule share.

    ``duration_s``: seconds of data to distil (a recording, a timed acquisition), None for an
    open-ended stream. ``params``: the security settings the blocks will be judged with (ε_sec
    changes the break-even size), with the station's intensity band δ where it is larger
    (:func:`labqfl.qkd.keyrate.station_params`: what the distiller judges the blocks with; review s37 physics).
    Deterministic; cached per (station, arguments) since the search costs ~0.5 s per pair.
    """
    _check_rule_args(duration_s, margin)
    _warn_model_limits(cfg)
    p = station_params(cfg, params)
    key = (cfg.model_dump_json(), duration_s, p, ec_efficiency, margin, max_block_bits)
    if key in _CACHE:
        return _CACHE[key]
    sched = PairSchedule.from_config(cfg)
    n_pairs = len(sched.pairs)
    rep = float(cfg.laser.rep_rate_hz)
    out = plan_pair_blocks(cfg, sched.names, duration_s, params=p, ec_efficiency=ec_efficiency, margin=margin,
                           max_block_bits=max_block_bits, schedule=sched)
    n_blocks = max((pp.n_blocks for pp in out.values()), default=1)
    limiting = max(out, key=lambda n: out[n].needed_duration_s)
    needed_s = out[limiting].needed_duration_s
    if duration_s is None:
        sufficient = math.isfinite(needed_s)
    else:
        sufficient = math.isfinite(needed_s) and all(
            pp.block_slots >= pp.rule_slots * (1 - 1e-9) for pp in out.values())
    keyed_pairs = [pp for pp in out.values() if pp.block_slots > 0]
    block_slots = int(max((pp.block_slots for pp in keyed_pairs), default=0))
    block_bits = max((math.ceil(pp.sifted_per_slot * pp.block_slots) for pp in keyed_pairs), default=0)
    min_bits_all = max((pp.min_final_bits for pp in keyed_pairs), default=1000)
    first = max(pp.data_time_per_block_s for pp in out.values()) if sufficient else math.inf
    plan = BlockPlan(
        station=cfg.name, n_pairs=n_pairs, rep_rate_hz=rep, margin=margin, duration_s=duration_s, pairs=out,
        block_slots=block_slots, block_bits=int(block_bits), min_block_bits=int(max(min_bits_all, 1000)),
        n_blocks=n_blocks, sufficient=sufficient,
        needed_duration_s=needed_s, limiting_pair=limiting, first_key_s=first, fresh_cycle=fresh_frames_cycle(cfg),
    )
    if len(_CACHE) > 64:
        _CACHE.clear()
    _CACHE[key] = plan
    return plan


def _warn_model_limits(cfg: StationConfig) -> None:
    for msg in model_limits(cfg):
        warnings.warn(f"block-size rule: {msg}", UserWarning, stacklevel=3)


def _check_rule_args(duration_s: float | None, margin: float) -> None:
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration must be > 0 seconds, got {duration_s}")
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin}")


def rule_slots(cfg: StationConfig, pair: str, *, params: SecurityParameters | None = None,
               ec_efficiency: float = DEFAULT_EC_EFFICIENCY, margin: float = BLOCK_MARGIN) -> float:
    """The rule size N_rule = (1 + ``margin``)·N₀ [slots of the pair] of one scheduled pair
    ("Ci-Cj"; ``math.inf``: no key at any block size): the one figure of :func:`plan_blocks` that
    needs only the break-even search (cached per channel, :func:`break_even_slots`), none of the
    block's own finite-key evaluations. ``params`` with the station's δ where larger, as :func:`plan_blocks`."""
    _warn_model_limits(cfg)
    a, b = pair.split("-")
    return (1.0 + margin) * break_even_slots(station_pair_channel(cfg, (a, b)), station_params(cfg, params),
                                             ec_efficiency)


def plan_pair_blocks(cfg: StationConfig, pairs: Any, duration_s: float | None = None, *,
                     params: SecurityParameters | None = None, ec_efficiency: float = DEFAULT_EC_EFFICIENCY,
                     margin: float = BLOCK_MARGIN, max_block_bits: int = MAX_BLOCK_BITS,
                     schedule: PairSchedule | None = None) -> dict[str, PairBlockPlan]:
    """The rule (module docstring) for the scheduled ``pairs`` only ("Ci-Cj" names, each at its own
    schedule share), exactly as :func:`plan_blocks` gives them for the whole station: a pair's plan
    depends only on its own channel, share and slots in the data, so a caller that needs a few pairs
    (the top-up planner, :func:`labqfl.planning.plan_top_up`) pays for those alone. ``params`` with the
    station's δ where larger, as :func:`plan_blocks`."""
    _check_rule_args(duration_s, margin)
    p = station_params(cfg, params)
    sched = schedule if schedule is not None else PairSchedule.from_config(cfg)
    rate = fresh_slot_rate_hz(cfg)
    # fresh slots of each pair in the data: exact for the schedule's cycle (None: open-ended stream)
    total = None if duration_s is None else int(round(duration_s * rate))
    index = {name: i for i, name in enumerate(sched.names)}
    out: dict[str, PairBlockPlan] = {}
    for name in pairs:
        if name not in index:
            raise ValueError(f"pair {name!r} is not in the schedule of station {cfg.name!r}; expected one of "
                             f"{', '.join(sched.names)}")
        out[name] = _pair_block_plan(cfg, sched, index[name], total, p, ec_efficiency, margin, max_block_bits)
    return out


def _pair_block_plan(cfg: StationConfig, sched: PairSchedule, i: int, total: int | None, p: SecurityParameters,
                     ec_efficiency: float, margin: float, max_block_bits: int) -> PairBlockPlan:
    """The rule for the schedule's ``i``-th pair, with ``total`` fresh laser slots of data (None: open-ended);
    seconds at the station's fresh slot rate (:func:`labqfl.config.fresh_slot_rate_hz`)."""
    k0, b0 = KEY_INTENSITY_INDEX, KEY_BASIS
    rep = fresh_slot_rate_hz(cfg)
    pr, name = sched.pairs[i], sched.names[i]
    ch = station_pair_channel(cfg, pr)
    share = sched.share(name)
    s = float(expected_counts(ch, 1.0).clicks[k0, k0, b0, b0])
    n0 = break_even_slots(ch, p, ec_efficiency)
    n_rule = (1.0 + margin) * n0
    keyed = math.isfinite(n_rule)
    min_bits = max(math.ceil(s * n_rule), 1000) if keyed else 0
    avail = None if total is None else float(sched.slots_of_pair(name, total))
    if not keyed:
        blk, k = 0.0, 1
    elif avail is None:
        blk, k = float(math.ceil(max(n_rule, 1000.0))), 1
    else:  # as few blocks as memory allows: k equal blocks, the last one closes at the end of the data
        cap = max(max_block_bits, 2 * min_bits)
        k = max(1, math.ceil(s * avail / cap))
        blk = float(math.ceil(max(avail / k, 1000.0)))
    k_rule = _evaluate(ch, n_rule, p, ec_efficiency)[0].key_length_bits if keyed else 0
    k_blk = _evaluate(ch, blk, p, ec_efficiency)[0].key_length_bits if blk >= 1 else 0
    return PairBlockPlan(
        pair=name, share=share, sifted_per_slot=s, break_even_slots=n0, rule_slots=n_rule,
        expected_key_bits_at_rule=float(k_rule), block_slots=blk, n_blocks=k, min_final_bits=min_bits,
        expected_key_bits=float(k_blk),
        data_time_per_block_s=blk / (rep * share) if blk > 0 else math.inf,
        needed_duration_s=n_rule / (rep * share) if keyed else math.inf,
    )
