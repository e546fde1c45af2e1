"""Secure aggregation with pairwise one-time-pad masks (QuNetQFL, arXiv 2501.12709).

One round: every client clips and quantises its update to integers on a range sized by its
FedAvg weight (:mod:`labqfl.fl.quantize`), adds its pairwise mask m_i built from keys shared with
its neighbours in the mask graph (:mod:`labqfl.fl.masks`, keys from :mod:`labqfl.fl.keysource`),
and uploads q bits per parameter. The server sums the uploads mod 2^q; the masks cancel; clients
lost after masking are handled by their surviving partners revealing the keys they shared with
them; the server dequantises the exact integer sum into the weighted average.

Framework-free: the in-process simulation and the Flower engine only move these arrays. The
one-call :func:`secure_round` runs all parties in one process (simulation); the pieces
(:func:`~labqfl.fl.quantize.quantize`, :func:`~labqfl.fl.masks.mask_update`,
:func:`~labqfl.fl.masks.aggregate`) are what separate processes call. See
``docs/secure_aggregation.md`` for the protocol, the bit budget and the threat model.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from labqfl.errors import BitBudgetError, SecureAggregationError
from labqfl.fl.dp import DPPlan, dp_decode, dp_encode, noise_rng
from labqfl.fl.keysource import KeySource, key_words
from labqfl.fl.masks import (
    aggregate,
    apply_pair_key,
    components,
    dangling_pairs,
    mask_graph,
    order_clients,
    parse_graph,
    split_pair,
)
from labqfl.fl.quantize import (
    SUPPORTED_Q,
    ceil_log2,
    decode_error_bound,
    dequantize_sum,
    effective_weight_bound,
    quantize,
    uint_dtype,
    weight_ranges,
)
from labqfl.fl.selfmask import (
    SELF_MASK_RANDOMNESS,
    UnmaskGuard,
    check_threshold,
    choose_share_holders,
    default_threshold,
    draw_self_mask,
    encrypt_share,
    holder_sets,
    pad_words_from_bits,
    shamir_reconstruct,
    shamir_share,
    share_bits,
    share_dtype,
)


def _larger_q(n_clients: int) -> str:
    """What to use instead of a q too small so that N clients keep ≥ 2 bits per value: the supported word
    sizes that do, or that none does."""
    fits = [w for w in SUPPORTED_Q if w - ceil_log2(n_clients) >= 2]
    if not fits:
        return f"No supported q ({', '.join(map(str, SUPPORTED_Q))}) leaves 2 bits for {n_clients} clients."
    return f"Use q = {' or '.join(map(str, fits))}."


@dataclass(frozen=True)
class SecAggConfig:
    """Secure-aggregation settings.

    q: modulus bits (8, 16 or 32) — also the upload size per parameter.
    clip: updates are clipped to [-clip, clip] (the count of clipped values is reported).
    rounding: "nearest" or "stochastic" (unbiased).
    graph: "all" (every pair, as in the paper) or "ring-k" (Harary graph, k neighbours, k even).
    k: neighbours per client for "ring-k".
    value_bits: explicit bits per value b; ``None`` → b = q − ⌈log2 N⌉ (the largest safe b).
    min_survivors: a round with fewer participating or surviving clients is aborted (an
        "aggregate" of one client would be that client's update); with ``dp`` and H > 1 honest
        clients assumed, one without all of the plan's N clients (:attr:`survivors_needed`).
    self_masks: add a Shamir-shared self-mask per client (:mod:`labqfl.fl.selfmask`), so that a
        dropped client's late upload stays hidden after its partners reveal their keys.
    threshold: Shamir threshold t for the self-mask shares (``None``: a majority of the smallest
        holder set, :func:`~labqfl.fl.selfmask.default_threshold`); only with ``self_masks``.
    dp: a :class:`~labqfl.fl.dp.DPPlan` (distributed discrete Gaussian): each client L2-clips,
        flattens, rounds and adds discrete Gaussian noise in the integer domain before masking;
        uploads have the plan's padded length d'; FedAvg weights are equal (``None``: no DP).
    """

    q: int = 8
    clip: float = 1.0
    rounding: Literal["nearest", "stochastic"] = "nearest"
    graph: str = "all"
    k: int = 0
    value_bits: int | None = None
    min_survivors: int = 2
    self_masks: bool = False
    threshold: int | None = None
    dp: DPPlan | None = None

    def __post_init__(self) -> None:
        if self.q not in SUPPORTED_Q:
            raise ValueError(f"SecAggConfig.q must be one of {SUPPORTED_Q}, got {self.q}")
        if not (isinstance(self.clip, int | float) and np.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"SecAggConfig.clip must be a positive finite number, got {self.clip!r}")
        if self.rounding not in ("nearest", "stochastic"):
            raise ValueError(f"SecAggConfig.rounding must be 'nearest' or 'stochastic', got {self.rounding!r}")
        kind, k = parse_graph(self.graph, self.k)
        object.__setattr__(self, "graph", kind)
        object.__setattr__(self, "k", k)
        if self.value_bits is not None and not 1 <= self.value_bits <= self.q:
            raise ValueError(f"SecAggConfig.value_bits must lie in [1, q={self.q}], got {self.value_bits}")
        if self.min_survivors < 2:  # review s34 F2: the "sum" of one survivor is its update, in the clear
            raise ValueError(f"SecAggConfig.min_survivors must be >= 2 (an aggregate of one client is that "
                             f"client's update), got {self.min_survivors}")
        if self.threshold is not None and (not self.self_masks or self.threshold < 1):
            raise ValueError(f"SecAggConfig.threshold={self.threshold} needs self_masks=True and t >= 1")

    @property
    def survivors_needed(self) -> int:
        """Fewest clients that must take part in a round (before masking) and whose uploads must reach
        its sum (after): ``min_survivors``; with DP and H > 1 honest clients assumed, every one of the
        plan's N clients (review s35 F1). σ is sized so that H honest clients' noise alone gives the
        guarantee, and the N − H colluders know their own noise; any client missing from the sum may be
        an honest one, leaving H − d honest noises with d missing, so the reported ε would understate
        the release. With H = 1 a missing client is fine: if the lone honest client is missing, nothing
        of its own is in the sum to protect."""
        if self.dp is not None and self.dp.honest > 1:
            return max(self.min_survivors, self.dp.n_clients)
        return self.min_survivors

    def too_few_survivors(self, n: int) -> str | None:
        """Why ``n`` clients (taking part, or surviving masking) cannot make a round (``None`` if they can)."""
        if n >= self.survivors_needed:
            return None
        if self.dp is not None and self.dp.honest > 1:
            h, n_plan = self.dp.honest, self.dp.n_clients
            return (f"all {n_plan} clients of the DP plan needed: its noise is sized for H = {h} honest clients' "
                    f"noise in the sum, and a missing client may be one of them (then only H − {n_plan - n} "
                    f"honest clients' noise is in it and the reported ε understates the release). With "
                    f"--dp-honest > 1 a DP round cannot lose a client; use --dp-honest 1 (each client's own "
                    f"noise, dropouts allowed) or a federation without dropouts; --self-masks does not help "
                    f"(it hides a late upload, it does not bring back the lost noise)")
        return f"at least {self.survivors_needed} needed"

    def share_threshold(self, clients: list[str]) -> int:
        """The Shamir threshold t for ``clients`` (explicit or the default), checked against the graph."""
        pairs = self.pairs(clients)
        t = self.threshold if self.threshold is not None else default_threshold(clients, pairs)
        check_threshold(clients, pairs, t, self.q)
        return t

    def key_bits_per_pair(self, n_params: int) -> int:
        """Key bits one graph pair spends per round: q·n (mask) + 2·(q+1)·n with self-masks (pads)."""
        return n_params * (self.q + (2 * share_bits(self.q) if self.self_masks else 0))

    def check_bit_budget(self, n_clients: int) -> int:
        """Bits per value b for N clients; raise :class:`BitBudgetError` if the sum could wrap.

        A sum of N values of b bits is exact mod 2^q only if b <= q − ⌈log2 N⌉. The default b is
        that bound; it must be >= 2 (one bit cannot represent a signed update usefully).
        """
        if n_clients < 1:
            raise BitBudgetError(f"secure aggregation needs at least one client, got N={n_clients}")
        avail = self.q - ceil_log2(n_clients)
        if self.value_bits is not None:
            if self.value_bits > avail:
                raise BitBudgetError(
                    f"bit budget exceeded: N={n_clients} clients with q={self.q} leave {avail} bits per "
                    f"value (b <= q - ceil(log2 N)), but value_bits={self.value_bits} was requested; "
                    f"the modular sum could wrap. Use a larger q or fewer bits per value.")
            b = self.value_bits
        else:
            b = avail
        if b < 2:
            raise BitBudgetError(
                f"bit budget too small: N={n_clients} clients with q={self.q} leave {avail} bit(s) per "
                f"value (b = q - ceil(log2 N)); at least 2 are needed. {_larger_q(n_clients)}")
        return b

    def quantization(self, weights: Mapping[str, float]) -> dict[str, Any] | None:
        """The quantisation plan for these clients' FedAvg weights (all of them, no dropouts; ``None``
        with DP, whose weights are equal): bits per value, each client's levels M_i, its FedAvg and
        effective weight, the largest weight error, the bounds of :mod:`labqfl.fl.quantize` and the
        clients with M_i = 0, whose updates are in no aggregate (review s35 F4)."""
        if self.dp is not None:
            return None
        clients = list(weights)
        b = self.check_bit_budget(len(clients))
        w = np.asarray([float(weights[c]) for c in clients])
        m = weight_ranges(w, b)
        eff, fed = m / int(m.sum()), w / w.sum()
        return {"value_bits": b, "levels_cap": len(clients) * ((1 << b) - 1),
                "levels": dict(zip(clients, (int(x) for x in m), strict=True)),
                "fedavg_weights": dict(zip(clients, (float(x) for x in fed), strict=True)),
                "effective_weights": dict(zip(clients, (float(x) for x in eff), strict=True)),
                "max_weight_error": float(np.max(np.abs(eff - fed))),
                "weight_error_bound": effective_weight_bound(m),
                "error_bound_per_coordinate": decode_error_bound(m, self.clip, self.rounding),
                "zero_level_clients": [c for c, x in zip(clients, m, strict=True) if x == 0]}

    def zero_levels_problem(self, plan: Mapping[str, Any] | None) -> str | None:
        """What to tell the user when :meth:`quantization` gave some client no level (``None``: none)."""
        if not plan or not plan["zero_level_clients"]:
            return None
        zero = plan["zero_level_clients"]
        shares = ", ".join(f"{c} {plan['fedavg_weights'][c]:.2g}" for c in zero)
        return (f"client(s) {', '.join(zero)} get 0 quantisation levels at q = {self.q} (b = {plan['value_bits']} bits; "
                f"FedAvg weight share {shares} < 1/(N·L) = 1/{plan['levels_cap']}): their updates are in no "
                f"round's aggregate. " + (f"A larger q ({' or '.join(map(str, larger))}) gives them levels"
                                          if (larger := [x for x in SUPPORTED_Q if x > self.q]) else
                                          "No larger q exists: give them more weight or leave them out"))

    def pairs(self, clients: list[str]) -> list[str]:
        """The mask graph's pairs over ``clients`` (in loop order)."""
        return mask_graph(clients, self.graph, self.k)

    def as_dict(self) -> dict[str, Any]:
        return {"q": self.q, "clip": self.clip, "rounding": self.rounding, "graph": self.graph,
                "k": self.k, "value_bits": self.value_bits, "min_survivors": self.min_survivors,
                "self_masks": self.self_masks, "threshold": self.threshold,
                "dp": self.dp.as_dict() if self.dp is not None else None}


def communication_saving(upload_bits: int, baseline_bits: int) -> float:
    """1 − upload/baseline: the share of the float32 upload a client saves (1 − q/32 without DP; with DP
    the upload is q·d' words against 32·n_params, so the saving is negative when q = 32 or d' > n·32/q).
    The one definition of the round's, the run summary's and the CLI's figure (review s35 F5)."""
    return 1.0 - upload_bits / baseline_bits if baseline_bits else 0.0


@dataclass
class RoundResult:
    """Outcome and accounting of one secure-aggregation round (no key material inside).

    aggregate: float64, the updates' shape — weighted average of the surviving clients' clipped
        and quantised updates (effective weights M_i/ΣM, see :mod:`labqfl.fl.quantize`).
    key_bits_per_pair: key bits consumed by each pair of the mask graph this round (q·n_params).
    upload_bits_per_client: q·n_params (DP: q·d'); baseline_upload_bits_per_client: 32·n_params
    (float32); communication_saving: :func:`communication_saving` of the two (negative when DP's
    padding to d' makes the upload larger than float32).
    plain_quantized_sum: the unmasked integer sum — only with ``debug=True`` (tests), else None.
    """

    aggregate: np.ndarray
    key_bits_per_pair: dict[str, int]
    key_bits_total: int
    upload_bits_per_client: int
    baseline_upload_bits_per_client: int
    communication_saving: float
    key_source: str
    dropped: tuple[str, ...]
    survivors: tuple[str, ...]
    q: int
    value_bits: int
    n_params: int
    graph: str
    k: int
    all_pairs_count: int
    reveal_bits_total: int
    clipped_values: int
    effective_weights: dict[str, float]
    round_index: int
    plain_quantized_sum: np.ndarray | None = field(default=None, repr=False)
    self_masks: bool = False
    threshold: int = 0
    share_key_bits_total: int = 0
    share_reveal_bits_total: int = 0
    paper_all_pairs_key_bits: int = 0
    #: debug only (tests): what the server could see — ``late_uploads`` (dropped clients' masked
    #: uploads delivered after the reveals), ``revealed_pair_keys``, ``quantized`` (plain values).
    server_view: dict[str, Any] | None = field(default=None, repr=False)
    privacy: dict[str, Any] | None = None

    @property
    def n_clients(self) -> int:
        return len(self.survivors) + len(self.dropped)

    @property
    def key_saving_vs_all_pairs(self) -> float:
        """1 − (pairs used)/(N(N−1)/2): key saved by the sparse graph (0 for "all")."""
        if not self.all_pairs_count:
            return 0.0
        return 1.0 - len(self.key_bits_per_pair) / self.all_pairs_count

    def accounting(self) -> dict[str, Any]:
        """JSON-ready accounting for metrics.json (never contains keys or the plain sum)."""
        return {
            "round": self.round_index,
            "key_source": self.key_source,
            "q": self.q,
            "value_bits": self.value_bits,
            "n_params": self.n_params,
            "n_clients": self.n_clients,
            "graph": self.graph if self.graph == "all" else f"ring-{self.k}",
            "pairs": len(self.key_bits_per_pair),
            "all_pairs": self.all_pairs_count,
            "key_saving_vs_all_pairs": self.key_saving_vs_all_pairs,
            "key_bits_per_pair": dict(self.key_bits_per_pair),
            "key_bits_total": self.key_bits_total,
            "upload_bits_per_client": self.upload_bits_per_client,
            "baseline_upload_bits_per_client": self.baseline_upload_bits_per_client,
            "communication_saving": self.communication_saving,
            "reveal_bits_total": self.reveal_bits_total,
            "dropped": list(self.dropped),
            "clipped_values": self.clipped_values,
            "effective_weights": dict(self.effective_weights),
            "self_masks": self.self_masks,
            "threshold": self.threshold if self.self_masks else None,
            "share_key_bits_total": self.share_key_bits_total,
            "share_reveal_bits_total": self.share_reveal_bits_total,
            "paper_all_pairs_key_bits": self.paper_all_pairs_key_bits,
            "key_bits_vs_paper_all_pairs": (self.key_bits_total / self.paper_all_pairs_key_bits
                                            if self.paper_all_pairs_key_bits else None),
            "self_mask_randomness": SELF_MASK_RANDOMNESS if self.self_masks else None,
            "privacy": self.privacy,
        }


def secure_round(
    updates: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    cfg: SecAggConfig,
    key_source: KeySource,
    *,
    round_index: int,
    rng: np.random.Generator,
    dropped: Collection[str] = (),
    debug: bool = False,
    unmask_guards: Mapping[str, UnmaskGuard] | None = None,
) -> RoundResult:
    """Run one secure-aggregation round for all clients in this process.

    ``updates``: client name → float update (same shape for all). ``weights``: client name →
    FedAvg weight (e.g. sample count; public to the server). ``dropped``: clients that masked
    but whose uploads never arrive (dropout recovery: their surviving partners reveal the shared
    keys; those keys are spent either way). ``rng`` drives stochastic rounding only; masks come
    from ``key_source``. Every pair of the mask graph consumes q·n_params key bits.

    Raises :class:`BitBudgetError` (sum could wrap), :class:`SecureAggregationError` (fewer than
    ``cfg.survivors_needed`` clients or survivors — with DP and H > 1 all of the plan's N — or survivors
    split into several groups by the dropouts — unmasking would then reveal partial sums),
    ``KeyStarvationError`` (a pair lacks key).

    With ``cfg.self_masks`` every client also adds a self-mask s_i (OS CSPRNG) and Shamir-shares
    it among itself and its graph neighbours (threshold t); each share travels under a one-time
    pad of w = q + 1 fresh key bits per word from the pair's key; at unmasking each survivor
    answers, through its :class:`~labqfl.fl.selfmask.UnmaskGuard` (``unmask_guards``, one per
    client, fresh ones if ``None``), either the keys of its dropped partners or its shares of
    surviving clients' self-masks — never both about one peer. A dropped client's self-mask is
    never reconstructed, so its late upload stays a one-time pad (``debug=True`` records it in
    ``server_view["late_uploads"]``).
    """
    shape = _check_round_inputs(updates, weights, cfg, dropped, round_index)
    clients = shape.clients
    pairs = cfg.pairs(clients)
    drop = set(dropped)
    survivors = [c for c in clients if c not in drop]
    per_pair_bits = cfg.key_bits_per_pair(shape.n_words)
    needs = {p: per_pair_bits for p in pairs}
    t_share = cfg.share_threshold(clients) if cfg.self_masks else 0
    ensure = getattr(key_source, "ensure_available", None)
    if ensure is not None:
        ensure(needs)
    m_of = _quantization_levels(clients, weights, cfg, shape.b)

    uploads, clipped = _quantize_uploads(updates, clients, m_of, cfg, round_index=round_index, rng=rng)
    plain, plain_values = _debug_plain_sum(uploads, clients, survivors, cfg.q, shape.n_words, debug)
    held, chosen, chosen_error, share_bits_total = _self_mask_stage(
        cfg, clients, survivors, pairs, uploads, t_share, shape.n_words, key_source, round_index)
    key_bits_per_pair, revealed = _add_pair_masks(pairs, uploads, drop, key_source, cfg.q, shape.n_words,
                                                  per_pair_bits, round_index)
    try:
        view = _drop_lost_uploads(uploads, drop, survivors, pairs, cfg, round_index, plain_values, debug)
        if not any(m_of[c] for c in survivors):  # before any reveal (review s35 F4)
            raise SecureAggregationError(f"round {round_index} aborted before any key reveal: the surviving "
                                         f"clients {survivors} all have 0 quantisation levels; nothing to average")
        if chosen_error is not None:
            raise SecureAggregationError(f"round {round_index}: {chosen_error}")

        needed, share_answers = _answer_unmask_requests(cfg, pairs, survivors, drop, chosen, held, unmask_guards)
        if view is not None:
            view["revealed_pair_keys"] = {p: revealed[p].copy() for p in needed}
        agg, total_levels = _unmask_and_decode(uploads, shape, cfg, pairs, drop, survivors, m_of,
                                               {p: revealed[p] for p in needed}, share_answers, chosen,
                                               round_index)
    finally:
        for kw in revealed.values():
            kw[:] = 0
    return _round_result(
        agg, shape, cfg, key_source, drop=drop, survivors=survivors, key_bits_per_pair=key_bits_per_pair,
        n_revealed=len(needed), clipped=clipped, m_of=m_of, total_levels=total_levels, round_index=round_index,
        plain=plain, t_share=t_share, share_bits_total=share_bits_total,
        n_share_answers=sum(len(v) for v in share_answers.values()), view=view)


@dataclass(frozen=True)
class _RoundShape:
    """The checked inputs of one round: clients in loop order, bits per value b (0 with DP), the
    updates' shape, parameters per update and words per upload (DP: the plan's padded length d')."""

    clients: list[str]
    b: int
    shape: tuple[int, ...]
    n_params: int
    n_words: int


def _check_round_inputs(updates: Mapping[str, np.ndarray], weights: Mapping[str, float], cfg: SecAggConfig,
                        dropped: Collection[str], round_index: int) -> _RoundShape:
    """Check the clients (enough of them, :meth:`SecAggConfig.too_few_survivors`), weights, dropouts,
    bit budget and update shapes of one round, before anything is masked or any key spent."""
    if not updates:
        raise SecureAggregationError("secure_round needs at least one client update")
    clients = order_clients(updates.keys())
    missing_w = [c for c in clients if c not in weights]
    if missing_w:
        raise SecureAggregationError(f"no FedAvg weight for client(s) {missing_w}")
    unknown = sorted(set(dropped) - set(clients))
    if unknown:
        raise SecureAggregationError(f"dropped client(s) {unknown} are not among the clients {clients}")
    n_clients = len(clients)
    if (short := cfg.too_few_survivors(n_clients)) is not None:
        raise SecureAggregationError(f"round {round_index} aborted before masking: {n_clients} client(s) take "
                                     f"part, {short}")
    b = cfg.check_bit_budget(n_clients) if cfg.dp is None else 0
    if cfg.dp is not None and n_clients > cfg.dp.n_clients:
        raise BitBudgetError(f"the DP plan's bit budget was sized for {cfg.dp.n_clients} clients, got {n_clients}")

    shape = np.asarray(updates[clients[0]]).shape
    for c in clients:
        if np.asarray(updates[c]).shape != shape:
            raise SecureAggregationError(
                f"update of {c!r} has shape {np.asarray(updates[c]).shape}, expected {shape}")
    n_params = int(np.prod(shape)) if shape else 1
    if n_params == 0:
        raise SecureAggregationError("updates are empty (0 parameters); nothing to aggregate")
    if cfg.dp is not None and cfg.dp.n_params != n_params:
        raise SecureAggregationError(f"the DP plan is for {cfg.dp.n_params} parameters, updates have {n_params}")
    n_words = n_params if cfg.dp is None else cfg.dp.d_pad  # words per upload (DP: padded length d')
    return _RoundShape(clients, b, shape, n_params, n_words)


def _quantization_levels(clients: list[str], weights: Mapping[str, float], cfg: SecAggConfig,
                         b: int) -> dict[str, int]:
    """Each client's quantisation range M_i from its FedAvg weight (DP: equal weights)."""
    if cfg.dp is not None:
        return dict.fromkeys(clients, 1)  # DP: equal weights (a weight would scale the sensitivity)
    try:
        ranges = weight_ranges([float(weights[c]) for c in clients], b)
    except ValueError as exc:
        raise SecureAggregationError(f"FedAvg weights {dict(weights)}: {exc}") from None
    return dict(zip(clients, (int(m) for m in ranges), strict=True))


def _quantize_uploads(updates: Mapping[str, np.ndarray], clients: list[str], m_of: Mapping[str, int],
                      cfg: SecAggConfig, *, round_index: int,
                      rng: np.random.Generator) -> tuple[dict[str, np.ndarray], int]:
    """Clients: quantise (DP: encode with noise) into the buffers that become the masked uploads.

    Returns the buffers and the count of clipped values.
    """
    uploads: dict[str, np.ndarray] = {}
    clipped = 0
    for c in clients:
        try:
            if cfg.dp is not None:
                v, was_clipped = dp_encode(updates[c], cfg.dp, round_index=round_index, rng=rng, noise=noise_rng())
                nc = int(was_clipped)
            else:
                v, nc = quantize(np.asarray(updates[c]).reshape(-1), clip=cfg.clip, levels=m_of[c], q=cfg.q,
                                 rounding=cfg.rounding, rng=rng)
        except ValueError as exc:
            raise SecureAggregationError(f"update of client {c}: {exc}") from None
        clipped += nc
        uploads[c] = v
    return uploads, clipped


def _debug_plain_sum(uploads: Mapping[str, np.ndarray], clients: list[str], survivors: list[str], q: int,
                     n_words: int, debug: bool) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """Debug only (tests): the survivors' unmasked sum and a copy of every plain quantised upload."""
    if not debug:
        return None, {}
    plain = np.zeros(n_words, dtype=uint_dtype(q))
    for c in survivors:
        plain += uploads[c]
    return plain, {c: uploads[c].copy() for c in clients}


def _self_mask_stage(cfg: SecAggConfig, clients: list[str], survivors: list[str], pairs: list[str],
                     uploads: dict[str, np.ndarray], t_share: int, n_words: int, key_source: KeySource,
                     round_index: int) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, list[str]],
                                                SecureAggregationError | None, int]:
    """Clients: self-masks and their Shamir shares under one-time pads (``cfg.self_masks`` only).

    Returns the shares each holder keeps (holder → owner → share), the chosen holders per
    surviving owner, the error choosing them raised (reported after masking, before any reveal, as
    deployed) and the pad key bits spent.
    """
    held: dict[str, dict[str, np.ndarray]] = {c: {} for c in clients}  # holder -> owner -> share
    chosen: dict[str, list[str]] = {}
    chosen_error: SecureAggregationError | None = None
    if not cfg.self_masks:
        return held, chosen, chosen_error, 0
    try:
        chosen = choose_share_holders(survivors, clients, pairs, t_share)
    except SecureAggregationError as exc:  # raised after masking, before any reveal (as deployed)
        chosen_error = exc
    spent = _share_self_masks(clients, pairs, uploads, held, chosen, t_share, cfg.q, n_words,
                              key_source, round_index)
    return held, chosen, chosen_error, spent


def _add_pair_masks(pairs: list[str], uploads: dict[str, np.ndarray], drop: set[str], key_source: KeySource,
                    q: int, n_words: int, per_pair_bits: int,
                    round_index: int) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """Clients: add pairwise masks (one vector op per pair end; keys drawn once per pair).

    Returns the key bits spent per pair and the keys of pairs with exactly one dropped end (kept
    only for the reveal step after the drop).
    """
    revealed: dict[str, np.ndarray] = {}
    key_bits_per_pair: dict[str, int] = {}
    for p in pairs:
        a, bb = split_pair(p)
        kw = key_words(key_source, p, n_words, q, round_index=round_index)
        apply_pair_key(uploads[a], uploads[bb], kw)
        key_bits_per_pair[p] = per_pair_bits
        if drop and (a in drop) != (bb in drop):
            revealed[p] = kw  # kept only for the reveal step after the drop (wiped after it)
        else:
            kw[:] = 0  # applied at both ends: no copy of the key stays in memory
    return key_bits_per_pair, revealed


def _drop_lost_uploads(uploads: dict[str, np.ndarray], drop: set[str], survivors: list[str], pairs: list[str],
                       cfg: SecAggConfig, round_index: int, plain_values: dict[str, np.ndarray],
                       debug: bool) -> dict[str, Any] | None:
    """Network: dropped clients' uploads never arrive (debug: they arrive late, into the server view).

    Aborts the round, before any key reveal, with too few survivors or survivors split into
    several groups of the mask graph. Returns the debug server view (``None`` without debug).
    """
    view: dict[str, Any] | None = None
    if debug:
        view = {"late_uploads": {c: uploads[c].copy() for c in drop}, "revealed_pair_keys": {},
                "quantized": plain_values}
    for c in drop:
        del uploads[c]
    if (short := cfg.too_few_survivors(len(survivors))) is not None:
        raise SecureAggregationError(
            f"round {round_index} aborted: {len(survivors)} survivor(s) after dropouts {sorted(drop)}, {short}")
    if drop:
        groups = components(survivors, pairs)
        if len(groups) > 1:
            raise SecureAggregationError(
                f"round {round_index} aborted before any key reveal: dropouts {sorted(drop)} split the "
                f"survivors into {len(groups)} groups in the mask graph, so unmasking would reveal "
                f"partial sums; use a denser graph (larger k)")
    return view


def _answer_unmask_requests(cfg: SecAggConfig, pairs: list[str], survivors: list[str], drop: set[str],
                            chosen: Mapping[str, list[str]], held: dict[str, dict[str, np.ndarray]],
                            unmask_guards: Mapping[str, UnmaskGuard] | None,
                            ) -> tuple[list[str], dict[str, dict[str, np.ndarray]]]:
    """Unmask requests: each survivor answers through its guard (one kind per peer).

    Returns the dangling pairs whose keys are revealed and, per surviving owner, the self-mask
    shares its holders answered (owner → holder → share).
    """
    needed = dangling_pairs(pairs, survivors, drop) if drop else []
    share_answers: dict[str, dict[str, np.ndarray]] = {c: {} for c in chosen}
    if cfg.self_masks:
        guards = dict(unmask_guards) if unmask_guards is not None else {}
        for j in survivors:
            key_peers = [split_pair(p)[1] if split_pair(p)[0] == j else split_pair(p)[0]
                         for p in needed if j in split_pair(p)]
            share_peers = [i for i in survivors if j in chosen[i]]
            guards.setdefault(j, UnmaskGuard(j)).authorize(
                key_peers=key_peers, share_peers=share_peers, dropped=drop, survivors=survivors)
            for i in share_peers:
                share_answers[i][j] = held[j].pop(i)
    return needed, share_answers


def _unmask_and_decode(uploads: Mapping[str, np.ndarray], shape: _RoundShape, cfg: SecAggConfig,
                       pairs: list[str], drop: set[str], survivors: list[str], m_of: Mapping[str, int],
                       revealed: Mapping[str, np.ndarray], share_answers: Mapping[str, Mapping[str, np.ndarray]],
                       chosen: Mapping[str, list[str]], round_index: int) -> tuple[np.ndarray, int]:
    """Server: sum, remove dangling masks with the revealed keys, remove self-masks, then decode.

    Returns the weighted average in the updates' shape and the survivors' total levels ΣM.
    """
    total = aggregate(uploads, cfg.q, dropped=drop, revealed=dict(revealed), pairs=pairs if drop else None)
    pos = {c: i + 1 for i, c in enumerate(shape.clients)}  # Shamir x-coordinates
    for i, answers in share_answers.items():
        hs = chosen[i]
        total -= shamir_reconstruct([pos[h] for h in hs], np.stack([answers[h] for h in hs]), cfg.q)
    total_levels = sum(m_of[c] for c in survivors)
    if total_levels == 0:
        raise SecureAggregationError(
            f"round {round_index}: the surviving clients' weights are all zero; nothing to average")
    if cfg.dp is not None:
        agg = dp_decode(total, cfg.dp, round_index=round_index, n_survivors=len(survivors)).reshape(shape.shape)
    else:
        agg = dequantize_sum(total, clip=cfg.clip, total_levels=total_levels).reshape(shape.shape)
    return agg, total_levels


def _round_result(agg: np.ndarray, shape: _RoundShape, cfg: SecAggConfig, key_source: KeySource, *,
                  drop: set[str], survivors: list[str], key_bits_per_pair: dict[str, int], n_revealed: int,
                  clipped: int, m_of: Mapping[str, int], total_levels: int, round_index: int,
                  plain: np.ndarray | None, t_share: int, share_bits_total: int, n_share_answers: int,
                  view: dict[str, Any] | None) -> RoundResult:
    """Accounting: the round's :class:`RoundResult` (key, upload and reveal bits; no key material)."""
    q, n_words, n_params = cfg.q, shape.n_words, shape.n_params
    n_clients = len(shape.clients)
    return RoundResult(
        aggregate=agg,
        key_bits_per_pair=key_bits_per_pair,
        key_bits_total=sum(key_bits_per_pair.values()),
        upload_bits_per_client=q * n_words,
        baseline_upload_bits_per_client=32 * n_params,
        communication_saving=communication_saving(q * n_words, 32 * n_params),
        key_source=str(key_source.name),
        dropped=tuple(c for c in shape.clients if c in drop),
        survivors=tuple(survivors),
        q=q,
        value_bits=shape.b,
        n_params=n_params,
        graph=cfg.graph,
        k=cfg.k,
        all_pairs_count=n_clients * (n_clients - 1) // 2,
        reveal_bits_total=q * n_words * n_revealed,
        clipped_values=clipped,
        effective_weights={c: m_of[c] / total_levels for c in survivors},
        round_index=round_index,
        plain_quantized_sum=plain,
        self_masks=cfg.self_masks,
        threshold=t_share,
        share_key_bits_total=share_bits_total,
        share_reveal_bits_total=share_bits(q) * n_words * n_share_answers if cfg.self_masks else 0,
        paper_all_pairs_key_bits=n_clients * (n_clients - 1) // 2 * q * n_params,
        server_view=view,
        privacy=cfg.dp.privacy() if cfg.dp is not None else None,
    )


def _share_self_masks(clients: list[str], pairs: list[str], uploads: dict[str, np.ndarray],
                      held: dict[str, dict[str, np.ndarray]], chosen: Mapping[str, list[str]], t: int, q: int,
                      n: int, key_source: KeySource, round_index: int) -> int:
    """Every client draws its self-mask, adds it to its upload and sends Shamir shares to its holders
    under one-time pads from the pair keys. Returns the pad key bits spent.

    Pads: for pair "A-B" the master-to-slave share (A → B) uses the first w·n fresh bits drawn for
    the pair's pads, the slave-to-master share the next w·n (two draws of w·n bits). Holders keep
    only the shares the server will ask for (``chosen``: the simulation knows the dropouts in
    advance); the others are decrypted and wiped, which changes no value the server sees.
    """
    w = share_bits(q)
    sdt = share_dtype(q)
    pos = {c: i + 1 for i, c in enumerate(clients)}
    pair_of = {frozenset(split_pair(p)): p for p in pairs}
    spent = 0
    sets = holder_sets(clients, pairs)
    for i in clients:
        s_i = draw_self_mask(n, q)
        hs = sets[i]
        shares = shamir_share(s_i, [pos[h] for h in hs], t, q)
        uploads[i] += s_i
        s_i[:] = 0
        for row, j in enumerate(hs):
            share = shares[row]
            if j != i:
                p = pair_of[frozenset((i, j))]
                fast = getattr(key_source, "shared_pad_words", None)
                if fast is not None:
                    pad = fast(p, n, w, round_index=round_index)
                else:
                    bits = key_source.shared_keys(p, w * n, round_index=round_index)
                    pad = pad_words_from_bits(bits, w)
                    bits[:] = 0
                spent += w * n
                ct = encrypt_share(share, pad)  # what travels i -> j
                share = encrypt_share(ct, pad)  # j decrypts with its copy of the pair key
                pad[:] = 0
            if j in chosen.get(i, ()):
                held[j][i] = share.astype(sdt)
        shares[:] = 0
    return spent

