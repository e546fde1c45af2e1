"""Message-level identity of a client's Flower replies: signed by the client node's certificate key.

The FL server node's mutual-TLS front (:mod:`labqfl.nodes.tunnel`) checks *which certificate*
connects, not *which client name* the SuperNode behind it then claims (Flower's node config,
``labqfl-client``). This module binds the two at the message level:

- the server puts a fresh random nonce (``reply_nonce``, 128 bits from :mod:`secrets`) into every
  message it sends, next to its run ID (``run_tag``), the stage and the round;
- the ClientApp signs its reply with its node's TLS private key (``node-<Ci>.key``, the key of
  the certificate it presents to the front) over the statement

  ``"labqfl-fl-reply/1" ‖ run ID ‖ nonce ‖ stage ‖ round ‖ claimed client name ‖ SHA-256(reply content)``

  (each field length-prefixed; the content digest is over a canonical encoding of every record
  of the reply except the signature record itself: masked upload, key references, shares,
  metrics, sample count ...), and adds the record ``labqfl.sig`` = ``{cert: its certificate
  (PEM), sig: the signature}``;
- the ServerApp rebuilds the statement from *its own* view (the run ID and nonce it sent to that
  node, the stage and round it is in, the name it expects from that node) and the content it
  received, and accepts the reply only if the certificate chains to the network's CA (a client
  certificate, within its validity), is a node certificate (URI subjectAltName
  ``urn:labqfl:node:<CN>``, :func:`labqfl.net.pki.node_cert_problem`: the ETSI SAE certificates of the
  same CA, whose SAE IDs default to the client names, are not), its CN equals the claimed client
  name, and the signature verifies (:meth:`ReplyVerifier.verify`; :class:`ReplyRefused` with one reason otherwise).

**Refs signatures** (qkd keys, docs/secure_aggregation.md §9): with the same key a master signs,
in the refs stage, ``"labqfl-fl-refs-sig/1" ‖ refs statement`` (:func:`refs_signed_bytes`; the
statement of :func:`~labqfl.fl.flower.keys.refs_statement` holds run, round, pair, the slave's fresh
nonce and every ref) — a domain of its own, so that neither kind of signature passes as the other.
The slave checks it with :meth:`ReplyVerifier.verify_refs` against the network CA of its node
config (:data:`NODE_CA`): chain, node certificate, CN = the pair's master, signature over the
statement rebuilt with its own nonce.

**X25519 key signatures** (csprng keys, docs/secure_aggregation.md §9): in the keys stage a node
signs its fresh per-round X25519 public key with the same certificate key, over
``"labqfl-fl-x25519-sig/1" ‖ run ID ‖ round ‖ its client name ‖ the 32-byte public key``
(:func:`pk_signed_bytes`; a domain of its own again). The server relays signature and certificate
with the key; a receiving node checks them with :meth:`ReplyVerifier.verify_pk` (chain to
:data:`NODE_CA`, node certificate, CN = the peer the key is claimed for, signature over the key as
received, this run and this round) before it derives anything from the key: a server that
substitutes its own key (a man in the middle between two nodes) cannot sign it as that peer.

**Consistency signatures** (self-masks in a deployment, docs/secure_aggregation.md §9; Bonawitz,
Ivanov, Kreuter et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS
2017, round 3 *ConsistencyCheck*): before the unmask stage every survivor signs, with the same key,
``"labqfl-fl-consistency/1" ‖ run ID ‖ signed spec ID ‖ job ID ‖ round ‖ sorted survivors ‖ sorted
dropped ‖ its client name`` (:func:`consistency_signed_bytes`); the server relays every signature and
certificate with the unmask message, and each node checks them with
:meth:`ReplyVerifier.verify_consistency` before it reveals anything.

Signature: ECDSA with SHA-256 for the EC keys that :func:`labqfl.net.make_node_certs` issues
(P-256; FIPS 186-5, SEC 1 v2 §4.1, DER-encoded (r, s)); an Ed25519 key (RFC 8032) is accepted too.
Chain check: ``cryptography``'s X.509 path validation (RFC 5280, client-certificate profile:
``PolicyBuilder().store(...).build_client_verifier()``).

What this protects against: a member of the network (a CA-issued certificate) running a
SuperNode under another client's name (its replies carry its own certificate, whose CN is not
the claimed name, or no valid signature), an altered reply (the digest changes), a reply replayed
from an earlier round, stage or run (the nonce, round and stage differ). What it does not: a
client that holds the claimed name's key (that *is* the client), withholding or delaying replies
(denial of service by dropping out is handled by the dropout recovery), the server itself (it is
honest-but-curious; it could skip the check), and the confidentiality of the content (TLS and the
one-time-pad masks provide that). The signatures are computational (ECDSA), unlike the
information-theoretic Wegman–Carter tags of the QKD post-processing.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from labqfl.errors import ConfigError, SecureAggregationError
from labqfl.net.pki import node_cert_problem

__all__ = ["CONSISTENCY_DOMAIN", "DOMAIN", "NODE_CA", "NODE_CERT", "NODE_KEY", "NONCE", "PK_SIG_DOMAIN", "REFS_SIG_DOMAIN", "SIG",
           "ReplyRefused", "ReplySigner", "ReplyVerifier", "consistency_signed_bytes", "content_digest", "pk_signed_bytes", "refs_signed_bytes",
           "reply_statement", "signer_from_files", "verifier_from_file"]

#: RecordDict key of a reply's signature record (a ConfigRecord ``{cert: PEM str, sig: bytes}``)
SIG = "labqfl.sig"
#: node_config keys of a deployed SuperNode: its certificate and private key (PEM files)
NODE_CERT = "labqfl-cert"
NODE_KEY = "labqfl-key"
#: node_config key of a deployed SuperNode: the network CA (PEM) its masters' refs signatures chain to
NODE_CA = "labqfl-ca"
#: field of the server's ``labqfl`` ConfigRecord: the fresh nonce the reply to that message must sign
NONCE = "reply_nonce"
#: domain separation of the signed statement (version 1)
DOMAIN = b"labqfl-fl-reply/1"
#: domain separation of a master's signature over its refs statement (never a reply signature)
REFS_SIG_DOMAIN = b"labqfl-fl-refs-sig/1"
#: domain separation of a node's signature over its per-round X25519 public key (csprng keys)
PK_SIG_DOMAIN = b"labqfl-fl-x25519-sig/1"
#: domain separation of a survivor's signature over the round's survivor and dropped sets (self-masks)
CONSISTENCY_DOMAIN = b"labqfl-fl-consistency/1"
#: bytes of a raw X25519 public key (RFC 7748 §5)
X25519_PUBLIC_BYTES = 32


class ReplyRefused(SecureAggregationError):
    """A reply whose signature, certificate or claimed name does not check out (one reason)."""


# --------------------------------------------------------------------------- what is signed
def _len(n: int) -> bytes:
    return int(n).to_bytes(8, "big")


def _field(b: bytes) -> bytes:
    return _len(len(b)) + b


def _value(v: Any) -> bytes:
    """Canonical bytes of one ConfigRecord/MetricRecord value (type tag + length-prefixed body)."""
    if isinstance(v, bool):
        return b"b" + (b"\x01" if v else b"\x00")
    if isinstance(v, int):
        return b"i" + _field(str(v).encode())
    if isinstance(v, float):
        return b"f" + struct.pack(">d", v)
    if isinstance(v, str):
        return b"s" + _field(v.encode())
    if isinstance(v, bytes):
        return b"y" + _field(v)
    if isinstance(v, list):
        return b"l" + _len(len(v)) + b"".join(_value(x) for x in v)
    raise TypeError(f"cannot encode a reply value of type {type(v).__name__}")


def _record(rec: Any) -> bytes:
    """Canonical bytes of one record: kind tag, then its items sorted by key."""
    kind = type(rec).__name__
    out = [_field(kind.encode())]
    for key in sorted(rec.keys()):
        val = rec[key]
        out.append(_field(str(key).encode()))
        if kind == "ArrayRecord":
            out += [_field(str(val.dtype).encode()), _len(len(val.shape)), *(_len(int(s)) for s in val.shape),
                    _field(str(val.stype).encode()), _field(bytes(val.data))]
        else:
            out.append(_value(val))
    return b"".join(out)


def content_digest(content: Any) -> bytes:
    """SHA-256 (32 bytes) over a canonical encoding of every record of a Flower ``RecordDict``
    except the signature record :data:`SIG`, in key order (so the digest does not depend on
    insertion order or on Flower's protobuf encoding)."""
    h = hashlib.sha256(b"labqfl-fl-content/1")
    for key in sorted(k for k in content.keys() if k != SIG):
        h.update(_field(str(key).encode()))
        h.update(_field(_record(content[key])))
    return h.digest()


def reply_statement(*, run: str, nonce: str, stage: str, round_index: int, name: str, digest: bytes) -> bytes:
    """The exact bytes a client signs and the server verifies (module docstring)."""
    if len(digest) != 32:
        raise ValueError(f"content digest must be 32 bytes (SHA-256), got {len(digest)}")
    parts = (DOMAIN, run.encode(), nonce.encode(), stage.encode(), str(int(round_index)).encode(), name.encode(),
             digest)
    return b"".join(_field(p) for p in parts)


def refs_signed_bytes(statement: bytes) -> bytes:
    """What a master signs for one pair and round: :data:`REFS_SIG_DOMAIN` ‖ the refs statement
    (:func:`~labqfl.fl.flower.keys.refs_statement`: run, round, pair, the slave's nonce, every ref),
    each length-prefixed. The domain differs from :data:`DOMAIN`, so no reply signature is a refs
    signature and no refs signature a reply signature."""
    return _field(REFS_SIG_DOMAIN) + _field(bytes(statement))


def pk_signed_bytes(*, run: str, round_index: int, name: str, public_key: bytes) -> bytes:
    """What node ``name`` signs for its X25519 public key of run ``run``, round ``round_index``:
    :data:`PK_SIG_DOMAIN` ‖ run ‖ round ‖ name ‖ the raw 32-byte key, each length-prefixed. Neither
    a reply signature nor a refs signature (other domains) passes for it, nor it for them."""
    if len(public_key) != X25519_PUBLIC_BYTES:
        raise ValueError(f"an X25519 public key has {X25519_PUBLIC_BYTES} bytes, got {len(public_key)}")
    parts = (PK_SIG_DOMAIN, run.encode(), str(int(round_index)).encode(), name.encode(), bytes(public_key))
    return b"".join(_field(p) for p in parts)


def consistency_signed_bytes(*, run: str, spec_id: str, job: str, round_index: int, survivors: Any,
                             dropped: Any, name: str) -> bytes:
    """What survivor ``name`` signs before the unmask stage of round ``round_index`` (self-masks, a
    deployment): :data:`CONSISTENCY_DOMAIN` ‖ run ‖ signed spec ID ‖ job ID ‖ round ‖ the sorted survivor
    set ‖ the sorted dropped set ‖ name, each length-prefixed (the sets as JSON lists). No reply, refs,
    key or spec signature passes for it (other domains), nor it for them."""
    parts = (CONSISTENCY_DOMAIN, run.encode(), spec_id.encode(), job.encode(), str(int(round_index)).encode(),
             json.dumps(sorted(str(c) for c in survivors)).encode(), json.dumps(sorted(str(c) for c in dropped)).encode(),
             name.encode())
    return b"".join(_field(p) for p in parts)


def _cn(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else ""


# ---------------------------------------------------------------------------- client side
class ReplySigner:
    """A client node's signing identity: its certificate (PEM, sent with every signature) and its
    private key (kept in memory, never logged, printed or put into a message)."""

    def __init__(self, cert_pem: bytes, key_pem: bytes, *, source: str = "node key") -> None:
        try:
            self.cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as exc:
            raise ConfigError(f"{source}: the certificate is not PEM ({exc})") from None
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ConfigError(f"{source}: the private key is not an unencrypted PEM key ({exc})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise ConfigError(f"{source}: a {type(key).__name__} cannot sign replies; expected an EC (ECDSA) "
                              "or Ed25519 key, as make_node_certs issues")
        if key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
                != self.cert.public_key().public_bytes(serialization.Encoding.DER,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo):
            raise ConfigError(f"{source}: the private key does not belong to the certificate (CN {_cn(self.cert)!r})")
        self._key = key
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()
        #: the certificate's CN (the client this key belongs to)
        self.name = _cn(self.cert)

    def __repr__(self) -> str:  # never print key material
        return f"ReplySigner(cn={self.name!r})"

    def signature(self, statement: bytes) -> bytes:
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(statement)
        return self._key.sign(statement, ec.ECDSA(hashes.SHA256()))

    def sign_refs(self, statement: bytes) -> bytes:
        """This node's signature over a refs statement it is the master of (:func:`refs_signed_bytes`)."""
        return self.signature(refs_signed_bytes(statement))

    def sign_pk(self, *, run: str, round_index: int, name: str, public_key: bytes) -> bytes:
        """This node's signature over its X25519 public key of one run and round (:func:`pk_signed_bytes`)."""
        return self.signature(pk_signed_bytes(run=run, round_index=round_index, name=name, public_key=public_key))

    def sign_consistency(self, **statement: Any) -> bytes:
        """This node's signature over the round's survivor and dropped sets (:func:`consistency_signed_bytes`)."""
        return self.signature(consistency_signed_bytes(**statement))

    def sign(self, reply: Any, *, run: str, nonce: str, stage: str, round_index: int, name: str) -> None:
        """Add :data:`SIG` to ``reply`` (a Flower ``Message``): this certificate and the signature
        over :func:`reply_statement` of the reply's content as it is now (sign last)."""
        from flwr.app import ConfigRecord

        st = reply_statement(run=run, nonce=nonce, stage=stage, round_index=round_index, name=name,
                             digest=content_digest(reply.content))
        reply.content[SIG] = ConfigRecord({"cert": self.cert_pem, "sig": self.signature(st)})


@functools.lru_cache(maxsize=4)
def signer_from_files(cert: str, key: str) -> ReplySigner:
    """The :class:`ReplySigner` of a node's ``node-<name>.pem``/``.key`` (cached per process)."""
    paths = {"certificate": Path(cert), "private key": Path(key)}
    for what, p in paths.items():
        if not p.is_file():
            raise ConfigError(f"{p}: the node's {what} for signing replies is not a file "
                              f"(node config {NODE_CERT!r}/{NODE_KEY!r})")
    return ReplySigner(paths["certificate"].read_bytes(), paths["private key"].read_bytes(), source=str(key))


# ---------------------------------------------------------------------------- server side
def _now() -> datetime.datetime:
    """The current time, UTC (one place, so that tests can move the clock)."""
    return datetime.datetime.now(datetime.UTC)


class ReplyVerifier:
    """The ServerApp's check of a client's reply against the network's CA (module docstring)."""

    def __init__(self, ca_pem: bytes, *, source: str = "CA certificate") -> None:
        try:
            cas = x509.load_pem_x509_certificates(ca_pem)
        except ValueError as exc:
            raise ConfigError(f"{source}: not a PEM certificate ({exc})") from None
        self._verifier = PolicyBuilder().store(Store(cas)).build_client_verifier()
        #: certificate DER → (its CN, the chain's common validity window), once the chain checked
        self._ok: dict[bytes, tuple[str, datetime.datetime, datetime.datetime]] = {}

    @classmethod
    def from_file(cls, path: str | Path) -> ReplyVerifier:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: the network CA certificate for checking client replies is not a file")
        return cls(p.read_bytes(), source=str(p))

    def _certified_name(self, cert_pem: Any) -> tuple[x509.Certificate, str]:
        try:
            cert = x509.load_pem_x509_certificate(str(cert_pem).encode())
        except ValueError:
            raise ReplyRefused("its certificate is not a PEM certificate") from None
        der = cert.public_bytes(serialization.Encoding.DER)
        if der not in self._ok:
            try:
                # validity is checked at the current time (path validation of RFC 5280)
                chain = self._verifier.verify(cert, []).chain
            except VerificationError as exc:
                raise ReplyRefused(f"its certificate (CN {_cn(cert)!r}) does not chain to the network's CA: {exc}") \
                    from None
            if problem := node_cert_problem(cert):
                raise ReplyRefused(f"its certificate is refused: {problem}")
            self._ok[der] = (_cn(cert), max(c.not_valid_before_utc for c in chain),
                             min(c.not_valid_after_utc for c in chain))
        cn, start, end = self._ok[der]
        # a long run outlives a check made once: the chain's window is checked at every reply
        if not start <= (now := _now()) <= end:
            raise ReplyRefused(f"its certificate (CN {cn!r}) or its CA is valid from {start:%Y-%m-%d %H:%M} to "
                               f"{end:%Y-%m-%d %H:%M} UTC, not now ({now:%Y-%m-%d %H:%M} UTC)")
        return cert, cn

    def verify(self, reply: Any, *, run: str, nonce: str, stage: str, round_index: int, name: str) -> None:
        """Accept ``reply`` as client ``name``'s answer to the message that carried ``nonce`` in
        run ``run``, stage ``stage``, round ``round_index``; :class:`ReplyRefused` otherwise."""
        recs = reply.content.config_records
        if SIG not in recs:
            raise ReplyRefused("it is not signed (no labqfl.sig record)")
        sig_rec = recs[SIG]
        if "cert" not in sig_rec or not isinstance(sig_rec.get("sig"), bytes):
            raise ReplyRefused("its labqfl.sig record lacks the certificate or the signature")
        cert, cn = self._certified_name(sig_rec["cert"])
        if cn != name:
            raise ReplyRefused(f"it claims client {name!r} but is signed with the certificate of {cn!r}")
        st = reply_statement(run=run, nonce=nonce, stage=stage, round_index=round_index, name=name,
                             digest=content_digest(reply.content))
        if not _signature_ok(cert, bytes(sig_rec["sig"]), st):  # type: ignore[arg-type]
            raise ReplyRefused(f"its signature (certificate {cn!r}) does not match the content, run, round {round_index}, "
                               f"stage {stage!r} and nonce of this request (altered or replayed)")

    def verify_refs(self, cert_pem: Any, sig: Any, statement: bytes, *, master: str) -> None:
        """Accept ``sig`` as master ``master``'s signature over the refs ``statement`` (rebuilt by the
        slave from the refs as received and *its own* nonce): the certificate chains to the network's
        CA, is a node certificate whose CN is ``master``, and the signature verifies over
        :func:`refs_signed_bytes`; :class:`ReplyRefused` with one reason otherwise."""
        self._verify_detached(cert_pem, sig, refs_signed_bytes(statement), master, them="them",
                              signed_by="they are signed", whose="the pair's master",
                              covers="these refs, this round and this node's nonce (altered, forged or replayed)")

    def verify_pk(self, cert_pem: Any, sig: Any, *, run: str, round_index: int, peer: str, public_key: bytes) -> None:
        """Accept ``public_key`` as node ``peer``'s X25519 public key of run ``run``, round
        ``round_index``: ``sig`` is its signature over :func:`pk_signed_bytes` of the key as received,
        under a node certificate of the network's CA whose CN is ``peer``; :class:`ReplyRefused` with
        one reason otherwise (a key the server substituted, a signature by another node or another
        CA, or one replayed from another round or run)."""
        try:
            data = pk_signed_bytes(run=run, round_index=round_index, name=peer, public_key=bytes(public_key))
        except ValueError as exc:
            raise ReplyRefused(str(exc)) from None
        self._verify_detached(cert_pem, sig, data, peer, them="it", signed_by="it is signed", whose="",
                              covers=f"this key of {peer!r}, this run and round {int(round_index)} (substituted, "
                                     "or replayed from another round or run)")

    def verify_consistency(self, cert_pem: Any, sig: Any, *, signer: str, run: str, spec_id: str, job: str,
                           round_index: int, survivors: Any, dropped: Any) -> None:
        """Accept ``sig`` as survivor ``signer``'s signature over :func:`consistency_signed_bytes` of this
        run, signed spec, job, round and these survivor and dropped sets, under a node certificate of the
        network's CA whose CN is ``signer``; :class:`ReplyRefused` with one reason otherwise (forged, by
        another node or CA, or over another set, round, job or run)."""
        data = consistency_signed_bytes(run=run, spec_id=spec_id, job=job, round_index=round_index,
                                        survivors=survivors, dropped=dropped, name=signer)
        self._verify_detached(cert_pem, sig, data, signer, them="it", signed_by="it is signed", whose="",
                              covers=f"survivors {sorted(survivors)}, dropped {sorted(dropped)} of round "
                                     f"{int(round_index)} of job {job!r} in this run")

    def verify_operator(self, cert_pem: Any, sig: Any, data: bytes, *, operator: str) -> None:
        """Accept ``sig`` as the network operator's signature over ``data`` (a training spec,
        :mod:`labqfl.fl.flower.specsig`): a node certificate of the network's CA whose CN is
        ``operator`` and which is client-only (no serverAuth: the operator's profile in
        :func:`labqfl.net.make_node_certs`), and the signature verifies; :class:`ReplyRefused` with one
        reason otherwise (a client's or the server's certificate, another CA, an altered spec)."""
        self._verify_detached(cert_pem, sig, data, operator, them="it", signed_by="it is signed",
                              whose="the network operator", covers="this spec (altered or forged)")
        cert = x509.load_pem_x509_certificate(str(cert_pem).encode())
        try:
            ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            ekus = None
        if ekus is None or ExtendedKeyUsageOID.SERVER_AUTH in ekus:
            raise ReplyRefused(f"its certificate {operator!r} is not the operator's client-only certificate "
                               "(it may serve TLS, or names no usage)")

    def _verify_detached(self, cert_pem: Any, sig: Any, data: bytes, owner: str, *, them: str, signed_by: str,
                         whose: str, covers: str) -> None:
        """The one check of a signature that travels apart from its signer's reply (refs, X25519
        keys): present, a node certificate of the network's CA (:meth:`_certified_name`), CN =
        ``owner``, signature over ``data``; the other arguments only word the reason."""
        if not cert_pem or not isinstance(sig, bytes) or not sig:
            raise ReplyRefused(f"no signature or certificate came with {them}")
        cert, cn = self._certified_name(cert_pem)
        if cn != owner:
            raise ReplyRefused(f"{signed_by} with the certificate of {cn!r}, not of {whose + ' ' if whose else ''}"
                               f"{owner!r}")
        if not _signature_ok(cert, sig, data):
            raise ReplyRefused(f"the signature (certificate {cn!r}) does not cover {covers}")


def _signature_ok(cert: x509.Certificate, sig: bytes, data: bytes) -> bool:
    """Whether ``sig`` is the certificate's key's signature over ``data`` (ECDSA-SHA256 or Ed25519)."""
    pub = cert.public_key()
    try:
        if isinstance(pub, ed25519.Ed25519PublicKey):
            pub.verify(sig, data)
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(sig, data, ec.ECDSA(hashes.SHA256()))
        else:
            raise ReplyRefused(f"its certificate carries a {type(pub).__name__}, expected an EC or Ed25519 key")
    except InvalidSignature:
        return False
    return True


@functools.lru_cache(maxsize=4)
def verifier_from_file(ca: str) -> ReplyVerifier:
    """The :class:`ReplyVerifier` of the network CA file ``ca`` (cached per process: a client node's
    check of its masters' refs signatures, node config :data:`NODE_CA`)."""
    return ReplyVerifier.from_file(ca)
