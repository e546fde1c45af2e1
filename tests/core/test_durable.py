"""labqfl.durable.replace_durably: old or new file whole, synced file and folder, no stray temporary file."""

from __future__ import annotations

import io
import os
import stat
import threading
from pathlib import Path

import numpy as np
import pytest

from labqfl import durable
from labqfl.durable import replace_durably


def test_text_bytes_and_writer_contents(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    replace_durably(p, "ünïcode\n")
    assert p.read_bytes() == "ünïcode\n".encode()
    replace_durably(p, b"\x00\x01raw")
    assert p.read_bytes() == b"\x00\x01raw"
    a = np.arange(7, dtype=np.float64)
    q = tmp_path / "ckpt.npy"
    replace_durably(q, lambda f: np.save(f, a))
    assert np.array_equal(np.load(q), a)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.json", "ckpt.npy"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    p = tmp_path / "state.json"
    p.write_text("old", encoding="utf-8")

    def broken(f: io.BufferedWriter) -> None:
        f.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_durably(p, broken)
    assert p.read_text(encoding="utf-8") == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["state.json"]


def test_file_synced_before_the_rename_and_folder_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def replace(src: object, dst: object) -> None:
        events.append("rename")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(durable.os, "fsync", fsync)
    monkeypatch.setattr(durable.os, "replace", replace)
    replace_durably(tmp_path / "x", "new")
    assert events == ["fsync-file", "rename", "fsync-folder"]


def test_mode_applies_to_the_new_file(tmp_path: Path) -> None:
    p = tmp_path / "secret"
    old = os.umask(0o022)
    try:
        replace_durably(p, "s", mode=0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_concurrent_writers_never_share_a_temporary_file(tmp_path: Path) -> None:
    """Each writer's content is 64 KiB of one letter; with a shared temporary name two writers would interleave
    into one file (or one would rename the other's half-written file into place)."""
    p = tmp_path / "shared.json"
    letters = [bytes([65 + i]) * 65536 for i in range(8)]
    errors: list[BaseException] = []

    def write(data: bytes) -> None:
        try:
            for _ in range(20):
                replace_durably(p, data)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(d,)) for d in letters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert p.read_bytes() in letters
    assert [x.name for x in tmp_path.iterdir()] == ["shared.json"]


def test_a_failed_secret_write_zeroes_its_temporary_before_removing_it(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []
    real_unlink = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self.name.endswith(durable.TEMP_SUFFIX):
            seen.append(self.read_bytes())
        real_unlink(self, missing_ok=missing_ok)

    def broken(f: io.BufferedWriter) -> None:
        f.write(b"\xff" * 32)
        f.flush()
        raise OSError("disk full")

    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(OSError, match="disk full"):
        replace_durably(tmp_path / "pending.json", broken, secret=True)
    assert seen == [b"\0" * 32]
    assert durable.leftover_temporaries(tmp_path) == []


def test_leftover_temporaries_finds_what_a_killed_writer_left(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{}")
    left = tmp_path / ".a.json.123.cafe0001.tmp"
    left.write_text("half")
    assert durable.leftover_temporaries(tmp_path) == [left]
    assert durable.leftover_temporaries(tmp_path / "absent") == []


@pytest.mark.parametrize(("err", "raised"), [(5, True), (22, False), (95, False)])  # EIO, EINVAL, EOPNOTSUPP
def test_sync_folder_raises_an_io_error_and_skips_a_folder_that_cannot_be_synced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int, raised: bool) -> None:
    def fsync(fd: int) -> None:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(durable.os, "fsync", fsync)
    if raised:
        with pytest.raises(OSError):
            durable.sync_folder(tmp_path)
    else:
        durable.sync_folder(tmp_path)
