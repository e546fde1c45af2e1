"""Review s33, ETSI GS QKD 014 key delivery: F3 (a KME restarted, or running, within
``resync_settled_s`` of a SIGKILL kept the killed requests' reservations: 503 "out of step" for
good), F5 (a full disk answered "out of step" and kept 2048 bits reserved until a restart), F6 (POST
forms ignored the query string; dec_keys items took unknown members), F7 (a certificate naming two
SAEs was served as the first) and F8 (no limit on the request body)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from labqfl.errors import KeyStoreError
from labqfl.keystore import open_node_stores
from labqfl.keystore.etsi import EtsiError, KeyDeliveryService, KmeSettings

PAIR = "C1-C3"


@pytest.fixture
def stores(tmp_path, kh):
    st = open_node_stores(["C1", "C3"], tmp_path)
    kh.fill_pair(st, PAIR, 1, 8192, seed=4, purpose="etsi")
    yield st
    for s in st.values():
        s.close()


def _kme(stores, settled_s: float = 60.0) -> KeyDeliveryService:
    return KeyDeliveryService(stores, KmeSettings(saes={"C1": "C1", "C3": "C3"}, resync_settled_s=settled_s))


# A KME process serving the stores of DATA, whose enc_keys C1 -> C3 stops right after the master's
# reservation: it dies there (SIGKILL-like, "die") or waits there until killed ("hang").
_HALF_DONE = """
import os, sys, time
from pathlib import Path
from labqfl.keystore import open_node_stores
from labqfl.keystore.etsi import KeyDeliveryService, KmeSettings
st = open_node_stores(["C1", "C3"], Path(sys.argv[1]))
kme = KeyDeliveryService(st, KmeSettings(saes={"C1": "C1", "C3": "C3"}))
def stop(*a, **k):
    print("reserved", flush=True)
    if sys.argv[2] == "die":
        os._exit(9)
    time.sleep(600)
st["C3"].reserve_exact_many = stop
kme.enc_keys("C1", "C3", number=2, size=128)
"""


def _half_done(data: Path, how: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HALF_DONE, str(data), how], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "reserved"
    return proc


def _pending(stores) -> int:
    return sum(len(s.pending_reservations("etsi")) for s in stores.values())


@pytest.mark.parametrize("when", ["restarted", "running"])
def test_a_dead_kme_s_reservations_are_released_at_once(tmp_path, stores, when):
    running = _kme(stores) if when == "running" else None  # a second KME on the same data dir, up all along
    proc = _half_done(tmp_path, "die")
    assert proc.wait(30) == 9
    assert _pending(stores) == 2  # C1's reservations of the killed request, seconds old
    kme = running or _kme(stores)  # restarted at once (systemd Restart=always), resync_settled_s = 60
    out = kme.enc_keys("C3", "C1", number=2, size=128)  # the direction that picked C1's reserved bits first
    assert kme.dec_keys("C1", "C3", [k["key_ID"] for k in out["keys"]]) == out
    assert _pending(stores) == 0
    assert stores["C1"].accounting()[PAIR] == stores["C3"].accounting()[PAIR]


def test_a_live_kme_s_reservations_are_kept_until_it_dies(tmp_path, stores):
    proc = _half_done(tmp_path, "hang")
    try:
        kme = _kme(stores, settled_s=0)  # even with no settle time: its owner may still finish it
        assert kme.recover_interrupted_requests() == []
        assert _pending(stores) == 2
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert len(kme.recover_interrupted_requests()) == 2  # dead now: released at once
    assert _pending(stores) == 0


def test_a_live_kme_s_reservations_are_kept_by_a_kme_opening_its_stores_through_symlinks(tmp_path, stores):
    """Second review s33 L1: a KME whose data dir holds symlinks to another KME's store files looked for the
    owner's lock next to the symlinks, found none, and released the live KME's reservations."""
    proc = _half_done(tmp_path, "hang")
    other = tmp_path / "other"
    (other / "keystore").mkdir(parents=True)
    for n in ("C1", "C3"):
        (other / "keystore" / f"{n}.sqlite").symlink_to(Path(stores[n].path).resolve())
    linked = open_node_stores(["C1", "C3"], other)
    try:
        assert _pending(linked) == 2  # the same stores, through the links
        kme = _kme(linked, settled_s=0)
        assert kme.recover_interrupted_requests() == []
        assert _pending(stores) == 2
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        for s in linked.values():
            s.close()


# ------------------------------------------------------------------ F5: a store that cannot be written


def test_a_full_disk_is_named_and_its_reservations_are_released_later(stores, monkeypatch):
    kme = _kme(stores)
    full = KeyStoreError(f"key store {stores['C3'].path}: commit failed (database or disk is full); nothing was "
                         "handed out")

    def no_room(*a, **k):
        raise full

    with monkeypatch.context() as m:
        m.setattr(stores["C3"], "reserve_exact_many", no_room)
        m.setattr(stores["C1"], "release", no_room)  # the master's disk is full too
        with pytest.raises(EtsiError) as err:
            kme.enc_keys("C1", "C3", number=8, size=256)
    assert err.value.status == 503
    assert "disk full" in err.value.message and "out of step" not in err.value.message
    assert "could not be released yet" in err.value.message
    assert len(stores["C1"].pending_reservations("etsi")) == 8  # 2048 bits held while the disk is full
    out = kme.enc_keys("C1", "C3", number=1, size=256)  # space again: released before the next request
    assert stores["C1"].pending_reservations("etsi") == [] and len(stores["C3"].pending_reservations("etsi")) == 1
    assert kme.dec_keys("C3", "C1", [out["keys"][0]["key_ID"]]) == out
    assert stores["C1"].accounting()[PAIR] == stores["C3"].accounting()[PAIR]


# ------------------------------------------------------------------ F6, F7, F8 over HTTPS


def _client(kme, kh, sae: str, ctx=None) -> httpx.Client:
    return httpx.Client(base_url=kme.url, verify=ctx or kh.client_context(kme.certs, sae), timeout=30)


def _stored(c: httpx.Client) -> int:
    return c.get("/api/v1/keys/C2/status").json()["stored_key_count"]


@pytest.mark.parametrize("path", ["/api/v1/keys/C2/enc_keys?number=5&size=64",
                                  "/api/v1/keys/C2/enc_keys?additional_slave_SAE_IDs=C3",
                                  "/api/v1/keys/C2/enc_keys?flag"])
def test_a_post_with_a_query_string_is_refused(kme, kh, path):
    with _client(kme, kh, "C1") as c:
        before = _stored(c)
        r = c.post(path, json={})
        assert r.status_code == 400, r.text
        assert "POST" in r.json()["message"] and "body" in r.json()["message"]
        assert _stored(c) == before


def test_dec_keys_post_refuses_queries_and_unknown_item_members(kme, kh):
    with _client(kme, kh, "C1") as m, _client(kme, kh, "C2") as s:
        kid = m.post("/api/v1/keys/C2/enc_keys", json={}).json()["keys"][0]["key_ID"]
        r = s.post("/api/v1/keys/C1/dec_keys", json={"key_IDs": [{"key_ID": kid, "surprise": 1}]})
        assert r.status_code == 400 and "'surprise'" in r.json()["message"], r.text
        r = s.post("/api/v1/keys/C1/dec_keys", json={"key_IDs": [{"key_ID": kid, "key_ID_extension": "x"}]})
        assert r.status_code == 400 and "key_ID_extension" in r.json()["message"], r.text
        r = s.post(f"/api/v1/keys/C1/dec_keys?key_ID={kid}", json={"key_IDs": [{"key_ID": kid}]})
        assert r.status_code == 400 and "POST" in r.json()["message"], r.text
        r = s.post("/api/v1/keys/C1/dec_keys", json={"key_IDs": [{"key_ID": kid, "key_ID_extension": {}}]})
        assert r.status_code == 200 and r.json()["keys"][0]["key_ID"] == kid  # the refusals spent nothing


def test_a_certificate_naming_two_saes_is_refused(kme, kh, tmp_path):
    from cryptography import x509

    from labqfl.keystore.certs import _issue, _load_ca

    ca = _load_ca(kme.certs)
    assert ca is not None
    cert, key = _issue(tmp_path, "sae-dual", "C1", [x509.DNSName("C2")], False, ca, 1)
    ctx = kh.client_context(kme.certs, None)
    ctx.load_cert_chain(str(cert), str(key))
    with _client(kme, kh, "C1", ctx) as c:
        r = c.get("/api/v1/keys/C3/status")
        assert r.status_code == 401 and "more than one SAE" in r.json()["message"], r.text
        assert c.post("/api/v1/keys/C3/enc_keys", json={}).status_code == 401


def test_a_body_beyond_the_limit_is_413_and_spends_nothing(kme, kh):
    limit = 16384 + 128 * 1024  # max_body_bytes: 16 KiB + 1 KiB per key ID, max_key_per_request = 128
    with _client(kme, kh, "C1") as c:
        before = _stored(c)
        big = b" " * (limit + 1) + b"{}"
        r = c.post("/api/v1/keys/C2/enc_keys", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text
        assert str(limit) in r.json()["message"]

    def chunks():  # no Content-Length: refused once the bytes received pass the limit
        for _ in range(64):
            yield b" " * 65536
        yield b"{}"

    with _client(kme, kh, "C1") as c:
        try:
            r = c.post("/api/v1/keys/C2/enc_keys", content=chunks(), headers={"content-type": "application/json"})
            assert r.status_code == 413, r.text
        except httpx.TransportError:
            pass  # the KME answered and closed before the client finished sending: also a refusal
    with _client(kme, kh, "C1") as c:
        assert _stored(c) == before
        ok = b" " * 1000 + b'{"number": 1}'  # a padded legal body still goes through
        assert c.post("/api/v1/keys/C2/enc_keys", content=ok, headers={"content-type": "application/json"}).status_code == 200
