"""Review s38 F3: `keys import` killed after its commit and before it destroyed the export file left the file
(key bits in clear, live in the target store); a re-run only said "already imported" (exit 1) and left it, and
`keys status` said nothing. Now the import notes the file in its transaction: a re-run that finds the very
export imported destroys the file, and `keys status` warns of an imported file still on disk."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.keystore import KeyStore

PAIR = "C1-C2"
runner = CliRunner()


def _keys(*args: str) -> object:
    return runner.invoke(app, ["keys", *args], env={"COLUMNS": "250"})


def _export(tmp_path: Path) -> tuple[Path, Path]:
    src, tgt = tmp_path / "src", tmp_path / "tgt"
    bits = np.random.default_rng(5).integers(0, 2, 20000, dtype=np.uint8)
    with KeyStore.for_node("C1", src) as a, KeyStore.for_node("C2", src) as b:
        bid = a.add_block(PAIR, bits, run_id="r")
        b.add_block(PAIR, bits, block_id=bid, run_id="r")
    ticket, x = tmp_path / "ticket.json", tmp_path / "x.json"
    assert _keys("ticket", "--node", "C2", "--data-dir", str(tgt), "--out", str(ticket)).exit_code == 0
    res = _keys("export", "--node", "C2", "--pair", PAIR, "--bits", "4096", "--ticket", str(ticket), "--out", str(x),
                "--data-dir", str(src))
    assert res.exit_code == 0, res.output
    return tgt, x


def _import_killed_before_the_shred(x: Path, tgt: Path) -> None:
    """`keys import` in a child process, SIGKILLed the instant its store committed (the file's shred is its next
    step)."""
    code = textwrap.dedent(f"""
        import os, signal, sys
        import labqfl.keystore.preshare as p
        p.shred_secret_file = lambda path: os.kill(os.getpid(), signal.SIGKILL)
        from labqfl.cli import main
        sys.argv = ["labqfl", "keys", "import", {str(x)!r}, "--data-dir", {str(tgt)!r}]
        sys.exit(main())
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]


def test_a_rerun_destroys_the_file_of_an_import_killed_before_it_did(tmp_path: Path) -> None:
    tgt, x = _export(tmp_path)
    _import_killed_before_the_shred(x, tgt)
    assert x.exists()
    with KeyStore.for_node("C2", tgt) as st:
        assert st.accounting()[PAIR]["available"] == {"general": 4096}  # live, free key in the target

    res = _keys("status", "--data-dir", str(tgt))
    text = " ".join(res.output.split())
    assert res.exit_code == 0 and f"export file {x}" in text and "key bits in clear that are live here" in text, text

    res = _keys("import", str(x), "--data-dir", str(tgt), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["imported_bits"] == 0 and doc["already_imported"]["nbits"] == 4096 and doc["export_file"] == "destroyed"
    assert not x.exists()
    with KeyStore.for_node("C2", tgt) as st:
        assert st.accounting()[PAIR]["available"] == {"general": 4096} and st.import_files() == []
    assert "still on disk" not in _keys("status", "--data-dir", str(tgt)).output


def test_a_kept_file_is_named_by_status_and_a_rerun_says_it_is_live(tmp_path: Path) -> None:
    tgt, x = _export(tmp_path)
    assert _keys("import", str(x), "--keep-file", "--data-dir", str(tgt)).exit_code == 0
    assert "still on disk" in " ".join(_keys("status", "--data-dir", str(tgt)).output.split())
    res = _keys("import", str(x), "--keep-file", "--data-dir", str(tgt))
    text = " ".join(res.output.split())
    assert res.exit_code == 0 and "already imported" in text and "live in that store; delete it" in text, text
    assert x.exists()
    x.unlink()  # deleted by hand: status forgets it
    assert "still on disk" not in _keys("status", "--data-dir", str(tgt)).output


def test_a_file_of_another_export_is_not_destroyed(tmp_path: Path) -> None:
    """An edited file with the imported export's ID but another size is no copy of it: refused, left as it is."""
    tgt, x = _export(tmp_path)
    doc = json.loads(x.read_text())
    assert _keys("import", str(x), "--keep-file", "--data-dir", str(tgt)).exit_code == 0
    other = tmp_path / "other.json"
    doc["nbits"] = 2048
    doc["segments"][0]["length"] = 2048
    doc["segments"][0]["bits"] = base64.b64encode(base64.b64decode(doc["segments"][0]["bits"])[:256]).decode()
    other.write_text(json.dumps(doc))
    res = _keys("import", str(other), "--data-dir", str(tgt))
    assert res.exit_code == 1 and "already imported" in res.output and other.exists(), res.output
