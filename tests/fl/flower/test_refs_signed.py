"""Key refs signed by their master's node certificate (Flower engine, qkd keys, a deployment:
docs/secure_aggregation.md §9). The Wegman–Carter tag of the refs rests on the slave's tag key being
unknown to the server; after a dropout lie the master reveals pair-key bits the slave still holds
free, and the server can name them as the slave's tag key and forge a tag. With signing keys
configured (``labqfl-cert``/``labqfl-key``/``labqfl-ca``, as ``labqfl node supernode`` sets them) the
master also signs the refs statement (run, round, pair, the slave's nonce, every ref) and the slave
requires that signature, under a node certificate of the network CA whose CN is the pair's master,
before it touches any bit: the forged tag alone no longer passes.

Every refusal test here fails on the code before the signature: the slave accepted the forged tag
(or, with the tag check stubbed, the replay) and masked with the server's refs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography import x509
from flower_helpers import MeddlingGrid, signed_server

from labqfl.errors import SecureAggregationError
from labqfl.fl.flower.client import NODE_KEYSTORE, make_client_app
from labqfl.fl.flower.identity import (
    DOMAIN,
    NODE_CA,
    NODE_CERT,
    NODE_KEY,
    ReplyRefused,
    ReplySigner,
    ReplyVerifier,
    refs_signed_bytes,
)
from labqfl.fl.flower.keys import REFS_TAG_BITS, REFS_TAG_LANES, NodeKeyStore, refs_statement
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.masks import mask_graph
from labqfl.keystore import KeyStore
from labqfl.net import make_node_certs
from labqfl.qkd.authentication import BitPool, WegmanCarterAuthenticator

NAMES = ["C1", "C2", "C3"]
NOT_SIGNED = "key references for pair C1-C2 not signed by its master C1"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The network's CA with C1..C4, and another CA that also issued a "C1"."""
    d = tmp_path_factory.mktemp("certs")
    make_node_certs(d / "net", ["C1", "C2", "C3", "C4", "ctl"])  # ctl: the operator signs the spec
    make_node_certs(d / "other", ["C1"])
    return {"net": d / "net", "other": d / "other"}


def _keys_of(certs: dict[str, Path], names: list[str], kdir: Any, *, ca: bool = True) -> dict[str, dict[str, str]]:
    """Node configs of a deployment: each node's certificate and key, the network CA, and its own key-store
    folder (a deployed node never opens the one the server's message names, fc9c4d6)."""
    return {c: {NODE_CERT: str(certs["net"] / f"node-{c}.pem"), NODE_KEY: str(certs["net"] / f"node-{c}.key"),
                NODE_KEYSTORE: str(kdir), **({NODE_CA: str(certs["net"] / "ca.pem")} if ca else {})} for c in names}


def _signer(certs: dict[str, Path], who: str, folder: str = "net") -> ReplySigner:
    return ReplySigner((certs[folder] / f"node-{who}.pem").read_bytes(), (certs[folder] / f"node-{who}.key").read_bytes())


def _spec(mnist_dir: str, kdir: Any = "", **kw: Any) -> FlowerSpec:
    base: dict[str, Any] = dict(data_dir=mnist_dir, clients=3, q=16, rounds=2, keys="qkd", seed=1)
    base.update(kw)
    return FlowerSpec.for_task("mnist-qnn", keystore_dir=str(kdir), **base)


def _free(kdir: Any, node: str, pair: str) -> list[tuple[int, int]]:
    with KeyStore.for_node(node, kdir) as st:
        return [rng for rs in st.free_ranges(pair, ["fl"]).values() for rng in rs]


def _covers(free: list[tuple[int, int]], start: int, end: int) -> bool:
    return any(a <= start and end <= b for a, b in free)


# ------------------------------------------------------- the dropout lie, signed deployment
SIGNATURES = ["stripped", "master-sig-of-the-honest-refs", "replayed-from-round-1", "slaves-own-certificate",
              "third-clients-certificate", "c1-of-another-ca"]
REASONS = {"stripped": "no signature or certificate came with them",
           "master-sig-of-the-honest-refs": "does not cover these refs, this round and this node's nonce",
           "replayed-from-round-1": "does not cover these refs, this round and this node's nonce",
           "slaves-own-certificate": "signed with the certificate of 'C2', not of the pair's master 'C1'",
           "third-clients-certificate": "signed with the certificate of 'C3', not of the pair's master 'C1'",
           "c1-of-another-ca": "does not chain to the network's CA"}


@pytest.mark.parametrize("signature", SIGNATURES)
def test_a_tag_key_made_of_bits_revealed_after_a_dropout_lie_is_refused_when_refs_are_signed(
        make_stores, local_grid, mnist_dir, certs, signature) -> None:
    """Round 1: the server withholds C2's mask message and declares C2 lost, so C1 reveals its
    words of C1-C2, bits still free in C2's store. Round 2: the server names 256 of those known
    bits as C2's tag key, forges refs (bits of a later round of C1) and computes a Wegman–Carter
    tag that C2 would accept (the residual of the unsigned path, test_refs_auth.py). With signing
    keys configured C2 also requires C1's signature over that statement: stripped, C1's honest
    signature of other refs, C1's round-1 signature, a signature by C2's or C3's own valid node
    certificate, or by a "C1" of another CA — each refused with one error, before C2 reserves
    any bit: the forged mask bits and the named tag key stay free."""
    spec = _spec(mnist_dir)
    qn = spec.q * spec.model().n_params
    assert qn >= REFS_TAG_BITS
    kdir = make_stores(NAMES, 3 * (qn + REFS_TAG_BITS))
    srv = signed_server(certs["net"], _spec(mnist_dir, kdir))
    grid: MeddlingGrid
    seen: dict[str, Any] = {}

    def meddle(node: str, stage: str, r: int, cfg: Any) -> bool:
        if node != "C2" or stage != "mask":
            return True
        if r == 1:
            return False  # the dropout lie
        words = grid.reply("C1", "reveal", 1).content.array_records["revealed"]["C1-C2"].numpy()
        known = np.unpackbits(np.asarray(words, dtype=">u2").view(np.uint8))[:REFS_TAG_BITS]
        (bid, off, _), = json.loads(str(grid.mask_cfgs[("C2", 1)]["refs.C1-C2"]))
        tag_refs, forged = [[bid, off, REFS_TAG_BITS]], [[bid, off + 2 * (qn + REFS_TAG_BITS), qn]]
        nonce = bytes.fromhex(str(grid.reply("C2", "keys", 2).content.config_records["labqfl"]["nonce.C1-C2"]))
        statement = refs_statement(srv.run_tag, 2, "C1-C2", nonce, refs=forged, tag_refs=tag_refs, pad_refs=[],
                                   void_refs=[])
        seen.update(tag_refs=tag_refs[0], forged=forged[0])
        cfg["refs.C1-C2"], cfg["reftag.C1-C2"] = json.dumps(forged), json.dumps(tag_refs)
        cfg["tag.C1-C2"] = WegmanCarterAuthenticator(BitPool(known), lanes=REFS_TAG_LANES).tag(statement).hex()
        if "void.C1-C2" in cfg:
            del cfg["void.C1-C2"]
        assert isinstance(cfg["refsig.C1-C2"], bytes)  # the honest master's round-2 signature came along
        if signature == "stripped":
            del cfg["refsig.C1-C2"], cfg["refcert.C1-C2"]
        elif signature == "replayed-from-round-1":
            cfg["refsig.C1-C2"] = grid.mask_cfgs[("C2", 1)]["refsig.C1-C2"]
        elif signature != "master-sig-of-the-honest-refs":
            who, folder = {"slaves-own-certificate": ("C2", "net"), "third-clients-certificate": ("C3", "net"),
                           "c1-of-another-ca": ("C1", "other")}[signature]
            s = _signer(certs, who, folder)
            cfg["refsig.C1-C2"], cfg["refcert.C1-C2"] = s.sign_refs(statement), s.cert_pem
        return True

    grid = MeddlingGrid(local_grid(make_client_app(), NAMES, node_config=_keys_of(certs, NAMES, kdir)), meddle)
    srv.run(grid)
    assert srv.rounds[0].dropped_after_masking == ["C2"]
    err = grid.error_of("C2", "mask", 2)
    assert NOT_SIGNED in err and REASONS[signature] in err, err
    assert srv.rounds[1].dropped_after_masking == ["C2"]  # no upload from C2, masked or not
    for what in ("tag_refs", "forged"):  # C2 reserved nothing the server named: both stay free there
        _, start, length = seen[what]
        assert _covers(_free(kdir, "C2", "C1-C2"), start, start + length), what


def test_the_whole_of_round_1s_signed_refs_replayed_into_round_2_is_refused_even_if_the_tag_passed(
        make_stores, local_grid, mnist_dir, certs, monkeypatch) -> None:
    """Round 1: C2's mask message withheld (C1 reveals the pair key). Round 2: the server replays
    round 1's refs, tag key refs, tag, signature and certificate — bits it knows. The Wegman–Carter
    check is stubbed to accept (as a tag forged from revealed bits would): the signature, made for
    round 1 and C2's round-1 nonce, is refused on its own, and the revealed bits stay unused."""
    monkeypatch.setattr(NodeKeyStore, "refs_tag_matches", lambda self, kid, statement, tag: True)
    spec = _spec(mnist_dir, q=8)
    qn = spec.q * spec.model().n_params
    kdir = make_stores(NAMES, 2 * (qn + REFS_TAG_BITS))
    grid: MeddlingGrid

    def meddle(node: str, stage: str, r: int, cfg: Any) -> bool:
        if node != "C2" or stage != "mask":
            return True
        if r == 1:
            return False
        for k, v in grid.mask_cfgs[("C2", 1)].items():
            if k.endswith(".C1-C2") and k.split(".")[0] in ("refs", "reftag", "tag", "void", "refsig", "refcert"):
                cfg[k] = v
        if "void.C1-C2" not in grid.mask_cfgs[("C2", 1)] and "void.C1-C2" in cfg:
            del cfg["void.C1-C2"]
        return True

    grid = MeddlingGrid(local_grid(make_client_app(), NAMES, node_config=_keys_of(certs, NAMES, kdir)), meddle)
    srv = signed_server(certs["net"], _spec(mnist_dir, kdir, q=8))
    srv.run(grid)
    assert srv.rounds[0].dropped_after_masking == ["C2"]
    err = grid.error_of("C2", "mask", 2)
    assert NOT_SIGNED in err and "does not cover these refs, this round and this node's nonce" in err, err
    (_, start, length), = json.loads(str(grid.mask_cfgs[("C2", 1)]["refs.C1-C2"]))
    assert _covers(_free(kdir, "C2", "C1-C2"), start, start + length)  # revealed at C1, never used at C2


def test_a_signature_stripped_from_honest_refs_is_refused_when_the_slave_has_keys(
        make_stores, local_grid, mnist_dir, certs) -> None:
    """Policy: a node with signing keys configured requires the signature; a server that just drops
    it (honest refs and tag otherwise) does not fall back to the tag alone."""
    spec = _spec(mnist_dir, q=8, rounds=1)
    qn = spec.q * spec.model().n_params
    kdir = make_stores(NAMES, qn + REFS_TAG_BITS)

    def strip(node: str, stage: str, r: int, cfg: Any) -> bool:
        if node == "C2" and stage == "mask":
            del cfg["refsig.C1-C2"], cfg["refcert.C1-C2"]
        return True

    grid = MeddlingGrid(local_grid(make_client_app(), NAMES, node_config=_keys_of(certs, NAMES, kdir)), strip)
    srv = signed_server(certs["net"], _spec(mnist_dir, kdir, q=8, rounds=1))
    srv.run(grid)
    err = grid.error_of("C2", "mask", 1)
    assert err.endswith(f"{NOT_SIGNED}: no signature or certificate came with them; C2 masks nothing with them"), err
    assert srv.rounds[0].dropped_after_masking == ["C2"]


def test_a_node_with_a_signing_key_but_no_network_ca_masks_nothing(make_stores, local_grid, mnist_dir, certs) -> None:
    spec = _spec(mnist_dir, q=8, rounds=1, clients=2)
    kdir = make_stores(NAMES[:2], spec.q * spec.model().n_params + REFS_TAG_BITS)
    cfgs = _keys_of(certs, NAMES[:2], kdir)
    del cfgs["C2"][NODE_CA]
    grid = MeddlingGrid(local_grid(make_client_app(), NAMES[:2], node_config=cfgs))
    # it refuses the run's first message already (the setup: it cannot check the operator's signed spec either)
    with pytest.raises(SecureAggregationError, match=r"no SuperNode answered as client\(s\) \['C2'\]"):
        signed_server(certs["net"], _spec(mnist_dir, kdir, q=8, rounds=1, clients=2, node_wait_s=1.0)).run(grid)
    assert "C2 has a signing key ('labqfl-cert') but no network CA (node config 'labqfl-ca')" in \
        grid.error_of("C2", "setup", 0)


@pytest.mark.parametrize("self_masks", [False, True], ids=["masks", "self-masks"])
def test_honest_signed_rounds_pass_and_leave_both_ends_of_every_pair_in_step(
        make_stores, local_grid, mnist_dir, certs, self_masks) -> None:
    """Two honest rounds with signing keys: every slave's mask message carries its master's
    signature and certificate (CN = the master), every check passes, both ends stay in step."""
    spec0 = _spec(mnist_dir, q=8, clients=4, self_masks=self_masks)
    per_round = spec0.secagg().key_bits_per_pair(spec0.model().n_params) + REFS_TAG_BITS
    kdir = make_stores(spec0.names, 2 * per_round + 40)
    grid = MeddlingGrid(local_grid(make_client_app(), spec0.names, node_config=_keys_of(certs, spec0.names, kdir)))
    srv = signed_server(certs["net"], _spec(mnist_dir, kdir, q=8, clients=4, self_masks=self_masks))
    srv.run(grid)
    assert not any(rep.has_error() for *_, rep in grid.replies)
    for fr in srv.rounds:
        assert not fr.dropped_before_masking and not fr.dropped_after_masking
    for p in mask_graph(spec0.names):
        a, b = p.split("-")
        for r in (1, 2):  # every slave got its master's signature and certificate with the refs
            cfg = grid.mask_cfgs[(b, r)]
            cert = x509.load_pem_x509_certificate(str(cfg[f"refcert.{p}"]).encode())
            assert isinstance(cfg[f"refsig.{p}"], bytes) and cert.subject.rfc4514_string().startswith(f"CN={a},")
        with KeyStore.for_node(a, kdir) as sa, KeyStore.for_node(b, kdir) as sb:
            acc_a, acc_b = sa.accounting()[p], sb.accounting()[p]
            assert acc_a["available"] == acc_b["available"] == {"fl": 40}, (p, acc_a, acc_b)


# ---------------------------------------------------------------------------- the verifier
def test_verify_refs_binds_the_nonce_the_master_and_the_domain(certs) -> None:
    v = ReplyVerifier.from_file(certs["net"] / "ca.pem")
    base: dict[str, Any] = dict(refs=[["b", 0, 64]], tag_refs=[["b", 64, 256]], pad_refs=[], void_refs=[])
    st1 = refs_statement("run", 1, "C1-C2", b"\1" * 16, **base)
    st2 = refs_statement("run", 1, "C1-C2", b"\2" * 16, **base)  # the same refs, the slave's next nonce
    c1 = _signer(certs, "C1")
    sig = c1.sign_refs(st1)
    v.verify_refs(c1.cert_pem, sig, st1, master="C1")  # accepted
    with pytest.raises(ReplyRefused, match="does not cover"):
        v.verify_refs(c1.cert_pem, sig, st2, master="C1")  # replayed for another nonce
    as_reply = b"".join(len(x).to_bytes(8, "big") + x for x in (DOMAIN, st1))  # the reply domain, same statement
    assert as_reply != refs_signed_bytes(st1)
    with pytest.raises(ReplyRefused, match="does not cover"):
        v.verify_refs(c1.cert_pem, c1.signature(as_reply), st1, master="C1")
    with pytest.raises(ReplyRefused, match="does not cover"):
        v.verify_refs(c1.cert_pem, c1.signature(st1), st1, master="C1")  # no refs domain
    c3 = _signer(certs, "C3")
    with pytest.raises(ReplyRefused, match="certificate of 'C3', not of the pair's master 'C1'"):
        v.verify_refs(c3.cert_pem, c3.sign_refs(st1), st1, master="C1")
    with pytest.raises(ReplyRefused, match="no signature or certificate"):
        v.verify_refs("", None, st1, master="C1")


def test_supernode_gives_its_clientapps_the_network_ca(monkeypatch, tmp_path, certs) -> None:
    """``labqfl node supernode`` sets ``labqfl-ca`` next to ``labqfl-cert``/``labqfl-key``: the
    ClientApps then sign their refs and require their masters' signatures."""
    from labqfl.nodes import supernode

    got: dict[str, Any] = {}

    class Proc:
        returncode = 0

        def poll(self) -> int:
            return 0

    class Fed:
        procs = {"supernode-C1": Proc()}

        def start_supernode(self, name: str, node_config: dict[str, Any]) -> None:
            got.update(node_config)

        def stop(self) -> None:
            pass

    class Tunnel:
        def __init__(self, **kw: Any) -> None:
            pass

        def start(self) -> str:
            return "127.0.0.1:1"

        def stop(self) -> None:
            pass

    monkeypatch.setattr(supernode.signal, "signal", lambda *a: None)  # leave pytest's handlers alone
    monkeypatch.setattr(supernode, "TunnelEnd", Tunnel)
    monkeypatch.setattr(supernode, "start_warm_clientapps", lambda *a, **k: Fed())
    assert supernode.main("C1", tmp_path / "data", "127.0.0.1:9", certs["net"]) == 1  # the fake SuperNode "exited"
    assert got[NODE_CA] == str((certs["net"] / "ca.pem").resolve())
    assert got[NODE_CERT] == str((certs["net"] / "node-C1.pem").resolve())
