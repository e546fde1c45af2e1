"""The loopback deployment's TLS material: a throwaway CA and a SuperLink certificate (SAN 127.0.0.1,
localhost) from ``labqfl.keystore.certs``. The deployment over TLS itself (SuperNodes trusting the right
CA train a round equal to the in-process engine's bit for bit; a SuperNode trusting another CA fails the
handshake and is never registered) runs in tests/fl/flower/test_deployment.py, together with the client
lost mid-round."""

from __future__ import annotations

from cryptography import x509

from labqfl.fl.flower.deploy import make_superlink_certs


def test_superlink_certificate_names_loopback_and_is_signed_by_its_ca(tmp_path) -> None:
    files = make_superlink_certs(tmp_path / "certs")
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert files.key.stat().st_mode & 0o077 == 0
    # a second call is a new, unrelated CA (the "wrong CA" of the deployment test)
    other = make_superlink_certs(tmp_path / "other")
    assert other.ca.read_bytes() != files.ca.read_bytes()
