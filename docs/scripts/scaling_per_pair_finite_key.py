"""docs/scaling.md: graph pairs with key in the finite-key model, one operating point per client
against a per-pair point, on the 64-client ring-2 station at 0.5 dB per client.

For every scheduled pair of ``labqfl station make --clients 64 --graph ring-k --k 2
--insertion-loss-db 0.5``: the break-even block (:func:`labqfl.qkd.blocksize.break_even_slots`,
the smallest block with ≥ 1024 final bits, searched up to 10¹⁴ slots) (a) at the station's
operating point (the embedded station's C1 point for every client) and (b) at a per-pair point
where the stronger arm's client scales its intensities down so that both pulses reach the
splitter equal, μ_i·η_cw = μ_j·η_ccw (Zhong, Wang, Qian, Lo, arXiv:2001.10599; the same
balancing as docs/scripts/scaling_operating_point.py). Reported: pairs with key at any block size
and the station time to the first rule-size block (1.25 × break-even) at an equal share of the
laser (1/64). Model only: labqfl cannot run (b) yet (docs/scaling.md, "What limits N").

First, in the asymptotic model (fast), what the settings labqfl does support, one operating point
per client, can recover: a greedy pass over the pairs without key scales the stronger-arm
client's intensities down to balance that pair, if no earlier pair has scaled that client and
the count of pairs with key grows (:func:`per_client_greedy`).
Run: ``.venv/bin/python docs/scripts/scaling_per_pair_finite_key.py`` (~2 CPU min).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any

from labqfl.contracts.channel_model import PairChannel, pair_channel
from labqfl.planning import make_station
from labqfl.qkd.blocksize import BLOCK_MARGIN, break_even_slots
from labqfl.qkd.keyrate import ideal_decoy_asymptotic_rate


def balanced(ch: PairChannel) -> PairChannel:
    """The pair with the stronger arm's client attenuated so that both pulses arrive equal."""
    ratio = ch.eta_cw / ch.eta_ccw
    if ratio < 1:
        return dataclasses.replace(ch, intensities_j=tuple(x * ratio for x in ch.intensities_j))
    return dataclasses.replace(ch, intensities_i=tuple(x / ratio for x in ch.intensities_i))


def per_client_greedy(cfg: Any) -> tuple[int, int, dict[str, float]]:
    """Pairs with asymptotic key at the station's point, and after the greedy per-client scaling
    (module docstring); returns (before, after, scale per client)."""
    scale = {c: 1.0 for c in cfg.client_names}

    def keyed(a: str, b: str) -> bool:
        ch = pair_channel(cfg, a, b)
        ch = dataclasses.replace(ch, intensities_i=tuple(x * scale[a] for x in ch.intensities_i),
                                 intensities_j=tuple(x * scale[b] for x in ch.intensities_j))
        return ideal_decoy_asymptotic_rate(ch) > 0

    pairs = cfg.pairs()
    before = sum(keyed(a, b) for a, b in pairs)
    touched: set[str] = set()
    for a, b in pairs:
        if keyed(a, b):
            continue
        ch = pair_channel(cfg, a, b)
        r = ch.eta_cw / ch.eta_ccw  # a's arm over b's arm: scale the client of the stronger arm
        c, f = (b, r) if r < 1 else (a, 1 / r)
        if c in touched:
            continue
        mine = [(x, y) for x, y in pairs if c in (x, y)]
        had = sum(keyed(x, y) for x, y in mine)
        scale[c] *= f
        if sum(keyed(x, y) for x, y in mine) > had:
            touched.add(c)
        else:
            scale[c] /= f
    return before, sum(keyed(a, b) for a, b in pairs), scale


def main(n: int = 64, k: int = 2, il: float = 0.5) -> None:
    for loss in (0.2, il):
        cfg, _ = make_station(n, graph="ring-k", k=k, insertion_loss_db=loss)
        before, after, scale = per_client_greedy(cfg)
        print(f"N = {n}, ring-{k}, {loss:g} dB, asymptotic model: {before} of {len(cfg.pairs())} pairs with key at one "
              f"point per client; {after} with the greedy per-client scaling ({sum(s < 1 for s in scale.values())} "
              f"clients scaled, down to {min(scale.values()):.2g}×)")
    pairs = cfg.pairs()
    slots_per_s = float(cfg.laser.rep_rate_hz) / len(pairs)  # equal share of the laser
    for label, f in (("one point per client", lambda ch: ch), ("per-pair balanced", balanced)):
        t = {}
        for a, b in pairs:
            n0 = break_even_slots(f(pair_channel(cfg, a, b)))
            t[f"{a}-{b}"] = (1.0 + BLOCK_MARGIN) * n0 / slots_per_s if math.isfinite(n0) else math.inf
        keyed = {p: s for p, s in t.items() if math.isfinite(s)}
        within = {lim: sum(s <= lim for s in keyed.values()) for lim in (60.0, 3600.0)}
        spread = (f"{min(keyed.values()):.3g}–{max(keyed.values()):.3g} s (median "
                  f"{statistics.median(keyed.values()):.3g} s)") if keyed else "-"
        print(f"N = {n}, ring-{k}, {il:g} dB, {label}: {len(keyed)} of {len(pairs)} pairs with key; "
              f"first rule block within 60 s: {within[60.0]}, within 1 h: {within[3600.0]}; first key after {spread}; "
              f"no key: {', '.join(sorted(set(t) - set(keyed))[:6])}{' …' if len(t) - len(keyed) > 6 else ''}")


if __name__ == "__main__":
    main()
