"""CLI review s32: H3 (`keys preshare` loaded one secret again and again: the same pair with
--keep-file, another pair, another node's pair in the same data dir), M6 (`keys status` with a wrong
--data-dir looked like "no keys"; one corrupt store hid every node) and L4 (`keys export` from a
node that is not a member of the pair named "its copy" of a key it does not hold)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import error_line
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.keystore import KeyStore, list_node_stores

runner = CliRunner()


def _run(*args: str, data: Path):
    return runner.invoke(app, list(args), env={"LABQFL_DATA_DIR": str(data)})


def _secret(path: Path, nbytes: int = 64, seed: int = 3) -> bytes:
    b = np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    path.write_bytes(b)
    return b


def _error_line(res) -> str:
    return error_line(res)  # with --json, the failure's JSON on stdout (issue 19)


def _snapshot(data: Path) -> dict[str, object]:
    """Every store's accounting and blocks (no material): what a refused load must leave as it was."""
    out: dict[str, object] = {}
    for n in list_node_stores(data):
        with KeyStore.for_node(n, data, create=False) as st:
            out[n] = (st.accounting(), st.blocks())
    return out


# -- H3: one secret, one load ------------------------------------------------------------------------


def _load(pair: str, f: Path, data: Path, *extra: str) -> dict:
    res = _run("keys", "preshare", "--pair", pair, "--file", str(f), "--keep-file", "--json", *extra, data=data)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.mark.parametrize(("second", "node"), [("C2-C3", "C2"), ("C2-C4", "C2"), ("C1-C4", "C2")],
                         ids=["same-pair-again", "other-pair-same-node", "other-nodes-pair"])
def test_a_secret_already_loaded_in_the_data_dir_is_refused_and_nothing_changes(tmp_path, second, node):
    data = tmp_path / "data"
    f = tmp_path / "s3.bin"
    secret = _secret(f)
    first = _load("C2-C3", f, data)
    before = _snapshot(data)
    files = sorted(p.name for p in (data / "keystore").iterdir())
    line = _error_line(_run("keys", "preshare", "--pair", second, "--file", str(f), "--keep-file", data=data))
    assert (f"this secret was already loaded as block {first['block_id']} of pair C2-C3 on node {node}"
            in line), line
    assert "s3.bin" in line and "used only once" in line and secret.hex() not in line
    assert _snapshot(data) == before  # nothing added, reserved or consumed anywhere
    assert sorted(p.name for p in (data / "keystore").iterdir()) == files  # no store created (C1, C4)
    assert f.read_bytes() == secret  # a refused load leaves the file alone


def test_a_refusal_without_keep_file_keeps_the_file_and_a_fresh_secret_still_loads(tmp_path):
    data = tmp_path / "data"
    _secret(tmp_path / "a.bin")
    _load("C1-C2", tmp_path / "a.bin", data)
    # a copy of the destroyed-after-load file (a backup, another medium) is refused too
    _secret(tmp_path / "copy.bin")
    line = _error_line(_run("keys", "preshare", "--pair", "C1-C3", "--file", str(tmp_path / "copy.bin"), data=data))
    assert "already loaded" in line and "of pair C1-C2 on node C1" in line
    assert (tmp_path / "copy.bin").exists()
    _secret(tmp_path / "fresh.bin", seed=4)
    out = _load("C1-C3", tmp_path / "fresh.bin", data)
    assert out["auth_available_bits"] == {"C1": 512, "C3": 512}


def test_a_secret_of_two_identical_halves_is_refused(tmp_path):
    half = np.random.default_rng(7).integers(0, 256, 32, dtype=np.uint8).tobytes()
    (tmp_path / "h.bin").write_bytes(half + half)
    data = tmp_path / "data"
    line = _error_line(_run("keys", "preshare", "--pair", "C1-C2", "--file", str(tmp_path / "h.bin"), data=data))
    assert "first 32 bytes repeated 2 times" in line and "not a random secret" in line
    (tmp_path / "t.bin").write_bytes(half[:16] * 3)  # thirds
    line = _error_line(_run("keys", "preshare", "--pair", "C1-C2", "--file", str(tmp_path / "t.bin"), data=data))
    assert "first 16 bytes repeated 3 times" in line
    assert _snapshot(data) == {}


def test_a_store_that_cannot_be_checked_refuses_the_load_and_is_left_as_it_was(tmp_path):
    data = tmp_path / "data"
    _secret(tmp_path / "a.bin")
    _load("C1-C2", tmp_path / "a.bin", data)
    victim = data / "keystore" / "C2.sqlite"
    victim.write_bytes(victim.read_bytes()[:1000])  # truncated
    md5 = hashlib.md5(victim.read_bytes()).hexdigest()
    _secret(tmp_path / "b.bin", seed=5)
    line = _error_line(_run("keys", "preshare", "--pair", "C3-C4", "--file", str(tmp_path / "b.bin"), data=data))
    assert "C2.sqlite" in line and "cannot be checked for an earlier load" in line
    assert hashlib.md5(victim.read_bytes()).hexdigest() == md5
    assert not (data / "keystore" / "C3.sqlite").exists()


# -- M6: keys status -----------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda d: None, lambda d: d.mkdir()], ids=["missing", "no-keystore-folder"])
def test_status_of_a_data_dir_without_a_keystore_folder_is_an_error(tmp_path, make):
    d = tmp_path / "nonexist"
    make(d)
    for extra in ((), ("--json",)):
        res = _run("keys", "status", "--data-dir", str(d), *extra, data=tmp_path / "env")
        line = _error_line(res)
        assert line.startswith(f"error: no key stores under {d} (no keystore/ folder);"), line
        assert (json.loads(res.stdout)["error"] if extra else res.stdout) == (line[7:] if extra else "")  # issue 19


def test_status_of_an_empty_keystore_folder_is_an_empty_status(tmp_path):
    (tmp_path / "d" / "keystore").mkdir(parents=True)
    res = _run("keys", "status", "--json", data=tmp_path / "d")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["nodes"] == {}
    res = _run("keys", "status", data=tmp_path / "d")
    assert res.exit_code == 0 and "no key stores in" in res.output


def test_status_reports_a_corrupt_store_in_its_row_and_still_shows_the_others(tmp_path, kh):
    data = tmp_path / "data"
    stores = {n: KeyStore.for_node(n, data) for n in ("C1", "C2", "C3", "C4")}
    kh.fill_pair({n: stores[n] for n in ("C1", "C2")}, "C1-C2", 1, 4000, seed=1)
    kh.fill_pair({n: stores[n] for n in ("C3", "C4")}, "C3-C4", 1, 2000, seed=2)
    for s in stores.values():
        s.close()
    victim = data / "keystore" / "C1.sqlite"
    for p in (Path(f"{victim}-wal"), Path(f"{victim}-shm")):
        p.unlink(missing_ok=True)
    victim.write_bytes(victim.read_bytes()[:4096] + os.urandom(2048))  # header intact, pages garbage
    md5 = hashlib.md5(victim.read_bytes()).hexdigest()

    res = _run("keys", "status", "--json", data=data)
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert set(doc["nodes"]) == {"C1", "C2", "C3", "C4"}
    bad = doc["nodes"]["C1"]
    assert set(bad) == {"store", "error"} and "C1.sqlite" in bad["error"] and bad["store"] == str(victim)
    assert doc["nodes"]["C2"]["pairs"]["C1-C2"]["available"] == {"general": 4000}
    assert doc["nodes"]["C4"]["pairs"]["C3-C4"]["available"] == {"general": 2000}
    errs = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert errs == [f"error: node C1: {bad['error']}"]

    res = _run("keys", "status", data=data)  # humans: the table shows every node, then one error line
    assert res.exit_code == 1
    assert "ERROR" in res.output and "C3-C4" in res.output and "C1-C2" in res.output
    assert [ln for ln in res.output.splitlines() if ln.startswith("error:")] == [f"error: node C1: {bad['error']}"]
    assert hashlib.md5(victim.read_bytes()).hexdigest() == md5  # never modified or reset
    assert not Path(f"{victim}-wal").exists() or Path(f"{victim}-wal").stat().st_size == 0


# -- L4: export from a node that is not in the pair ------------------------------------------------------


def test_export_from_a_node_outside_the_pair_says_so(tmp_path, kh):
    data = tmp_path / "data"
    with KeyStore.for_node("C1", data) as s1, KeyStore.for_node("C2", data) as s2:
        kh.fill_pair({"C1": s1, "C2": s2}, "C1-C2", 1, 1000, seed=1)
    ticket = tmp_path / "ticket.json"
    res = runner.invoke(app, ["keys", "ticket", "--node", "C1", "--out", str(ticket), "--data-dir",
                              str(tmp_path / "other")])
    assert res.exit_code == 0, res.output
    out = tmp_path / "x.exp"
    line = _error_line(_run("keys", "export", "--node", "C1", "--pair", "C2-C3", "--ticket", str(ticket),
                            "--out", str(out), data=data))
    assert "node C1 is not a member of pair C2-C3" in line and "copy" not in line, line
    assert not out.exists()
