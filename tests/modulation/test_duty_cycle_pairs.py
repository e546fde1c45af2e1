"""The Pulse Streamer duty cycle reaches every scheduled pair (review s36 lab2 H1).

``dark_frames_between = n`` makes frame f fresh iff ``f mod (n + 1) = 0``
(:meth:`labqfl.modulation.ModulationStreamer.scheduled_dark`) and the pair schedule gives frame f to the pair at
position ``f mod W`` (:meth:`labqfl.contracts.schedule.PairSchedule.pair_index`; W = 6 for the example's 4
clients). With n = 9 the fresh frames 0, 10, 20, ... fall on positions 0, 4, 2 only: C1-C3, C2-C3 and C3-C4 never
got a fresh frame while the key-rate model assumed 1 in 10 for each. The station load now refuses an n whose
n + 1 shares a factor with W, and different n across clients.
"""

from __future__ import annotations

import collections
import copy
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from labqfl.config import dark_frames_needed, fresh_slot_rate_hz, parse_station_config
from labqfl.contracts.schedule import PairSchedule
from labqfl.errors import ConfigError
from labqfl.modulation import ModulationStreamer

pytest.importorskip("pulsestreamer")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "station_emulated_hardware.toml"


def _data() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))


def test_every_pair_of_the_example_gets_fresh_frames_at_the_models_share() -> None:
    cfg = parse_station_config(_data(), "example")
    sched = PairSchedule.from_config(cfg)
    f = cfg.time_tagger.frame_slots
    assert sched.slots_per_frame == f and sched.cycle_frames == 6
    streamers = {}
    for c in cfg.clients:
        assert c.pattern_generator is not None
        gen = SimpleNamespace(frame_slots=f, frames_per_upload=15)
        n = int(c.pattern_generator.options["dark_frames_between"])
        streamers[c.name] = ModulationStreamer(gen, SimpleNamespace(frame_slots=f),  # type: ignore[arg-type]
                                               dark_frames_between=n)
    cycle = 6 * 11 * 10  # several whole periods of lcm(W, n + 1)
    fresh: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    for frame in range(cycle):
        p = sched.names[int(sched.pair_index([frame * f])[0])]
        total[p] += 1
        a, b = p.split("-")
        fresh[p] += not streamers[a].scheduled_dark(frame) and not streamers[b].scheduled_dark(frame)
    share = fresh_slot_rate_hz(cfg) / cfg.laser.rep_rate_hz  # the model's fresh fraction
    assert share == pytest.approx(1 / 11)
    for p in sched.names:
        assert fresh[p] / total[p] == pytest.approx(share), p


def test_an_aliasing_duty_cycle_is_refused_at_load_naming_the_field_and_a_coprime_n() -> None:
    d = _data()
    for c in d["clients"]:
        c["pattern_generator"]["options"]["dark_frames_between"] = 9  # fits the link, aliases with W = 6
    with pytest.raises(ConfigError) as err:
        parse_station_config(copy.deepcopy(d), "example")
    msg = str(err.value)
    assert "\n" not in msg
    assert "field 'clients.0.pattern_generator.options.dark_frames_between' (role C1.pattern_generator)" in msg
    assert "shares the factor 2 with the pair schedule's 6-frame cycle" in msg
    assert "e.g. dark_frames_between = 10 (1 fresh frame in 11)" in msg and msg.endswith("got 9")
    for c in d["clients"]:  # 1 in 12 shares 2 and 3 with 6; the nearest coprime n that fits is 10
        c["pattern_generator"]["options"]["dark_frames_between"] = 11
    with pytest.raises(ConfigError, match=r"e\.g\. dark_frames_between = 10 .*got 11$"):
        parse_station_config(copy.deepcopy(d), "example")
    for c in d["clients"]:
        c["pattern_generator"]["options"]["dark_frames_between"] = 12  # 1 in 13: coprime to 6
    parse_station_config(copy.deepcopy(d), "example")


def test_different_duty_cycles_across_clients_are_refused() -> None:
    d = _data()
    d["clients"][2]["pattern_generator"]["options"]["dark_frames_between"] = 12  # fits, coprime, but not 10
    with pytest.raises(ConfigError, match=r"^example: field 'clients\.2\.pattern_generator\.options\."
                       r"dark_frames_between' \(role C3\.pattern_generator\): the clients' duty cycles differ "
                       r"\(C1 has 10\).*lcm\(11, 13\).*got 12$"):
        parse_station_config(d, "example")
    d["clients"][2]["pattern_generator"]["options"].update(dark_frames_between=0, link_bytes_per_s=1e10)
    parse_station_config(d, "example")  # every frame fresh on C3: its pairs are fresh whenever the other is


def test_a_duty_cycle_with_frames_other_than_the_schedules_is_refused() -> None:
    d = _data()
    d["schedule"] = {**d.get("schedule", {}), "slots_per_frame": 32768}
    with pytest.raises(ConfigError, match=r"time_tagger\.frame_slots = 65536 .*schedule\.slots_per_frame = 32768"):
        parse_station_config(d, "example")


def test_dark_frames_needed_suggests_a_coprime_n() -> None:
    assert dark_frames_needed(1e8, 65536, 1e8, 9) == 9  # the link alone
    assert dark_frames_needed(1e8, 65536, 1e8, 9, 6) == 10  # 1 in 10 shares 2 with 6
    assert dark_frames_needed(1e8, 65536, 1e8, 9, 5) == 10  # 1 in 10 shares 5 with 5; 1 in 11 does not
    assert dark_frames_needed(1e8, 65536, 1e8, 9, 7) == 9
