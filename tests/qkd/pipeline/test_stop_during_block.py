"""A stop requested while a key block is being distilled (``Distiller(stop=...)``, what the GUI's
close and Stop use): the block is abandoned at the next stage boundary — later stages never run,
nothing of it is stored at either end, both ends spend the same authentication pads and none goes
back to the pool — and it is reported as "stopped by user"; a block past privacy amplification
ends normally at both ends.

The stop is set from the pair's channel (a spy around the in-process channel) when a given
message of the protocol has been answered, so the tests check event order, never wall time."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from labqfl.keystore import KeyStore
from labqfl.qkd.authentication import DEFAULT_AUTH_LANES
from labqfl.qkd.estimation import SecurityParameters
from labqfl.qkd.messaging import Channel, Message
from labqfl.qkd.pipeline import (
    PRESHARED_PREFIX,
    STOPPED_BY_USER,
    Distiller,
    DistillSettings,
    KeyStoreSink,
    local_pair_channel,
)
from labqfl.qkd.twoparty import PairEndI, PairEndJ

DUR = 0.1
PAIR = "C1-C2"
PARAMS = SecurityParameters(eps_sec=1e-4)
FIRST = 3 * 64 * DEFAULT_AUTH_LANES  # hash key + two pads: one end's authentication of a Distiller's first block


@pytest.fixture(scope="module")
def acquisition(small_acquisition):  # type: ignore[no-untyped-def]
    """The small one-pair station of the pipeline tests: 0.1 s, one key block (conftest)."""
    return small_acquisition


class SpyChannel(Channel):
    """The in-process channel, recording every request's kind and calling ``answered(kind)`` once
    its reply is back."""

    def __init__(self, inner: Channel, answered: Callable[[str], None]) -> None:
        super().__init__(None)
        self.inner, self.answered = inner, answered
        self.kinds: list[str] = []

    def _exchange(self, msg: Message) -> Message:
        self.kinds.append(msg.kind)
        reply = self.inner.request(msg)
        self.answered(msg.kind)
        return reply


def _distil_stopping_after(acq, tmp_path, kind: str, nth: int = 1):  # type: ignore[no-untyped-def]
    """Distil the acquisition into two fresh stores, asking to stop once the ``nth`` ``kind``
    request has been answered; returns (distiller, results, the channel's request kinds, stores)."""
    cfg, blocks, logs, acq_id = acq
    stores = {n: KeyStore.for_node(n, tmp_path) for n in ("C1", "C2")}
    flag = {"stop": False, "seen": 0}

    def answered(k: str) -> None:
        if k == kind:
            flag["seen"] += 1
            flag["stop"] = flag["stop"] or flag["seen"] >= nth

    spies: list[SpyChannel] = []

    def channel(end_i: PairEndI, end_j: PairEndJ) -> Channel:
        spies.append(SpyChannel(local_pair_channel(end_i, end_j), answered))
        return spies[0]

    d = Distiller(cfg, logs, KeyStoreSink(stores), DistillSettings(block_bits=1_000_000, params=PARAMS),
                  acquisition_id=acq_id, pair_channel=channel, stop=lambda: flag["stop"])
    for b in blocks:
        d.push(b)
    res = d.finish(int(DUR * cfg.laser.rep_rate_hz))
    return d, res[PAIR], spies[0].kinds, stores


def _key_blocks(store: KeyStore) -> list[str]:
    return [b["block_id"] for b in store.blocks(PAIR) if not b["block_id"].startswith(PRESHARED_PREFIX)]


def test_a_stop_during_error_correction_abandons_the_block_at_both_ends(acquisition, tmp_path) -> None:
    d, r, kinds, stores = _distil_stopping_after(acquisition, tmp_path, "ec/start")
    try:
        assert d.stopped
        # the stop came once error correction's first round trip was answered: Bob's request stays
        # unanswered, no later stage runs, and the block ends as an aborted block does — the tag
        # exchange, then both ends refuse it
        assert kinds[kinds.index("ec/start"):] == ["ec/start", "block/confirm", "block/accept"]
        assert "verify/request" not in kinds and "pa/seed" not in kinds
        assert len(r.blocks) == 1
        b = r.blocks[0]
        assert b.abort and b.abort_reason == STOPPED_BY_USER
        assert b.final_key_bits == 0 and b.delivered_bits == 0 and r.final_key_bits == 0
        # nothing of it stored at either end; the same pads spent at both, none returned to the pool
        for st in stores.values():
            assert _key_blocks(st) == []
        acc = {n: st.accounting()[PAIR] for n, st in stores.items()}
        assert acc["C1"] == acc["C2"]
        assert acc["C1"]["consumed"] == {"auth": FIRST} and b.auth_key_bits == FIRST
        assert acc["C1"]["available"] == {"auth": d.settings.preshared_auth_bits - FIRST}
        # its raw data counts as spent at both ends (parities may have been disclosed)
        claimed = [{(a, e) for a, e, _ in st.distilled_slots(PAIR, d.acquisition_id)} for st in stores.values()]
        assert claimed[0] == claimed[1] == {(b.slot_start, b.slot_end)}
    finally:
        for st in stores.values():
            st.close()


def test_a_stop_before_the_block_opens_claims_and_spends_nothing(acquisition, tmp_path) -> None:
    d, r, kinds, stores = _distil_stopping_after(acquisition, tmp_path, "test/bits")
    try:
        assert d.stopped
        assert "block/open" not in kinds and "ec/start" not in kinds
        assert r.blocks == [] and r.final_key_bits == 0
        for st in stores.values():
            assert st.blocks(PAIR) == []  # not even the pre-shared authentication key was needed
            assert st.distilled_slots(PAIR, d.acquisition_id) == []
        # a stopped Distiller takes no more data
        assert d.push(acquisition[1][0]) == []
    finally:
        for st in stores.values():
            st.close()


def test_a_stop_after_privacy_amplification_lets_the_block_end_at_both_ends(acquisition, tmp_path) -> None:
    d, r, kinds, stores = _distil_stopping_after(acquisition, tmp_path, "pa/seed")
    try:
        assert kinds[kinds.index("pa/seed"):] == ["pa/seed", "block/confirm", "block/accept"]
        assert len(r.blocks) == 1 and not r.blocks[0].abort and r.delivered_bits > 0
        ids = [_key_blocks(st) for st in stores.values()]
        assert ids[0] == ids[1] and r.blocks[0].block_id in ids[0]
    finally:
        for st in stores.values():
            st.close()
