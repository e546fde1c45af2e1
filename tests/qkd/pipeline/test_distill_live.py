"""``labqfl distill --live`` streams from the Station's time tagger (the CLI never builds the
simulator itself; tests/core/test_import_graph.py): both ends hold the same key blocks."""

from __future__ import annotations

import json

from qkdpp_helpers import small_station
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.keystore import KeyStore
from labqfl.runs import dump_toml

PAIR = "C1-C2"


def test_live_distillation_through_the_station(tmp_path) -> None:
    cfg = small_station()
    toml = tmp_path / "station.toml"
    toml.write_text(dump_toml(cfg.model_dump(mode="json", exclude_none=True)), encoding="utf-8")
    res = CliRunner().invoke(app, ["distill", "--live", "--duration", "0.08", "--config", str(toml),
                                   "--block-bits", "40000", "--data-dir", str(tmp_path / "data"),
                                   "--out", str(tmp_path / "runs"), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["source"] == "live (simulated station)"
    p = data["pairs"][PAIR]
    assert p["final_key_bits"] > 0, p
    held = []
    for n in ("C1", "C2"):
        with KeyStore.for_node(n, tmp_path / "data") as st:
            held.append({b["block_id"]: b["nbits"] for b in st.blocks(PAIR)})
    assert held[0] == held[1]  # both ends hold the same blocks under the same IDs
    assert sum(held[0].values()) >= p["final_key_bits"]
