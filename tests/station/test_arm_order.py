"""Review s36 lab2 L2: detectors are biased in the dark.

Arming (labqfl.station.arm_instruments) biases D0/D1 before the laser, its trigger and the modulators are switched
on and before any shutter opens; a latched nanowire's bias reset (SingleQuantumEos: ramped to 0 µA and back,
[W] ``set_bias_current`` of Single Quantum's WebSQControl.py) happens with the clients' shutters closed (Keysight
N77xx / simulated VOA ``shutter_closed``) and they open again after it. Before, arming went by role order (laser,
shutters, then detectors), and the reset ramped the bias back up under the flux that latched the nanowire.

The station: the embedded default (simulated loop, laser and VOAs) with D0/D1 on the real Eos driver over the
emulated WebSQ controller (simulation.emulate_detectors), as tests/station/test_emulated_detectors.py builds it.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from labqfl.config import parse_station_config
from labqfl.station import Station, arm_instruments, arming_settings

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pyvisa_py") is None,
                                reason="pyvisa-py (the 'hardware' extra) is not installed")


def _eos_station() -> Any:
    from tests.station.test_emulated_detectors import _eos_station as base

    return parse_station_config(base(), "eos.toml")


def _light(st: Station) -> dict[str, Any]:
    return {"laser": bool(st["laser"].output_enabled),
            "open_shutters": [c for c in st.config.client_names if not st[f"{c}.attenuator"].shutter_closed]}


def _watch_bias(st: Station, seen: list[tuple[str, float, dict[str, Any]]]) -> None:
    for name in ("D0", "D1"):
        det = st[name]
        write = det._write_bias  # type: ignore[attr-defined]

        def watched(ua: float, name: str = name, write: Any = write) -> None:
            seen.append((name, ua, _light(st)))
            write(ua)
        det._write_bias = watched  # type: ignore[attr-defined]


def test_arming_biases_the_detectors_before_any_light_reaches_the_loop() -> None:
    st = Station(_eos_station(), guard=False)
    try:
        st.safe_state()  # simulated laser and VOAs open on, unlike real ones: start from the safe state
        assert _light(st) == {"laser": False, "open_shutters": []}
        order = [(role, attr) for role, _, attr, _ in arming_settings(st.instruments)]
        kinds = [("detector" if attr == "enabled" else "shutter" if attr == "shutter_closed" else "light")
                 for _, attr in order]
        assert kinds == sorted(kinds, key=["detector", "light", "shutter"].index), order
        assert order[:2] == [("D0", "enabled"), ("D1", "enabled")] and order[-1][1] == "shutter_closed"
        seen: list[tuple[str, float, dict[str, Any]]] = []
        _watch_bias(st, seen)
        arm_instruments(st.instruments)
        assert {n for n, _, _ in seen} == {"D0", "D1"}
        assert all(light == {"laser": False, "open_shutters": []} for _, _, light in seen), seen
        assert _light(st) == {"laser": True, "open_shutters": st.config.client_names}
    finally:
        st.close()


def test_a_latch_reset_ramps_the_bias_up_with_the_shutters_closed_and_opens_them_after() -> None:
    st = Station(_eos_station(), guard=False)
    try:
        st.safe_state()
        arm_instruments(st.instruments)
        emu = st._detector_emulators.emulators[0]
        seen: list[tuple[str, float, dict[str, Any]]] = []
        _watch_bias(st, seen)
        emu.latch(1)  # D0 latched by a bright pulse while armed
        assert st["D0"].count_rate_hz(0.05) > 0  # the low reading resets it once, and it counts again
        assert emu.latched == [False, False]
        d0 = [(ua, light) for n, ua, light in seen if n == "D0"]
        assert d0 and min(ua for ua, _ in d0) == 0.0 and d0[-1][0] == st.config.detectors["D0"].bias_current_ua
        assert all(light["open_shutters"] == [] for _, light in d0), d0
        assert _light(st) == {"laser": True, "open_shutters": st.config.client_names}
    finally:
        st.close()
