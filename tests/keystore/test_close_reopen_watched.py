"""``close()`` racing another thread's call on the same store: the call reopens the store after close() closed its
connection; close() used to drop the store from the idle watch only after releasing its lock, so a reopen in
between was then unwatched (open, not watched, the watch thread stopped: another process's pending checkpoint was
only seen at its next call). Now the store leaves the watched set under its lock (review s40 keysrev F3). The
sleep inside ``_unwatch`` only widens the window between close()'s statements."""

from __future__ import annotations

import threading
import time

import numpy as np

import labqfl.keystore.store as S
from labqfl.keystore import KeyStore


def test_store_reopened_during_close_stays_watched(tmp_path, monkeypatch):
    st = KeyStore(tmp_path / "C1.sqlite", node="C1")
    st.add_block("C1-C2", np.random.default_rng(1).integers(0, 2, 4096, dtype=np.uint8))
    orig = S._unwatch
    entered = threading.Event()

    def slow_unwatch(store):  # type: ignore[no-untyped-def]
        if store is st and not entered.is_set():
            entered.set()
            time.sleep(1.0)
        return orig(store)

    monkeypatch.setattr(S, "_unwatch", slow_unwatch)
    closer = threading.Thread(target=st.close)
    closer.start()
    assert entered.wait(10)
    assert st.available_bits("C1-C2") == 4096  # another thread's call: reopens the store
    closer.join(10)
    assert not closer.is_alive()
    try:
        assert st._conn is not None
        assert st in S._watched, "the store is open again but no longer watched"
        assert S._watch_thread is not None and S._watch_thread.is_alive()
    finally:
        st.close()
    assert st not in S._watched
