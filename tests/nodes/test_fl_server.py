"""The federated-learning server node (issue 16): ``labqfl node server`` runs Flower's SuperLink with
TLS behind a mutual-TLS front that admits only the station's clients, with certificates from the
network's CA; its ``[fl_server]`` station section is typed and validated.

The end-to-end run (acquisition → distillation → training across node processes, key accounting
at both ends, the server folder searched for key bits and unmasked updates) is
tests/mainjob/test_run_nodes.py.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.config import load_station_config, parse_station_config, station_to_toml_dict
from labqfl.errors import ConfigError
from labqfl.net import make_node_certs
from labqfl.nodes.tunnel import MtlsFront, TunnelEnd

runner = CliRunner()


def _files(d: Path, name: str) -> dict[str, Path]:
    return {"ca": d / "ca.pem", "cert": d / f"node-{name}.pem", "key": d / f"node-{name}.key"}


def _echo_server() -> tuple[socket.socket, str]:
    """A TCP echo server on loopback standing in for the SuperLink (one thread per connection)."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return

            def echo(c: socket.socket) -> None:
                with c:
                    while data := c.recv(4096):
                        c.sendall(data)

            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return srv, f"127.0.0.1:{srv.getsockname()[1]}"


def _through(tunnel_address: str, payload: bytes) -> bytes:
    """Send ``payload`` into a tunnel end and read back what comes out (b"" when it was refused)."""
    host, port = tunnel_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(payload)
        got = b""
        try:
            while len(got) < len(payload) and (chunk := s.recv(4096)):
                got += chunk
        except (ConnectionError, TimeoutError):
            pass
    return got


def test_the_front_splices_a_client_of_the_network_and_refuses_another_ca_and_other_names(tmp_path) -> None:
    net, other = tmp_path / "certs", tmp_path / "other-ca"
    make_node_certs(net, ["server", "C1", "optics"])
    make_node_certs(other, ["C1"])  # same name, another CA
    srv, target = _echo_server()
    front = MtlsFront(**_files(net, "server"), listen="127.0.0.1:0", target=target, allowed=["C1", "C2"])
    ends = {"C1": TunnelEnd(**_files(net, "C1"), server=front.start()),
            "intruder": TunnelEnd(ca=net / "ca.pem", cert=other / "node-C1.pem", key=other / "node-C1.key",
                                  server=front.address),
            "optics": TunnelEnd(**_files(net, "optics"), server=front.address)}
    try:
        addr = {k: e.start() for k, e in ends.items()}
        msg = b"labqfl" * 1000
        assert _through(addr["C1"], msg) == msg
        assert _through(addr["intruder"], msg) == b""  # handshake refused: its certificate is not from our CA
        assert _through(addr["optics"], msg) == b""  # our CA, but not a client of the station
    finally:
        for e in ends.values():
            e.stop()
        front.stop()
        srv.close()
    assert front.accepted == ["C1"]
    assert len(front.refused) == 2 and "optics" in front.refused


def test_fl_server_section_is_typed_and_a_bad_value_is_one_clear_error() -> None:
    d = station_to_toml_dict(load_station_config())
    d["fl_server"] = {"host": "fl.lab", "port": 7100, "certs": "/etc/labqfl/certs"}
    fs = parse_station_config(d, "station.toml").fl_server
    assert fs is not None and (fs.name, fs.host, fs.port, fs.certs, fs.data) == ("server", "fl.lab", 7100,
                                                                                "/etc/labqfl/certs", None)
    for bad, field, says in (({"port": 70000}, "fl_server.port", "less than or equal to 65535"),
                             ({"host": "fl lab"}, "fl_server.host", "IP address or a DNS name"),
                             ({"name": "srv_1"}, "fl_server.name", "pattern"),
                             ({"certs": ""}, "fl_server.certs", "at least 1 character"),
                             ({"listen": "x"}, "fl_server.listen", "unknown field")):
        d["fl_server"] = bad
        with pytest.raises(ConfigError) as e:
            parse_station_config(d, "station.toml")
        msg = str(e.value)
        assert msg.startswith(f"station.toml: field '{field}'") and says in msg and "\n" not in msg, msg
    # without the section nothing changes in a dump (the section is optional)
    assert "fl_server" not in station_to_toml_dict(load_station_config())


def test_node_server_without_data_and_certs_says_what_it_needs(tmp_path) -> None:
    r = runner.invoke(app, ["node", "server"])
    assert r.exit_code != 0
    assert "needs --data and --certs" in r.output


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_server_node_refuses_a_client_with_another_cas_certificate_and_stops_with_exit_0(tmp_path) -> None:
    """A real ``labqfl node server`` process: C1 (our CA) reaches the SuperLink's TLS through the
    front (the SuperLink's certificate is the server node's, CN server); a C1 certificate from
    another CA never gets past the front; SIGTERM stops the node (and its SuperLink) with exit 0."""
    from labqfl.nodes.fl import FlNetwork

    net = FlNetwork(tmp_path / "fl", None, [], tmp_path / "unused", keep_ca_key=True)  # C1's issued below
    net.start()  # the server node only (no clients given): certificates server + ctl, then its SuperLink
    try:
        make_node_certs(net.certs, ["C1"])  # the same CA (reused from the folder)
        make_node_certs(tmp_path / "other", ["C1"])
        ok_end = TunnelEnd(**_files(net.certs, "C1"), server=net.fleet_address)
        bad_end = TunnelEnd(ca=net.certs / "ca.pem", cert=tmp_path / "other" / "node-C1.pem",
                            key=tmp_path / "other" / "node-C1.key", server=net.fleet_address)
        try:
            inner = ssl.create_default_context(cafile=str(net.certs / "ca.pem"))  # what a SuperNode does
            host, port = ok_end.start().rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=30) as s, \
                    inner.wrap_socket(s, server_hostname="127.0.0.1") as tls:
                subject = dict(x[0] for x in tls.getpeercert()["subject"])
                assert subject["commonName"] == "server"  # the SuperLink serves the server node's certificate
            host, port = bad_end.start().rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=30) as s, pytest.raises((ssl.SSLError, OSError)):
                inner.wrap_socket(s, server_hostname="127.0.0.1")
        finally:
            ok_end.stop()
            bad_end.stop()
    finally:
        codes = net.stop()
    assert codes == {"server": 0}
    log = (tmp_path / "fl" / "logs" / "server.log").read_text()
    assert "refused a connection" in log and "TLS handshake failed" in log


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to look for leftover processes")
def test_sigterm_to_the_job_while_the_fl_nodes_run_stops_every_one_of_them(small_station_file, tmp_path,
                                                                            monkeypatch) -> None:
    """SIGTERM to the job's process during the training phase is a Ctrl-C: the server node, the
    SuperNodes and their Flower processes are all stopped before the interrupt leaves the job."""
    import os
    import signal

    from labqfl.app.training import TrainingSettings, TrainingSetup
    from labqfl.nodes.fl import FlNetwork
    from labqfl.nodes.runjob import train_over_nodes

    seen: dict[str, int] = {}

    def terminated(self: FlNetwork, config: object, timeout_s: float, init_params: object = None) -> object:
        seen["procs"] = len(_ours(str(tmp_path)))
        t_end = time.monotonic() + 60  # the SuperNodes fork their SuperExecs on their own time
        while (forked := _forked_by_zygotes()) != [2, 2] and time.monotonic() < t_end:
            time.sleep(0.1)
        seen["forked"] = forked
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not interrupt the job")

    monkeypatch.setattr(FlNetwork, "train", terminated)
    cfg = load_station_config(small_station_file)
    setup = TrainingSetup(TrainingSettings(task="mnist-qnn", names=("C1", "C2"), q=8, rounds=1, keys="qkd",
                                           preflight=False))
    prev = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        train_over_nodes(cfg, setup, data_dir=tmp_path / "data", server_dir=tmp_path / "server")
    assert signal.getsignal(signal.SIGTERM) == prev  # the job's handler is gone again
    assert seen["procs"] >= 5  # server node + SuperLink, 2 supernode nodes + their flower-supernode
    # each client's SuperNode and its SuperExec run in processes forked from that client's zygote
    # (Flower imported once per client), not started cold
    assert seen["forked"] == [2, 2]
    assert _ours(str(tmp_path)) == [], "processes left running after SIGTERM to the job"


def _forked_by_zygotes() -> list[int]:
    """For every ClientApp zygote running (``labqfl.nodes.warmapp zygote``), how many live processes
    it has forked (children share its command line), sorted."""
    import os

    procs: dict[int, tuple[int, str]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (d / "stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        if rest[0] not in ("Z", "X"):
            procs[int(d.name)] = (int(rest[1]), cmd)
    tag = "labqfl.nodes.warmapp zygote "
    zygotes = [pid for pid, (ppid, cmd) in procs.items() if tag in cmd and tag not in procs.get(ppid, (0, ""))[1]]
    return sorted(sum(1 for ppid, _ in procs.values() if ppid == z) for z in zygotes)


def _ours(tag: str) -> list[str]:
    """Command lines of processes (ours: their environment is readable) naming ``tag``."""
    import os

    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            env = (d / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if tag in cmd or tag in env:
            out.append(cmd)
    return out


def test_training_over_nodes_takes_any_client_names_dp_and_noise_from_the_setup() -> None:
    """``flower_spec_for``: a station whose clients are C2, C1, C3 in loop order, with distributed DP
    and a noise model, gives the Flower run the same names and pairs, the same DP plan and the same
    noise model as the in-process setup (these used to be refused)."""
    from labqfl.app.training import TrainingSettings, TrainingSetup
    from labqfl.nodes.runjob import flower_spec_for

    names = ["C2", "C1", "C3"]
    setup = TrainingSetup(TrainingSettings(task="mnist-qnn", names=tuple(names), q=32, rounds=2, keys="qkd",
                                           dp_epsilon=5.0, dp_honest=2, noise="depolarizing=0.01", shots=64,
                                           preflight=False))
    spec = flower_spec_for(setup, names)
    assert spec.names == names
    assert spec.secagg().pairs(spec.names) == setup.secagg.pairs(names) == ["C2-C1", "C2-C3", "C1-C3"]
    assert spec.dp_plan() == setup.dp_plan and spec.secagg().dp == setup.secagg.dp
    assert spec.noise_model() == setup.noise_model and spec.model().noise == setup.model.noise
    plain = flower_spec_for(TrainingSetup(TrainingSettings(task="mnist-qnn", names=("C1", "C2"), q=8, rounds=1,
                                                           keys="qkd", preflight=False)), ["C1", "C2"])
    assert (plain.dp_plan(), plain.noise_model(), plain.names) == (None, None, ["C1", "C2"])
