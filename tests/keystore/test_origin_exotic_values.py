"""Slot values SQLite cannot store (beyond 2^63 - 1) and acquisition IDs that are not UTF-8 text (a lone
surrogate) get one KeyStoreError naming the field, the value and what was expected, and nothing is stored
(review s39 K3: a bare OverflowError / UnicodeEncodeError before)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from labqfl.errors import KeyStoreError
from labqfl.keystore import KeyStore
from labqfl.keystore.store import block_origin

PAIR = "C1-C2"


@pytest.mark.parametrize(("call", "expect"), [
    (lambda st: st.claim_slots(PAIR, "A", 0, 2**64, "x1"), r"slot range \[0, 18446744073709551616\).*2\^63 - 1"),
    (lambda st: st.claim_slots(PAIR, "A", 0, 2**63, "x1"), r"slot range \[0, 9223372036854775808\).*2\^63 - 1"),
    (lambda st: st.check_slots_free(PAIR, "A", 2**63, 2**63 + 5), r"slot range \[9223372036854775808, .*2\^63 - 1"),
    (lambda st: st.claim_slots(PAIR, "A\ud800", 0, 5, "x4"), r"acquisition must be .*UTF-8 text, got 'A\\ud800'"),
    (lambda st: st.add_blocks(PAIR, [("x2", np.zeros(64, np.uint8), "general",
                                      {"acquisition": "A", "slots": [0, 2**64]})]),
     r"block x2: metadata field 'slots' \[0, 18446744073709551616\] is out of range; expected .*2\^63 - 1"),
    (lambda st: st.add_blocks(PAIR, [("x3", np.zeros(64, np.uint8), "general",
                                      {"acquisition": "A\ud800", "slots": [0, 5]})]),
     r"block x3: metadata field 'acquisition' 'A\\ud800' is not valid UTF-8 text"),
])
def test_one_clear_error_and_nothing_stored(tmp_path: Path, call: object, expect: str) -> None:
    with KeyStore.for_node("C2", tmp_path) as st:
        with pytest.raises(KeyStoreError, match=expect) as info:
            call(st)  # type: ignore[operator]
        assert "nothing was stored" in str(info.value)
        assert st.blocks() == [] and st.distilled_slots(PAIR, "A") == []
        st.claim_slots(PAIR, "A", 0, 2**63 - 1, "x5")  # the largest range SQLite stores is still accepted
        assert st.distilled_slots(PAIR, "A") == [(0, 2**63 - 1, "x5")]


def test_an_import_record_beyond_int64_is_refused_strictly() -> None:
    assert block_origin("b", {"acquisition": "A", "slots": [0, 2**63 - 1]}) == ("A", 0, 2**63 - 1, "b")
    with pytest.raises(KeyStoreError, match=r"slots \[0, 9223372036854775808\]; expected .*2\^63 - 1"):
        block_origin("b", {"acquisition": "A", "slots": [0, 2**63]}, strict=True)
    with pytest.raises(KeyStoreError, match="UTF-8 text"):
        block_origin("b", {"acquisition": "A\udfff", "slots": [0, 5]}, strict=True)
