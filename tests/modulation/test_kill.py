"""kill -TERM of a process streaming a client's frames and running the master clock: the emulated Pulse
Streamers (served from this test process, so their state outlives the killed one) are left dark — no stream
playing, every output at 0 V (no laser trigger, no marker, intensity code 0)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from labqfl.sim_backends.pulse_streamer import PulseStreamerEmulator

from labqfl.config import default_station_text
from labqfl.serialize import dump_toml

pytest.importorskip("pulsestreamer")


def test_sigterm_leaves_pattern_generator_and_master_clock_dark(tmp_path: Path) -> None:
    pg_em, clk_em = PulseStreamerEmulator(), PulseStreamerEmulator()
    try:
        d = tomllib.loads(default_station_text())
        d["master_clock"] = {"driver": "SwabianPulseStreamerClock", "resource": clk_em.ip}
        d["clients"][0]["pattern_generator"] = {"driver": "SwabianPulseStreamer", "resource": pg_em.ip,
                                                "options": {"frames_per_upload": 1}}
        d["time_tagger"]["frame_slots"] = 1000
        d["schedule"]["slots_per_frame"] = 1000
        station_file = tmp_path / "station.toml"
        station_file.write_text(dump_toml(d), encoding="utf-8")
        script = tmp_path / "hold.py"
        script.write_text(textwrap.dedent(f"""
            import sys
            from labqfl.config import load_station_config
            from labqfl.modulation import FrameSource, ModulationStreamer
            from labqfl.sim_backends.qrng import CsprngChoiceLog
            from labqfl.station import Station
            st = Station(load_station_config({str(station_file)!r}), guard=True)
            st["master_clock"].output_enabled = True
            log = CsprngChoiceLog("C1", (0.891, 0.024, 0.085), 0.967)
            streamer = ModulationStreamer(st["C1.pattern_generator"], FrameSource(log, 1000), max_wait_s=5.0)
            streamer.start()
            assert streamer.wait_uploads(2, timeout=30)
            print("ready", flush=True)
            sys.stdin.read()  # hold the station until killed
        """), encoding="utf-8")
        proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                out, err = proc.communicate(timeout=30)
                pytest.fail(f"station did not stream: {line}{out}\n{err[-3000:]}")
            assert pg_em.playing is not None and clk_em.playing is not None
            assert pg_em.clock == 2 and clk_em.clock == 2
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGTERM, err[-3000:]
        for em in (pg_em, clk_em):
            assert em.playing is None and em.output == (0, 0, 0)
            assert em.constants and em.constants[-1][1] == (0, 0, 0)
    finally:
        pg_em.close()
        clk_em.close()
