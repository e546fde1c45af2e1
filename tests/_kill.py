"""Shared scaffolding of the kill tests (SIGTERM of a process holding instruments; the instruments' state
is read back in the test process, which serves their emulators so that it outlives the killed one):
tests/station/test_safe_state.py, tests/modulation/test_kill.py, tests/nodes/test_node_instruments.py.

The suite runs with ``--import-mode=importlib`` (no test folder on ``sys.path``), so a test module loads
this one by path::

    spec = importlib.util.spec_from_file_location("_kill", ROOT / "tests" / "_kill.py")
    kill = importlib.util.module_from_spec(spec); spec.loader.exec_module(kill)
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

#: Where a killed process's stderr is cut for a failure message [characters].
TAIL = 3000


def wait_for(cond: Any, what: str, proc: subprocess.Popen[str] | None = None, timeout: float = 60.0) -> None:
    """Poll ``cond()`` until true (a condition, not a fixed sleep); fail naming ``what`` (and the output of
    ``proc`` if it ended first)."""
    t_end = time.monotonic() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended (rc {proc.returncode}) before {what}:\n{out[-2000:]}\n{err[-TAIL:]}")
        if time.monotonic() > t_end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def node_children(pid: int) -> dict[int, str]:
    """Node processes (``python -m labqfl.nodes <role> --name <name>``) whose parent is ``pid``: pid → name."""
    out: dict[int, str] = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (p / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, IndexError, ValueError):  # ended meanwhile
            continue
        if ppid == pid and "labqfl.nodes" in cmd and "--name" in cmd:
            out[int(p.name)] = cmd[cmd.index("--name") + 1]
    return out


@contextmanager
def running(args: list[str], *, stdin: bool = False) -> Iterator[subprocess.Popen[str]]:
    """A child process (text pipes); killed and reaped on the way out if the test left it running."""
    proc = subprocess.Popen(args, stdin=subprocess.PIPE if stdin else None, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def holding(tmp: Path, body: str) -> list[str]:
    """The command of a Python script that runs ``body`` (dedented), prints ``ready`` and holds whatever
    it opened until it is killed."""
    script = tmp / "hold.py"
    script.write_text(textwrap.dedent(body) + '\nimport sys\nprint("ready", flush=True)\nsys.stdin.read()\n',
                      encoding="utf-8")
    return [sys.executable, str(script)]


def wait_ready(proc: subprocess.Popen[str], what: str = "station did not open", timeout: float = 60.0) -> None:
    """Read the ``ready`` line of a :func:`holding` script; fail with its output otherwise."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        out, err = proc.communicate(timeout=timeout)
        pytest.fail(f"{what}: {line}{out}\n{err[-TAIL:]}")


def terminate(proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    """SIGTERM ``proc`` and wait for it to end (at most ``timeout``); its stderr."""
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=timeout)
    return err


def stream_c1(d: dict[str, Any], pg_resource: str, *, frame_slots: int = 1000,
              clock_resource: str | None = None) -> dict[str, Any]:
    """A station dict whose C1 streams to a Pulse Streamer at ``pg_resource`` (one frame per upload, frames of
    ``frame_slots`` slots) and, with ``clock_resource``, whose master clock is a Pulse Streamer there."""
    if clock_resource is not None:
        d["master_clock"] = {"driver": "SwabianPulseStreamerClock", "resource": clock_resource}
    d["clients"][0]["pattern_generator"] = {"driver": "SwabianPulseStreamer", "resource": pg_resource,
                                            "options": {"frames_per_upload": 1, "link_bytes_per_s": 1e9}}  # loopback
    d["time_tagger"]["frame_slots"] = frame_slots
    return d


def assert_dark(*emulators: Any) -> None:
    """Every emulated Pulse Streamer stopped, every output at 0 V, set so by a final constant."""
    for em in emulators:
        assert em.playing is None and em.output == (0, 0, 0)
        assert em.constants and em.constants[-1][1] == (0, 0, 0)
