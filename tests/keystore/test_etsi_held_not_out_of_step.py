"""Review s38 F2: two KMEs on one data dir, enc_keys in opposite directions at once: 13 of 60 requests were
answered 503 "the key stores of the two KMEs are out of step" although the stores were in step: the slave's
bits were reserved by the other KME's live request. That 503 now says so (another key's request holds the
bits; the stores are in step; retry) and names the reservation. A real desynchronisation still reads "out
of step" (tests/keystore/test_etsi_input.py::test_slave_refusal_consumes_nothing_at_the_master)."""

from __future__ import annotations

import pytest

from labqfl.keystore import open_node_stores
from labqfl.keystore.etsi import EtsiError, KeyDeliveryService, KmeSettings

PAIR = "C1-C2"


@pytest.fixture
def kme(tmp_path, kh):  # type: ignore[no-untyped-def]
    stores = open_node_stores(["C1", "C2"], tmp_path)
    kh.fill_pair(stores, PAIR, 2, 4096, seed=7, purpose="etsi")
    yield KeyDeliveryService(stores, KmeSettings(saes={"C1": "C1", "C2": "C2"}, resync_settled_s=60)), stores
    for s in stores.values():
        s.close()


def test_bits_held_by_another_live_request_are_not_out_of_step(kme) -> None:
    svc, stores = kme
    # the other KME's request C2 -> C1, half-way: C2 (its master) reserved the next bits, C1 not yet
    stores["C2"].reserve(PAIR, 512, "etsi", "other-kme-key")
    before = {n: s.accounting() for n, s in stores.items()}
    with pytest.raises(EtsiError) as err:
        svc.enc_keys("C1", "C2", number=1, size=256)
    e = err.value
    assert e.status == 503 and "out of step" not in e.message, e.message
    assert "reserved at node C2's store for another key" in e.message and "in step: retry" in e.message
    assert "no key was consumed" in e.message and e.details[0]["held_by_requests"] == 1
    # review s38 K7: another request's key ID is not given to this SAE (it may not be that key's slave)
    assert "other-kme-key" not in repr(e.details) and "other-kme-key" not in e.message
    assert {n: s.accounting() for n, s in stores.items()} == before  # nothing spent, nothing left reserved

    stores["C2"].release("other-kme-key")  # that request ended: the next one goes through
    out = svc.enc_keys("C1", "C2", number=1, size=256)
    assert svc.dec_keys("C2", "C1", [out["keys"][0]["key_ID"]]) == out

