"""``labqfl node certs DIR --node NAME[=HOST,...]`` (CLI review s32 M3): the network's node certificates
without a Python snippet. What it issues is what the nodes accept (``NodeCredentials.load`` and a mutual-TLS
session on a ``NodeServer``), each certificate carries its node identity and only its own hosts, keys are
0600, a CA already in the folder issues later certificates, nothing is overwritten without ``--force``,
``--json`` is one document, and a bad node name or host is one error line with nothing written."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cli_helpers import error_line, json_doc
from cryptography import x509
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.keystore.certs import cert_uris
from labqfl.net import NodeChannel, NodeCredentials, NodeServer, ServedSession
from labqfl.qkd.messaging import Message

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["node", "certs", *args])




def _cert(d: Path, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((d / f"node-{name}.pem").read_bytes())


def _sans(c: x509.Certificate) -> tuple[list[str], list[str]]:
    san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName), [str(a) for a in san.get_values_for_type(x509.IPAddress)]


class _Echo:
    def __init__(self, peer: str) -> None:
        self.peer = peer

    def handle(self, req: Message) -> Message:
        return Message("echo", {"peer": self.peer})


def _session_peer(d: Path, server: str, client: str, service: str) -> str:
    """The peer name ``server``'s NodeServer sees when ``client`` opens ``service`` on it (mutual TLS)."""
    srv = NodeServer(NodeCredentials.load(d, server), max_workers=4)
    srv.route(service, lambda peer, hello: ServedSession(_Echo(peer)), allowed_peers={client})
    srv.start()
    try:
        with NodeChannel(srv.address, NodeCredentials.load(d, client), server, service, timeout_s=30) as ch:
            return str(ch.request(Message("ping", {})).get("peer"))
    finally:
        srv.stop()


def test_issued_certificates_are_accepted_by_the_nodes(tmp_path: Path) -> None:
    d = tmp_path / "certs"
    out = json_doc(_run(str(d), "--node", "C1=c1.lab,10.1.2.3", "--node", "C2", "--node", "ctl",
                     "--node", "server=fl.lab,127.0.0.1", "--days", "30", "--json"))
    assert set(out["nodes"]) == {"C1", "C2", "ctl", "server"} and out["ca"]["new"] is True
    for n in ("C1", "C2", "ctl", "server"):
        creds = NodeCredentials.load(d, n)  # CN, node URI, key mode: what every node checks at start
        assert creds.name == n
        assert cert_uris(_cert(d, n)) == [f"urn:labqfl:node:{n}"]
        assert out["nodes"][n]["identity"] == f"urn:labqfl:node:{n}"
        assert stat.S_IMODE((d / f"node-{n}.key").stat().st_mode) == 0o600
        left = _cert(d, n).not_valid_after_utc - _cert(d, n).not_valid_before_utc
        assert 29 < left.days <= 30
    assert stat.S_IMODE((d / "ca.key").stat().st_mode) == 0o600
    # each certificate names its own hosts only (DNS and IP subjectAltNames), the operator's none
    assert _sans(_cert(d, "C1")) == (["C1", "c1.lab"], ["10.1.2.3"])
    assert _sans(_cert(d, "C2")) == (["C2"], [])
    assert _sans(_cert(d, "server")) == (["server", "fl.lab"], [str(ipaddress.ip_address("127.0.0.1"))])
    assert _sans(_cert(d, "ctl")) == (["ctl"], [])
    assert out["nodes"]["C1"]["sans"] == ["DNS:C1", "DNS:c1.lab", "IP:10.1.2.3", "URI:urn:labqfl:node:C1"]
    assert out["nodes"]["ctl"]["eku"] == ["clientAuth"]
    # a session over mutual TLS: C2 serves, C1 and the operator connect
    assert _session_peer(d, "C2", "C1", "qkd/pairctl") == "C1"
    assert _session_peer(d, "C2", "ctl", "ctl") == "ctl"
    # the CA key warning is in the JSON and on stderr, never on stdout
    assert any("ca.key" in w and "offline" in w for w in out["warnings"])
    assert "warning: " in _stderr_of_adding_optics(d)


def _stderr_of_adding_optics(d: Path) -> str:
    """stderr of a human run that adds a node to ``d`` (the CA's key warning is printed there)."""
    res = _run(str(d), "--node", "optics")
    assert res.exit_code == 0, res.output
    assert res.stdout == ""
    return res.stderr


def test_a_ca_in_the_folder_issues_later_certificates(tmp_path: Path) -> None:
    d = tmp_path / "certs"
    json_doc(_run(str(d), "--node", "C1", "--json"))
    ca = (d / "ca.pem").read_bytes()
    out = json_doc(_run(str(d), "--node", "detector=det.lab", "--json"))
    assert out["ca"]["new"] is False and (d / "ca.pem").read_bytes() == ca
    assert _session_peer(d, "detector", "C1", "ann") == "C1"


def test_existing_files_are_refused_without_force(tmp_path: Path) -> None:
    d = tmp_path / "certs"
    json_doc(_run(str(d), "--node", "C1", "--node", "C2", "--json"))
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    line = error_line(_run(str(d), "--node", "C3", "--node", "C1=c1.lab"))
    assert "node-C1.pem" in line and "--force" in line
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before  # not even C3 was issued
    out = json_doc(_run(str(d), "--node", "C1=c1.lab", "--force", "--json"))
    assert (d / "node-C1.pem").read_bytes() != before["node-C1.pem"]
    assert (d / "ca.pem").read_bytes() == before["ca.pem"] and out["ca"]["new"] is False  # the same CA re-issues
    assert _sans(_cert(d, "C1"))[0] == ["C1", "c1.lab"]
    assert _session_peer(d, "C2", "C1", "qkd/pairctl") == "C1"  # C2's old certificate still trusts it


@pytest.mark.parametrize(("spec", "words"), [
    ("C_1", "node name 'C_1' is invalid"),
    ("C1=bad_host!", "'bad_host!' is neither an IP address nor a DNS name"),
    ("C1=c1.lab,,x", "no empty name or host"),
    ("C1=", "no empty name or host"),
    ("=c1.lab", "no empty name or host"),
    ("ctl=ops.lab", "only connects"),
])
def test_a_bad_node_name_or_host_is_one_error_and_writes_nothing(tmp_path: Path, spec: str, words: str) -> None:
    d = tmp_path / "certs"
    line = error_line(_run(str(d), "--node", "C2", "--node", spec, "--json"))
    assert words in line and "--node" in line, line
    assert not d.exists()


def test_a_node_given_twice_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "certs"
    assert "given twice" in error_line(_run(str(d), "--node", "C1=a.lab", "--node", "C1=b.lab"))
    assert not d.exists()


def test_drop_ca_key_and_a_folder_whose_ca_cannot_issue(tmp_path: Path) -> None:
    d = tmp_path / "certs"
    out = json_doc(_run(str(d), "--node", "C1", "--node", "C2", "--drop-ca-key", "--json"))
    assert not (d / "ca.key").exists() and out["ca"]["key"] is None and out["ca"]["key_dropped"] is True
    assert not any("offline" in w for w in out["warnings"])
    NodeCredentials.load(d, "C1")
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    line = error_line(_run(str(d), "--node", "C3"))
    assert "ca.key" in line and "--force" in line
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    out = json_doc(_run(str(d), "--node", "C3", "--force", "--json"))  # a new CA: the others are left behind
    assert out["ca"]["new"] is True and (d / "ca.pem").read_bytes() != before["ca.pem"]
    assert any("node-C1.pem, node-C2.pem" in w for w in out["warnings"]), out["warnings"]
