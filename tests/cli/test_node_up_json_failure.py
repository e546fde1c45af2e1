"""``labqfl node up --json`` puts a failure on stdout too (issue 16): a node that exited before it started gave one
``error:`` line on stderr and nothing on stdout, so a script reading the JSON got nothing to parse. Now stdout holds
one JSON object, ``error`` (the stderr line, as ``node acquire`` and ``labqfl station`` put a failure in their
JSON's ``error``) with ``node``, ``exit_code`` and ``node_error`` naming the node that did not start; exit 1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.nodes.launch import LocalNetwork


def test_a_node_that_exits_at_start_gives_json_naming_it(tmp_path: Path, small_station_file: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LocalNetwork, "warm_jit", lambda self: None)  # the launcher's own warm-up: not asked here
    work = tmp_path / "w"
    blocker = work / "nodes" / "C2" / "nodes" / "C2" / "pending"  # client C2's pending folder is a file: C2 exits
    blocker.parent.mkdir(parents=True)
    blocker.write_text("")
    r = CliRunner().invoke(app, ["node", "up", "--json", "--config", str(small_station_file), "--duration", "0.2",
                                 "--workdir", str(work)])
    assert r.exit_code == 1, r.output
    doc: dict[str, Any] = json.loads(r.stdout)  # the code before: stdout empty (JSONDecodeError)
    why = f"FileExistsError: [Errno 17] File exists: '{blocker}'"
    assert doc == {"error": f"node C2 exited with code 1 before it started: {why}", "node": "C2", "exit_code": 1,
                   "node_error": why, "workdir": str(work)}
    assert r.stderr.strip().splitlines()[-1] == f"error: {doc['error']}"


def test_a_failure_of_no_node_gives_json_with_null_node(tmp_path: Path, small_station_file: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from labqfl.nodes.common import NodeError

    def refused(*_a: Any, **_k: Any) -> dict[str, Any]:
        raise NodeError("acquisition 1234: the detector refused ctl/run: busy")

    monkeypatch.setattr("labqfl.nodes.launch.up", refused)
    r = CliRunner().invoke(app, ["node", "up", "--json", "--config", str(small_station_file), "--duration", "0.2"])
    assert r.exit_code == 1, r.output
    assert json.loads(r.stdout) == {"error": "acquisition 1234: the detector refused ctl/run: busy", "node": None,
                                    "exit_code": None, "node_error": None, "workdir": None}
    assert r.stderr.strip() == "error: acquisition 1234: the detector refused ctl/run: busy"
