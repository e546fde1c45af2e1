"""Which server is the KME (review s31, F1) and the KME's private key file (F4).

The node network and the ETSI KME share one CA (labqfl.net.pki), and every serving node's certificate
is a serverAuth certificate for localhost/127.0.0.1: an SAE that checks only CA + host name accepted
the detector's certificate as the KME and took keys the detector chose. The KME's certificate now
carries the identity ``urn:labqfl:kme:<name>`` (URI SAN) that no node certificate carries; SAEs check it
(``kme_client_context``) or pin the KME's public key (curl ``--pinnedpubkey``). Real KMEs with mutual TLS
on 127.0.0.1."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from labqfl.errors import ConfigError
from labqfl.keystore import open_node_stores
from labqfl.keystore.certs import cert_uris, kme_uri, make_dev_certs, spki_pin
from labqfl.keystore.etsi import (
    KeyDeliveryService,
    KmeServerThread,
    KmeSettings,
    build_server,
    kme_client_context,
)
from labqfl.net import make_node_certs

PAIR = "C1-C2"


def _cert(p: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(p.read_bytes())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CA for the KME, the SAEs and the nodes, as pki.py documents (one CA per testbed)."""
    d = tmp_path_factory.mktemp("pki")
    make_dev_certs(d, saes=["C1", "C2"])
    make_node_certs(d, ["detector", "server", "C1", "ctl"])
    return d


def _service(data: Path, zeros: bool = False) -> KeyDeliveryService:
    stores = open_node_stores(["C1", "C2"], data)
    rng = np.random.default_rng(5)
    bits = np.zeros(4096, np.uint8) if zeros else rng.integers(0, 2, 4096, dtype=np.uint8)
    bid = stores["C1"].add_block(PAIR, bits, purpose="etsi")
    stores["C2"].add_block(PAIR, bits, block_id=bid, purpose="etsi")
    return KeyDeliveryService(stores, KmeSettings(saes={"C1": "C1", "C2": "C2"}))


def _close(svc: KeyDeliveryService) -> None:
    for st in svc.stores.values():
        st.close()


def test_only_the_kme_certificate_carries_the_kme_identity(pki):
    assert cert_uris(_cert(pki / "kme-kme.pem")) == [kme_uri("kme")] == ["urn:labqfl:kme:kme"]
    for n in ("detector", "server", "C1", "ctl"):
        assert not any(u.startswith("urn:labqfl:kme:") for u in cert_uris(_cert(pki / f"node-{n}.pem")))
    for n in ("C1", "C2"):  # SAE certificates: client only, never a KME identity
        c = _cert(pki / f"sae-{n}.pem")
        assert not any(u.startswith("urn:labqfl:kme:") for u in cert_uris(c))
        assert list(c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    # the operator only connects: no serverAuth, no host names
    ctl = _cert(pki / "node-ctl.pem")
    assert list(ctl.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    san = ctl.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["ctl"] and not san.get_values_for_type(x509.IPAddress)
    # serving nodes keep both usages (they serve each other gRPC with mutual TLS)
    det = _cert(pki / "node-detector.pem").extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(det) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def test_a_node_certificate_posing_as_the_kme_is_refused_by_an_sae_that_checks_the_identity(pki, tmp_path):
    """The reviewer's attack: the detector's own certificate serves an all-zero store as 'the KME'."""
    real, fake = _service(tmp_path / "real"), _service(tmp_path / "fake", zeros=True)
    sae = dict(certfile=pki / "sae-C1.pem", keyfile=pki / "sae-C1.key")
    try:
        with KmeServerThread(real, certfile=pki / "kme-kme.pem", keyfile=pki / "kme-kme.key", cafile=pki / "ca.pem") as k, \
                KmeServerThread(fake, certfile=pki / "node-detector.pem", keyfile=pki / "node-detector.key",
                                cafile=pki / "ca.pem") as evil:
            ctx = kme_client_context(pki / "ca.pem", **sae)
            with httpx.Client(base_url=k.base_url, verify=ctx, timeout=30) as c:
                r = c.get("/api/v1/keys/C2/enc_keys")
                assert r.status_code == 200 and len(r.json()["keys"]) == 1
            for host in ("127.0.0.1", "localhost"):
                with httpx.Client(base_url=f"https://{host}:{evil.port}", verify=ctx, timeout=30) as c, \
                        pytest.raises(httpx.ConnectError, match="not the KME"):
                    c.get("/api/v1/keys/C2/enc_keys")
            # a KME of another name is not this one either
            other = kme_client_context(pki / "ca.pem", **sae, kme="kme-b")
            with httpx.Client(base_url=k.base_url, verify=other, timeout=30) as c, pytest.raises(httpx.ConnectError):
                c.get("/api/v1/keys/C2/status")
            # what remains for a client that checks only CA + host name: it still takes the detector's keys
            import ssl

            plain = ssl.create_default_context(cafile=str(pki / "ca.pem"))
            plain.load_cert_chain(str(sae["certfile"]), str(sae["keyfile"]))
            with httpx.Client(base_url=evil.base_url, verify=plain, timeout=30) as c:
                assert c.get("/api/v1/keys/C2/enc_keys").status_code == 200
        assert fake.stores["C1"].available_bits(PAIR) == 4096 - 256  # only the plain client was served
    finally:
        _close(real)
        _close(fake)


def test_curl_pinning_the_kme_public_key_refuses_a_node_certificate(pki, tmp_path):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    real, fake = _service(tmp_path / "real"), _service(tmp_path / "fake", zeros=True)
    pin = spki_pin(pki / "kme-kme.pem")
    assert pin.startswith("sha256//") and pin != spki_pin(pki / "node-detector.pem")
    base = [curl, "--silent", "--show-error", "--cacert", str(pki / "ca.pem"), "--cert", str(pki / "sae-C1.pem"),
            "--key", str(pki / "sae-C1.key"), "--pinnedpubkey", pin]
    try:
        with KmeServerThread(real, certfile=pki / "kme-kme.pem", keyfile=pki / "kme-kme.key", cafile=pki / "ca.pem") as k, \
                KmeServerThread(fake, certfile=pki / "node-detector.pem", keyfile=pki / "node-detector.key",
                                cafile=pki / "ca.pem") as evil:
            ok = subprocess.run([*base, f"{k.base_url}/api/v1/keys/C2/status"], capture_output=True, text=True,
                                timeout=60)
            assert ok.returncode == 0 and '"slave_SAE_ID":"C2"' in ok.stdout
            bad = subprocess.run([*base, f"{evil.base_url}/api/v1/keys/C2/enc_keys"], capture_output=True, text=True,
                                 timeout=60)
            assert bad.returncode == 90 and "keys" not in bad.stdout  # CURLE_SSL_PINNEDPUBKEYNOTMATCH
        assert fake.stores["C1"].available_bits(PAIR) == 4096
    finally:
        _close(real)
        _close(fake)


def test_serving_with_a_certificate_without_the_kme_identity_warns(pki, tmp_path, caplog):
    svc = _service(tmp_path / "d")
    caplog.set_level(logging.WARNING, logger="labqfl")
    try:
        build_server(svc, host="127.0.0.1", port=0, certfile=pki / "kme-kme.pem", keyfile=pki / "kme-kme.key",
                     cafile=pki / "ca.pem")
        assert not [r for r in caplog.records if "KME identity" in r.getMessage()]
        build_server(svc, host="127.0.0.1", port=0, certfile=pki / "node-detector.pem",
                     keyfile=pki / "node-detector.key", cafile=pki / "ca.pem")
        assert [r for r in caplog.records if r.levelno == logging.WARNING and "KME identity" in r.getMessage()
                and "node-detector.pem" in r.getMessage()]
    finally:
        _close(svc)


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_kme_key_others_can_read_is_refused(pki, tmp_path, mode):
    svc = _service(tmp_path / "d")
    key = tmp_path / "kme-open.key"
    shutil.copyfile(pki / "kme-kme.key", key)
    key.chmod(mode)
    try:
        with pytest.raises(ConfigError) as exc:
            build_server(svc, host="127.0.0.1", port=0, certfile=pki / "kme-kme.pem", keyfile=key,
                         cafile=pki / "ca.pem")
        msg = str(exc.value)
        assert str(key) in msg and f"{mode:04o}" in msg and "0600" in msg
        assert oct(key.stat().st_mode & 0o777) == oct(mode)  # refused, not silently changed
        key.chmod(0o600)
        build_server(svc, host="127.0.0.1", port=0, certfile=pki / "kme-kme.pem", keyfile=key, cafile=pki / "ca.pem")
    finally:
        _close(svc)


def test_keys_certs_prints_the_kme_identity_and_pin(tmp_path):
    import json

    from typer.testing import CliRunner

    from labqfl.cli import app

    res = CliRunner().invoke(app, ["keys", "certs", str(tmp_path / "pki"), "--sae", "C1", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)["kmes"]["kme"]
    assert out == {"identity": "urn:labqfl:kme:kme", "pin": spki_pin(tmp_path / "pki" / "kme-kme.pem")}
