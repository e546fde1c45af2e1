"""Review s38 user F10/F12: `labqfl keys status` (human) printed each pair's 5-line security statement under the pair
at both its nodes (12 times for 4 nodes, 197 lines), and `--node C9` named the nodes as Python lists
("no key store for node(s) ['C9'] … found ['C1', 'C2', …]"). Each distinct statement is printed once now, numbered,
with its pairs; each pair's line refers to it. Rendering only: the JSON is unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labqfl.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, small_station_writer: Any) -> Path:
    tmp = tmp_path_factory.mktemp("status")
    station = small_station_writer(tmp, name="small-status", file="small.toml")
    r = runner.invoke(app, ["acquire", "--config", str(station), "--duration", "0.2", "--out", str(tmp / "rec.h5"),
                            "--data-dir", str(tmp / "data"), "--json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["distill", str(tmp / "rec.h5"), "--data-dir", str(tmp / "data"), "--out",
                            str(tmp / "runs"), "--json"])
    assert r.exit_code == 0, r.output
    return tmp / "data"


def test_each_security_statement_is_printed_once(data: Path) -> None:
    doc = json.loads(runner.invoke(app, ["keys", "status", "--data-dir", str(data), "--json"]).stdout)
    statement = " ".join(doc["nodes"]["C1"]["provenance"]["C1-C2"]["security"].split())
    assert " ".join(doc["nodes"]["C2"]["provenance"]["C1-C2"]["security"].split()) == statement  # both ends
    r = runner.invoke(app, ["keys", "status", "--data-dir", str(data)])
    assert r.exit_code == 0, r.output
    text = " ".join(r.stderr.split())
    assert text.count(statement) == 1, text
    assert f"(1) C1-C2: {statement}" in text
    # one provenance line for the pair's two stores (review s40 user LOW-3: one per store and pair before)
    assert text.count("provenance of C1-C2 (distilled blocks by physical layer/randomness:") == 1
    assert text.count("security statement (1) below") == 1 and text.count("weakest block: protocol") == 1


def test_missing_nodes_are_named_as_words(data: Path) -> None:
    r = runner.invoke(app, ["keys", "status", "--data-dir", str(data), "--node", "C9"])
    assert r.exit_code == 1
    assert f"no key store for node(s) C9 under {data}; found C1, C2" in " ".join(r.stderr.split())
    assert "['" not in r.stderr
