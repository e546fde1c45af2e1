"""``labqfl gui --screenshot --tab nodes --json`` reports the Nodes panel under stable snake_case keys (session 35):
its node table was keyed by the table's column titles ("Node", "Role", "Address", "State", the state and its
detail in one string), and its pairs named the key QBER and key rate otherwise than ``labqfl node up --json``."""

from __future__ import annotations

import re
from typing import Any

import labqfl.gui.app as gui_app

from labqfl.app.nodes import NodeAcquisition, NodeStatus, PairOutcome

NODES = [NodeStatus("optics", "optics", "127.0.0.1:5001", "answering"),
         NodeStatus("C1", "client", "127.0.0.1:5003", "stopped", "exit code 0")]
PAIR = PairOutcome(pair="C1-C2", status="key", sifted_bits=90_000, qber=0.012, final_key_bits=20_000,
                   key_rate_bps=100_000.0, blocks=2, aborted_blocks=0, security="simulated: no physical security",
                   information_theoretic=False, provenance_source="blocks", provenance="simulated/csprng")


def test_the_nodes_report_has_snake_case_keys_named_as_the_other_json_outputs(qtbot, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    app = gui_app._app()
    ctl, win = gui_app.build()
    qtbot.addWidget(win)
    panel = win.nodes_panel

    def opened(*a: Any, **k: Any) -> None:  # the set opens: the runner holds it, the table lists its nodes
        panel.runner.nodes = object()
        panel._show_nodes(NODES)

    monkeypatch.setattr(gui_app, "_open_nodes", opened)
    monkeypatch.setattr(panel, "acquire", lambda: setattr(panel, "results", NodeAcquisition(
        "nodes/1", 0.2, 1.5, {"C1-C2": PAIR})))
    try:
        rep = gui_app._run_nodes(app, win, None, "local", None, None, None)
    finally:
        panel.runner.nodes = None
    assert rep["nodes"] == {
        "optics": {"node": "optics", "role": "optics", "address": "127.0.0.1:5001", "state": "answering", "detail": ""},
        "C1": {"node": "C1", "role": "client", "address": "127.0.0.1:5003", "state": "stopped",
               "detail": "exit code 0"}}
    pair = rep["pairs"]["C1-C2"]
    # labqfl node up --json's names (labqfl.nodes.launch.summarize) for the key QBER and the secure key rate
    assert pair["error_rate_X_key"] == 0.012 and pair["secure_key_rate_bps"] == 100_000.0
    assert "qber" not in pair and "key_rate_bps" not in pair
    assert {"status", "sifted_bits", "final_key_bits", "blocks", "aborted_blocks", "security"} <= set(pair)
    # identifiers, never a column title (error_rate_X_key keeps the basis's capital, as node up's)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*(_X_key)?", k) for d in (*rep["nodes"].values(), pair) for k in d)
    assert (rep["acquisition"], rep["duration_s"]) == ("nodes/1", 0.2)
