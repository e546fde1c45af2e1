"""Reservation kinds as store facts (review s34 second look, F2/F3): ``reserve-tagged`` (refs authenticated to
the partner) and ``reserve-masked`` (read for a one-time pad) survive any crash of the caller, since they are
written in the store's own transaction; only ``reserve`` can go back to the pool."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from labqfl.errors import KeyStoreError
from labqfl.keystore import KeyStore

PAIR = "C1-C2"


def _store(tmp_path, nbits: int = 256) -> tuple[KeyStore, str]:
    st = KeyStore(tmp_path / "s.sqlite3", node="C1")
    bid = str(uuid.uuid4())
    st.add_block(PAIR, np.random.default_rng(3).integers(0, 2, nbits, dtype=np.uint8), block_id=bid, purpose="fl")
    return st, bid


def test_mark_tagged_reads_nothing_and_release_refuses_a_tagged_reservation(tmp_path) -> None:
    st, bid = _store(tmp_path)
    with st:
        refs = st.reserve(PAIR, 64, "fl", "k1")
        assert st.mark_tagged("k1") == "reserve-tagged"
        assert st.mark_tagged("k1") == "reserve-tagged"  # idempotent
        d = st.delivery("k1")
        assert (d["kind"], d["state"]) == ("reserve-tagged", "reserved")
        with pytest.raises(KeyStoreError, match="was tagged .*cannot return to the pool"):
            st.release("k1")
        assert st.delivery("k1")["state"] == "reserved" and st.available_bits(PAIR, "fl") == 192  # nothing moved
        st.take_exact(PAIR, refs, "fl", key_id="k1").wipe()  # the only way out: consumed
        assert st.accounting()[PAIR]["consumed"] == {"fl": 64}
        with pytest.raises(KeyStoreError, match="no pending reservation"):
            st.mark_tagged("k1")
        st.reserve(PAIR, 8, "fl", "k2")
        assert st.release("k2") == 8  # never tagged nor read: released


def test_a_read_reservation_keeps_its_kind_when_tagged(tmp_path) -> None:
    st, _ = _store(tmp_path)
    with st:
        st.reserve(PAIR, 64, "fl", "k1")
        st.read_reserved("k1").wipe()
        assert st.mark_tagged("k1") == "reserve-read"
        st.reserve(PAIR, 64, "fl", "k2")
        st.read_reserved("k2", for_mask=True).wipe()
        assert st.mark_tagged("k2") == "reserve-masked"


def test_a_mask_read_is_refused_a_second_time_but_plain_reads_go_on(tmp_path) -> None:
    st, _ = _store(tmp_path)
    with st:
        st.reserve(PAIR, 64, "fl", "k1")
        st.mark_tagged("k1")
        first = st.read_reserved("k1", for_mask=True)
        assert st.delivery("k1")["kind"] == "reserve-masked"
        with pytest.raises(KeyStoreError, match="already read for a mask.*second mask read is refused"):
            st.read_reserved("k1", for_mask=True)
        again = st.read_reserved("k1")  # a plain read (reveal, the partner's pad half): allowed …
        assert np.array_equal(again.bits, first.bits)
        assert st.delivery("k1")["kind"] == "reserve-masked"  # … and never downgrades the mark
        with pytest.raises(KeyStoreError, match="already read for a mask"):
            st.read_reserved("k1", for_mask=True)
        with pytest.raises(KeyStoreError, match="was read"):
            st.release("k1")
        st.reserve(PAIR, 64, "fl", "k2")
        st.read_reserved("k2").wipe()  # a plain read first (e.g. a tag key): one mask read still allowed
        st.read_reserved("k2", for_mask=True).wipe()
        with pytest.raises(KeyStoreError, match="already read for a mask"):
            st.read_reserved("k2", for_mask=True)


def test_the_marks_survive_reopening_the_store(tmp_path) -> None:
    """The point of the fix: a process that dies after the mark leaves it in the file."""
    st, _ = _store(tmp_path)
    with st:
        st.reserve(PAIR, 64, "fl", "t")
        st.reserve(PAIR, 64, "fl", "m")
        st.mark_tagged("t")
        st.read_reserved("m", for_mask=True).wipe()
    with KeyStore(tmp_path / "s.sqlite3", node="C1", create=False) as st2:
        assert st2.delivery("t")["kind"] == "reserve-tagged" and st2.delivery("m")["kind"] == "reserve-masked"
        with pytest.raises(KeyStoreError, match="already read for a mask"):
            st2.read_reserved("m", for_mask=True)
        with pytest.raises(KeyStoreError, match="was tagged"):
            st2.release("t")
