"""``labqfl node ...``: bad addresses, a missing client, Ctrl-C and a work folder used again, each in one line.

Before: ``--listen 127.0.0.1:99999`` listened on 34463 (gRPC takes the port modulo 65536), ``--listen foo``
ended in a 57-line traceback (``RuntimeError: Failed to bind``), a port already served by another node was
shared with it (SO_REUSEPORT); ``node acquire`` with fewer ``--client`` than the station's clients ended in
``KeyError: 'C3'``; Ctrl-C during ``node up`` printed ``error: ValueError: Internal gRPC call error 8``; and
``node up --workdir W`` run again was refused with "W/certs already has [...]; use force to overwrite", an
option ``node up`` does not have."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.errors import ConfigError
from labqfl.net import NodeCredentials, NodeServer, make_node_certs
from labqfl.nodes.common import NodeError
from labqfl.qkd.messaging import MessageError

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
LABQFL = str(Path(sys.executable).parent / "labqfl")  # the console script, as a user runs it
NAMES = ["optics", "detector", "C1", "C2", "C3", "C4", "ctl"]


def _one_error_line(argv: list[str]) -> str:
    r = runner.invoke(app, argv)
    assert r.exit_code == 1, (r.exit_code, r.output, r.exception)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


@pytest.mark.parametrize("node", ["client", "detector", "optics"])
@pytest.mark.parametrize("bad", ["127.0.0.1:99999", "127.0.0.1:70000", "127.0.0.1:-1", "foo", ":80", "127.0.0.1:"])
def test_listen_outside_host_port_with_a_port_0_65535_is_refused_naming_it(node: str, bad: str, tmp_path: Path) -> None:
    argv = ["node", node, "--listen", bad, "--data", str(tmp_path / "d"), "--certs", str(tmp_path / "none")]
    line = _one_error_line([*argv, "--name", "C1"] if node == "client" else argv)
    assert line == f"error: --listen {bad!r} is not HOST:PORT with a port 0-65535"
    assert not (tmp_path / "d").exists()  # refused before anything is made


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    make_node_certs(d, NAMES)
    return d


def test_a_port_in_use_is_one_line_naming_the_address(certs: Path, tmp_path: Path) -> None:
    """In its own process: gRPC's failed bind also wrote a C-level log line on stderr."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        addr = f"127.0.0.1:{s.getsockname()[1]}"
        r = subprocess.run([LABQFL, "node", "optics", "--listen", addr, "--data",
                            str(tmp_path), "--certs", str(certs)], capture_output=True, text=True, timeout=120,
                           cwd=ROOT)
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines() == [f"error: node optics: cannot listen on {addr}: Address already in use; expected "
                                     "HOST:PORT with a free port and HOST an address or name of this machine"]


def test_a_second_node_on_a_served_port_is_refused_not_sharing_it(certs: Path) -> None:
    first = NodeServer(NodeCredentials.load(certs, "C1")).start()
    try:
        with pytest.raises(MessageError, match=rf"node C2: cannot listen on {first.address}: Address already in use"):
            second = NodeServer(NodeCredentials.load(certs, "C2"), first.address)
            second.stop(0)
    finally:
        first.stop(0)


ACQUIRE = ["node", "acquire", "--certs", "unused", "--detector", "127.0.0.1:1", "--optics", "127.0.0.1:2",
           "--duration", "1"]


@pytest.mark.parametrize(("clients", "line"), [
    (["C1=127.0.0.1:3", "C2=127.0.0.1:4"],
     "missing --client for C3, C4 (station 'sagnac-4client-sim' has clients C1, C2, C3, C4); expected --client "
     "NAME=HOST:PORT for every client"),
    (["C1=127.0.0.1:3,C2=127.0.0.1:4,C3=127.0.0.1:5,C4=127.0.0.1:6", "C9=127.0.0.1:7"],
     "--client for C9: no such client (station 'sagnac-4client-sim' has clients C1, C2, C3, C4)"),
    (["C1=127.0.0.1:3", "C1=127.0.0.1:4"],
     "--client: C1 given twice (127.0.0.1:3 and 127.0.0.1:4); expected one NAME=HOST:PORT per name"),
    (["C1=127.0.0.1:99999"], "--client: 'C1=127.0.0.1:99999' is not NAME=HOST:PORT with a port 0-65535"),
    (["C1"], "--client: 'C1' is not NAME=HOST:PORT with a port 0-65535"),
])
def test_acquire_refuses_clients_that_are_not_the_stations_before_any_session(clients: list[str], line: str) -> None:
    argv = list(ACQUIRE)
    for c in clients:
        argv += ["--client", c]
    assert _one_error_line(argv) == f"error: {line}"


@pytest.mark.parametrize(("option", "bad"), [("--detector", "127.0.0.1:70000"), ("--optics", "optics")])
def test_acquire_refuses_a_node_address_outside_host_port(option: str, bad: str) -> None:
    argv = list(ACQUIRE)
    argv[argv.index(option) + 1] = bad
    line = _one_error_line([*argv, "--client", "C1=127.0.0.1:3"])
    assert line == f"error: {option} {bad!r} is not HOST:PORT with a port 0-65535"


def test_run_acquisition_needs_every_clients_address_before_any_session(certs: Path) -> None:
    from labqfl.nodes.launch import run_acquisition

    with pytest.raises(NodeError, match=r"no address for client C3, C4; expected one for every client"):
        run_acquisition(["C1", "C2", "C3", "C4"], certs, detector="127.0.0.1:1", optics="127.0.0.1:2",
                        clients={"C1": "127.0.0.1:3", "C2": "127.0.0.1:4"}, duration=1.0)


# -- Ctrl-C ------------------------------------------------------------------------------------------------

_WAITING = textwrap.dedent("""
    import os, signal, sys, threading
    from pathlib import Path
    from labqfl.net import NodeChannel, NodeCredentials, NodeServer, ServedSession
    from labqfl.qkd.messaging import Message

    certs = Path(sys.argv[1])
    release = threading.Event()

    class Slow:
        def handle(self, req):
            release.wait(30)
            return Message("slow/done")

    srv = NodeServer(NodeCredentials.load(certs, "C1"))
    srv.route("slow", lambda peer, hello: ServedSession(Slow()))
    srv.start()
    ch = NodeChannel(srv.address, NodeCredentials.load(certs, "ctl"), "C1", "slow")
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        try:
            ch.request(Message("slow/go"))
        finally:
            ch.close()  # as every caller does; it raised ValueError: Internal gRPC call error 8
    except KeyboardInterrupt:
        print("KeyboardInterrupt")
    finally:
        release.set()
        srv.stop(0)
""")


def test_ctrl_c_while_a_session_waits_leaves_a_keyboard_interrupt_and_a_closable_session(certs: Path) -> None:
    r = subprocess.run([sys.executable, "-c", _WAITING, str(certs)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "KeyboardInterrupt", (r.stdout, r.stderr[-3000:])


def _node_pids(workdir: Path) -> list[int]:
    r = subprocess.run(["pgrep", "-f", f"labqfl.nodes .*{workdir}"], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()]


@pytest.mark.slow
def test_ctrl_c_during_node_up_is_one_line_stops_every_node_and_the_workdir_runs_again(tmp_path: Path) -> None:
    """Ctrl-C at a terminal reaches the launcher and its nodes (one process group) in the acquisition; then
    ``node up`` in the same work folder runs, with the certificates the first one made."""
    work = tmp_path / "W"
    cmd = [LABQFL, "node", "up", "--duration", "4", "--workdir", str(work), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            start_new_session=True)
    try:
        t_end = time.monotonic() + 240
        while len(list(work.glob("nodes/*/nodes/*/address.json"))) < 6 and proc.poll() is None:
            assert time.monotonic() < t_end, "the nodes did not start"
            time.sleep(0.1)
        time.sleep(1.0)  # the operator's sessions are open: the acquisition runs
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert len(err.splitlines()) == 1 and err.startswith("error: interrupted by user (Ctrl-C)"), err
    doc = json.loads(out)  # with --json the failure is on stdout too (issue 19)
    assert doc["exit_code"] == 130 and err.strip() == f"error: {doc['error']}", out
    assert _node_pids(work) == []
    ca = (work / "certs" / "ca.pem").read_bytes()

    r = subprocess.run([*cmd[:4], "1", *cmd[5:]], capture_output=True, text=True, cwd=ROOT, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (work / "certs" / "ca.pem").read_bytes() == ca
    assert _node_pids(work) == []


# -- certificates of an earlier network in the work folder ---------------------------------------------------

def test_certificates_of_an_earlier_network_are_used_again(tmp_path: Path) -> None:
    from labqfl.nodes.launch import node_certs

    d = tmp_path / "certs"
    node_certs(d, NAMES)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    node_certs(d, NAMES)  # `node up --workdir W` again: was "use force to overwrite"
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    node_certs(d, [*NAMES, "C5"])  # a station with one client more: its certificate from the same CA
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.name in before} == before
    assert NodeCredentials.load(d, "C5").ca_pem == before["ca.pem"]


@pytest.mark.parametrize("spoil", ["foreign", "half", "no-ca-key", "swapped"])
def test_a_certificate_folder_that_cannot_be_used_again_is_refused_saying_what_to_do(tmp_path: Path, spoil: str) -> None:
    from labqfl.nodes.launch import node_certs

    d = tmp_path / "certs"
    node_certs(d, NAMES)
    if spoil == "foreign":  # another network's certificate for C2
        make_node_certs(tmp_path / "other", ["C2"])
        for ext in (".pem", ".key"):
            (d / f"node-C2{ext}").write_bytes((tmp_path / "other" / f"node-C2{ext}").read_bytes())
    elif spoil == "half":
        (d / "node-C3.key").unlink()
    elif spoil == "no-ca-key":
        (d / "ca.key").unlink()
    else:
        (d / "node-C1.pem").write_bytes((d / "node-C4.pem").read_bytes())
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    with pytest.raises(ConfigError) as e:
        node_certs(d, NAMES)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{d}: ")
    assert msg.endswith(f"delete the folder {d} (new throwaway certificates are made) or use another work folder "
                        "(--workdir)")
    assert "force" not in msg
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before  # nothing overwritten
