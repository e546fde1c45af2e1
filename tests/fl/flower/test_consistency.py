"""The consistency stage of a deployed self-mask round (Bonawitz, Ivanov, Kreuter et al., "Practical Secure
Aggregation for Privacy-Preserving Machine Learning", CCS 2017, round 3 ConsistencyCheck; review s35 third look T2).

With self-masks the unmask stage asks each survivor for the pair keys of its dropped partners and its shares of
the surviving clients' self-masks. A server that told different clients different stories (C1: C3 dropped, C2:
C1 dropped, C3: C2 dropped) got, with each node's guard seeing one kind of secret per peer, two shares of C1's
self-mask and both of C1's pair keys: C1's quantised update exactly, with no collusion and no real dropout. Now
every survivor signs the round's (survivors, dropped) before unmask and records it in its own data folder (one
set per job and round, under every signed spec of the job), and a deployed node unmasks only the story it signed
itself and that need = max(t, min_survivors, N/2 + 1) survivors signed.

Every refusal test fails on the code before the stage: the nodes revealed (no error reply at unmask)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flower_helpers import MeddlingGrid, spec_examples
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from labqfl.errors import SecureAggregationError
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
    ReplySigner,
    consistency_signed_bytes,
)
from labqfl.fl.flower.server import LabqflServer
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.flower.specsig import OPERATOR, consistency_record_path, sign_spec
from labqfl.fl.quantize import dequantize_sum, quantize, uint_dtype
from labqfl.fl.selfmask import consistency_need
from labqfl.net import make_node_certs

NAMES = ["C1", "C2", "C3"]
N_WORDS = 64
UPDATES = {c: np.random.default_rng(4).normal(0, 0.3, (3, N_WORDS))[i] for i, c in enumerate(NAMES)}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("certs")
    make_node_certs(d / "net", [*NAMES, "C4", OPERATOR])
    make_node_certs(d / "other", ["C2"])
    return {"net": d / "net", "other": d / "other"}


#: the five-client ring of the consistency follow-up tests (test_consistency_*.py)
RING = ["C1", "C2", "C3", "C4", "C5"]


def _signer(certs: dict[str, Path], who: str, folder: str = "net") -> ReplySigner:
    return ReplySigner((certs[folder] / f"node-{who}.pem").read_bytes(), (certs[folder] / f"node-{who}.key").read_bytes())


def _deployed(certs: dict[str, Path], data: Path, names: list[str] = NAMES) -> dict[str, dict[str, str]]:
    net = certs["net"]
    return {c: {NODE_CERT: str(net / f"node-{c}.pem"), NODE_KEY: str(net / f"node-{c}.key"), NODE_CA: str(net / "ca.pem"),
                "labqfl-keystore": str(data / c), "labqfl-keys": "csprng"} for c in names}


def _app() -> ClientApp:
    app = ClientApp(mods=[labqfl_identity_mod])

    @app.query("labqfl_setup")
    def setup(msg: Message, context: Context) -> Message:
        _, name = setup_request(msg, context)
        return Message(RecordDict({CFG: ConfigRecord({"name": name, "num_examples": spec_examples(msg, name)})}),
                       reply_to=msg)

    @app.train(mods=[labqfl_secagg_mod])
    def train(msg: Message, context: Context) -> Message:
        name = node_name(context)
        upd = UPDATES.get(name, np.zeros(N_WORDS))
        return Message(RecordDict({"update": ArrayRecord({"update": Array(upd)}),
                                   "metrics": MetricRecord({"num_examples": 100, "train_loss": 0.0})}), reply_to=msg)

    return app


def _spec(**kw: Any) -> FlowerSpec:
    base: dict[str, Any] = dict(task="mnist-lenet5", clients=3, q=8, rounds=2, keys="csprng", clip=1.0,
                                rounding="nearest", node_wait_s=1.0, self_masks=True, min_survivors=2, job_id="job-1")
    base.update(kw)
    return FlowerSpec(**base)


def _server(certs: dict[str, Path], **kw: Any) -> LabqflServer:
    op = _signer(certs, OPERATOR)
    return LabqflServer(_spec(**kw), signed_spec=sign_spec(_spec(**kw), op, valid_s=600))


def _grid(local_grid: Any, certs: dict[str, Path], data: Path, meddle: Any = None, names: list[str] = NAMES,
          **kw: Any) -> MeddlingGrid:
    return MeddlingGrid(local_grid(_app(), names, node_config=_deployed(certs, data, names), **kw), meddle)


def _no_secret_left(grid: MeddlingGrid, r: int = 1) -> None:
    """No node answered an unmask message with anything (every unmask reply is an error)."""
    reps = [rep for n, s, rr, rep in grid.replies if s == "unmask" and rr == r]
    assert reps and all(rep.has_error() for rep in reps), [rep.content for rep in reps if not rep.has_error()]


class StoryGrid(MeddlingGrid):
    """T2's server: each node is told its own story at the consistency stage and at unmask (the peers' signed
    X25519 keys and the share ciphertexts the story needs relayed), with every consistency signature the
    server collected attached to every unmask message."""

    STORY = {"C1": dict(dropped=["C3"], survivors=["C1", "C2"], pairs=["C1-C3"], share_owners=["C1"]),
             "C2": dict(dropped=["C1"], survivors=["C2", "C3"], pairs=["C1-C2"], share_owners=[]),
             "C3": dict(dropped=["C2"], survivors=["C1", "C3"], pairs=[], share_owners=["C1"])}

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        for m in messages:
            cfg = m.content.config_records.get(CFG)
            node = self.grid.nodes[m.metadata.dst_node_id]
            if cfg is not None and str(cfg["stage"]) == "consistency":
                cfg["survivors"], cfg["dropped"] = self.STORY[node]["survivors"], self.STORY[node]["dropped"]
            if cfg is None or str(cfg["stage"]) != "unmask":
                continue
            for k in [k for k in cfg.keys() if k.startswith(("conssig.", "conscert."))]:
                del cfg[k]
            for n, s, _, rep in self.replies:
                if s == "consistency" and not rep.has_error():
                    got = rep.content.config_records[CFG]
                    cfg[f"conssig.{n}"], cfg[f"conscert.{n}"] = got["conssig"], got["conscert"]
            for k, v in self.STORY[node].items():
                cfg[k] = v
            for peer in NAMES:
                kc = self.reply(peer, "keys", 1).content.config_records[CFG]
                cfg[f"pk.{peer}"], cfg[f"pksig.{peer}"], cfg[f"pkcert.{peer}"] = kc["pk"], kc["pksig"], kc["pkcert"]
            shares = {o: self.reply(o, "mask", 1).content.array_records["shares"] for o in NAMES}
            m.content.array_records["cts"] = ArrayRecord(
                {o: Array(shares[o][node].numpy()) for o in self.STORY[node]["share_owners"] if o != node})
        return super().send_and_receive(messages, timeout=timeout)


def test_different_stories_at_unmask_are_refused_with_nothing_revealed(local_grid: Any, certs: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    srv = _server(certs, colluders=0)  # need 2 of 3: two-survivor stories reach the unmask stage
    grid = StoryGrid(local_grid(_app(), NAMES, node_config=_deployed(certs, tmp_path)))
    nodes, weights = srv.connect(grid)
    with pytest.raises(SecureAggregationError, match="round 1 aborted"):
        srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    _no_secret_left(grid)
    for c in NAMES:
        story = StoryGrid.STORY[c]
        err = grid.error_of(c, "unmask", 1)
        assert f"(survivors {story['survivors']}, dropped {story['dropped']})" in err, err
        assert err.endswith(f"{c} reveals nothing: refused"), err
        # each story carries one valid signature (its signer's own): need = 2 for N = 3 and colluders 0
        assert "consistency signature of" in err and "is refused" in err, err
        rec = json.loads(consistency_record_path(tmp_path / c, c).read_text())
        assert rec["jobs"]["job-1"]["1"] == {"survivors": sorted(story["survivors"]), "dropped": story["dropped"]}


def _strip(node: str, stage: str, r: int, cfg: Any) -> bool:
    if stage == "unmask":
        for k in [k for k in cfg.keys() if k.startswith(("conssig.", "conscert."))]:
            del cfg[k]
    return True


def test_an_unmask_without_consistency_signatures_is_refused_at_a_node_with_the_network_ca(
        local_grid: Any, certs: dict[str, Path], tmp_path: Path) -> None:
    srv = _server(certs)
    grid = _grid(local_grid, certs, tmp_path, _strip)
    nodes, weights = srv.connect(grid)
    with pytest.raises(SecureAggregationError, match="survivors failed to unmask"):
        srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    _no_secret_left(grid)
    for c in NAMES:
        assert ("carries no consistency signatures; " + c + " (network CA configured) unmasks only a survivor set "
                "that the survivors signed: refused") in grid.error_of(c, "unmask", 1)


def _forge(how: str, certs: dict[str, Path], srv: LabqflServer) -> Any:
    """A meddle that changes C2's relayed consistency signature (or the set of them) in every unmask message."""
    def meddle(node: str, stage: str, r: int, cfg: Any) -> bool:
        if stage != "unmask":
            return True
        surv, dropped = list(cfg["survivors"]), list(cfg["dropped"])  # type: ignore[arg-type]
        st = dict(run=srv.run_tag, spec_id=srv.signed_spec.spec_id, job="job-1", round_index=1)  # type: ignore[union-attr]
        if how == "forged":
            cfg["conssig.C2"] = cfg["conssig.C1"]
        elif how == "other-ca":
            s = _signer(certs, "C2", "other")
            cfg["conssig.C2"] = s.sign_consistency(**st, survivors=surv, dropped=dropped, name="C2")
            cfg["conscert.C2"] = s.cert_pem
        elif how == "wrong-set":
            s = _signer(certs, "C2")
            cfg["conssig.C2"] = s.sign_consistency(**st, survivors=["C2", "C3"], dropped=["C1"], name="C2")
        elif how == "duplicated-signer":
            cfg["conssig.C2"], cfg["conscert.C2"] = cfg["conssig.C1"], cfg["conscert.C1"]
        elif how == "too-few":
            for k in ("conssig.C2", "conscert.C2", "conssig.C3", "conscert.C3"):
                del cfg[k]
        elif how == "not-a-survivor":
            s = _signer(certs, "C4")
            cfg["conssig.C4"] = s.sign_consistency(**st, survivors=surv, dropped=dropped, name="C4")
            cfg["conscert.C4"] = s.cert_pem
        return True

    return meddle


REASONS = {"forged": "the consistency signature of C2 is refused: the signature (certificate 'C2') does not cover",
           "other-ca": "the consistency signature of C2 is refused: its certificate (CN 'C2') does not chain",
           "wrong-set": "the consistency signature of C2 is refused: the signature (certificate 'C2') does not cover",
           "duplicated-signer": "the consistency signature of C2 is refused: it is signed with the certificate of 'C1'",
           "too-few": "carries 1 consistency signature(s) (['C1']), at least 3 needed",
           "not-a-survivor": "the consistency signature of C4 is refused: 'C4' is not a survivor"}


@pytest.mark.parametrize("how", sorted(REASONS))
def test_a_bad_set_of_consistency_signatures_is_refused_before_anything_is_revealed(
        local_grid: Any, certs: dict[str, Path], tmp_path: Path, how: str) -> None:
    srv = _server(certs)
    grid = _grid(local_grid, certs, tmp_path, _forge(how, certs, srv))
    nodes, weights = srv.connect(grid)
    with pytest.raises(SecureAggregationError, match="survivors failed to unmask"):
        srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    _no_secret_left(grid)
    for c in NAMES:
        err = grid.error_of(c, "unmask", 1)
        assert REASONS[how] in err and err.endswith(f"{c} reveals nothing: refused"), err


def _quantized_sum(grid: MeddlingGrid, survivors: list[str]) -> tuple[np.ndarray, int]:
    lv = {c: int(grid.mask_cfgs[(c, 1)]["levels"]) for c in survivors}
    total = sum(quantize(UPDATES[c], clip=1.0, levels=lv[c], q=8, rounding="nearest")[0].astype(np.int64)
                for c in survivors)
    return np.asarray(total % 256).astype(uint_dtype(8)), sum(lv.values())


def test_a_node_signs_one_survivor_set_per_job_and_round_across_restarts_and_new_signed_specs(
        local_grid: Any, certs: dict[str, Path], tmp_path: Path) -> None:
    first = _server(certs, colluders=0)  # round 1 of job-1, every client survives; need 2 (C3 may drop)
    grid = _grid(local_grid, certs, tmp_path)
    nodes, weights = first.connect(grid)
    fr = first.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    total, levels = _quantized_sum(grid, NAMES)
    assert np.array_equal(fr.aggregate, dequantize_sum(total, clip=1.0, total_levels=levels))
    assert "consistency" in fr.stage_seconds
    # the job is resumed: restarted nodes (fresh state, same data folders), a new operator signature of the same
    # job, round 1 retrained; the server now withholds C3 after masking and asks the others to sign {C1, C2}
    again = _server(certs, colluders=0)
    assert again.signed_spec.spec_id != first.signed_spec.spec_id  # type: ignore[union-attr]
    grid = _grid(local_grid, certs, tmp_path, crash={"C3": 1})
    nodes, weights = again.connect(grid)
    with pytest.raises(SecureAggregationError, match="round 1 aborted before any unmask: survivor"):
        again.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    assert not [1 for n, s, r, rep in grid.replies if s == "unmask"]  # no unmask message left the server
    for c in ("C1", "C2"):
        err = grid.error_of(c, "consistency", 1)
        assert (f"{c}: round 1 of job 'job-1': this node already signed survivors ['C1', 'C2', 'C3'], dropped [] "
                f"(its record {consistency_record_path(tmp_path / c, c)}); asked to sign survivors ['C1', 'C2'], "
                "dropped ['C3']: refused") in err, err
    # the same survivor set again (a retry in which everyone survives) is signed again and unmasked
    third = _server(certs, colluders=0)
    grid = _grid(local_grid, certs, tmp_path)
    nodes, weights = third.connect(grid)
    fr = third.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    assert np.array_equal(fr.aggregate, dequantize_sum(total, clip=1.0, total_levels=levels))
    # another job (its own job ID) pins its own sets
    other = _server(certs, job_id="job-2", colluders=0)
    grid = _grid(local_grid, certs, tmp_path, crash={"C3": 1})
    nodes, weights = other.connect(grid)
    fr = other.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    assert fr.dropped_after_masking == ["C3"]
    rec = json.loads(consistency_record_path(tmp_path / "C1", "C1").read_text())
    assert rec["jobs"] == {"job-1": {"1": {"survivors": NAMES, "dropped": []}},
                           "job-2": {"1": {"survivors": ["C1", "C2"], "dropped": ["C3"]}}}


def test_an_honest_deployed_round_with_a_real_dropout_completes_with_the_exact_sum(
        local_grid: Any, certs: dict[str, Path], tmp_path: Path) -> None:
    srv = _server(certs, colluders=0)  # N = 3 tolerates a dropout only with colluders 0 (need 2)
    grid = _grid(local_grid, certs, tmp_path, crash={"C2": 1})
    nodes, weights = srv.connect(grid)
    fr = srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    assert fr.dropped_after_masking == ["C2"]
    total, levels = _quantized_sum(grid, ["C1", "C3"])
    assert np.array_equal(fr.aggregate, dequantize_sum(total, clip=1.0, total_levels=levels))
    for c in ("C1", "C3"):
        cfg = grid.reply(c, "consistency", 1).content.config_records[CFG]
        assert isinstance(cfg["conssig"], bytes) and "BEGIN CERTIFICATE" in str(cfg["conscert"])


def test_too_few_survivors_for_a_majority_abort_before_any_unmask(local_grid: Any, certs: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    names = [*NAMES, "C4"]
    assert consistency_need(4, 2, 2, 1) == 3 and consistency_need(4, 2, 2, 0) == 3
    srv = _server(certs, clients=4, threshold=2)
    grid = _grid(local_grid, certs, tmp_path, names=names, crash={"C3": 1, "C4": 1})
    nodes, weights = srv.connect(grid)
    with pytest.raises(SecureAggregationError, match=r"round 1 aborted before any unmask: 2 survivor\(s\) "
                                                     r"\['C1', 'C2'\].*needs 3 = max\(t, min_survivors, ⌊\(N \+ c\)/2⌋ \+ 1\)"):
        srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    assert not [1 for n, s, r, rep in grid.replies if s in ("consistency", "unmask")]
    # the abort told the survivors a mask message was sent: their round's secrets are finished
    assert [s for n, s, r, rep in grid.replies if n == "C1"][-1] == "abort"


def test_a_node_refuses_to_sign_a_set_that_is_not_its_rounds(local_grid: Any, certs: dict[str, Path],
                                                             tmp_path: Path) -> None:
    def meddle(node: str, stage: str, r: int, cfg: Any) -> bool:
        if stage == "consistency":
            cfg["survivors"], cfg["dropped"] = {"C1": (["C1", "C2"], []), "C2": (NAMES, ["C3"]),
                                                "C3": (["C1", "C2"], ["C3"])}[node]
        return True

    srv = _server(certs)
    grid = _grid(local_grid, certs, tmp_path, meddle)
    nodes, weights = srv.connect(grid)
    with pytest.raises(SecureAggregationError, match="did not sign"):
        srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    err = grid.error_of("C1", "consistency", 1)
    assert "together they are not this round's participants ['C1', 'C2', 'C3']; C1 signs nothing" in err, err
    assert "a client is in both; C2 signs nothing" in grid.error_of("C2", "consistency", 1)
    assert "C3 is not a survivor; C3 signs nothing" in grid.error_of("C3", "consistency", 1)
    assert not consistency_record_path(tmp_path / "C1", "C1").exists()  # nothing pinned for a refused set


def test_an_unsigned_simulation_has_no_consistency_stage(local_grid: Any) -> None:
    spec = _spec(job_id="")
    grid = MeddlingGrid(local_grid(_app(), NAMES, crash={"C2": 1}))
    srv = LabqflServer(spec)
    nodes, weights = srv.connect(grid)
    fr = srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    assert fr.dropped_after_masking == ["C2"] and "consistency" not in fr.stage_seconds
    assert not [1 for n, s, r, rep in grid.replies if s == "consistency"]
    total, levels = _quantized_sum(grid, ["C1", "C3"])
    assert np.array_equal(fr.aggregate, dequantize_sum(total, clip=1.0, total_levels=levels))


def test_the_statement_binds_every_field() -> None:
    base = dict(run="r", spec_id="s", job="j", round_index=1, survivors=["C2", "C1"], dropped=["C3"], name="C1")
    ref = consistency_signed_bytes(**base)  # type: ignore[arg-type]
    assert ref == consistency_signed_bytes(**{**base, "survivors": ["C1", "C2"]})  # type: ignore[arg-type]
    for k, v in (("run", "x"), ("spec_id", "x"), ("job", "x"), ("round_index", 2), ("survivors", ["C1"]),
                 ("dropped", []), ("name", "C2")):
        assert consistency_signed_bytes(**{**base, k: v}) != ref, k  # type: ignore[arg-type]
    assert ref.startswith(len(b"labqfl-fl-consistency/1").to_bytes(8, "big") + b"labqfl-fl-consistency/1")


def test_a_spec_signed_before_the_job_id_existed_is_its_own_job(certs: dict[str, Path]) -> None:
    import dataclasses

    from labqfl.fl.flower.specsig import (
        SignedSpec,
        spec_departures,
        spec_settings,
        spec_signed_bytes,
    )

    op = _signer(certs, OPERATOR)
    new = sign_spec(_spec(job_id=""), op, valid_s=600)
    body = json.loads(new.body)
    del body["spec"]["job_id"]  # what an older labqfl signed
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    old = SignedSpec(text, op.signature(spec_signed_bytes(text)), op.cert_pem)
    assert spec_departures(old, old.spec()) == {} and old.spec().job_id == ""
    assert spec_departures(old, dataclasses.replace(old.spec(), job_id="x")) == {"job_id": ("x", "")}
    assert "job_id" in spec_settings(_spec())
