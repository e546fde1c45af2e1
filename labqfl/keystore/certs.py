"""Development PKI for the ETSI 014 KME: a CA, KME (server) and SAE (client) certificates,
made with ``cryptography``.  For local use and tests only: keys are unencrypted PEM files
(permissions 0600) and the CA key sits next to the certificates. Whatever the umask, the folders made for
them are 0700 and the certificates 0644 (:func:`make_private_dirs`), and no file is written through a link
(:func:`_write_file`).

Files written into the output folder::

    ca.pem, ca.key                 the development CA (ca.key lets you issue more later)
    kme-<name>.pem, kme-<name>.key KME server certificate: CN=<name>, SAN = hosts (DNS/IP) and the
                                   URI ``urn:labqfl:kme:<name>`` (its KME identity, :func:`kme_uri`),
                                   extendedKeyUsage serverAuth
    sae-<name>.pem, sae-<name>.key SAE client certificate: CN=<name> (= SAE ID), SAN DNS or URI
                                   <name>, extendedKeyUsage clientAuth

Keys are ECDSA P-256; signatures SHA-256.

The CA is shared with the node network (:mod:`labqfl.net.pki`), so CA + host name do not tell the
KME from a node: every serving node's certificate is also a serverAuth certificate of this CA for
``localhost``/``127.0.0.1`` by default.  What only a KME certificate carries is the URI SAN
``urn:labqfl:kme:<name>`` (node certificates carry ``urn:labqfl:node:<name>`` instead; SAE certificates only
``urn:labqfl:sae:…`` and no serverAuth).  SAEs check it (:func:`labqfl.keystore.etsi.kme_client_context`)
or pin the KME certificate's public key (:func:`spki_pin`, curl ``--pinnedpubkey``); docs/keystore.md.
Conversely the nodes accept a peer only with the node identity ``urn:labqfl:node:<CN>``
(:func:`labqfl.net.pki.node_cert_problem`), which no certificate made here carries, so an SAE
certificate whose SAE ID equals a node name (the default C1…C4) cannot act as that node; SAE IDs
equal to the fixed node names of the network (:data:`RESERVED_SAE_IDS`: the operator ``ctl``, ``detector``,
``optics``, ``server``) are refused all the same, so that no certificate of this CA names them but theirs.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import re
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from labqfl.errors import ConfigError
from labqfl.log import get_logger

log = get_logger(__name__)

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
#: URI subjectAltName prefix of a KME server certificate's identity: ``urn:labqfl:kme:<name>``
KME_URI_PREFIX = "urn:labqfl:kme:"
#: SAE IDs refused by :func:`make_dev_certs`: the default names of the node network's non-client nodes and
#: of its operator (:mod:`labqfl.net.pki`, labqfl.nodes.common.CTL)
RESERVED_SAE_IDS = ("ctl", "detector", "optics", "server")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_DNS_RE = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def make_private_dirs(path: Path) -> Path:
    """Create the folder ``path`` and every missing folder above it with mode 0700 (owner only), whatever the
    umask (review s35 F3: under umask 000 ``mkdir(parents=True)`` made the certificate and secret-delivery
    folders 0777, where another user could replace ``ca.pem`` or rename a key). Folders already there are left
    as they are; ``FileExistsError`` when ``path`` is a file. Returns ``path``."""
    path = Path(path)
    missing: list[Path] = []
    d = path
    while not os.path.lexists(d) and d != d.parent:
        missing.append(d)
        d = d.parent
    for m in reversed(missing):
        try:
            m.mkdir(mode=0o700)
        except FileExistsError:  # made meanwhile by someone else: not ours to change
            continue
        os.chmod(m, 0o700)  # exactly, whatever the umask
    if not path.is_dir():
        raise FileExistsError(f"{path}: exists and is not a folder")
    return path


def warn_if_others_can_write(folder: Path) -> None:
    """Warn (one line) when ``folder``, which is to hold private keys and the CA's ``ca.pem``, already exists
    writable by its group or by others: whoever can write it can replace the trust anchor or a node's
    certificate, or rename a key (review s35 second look F8). The folder is not changed: it is the user's."""
    mode = stat.S_IMODE(os.stat(folder).st_mode)
    if mode & 0o022:
        who = " and ".join(w for w, bit in (("its group", 0o020), ("others", 0o002)) if mode & bit)
        log.warning("%s: the folder is writable by %s (mode %04o): anyone who can write it can replace ca.pem or "
                    "a certificate, or rename a key; expected 0700 (chmod 700 %s)", folder, who, mode, folder)


def _write_file(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    """Write ``data`` to ``path`` with exactly ``mode``, opened ``O_CREAT | O_EXCL | O_NOFOLLOW``: no link is
    followed and no file already there is written into (review s35 F3: the key went through a link planted at
    its name, outside the folder). A new file is made at ``path`` itself (anything there, a dangling link too:
    ConfigError); ``replace`` (--force) writes a fresh temporary name in the folder and renames it over
    ``path``, which replaces a link there rather than following it."""
    target = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp") if replace else path
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    except FileExistsError:
        raise ConfigError(f"{path} already exists (a file or a link); nothing was written through it: remove it, "
                          "issue into another folder, or pass --force to replace it") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)  # exactly ``mode``, whatever the umask
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if replace:
            os.replace(target, path)
    finally:
        if replace and os.path.lexists(target):
            target.unlink()


def _write_private(path: Path, data: bytes, *, replace: bool = False) -> None:
    """A private key file: 0600 (:func:`_write_file`)."""
    _write_file(path, data, 0o600, replace=replace)


def _write_public(path: Path, data: bytes, *, replace: bool = False) -> None:
    """A certificate: 0644, writable by its owner only whatever the umask (:func:`_write_file`)."""
    _write_file(path, data, 0o644, replace=replace)


def kme_uri(name: str) -> str:
    """The KME identity a KME server certificate of ``name`` carries as URI subjectAltName."""
    return f"{KME_URI_PREFIX}{name}"


def cert_uris(cert: x509.Certificate) -> list[str]:
    """The URI subjectAltNames of ``cert``."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)]


def spki_pin(cert_path: Path) -> str:
    """The public-key pin of the certificate in ``cert_path`` (PEM) in curl's ``--pinnedpubkey``
    form: ``sha256//`` + base64 of the SHA-256 of its DER SubjectPublicKeyInfo (RFC 7469's pin-sha256)."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def check_private_key_file(path: Path, what: str = "private key") -> None:
    """Refuse a private key file that group or others may access (``mode & 0o077``), with one
    :class:`ConfigError` naming the file and its mode.  Refused, not tightened: a key that was
    readable by others may already have been copied, so it should be replaced, not reused (on
    Windows, where POSIX modes mean little, nothing is checked)."""
    if os.name == "nt":
        return
    p = Path(path)
    try:
        mode = stat.S_IMODE(p.stat().st_mode)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the {what}: {exc}") from None
    if mode & 0o077:
        raise ConfigError(f"{p}: {what} has permissions {mode:04o}, readable or writable by group/others; expected "
                          f"0600 (owner only). If nobody else could have read it: chmod 600 {p}; otherwise issue a "
                          "new key and certificate")


def ca_key_warning(ca_key: Path, accepted_by: str, copied_with: str, destroy: str) -> str:
    """The warning ``labqfl keys certs`` and ``labqfl node certs`` give about the CA key they leave in their
    folder (one text for both; review s34 L10: keys certs wrote it silently): who would accept what its
    holder issues (``accepted_by``), the files it must not travel with, and how to destroy it."""
    return (f"{ca_key} is the CA's private key: whoever holds it can issue certificates {accepted_by} accepts. Keep it "
            f"offline (never on a node's host, never copied with the {copied_with} files) and destroy it once every "
            f"certificate is issued ({destroy})")


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "labqfl development"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _load_ca(out: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    cert_p, key_p = out / "ca.pem", out / "ca.key"
    if not (cert_p.exists() and key_p.exists()):
        return None
    try:
        cert = x509.load_pem_x509_certificate(cert_p.read_bytes())
        key = serialization.load_pem_private_key(key_p.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"existing CA in {out} is unreadable ({exc}); use --force to make a new one") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{key_p}: expected an EC private key")
    return cert, key


#: the certificates a CA's folder may hold besides ca.pem (keys certs: kme-, sae-; node certs: node-)
ISSUED_PATTERNS = ("kme-*.pem", "sae-*.pem", "node-*.pem")


def issued_certs(out: Path) -> list[str]:
    """Names of the certificate files of ``out`` other than the CA's own (:data:`ISSUED_PATTERNS`)."""
    return sorted(p.name for pat in ISSUED_PATTERNS for p in Path(out).glob(pat))


def _existing_ca(out: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The CA of ``out`` that issues the new certificates; None for a folder with no CA and no certificate (a new CA
    is made). :class:`ConfigError`, one line, for a folder whose CA cannot issue (``ca.key`` or ``ca.pem`` gone,
    or not a pair) or that holds certificates without a CA: a new CA there would leave the lab with two CAs,
    whose certificates each other's holders refuse; ``--force`` makes one deliberately."""
    pem, key = out / "ca.pem", out / "ca.key"
    issued = issued_certs(out)
    if pem.exists() and key.exists():
        ca = _load_ca(out)
        if ca is not None and ca[1].public_key() == ca[0].public_key():
            return ca
        problem = f"{key} is not the private key of {pem}"
    elif not pem.exists() and not key.exists():
        if not issued:
            return None
        problem = "ca.pem and ca.key are missing"
    else:
        problem = (f"{pem.name if pem.exists() else key.name} is there but {key.name if pem.exists() else pem.name} "
                   "is missing (destroyed, or kept elsewhere)")
    held = f"; it holds {', '.join(issued[:4])}{', …' if len(issued) > 4 else ''}" if issued else ""
    raise ConfigError(f"{out}: {problem}{held}: its CA can issue no more certificates, and a new CA here would not "
                      "be trusted by whoever trusts the old ca.pem; put the CA's files back, issue into another "
                      "folder, or pass --force to make a new CA here (every KME and SAE then needs the new ca.pem "
                      "and a certificate it issued)")


def _make_ca(out: Path, days: int, *, replace: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if not replace and (there := [n for n in ("ca.key", "ca.pem") if os.path.lexists(out / n)]):
        raise ConfigError(f"{out} already has {' and '.join(there)} (a file or a link) but no CA that can issue; "
                          "nothing was written: put the CA's two files back, or pass --force to make a new CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(_name("labqfl development CA")).issuer_name(_name("labqfl development CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    _write_private(out / "ca.key", _key_pem(key), replace=replace)
    _write_public(out / "ca.pem", cert.public_bytes(serialization.Encoding.PEM), replace=replace)
    return cert, key


#: how far before its making a certificate's validity starts (hosts whose clocks run a little behind accept it)
BACKDATE = dt.timedelta(minutes=5)


def issued_validity(ca_cert: x509.Certificate, now: dt.datetime, days: int) -> tuple[dt.datetime, dt.datetime]:
    """``(not_before, not_after)`` of a certificate ``ca_cert`` issues at ``now`` for ``days`` days: from
    ``now - BACKDATE`` to ``now + days``, cut to the CA's own validity. A relying party refuses a certificate
    outside its issuer's validity (RFC 5280 section 6.1.3 (a)(2): every certificate of the path must be valid at
    the time checked), so a longer one only claims an end it never reaches; and a CA made a moment before with
    the same ``days`` (``node certs``, ``keys certs`` in a new folder) ends up to a second before ``now + days``
    when the two makings straddle a second boundary (X.509 times have whole seconds), which made ``node certs``
    warn that the node certificates outlive their CA (CI of session 40)."""
    not_before = max(now - BACKDATE, ca_cert.not_valid_before_utc)
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    return not_before, not_after


def cut_short(not_before: dt.datetime, not_after: dt.datetime, days: int) -> bool:
    """Whether a certificate issued for ``days`` days ends before that (:func:`issued_validity` cut it to its CA)."""
    return not_after < not_before + BACKDATE + dt.timedelta(days=days)


def ca_cut_warning(out: Path, ca_end: str, names: list[str], days: int, remedy: str) -> str:
    """The warning of ``keys certs`` and ``node certs`` when a reused CA cut the certificates ``names`` short of the
    ``days`` asked for; ``remedy`` says how to get longer ones."""
    return (f"the CA in {out} is valid only to {ca_end}: the certificates of {', '.join(names)} end then too, before "
            f"the {days} days asked for (a certificate never outlives its CA; {remedy})")


def _issue(out: Path, stem: str, cn: str, sans: list[x509.GeneralName], server: bool,
           ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], days: int,
           ekus: list[x509.ObjectIdentifier] | None = None, *, replace: bool = False) -> tuple[Path, Path]:
    ca_cert, ca_key = ca
    now = dt.datetime.now(dt.UTC)
    not_before, not_after = issued_validity(ca_cert, now, days)
    if not_after <= not_before:
        raise ConfigError(f"{out / 'ca.pem'}: the CA is valid only from {ca_cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} "
                          f"to {ca_cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC, and it is now "
                          f"{now:%Y-%m-%d %H:%M:%S} UTC: a certificate it issued would never be accepted; expected a CA "
                          "valid now: issue into another folder (a new CA is made there)")
    key = ec.generate_private_key(ec.SECP256R1())
    if ekus is None:
        ekus = [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_p, key_p = out / f"{stem}.pem", out / f"{stem}.key"
    _write_private(key_p, _key_pem(key), replace=replace)
    _write_public(cert_p, cert.public_bytes(serialization.Encoding.PEM), replace=replace)
    return cert_p, key_p


def _host_san(h: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(h))
    except ValueError:
        if not _DNS_RE.match(h):
            raise ConfigError(f"host {h!r} is neither an IP address nor a DNS name") from None
        return x509.DNSName(h)


def make_dev_certs(out_dir: Path, *, kmes: Sequence[str] = ("kme",), saes: Sequence[str] = ("C1", "C2", "C3", "C4"),
                   hosts: Sequence[str] = DEFAULT_HOSTS, days: int = 825, force: bool = False) -> dict[str, Path]:
    """Write a development CA plus KME and SAE certificates into ``out_dir``.

    An existing CA (``ca.pem`` + ``ca.key``) is reused so certificates can be added later;
    existing KME/SAE files are never overwritten unless ``force`` (which also makes a new CA). A folder
    whose CA cannot issue (one of its two files gone, or not a pair) or that holds certificates without
    a CA is refused in one line unless ``force`` (:func:`_existing_ca`): a new CA there would be a second
    CA for the same lab.
    Returns ``{"ca": path, "kme-<name>": cert, "kme-<name>.key": key, "sae-<name>": ..., ...}``.
    """
    out = Path(out_dir)
    if days <= 0:
        raise ConfigError(f"certificate validity must be positive, got {days} days")
    for n in (*kmes, *saes):
        if not _NAME_RE.match(n):
            raise ConfigError(f"certificate name {n!r} is invalid; expected letters, digits, '_', '.', '-'")
    reserved = [n for n in saes if n.lower() in RESERVED_SAE_IDS]
    if reserved:
        raise ConfigError(f"SAE ID {reserved[0]!r} is the name of a node of the node network (reserved: "
                          f"{', '.join(RESERVED_SAE_IDS)}); expected another SAE ID")
    if not kmes and not saes:
        raise ConfigError("nothing to make: give at least one --kme or --sae name")
    make_private_dirs(out)  # it holds ca.key and the keys (review s35 F3)
    warn_if_others_can_write(out)
    stems = [f"kme-{n}" for n in kmes] + [f"sae-{n}" for n in saes]
    if not force:  # a link counts, dangling or not: nothing is written through one
        clash = [f"{s}{ext}" for s in stems for ext in (".pem", ".key") if os.path.lexists(out / f"{s}{ext}")]
        if clash:
            raise ConfigError(f"{out} already has {clash[:4]}; use --force to overwrite (this also makes a new CA)")
    ca = None if force else _existing_ca(out)
    if ca is None:
        ca = _make_ca(out, days, replace=force)
    files: dict[str, Path] = {"ca": out / "ca.pem", "ca.key": out / "ca.key"}
    host_sans = [_host_san(h) for h in hosts]
    for n in kmes:
        c, k = _issue(out, f"kme-{n}", n, [*host_sans, x509.UniformResourceIdentifier(kme_uri(n))], True, ca, days,
                      replace=force)
        files[f"kme-{n}"], files[f"kme-{n}.key"] = c, k
    for n in saes:
        san: x509.GeneralName = x509.DNSName(n) if _DNS_RE.match(n) else x509.UniformResourceIdentifier(f"urn:labqfl:sae:{n}")
        c, k = _issue(out, f"sae-{n}", n, [san], False, ca, days, replace=force)
        files[f"sae-{n}"], files[f"sae-{n}.key"] = c, k
    log.info("wrote development certificates to %s: %s", out, sorted(files))
    return files
