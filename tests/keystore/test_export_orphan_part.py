"""An export killed after its hidden ``.NAME.<id>.part`` was created and before the store recorded the
export (no bit had moved) left that empty, zero-filled file in the user's folder for good: no record
named it, so no recovery ever looked at it. The store now notes the file before creating it, and
recovery removes it, but only when it is provably this store's, its export never began, nothing runs
on it, and every byte of it is zero (transfer._recover_parts)."""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.keystore import KeyStore
from labqfl.keystore.transfer import (
    export_keys,
    import_keys,
    read_ticket,
    recover_exports,
    write_ticket,
)

from .test_export_crash import NBITS, PAIR, _kill_export_at, _setup


def _status(data: Path) -> list[dict[str, str]]:
    shown = CliRunner().invoke(app, ["keys", "status", "--node", "C2", "--json"], env={"LABQFL_DATA_DIR": str(data)})
    assert shown.exit_code == 0, shown.output
    return json.loads(shown.stdout)["nodes"]["C2"]["recovered"]


def _killed_before_the_record(tmp_path: Path, step: str = "reserved") -> tuple[Path, Path, Path, dict[str, int]]:
    data, _, ticket = _setup(tmp_path)
    stick = tmp_path / "stick"
    stick.mkdir()
    with KeyStore.for_node("C2", data) as st:
        before = st.accounting()[PAIR]
    assert _kill_export_at(step, data, ticket, stick / "x.json").returncode == -signal.SIGKILL
    [part] = list(stick.iterdir())
    assert part.name.startswith(".x.json.") and part.name.endswith(".part")
    return data, ticket, part, before


def test_a_part_that_holds_data_and_no_record_is_left_in_place_and_reported(tmp_path: Path):
    """A noted .part whose content is not all zero was not written by this store (an export's bytes are
    written only once its record exists): it may be another store's export, so it is never removed."""
    data, _, part, before = _killed_before_the_record(tmp_path)
    size = part.stat().st_size
    with part.open("r+b") as fh:
        fh.seek(size // 2)
        fh.write(b"\x01")
    content = part.read_bytes()
    notes = _status(data)
    assert [n["action"] for n in notes] == ["held"] and "not all zero bytes" in notes[0]["message"], notes
    assert part.read_bytes() == content  # untouched
    with KeyStore.for_node("C2", data) as st:
        assert recover_exports(st) == []  # reported once, then forgotten: not this store's file
        assert st.export_parts() == [] and st.accounting()[PAIR] == before
    assert part.read_bytes() == content


def test_a_part_on_a_read_only_folder_is_reported_and_removed_once_it_can_be(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch):
    data, _, part, before = _killed_before_the_record(tmp_path)
    real_unlink = Path.unlink

    def read_only(self: Path, missing_ok: bool = False) -> None:
        if self.parent == part.parent:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", read_only)
    with KeyStore.for_node("C2", data) as st:
        for _ in range(2):  # told every time, kept for the next try
            (note,) = recover_exports(st)
            assert note["action"] == "held" and "cannot be removed" in note["message"], note
            assert part.exists() and st.export_parts() == [str(part)]
        monkeypatch.undo()
        assert [n["action"] for n in recover_exports(st)] == ["removed"]
        assert st.export_parts() == [] and st.accounting()[PAIR] == before
    assert not part.exists()


def test_another_stores_part_in_the_same_folder_is_left_to_that_store(tmp_path: Path):
    """C2's export is killed once it began (its zero-filled .part has a record in C2's store only); an
    export of C1 into the same folder must not take that .part for a leftover of its own, or C2's recovery
    would find no file and hold the bits instead of giving them back."""
    data, _, ticket = _setup(tmp_path)
    stick = tmp_path / "stick"
    stick.mkdir()
    assert _kill_export_at("begun", data, ticket, stick / "x.json").returncode == -signal.SIGKILL
    [part] = list(stick.iterdir())
    with KeyStore.for_node("C1", tmp_path / "target1") as target1:
        write_ticket(target1, tmp_path / "ticket1.json")
    with KeyStore.for_node("C1", data) as c1:
        summary = export_keys(c1, PAIR, stick / "c1.json", ticket=read_ticket(tmp_path / "ticket1.json"), nbits=1000)
        assert summary["recovered"] == [] and recover_exports(c1) == []
    assert sorted(p.name for p in stick.iterdir()) == sorted([part.name, "c1.json"])
    assert [n["action"] for n in _status(data)] == ["aborted"]  # C2's own rule: partial file there, undone
    with KeyStore.for_node("C2", data) as st:
        assert st.accounting()[PAIR]["available"] == {"general": 8000}


_PAUSING_CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from labqfl.keystore import KeyStore
    from labqfl.keystore import transfer

    data, ticket, out, flag, step = sys.argv[1:6]

    def pause(where):
        if where == step:
            Path(flag + ".paused").touch()
            while not Path(flag + ".go").exists():
                time.sleep(0.05)

    transfer._crash_point = pause
    real_preallocate = transfer._preallocate

    def preallocate(fd, size):
        real_preallocate(fd, size)
        pause("reserved")

    transfer._preallocate = preallocate
    st = KeyStore.for_node("C2", Path(data), create=False)
    transfer.export_keys(st, "C1-C2", Path(out), ticket=transfer.read_ticket(Path(ticket)), nbits=3000)
""")


@pytest.mark.parametrize("step", ["created", "reserved"])
def test_a_recovery_does_not_remove_the_part_of_an_export_running_now(tmp_path: Path, step: str):
    """Paused with its .part created but not yet locked (``created``: it holds the store folder's lock)
    or created, reserved and locked but not yet recorded (``reserved``): the .part is noted, empty and
    unrecorded, exactly like a leftover; a recovery in another process must leave it and the export
    must finish."""
    data, _, ticket = _setup(tmp_path)
    stick = tmp_path / "stick"
    stick.mkdir()
    flag = tmp_path / "flag"
    child = subprocess.Popen([sys.executable, "-c", _PAUSING_CHILD, str(data), str(ticket), str(stick / "x.json"),
                              str(flag), step], cwd=tmp_path)
    try:
        for _ in range(600):
            if Path(f"{flag}.paused").exists() or child.poll() is not None:
                break
            time.sleep(0.05)
        assert Path(f"{flag}.paused").exists()
        [part] = list(stick.iterdir())
        assert _status(data) == []
        with KeyStore.for_node("C2", data) as st:
            assert st.export_parts() == [str(part)] and st.exports() == []
            t0 = time.monotonic()
            assert recover_exports(st) == []
            assert time.monotonic() - t0 < 5  # not waiting for the export
        assert part.exists()
        Path(f"{flag}.go").touch()
        assert child.wait(60) == 0
    finally:
        if child.poll() is None:
            child.kill()
    assert [p.name for p in stick.iterdir()] == ["x.json"]
    with KeyStore.for_node("C2", data) as st:
        assert [e["state"] for e in st.exports()] == ["done"] and st.export_parts() == []
    with KeyStore.for_node("C2", tmp_path / "target") as target:
        assert import_keys(target, stick / "x.json")["imported_bits"] == NBITS


def test_exports_that_end_or_fail_leave_no_note_and_a_note_without_a_file_is_dropped(tmp_path: Path):
    data, _, ticket = _setup(tmp_path)
    stick = tmp_path / "stick"
    stick.mkdir()
    with KeyStore.for_node("C2", data) as st:
        export_keys(st, PAIR, stick / "a.json", ticket=read_ticket(ticket), nbits=100)
        assert st.export_parts() == []
        with pytest.raises(Exception, match="already used"):  # refused by the store: the .part goes, and its note
            export_keys(st, PAIR, stick / "b.json", ticket=read_ticket(ticket), nbits=100)
        assert st.export_parts() == [] and [p.name for p in stick.iterdir()] == ["a.json"]
        # a crash between noting the file and creating it: the note goes, nothing else is touched
        st.note_export_part(str(stick / ".c.json.0123456789ab.part"))
        assert recover_exports(st) == [] and st.export_parts() == []
        assert [p.name for p in stick.iterdir()] == ["a.json"]


def test_keys_status_warns_of_a_held_export_whose_files_are_gone_every_time(tmp_path: Path):
    data, _, ticket = _setup(tmp_path)
    stick = tmp_path / "stick"
    stick.mkdir()
    assert _kill_export_at("written", data, ticket, stick / "x.json").returncode == -signal.SIGKILL
    [part] = list(stick.iterdir())
    part.unlink()
    for _ in range(2):
        shown = CliRunner().invoke(app, ["keys", "status", "--node", "C2"], env={"LABQFL_DATA_DIR": str(data)})
        assert shown.exit_code == 0, shown.output
        text = " ".join(shown.output.split())
        assert "WARNING: export" in text and "neither its file" in text and "keys abort-export" in text, text
