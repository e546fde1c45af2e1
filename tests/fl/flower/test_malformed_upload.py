"""One client's malformed mask reply (an upload of the wrong length or dtype, a missing self-mask share,
no train loss) on the Flower engine: that client is lost after masking — the same path as a client
whose reply never came (its partners reveal, or the survivors unmask without its self-mask) — the
round record names it with the reason, and the round completes for the others (review s34 F6: the
whole round and run were aborted, with every pair's key of the round spent). A round that too few
clients survive still ends with one error naming the reason."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from labqfl.errors import SecureAggregationError
from labqfl.fl.flower.client import labqfl_secagg_mod, node_name
from labqfl.fl.flower.server import LabqflServer, flower_summary
from labqfl.fl.flower.spec import FlowerSpec

N_WORDS = 24
NAMES = [f"C{i}" for i in range(1, 6)]


def _app(updates: dict[str, np.ndarray]) -> ClientApp:
    app = ClientApp()

    @app.train(mods=[labqfl_secagg_mod])
    def train(msg: Message, context: Any) -> Message:
        return Message(RecordDict({"update": ArrayRecord({"update": Array(updates[node_name(context)])}),
                                   "metrics": MetricRecord({"num_examples": 100, "train_loss": 0.5})}), reply_to=msg)

    return app


def _spoil(reply: Message, how: str) -> None:
    """Make a mask reply malformed in place."""
    recs = reply.content.array_records
    y = recs["masked"]["masked"].numpy()
    if how == "short":
        recs["masked"] = ArrayRecord({"masked": Array(y[:-1].copy())})
    elif how == "dtype":
        recs["masked"] = ArrayRecord({"masked": Array(y.astype(np.int64))})
    elif how == "no share":
        shares = recs["shares"]
        del shares[next(iter(shares))]
    elif how == "no loss":
        reply.content.metric_records["metrics"] = MetricRecord({"num_examples": 100})
    elif how == "inf loss":
        reply.content.metric_records["metrics"] = MetricRecord({"num_examples": 100, "train_loss": float("inf")})


def _round(local_grid: Any, self_masks: bool, spoil: dict[str, str] | None = None,
           crash: dict[str, int] | None = None, dp_epsilon: float = 0.0,
           keystore: str = "") -> tuple[LabqflServer, Any]:
    """Round 1 of five clients with fixed updates (csprng keys, all pairs); ``spoil``: client → how
    its mask reply is made malformed; ``crash``: the LocalGrid's lost-after-masking clients."""
    rng = np.random.default_rng(11)
    updates = {c: rng.normal(0, 0.3, N_WORDS) for c in NAMES}
    spec = FlowerSpec(task="mnist-qnn", clients=5, q=32 if dp_epsilon else 16, rounds=1,
                      keys="qkd" if keystore else "csprng", keystore_dir=keystore, clip=1.0,
                      rounding="nearest", self_masks=self_masks, dp_epsilon=dp_epsilon)
    app = _app(updates)

    def client_app(msg: Message, ctx: Any) -> Message:
        rep = app(msg, ctx)
        cfg = msg.content.config_records.get("labqfl")
        how = (spoil or {}).get(ctx.node_config["labqfl-client"])
        if how and cfg is not None and cfg.get("stage") == "mask" and not rep.has_error():
            _spoil(rep, how)
        return rep

    grid = local_grid(client_app, NAMES, crash=crash,
                      node_config={c: {"labqfl-keystore": keystore} for c in NAMES} if keystore else None)
    srv = LabqflServer(spec)
    fr = srv.round(grid, 1, np.zeros(N_WORDS), {c: nid for nid, c in grid.nodes.items()}, dict.fromkeys(NAMES, 100.0))
    return srv, (fr, updates)


@pytest.mark.parametrize(("self_masks", "how", "reason"), [
    (False, "short", "has 23 values, expected 24"),
    (False, "dtype", "dtype int64, expected uint16"),
    (True, "short", "has 23 values, expected 24"),
    (True, "no share", "no self-mask share for its holder"),
])
def test_a_malformed_mask_reply_loses_that_client_and_the_round_completes(local_grid, self_masks: bool, how: str,
                                                                         reason: str) -> None:
    srv, (fr, updates) = _round(local_grid, self_masks, spoil={"C4": how})
    assert fr.dropped_after_masking == ["C4"] and fr.dropped_before_masking == []
    assert fr.dropped_reasons["C4"].startswith("malformed masked upload: ") and reason in fr.dropped_reasons["C4"]
    assert flower_summary([fr])[0]["dropped_reasons"] == {"C4": fr.dropped_reasons["C4"]}
    # the same aggregate as when C4's reply is lost after masking (the dropout path) ...
    _, (lost, _) = _round(local_grid, self_masks, crash={"C4": 1})
    assert lost.dropped_after_masking == ["C4"] and "no reply" in lost.dropped_reasons["C4"]
    assert np.array_equal(fr.aggregate, lost.aggregate)
    # ... which is the mean of the four survivors' updates (equal weights), to the quantisation step
    expected = np.mean([updates[c] for c in NAMES if c != "C4"], axis=0)
    assert np.max(np.abs(fr.aggregate - expected)) < 1e-3
    if self_masks:
        assert fr.share_reveal_bits > 0
    else:
        assert fr.reveal_bits == 4 * 16 * N_WORDS  # C4's four pair keys, revealed by its partners


def test_a_round_that_too_few_clients_survive_still_ends_with_one_error_naming_why(local_grid) -> None:
    spoil = {c: "short" for c in ("C2", "C3", "C4", "C5")}
    with pytest.raises(SecureAggregationError, match=r"1 survivor\(s\).*C2: malformed masked upload: masked upload "
                                                     r"has 23 values, expected 24"):
        _round(local_grid, False, spoil=spoil)


@pytest.mark.parametrize("how", ["no loss", "inf loss"])
def test_a_bad_clear_metric_never_loses_the_client_nor_reveals_its_pair_keys(local_grid, how: str) -> None:
    """Second review s34 F1: a reply with a correct upload but no or a non-finite train loss was treated as
    lost after masking, so its partners revealed its pair keys to a server holding its masked upload: an
    honest client's update recovered exactly. The metrics are now left out of the round's loss, and the
    client's upload counts like every other."""
    srv, (fr, updates) = _round(local_grid, False, spoil={"C4": how})
    assert fr.dropped_after_masking == [] and fr.reveal_bits == 0
    assert np.max(np.abs(fr.aggregate - np.mean([updates[c] for c in NAMES], axis=0))) < 1e-3
    assert fr.train_loss == 0.5  # the other four clients' loss


def test_without_dp_the_round_reports_the_clients_mean_train_loss(local_grid) -> None:
    _, (fr, _) = _round(local_grid, False)
    assert fr.train_loss == 0.5 and fr.dropped_after_masking == []


def test_under_dp_the_server_uses_no_per_client_metric(local_grid) -> None:
    """Review s34 F9: each client's train loss and clipped-value count come in clear with its masked upload,
    outside the DP accountant. Under DP the server neither uses them (the round's train loss is NaN, its clipped
    count 0) nor requires them (a reply without a train loss is not malformed)."""
    _, (fr, _) = _round(local_grid, False, spoil={"C4": "no loss"}, dp_epsilon=8.0)
    assert fr.dropped_after_masking == [] and fr.privacy_epsilon_spent is not None
    assert np.isnan(fr.train_loss) and fr.clipped_values == 0


def test_with_qkd_keys_the_partners_reveal_and_both_ends_of_every_pair_stay_in_step(local_grid, make_stores) -> None:
    """The reviewer's case (qkd): C4's upload one word short. The round completes for C1, C2, C3, C5, its
    partners reveal the keys of C4's pairs, and no bit of any pair's round key is left free at either end
    (C4 itself, sent no end message, finishes its reservations at its next message)."""
    from labqfl.fl.flower.keys import REFS_TAG_BITS
    from labqfl.fl.masks import mask_graph
    from labqfl.keystore import KeyStore

    kdir = make_stores(NAMES, 16 * N_WORDS + REFS_TAG_BITS)  # one round's key per pair
    _, (fr, updates) = _round(local_grid, False, spoil={"C4": "short"}, keystore=str(kdir))
    assert fr.dropped_after_masking == ["C4"] and "has 23 values, expected 24" in fr.dropped_reasons["C4"]
    assert fr.reveal_bits == 4 * 16 * N_WORDS
    expected = np.mean([updates[c] for c in NAMES if c != "C4"], axis=0)
    assert np.max(np.abs(fr.aggregate - expected)) < 1e-3
    for p in mask_graph(NAMES):
        for node in p.split("-"):
            with KeyStore.for_node(node, kdir) as st:
                assert st.available_bits(p, "fl") == 0, (p, node)
