"""Authentication key from the nodes' key stores: bootstrap, consumption, refill, refusal.

One tiny simulated acquisition (module fixture) is distilled several times with random block
IDs (``acquisition_id=None``) into fresh or shared stores.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from labqfl.errors import InsufficientKeyError, KeyStoreError, LabqflError
from labqfl.keystore import KeyStore
from labqfl.qkd.authentication import DEFAULT_AUTH_LANES
from labqfl.qkd.estimation import SecurityParameters
from labqfl.qkd.pipeline import (
    AUTH_REFILL_SUFFIX,
    PRESHARED_PREFIX,
    AuthKeyStore,
    DistillSettings,
    KeyStoreSink,
    MemorySink,
    distill_stream,
)

DUR = 0.1
PAIR = "C1-C2"
PARAMS = SecurityParameters(eps_sec=1e-4)
FIRST = 3 * 64 * DEFAULT_AUTH_LANES  # hash key + two pads: what one end's authentication takes for a Distiller's first block


@pytest.fixture(scope="module")
def acquisition(small_acquisition):  # type: ignore[no-untyped-def]
    """The small one-pair station of the pipeline tests: 0.1 s, one key block (conftest)."""
    return small_acquisition


def _stores(path):
    return {n: KeyStore.for_node(n, path) for n in ("C1", "C2")}


def _distil(acq, sink, acq_id=None, **kw):
    cfg, blocks, logs, _ = acq
    settings = DistillSettings(block_bits=1_000_000, params=PARAMS, **kw)
    res, _ = distill_stream(cfg, blocks, logs, sink, settings, total_slots=int(DUR * cfg.laser.rep_rate_hz),
                            acquisition_id=acq_id)
    return res[PAIR]


def _by_kind(store):
    out: dict[str, list[dict]] = {"preshared": [], "refill": [], "key": []}
    for b in store.blocks(PAIR):
        kind = ("preshared" if b["block_id"].startswith(PRESHARED_PREFIX)
                else "refill" if b["block_id"].endswith(AUTH_REFILL_SUFFIX) else "key")
        out[kind].append(b)
    return out


def test_auth_key_is_taken_from_and_refilled_into_both_stores(acquisition, tmp_path, caplog):
    stores = _stores(tmp_path)
    sink = KeyStoreSink(stores)
    assert isinstance(sink, AuthKeyStore) and not isinstance(MemorySink(), AuthKeyStore)
    with caplog.at_level(logging.INFO, logger="labqfl.qkd.pipeline"):
        r = _distil(acquisition, sink, preshared_auth_bits=4096)
    assert len(r.blocks) == 1 and not r.blocks[0].abort and r.final_key_bits > FIRST
    assert r.auth_key_bits == r.blocks[0].auth_key_bits == FIRST
    acc = {n: st.accounting()[PAIR] for n, st in stores.items()}
    assert acc["C1"] == acc["C2"]  # both ends spent and hold exactly the same
    a = acc["C1"]
    assert a["consumed"] == {"auth": r.auth_key_bits}
    assert a["available"] == {"auth": 4096, "general": r.delivered_bits}  # spent auth_key_bits, refilled as many
    assert a["added"] == 4096 + r.final_key_bits and a["blocks"] == 3
    for st in stores.values():
        kinds = _by_kind(st)
        assert [b["nbits"] for b in kinds["preshared"]] == [4096]
        assert [b["nbits"] for b in kinds["refill"]] == [r.auth_key_bits]
        assert [b["nbits"] for b in kinds["key"]] == [r.delivered_bits]
        assert kinds["refill"][0]["block_id"] == kinds["key"][0]["block_id"] + AUTH_REFILL_SUFFIX
        assert kinds["refill"][0]["meta"]["kind"] == "auth-refill"
        assert kinds["preshared"][0]["meta"] == {"kind": "preshared-auth", "simulated": True, "nbits": 4096}
    assert [b["block_id"] for b in stores["C1"].blocks()] == [b["block_id"] for b in stores["C2"].blocks()]
    # both ends' auth pools hold the same bits: draw them all (Ci allocates, Cj takes the same refs)
    km = stores["C1"].take(PAIR, 4096, "auth")
    assert np.array_equal(km.bits, stores["C2"].take_exact(PAIR, km.refs, "auth").bits)
    boot = [rec.getMessage() for rec in caplog.records if "bootstrapped" in rec.getMessage()]
    assert len(boot) == 1 and "4096 pre-shared bits" in boot[0] and PAIR in boot[0]


def test_second_distiller_uses_the_refill_and_does_not_bootstrap_again(acquisition, tmp_path, caplog):
    stores = _stores(tmp_path)
    # pre-shared key just big enough for the first run: the second can only run on the refill
    r1 = _distil(acquisition, KeyStoreSink(stores), preshared_auth_bits=FIRST)
    assert r1.auth_key_bits == FIRST and not r1.blocks[0].abort
    refill1 = _by_kind(stores["C1"])["refill"]
    assert [b["nbits"] for b in refill1] == [FIRST]
    assert stores["C1"].accounting()[PAIR]["available"]["auth"] == FIRST
    caplog.clear()  # the first run's records (captured when an earlier test left the logger at INFO)
    with caplog.at_level(logging.INFO, logger="labqfl.qkd.pipeline"):
        r2 = _distil(acquisition, KeyStoreSink(stores), preshared_auth_bits=FIRST)
    assert not any("bootstrapped" in rec.getMessage() for rec in caplog.records)
    assert r2.auth_key_bits == FIRST and not r2.blocks[0].abort
    for st in stores.values():
        kinds = _by_kind(st)
        assert len(kinds["preshared"]) == 1 and len(kinds["refill"]) == 2 and len(kinds["key"]) == 2
        a = st.accounting()[PAIR]
        # run 1 spent the pre-shared block, run 2 the first refill: only the second refill is left
        assert a["consumed"] == {"auth": 2 * FIRST}
        assert a["available"]["auth"] == FIRST
        assert a["available"]["general"] == r1.delivered_bits + r2.delivered_bits
    # the spent refill is the first run's: its bits are gone (a take for its refs fails)
    with pytest.raises(KeyStoreError):
        stores["C1"].take_exact(PAIR, [(refill1[0]["block_id"], 0, FIRST)], "auth")


def test_consumed_auth_bits_are_never_handed_out_again(acquisition, tmp_path, monkeypatch):
    stores = _stores(tmp_path)
    handed: list[tuple[str, int, int]] = []
    real_take, real_take_exact = KeyStore.take, KeyStore.take_exact

    def spy_take(self, *a, **kw):  # C1's hand-outs: by allocation or (a draw at both ends) by reservation
        km = real_take(self, *a, **kw)
        if self.node == "C1":
            handed.extend(km.refs)
        return km

    def spy_take_exact(self, *a, **kw):
        km = real_take_exact(self, *a, **kw)
        if self.node == "C1":
            handed.extend(km.refs)
        return km

    monkeypatch.setattr(KeyStore, "take", spy_take)
    monkeypatch.setattr(KeyStore, "take_exact", spy_take_exact)
    runs = [_distil(acquisition, KeyStoreSink(stores), preshared_auth_bits=1024) for _ in range(3)]
    spent = list(handed)
    assert sum(n for _, _, n in spent) == sum(r.auth_key_bits for r in runs) == FIRST * 3
    # everything else in the auth pool, then everything left at all
    left = stores["C1"].available_bits(PAIR, "auth")
    handed.clear()
    stores["C1"].take(PAIR, left, "auth")
    assert stores["C1"].available_bits(PAIR) == 0
    seen: dict[str, list[tuple[int, int]]] = {}
    for block_id, off, n in spent + handed:
        seen.setdefault(block_id, []).append((off, off + n))
    for block_id, iv in seen.items():
        iv.sort()
        for (_, a1), (b0, _) in zip(iv, iv[1:], strict=False):
            assert a1 <= b0, f"auth key bits of block {block_id} handed out twice"
    acc = stores["C1"].accounting()[PAIR]
    assert acc["consumed"] == {"auth": left + 3 * FIRST}
    assert acc["added"] == 1024 + sum(r.final_key_bits for r in runs) == sum(acc["consumed"].values())
    assert not acc["available"]


def test_refusing_to_bootstrap_names_the_pair_and_the_bits_needed(acquisition, tmp_path):
    stores = _stores(tmp_path)
    cfg, _, logs, _ = acquisition
    from labqfl.qkd.pipeline import Distiller

    with pytest.raises(InsufficientKeyError, match=r"pair C1-C2: .* holds 0 bits, 384 needed .* purpose 'auth'") as exc:
        Distiller(cfg, logs, KeyStoreSink(stores), DistillSettings(params=PARAMS, bootstrap_auth=False))
    assert isinstance(exc.value, LabqflError)
    assert stores["C1"].accounting() == {} and stores["C2"].accounting() == {}  # nothing written
    # a loaded pre-shared secret is used as is, and nothing is bootstrapped
    pre = np.frombuffer(bytes(range(48)), np.uint8)
    bits = np.unpackbits(pre)
    for st in stores.values():
        st.add_block(PAIR, bits, block_id="loaded-preshared", purpose="auth")
    r = _distil(acquisition, KeyStoreSink(stores), bootstrap_auth=False)
    assert r.auth_key_bits == FIRST
    ids = [b["block_id"] for b in stores["C1"].blocks(PAIR)]
    assert ids[0] == "loaded-preshared" and not any(i.startswith(PRESHARED_PREFIX) for i in ids)


def test_redistilling_an_acquisition_is_refused_before_spending_auth_key(acquisition, tmp_path):
    stores = _stores(tmp_path)
    acq_id = acquisition[3]
    r = _distil(acquisition, KeyStoreSink(stores), acq_id)
    assert r.delivered_bits > 0
    before = {n: st.accounting() for n, st in stores.items()}
    again = _distil(acquisition, KeyStoreSink(stores), acq_id)  # every block skipped: distilled before
    assert again.skipped_blocks > 0 and again.n_blocks == again.auth_key_bits == 0
    assert {n: st.accounting() for n, st in stores.items()} == before


def test_memory_sink_keeps_the_in_memory_pool(acquisition):
    cfg, blocks, logs, _ = acquisition
    sink = MemorySink()
    res, d = distill_stream(cfg, blocks, logs, sink, DistillSettings(params=PARAMS, preshared_auth_bits=FIRST),
                            total_slots=int(DUR * cfg.laser.rep_rate_hz))
    r, st = res[PAIR], d.pairs[PAIR]
    assert d.auth_store is None and st.pool_i is not None and st.pool_j is not None
    assert r.auth_key_bits == FIRST and r.delivered_bits == r.final_key_bits - FIRST
    assert sum(a.size for a, _ in sink.keys[PAIR]) == r.delivered_bits
    # the pre-shared pool was spent and refilled in memory from the final key
    assert st.pool_i.available == st.pool_j.available == FIRST
    assert np.array_equal(st.pool_i.take(FIRST), st.pool_j.take(FIRST))
    with pytest.raises(LabqflError, match="preshared_auth_bits"):
        DistillSettings(preshared_auth_bits=FIRST - 8)


def test_an_auth_draw_skips_bits_the_partner_already_spent_and_never_spends_at_one_end_only(tmp_path):
    """Review s31 (concurrency, F4): the documented `keys export` (every pool) moved C2's oldest `auth`
    bits out; every later block then aborted at C2's `take_exact`, 128 bits spent at C1 each time, for
    good. The draw now reserves at both ends first, discards at C1 what C2 already spent, and takes
    the following bits at both."""
    from labqfl.qkd.authentication import keystore_auth_supplies

    stores = _stores(tmp_path)
    secret = np.random.default_rng(3).integers(0, 2, 2048, dtype=np.uint8)  # test data, not key material
    for st in stores.values():
        st.add_block(PAIR, secret, block_id="preshared-test", purpose="auth")
    gone = stores["C2"].take(PAIR, 256, "auth")  # spent at C2 only (an export, a lost take)
    ci, cj = keystore_auth_supplies(stores["C1"], stores["C2"], PAIR)
    a, b = ci.take(128), cj.take(128)
    assert np.array_equal(a, b) and np.array_equal(a, secret[256:384])
    acc = [st.accounting()[PAIR] for st in stores.values()]
    assert acc[0]["available"] == acc[1]["available"] == {"auth": 2048 - 384}
    assert not any(st.pending_reservations() for st in stores.values())
    assert gone.refs == [("preshared-test", 0, 256)]
