"""Review s36 user F9: for one task ``labqfl train --keys qkd`` said "key bits per pair per round 192" and
``labqfl run``'s plan "448 bits", and neither said why (over nodes every pair also spends a 256-bit refs tag key
each round, docs/secure_aggregation.md §9). The plan, ``train`` and ``run`` say where the bits go now."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from rich.console import Console
from typer.testing import CliRunner

from labqfl.cli import app

runner = CliRunner()


def test_plan_breaks_the_key_per_pair_down() -> None:
    nodes = runner.invoke(app, ["plan", "--rounds", "10"], env={"COLUMNS": "250"})
    local = runner.invoke(app, ["plan", "--rounds", "10", "--in-process"], env={"COLUMNS": "250"})
    assert nodes.exit_code == 0 and local.exit_code == 0, (nodes.output, local.output)
    assert "key per graph pair and round: 448 bits (192 masks + 256 refs tag key over nodes" in " ".join(
        (nodes.stdout + nodes.stderr).split())
    assert "key per graph pair and round: 192 bits (masks only: in process, no refs tag key)" in " ".join(
        (local.stdout + local.stderr).split())


def test_plan_records_the_refs_tag_share() -> None:
    from labqfl.config import load_station_config
    from labqfl.planning import make_plan

    cfg = load_station_config()
    assert make_plan(cfg, "mnist-qnn", 8, 10, nodes=True).refs_tag_bits_per_pair_per_round == 256
    assert make_plan(cfg, "mnist-qnn", 8, 10, nodes=False).refs_tag_bits_per_pair_per_round == 0


def _render_train(summary: dict[str, Any]) -> str:
    from labqfl.cli.train import render_training

    con = Console(file=io.StringIO(), width=300, force_terminal=False)
    render_training(con, summary)
    return " ".join(con.file.getvalue().split())  # type: ignore[attr-defined]


def _summary(keys: str, per_pair: int, tag: int) -> dict[str, Any]:
    return {"task": "mnist-qnn", "rounds_requested": 3, "clients": 4, "q": 8, "key_source": keys,
            "final_test_accuracy": 0.97, "key_bits_per_pair_per_round": per_pair, "key_bits_total": 6 * 3 * per_pair,
            "key_bits_per_pair_per_round_parts": {"masks": per_pair - tag, "refs_tag": tag},
            "upload_bits_per_client_per_round": 192, "baseline_upload_bits_per_client_per_round": 768,
            "communication_saving": 0.75, "self_masks": {"enabled": False}, "privacy": None, "noise": None,
            "key_cost_per_round": {"key_bits_total": 1152, "pairs": 6, "paper_all_pairs_key_bits": 1152,
                                   "ratio_to_paper_all_pairs": 1.0},
            "security": "x", "run_dir": "r"}


def test_train_says_where_the_bits_go() -> None:
    local = _render_train(_summary("qkd", 192, 0))
    assert ("key bits per pair per round 192 (masks only: the local engine spends no refs tag key; over nodes, as "
            "labqfl run, each pair adds 256 per round)") in local
    flower = _render_train(_summary("qkd", 448, 256))
    assert "key bits per pair per round 448 (192 masks + 256 refs tag key, docs/secure_aggregation.md §9)" in flower


def test_train_summary_has_the_parts(tmp_path: Path) -> None:
    import json

    r = runner.invoke(app, ["train", "--task", "mnist-qnn", "--clients", "2", "--rounds", "1", "--q", "8",
                            "--keys", "csprng", "--out", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["key_bits_per_pair_per_round_parts"] == {"masks": doc["key_bits_per_pair_per_round"], "refs_tag": 0}


def test_run_says_where_the_key_went() -> None:
    from labqfl.cli.run import _render

    train = {"task": "mnist-qnn", "final_test_accuracy": 0.97, "rounds_run": 10, "key_bits_total": 26880,
             "key_source": "qkd", "security": "s", "rounds": [{"round": 10, "key_bits_per_pair": 448}],
             "nodes": {"flower": [{"round": 10, "tag_bits_per_pair": 256}]}}
    con = Console(file=io.StringIO(), width=300, force_terminal=False)
    _render(con, {"run": "r", "status": "complete", "train": train}, Path("run"))
    text = " ".join(con.file.getvalue().split())  # type: ignore[attr-defined]
    assert ("26,880 key bits used (key source: qkd; per pair and round 192 masks + 256 refs tag key, "
            "docs/secure_aggregation.md §9)") in text
