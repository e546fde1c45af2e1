"""Review s33 L7: the 33500B's output load. The driver computes drive voltages into the modulator's 50 Ω RF
input; the generator scales its output to the load it is told (Keysight/Agilent *33500 Series* user's
guide, "Output Termination": ``OUTPut[1|2]:LOAD {<ohms>|INFinity|MIN|MAX}``, 1 Ω … 10 kΩ or infinite,
default 50 Ω; "If you specify a 50 Ω termination but actually terminate into an open circuit, the output
will be twice the value specified"; the query answers the value or 9.9E+37 for INFinity). A channel left
at High-Z from the front panel would drive the modulator with half the voltage: the operating point writes
``OUTP<ch>:LOAD 50`` and reads it back."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from labqfl.drivers.keysight_33500b import Keysight33500B

from labqfl.config import PhaseModulatorConfig, load_station_config
from labqfl.errors import InstrumentReplyError

RES = "TCPIP0::10.0.0.11::inst0::INSTR"


def _awg(sim_library: Callable[..., str], edit: Callable[[str], str] | None = None) -> Keysight33500B:
    lib = sim_library("keysight_33500b.yaml", edit)
    return Keysight33500B("C1.phase_modulator", PhaseModulatorConfig(driver="Keysight33500B", resource=RES,
                                                                     visa_library=lib, timeout_ms=150, v_pi_v=3.9))


def _left_at_high_z(text: str) -> str:
    old = "      load:\n        default: 50.0\n"
    assert old in text
    return text.replace(old, "      load:\n        default: 9.9e+37\n")


def test_the_operating_point_sets_a_high_z_channel_to_50_ohm(sim_library) -> None:  # type: ignore[no-untyped-def]
    awg = _awg(sim_library, _left_at_high_z)
    try:
        assert float(awg.link.query("OUTP1:LOAD?")) == pytest.approx(9.9e37)  # left at INF (front panel)
        awg.apply_operating_point(load_station_config(None))
        assert float(awg.link.query("OUTP1:LOAD?")) == 50.0 and awg.output_enabled is False
    finally:
        awg.close()


def test_a_load_that_does_not_read_back_50_ohm_is_refused(sim_library) -> None:  # type: ignore[no-untyped-def]
    def stuck_at_inf(text: str) -> str:
        return _left_at_high_z(text).replace('q: "OUTP1:LOAD?"\n          r: "{:+.15E}"',
                                             'q: "OUTP1:LOAD?"\n          r: "+9.900000000000000E+37"')
    awg = _awg(sim_library, stuck_at_inf)
    try:
        with pytest.raises(InstrumentReplyError, match=r"output load reads INFinity \(High-Z\); expected 50 Ω.*"
                                                        r"'C1.phase_modulator'.*command 'OUTP1:LOAD\?'"):
            awg.apply_operating_point(load_station_config(None))
    finally:
        awg.close()
