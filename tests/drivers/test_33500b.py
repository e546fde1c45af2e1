"""Keysight33500B (PyMeasure Agilent33500 underneath) against pyvisa-sim and expected_protocol.

Command strings: Keysight *33500B/33600A Series Trueform Waveform Generators — Operating and Service
Guide*, SCPI Programming Reference chapter, subsystems OUTPut (``OUTP<ch>``), SOURce:VOLTage
(``SOUR<ch>:VOLT``, ``:OFFS``), TRIGger (``TRIG<ch>:DEL``, ``TRIG<ch>:SOUR EXT``), FORMat (``FORM:BORD SWAP``:
binary blocks least-significant byte first), FUNCtion (``FUNC ARB``, ``FUNC:ARB <name>``, ``FUNC:ARB:SRAT``,
``FUNC:ARB:FILT STEP|OFF``), DATA (``DATA:VOL:CLE``; ``DATA:ARB:DAC <name>, <IEEE 488.2 binary block of
int16 codes -32767…+32767>``), BURSt (``BURS:NCYC``, ``BURS:STAT``), ROSCillator (``ROSC:SOUR EXT|INT``),
SYSTem (``SYST:ERR?``). The guide's online help (rfmw.em.keysight.com/spdhelpfiles/33500/webhelp,
"Waveform Generation Tutorial": 8 … 1,000,000 points; the Normal filter's −3 dB point at 27 % of the
sample rate) was read here; the subsystem pages' section numbers could not be checked here, and the
16,000,000-point memory option is from Keysight's data sheet, not checked against the manual text.
The same strings are PyMeasure's ``agilent33500.py`` where it has them.
"""

from __future__ import annotations

import copy
import math
import struct
import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from labqfl.drivers.keysight_33500b import Keysight33500B
from pymeasure.test import expected_protocol

from labqfl.app.acquire import Acquisition
from labqfl.config import (
    ConfigError,
    PhaseModulatorConfig,
    SyncConfig,
    load_station_config,
    parse_station_config,
    require_pattern_generators,
)
from labqfl.errors import InstrumentQueueError, InstrumentReplyError, InstrumentTimeout

RES = "TCPIP0::10.0.0.11::inst0::INSTR"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "station_pyvisa_sim.toml"


@pytest.fixture
def awg(sim_library):  # type: ignore[no-untyped-def]
    cfg = PhaseModulatorConfig(driver="Keysight33500B", resource=RES, visa_library=sim_library("keysight_33500b.yaml"),
                               timeout_ms=150, v_pi_v=3.9)
    d = Keysight33500B("C1.phase_modulator", cfg)
    yield d
    d.close()


def test_33500b_identity_settings_and_ranges(awg: Keysight33500B) -> None:
    assert "33522B" in awg.identity()
    awg.output_enabled, awg.amplitude_vpp, awg.gate_delay_ps = True, 2.5, 3150
    awg.v_pi_v, awg.bias_phase_rad = 4.2, 0.1
    assert (awg.output_enabled, awg.amplitude_vpp, awg.v_pi_v, awg.bias_phase_rad) == (True, 2.5, 4.2, 0.1)
    assert awg.gate_delay_ps == pytest.approx(3150)
    for name, bad in [("amplitude_vpp", 0.0), ("amplitude_vpp", 11), ("gate_delay_ps", -1), ("v_pi_v", 0),
                      ("bias_phase_rad", 10.0), ("output_enabled", None)]:
        with pytest.raises(ValueError, match=name):
            setattr(awg, name, bad)
    awg.safe_state()
    assert awg.output_enabled is False


def test_33500b_pattern_and_dc(awg: Keysight33500B) -> None:
    pattern = np.array([0, 1, 2, 3] * 4, dtype=np.uint8)
    samples, vpp, offset = awg.pattern_levels(pattern)
    volts = offset + samples * vpp / 2
    # phase (a·π/2) wrapped into [-π, π) times Vπ/π
    assert volts[:4] == pytest.approx([0.0, 3.9 / 2, -3.9, -3.9 / 2])
    assert awg.status()["pattern_length"] == 0  # the binary upload itself: test_33500b_exact_protocol
    awg.set_dc_voltage(-1.5)
    assert awg.link.query("SOUR1:FUNC?") == "DC" and float(awg.link.query("SOUR1:VOLT:OFFS?")) == -1.5
    with pytest.raises(ValueError, match="0..3"):
        awg.load_pattern(np.array([0, 4] * 4))
    with pytest.raises(ValueError, match="slots"):
        awg.load_pattern(np.zeros(3, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"8 to 1000000 slots \(options.max_points\)"):
        awg.pattern_levels(np.zeros(1_000_001, dtype=np.uint8))  # beyond the standard memory
    with pytest.raises(ValueError, match="volts"):
        awg.set_dc_voltage(7)
    awg.v_pi_v = 8.0
    with pytest.raises(ValueError, match="output window"):
        awg.load_pattern(pattern)
    assert math.isfinite(awg.drive_voltage(math.pi))


def test_33500b_filter_and_reference(awg: Keysight33500B) -> None:
    """On open the arbitrary-waveform filter is STEP (the instrument's NORMal default smears 10 ns slots);
    the operating point locks the generator to the station's reference ([sync] pattern_generator_reference)."""
    assert awg.link.query("SOUR1:FUNC:ARB:FILT?") == "STEP"
    assert awg.link.query("ROSC:SOUR?") == "INT"  # nothing written yet
    station = load_station_config(None)
    assert station.sync.pattern_generator_reference == "external"
    awg.apply_operating_point(station)
    assert awg.link.query("ROSC:SOUR?") == "EXT" and awg.status()["reference"] == "EXT"
    awg.apply_operating_point(station.model_copy(update={"sync": SyncConfig(pattern_generator_reference="internal")}))
    assert awg.link.query("ROSC:SOUR?") == "INT"


def test_33500b_memory_and_filter_options(sim_library) -> None:  # type: ignore[no-untyped-def]
    """options.max_points is the unit's memory (1,000,000 standard, 16,000,000 with the memory option);
    options.arb_filter offers STEP or OFF only."""
    big = Keysight33500B("pm", PhaseModulatorConfig(driver="Keysight33500B", resource=RES, timeout_ms=150,
                                                     visa_library=sim_library("keysight_33500b.yaml"),
                                                     options={"max_points": 16_000_000, "arb_filter": "OFF",
                                                              "sample_rate_hz": 62.5e6}))
    assert big.max_points == 16_000_000 and big.link.query("SOUR1:FUNC:ARB:FILT?") == "OFF"
    big.close()
    samples, _, _ = big.pattern_levels(np.zeros(1_000_001, dtype=np.uint8) | np.arange(1_000_001, dtype=np.uint8) % 4)
    assert samples.size == 1_000_001
    for bad in ({"max_points": 65536}, {"arb_filter": "NORM"}):
        with pytest.raises(ConfigError, match=f"options.{next(iter(bad))}"):
            Keysight33500B("pm", PhaseModulatorConfig(driver="Keysight33500B", resource=RES, options=bad))


def test_33500b_error_queue_and_timeout(awg: Keysight33500B) -> None:
    with pytest.raises(InstrumentQueueError, match="TRIG1:DEL"):
        awg.link.write("TRIG1:DEL 5000")
    with pytest.raises(InstrumentTimeout, match="C1.phase_modulator"):
        awg.link.query("SOUR1:NOPE?")


def test_33500b_two_threads(awg: Keysight33500B, threads) -> None:  # type: ignore[no-untyped-def]
    def work(i: int) -> None:
        for _k in range(15):
            awg.amplitude_vpp = 1.0 + i
            assert awg.amplitude_vpp in (1.0, 2.0)
            awg.output_enabled = bool(i)
    threads(work)


def test_33500b_exact_protocol() -> None:
    cfg = PhaseModulatorConfig(driver="Keysight33500B", resource=RES, v_pi_v=4.0, options={"channel": 2, "sample_rate_hz": 1e8})
    ok = (b"SYST:ERR?", b'+0,"No error"')
    # phases 0, π/2, π, 3π/2 with Vπ = 4 V: 0, 2, -4 (wrapped), -2 V -> 6 Vpp around -1 V -> DAC codes
    codes = [10922, 32767, -32767, -10922] * 2
    block = b"#216" + struct.pack("<8h", *codes)  # IEEE 488.2 definite block: 1 digit, 16 bytes, LSB first
    with expected_protocol(lambda a: Keysight33500B("pm", cfg, adapter=a), [
        (b"*IDN?", b"Agilent Technologies,33522B,X,1"),
        (b"FORM:BORD SWAP", None), ok,
        (b"SOUR2:FUNC:ARB:FILT STEP", None), ok,
        (b"OUTP2 1", None), ok,
        (b"SOUR2:VOLT 2.500000", None), ok,
        (b"TRIG2:DEL 3.150000e-09", None), ok,
        (b"SOUR2:DATA:VOL:CLE", None), ok,
        (b"SOUR2:DATA:ARB:DAC LABQFL, " + block + b"\n", None), ok,
        (b"SOUR2:FUNC ARB", None), ok,
        (b"SOUR2:FUNC:ARB LABQFL", None), ok,
        (b"SOUR2:FUNC:ARB:SRAT 100000000.000000", None), ok,
        (b"SOUR2:VOLT 6.000000", None), ok,
        (b"SOUR2:VOLT:OFFS -1.000000", None), ok,
        (b"SOUR2:BURS:NCYC 1", None), ok,
        (b"SOUR2:BURS:STAT 1", None), ok,
        (b"TRIG2:SOUR EXT", None), ok,
        (b"OUTP2?", b"1"), (b"SOUR2:VOLT?", b"+6.0E+00"), (b"TRIG2:DEL?", b"+3.15E-09"),
        (b"OUTP2 0", None), ok,
    ]) as d:
        d.output_enabled, d.amplitude_vpp, d.gate_delay_ps = True, 2.5, 3150
        d.load_pattern(np.array([0, 1, 2, 3] * 2, dtype=np.uint8))
        assert d.output_enabled and d.amplitude_vpp == 6.0 and d.gate_delay_ps == pytest.approx(3150)
        d.close()


def test_33500b_without_pattern_generator_is_refused_with_a_real_tagger() -> None:
    """A 33500B replays one fixed waveform (no streaming): with a real time tagger, a client whose phase
    modulator it is and that has no pattern_generator would acquire with no per-slot randomness, so an
    acquisition (labqfl.app.acquire.Acquisition calls require_pattern_generators) is refused in one line
    naming the field; with a pattern generator, or with the simulated tagger (the simulated loop takes
    the choices directly), it passes."""
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    require_pattern_generators(parse_station_config(copy.deepcopy(data), "ex.toml"), "ex.toml")  # simulated tagger
    data["time_tagger"].update(driver="SwabianTimeTagger", options={"serial": "X"})
    cfg = parse_station_config(copy.deepcopy(data), "ex.toml")  # station show / check still load it
    with pytest.raises(ConfigError, match=r"^ex\.toml: field 'clients\.0\.pattern_generator' \(role C1\.pattern_generator\): "
                       r"missing; Keysight33500B \(C1\.phase_modulator\) replays one fixed waveform, .*expected a "
                       r"pattern_generator"):
        require_pattern_generators(cfg, "ex.toml")
    with pytest.raises(ConfigError, match="clients.0.pattern_generator"):
        Acquisition(SimpleNamespace(config=cfg))
    for k, c in enumerate(data["clients"]):
        c["pattern_generator"] = {"driver": "SwabianPulseStreamer", "resource": f"127.0.17.{k + 1}",
                                  "options": {"dark_frames_between": 10}}  # the link budget at 100 MHz, coprime to 6 frames
    require_pattern_generators(parse_station_config(data, "ex.toml"), "ex.toml")
    bit = copy.deepcopy(data)  # the bit-driven phase modulator: its bits come from a generator too
    del bit["clients"][1]["pattern_generator"]
    bit["clients"][1]["phase_modulator"] = {"driver": "GenericBitDrivenPhaseModulator", "resource": "ASRL9::INSTR"}
    with pytest.raises(ConfigError, match=r"field 'clients\.1\.pattern_generator' .*GenericBitDrivenPhaseModulator "
                       r"\(C2\.phase_modulator\) takes its phase bits from a pattern generator"):
        require_pattern_generators(parse_station_config(bit, "ex.toml"), "ex.toml")


# -- review s31 B1/B2/B3/C2 -------------------------------------------------------------------------------
OPEN_33500B = [(b"*IDN?", b"Agilent Technologies,33522B,X,1"), (b"FORM:BORD SWAP", None),
               (b"SYST:ERR?", b'+0,"No error"'), (b"SOUR1:FUNC:ARB:FILT STEP", None), (b"SYST:ERR?", b'+0,"No error"')]


@pytest.mark.parametrize("query,reply,match", [
    (b"OUTP1?", b"2", "unexpected reply: Value 2.0 not found in mapped values"),
    (b"SOUR1:VOLT?", b"abc", "unexpected reply 'abc'; expected a number"),
    (b"SOUR1:VOLT?", b"9.9E+37", "SCPI overflow"),
])
def test_33500b_bad_replies_are_one_clear_error(query: bytes, reply: bytes, match: str) -> None:
    """OUTPut and SOURce:VOLTage subsystems: a reply PyMeasure cannot map (its KeyError), a non-number, or the
    SCPI overflow value is one InstrumentReplyError naming instrument, resource and command."""
    cfg = PhaseModulatorConfig(driver="Keysight33500B", resource=RES)
    with expected_protocol(lambda a: Keysight33500B("pm", cfg, adapter=a), [*OPEN_33500B, (query, reply)]) as d:
        with pytest.raises(InstrumentReplyError, match=f"{match}.*'pm'.*{RES}"):
            _ = d.output_enabled if query == b"OUTP1?" else d.amplitude_vpp


def test_33500b_filter_off_is_refused_above_62_5_msa_s() -> None:
    """Keysight 33500/33600 help, RATE subsystem: with FUNC:ARB:FILT OFF the 33500 Series plays at most
    62.5 MSa/s (limit inferred from that page); refused at station load, naming both options."""
    with pytest.raises(ConfigError, match=r"arb_filter = 'OFF' with sample_rate_hz = 1e\+08.*62.5"):
        Keysight33500B("pm", PhaseModulatorConfig(driver="Keysight33500B", resource=RES,
                                                  options={"arb_filter": "OFF"}))
