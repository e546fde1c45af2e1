"""The in-process testbed's choice of path (``SagnacTestbed.modulation_on_demand`` = None, the default):
the clients asked only at the candidate slots where the candidates are few, whole drive patterns where
they are many; the same tags either way, whatever the thread count."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from labqfl.sim_backends import SagnacTestbed
from labqfl.sim_backends.qrng import CsprngChoiceLog
from labqfl.sim_backends.testbed import ON_DEMAND_MAX_RATE

from labqfl.config import StationConfig, load_station_config


def _bright_decoy(cfg: StationConfig) -> StationConfig:
    """Every client with a decoy of 0.4 sent in 10 % of the slots: p_max ≈ 0.27 (the station before issue 18)."""
    return cfg.model_copy(update={"clients": [c.model_copy(update={
        "intensities": [c.intensities[0], 0.4, 0.0], "intensity_probs": [0.8, 0.1, 0.1]}) for c in cfg.clients]})


def _seeded(cfg: StationConfig) -> StationConfig:
    """``cfg`` with seeded clients and a pinned epoch base: reproducible tags across testbeds."""
    clients = [c.model_copy(update={"randomness": "seeded"}) for c in cfg.clients]
    sim = cfg.simulation.model_copy(update={"qrng_epoch_base": 7})
    return cfg.model_copy(update={"clients": clients, "simulation": sim})


def _logs(cfg: StationConfig) -> dict[str, CsprngChoiceLog]:
    return {c.name: CsprngChoiceLog(client=c.name, intensity_probs=tuple(c.intensity_probs),
                                    basis_x_prob=c.basis_x_prob) for c in cfg.clients}


def _tags(tb: SagnacTestbed, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    blocks = list(tb.stream(duration_s))
    return np.concatenate([b.timestamps for b in blocks]), np.concatenate([b.channels for b in blocks])


def _counting_patterns(tb: SagnacTestbed) -> list[int]:
    """Count the windows whose clients write whole drive patterns."""
    calls: list[int] = []
    inner = tb._drive_patterns

    def counted(*a: Any, **k: Any) -> np.ndarray:
        calls.append(1)
        return inner(*a, **k)

    tb._drive_patterns = counted  # type: ignore[method-assign]
    return calls


def test_default_station_takes_the_on_demand_path_and_a_bright_decoy_the_drive_patterns():
    cfg = load_station_config()
    tb = SagnacTestbed(cfg)
    assert tb.modulation_on_demand is None
    rate = tb.candidate_rate()
    assert 0.01 < rate <= ON_DEMAND_MAX_RATE  # p_max 0.031-0.038 on the embedded station
    logs = _logs(cfg)
    assert tb.on_demand_for(logs) is True
    calls = _counting_patterns(tb)
    assert sum(b.timestamps.size for b in tb.stream(0.003)) > 1000
    assert calls == []  # no window wrote whole drive patterns

    bright = SagnacTestbed(_bright_decoy(cfg))
    assert bright.candidate_rate() > ON_DEMAND_MAX_RATE
    assert bright.on_demand_for(_logs(cfg)) is False
    calls = _counting_patterns(bright)
    list(bright.stream(0.003))
    assert calls  # every window: drive patterns


def test_the_choice_follows_the_setting_the_laser_and_what_the_logs_can_do():
    cfg = load_station_config()
    tb = SagnacTestbed(cfg)
    logs = _logs(cfg)
    tb.modulation_on_demand = False
    assert tb.on_demand_for(logs) is False
    tb.modulation_on_demand = True
    assert tb.on_demand_for(logs) is True
    tb.modulation_on_demand = None
    assert tb.on_demand_for(logs, hardware=object()) is False  # type: ignore[arg-type]  # emulated generators

    class ChoicesOnly:  # a remote client's link: choices(slots), no drive patterns
        def __init__(self, log: Any) -> None:
            self.log = log

        def choices(self, slots: np.ndarray) -> Any:
            return self.log.choices(slots)

    bright = SagnacTestbed(_bright_decoy(cfg))
    assert bright.on_demand_for({c: ChoicesOnly(lg) for c, lg in logs.items()}) is True
    with bright.lock:
        bright.live.laser_on = False
        bright.touch()
    assert bright.candidate_rate() == 0.0


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("bright", [False, True])
def test_the_chosen_path_gives_the_tags_of_both_forced_paths(threads, bright):
    cfg = _seeded(load_station_config())
    if bright:
        cfg = _bright_decoy(cfg)
    out = []
    for mode in (None, False, True):
        tb = SagnacTestbed(cfg, threads=threads)
        tb.modulation_on_demand = mode
        out.append(_tags(tb, 0.004))
    (t, c), *others = out
    assert t.size > 1000
    for t1, c1 in others:
        np.testing.assert_array_equal(t, t1)
        np.testing.assert_array_equal(c, c1)


def test_csprng_clients_of_the_chosen_path_log_what_the_loop_played():
    """With CSPRNG clients (the default) the on-demand choice gives the tags of the drive patterns for the same
    client keys (stream_with, the logs shared)."""
    cfg = load_station_config()
    logs = _logs(cfg)
    out = []
    for mode in (None, False):
        tb = SagnacTestbed(cfg, threads=2)
        tb.modulation_on_demand = mode
        blocks = list(tb.stream_with(logs, 0.004))
        out.append((np.concatenate([b.timestamps for b in blocks]), np.concatenate([b.channels for b in blocks])))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])


class _SlowLog:
    """A client's log of this process that records which thread answered and takes a while to answer."""

    def __init__(self, log: CsprngChoiceLog, seen: list[str]) -> None:
        self.log = log
        self.seen = seen

    def codes(self, slots: np.ndarray) -> np.ndarray:
        self.seen.append(threading.current_thread().name)
        time.sleep(0.05)  # long enough for a helper thread to take the next client's task
        return self.log.codes(slots)

    def choices(self, slots: np.ndarray) -> Any:
        return self.log.choices(slots)


@pytest.mark.parametrize("threads", [1, 2])
def test_clients_of_this_process_answer_on_the_pools_threads_with_the_same_codes(threads):
    """On the on-demand path in process, the clients' answers (each client's codes at its candidates) are
    tasks of the simulator's pool, one per client: with 2 threads two threads answer, and the candidates'
    codes are those of one thread."""
    cfg = load_station_config()
    base = list(_logs(cfg).values())
    rng = np.random.default_rng(5)
    frame = 64
    pa = {"frame_pair": np.arange(6, dtype=np.int64), "ci": np.array([0, 0, 0, 1, 1, 2]),
          "cj": np.array([1, 2, 3, 2, 3, 3])}
    cand_n = np.array([300, 280], dtype=np.int64)
    cand_slot = np.zeros((2, 300), dtype=np.int64)
    for r in range(2):
        cand_slot[r, :cand_n[r]] = np.sort(rng.choice(np.arange(r * 384, r * 384 + 384), int(cand_n[r]), replace=False))
    out = []
    for th in (1, threads):
        seen: list[str] = []
        tb = SagnacTestbed(cfg, threads=th)
        logs = [_SlowLog(lg, seen) for lg in base]
        out.append((tb._ask_candidates(SimpleNamespace(logs=logs), cand_slot, cand_n, pa, frame, threads=th)(), seen))
    (ref_i, ref_j), _ = out[0]
    (got_i, got_j), seen = out[1]
    np.testing.assert_array_equal(got_i, ref_i)
    np.testing.assert_array_equal(got_j, ref_j)
    assert len(seen) == 4
    assert len(set(seen)) == threads


@pytest.mark.parametrize("seed", range(6))
def test_client_slots_are_the_grouped_slots_of_each_client(seed):
    """Each client's task copies its own candidate slots from the runs (``_kernels.client_slots``): exactly its
    part of ``group_candidates``' slots, in the same order."""
    from labqfl.sim_backends import _kernels as K

    rng = np.random.default_rng(seed)
    n_clients, frame = 4, int(rng.integers(20, 200))
    pa = {"frame_pair": rng.integers(0, 6, int(rng.integers(1, 9))).astype(np.int64),
          "ci": np.array([0, 0, 0, 1, 1, 2]), "cj": np.array([1, 2, 3, 2, 3, 3])}
    n_rows = int(rng.integers(1, 6))
    cand_n = rng.integers(0, 300, n_rows).astype(np.int64)
    cand_slot = np.full((n_rows, 310), -1, dtype=np.int64)
    for r in range(n_rows):
        cand_slot[r, :cand_n[r]] = np.sort(rng.choice(np.arange(r * 1000, r * 1000 + 1000), int(cand_n[r]), replace=False))
    offsets, slots, runs = K.group_candidates(cand_slot, cand_n, np.int64(frame), pa["frame_pair"], pa["ci"], pa["cj"],
                                              np.int64(n_clients), True)
    for c in range(n_clients):
        lo, hi = int(offsets[c]), int(offsets[c + 1])
        got = K.client_slots(cand_slot, runs, pa["ci"], pa["cj"], np.int64(c), np.int64(hi - lo))
        np.testing.assert_array_equal(got, slots[lo:hi])
