"""Review s33 F1, the crash window: `keys export` killed (SIGKILL, as a power cut) at every step of
the export. After the recovery that `keys status`, an export or an import runs, the exported bits
are either in exactly one complete export file (and exported at the source) or free at the source
(and in no complete file): never both usable, never neither. The previous code zeroed the bits in
the store before writing the file, so a kill between the two lost them."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.errors import KeyStoreError
from labqfl.keystore import KeyStore, node_store_path
from labqfl.keystore.transfer import (
    export_keys,
    import_keys,
    recover_exports,
    write_ticket,
)

from .conftest import expected_bits, fill_pair

PAIR = "C1-C2"
NBITS = 3000

#: the steps of transfer.export_keys at which the child is killed, and what recovery must make of it
STEPS = {"created": "free", "reserved": "free", "begun": "free", "half-written": "free", "written": "exported",
         "finished": "exported", "linked": "exported", "published": "exported"}

_CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from labqfl.keystore import KeyStore
    from labqfl.keystore import transfer

    data, ticket, out, step, nbits = sys.argv[1:6]

    def crash(where):
        if where == step:
            os.kill(os.getpid(), signal.SIGKILL)

    transfer._crash_point = crash
    real_preallocate = transfer._preallocate

    def preallocate(fd, size):  # the step before the store is asked for anything
        real_preallocate(fd, size)
        crash("reserved")

    transfer._preallocate = preallocate
    real_write_exact = transfer._write_exact

    def write_exact(fd, data):  # the previous code wrote the file only here, after the store's commit
        crash("half-written")
        real_write_exact(fd, data)

    transfer._write_exact = write_exact
    st = KeyStore.for_node("C2", Path(data), create=False)
    transfer.export_keys(st, "C1-C2", Path(out), ticket=transfer.read_ticket(Path(ticket)), nbits=int(nbits))
    print("completed")
""")


def _setup(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray], Path]:
    data = tmp_path / "data"
    stores = {n: KeyStore.for_node(n, data) for n in ("C1", "C2")}
    blocks = fill_pair(stores, PAIR, 2, 4000, seed=11)
    for s in stores.values():
        s.close()
    with KeyStore.for_node("C2", tmp_path / "target") as target:
        write_ticket(target, tmp_path / "ticket.json")
    return data, blocks, tmp_path / "ticket.json"


def _kill_export_at(step: str, data: Path, ticket: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _CHILD, str(data), str(ticket), str(out), step, str(NBITS)],
                          capture_output=True, text=True, timeout=120, cwd=data.parent)


def _complete_copies(folder: Path, target: KeyStore, blocks: dict[str, np.ndarray]) -> list[tuple[Path, int]]:
    """Every file in ``folder`` that the target store imports (each is tried on a copy of the target, so
    one import does not spend the ticket for the next), with its bits checked against the blocks."""
    found = []
    for f in sorted(folder.iterdir()):
        probe = target.path.parent.parent / f"probe-{f.name}"
        probe.mkdir()
        con = sqlite3.connect(target.path)
        dst = sqlite3.connect(probe / "C2.sqlite")
        con.backup(dst)
        con.close()
        dst.close()
        with KeyStore(probe / "C2.sqlite", node="C2") as copy:
            try:
                n = import_keys(copy, f)["imported_bits"]
            except Exception:  # noqa: BLE001 - not a complete, authentic export
                continue
            for b, bits in blocks.items():
                free = copy.free_ranges(PAIR, ["general"]).get(b, [])
                for lo, hi in free:
                    got = copy.take_exact(PAIR, [(b, lo, hi - lo)], "general").bits
                    assert np.array_equal(got, bits[lo:hi])
        found.append((f, n))
    return found


@pytest.mark.parametrize("step", list(STEPS))
def test_a_kill_at_any_step_leaves_the_bits_in_one_complete_file_or_free_in_the_store(tmp_path: Path, step: str):
    data, blocks, ticket = _setup(tmp_path)
    stick = tmp_path / "stick"
    stick.mkdir()
    with KeyStore.for_node("C2", data) as st:
        before = st.accounting()[PAIR]
    res = _kill_export_at(step, data, ticket, stick / "x.json")
    assert res.returncode == -signal.SIGKILL, (res.stdout, res.stderr)
    # recovery, as `keys status` runs it
    shown = CliRunner().invoke(app, ["keys", "status", "--node", "C2", "--json"], env={"LABQFL_DATA_DIR": str(data)})
    assert shown.exit_code == 0, shown.output
    notes = json.loads(shown.stdout)["nodes"]["C2"]["recovered"]
    with KeyStore.for_node("C2", data) as st:
        acc = st.accounting()[PAIR]
        exports = st.exports()
        assert recover_exports(st) == []  # done once: nothing left for the next run
        assert st.pending_exports() == []
    assert acc["exporting"] == {}
    with KeyStore.for_node("C2", tmp_path / "target") as target:
        copies = _complete_copies(stick, target, blocks)
    if STEPS[step] == "free":
        assert acc == before  # every bit free again, in its pool
        assert copies == []  # and no file that imports them
        assert all(e["state"] == "aborted" for e in exports)
        # killed before the store recorded the export (no bit moved): its empty temporary file is removed
        assert [n["action"] for n in notes] == (["removed"] if step in ("created", "reserved") else ["aborted"])
        assert list(stick.iterdir()) == []  # no key in clear, and no empty .part left behind either
    else:
        assert acc["exported"] == {"general": NBITS} and acc["available"] == {"general": 8000 - NBITS}
        assert [(f.name, n) for f, n in copies] == [("x.json", NBITS)]  # one complete file, under its name
        assert sorted(p.name for p in stick.iterdir()) == ["x.json"]
        assert [e["state"] for e in exports] == ["done"]
        assert [n["action"] for n in notes] == ["finished"]


def test_an_export_after_a_kill_recovers_first_and_the_ticket_is_good_again(tmp_path: Path):
    data, blocks, ticket = _setup(tmp_path)
    stick = tmp_path / "stick"
    stick.mkdir()
    assert _kill_export_at("half-written", data, ticket, stick / "x.json").returncode == -signal.SIGKILL
    with KeyStore.for_node("C2", data) as st:
        assert st.accounting()[PAIR]["exporting"] == {"general": NBITS}  # not lost: held until recovery
        with pytest.raises(KeyStoreError, match="are being exported"):
            st.take_exact(PAIR, st.exports()[0]["refs"], "general")
        from labqfl.keystore.transfer import read_ticket

        summary = export_keys(st, PAIR, stick / "y.json", ticket=read_ticket(ticket), nbits=NBITS)
        assert [n["action"] for n in summary["recovered"]] == ["aborted"]
    with KeyStore.for_node("C2", tmp_path / "target") as target:
        assert import_keys(target, stick / "y.json")["imported_bits"] == NBITS
    assert sorted(p.name for p in stick.iterdir()) == ["y.json"]


def test_a_foreign_file_at_the_export_path_holds_the_bits_until_an_explicit_abort(tmp_path: Path):
    data, blocks, ticket = _setup(tmp_path)
    stick = tmp_path / "stick"
    stick.mkdir()
    assert _kill_export_at("begun", data, ticket, stick / "x.json").returncode == -signal.SIGKILL
    (stick / "x.json").write_text("someone else's file")
    env = {"LABQFL_DATA_DIR": str(data)}
    for _ in range(2):  # told every time, nothing touched
        shown = CliRunner().invoke(app, ["keys", "status", "--node", "C2"], env=env)
        assert "WARNING" in shown.output and "holds another file" in shown.output, shown.output
        assert (stick / "x.json").read_text() == "someone else's file"
        with KeyStore.for_node("C2", data) as st:
            assert st.accounting()[PAIR]["exporting"] == {"general": NBITS}
            eid = st.pending_exports()[0]["export_id"]
    res = CliRunner().invoke(app, ["keys", "abort-export", "--node", "C2", eid], env=env)
    assert res.exit_code == 0, res.output
    with KeyStore.for_node("C2", data) as st:
        acc = st.accounting()[PAIR]
        assert acc["exporting"] == {} and acc["available"] == {"general": 8000}
    assert sorted(p.name for p in stick.iterdir()) == ["x.json"]  # our .part removed, theirs kept
    assert (stick / "x.json").read_text() == "someone else's file"


def test_an_export_whose_drive_is_gone_is_held_not_undone(tmp_path: Path):
    """A recovery that cannot see the export's folder (a USB stick not plugged in) must not undo it: a
    complete copy may be on that drive."""
    data, blocks, ticket = _setup(tmp_path)
    stick = tmp_path / "stick"
    stick.mkdir()
    assert _kill_export_at("written", data, ticket, stick / "x.json").returncode == -signal.SIGKILL
    stick.rename(tmp_path / "unplugged")
    with KeyStore.for_node("C2", data) as st:
        (note,) = recover_exports(st)
        assert note["action"] == "held" and "not mounted" in note["message"]
        assert st.accounting()[PAIR]["exporting"] == {"general": NBITS}
    (tmp_path / "unplugged").rename(stick)
    with KeyStore.for_node("C2", data) as st:
        assert [n["action"] for n in recover_exports(st)] == ["finished"]
        assert st.accounting()[PAIR]["exported"] == {"general": NBITS}
    with KeyStore.for_node("C2", tmp_path / "target") as target:
        assert import_keys(target, stick / "x.json")["imported_bits"] == NBITS


def test_exporting_bits_are_neither_handed_out_nor_announced_as_spent(tmp_path: Path):
    data, blocks, ticket = _setup(tmp_path)
    with KeyStore.for_node("C2", data) as st, KeyStore.for_node("C2", tmp_path / "t2") as other:
        binding, segs = st.begin_export(PAIR, 5000, "general", ticket=other.issue_import_ticket())
        refs = [(s.block_id, s.offset, int(s.bits.size)) for s in segs]
        assert np.array_equal(np.concatenate([s.bits for s in segs]), expected_bits(blocks, refs))
        assert st.spent_refs(PAIR, refs) == []  # an ETSI resync or FL void must not discard them at the partner
        k = st.take(PAIR, 3000, "general")  # only the 3000 free bits are handed out
        assert all(not (b == rb and o < ro + rn and ro < o + n) for b, o, n in k.refs for rb, ro, rn in refs)
        with pytest.raises(Exception, match="bits available"):
            st.take(PAIR, 1, "general")
        assert st.abort_export(binding.export_id) == 5000
        assert st.available_bits(PAIR) == 5000
        assert st.spent_refs(PAIR, refs) == []


def test_a_version_2_store_is_migrated_and_its_exports_stay_done(tmp_path: Path):
    """A store written by the previous schema (2) opens: its segments and exports are kept, its old
    exports are done, and a ticket used by one of them stays used."""
    data, blocks, ticket = _setup(tmp_path)
    path = node_store_path("C2", data)
    with KeyStore.for_node("C2", data) as st, KeyStore.for_node("C2", tmp_path / "t2") as other:
        tk = other.issue_import_ticket()
        st.export_segments(PAIR, 1000, "general", ticket=tk)
        before = st.accounting()
    con = sqlite3.connect(path, isolation_level=None)  # back to schema 2's layout, as the previous code wrote it
    con.executescript("""
        BEGIN;
        CREATE TABLE s2 (block_seq INTEGER NOT NULL REFERENCES blocks (seq), start INTEGER NOT NULL CHECK (start >= 0),
          length INTEGER NOT NULL CHECK (length > 0), pair TEXT NOT NULL, purpose TEXT NOT NULL,
          state TEXT NOT NULL CHECK (state IN ('free', 'reserved', 'consumed', 'exported', 'absent')), key_id TEXT,
          PRIMARY KEY (block_seq, start)) WITHOUT ROWID;
        INSERT INTO s2 SELECT * FROM segments; DROP TABLE segments; ALTER TABLE s2 RENAME TO segments;
        CREATE INDEX segments_free ON segments (pair, purpose, block_seq, start) WHERE state = 'free';
        CREATE TABLE e2 (export_id TEXT PRIMARY KEY, pair TEXT NOT NULL, nbits INTEGER NOT NULL, refs TEXT NOT NULL,
          target_node TEXT NOT NULL, target_store TEXT NOT NULL, ticket_id TEXT NOT NULL UNIQUE, created TEXT NOT NULL);
        INSERT INTO e2 SELECT export_id, pair, nbits, refs, target_node, target_store, ticket_id, created FROM exports;
        DROP TABLE exports; ALTER TABLE e2 RENAME TO exports;
        UPDATE meta SET value = '2' WHERE key = 'schema_version';
        COMMIT;
    """)
    con.close()
    with KeyStore.for_node("C2", data) as st:
        assert st.accounting() == before
        assert [e["state"] for e in st.exports()] == ["done"]
        with pytest.raises(KeyStoreError, match="already used"):
            st.begin_export(PAIR, 10, "general", ticket=tk)
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("3",)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()


_PAUSING_CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from labqfl.keystore import KeyStore
    from labqfl.keystore import transfer

    data, ticket, out, flag = sys.argv[1:5]

    def pause(where):
        if where == "half-written":
            Path(flag + ".paused").touch()
            while not Path(flag + ".go").exists():
                time.sleep(0.05)

    transfer._crash_point = pause
    st = KeyStore.for_node("C2", Path(data), create=False)
    transfer.export_keys(st, "C1-C2", Path(out), ticket=transfer.read_ticket(Path(ticket)), nbits=3000)
""")


def test_a_recovery_leaves_an_export_running_in_another_process_alone(tmp_path: Path):
    data, blocks, ticket = _setup(tmp_path)
    stick = tmp_path / "stick"
    stick.mkdir()
    flag = tmp_path / "flag"
    child = subprocess.Popen([sys.executable, "-c", _PAUSING_CHILD, str(data), str(ticket), str(stick / "x.json"),
                              str(flag)], cwd=tmp_path)
    try:
        for _ in range(600):
            if Path(f"{flag}.paused").exists() or child.poll() is not None:
                break
            time.sleep(0.05)
        assert Path(f"{flag}.paused").exists()
        shown = CliRunner().invoke(app, ["keys", "status", "--node", "C2", "--json"],
                                   env={"LABQFL_DATA_DIR": str(data)})
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["nodes"]["C2"]["recovered"] == []  # its .part is locked: running
        with KeyStore.for_node("C2", data) as st:
            assert recover_exports(st) == []
            assert [e["state"] for e in st.pending_exports()] == ["exporting"]
        Path(f"{flag}.go").touch()
        assert child.wait(60) == 0
    finally:
        if child.poll() is None:
            child.kill()
    with KeyStore.for_node("C2", data) as st:
        assert [e["state"] for e in st.exports()] == ["done"]
    with KeyStore.for_node("C2", tmp_path / "target") as target:
        assert import_keys(target, stick / "x.json")["imported_bits"] == NBITS


def test_a_store_that_cannot_record_the_finish_gets_its_bits_back_and_no_file_is_left(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The file is complete but the store's second transaction fails (its own disk full): the export is
    undone, so the bits are free at the source and no complete file of them exists."""
    data, blocks, ticket = _setup(tmp_path)
    stick = tmp_path / "stick"
    stick.mkdir()

    def refuse(self: KeyStore, export_id: str, digest: str) -> None:
        raise KeyStoreError(f"key store {self.path}: commit failed (database or disk is full)")

    from labqfl.keystore.transfer import read_ticket

    with KeyStore.for_node("C2", data) as st:
        before = st.accounting()[PAIR]
        monkeypatch.setattr(KeyStore, "finish_export", refuse)
        with pytest.raises(KeyStoreError) as err:
            export_keys(st, PAIR, stick / "x.json", ticket=read_ticket(ticket), nbits=NBITS)
        monkeypatch.undo()
        assert "recording it complete in the store failed" in str(err.value)
        assert "bits are back in the store" in str(err.value)
        assert st.accounting()[PAIR] == before and [e["state"] for e in st.exports()] == ["aborted"]
    assert list(stick.iterdir()) == []


def test_a_complete_temporary_file_imported_before_recovery_keeps_the_bits_out_of_the_store(tmp_path: Path):
    """Second review s33 H1: an export killed once its temporary file was complete (step ``written``); the
    user imports that ``.part`` at the target (the import destroys the file), then `keys status` runs the
    source's recovery. It found neither file and undid the export: the same 3000 bits free at the source
    and imported at the target (one pad in two stores). With neither file there it now holds them."""
    data, blocks, ticket = _setup(tmp_path)
    stick = tmp_path / "stick"
    stick.mkdir()
    assert _kill_export_at("written", data, ticket, stick / "x.json").returncode == -signal.SIGKILL
    [part] = list(stick.iterdir())
    with KeyStore.for_node("C2", tmp_path / "target") as target:
        assert import_keys(target, part)["imported_bits"] == NBITS
    part.unlink(missing_ok=True)  # as `keys import` does (it shreds the file it imported)
    shown = CliRunner().invoke(app, ["keys", "status", "--node", "C2", "--json"], env={"LABQFL_DATA_DIR": str(data)})
    assert shown.exit_code == 0, shown.output
    notes = json.loads(shown.stdout)["nodes"]["C2"]["recovered"]
    assert [n["action"] for n in notes] == ["held"] and "abort-export" in notes[0]["message"]
    with KeyStore.for_node("C2", data) as st:
        acc = st.accounting()[PAIR]
        assert acc["exporting"] == {"general": NBITS} and acc["available"] == {"general": 8000 - NBITS}
        with pytest.raises(KeyStoreError, match="are being exported"):
            st.take_exact(PAIR, st.exports()[0]["refs"], "general")
