"""Training that waits for key over node processes (issue 22 item 3, `labqfl run`'s default path):
the first acquisition over the nodes holds fewer rounds of key than requested, so before the round
that starves the job makes a top-up acquisition over node processes (optics, detector, one per
client) while the FL server node and the SuperNodes wait, then the next segment of rounds trains
from the same model. Keys stay consume-once at both ends across the top-up."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.keystore import KeyStore

# q = 32: 32·24 = 768 key bits per round on the one pair; 0.015 s of the small station (just above
# the block-size rule's first block) delivers ~1 000 bits: round 1 runs, round 2 waits for a top-up
ROUNDS = 2
ARGS = ["--duration", "0.015", "--rounds", str(ROUNDS), "--q", "32", "--eps-sec", "1e-4"]


def _mask_refs(store: Path, pair: str) -> list[tuple[str, int, int]]:
    """(block ID, offset, length) of every mask pad a node's store handed out or reserved (read-only SQL;
    refs name bits, they hold none)."""
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT refs FROM deliveries WHERE pair = ? AND purpose != 'auth' AND state != 'released'",
                           (pair,)).fetchall()
    finally:
        con.close()
    return [(str(b), int(o), int(n)) for (refs,) in rows for b, o, n in json.loads(refs)]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_starving_run_over_nodes_waits_for_key_and_completes_every_round(small_station_file, tmp_path):
    data, runs = tmp_path / "data", tmp_path / "runs"
    r = CliRunner().invoke(app, ["run", "--config", str(small_station_file), *ARGS, "--data-dir", str(data),
                                 "--out", str(runs), "--json"])
    assert r.exit_code == 0, r.output
    _check_run(json.loads(r.stdout), data)


def _check_run(m: dict, data: Path) -> None:
    """What a complete starving run over the nodes must show (``m``: its metrics, ``data``: its --data-dir)."""
    assert m["status"] == "complete" and m["acquisition"]["path"] == "nodes"
    t = m["train"]
    assert t["rounds_run"] == ROUNDS and [x["round"] for x in t["rounds"]] == list(range(1, ROUNDS + 1))
    per_round = 32 * t["n_params"]

    # the run waited before a later round, with a top-up over nodes, and the plan comparison says when
    w = t["key_waits"]
    assert w["rounds_waited"] >= 1 and w["first_wait_round"] >= 2 and w["top_ups"] >= w["rounds_waited"]
    assert w["wait_s_total"] > 0 and w["station_s_total"] > 0
    assert not t["rounds"][0]["key_waited"]
    for x in t["rounds"]:
        assert x["key_waited"] == (x["key_top_ups"] > 0)
        if x["key_waited"]:
            assert x["key_wait_s"] > 0 and x["key_wait_station_s"] > 0 and x["key_starved_pairs"] == ["C1-C2"]
    acqs = m["acquisitions"]
    assert len(acqs) == 1 + w["top_ups"] and all(a["complete"] and a["acquisition_id"].startswith("nodes/") for a in acqs)
    assert len({a["acquisition_id"] for a in acqs}) == len(acqs)  # every top-up a new acquisition
    assert [a.get("top_up", {}).get("top_up") for a in acqs[1:]] == list(range(1, w["top_ups"] + 1))
    assert m["plan"]["comparison"]["key_waits"]["measured_first_wait_round"] == w["first_wait_round"]
    for top in w["acquisitions"]:
        assert top["duration_s"] == top["plan"]["duration_s"] and top["pairs"]["C1-C2"]["delivered_bits"] > 0
    # one Flower run per segment of rounds on the same FL nodes, which all stopped with 0
    nodes = t["nodes"]
    segs = nodes["segments"]
    assert len(segs) == 1 + w["rounds_waited"] and segs[0]["first_round"] == 1 and segs[-1]["last_round"] == ROUNDS
    assert all(b["first_round"] == a["last_round"] + 1 for a, b in zip(segs, segs[1:], strict=False))
    assert set(nodes["exit_codes"].values()) == {0}
    run_dir = Path(m["run_dir"])
    assert (run_dir / "nodes" / "top-up-1" / "C1.log").is_file()

    # consume-once across the top-up: consumed = distilled (first + top-ups) − remaining, at both ends
    k = m["keys"]["pairs"]["C1-C2"]
    assert k["consumed_bits"] == ROUNDS * per_round == t["key_bits_per_pair_total"]
    assert k["distilled_bits_top_ups"] == sum(x["pairs"]["C1-C2"]["delivered_bits"] for x in w["acquisitions"]) > 0
    assert k["consumed_bits"] == k["distilled_bits"] - k["remaining_bits"]
    for node in ("C1", "C2"):
        with KeyStore.for_node(node, data) as st:
            acc = st.accounting()["C1-C2"]
        assert sum(v for p, v in acc["consumed"].items() if p != "auth") == k["consumed_bits"]
        assert sum(v for p, v in acc["available"].items() if p != "auth") == k["remaining_bits"]
        assert acc["reserved"] == {}
    # each pad bit handed out once, and C2 consumed exactly the bits C1 took, some from the top-up's blocks
    r1, r2 = _mask_refs(data / "keystore" / "C1.sqlite", "C1-C2"), _mask_refs(data / "keystore" / "C2.sqlite", "C1-C2")
    positions = [(b, i) for b, off, n in r1 for i in range(off, off + n)]  # every pad bit: (block, index)
    assert len(positions) == ROUNDS * per_round == len(set(positions)), "a key bit was handed out twice"
    assert sorted(r1) == sorted(r2)
    # the first acquisition alone could not pay for the pads: some came from the top-up's blocks
    assert m["distill"]["pairs"]["C1-C2"]["delivered_bits"] < ROUNDS * per_round
    assert len({b for b, _, _ in r1}) >= 2

    html = (run_dir / "report.html").read_text()
    assert "Waits for key" in html


def test_a_flower_segment_names_rounds_inside_the_run():
    from labqfl.errors import ConfigError
    from labqfl.fl.flower.spec import FlowerSpec

    FlowerSpec(rounds=3, first_round=2, last_round=3)
    FlowerSpec(rounds=3, first_round=3)  # last_round 0: to the run's last round
    for first, last in ((0, 2), (3, 2), (2, 4), (4, 0)):
        with pytest.raises(ConfigError, match=f"first_round {first} and last_round {last} must satisfy"):
            FlowerSpec(rounds=3, first_round=first, last_round=last)


class _Net:
    """Stands in for a running :class:`~labqfl.nodes.fl.FlNetwork`: each ``train`` answers as a
    ServerApp would for the spec's rounds, final parameters = [last round]."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, list[float] | None]] = []

    def train(self, config: dict, timeout_s: float, init_params: list[float] | None = None) -> dict:
        from labqfl.fl.flower.spec import FlowerSpec

        spec = FlowerSpec.from_config(config)
        self.calls.append((spec.first_round, spec.last_round, init_params))
        rounds = list(range(spec.first_round, spec.last_round + 1))
        return {"rounds": [{"round": r} for r in rounds], "flower": [{"round": r} for r in rounds],
                "final_params": [float(spec.last_round)], "wall_s": 1.5,
                "initial_test_accuracy": spec.first_round / 10, "final_test_accuracy": spec.last_round / 10}


def test_segments_chain_their_parameters_and_rounds():
    from labqfl.fl.flower.spec import FlowerSpec
    from labqfl.nodes.common import NodeError
    from labqfl.nodes.runjob import _train_segments

    net, done = _Net(), []
    spec = FlowerSpec(rounds=5)
    res = _train_segments(net, spec, start_round=2, init_params=[0.5], timeout_s=10.0,
                          before_segment=lambda r: min(r + 1, 5), on_segment=done.append, report=lambda *a: None)
    # a resumed run from round 2: segments 2-3 and 4-5, each from the previous one's final parameters
    assert net.calls == [(2, 3, [0.5]), (4, 5, [3.0])]
    assert [r["round"] for r in res["rounds"]] == [2, 3, 4, 5] and len(done) == 2
    assert res["initial_test_accuracy"] == 0.2 and res["final_test_accuracy"] == 0.5 and res["final_params"] == [5.0]
    assert res["wall_s"] == 3.0 and [(s["first_round"], s["last_round"]) for s in res["segments"]] == [(2, 3), (4, 5)]
    with pytest.raises(NodeError, match="segment from round 1 to round 0"):
        _train_segments(_Net(), spec, start_round=1, init_params=None, timeout_s=10.0,
                        before_segment=lambda r: r - 1, on_segment=None, report=lambda *a: None)
