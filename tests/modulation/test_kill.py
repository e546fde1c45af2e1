"""kill -TERM of a process streaming a client's frames and running the master clock: the emulated Pulse
Streamers (served from this test process, so their state outlives the killed one) are left dark — no stream
playing, every output at 0 V (no laser trigger, no marker, intensity code 0)."""

from __future__ import annotations

import signal
import tomllib
from pathlib import Path
from typing import Any

import pytest
from labqfl.sim_backends.pulse_streamer import PulseStreamerEmulator

from labqfl.config import default_station_text
from labqfl.serialize import dump_toml

pytest.importorskip("pulsestreamer")



def test_sigterm_leaves_pattern_generator_and_master_clock_dark(kill: Any, tmp_path: Path) -> None:
    pg_em, clk_em = PulseStreamerEmulator(), PulseStreamerEmulator()
    try:
        d = kill.stream_c1(tomllib.loads(default_station_text()), pg_em.ip, clock_resource=clk_em.ip)
        d["schedule"]["slots_per_frame"] = 1000
        station_file = tmp_path / "station.toml"
        station_file.write_text(dump_toml(d), encoding="utf-8")
        cmd = kill.holding(tmp_path, f"""
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
        """)
        with kill.running(cmd, stdin=True) as proc:
            kill.wait_ready(proc, "station did not stream")
            assert pg_em.playing is not None and clk_em.playing is not None
            assert pg_em.clock == 2 and clk_em.clock == 2
            err = kill.terminate(proc)
        assert proc.returncode == -signal.SIGTERM, err[-kill.TAIL:]
        kill.assert_dark(pg_em, clk_em)
    finally:
        pg_em.close()
        clk_em.close()
