"""``labqfl station make``: stations of any size on one Sagnac loop, with a schedule for the mask
graph's pairs weighted by the key-rate model, that the simulator and the pipeline run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.config import load_station_config, parse_station_config
from labqfl.contracts.channel_model import pair_channel, transmittances
from labqfl.contracts.schedule import PairSchedule, frame_order
from labqfl.errors import ConfigError
from labqfl.fl.masks import mask_graph
from labqfl.planning import balance_frames, make_station
from labqfl.qkd.keyrate import expected_counts, ideal_decoy_asymptotic_rate

runner = CliRunner()


def test_make_writes_a_station_that_loads(tmp_path):
    out = tmp_path / "s8.toml"
    r = runner.invoke(app, ["station", "make", "--clients", "8", "--loop-km", "18", "--graph", "ring-k", "--k", "4",
                            "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["path"] == str(out) and info["pairs"] == 16
    cfg = load_station_config(out)
    names = cfg.client_names
    assert names == [f"C{i}" for i in range(1, 9)]
    assert [f"{a}-{b}" for a, b in cfg.pairs()] == mask_graph(names, "ring-k", 4)
    # 18 km over 9 segments at 0.2 dB/km; each passed client costs its insertion loss
    assert cfg.loop.segments_km == pytest.approx([2.0] * 9)
    e_cw, e_ccw = transmittances(cfg, "C1", "C2")
    assert -10 * math.log10(e_cw) == pytest.approx(0.2 * 16 + 0.5 * 7 + cfg.loop.node_loss_db)
    assert -10 * math.log10(e_ccw) == pytest.approx(0.2 * 4 + 0.5 * 1 + cfg.loop.node_loss_db)
    r = runner.invoke(app, ["station", "show", "--config", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["station"]["schedule"]["weights"] == cfg.schedule.weights


def test_weights_balance_the_model_key_rates():
    cfg, _ = make_station(8, loop_km=10.0)
    sched = PairSchedule.from_config(cfg)
    rates = np.array([ideal_decoy_asymptotic_rate(pair_channel(cfg, a, b)) for a, b in sched.pairs])
    assert rates.min() > 0 and rates.max() / rates.min() > 1.5  # the pairs differ, so weighting matters
    balanced = rates * [sched.share(n) for n in sched.names]
    equal = rates / len(rates)
    spread = lambda x: x.max() / x.min()  # noqa: E731
    assert spread(balanced) < 1.15 < spread(equal)


def test_balance_frames_inverse_to_rate_and_capped():
    assert balance_frames([2.0, 1.0, 0.5]) == [8, 16, 32]
    assert balance_frames([1.0, 0.0, 1e-9, 0.1], max_frames=100) == [8, 1, 1, 80]


def test_weighted_schedule_counts_and_ends_exact():
    pairs = [("C1", "C2"), ("C1", "C3"), ("C2", "C3")]
    assert frame_order([1, 1, 1]).tolist() == [0, 1, 2]  # the unweighted schedule is unchanged
    s = PairSchedule(pairs, 5, [3, 1, 2])
    assert s.frame_pair.tolist() == [0, 2, 0, 1, 2, 0]  # stride order: each pair's frames spread out
    n = 5 * 6 * 3 + 7
    idx = s.pair_index(np.arange(n))
    for p, name in enumerate(s.names):
        c = np.concatenate([[0], np.cumsum(idx == p)])
        assert [s.slots_of_pair(name, g) for g in range(n + 1)] == c.tolist()
        for m in range(1, int(c[-1]) + 1):
            g = s.slot_end(name, m)
            assert c[g] == m and c[g - 1] == m - 1
    assert s.share("C1-C2") == pytest.approx(0.5)


def test_weights_must_name_every_scheduled_pair():
    cfg, _ = make_station(4)
    d = cfg.model_dump(mode="json", exclude_none=True)
    del d["schedule"]["weights"]["C1-C2"]
    with pytest.raises(ConfigError, match="missing \\['C1-C2'\\]"):
        parse_station_config(d)
    d["schedule"]["weights"]["C1-C2"] = 0
    with pytest.raises(ConfigError, match="from 1 to"):
        parse_station_config(d)


def test_make_refuses_bad_graph():
    r = runner.invoke(app, ["station", "make", "--clients", "8", "--graph", "ring-k", "--k", "3", "--json"])
    assert r.exit_code == 1 and "even k" in r.stderr


@pytest.mark.parametrize("n", ["1", "257", "100000"])
def test_make_refuses_a_client_count_outside_the_bound_in_one_line(n, tmp_path):
    """100000 clients ran out of memory (5e9 pairs) before the bound; now refused before any work."""
    r = runner.invoke(app, ["station", "make", "--clients", n, "--out", str(tmp_path / "s.toml")])
    assert r.exit_code == 1 and not (tmp_path / "s.toml").exists()
    assert r.stderr.strip() == f"error: --clients: a station holds 2 to 256 clients, got {n}"


def test_a_station_file_beyond_the_client_bound_is_refused_naming_the_count():
    d = load_station_config().model_dump(mode="json", exclude_none=True)
    d["clients"] = [{**d["clients"][0], "name": f"C{i + 1}"} for i in range(257)]
    d["loop"]["segments_km"] = [0.1] * 258
    with pytest.raises(ConfigError, match="a station holds 2 to 256 clients, got 257"):
        parse_station_config(d)


def test_64_clients_simulate_slot_and_sift():
    """N = 64 on a ring-4 graph: the simulator follows the weighted schedule, the pipeline gives each
    pair exactly its scheduled slots, and the sifted bits agree with the model (a short acquisition;
    the full run's command and numbers are in docs/scaling.md)."""
    from labqfl.sim_backends.testbed import SagnacTestbed

    from labqfl.qkd.pipeline import Distiller, DistillSettings, MemorySink

    cfg, info = make_station(64, loop_km=10.0, graph="ring-k", k=4)
    assert info["pairs"] == 128
    d = cfg.model_dump(mode="json", exclude_none=True)
    d["schedule"]["slots_per_frame"] = 1024  # short frames: many pairs get slots in a 0.02 s acquisition
    cfg = parse_station_config(d)
    duration = 0.02
    tb = SagnacTestbed(cfg)
    blocks = list(tb.stream(duration))
    logs = {c: tb.client_log(c) for c in cfg.client_names}
    dist = Distiller(cfg, logs, MemorySink(), DistillSettings(block_slots=10**12, min_final_block_bits=10**12))
    for b in blocks:
        dist.push(b)
    n = int(round(duration * cfg.laser.rep_rate_hz))
    res = dist.finish(n)
    sched = PairSchedule.from_config(cfg)
    z, active = [], 0
    for (a, b), name in zip(sched.pairs, sched.names, strict=True):
        slots = sched.slots_of_pair(name, n)
        assert res[name].n_slots == slots
        mean = float(expected_counts(pair_channel(cfg, a, b), 1.0).clicks[0, 0, 0, 0]) * slots
        active += slots > 0
        if mean > 20:
            z.append((res[name].sifted_bits - mean) / math.sqrt(mean))
    assert active > 20 and len(z) > 10
    assert abs(float(np.mean(z))) < 1.0 and float(np.max(np.abs(z))) < 5.0
