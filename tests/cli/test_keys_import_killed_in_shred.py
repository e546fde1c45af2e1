"""Review s38 K4: `keys import` killed *during* the shred (the export file half overwritten with zeros, a
``"bits"`` field still in clear, live in the target store) was forgotten by `keys status` (the note was taken
for a file replaced by something else), and a re-run said only "not readable JSON". Now status keeps warning
of it and a re-run says it is the imported file's remains, key live in that store, to be destroyed."""

from __future__ import annotations

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


def test_an_import_killed_in_the_shred_is_still_named(tmp_path: Path) -> None:
    src, tgt = tmp_path / "src", tmp_path / "tgt"
    bits = np.random.default_rng(9).integers(0, 2, 20000, dtype=np.uint8)
    with KeyStore.for_node("C1", src) as a, KeyStore.for_node("C2", src) as b:
        bid = a.add_block(PAIR, bits, run_id="r")
        b.add_block(PAIR, bits, block_id=bid, run_id="r")
    ticket, x = tmp_path / "ticket.json", tmp_path / "x.json"
    assert _keys("ticket", "--node", "C2", "--data-dir", str(tgt), "--out", str(ticket)).exit_code == 0
    res = _keys("export", "--node", "C2", "--pair", PAIR, "--bits", "4096", "--ticket", str(ticket), "--out", str(x),
                "--data-dir", str(src))
    assert res.exit_code == 0, res.output
    eid = json.loads(x.read_text())["export_id"]
    code = textwrap.dedent(f"""
        import os, signal, sys
        import labqfl.keystore.preshare as p
        def half(path):  # zeros over the first half, on disk, then killed (a crash inside the overwrite)
            size = os.path.getsize(path)
            with open(path, "r+b") as fh:
                fh.write(b"\\0" * (size // 2)); fh.flush(); os.fsync(fh.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        p.shred_secret_file = half
        from labqfl.cli import main
        sys.argv = ["labqfl", "keys", "import", {str(x)!r}, "--data-dir", {str(tgt)!r}]
        sys.exit(main())
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    raw = x.read_bytes()
    assert raw[: len(raw) // 2].count(0) == len(raw) // 2 and b'="}]' in raw  # part of the bits still in clear

    for _ in range(2):  # named every time, not forgotten after the first look
        res = _keys("status", "--data-dir", str(tgt))
        text = " ".join(res.output.split())
        assert res.exit_code == 0 and f"export file {x} (export {eid})" in text, text
        assert "partly overwritten" in text and "live here" in text, text
    res = _keys("status", "--data-dir", str(tgt), "--json")
    left = json.loads(res.stdout)
    assert '"partly_overwritten"' in res.stdout and str(x) in res.stdout, left

    res = _keys("import", str(x), "--data-dir", str(tgt))
    text = " ".join(res.output.split())
    assert res.exit_code == 1 and x.exists(), text
    assert f"export {eid}, imported into node C2" in text and "live in that store" in text, text
    assert "destroy it" in text and "nothing was imported" in text, text
    with KeyStore.for_node("C2", tgt) as st:
        assert st.accounting()[PAIR]["available"] == {"general": 4096}
