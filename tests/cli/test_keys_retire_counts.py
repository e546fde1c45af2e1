"""Retired blocks are not counted as blocks of the pool (builder's report, session 39): ``keys status``'s block
count and :func:`labqfl.provenance.store_pair_provenance` count them apart (``retired_blocks``), and say so; their
provenance still enters the weakest (conservative: they may have handed out key before)."""

from __future__ import annotations

import json
from pathlib import Path

from labqfl.keystore import KeyStore
from labqfl.provenance import store_pair_provenance, summarize_blocks
from tests.cli.test_keys_retire import PAIR, _data_dir, _run


def test_status_and_provenance_leave_retired_blocks_out_of_the_counts(tmp_path: Path) -> None:
    d, _ = _data_dir(tmp_path)
    before = json.loads(_run("status", "--data-dir", str(d), "--json").output)
    assert before["nodes"]["C2"]["pairs"][PAIR]["blocks"] == 2
    assert _run("retire", "blk-b", "--data-dir", str(d)).exit_code == 0
    after = json.loads(_run("status", "--data-dir", str(d), "--json").output)
    for node in ("C1", "C2"):
        pair = after["nodes"][node]["pairs"][PAIR]
        assert pair["blocks"] == 1 and pair["retired_blocks"] == 1 and pair["auth_refill_blocks"] == 1
    text = " ".join(_run("status", "--data-dir", str(d)).output.split())
    assert "1 retired, not counted" in text
    with KeyStore.for_node("C2", d, create=False) as st:
        prov = store_pair_provenance(st, PAIR)
    assert prov["unrecorded_blocks"] == 1 and prov["retired_blocks"] == 1


def test_a_retired_blocks_provenance_still_enters_the_weakest() -> None:
    strong = {"provenance": {"physical_layer": "hardware", "randomness": "qrng", "protocol": "BB84"}}
    weak = {"provenance": {"physical_layer": "simulated", "randomness": "seeded", "protocol": "BB84"}}
    rows = [{"block_id": "a", "meta": strong}, {"block_id": "b", "meta": weak}]
    sm = summarize_blocks(rows, retired=["b"])
    assert sm["retired_blocks"] == 1 and sum(sm["blocks"].values()) == 1
    assert sm["weakest"]["randomness"] == "seeded"
