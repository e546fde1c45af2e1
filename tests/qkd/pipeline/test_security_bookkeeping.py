"""Security bookkeeping of the distillation (issue 19 item 5): the authentication forgery
probability in each block's ε, blocks of a fixed number of slots (not a stopping time), refusal
of a block whose two final keys differ, no key bits in any ``repr``, and the guard against
distilling the same raw slots twice keyed on slot ranges."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from galois import GF
from labqfl.sim_backends import SagnacTestbed

from labqfl.contracts.types import Announcements, ModulationRecord
from labqfl.errors import AuthenticationError, KeyStoreError
from labqfl.keystore import KeyStore
from labqfl.qkd import twoparty as twoparty_mod
from labqfl.qkd.authentication import (
    DEFAULT_AUTH_LANES,
    BitPool,
    TranscriptAuthenticator,
    WegmanCarterAuthenticator,
    confirm_transcripts,
    forgery_probability,
    transcript_forgery_probability,
    transcript_word_cap,
)
from labqfl.qkd.estimation import SecurityParameters, epsilon_total
from labqfl.qkd.pipeline import (
    AUTH_REFILL_SUFFIX,
    PRESHARED_PREFIX,
    Distiller,
    DistillSettings,
    KeyStoreSink,
    MemorySink,
    distill_stream,
)
from labqfl.qkd.sifting import sift_records

PAIR = "C1-C2"
PARAMS = SecurityParameters(eps_sec=1e-4)
DUR = 0.1


@pytest.fixture(scope="module")
def acquisition(small_acquisition):  # type: ignore[no-untyped-def]
    """The small one-pair station of the pipeline tests: 0.1 s, one key block (conftest)."""
    return small_acquisition


def _stores(path):
    return {n: KeyStore.for_node(n, path) for n in ("C1", "C2")}


def _distil(acq, sink, settings, acq_id=None):
    cfg, blocks, logs, _ = acq
    res, d = distill_stream(cfg, blocks, logs, sink, settings, total_slots=int(DUR * cfg.laser.rep_rate_hz),
                            acquisition_id=acq_id)
    return res[PAIR], d


# ----------------------------------------------------------------------------- (a) ε_auth


def _transcript_pair(lanes: int = 1, nbits: int = 4096, seed: int = 3):
    bits = np.random.default_rng(seed).integers(0, 2, nbits, dtype=np.uint8)
    return (TranscriptAuthenticator(BitPool(bits), lanes), TranscriptAuthenticator(BitPool(bits.copy()), lanes), bits)


def test_transcript_hash_is_a_polynomial_of_degree_final_words_so_the_forgery_bound_counts_them():
    """The closed transcript's digest is Σ w_i k^(L+1−i) over GF(2^64) with L = ``final_words``
    words (no constant term): two different transcripts collide for at most L keys, which is the
    L/2^64 per attempt that ε_auth charges."""
    ai, aj, bits = _transcript_pair()
    msgs = [(1, b"cascade parities " * 5), (0, b""), (0, bytes(range(37)))]
    for d, m in msgs:
        ai.absorb(d, m)
        aj.absorb(d, m)
    eps = confirm_transcripts(ai, aj)
    words: list[int] = []
    for d, m in msgs:
        frame = bytes([d]) + len(m).to_bytes(8, "little") + m
        frame += b"\0" * ((-len(frame)) % 8)
        words += [int.from_bytes(frame[i:i + 8], "little") for i in range(0, len(frame), 8)]
    words.append(8 * len(words))  # the total-length word
    assert ai.final_words == aj.final_words == len(words)
    field = GF(2**64, irreducible_poly="x^64 + x^4 + x^3 + x + 1")
    key = int.from_bytes(np.packbits(bits[:64], bitorder="little").tobytes(), "little")
    digest = field(0)
    for w in words:
        digest = (digest + field(w)) * field(key)
    assert int(digest) == ai._final[0]
    assert eps == pytest.approx(2 * len(words) / 2.0**64, rel=1e-12)
    assert ai.checks == aj.checks == 1


def test_a_failed_check_is_still_counted_as_an_attempt():
    ai, aj, _ = _transcript_pair(lanes=2)
    ai.absorb(0, b"what Ci sent")
    aj.absorb(0, b"what Eve delivered")
    with pytest.raises(AuthenticationError):
        confirm_transcripts(ai, aj)
    attempts = ai.checks + aj.checks
    assert attempts == 1
    eps = transcript_forgery_probability(ai, aj, attempts)
    assert eps == pytest.approx(forgery_probability(max(ai.final_words, aj.final_words), 2))
    assert forgery_probability(10, 2) == pytest.approx((10 / 2.0**64) ** 2)
    with pytest.raises(Exception, match="words"):
        forgery_probability(0)


def test_each_block_states_its_authentication_forgery_probability_in_its_epsilon(acquisition, tmp_path):
    stores = _stores(tmp_path)
    r, d = _distil(acquisition, KeyStoreSink(stores), DistillSettings(block_bits=1_000_000, params=PARAMS))
    blk = r.blocks[0]
    assert not blk.abort and blk.delivered_bits > 0
    st = d.pairs[PAIR]
    assert blk.auth_checks == 2  # Cj checks Ci's final tag, Ci checks Cj's
    words = max(st.auth_i.final_words, st.auth_j.final_words)
    assert words > 100  # the whole reconciliation transcript
    # the bound is the one of the length cap fixed with the block's size before any data (review s32), which
    # every transcript of the pair stays under; two 64-bit lanes by default
    cap = transcript_word_cap(d.block_slots[PAIR])
    assert st.auth_i.max_words == st.auth_j.max_words == cap > words
    assert blk.eps_auth == pytest.approx(2 * (cap / 2.0**64) ** DEFAULT_AUTH_LANES, rel=1e-12)
    assert blk.eps_total == pytest.approx(PARAMS.eps_sec + PARAMS.eps_cor + blk.eps_auth, rel=1e-15)
    assert blk.eps_total == epsilon_total(PARAMS, blk.eps_auth)
    assert epsilon_total(PARAMS, 1e-6) > PARAMS.eps_sec + PARAMS.eps_cor  # ε_auth is part of the sum
    assert blk.report["eps_auth"] == blk.eps_auth and blk.report["eps_total"] == blk.eps_total
    m = r.as_dict(DUR)
    assert m["auth_checks"] == 2 and m["eps_auth"] == blk.eps_auth and m["eps_total_per_block"] == blk.eps_total
    meta = next(b["meta"] for b in stores["C1"].blocks(PAIR) if b["block_id"] == blk.block_id)
    assert meta["eps_auth"] == blk.eps_auth and meta["eps_total"] == blk.eps_total


# ------------------------------------------------------------------- (b) fixed N per block


def test_every_block_has_the_same_slot_count_fixed_before_the_data(acquisition):
    """Kato's bounds hold for a fixed N: a block closes after ``block_slots`` slots of the pair,
    decided before the acquisition, not when its sifted bits reach a target (a stopping time)."""
    cfg = acquisition[0]
    res1, d1 = _distil(acquisition, MemorySink(), DistillSettings(block_bits=10_000, params=PARAMS))
    full = res1.blocks[:-1]  # the last block may be the shorter rest at the end of the acquisition
    assert len(full) >= 3
    assert len({b.n_slots for b in full}) == 1  # N is the same for every block …
    assert len({b.sifted_bits for b in full}) > 1  # … while the sifted length varies with the data
    n = d1.block_slots[PAIR]
    assert full[0].n_slots == n and res1.block_slots == n and res1.as_dict(DUR)["block_slots"] == n
    full = [b for b in res1.blocks if b.n_slots == n]
    # the conversion from block_bits uses only the station model: ≈ 10 000 bits on average
    assert np.mean([b.sifted_bits for b in full]) == pytest.approx(10_000, rel=0.15)
    # the block boundaries are the same for another acquisition (other clicks, same schedule)
    tb = SagnacTestbed(cfg)
    other = list(tb.stream(DUR))
    res2, _ = distill_stream(cfg, other, {c: tb.client_log(c) for c in cfg.client_names}, MemorySink(),
                             DistillSettings(block_bits=10_000, params=PARAMS), total_slots=int(DUR * cfg.laser.rep_rate_hz))
    assert [(b.slot_start, b.slot_end) for b in res2[PAIR].blocks][:len(full)] == [(b.slot_start, b.slot_end) for b in full]
    # contiguous, non-overlapping ranges from slot 0
    ends = [0] + [b.slot_end for b in res1.blocks]
    assert [b.slot_start for b in res1.blocks] == ends[:-1]


def test_explicit_block_slots_and_bad_values(acquisition):
    r, d = _distil(acquisition, MemorySink(), DistillSettings(block_slots=3_000_000, params=PARAMS))
    assert d.block_slots[PAIR] == 3_000_000
    assert [b.n_slots for b in r.blocks][:3] == [3_000_000] * 3
    with pytest.raises(Exception, match="block_slots"):
        DistillSettings(block_slots=10)


def test_full_blocks_without_light_are_dropped_not_distilled(acquisition):
    cfg, _, logs, _ = acquisition
    res, d = distill_stream(cfg, [], logs, MemorySink(), DistillSettings(block_slots=2000, params=PARAMS),
                            total_slots=20_000)
    r = res[PAIR]
    assert r.n_slots == 20_000 and r.blocks == [] and r.dropped_bits == 0
    assert d.pairs[PAIR].block_index == 10 and d.pairs[PAIR].block_start == 20_000


# ------------------------------------------------------------- (c) refuse differing final keys


def test_a_block_whose_final_keys_differ_is_refused_at_both_ends(acquisition, tmp_path, monkeypatch):
    """Force the ε_cor event: a reconciliation that leaves errors and a verification hash that
    collides. The two final keys then differ, and neither end may store them."""

    real_bob = twoparty_mod._bob

    class _NoCorrection:  # Cj runs the real protocol but keeps its uncorrected bits
        def __init__(self, engine, bits, qber, *rest):
            self.bob, self.bits = real_bob(engine, bits, qber, *rest), bits

        def run(self, channel):
            return dataclasses.replace(self.bob.run(channel), corrected=self.bits.copy())

    monkeypatch.setattr(twoparty_mod, "_bob", _NoCorrection)
    monkeypatch.setattr(twoparty_mod, "hash_tag", lambda bits, seed, t: np.zeros(t, np.uint8))
    stores = _stores(tmp_path)
    r, d = _distil(acquisition, KeyStoreSink(stores), DistillSettings(block_bits=1_000_000, params=PARAMS),
                   acquisition[3])
    blk = r.blocks[0]
    assert blk.verified and not blk.keys_identical
    assert blk.abort and "final keys differ" in blk.abort_reason
    assert blk.final_key_bits == blk.delivered_bits == r.delivered_bits == r.final_key_bits == 0
    for store in stores.values():  # only the pre-shared authentication block, no key, no refill
        ids = [b["block_id"] for b in store.blocks(PAIR)]
        assert len(ids) == 1 and ids[0].startswith(PRESHARED_PREFIX)
        assert not any(i.endswith(AUTH_REFILL_SUFFIX) for i in ids)
    # authentication accounting: the pads this block used are spent at both ends and counted
    acc = {n: s.accounting()[PAIR] for n, s in stores.items()}
    assert acc["C1"]["consumed"] == acc["C2"]["consumed"] == {"auth": blk.auth_key_bits}
    assert blk.auth_key_bits == 3 * 64 * DEFAULT_AUTH_LANES and blk.auth_checks == 2
    # the stores' remaining auth keys are still the same bits at both ends
    km = stores["C1"].take(PAIR, 64, "auth")
    assert np.array_equal(km.bits, stores["C2"].take_exact(PAIR, km.refs, "auth").bits)


# --------------------------------------------------------------------- (d) no bits in repr


def test_repr_and_str_of_objects_holding_key_bits_show_sizes_only():
    rng = np.random.default_rng(5)
    n = 64
    slots = np.arange(n, dtype=np.int64)
    ann = Announcements(PAIR, slots, rng.integers(1, 3, n).astype(np.uint8))
    rec_i = ModulationRecord("C1", slots, np.zeros(n, np.uint8), np.zeros(n, np.uint8))
    rec_j = ModulationRecord("C2", slots, np.zeros(n, np.uint8), np.full(n, 2, np.uint8))
    from labqfl.qkd.sifting import ClientSetup

    setup = [ClientSetup(c, (0.1, 0.05, 0.0), (0.8, 0.1, 0.1), 0.8) for c in ("C1", "C2")]
    res = sift_records(ann, rec_i, rec_j, setup[0], setup[1], n, rng)
    assert res.n_key == n and res.bits_i.size == n
    bits = np.random.default_rng(0).integers(0, 2, 512, dtype=np.uint8)
    ta = TranscriptAuthenticator(BitPool(bits), 1)
    ta.absorb(0, b"x")
    objs = [res, rec_i, rec_j, ta, WegmanCarterAuthenticator(BitPool(bits), 1), BitPool(bits)]
    for obj in objs:
        for text in (repr(obj), str(obj)):
            assert "array" not in text and "0, 0, 0" not in text and "0 0 0" not in text and "1, 1" not in text, text
            assert len(text) < 200, text
    assert f"bits_i=<{n} bits>" in repr(res) and f"n_key={n}" in str(res)
    assert "n_slots=64" in repr(rec_i)


# ------------------------------------------------------------ (e) guard keyed on slot ranges


def test_a_second_pass_with_another_block_size_cannot_reuse_distilled_slots(acquisition, tmp_path):
    stores = _stores(tmp_path)
    acq_id = acquisition[3]
    r1, _ = _distil(acquisition, KeyStoreSink(stores), DistillSettings(block_bits=1_000_000, params=PARAMS), acq_id)
    assert r1.delivered_bits > 0
    before = {n: st.accounting() for n, st in stores.items()}
    with pytest.raises(KeyStoreError, match=r"overlap slots \[0, \d+\) already distilled"):
        _distil(acquisition, KeyStoreSink(stores), DistillSettings(block_bits=20_000, params=PARAMS), acq_id)
    assert {n: st.accounting() for n, st in stores.items()} == before  # refused before any key was spent
    assert stores["C1"].distilled_slots(PAIR, acq_id) == stores["C2"].distilled_slots(PAIR, acq_id)
    assert [(a, b) for a, b, _ in stores["C1"].distilled_slots(PAIR, acq_id)] == [(b.slot_start, b.slot_end)
                                                                                  for b in r1.blocks]


def test_slots_of_an_aborted_block_are_spent_too(acquisition, tmp_path):
    """A block that aborted after reconciliation disclosed its parities stores no key; a later pass
    over the same slots would distil raw data whose leakage it does not count. Refused."""
    cfg, blocks, logs, acq_id = acquisition
    stores = _stores(tmp_path)
    d = Distiller(cfg, logs, KeyStoreSink(stores), DistillSettings(block_bits=2000, params=PARAMS, sift_batch_clicks=0,
                                                                   sift_batch_slots=0),  # blocks close while pushing
                  acquisition_id=acq_id)
    out = []
    for b in blocks:
        out += d.push(b)
        if out:
            break
    assert out and all(b.abort and b.leaked_ec_bits > 0 for b in out)
    assert not any(not b["block_id"].startswith(PRESHARED_PREFIX) for b in stores["C1"].blocks(PAIR))
    with pytest.raises(KeyStoreError, match="refusing to distil the same raw data twice"):
        _distil(acquisition, KeyStoreSink(stores), DistillSettings(block_bits=1_000_000, params=PARAMS), acq_id)


def test_store_ledger_refuses_overlaps_and_accepts_disjoint_ranges(tmp_path):
    st = KeyStore(tmp_path / "s.db", node="C1")
    assert st.distilled_slots(PAIR, "acq") == []
    st.claim_slots(PAIR, "acq", 100, 200, "b1")
    st.claim_slots(PAIR, "acq", 200, 300, "b2")  # adjacent is fine
    st.claim_slots(PAIR, "other-acq", 150, 250, "b3")  # another acquisition
    st.claim_slots("C1-C3", "acq", 150, 250, "b4")  # another pair
    for a, b in ((50, 101), (199, 201), (120, 130), (0, 1000)):
        with pytest.raises(KeyStoreError, match="overlap"):
            st.claim_slots(PAIR, "acq", a, b, "x")
        with pytest.raises(KeyStoreError, match="overlap"):
            st.check_slots_free(PAIR, "acq", a, b)
    assert st.distilled_slots(PAIR, "acq") == [(100, 200, "b1"), (200, 300, "b2")]
    with pytest.raises(KeyStoreError, match="start < end"):
        st.claim_slots(PAIR, "acq", 5, 5, "x")
    st.close()
