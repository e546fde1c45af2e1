"""Review s38 F6: a pre-shared secret whose block was moved with `keys export --purpose auth` could be loaded
again into the data dir it was moved to: the imported copy had no fingerprint (stripped on export), so
`keys preshare` accepted it and the target held the same 65 536-bit authentication secret twice. An export of
the whole block now carries its fingerprints, one of part of it the window fingerprints of its own bits, and
an imported copy is never taken for a load interrupted half-way."""

from __future__ import annotations

import json
import os
from pathlib import Path

from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.keystore import KeyStore

PAIR = "C1-C2"
runner = CliRunner()


def _keys(*args: str) -> object:
    return runner.invoke(app, ["keys", *args], env={"COLUMNS": "250"})


def _load_and_move(tmp_path: Path, *bits: str) -> tuple[Path, Path, Path, dict]:
    """The secret loaded into data dir S (file kept), then C2's auth pool (``bits``: part of it) moved to T."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(os.urandom(8192))
    s, t = tmp_path / "S", tmp_path / "T"
    res = _keys("preshare", "--pair", PAIR, "--file", str(secret), "--keep-file", "--data-dir", str(s))
    assert res.exit_code == 0, res.output
    assert _keys("ticket", "--node", "C2", "--data-dir", str(t), "--out", str(tmp_path / "t.json")).exit_code == 0
    res = _keys("export", "--node", "C2", "--pair", PAIR, "--purpose", "auth", *bits, "--ticket",
                str(tmp_path / "t.json"), "--out", str(tmp_path / "x.json"), "--data-dir", str(s))
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "x.json").read_text())
    res = _keys("import", str(tmp_path / "x.json"), "--data-dir", str(t))
    assert res.exit_code == 0, res.output
    return secret, s, t, doc


def _preshared(data: Path, node: str) -> list[str]:
    with KeyStore.for_node(node, data) as st:
        return [b["block_id"] for b in st.blocks(PAIR) if b["meta"].get("kind") == "preshared-auth"]


def test_the_secret_of_a_moved_block_is_refused_at_the_target(tmp_path: Path) -> None:
    secret, _, t, doc = _load_and_move(tmp_path)
    (seg,) = doc["segments"]
    before = {n: _preshared(t, n) for n in ("C1", "C2")}
    # not taken for a load interrupted after C2 (T's C1 holds no block of it): refused, nothing added
    res = _keys("preshare", "--pair", PAIR, "--file", str(secret), "--keep-file", "--data-dir", str(t))
    assert res.exit_code == 1, res.output
    assert "already loaded as block" in " ".join(res.output.split()), res.output
    assert {n: _preshared(t, n) for n in ("C1", "C2")} == before and before == {"C1": [], "C2": [seg["block_id"]]}
    assert seg["length"] == seg["block_nbits"] == 65536 and seg["meta"]["secret_fingerprint"].startswith("sha256:")


def test_part_of_a_block_carries_the_windows_of_its_own_bits_only(tmp_path: Path) -> None:
    secret, s, t, doc = _load_and_move(tmp_path, "--bits", "4096")
    res = _keys("preshare", "--pair", PAIR, "--file", str(secret), "--keep-file", "--data-dir", str(t))
    assert res.exit_code == 1 and "already loaded as block" in " ".join(res.output.split()), res.output
    (seg,) = doc["segments"]
    meta = seg["meta"]
    assert "secret_fingerprint" not in meta  # the rest of the block stays in S
    # 4096 bits = 512 bytes from offset 0: windows at bytes 0, 16, …, 480 lie inside (31 of them)
    assert len(meta["secret_windows"]) == 31 * 16
    with KeyStore.for_node("C2", s) as st:
        (blk,) = [b for b in st.blocks(PAIR) if b["block_id"] == seg["block_id"]]
    assert blk["meta"]["secret_windows"].startswith(meta["secret_windows"])
