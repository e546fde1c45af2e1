"""ETSI GS QKD 014 conformance faults of review s31 over real HTTPS with mutual TLS on 127.0.0.1:
F2 (dec_keys by an SAE that is not the key's slave is 401, spec §5.3, whichever node it sits on),
F3 (GET forms refuse query parameters outside the spec's, spending nothing) and F6 (extension_optional
must be an array of objects; the 400 for an unknown SAE does not list the configured SAEs)."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest


def _client(kme, kh, sae) -> httpx.Client:
    return httpx.Client(base_url=kme.url, verify=kh.client_context(kme.certs, sae), timeout=30)


def _stored(c: httpx.Client) -> int:
    return c.get("/api/v1/keys/C2/status").json()["stored_key_count"]


def test_dec_keys_by_an_sae_that_is_not_the_slave_is_401_on_any_node(kme, kh):
    """Spec §5.3: "The KME shall reject the request with a 401 HTTP status code if the SAE ID of the
    requestor was not an SAE ID supplied to the 'Get key' method ..." (C3 and the master C1 got 400
    "unknown" because only their own node's store was searched)."""
    with _client(kme, kh, "C1") as m, _client(kme, kh, "C2") as s, _client(kme, kh, "C3") as other:
        kid = m.get("/api/v1/keys/C2/enc_keys", params={"size": 64}).json()["keys"][0]["key_ID"]
        answers = []
        for c, master in ((other, "C1"), (m, "C2"), (other, "C2")):
            r = c.get(f"/api/v1/keys/{master}/dec_keys", params={"key_ID": kid})
            assert r.status_code == 401, (master, r.text)
            answers.append(r.json())
            r = c.post(f"/api/v1/keys/{master}/dec_keys", json={"key_IDs": [{"key_ID": kid}]})
            assert r.status_code == 401, r.text
        # the slave still gets it, once; afterwards the others get the very same 401 (no state leaks)
        assert s.get("/api/v1/keys/C1/dec_keys", params={"key_ID": kid}).status_code == 200
        r = s.get("/api/v1/keys/C1/dec_keys", params={"key_ID": kid})
        assert r.status_code == 400 and "already retrieved" in r.json()["message"]
        for c, master in ((other, "C1"), (m, "C2")):
            r = c.get(f"/api/v1/keys/{master}/dec_keys", params={"key_ID": kid})
            assert r.status_code == 401 and r.json() == answers[0]
        assert answers[0] == {"message": "this SAE is not the slave SAE of the key", "details": [{"key_ID": kid}]}
        # a key ID nobody issued is still 400 unknown, for everyone
        for c in (other, s):
            r = c.get("/api/v1/keys/C1/dec_keys", params={"key_ID": str(uuid.uuid4())})
            assert r.status_code == 400 and "unknown" in r.json()["message"]


def test_dec_keys_with_a_key_of_another_sae_among_its_own_is_401_and_consumes_nothing(kme, kh):
    with _client(kme, kh, "C1") as m, _client(kme, kh, "C2") as s:
        mine = m.get("/api/v1/keys/C2/enc_keys", params={"size": 64}).json()["keys"][0]["key_ID"]
        theirs = s.get("/api/v1/keys/C1/enc_keys", params={"size": 64}).json()["keys"][0]["key_ID"]  # slave C1
        r = s.post("/api/v1/keys/C1/dec_keys", json={"key_IDs": [{"key_ID": mine}, {"key_ID": theirs}]})
        assert r.status_code == 401 and r.json()["details"] == [{"key_ID": theirs}]
        assert s.get("/api/v1/keys/C1/dec_keys", params={"key_ID": mine}).status_code == 200
        assert m.get("/api/v1/keys/C2/dec_keys", params={"key_ID": theirs}).status_code == 200


@pytest.mark.parametrize("path, params, named", [
    ("/api/v1/keys/C2/enc_keys", {"key_ID": "4b10a84e-0000-4000-8000-000000000000"}, ["key_ID"]),
    ("/api/v1/keys/C2/enc_keys", {"numbr": "100", "sise": "64"}, ["numbr", "sise"]),
    ("/api/v1/keys/C2/enc_keys", {"number": "1", "additional_slave_SAE_IDs": "C3"}, ["additional_slave_SAE_IDs"]),
    ("/api/v1/keys/C2/status", {"foo": "1"}, ["foo"]),
])
def test_get_forms_refuse_unknown_query_parameters_and_spend_nothing(kme, kh, path, params, named):
    with _client(kme, kh, "C1") as c:
        before = _stored(c)
        r = c.get(path, params=params)
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["details"] == [{"parameter": n} for n in named]
        for n in named:
            assert repr(n) in body["message"]
        assert "expected" in body["message"]
        assert _stored(c) == before


def test_get_dec_keys_refuses_extra_parameters_and_the_key_stays_retrievable(kme, kh):
    with _client(kme, kh, "C1") as m, _client(kme, kh, "C2") as s:
        kid = m.get("/api/v1/keys/C2/enc_keys", params={"size": 64}).json()["keys"][0]["key_ID"]
        r = s.get("/api/v1/keys/C1/dec_keys", params={"key_ID": kid, "number": "5"})
        assert r.status_code == 400 and r.json()["details"] == [{"parameter": "number"}]
        assert r.json()["message"].endswith("expected key_ID")
        assert s.get("/api/v1/keys/C1/dec_keys", params={"key_ID": kid}).status_code == 200


@pytest.mark.parametrize("body", [
    {"extension_optional": "zz", "size": 8},
    {"extension_optional": [1, 2]},
    {"extension_optional": {"a": 1}},
    {"extension_optional": [{"a": 1}, "b"]},
    {"extension_mandatory": ["route"]},
])
def test_extensions_must_be_arrays_of_objects(kme, kh, body):
    with _client(kme, kh, "C1") as c:
        before = _stored(c)
        r = c.post("/api/v1/keys/C2/enc_keys", json=body)
        assert r.status_code == 400, r.text
        assert "must be an array of objects" in r.json()["message"]
        assert _stored(c) == before
        ok = c.post("/api/v1/keys/C2/enc_keys", json={"size": 8, "extension_optional": [{"x_vendor": 1}]})
        assert ok.status_code == 200


def test_unknown_sae_400_does_not_list_the_configured_saes(kme, kh):
    with _client(kme, kh, "C1") as c:
        for r in (c.get("/api/v1/keys/ZZ/enc_keys"), c.get("/api/v1/keys/ZZ/status"),
                  c.get("/api/v1/keys/ZZ/dec_keys", params={"key_ID": str(uuid.uuid4())})):
            assert r.status_code == 400 and "not known" in r.json()["message"]
            text = json.dumps(r.json())
            assert "known_SAE_IDs" not in text and '"C2"' not in text and '"C3"' not in text
