"""The longest acquisition any front end accepts fits the int64 picosecond time tags (review s34)."""

from __future__ import annotations

from labqfl.contracts.types import MAX_DURATION_S, TAG_TIME_HEADROOM_S, duration_problem


def test_the_longest_acquisition_fits_int64_picosecond_tags_with_room_for_a_tagger_clock() -> None:
    # 10^7 s (the bound before) is past 2^63 ps ≈ 9.2·10^6 s: the last tags of such an acquisition overflowed
    assert MAX_DURATION_S * 1e12 < 2**63
    assert TAG_TIME_HEADROOM_S >= 1e6  # a tagger whose clock has run for 11 days before the acquisition still fits
    assert duration_problem(MAX_DURATION_S) is None
    assert duration_problem(9.3e6) is not None
