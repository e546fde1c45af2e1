"""Review s36 lab2 M2: the Pulse Streamer's ``output_enabled`` is read back from the instrument, not from the
driver's cache.

The vendor client pulsestreamer 2.1.2 has ``isStreaming()`` (``jrpc/pulse_streamer_jrpc.py``
``PulseStreamer.isStreaming`` → ``bool(self.proxy.isStreaming())``; the gRPC client ``grpc/pulse_streamer_grpc.py``
has the same call). The emulator answers it from what really plays (``playing is not None``). The fault injected
here is a Pulse Streamer that accepts ``stream()``/``upload``+``start`` without error and plays nothing (for
example its external 10 MHz reference lost): the emulator's ``_begin`` is made a no-op. Before the fix the
getter returned the cached ``_enabled``, so arming logged "master_clock.output_enabled=True" over a dark laser.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("pulsestreamer")

from labqfl.drivers.swabian_pulsestreamer import SwabianPulseStreamer, SwabianPulseStreamerClock  # noqa: E402
from labqfl.sim_backends.pulse_streamer import PulseStreamerEmulator  # noqa: E402

from labqfl.config import InstrumentConfig, default_station_text, parse_station_config  # noqa: E402
from labqfl.errors import InstrumentError  # noqa: E402
from labqfl.instruments.interfaces import ModulationFrame  # noqa: E402
from labqfl.station import Station, arm_instruments, hold_master_clocks  # noqa: E402

F = 200
SLOT_NS = 10


@pytest.fixture
def emulator() -> Iterator[PulseStreamerEmulator]:
    em = PulseStreamerEmulator()
    yield em
    em.close()


def _plays_nothing(em: PulseStreamerEmulator) -> None:
    """Every command accepted, nothing ever plays (``isStreaming()`` then answers 0, as the emulator reads it)."""
    em._begin = lambda slot_nr: None  # type: ignore[method-assign]


def _clock(em: PulseStreamerEmulator) -> SwabianPulseStreamerClock:
    clk = SwabianPulseStreamerClock("master_clock", InstrumentConfig(
        driver="SwabianPulseStreamerClock", resource=em.ip, options={"channel": 3}))
    clk.apply_operating_point(parse_station_config(tomllib.loads(default_station_text())))
    return clk


def test_output_enabled_is_the_instruments_answer(emulator: PulseStreamerEmulator) -> None:
    clk = _clock(emulator)
    try:
        clk.output_enabled = True
        assert clk.output_enabled and emulator.playing is not None
        n = sum(m == "isStreaming" for m, _ in emulator.requests)
        emulator._stop_playing((0, 0, 0), 0)  # the instrument stops on its own
        assert clk.output_enabled is False  # the driver asked: it did not answer from its cache
        assert sum(m == "isStreaming" for m, _ in emulator.requests) == n + 1
    finally:
        clk.close()


def test_arming_refuses_a_master_clock_that_does_not_stream_and_leaves_everything_safe(
        emulator: PulseStreamerEmulator) -> None:
    d = tomllib.loads(default_station_text())
    d["master_clock"] = {"driver": "SwabianPulseStreamerClock", "resource": emulator.ip}
    st = Station(parse_station_config(d, "station.toml"), guard=False)
    try:
        _plays_nothing(emulator)
        with pytest.raises(InstrumentError) as err:
            arm_instruments(st.instruments)
        line = str(err.value)
        assert "\n" not in line
        assert line.startswith("master_clock: stream(trigger, REPEAT_INFINITELY) accepted but isStreaming() reads "
                               "output_enabled=False"), line
        assert emulator.output == (0, 0, 0) and emulator.playing is None
        assert st["laser"].output_enabled is False
        assert all(not st[d].enabled for d in ("D0", "D1"))
        assert all(st[f"{c}.attenuator"].shutter_closed for c in st.config.client_names)
    finally:
        st.close()


def test_the_restart_after_the_tagger_records_reads_the_clock_back(emulator: PulseStreamerEmulator) -> None:
    clk = _clock(emulator)
    try:
        clk.output_enabled = True
        restart = hold_master_clocks([clk])
        assert restart is not None and not clk.output_enabled
        _plays_nothing(emulator)
        with pytest.raises(InstrumentError, match=r"^master_clock: stream\(trigger, REPEAT_INFINITELY\) accepted but "
                           r"isStreaming\(\) reads output_enabled=False: the laser trigger does not run"):
            restart()
    finally:
        clk.close()


def _frames(first: int, n: int) -> list[ModulationFrame]:
    rng = np.random.default_rng(first)
    return [ModulationFrame(first + i, rng.integers(0, 4, F).astype(np.uint8), rng.integers(0, 3, F).astype(np.uint8))
            for i in range(n)]


def test_a_generator_that_does_not_play_its_first_upload_is_refused(emulator: PulseStreamerEmulator) -> None:
    """``trigger = "immediate"``: playback starts with the first upload (``start(0, REPEAT_INFINITELY)``), so
    ``isStreaming()`` must read True right after it; otherwise the stream is refused, outputs dark, its
    frames reported lost."""
    pg = SwabianPulseStreamer("C1.pattern_generator", InstrumentConfig(
        driver="SwabianPulseStreamer", resource=emulator.ip, options={"frames_per_upload": 2}))
    pg.configure(slot_period_ns=SLOT_NS, frame_slots=F, n_intensities=3)
    try:
        pg.start(0)
        pg.upload(_frames(0, 2))  # a working instrument: accepted and playing
        assert pg.output_enabled
        pg.stop()
        _plays_nothing(emulator)
        pg.start(2)
        with pytest.raises(InstrumentError, match=r"upload \+ start\(0, REPEAT_INFINITELY\) accepted but "
                           r"isStreaming\(\) reads False"):
            pg.upload(_frames(2, 2))
        assert pg.failed is not None and emulator.output == (0, 0, 0)
        assert pg.stop() == []  # its frames were reported lost with the refusal
        assert not pg.output_enabled
    finally:
        pg.close()


def _hardware_pg(emulator: PulseStreamerEmulator) -> SwabianPulseStreamer:
    pg = SwabianPulseStreamer("C1.pattern_generator", InstrumentConfig(
        driver="SwabianPulseStreamer", resource=emulator.ip, options={"frames_per_upload": 2, "trigger": "hardware"}))
    pg.configure(slot_period_ns=SLOT_NS, frame_slots=F, n_intensities=3)
    return pg


def test_a_hardware_triggered_generator_is_read_back_as_waiting_for_its_trigger(
        emulator: PulseStreamerEmulator) -> None:
    """Review s37 lab3 L6: ``trigger = "hardware"`` (the documented example's setting) was never read back at start.
    pulsestreamer 2.1.2 ``getStreamingState()`` (``jrpc/pulse_streamer_jrpc.py`` ``PulseStreamer.getStreamingState``
    → a dict whose ``State`` and ``StateCondition`` are ``enums.State`` / ``enums.StateCondition``, enums.py:36–48:
    IDLING, BREAKPOINT, STREAMING, FINISHED, ERROR; NONE, WAIT_FOR_TRIGGER, WAIT_FOR_REARM, WAIT_FOR_DATA,
    WAIT_FOR_START; the gRPC client returns the same keys) tells an armed generator waiting for its trigger
    (StateCondition.WAIT_FOR_TRIGGER) or one whose trigger already came (State.STREAMING) from one that took
    ``start()`` and is neither. The fault: an instrument that accepts ``start`` and does not arm (the emulator's
    ``start`` made a no-op). Before, the upload passed and every frame was later reported lost."""
    pg = _hardware_pg(emulator)
    try:
        pg.start(0)
        pg.upload(_frames(0, 2))  # armed: waiting for the master clock's first pulse
        assert [m for m, _ in emulator.requests[-2:]] == ["start", "getStreamingState"]  # read back right after
        st = emulator._rpc_locked("getStreamingState", [])
        assert (st["State"], st["StateCondition"]) == (0, 1)  # IDLING, WAIT_FOR_TRIGGER
        emulator.hardware_trigger()
        pg.upload(_frames(2, 2))
        pg.stop()
        pg.start(4)  # the trigger came between start() and the read-back: STREAMING is armed too
        real = emulator._rpc_locked

        def start_then_trigger(method: str, params: list) -> object:
            out = real(method, params)
            if method == "start":
                emulator.hardware_trigger()
            return out
        emulator._rpc_locked = start_then_trigger  # type: ignore[method-assign]
        pg.upload(_frames(4, 2))
        assert pg.failed is None and emulator.playing is not None
        pg.stop()
        emulator._rpc_locked = real  # type: ignore[method-assign]

        def start_ignored(method: str, params: list) -> object:
            return 0 if method == "start" else real(method, params)
        emulator._rpc_locked = start_ignored  # type: ignore[method-assign]
        pg.start(6)
        with pytest.raises(InstrumentError, match=r"upload \+ start\(0, REPEAT_INFINITELY\) accepted but "
                           r"getStreamingState\(\) reads State.IDLING, StateCondition.NONE: neither waiting for "
                           r"its hardware trigger nor playing"):
            pg.upload(_frames(6, 2))
        assert pg.failed is not None and emulator.output == (0, 0, 0)
        assert pg.stop() == []  # its frames were reported lost with the refusal
    finally:
        pg.close()


def test_the_emulator_arms_a_new_stream_only_at_its_start(emulator: PulseStreamerEmulator) -> None:
    """Emulator fidelity, found by the read-back above: after a stream was stopped (``forceFinal`` +
    ``constant``), the emulator kept the old stream's armed slot, so a trigger edge between the next stream's
    first upload and its ``start()`` began playback (the emulated station triggers every generator it reads as
    armed), and ``start()`` then read IDLING / WAIT_FOR_DATA. On the instrument ``start()`` arms a stream; an edge
    before it starts nothing. tests/modulation/test_run_emulated.py's second open-ended segment hit it."""
    pg = _hardware_pg(emulator)
    try:
        pg.start(0)
        pg.upload(_frames(0, 2))
        emulator.hardware_trigger()
        assert emulator.playing is not None
        pg.stop()
        pg.start(2)
        real = emulator._rpc_locked

        before_start: list[tuple[bool, bool]] = []

        def edge_before_start(method: str, params: list) -> object:
            if method == "start":
                emulator.hardware_trigger()  # the edge comes after the upload, before start()
                before_start.append((emulator.playing is not None, emulator.armed()))
            return real(method, params)
        emulator._rpc_locked = edge_before_start  # type: ignore[method-assign]
        pg.upload(_frames(2, 2))  # read back: waiting for its trigger
        emulator._rpc_locked = real  # type: ignore[method-assign]
        assert before_start == [(False, False)]  # not playing, not armed: the edge started nothing
        assert pg.failed is None and emulator.armed() and emulator.playing is None
    finally:
        pg.close()


def test_a_single_shot_stream_that_finished_before_the_read_back_is_accepted(
        emulator: PulseStreamerEmulator) -> None:
    """Review s38 lab4 L1: a hardware-triggered stream whose first upload is also its last (``NextAction.STOP``),
    triggered by a master clock already running and played to its end before ``getStreamingState()``, reads
    ``FINISHED``; it was refused (outputs dark, frames lost) although it played. Now it is accepted and its frames
    are reported played. A stream with more uploads to come that reads ``FINISHED`` is still refused."""
    pg = _hardware_pg(emulator)
    real = emulator._rpc_locked

    def start_then_play_to_the_end(method: str, params: list) -> object:
        out = real(method, params)
        if method == "start":
            emulator.hardware_trigger()
            emulator.advance(10 * 2 * F * SLOT_NS)  # past its 2 frames
        return out
    emulator._rpc_locked = start_then_play_to_the_end  # type: ignore[method-assign]
    try:
        pg.start(0)
        pg.upload(_frames(0, 2), last=True)
        assert pg.failed is None
        assert pg.stop() == [(0, True), (1, True)]


        def start_then_finished(method: str, params: list) -> object:
            out = real(method, params)
            if method == "start":  # a FINISHED that is not this stream playing (the start lost, a stale state)
                real("forceFinal", [])
            return out
        emulator._rpc_locked = start_then_finished  # type: ignore[method-assign]
        pg.start(2)
        with pytest.raises(InstrumentError, match=r"getStreamingState\(\) reads State.FINISHED"):
            pg.upload(_frames(2, 2))  # more uploads to come: FINISHED is not this stream armed
        assert pg.failed is not None and emulator.output == (0, 0, 0)
    finally:
        emulator._rpc_locked = real  # type: ignore[method-assign]
        pg.close()
