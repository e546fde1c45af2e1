"""SwabianPulseStreamer / SwabianPulseStreamerClock: the vendor client (pulsestreamer 2.1.2) talking to the
protocol-level emulator (labqfl.sim_backends.pulse_streamer) over loopback JSON-RPC and the binary port.

Sources cited per test: the Pulse Streamer 8/2 documentation ("Hardware", "Programming interface") and
the vendor client's code (``pulsestreamer/pulse_streamer_base.py``, ``jrpc/pulse_streamer_jrpc.py``,
``enums.py``), where the slot-streaming calls are defined."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("pulsestreamer")

from labqfl.drivers.swabian_pulsestreamer import SwabianPulseStreamer, SwabianPulseStreamerClock  # noqa: E402
from labqfl.sim_backends.pulse_streamer import (  # noqa: E402
    CMD_STREAM,
    CMD_UPLOAD,
    NEXT_STOP,
    NEXT_SWITCH_EXPECT_NEW,
    NODATA_ERROR,
    PulseStreamerEmulator,
    slot_levels,
)

from labqfl.config import InstrumentConfig, default_station_text, parse_station_config  # noqa: E402
from labqfl.errors import ConfigError, InstrumentError  # noqa: E402
from labqfl.instruments.interfaces import ModulationFrame  # noqa: E402

F = 200  # slots per frame in these tests
SLOT_NS = 10


@pytest.fixture
def emulator() -> Iterator[PulseStreamerEmulator]:
    em = PulseStreamerEmulator()
    yield em
    em.close()


def make_pg(em: PulseStreamerEmulator, **options: object) -> SwabianPulseStreamer:
    opts = {"frames_per_upload": 2, **options}
    pg = SwabianPulseStreamer("C1.pattern_generator",
                              InstrumentConfig(driver="SwabianPulseStreamer", resource=em.ip, options=opts))
    pg.configure(slot_period_ns=SLOT_NS, frame_slots=F, n_intensities=3)
    return pg


def frames(first: int, n: int, seed: int = 1) -> list[ModulationFrame]:
    rng = np.random.default_rng(seed + first)
    return [ModulationFrame(first + i, rng.integers(0, 4, F).astype(np.uint8), rng.integers(0, 3, F).astype(np.uint8))
            for i in range(n)]


def test_connect_identity_clock_and_quiet_stdout(emulator: PulseStreamerEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    """Client: ``PulseStreamer(ip)`` (JSON-RPC on 8050, ``getSerial``/``getFirmwareVersion``; binary port 21328
    for firmware >= 1.1.0), ``selectClock(ClockSource.EXT_10MHZ)``/``getClock()`` ("Hardware: External Clock
    Input"). The client's connection prints stay off stdout."""
    pg = make_pg(emulator)
    assert capsys.readouterr().out == ""
    assert "Pulse Streamer 8/2" in pg.identity() and emulator.serial in pg.identity()
    pg.reference_clock = "external"
    assert pg.reference_clock == "external" and emulator.clock == 2
    assert ("selectClock", [2]) in emulator.requests
    pg.reference_clock = "internal"
    assert emulator.clock == 0
    with pytest.raises(ValueError, match="reference_clock"):
        pg.reference_clock = "10MHz"
    # opening leaves the outputs dark: forceFinal then constant(ZERO)
    assert [m for m, _ in emulator.requests[:8]].count("constant") == 1 and emulator.output == (0, 0, 0)
    pg.close()


def test_no_instrument_is_one_clear_error() -> None:
    """Client: ``assert False, "No Pulse Streamer found at IP/Host-address: …"`` becomes one InstrumentError."""
    with pytest.raises(InstrumentError, match="cannot connect.*No Pulse Streamer found"):
        SwabianPulseStreamer("C1.pattern_generator",
                             InstrumentConfig(driver="SwabianPulseStreamer", resource="127.0.0.1", timeout_ms=100))


def test_slot_rates_and_upload_limits(emulator: PulseStreamerEmulator) -> None:
    """"Hardware: Digital Output": 1 GSa/s, minimum pulse width 2 ns → integer slots of >= 2 ns; the client
    refuses > 2·10^6 steps per sequence (``enc_binary``), the driver keeps an upload <= 10^6 steps."""
    pg = make_pg(emulator)
    for bad in (1, 2.5):
        with pytest.raises(ValueError, match="slot_period_ns"):
            pg.configure(slot_period_ns=bad, frame_slots=F, n_intensities=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exceeds 1000000 steps"):
        pg.configure(slot_period_ns=10, frame_slots=600_000, n_intensities=3)
    with pytest.raises(ValueError, match="intensity channel"):
        pg.configure(slot_period_ns=10, frame_slots=F, n_intensities=4)  # 2 channels: codes 1..3
    station = parse_station_config(tomllib.loads(default_station_text()))
    station.laser.rep_rate_hz = 1.25e9
    with pytest.raises(ValueError, match=r"0.8 ns slots.*integer ns"):
        pg.apply_operating_point(station)
    station.laser.rep_rate_hz = 100e6
    pg.apply_operating_point(station)
    assert pg.slot_rate_hz == 100e6 and pg.frame_slots == station.time_tagger.frame_slots
    assert pg.reference_clock == "external"  # [sync] pattern_generator_reference default
    pg.close()


def test_levels_on_digital_channels_round_trip(emulator: PulseStreamerEmulator) -> None:
    """Driver coding: marker on ch0 for the first slot of a frame, phase bits on ch1/ch2, intensity code k+1
    on ch3/ch4, code 0 = dark; sequences are run-length encoded (duration ns, level) ("Programming interface:
    Pulse pattern") with equal neighbours merged."""
    pg = make_pg(emulator)
    fr = frames(0, 2)
    seq = pg.sequence(fr)
    assert int(seq["count"].sum()) == 2 * F * SLOT_NS and np.all(seq["count"] % SLOT_NS == 0)
    assert np.all(np.diff(seq["digi"].astype(int)) != 0)  # merged runs
    digi = np.repeat(seq["digi"], seq["count"] // SLOT_NS)
    dec = pg.decode(digi)
    assert np.array_equal(dec["phase_idx"], np.concatenate([f.phase_idx for f in fr]))
    assert np.array_equal(dec["intensity_idx"], np.concatenate([f.intensity_idx for f in fr]))
    assert np.flatnonzero(dec["marker"]).tolist() == [0, F]
    dark = pg.encode(ModulationFrame.dark_frame(5, F))
    assert not dark.any()
    with pytest.raises(ValueError, match="intensity index 3"):
        pg.encode(ModulationFrame(0, np.zeros(F, np.uint8), np.full(F, 3, np.uint8)))
    pg.close()


def test_double_buffered_upload_protocol_and_played_levels(emulator: PulseStreamerEmulator) -> None:
    """Client slot streaming (pulsestreamer 2.1.2): ``upload(slot, seq, n_runs=1, idle, NextAction.
    SWITCH_SLOT_EXPECT_NEW_DATA, When.IMMEDIATE, OnNoData.ERROR)`` into slots 0, 1, 0 …, ``start(0, -1)`` after the
    first, ``isReadyForData(slot)``, ``getStreamingState()['SlotChanges']``; the last upload ends with
    NextAction.STOP. Binary command 0x100 header ``<qQ2h8BI`` (``__send_cmd_binary``)."""
    pg = make_pg(emulator)
    pg.start(0)
    assert pg.ready_for_upload()
    pg.upload(frames(0, 2))
    assert ("start", [0, -1]) in emulator.requests
    assert pg.ready_for_upload()
    pg.upload(frames(2, 2))
    assert not pg.ready_for_upload()  # both slots busy
    emulator.advance(2 * F * SLOT_NS)
    assert pg.ready_for_upload()
    assert pg.poll_played() == [(0, True), (1, True)]
    pg.upload(frames(4, 2), last=True)
    cmds = [c for c in emulator.binary_commands if c["command"] == CMD_UPLOAD]
    assert [c["slot"] for c in cmds] == [0, 1, 0]
    assert [c["next_action"] for c in cmds] == [NEXT_SWITCH_EXPECT_NEW] * 2 + [NEXT_STOP]
    assert {c["on_nodata"] for c in cmds} == {NODATA_ERROR} and {c["n_runs"] for c in cmds} == {1}
    emulator.advance(4 * F * SLOT_NS)
    assert pg.poll_played() == [(i, True) for i in range(2, 6)]
    assert emulator.underflows == [] and pg.failed is None
    # what came out: each upload in turn, back to back, exactly the frames' levels
    starts = [s.start_ns for s in emulator.played]
    assert starts == [0, 2 * F * SLOT_NS, 4 * F * SLOT_NS]
    played = pg.decode(np.concatenate([slot_levels(s, SLOT_NS) for s in emulator.played]))
    want = frames(0, 2) + frames(2, 2) + frames(4, 2)
    assert np.array_equal(played["phase_idx"], np.concatenate([f.phase_idx for f in want]))
    assert np.array_equal(played["intensity_idx"], np.concatenate([f.intensity_idx for f in want]))
    pg.close()


def test_underflow_stops_and_loses_the_rest(emulator: PulseStreamerEmulator) -> None:
    """OnNoData.ERROR (enums.py): the next slot empty at the switch stops the stream with State.ERROR; the
    driver reports the played uploads played, every later frame lost, refuses further uploads, and never
    lets the instrument idle or repeat (WAIT_IDLING / WAIT_REPEATING would play off the slot grid or twice)."""
    pg = make_pg(emulator)
    pg.start(10)
    pg.upload(frames(10, 2))
    pg.upload(frames(12, 2))
    emulator.advance(5 * F * SLOT_NS)  # two uploads' worth and more: slot 0 had no new data
    assert len(emulator.underflows) == 1
    verdicts = pg.poll_played()
    assert verdicts == [(10, True), (11, True), (12, True), (13, True)]
    assert pg.failed is not None and "underflow" in pg.failed
    assert not pg.ready_for_upload()
    with pytest.raises(InstrumentError, match="stream has stopped"):
        pg.upload(frames(14, 2))
    # an underflow with frames still queued: those are lost
    pg.start(20)
    pg.upload(frames(20, 2))
    pg.upload(frames(22, 2))
    emulator.advance(2 * F * SLOT_NS)
    assert pg.poll_played() == [(20, True), (21, True)]
    assert pg.stop() == [(22, False), (23, False)]  # cut short by stop: lost
    assert emulator.output == (0, 0, 0)
    pg.close()


def test_uploads_in_order_only(emulator: PulseStreamerEmulator) -> None:
    """Every upload carries its frame indices: out of order, wrong count or wrong length is refused before
    anything reaches the instrument."""
    pg = make_pg(emulator)
    pg.start(0)
    with pytest.raises(ValueError, match="out of order"):
        pg.upload(frames(1, 2))
    with pytest.raises(ValueError, match="frames_per_upload"):
        pg.upload(frames(0, 3))
    short = [ModulationFrame(0, np.zeros(F - 1, np.uint8), np.zeros(F - 1, np.uint8)), *frames(1, 1)]
    with pytest.raises(ValueError, match="slots"):
        pg.upload(short)
    assert not [c for c in emulator.binary_commands if c["command"] == CMD_UPLOAD]
    pg.upload(frames(0, 2))
    with pytest.raises(ValueError, match="frame 0 where frame 2"):
        pg.upload(frames(0, 2))
    pg.close()


def test_safe_state_darkens_outputs(emulator: PulseStreamerEmulator) -> None:
    """``forceFinal()`` then ``constant(OutputState.ZERO())`` (client ``constant``/``forceFinal``): all outputs 0 V
    — no marker, intensity code 0 (dark) — also while a stream plays."""
    pg = make_pg(emulator)
    pg.start(0)
    pg.upload(frames(0, 2))
    emulator.advance(100)
    assert emulator.playing is not None
    pg.safe_state()
    assert emulator.playing is None and emulator.output == (0, 0, 0)
    assert not pg.output_enabled
    pg.close()
    assert emulator.constants[-1][1] == (0, 0, 0)


def test_master_clock_streams_the_laser_trigger(emulator: PulseStreamerEmulator) -> None:
    """Master clock: ``stream(seq, REPEAT_INFINITELY, final=ZERO)`` (binary command 0x0, ``<qQ2h4BQ``) of one
    pulse per period on ``options.channel``, ``selectClock(EXT_10MHZ)``; off/safe: ``constant(ZERO)``."""
    clk = SwabianPulseStreamerClock("master_clock", InstrumentConfig(
        driver="SwabianPulseStreamerClock", resource=emulator.ip, options={"channel": 3, "pulse_width_ns": 3}))
    station = parse_station_config(tomllib.loads(default_station_text()))
    clk.apply_operating_point(station)
    assert clk.frequency_hz == station.laser.rep_rate_hz and clk.reference_clock == "external"
    assert not clk.output_enabled and emulator.playing is None
    clk.output_enabled = True
    cmd = emulator.binary_commands[-1]
    assert cmd["command"] == CMD_STREAM and cmd["n_runs"] == -1 and cmd["idle"] == (0, 0, 0)
    emulator.advance(1000)
    seg = emulator.slots[0].steps
    assert seg is not None and seg["count"].tolist() == [3, 7] and seg["digi"].tolist() == [8, 0]
    with pytest.raises(ValueError, match="frequency_hz"):
        clk.frequency_hz = 1.25e9
    with pytest.raises(ValueError, match="pulse_width_ns"):
        clk.pulse_width_ns = 9
    clk.close()
    assert emulator.output == (0, 0, 0) and emulator.playing is None


def test_arming_starts_the_laser_trigger(emulator: PulseStreamerEmulator) -> None:
    """The one arming rule (labqfl.station.arm_instruments, used by every acquisition in process and by the
    detection node) switches the master clock's trigger on: a pulsed laser that is not triggered emits
    nothing. Before, the rule skipped PulseGenerator roles, so a real bench acquired with a dark laser."""
    from labqfl.station import arm_instruments

    clk = SwabianPulseStreamerClock("master_clock", InstrumentConfig(
        driver="SwabianPulseStreamerClock", resource=emulator.ip, options={"channel": 3}))
    clk.apply_operating_point(parse_station_config(tomllib.loads(default_station_text())))
    assert emulator.playing is None
    assert arm_instruments({"master_clock": clk}) == ["master_clock.output_enabled=True"]
    assert clk.output_enabled and emulator.playing is not None
    assert emulator.binary_commands[-1]["command"] == CMD_STREAM
    assert arm_instruments({"master_clock": clk}) == []  # already running: not restarted
    clk.safe_state()
    assert emulator.output == (0, 0, 0) and emulator.playing is None
    clk.close()


def test_an_acquisition_restarts_the_trigger_once_the_tagger_records(emulator: PulseStreamerEmulator) -> None:
    """Slot 0 is the master clock's first pulse and the tagger must record it (decision 0008): a clock
    running since arming is stopped when a segment starts, the pattern generators are loaded, and the clock
    starts again from the tagger's ``on_recording`` hook, before the first block; the same for every
    segment. Before, arming left it running (or, earlier still, never started it)."""
    from labqfl.app.acquire import Acquisition
    from labqfl.station import Station

    d = tomllib.loads(default_station_text())
    d["master_clock"] = {"driver": "SwabianPulseStreamerClock", "resource": emulator.ip}
    st = Station(parse_station_config(d, "station.toml"), guard=False)
    seen: list[str] = []
    stream = st.time_tagger.stream

    def watched(duration_s: float, block_s: float | None = None, on_recording: object = None) -> object:
        seen.append(f"stream called, clock {'on' if emulator.playing is not None else 'off'}")
        assert callable(on_recording)

        def hook() -> None:
            seen.append("recording")
            on_recording()
            seen.append(f"clock {'on' if emulator.playing is not None else 'off'}")
        return stream(duration_s, block_s, on_recording=hook)

    st.time_tagger.stream = watched  # type: ignore[method-assign]
    try:
        with Acquisition(st) as acq:
            assert "master_clock.output_enabled=True" in acq.armed and emulator.playing is not None
            for _ in range(2):  # two segments: each restarts the trigger
                n = sum(c["command"] == CMD_STREAM for c in emulator.binary_commands)
                blocks = list(acq.start(0.002))
                assert blocks and sum(c["command"] == CMD_STREAM for c in emulator.binary_commands) == n + 1
        assert seen == ["stream called, clock off", "recording", "clock on"] * 2
        assert emulator.playing is None  # safe state at the end
    finally:
        st.close()


def test_with_a_real_tagger_and_markers_a_generator_must_start_on_the_clock() -> None:
    """Frames are numbered from slot 0, the master clock's first pulse (decision 0008): with a real tagger
    and frame markers, a Pulse Streamer that starts on its first upload (``trigger = "immediate"``, the
    default) would put its markers off that grid and lose every frame, so an acquisition is refused in
    one line naming the option; ``"hardware"`` passes."""
    from labqfl.config import require_pattern_generators

    d = tomllib.loads(default_station_text())
    d["time_tagger"].update(driver="SwabianTimeTagger", options={"serial": "X"}, marker_channel=4)
    d["clients"][0]["pattern_generator"] = {"driver": "SwabianPulseStreamer", "resource": "127.0.17.1",
                                            "options": {"link_bytes_per_s": 1e9}}  # every frame fresh: a link above 9e8 B/s
    with pytest.raises(ConfigError, match=r"^st\.toml: field 'clients\.0\.pattern_generator\.options\.trigger': "
                       r"'immediate'; .*expected \"hardware\""):
        require_pattern_generators(parse_station_config(d, "st.toml"), "st.toml")
    d["clients"][0]["pattern_generator"]["options"] = {"trigger": "hardware", "link_bytes_per_s": 1e9}
    require_pattern_generators(parse_station_config(d, "st.toml"), "st.toml")


def test_station_roles_typed_and_real_only(emulator: PulseStreamerEmulator) -> None:
    """Station file: ``clients.N.pattern_generator`` and ``master_clock`` take real drivers only, their options
    are typed (unknown keys refused) and their drivers must serve the role."""
    base = tomllib.loads(default_station_text())

    def load(edit: dict[str, object], client_edit: dict[str, object] | None = None) -> object:
        d = tomllib.loads(default_station_text())
        d.update(edit)
        if client_edit is not None:
            d["clients"][0].update(client_edit)
        return parse_station_config(d, "station.toml")

    with pytest.raises(ConfigError, match="pattern_generator role needs a real driver"):
        load({}, {"pattern_generator": {"driver": "sim"}})
    with pytest.raises(ConfigError, match=r"clients.0.pattern_generator.options.marker_chanel.*unknown option"):
        load({}, {"pattern_generator": {"driver": "SwabianPulseStreamer", "resource": emulator.ip,
                                        "options": {"marker_chanel": 1}}})
    with pytest.raises(ConfigError, match="distinct digital outputs"):
        load({}, {"pattern_generator": {"driver": "SwabianPulseStreamer", "resource": emulator.ip,
                                        "options": {"marker_channel": 1}}})
    with pytest.raises(ConfigError, match="expected a PulseGenerator driver"):
        load({"master_clock": {"driver": "SwabianPulseStreamer", "resource": emulator.ip}})
    cfg = load({"master_clock": {"driver": "SwabianPulseStreamerClock", "resource": emulator.ip}},
               {"pattern_generator": {"driver": "SwabianPulseStreamer", "resource": emulator.ip,
                                      "options": {"link_bytes_per_s": 1e9}}})  # the emulator on loopback
    roles = cfg.roles()  # type: ignore[attr-defined]
    assert list(roles)[:2] == ["master_clock", "laser"] and "C1.pattern_generator" in roles
    assert "C2.pattern_generator" not in roles and base["clients"][1].get("pattern_generator") is None


def test_station_opens_applies_and_safes_the_new_roles(emulator: PulseStreamerEmulator, sim_library) -> None:  # type: ignore[no-untyped-def]
    """A station with C1's pattern generator and the master clock on emulated Pulse Streamers and C1's intensity
    modulator on the simulated bias controller: opening writes the operating point (100 MHz slots, frames of
    time_tagger.frame_slots, EXT_10MHZ clock on both, levels and null bias), closing leaves outputs dark/off."""
    from labqfl.station import Station

    clock_em = PulseStreamerEmulator()
    try:
        d = tomllib.loads(default_station_text())
        d["master_clock"] = {"driver": "SwabianPulseStreamerClock", "resource": clock_em.ip}
        d["clients"][0]["pattern_generator"] = {"driver": "SwabianPulseStreamer", "resource": emulator.ip,
                                                "options": {"link_bytes_per_s": 1e9}}  # the emulator on loopback
        d["clients"][0]["attenuator"] = {"driver": "GenericMZIntensityModulator", "resource": "ASRL7::INSTR",
                                         "visa_library": sim_library("mz_bias_controller.yaml"), "timeout_ms": 200}
        cfg = parse_station_config(d, "station.toml")
        st = Station(cfg, guard=False)
        try:
            pg = st["C1.pattern_generator"]
            clk = st["master_clock"]
            assert isinstance(pg, SwabianPulseStreamer) and isinstance(clk, SwabianPulseStreamerClock)
            assert pg.slot_rate_hz == cfg.laser.rep_rate_hz and pg.frame_slots == cfg.time_tagger.frame_slots
            assert emulator.clock == 2 and clock_em.clock == 2  # both on the shared 10 MHz
            im = st.attenuator("C1")
            assert im.levels == cfg.client("C1").intensities  # type: ignore[union-attr]
            clk.output_enabled = True  # type: ignore[attr-defined]
            assert clock_em.playing is not None
        finally:
            st.close()
        assert clock_em.playing is None and clock_em.output == (0, 0, 0) and emulator.output == (0, 0, 0)
    finally:
        clock_em.close()
