"""Message-level client identity on the Flower engine (labqfl.fl.flower.identity): every reply is
signed with the client node's certificate key over run ID, nonce, stage, round, claimed name and a
digest of its content; the ServerApp accepts it only if the certificate chains to the network CA
and names the claimed client. A reply from another CA, under another client's name, altered, or
replayed from an earlier round is refused — at the verifier and in a whole server round, where
the refused client is dropped and the masks of the others still cancel.

The server-level tests fail on the unsigned code: it takes the impostor's setup answer as C1's
("two SuperNodes claim client name C1"), the altered upload into the sum, and the replayed keys
answer as C1's key for round 2 (its masks then do not cancel)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flower_helpers import fair_levels, signed_server, spec_examples
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from labqfl.errors import SecureAggregationError
from labqfl.fl.flower.client import CFG, labqfl_identity_mod, labqfl_secagg_mod, node_name
from labqfl.fl.flower.identity import (
    NODE_CA,
    NODE_CERT,
    NODE_KEY,
    NONCE,
    SIG,
    ReplyRefused,
    ReplySigner,
    ReplyVerifier,
    content_digest,
)
from labqfl.fl.flower.inprocess import InProcessGrid
from labqfl.fl.flower.server import LabqflServer
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.quantize import quantize
from labqfl.net import make_node_certs

N_WORDS = 512  # the specs use mnist-lenet5: a node refuses n_params above its model's (review s34 F7)
NAMES = ["C1", "C2", "C3"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The network's CA with C1..C3, and another CA that also issued a "C1"."""
    d = tmp_path_factory.mktemp("certs")
    make_node_certs(d / "net", [*NAMES, "ctl"])  # ctl: the operator signs the spec
    make_node_certs(d / "other", ["C1"])
    return {"net": d / "net", "other": d / "other"}


def _node_config(folder: Path, cert_of: str) -> dict[str, str]:
    """A deployed node's signing keys and (since csprng keys are signed too) the network CA its peers' keys chain to."""
    return {NODE_CERT: str(folder / f"node-{cert_of}.pem"), NODE_KEY: str(folder / f"node-{cert_of}.key"),
            NODE_CA: str(folder / "ca.pem")}


def _request(stage: str = "mask", r: int = 1, run: str = "run-a", nonce: str = "n" * 32) -> Message:
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    cfg = ConfigRecord({"stage": stage, "round": r, "run_tag": run, NONCE: nonce})
    return Message(RecordDict({CFG: cfg}), dst_node_id=7, message_type="train", group_id=str(r))


def _signed_reply(req: Message, claimed: str, node_config: dict[str, str], masked: np.ndarray) -> Message:
    """What the ClientApp's identity mod makes of a masked upload of node ``claimed``."""
    ctx = Context(run_id=1, node_id=7, node_config={"labqfl-client": claimed, **node_config}, state=RecordDict(),
                  run_config={})

    def upload(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"masked": ArrayRecord({"masked": Array(masked)}),
                                   "metrics": MetricRecord({"train_loss": 0.25, "clipped_values": 0})}), reply_to=msg)

    return labqfl_identity_mod(req, ctx, upload)


def _verify(v: ReplyVerifier, rep: Message, name: str, *, stage: str = "mask", r: int = 1, run: str = "run-a",
            nonce: str = "n" * 32) -> None:
    v.verify(rep, run=run, nonce=nonce, stage=stage, round_index=r, name=name)


def test_a_signed_reply_is_accepted_and_wrong_ca_other_name_alteration_and_replay_are_refused(certs) -> None:
    v = ReplyVerifier.from_file(certs["net"] / "ca.pem")
    up = np.arange(N_WORDS, dtype=np.uint8)
    good = _signed_reply(_request(), "C1", _node_config(certs["net"], "C1"), up)
    assert SIG in good.content.config_records
    _verify(v, good, "C1")  # accepted

    other_ca = _signed_reply(_request(), "C1", _node_config(certs["other"], "C1"), up)
    with pytest.raises(ReplyRefused, match="does not chain to the network's CA"):
        _verify(v, other_ca, "C1")

    impostor = _signed_reply(_request(), "C1", _node_config(certs["net"], "C2"), up)  # C2's certificate, claims C1
    with pytest.raises(ReplyRefused, match="claims client 'C1' but is signed with the certificate of 'C2'"):
        _verify(v, impostor, "C1")

    altered = _signed_reply(_request(), "C1", _node_config(certs["net"], "C1"), up)
    flipped = up.copy()
    flipped[100] ^= 1
    altered.content.array_records["masked"]["masked"] = Array(flipped)
    with pytest.raises(ReplyRefused, match="altered or replayed"):
        _verify(v, altered, "C1")

    # round 1's reply offered again in round 2 (a new nonce there), or for another stage or run
    for kw in ({"r": 2, "nonce": "m" * 32}, {"r": 2}, {"nonce": "m" * 32}, {"stage": "reveal"}, {"run": "run-b"}):
        with pytest.raises(ReplyRefused, match="altered or replayed"):
            _verify(v, good, "C1", **kw)  # type: ignore[arg-type]

    unsigned = Message(RecordDict({"masked": ArrayRecord({"masked": Array(up)})}), reply_to=_request())
    with pytest.raises(ReplyRefused, match="not signed"):
        _verify(v, unsigned, "C1")


def test_the_content_digest_survives_flowers_wire_format_and_covers_every_record() -> None:
    from flwr.common.serde import recorddict_from_proto, recorddict_to_proto

    rd = RecordDict({"masked": ArrayRecord({"masked": Array(np.arange(9, dtype=np.uint16))}),
                     CFG: ConfigRecord({"refs.C1-C2": '[["b", 0, 8]]', "pk": b"\x01\x02", "ok": True, "n": 3,
                                        "l": ["a", "b"]}),
                     "metrics": MetricRecord({"train_loss": 0.1, "num_examples": 12})})
    d = content_digest(rd)
    assert content_digest(recorddict_from_proto(recorddict_to_proto(rd))) == d
    rd[SIG] = ConfigRecord({"sig": b"x"})  # the signature record itself is not covered
    assert content_digest(rd) == d
    for change in (lambda r: r[CFG].__setitem__("n", 4), lambda r: r[CFG].__setitem__("ok", 1),
                   lambda r: r["metrics"].__setitem__("num_examples", 13),
                   lambda r: r.__setitem__("extra", ConfigRecord({"a": 1}))):
        r2 = recorddict_from_proto(recorddict_to_proto(rd))
        change(r2)
        assert content_digest(r2) != d


def test_a_signer_refuses_a_key_that_is_not_its_certificates(certs) -> None:
    from labqfl.errors import ConfigError

    with pytest.raises(ConfigError, match="does not belong to the certificate"):
        ReplySigner((certs["net"] / "node-C1.pem").read_bytes(), (certs["net"] / "node-C2.key").read_bytes())
    assert "BEGIN" not in repr(ReplySigner((certs["net"] / "node-C1.pem").read_bytes(),
                                           (certs["net"] / "node-C1.key").read_bytes()))


# ------------------------------------------------------------------------- whole server rounds
def _updates() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
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


class _Tampering:
    """A grid between the server and the nodes that rewrites replies with ``edit(msg, reply)``."""

    def __init__(self, inner: InProcessGrid, edit: Any) -> None:
        self.inner, self.edit = inner, edit

    def get_node_ids(self) -> list[int]:
        return self.inner.get_node_ids()

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        msgs = list(messages)
        return [self.edit(m, rep) for m, rep in zip(msgs, self.inner.send_and_receive(msgs, timeout=timeout),
                                                    strict=True)]


def _grid(app: ClientApp, names: list[str], certs: dict[str, Path], cert_of: list[str]) -> InProcessGrid:
    grid = InProcessGrid(app, names, {})
    for nid, owner in zip(grid.names, cert_of, strict=True):
        grid.contexts[nid].node_config.update(_node_config(certs["net"], owner))
    return grid


def _spec() -> FlowerSpec:
    return FlowerSpec(task="mnist-lenet5", clients=3, q=8, rounds=2, keys="csprng", clip=1.0, rounding="nearest",
                      node_wait_s=5.0)


def _expected_sum(updates: dict[str, np.ndarray], survivors: list[str], srv: LabqflServer) -> np.ndarray:
    """The exact integer sum of the survivors' quantised updates (levels of the round's participants)."""
    levels = fair_levels(srv.spec)
    total = np.zeros(N_WORDS, dtype=np.uint8)
    for c in survivors:
        total += quantize(updates[c], clip=1.0, levels=levels[c], q=8, rounding="nearest")[0]
    return total


def test_a_supernode_with_c2s_certificate_claiming_c1_is_refused_and_the_real_c1_trains(certs, caplog) -> None:
    updates = _updates()
    grid = _grid(_app(updates), ["C1", "C2", "C3", "C1"], certs, ["C2", "C2", "C3", "C1"])  # node 1000: impostor
    srv = signed_server(certs["net"], _spec(), identity=ReplyVerifier.from_file(certs["net"] / "ca.pem"))
    with caplog.at_level(logging.WARNING):
        nodes, weights = srv.connect(grid)
    assert nodes == {"C1": 1003, "C2": 1001, "C3": 1002}
    assert "node 1000 refused as C1: it claims client 'C1' but is signed with the certificate of 'C2'" in caplog.text
    fr = srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    assert fr.participants == NAMES and not fr.dropped_before_masking and not fr.dropped_after_masking


def test_an_impostor_alone_leaves_its_name_missing_and_the_run_fails_naming_the_refusal(certs) -> None:
    grid = _grid(_app(_updates()), ["C1", "C2", "C3"], certs, ["C2", "C2", "C3"])
    srv = signed_server(certs["net"], dataclasses.replace(_spec(), node_wait_s=0.5),
                        identity=ReplyVerifier.from_file(certs["net"] / "ca.pem"))
    with pytest.raises(SecureAggregationError, match=r"no SuperNode answered as client\(s\) \['C1'\].*refused.*"
                                                     r"signed with the certificate of 'C2'"):
        srv.connect(grid)


def test_an_upload_altered_in_transit_is_dropped_and_the_others_still_sum_exactly(certs, caplog) -> None:
    updates = _updates()

    def flip(msg: Message, rep: Message) -> Message:
        if msg.metadata.dst_node_id == 1002 and "masked" in rep.content.array_records:
            y = rep.content.array_records["masked"]["masked"].numpy().copy()
            y[0] ^= 0x80
            rep.content.array_records["masked"]["masked"] = Array(y)
        return rep

    grid = _Tampering(_grid(_app(updates), NAMES, certs, NAMES), flip)
    srv = signed_server(certs["net"], _spec(), identity=ReplyVerifier.from_file(certs["net"] / "ca.pem"))
    nodes, weights = srv.connect(grid)
    with caplog.at_level(logging.WARNING):
        fr = srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    assert fr.dropped_after_masking == ["C3"]  # refused, then recovered like a client lost after masking
    assert "refused the reply of node 1002 as client C3" in caplog.text and "altered or replayed" in caplog.text
    from labqfl.fl.quantize import dequantize_sum

    lv = fair_levels(srv.spec)
    want = dequantize_sum(_expected_sum(updates, ["C1", "C2"], srv), clip=1.0, total_levels=lv["C1"] + lv["C2"])
    assert np.array_equal(fr.aggregate, want)


def test_when_a_refused_reply_leaves_too_few_clients_the_round_fails_clearly(certs) -> None:
    def flip(msg: Message, rep: Message) -> Message:
        if msg.metadata.dst_node_id == 1001 and "masked" in rep.content.array_records:
            rep.content.config_records[SIG]["sig"] = b"\x00" * 70
        return rep

    spec = FlowerSpec(task="mnist-lenet5", clients=2, q=8, rounds=1, keys="csprng", clip=1.0, rounding="nearest")
    grid = _Tampering(_grid(_app(_updates()), NAMES[:2], certs, NAMES[:2]), flip)
    srv = signed_server(certs["net"], spec, identity=ReplyVerifier.from_file(certs["net"] / "ca.pem"))
    nodes, weights = srv.connect(grid)
    with pytest.raises(SecureAggregationError, match=r"round 1 aborted: 1 survivor\(s\).*C2: reply refused"):
        srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights)


def test_a_keys_answer_replayed_from_round_1_in_round_2_is_refused(certs) -> None:
    updates = _updates()
    kept: dict[str, Message] = {}

    def replay(msg: Message, rep: Message) -> Message:
        cfg = msg.content.config_records.get(CFG)
        if msg.metadata.dst_node_id != 1000 or cfg is None or cfg.get("stage") != "keys":
            return rep
        if int(cfg["round"]) == 1:  # type: ignore[arg-type]
            kept["r1"] = rep
            return rep
        return kept["r1"]  # round 2: C1's signed round-1 answer instead of the new one

    grid = _Tampering(_grid(_app(updates), NAMES, certs, NAMES), replay)
    srv = signed_server(certs["net"], _spec(), identity=ReplyVerifier.from_file(certs["net"] / "ca.pem"))
    nodes, weights = srv.connect(grid)
    assert not srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights).dropped_before_masking
    fr = srv.round(grid, 2, np.zeros(N_WORDS), nodes, weights)
    assert fr.dropped_before_masking == ["C1"] and fr.participants == ["C2", "C3"]


def test_a_certificate_accepted_once_is_refused_after_it_expires(certs, monkeypatch) -> None:
    """The verifier caches a certificate's chain check; its validity window is still checked at every
    reply, so a run that outlives a node's certificate (or the CA's) stops accepting it."""
    import datetime

    from cryptography import x509

    from labqfl.fl.flower import identity

    v = ReplyVerifier.from_file(certs["net"] / "ca.pem")
    good = _signed_reply(_request(), "C1", _node_config(certs["net"], "C1"), np.arange(N_WORDS, dtype=np.uint8))
    _verify(v, good, "C1")  # accepted and cached
    end = x509.load_pem_x509_certificate((certs["net"] / "node-C1.pem").read_bytes()).not_valid_after_utc
    monkeypatch.setattr(identity, "_now", lambda: end + datetime.timedelta(seconds=1))
    with pytest.raises(ReplyRefused, match=r"its certificate \(CN 'C1'\) or its CA is valid from .* UTC, not now"):
        _verify(v, good, "C1")
    monkeypatch.setattr(identity, "_now", lambda: end - datetime.timedelta(seconds=1))
    _verify(v, good, "C1")
