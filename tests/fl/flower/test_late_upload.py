"""A dropped client's upload delivered late on the Flower engine: the server holds the late masked
upload and every pair key its partners revealed. Without self-masks that recovers the client's
quantised update exactly; with self-masks what is left is uniform (chi-square), and no unmask
request ever asked for a share of the dropped client's self-mask."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from scipy import stats

from labqfl.fl.flower.client import labqfl_secagg_mod, node_name
from labqfl.fl.flower.inprocess import InProcessGrid
from labqfl.fl.flower.keys import REFS_TAG_BITS
from labqfl.fl.flower.server import LabqflServer
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.masks import pair_mask
from labqfl.fl.quantize import quantize, weight_ranges

N_WORDS = 2048
LATE = "C3"


def _fixed_update_app(updates: dict[str, np.ndarray]) -> ClientApp:
    app = ClientApp()

    @app.train(mods=[labqfl_secagg_mod])
    def train(msg: Message, context: object) -> Message:
        return Message(RecordDict({"update": ArrayRecord({"update": Array(updates[node_name(context)])}),
                                   "metrics": MetricRecord({"num_examples": 100, "train_loss": 0.0})}), reply_to=msg)

    return app


def _late_view(self_masks: bool, keystore: str) -> tuple[np.ndarray, np.ndarray, list[tuple[str, Message, Message]]]:
    """(server's view of the late upload after removing the revealed masks, the late client's
    quantised update, every exchange of the round)."""
    names = [f"C{i}" for i in range(1, 6)]
    rng = np.random.default_rng(3)
    updates = {c: rng.normal(0, 0.3, N_WORDS) for c in names}
    # mnist-lenet5: a model of >= N_WORDS parameters (a node refuses n_params above its model's, review s34 F7)
    spec = FlowerSpec(task="mnist-lenet5", clients=5, q=8, rounds=1, keys="qkd", keystore_dir=keystore, clip=1.0,
                      rounding="nearest", self_masks=self_masks)
    srv = LabqflServer(spec)

    def lose(name: str, msg: Message) -> bool:
        rec = msg.content.config_records.get("labqfl")
        return name == LATE and rec is not None and rec.get("stage") == "mask"

    grid = InProcessGrid(_fixed_update_app(updates), names, {"labqfl-keystore": keystore}, lose, keep=True)
    fr = srv.round(grid, 1, np.zeros(N_WORDS), {c: nid for nid, c in grid.names.items()}, dict.fromkeys(names, 100.0))
    assert fr.dropped_after_masking == [LATE]
    assert grid.exchanged is not None
    # the late upload arrives after the round; the server also holds the revealed pair keys
    late = np.asarray(grid.late[LATE][0].content.array_records["masked"]["masked"].numpy())
    revealed = {p: np.asarray(a.numpy()) for _, _, rep in grid.exchanged if "revealed" in rep.content.array_records
                for p, a in rep.content.array_records["revealed"].items()}
    assert sorted(revealed) == [f"C{i}-C3" for i in (1, 2)] + [f"C3-C{i}" for i in (4, 5)]
    view = late - pair_mask(LATE, revealed, N_WORDS, 8)  # uint8: mod 2^8
    b = srv.cfg.check_bit_budget(5)
    levels = int(weight_ranges([100.0] * 5, b)[2])
    v, _ = quantize(updates[LATE], clip=1.0, levels=levels, q=8, rounding="nearest")
    return view, v, grid.exchanged


def test_flower_late_upload_is_exposed_without_self_masks(make_stores) -> None:
    names = [f"C{i}" for i in range(1, 6)]
    kdir = make_stores(names, 8 * N_WORDS + REFS_TAG_BITS)
    view, v, _ = _late_view(False, str(kdir))
    assert np.array_equal(view, v)  # the server learns the dropped client's quantised update


def test_flower_late_upload_stays_uniform_with_self_masks(make_stores) -> None:
    names = [f"C{i}" for i in range(1, 6)]
    kdir = make_stores(names, (8 + 2 * 9) * N_WORDS + REFS_TAG_BITS)
    view, v, exchanged = _late_view(True, str(kdir))
    # the same computation as above now leaves v + s mod 2^8 with s uniform: nothing of v survives
    counts = np.bincount(view, minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-4
    assert np.mean(view == v) < 0.02  # 1/256 expected; 1.0 without self-masks
    # v itself is far from uniform (a Gaussian update, quantised): the test can tell them apart
    assert stats.chisquare(np.bincount(v, minlength=256)).pvalue < 1e-12
    # no unmask request asked any survivor for a share of the late client's self-mask
    for _, msg, _ in exchanged:
        rec = msg.content.config_records.get("labqfl")
        if rec is not None and rec.get("stage") == "unmask":
            assert LATE not in list(rec.get("share_owners", [])) and LATE in list(rec["dropped"])
