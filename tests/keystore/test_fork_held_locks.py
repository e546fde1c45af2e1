"""A fork while another thread of the parent holds a key store's ``_scrub_cond`` (the checkpoint retry
``keystore-scrub-<file>`` holds it around each attempt's bookkeeping, :meth:`KeyStore._note_scrub` while it starts
the retry) or the store's lock (a thread inside a take, a write, a read): the child inherited that lock held by a
thread it does not have, and hung forever on its first call that takes it (``scrub_status``, ``wait_scrubbed``,
``close``; every read and write for the store's lock). Session 40's fork guard (``_tick_lock``) covered only the idle
watch's looks (review s40 keysrev F1); this is the retry's and every other thread's case (review of session 40).

Deterministic: a thread takes the lock and keeps it until the parent's ``os.fork`` has returned (or 2 s passed,
so that a fork that waits for it is not stuck); the child tries the lock with a timeout and reports through a pipe.
Before the fix the child always found the lock held (the holder released it only after the fork); now
``os.register_at_fork`` takes every open store's lock and ``_scrub_cond`` before a fork (waiting for the holder)
and releases them on both sides after it."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labqfl.keystore import KeyStore

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

PAIR = "C1-C2"
#: how long the holder keeps the lock when the fork does not return (a fork that waits for it, after the fix)
HOLD_S = 2.0
#: the child's wait for a lock (a free one is taken at once)
CHILD_WAIT_S = 3.0


def _fork_while_held(lock: Any, child: Callable[[], bytes]) -> bytes:
    """Fork while another thread holds ``lock``; the child runs ``child`` and sends its result through a pipe.
    Returns the child's message (b"" if it sent none: it died or hung, killed at the deadline)."""
    held, forked = threading.Event(), threading.Event()

    def holder() -> None:
        with lock:
            held.set()
            forked.wait(HOLD_S)  # (released right after the fork returned in the parent: the child got it held)

    t = threading.Thread(target=holder, name="test-lock-holder")
    t.start()
    assert held.wait(10)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one message, then out, whatever happens
        os.close(r)
        msg = b"error"
        try:
            signal.alarm(int(CHILD_WAIT_S) + 10)  # (backstop: the parent kills it at its deadline too)
            msg = child()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test with it
            msg = f"error {exc.__class__.__name__}: {exc}".encode()
        finally:
            os.write(w, msg)
            os._exit(0)
    forked.set()
    os.close(w)
    t.join()
    deadline = time.monotonic() + CHILD_WAIT_S + 15
    out = b""
    try:
        while True:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.005)
        while chunk := os.read(r, 4096):
            out += chunk
    finally:
        os.close(r)
    return out


@pytest.fixture()
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    st = KeyStore(tmp_path / "C1.sqlite", node="C1")
    st.add_block(PAIR, np.random.default_rng(7).integers(0, 2, 4096, dtype=np.uint8))
    yield st
    st.close()


def test_fork_while_a_thread_holds_scrub_cond(store: KeyStore) -> None:
    def child() -> bytes:
        cond = store._scrub_cond
        if not cond.acquire(timeout=CHILD_WAIT_S):
            return b"held"
        cond.release()
        store.scrub_status()  # (takes it)
        k = store.take(PAIR, 64, "general")
        return f"ok {k.refs[0][1]}".encode()

    assert _fork_while_held(store._scrub_cond, child).startswith(b"ok "), \
        "the child inherited the store's _scrub_cond held by the parent's thread"
    assert store.scrub_status()["pending"] in (False, True)  # the parent's store still works
    store.take(PAIR, 64, "general")


def test_fork_while_a_thread_holds_the_store_lock(store: KeyStore) -> None:
    def child() -> bytes:
        if not store._lock.acquire(timeout=CHILD_WAIT_S):
            return b"held"
        store._lock.release()
        k = store.take(PAIR, 64, "general")
        return f"ok {k.refs[0][1]}".encode()

    assert _fork_while_held(store._lock, child).startswith(b"ok "), \
        "the child inherited the store's lock held by the parent's thread"
    store.take(PAIR, 64, "general")


def test_child_and_parent_never_hand_out_the_same_bits_after_a_guarded_fork(store: KeyStore) -> None:
    """The fork guard keeps the key material single-use: the child opens its own connection (the inherited one is
    abandoned, never used) and its take and the parent's, both after the fork, get different bits."""
    def child() -> bytes:
        k = store.take(PAIR, 100, "general")
        return ("ok " + ";".join(f"{b},{o},{n}" for b, o, n in k.refs)).encode()

    msg = _fork_while_held(store._scrub_cond, child)
    assert msg.startswith(b"ok "), msg
    child_refs = [tuple(r.split(",")) for r in msg[3:].decode().split(";")]
    mine = store.take(PAIR, 100, "general").refs
    child_bits = {(b, i) for b, o, n in child_refs for i in range(int(o), int(o) + int(n))}
    my_bits = {(b, i) for b, o, n in mine for i in range(o, o + n)}
    assert len(child_bits) == len(my_bits) == 100
    assert not child_bits & my_bits
    assert store.accounting()[PAIR]["consumed"]["general"] == 200


def test_fork_by_a_thread_that_holds_the_store_lock_itself(store: KeyStore) -> None:
    """The guard takes the forking thread's own (re-entrant) store lock once more and gives it back: no self-deadlock,
    and the child, still inside the caller's ``with``, holds it as the caller did (and uses the store)."""
    r, w = os.pipe()
    with store._lock:
        pid = os.fork()
        if pid == 0:
            os.close(r)
            msg = b"error"
            try:
                signal.alarm(20)
                msg = f"ok {store.take(PAIR, 8, 'general').refs[0][2]}".encode()
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                msg = f"error {exc}".encode()
            finally:
                os.write(w, msg)
                os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    msg = os.read(r, 4096)
    os.close(r)
    assert os.waitstatus_to_exitcode(status) == 0 and msg == b"ok 8", msg
    free: list[bool] = []

    def other() -> None:  # the parent's lock is free again after the caller's with (count back where it was)
        if store._lock.acquire(timeout=5):
            free.append(True)
            store._lock.release()

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert free == [True]
