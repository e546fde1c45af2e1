"""A Pulse Streamer's link carries fresh frames at 100 MHz only with a duty cycle (review s36 H3).

Sources: the vendor client pulsestreamer 2.1.2 packs each sequence step as ``struct`` format ``'IBhh'``
(``PulseStreamerBase.enc_binary``: duration, digital mask, a0, a1 = 9 bytes) and sends the steps over the
binary port; random levels change nearly every slot, so fresh frames need up to 9 B per slot (0.9 GB/s at
100 MHz against ~1.25e8 B/s raw for gigabit Ethernet). The station option
``pattern_generator.options.dark_frames_between`` (driver docstring, "Bandwidth") is checked at load and
reaches the client's ``ModulationStreamer`` through ``ClientStreams``; dark frames are recorded lost.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
from labqfl.sim_backends.pulse_streamer import PulseStreamerEmulator
from labqfl.sim_backends.qrng import CsprngChoiceLog

from labqfl.config import InstrumentConfig, parse_station_config
from labqfl.errors import ConfigError
from labqfl.modulation import ClientStreams

pytest.importorskip("pulsestreamer")
from labqfl.drivers.swabian_pulsestreamer import SwabianPulseStreamer  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "station_emulated_hardware.toml"
F, SLOT_NS, PER = 500, 10, 2


def test_station_load_refuses_fresh_frames_the_link_cannot_carry() -> None:
    d = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert all(c["pattern_generator"]["options"]["dark_frames_between"] == 10 for c in d["clients"])
    cfg = parse_station_config(d, "example")  # as shipped: 1 fresh frame in 11 fits
    f, rate = cfg.time_tagger.frame_slots, cfg.laser.rep_rate_hz  # 65536 slots, 100 MHz
    assert rate * 9 * (f + 9) / (10 * f) <= 1e8 < rate * 9 * (f + 8) / (9 * f)  # 9 dark frames fit, 8 do not (9 aliases with the 6-frame schedule: test_duty_cycle_pairs)
    d["clients"][1]["pattern_generator"]["options"]["dark_frames_between"] = 0
    with pytest.raises(ConfigError) as err:
        parse_station_config(d, "example")
    msg = str(err.value)
    assert "\n" not in msg
    assert "field 'clients.1.pattern_generator.options.dark_frames_between' (role C2.pattern_generator)" in msg
    assert "need 9e+08 B/s" in msg and "expected dark_frames_between >= 10 (1 fresh frame in 11)" in msg and msg.endswith("got 0")
    d["clients"][1]["pattern_generator"]["options"].update(dark_frames_between=0, link_bytes_per_s=1e9)
    parse_station_config(d, "example")  # a faster link carries every frame fresh


def test_client_streams_play_the_stations_duty_cycle_and_dark_frames_are_no_key_slots() -> None:
    em = PulseStreamerEmulator()
    pg = SwabianPulseStreamer("C1.pattern_generator", InstrumentConfig(
        driver="SwabianPulseStreamer", resource=em.ip, options={"frames_per_upload": PER, "dark_frames_between": 2}))
    try:
        pg.configure(slot_period_ns=SLOT_NS, frame_slots=F, n_intensities=3)
        log = CsprngChoiceLog("C1", (0.6, 0.2, 0.2), 0.7)
        streams = ClientStreams({"C1": pg}, {"C1": log}, 6 * F)
        st = streams.streamers["C1"]
        assert st.dark_frames_between == 2
        streams.start()
        for k in range(3):  # 3 uploads of 2 frames; the emulator's time advances one upload at a time
            assert st.wait_uploads(min(k + 2, 3), timeout=20)
            em.advance(PER * F * SLOT_NS)
        assert st.join(timeout=20)
        rec = streams.finish()["C1"]
    finally:
        pg.close()
        em.close()
    assert sorted(rec.played) == [0, 3] and sorted(rec.lost) == [1, 2, 4, 5]
    assert streams.summary()["C1"] == {"frames": 6, "played": 2, "lost": 4, "late": 0, "error": None, "dark": 4}
    slots = np.arange(6 * F, dtype=np.int64)
    assert rec.slot_mask(slots).sum() == 2 * F  # only the fresh frames' slots are measured slots
    assert not rec.slot_mask(slots[F:3 * F]).any()
