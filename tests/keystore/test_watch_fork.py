"""A fork while the idle watch (``keystore-scrub-watch``) looks at a store: the child used to inherit the store's
lock (or its ``_scrub_cond``) held by the watch, a thread it does not have, and hung forever on its first call on
the inherited store (review s40 keysrev F1). A look and a fork are now mutually exclusive (``_tick_lock``, held
around each look and by ``os.register_at_fork``'s before/after hooks).

Before the fix, with the watch interval lowered to 0.5 ms (the same code path, only more often): about 3-6 % of
the children hung (review: 10 of 400)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

import labqfl.keystore.store as S
from labqfl.keystore import KeyStore

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

FORKS = 200
#: a child that has not finished its two calls by then is counted hung (a normal one takes ~10-50 ms)
CHILD_LIMIT_S = 10


def _child(st: KeyStore) -> None:
    code = 3
    try:
        signal.alarm(CHILD_LIMIT_S)  # (backstop: the parent also kills it at the deadline)
        st.scrub_status()  # takes _scrub_cond
        st.available_bits("C1-C2")  # takes the store's lock, then reopens its own connection
        code = 0
    finally:
        os._exit(code)


def test_fork_during_watch_look_never_hangs_child(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "_WATCH_S", 0.0005)
    st = KeyStore(tmp_path / "C1.sqlite", node="C1")
    try:
        st.add_block("C1-C2", np.random.default_rng(1).integers(0, 2, 4096, dtype=np.uint8))
        st.available_bits("C1-C2")
        assert os.stat(str(st.path) + "-wal").st_size > 0  # (so that each look reads the store, holding its lock)
        assert any(t.name == "keystore-scrub-watch" for t in __import__("threading").enumerate())
        ok = 0
        for i in range(FORKS):
            pid = os.fork()
            if pid == 0:
                _child(st)
            deadline = time.monotonic() + CHILD_LIMIT_S + 2
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    status = -1
                    break
                time.sleep(0.002)
            if status != -1 and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM:
                status = -1
            assert status != -1, f"child {i} of {FORKS} hung on its first call on the inherited store (fork " \
                                  "during a look of the idle watch)"
            assert os.waitstatus_to_exitcode(status) == 0, f"child {i} failed: {os.waitstatus_to_exitcode(status)}"
            ok += 1
        assert ok == FORKS
        assert st.available_bits("C1-C2") == 4096  # the parent's store is unaffected
    finally:
        st.close()
