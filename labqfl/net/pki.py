"""Node identities: one X.509 certificate per network node (client Ci, detection node, FL server),
issued by the network's CA, used for mutual TLS between nodes.

Files written into the output folder (ECDSA P-256, SHA-256, keys 0600)::

    ca.pem, ca.key              the network CA (shared with ``labqfl keys certs``: one CA per testbed)
    node-<name>.pem/.key        CN=<name>, SAN = DNS:<name> + the given hosts + URI urn:labqfl:node:<name>,
                                EKU serverAuth + clientAuth; for a client-only name (the operator ``ctl``):
                                SAN = DNS:<name> + URI urn:labqfl:node:<name>, EKU clientAuth

A node both serves (other nodes open sessions to it) and connects, so its certificate carries both
extended key usages; the operator's ``ctl`` only connects, so its certificate cannot serve TLS at all.

**Node identity** = the certificate's CN *and* the URI subjectAltName ``urn:labqfl:node:<CN>``
(:func:`node_uri`), which only this module issues.  The CA is shared with the ETSI KME's PKI
(:mod:`labqfl.keystore.certs`: ``kme-*`` certificates carry ``urn:labqfl:kme:<name>``, ``sae-*`` ones
``DNS:<id>`` or ``urn:labqfl:sae:<id>``, and SAE IDs default to C1…C4, the client node names), so the
CN alone would let an SAE's key act as node C1 or as the operator ``ctl``.  Every serving check
requires the node URI of the name the peer claims (:func:`certified_node_name`): the node server
(:mod:`labqfl.net.transport`), the FL server's mutual-TLS front (:mod:`labqfl.nodes.tunnel`) and the
ServerApp's reply check (:mod:`labqfl.fl.flower.identity`); a certificate without it (an SAE's, a
KME's, or a node certificate issued by labqfl before 2026-12-06) is refused with one error saying so
and that node certificates must be re-issued.  The connecting side checks the serving node by TLS
hostname verification against ``DNS:<name>`` (and BoringSSL's serverAuth check, which no SAE
certificate passes).  What this protects: who is talking (an attacker
without a CA-issued node key cannot join) and confidentiality/integrity on each hop *computationally*.
The information-theoretic integrity of post-processing messages comes from Wegman–Carter tags on
top (:mod:`labqfl.qkd.authentication`), never from TLS.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from labqfl.errors import ConfigError
from labqfl.keystore import certs as _certs

__all__ = ["CLIENT_ONLY", "NODE_URI_PREFIX", "REISSUE_HINT", "NodeCredentials", "certified_node_name",
           "make_node_certs", "node_cert_problem", "node_uri"]

#: Names whose certificates only connect, never serve: the operator (``labqfl.nodes.common.CTL``).
CLIENT_ONLY = ("ctl",)
#: URI subjectAltName prefix of a node certificate's identity: ``urn:labqfl:node:<name>``
NODE_URI_PREFIX = "urn:labqfl:node:"
#: what to do about a certificate without a node identity (part of every such refusal)
REISSUE_HINT = ("node certificates must be re-issued with labqfl.net.make_node_certs (`labqfl node certs DIR --node "
                "NAME=HOST`; docs/nodes.md, \"Separate hosts\"; for `labqfl node up --workdir W` delete W/certs and it "
                "makes new ones)")


def node_uri(name: str) -> str:
    """The node identity a node certificate of ``name`` carries as URI subjectAltName."""
    return f"{NODE_URI_PREFIX}{name}"


def _describe(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(cns[0].value) if cns else ""
    return f"certificate CN {cn!r} (serial {cert.serial_number:#x})"


def node_cert_problem(cert: x509.Certificate) -> str:
    """Why ``cert`` is not a node certificate for the name it claims (its CN), "" if it is: it must carry
    the URI subjectAltName ``urn:labqfl:node:<CN>``. The chain is not checked here (TLS or the caller
    does that)."""
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(cns[0].value) if cns else ""
    if not cn:
        return f"{_describe(cert)} names no node (no CN); {REISSUE_HINT}"
    uris = _certs.cert_uris(cert)
    if node_uri(cn) in uris:
        return ""
    other = [u for u in uris if u.startswith(NODE_URI_PREFIX)]
    if other:
        return f"{_describe(cert)} carries the node identity {other[0]!r}, not {node_uri(cn)!r}; {REISSUE_HINT}"
    return (f"{_describe(cert)} is not a node certificate: it lacks the URI subjectAltName {node_uri(cn)!r} "
            f"(an ETSI SAE or KME certificate of the same CA, or a node certificate issued by labqfl before "
            f"2026-12-06); {REISSUE_HINT}")


def certified_node_name(cert_pem: bytes) -> tuple[str, str]:
    """(node name, problem) of a peer's PEM certificate: its CN once :func:`node_cert_problem` finds
    nothing (problem ""), else ("", the one-line reason)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as e:
        return "", f"the peer's certificate is not a PEM certificate ({e})"
    problem = node_cert_problem(cert)
    if problem:
        return "", problem
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value), ""


def make_node_certs(out_dir: Path, nodes: Sequence[str], *, hosts: Sequence[str] = _certs.DEFAULT_HOSTS,
                    days: int = 825, force: bool = False, client_only: Collection[str] = CLIENT_ONLY,
                    node_hosts: Mapping[str, Sequence[str]] | None = None,
                    new_ca: bool | None = None) -> dict[str, Path]:
    """Issue ``node-<name>.pem/.key`` for each name in ``nodes`` (reusing ``ca.pem``/``ca.key`` in
    ``out_dir`` when present, else making a new CA).  Existing node files are not overwritten
    unless ``force`` (which also makes a new CA, unless ``new_ca`` is False: then the CA in ``out_dir``
    issues them when it is there).  ``node_hosts``: a serving node's own hosts instead of ``hosts``
    (``labqfl node certs``).  Returns ``{"ca": path, "<name>": cert, "<name>.key": key}``.

    A name in ``client_only`` (default: the operator ``ctl``) gets a client certificate: EKU
    clientAuth only and SAN ``DNS:<name>`` only (no ``hosts``), so it cannot serve TLS to anyone.
    Every certificate carries its node identity ``urn:labqfl:node:<name>`` (:func:`node_uri`).
    """
    out = Path(out_dir)
    if days <= 0:
        raise ConfigError(f"certificate validity must be positive, got {days} days")
    for n in nodes:
        if not _certs._DNS_RE.match(n) or not _certs._NAME_RE.match(n):
            raise ConfigError(f"node name {n!r} is invalid; expected letters, digits and '-' (a DNS label)")
    if not nodes:
        raise ConfigError("nothing to make: give at least one node name")
    sans_of = {n: [_certs._host_san(h) for h in (node_hosts or {}).get(n, hosts)] for n in nodes}  # before any write
    _certs.make_private_dirs(out)  # it holds ca.key and the nodes' keys (review s35 F3)
    _certs.warn_if_others_can_write(out)
    if not force:  # a link counts, dangling or not: nothing is written through one
        clash = [f"node-{n}{ext}" for n in nodes for ext in (".pem", ".key") if os.path.lexists(out / f"node-{n}{ext}")]
        if clash:
            raise ConfigError(f"{out} already has {clash[:4]}; use force to overwrite (this also makes a new CA)")
    ca = None if (force if new_ca is None else new_ca) else _certs._load_ca(out)
    if ca is None:
        ca = _certs._make_ca(out, days, replace=force)
    files: dict[str, Path] = {"ca": out / "ca.pem"}
    for n in nodes:
        host_sans = sans_of[n]
        if n in client_only:
            c, k = _certs._issue(out, f"node-{n}", n, [x509.DNSName(n), x509.UniformResourceIdentifier(node_uri(n))],
                                 False, ca, days, ekus=[ExtendedKeyUsageOID.CLIENT_AUTH], replace=force)
        else:
            sans = [x509.DNSName(n), *host_sans, x509.UniformResourceIdentifier(node_uri(n))]
            c, k = _certs._issue(out, f"node-{n}", n, sans, True, ca, days,
                                 ekus=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], replace=force)
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
        ``name`` and it must carry the node identity ``urn:labqfl:node:<name>`` (:func:`node_cert_problem`), and the key file readable by its owner only (a key group/others can read is
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
        problem = node_cert_problem(cert)
        if problem:  # every other node would refuse it: say so at start, not at the first session
            raise ConfigError(f"{paths['node certificate']}: {problem}")
        return cls(name, paths["CA certificate"].read_bytes(), cert_pem, paths["node key"].read_bytes())

    def __repr__(self) -> str:  # never print key material
        return f"NodeCredentials(name={self.name!r})"
