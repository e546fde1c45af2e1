"""A client node's log says what each stored block's key rests on (issue 16 leftover).

``node up`` and ``node acquire`` state each pair's provenance (physical layer simulated/hardware; randomness
qrng/csprng/seeded), but the client node's line for a stored block named slots, sifted and final bits only. Now
Ci's block line says ``stored (provenance: physical layer …, randomness …)`` and Cj, storing its pending copy at
Ci's commit, logs its own line with the same: the values stored with the block (its meta), never a key bit.
The station's clients are seeded here, so the line cannot be the default (csprng) by chance.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.keystore import KeyStore
from labqfl.nodes.launch import LocalNetwork

LINE = re.compile(r"node (C\d): block ([0-9a-f]{8}) of (C1-C2): (.*?) stored \(provenance: physical layer (\w+), "
                  r"randomness (\w+)\)")


def test_each_end_s_block_line_names_the_stored_block_s_provenance(tmp_path: Path, small_station_writer: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LocalNetwork, "warm_jit", lambda self: None)  # the launcher's own warm-up: not asked here
    station = small_station_writer(tmp_path, name="small-seeded-log", randomness="seeded")
    work = tmp_path / "w"
    r = CliRunner().invoke(app, ["node", "up", "--config", str(station), "--duration", "0.2", "--workdir", str(work)])
    assert r.exit_code == 0, r.output
    with KeyStore.for_node("C1", work / "nodes" / "C1", create=False) as st:
        blocks = [b for b in st.blocks("C1-C2") if b["meta"].get("acquisition")]  # this run's, not pre-shared
    assert blocks, "no key block stored"
    stored = {str(b["block_id"])[:8]: b["meta"]["provenance"] for b in blocks}
    seen: dict[str, list[tuple[str, str]]] = {"C1": [], "C2": []}
    for node in ("C1", "C2"):
        for m in LINE.finditer((work / "logs" / f"{node}.log").read_text()):
            assert m.group(1) == node
            prov = stored[m.group(2)]
            assert (m.group(5), m.group(6)) == (prov["physical_layer"], prov["randomness"]) == ("simulated", "seeded")
            seen[node].append((m.group(2), m.group(4)))
    assert {b for b, _ in seen["C1"]} == set(stored) == {b for b, _ in seen["C2"]}, seen  # every block, both ends
