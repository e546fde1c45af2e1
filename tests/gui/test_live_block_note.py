"""The Live tab says why its key rates are below the README's (review s36 user F7): it showed 7.6–11.5 kbit/s per
pair against the README's 54–82 with no word that these come from the first-key rule's small blocks, whose
finite-key cost is large."""

from __future__ import annotations

from typing import Any

from labqfl.gui.panels.live import BLOCK_RATE_NOTE


def test_the_live_tab_explains_its_block_sized_key_rates(make_win: Any) -> None:
    panel = make_win().live_panel
    note = panel.block_note
    assert note.text() == BLOCK_RATE_NOTE and note.isVisibleTo(panel)
    for words in ("this tab's blocks", "finite-key cost", "10 s blocks of `labqfl run`", "larger Block size"):
        assert words in note.text(), words
    # it sits with the plots, under the key-rate plot, above the provenance line
    grid = panel.rate_key_plot.parentWidget().layout()
    rows = {w: grid.getItemPosition(grid.indexOf(w))[0] for w in (panel.rate_key_plot, note, panel.provenance_label)}
    assert rows[panel.rate_key_plot] < rows[note] < rows[panel.provenance_label]
