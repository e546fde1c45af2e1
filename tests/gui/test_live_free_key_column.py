"""Review s38 user F9: the Live table's "Key pool" column summed every pool of a pair, the 64 kbit authentication
pool (pre-shared secret + refills) included, so each pair showed more key in its pool (134 kbit) than it distilled
(72 kbit), while the tab's note calls pools free bits. The column is "Free key" now: the pools masks and ETSI
delivery draw, without ``auth``, which its tooltip names."""

from __future__ import annotations

from labqfl.gui.panels._common import fmt_bits
from labqfl.gui.panels.live import LIVE_NOTE, LivePanel


def test_the_free_key_column_leaves_out_the_authentication_pool(make_win, small_config) -> None:  # type: ignore[no-untyped-def]
    lp = make_win(small_config).live_panel
    col = LivePanel.PAIR_COLS.index("Free key")
    lp._on_pools({"C1-C2": {"auth": 65_152, "general": 72_000, "fl": 1_000}})
    cell = lp.table.item(0, col)
    assert cell.text() == fmt_bits(73_000) and "65" in cell.toolTip() and "authentication" in cell.toolTip()
    assert "Key pool" not in LivePanel.PAIR_COLS
    assert "without the authentication pool" in LIVE_NOTE
