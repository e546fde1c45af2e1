"""A client killed before it imported its pre-shared secret (review s31, F2) wedged its pairs for good:
the launcher overwrote the secret file one end had not imported while the other end had, the job's
check compared only free authentication bits, and Ci spent its authentication bits on a block its
partner refused. Now the launcher completes or retires a half-done delivery (both ends or neither
hold a usable block), Ci only reserves until Cj has taken the same bits, and a pair left without
shared authentication key is named instead of "key starvation"."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labqfl.keystore import KeyStore
from labqfl.keystore.preshare import load_preshared_auth, min_preshared_bits
from labqfl.nodes.client import AUTH_KEY_PREFIX, AUTH_STARVED, ClientNode, _IPair
from labqfl.nodes.common import NodeError
from labqfl.nodes.launch import LocalNetwork
from labqfl.nodes.preshared import reconcile_pair, secret_path, shared_auth_bits
from labqfl.nodes.runjob import (
    auth_starved_pairs,
    check_pairs_authenticated,
    pairs_needing_preshare,
)
from labqfl.qkd.messaging import Message
from labqfl.qkd.pipeline import DistillSettings

PAIR = "C1-C2"
RNG = np.random.default_rng(5)


def _bits(n: int = 65536) -> np.ndarray:
    return RNG.integers(0, 2, n, dtype=np.uint8)


def _secret_file(data: Path, node: str, block_id: str, bits: np.ndarray) -> Path:
    f = secret_path(data, node, PAIR)
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps({"pair": PAIR, "block_id": block_id, "bits_hex": np.packbits(bits).tobytes().hex()}))
    return f


def _import(data: Path, node: str) -> None:
    """What client ``node`` does with its secret files at start."""
    ns = types.SimpleNamespace(private=data / "nodes" / node, name=node)
    with KeyStore.for_node(node, data) as st:
        ns.store = st
        ClientNode._import_preshared(ns)  # type: ignore[arg-type]


def _net(tmp_path: Path, data: Path) -> LocalNetwork:
    return LocalNetwork(tmp_path / "work", None, settings=DistillSettings(), client_data=data, preshare=[PAIR])


def _discards(st: KeyStore) -> list[tuple[Any, Any]]:
    """(refs, info) of the store's discard records (bits spent without being handed to anyone)."""
    with st._read() as conn:
        rows = conn.execute("SELECT refs, info FROM deliveries WHERE state = 'discarded'").fetchall()
    return [(json.loads(r), json.loads(i)) for r, i in rows]


def _stores(data: Path) -> tuple[KeyStore, KeyStore]:
    return KeyStore.for_node("C1", data), KeyStore.for_node("C2", data)


def test_a_secret_one_end_imported_is_completed_never_overwritten(tmp_path) -> None:
    data = tmp_path / "data"
    secret = _bits()
    with KeyStore.for_node("C1", data) as s1:  # C1 imported it; C2 was killed before it did
        s1.add_block(PAIR, secret, block_id="preshared-x", purpose="auth", meta={"kind": "preshared-auth"})
    f2 = _secret_file(data, "C2", "preshared-x", secret)
    before = f2.read_bytes()
    cfg = _net(tmp_path, data).cfg
    assert PAIR not in pairs_needing_preshare(cfg, data, DistillSettings())  # C2 still has it to import
    _net(tmp_path, data)._write_preshared()
    assert f2.read_bytes() == before  # not overwritten by a fresh secret
    assert not secret_path(data, "C1", PAIR).exists()  # and no fresh secret for C1 beside the old block
    _import(data, "C2")
    s1, s2 = _stores(data)
    with s1, s2:
        assert shared_auth_bits(s1, s2, PAIR) == secret.size
        a, b = s1.take(PAIR, 192, "auth"), s2.take(PAIR, 192, "auth")
        assert a.refs == b.refs and np.array_equal(a.bits, b.bits)


def test_a_block_one_end_holds_alone_is_retired_there_and_a_fresh_secret_issued(tmp_path) -> None:
    data = tmp_path / "data"
    s1, s2 = _stores(data)
    with s1, s2:
        load_preshared_auth(s1, s2, PAIR, _bits(64))  # shared, but only 64 free bits: too few for a block
        s1.add_block(PAIR, _bits(), block_id="preshared-only-c1", purpose="auth")
        s2.add_block(PAIR, _bits(), block_id="preshared-only-c2", purpose="auth")
        # each end alone has > 65 000 free bits: the old check (min of the free bits) saw enough
        assert min(s1.available_bits(PAIR, "auth"), s2.available_bits(PAIR, "auth")) >= min_preshared_bits()
    cfg = _net(tmp_path, data).cfg
    assert PAIR in pairs_needing_preshare(cfg, data, DistillSettings())
    s1, s2 = _stores(data)
    with s1, s2:
        assert s1.available_bits(PAIR, "auth") == s2.available_bits(PAIR, "auth") == 64  # retired, never used
        for st, bid in ((s1, "preshared-only-c1"), (s2, "preshared-only-c2")):
            rec = _discards(st)
            assert rec and rec[0][0] == [[bid, 0, 65536]] and "retired" in rec[0][1]["reason"]
    _net(tmp_path, data)._write_preshared()
    ids = {json.loads(secret_path(data, n, PAIR).read_text())["block_id"] for n in ("C1", "C2")}
    assert len(ids) == 1 and ids.pop().startswith("preshared-")
    _import(data, "C1")
    _import(data, "C2")
    s1, s2 = _stores(data)
    with s1, s2:
        assert shared_auth_bits(s1, s2, PAIR) == 64 + DistillSettings().preshared_auth_bits


def test_a_half_written_delivery_is_destroyed_and_issued_again(tmp_path) -> None:
    data = tmp_path / "data"
    f1 = _secret_file(data, "C1", "preshared-half", _bits())  # the launcher died before C2's copy
    tmp = f1.with_name(f".{f1.name}.dead.tmp")
    tmp.write_text("secret under a temporary name")
    s1, s2 = _stores(data)
    with s1, s2:
        st = reconcile_pair(PAIR, s1, s2, data, data)
    assert not f1.exists() and not tmp.exists() and len(st.shredded) == 2 and st.shared_bits == 0


def test_a_refused_block_spends_no_authentication_bit_at_either_end(tmp_path) -> None:
    """Ci's old block start took its bits before Cj refused: every block of the pair burnt 192 bits
    at Ci only. Now Ci reserves, Cj refuses naming the block it lacks, Ci releases and retires it."""
    data = tmp_path / "data"
    s1, s2 = _stores(data)
    with s1, s2:
        s1.add_block(PAIR, _bits(), block_id="preshared-only-c1", purpose="auth")
        load_preshared_auth(s1, s2, PAIR, _bits())
    ip = _ipair(data)

    def prepare(msg: Message) -> Message:
        refs = json.loads(str(msg.get("refs")))
        with KeyStore.for_node("C2", data) as st:
            missing = sorted({r[0] for r in refs if not st.has_block(r[0])})
            if missing:
                return Message("node/refused", {"reason": "not here", "missing": json.dumps(missing)})
            st.take_exact(PAIR, refs, "auth")
        return Message("block/prepared", {})

    ip.ctl = types.SimpleNamespace(request=prepare)
    with pytest.raises(NodeError, match="retired"):
        ip._draw_auth("blk-1", 0, 10, 192)
    ip._draw_auth("blk-2", 10, 20, 192)  # the next block draws from the shared secret, at both ends
    s1, s2 = ip.node.store, KeyStore.for_node("C2", data)
    with s2:
        assert not s1.pending_reservations("auth")
        assert s1.available_bits(PAIR, "auth") == s2.available_bits(PAIR, "auth") == 65536 - 192
        assert shared_auth_bits(s1, s2, PAIR) == 65536 - 192
    s1.close()


def _ipair(data: Path) -> Any:
    ip: Any = object.__new__(_IPair)
    ip.pair, ip.cj = PAIR, "C2"
    ip.supply = types.SimpleNamespace(load=lambda bits: None)
    ip.node = types.SimpleNamespace(store=KeyStore.for_node("C1", data), name="C1", auth_inflight=set())
    return ip


@pytest.mark.parametrize("cj_took", ["by key ID", "without key ID", "never"])
def test_authentication_bits_a_killed_ci_reserved_are_settled_at_both_ends_at_the_next_session(tmp_path, cj_took) -> None:
    """Cj says whether it took Ci's reservation (``auth/void`` by key ID, answered by the real Cj responder):
    taken, voided at both ends; never taken, released at both ends (neither read a bit) and the key ID voided
    at Cj, so a late ``block/prepare`` with it is refused; taken by a Cj that did not record the key ID, the
    bits it spent are discarded at Ci too. Every way, both stores hold the same free bits."""
    from labqfl.nodes.client import _JCtl

    data = tmp_path / "data"
    s1, s2 = _stores(data)
    kid = f"{AUTH_KEY_PREFIX}dead"
    with s1, s2:
        load_preshared_auth(s1, s2, PAIR, _bits())
        refs = s1.reserve(PAIR, 192, "auth", kid)  # Ci killed after this
        if cj_took == "by key ID":
            s2.take_exact(PAIR, refs, "auth", key_id=kid)
        elif cj_took == "without key ID":  # a Cj before key IDs were recorded with the take
            s2.take_exact(PAIR, refs, "auth")
    ip = _ipair(data)
    s2 = KeyStore.for_node("C2", data)
    jp = types.SimpleNamespace(pair=PAIR, ci="C1", node=types.SimpleNamespace(store=s2, name="C2"))
    ip.ctl = types.SimpleNamespace(request=_JCtl(jp).handle)  # type: ignore[arg-type]
    ip._void_stale_auth()
    s1 = ip.node.store
    left = 65536 if cj_took == "never" else 65536 - 192
    with s1, s2:
        assert not s1.pending_reservations("auth")
        assert s1.available_bits(PAIR, "auth") == s2.available_bits(PAIR, "auth") == left
        assert shared_auth_bits(s1, s2, PAIR) == left
        if cj_took == "never":
            with pytest.raises(Exception, match=f"key ID {kid} was already voided"):
                s2.take_exact(PAIR, refs, "auth", key_id=kid)


def test_a_pair_without_shared_authentication_key_is_named_not_starved(tmp_path) -> None:
    pairs = {PAIR: {"final_key_bits": 0, "abort_reasons": [f"block not started: {AUTH_STARVED} C2: 0 bits"]},
             "C1-C3": {"final_key_bits": 0, "abort_reasons": ["QBER too high"]},
             "C2-C3": {"final_key_bits": 5000, "abort_reasons": [f"block not started: {AUTH_STARVED} C3"]}}
    assert list(auth_starved_pairs(pairs)) == [PAIR]
    data = tmp_path / "data"
    with KeyStore.for_node("C1", data) as s1:
        s1.add_block(PAIR, _bits(), block_id="preshared-only-c1", purpose="auth")
    cfg = _net(tmp_path, data).cfg
    with pytest.raises(NodeError, match=r"pair C1-C2: its two key stores share 0 authentication bits.*held at C1 only"):
        check_pairs_authenticated(cfg, data, DistillSettings())


def test_client_nodes_retire_a_block_ci_holds_alone_and_distil_from_the_shared_one(tmp_path) -> None:
    """Through real client nodes: C1 holds an older pre-shared block C2 never imported. Before, every
    block of the pair drew it first and aborted ("block ... is not in key store .../C2.sqlite"),
    spending 192 bits at C1 only each time; now the first block retires it at C1 and the pair distils."""
    from labqfl.nodes.preshared import _free_ranges
    from tests.nodes.test_network import _station

    station = _station(tmp_path / "station.toml", 2)
    net = LocalNetwork(tmp_path / "net", station, settings=DistillSettings(block_bits=20_000, min_final_block_bits=2000),
                       preshare=False)
    d1, d2 = net.data_of("C1"), net.data_of("C2")
    with KeyStore.for_node("C1", d1) as s1, KeyStore.for_node("C2", d2) as s2:
        s1.add_block(PAIR, _bits(), block_id="preshared-only-c1", purpose="auth", meta={"kind": "preshared-auth"})
        load_preshared_auth(s1, s2, PAIR, _bits())
    try:
        net.start()
        res = net.acquire(0.12, timeout=300)
    finally:
        codes = net.stop()
    assert set(codes.values()) == {0}
    r = res["pairs"][PAIR]
    assert r["final_key_bits"] > 0, r["abort_reasons"]
    with KeyStore.for_node("C1", d1) as s1, KeyStore.for_node("C2", d2) as s2:
        f1, f2 = _free_ranges(s1, PAIR), _free_ranges(s2, PAIR)
        assert "preshared-only-c1" not in f1  # retired at C1, never used
        assert f1 == f2  # every authentication (and key) bit spent at both ends or at neither
        assert not s1.pending_reservations("auth") and not s2.pending_reservations("auth")
        assert any(refs == [["preshared-only-c1", 0, 65536]] for refs, _ in _discards(s1))
