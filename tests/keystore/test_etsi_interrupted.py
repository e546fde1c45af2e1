"""Review s31 (crash consistency), F1: `labqfl keys serve` killed (SIGKILL) in the middle of an
enc_keys request left the master's reservation at the master only — and every request with the
*slave's* node as master picked those bits first and was refused there: that direction answered 503
for good. A KME now releases, when it starts, the reservations of requests that were stopped before
the master's take (no key was handed out for them); a delivered key waiting for dec_keys stays."""

from __future__ import annotations

import pytest

from labqfl.keystore import open_node_stores
from labqfl.keystore.etsi import EtsiError, KeyDeliveryService, KmeSettings

PAIR = "C1-C3"
INFO = {"master_SAE_ID": "C1", "slave_SAE_ID": "C3"}


@pytest.fixture
def stores(tmp_path, kh):
    st = open_node_stores(["C1", "C3"], tmp_path)
    kh.fill_pair(st, PAIR, 1, 4096, seed=3, purpose="etsi")
    yield st
    for s in st.values():
        s.close()


def _kme(stores, settled_s: float = 0.0) -> KeyDeliveryService:
    return KeyDeliveryService(stores, KmeSettings(saes={"C1": "C1", "C3": "C3"}, resync_settled_s=settled_s))


def _killed_after(stores, step: str) -> list[str]:
    """The first one or two transactions of an enc_keys of two 128-bit keys, C1 master (as
    ``KeyDeliveryService._take_at_both`` makes them), then the process is gone."""
    kids = ["k-a", "k-b"]
    refs = stores["C1"].reserve_many(PAIR, [128, 128], "etsi", kids, info=INFO)
    if step == "slave":
        stores["C3"].reserve_exact_many(PAIR, list(zip(refs, kids, strict=True)), "etsi", info=INFO)
    return kids


@pytest.mark.parametrize("step", ["master", "slave"])
def test_a_request_stopped_before_the_master_s_take_is_released_at_both_ends(stores, step):
    kids = _killed_after(stores, step)
    if step == "master":  # reserved at C1 only: every C3 -> C1 request is refused, naming the reservation that
        # holds the bits (review s38 F2: not "out of step"); the slave's reservation, by contrast, only strands its bits
        with pytest.raises(EtsiError, match="reserved at node C1's store for another key"):
            _kme(stores, settled_s=60).enc_keys("C3", "C1", number=1, size=128)
    kme = _kme(stores)  # a restarted KME
    for node in ("C1", "C3"):
        assert all(stores[node].reservation(k) is None for k in kids)
    out = kme.enc_keys("C3", "C1", number=2, size=128)  # the direction works again
    assert kme.dec_keys("C1", "C3", [k["key_ID"] for k in out["keys"]]) == out
    assert stores["C1"].accounting()[PAIR] == stores["C3"].accounting()[PAIR]


def test_a_delivered_key_waiting_for_dec_keys_survives_a_restart(stores):
    kme = _kme(stores)
    out = kme.enc_keys("C1", "C3", number=1, size=128)
    kid = out["keys"][0]["key_ID"]
    assert _kme(stores).recover_interrupted_requests() == []
    assert _kme(stores).dec_keys("C3", "C1", [kid]) == out


def test_young_reservations_are_left_alone(stores):
    kids = _killed_after(stores, "master")
    assert _kme(stores, settled_s=60).recover_interrupted_requests() == []  # maybe another KME's request in flight
    assert all(stores["C1"].reservation(k) is not None for k in kids)
