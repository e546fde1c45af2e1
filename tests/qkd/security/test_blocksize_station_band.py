"""The block-size rule uses the station's intensity band δ (review s37 physics, item 6): called with a station
and without params, rule_slots / plan_pair_blocks / plan_blocks sized blocks for the exact-μ analysis while the
distiller judges the blocks at ±δ (labqfl.qkd.keyrate.station_params), so a station declaring δ got blocks
below its break-even size."""

from __future__ import annotations

import pytest

from labqfl.config import load_station_config
from labqfl.qkd.blocksize import BLOCK_MARGIN, break_even_slots, plan_pair_blocks, rule_slots
from labqfl.qkd.estimation import SecurityParameters
from labqfl.qkd.keyrate import station_pair_channel


def _with_band(delta: float):
    cfg = load_station_config()
    clients = [c.model_copy(update={"intensity_rel_uncertainty": delta}) for c in cfg.clients]
    return cfg.model_copy(update={"clients": clients})


def test_the_rule_of_a_station_declaring_a_band_is_sized_for_that_band() -> None:
    plain, banded = load_station_config(), _with_band(0.05)
    ch = station_pair_channel(banded, ("C1", "C4"))
    n_band = break_even_slots(ch, SecurityParameters(intensity_rel_uncertainty=0.05))
    n_exact = break_even_slots(ch, SecurityParameters())
    assert n_band > 1.01 * n_exact  # the band costs key, so the break-even block is larger
    assert rule_slots(banded, "C1-C4") == pytest.approx((1 + BLOCK_MARGIN) * n_band)
    assert rule_slots(plain, "C1-C4") == pytest.approx((1 + BLOCK_MARGIN) * n_exact)
    # params given: the larger of theirs and the station's δ (what the distiller uses)
    assert rule_slots(banded, "C1-C4", params=SecurityParameters()) == pytest.approx((1 + BLOCK_MARGIN) * n_band)
    assert plan_pair_blocks(banded, ["C1-C4"])["C1-C4"].rule_slots == pytest.approx((1 + BLOCK_MARGIN) * n_band)
