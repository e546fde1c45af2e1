"""The operator-signed training spec (Flower engine, docs/secure_aggregation.md §9).

Every server message carries the run's settings (``spec.*``), and each node checks the message
against them; unsigned, those settings were the server's to choose for the whole run (DP off, a
lower threshold, other participants, a sparser graph). Now the network operator (certificate
``ctl`` of the network CA) signs them (:mod:`labqfl.fl.flower.specsig`), the server sends the
signed spec with every message, and a node with the network CA configured follows no other
settings: a message that departs from them, a spec signed by anyone but the operator, altered,
expired, missing, or swapped within a run is refused with one reason before anything is reserved,
drawn or trained.

Each refusal test fails on the code before the signed spec: the node answered (no signed spec was
needed, the server's settings were followed)."""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flower_helpers import MeddlingGrid, fair_levels, spec_examples
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from labqfl.errors import ConfigError, SecureAggregationError
from labqfl.fl.flower import identity, specsig
from labqfl.fl.flower.client import (
    CFG,
    labqfl_identity_mod,
    labqfl_secagg_mod,
    node_name,
    setup_request,
)
from labqfl.fl.flower.identity import (
    NODE_CA,
    NODE_CERT,
    NODE_KEY,
    ReplyRefused,
    ReplySigner,
    ReplyVerifier,
)
from labqfl.fl.flower.server import LabqflServer
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.flower.specsig import (
    OPERATOR,
    SignedSpec,
    sign_spec,
    spec_departures,
    spec_settings,
    spec_signed_bytes,
)
from labqfl.fl.quantize import dequantize_sum, quantize, uint_dtype
from labqfl.net import make_node_certs

N_WORDS = 512
NAMES = ["C1", "C2", "C3"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The network's CA with C1..C4 and the operator ctl, and another CA that also issued a "ctl"."""
    d = tmp_path_factory.mktemp("certs")
    make_node_certs(d / "net", [*NAMES, "C4", OPERATOR])
    make_node_certs(d / "other", [OPERATOR])
    return {"net": d / "net", "other": d / "other"}


def _signer(certs: dict[str, Path], who: str, folder: str = "net") -> ReplySigner:
    return ReplySigner((certs[folder] / f"node-{who}.pem").read_bytes(), (certs[folder] / f"node-{who}.key").read_bytes())


def _deployed(certs: dict[str, Path]) -> dict[str, dict[str, str]]:
    return {c: {NODE_CERT: str(certs["net"] / f"node-{c}.pem"), NODE_KEY: str(certs["net"] / f"node-{c}.key"),
                NODE_CA: str(certs["net"] / "ca.pem")} for c in NAMES}


def _updates() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(9)
    return {c: rng.normal(0, 0.3, N_WORDS) for c in NAMES}


def _app(updates: dict[str, np.ndarray]) -> ClientApp:
    app = ClientApp(mods=[labqfl_identity_mod])

    @app.query("labqfl_setup")
    def setup(msg: Message, context: Context) -> Message:
        _, name = setup_request(msg, context)  # the ClientApp's own setup check
        return Message(RecordDict({CFG: ConfigRecord({"name": name, "num_examples": spec_examples(msg, name)})}), reply_to=msg)

    @app.train(mods=[labqfl_secagg_mod])
    def train(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"update": ArrayRecord({"update": Array(updates[node_name(context)])}),
                                   "metrics": MetricRecord({"num_examples": 100, "train_loss": 0.0})}), reply_to=msg)

    return app


def _spec(**kw: Any) -> FlowerSpec:
    base: dict[str, Any] = dict(task="mnist-lenet5", clients=3, q=8, rounds=2, keys="csprng", clip=1.0,
                                rounding="nearest", node_wait_s=1.0, self_masks=True)
    base.update(kw)
    return FlowerSpec(**base)


def _malicious(spec: FlowerSpec, signed: SignedSpec | None) -> LabqflServer:
    """A server that runs ``spec`` and sends ``signed`` with every message (it skips the honest check)."""
    srv = LabqflServer(spec)
    srv.signed_spec = signed
    return srv


def _setup_refusals(grid: MeddlingGrid) -> dict[str, str]:
    return {c: grid.error_of(c, "setup", 0) for c in NAMES}


# --------------------------------------------------- a server that changes the signed settings
CHANGES = {
    "dp-off": (dict(dp_epsilon=1.0, q=32), dict(dp_epsilon=0.0, q=32), "dp_epsilon: 0.0, 1.0"),
    "lower-threshold": (dict(threshold=3), dict(threshold=2), "threshold: 2, 3"),
    "participants": (dict(clients=3), dict(clients=4, client_names="C1,C2,C3,C4"),
                     "client_names: 'C1,C2,C3,C4', ''; clients: 4, 3"),
    "sparser-graph": (dict(clients=3), dict(graph="ring-k", k=2), "graph: 'ring-k', 'all'; k: 2, 0"),
    "self-masks-off": (dict(), dict(self_masks=False), "self_masks: False, True"),
    "min-survivors": (dict(min_survivors=3), dict(min_survivors=2), "min_survivors: 2, 3"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_server_that_changes_the_signed_settings_is_refused_by_every_node(local_grid, certs, change) -> None:
    """The operator signed one spec; the server runs another (DP off, a lower threshold, another client
    set, a sparser graph, self-masks off, fewer survivors needed) and sends the signed one along. Every
    node refuses the very first message (setup), naming the fields that depart; the run never starts."""
    signed_kw, run_kw, fields = CHANGES[change]
    signed = sign_spec(_spec(**signed_kw), _signer(certs, OPERATOR), valid_s=600)
    grid = MeddlingGrid(local_grid(_app(_updates()), NAMES, node_config=_deployed(certs)))
    with pytest.raises(SecureAggregationError, match="no SuperNode answered"):
        _malicious(_spec(**run_kw), signed).connect(grid)
    for c, err in _setup_refusals(grid).items():
        assert f"the server's setup message to {c} departs from the operator-signed spec {signed.spec_id} " \
               f"(field: sent, signed): {fields}: refused" in err, err


def test_a_server_that_departs_in_one_mask_message_is_refused_at_that_node(local_grid, certs) -> None:
    """Honest until round 1's mask message to C2, which lowers the Shamir threshold (and the spec's):
    C2 refuses before training or masking; the round goes on without it."""
    signed = sign_spec(_spec(threshold=2, colluders=0), _signer(certs, OPERATOR), valid_s=600)  # need 2 of 3

    def meddle(node: str, stage: str, r: int, cfg: Any) -> bool:
        if (node, stage) == ("C2", "mask"):
            cfg["spec.threshold"], cfg["threshold"] = 1, 1
        return True

    grid = MeddlingGrid(local_grid(_app(_updates()), NAMES, node_config=_deployed(certs)), meddle)
    srv = LabqflServer(_spec(threshold=2, colluders=0), signed_spec=signed)
    nodes, weights = srv.connect(grid)
    fr = srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    assert "departs from the operator-signed spec" in grid.error_of("C2", "mask", 1)
    assert "threshold: 1, 2: refused" in grid.error_of("C2", "mask", 1)
    assert fr.dropped_after_masking == ["C2"]


SIGNERS = {"a-client-node": ("C1", "net", "it is signed with the certificate of 'C1', not of the network operator 'ctl'"),
           "the-server-side-c4": ("C4", "net", "not of the network operator 'ctl'"),
           "ctl-of-another-ca": (OPERATOR, "other", "does not chain to the network's CA")}


@pytest.mark.parametrize("who", list(SIGNERS))
def test_a_spec_not_signed_by_the_networks_operator_is_refused(local_grid, certs, who) -> None:
    name, folder, reason = SIGNERS[who]
    s = _signer(certs, name, folder)
    ok = sign_spec(_spec(), _signer(certs, OPERATOR), valid_s=600)  # the body the operator would sign
    forged = SignedSpec(ok.body, s.signature(spec_signed_bytes(ok.body)), s.cert_pem)
    grid = MeddlingGrid(local_grid(_app(_updates()), NAMES, node_config=_deployed(certs)))
    with pytest.raises(SecureAggregationError, match="no SuperNode answered"):
        _malicious(_spec(), forged).connect(grid)
    for err in _setup_refusals(grid).values():
        assert "the operator-signed spec in the server's setup message to" in err and reason in err, err


def test_an_altered_signed_spec_is_refused(local_grid, certs) -> None:
    """The server edits the signed body (DP off) and runs that: the signature no longer covers it."""
    signed = sign_spec(_spec(dp_epsilon=1.0, q=32), _signer(certs, OPERATOR), valid_s=600)
    body = json.loads(signed.body)
    body["spec"]["dp_epsilon"] = 0.0
    altered = SignedSpec(json.dumps(body, sort_keys=True, separators=(",", ":")), signed.sig, signed.cert_pem)
    assert not spec_departures(altered, _spec(q=32))  # the server's messages match the altered body
    grid = MeddlingGrid(local_grid(_app(_updates()), NAMES, node_config=_deployed(certs)))
    with pytest.raises(SecureAggregationError, match="no SuperNode answered"):
        _malicious(_spec(q=32), altered).connect(grid)
    for err in _setup_refusals(grid).values():
        assert "the signature (certificate 'ctl') does not cover this spec (altered or forged)" in err, err


def test_an_expired_spec_is_refused_and_a_spec_that_expires_mid_run_stops_the_next_round(
        local_grid, certs, monkeypatch) -> None:
    old = sign_spec(_spec(), _signer(certs, OPERATOR), valid_s=60,
                    now=datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1))
    grid = MeddlingGrid(local_grid(_app(_updates()), NAMES, node_config=_deployed(certs)))
    with pytest.raises(SecureAggregationError, match="no SuperNode answered"):
        _malicious(_spec(), old).connect(grid)
    for err in _setup_refusals(grid).values():
        assert f"the operator-signed spec {old.spec_id} expired at" in err and "follows no expired spec" in err, err

    signed = sign_spec(_spec(), _signer(certs, OPERATOR), valid_s=600)
    grid = MeddlingGrid(local_grid(_app(_updates()), NAMES, node_config=_deployed(certs)))
    srv = LabqflServer(_spec(), signed_spec=signed)
    nodes, weights = srv.connect(grid)
    srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights, end=False)
    monkeypatch.setattr(identity, "_now", lambda: signed.expires + datetime.timedelta(seconds=1))
    with pytest.raises(SecureAggregationError, match="round 2 aborted"):
        srv.round(grid, 2, np.zeros(N_WORDS), nodes, weights)
    assert "expired at" in grid.error_of("C1", "keys", 2)


def test_a_stripped_spec_a_swapped_spec_and_an_extra_round_are_refused(local_grid, certs) -> None:
    """No signed spec at all (the server strips it); round 2 under another signed spec of the same
    settings (another ID: one run follows one signed spec); a third round of a two-round spec."""
    grid = MeddlingGrid(local_grid(_app(_updates()), NAMES, node_config=_deployed(certs)))
    with pytest.raises(SecureAggregationError, match="no SuperNode answered"):
        _malicious(_spec(), None).connect(grid)
    for err in _setup_refusals(grid).values():
        assert "carries no spec signed by the network operator ('ctl')" in err, err

    a = sign_spec(_spec(), _signer(certs, OPERATOR), valid_s=600)
    b = sign_spec(_spec(), _signer(certs, OPERATOR), valid_s=600)
    grid = MeddlingGrid(local_grid(_app(_updates()), NAMES, node_config=_deployed(certs)))
    srv = LabqflServer(_spec(), signed_spec=a)
    nodes, weights = srv.connect(grid)
    assert not srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights, end=False).dropped_after_masking
    srv.signed_spec = b
    with pytest.raises(SecureAggregationError, match="round 2 aborted"):
        srv.round(grid, 2, np.zeros(N_WORDS), nodes, weights, end=False)
    assert f"carries the operator-signed spec {b.spec_id}, but its run {srv.run_tag!r} follows spec {a.spec_id}" \
        in grid.error_of("C1", "keys", 2)
    srv.signed_spec = a
    with pytest.raises(SecureAggregationError, match="round 3 aborted"):
        srv.round(grid, 3, np.zeros(N_WORDS), nodes, weights)
    assert f"round 3: outside rounds 1..2 of the operator-signed spec {a.spec_id}" in grid.error_of("C1", "keys", 3)


def test_a_spec_signed_for_longer_than_a_node_accepts_is_refused(local_grid, certs, monkeypatch) -> None:
    """The signer refuses a validity over MAX_VALID_S, and so does every node: it trusts no signer's tooling
    (review s35 third look T4: a spec signed for 100 000 h elsewhere was accepted)."""
    monkeypatch.setattr(specsig, "MAX_VALID_S", 1e9)  # a signer without the bound
    long = sign_spec(_spec(), _signer(certs, OPERATOR), valid_s=1e5 * 3600)
    monkeypatch.undo()
    grid = MeddlingGrid(local_grid(_app(_updates()), NAMES, node_config=_deployed(certs)))
    with pytest.raises(SecureAggregationError, match="no SuperNode answered"):
        _malicious(_spec(), long).connect(grid)
    for err in _setup_refusals(grid).values():
        assert f"the operator-signed spec {long.spec_id} is valid 100000 h from" in err and "at most 720 h" in err, err


def test_honest_signed_rounds_pass_and_sum_exactly(local_grid, certs) -> None:
    updates = _updates()
    signed = sign_spec(_spec(), _signer(certs, OPERATOR), valid_s=600)
    grid = MeddlingGrid(local_grid(_app(updates), NAMES, node_config=_deployed(certs)))
    srv = LabqflServer(_spec(), signed_spec=signed, identity=ReplyVerifier.from_file(certs["net"] / "ca.pem"))
    nodes, weights = srv.connect(grid)
    lv = fair_levels(_spec())
    want = dequantize_sum(sum((quantize(updates[c], clip=1.0, levels=lv[c], q=8, rounding="nearest")[0]
                               for c in NAMES), np.zeros(N_WORDS, dtype=uint_dtype(8))), clip=1.0,
                          total_levels=sum(lv.values()))
    for r in (1, 2):
        fr = srv.round(grid, r, np.zeros(N_WORDS), nodes, weights, end=r == 2)
        assert not fr.dropped_before_masking and not fr.dropped_after_masking
        assert np.array_equal(fr.aggregate, want)
    assert not any(rep.has_error() for *_, rep in grid.replies)


def test_the_honest_server_refuses_a_spec_that_departs_from_its_signed_one(certs) -> None:
    signed = sign_spec(_spec(), _signer(certs, OPERATOR), valid_s=600)
    with pytest.raises(SecureAggregationError, match=r"departs from the operator-signed spec .*'self_masks': \(False, True\)"):
        LabqflServer(_spec(self_masks=False), signed_spec=signed)


# -------------------------------------------------------------------------- signing, encoding
def test_sign_spec_signs_with_the_operator_only_and_round_trips(certs) -> None:
    with pytest.raises(ConfigError, match="signed with the operator's certificate 'ctl'"):
        sign_spec(_spec(), _signer(certs, "C1"), valid_s=60)
    s = sign_spec(_spec(), _signer(certs, OPERATOR), valid_s=60, spec_id="abc")
    back = SignedSpec.from_json(s.to_json())
    assert back == s and back.spec_id == "abc" and back.settings == spec_settings(_spec())
    assert back.spec(stage_timeout_s=5.0, node_wait_s=1.0) == dataclasses.replace(_spec(), stage_timeout_s=5.0)
    v = ReplyVerifier.from_file(certs["net"] / "ca.pem")
    v.verify_operator(s.cert_pem, s.sig, spec_signed_bytes(s.body), operator=OPERATOR)
    with pytest.raises(ReplyRefused, match="does not cover this spec"):  # the refs domain is not the spec's
        v.verify_operator(s.cert_pem, _signer(certs, OPERATOR).sign_refs(s.body.encode()),
                          spec_signed_bytes(s.body), operator=OPERATOR)
    with pytest.raises(SecureAggregationError, match="is not a signed spec"):
        SignedSpec.from_json("{}")
