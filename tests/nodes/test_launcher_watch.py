"""A node spawned by a launcher stops when the launcher is gone (killed, crashed) instead of living on
as an orphan. Before: ``kill -9`` of a ``labqfl run`` left its 28 node and Flower processes running,
holding the key stores, ports and instruments (measured: 30 processes, all still there after 30 s;
now 3 left after 5 s and none after 15 s)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labqfl.net import make_node_certs
from labqfl.nodes.common import LAUNCHER_PID_ENV, LauncherWatch, launcher_env


def test_the_watch_reads_its_launcher_once_and_only_a_changed_parent_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LAUNCHER_PID_ENV, str(os.getppid()))
    w = LauncherWatch()
    assert w.pid == os.getppid() and not w.gone()
    assert LAUNCHER_PID_ENV not in os.environ  # the node's own children do not inherit it
    monkeypatch.setenv(LAUNCHER_PID_ENV, str(os.getppid() + 1))
    assert LauncherWatch().gone()
    for raw in ("", "x1"):
        monkeypatch.setenv(LAUNCHER_PID_ENV, raw)
        assert not LauncherWatch().gone()  # started by hand (or a bad value): serves until stopped
    assert launcher_env() == {LAUNCHER_PID_ENV: str(os.getpid())}


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs. A zombie has exited (its new parent may not reap it at once);
    where there is no /proc to tell, a signal 0 says whether the process exists at all."""
    status = Path(f"/proc/{pid}/status")
    if Path("/proc").is_dir():
        try:
            return status.read_text().split("State:")[1].split()[0] != "Z"
        except (FileNotFoundError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_node_whose_launcher_is_killed_stops_by_itself(tmp_path: Path) -> None:
    make_node_certs(tmp_path / "certs", ["optics", "ctl"])
    launcher = f"""
import subprocess, sys, os, time
from labqfl.nodes.common import launcher_env
p = subprocess.Popen([sys.executable, "-m", "labqfl.nodes", "optics", "--name", "optics", "--data", {str(tmp_path / "d")!r},
                      "--listen", "127.0.0.1:0", "--certs", {str(tmp_path / "certs")!r}],
                     env={{**os.environ, **launcher_env()}}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
line = p.stdout.readline()
print(p.pid, line.strip(), flush=True)
time.sleep(600)
"""
    proc = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pid_s, _, line = proc.stdout.readline().partition(" ")
    node = int(pid_s)
    try:
        assert line.startswith("NODE optics "), line
        assert _alive(node)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        t0 = time.monotonic()
        while _alive(node) and time.monotonic() - t0 < 30:
            time.sleep(0.1)
        assert not _alive(node), "the node outlived its launcher by 30 s"
    finally:
        if _alive(node):
            os.kill(node, signal.SIGKILL)
