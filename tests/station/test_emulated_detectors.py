"""``simulation.emulate_detectors`` (issue 17): the detectors D0/D1 on the real Single Quantum Eos driver, talking
WebSQ to a controller emulated in the process that opens them (labqfl.sim_backends.websq.EmulatedDetectors), the
simulated loop's detectors following that controller: off until the driver arms them, clicking at the bias the
driver ramped to, dark counts following the bias; the count stream counts the loop's clicks. The station file's
resource is a bench address: the driver is pointed at the emulator's free loopback ports instead."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path
from typing import Any

import pytest

from labqfl.config import load_station_config, parse_station_config
from labqfl.errors import ConfigError
from labqfl.station import Station

ROOT = Path(__file__).resolve().parents[2]
needs_pyvisa_py = pytest.mark.skipif(importlib.util.find_spec("pyvisa_py") is None,
                                     reason="pyvisa-py (the 'hardware' extra) is not installed")
BENCH = "TCPIP0::192.0.2.31::12000::SOCKET"  # never reached: the emulator's ports replace it


def _eos_station(bias: tuple[float, float] = (12.0, 11.5)) -> dict[str, Any]:
    """The embedded default station cut to two clients on a short loop (simulated tagger and laser), its detectors
    the Eos driver on one emulated controller (D0 channel 1, D1 channel 2)."""
    d = load_station_config().model_dump(mode="json", exclude_none=True)
    d["clients"] = d["clients"][:2]
    d["loop"]["segments_km"] = [0.2, 0.2, 0.2]
    for (name, det), ch, b in zip(d["detectors"].items(), (1, 2), bias, strict=True):
        det.pop("options", None)
        det.update(driver="SingleQuantumEos", resource=BENCH, visa_library="@py", timeout_ms=2000, bias_current_ua=b,
                   options={"channel": ch, "bias_step_ua": 2.0, "bias_ramp_ua_per_s": 10_000.0})
        assert name == ("D0", "D1")[ch - 1]
    d["simulation"]["emulate_detectors"] = True
    d["simulation"]["qrng_epoch_base"] = 1 << 40
    return d


def test_emulated_detectors_need_the_eos_driver_and_a_simulated_loop() -> None:
    d = _eos_station()
    d["detectors"]["D1"] = {"driver": "sim"}
    with pytest.raises(ConfigError, match=r"simulation\.emulate_detectors.*SingleQuantumEos.*'D1': 'sim'"):
        parse_station_config(d, "bad.toml")
    d = _eos_station()
    d["time_tagger"]["driver"] = "SwabianTimeTagger"  # a real tagger on real hardware: the lab's light
    with pytest.raises(ConfigError, match=r"simulation\.emulate_detectors.*emulate_time_tagger = true"):
        parse_station_config(d, "bad.toml")
    d["simulation"]["emulate_time_tagger"] = True  # the Swabian driver on its emulated SDK: the simulated loop
    assert parse_station_config(d, "ok.toml").simulation.emulate_detectors


@needs_pyvisa_py
def test_the_loop_follows_the_emulated_controller_and_its_counts_are_the_loops() -> None:
    cfg = parse_station_config(_eos_station(), "eos.toml")
    st = Station(cfg, guard=False)
    try:
        tb = st["time_tagger"].testbed  # type: ignore[attr-defined]
        emu = st._detector_emulators.emulators[0]
        d0, d1 = st["D0"], st["D1"]
        assert type(d0).__name__ == "SingleQuantumEos" and d0.identity().endswith("2 detectors,channel 1")
        assert d0.resource == d1.resource == emu.resource != BENCH  # one controller, this process's ports
        assert len(st._detector_emulators.emulators) == 1
        ch0, ch1 = (cfg.time_tagger.detector_channels[d] for d in ("D0", "D1"))
        # on open: the controller's detectors off at 0 µA, and so the loop's
        assert not tb.live.detectors["D0"].enabled and not tb.live.detectors["D1"].enabled
        dark = st.time_tagger.count_rates(0.02)
        assert dark[ch0] == dark[ch1] == 0 and dark[cfg.time_tagger.sync_channel] > 0
        d0.enabled = True  # the driver ramps D0's bias 0 -> 12 µA in 2 µA steps; D1 stays off
        assert emu.bias_history == [[2.0 * k, 0.0] for k in range(1, 7)]
        live = tb.live.detectors["D0"]
        assert live.enabled and live.bias == 12.0 and not tb.live.detectors["D1"].enabled
        rates = st.time_tagger.count_rates(0.05)
        assert rates[ch0] > 1000 and rates[ch1] == 0
        # the controller's count stream: the loop's clicks on D0's channel (Poisson: within 5 sigma)
        via_driver = d0.count_rate_hz(0.05)
        n, m = via_driver * 0.05, rates[ch0] * 0.05
        assert abs(n - m) < 5 * (n + m) ** 0.5, (via_driver, rates[ch0])
        assert d1.count_rate_hz(0.02) == 0.0
        # dark counts follow the bias as a simulated detector's: DCR0 exp((I - I0)/1 uA)
        d0.bias = 14.0
        assert tb.live.detectors["D0"].bias == 14.0
        assert tb.live.detectors["D0"].dcr_hz() == pytest.approx(cfg.detectors["D0"].dark_count_rate_hz * 2.718281828 ** 2)
        d0.enabled = False  # ramped down: the loop's D0 off again, the bias supply off
        assert not tb.live.detectors["D0"].enabled and emu.enabled is False
        assert st.time_tagger.count_rates(0.02)[ch0] == 0
    finally:
        st.close()
    with pytest.raises(OSError):  # the controller went with the station
        socket.create_connection(("127.0.0.1", emu.control_port), timeout=1).close()


@needs_pyvisa_py
def test_without_a_loop_the_controller_counts_dark_counts() -> None:
    """The detection node's controllers (``light`` None: the loop is the optics node's): the driver opens on them
    through the rewritten station config; with no tag blocks fed the count stream reports dark counts at the bias
    (the fed blocks: tests/sim_backends/test_websq_block_counts.py)."""
    from labqfl.station import emulated_detectors, open_driver

    cfg = parse_station_config(_eos_station(), "eos.toml")
    emu = emulated_detectors(cfg)
    try:
        node_cfg = emu.station_config(cfg)
        assert node_cfg.detectors["D0"].resource == node_cfg.detectors["D1"].resource == emu.emulators[0].resource
        assert node_cfg.detectors["D1"].options["counts_port"] == emu.emulators[0].counts_port
        assert cfg.detectors["D0"].resource == BENCH  # the station's own config untouched
        ic = node_cfg.detectors["D0"].model_copy(update={"timeout_ms": 300})
        d0 = open_driver("D0", ic, None)
        try:
            d0.enabled = True
            assert emu.emulators[0].bias_ua == [12.0, 0.0]
            assert d0.temperature_k == pytest.approx(cfg.detectors["D0"].temperature_k)
            dark = cfg.detectors["D0"].dark_count_rate_hz  # at I0: DCR0, Poisson over 0.5 s (5 sigma)
            assert abs(d0.count_rate_hz(0.5) - dark) * 0.5 < 5 * (dark * 0.5) ** 0.5 + 1
        finally:
            d0.close()
        assert emu.emulators[0].bias_ua == [0.0, 0.0] and emu.emulators[0].enabled is False
    finally:
        emu.close()
