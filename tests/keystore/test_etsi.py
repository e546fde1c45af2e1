"""ETSI GS QKD 014 v1.1.1 KME over real HTTPS with mutual TLS on 127.0.0.1: every endpoint and
form, authentication by client certificate, bad requests, exhaustion, concurrency, and
third-party clients (the PyPI ``etsi-qkd-014-client`` package and ``curl``)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from labqfl.keystore.etsi import EtsiError, KeyDeliveryService, KmeSettings

PAIR = "C1-C2"
STATUS_FIELDS = {"source_KME_ID", "target_KME_ID", "master_SAE_ID", "slave_SAE_ID", "key_size", "stored_key_count",
                 "max_key_count", "max_key_per_request", "max_key_size", "min_key_size", "max_SAE_ID_count",
                 "status_extension"}  # spec 6.1's optional extension object: labqfl_provenance


def _client(kme, kh, sae, ca_dir=None) -> httpx.Client:
    return httpx.Client(base_url=kme.url, verify=kh.client_context(kme.certs, sae, ca_dir), timeout=30)


def _key_bits(kme, kh, key_id: str, key_b64: str) -> None:
    """The key equals the stored bits named by the master store's delivery record."""
    rec = kme.stores["C1"].delivery(key_id) or kme.stores["C2"].delivery(key_id)
    exp = np.packbits(kh.expected_bits(kme.blocks, rec["refs"])).tobytes()
    assert base64.b64decode(key_b64) == exp


def test_status(kme, kh):
    with _client(kme, kh, "C1") as c:
        r = c.get("/api/v1/keys/C2/status")
    assert r.status_code == 200
    st = r.json()
    assert set(st) == STATUS_FIELDS
    assert (st["source_KME_ID"], st["target_KME_ID"], st["master_SAE_ID"], st["slave_SAE_ID"]) == \
        ("KME-C1", "KME-C2", "C1", "C2")
    assert st["key_size"] == 256 and st["max_SAE_ID_count"] == 0 and st["stored_key_count"] > 0
    # the fixture's blocks carry no provenance record: nothing is claimed for them
    prov = st["status_extension"]["labqfl_provenance"]
    assert prov["unrecorded_blocks"] > 0 and prov["information_theoretic"] is False


def test_enc_keys_post_then_dec_keys_post_give_the_same_bytes_once(kme, kh):
    with _client(kme, kh, "C1") as m, _client(kme, kh, "C2") as s:
        r = m.post("/api/v1/keys/C2/enc_keys", json={"number": 3, "size": 512})
        assert r.status_code == 200, r.text
        keys = r.json()["keys"]
        assert len(keys) == 3 and all(len(base64.b64decode(k["key"])) == 64 for k in keys)
        for k in keys:
            uuid.UUID(k["key_ID"])
            _key_bits(kme, kh, k["key_ID"], k["key"])
        r2 = s.post("/api/v1/keys/C1/dec_keys", json={"key_IDs": [{"key_ID": k["key_ID"]} for k in keys]})
        assert r2.status_code == 200 and r2.json() == {"keys": keys}
        again = s.post("/api/v1/keys/C1/dec_keys", json={"key_IDs": [{"key_ID": keys[0]["key_ID"]}]})
        assert again.status_code == 400 and "already retrieved" in again.json()["message"]


def test_get_forms_and_defaults(kme, kh):
    with _client(kme, kh, "C2") as m, _client(kme, kh, "C1") as s:
        r = m.get("/api/v1/keys/C1/enc_keys")  # defaults: number 1, size key_size (256)
        assert r.status_code == 200
        (k,) = r.json()["keys"]
        assert len(base64.b64decode(k["key"])) == 32
        r = m.get("/api/v1/keys/C1/enc_keys", params={"number": 2, "size": 64})
        k2 = r.json()["keys"]
        assert len(k2) == 2 and all(len(base64.b64decode(x["key"])) == 8 for x in k2)
        for x in [k, *k2]:
            got = s.get("/api/v1/keys/C2/dec_keys", params={"key_ID": x["key_ID"]})
            assert got.status_code == 200 and got.json()["keys"] == [x]
        empty_post = m.post("/api/v1/keys/C1/enc_keys", content=b"")
        assert empty_post.status_code == 200 and len(empty_post.json()["keys"]) == 1


@pytest.mark.parametrize("body, fragment", [
    ({"size": 100}, "multiple of 8"),
    ({"size": 0}, "multiple of 8"),
    ({"size": 1 << 20}, "max_key_size"),
    ({"number": 0}, "number"),
    ({"number": 10_000}, "max_key_per_request"),
    ({"number": "two"}, "number"),
    ({"number": True}, "number"),
    ({"additional_slave_SAE_IDs": ["C3"]}, "multicast"),
    ({"additional_slave_SAE_IDs": "C3"}, "array of strings"),
    ({"extension_mandatory": [{"abc_route_type": "direct"}]}, "extension_mandatory"),
    ([1, 2], "JSON object"),
])
def test_enc_keys_bad_requests_are_400(kme, kh, body, fragment):
    with _client(kme, kh, "C1") as c:
        r = c.post("/api/v1/keys/C2/enc_keys", json=body)
    assert r.status_code == 400, r.text
    assert fragment in json.dumps(r.json())
    assert set(r.json()) <= {"message", "details"}


def test_other_bad_requests_are_400(kme, kh):
    with _client(kme, kh, "C1") as c:
        assert c.post("/api/v1/keys/C2/enc_keys", content=b"{not json").status_code == 400
        assert c.get("/api/v1/keys/C2/enc_keys", params={"size": "big"}).status_code == 400
        r = c.get("/api/v1/keys/nobody/status")
        assert r.status_code == 400 and "not known" in r.json()["message"]
        assert c.get("/api/v1/keys/C1/status").status_code == 400  # master and slave at one node
        assert c.post("/api/v1/keys/C2/dec_keys", json={"key_IDs": [{"key_ID": "not-a-uuid"}]}).status_code == 400
        assert c.post("/api/v1/keys/C2/dec_keys", json={"key_IDs": []}).status_code == 400
        assert c.post("/api/v1/keys/C2/dec_keys", json={"keys": []}).status_code == 400
        assert c.get("/api/v1/keys/C2/dec_keys").status_code == 400
        r = c.get("/api/v1/keys/C2/dec_keys", params={"key_ID": str(uuid.uuid4())})
        assert r.status_code == 400 and "unknown" in r.json()["message"]


def test_fields_outside_the_spec_s_formats_are_refused_and_consume_nothing(kme, kh):
    """A dec_keys body posted to enc_keys by mistake used to be answered with fresh key (200), which
    the caller then held without meaning to; now 400 naming the field and the spec's fields."""
    with _client(kme, kh, "C1") as c:
        before = c.get("/api/v1/keys/C2/status").json()["stored_key_count"]
        r = c.post("/api/v1/keys/C2/enc_keys", json={"key_IDs": [{"key_ID": str(uuid.uuid4())}]})
        assert r.status_code == 400, r.text
        assert r.json()["message"] == ("unknown field(s) 'key_IDs' in the request body; expected number, size, "
                                       "additional_slave_SAE_IDs, extension_mandatory, extension_optional")
        assert c.get("/api/v1/keys/C2/status").json()["stored_key_count"] == before
        assert c.post("/api/v1/keys/C2/enc_keys", json={"number": 1, "sise": 256}).status_code == 400
        assert c.post("/api/v1/keys/C2/enc_keys", json={"number": 1, "extension_optional": [{}]}).status_code == 200
    with _client(kme, kh, "C2") as c:
        r = c.post("/api/v1/keys/C1/dec_keys", json={"key_IDs": [{"key_ID": str(uuid.uuid4())}], "number": 1})
        assert r.status_code == 400 and "unknown field(s) 'number'" in r.json()["message"]


def test_only_the_slave_sae_can_retrieve_a_key(kme, kh):
    with _client(kme, kh, "C1") as m, _client(kme, kh, "C3") as other:
        kid = m.post("/api/v1/keys/C2/enc_keys", json={"number": 1}).json()["keys"][0]["key_ID"]
        r = other.post("/api/v1/keys/C1/dec_keys", json={"key_IDs": [{"key_ID": kid}]})
        assert r.status_code in (400, 401)  # C3's KME holds no reservation for it
        r = m.post("/api/v1/keys/C1/dec_keys", json={"key_IDs": [{"key_ID": kid}]})
        assert r.status_code == 400  # the master at the same node cannot be its own slave
    with _client(kme, kh, "C2") as s:
        r = s.post("/api/v1/keys/C3/dec_keys", json={"key_IDs": [{"key_ID": kid}]})
        assert r.status_code == 400 and "master_SAE_ID" in r.json()["message"]
        assert s.post("/api/v1/keys/C1/dec_keys", json={"key_IDs": [{"key_ID": kid}]}).status_code == 200


def test_unauthorised_clients_are_refused(kme, kh):
    # No client certificate: the TLS handshake is refused (ssl.CERT_REQUIRED).
    with pytest.raises(httpx.TransportError):
        with _client(kme, kh, None) as c:
            c.get("/api/v1/keys/C2/status")
    # A certificate from another CA: refused at the TLS layer too.
    with pytest.raises(httpx.TransportError):
        with _client(kme, kh, "C1", ca_dir=kme.certs / "other-ca") as c:
            c.get("/api/v1/keys/C2/status")
    # A valid certificate whose name is no configured SAE: 401 with an ETSI error body.
    with _client(kme, kh, "stranger") as c:
        for r in (c.get("/api/v1/keys/C2/status"), c.post("/api/v1/keys/C2/enc_keys", json={}),
                  c.get("/api/v1/keys/C1/dec_keys", params={"key_ID": str(uuid.uuid4())})):
            assert r.status_code == 401 and "message" in r.json()


def test_concurrent_enc_keys_never_overlap(kme, kh):
    def request(i: int) -> list[dict]:
        with _client(kme, kh, "C1" if i % 2 else "C2") as c:
            slave = "C2" if i % 2 else "C1"
            out = []
            for _ in range(3):
                r = c.post(f"/api/v1/keys/{slave}/enc_keys", json={"number": 4, "size": 128})
                assert r.status_code == 200, r.text
                out += r.json()["keys"]
            return out

    with ThreadPoolExecutor(8) as ex:
        keys = [k for ks in ex.map(request, range(8)) for k in ks]
    assert len({k["key_ID"] for k in keys}) == len(keys) == 96
    seen: set = set()
    for k in keys:
        rec = kme.stores["C1"].delivery(k["key_ID"])
        assert rec is not None
        pos = set(kh.positions(rec["refs"]))
        assert not seen & pos, "two keys share key bits"
        seen |= pos
        _key_bits(kme, kh, k["key_ID"], k["key"])
    assert len({k["key"] for k in keys}) == len(keys)


def test_exhaustion_is_503_and_consumes_nothing(tmp_path, kh):
    from labqfl.keystore import open_node_stores

    stores = open_node_stores(["C1", "C2"], tmp_path)
    kh.fill_pair(stores, PAIR, 1, 1024, seed=3, purpose="etsi")
    svc = KeyDeliveryService(stores, KmeSettings(saes={"A": "C1", "B": "C2"}))
    assert svc.status("A", "B")["stored_key_count"] == 4
    svc.enc_keys("A", "B", number=3)
    with pytest.raises(EtsiError) as exc:
        svc.enc_keys("A", "B", number=2)
    assert exc.value.status == 503 and exc.value.details[0]["available_keys"] == 1
    assert stores["C1"].available_bits(PAIR, "etsi") == 256
    assert len(svc.enc_keys("A", "B", number=1)["keys"]) == 1
    assert svc.status("A", "B")["stored_key_count"] == 0


def test_exhaustion_over_https_is_503(kme, kh, tmp_path):
    with _client(kme, kh, "C1") as c:
        r = c.post("/api/v1/keys/C3/enc_keys", json={"number": 1})  # pair C1-C3 has no key at all
    assert r.status_code == 503 and r.json()["details"][0]["available_keys"] == 0


def test_third_party_python_client(kme):
    client_mod = pytest.importorskip("etsi_qkd_014_client")
    c = kme.certs
    host = f"127.0.0.1:{kme.server.port}"
    master = client_mod.QKD014Client(host, str(c / "sae-C1.pem"), str(c / "sae-C1.key"), str(c / "ca.pem"))
    slave = client_mod.QKD014Client(host, str(c / "sae-C2.pem"), str(c / "sae-C2.key"), str(c / "ca.pem"))
    code, st = master.get_status("C2")
    assert code == 200 and st.slave_sae_id == "C2" and st.key_size == 256
    code, kc = master.get_key("C2", number=2, size=1024)
    assert code == 200 and len(kc.keys) == 2
    code, kc2 = slave.get_key_with_key_IDs("C1", [k.key_id for k in kc.keys])
    assert code == 200 and [k.key for k in kc2.keys] == [k.key for k in kc.keys]
    code, err = master.get_key("C2", size=12)
    assert code == 400 and "multiple of 8" in err.message


def test_curl_as_third_party_client(kme):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    c = kme.certs
    base = ["--silent", "--show-error", "--cacert", str(c / "ca.pem")]

    def run(sae: str, *args: str) -> dict:
        out = subprocess.run([curl, *base, "--cert", str(c / f"sae-{sae}.pem"), "--key", str(c / f"sae-{sae}.key"),
                              *args], capture_output=True, text=True, timeout=60, check=True)
        return json.loads(out.stdout)

    url = kme.url + "/api/v1/keys"
    keys = run("C1", "-X", "POST", "-H", "Content-Type: application/json", "--data", '{"number": 2, "size": 256}',
               f"{url}/C2/enc_keys")["keys"]
    ids = [k["key_ID"] for k in keys]
    got = run("C2", f"{url}/C1/dec_keys?key_ID={ids[0]}")["keys"]
    assert got == keys[:1]
    got = run("C2", "-X", "POST", "-H", "Content-Type: application/json",
              "--data", json.dumps({"key_IDs": [{"key_ID": ids[1]}]}), f"{url}/C1/dec_keys")["keys"]
    assert got == keys[1:]
    # Without a client certificate curl cannot complete the exchange.
    res = subprocess.run([curl, *base, f"{url}/C2/status"], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
