"""``labqfl keys retire`` at both ends holds both stores' write locks from the first check to the last commit
(review s39 K1): a reservation arriving at C2 while C1's retirement is under way can no longer split the job
(C1 retired, C2 refused, and the command saying "Nothing was retired"); it waits and then gets only bits of
other blocks. A commit failing after another store committed names the store retired and the command that
finishes the job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labqfl.errors import KeyStoreBusyError, KeyStoreError
from labqfl.keystore import KeyStore, node_store_path
from tests.cli.test_keys_retire import PAIR, _data_dir, _run


def _retired(d: Path, node: str) -> list[str]:
    with KeyStore.for_node(node, d, create=False) as st:
        return [r["block_id"] for r in st.retired_blocks()]


def test_a_reservation_racing_the_retirement_cannot_split_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d, _ = _data_dir(tmp_path)
    orig = KeyStore._zero_block
    raced: dict[str, object] = {}

    def zero(self: KeyStore, conn: object, seq: int) -> None:
        orig(self, conn, seq)  # type: ignore[arg-type]
        if self.node == "C1" and not raced:  # a KME at C2 reserves while C1's retirement is under way
            kme = KeyStore(node_store_path("C2", d), node="C2", busy_timeout_s=0.5)
            try:
                raced["refs"] = kme.reserve(PAIR, 256, "general", "kme-key-1")
            except KeyStoreBusyError:
                raced["refs"] = "busy"
            finally:
                kme.close()

    monkeypatch.setattr(KeyStore, "_zero_block", zero)
    res = _run("retire", "blk-a", "--data-dir", str(d), "--json")
    monkeypatch.undo()
    assert raced["refs"] == "busy"  # C2 was locked by the retirement all along (before: it took bits of blk-a)
    assert res.exit_code == 0, res.output
    assert set(json.loads(res.stdout)["nodes"]) == {"C1", "C2"}
    assert _retired(d, "C1") == _retired(d, "C2") == ["blk-a", "blk-a-auth"]
    with KeyStore.for_node("C2", d, create=False) as c2:  # the KME's retry: only bits of another block
        refs = c2.reserve(PAIR, 256, "general", "kme-key-1")
    assert {r[0] for r in refs} == {"blk-b"}


def test_a_reservation_at_the_end_not_retired_is_refused_by_the_retired_end(tmp_path: Path) -> None:
    d, _ = _data_dir(tmp_path)
    assert _run("retire", "blk-a", "--node", "C1", "--data-dir", str(d)).exit_code == 0
    with KeyStore.for_node("C2", d, create=False) as c2, KeyStore.for_node("C1", d, create=False) as c1:
        refs = c2.reserve(PAIR, 256, "general", "kme-key-2")  # C2's copy of blk-a is still free
        assert {r[0] for r in refs} == {"blk-a"}
        with pytest.raises(KeyStoreError, match="consumed"):  # the partner never matches it with retired bits
            c1.reserve_exact(PAIR, refs, "general", "kme-key-2")
        with pytest.raises(KeyStoreError, match="consumed"):
            c1.take_exact(PAIR, refs, "general")


def test_a_commit_failing_after_another_store_committed_names_both_and_the_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d, _ = _data_dir(tmp_path)
    orig = KeyStore._commit

    def commit(self: KeyStore, conn: object) -> None:
        if self.node == "C2":
            raise self._fail("commit failed (disk I/O error)")
        orig(self, conn)  # type: ignore[arg-type]

    monkeypatch.setattr(KeyStore, "_commit", commit)
    res = _run("retire", "blk-a", "--data-dir", str(d))
    monkeypatch.undo()
    assert res.exit_code != 0
    out = " ".join(res.output.split())
    assert "Nothing was retired" not in out and "nothing was retired" not in out
    assert "retired in the key store(s) of node(s) C1" in out and "not in node(s) C2" in out
    assert "`labqfl keys retire blk-a --node C2`" in out and "disk I/O error" in out
    assert _retired(d, "C1") == ["blk-a", "blk-a-auth"] and _retired(d, "C2") == []
    res = _run("retire", "blk-a", "--node", "C2", "--data-dir", str(d))  # the command named finishes it
    assert res.exit_code == 0, res.output
    assert _retired(d, "C2") == ["blk-a", "blk-a-auth"]
