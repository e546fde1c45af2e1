"""Review s31, F5: bits of a pair consumed at the slave's store only (the two stores out of step) made
every enc_keys in that direction fail with 503 for good, since the master's store always offers its
first free bits. Now the KME spends at the master, without handing them out, the bits the slave's store
already spent for good (consumed long enough ago, exported or absent there; never bits reserved there)
and tries again with the following bits (at most 4 tries per request; since review s34 L17 each try looks in
every bit the master holds free in the pools enc_keys draws, so one try passes over a spent range)."""

from __future__ import annotations

import base64
import logging

import httpx
import numpy as np
import pytest

from labqfl.keystore import open_node_stores
from labqfl.keystore.etsi import EtsiError, KeyDeliveryService, KmeServerThread, KmeSettings

PAIR = "C1-C3"


@pytest.fixture
def svc(tmp_path, kh):
    stores = open_node_stores(["C1", "C3"], tmp_path)
    blocks = kh.fill_pair(stores, PAIR, 2, 4096, seed=11, purpose="etsi")
    service = KeyDeliveryService(stores, KmeSettings(saes={"C1": "C1", "C3": "C3"}, resync_settled_s=0))
    service.blocks = blocks  # type: ignore[attr-defined]
    yield service
    for st in stores.values():
        st.close()


def _totals(store) -> dict:
    acc = store.accounting()[PAIR]
    return {k: (sum(v.values()) if isinstance(v, dict) else v) for k, v in acc.items()}


def test_bits_consumed_at_the_slave_only_no_longer_block_the_direction(svc, kh, caplog):
    c1, c3 = svc.stores["C1"], svc.stores["C3"]
    stray = c3.take(PAIR, 256, "etsi")  # the reviewer's step: consumed at C3 only
    caplog.set_level(logging.WARNING, logger="labqfl")
    delivered = [stray]
    for _ in range(3):  # was 503, 503, 503
        out = svc.enc_keys("C1", "C3", number=2, size=128)
        got = svc.dec_keys("C3", "C1", [k["key_ID"] for k in out["keys"]])
        assert got == out
        for k in out["keys"]:
            rec = c1.delivery(k["key_ID"])
            assert base64.b64decode(k["key"]) == np.packbits(kh.expected_bits(svc.blocks, rec["refs"])).tobytes()
            delivered.append(rec)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "out of step" in r.getMessage()]
    assert len(warnings) == 1 and PAIR in warnings[0] and "256 bit(s)" in warnings[0]
    # no bit handed out twice (the stray take included), and both stores account for the same bits
    seen: set = set()
    for d in delivered:
        pos = set(kh.positions(d.refs if hasattr(d, "refs") else d["refs"]))
        assert not seen & pos
        seen |= pos
    assert _totals(c1) == _totals(c3)
    assert c1.accounting()[PAIR] == c3.accounting()[PAIR]
    assert c1.available_bits(PAIR) == c3.available_bits(PAIR) == 2 * 4096 - 256 - 3 * 256
    # the discarded bits were overwritten and recorded as discarded, not delivered
    assert [k for k in c1.finished(PAIR, limit=64) if k["state"] == "delivered" and set(kh.positions(k["refs"])) &
            set(kh.positions(stray.refs))] == []


def test_over_https_three_requests_after_an_out_of_step_range(svc, kh, certs):
    svc.stores["C3"].take(PAIR, 300, "etsi")  # ends inside the first request's second try

    with KmeServerThread(svc, certfile=certs / "kme-kme.pem", keyfile=certs / "kme-kme.key",
                         cafile=certs / "ca.pem") as k, \
            httpx.Client(base_url=k.base_url, verify=kh.client_context(certs, "C1"), timeout=30) as c:
        codes = [c.get("/api/v1/keys/C3/enc_keys", params={"size": 256}).status_code for _ in range(3)]
    assert codes == [200, 200, 200]


def test_bits_reserved_at_the_slave_are_never_spent_at_the_master(svc):
    """A reservation at the slave is a live key: 503, nothing discarded; the stores are in step, and the 503 says
    another key holds the bits, not "out of step" (review s38 F2)."""
    c1, c3 = svc.stores["C1"], svc.stores["C3"]
    refs = c1.reserve(PAIR, 256, "etsi", "probe")
    c1.release("probe")
    c3.reserve_exact(PAIR, refs, "etsi", "live-key")
    before = c1.accounting()[PAIR]
    with pytest.raises(EtsiError) as exc:
        svc.enc_keys("C1", "C3", number=1)
    assert exc.value.status == 503 and "reserved at node C3's store for another key" in exc.value.message
    assert exc.value.details[0]["held_by_requests"] == 1 and "out of step" not in exc.value.message
    assert "live-key" not in repr(exc.value.details)  # no other request's key ID in the answer (review s38 K7)
    assert c1.accounting()[PAIR] == before


def test_bits_the_slave_consumed_just_now_are_left_alone(svc):
    """The slave's store may have allocated them for a key whose take_exact at the master is still on its
    way (a pair's allocator takes, its partner follows): within resync_settled_s nothing is discarded."""
    c1, c3 = svc.stores["C1"], svc.stores["C3"]
    svc.settings.resync_settled_s = 60.0
    km = c3.take(PAIR, 256, "etsi")
    before = c1.accounting()[PAIR]
    with pytest.raises(EtsiError) as exc:
        svc.enc_keys("C1", "C3", number=1)
    assert exc.value.status == 503
    assert c1.accounting()[PAIR] == before
    c1.take_exact(PAIR, km.refs, "etsi")  # the partner's take_exact still succeeds
    assert len(svc.enc_keys("C1", "C3", number=1)["keys"]) == 1


def test_a_longer_out_of_step_range_is_passed_over_by_the_first_request(svc):
    """A spent range longer than a request's 4 tries is passed over at once (it took two requests, the first
    answered 503, before docs review s34 L17)."""
    c1, c3 = svc.stores["C1"], svc.stores["C3"]
    c3.take(PAIR, 1500, "etsi")
    codes = []
    for _ in range(3):
        try:
            kid = svc.enc_keys("C1", "C3", number=1, size=256)["keys"][0]["key_ID"]
            svc.dec_keys("C3", "C1", [kid])
            codes.append(200)
        except EtsiError as exc:
            codes.append(exc.status)
    assert codes == [200, 200, 200]
    assert c1.accounting()[PAIR] == c3.accounting()[PAIR]
    assert c1.accounting()[PAIR]["consumed"] == {"etsi": 1500 + 3 * 256}


def test_bits_exported_from_the_slave_s_store_are_passed_over(svc, tmp_path):
    """Exported bits left the slave's store for another store of its node: the KME can never use them."""
    from labqfl.keystore import KeyStore

    c1, c3 = svc.stores["C1"], svc.stores["C3"]
    with KeyStore.for_node("C3", tmp_path / "other") as other:
        c3.export_segments(PAIR, 256, "etsi", ticket=other.issue_import_ticket())
    kid = svc.enc_keys("C1", "C3", number=1)["keys"][0]["key_ID"]
    svc.dec_keys("C3", "C1", [kid])
    a1, a3 = c1.accounting()[PAIR], c3.accounting()[PAIR]
    assert a1["consumed"] == {"etsi": 512} and a3["consumed"] == {"etsi": 256} and a3["exported"] == {"etsi": 256}
    assert a1["available"] == a3["available"] and not a1["reserved"] and not a3["reserved"]


def test_a_spent_range_longer_than_a_requests_tries_is_passed_over_at_once(svc, kh):
    """Docs review s34 L17: after 4096 bits left the slave's store (an export), the first enc_keys of 512-bit
    keys failed with 503 "out of step" — each of its 4 tries discarded only the bits it had asked for (3 x 512
    logged) — and only the next request succeeded. The resync now looks in every bit the master holds free in
    the pools enc_keys draws, so the first request after the spent range succeeds."""
    c1, c3 = svc.stores["C1"], svc.stores["C3"]
    gone = c3.take(PAIR, 3000, "etsi")  # spent for good at the slave only (resync_settled_s=0 here)
    out = svc.enc_keys("C1", "C3", number=1, size=256)  # was 503 after 4 x 256 bits
    got = svc.dec_keys("C3", "C1", [k["key_ID"] for k in out["keys"]])
    assert got == out
    rec = c1.delivery(out["keys"][0]["key_ID"])
    assert not set(kh.positions(rec["refs"])) & set(kh.positions(gone.refs))
    assert base64.b64decode(out["keys"][0]["key"]) == np.packbits(kh.expected_bits(svc.blocks, rec["refs"])).tobytes()
    assert c1.available_bits(PAIR) == c3.available_bits(PAIR) == 2 * 4096 - 3000 - 256
    assert c1.accounting()[PAIR] == c3.accounting()[PAIR]


def test_spent_bits_beyond_the_head_of_the_masters_pools_are_left_alone(svc, tmp_path):
    """Second review s34 F4: the first wide window looked in every free bit of the master's etsi and general
    pools, so one enc_keys after a 256-bit desync also discarded a parked export of the slave's far beyond it
    (4352 bits in all), which an import could still return to the slave. Now only the head of the master's
    pools that the slave spent is passed over: here the 256 bits, not the export after the free gap."""
    from labqfl.keystore import KeyStore

    c1, c3 = svc.stores["C1"], svc.stores["C3"]
    c3.take(PAIR, 256, "etsi")  # the 256-bit desync, at the head of the pools
    c3.reserve(PAIR, 512, "etsi", "gap")  # keeps [256, 768) out of the export, then free again
    with KeyStore.for_node("C3", tmp_path / "other") as other:  # 4096 bits parked in another store of C3
        c3.export_segments(PAIR, 4096, "etsi", ticket=other.issue_import_ticket())
    c3.release("gap")
    before = c1.available_bits(PAIR)
    kid = svc.enc_keys("C1", "C3", number=1, size=256)["keys"][0]["key_ID"]
    svc.dec_keys("C3", "C1", [kid])
    assert before - c1.available_bits(PAIR) == 256 + 256  # the desync's bits discarded, the key delivered
