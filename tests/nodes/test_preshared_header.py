"""A launcher learns a pre-shared secret file's block ID from its header only (session 35): the read-only
preflight (``runjob.shared_auth_bits_now``) and ``reconcile_pair`` read the whole file before, so every
pair's secret passed through the launcher's memory although only the client that imports the file needs it."""

from __future__ import annotations

import json
import os
import types
from pathlib import Path

import numpy as np
import pytest

from labqfl.keystore import KeyStore
from labqfl.nodes.preshared import (
    read_secret_header,
    reconcile_pair,
    secret_file_block,
    secret_path,
    write_pair_secret,
)
from labqfl.nodes.runjob import shared_auth_bits_now

PAIR = "C1-C2"
CFG = types.SimpleNamespace(client_names=["C1", "C2"], pairs=lambda: [("C1", "C2")])
BLOCK = "preshared-7d0e"
SECRET_BYTES = 4 << 20  # a secret far larger than any header


def _block_at_c1(data: Path) -> int:
    """C1's store holds pre-shared block BLOCK, C2's none (C2's copy still to import); its free bits."""
    bits = np.random.default_rng(3).integers(0, 2, 1024, dtype=np.uint8)
    with KeyStore.for_node("C1", data) as c1, KeyStore.for_node("C2", data):
        c1.add_block(PAIR, bits, block_id=BLOCK, purpose="auth")
    return bits.size


def _c2_file(data: Path, secret: bytes) -> Path:
    """C2's secret file of BLOCK as labqfl writes it (header fields first), its secret part ``secret``."""
    f = secret_path(data, "C2", PAIR)
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(b'{"pair": "C1-C2", "block_id": "' + BLOCK.encode() + b'", "bits_hex": "' + secret + b'"}')
    return f


def _bytes_read() -> int:
    """Bytes this process has read through read(2) and the like (``rchar``, proc(5))."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux's /proc/self/io")
def test_the_launcher_reads_no_secret_bytes_to_learn_a_block_id(tmp_path: Path) -> None:
    data = tmp_path / "data"
    free = _block_at_c1(data)
    _c2_file(data, b"ab" * SECRET_BYTES)
    with KeyStore.for_node("C1", data) as c1, KeyStore.for_node("C2", data) as c2:
        shared_auth_bits_now(CFG, data, deliveries=True)  # type: ignore[arg-type]
        reconcile_pair(PAIR, c1, c2, data, data)  # once before counting: the modules they import are read
        r0 = _bytes_read()
        bits = shared_auth_bits_now(CFG, data, deliveries=True)  # type: ignore[arg-type]
        r1 = _bytes_read()
        st = reconcile_pair(PAIR, c1, c2, data, data)
        r2 = _bytes_read()
    print(f"bytes read: preflight {r1 - r0}, reconcile_pair {r2 - r1}")
    assert bits == {PAIR: free} and st.pending == [BLOCK] and st.shared_bits == free
    # before: each read the whole 8 MiB file; now each reads its header (and the two small stores)
    assert r1 - r0 < SECRET_BYTES // 4, f"the preflight read {r1 - r0} bytes"
    assert r2 - r1 < SECRET_BYTES // 4, f"reconcile_pair read {r2 - r1} bytes"


def test_a_secret_part_the_launcher_could_not_even_decode_does_not_stop_it_learning_the_block(
        tmp_path: Path) -> None:
    """Bytes that are not UTF-8 after the header: before, the launcher's whole-file read failed on them and
    the delivery under way counted as a malformed file (its bits not counted, no fresh secret issued)."""
    data = tmp_path / "data"
    free = _block_at_c1(data)
    f = _c2_file(data, b"\xff" * 64)
    assert shared_auth_bits_now(CFG, data, deliveries=True) == {PAIR: free}  # type: ignore[arg-type]
    with KeyStore.for_node("C1", data) as c1, KeyStore.for_node("C2", data) as c2:
        st = reconcile_pair(PAIR, c1, c2, data, data)
    assert (st.pending, st.malformed, st.shared_bits) == ([BLOCK], [], free)
    assert f.is_file()


def test_a_written_secret_has_its_header_first_and_the_header_holds_no_secret(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from labqfl.nodes.preshared import read_secret_header

    bid = write_pair_secret(PAIR, tmp_path, tmp_path, 512)
    f = secret_path(tmp_path, "C1", PAIR)
    got: list[bytes] = []
    real_read = os.read

    def read(fd: int, n: int) -> bytes:
        got.append(b := real_read(fd, n))
        return b

    monkeypatch.setattr(os, "read", read)
    assert read_secret_header(f) == {"pair": PAIR, "block_id": bid}
    monkeypatch.undo()
    text = f.read_bytes()
    assert b"".join(got) == text[:text.index(b'"bits_hex":') + len(b'"bits_hex":')]  # not one byte further
    assert json.loads(f.read_text())["block_id"] == bid


def test_a_file_naming_its_block_after_its_secret_is_kept_and_retires_nothing(tmp_path: Path) -> None:
    """The launcher cannot learn such a file's block without reading the secret: it keeps the file, names
    it, and retires no block of the pair (the file may be the delivery of the block C1 holds)."""
    from labqfl.nodes.preshared import read_secret_header

    data = tmp_path / "data"
    free = _block_at_c1(data)
    f = secret_path(data, "C2", PAIR)
    f.parent.mkdir(parents=True)
    f.write_text(json.dumps({"pair": PAIR, "bits_hex": "ab" * 64, "block_id": BLOCK}))
    assert read_secret_header(f) == {"pair": PAIR}
    with KeyStore.for_node("C1", data) as c1, KeyStore.for_node("C2", data) as c2:
        st = reconcile_pair(PAIR, c1, c2, data, data)
        assert st.malformed == [str(f)] and st.retired == []
        assert c1.has_block(BLOCK) and free > 0
    assert f"secret file {f} names no block before its secret" in st.describe()
    assert f.is_file()


def test_a_header_naming_a_key_twice_is_malformed(tmp_path: Path) -> None:
    """json keeps the last of two equal keys: a header with two block IDs is refused, not read as one of them
    (review s35 second look F6; the importer refuses such a file too, test_preshared_import)."""
    f = tmp_path / "C1-C2.json"
    f.write_bytes(b'{"pair": "C1-C2", "block_id": "preshared-1", "block_id": "preshared-2", "bits_hex": "00"}')
    with pytest.raises(ValueError, match="'block_id' appears twice"):
        read_secret_header(f)
    assert secret_file_block(f) == ""  # malformed: kept, retires nothing


def test_each_end_s_secret_file_is_durable_once_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The secret is linked into each end's folder; the link lives in that folder's entry, so each folder is
    fsynced after its link (before session 40 neither was: a crash could lose an end's only copy of the
    authentication bootstrap after the launcher went on)."""
    a, b = tmp_path / "a", tmp_path / "b"
    synced: list[Path] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if target.is_dir():
            synced.append(target)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_pair_secret(PAIR, a, b, 512)
    monkeypatch.undo()
    files = sorted(p for p in tmp_path.rglob("*.json"))
    assert len(files) == 2
    assert sorted(synced) == sorted(f.parent for f in files)
