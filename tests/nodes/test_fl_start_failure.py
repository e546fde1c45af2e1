"""A federated-learning node (server node, SuperNode) that exits at start is reported as the launcher reports a
QKD node that does (issue 16 leftover of review s35 chaos F2): ``node server exited with code 1 before it started:
<its own error line>``, not ``did not start within 120 s (exit code …)`` and a log tail."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from labqfl.nodes.common import NodeError
from labqfl.nodes.fl import _read_lines
from labqfl.nodes.launch import NodeProcess


def _spawn(name: str, script: str, log: Path) -> NodeProcess:
    with log.open("w") as errf:
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=errf, text=True)
    return NodeProcess(name, "server", log.parent, proc, log_path=log, t_spawn=time.perf_counter())


def test_a_server_node_that_exits_at_start_is_named_exited_with_its_error_line(tmp_path: Path) -> None:
    script = ("import sys; print('a warning line', file=sys.stderr); "
              "print('error: --fl-listen 127.0.0.1:1: address already in use', file=sys.stderr); sys.exit(1)")
    np_ = _spawn("server", script, tmp_path / "server.log")
    t = time.perf_counter()
    with pytest.raises(NodeError) as ei:
        _read_lines(np_, 120.0, want_fleet=True)
    assert time.perf_counter() - t < 30  # not the 120 s start timeout
    assert str(ei.value) == "node server exited with code 1 before it started: --fl-listen 127.0.0.1:1: address " \
                            "already in use"


def test_a_supernode_that_crashes_names_its_log_s_last_line(tmp_path: Path) -> None:
    np_ = _spawn("C1", "raise SystemExit('boom: no such thing')", tmp_path / "C1.log")
    with pytest.raises(NodeError) as ei:
        _read_lines(np_, 120.0, want_fleet=False)
    assert str(ei.value) == (f"node C1 exited with code 1 before it started: boom: no such thing (the last line of "
                             f"its log {tmp_path / 'C1.log'})")


def test_a_node_still_starting_is_said_to_be_running(tmp_path: Path) -> None:
    np_ = _spawn("C1", "import time; time.sleep(60)", tmp_path / "C1.log")
    try:
        with pytest.raises(NodeError) as ei:
            _read_lines(np_, 1.0, want_fleet=False)
    finally:
        np_.proc.kill()
        np_.proc.wait(30)
    assert str(ei.value).startswith("node C1 did not start within 1 s (still running); log tail:")
