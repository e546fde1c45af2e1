"""A node that exits before it starts is reported as exited, with its own error line (review s35 chaos F2).

``labqfl node up`` said ``node C2 did not start within 120 s (exit code 1); log tail:`` and 30 lines of
traceback for a client whose key store could not be written: the node had exited at once (its stdout ended),
and the cause was an ``sqlite3.OperationalError`` no one turned into a ``LabqflError``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from labqfl.keystore import KeyStore
from labqfl.net import make_node_certs
from labqfl.nodes.common import NodeError
from labqfl.nodes.launch import NodeProcess, _read_address
from labqfl.nodes.preshared import write_pair_secret


def _spawn(cmd: list[str], log: Path) -> NodeProcess:
    with log.open("w") as errf:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, text=True)
    return NodeProcess("C2", "client", log.parent, proc, log_path=log, t_spawn=time.perf_counter())


def test_a_node_that_exits_at_start_is_named_exited_with_its_error_line(tmp_path: Path) -> None:
    script = ("import sys; print('a warning line', file=sys.stderr); "
              "print('error: key store /x/C2.sqlite: cannot be written: read-only', file=sys.stderr); sys.exit(1)")
    np_ = _spawn([sys.executable, "-c", script], tmp_path / "C2.log")
    t = time.perf_counter()
    with pytest.raises(NodeError) as ei:
        _read_address(np_, 120.0)
    assert time.perf_counter() - t < 30  # not the 120 s start timeout
    assert str(ei.value) == "node C2 exited with code 1 before it started: key store /x/C2.sqlite: cannot be " \
                            "written: read-only"


def test_a_node_that_crashes_at_start_names_its_log_s_last_line(tmp_path: Path) -> None:
    np_ = _spawn([sys.executable, "-c", "raise SystemExit('boom: no such thing')"], tmp_path / "C2.log")
    with pytest.raises(NodeError) as ei:
        _read_address(np_, 120.0)
    assert str(ei.value) == (f"node C2 exited with code 1 before it started: boom: no such thing (the last line of "
                             f"its log {tmp_path / 'C2.log'})")


def test_a_client_whose_store_is_immutable_fails_in_one_line_naming_the_store(tmp_path: Path) -> None:
    """The reviewer's case end to end: a real client node process, its store immutable (``chattr +i``, which
    holds for root too; skipped where the file system or the user cannot set it), its pre-shared secret
    waiting: the node exits 1 with one ``error:`` line naming the store and the cause, and the launcher
    passes that line on."""
    certs, data = tmp_path / "certs", tmp_path / "C2"
    make_node_certs(certs, ["C1", "C2"])
    store = KeyStore.for_node("C2", data)
    path = store.path
    store.close()
    write_pair_secret("C1-C2", tmp_path / "C1", data, 4096)
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (needs root and a file system that supports it)")
    try:
        np_ = _spawn([sys.executable, "-m", "labqfl.nodes", "client", "--name", "C2", "--data", str(data),
                      "--listen", "127.0.0.1:0", "--certs", str(certs)], tmp_path / "C2.log")
        with pytest.raises(NodeError) as ei:
            _read_address(np_, 120.0)
        np_.proc.wait(30)
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    msg = str(ei.value)
    assert msg.startswith(f"node C2 exited with code 1 before it started: key store {path}: cannot be written: "
                          "the file or its folder is read-only"), msg
    assert "attempt to write a readonly database" in msg and "\n" not in msg and "Traceback" not in msg
    assert (data / "nodes" / "C2" / "preshared" / "C1-C2.json").is_file()  # the secret is kept: nothing lost
