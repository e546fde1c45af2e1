"""``labqfl keys retire BLOCK_ID``: the command that retires one of two blocks ``keys status`` flags as distilled
from the same raw slots (review s38 K1 left only the warning). Both ends of the pair by default, refusals before
any store changes, --json, one error line for a bad or unknown ID, and never a key bit in what it prints."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.keystore import KeyStore

PAIR = "C1-C2"
ACQ = "sagnac-4client-sim/retire-cli/epoch"


def _data_dir(tmp: Path, nodes: tuple[str, ...] = ("C1", "C2")) -> tuple[Path, dict[str, np.ndarray]]:
    """C1 and C2 each hold blk-a and blk-b (key block + refill), blk-b distilled over blk-a's slots by a store
    older than the origin checks (the double ``keys status`` flags)."""
    rng = np.random.default_rng(3)
    bits = {b: rng.integers(0, 2, 4096, dtype=np.uint8) for b in ("blk-a", "blk-b")}
    for node in nodes:
        with KeyStore.for_node(node, tmp) as st:
            for bid, (s0, s1) in (("blk-a", (0, 1000)), ("blk-b", (1000, 2000))):
                meta = {"acquisition": ACQ, "slots": [s0, s1]}
                st.claim_slots(PAIR, ACQ, s0, s1, bid)
                st.add_blocks(PAIR, [(bid, bits[bid], "general", meta), (bid + "-auth", bits[bid][:512], "auth",
                                                                          {**meta, "kind": "auth-refill",
                                                                           "key_block": bid})])
            path = st.path
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE blocks SET meta = json_set(meta, '$.slots', json('[500, 2000]')) "
                         "WHERE block_id IN ('blk-b', 'blk-b-auth')")
    return tmp, bits


def _run(*args: str) -> object:
    return CliRunner().invoke(app, ["keys", *args], env={"COLUMNS": "200"})


def _no_key_bits(output: str, bits: dict[str, np.ndarray]) -> None:
    for b in bits.values():
        raw = np.packbits(b).tobytes()
        for chunk in (raw[:12], raw[100:112]):
            assert chunk.hex() not in output and base64.b64encode(chunk).decode()[:12] not in output


def test_retire_both_ends_then_status_no_longer_flags_them(tmp_path: Path) -> None:
    d, bits = _data_dir(tmp_path)
    status = json.loads(_run("status", "--data-dir", str(d), "--json").output)
    assert [o["blocks"] for o in status["nodes"]["C2"]["overlapping_blocks"]] == [["blk-a", "blk-b"]]
    res = _run("retire", "blk-b", "--reason", "double of blk-a", "--data-dir", str(d), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert set(doc["nodes"]) == {"C1", "C2"} and doc["pair"] == PAIR and doc["notes"] == []
    for node in ("C1", "C2"):
        r = doc["nodes"][node]
        assert [b["block_id"] for b in r["blocks"]] == ["blk-b", "blk-b-auth"], r
        assert r["discarded_bits"] == 4096 + 512 and r["scrub"]["pending"] is False
    _no_key_bits(res.output, bits)
    status = json.loads(_run("status", "--data-dir", str(d), "--json").output)
    for node in ("C1", "C2"):
        info = status["nodes"][node]
        assert info["overlapping_blocks"] == [] and {r["block_id"] for r in info["retired_blocks"]} == {
            "blk-b", "blk-b-auth"}
        assert info["pairs"][PAIR]["available"] == {"auth": 512, "general": 4096}  # blk-a's only
    text = _run("status", "--data-dir", str(d)).output
    assert "retired: block(s) blk-b, blk-b-auth of pair C1-C2" in text and "double of blk-a" in text, text
    assert "same raw slots" not in text
    res = _run("retire", "blk-b", "--data-dir", str(d))  # again: nothing to do, exit 0
    assert res.exit_code == 0 and res.output.count("was retired before; nothing to do") == 2, res.output


def test_bad_or_unknown_block_ids_get_one_error_line(tmp_path: Path) -> None:
    d, _ = _data_dir(tmp_path)
    for bad, words in (("", "is not a block ID"), ("blk b", "is not a block ID"), ("x" * 129, "is not a block ID"),
                       ("blk-zzz", "no block blk-zzz in the key stores of node(s) C1, C2"),
                       ("blk", "whose ID begins so: blk-a, blk-a-auth, blk-b, blk-b-auth: give the whole ID")):
        res = _run("retire", bad, "--data-dir", str(d))
        assert res.exit_code == 1 and words in res.output, (bad, res.output)
        assert len(res.output.strip().splitlines()) == 1 and res.output.startswith("error:"), res.output
    res = _run("retire", "blk-zzz", "--data-dir", str(d), "--json")
    assert res.exit_code == 1 and "no block blk-zzz" in json.loads(res.stdout)["error"]
    res = _run("retire", "blk-a", "--node", "C7", "--data-dir", str(d))
    assert res.exit_code == 1 and "no key store for node(s) C7" in res.output, res.output
    res = _run("retire", "blk-a", "--data-dir", str(tmp_path / "empty"))
    assert res.exit_code == 1 and "no block blk-a: there are no key stores under" in res.output, res.output
    with KeyStore.for_node("C1", d) as st:  # nothing was retired by any of them
        assert st.retired_blocks() == [] and len(st.overlapping_blocks()) == 1


def test_a_reservation_at_one_end_refuses_at_both_unless_forced(tmp_path: Path) -> None:
    d, _ = _data_dir(tmp_path)
    with KeyStore.for_node("C2", d) as st:
        st.reserve(PAIR, 64, "general", "etsi-key-1")  # blk-a's first bits, held for a key at C2 only
    res = _run("retire", "blk-a", "--data-dir", str(d))
    assert res.exit_code == 1 and "etsi-key-1" in res.output and "--force" in res.output, res.output
    assert "Nothing was retired" in res.output and len(res.output.strip().splitlines()) == 1
    for node in ("C1", "C2"):  # C1, asked first and free of reservations, was left as it was too
        with KeyStore.for_node(node, d) as st:
            assert st.retired_blocks() == []
    res = _run("retire", "blk-a", "--force", "--data-dir", str(d))
    assert res.exit_code == 0 and "1 key(s) voided (etsi-key-1)" in res.output, res.output
    with KeyStore.for_node("C2", d) as st:
        assert st.delivery("etsi-key-1")["state"] == "voided"


def test_the_pairs_other_end_elsewhere_is_named(tmp_path: Path) -> None:
    d, _ = _data_dir(tmp_path, nodes=("C2",))  # C1's store lives in another data dir (networked nodes)
    res = _run("retire", "blk-b", "--data-dir", str(d))
    assert res.exit_code == 0, res.output
    assert "NOTE: node C1 (the pair's other end) has no store under this data dir" in res.output, res.output
    assert "labqfl keys retire blk-b --node C1 --data-dir" in res.output
    d2, _ = _data_dir(tmp_path / "two")
    res = _run("retire", "blk-b", "--node", "C2", "--data-dir", str(d2), "--json")
    assert res.exit_code == 0 and set(json.loads(res.stdout)["nodes"]) == {"C2"}
    assert "node C1 (the pair's other end) holds the block too and was left as it is" in res.stdout
