"""Safe state on SIGTERM / SIGINT / exit: handlers of a guarded station, and killed processes whose
emulated instruments (served from this test process, so their state outlives the killed one) must be
left with the laser off, the detector bias down and the modulator outputs off."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labqfl import station as station_mod
from labqfl.config import load_station_config
from labqfl.station import Station

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "station_pyvisa_sim.toml"
VISA = ROOT / "sim_backends" / "visa"
LABQFL = Path(sys.executable).with_name("labqfl")
needs_pyvisa_py = pytest.mark.skipif(importlib.util.find_spec("pyvisa_py") is None,
                                     reason="pyvisa-py (the 'hardware' extra) is not installed")


# -- handlers in this process -------------------------------------------------------------------------
def test_guard_installs_and_restores_handlers_and_is_idempotent() -> None:
    calls: list[int] = []

    def previous(signum: int, frame: object) -> None:
        calls.append(signum)

    old = signal.signal(signal.SIGTERM, previous)
    try:
        st = Station(load_station_config(), guard=False)
        assert not st.guarded and signal.getsignal(signal.SIGTERM) is previous
        st.close()
        st = Station(load_station_config(), guard=True)
        assert st.guarded and signal.getsignal(signal.SIGTERM) is station_mod._on_signal
        assert signal.getsignal(signal.SIGINT) is station_mod._on_signal
        st.close()
        st.close()
        assert signal.getsignal(signal.SIGTERM) is previous and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert calls == [] and station_mod._GUARDED == []
    finally:
        signal.signal(signal.SIGTERM, old)


def test_sigint_puts_every_instrument_safe_then_runs_the_previous_handler() -> None:
    """pyvisa-sim instruments of the example station, state read back in this process."""
    st = Station(load_station_config(EXAMPLE), guard=True)
    laser, voa = st.laser, st.attenuator("C2")
    laser.output_enabled = True
    voa.shutter_closed = False  # type: ignore[union-attr]
    pm = st.phase_modulator("C1")
    pm.output_enabled = True
    assert laser.output_enabled and pm.output_enabled
    with pytest.raises(KeyboardInterrupt):  # Python's own SIGINT handler runs after the safe state
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs between bytecodes of the main thread
            time.sleep(0.001)
    assert st.closed and not st.guarded
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # the sessions are closed: reopen the same pyvisa-sim devices and read what the kill left
    st2 = Station(load_station_config(EXAMPLE), apply_operating_point=False)
    try:
        assert st2.laser.output_enabled is False
        assert st2.phase_modulator("C1").output_enabled is False
        assert st2.attenuator("C2").shutter_closed is True  # type: ignore[union-attr]
    finally:
        st2.close()


def test_at_exit_closes_guarded_stations() -> None:
    st = Station(load_station_config(), guard=True)
    station_mod._at_exit()
    assert st.closed and station_mod._GUARDED == []
    assert signal.getsignal(signal.SIGTERM) is not station_mod._on_signal


# -- killed processes ----------------------------------------------------------------------------------
class Bench:
    """Emulated instruments served from this process over loopback, and a station file that uses them."""

    def __init__(self, tmp: Path) -> None:
        from labqfl.sim_backends.visa_tcp import VisaSimTCPServer
        from labqfl.sim_backends.websq import WebSQEmulator

        self.laser = VisaSimTCPServer(VISA / "thorlabs_pro8000.yaml", "GPIB0::10::INSTR")
        self.awg = VisaSimTCPServer(VISA / "keysight_33500b.yaml", "TCPIP0::10.0.0.11::inst0::INSTR")
        self.voa = VisaSimTCPServer(VISA / "keysight_n7764a.yaml", "TCPIP0::10.0.0.21::inst0::INSTR")
        self.snspd = WebSQEmulator(2)
        text = EXAMPLE.read_text(encoding="utf-8")

        def swap(old: str, new: str, count: int = 1) -> None:
            nonlocal text
            assert text.count(old) == count, old
            text = text.replace(old, new)

        py = 'visa_library = "@py"\ntimeout_ms = 5000'
        swap('resource = "GPIB0::10::INSTR"\nvisa_library = "@sim:thorlabs_pro8000.yaml"', f'resource = "{self.laser.resource}"\n{py}')
        swap("max_current_ma = 100.0 }", "max_current_ma = 100.0, ramp_step_ma = 5.0, ramp_ma_per_s = 1000.0 }")
        swap('resource = "TCPIP0::10.0.0.11::inst0::INSTR"\nvisa_library = "@sim:keysight_33500b.yaml"', f'resource = "{self.awg.resource}"\n{py}')
        for k in (2, 3, 4):  # one generator is enough to show the modulator outputs
            swap(f'driver = "Keysight33500B"\nresource = "TCPIP0::10.0.0.1{k}::inst0::INSTR"\nvisa_library = "@sim:keysight_33500b.yaml"\n'
                 'options = { channel = 1, sample_rate_hz = 100e6 }', 'driver = "sim"')
        swap('resource = "TCPIP0::10.0.0.21::inst0::INSTR"   # one 4-channel VOA serves all four clients\n'
             'visa_library = "@sim:keysight_n7764a.yaml"', f'resource = "{self.voa.resource}"\n{py}', 4)
        for det, ch, bias in (("D0", 1, 4.0), ("D1", 2, 3.0)):
            swap(f'[detectors.{det}]\ndriver = "sim"',
                 f'[detectors.{det}]\ndriver = "SingleQuantumEos"\nresource = "{self.snspd.resource}"\n{py}\n'
                 f'bias_current_ua = {bias}\noptions = {{ channel = {ch}, counts_port = {self.snspd.counts_port}, '
                 'bias_step_ua = 1.0, bias_ramp_ua_per_s = 200.0 }')
        swap('[power_meter]\ndriver = "ThorlabsPM100USB"\nresource = "USB0::0x1313::0x8072::SIMPM0001::INSTR"\n'
             'visa_library = "@sim:thorlabs_pm100usb.yaml"', '[power_meter]\ndriver = "sim"')
        self.station_file = tmp / "emulated.toml"
        self.station_file.write_text(text, encoding="utf-8")

    def mark(self) -> dict[str, int]:
        return {"laser": len(self.laser.received), "awg": len(self.awg.received), "voa": len(self.voa.received),
                "snspd": len(self.snspd.received), "bias": len(self.snspd.bias_history)}

    def assert_safe(self, since: dict[str, int]) -> None:
        """Laser off after a stepwise ramp to 0 mA, detector bias down stepwise with the supply off,
        modulator output off, every VOA shutter closed — each sent after ``since`` (the kill)."""
        after = self.laser.received[since["laser"]:]
        assert self.laser.ask(":LASER?") == "OFF" and ":LASER OFF" in after
        sets = [float(c.split()[1]) * 1e3 for c in after if c.startswith(":ILD:SET ")]
        off = after.index(":LASER OFF")
        ramp = [c for c in after[:off] if c.startswith(":ILD:SET ")]
        assert ramp and float(ramp[-1].split()[1]) == 0.0  # at 0 mA before the LDC went off
        steps = [abs(a - b) for a, b in zip([20.0] + sets, sets, strict=False)][: len(ramp)]
        assert max(steps) <= 5.0 + 1e-6 and len(ramp) >= 4  # 20 mA -> 0 in steps of <= 5 mA
        s = self.snspd.state()
        assert s["enabled"] is False and s["bias_ua"] == [0.0, 0.0]
        hist = self.snspd.bias_history[since["bias"]:]
        assert [3.0, 1.0] in [list(h) for h in hist] or [4.0, 1.0] in [list(h) for h in hist]  # ramped, not cut
        assert max(abs(a - b) for h0, h1 in zip(hist, hist[1:], strict=False) for a, b in zip(h0, h1, strict=True)) <= 1.0
        assert self.awg.ask("OUTP1?") == "0" and "OUTP1 0" in self.awg.received[since["awg"]:]
        for ch in (1, 3, 5, 7):
            assert self.voa.ask(f":OUTP{ch}:STAT?") == "0"
            assert f":OUTP{ch}:STAT 0" in self.voa.received[since["voa"]:]

    def close(self) -> None:
        for s in (self.laser, self.awg, self.voa, self.snspd):
            s.close()


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    b = Bench(tmp_path)
    yield b
    b.close()


def _holding_an_operating_station(kill: Any, bench: Bench, tmp_path: Path) -> list[str]:
    """A process holding the bench's station open (guarded) with the laser on, detectors armed, C1's modulator
    output on and every shutter open (:func:`kill.holding`)."""
    return kill.holding(tmp_path, f"""
        from labqfl.config import load_station_config
        from labqfl.station import Station
        st = Station(load_station_config({str(bench.station_file)!r}), guard=True)
        st.laser.output_enabled = True
        for d in ("D0", "D1"):
            st.detector(d).enabled = True
        st.phase_modulator("C1").output_enabled = True
        for c in ("C1", "C2", "C3", "C4"):
            st.attenuator(c).shutter_closed = False
    """)


@needs_pyvisa_py
@pytest.mark.slow
def test_sigterm_of_a_process_holding_an_operating_station(kill: Any, bench: Bench, tmp_path: Path) -> None:
    """Laser on, detectors armed, modulator output on, shutters open; then SIGTERM."""
    cmd = _holding_an_operating_station(kill, bench, tmp_path)
    with kill.running(cmd, stdin=True) as proc:
        kill.wait_ready(proc)
        assert bench.laser.ask(":LASER?") == "ON" and bench.snspd.state()["bias_ua"] == [4.0, 3.0]
        assert bench.awg.ask("OUTP1?") == "1" and bench.voa.ask(":OUTP5:STAT?") == "1"
        since = bench.mark()
        err = kill.terminate(proc)
    assert proc.returncode == -signal.SIGTERM, err[-kill.TAIL:]  # ended by the same signal, after the safe state
    bench.assert_safe(since)


@needs_pyvisa_py
def test_a_plain_exit_of_a_process_holding_an_operating_station_leaves_it_safe(kill: Any, bench: Bench,
                                                                               tmp_path: Path) -> None:
    """The ``atexit`` safe state: the process ends normally with its guarded station still open and operating.
    (pyvisa's own exit hook, registered when the sessions opened, used to run first and close them, so the
    safe state could not be sent: laser left on, detectors biased.)"""
    cmd = _holding_an_operating_station(kill, bench, tmp_path)
    with kill.running(cmd, stdin=True) as proc:
        kill.wait_ready(proc)
        assert bench.laser.ask(":LASER?") == "ON" and bench.snspd.state()["bias_ua"] == [4.0, 3.0]
        since = bench.mark()
        _, err = proc.communicate(input="", timeout=60)  # stdin closed: the script returns, the interpreter exits
    assert proc.returncode == 0, err[-kill.TAIL:]
    assert "interpreter exit" in err and "failed" not in err, err[-kill.TAIL:]
    bench.assert_safe(since)


@needs_pyvisa_py
@pytest.mark.slow
def test_kill_term_of_labqfl_acquire_leaves_every_emulated_instrument_safe(kill: Any, bench: Bench, tmp_path: Path) -> None:
    """The acceptance check on a CLI command: ``labqfl acquire --duration 600`` (a long acquisition,
    simulated tagger, emulated hardware drivers), killed with SIGTERM once it is acquiring (it stops as
    after Ctrl-C, exit 143: tests/cli/test_acquire_sigterm.py). The
    instruments start as a crashed earlier session left them: laser on at 30 mA, detectors biased,
    modulator output on, shutters open."""
    bench.laser.ask(":SLOT 1")
    bench.laser.ask(":ILD:SET 0.03")
    bench.laser.ask(":LASER ON")
    bench.snspd.handle({"command": "DetectorEnable", "label": "DetectorEnable", "value": True})
    bench.snspd.handle({"command": "SetAllBiasCurrents", "label": "BiasCurrent", "value": [4.0, 3.0]})
    bench.awg.ask("OUTP1 1")
    out = tmp_path / "run.h5"
    with kill.running([str(LABQFL), "acquire", "--duration", "600", "--config", str(bench.station_file),
                       "--out", str(out)]) as proc:
        kill.wait_for(out.exists, "the acquisition started (recording file created)", proc)
        assert proc.poll() is None
        assert bench.laser.ask(":LASER?") == "ON"  # the operating point (1 mW = 20 mA) kept the laser as it was
        since = bench.mark()
        err = kill.terminate(proc)
    # an orderly stop after the safe state (the recording closed, marked incomplete): 143, one error line
    assert proc.returncode == 143, err[-kill.TAIL:]
    assert "safe state" in err  # the handler says what it did, on stderr
    assert "error: terminated (SIGTERM); instruments were put in their safe state" in err, err[-kill.TAIL:]
    bench.assert_safe(since)


@needs_pyvisa_py
@pytest.mark.slow
def test_kill_term_of_labqfl_run_leaves_every_emulated_instrument_safe(kill: Any, bench: Bench, tmp_path: Path) -> None:
    """Issue 17's acceptance on ``labqfl run --in-process --duration 60000`` (the block-size rule's
    minimum on this station; killed long before): simulated tagger, emulated hardware drivers, C1
    streaming its frames to an emulated Pulse Streamer, an emulated master clock. Killed with SIGTERM
    once it is acquiring and C1's stream plays: laser off (ramped), detector bias down, modulator
    output off, shutters closed, and the pattern generator and master clock dark. (Before the
    Acquisition streamed the clients' modulation, C1's generator never played under ``labqfl run``.)"""
    import json
    import tomllib

    pytest.importorskip("pulsestreamer")
    from labqfl.sim_backends.pulse_streamer import PulseStreamerEmulator

    from labqfl.serialize import dump_toml

    pg_em, clk_em = PulseStreamerEmulator(), PulseStreamerEmulator()
    try:
        d = kill.stream_c1(tomllib.loads(bench.station_file.read_text(encoding="utf-8")), pg_em.ip,
                           clock_resource=clk_em.ip)
        station_file = tmp_path / "emulated_run.toml"
        station_file.write_text(dump_toml(d), encoding="utf-8")
        runs = tmp_path / "runs"

        def acquiring() -> bool:  # the run recorded its acquisition as started, and C1's generator plays
            for p in runs.glob("*/state.json"):
                try:
                    if json.loads(p.read_text(encoding="utf-8")).get("acquisitions"):
                        return pg_em.playing is not None
                except ValueError:  # being written
                    return False
            return False

        bench.laser.ask(":SLOT 1")
        bench.laser.ask(":ILD:SET 0.03")
        bench.laser.ask(":LASER ON")
        with kill.running([str(LABQFL), "run", "--in-process", "--duration", "60000", "--rounds", "1", "--config",
                           str(station_file), "--out", str(runs), "--data-dir", str(tmp_path / "data")]) as proc:
            kill.wait_for(acquiring, "the run acquiring with C1's frames playing", proc)
            assert bench.laser.ask(":LASER?") == "ON" and bench.snspd.state()["enabled"] is True  # armed
            assert bench.awg.ask("OUTP1?") == "1"
            since = bench.mark()
            err = kill.terminate(proc)
        # an orderly stop after the safe state, as labqfl acquire (tests/cli/test_run_sigterm.py): 143, one error line
        assert proc.returncode == 143, err[-kill.TAIL:]
        assert "error: terminated (SIGTERM); instruments were put in their safe state" in err, err[-kill.TAIL:]
        bench.assert_safe(since)
        kill.assert_dark(pg_em, clk_em)
    finally:
        pg_em.close()
        clk_em.close()


def test_sigint_inside_a_with_block_logs_no_second_safe_state(caplog: Any) -> None:
    """Ctrl-C in `labqfl acquire` on the pyvisa-sim station printed "role laser: safe_state failed:
    instrument is not connected (closed)" for every role: the SIGINT handler had closed the station,
    then ``Station.__exit__`` put the closed instruments safe again."""
    import logging

    with caplog.at_level(logging.ERROR), pytest.raises(KeyboardInterrupt):
        with Station(load_station_config(EXAMPLE), guard=True) as st:
            st.laser.output_enabled = True
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                time.sleep(0.001)
    assert st.closed
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert st.safe_state() == {}
