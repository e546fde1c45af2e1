"""Review s36 user F18: a CSPRNG-mask training in the GUI said "key used 13.8 kbit" under "Key consumption
(mask key)", though no QKD key is used; it names the bits CSPRNG mask bits now (and a QKD run keeps "key used":
tests/gui/test_training_keys.py)."""

from __future__ import annotations

from PySide6.QtCore import Qt


def test_csprng_training_names_its_bits(qtbot, make_win, small_config) -> None:  # type: ignore[no-untyped-def]
    w = make_win(small_config)
    tp = w.training_panel
    tp.keys.setCurrentText("csprng")
    tp.rounds.setValue(1)
    tp.clients.setValue(2)
    qtbot.mouseClick(tp.start_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.errors or (not w.ctl.busy["training"] and tp.rounds_shown == 1), timeout=120_000)
    assert not w.errors
    qtbot.waitUntil(lambda: tp.status.text().startswith("finished"), timeout=5_000)
    text = tp.status.text()
    assert "CSPRNG mask bits" in text and "no QKD key used" in text and "key used" not in text.replace(
        "no QKD key used", "")
    assert "no QKD key" in tp.key_plot.getPlotItem().titleLabel.text
