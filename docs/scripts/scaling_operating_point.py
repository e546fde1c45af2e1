"""docs/scaling.md: pairs without key at one operating point per client against a per-pair point.

For stations from ``labqfl station make`` (ring-k mask graphs, insertion loss per client IL), count
the scheduled pairs whose asymptotic key rate (:func:`labqfl.qkd.keyrate.ideal_decoy_asymptotic_rate`)
is zero (a) with the station's one operating point per client and (b) with a per-pair point in
which the client of the stronger arm scales all its intensities down so that the pulses reach the
splitter balanced, μ_i·η_cw = μ_j·η_ccw (Zhong, Wang, Qian, Lo, arXiv:2001.10599). Model only:
no simulation. Run: ``.venv/bin/python docs/scripts/scaling_operating_point.py`` (~10 s).
"""

from __future__ import annotations

import dataclasses

from labqfl.contracts.channel_model import PairChannel, pair_channel
from labqfl.planning import make_station
from labqfl.qkd.keyrate import ideal_decoy_asymptotic_rate

CASES = [(16, 4, 0.5), (16, 4, 1.0), (16, 4, 2.0), (64, 2, 0.05), (64, 2, 0.1), (64, 2, 0.2), (64, 2, 0.5),
         (64, 4, 0.5), (64, 2, 1.0), (64, 4, 1.0)]


def balanced(ch: PairChannel) -> PairChannel:
    """The pair with the stronger arm's client attenuated so that both pulses arrive equal."""
    ratio = ch.eta_cw / ch.eta_ccw
    if ratio < 1:
        return dataclasses.replace(ch, intensities_j=tuple(x * ratio for x in ch.intensities_j))
    return dataclasses.replace(ch, intensities_i=tuple(x / ratio for x in ch.intensities_i))


def main() -> None:
    print("| station | pairs | no key, one point per client | no key, per-pair balanced |")
    print("|---|---|---|---|")
    for n, k, il in CASES:
        cfg, _ = make_station(n, graph="ring-k", k=k, insertion_loss_db=il)
        shared, per_pair = [], []
        for a, b in cfg.pairs():
            ch = pair_channel(cfg, a, b)
            if ideal_decoy_asymptotic_rate(ch) <= 0:
                shared.append(f"{a}-{b}")
            if ideal_decoy_asymptotic_rate(balanced(ch)) <= 0:
                per_pair.append(f"{a}-{b}")
        print(f"| N = {n}, ring-{k}, {il:g} dB | {len(cfg.pairs())} | {len(shared)} | {len(per_pair)} "
              f"{', '.join(per_pair[:3]) if 0 < len(per_pair) <= 3 else ''} |")


if __name__ == "__main__":
    main()
