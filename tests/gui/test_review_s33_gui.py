"""Review s33 (GUI as a new user and as a security reviewer), the GUI findings.

M1: the Nodes panel proposed 0.5 s, which the block-size rule refuses on the default station (it
needs ≥ 0.818 s): "Start local set" failed with the defaults, and so did ``labqfl gui --screenshot
--tab nodes`` and docs/gui.md's ``--duration 0.2`` command. M2: the only provenance line described
the station config, not the keys in the pools shown (a pool of seeded, predictable keys read
"simulated/csprng"). M3 (GUI part): the Training tab had no security statement. L4: "no secret key
yet: every block so far was too small…" before any block. L5: the key-rate column mixed "1.1e+04
bit/s" and "6511 bit/s". L6: the empty accuracy axis, labelled "%", showed 0.1–0.9.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labqfl.app.nodes import NodeSet, NodeSetError, local_settings
from labqfl.config import load_station_config
from labqfl.keystore import KeyStore
from labqfl.planning import station_toml
from labqfl.provenance import CSPRNG_MASKS, IT_PHRASE, LOCAL_ENGINE_TRUST, Provenance
from labqfl.qkd.blocksize import plan_blocks

DOCS = Path(__file__).resolve().parents[2] / "docs" / "gui.md"


# -- M1 ------------------------------------------------------------------------------------------------
def test_the_nodes_panels_default_duration_is_accepted_by_the_block_rule_on_the_default_station(make_win) -> None:  # type: ignore[no-untyped-def]
    cfg = load_station_config(None)
    p = make_win(cfg).nodes_panel
    need = plan_blocks(cfg, None).needed_duration_s
    assert need < p.duration.value() <= 2 * need  # the rule's minimum with a margin, not a fixed guess
    settings, plan = local_settings(cfg, p.duration.value())  # 0.5 s: NodeSetError "too short for the block-size rule"
    assert plan.sufficient and settings.pair_block_slots


def test_the_proposed_duration_follows_the_chosen_station_but_keeps_a_typed_value(make_win, small_config,
                                                                                  tmp_path) -> None:  # type: ignore[no-untyped-def]
    from labqfl.gui.panels.nodes import default_duration_s

    p = make_win().nodes_panel
    small = tmp_path / "small.toml"
    small.write_text(station_toml(small_config))
    proposed = default_duration_s(small)
    assert proposed != p.duration.value()
    p.set_local(small)
    assert p.duration.value() == pytest.approx(proposed)
    local_settings(small_config, p.duration.value())  # accepted on that station too
    p.duration.setValue(3.0)
    p.set_local(None)
    assert p.duration.value() == 3.0


def test_the_gui_command_line_duration_wins_over_the_proposal(make_win, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import labqfl.gui.app as gui_app

    asked: list[dict[str, Any]] = []

    def fake(cls: type, station: Any, **kw: Any) -> NodeSet:
        asked.append(kw)
        raise NodeSetError("not started in this test")

    monkeypatch.setattr(NodeSet, "start_local", classmethod(fake))
    w = make_win()
    gui_app._open_nodes(w, None, "local", None, None, 2.5)
    assert w.nodes_panel.duration.value() == 2.5


def test_the_documented_nodes_commands_use_durations_the_default_station_accepts() -> None:
    need = plan_blocks(load_station_config(None), None).needed_duration_s
    cmds = [ln for ln in DOCS.read_text().splitlines() if ln.startswith("labqfl gui") and "--nodes" in ln]
    assert cmds
    for ln in cmds:
        for d in re.findall(r"--duration\s+([0-9.]+)", ln):  # docs/gui.md:136 said 0.2
            assert float(d) >= need, ln


# -- M2 ------------------------------------------------------------------------------------------------
def _add(data_dir: Path, pair: str, prov: Provenance | None, n: int = 1, nbits: int = 4000) -> None:
    a, b = pair.split("-")
    rng = np.random.default_rng(len(pair) + n)
    meta: dict[str, Any] = {"eps_sec": 1e-10}
    if prov is not None:
        meta["provenance"] = prov.as_dict()
    with KeyStore.for_node(a, data_dir) as sa, KeyStore.for_node(b, data_dir) as sb:
        for _ in range(n):
            bits = rng.integers(0, 2, nbits, dtype=np.uint8)
            bid = sa.add_block(pair, bits, run_id="test", meta=meta)
            sb.add_block(pair, bits, block_id=bid, run_id="test", meta=meta)


def test_the_key_pool_line_states_the_provenance_of_the_stored_blocks_not_the_config(qtbot, make_win, small_config,
                                                                                   tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    _add(data, "C1-C2", Provenance("simulated", "csprng", eps_total=1e-10), n=3)
    _add(data, "C1-C2", Provenance("simulated", "seeded", eps_total=1e-10), n=1)
    w = make_win(small_config)  # its clients' randomness: csprng (the config alone says simulated/csprng)
    lab = w.live_panel.provenance_label
    assert "no key block in the key stores yet" in lab.text()
    w.ctl.refresh_pools()
    qtbot.waitUntil(lambda: "seeded" in lab.text(), timeout=10_000)
    text = lab.text()
    assert "C1-C2: 3 blocks simulated/csprng (no physical security), 1 block simulated/seeded (not secret)" in text
    assert "weakest of 2 provenances: not secret" in text and IT_PHRASE not in text
    assert "Keys distilled here" not in text  # the config's line only while no block is stored
    assert lab.styleSheet()  # shown in the error colour: the pool holds key that is not secret
    # the same summaries `labqfl keys status` prints (labqfl.provenance.store_pair_provenance)
    from labqfl.gui.workers.acquisition import read_key_stores

    pools, prov = read_key_stores(small_config, data)
    assert prov["C1-C2"]["blocks"] == {"simulated/csprng": 3, "simulated/seeded": 1}
    assert sum(pools["C1-C2"].values()) == 4 * 4000


# -- M3 (GUI) -------------------------------------------------------------------------------------------
@pytest.mark.slow  # one 1-round training (model and data load)
def test_the_training_tab_shows_the_runs_security_statement(qtbot, make_win, small_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from PySide6.QtCore import Qt

    data = tmp_path / "data"
    _add(data, "C1-C2", Provenance("simulated", "seeded", eps_total=1e-10), n=2, nbits=20_000)
    w = make_win(small_config)
    tp = w.training_panel
    assert tp.security.text() == f"Masks with the keys chosen: {CSPRNG_MASKS}"
    finished: list[dict[str, Any]] = []
    w.ctl.trainingFinished.connect(finished.append)
    tp.keys.setCurrentText("qkd")
    qtbot.waitUntil(lambda: "not secret" in tp.security.text(), timeout=10_000)  # the stored blocks, before a run
    tp.rounds.setValue(1)
    tp.clients.setValue(2)
    qtbot.waitUntil(tp.start_btn.isEnabled, timeout=10_000)
    qtbot.mouseClick(tp.start_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(finished) or bool(w.errors), timeout=180_000)
    assert not w.errors and not finished[0].get("stopped")
    sec = finished[0]["security"]  # TrainingSetup.summary's, as `labqfl train --json`
    assert sec.startswith("one-time-pad masks with QKD keys") and "not secret" in sec
    assert sec.endswith(LOCAL_ENGINE_TRUST)  # review s34 F8: the GUI trains in process
    assert tp.security.text() == f"Masks of this run: {sec}"


# -- L4, L5, L6 -------------------------------------------------------------------------------------------
def _metrics(blocks: int, rate: float) -> dict[str, Any]:
    return {"sifted_bits": 1000, "block_fill": 0.5, "qber_x": 0.01 if blocks else None, "qber_y": 0.01,
            "blocks": blocks, "aborted_blocks": blocks, "final_key_bits": 0, "key_rate_bps": rate,
            "dropped_slots": 0, "last_abort": "too small" if blocks else "", "first_key_eta_s": 0.4}


def test_the_key_rate_note_says_no_block_yet_before_the_first_block(make_win, small_config) -> None:  # type: ignore[no-untyped-def]
    lp = make_win(small_config).live_panel
    lp._on_pairs({"t_s": 0.2, "pairs": {"C1-C2": _metrics(0, 0.0)}})
    assert lp.rate_zero.isVisible() and lp.rate_zero.toPlainText() == "no block distilled yet"
    lp._on_pairs({"t_s": 0.9, "pairs": {"C1-C2": _metrics(1, 0.0)}})
    assert lp.rate_zero.toPlainText().startswith("no secret key yet: every block so far was too small")


def test_the_key_rate_column_uses_one_notation(make_win, small_config) -> None:  # type: ignore[no-untyped-def]
    from labqfl.gui.panels._common import fmt_kbps

    assert [fmt_kbps(x) for x in (11002.77, 10150.0, 6511.0, 123_456.0, 1_234_567.0, 0.0, 12.3)] == [
        "11.0 kbit/s", "10.2 kbit/s", "6.51 kbit/s", "123 kbit/s", "1,235 kbit/s", "0 kbit/s", "0.0123 kbit/s"]
    lp = make_win(small_config).live_panel
    lp._on_pairs({"t_s": 1.0, "pairs": {"C1-C2": _metrics(1, 11002.77)}})
    assert lp.table.item(0, lp.PAIR_COLS.index("Key rate")).text() == "11.0 kbit/s"  # was "1.1e+04 bit/s"


def test_the_empty_accuracy_axis_spans_0_to_100_percent(make_win, small_config) -> None:  # type: ignore[no-untyped-def]
    tp = make_win(small_config).training_panel
    lo, hi = tp.acc_plot.getPlotItem().viewRange()[1]
    assert lo <= 0 and 100 <= hi < 110  # was 0–1 on an axis labelled "%"
