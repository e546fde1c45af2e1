"""``labqfl node preshare --out DIR [--pair Ci-Cj ...]`` (CLI review s32 M3): the pairs' pre-shared
authentication secrets for nodes on separate hosts without a Python snippet. Each pair gets one fresh
secret in two 0600 files laid out as each client's data folder, which a client node imports at its start
(``ClientNode._import_preshared``) into the same block at both ends; nothing is overwritten without
``--force``; ``--json`` is one document; a bad pair or size is one error line with nothing written."""

from __future__ import annotations

import json
import stat
import types
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import error_line, json_doc
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.keystore import KeyStore
from labqfl.nodes.client import ClientNode

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["node", "preshare", *args])



def _import(data: Path, name: str) -> KeyStore:
    """What client node ``name`` with data folder ``data`` does with its delivered secrets at start."""
    node = types.SimpleNamespace(private=data / "nodes" / name, store=KeyStore.for_node(name, data), name=name)
    ClientNode._import_preshared(node)  # type: ignore[arg-type]
    return node.store


def test_a_client_node_imports_the_secret_at_both_ends(tmp_path: Path) -> None:
    out = json_doc(_run("--out", str(tmp_path / "ps"), "--pair", "C1-C2", "--bits", "1024", "--json"))
    d = out["pairs"]["C1-C2"]
    files = {n: Path(f) for n, f in d["files"].items()}
    assert files == {n: tmp_path / "ps" / n / "nodes" / n / "preshared" / "C1-C2.json" for n in ("C1", "C2")}
    for f in files.values():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert json.loads(f.read_text())["block_id"] == d["block_id"]
    assert files["C1"].read_bytes() == files["C2"].read_bytes()
    assert json.loads(files["C1"].read_text())["bits_hex"] not in json.dumps(out)  # never printed
    # each host: the folder OUT/Ci is Ci's data folder (its files copied into <data>/nodes/Ci/preshared/)
    s1, s2 = _import(tmp_path / "ps" / "C1", "C1"), _import(tmp_path / "ps" / "C2", "C2")
    try:
        assert not files["C1"].exists() and not files["C2"].exists()  # destroyed once imported
        for st in (s1, s2):
            assert [b["block_id"] for b in st.blocks("C1-C2")] == [d["block_id"]]
            assert st.available_bits("C1-C2", "auth") == 1024
        k1, k2 = s1.take("C1-C2", 1024, "auth"), s2.take("C1-C2", 1024, "auth")
        assert np.array_equal(k1.bits, k2.bits)
    finally:
        s1.close()
        s2.close()


def test_the_files_say_where_the_secret_came_from_and_the_store_records_it(tmp_path: Path) -> None:
    """CLI review s32 M3: the files carried no "simulated" field, so a secret an operator carried to each host was
    recorded as a simulated delivery, and nothing said what randomness made it. Now each file says
    "simulated": false and "randomness": "csprng" (the OS CSPRNG), and the client node's store records both."""
    out = json_doc(_run("--out", str(tmp_path / "ps"), "--pair", "C1-C2", "--bits", "1024", "--json"))
    assert out["simulated"] is False and out["randomness"] == "csprng" and "os.urandom" in out["security"]
    for f in out["pairs"]["C1-C2"]["files"].values():
        rec = json.loads(Path(f).read_text())
        assert rec["simulated"] is False and rec["randomness"] == "csprng"
    for n in ("C1", "C2"):
        st = _import(tmp_path / "ps" / n, n)
        try:
            meta = st.blocks("C1-C2")[0]["meta"]
            assert meta["kind"] == "preshared-auth" and meta["simulated"] is False and meta["randomness"] == "csprng"
        finally:
            st.close()
    r = _run("--out", str(tmp_path / "ps2"), "--pair", "C1-C2")  # humans: the same statement, no warning
    assert r.exit_code == 0 and "OS CSPRNG" in r.stderr and "warning" not in r.stderr


def test_every_scheduled_pair_by_default_each_its_own_secret(tmp_path: Path) -> None:
    out = json_doc(_run("--out", str(tmp_path / "ps"), "--json"))
    assert list(out["pairs"]) == ["C1-C2", "C1-C3", "C1-C4", "C2-C3", "C2-C4", "C3-C4"]
    assert out["bits"] == 65536 and out["simulated"] is False and out["randomness"] == "csprng"
    secrets = {json.loads(Path(f).read_text())["bits_hex"] for d in out["pairs"].values() for f in d["files"].values()}
    assert len(secrets) == 6
    assert len(list((tmp_path / "ps" / "C3" / "nodes" / "C3" / "preshared").glob("*.json"))) == 3


def test_existing_secret_files_are_refused_without_force(tmp_path: Path) -> None:
    ps = tmp_path / "ps"
    json_doc(_run("--out", str(ps), "--pair", "C1-C2", "--json"))
    before = {p: p.read_bytes() for p in ps.rglob("*.json")}
    line = error_line(_run("--out", str(ps), "--pair", "C3-C4", "--pair", "C1-C2"))
    assert "C1-C2.json" in line and "--force" in line
    assert {p: p.read_bytes() for p in ps.rglob("*.json")} == before  # not even C3-C4 was written
    out = json_doc(_run("--out", str(ps), "--pair", "C1-C2", "--force", "--json"))
    assert all(p.read_bytes() != before[p] for p in before)
    assert json.loads(Path(out["pairs"]["C1-C2"]["files"]["C1"]).read_text())["block_id"] == \
        out["pairs"]["C1-C2"]["block_id"]


@pytest.mark.parametrize(("args", "words"), [
    (["--pair", "C2-C1"], "it names this pair C1-C2"),
    (["--pair", "C1-C9"], "not a scheduled pair"),
    (["--pair", "C1C2"], "not a scheduled pair"),
    (["--pair", "C1-C2", "--pair", "C1-C2"], "given twice"),
    (["--bits", "100"], "--bits 100"),
    (["--bits", "1001"], "multiple of 8"),
])
def test_a_bad_pair_or_size_is_one_error_and_writes_nothing(tmp_path: Path, args: list[str], words: str) -> None:
    line = error_line(_run("--out", str(tmp_path / "ps"), *args, "--json"))
    assert words in line, line
    assert not (tmp_path / "ps").exists()
