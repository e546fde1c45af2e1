"""Issue 19: on an empty Numba cache (a fresh install or clone) the first ``labqfl acquire`` of
``examples/station_emulated_hardware.toml`` failed with "no count line … VI_ERROR_TMO": the emulated SNSPD
controller's count loop compiled the simulator's read-out kernels on its first line, far past the Eos driver's
2 s read timeout, while the driver armed the detectors. The emulator now loads them before it listens
(:func:`labqfl.sim_backends.websq.warm_count_source`)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LABQFL = Path(sys.executable).with_name("labqfl")


@pytest.mark.slow
@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("pyvisa_py", "pulsestreamer")),
                    reason="needs the 'hardware' extra (pyvisa-py, pulsestreamer)")
def test_first_acquisition_of_the_emulated_hardware_station_on_an_empty_numba_cache(tmp_path: Path,
                                                                                  emulated_hardware_file: Any) -> None:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache")}  # empty: every kernel compiles here
    station = emulated_hardware_file(tmp_path)  # its emulators hold their ports while this run compiles (~1-2 min)
    cmd = [str(LABQFL), "acquire", "--config", str(station),
           "--duration", "0.05", "--json", "--data-dir", str(tmp_path / "data")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=480, cwd=tmp_path)
    assert "no count line" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "compiling" in proc.stderr  # the cache was empty indeed
