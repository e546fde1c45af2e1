"""The Training tab with QKD mask keys (review s31, items 3–5): the Live tab's key pools follow the
key a training uses, the final summary stays the last word, and a training without keys cannot be
started (and when forced, fails at once in the window's words, out of its loading state)."""

from __future__ import annotations

import time

import numpy as np
from labqfl.gui.core import TrainingOptions, key_pools
from PySide6.QtCore import Qt

from labqfl.keystore import KeyStore


def _fill(data_dir, pair: str = "C1-C2", nbits: int = 20_000) -> None:  # type: ignore[no-untyped-def]
    a, b = pair.split("-")
    bits = np.random.default_rng(1).integers(0, 2, nbits, dtype=np.uint8)
    with KeyStore.for_node(a, data_dir) as sa, KeyStore.for_node(b, data_dir) as sb:
        bid = sa.add_block(pair, bits, purpose="general", run_id="test", meta={"eps_sec": 1e-10})
        sb.add_block(pair, bits, block_id=bid, purpose="general", run_id="test", meta={"eps_sec": 1e-10})


def _total(pools: dict, pair: str = "C1-C2") -> int:
    return sum(pools.get(pair, {}).values())


def test_qkd_training_refreshes_the_live_pools_and_keeps_its_summary(qtbot, make_win, small_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    _fill(data)
    w = make_win(small_config)
    tp, lp = w.training_panel, w.live_panel
    tp.keys.setCurrentText("qkd")  # asks for the pools
    qtbot.waitUntil(lambda: _total(lp._pools) == 20_000, timeout=10_000)
    assert tp.start_btn.isEnabled()
    tp.rounds.setValue(2)
    tp.clients.setValue(2)
    qtbot.mouseClick(tp.start_btn, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(tp.start_btn, Qt.MouseButton.LeftButton)  # a double click starts one run, no error dialog
    qtbot.waitUntil(lambda: w.errors or (not w.ctl.busy["training"] and tp.rounds_shown == 2), timeout=120_000)
    assert not w.errors
    stored = _total(key_pools(w.ctl.config, data))
    assert stored < 20_000  # the training took mask key from the stores
    qtbot.waitUntil(lambda: _total(lp._pools) == stored, timeout=5_000)  # the Live tab shows it
    assert lp.table.item(0, 8).text() != "—"
    qtbot.wait(300)  # a few more drains: nothing may overwrite the summary
    text = tp.status.text()
    assert text.startswith("finished: accuracy") and "key used" in text and "key left (min over pairs)" in text


def test_qkd_training_without_keys(qtbot, make_win, small_config) -> None:  # type: ignore[no-untyped-def]
    w = make_win(small_config)
    tp = w.training_panel
    tp.clients.setValue(2)
    assert tp.start_btn.isEnabled()  # csprng masks need no key
    tp.keys.setCurrentText("qkd")
    qtbot.waitUntil(lambda: not tp.start_btn.isEnabled(), timeout=10_000)
    tip = tp.start_btn.toolTip()
    assert "C1-C2" in tip and "Distillation" in tip and "csprng" in tip and "--" not in tip
    # forced anyway (a store may vanish between the check and the click): it fails at once, before the model loads
    t0 = time.monotonic()
    w.ctl.start_training(TrainingOptions(keys="qkd", clients=2, rounds=1))
    qtbot.waitUntil(lambda: bool(w.errors) and not w.ctl.busy["training"], timeout=10_000)
    assert time.monotonic() - t0 < 8.0
    title, message = w.errors[-1]
    assert title == "Training failed" and "--keys" not in message and "labqfl distill" not in message
    assert "Distillation" in message and "csprng" in message
    assert tp.status.text().startswith("failed: ") and "loading" not in tp.status.text()
    assert tp.progress.maximum() == 100  # no busy stripes left behind
