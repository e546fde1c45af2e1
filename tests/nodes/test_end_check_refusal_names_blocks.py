"""Review s37 lab3 L9 over nodes (closing_s38 "Noticed and left"): when the detection node's end check refuses an
acquisition, the operator's refusal names the key blocks the clients already stored from it, per client.

The live single-process path says so since session 38 (512ed89); over nodes the line said only "the clients keep
the key blocks they already stored from it". Now the detection node marks its ``ctl/run`` refusal as the end
check's, and the operator asks every client (``ctl/wait`` with ``stored_blocks``) which blocks of that acquisition
its own store holds: block IDs only, never a bit, and no node reads another's store.

Three client processes, detector and optics on loopback. The lab is stood in for inside the detection node's
process (a ``sitecustomize`` on its path, as in test_real_tagger_nodes): announcements every 20 ms of slots
instead of 0.5 s, so the clients distil during the acquisition, and an end check that waits until every client's
store holds a block of the acquisition (polled read-only; the stand-in is the test's, not the node's code) and then
reports a latched detector. After the nodes stopped, each client's store is read and compared with the refusal."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import textwrap
from pathlib import Path

import pytest
from node_helpers import sibling

from labqfl.errors import LabqflError
from labqfl.nodes.launch import LocalNetwork
from labqfl.qkd.pipeline import DistillSettings

CLIENTS = ("C1", "C2", "C3")
FAULT = "D0: latched during the acquisition (injected by the test)"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def _lab_in_the_detector(folder: Path, stores: list[Path]) -> dict[str, str]:
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sqlite3, time
        import labqfl.nodes.detector as _detector
        from labqfl.nodes.common import NodeInstruments

        _detector.ANN_BATCH_S = 0.02  # the clients distil while the acquisition runs

        def _one_block_each():
            for store in {[str(s) for s in stores]!r}:
                try:
                    con = sqlite3.connect(f"file:{{store}}?mode=ro", uri=True)
                    try:
                        n = con.execute("SELECT count(*) FROM blocks WHERE json_extract(meta, '$.acquisition') "
                                        "IS NOT NULL").fetchone()[0]
                    finally:
                        con.close()
                except sqlite3.Error:
                    return False
                if not n:
                    return False
            return True

        def _latched_at_the_end(self, clicked=()):
            t_end = time.monotonic() + 300.0
            while not _one_block_each() and time.monotonic() < t_end:
                time.sleep(0.05)
            return [{FAULT!r}]

        NodeInstruments.acquisition_faults = _latched_at_the_end
    """), encoding="utf-8")
    return {"PYTHONPATH": os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])}


def _held(store: Path, acq: str) -> dict[str, list[str]]:
    """Block IDs (a refill part named by its block) of acquisition ``acq`` per pair in one client's store, read-only."""
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT block_id, pair, meta FROM blocks ORDER BY seq").fetchall()
    finally:
        con.close()
    out: dict[str, list[str]] = {}
    for bid, pair, meta in rows:
        m = json.loads(meta)
        key = str(m.get("key_block") or bid)
        if m.get("acquisition") == acq and key not in out.setdefault(pair, []):
            out[pair].append(key)
    return out


@pytest.mark.slow
def test_the_refusal_names_each_clients_stored_blocks_as_its_own_store_holds_them(tmp_path: Path) -> None:
    station = sibling("test_network", __file__)._station(tmp_path / "station.toml", len(CLIENTS))
    net = LocalNetwork(tmp_path / "net", station, settings=DistillSettings(block_bits=20_000, min_final_block_bits=2000))
    stores = {c: net.data_of(c) / "keystore" / f"{c}.sqlite" for c in CLIENTS}
    net.env = {"detector": _lab_in_the_detector(tmp_path / "lab", list(stores.values()))}
    try:
        net.start()
        with pytest.raises(LabqflError) as refused:
            net.acquire(0.4, timeout=600)
    finally:
        codes = net.stop()
    assert codes == dict.fromkeys(codes, 0)
    line = str(refused.value)
    assert "\n" not in line
    acq = re.match(r"ctl/run: acquisition (nodes/" + UUID + r"): at its end the instruments no longer read as armed: ",
                   line)
    assert acq is not None, line
    assert FAULT in line and "the clients keep the key blocks they already stored from it" in line
    _, sep, told = line.partition(". Key blocks stored from it, as each client reports from its own store "
                                     "(block IDs): ")
    assert sep, line
    held = {c: _held(s, acq.group(1)) for c, s in stores.items()}
    assert all(any(v for v in h.values()) for h in held.values()), held  # the stand-in waited for one each
    parts = told.split("; ")
    assert [p.split(":")[0] for p in parts] == [f"client {c}" for c in CLIENTS], told
    for c, part in zip(CLIENTS, parts, strict=True):  # each client's pairs, a pair with nothing stored as "none"
        pairs = sorted(p for p in ("C1-C2", "C1-C3", "C2-C3") if c in p.split("-"))
        assert set(held[c]) <= set(pairs)
        assert part == f"client {c}: " + ", ".join(
            f"pair {p}: {', '.join(held[c].get(p, [])) or 'none'}" for p in pairs), (part, held[c])
    for p in ("C1-C2", "C1-C3", "C2-C3"):  # both ends of a pair hold the same blocks
        ci, cj = p.split("-")
        assert sorted(held[ci].get(p, [])) == sorted(held[cj].get(p, [])), p
    assert not re.search(r"[0-9a-f]{40}", line)  # IDs, never key material
