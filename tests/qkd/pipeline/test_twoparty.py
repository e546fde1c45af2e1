"""The pair's post-processing as a two-party protocol (labqfl.qkd.twoparty): each end holds only
its own client's data, every message that decides the key is authenticated, a tampered message or a
disagreement refuses the block at both ends, and the protocol runs unchanged between processes'
transports (NodeChannel with mutual TLS)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from labqfl.sim_backends import SagnacTestbed
from qkdpp_helpers import small_station

import labqfl.net.transport as transport
from labqfl.errors import QKDInputError
from labqfl.net import NodeChannel, NodeCredentials, NodeServer, ServedSession, make_node_certs
from labqfl.qkd.estimation import SecurityParameters
from labqfl.qkd.messaging import LocalChannel, Message, decode_message, encode_message
from labqfl.qkd.pipeline import DistillSettings, MemorySink, distill_stream
from labqfl.qkd.sifting import ClientSetup, key_flags
from labqfl.qkd.twoparty import PairEndI, PairEndJ, ProtocolSettings, unpack_test_bases

PAIR = "C1-C2"
PARAMS = SecurityParameters(eps_sec=1e-4)
DUR = 0.05


@pytest.fixture(scope="module")
def acquisition():
    cfg = small_station()
    tb = SagnacTestbed(cfg)
    blocks = list(tb.stream(DUR))
    logs = {c: tb.client_log(c) for c in cfg.client_names}
    return cfg, blocks, logs


def _distil(acq, *, pair_channel=None, sink=None, on_outcome=None, engine="cascade"):
    cfg, blocks, logs = acq
    sink = sink if sink is not None else MemorySink()
    ends: dict[str, tuple[PairEndI, PairEndJ]] = {}

    def channel(ei: PairEndI, ej: PairEndJ):
        ends[ei.pair] = (ei, ej)
        if on_outcome is not None:
            ej.on_outcome = on_outcome
        return pair_channel(ei, ej) if pair_channel else LocalChannel(ej, ei.tx, ej.tx)

    res, d = distill_stream(cfg, blocks, logs, sink, DistillSettings(block_bits=1_000_000, params=PARAMS, engine=engine),
                            total_slots=int(DUR * cfg.laser.rep_rate_hz), pair_channel=channel)
    return res[PAIR], d, sink, ends[PAIR]


def _auth_in_step(d) -> None:
    """Authentication accounting identical at both ends: same key drawn, same pool left."""
    st = d.pairs[PAIR]
    assert st.auth_i.key_bits_used == st.auth_j.key_bits_used > 0
    assert st.pool_i.available == st.pool_j.available
    assert np.array_equal(st.pool_i.take(64), st.pool_j.take(64))


def test_each_end_is_built_from_its_own_clients_log_only(acquisition):
    cfg, _, logs = acquisition
    si, sj = ClientSetup.from_config(cfg.client("C1")), ClientSetup.from_config(cfg.client("C2"))
    from labqfl.contracts.schedule import PairSchedule
    from labqfl.qkd.authentication import BitPool

    sch = PairSchedule.from_config(cfg)
    with pytest.raises(QKDInputError, match="needs C2's modulation log, got C1's"):
        PairEndJ(PAIR, logs["C1"], si, sj, ProtocolSettings(), BitPool(), np.random.default_rng(0), schedule=sch)
    with pytest.raises(QKDInputError, match="needs C1's modulation log"):
        PairEndI(PAIR, logs["C2"], si, sj, ProtocolSettings(), BitPool(), schedule=sch)


def test_honest_run_both_ends_accept_and_hold_the_same_key(acquisition):
    outcomes = []
    r, d, sink, (ei, ej) = _distil(acquisition, on_outcome=outcomes.append)
    assert r.blocks and not r.blocks[0].abort and r.final_key_bits > 0
    assert [o.accepted for o in outcomes] == [True] * len(r.blocks)
    assert outcomes[0].ell == r.blocks[0].final_key_bits  # Cj computed the same ℓ itself
    for a, b in sink.keys[PAIR]:
        assert np.array_equal(a, b)
    assert ei.log.client == "C1" and ej.log.client == "C2"


class _Recorder:
    """Cj's responder, recording every request Cj received (after decoding, as Cj saw it)."""

    def __init__(self, end: PairEndJ) -> None:
        self.end, self.seen = end, []

    def handle(self, req: Message) -> Message:
        self.seen.append(req)
        return self.end.handle(req)


def test_cj_receives_no_key_slot_choice_and_no_key_bit_of_ci(acquisition):
    cfg, _, logs = acquisition
    anns = []
    rec: dict[str, _Recorder] = {}

    def channel(ei, ej):
        rec["j"] = _Recorder(ej)
        orig = ej.receive

        def receive(ann, lo, hi, n_slots):
            anns.append(ann)
            orig(ann, lo, hi, n_slots)

        ej.receive = receive
        return LocalChannel(rec["j"], ei.tx, ej.tx)

    r, _, _, _ = _distil(acquisition, pair_channel=channel)
    assert r.final_key_bits > 0
    seen = rec["j"].seen
    # what the omniscient test knows: the key slots and Ci's key bits there
    slots = np.concatenate([a.slots for a in anns])
    ri, rj = logs["C1"].choices(slots), logs["C2"].choices(slots)
    key = key_flags(ri) & key_flags(rj)
    ci_key_bits = (ri.phase_idx[key] >> 1).astype(np.uint8)
    assert ci_key_bits.size == r.sifted_bits > 5000
    test = ~key
    same = (ri.phase_idx[test] & 1) == (rj.phase_idx[test] & 1)
    # the test reveals are exactly Ci's choices in the test slots, its bits only where bases agree
    kinds = [m.kind for m in seen]
    assert {"ann/confirm", "sift/flags", "test/bases", "test/bits", "block/open", "ec/start", "verify/request",
            "pa/seed", "block/confirm", "block/accept"} <= set(kinds)
    n_test = _test_counts(seen, ri, key, slots)
    kb = _revealed_bases(seen, n_test)
    k_rev = np.concatenate([k for k, _ in kb])
    b_rev = np.concatenate([b for _, b in kb])
    assert np.array_equal(k_rev, ri.intensity_idx[test]) and np.array_equal(b_rev, ri.phase_idx[test] & 1)
    revealed_bits = sum(len(m.get("bits")) for m in seen if m.kind == "test/bits")
    assert revealed_bits == sum((int(n) + 7) // 8 for n in _equal_basis_counts(seen, rj, slots, test, n_test))
    assert int(same.sum()) == sum(_equal_basis_counts(seen, rj, slots, test, n_test))
    # no key-slot choice or key bit anywhere in what Cj received: Ci's key bits (any 96-bit run,
    # either bit order, packed or one per byte) never occur in a payload
    blob = b"".join(encode_message(m) for m in seen)
    for order in ("little", "big"):
        packed = np.packbits(ci_key_bits, bitorder=order).tobytes()
        for i in range(0, len(packed) - 12, 97):
            assert packed[i:i + 12] not in blob
    raw = ci_key_bits.tobytes()
    for i in range(0, len(raw) - 96, 977):
        assert raw[i:i + 96] not in blob
    # the only key-dependent bits Cj received are counted as leakage: reconciliation answers and
    # the verification tag
    disclosed = sum(m.leaked_bits for m in seen)
    assert disclosed == r.leaked_ec_bits + r.verification_bits


def _equal_basis_counts(seen, rj, slots, test, n_test):
    """Per chunk, the test slots whose bases agree (from Ci's revealed bases and Cj's own log)."""
    out = []
    b_j = rj.phase_idx[test] & 1
    pos = 0
    for (_, b_i) in _revealed_bases(seen, n_test):
        out.append(int(np.count_nonzero(b_i == b_j[pos:pos + b_i.size])))
        pos += b_i.size
    return out


def _revealed_bases(seen, n_test):
    """(k, basis) of every ``test/bases`` message Cj received, decoded with its chunk's test-slot count."""
    msgs = [m for m in seen if m.kind == "test/bases"]
    return [unpack_test_bases(m.get("kb"), n, 3) for m, n in zip(msgs, n_test, strict=True)]


def _test_counts(seen, ri, key, slots):
    """Test slots per ``test/bases`` message: the chunks' announced slots, in order (from ``ann/confirm``)."""
    out, pos = [], 0
    for m in seen:
        if m.kind == "ann/confirm":
            n = int(m.get("n"))
            out.append(int(np.count_nonzero(~key[pos:pos + n])))
            pos += n
    return out


def test_a_key_length_computed_differently_at_one_end_refuses_the_block_at_both(acquisition, monkeypatch):
    real = PairEndJ.key_length

    def miscount(self, counts, n, errors, leak):  # Cj's estimation is off by one bit
        rep = real(self, counts, n, errors, leak)
        return dataclasses.replace(rep, key_length_bits=rep.key_length_bits + 1)

    monkeypatch.setattr(PairEndJ, "key_length", miscount)
    outcomes = []
    r, d, sink, _ = _distil(acquisition, on_outcome=outcomes.append)
    blk = r.blocks[0]
    assert blk.abort and blk.final_key_bits == blk.delivered_bits == 0
    assert "secure key lengths differ" in blk.abort_reason and "refused at both ends" in blk.abort_reason
    assert outcomes and not outcomes[0].accepted and "secure key lengths differ" in outcomes[0].reason
    assert sink.keys == {}
    assert blk.auth_checks == 2  # the tags were still exchanged (and matched): same pads spent
    _auth_in_step(d)


def _flip(msg: Message, what: str) -> Message:
    if what == "test-bit":
        bits = bytearray(msg.get("bits"))
        bits[0] ^= 1
        return Message(msg.kind, {**msg.fields, "bits": bytes(bits)}, msg.disclosed, msg.credit)
    if what in ("parity", "cascade-top", "cascade-parity"):
        d = msg.disclosed.copy()
        d[0] ^= 1
        return Message(msg.kind, msg.fields, d, msg.credit)
    seed = bytearray(msg.get("seed"))
    seed[len(seed) // 2] ^= 0x10
    return Message(msg.kind, {**msg.fields, "seed": bytes(seed)}, msg.disclosed, msg.credit)


#: the message each tamper test alters. The parity is an LDPC syndrome bit; the Cascade ones are
#: one of Alice's block parities and one of her sub-block parities (test below).
TARGETS = {"test-bit": "test/bits", "parity": "ldpc/syndromes", "seed-byte": "pa/seed",
           "cascade-top": "cascade/block-parities", "cascade-parity": "cascade/parities"}


class _TamperProxy:
    """Alters the first message of one kind from Ci to Cj *in transit* (after Ci's authenticator
    saw the original, before Cj's sees it)."""

    def __init__(self, what: str) -> None:
        self.what, self.kind, self.done = what, TARGETS[what], 0

    def __call__(self, payload: bytes) -> bytes:
        if self.done or not payload.startswith(b"LQM1"):
            return payload
        msg = decode_message(payload)
        if msg.kind != self.kind or (self.what == "test-bit" and not msg.get("bits")):
            return payload
        self.done += 1
        return encode_message(_flip(msg, self.what))


class _TamperingLocalChannel(LocalChannel):
    def __init__(self, responder, auth, peer_auth, proxy: _TamperProxy) -> None:
        super().__init__(responder, auth, peer_auth)
        self.proxy = proxy

    def _transfer(self, msg, sender, receiver):
        if sender is not self.authenticator:
            return super()._transfer(msg, sender, receiver)
        payload = encode_message(msg)
        tag = sender.tag(payload)
        payload = self.proxy(payload)
        receiver.verify(payload, tag)
        self.stats.count(msg, len(payload), len(tag))
        return decode_message(payload)


def _assert_refused_at_both_ends(r, d, sink, outcomes) -> None:
    blk = r.blocks[0]
    assert blk.abort and blk.final_key_bits == blk.delivered_bits == r.delivered_bits == 0
    assert "transcript authentication failed" in blk.abort_reason
    assert outcomes and not outcomes[0].accepted and "transcript authentication failed" in outcomes[0].reason
    assert sink.keys == {}
    _auth_in_step(d)


@pytest.mark.parametrize("what", ["parity", "seed-byte", "test-bit"])
def test_a_message_altered_in_transit_refuses_the_block_at_both_ends(acquisition, what):
    proxy = _TamperProxy(what)
    outcomes = []
    r, d, sink, _ = _distil(acquisition, on_outcome=outcomes.append, engine="ldpc" if what == "parity" else "cascade",
                            pair_channel=lambda ei, ej: _TamperingLocalChannel(ej, ei.tx, ej.tx, proxy))
    assert proxy.done == 1
    _assert_refused_at_both_ends(r, d, sink, outcomes)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("what", ["cascade-top", "cascade-parity"])
def test_one_flipped_cascade_parity_ends_reconciliation_and_refuses_the_block_at_both_ends(acquisition, what):
    """Cj's Bob used to loop forever on one inconsistent parity (a denial of service by anyone on
    the path); now it stops, Cj refuses the block, and the tags still run in step at both ends."""
    proxy = _TamperProxy(what)
    outcomes = []
    r, d, sink, _ = _distil(acquisition, on_outcome=outcomes.append,
                            pair_channel=lambda ei, ej: _TamperingLocalChannel(ej, ei.tx, ej.tx, proxy))
    assert proxy.done == 1
    _assert_refused_at_both_ends(r, d, sink, outcomes)
    assert len(r.blocks) == 1 and [o.accepted for o in outcomes] == [False]


def test_announcements_that_differ_between_the_clients_refuse_the_block(acquisition):
    outcomes = []

    def channel(ei, ej):
        orig = ej.receive

        def receive(ann, lo, hi, n_slots):  # the detector tells Cj one outcome differently
            if ann.slots.size:
                out = ann.outcomes.copy()
                out[0] = 3 - out[0] if out[0] < 3 else 1
                ann = dataclasses.replace(ann, outcomes=out)
            orig(ann, lo, hi, n_slots)

        ej.receive = receive
        return LocalChannel(ej, ei.tx, ej.tx)

    r, d, sink, _ = _distil(acquisition, on_outcome=outcomes.append, pair_channel=channel)
    blk = r.blocks[0]
    assert blk.abort and "announcements" in blk.abort_reason and "differ between the two clients" in blk.abort_reason
    assert outcomes and not outcomes[0].accepted
    assert sink.keys == {}
    _auth_in_step(d)


def _tell_cj_one_outcome_differently(ann):
    if ann.slots.size:
        out = ann.outcomes.copy()
        out[0] = 3 - out[0] if out[0] < 3 else 1
        ann = dataclasses.replace(ann, outcomes=out)
    return ann


def test_announcements_that_differ_are_refused_by_the_transcript_tags_without_the_digest(acquisition, monkeypatch):
    """The information-theoretic guarantee: each end absorbs the announcements it received into
    its transcript, so even with the (computational) digest check disabled the tags differ."""
    import labqfl.qkd.twoparty as twoparty

    monkeypatch.setattr(twoparty, "announcement_digest", lambda pair, entry: b"digest check disabled")
    outcomes = []

    def channel(ei, ej):
        orig = ej.receive
        ej.receive = lambda ann, lo, hi, n_slots: orig(_tell_cj_one_outcome_differently(ann), lo, hi, n_slots)
        return LocalChannel(ej, ei.tx, ej.tx)

    r, d, sink, _ = _distil(acquisition, on_outcome=outcomes.append, pair_channel=channel)
    blk = r.blocks[0]
    assert blk.abort and blk.abort_reason.startswith("transcript authentication failed")
    assert outcomes and not outcomes[0].accepted and outcomes[0].reason.startswith("transcript authentication failed")
    assert sink.keys == {} and r.final_key_bits == r.delivered_bits == 0
    _auth_in_step(d)


def test_local_entries_count_in_the_transcript_length_and_the_forgery_bound():
    """final_words (hence ε_auth = attempts·(L/2^64)^lanes) includes the absorbed announcements."""
    from labqfl.contracts.types import Announcements
    from labqfl.qkd.authentication import BitPool, TranscriptAuthenticator, forgery_probability
    from labqfl.qkd.transcript_entries import read_announcement_entry
    from labqfl.qkd.twoparty import TranscriptEnd, announcement_entry

    bits = np.random.default_rng(3).integers(0, 2, 4096, dtype=np.uint8)
    ann = Announcements(PAIR, np.arange(0, 3000, 7, dtype=np.int64), np.ones(429, np.uint8))
    entry = announcement_entry(ann, 0, 3000, 3000)
    msg = encode_message(Message("ann/confirm", {"lo": 0}))
    ends = []
    for side, local in ((0, True), (1, True), (0, False)):
        auth = TranscriptAuthenticator(BitPool(bits.copy()), 2)
        tx = TranscriptEnd(auth, side)
        tx.start()
        (tx.tag if side == 0 else tx.verify)(msg, *(() if side == 0 else (b"",)))
        if local:
            tx.local(entry)
        tx.close()
        ends.append(auth)
    words = lambda nbytes: -(-(9 + nbytes) // 8)  # noqa: E731  (direction byte, u64 length, payload)
    assert ends[2].final_words == words(len(msg)) + 1
    assert ends[0].final_words == ends[1].final_words == ends[2].final_words + words(len(entry))
    _, _, _, slots, outcomes = read_announcement_entry(entry)  # every slot index and outcome is in the entry
    assert np.array_equal(slots, ann.slots) and np.array_equal(outcomes, ann.outcomes)
    from labqfl.qkd.authentication import transcript_forgery_probability

    assert transcript_forgery_probability(ends[0], ends[1], 2) == 2 * forgery_probability(ends[0].final_words, 2)
    # both ends saw the same: the tags match
    t0 = ends[0].final_tag()
    ends[1].check_final(t0)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    make_node_certs(d, ["C1", "C2"])
    return d


def _node_pair(certs: Path, servers: list):
    """Cj's end served by a NodeServer (a thread of this process) as node C2; Ci connects as C1."""

    def channel(ei: PairEndI, ej: PairEndJ):
        srv = NodeServer(NodeCredentials.load(certs, "C2")).start()
        servers.append(srv)
        srv.route("qkd/pair", lambda peer, hello: ServedSession(ej, ej.tx, on_close=ej.on_session_end),
                  allowed_peers={"C1"})
        return NodeChannel(srv.address, NodeCredentials.load(certs, "C1"), "C2", "qkd/pair",
                           fields={"pair": ei.pair}, authenticator=ei.tx)

    return channel


def test_the_protocol_runs_unchanged_over_a_node_channel(acquisition, certs):
    servers: list = []
    outcomes = []
    try:
        r, d, sink, _ = _distil(acquisition, pair_channel=_node_pair(certs, servers), on_outcome=outcomes.append)
        d.pairs[PAIR].channel.close()
    finally:
        for s in servers:
            s.stop()
    assert r.final_key_bits > 0 and not r.blocks[0].abort
    assert [o.accepted for o in outcomes] == [True] * len(r.blocks)
    assert all(np.array_equal(a, b) for a, b in sink.keys[PAIR])
    _auth_in_step(d)


def test_a_seed_byte_altered_between_nodes_refuses_the_block_at_both_ends(acquisition, certs, monkeypatch):
    proxy = _TamperProxy("seed-byte")
    frame = transport._frame
    monkeypatch.setattr(transport, "_frame", lambda payload, tag: frame(proxy(payload), tag))
    servers: list = []
    outcomes = []
    try:
        r, d, sink, _ = _distil(acquisition, pair_channel=_node_pair(certs, servers), on_outcome=outcomes.append)
        d.pairs[PAIR].channel.close()
    finally:
        for s in servers:
            s.stop()
    assert proxy.done == 1
    _assert_refused_at_both_ends(r, d, sink, outcomes)


def test_counts_from_the_exchanged_reveals_equal_the_counts_from_both_full_records():
    """Each end tallies PairCounts from its own record plus the partner's flags and test reveals
    (bits only where the bases agree); that must be exactly what both full records give."""
    from labqfl.contracts.types import ModulationRecord
    from labqfl.qkd.sifting import reveal_counts, sift_counts

    rng = np.random.default_rng(11)
    for _ in range(25):
        n = int(rng.integers(0, 500))
        slots = np.arange(n, dtype=np.int64)
        k = [np.where(rng.random(n) < 0.6, 0, rng.integers(1, 3, n)).astype(np.uint8) for _ in range(2)]
        a = [np.where(rng.random(n) < 0.7, 2 * rng.integers(0, 2, n), rng.integers(0, 4, n)).astype(np.uint8)
             for _ in range(2)]
        rec_i, rec_j = ModulationRecord("C1", slots, k[0], a[0]), ModulationRecord("C2", slots, k[1], a[1])
        outcomes = rng.integers(1, 4, n).astype(np.uint8)
        key = key_flags(rec_i) & key_flags(rec_j)
        test = ~key
        same = (a[0][test] & 1) == (a[1][test] & 1)
        reveals = [(k[c][test], (a[c][test] & 1).astype(np.uint8), (a[c][test][same] >> 1).astype(np.uint8))
                   for c in range(2)]
        got = reveal_counts(outcomes, key, reveals[0], reveals[1], same, 3, 3)
        want = sift_counts(outcomes, rec_i, rec_j, 3, 3)
        for g, w in zip(got, want, strict=True):
            assert np.array_equal(g, w)


class _KillAfter:
    """Ci's channel to the Cj node; kills the node's process right after Cj answered ``kind``."""

    def __init__(self, ch, proc, kind: str) -> None:
        self.ch, self.proc, self.kind, self.killed = ch, proc, kind, False

    def request(self, msg: Message) -> Message:
        rep = self.ch.request(msg)
        if msg.kind == self.kind and not self.killed:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.killed = True
        return rep


@pytest.mark.timeout(180)
def test_killing_the_cj_node_mid_block_refuses_that_block_at_ci_and_keeps_earlier_keys(acquisition, certs, tmp_path):
    """Cj's end served by a NodeServer in another process, killed after ``ec/start`` of the second
    block: Ci's end refuses the block with a reason naming the lost node, hands out no key, and
    the first block's key (accepted at both ends) is unchanged."""
    import hashlib
    import pickle
    import subprocess
    import sys

    from labqfl.contracts.schedule import PairSchedule
    from labqfl.contracts.types import Announcements
    from labqfl.qkd.authentication import BitPool
    from labqfl.qkd.slotting import Slotter, SlottingParams, announcements_by_pair

    cfg, blocks, logs = acquisition
    si, sj = ClientSetup.from_config(cfg.client("C1")), ClientSetup.from_config(cfg.client("C2"))
    settings = ProtocolSettings(params=PARAMS)
    auth_bits = np.random.default_rng(5).integers(0, 2, 20_000, dtype=np.uint8)
    setup = tmp_path / "cj.pkl"
    setup.write_bytes(pickle.dumps({"pair": PAIR, "log_j": logs["C2"], "setup_i": si, "setup_j": sj,
                                    "settings": settings, "auth_bits": auth_bits.copy(), "seed": 7,
                                    "schedule": PairSchedule.from_config(cfg)}))
    stored_j = tmp_path / "cj-keys.txt"
    # the detector's announcements for the pair (one pair: its slots are the acquisition's)
    slotter, schedule = Slotter(SlottingParams.from_config(cfg)), PairSchedule.from_config(cfg)
    evs = [slotter.push(b) for b in blocks] + [slotter.finish()]
    parts = [announcements_by_pair(e, schedule)[PAIR] for e in evs]
    ann = Announcements(PAIR, np.concatenate([p.slots for p in parts]), np.concatenate([p.outcomes for p in parts]))
    total = int(DUR * cfg.laser.rep_rate_hz)
    assert schedule.slots_of_pair(PAIR, total) == total
    ranges = [(0, 9 * total // 10), (9 * total // 10, total)]

    here = Path(__file__).parent
    proc = subprocess.Popen([sys.executable, str(here / "cj_node_process.py"), str(setup), str(certs), str(stored_j)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        address = proc.stdout.readline().strip()
        assert address, f"the Cj node did not start (exit code {proc.poll()})"
        creds = NodeCredentials.load(certs, "C1")
        ei = PairEndI(PAIR, logs["C1"], si, sj, settings, BitPool(auth_bits.copy()), schedule=schedule)
        announce = NodeChannel(address, creds, "C2", "test/announce")
        pair_ch = NodeChannel(address, creds, "C2", "qkd/pair", fields={"pair": PAIR}, authenticator=ei.tx)
        ch = _KillAfter(pair_ch, proc, "__never__")
        keys_i: dict[str, np.ndarray] = {}
        outcomes = []
        for k, (lo, hi) in enumerate(ranges):
            if k == 1:
                ch.kind = "ec/start"
            a, b = np.searchsorted(ann.slots, [lo, hi])
            part = Announcements(PAIR, ann.slots[a:b], ann.outcomes[a:b])
            announce.request(Message("ann", {"lo": lo, "hi": hi, "n_slots": hi - lo, "slots": part.slots,
                                             "outcomes": part.outcomes}))
            ei.sift_chunk(ch, part, lo, hi, hi - lo)
            out = ei.run_block(ch, f"block-{k}", lo, hi)
            outcomes.append(out)
            if out.accepted:  # what Ci's key store would take
                keys_i[out.block_id] = out.final.copy()
        announce.abort()
        pair_ch.abort()
        assert ch.killed
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    first, second = outcomes
    assert first.accepted and first.final is not None and first.final.size > 0
    assert not second.accepted and second.final is None
    assert "node C2" in second.reason and ("unreachable" in second.reason or "ended session" in second.reason
                                           or "without replying" in second.reason), second.reason
    assert "\n" not in second.reason
    assert list(keys_i) == ["block-0"]
    # the first block's key is intact at Ci and is the one Cj stored
    line = stored_j.read_text().split()
    assert line == ["block-0", hashlib.sha256(keys_i["block-0"].tobytes()).hexdigest()]


@pytest.mark.parametrize("n", [0, 1, 2, 7, 1000])
def test_test_bases_nibbles_round_trip_and_refuse_malformed_fields(n):
    """``test/bases`` carries one nibble 2·k + basis per test slot; the receiver gets back exactly the
    sender's (k, basis) and refuses a wrong length, an intensity index out of range or a non-zero
    padding nibble (a tampered or desynchronised partner), each with one reason."""
    from labqfl.qkd.twoparty import _Refused, pack_test_bases

    rng = np.random.default_rng(n)
    k = rng.integers(0, 3, n).astype(np.uint8)
    b = rng.integers(0, 2, n).astype(np.uint8)
    raw = pack_test_bases(k, b)
    assert len(raw) == (n + 1) // 2
    k2, b2 = unpack_test_bases(raw, n, 3)
    assert np.array_equal(k2, k) and np.array_equal(b2, b)
    with pytest.raises(_Refused, match="expected"):
        unpack_test_bases(raw + b"\x00", n, 3)
    with pytest.raises(_Refused, match="expected"):
        unpack_test_bases(np.frombuffer(raw, np.uint8), n, 3)  # not bytes
    if n:
        bad = bytearray(raw)
        bad[0] = (bad[0] & 0xF0) | (3 << 1)  # k = 3 with three levels
        with pytest.raises(_Refused, match="intensity index"):
            unpack_test_bases(bytes(bad), n, 3)
    if n % 2:
        bad = bytearray(raw)
        bad[-1] |= 0x10
        with pytest.raises(_Refused, match="padding nibble"):
            unpack_test_bases(bytes(bad), n, 3)
    # eight intensity levels still fit a nibble
    k8 = rng.integers(0, 8, n).astype(np.uint8)
    assert np.array_equal(unpack_test_bases(pack_test_bases(k8, b), n, 8)[0], k8)
