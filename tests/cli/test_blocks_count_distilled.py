"""Review s36 user F5: one distilled block per pair was reported as 2 or 3 "blocks" (``keys status``,
the provenance in ``distill``/``run``/report/ETSI status, the GUI's key-pool text), because the key store keeps a
distilled block's authentication refill (``meta.kind = "auth-refill"``) and the pair's pre-shared secret as rows
of its ``blocks`` table. Every user-facing "blocks" counts distilled blocks now; the authentication rows are
shown on their own. The stored rows are unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.provenance import summarize_blocks

runner = CliRunner()
PROV = {"physical_layer": "simulated", "randomness": "csprng"}


def test_summary_counts_an_auth_refill_apart_from_its_block() -> None:
    """A block, its auth refill and the pre-shared secret, as the store holds them: one distilled block."""
    rows = [{"meta": {"kind": "preshared-auth", "simulated": True}},
            {"meta": {"kind": "auth-refill", "key_block": "b1", "provenance": PROV}},
            {"meta": {"provenance": PROV}}]
    sm = summarize_blocks(rows)
    assert sm["blocks"] == {"simulated/csprng": 1}
    assert (sm["auth_refill_blocks"], sm["preshared_blocks"], sm["unrecorded_blocks"]) == (1, 1, 0)
    assert sm["security"].startswith("no physical security")


@pytest.fixture(scope="module")
def distilled(tmp_path_factory: pytest.TempPathFactory, small_station_writer: Any) -> tuple[Path, dict[str, Any]]:
    """``labqfl distill --live --duration 0.2 --json`` on the small station (tests/conftest.py): (data dir, its JSON)."""
    tmp = tmp_path_factory.mktemp("blocks-count")
    data = tmp / "d"
    station = small_station_writer(tmp, name="small-blocks-station", file="s.toml")
    r = runner.invoke(app, ["distill", "--live", "--duration", "0.2", "--config", str(station), "--data-dir",
                            str(data), "--out", str(tmp / "runs"), "--json"])
    assert r.exit_code == 0, r.output
    return data, json.loads(r.stdout)


def _stored_blocks(doc: dict[str, Any]) -> dict[str, int]:
    return {p: v["blocks"] - v["aborted_blocks"] for p, v in doc["pairs"].items()}


def test_distill_provenance_counts_distilled_blocks(distilled) -> None:
    _, doc = distilled
    stored = _stored_blocks(doc)
    assert sum(stored.values()) >= 1
    pv = doc["provenance"]
    assert sum(pv["blocks"].values()) == sum(stored.values())
    assert pv["auth_refill_blocks"] == sum(stored.values())
    for p, n in stored.items():
        assert sum(pv["pairs"][p]["blocks"].values()) == n


def test_keys_status_counts_distilled_blocks(distilled) -> None:
    data, doc = distilled
    stored = _stored_blocks(doc)
    r = runner.invoke(app, ["keys", "status", "--data-dir", str(data), "--json"])
    assert r.exit_code == 0, r.output
    st = json.loads(r.stdout)
    for p, n in stored.items():
        ci = p.split("-")[0]
        acc = st["nodes"][ci]["pairs"][p]
        assert acc["blocks"] == n, acc
        assert (acc["auth_refill_blocks"], acc["preshared_blocks"]) == (n, 1)
    human = runner.invoke(app, ["keys", "status", "--data-dir", str(data)], env={"COLUMNS": "200"})
    text = " ".join(human.stderr.split())
    n = stored["C1-C2"]
    assert f"distilled blocks by physical layer/randomness: simulated/csprng {n};" in text
    assert f"{n} auth refill(s) from distilled blocks" in text


def test_gui_pool_text_counts_distilled_blocks() -> None:
    from labqfl.gui.panels.live import pool_provenance_text
    rows = [{"meta": {"kind": "preshared-auth", "simulated": True}}]
    for _ in range(3):
        rows += [{"meta": {"kind": "auth-refill", "provenance": PROV}}, {"meta": {"provenance": PROV}}]
    text = pool_provenance_text(None, {"C1-C2": summarize_blocks(rows)})
    assert "C1-C2: 3 blocks simulated/csprng" in text
    assert "authentication key: 1 pre-shared + 3 refill(s)" in text


def test_report_provenance_counts_distilled_blocks(tmp_path: Path) -> None:
    from labqfl.report import write_report
    from labqfl.runs import RunRecord

    rows = [{"meta": {"kind": "preshared-auth", "simulated": True}},
            {"meta": {"kind": "auth-refill", "provenance": PROV}}, {"meta": {"provenance": PROV}}]
    m = {"status": "complete", "keys": {"pairs": {"C1-C2": {"provenance": summarize_blocks(rows)}}}}
    with RunRecord.create("run", None, tmp_path, capture_log=False) as run:
        page = write_report(run, m).read_text()
    assert "<td>simulated/csprng: 1</td><td>1 pre-shared, 1 refill(s) from distilled blocks</td>" in page
