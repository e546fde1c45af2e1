"""Review s31 F3: a key store write-locked by another process (a ``sqlite3`` shell in ``BEGIN
IMMEDIATE``, a backup).

It used to stall the KME for the stores' 60 s busy timeout and then answer 503 "the key stores of the
two KMEs are out of step" (wrong reason), and ``status`` of that node stalled too, because the store
held its thread lock while it polled for the SQLite write lock.  Now the wait is
``KmeSettings.store_busy_timeout_s`` (5 s by default), the error is :class:`KeyStoreBusyError`, the
KME answers 503 "key store of node X is busy", and reads do not queue behind the wait."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from labqfl.errors import KeyStoreBusyError, KeyStoreError
from labqfl.keystore import KeyStore
from labqfl.keystore.etsi import (
    EtsiError,
    KeyDeliveryService,
    KmeSettings,
    load_kme_settings,
    open_kme_stores,
)
from labqfl.keystore.store import node_store_path

NODES = ["C1", "C2", "C3", "C4"]


@contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Another connection (as a ``sqlite3`` shell would) holding ``BEGIN IMMEDIATE`` on ``path``."""
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def _in_thread(fn):  # type: ignore[no-untyped-def]
    """Run ``fn`` in a thread; returns (thread, result dict with 'value'/'error' and 't' seconds)."""
    out: dict = {}

    def run() -> None:
        t0 = time.monotonic()
        try:
            out["value"] = fn()
        except BaseException as exc:
            out["error"] = exc
        out["t"] = time.monotonic() - t0

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def test_busy_store_raises_its_own_error_and_reads_do_not_wait_behind_the_write(tmp_path: Path) -> None:
    path = tmp_path / "C1.sqlite"
    st = KeyStore(path, node="C1", busy_timeout_s=1.5)
    try:
        st.add_block("C1-C2", np.ones(512, np.uint8), block_id="b1")
        with write_locked(path):
            t, out = _in_thread(lambda: st.take("C1-C2", 64, "general"))
            time.sleep(0.3)  # the take is now waiting for the write lock
            reads = []
            for _ in range(5):
                t0 = time.monotonic()
                assert st.available_bits("C1-C2") == 512
                reads.append(time.monotonic() - t0)
            t.join(10)
        assert isinstance(out.get("error"), KeyStoreBusyError), out
        exc = out["error"]
        assert isinstance(exc, KeyStoreBusyError) and isinstance(exc, KeyStoreError)
        assert exc.node == "C1" and exc.path == str(path)
        assert "locked by another process for 1.5 s" in str(exc)
        assert 1.4 <= out["t"] < 3.0, out["t"]
        assert max(reads) < 0.2, reads  # was: the whole 1.5 s behind the writer's poll
        assert st.available_bits("C1-C2") == 512  # nothing changed
        st.take("C1-C2", 64, "general").wipe()  # and it works once the lock is gone
    finally:
        st.close()


@pytest.fixture
def busy_kme(tmp_path: Path, kh) -> Iterator[tuple[KeyDeliveryService, Path]]:  # type: ignore[no-untyped-def]
    for n in NODES:
        KeyStore.for_node(n, tmp_path).close()
    settings = KmeSettings(saes={n: n for n in NODES}, nodes=NODES, store_busy_timeout_s=1.0)
    stores = open_kme_stores(settings, tmp_path)
    kh.fill_pair(stores, "C1-C2", 2, 4096, seed=1, purpose="etsi")
    kh.fill_pair(stores, "C3-C4", 2, 4096, seed=2, purpose="etsi")
    try:
        yield KeyDeliveryService(stores, settings), tmp_path
    finally:
        for s in stores.values():
            s.close()


@pytest.mark.parametrize("locked", ["C2", "C1"])  # the slave's store, the master's
def test_enc_keys_on_a_busy_store_is_a_quick_busy_503_and_status_answers_at_once(busy_kme, locked: str) -> None:  # type: ignore[no-untyped-def]
    svc, ddir = busy_kme
    before = {n: svc.stores[n].accounting() for n in NODES}
    with write_locked(node_store_path(locked, ddir)):
        t, out = _in_thread(lambda: svc.enc_keys("C1", "C2", number=2, size=256))
        time.sleep(0.2)
        timings = {}
        for m, s in (("C3", "C4"), ("C1", "C2"), ("C2", "C1")):
            t0 = time.monotonic()
            st = svc.status(m, s)
            timings[f"{m}->{s}"] = time.monotonic() - t0
            # C1-C2: the 2 keys the waiting request holds reserved at C1 (C2 locked) are not counted meanwhile
            assert st["stored_key_count"] == 32 if m == "C3" else st["stored_key_count"] in (30, 32)
        t.join(10)
    exc = out.get("error")
    assert isinstance(exc, EtsiError), out
    assert exc.status == 503
    assert exc.message.startswith(f"key store of node {locked} is busy (another process holds its write lock); "
                                  "retry later")
    assert "out of step" not in exc.message and exc.details[0]["node"] == locked
    assert 0.9 <= out["t"] < 3.0, out["t"]  # the KME's 1 s store_busy_timeout_s, not 60 s
    assert max(timings.values()) < 0.3, timings
    # nothing consumed or left reserved; the pair serves again once the lock is gone
    assert {n: svc.stores[n].accounting() for n in NODES} == before
    assert all(svc.stores[n].pending_reservations() == [] for n in NODES)
    keys = svc.enc_keys("C1", "C2", number=2, size=256)["keys"]
    assert len(svc.dec_keys("C2", "C1", [k["key_ID"] for k in keys])["keys"]) == 2


def test_dec_keys_on_a_busy_slave_store_is_a_busy_503_and_the_key_stays_retrievable(busy_kme) -> None:  # type: ignore[no-untyped-def]
    svc, ddir = busy_kme
    kid = svc.enc_keys("C1", "C2", number=1, size=256)["keys"][0]["key_ID"]
    with write_locked(node_store_path("C2", ddir)), pytest.raises(EtsiError) as ei:
        svc.dec_keys("C2", "C1", [kid])
    assert ei.value.status == 503 and "key store of node C2 is busy" in ei.value.message
    assert svc.dec_keys("C2", "C1", [kid])["keys"][0]["key_ID"] == kid


def test_store_busy_timeout_setting(tmp_path: Path) -> None:
    assert KmeSettings(saes={"a": "C1"}).store_busy_timeout_s == 5.0
    cfg = tmp_path / "kme.toml"
    cfg.write_text('[kme]\nstore_busy_timeout_s = 2.5\n[saes]\n"a" = "C1"\n', encoding="utf-8")
    settings = load_kme_settings(cfg)
    assert settings.store_busy_timeout_s == 2.5
    KeyStore.for_node("C1", tmp_path).close()
    stores = open_kme_stores(settings, tmp_path)
    try:
        assert stores["C1"]._busy_ms == 2500
    finally:
        stores["C1"].close()
    from labqfl.errors import ConfigError

    for bad in (0, -1, True, "5"):
        with pytest.raises(ConfigError, match="store_busy_timeout_s"):
            KmeSettings(saes={"a": "C1"}, store_busy_timeout_s=bad)  # type: ignore[arg-type]
