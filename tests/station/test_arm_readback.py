"""Review s36 M2: arming reads back what it set, and refuses (everything safe) when an instrument did not follow.

The example pyvisa-sim station, with one instrument model edited to accept a write without error and keep its
old state, as a real unit does when a hardware condition overrides the command:

* the PRO8000's ``:LASER ON`` accepted, ``:LASER?`` still OFF (an open interlock). ``:LASER?`` is the query
  of Thorlabs' PRO800/8000 VXIpnp driver ``pro8.c`` ``Pro8_LdcGetLdOutput`` (answers ``ON``/``OFF``), also
  PyMeasure's ``ThorlabsPro8000.LDCStatus``;
* an N7764A output (shutter) that stays closed after ``:OUTP<n>:STAT 1`` (Keysight N77xx programming guide,
  ``:OUTPut[n][:STATe]``, read with ``:OUTP<n>:STAT?``).

Every role's state is read back after the refusal (review s36 lab2 L5): the detectors, the master clock and
C1's pattern generator (Pulse Streamers, read with the vendor client's ``isStreaming()``) too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("pulsestreamer")  # the master clock and C1's generator: the vendor client
from labqfl.sim_backends.pulse_streamer import PulseStreamerEmulator  # noqa: E402

from labqfl.config import load_station_config  # noqa: E402
from labqfl.errors import InstrumentError  # noqa: E402
from labqfl.station import Station, arm_instruments  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "station_pyvisa_sim.toml"
SIM = ROOT / "sim_backends" / "visa"


@pytest.fixture
def pulse_streamers() -> Iterator[tuple[PulseStreamerEmulator, PulseStreamerEmulator]]:
    """Two emulated Pulse Streamers (pulsestreamer 2.1.2's own client talks to them): the master clock and C1's
    pattern generator of the station below."""
    a, b = PulseStreamerEmulator(), PulseStreamerEmulator()
    yield a, b
    a.close()
    b.close()


def _station_file(tmp_path: Path, model: str, edit, streamers) -> Path:  # type: ignore[no-untyped-def]
    """The example station with ``model`` (a shipped pyvisa-sim file) replaced by an edited copy next to it, a
    master clock (SwabianPulseStreamerClock) and C1's pattern generator (SwabianPulseStreamer) on the emulators."""
    text = edit((SIM / model).read_text(encoding="utf-8"))
    (tmp_path / model).write_text(text, encoding="utf-8")
    station = EXAMPLE.read_text(encoding="utf-8").replace(f'"@sim:{model}"', f'"{tmp_path / model}@sim"')
    clock, pg = streamers
    station = station.replace("\n[laser]\n", f'\n[master_clock]\ndriver = "SwabianPulseStreamerClock"\n'
                              f'resource = "{clock.ip}"\n\n[laser]\n', 1)
    station = station.replace("\n[clients.attenuator]\n", f'\n[clients.pattern_generator]\ndriver = "SwabianPulseStreamer"\n'
                              f'resource = "{pg.ip}"\noptions = {{ link_bytes_per_s = 1e9 }}\n'
                              "\n[clients.attenuator]\n", 1)
    p = tmp_path / "station.toml"
    p.write_text(station, encoding="utf-8")
    return p


def _interlock(text: str) -> str:
    """``:LASER ON``/``OFF`` accepted (no error), ``:LASER?`` always ``OFF``."""
    block = re.search(r"\n      laser:\n(?:        .*\n)+", text)
    assert block, "the PRO8000 model's laser property moved"
    text = text.replace(block.group(0), "\n")
    return text.replace('      - q: ":SYST:ANSW VALUE"\n',
                        '      - q: ":SYST:ANSW VALUE"\n      - q: ":LASER?"\n        r: "OFF"\n'
                        '      - q: ":LASER ON"\n      - q: ":LASER OFF"\n')


def _states(st: Station) -> dict[str, object]:
    """Every role's armed state, read from the instruments (the Pulse Streamers: ``isStreaming()``)."""
    return {"master_clock": st["master_clock"].output_enabled, "laser": st["laser"].output_enabled,
            "C1.pattern_generator": st["C1.pattern_generator"].output_enabled,
            **{f"{c}.shutter_closed": st[f"{c}.attenuator"].shutter_closed for c in ("C1", "C2", "C3", "C4")},
            **{f"{c}.pm": st[f"{c}.phase_modulator"].output_enabled for c in ("C1", "C2", "C3", "C4")},
            **{d: st[d].enabled for d in ("D0", "D1")}}


#: Every role in its safe state.
SAFE = {"master_clock": False, "laser": False, "C1.pattern_generator": False,
        **{f"{c}.shutter_closed": True for c in ("C1", "C2", "C3", "C4")},
        **{f"{c}.pm": False for c in ("C1", "C2", "C3", "C4")}, "D0": False, "D1": False}


def test_a_laser_that_stays_off_after_laser_on_is_refused_and_everything_left_safe(
        tmp_path: Path, pulse_streamers: tuple[PulseStreamerEmulator, PulseStreamerEmulator]) -> None:
    st = Station(load_station_config(_station_file(tmp_path, "thorlabs_pro8000.yaml", _interlock, pulse_streamers)))
    try:
        st.safe_state()  # the simulated detectors open armed, unlike real ones: start from the safe state
        assert _states(st) == SAFE
        with pytest.raises(InstrumentError) as err:
            arm_instruments(st.instruments)
        line = str(err.value)
        assert "\n" not in line
        assert line.startswith("laser: :LASER ON accepted but :LASER? reads OFF — interlock open?"), line
        # armed before the laser (arming order: detectors, master clock, laser, modulators, shutters): the
        # detectors and the master clock are put back in their safe state; no shutter had opened yet
        assert _states(st) == SAFE
    finally:
        st.close()


def _shutter_stuck(text: str) -> str:
    """Channel 5 (C3): ``:OUTP5:STAT 1`` accepted (no error), ``:OUTP5:STAT?`` always 0 (closed)."""
    block = re.search(r"\n      output_5:\n(?:        .*\n)+", text)
    assert block, "the N7764A model's output_5 property moved"
    text = text.replace(block.group(0), "\n")
    return text.replace('      - q: "*RST"\n', '      - q: "*RST"\n      - q: ":OUTP5:STAT?"\n        r: "0"\n'
                        '      - q: ":OUTP5:STAT 1"\n      - q: ":OUTP5:STAT 0"\n')


def test_a_shutter_that_stays_closed_is_refused_by_the_generic_read_back(
        tmp_path: Path, pulse_streamers: tuple[PulseStreamerEmulator, PulseStreamerEmulator]) -> None:
    st = Station(load_station_config(_station_file(tmp_path, "keysight_n7764a.yaml", _shutter_stuck, pulse_streamers)))
    try:
        st.safe_state()
        assert _states(st) == SAFE
        with pytest.raises(InstrumentError) as err:
            arm_instruments(st.instruments)
        line = str(err.value)
        assert "\n" not in line
        assert line.startswith("C3.attenuator: :OUTP5:STAT 1 accepted but :OUTP5:STAT? reads shutter_closed=True"), line
        # the detectors (biased), the master clock and the laser (on), the modulators and the shutters of C1/C2
        # (open) are back in their safe state
        assert _states(st) == SAFE
    finally:
        st.close()
