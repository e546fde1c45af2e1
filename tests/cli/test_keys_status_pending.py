"""``labqfl keys status`` counts a node's pending blocks (issue 19 leftover).

A block Cj accepted waits in a pending file (``<data>/nodes/<Cj>/pending/``, written by
:meth:`~labqfl.nodes.client.ClientNode.write_pending`) until Ci's ``block/commit``; a Ci killed before it leaves
the block there until the pair's next session. ``keys status`` showed the store only, so Cj looked short of key
with no word why. Now each node's JSON entry has ``pending`` (per pair: blocks, bits, block IDs; unreadable
files named) and the table a ``pending`` column plus one line per pair, read from the files' headers only.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.keystore import KeyStore
from labqfl.nodes.client import ClientNode, block_id_for

PAIR = "C1-C2"
ACQ = "nodes/00000000-0000-4000-8000-0000000000f5"


def _data(tmp_path: Path) -> tuple[Path, list[str], list[str]]:
    """A data folder with C1's and C2's stores, two blocks of C1-C2 pending at C2 (their key bits' hex returned
    too) and one pending file that is not a block."""
    ddir = tmp_path / "data"
    for n in ("C1", "C2"):
        KeyStore.for_node(n, ddir).close()
    rng = np.random.default_rng(7)
    cj = types.SimpleNamespace(pending=ddir / "nodes" / "C2" / "pending")
    cj.pending.mkdir(parents=True)
    cj._pending_path = lambda b: ClientNode._pending_path(cj, b)  # type: ignore[arg-type]
    ids, hexes = [block_id_for(ACQ, PAIR, 0, 100), block_id_for(ACQ, PAIR, 100, 200)], []
    for b, n in zip(ids, (3000, 5000), strict=True):
        final = rng.integers(0, 2, n, dtype=np.uint8)
        ClientNode.write_pending(cj, PAIR, b, final, 256, {"run_id": ""})  # type: ignore[arg-type]
        hexes.append(np.packbits(final).tobytes().hex())
    (cj.pending / "junk.json").write_text("not json")
    return ddir, ids, hexes


def test_json_counts_each_node_s_pending_blocks_per_pair(tmp_path: Path) -> None:
    ddir, ids, hexes = _data(tmp_path)
    before = sorted((p.name, p.read_bytes()) for p in (ddir / "nodes" / "C2" / "pending").iterdir())
    r = CliRunner().invoke(app, ["keys", "status", "--data-dir", str(ddir), "--json"])
    assert r.exit_code == 0, r.output
    nodes = json.loads(r.stdout)["nodes"]
    assert nodes["C1"]["pending"] == {"pairs": {}, "unreadable": []}
    got = nodes["C2"]["pending"]  # the code before: no such key
    assert sorted(got["pairs"][PAIR].pop("block_ids")) == sorted(ids)
    assert got["pairs"] == {PAIR: {"blocks": 2, "bits": 8000}}
    (bad,) = got["unreadable"]
    assert bad.startswith(str(ddir / "nodes" / "C2" / "pending" / "junk.json") + ": ")
    assert not any(h[:32] in r.stdout for h in hexes)  # never a key bit
    assert sorted((p.name, p.read_bytes()) for p in (ddir / "nodes" / "C2" / "pending").iterdir()) == before


def test_the_table_shows_them_per_node_and_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from labqfl.cli.common import console

    # a terminal wide enough for the table (at 80 columns, as pytest-xdist's workers set, it is one record per row)
    monkeypatch.setattr(console, "_width", 200)
    ddir, _, hexes = _data(tmp_path)
    r = CliRunner().invoke(app, ["keys", "status", "--data-dir", str(ddir)])
    assert r.exit_code == 0, r.output
    text = r.stderr
    row = next(ln for ln in text.splitlines() if ln.strip("│ ").startswith("C2") and PAIR in ln)
    assert row.rstrip(" │").endswith("2 (8,000 bits)"), row  # C2's row of the pair: the pending column
    assert (f"{PAIR}: 2 block(s) pending at C2 (8,000 bits, not in its store: a draw of them is refused): accepted "
            "there, waiting for C1's commit; at the pair's next session stored at C2 if C1 holds them, else "
            "destroyed") in " ".join(text.split())
    assert "pending block file of C2 not read: " in text
    assert not any(h[:32] in text for h in hexes)
