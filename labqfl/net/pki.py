"""Node identities: one X.509 certificate per network node (client Ci, detection node, FL server),
issued by the network's CA, used for mutual TLS between nodes.

Files written into the output folder (ECDSA P-256, SHA-256, keys 0600)::

    ca.pem, ca.key              the network CA (shared with ``labqfl keys certs``: one CA per testbed)
    node-<name>.pem/.key        CN=<name>, SAN = DNS:<name> + the given hosts, EKU serverAuth + clientAuth;
                                for a client-only name (the operator ``ctl``): SAN = DNS:<name>, EKU clientAuth

A node both serves (other nodes open sessions to it) and connects, so its certificate carries both
extended key usages; the operator's ``ctl`` only connects, so its certificate cannot serve TLS at all.
No node certificate carries a URI subjectAltName: ``urn:labqfl:kme:<name>`` is what tells the ETSI
KME's certificate (same CA, :mod:`labqfl.keystore.certs`) from a node's, which SAEs check
(docs/keystore.md, "Which server is the KME").  The peer's identity is its certificate's CN, checked against the node name
a session expects (TLS hostname verification against ``DNS:<name>`` on the connecting side, the CN
from the TLS auth context on the serving side).  What this protects: who is talking (an attacker
without a CA-issued key cannot join) and confidentiality/integrity on each hop *computationally*.
The information-theoretic integrity of post-processing messages comes from Wegman–Carter tags on
top (:mod:`labqfl.qkd.authentication`), never from TLS.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from labqfl.errors import ConfigError
from labqfl.keystore import certs as _certs

__all__ = ["CLIENT_ONLY", "NodeCredentials", "make_node_certs"]

#: Names whose certificates only connect, never serve: the operator (``labqfl.nodes.common.CTL``).
CLIENT_ONLY = ("ctl",)


def make_node_certs(out_dir: Path, nodes: Sequence[str], *, hosts: Sequence[str] = _certs.DEFAULT_HOSTS,
                    days: int = 825, force: bool = False, client_only: Collection[str] = CLIENT_ONLY) -> dict[str, Path]:
    """Issue ``node-<name>.pem/.key`` for each name in ``nodes`` (reusing ``ca.pem``/``ca.key`` in
    ``out_dir`` when present, else making a new CA).  Existing node files are not overwritten
    unless ``force`` (which also makes a new CA).  Returns ``{"ca": path, "<name>": cert, "<name>.key": key}``.

    A name in ``client_only`` (default: the operator ``ctl``) gets a client certificate: EKU
    clientAuth only and SAN ``DNS:<name>`` only (no ``hosts``), so it cannot serve TLS to anyone.
    """
    out = Path(out_dir)
    if days <= 0:
        raise ConfigError(f"certificate validity must be positive, got {days} days")
    for n in nodes:
        if not _certs._DNS_RE.match(n) or not _certs._NAME_RE.match(n):
            raise ConfigError(f"node name {n!r} is invalid; expected letters, digits and '-' (a DNS label)")
    if not nodes:
        raise ConfigError("nothing to make: give at least one node name")
    out.mkdir(parents=True, exist_ok=True)
    if not force:
        clash = [f"node-{n}{ext}" for n in nodes for ext in (".pem", ".key") if (out / f"node-{n}{ext}").exists()]
        if clash:
            raise ConfigError(f"{out} already has {clash[:4]}; use force to overwrite (this also makes a new CA)")
    ca = None if force else _certs._load_ca(out)
    if ca is None:
        ca = _certs._make_ca(out, days)
    files: dict[str, Path] = {"ca": out / "ca.pem"}
    host_sans = [_certs._host_san(h) for h in hosts]
    for n in nodes:
        if n in client_only:
            c, k = _certs._issue(out, f"node-{n}", n, [x509.DNSName(n)], False, ca, days,
                                 ekus=[ExtendedKeyUsageOID.CLIENT_AUTH])
        else:
            c, k = _certs._issue(out, f"node-{n}", n, [x509.DNSName(n), *host_sans], True, ca, days,
                                 ekus=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
        files[n], files[f"{n}.key"] = c, k
    return files


@dataclass(frozen=True, repr=False)
class NodeCredentials:
    """A node's TLS identity: its name (= certificate CN), the CA it trusts, its certificate and key (PEM bytes)."""

    name: str
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def load(cls, cert_dir: Path, name: str) -> NodeCredentials:
        """Load ``ca.pem`` and ``node-<name>.pem/.key`` from ``cert_dir``; the certificate's CN must be
        ``name``, and the key file readable by its owner only (a key group/others can read is
        refused with one error naming the file and its mode: :func:`~labqfl.keystore.certs.check_private_key_file`)."""
        d = Path(cert_dir)
        paths = {"CA certificate": d / "ca.pem", "node certificate": d / f"node-{name}.pem",
                 "node key": d / f"node-{name}.key"}
        for what, p in paths.items():
            if not p.is_file():
                raise ConfigError(f"{p}: {what} of node {name!r} not found; expected the files made by make_node_certs")
        _certs.check_private_key_file(paths["node key"], f"private key of node {name!r}")
        cert_pem = paths["node certificate"].read_bytes()
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as e:
            raise ConfigError(f"{paths['node certificate']}: not a PEM certificate ({e})") from None
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = str(cns[0].value) if cns else ""
        if cn != name:
            raise ConfigError(f"{paths['node certificate']}: certificate is for {cn!r}, expected node {name!r}")
        return cls(name, paths["CA certificate"].read_bytes(), cert_pem, paths["node key"].read_bytes())

    def __repr__(self) -> str:  # never print key material
        return f"NodeCredentials(name={self.name!r})"
