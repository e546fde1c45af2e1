"""Review s38 F4: one recording distilled into two data dirs with two block sizes, then moved into one store
with keys ticket/export/import: the importing store held key distilled twice from the same raw slots. An import
now refuses a block whose raw-data origin (acquisition, slot range) overlaps a block of another distillation
that the store holds, distilled, or imported before, naming both blocks; an imported block's slots enter the
store's ledger, so a later distillation of the same recording there is refused too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.errors import KeyStoreError
from labqfl.keystore import KeyStore
from labqfl.keystore.transfer import export_keys, import_keys

PAIR = "C1-C2"
ACQ = "sagnac-4client-sim/1c7f6dd4/epoch"


def _distil(data: Path, blocks: list[tuple[str, int, int]], seed: int, *, refill: bool = False) -> dict[str, np.ndarray]:
    """Blocks as the distiller leaves them at both nodes of the pair: ``(block ID, first slot, end slot)`` each,
    the slots claimed in the ledger, the block's record naming the acquisition and its slots; with ``refill``,
    each block's authentication refill row too (``<id>-auth``, ``meta.key_block``)."""
    rng = np.random.default_rng(seed)
    out = {}
    with KeyStore.for_node("C1", data) as a, KeyStore.for_node("C2", data) as b:
        for bid, start, end in blocks:
            bits = rng.integers(0, 2, 3000, dtype=np.uint8)
            meta = {"acquisition": ACQ, "slots": [start, end], "eps_sec": 1e-10}
            for st in (a, b):
                st.claim_slots(PAIR, ACQ, start, end, bid)
                st.add_block(PAIR, bits, block_id=bid, meta=meta)
                if refill:
                    st.add_block(PAIR, bits[:500], block_id=bid + "-auth", purpose="auth",
                                 meta={**meta, "kind": "auth-refill", "key_block": bid})
            out[bid] = bits
    return out


def _move(src: Path, dst: Path, tmp: Path, name: str, purpose: str | None = "general") -> Path:
    """Export every free bit of C2's pool ``purpose`` in ``src`` to C2's store in ``dst``; the export file."""
    with KeyStore.for_node("C2", dst) as t, KeyStore.for_node("C2", src) as s:
        out = tmp / f"{name}.json"
        export_keys(s, PAIR, out, ticket=t.issue_import_ticket(), purpose=purpose)
    return out


def test_a_block_from_the_same_slots_distilled_elsewhere_is_refused(tmp_path: Path) -> None:
    d1, d2 = tmp_path / "D1", tmp_path / "D2"
    _distil(d1, [("blk-d1", 0, 2000)], seed=1)  # one block over the slots
    _distil(d2, [("blk-d2a", 0, 925), ("blk-d2b", 925, 1852)], seed=2)  # the same slots, another block size
    x = _move(d2, d1, tmp_path, "x")
    with KeyStore.for_node("C2", d1) as t:
        before = t.accounting()
        with pytest.raises(KeyStoreError) as err:
            import_keys(t, x)
        assert t.accounting() == before and t.distilled_slots(PAIR, ACQ) == [(0, 2000, "blk-d1")]
    msg = str(err.value)
    assert "blk-d2a" in msg and "blk-d1" in msg and "[0, 2000)" in msg and "nothing was imported" in msg, msg
    # review s38 K5: the file is key in clear that can go nowhere: the refusal says so and to destroy it
    assert "key bits are unusable" in msg and "destroy the file" in msg, msg
    assert x.exists()  # left as it is

    # the CLI: exit 1, one line naming both blocks
    res = CliRunner().invoke(app, ["keys", "import", str(x), "--data-dir", str(d1)])
    assert res.exit_code == 1 and "blk-d2a" in res.output and "blk-d1" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1, res.output


def test_an_imported_block_claims_its_slots_in_the_importing_store(tmp_path: Path) -> None:
    """The variants: D2's block imported into an empty store T, then another distillation's block over the same
    slots (D3, another block size) is refused at T, and so is distilling the recording at T again."""
    d2, d3, t = tmp_path / "D2", tmp_path / "D3", tmp_path / "T"
    _distil(d2, [("blk-d2a", 0, 925)], seed=2)
    _distil(d3, [("blk-d3", 500, 1500)], seed=3)
    KeyStore.for_node("C2", t).close()
    with KeyStore.for_node("C2", t) as ts:
        assert import_keys(ts, _move(d2, t, tmp_path, "a"))["imported_bits"] == 3000
        assert ts.distilled_slots(PAIR, ACQ) == [(0, 925, "blk-d2a")]
        with pytest.raises(KeyStoreError, match="already distilled into key store"):
            ts.claim_slots(PAIR, ACQ, 0, 1852, "again-with-another-block-size")
    x3 = _move(d3, t, tmp_path, "b")
    with KeyStore.for_node("C2", t) as ts, pytest.raises(KeyStoreError, match=r"blk-d3.*blk-d2a"):
        import_keys(ts, x3)


def test_blocks_of_one_distillation_come_in_one_by_one(tmp_path: Path) -> None:
    """A key block and its authentication refill share their slots (one distillation): both are imported, in two
    exports; so are the bits of a block exported in two parts. A store that distilled the slots itself without
    keeping a block (an aborted block) refuses a block over them from elsewhere, even under the same ID."""
    src, dst = tmp_path / "S", tmp_path / "T"
    _distil(src, [("blk-x", 0, 1000), ("blk-y", 1000, 2000)], seed=4, refill=True)
    KeyStore.for_node("C2", dst).close()
    for name, purpose in (("gen", "general"), ("auth", "auth")):
        x = _move(src, dst, tmp_path, name, purpose)
        with KeyStore.for_node("C2", dst) as ts:
            assert import_keys(ts, x)["imported_bits"] > 0
    with KeyStore.for_node("C2", dst) as ts:
        assert sorted(b["block_id"] for b in ts.blocks(PAIR)) == ["blk-x", "blk-x-auth", "blk-y", "blk-y-auth"]
        assert ts.distilled_slots(PAIR, ACQ) == [(0, 1000, "blk-x"), (1000, 2000, "blk-y")]

    aborted = tmp_path / "A"
    with KeyStore.for_node("C2", aborted) as st:
        st.claim_slots(PAIR, ACQ, 0, 1000, "blk-x")  # distilled here, no block kept (aborted)
    other = tmp_path / "O"
    _distil(other, [("blk-x", 0, 1000)], seed=5)
    x = _move(other, aborted, tmp_path, "o")
    with KeyStore.for_node("C2", aborted) as st, pytest.raises(KeyStoreError, match="already distilled into"):
        import_keys(st, x)


def test_a_store_older_than_the_ledger_is_checked_by_its_blocks_records(tmp_path: Path) -> None:
    d1, d2 = tmp_path / "D1", tmp_path / "D2"
    with KeyStore.for_node("C2", d1) as st:  # a block stored with its record, its ledger row gone (older store)
        st.add_block(PAIR, np.ones(3000, np.uint8), block_id="old", meta={"acquisition": ACQ, "slots": [100, 200]})
        with st._write() as conn:
            conn.execute("DROP TABLE IF EXISTS distilled_slots")
    _distil(d2, [("new", 150, 400)], seed=6)
    x = _move(d2, d1, tmp_path, "x")
    with KeyStore.for_node("C2", d1) as st, pytest.raises(KeyStoreError, match=r"\[100, 200\) of block old"):
        import_keys(st, x)


def test_an_export_carries_its_blocks_origin(tmp_path: Path) -> None:
    src, dst = tmp_path / "S", tmp_path / "T"
    _distil(src, [("blk-x", 0, 1000)], seed=7)
    x = _move(src, dst, tmp_path, "x")
    doc = json.loads(x.read_text())
    assert [(s["meta"]["acquisition"], s["meta"]["slots"]) for s in doc["segments"]] == [(ACQ, [0, 1000])]


def test_a_record_naming_an_acquisition_without_slots_is_refused(tmp_path: Path) -> None:
    src, dst = tmp_path / "S", tmp_path / "T"
    with KeyStore.for_node("C1", src) as a, KeyStore.for_node("C2", src) as b:
        for st in (a, b):  # add_block accepts it (no origin it can check)
            st.add_block(PAIR, np.ones(3000, np.uint8), block_id="odd", meta={"acquisition": ACQ, "slots": [5, 5]})
    x = _move(src, dst, tmp_path, "x")
    with KeyStore.for_node("C2", dst) as st, pytest.raises(KeyStoreError, match="expected an acquisition ID and"):
        import_keys(st, x)


def test_add_block_refuses_another_distillation_of_claimed_slots(tmp_path: Path) -> None:
    with KeyStore.for_node("C2", tmp_path) as st:
        st.claim_slots(PAIR, ACQ, 0, 1000, "first")
        st.add_block(PAIR, np.ones(100, np.uint8), block_id="first", meta={"acquisition": ACQ, "slots": [0, 1000]})
        with pytest.raises(KeyStoreError, match=r"block second .* block first"):
            st.add_block(PAIR, np.ones(100, np.uint8), block_id="second", meta={"acquisition": ACQ, "slots": [0, 500]})
        assert not st.has_block("second")

