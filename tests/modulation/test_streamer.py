"""The client's modulation path end to end: its randomness (CSPRNG choice log) → ModulationStreamer →
SwabianPulseStreamer driver → the vendor client → the Pulse Streamer emulator → the levels it played.

Time on the emulator is virtual: the test advances it only after the streamer has the uploads out that the
step needs (``wait_uploads``/``wait_recorded``, conditions, not sleeps), so every run is deterministic."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
from labqfl.sim_backends.pulse_streamer import PulseStreamerEmulator, slot_levels
from labqfl.sim_backends.qrng import CsprngChoiceLog

from labqfl.config import InstrumentConfig
from labqfl.instruments.interfaces import ModulationFrame, PlayedFrames
from labqfl.modulation import FrameSource, ModulationStreamer, PlayedChoiceLog

pytest.importorskip("pulsestreamer")
from labqfl.drivers.swabian_pulsestreamer import SwabianPulseStreamer  # noqa: E402

F = 500
SLOT_NS = 10
PER = 2  # frames per upload
UPLOAD_NS = PER * F * SLOT_NS


@pytest.fixture
def rig() -> Iterator[tuple[PulseStreamerEmulator, SwabianPulseStreamer]]:
    em = PulseStreamerEmulator()
    pg = SwabianPulseStreamer("C1.pattern_generator", InstrumentConfig(
        driver="SwabianPulseStreamer", resource=em.ip, options={"frames_per_upload": PER}))
    pg.configure(slot_period_ns=SLOT_NS, frame_slots=F, n_intensities=3)
    yield em, pg
    pg.close()
    em.close()


def client_log() -> CsprngChoiceLog:
    return CsprngChoiceLog("C1", (0.6, 0.2, 0.2), 0.7)


def run_stream(em: PulseStreamerEmulator, st: ModulationStreamer, n_uploads: int) -> None:
    """Advance the emulator one upload at a time, each step only once the streamer has the next upload out."""
    st.start()
    for k in range(n_uploads):
        assert st.wait_uploads(min(k + 2, n_uploads), timeout=20), f"streamer stuck at {st.uploads} uploads"
        em.advance(UPLOAD_NS)
    assert st.join(timeout=20)


def played_slots(em: PulseStreamerEmulator, pg: SwabianPulseStreamer) -> dict[str, np.ndarray]:
    """Everything the emulator put on its outputs, decoded per slot, segments checked back to back."""
    starts = [s.start_ns for s in em.played]
    assert starts == [k * UPLOAD_NS for k in range(len(starts))], "playback left the slot grid"
    return pg.decode(np.concatenate([slot_levels(s, SLOT_NS) for s in em.played]))


def assert_frames_equal_log(out: dict[str, np.ndarray], log: CsprngChoiceLog, record: PlayedFrames,
                            first: int) -> None:
    """Played frames carry exactly the client's choices with a marker; lost frames are dark."""
    idx, ok = record.as_arrays()
    for f, played in zip(idx.tolist(), ok.tolist(), strict=True):
        sl = slice((f - first) * F, (f - first + 1) * F)
        if played:
            rec = log.choices(np.arange(f * F, (f + 1) * F, dtype=np.int64))
            assert np.array_equal(out["phase_idx"][sl], rec.phase_idx), f"frame {f}: phases differ from the log"
            assert np.array_equal(out["intensity_idx"][sl], rec.intensity_idx), f"frame {f}: intensities differ"
            assert out["marker"][sl][0] and not out["marker"][sl][1:].any()
        else:
            assert out["dark"][sl].all() and not out["marker"][sl].any(), f"lost frame {f} was not dark"


def test_client_randomness_is_played_exactly(rig: tuple[PulseStreamerEmulator, SwabianPulseStreamer]) -> None:
    em, pg = rig
    log = client_log()
    st = ModulationStreamer(pg, FrameSource(log, F), first_frame=3, n_frames=8, max_wait_s=10.0)
    run_stream(em, st, 4)
    assert st.error is None and st.late_frames == 0 and em.underflows == []
    assert st.record.played == list(range(3, 11)) and st.record.lost == []
    out = played_slots(em, pg)
    assert out["marker"].sum() == 8
    assert_frames_equal_log(out, log, st.record, first=3)
    # the client's log restricted to what was played answers for those slots and no others
    played = PlayedChoiceLog(log, st.record)
    slots = np.arange(3 * F, 11 * F, 7, dtype=np.int64)
    assert np.array_equal(played.choices(slots).phase_idx, log.choices(slots).phase_idx)
    with pytest.raises(ValueError, match="not played"):
        played.choices(np.array([11 * F], dtype=np.int64))


class GatedLog:
    """A client whose randomness for frames >= ``gate_frame`` arrives only after ``release`` (a slow QRNG)."""

    def __init__(self, log: CsprngChoiceLog, gate_frame: int) -> None:
        self.log, self.client, self.gate = log, log.client, gate_frame * F
        self.release = threading.Event()

    def fill_codes(self, s0: int, out: np.ndarray) -> None:
        if s0 >= self.gate:
            self.release.wait(timeout=30)
        self.log.fill_codes(s0, out)


def test_late_client_frames_are_lost_never_replayed(rig: tuple[PulseStreamerEmulator, SwabianPulseStreamer]) -> None:
    em, pg = rig
    log = client_log()
    gated = GatedLog(log, gate_frame=2)
    st = ModulationStreamer(pg, FrameSource(gated, F), n_frames=8, max_wait_s=0.05)
    try:
        run_stream(em, st, 4)
    finally:
        gated.release.set()  # the late frames arrive now: they must be discarded, not played
    assert st.error is None and em.underflows == []
    assert st.record.played == [0, 1] and st.record.lost == [2, 3, 4, 5, 6, 7]
    assert st.late_frames == 6
    out = played_slots(em, pg)
    assert_frames_equal_log(out, log, st.record, first=0)
    assert out["marker"].sum() == 2  # only the played frames were marked, each once
    mask = st.record.slot_mask(np.arange(0, 8 * F, dtype=np.int64))
    assert mask[: 2 * F].all() and not mask[2 * F:].any()


def test_generator_underflow_ends_the_stream_with_the_rest_lost(
        rig: tuple[PulseStreamerEmulator, SwabianPulseStreamer]) -> None:
    em, pg = rig
    log = client_log()
    st = ModulationStreamer(pg, FrameSource(log, F), n_frames=12, max_wait_s=10.0)
    st.start()
    assert st.wait_uploads(2, timeout=20)
    em.advance(3 * UPLOAD_NS)  # the host fell behind: both buffers played out, the third slot never came in time
    assert st.join(timeout=20)
    assert st.error is not None and "underflow" in st.error
    assert len(em.underflows) == 1
    assert st.record.played == [0, 1, 2, 3]
    assert st.record.lost == list(range(4, 12))  # every frame after the underflow, uploaded or not
    assert_frames_equal_log(played_slots(em, pg), log, st.record, first=0)
    assert em.output == (0, 0, 0)


def test_duty_cycle_dark_frames(rig: tuple[PulseStreamerEmulator, SwabianPulseStreamer]) -> None:
    em, pg = rig
    log = client_log()
    st = ModulationStreamer(pg, FrameSource(log, F), n_frames=8, dark_frames_between=1, max_wait_s=10.0)
    run_stream(em, st, 4)
    assert st.record.played == [0, 2, 4, 6] and st.record.lost == [1, 3, 5, 7] and st.late_frames == 0
    assert_frames_equal_log(played_slots(em, pg), log, st.record, first=0)


def test_played_frames_record_rules() -> None:
    r = PlayedFrames(4)
    r.mark(0, True)
    r.mark(2, False)
    r.mark(3, True)
    with pytest.raises(ValueError, match="recorded once"):
        r.mark(0, True)
    assert r.played == [0, 3] and r.lost == [2] and r.status(1) is None and 2 in r and len(r) == 3
    assert r.slot_mask(np.arange(16, dtype=np.int64)).tolist() == [True] * 4 + [False] * 8 + [True] * 4
    with pytest.raises(ValueError, match="phase indices"):
        ModulationFrame(0, np.array([4], np.uint8), np.array([0], np.uint8))
    assert "n_slots=4" in repr(ModulationFrame.dark_frame(1, 4)) and "dark" in repr(ModulationFrame.dark_frame(1, 4))


class _VerdictsPausedMidRead(dict):
    """A played-frames status map that runs ``mid_read`` once, after the first entry a reader takes: the
    point at which a verdict written by another thread would change the map under the reader."""

    def __init__(self, data: dict[int, bool], mid_read) -> None:
        super().__init__(data)
        self.mid_read = mid_read

    def items(self):  # type: ignore[override]
        for n, kv in enumerate(super().items()):
            if n == 1 and self.mid_read is not None:
                hook, self.mid_read = self.mid_read, None
                hook()
            yield kv


def test_a_verdict_from_the_feeder_waits_for_a_reader_of_the_record() -> None:
    # the feeder thread marks verdicts while the distiller, a client node or the GUI reads the record: a
    # verdict must not land in the middle of a read (unlocked, `played` raised "dictionary changed size
    # during iteration" here, or a read mixed two states of the record)
    r = PlayedFrames(4)
    for f in range(3):
        r.mark(f, f != 1)
    marked = threading.Event()
    writer = threading.Thread(target=lambda: (r.mark(3, True), marked.set()), daemon=True)

    def mid_read() -> None:
        writer.start()
        # the writer cannot finish while the read holds the record's lock (the wait only bounds the
        # old, unlocked behaviour, where the verdict lands at once)
        assert not marked.wait(0.5), "a verdict was recorded in the middle of a read of the record"

    r._status = _VerdictsPausedMidRead(r._status, mid_read)
    assert r.played == [0, 2]  # the read saw the record as it was when the read began
    writer.join(timeout=10.0)
    assert marked.is_set() and r.played == [0, 2, 3] and r.status(3) is True and len(r) == 4
