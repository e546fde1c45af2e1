"""``labqfl node server --json`` (review s32 H2): stdout is exactly one JSON document, and it carries the
mutual-TLS front's address (``fl_address``); the launcher (:mod:`labqfl.nodes.fl`) reads the addresses
from that object as from the ``FLEET``/``NODE`` lines of a node started without ``--json``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from labqfl.net import make_node_certs
from labqfl.nodes.fl import _read_lines


def _first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    got: list[str] = []
    t = threading.Thread(target=lambda: got.append(proc.stdout.readline() if proc.stdout else ""), daemon=True)
    t.start()
    t.join(timeout)
    return got[0] if got else ""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_node_server_json_stdout_is_one_document_with_the_fronts_address(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    make_node_certs(certs, ["server", "ctl"])
    data = tmp_path / "server"
    cmd = [sys.executable, "-m", "labqfl.nodes", "server", "--name", "server", "--data", str(data), "--certs",
           str(certs), "--listen", "127.0.0.1:0", "--fl-listen", "127.0.0.1:0", "--json"]
    with (tmp_path / "server.log").open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            first = _first_line(proc, 120)
            proc.send_signal(signal.SIGTERM)
            rest, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, (tmp_path / "server.log").read_text()[-2000:]
    doc = json.loads(first + rest)  # the whole of stdout, not only its last line
    assert doc["node"] == "server" and doc["role"] == "server"
    fleet = json.loads((data / "nodes" / "server" / "fleet.json").read_text())
    assert doc["fl_address"] == fleet["address"] and doc["fl_address"] != doc["address"]
    host, port = doc["fl_address"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0


def _fake_node(lines: list[str]) -> SimpleNamespace:
    return SimpleNamespace(name="server", proc=SimpleNamespace(stdout=iter(lines), poll=lambda: None),
                           t_spawn=0.0, startup_s=None, log_path=Path("/nonexistent"))


def test_the_launcher_reads_the_addresses_from_the_json_object_and_from_the_lines() -> None:
    js = _fake_node([json.dumps({"node": "server", "role": "server", "address": "127.0.0.1:1001",
                                 "fl_address": "127.0.0.1:1002"}) + "\n"])
    assert _read_lines(js, 5, True) == ("127.0.0.1:1001", "127.0.0.1:1002")  # type: ignore[arg-type]
    assert js.startup_s is not None
    plain = _fake_node(["FLEET server 127.0.0.1:2002\n", "NODE server 127.0.0.1:2001\n"])
    assert _read_lines(plain, 5, True) == ("127.0.0.1:2001", "127.0.0.1:2002")  # type: ignore[arg-type]
    client = _fake_node([json.dumps({"node": "C1", "role": "supernode", "address": "127.0.0.1:3001"}) + "\n"])
    assert _read_lines(client, 5, False) == ("127.0.0.1:3001", "")  # type: ignore[arg-type]

