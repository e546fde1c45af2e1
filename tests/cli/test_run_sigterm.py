"""``labqfl run`` stopped by SIGTERM during its acquisition stops as ``labqfl acquire`` does
(tests/cli/test_acquire_sigterm.py): one line ``error: terminated (SIGTERM)…``, exit status 143, the run
folder left interrupted and resumable. In process (``--in-process``) the station's instruments go to
their safe state first; before, the station's handler re-sent the signal with its default action, so
the process died (status −15, no error line) with ``state.json`` saying "running". Over node processes
(the default) every node the job started is stopped: none is left behind.

A SIGTERM that comes while Numba compiles the kernels (an empty Numba cache, as in a clean clone) stops the run
the same way (issue 19: it hung, killed at 240 s in clean-clone CI; tests/station/test_sigterm_inside_numba.py
has the deterministic unit case)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from test_acquire_sigterm import LABQFL, TERMINATED

from labqfl.mainjob import MainJob

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("_kill", ROOT / "tests" / "_kill.py")
assert _spec and _spec.loader
kill = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kill)


def _state(runs: Path) -> dict:
    """The run's state.json (``{}`` until it is there and whole)."""
    try:
        [folder] = list(runs.iterdir())
        return json.loads((folder / "state.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _terminated_run(small_station_file: Path, tmp_path: Path, path: str, duration: str,
                    ready: object, again_s: float | None = None) -> tuple[subprocess.Popen[str], str, Path]:
    """Start ``labqfl run`` (``path``: --in-process or --nodes), SIGTERM it once ``ready(proc)`` holds while
    it acquires (and once more ``again_s`` later, as an impatient scheduler does); (the ended process, its
    stderr, its run folder)."""
    runs = tmp_path / "runs"
    cmd = [str(LABQFL), "run", "--config", str(small_station_file), "--duration", duration, "--rounds", "2",
           "--eps-sec", "1e-4", path, "--data-dir", str(tmp_path / "data"), "--out", str(runs)]
    with kill.running(cmd) as proc:
        kill.wait_for(lambda: bool(_state(runs).get("acquisitions")) and ready(proc),  # type: ignore[operator]
                      "the acquisition to start", proc, timeout=240)
        assert _state(runs)["phases"]["acquire"] == "running"
        proc.send_signal(signal.SIGTERM)
        if again_s is not None:
            time.sleep(again_s)
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=240)
    [folder] = list(runs.iterdir())
    return proc, err, folder


def _assert_interrupted(proc: subprocess.Popen[str], err: str, folder: Path, line: str) -> None:
    assert proc.returncode == 143, err[-kill.TAIL:]
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [line], err[-kill.TAIL:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-kill.TAIL:]
    state = json.loads((folder / "state.json").read_text())
    assert state["status"] == "interrupted" and state["last_error"] == "terminated (SIGTERM)"
    assert state["phases"]["acquire"] == "running" and [a["complete"] for a in state["acquisitions"]] == [False]
    assert json.loads((folder / "metrics.json").read_text())["status"] == "interrupted"
    assert MainJob.resume(folder).state["status"] == "interrupted"  # readable, resumable


def test_sigterm_during_the_in_process_acquisition_stops_the_run_cleanly(small_station_file: Path,
                                                                         tmp_path: Path) -> None:
    proc, err, folder = _terminated_run(small_station_file, tmp_path, "--in-process", "3", lambda p: True)
    _assert_interrupted(proc, err, folder, TERMINATED)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to look for leftover node processes")
@pytest.mark.parametrize("again_s", [None, 0.02])
def test_sigterm_during_the_acquisition_over_nodes_stops_every_node(small_station_file: Path, tmp_path: Path,
                                                                    again_s: float | None) -> None:
    """A second SIGTERM while the job stops its nodes is ignored: it broke off the stop before the optics
    node had its own, and the optics node was left running."""
    nodes: dict[int, str] = {}

    def all_up(proc: subprocess.Popen[str]) -> bool:
        nodes.update(kill.node_children(proc.pid))
        return len(nodes) == 4  # optics, detector, C1, C2

    proc, err, folder = _terminated_run(small_station_file, tmp_path, "--nodes", "3", all_up, again_s)
    # the job's process holds no instrument (the nodes do, and go safe on their own SIGTERM)
    _assert_interrupted(proc, err, folder, "error: terminated (SIGTERM)")
    left = {pid: name for pid, name in nodes.items() if Path(f"/proc/{pid}").exists()}
    assert not left, f"node processes left running after SIGTERM: {left}"


#: A sitecustomize for the run's process: SIGTERM to itself at the first moment llvmlite takes its LLVM lock in an
#: llvmlite ``__del__`` while the main thread works in a job of the simulator's thread pool (it compiles the
#: first window's kernels there, its helper thread beside it) -- where the run deadlocked in issue 19.
_SIGTERM_IN_LLVM = textwrap.dedent("""
    import os, signal, sys, threading
    from llvmlite.binding import ffi

    fired = []

    def at_llvm_lock():  # called by llvmlite right after it took its lock
        if fired or threading.current_thread() is not threading.main_thread():
            return
        names, files, f = set(), set(), sys._getframe(1)
        while f is not None:
            names.add(f.f_code.co_name)
            files.add(os.path.basename(f.f_code.co_filename))
            f = f.f_back
        if "__del__" in names and "_parallel.py" in files:
            fired.append(1)
            sys.stderr.write("test: SIGTERM inside the LLVM lock\\n")
            signal.raise_signal(signal.SIGTERM)

    ffi.register_lock_callback(at_llvm_lock, lambda: None)
""")


@pytest.mark.slow
def test_sigterm_inside_a_numba_compilation_of_the_in_process_run_stops_it_cleanly(small_station_file: Path,
                                                                                    tmp_path: Path) -> None:
    """Before the fix the run hung here for good: its main thread held llvmlite's LLVM lock (the interrupt was
    raised inside the lock's ``__enter__`` and lost in the ``__del__``) and waited for Numba's compiler lock,
    held by the simulator's helper thread, which waited for the LLVM lock."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SIGTERM_IN_LLVM, encoding="utf-8")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"),  # empty: the kernels compile in the run
           "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    runs = tmp_path / "runs"
    cmd = [str(LABQFL), "run", "--config", str(small_station_file), "--duration", "3", "--rounds", "2",
           "--eps-sec", "1e-4", "--in-process", "--data-dir", str(tmp_path / "data"), "--out", str(runs)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _, err = proc.communicate(timeout=480)
    finally:
        if proc.poll() is None:  # hung: killed, and the test fails on the timeout
            proc.kill()
            proc.wait()
    assert "test: SIGTERM inside the LLVM lock" in err, err[-kill.TAIL:]  # the signal came where it deadlocked
    [folder] = list(runs.iterdir())
    _assert_interrupted(proc, err, folder, TERMINATED)
