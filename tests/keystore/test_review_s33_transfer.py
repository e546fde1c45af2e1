"""Review s33, key export and import: F1 (a full disk at the export target destroyed the exported
bits and left a truncated file with key in clear), F2 (the MAC was checked on another read of the
file than the one imported) and F9 (`keys import` left the file, key bits in clear, on disk)."""

from __future__ import annotations

import base64
import errno
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.errors import DataFormatError, KeyStoreError
from labqfl.keystore import KeyStore
from labqfl.keystore.transfer import export_keys, import_keys

PAIR = "C1-C2"


class _FullDisk:
    """A folder whose filesystem has ``free`` bytes left (or fails every write with ``err``), for
    code that writes through ``os.posix_fallocate``, ``os.write`` or ``os.fdopen`` — no root, no
    tmpfs. Descriptors are recognised by their path (``/proc/self/fd``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, folder: Path, free: int, err: int = errno.ENOSPC,
                 allocate_ok: bool = False):
        self.folder, self.free, self.err, self.allocate_ok = str(folder.resolve()), free, err, allocate_ok
        self.used: dict[int, int] = {}
        real_write, real_alloc, real_fdopen = os.write, getattr(os, "posix_fallocate", None), os.fdopen

        def ours(fd: int) -> bool:
            try:
                return os.readlink(f"/proc/self/fd/{fd}").startswith(self.folder + os.sep)
            except OSError:
                return False

        def spend(fd: int, n: int) -> int:
            room = max(0, self.free - sum(self.used.values()))
            if n > room:
                raise OSError(self.err, os.strerror(self.err))
            self.used[fd] = self.used.get(fd, 0) + n
            return n

        def write(fd: int, data: Any) -> int:
            if ours(fd):
                room = max(0, self.free - sum(self.used.values()))
                if room == 0 or self.err != errno.ENOSPC:
                    raise OSError(self.err, os.strerror(self.err))
                n = real_write(fd, bytes(data)[:room])  # a full disk takes what fits, then refuses
                self.used[fd] = self.used.get(fd, 0) + n
                return n
            return real_write(fd, data)

        def alloc(fd: int, offset: int, size: int) -> None:
            if ours(fd) and not self.allocate_ok:
                spend(fd, size)
            elif real_alloc is not None:
                real_alloc(fd, offset, size)

        class _File:
            def __init__(self, fh: Any, fd: int):
                self._fh, self._fd = fh, fd

            def write(self, s: str) -> int:
                data = s.encode()
                room = max(0, disk.free - sum(disk.used.values()))
                if disk.err != errno.ENOSPC or len(data) > room:
                    real_write(self._fd, data[:room] if disk.err == errno.ENOSPC else b"")
                    disk.used[self._fd] = disk.used.get(self._fd, 0) + room
                    raise OSError(disk.err, os.strerror(disk.err))
                disk.used[self._fd] = disk.used.get(self._fd, 0) + len(data)
                return real_write(self._fd, data)

            def __getattr__(self, name: str) -> Any:
                return getattr(self._fh, name)

            def __enter__(self) -> _File:
                return self

            def __exit__(self, *exc: object) -> None:
                self._fh.close()

        disk = self

        def fdopen(fd: int, *a: Any, **kw: Any) -> Any:
            fh = real_fdopen(fd, *a, **kw)
            return _File(fh, fd) if ours(fd) else fh

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "posix_fallocate", alloc)
        monkeypatch.setattr(os, "fdopen", fdopen)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_an_export_to_a_full_disk_moves_no_bit_and_leaves_no_file(tmp_path: Path, two_stores,
                                                                   monkeypatch: pytest.MonkeyPatch):
    stores, _ = two_stores
    src = stores["C2"]
    target = KeyStore.for_node("C2", tmp_path / "target")
    ticket = target.issue_import_ticket()
    stick = tmp_path / "stick"
    stick.mkdir()
    before = src.accounting()
    with monkeypatch.context() as m:
        _FullDisk(m, stick, free=600)  # room for the start of the file only, as on review s33's tmpfs
        with pytest.raises((OSError, DataFormatError, KeyStoreError)) as err:  # OSError: what the old code raised
            export_keys(src, PAIR, stick / "x.json", ticket=ticket)
    assert "No space left on device" in str(err.value)
    assert src.accounting() == before and src.exports() == []  # no bit left the store
    assert _files(stick) == []  # no truncated file with key in clear, no temporary file
    # the ticket was not spent: the same export to a disk with room goes through, with every bit
    out = tmp_path / "x.json"
    assert export_keys(src, PAIR, out, ticket=ticket)["nbits"] == 6000
    assert import_keys(target, out)["imported_bits"] == 6000
    target.close()


def test_a_write_failing_after_the_bits_were_taken_undoes_the_export(tmp_path: Path, two_stores,
                                                                      monkeypatch: pytest.MonkeyPatch):
    """The bits are zeroed only once the file is complete and synced (KeyStore.finish_export): a write
    that fails after the store took them gives them back, with no file anywhere (the previous code
    had zeroed them already and wrote a rescue copy next to the store)."""
    stores, blocks = two_stores
    src = stores["C2"]
    target = KeyStore.for_node("C2", tmp_path / "target")
    ticket = target.issue_import_ticket()
    stick = tmp_path / "stick"
    stick.mkdir()
    before = src.accounting()
    with monkeypatch.context() as m:  # space is granted, then the device fails every write (EIO)
        _FullDisk(m, stick, free=0, err=errno.EIO, allocate_ok=True)
        with pytest.raises((OSError, KeyStoreError)) as err:  # OSError: what the old code raised
            export_keys(src, PAIR, stick / "x.json", ticket=ticket, nbits=3000)
    msg = str(err.value)
    assert "Input/output error" in msg and "bits are back in the store" in msg
    assert _files(stick) == []  # the partial file (key in clear) was removed
    assert src.accounting() == before  # every bit free again, in its own pool
    assert [e["state"] for e in src.exports()] == ["aborted"]
    assert list(src.path.parent.glob("*.export-*.json")) == []  # nothing written next to the store
    out = tmp_path / "x.json"  # the same ticket works for the export that follows
    assert export_keys(src, PAIR, out, ticket=ticket, nbits=3000)["nbits"] == 3000
    assert import_keys(target, out)["imported_bits"] == 3000
    k = stores["C1"].take(PAIR, 3000, "general")
    got = target.take_exact(PAIR, k.refs, "general").bits
    assert np.array_equal(got, np.concatenate([blocks[b][o:o + n] for b, o, n in k.refs]))
    target.close()


# ---------------------------------------------------------------------- F2


def _tampered(doc: dict[str, Any]) -> bytes:
    """``doc`` with 24 bits of its first segment flipped, still well-formed."""
    d = json.loads(json.dumps(doc))
    seg = d["segments"][0]
    raw = bytearray(base64.b64decode(seg["bits"]))
    raw[0] ^= 0xFF
    raw[1] ^= 0xFF
    raw[2] ^= 0xFF
    seg["bits"] = base64.b64encode(bytes(raw)).decode("ascii")
    return json.dumps(d).encode()


@pytest.fixture
def swapping_file(tmp_path: Path) -> Iterator[Any]:
    """``serve([c0, c1, ...])`` → a FIFO whose n-th reader gets ``c[n]`` (the last one from then on):
    review s33's import_toctou_fifo, a file that changes between two reads."""
    stop = threading.Event()
    threads: list[threading.Thread] = []
    fifo = tmp_path / "swap.json"

    def serve(contents: list[bytes]) -> Path:
        os.mkfifo(fifo, 0o600)

        def run() -> None:
            n = 0
            while not stop.is_set():
                fd = os.open(fifo, os.O_WRONLY)  # blocks until a reader opens
                try:
                    if not stop.is_set():
                        os.write(fd, contents[min(n, len(contents) - 1)])
                except BrokenPipeError:
                    pass
                finally:
                    os.close(fd)
                n += 1
                time.sleep(0.3)  # let this reader reach the end before the next content goes in

        t = threading.Thread(target=run, daemon=True)
        t.start()
        threads.append(t)
        return fifo

    yield serve
    stop.set()
    for t in threads:
        if t.is_alive():  # release a writer waiting for a reader
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            t.join(2)
            os.close(fd)


def test_import_authenticates_the_very_bytes_it_imports(tmp_path: Path, two_stores, swapping_file):
    stores, _ = two_stores
    target = KeyStore.for_node("C2", tmp_path / "target")
    out = tmp_path / "x.json"
    export_keys(stores["C2"], PAIR, out, ticket=target.issue_import_ticket(), nbits=2048)
    genuine = out.read_bytes()
    # the first read sees edited bits, every later read the genuine file (whose MAC verifies)
    fifo = swapping_file([_tampered(json.loads(genuine)), genuine])
    with pytest.raises(KeyStoreError, match="failed authentication"):
        import_keys(target, fifo)
    assert target.accounting() == {}  # nothing imported; the ticket stays good for the genuine file
    assert import_keys(target, out)["imported_bits"] == 2048
    target.close()


def test_cli_import_imports_the_bytes_it_authenticated(tmp_path: Path, kh, swapping_file):
    from labqfl.keystore import open_node_stores

    src, dst = tmp_path / "src", tmp_path / "dst"
    stores = open_node_stores(["C1", "C2"], src)
    kh.fill_pair(stores, PAIR, 1, 4096, seed=5)
    target = KeyStore.for_node("C2", dst)
    out = tmp_path / "x.json"
    export_keys(stores["C2"], PAIR, out, ticket=target.issue_import_ticket(), nbits=2048)
    target.close()
    genuine = out.read_bytes()
    # review s33's reproducer: the header read and the MAC read saw the genuine file, the bits read an edited one
    fifo = swapping_file([genuine, _tampered(json.loads(genuine)), genuine])
    res = CliRunner().invoke(app, ["keys", "import", str(fifo), "--keep-file"], env={"LABQFL_DATA_DIR": str(dst)})
    assert res.exit_code == 0, res.output  # one read: the genuine file, authenticated and imported
    with KeyStore.for_node("C2", dst) as st:
        k = st.take(PAIR, 2048, "general")
        assert np.array_equal(k.bits, stores["C1"].take_exact(PAIR, k.refs, "general").bits)  # both ends agree
    for s in stores.values():
        s.close()


# ---------------------------------------------------------------------- F9


def test_cli_import_destroys_the_export_file_unless_kept(tmp_path: Path, kh):
    from labqfl.keystore import open_node_stores

    src, dst = tmp_path / "src", tmp_path / "dst"
    stores = open_node_stores(["C1", "C2"], src)
    kh.fill_pair(stores, PAIR, 1, 4096, seed=6)
    target = KeyStore.for_node("C2", dst)
    files = {name: tmp_path / f"{name}.json" for name in ("shred", "keep")}
    for f in files.values():
        export_keys(stores["C2"], PAIR, f, ticket=target.issue_import_ticket(), nbits=1024)
    target.close()
    for s in stores.values():
        s.close()
    runner = CliRunner()
    res = runner.invoke(app, ["keys", "import", str(files["shred"]), "--json"], env={"LABQFL_DATA_DIR": str(dst)})
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["export_file"] == "destroyed" and not files["shred"].exists()
    res = runner.invoke(app, ["keys", "import", str(files["keep"]), "--keep-file"], env={"LABQFL_DATA_DIR": str(dst)})
    assert res.exit_code == 0, res.output
    assert files["keep"].exists() and "--keep-file" in res.output
