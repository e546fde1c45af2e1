"""The key-rate model counts only fresh (key-carrying) slots of a station with a Pulse Streamer duty cycle.

``pattern_generator.options.dark_frames_between = n`` plays 1 fresh frame in n + 1; the dark frames are
recorded lost, never key slots (labqfl.modulation.ModulationStreamer). So the block-size rule's seconds
of data, the planned acquisition and the pair key rates [bit/s] of examples/station_emulated_hardware.toml
(n = 9) are those of the same station with every frame fresh, scaled by n + 1 (time) and 1/(n + 1) (rate);
the pipeline's blocks count every slot of the pair (dark ones as dropped) and so get n + 1 times the
rule's fresh slots. Before, every slot counted as a key slot (first key after 0.854 s instead of ≈ 8.5 s),
and ``labqfl plan`` chose a duration ending inside another pair's frame, which the rule refused
(first_key_s null).
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest

from labqfl.config import (
    StationConfig,
    fresh_frames_cycle,
    fresh_slot_rate_hz,
    parse_station_config,
)
from labqfl.planning import make_plan
from labqfl.qkd.blocksize import plan_blocks
from labqfl.qkd.keyrate import predict_station

pytest.importorskip("pulsestreamer")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "station_emulated_hardware.toml"
N_DARK = 10


def _example(dark: int | None = None) -> StationConfig:
    d = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    for c in d["clients"]:
        opts = c["pattern_generator"]["options"]
        assert opts["dark_frames_between"] == N_DARK
        if dark is not None:  # every frame fresh: a link fast enough for it
            opts["dark_frames_between"], opts["link_bytes_per_s"] = dark, 1e10
    return parse_station_config(d, "example")


@pytest.fixture(scope="module")
def stations() -> tuple[StationConfig, StationConfig]:
    return _example(), _example(0)


def test_fresh_slot_rate(stations: tuple[StationConfig, StationConfig]) -> None:
    duty, full = stations
    assert (fresh_frames_cycle(duty), fresh_frames_cycle(full)) == (N_DARK + 1, 1)
    assert fresh_slot_rate_hz(full) == full.laser.rep_rate_hz == 1e8
    assert fresh_slot_rate_hz(duty) == pytest.approx(1e8 / (N_DARK + 1), rel=1e-15)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_first_key_and_key_rate_scale_with_the_fresh_fraction(stations: tuple[StationConfig, StationConfig]) -> None:
    duty, full = stations
    c = N_DARK + 1
    bd, bf = plan_blocks(duty, None), plan_blocks(full, None)
    assert bf.first_key_s == pytest.approx(0.854, abs=1e-3)
    assert bd.first_key_s == pytest.approx(c * bf.first_key_s, rel=1e-12)
    assert bd.needed_duration_s == pytest.approx(c * bf.needed_duration_s, rel=1e-12)
    assert bd.pairs.keys() == bf.pairs.keys()
    for name, pp in bd.pairs.items():  # the same blocks of fresh slots
        assert pp.block_slots == bf.pairs[name].block_slots
    sd, sf = bd.distill_settings(), bf.distill_settings()
    assert sd.pair_block_slots == {n: c * v for n, v in sf.pair_block_slots.items()}  # + the dark slots
    kd, kf = predict_station(duty, 1e8), predict_station(full, 1e8)
    for a, b in zip(kd, kf, strict=True):
        assert a.bits_per_second == pytest.approx(b.bits_per_second / c, rel=1e-12)
        assert a.bits_per_second > 0


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_plan_duration_gives_first_key(stations: tuple[StationConfig, StationConfig]) -> None:
    """labqfl plan's acquisition fills every pair's rule block (frame by frame), so the rule accepts it."""
    duty, _ = stations
    p = make_plan(duty, "mnist-qnn", 8, 10)
    assert p.first_key_s is not None and math.isfinite(p.first_key_s)
    assert p.acquisition_s == pytest.approx(9.402, rel=1e-3)
    assert plan_blocks(duty, p.acquisition_s).sufficient
