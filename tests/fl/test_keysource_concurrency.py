"""Review s31 F1: the in-process ``qkd`` key source beside another process (``labqfl keys serve``)
serving the same key stores.

The source used to ``take`` (consume) at the master and then ``take_exact`` at the slave; in between,
the KME reserved those still-free bits at the slave (an SAE request with the slave as master), the
train's ``take_exact`` was refused and the run aborted with the master's bits spent at one end only.
Now the source reserves at both ends first (the KME's protocol) and moves past bits the slave's store
holds for another key.  The "other process" here is a second :class:`KeyStore` object on the same
file (its own SQLite connection), or a :class:`KeyDeliveryService` on its own store objects."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from labqfl.errors import KeyStoreError
from labqfl.fl.keysource import KeyStoreKeySource
from labqfl.keystore import KeyStore, open_node_stores
from labqfl.keystore.etsi import EtsiError, KeyDeliveryService, KmeSettings

PAIR = "C1-C2"


def _fill(stores: dict[str, KeyStore], nbits: int, seed: int = 7) -> tuple[str, np.ndarray]:
    bits = np.random.default_rng(seed).integers(0, 2, nbits, dtype=np.uint8)
    bid = stores["C1"].add_block(PAIR, bits, purpose="general")
    stores["C2"].add_block(PAIR, bits, block_id=bid, purpose="general")
    return bid, bits


def _consumed(store: KeyStore) -> int:
    return int(sum(store.accounting().get(PAIR, {}).get("consumed", {}).values()))


def _spent_ranges(store: KeyStore) -> list[tuple[str, int, int]]:
    """(block, start, end) of every bit a finished delivery consumed at this store, sorted."""
    import json
    import sqlite3

    con = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT refs FROM deliveries WHERE state IN ('delivered', 'voided')").fetchall()
    finally:
        con.close()
    return sorted((str(b), int(o), int(o) + int(n)) for (r,) in rows for b, o, n in json.loads(r))


def _assert_disjoint(ranges: list[tuple[str, int, int]]) -> None:
    for (b0, _, e0), (b1, s1, _) in zip(ranges, ranges[1:], strict=False):
        assert b0 != b1 or s1 >= e0, "a key bit was delivered twice"


@pytest.fixture
def stores(tmp_path: Path):  # type: ignore[no-untyped-def]
    st = open_node_stores(["C1", "C2"], tmp_path)
    yield st
    for s in st.values():
        s.close()


def test_draw_skips_bits_the_slave_s_store_holds_for_another_process_s_key(stores, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bid, bits = _fill(stores, 4096)
    n = 768
    # "the KME": its own connection to C2's store reserves, with C2 as master, the bits both stores pick next
    kme_c2 = KeyStore.for_node("C2", tmp_path)
    kme_kid = str(uuid.uuid4())
    held = kme_c2.reserve(PAIR, n, "etsi", kme_kid, info={"master_SAE_ID": "C2", "slave_SAE_ID": "C1"})
    assert held == [(bid, 0, n)]
    try:
        src = KeyStoreKeySource(stores, starvation="fail")
        got = src.shared_keys(PAIR, n, round_index=3)
        assert np.array_equal(got, bits[n:2 * n])  # the following bits, not the KME's
        assert src.bits_used == {PAIR: n} and src.blocks_used == {PAIR: {bid}}
        # both ends spent exactly the same n bits; the skipped ones are free again at C1, the KME's still reserved
        assert _consumed(stores["C1"]) == _consumed(stores["C2"]) == n
        assert _spent_ranges(stores["C1"]) == _spent_ranges(stores["C2"]) == [(bid, n, 2 * n)]
        assert stores["C1"].available_bits(PAIR, "fl") == 4096 - n
        assert stores["C2"].available_bits(PAIR, "fl") == 4096 - 2 * n
        assert stores["C1"].pending_reservations() == []
        assert [d["key_id"] for d in stores["C2"].pending_reservations()] == [kme_kid]
        # the KME's key still completes at both ends, on bits the train never had
        kme_c1 = KeyStore.for_node("C1", tmp_path)
        try:
            kme_c1.reserve_exact(PAIR, held, "etsi", kme_kid)
            a = kme_c2.take_exact(PAIR, held, "etsi", key_id=kme_kid)
            b = kme_c1.take_exact(PAIR, held, "etsi", key_id=kme_kid)
            assert np.array_equal(a.bits, b.bits) and np.array_equal(a.bits, bits[:n])
            a.wipe()
            b.wipe()
        finally:
            kme_c1.close()
        # a second draw goes on after both
        got2 = src.shared_keys(PAIR, n, round_index=4)
        assert np.array_equal(got2, bits[2 * n:3 * n])
        for st in stores.values():
            r = _spent_ranges(st)
            _assert_disjoint(r)
            assert r == [(bid, 0, n), (bid, n, 2 * n), (bid, 2 * n, 3 * n)]
    finally:
        kme_c2.close()


def test_a_draw_that_finds_every_next_range_held_elsewhere_fails_clearly_and_spends_nothing(stores, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _fill(stores, 4096)
    n = 512
    other = KeyStore.for_node("C2", tmp_path)
    try:
        kids = [str(uuid.uuid4()) for _ in range(3)]
        other.reserve_many(PAIR, [n] * 3, "etsi", kids)
        src = KeyStoreKeySource(stores, starvation="fail", reserve_attempts=3)
        with pytest.raises(KeyStoreError) as ei:
            src.shared_keys(PAIR, n, round_index=0)
        msg = str(ei.value)
        assert "pair C1-C2" in msg and "key store of C2" in msg and str(stores["C2"].path) in msg
        assert "another process" in msg and "nothing was consumed at either end" in msg
        assert _consumed(stores["C1"]) == _consumed(stores["C2"]) == 0
        assert stores["C1"].pending_reservations() == []
        assert stores["C1"].available_bits(PAIR, "fl") == 4096
        # with one more try it gets past them
        src.reserve_attempts = 4
        src.shared_keys(PAIR, n, round_index=0)
        assert _spent_ranges(stores["C1"]) == _spent_ranges(stores["C2"])
    finally:
        other.close()


def test_a_refusal_that_is_no_reservation_releases_the_master_and_is_not_retried(stores) -> None:  # type: ignore[no-untyped-def]
    bid, _ = _fill(stores, 2048)
    stores["C2"].discard_exact(PAIR, [(bid, 0, 256)], "test: spent at the slave only")  # out of step
    src = KeyStoreKeySource(stores, starvation="fail")
    with pytest.raises(KeyStoreError, match=r"slave's key store C2 refused .* nothing was consumed at either end"):
        src.shared_keys(PAIR, 256, round_index=0)
    assert stores["C1"].pending_reservations() == [] and stores["C2"].pending_reservations() == []
    assert _consumed(stores["C1"]) == 0


def test_train_draws_beside_a_kme_serving_the_same_stores_never_abort(stores, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A KME (own store objects) hands out keys in both directions of the pair while the source draws;
    the source never fails, and afterwards both stores spent exactly the same bits, none twice."""
    _fill(stores, 200_000)
    kme_stores = open_node_stores(["C1", "C2"], tmp_path)
    svc = KeyDeliveryService(kme_stores, KmeSettings(saes={"A": "C1", "B": "C2"}, nodes=["C1", "C2"]))
    stop = threading.Event()
    served = {"ok": 0, "503": 0}
    errors: list[BaseException] = []

    def kme_loop() -> None:
        i = 0
        try:
            while not stop.is_set():
                m, s = ("B", "A") if i % 2 == 0 else ("A", "B")
                i += 1
                try:
                    keys = svc.enc_keys(m, s, number=2, size=256)["keys"]
                except EtsiError as exc:
                    assert exc.status == 503
                    served["503"] += 1
                    continue
                svc.dec_keys(s, m, [k["key_ID"] for k in keys])
                served["ok"] += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=kme_loop, daemon=True)
    t.start()
    src = KeyStoreKeySource(stores, starvation="fail")
    try:
        t0 = time.monotonic()
        draws = 0
        while time.monotonic() - t0 < 3.0 and draws < 60:
            src.shared_keys(PAIR, 768, round_index=draws)
            draws += 1
    finally:
        stop.set()
        t.join(30)
        for s in kme_stores.values():
            s.close()
    assert not errors and not t.is_alive()
    assert draws > 0 and served["ok"] > 0
    assert src.bits_used == {PAIR: 768 * draws}
    a, b = _spent_ranges(stores["C1"]), _spent_ranges(stores["C2"])
    _assert_disjoint(a)
    assert a == b and _consumed(stores["C1"]) == _consumed(stores["C2"])
    assert stores["C1"].pending_reservations() == [] and stores["C2"].pending_reservations() == []


def test_a_draw_a_killed_process_left_half_done_is_voided_at_both_ends_by_the_next_source(stores) -> None:  # type: ignore[no-untyped-def]
    """A train killed between its reservations and its takes left `fl-mask-local` reservations that
    nothing freed. The next key source voids them (older than STRANDED_AFTER_S; never released: the
    master end may have been taken), so neither end can hand them out and both stay in step."""
    from labqfl.fl.keysource import LOCAL_USE

    _fill(stores, 1024)
    refs = stores["C1"].reserve(PAIR, 256, "fl", "dead-draw", info={"use": LOCAL_USE})
    stores["C2"].reserve_exact(PAIR, refs, "fl", "dead-draw", info={"use": LOCAL_USE})
    KeyStoreKeySource(stores)  # young: maybe another run's draw in flight
    assert stores["C1"].reservation("dead-draw") is not None
    KeyStoreKeySource.STRANDED_AFTER_S = 0.0
    try:
        assert KeyStoreKeySource(stores).void_stranded() == 0  # the constructor voided both already
    finally:
        KeyStoreKeySource.STRANDED_AFTER_S = 60.0
    for s in stores.values():
        assert s.reservation("dead-draw") is None and s.available_bits(PAIR) == 1024 - 256
