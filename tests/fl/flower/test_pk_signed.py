"""Signed X25519 public keys (Flower engine, csprng keys, docs/secure_aggregation.md §9).

With ``csprng`` keys each node sends a fresh X25519 public key per round through the server, which
relays the peers' keys. A malicious server that substitutes its own key for a peer's is a man in
the middle: it derives the pair words itself and unmasks the node's upload
(:func:`test_unsigned_simulation_residual_a_server_that_substitutes_the_keys_unmasks_the_upload`
shows it on the unsigned path). Where the nodes have signing keys and the network CA (a deployment:
``labqfl-cert``/``labqfl-key``/``labqfl-ca``) each node signs its key, run and round with its node
certificate key, and every partner requires that signature under a node certificate of the network
CA whose CN is the peer before it derives anything from the key.

Every refusal test fails on the code before the signature: the node masked with the server's key
(no error, its upload in the round)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography import x509
from flower_helpers import MeddlingGrid, fair_levels, signed_server, spec_examples
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from labqfl.fl.flower import client as client_mod
from labqfl.fl.flower.client import CFG, labqfl_identity_mod, labqfl_secagg_mod, node_name
from labqfl.fl.flower.identity import (
    DOMAIN,
    NODE_CA,
    NODE_CERT,
    NODE_KEY,
    ReplyRefused,
    ReplySigner,
    ReplyVerifier,
    pk_signed_bytes,
    refs_signed_bytes,
)
from labqfl.fl.flower.keys import ecdh_words, new_ecdh_key
from labqfl.fl.flower.server import LabqflServer
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.masks import pair_mask
from labqfl.fl.quantize import dequantize_sum, quantize, uint_dtype
from labqfl.net import make_node_certs

N_WORDS = 512
NAMES = ["C1", "C2", "C3"]
NOT_SIGNED = "the X25519 public key of C1 relayed to C2 is not signed by C1"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The network's CA with C1..C3, and another CA that also issued a "C1"."""
    d = tmp_path_factory.mktemp("certs")
    make_node_certs(d / "net", [*NAMES, "ctl"])  # ctl: the operator signs the spec
    make_node_certs(d / "other", ["C1"])
    return {"net": d / "net", "other": d / "other"}


def _signed(certs: dict[str, Path]) -> dict[str, dict[str, str]]:
    """Node configs of a deployment: each node's certificate and key, and the network CA."""
    return {c: {NODE_CERT: str(certs["net"] / f"node-{c}.pem"), NODE_KEY: str(certs["net"] / f"node-{c}.key"),
                NODE_CA: str(certs["net"] / "ca.pem")} for c in NAMES}


def _signer(certs: dict[str, Path], who: str, folder: str = "net") -> ReplySigner:
    return ReplySigner((certs[folder] / f"node-{who}.pem").read_bytes(), (certs[folder] / f"node-{who}.key").read_bytes())


def _updates() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {c: rng.normal(0, 0.3, N_WORDS) for c in NAMES}


def _app(updates: dict[str, np.ndarray]) -> ClientApp:
    """The ClientApp's mods (identity outermost, secure aggregation) around fixed updates."""
    app = ClientApp(mods=[labqfl_identity_mod])

    @app.query("labqfl_setup")
    def setup(msg: Message, context: Context) -> Message:
        return Message(RecordDict({CFG: ConfigRecord({"name": node_name(context),
                                                      "num_examples": spec_examples(msg, node_name(context))})}),
                       reply_to=msg)

    @app.train(mods=[labqfl_secagg_mod])
    def train(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"update": ArrayRecord({"update": Array(updates[node_name(context)])}),
                                   "metrics": MetricRecord({"num_examples": 100, "train_loss": 0.0})}), reply_to=msg)

    return app


def _spec(**kw: Any) -> FlowerSpec:
    base: dict[str, Any] = dict(task="mnist-lenet5", clients=3, q=8, rounds=2, keys="csprng", clip=1.0,
                                rounding="nearest", node_wait_s=5.0)
    base.update(kw)
    return FlowerSpec(**base)


def _quantized(updates: dict[str, np.ndarray], c: str) -> np.ndarray:
    return quantize(updates[c], clip=1.0, levels=fair_levels(_spec())[c], q=8, rounding="nearest")[0]


@pytest.fixture
def derived(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every peer public key a node derives pair words or share pads from (the mod's ecdh calls)."""
    seen: list[bytes] = []

    def words(sk: bytes, pk: bytes, *a: Any, **k: Any) -> np.ndarray:
        seen.append(bytes(pk))
        return real_words(sk, pk, *a, **k)

    def pads(sk: bytes, pk: bytes, *a: Any, **k: Any) -> np.ndarray:
        seen.append(bytes(pk))
        return real_pads(sk, pk, *a, **k)

    real_words, real_pads = client_mod.ecdh_words, client_mod.ecdh_pad_words
    monkeypatch.setattr(client_mod, "ecdh_words", words)
    monkeypatch.setattr(client_mod, "ecdh_pad_words", pads)
    return seen


# ------------------------------------------------------- a server substituting one peer's key
SUBSTITUTIONS = ["unsigned", "signed-by-another-ca", "signed-by-another-node", "c1s-signature-of-its-own-key",
                 "replayed-from-round-1"]
REASONS = {"unsigned": "no signature or certificate came with it",
           "signed-by-another-ca": "does not chain to the network's CA",
           "signed-by-another-node": "it is signed with the certificate of 'C3', not of 'C1'",
           "c1s-signature-of-its-own-key": "does not cover this key of 'C1', this run and round 2",
           "replayed-from-round-1": "does not cover this key of 'C1', this run and round 2"}


@pytest.mark.parametrize("how", SUBSTITUTIONS)
def test_a_peer_key_substituted_by_the_server_is_refused_before_any_mask_is_derived(
        local_grid, certs, derived, how) -> None:
    """Round 2: the server puts its own X25519 key (or C1's key of round 1) into C2's mask message as
    C1's — unsigned, signed by a "C1" of another CA, signed by C3's valid node certificate, with C1's
    genuine signature of its real key, or C1's round-1 key with its round-1 signature. C2 refuses with
    one reason, derives nothing from that key, uploads nothing; the round completes without C2."""
    updates = _updates()
    bad_sk, bad_pk = new_ecdh_key()
    srv = signed_server(certs["net"], _spec())
    grid: MeddlingGrid

    def meddle(node: str, stage: str, r: int, cfg: Any) -> bool:
        if (node, stage, r) != ("C2", "mask", 2):
            return True
        if how == "replayed-from-round-1":  # C1's round-1 key with what came with it
            r1 = grid.mask_cfgs[("C2", 1)]
            cfg.update({k: v for k, v in r1.items() if k.endswith(".C1") and k.split(".")[0] in ("pk", "pksig",
                                                                                                   "pkcert")})
            seen["bad"] = bytes(r1["pk.C1"])
            return True
        cfg["pk.C1"] = bad_pk  # "c1s-signature-of-its-own-key": C1's genuine signature stays beside it
        seen["bad"] = bad_pk
        if how == "unsigned":
            for k in ("pksig.C1", "pkcert.C1"):
                if k in cfg:
                    del cfg[k]
        elif how in ("signed-by-another-ca", "signed-by-another-node"):
            s = _signer(certs, "C1", "other") if how == "signed-by-another-ca" else _signer(certs, "C3")
            cfg["pksig.C1"] = s.sign_pk(run=srv.run_tag, round_index=2, name="C1", public_key=bad_pk)
            cfg["pkcert.C1"] = s.cert_pem
        return True

    seen: dict[str, bytes] = {}
    grid = MeddlingGrid(local_grid(_app(updates), NAMES, node_config=_signed(certs)), meddle)
    nodes, weights = srv.connect(grid)
    srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights, end=False)
    derived.clear()
    fr = srv.round(grid, 2, np.zeros(N_WORDS), nodes, weights)
    err = grid.error_of("C2", "mask", 2)
    assert err.startswith(f"round 2: {NOT_SIGNED}: ") and REASONS[how] in err, err
    assert err.endswith("C2 derives nothing from it"), err
    assert seen["bad"] not in derived  # no pair word, no pad from the substituted key, at any node
    assert fr.dropped_after_masking == ["C2"] and fr.participants == NAMES  # no upload from C2
    lv = fair_levels(_spec())
    total = (_quantized(updates, "C1") + _quantized(updates, "C3")).astype(uint_dtype(8))
    assert np.array_equal(fr.aggregate, dequantize_sum(total, clip=1.0, total_levels=lv["C1"] + lv["C3"]))


def test_unsigned_simulation_residual_a_server_that_substitutes_the_keys_unmasks_the_upload(local_grid) -> None:
    """The residual, stated (docs/secure_aggregation.md §9): nodes without signing keys (a simulation)
    take relayed keys as they come. The server gives C2 its own key as C1's and as C3's, derives both
    pair words from its key and C2's public key, and recovers C2's quantised update exactly."""
    updates = _updates()
    bad_sk, bad_pk = new_ecdh_key()
    srv = LabqflServer(_spec(rounds=1))

    def meddle(node: str, stage: str, r: int, cfg: Any) -> bool:
        if (node, stage) == ("C2", "mask"):
            cfg["pk.C1"] = cfg["pk.C3"] = bad_pk
        return True

    grid = MeddlingGrid(local_grid(_app(updates), NAMES), meddle)
    nodes, weights = srv.connect(grid)
    srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    y2 = grid.reply("C2", "mask", 1).content.array_records["masked"]["masked"].numpy()
    pk2 = bytes(grid.reply("C2", "keys", 1).content.config_records[CFG]["pk"])  # type: ignore[arg-type]
    words = {p: ecdh_words(bad_sk, pk2, p, N_WORDS, 8, round_index=1, run_tag=srv.run_tag) for p in ("C1-C2", "C2-C3")}
    assert np.array_equal(y2 - pair_mask("C2", words, N_WORDS, 8), _quantized(updates, "C2"))


def test_honest_signed_csprng_rounds_relay_each_peers_signature_and_sum_exactly(local_grid, certs) -> None:
    """Two honest rounds with signing keys: every mask message carries each partner's key with its
    signature and certificate (CN = that partner), every check passes, the sums are exact — the
    same aggregates as the unsigned run of the same updates."""
    updates = _updates()
    aggs = {}
    for signed in (True, False):
        grid = MeddlingGrid(local_grid(_app(updates), NAMES, node_config=_signed(certs) if signed else None))
        srv = signed_server(certs["net"], _spec(self_masks=True)) if signed else LabqflServer(_spec(self_masks=True))
        nodes, weights = srv.connect(grid)
        aggs[signed] = [srv.round(grid, r, np.zeros(N_WORDS), nodes, weights, end=r == 2).aggregate for r in (1, 2)]
        assert not any(rep.has_error() for *_, rep in grid.replies)
        for (c, r), cfg in grid.mask_cfgs.items():
            for peer in (p for p in NAMES if p != c):
                if not signed:
                    assert f"pksig.{peer}" not in cfg
                    continue
                cert = x509.load_pem_x509_certificate(str(cfg[f"pkcert.{peer}"]).encode())
                assert cert.subject.rfc4514_string().startswith(f"CN={peer},")
                ReplyVerifier.from_file(certs["net"] / "ca.pem").verify_pk(
                    cfg[f"pkcert.{peer}"], cfg[f"pksig.{peer}"], run=srv.run_tag, round_index=r, peer=peer,
                    public_key=bytes(cfg[f"pk.{peer}"]))  # type: ignore[arg-type]
    total = sum((_quantized(updates, c) for c in NAMES), np.zeros(N_WORDS, dtype=uint_dtype(8)))
    want = dequantize_sum(total.astype(uint_dtype(8)), clip=1.0, total_levels=sum(fair_levels(_spec()).values()))
    for a, b in zip(aggs[True], aggs[False], strict=True):
        assert np.array_equal(a, want) and np.array_equal(b, want)


def test_a_signed_node_refuses_a_reveal_request_with_a_substituted_key(local_grid, certs, derived) -> None:
    """The reveal after a dropout derives words from the dropped peer's key too: C3 dropped after masking,
    the server relays C1 its own key as C3's in the reveal message — refused, nothing derived from it."""
    updates = _updates()
    bad_sk, bad_pk = new_ecdh_key()

    def meddle(node: str, stage: str, r: int, cfg: Any) -> bool:
        if node == "C3" and stage == "mask":
            return False  # C3 lost after masking: its partners are asked to reveal
        if node == "C1" and stage == "reveal":
            cfg["pk.C3"] = bad_pk
        return True

    grid = MeddlingGrid(local_grid(_app(updates), NAMES, node_config=_signed(certs)), meddle)
    srv = signed_server(certs["net"], _spec(rounds=1))
    nodes, weights = srv.connect(grid)
    with pytest.raises(Exception, match="survivors failed to reveal keys"):
        srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    err = grid.error_of("C1", "reveal", 1)
    assert "the X25519 public key of C3 relayed to C1 is not signed by C3: the signature (certificate 'C3') does " \
           "not cover this key of 'C3', this run and round 1" in err, err
    assert bad_pk not in derived


# ---------------------------------------------------------------------------- the verifier
def test_verify_pk_binds_key_peer_run_round_and_its_own_domain(certs) -> None:
    v = ReplyVerifier.from_file(certs["net"] / "ca.pem")
    _, pk = new_ecdh_key()
    c1 = _signer(certs, "C1")
    sig = c1.sign_pk(run="run-a", round_index=3, name="C1", public_key=pk)
    v.verify_pk(c1.cert_pem, sig, run="run-a", round_index=3, peer="C1", public_key=pk)  # accepted
    _, other = new_ecdh_key()
    for kw in ({"run": "run-b"}, {"round_index": 4}, {"public_key": other}):
        with pytest.raises(ReplyRefused, match="does not cover this key of 'C1'"):
            v.verify_pk(c1.cert_pem, sig, **{"run": "run-a", "round_index": 3, "peer": "C1", "public_key": pk, **kw})
    with pytest.raises(ReplyRefused, match="signed with the certificate of 'C1', not of 'C2'"):
        v.verify_pk(c1.cert_pem, sig, run="run-a", round_index=3, peer="C2", public_key=pk)
    data = pk_signed_bytes(run="run-a", round_index=3, name="C1", public_key=pk)
    as_other = [c1.signature(b"".join(len(x).to_bytes(8, "big") + x for x in (DOMAIN, data))),  # reply domain
                c1.signature(refs_signed_bytes(data)), c1.sign_refs(data)]  # refs domain
    for s in as_other:
        with pytest.raises(ReplyRefused, match="does not cover"):
            v.verify_pk(c1.cert_pem, s, run="run-a", round_index=3, peer="C1", public_key=pk)
    with pytest.raises(ReplyRefused, match="32 bytes"):
        v.verify_pk(c1.cert_pem, sig, run="run-a", round_index=3, peer="C1", public_key=pk[:31])
    with pytest.raises(ReplyRefused, match="no signature or certificate came with it"):
        v.verify_pk("", None, run="run-a", round_index=3, peer="C1", public_key=pk)
