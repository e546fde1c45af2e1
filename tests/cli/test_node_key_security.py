"""``labqfl node up`` and ``node acquire`` say what each pair's key rests on (issue 16 item 5, review s35 F4).

Their JSON and table gave final key bits, rates and QBER with no word of the keys' security, while the GUI's
Nodes panel said it. Both now carry, per pair, ``security`` (the statement), ``information_theoretic`` and
``provenance`` (label), and ``security_source`` for the run, in the one wording of
:func:`labqfl.app.nodes.pair_security` (the Nodes panel's): ``node up`` from this acquisition's stored blocks
(with the pair's authentication caveat), ``node acquire`` from the station file (the stores are on other hosts).
The table prints one line for the run when every pair's statement is the same, else one per pair.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.cli.node import _render
from labqfl.provenance import IT_PHRASE

runner = CliRunner()


def _text(doc: dict[str, Any]) -> str:
    con = Console(file=io.StringIO(), width=400, force_terminal=False, highlight=False)
    _render(con, doc)
    return con.file.getvalue()


@pytest.fixture(scope="module")
def up_doc(tmp_path_factory: pytest.TempPathFactory, small_station_writer: Any) -> dict[str, Any]:
    """``labqfl node up --duration 0.2 --workdir W --json`` on the small station (CSPRNG clients)."""
    tmp = tmp_path_factory.mktemp("node-up-security")
    station = small_station_writer(tmp, name="small-node-security", file="small.toml")
    r = runner.invoke(app, ["node", "up", "--config", str(station), "--duration", "0.2", "--workdir", str(tmp / "w"),
                            "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_node_up_json_states_each_pairs_security_from_its_stored_blocks(up_doc: dict[str, Any]) -> None:
    assert up_doc["security_source"] == "blocks"
    for pair, d in up_doc["pairs"].items():
        assert d["final_key_bits"] > 0, pair
        assert d["provenance"] == "simulated/csprng", (pair, d)  # this acquisition's blocks: found by their record
        assert d["information_theoretic"] is False and d["information_theoretic_condition"] is None
        assert d["security"].startswith("no physical security: the quantum channel was simulated"), d["security"]
        assert "authentication bootstrapped from a secret labqfl generated" in d["security"]  # the store's caveat
        assert IT_PHRASE not in d["security"]


def test_node_up_table_says_it_in_one_line_for_a_uniform_run(up_doc: dict[str, Any]) -> None:
    text = " ".join(_text(up_doc).split())  # the console's wrapping undone
    (statement,) = {d["security"] for d in up_doc["pairs"].values()}
    assert f"key security, every pair (from the stored blocks): {statement}" in text, text


def _acquired(monkeypatch: pytest.MonkeyPatch) -> None:
    def result(*_: Any, **__: Any) -> dict[str, Any]:
        pair = {"final_key_bits": 30_000, "delivered_bits": 30_000, "sifted_bits": 200_000, "blocks": 1,
                "aborted_blocks": 0, "abort_reasons": [], "secure_key_rate_bps": 30_000.0,
                "error_rate": {"X_key": 0.0056}, "failed": "", "round_trips": 3, "times_s": {"sift": 0.1}}
        return {"acquisition": "nodes/test", "duration_s": 1.0, "wall_s": 2.0, "acquisition_wall_s": 1.5,
                "detector": {}, "pairs": {p: dict(pair) for p in ("C1-C2", "C1-C3", "C2-C3")}}

    monkeypatch.setattr("labqfl.nodes.launch.run_acquisition", result)


def test_node_acquire_states_it_from_the_station_file_per_pair_when_pairs_differ(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, small_station_writer: Any) -> None:
    """C2 seeded: its pairs' keys are public, C1-C3's are not; each pair says its own (JSON and text)."""
    _acquired(monkeypatch)
    station = small_station_writer(tmp_path, name="mixed", file="mixed.toml")
    text = station.read_text(encoding="utf-8")
    d = json.loads(json.dumps(__import__("tomllib").loads(text)))
    d["clients"].append({**d["clients"][1], "name": "C3", "seed": 1003})
    d["clients"][1]["randomness"] = "seeded"
    d["loop"]["segments_km"] = [0.2] * 4
    from labqfl.serialize import dump_toml

    station.write_text(dump_toml(d), encoding="utf-8")
    r = runner.invoke(app, ["node", "acquire", "--certs", "nocerts", "--config", str(station), "--detector",
                            "127.0.0.1:7001", "--optics", "127.0.0.1:7000", "--client=C1=127.0.0.1:7002",
                            "--client=C2=127.0.0.1:7003", "--client=C3=127.0.0.1:7004", "--duration", "1", "--json"])
    assert r.exit_code == 0, (r.output, r.exception)
    doc = json.loads(r.stdout)
    assert doc["security_source"] == "station"
    pairs = doc["pairs"]
    assert pairs["C1-C2"]["provenance"] == pairs["C2-C3"]["provenance"] == "simulated/seeded"
    assert pairs["C1-C2"]["security"].startswith("not secret: the clients' choices derive from the public seed")
    assert pairs["C1-C3"]["provenance"] == "simulated/csprng"
    assert pairs["C1-C3"]["security"].startswith("no physical security")
    assert not any(p["information_theoretic"] for p in pairs.values())
    lines = _text(doc).splitlines()
    head = lines.index("key security (from the station file; each client's `labqfl keys status` gives what its "
                       "stored blocks record):")
    assert lines[head + 1:head + 4] == [f"  {p}: {pairs[p]['security']}" for p in ("C1-C2", "C1-C3", "C2-C3")]
