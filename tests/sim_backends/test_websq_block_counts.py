"""The emulated SNSPD controller without a simulated loop (issue 17; over node processes the detection node holds the
controller, the optics node the loop): its count stream reports the clicks of the tag blocks the node slots, or
dark counts at the controller's bias (the simulated loop's law) when none are recent; 0 on a disabled channel.
Read through the real ``SingleQuantumEos`` driver (``count_rate_hz``) on the emulator's counts port."""

from __future__ import annotations

import importlib.util
import math
import time
from typing import Any

import numpy as np
import pytest
from labqfl.sim_backends.testbed import dark_count_rate_at
from labqfl.sim_backends.websq import BlockCounts, EmulatedDetectors

from labqfl.config import load_station_config, parse_station_config
from labqfl.instruments.base import TagBlock

needs_pyvisa_py = pytest.mark.skipif(importlib.util.find_spec("pyvisa_py") is None,
                                     reason="pyvisa-py (the 'hardware' extra) is not installed")
DCR0 = 5000.0  # a dark rate high enough to measure in 0.1 s


def _eos_cfg() -> Any:
    """The embedded default station, its detectors the Eos driver on one emulated controller (D0 channel 1 at
    12 µA, D1 channel 2 at 11.5 µA), DCR₀ = 5 kHz."""
    d = load_station_config().model_dump(mode="json", exclude_none=True)
    d["clients"] = d["clients"][:2]
    d["loop"]["segments_km"] = [0.2, 0.2, 0.2]
    for (_, det), ch, b in zip(d["detectors"].items(), (1, 2), (12.0, 11.5), strict=True):
        det.pop("options", None)
        det.update(driver="SingleQuantumEos", resource="TCPIP0::192.0.2.31::12000::SOCKET", visa_library="@py",
                   timeout_ms=2000, bias_current_ua=b, dark_count_rate_hz=DCR0,
                   options={"channel": ch, "bias_step_ua": 2.0, "bias_ramp_ua_per_s": 10_000.0})
    d["simulation"]["emulate_detectors"] = True
    return parse_station_config(d, "eos.toml")


def _blocks(rates: dict[int, float], seconds: float, block_s: float, seed: int = 1) -> list[TagBlock]:
    """Poisson tags at ``rates`` (channel -> Hz) over ``seconds`` from 0, cut into ``block_s`` blocks."""
    rng = np.random.default_rng(seed)
    ts, ch = [], []
    for c, r in rates.items():
        n = rng.poisson(r * seconds)
        ts.append(rng.integers(0, int(seconds * 1e12), n))
        ch.append(np.full(n, c, np.int16))
    t, c = np.concatenate(ts).astype(np.int64), np.concatenate(ch)
    order = np.argsort(t, kind="stable")
    t, c = t[order], c[order]
    edges = np.searchsorted(t, np.arange(1, math.ceil(seconds / block_s) + 1) * int(block_s * 1e12))
    return [TagBlock(t[a:b], c[a:b]) for a, b in zip(np.r_[0, edges[:-1]], edges, strict=True)]


def test_block_counts_rate_is_the_latest_blocks_covering_the_period() -> None:
    bc = BlockCounts({"D0": 1, "D1": 2}, hold_s=0.0)
    assert bc.rates(0.1) is None  # nothing fed
    with bc.acquisition():
        assert bc.rates(0.1) is None  # open, no block yet
        blocks = _blocks({1: 1e5, 2: 2e4, 3: 1e6}, 1.0, 0.01)
        for b in blocks[:50]:
            bc.feed(b)
        r = bc.rates(0.0999)  # the last 10 blocks (tags ~1 µs apart: their span is 0.1 s within µs)
        assert r is not None
        n0 = sum(int(np.count_nonzero(b.channels == 1)) for b in blocks[40:50])
        span = (blocks[49].timestamps[-1] - blocks[39].timestamps[-1]) * 1e-12
        assert r["D0"] == pytest.approx(n0 / span)
        for b in blocks[50:]:
            bc.feed(b)
        r = bc.rates(10.0)  # longer than fed: all blocks, from 0 to the last tag
        assert r is not None and r["D1"] == pytest.approx(
            sum(int(np.count_nonzero(b.channels == 2)) for b in blocks) / (blocks[-1].timestamps[-1] * 1e-12))
        bc.feed(blocks[0])  # starts before the last one ended: a new acquisition, the rest forgotten
        r = bc.rates(0.1)
        assert r is not None and r["D0"] == pytest.approx(
            np.count_nonzero(blocks[0].channels == 1) / (blocks[0].timestamps[-1] * 1e-12))
    assert bc.rates(0.1) is None  # closed, hold 0 s: not recent
    with pytest.raises(ValueError, match="hold_s must be >= 0 s"):
        BlockCounts({"D0": 1}, hold_s=-1.0)


@needs_pyvisa_py
def test_without_a_loop_the_controller_counts_the_fed_blocks_or_its_dark_counts() -> None:
    from labqfl.station import open_driver

    cfg = _eos_cfg()
    ch0, ch1 = (cfg.time_tagger.detector_channels[r] for r in ("D0", "D1"))
    emus = EmulatedDetectors(cfg, hold_s=0.0)
    try:
        node_cfg = emus.station_config(cfg)
        d0 = open_driver("D0", node_cfg.detectors["D0"], None)
        d1 = open_driver("D1", node_cfg.detectors["D1"], None)
        try:
            assert d0.count_rate_hz(0.02) == d1.count_rate_hz(0.02) == 0.0  # disabled: 0, as a real controller
            d0.enabled = True  # D0 ramped to 12 µA (= I₀); D1's bias stays 0 µA
            n = d0.count_rate_hz(0.1) * 0.1  # no blocks: dark counts at I₀, Poisson (5 sigma)
            assert abs(n - DCR0 * 0.1) < 5 * math.sqrt(DCR0 * 0.1), n
            d0.bias = 14.0  # the loop's law: DCR₀·exp((14 − 12)/1 µA)
            want = dark_count_rate_at(DCR0, 14.0, 12.0, 1.0) * 0.1
            assert want == pytest.approx(DCR0 * math.e ** 2 * 0.1)
            n = d0.count_rate_hz(0.1) * 0.1
            assert abs(n - want) < 5 * math.sqrt(want), (n, want)
            rate0, rate1 = 2e5, 5e4
            with emus.acquisition():
                for b in _blocks({ch0: rate0, ch1: rate1, cfg.time_tagger.sync_channel: 1e6}, 0.5, 0.01):
                    emus.feed(b)
                got = d0.count_rate_hz(0.1)  # the latest 0.1 s of fed clicks (~20,000): within 5 sigma
                assert abs(got - rate0) * 0.1 < 5 * math.sqrt(rate0 * 0.1), got
                assert d1.count_rate_hz(0.1) == 0.0  # clicks fed on D1's channel, but its bias is 0 µA
            n = d0.count_rate_hz(0.1) * 0.1  # the run over: dark counts again
            assert abs(n - want) < 5 * math.sqrt(want), (n, want)
        finally:
            d0.close()
            d1.close()
    finally:
        emus.close()


@needs_pyvisa_py
def test_blocks_stay_recent_for_hold_s_after_the_last_one() -> None:
    from labqfl.station import open_driver

    cfg = _eos_cfg()
    ch0 = cfg.time_tagger.detector_channels["D0"]
    emus = EmulatedDetectors(cfg, hold_s=30.0)
    try:
        d0 = open_driver("D0", emus.station_config(cfg).detectors["D0"], None)
        try:
            d0.enabled = True
            for b in _blocks({ch0: 1e6}, 0.2, 0.01):  # fed outside an acquisition
                emus.feed(b)
            assert abs(d0.count_rate_hz(0.1) - 1e6) * 0.1 < 5 * math.sqrt(1e5)
            emus.blocks.hold_s = 0.0
            time.sleep(0.01)
            n = d0.count_rate_hz(0.1) * 0.1
            assert n < 10 * DCR0 * 0.1  # dark counts (~500), not the fed ~100,000
        finally:
            d0.close()
    finally:
        emus.close()


def test_block_counts_forget_an_ended_acquisition_and_a_disarmed_detector() -> None:
    """Session 37's CI flake (7d6ba0b): the blocks of an ended acquisition stayed recent for ``hold_s``, so a dark
    re-arm right after it read the previous acquisition's rate. They are forgotten when it ends, and a detector
    disarmed outside an acquisition forgets the blocks fed before (its own rate only)."""
    blocks = _blocks({1: 1e5, 2: 2e4}, 0.2, 0.01)
    bc = BlockCounts({"D0": 1, "D1": 2}, hold_s=30.0)
    with bc.acquisition():
        for b in blocks:
            bc.feed(b)
        bc.forget("D0")  # a latch reset inside a run: the run's blocks are still the light on the nanowire
        r = bc.rates(0.1)
        assert r is not None and set(r) == {"D0", "D1"}
    assert bc.rates(0.1) is None  # ended: forgotten at once, not held for 30 s
    for b in blocks:  # fed outside an acquisition: held
        bc.feed(b)
    bc.forget("D0")
    r = bc.rates(0.1)
    assert r is not None and set(r) == {"D1"}  # D0 disarmed since: none recent for it; D1 keeps its rate
    bc.feed(TagBlock(np.array([blocks[-1].timestamps[-1] + 10**10], np.int64), np.array([1], np.int16)))
    r = bc.rates(10.0)  # D0: only the block fed after its disarm (1 click in 10 ms)
    assert r is not None and r["D0"] == pytest.approx(100.0)


@needs_pyvisa_py
def test_a_dark_rearm_right_after_an_acquisition_reads_dark_counts() -> None:
    """Through the real driver, within the default 1 s hold: an acquisition at 10⁶ clicks/s on D0 ends, D0 is
    disarmed and armed again in the dark (the next ``ctl/run``'s arming, whose latch check reads this stream):
    it reads its dark counts, not the ended acquisition's rate. Failed before (about 100 000 counts in 0.1 s)."""
    from labqfl.station import open_driver

    cfg = _eos_cfg()
    ch0 = cfg.time_tagger.detector_channels["D0"]
    emus = EmulatedDetectors(cfg)  # HOLD_S
    try:
        d0 = open_driver("D0", emus.station_config(cfg).detectors["D0"], None)
        try:
            d0.enabled = True
            with emus.acquisition():
                for b in _blocks({ch0: 1e6}, 0.3, 0.01):
                    emus.feed(b)
                assert abs(d0.count_rate_hz(0.1) - 1e6) * 0.1 < 5 * math.sqrt(1e5)
            n = d0.count_rate_hz(0.1) * 0.1  # the run over, D0 still armed: dark counts at I₀
            assert abs(n - DCR0 * 0.1) < 5 * math.sqrt(DCR0 * 0.1), n
            for b in _blocks({ch0: 1e6}, 0.3, 0.01, seed=2):  # fed outside a run (held for 1 s)...
                emus.feed(b)
            d0.enabled = False  # ... then disarmed and armed again in the dark
            d0.enabled = True
            n = d0.count_rate_hz(0.1) * 0.1
            assert abs(n - DCR0 * 0.1) < 5 * math.sqrt(DCR0 * 0.1), n
        finally:
            d0.close()
    finally:
        emus.close()
