"""The whole chain: each client's randomness → ModulationStreamer → SwabianPulseStreamer → vendor client →
Pulse Streamer emulator → the levels it played → the simulated Sagnac loop (SagnacTestbed.stream_with, its
public entry for external modulation sources) → time tags → slotting.

The loop is driven by what the emulators played, not by the clients' logs: where C1's frames were lost
(played dark), the outcomes carry no trace of C1's log; where both played, the outcomes agree with both
logs up to the loop's visibility."""

from __future__ import annotations

import threading
import tomllib

import numpy as np
import pytest
from labqfl.sim_backends.pulse_streamer import PlayedLevels, PulseStreamerEmulator
from labqfl.sim_backends.qrng import CsprngChoiceLog
from labqfl.sim_backends.testbed import SagnacTestbed

from labqfl.config import InstrumentConfig, default_station_text, parse_station_config
from labqfl.modulation import FrameSource, ModulationStreamer
from labqfl.qkd.slotting import SlottingParams, slot_tags

pytest.importorskip("pulsestreamer")
from labqfl.drivers.swabian_pulsestreamer import SwabianPulseStreamer  # noqa: E402

F = 1000
SLOT_NS = 10
PER = 4
N_FRAMES = 40
LOST_FROM = 20  # C1's randomness is late from this frame on


class LateFrom:
    """C1's randomness for frames >= LOST_FROM arrives only after the stream (a stalled QRNG)."""

    def __init__(self, log: CsprngChoiceLog) -> None:
        self.log, self.client = log, log.client
        self.release = threading.Event()

    def fill_codes(self, s0: int, out: np.ndarray) -> None:
        if s0 >= LOST_FROM * F:
            self.release.wait(timeout=60)
        self.log.fill_codes(s0, out)


def errors_x(outcomes: np.ndarray, a1: np.ndarray, a2: np.ndarray) -> tuple[int, int]:
    """(errors, clicks) over single clicks in slots where both chose basis X: equal bits should give D0
    (outcome 1), different bits D1 (outcome 2) (labqfl.contracts.types sifting rule)."""
    sel = (a1 % 2 == 0) & (a2 % 2 == 0) & (outcomes != 3)
    same = (a1 // 2) == (a2 // 2)
    err = (same & (outcomes == 2)) | (~same & (outcomes == 1))
    return int((err & sel).sum()), int(sel.sum())


def test_played_levels_drive_the_simulated_loop() -> None:
    d = tomllib.loads(default_station_text())
    d["clients"] = d["clients"][:2]
    for c in d["clients"]:
        c.update(intensities=[0.4, 0.1, 0.0], intensity_probs=[0.8, 0.1, 0.1], basis_x_prob=0.8)
    d["loop"]["segments_km"] = [1.0, 1.0, 1.0]
    d["schedule"]["slots_per_frame"] = F
    d["time_tagger"]["frame_slots"] = F
    d["simulation"]["seed"] = 7
    cfg = parse_station_config(d, "chain.toml")

    logs = {c: CsprngChoiceLog(c, (0.8, 0.1, 0.1), 0.8) for c in ("C1", "C2")}
    late = LateFrom(logs["C1"])
    ems = {c: PulseStreamerEmulator() for c in logs}
    pgs, streamers = {}, {}
    try:
        for c, em in ems.items():
            pg = SwabianPulseStreamer(f"{c}.pattern_generator", InstrumentConfig(
                driver="SwabianPulseStreamer", resource=em.ip, options={"frames_per_upload": PER}))
            pg.apply_operating_point(cfg)  # 100 MHz slots, F-slot frames, 3 levels, external clock
            pgs[c] = pg
            source = FrameSource(late if c == "C1" else logs[c], F)
            streamers[c] = ModulationStreamer(pg, source, n_frames=N_FRAMES, max_wait_s=0.05 if c == "C1" else 10.0)
        for st in streamers.values():
            st.start()
        n_up = N_FRAMES // PER
        for k in range(n_up):  # both generators play in lockstep on the shared clock
            for st in streamers.values():
                assert st.wait_uploads(min(k + 2, n_up), timeout=30)
            for em in ems.values():
                em.advance(PER * F * SLOT_NS)
        for st in streamers.values():
            assert st.join(timeout=30) and st.error is None
        late.release.set()
        assert streamers["C1"].record.lost == list(range(LOST_FROM, N_FRAMES))
        assert streamers["C2"].record.lost == []

        vacuum = 2  # the clients' intensity index with μ = 0: what a dark frame sends
        played = {c: PlayedLevels.from_emulator(c, ems[c], pgs[c].decode, slot_ns=SLOT_NS, first_slot=0,
                                                dark_intensity_idx=vacuum) for c in ems}
        assert played["C1"].n_slots == N_FRAMES * F and played["C1"].dark[LOST_FROM * F:].all()

        tb = SagnacTestbed(cfg, threads=1)
        tags = list(tb.stream_with(played, duration_s=N_FRAMES * F * SLOT_NS * 1e-9))
        ts = np.concatenate([b.timestamps for b in tags])
        ch = np.concatenate([b.channels for b in tags])
        ev = slot_tags(ts, ch, SlottingParams.from_config(cfg))
        assert len(ev) > 2000
        slots, out = ev.slots, ev.outcomes
        a1 = logs["C1"].choices(slots).phase_idx  # what C1 *chose* (played only before LOST_FROM)
        a2 = logs["C2"].choices(slots).phase_idx
        k1 = logs["C1"].choices(slots).intensity_idx
        k2 = logs["C2"].choices(slots).intensity_idx
        live = (slots < LOST_FROM * F) & (k1 != vacuum) & (k2 != vacuum)
        lost = (slots >= LOST_FROM * F) & (k1 != vacuum) & (k2 != vacuum)
        e_live, n_live = errors_x(out[live], a1[live], a2[live])
        e_lost, n_lost = errors_x(out[lost], a1[lost], a2[lost])
        assert n_live > 300 and n_lost > 100
        # played frames: the outcomes follow both clients' logs (error ~ (1 - V)/2 = 0.5 %)
        assert e_live / n_live < 0.05
        # C1's lost frames were dark: the outcomes know nothing of what C1's log says (error ~ 1/2)
        assert 0.35 < e_lost / n_lost < 0.65
        # and with one client dark the loop carries less light: fewer clicks per slot
        rate_live = np.count_nonzero(slots < LOST_FROM * F) / (LOST_FROM * F)
        rate_lost = np.count_nonzero(slots >= LOST_FROM * F) / ((N_FRAMES - LOST_FROM) * F)
        assert rate_lost < 0.8 * rate_live
    finally:
        late.release.set()
        for pg in pgs.values():
            pg.close()
        for em in ems.values():
            em.close()
