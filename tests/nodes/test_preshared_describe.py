"""The launcher's warning about a pre-shared delivery under way says it once, true to the state (review s35
chaos F3).

A launcher killed after it wrote both secret files of a pair and before either node imported its copy left a
delivery under way at both ends; the next ``node up`` warned "pre-shared block X held at one end: the other end
imports it at its start" twice (once per end), though neither end held the block.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from labqfl.keystore import KeyStore
from labqfl.nodes.preshared import reconcile_pair, secret_path

PAIR = "C1-C2"
BLOCK = "preshared-00000000-0000-4000-8000-0000000000f3"


def _file(data: Path, node: str, bits: np.ndarray) -> None:
    f = secret_path(data, node, PAIR)
    f.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    f.write_text(json.dumps({"pair": PAIR, "block_id": BLOCK, "bits_hex": np.packbits(bits).tobytes().hex()}))


def test_a_delivery_under_way_at_both_ends_is_named_once_as_such(tmp_path: Path) -> None:
    bits = np.random.default_rng(3).integers(0, 2, 4096, dtype=np.uint8)
    for n in ("C1", "C2"):
        _file(tmp_path, n, bits)
    with KeyStore.for_node("C1", tmp_path) as sa, KeyStore.for_node("C2", tmp_path) as sb:
        st = reconcile_pair(PAIR, sa, sb, tmp_path, tmp_path)
    assert st.pending == [BLOCK] and st.importing == {BLOCK: ["C1", "C2"]}
    assert st.describe() == (f"pair {PAIR}: pre-shared block {BLOCK}: delivery under way at both ends (neither has "
                             "imported it yet): each imports it at its start")
    assert all(secret_path(tmp_path, n, PAIR).is_file() for n in ("C1", "C2"))  # both kept


def test_a_delivery_one_end_imported_names_the_holder_and_the_importer(tmp_path: Path) -> None:
    bits = np.random.default_rng(4).integers(0, 2, 4096, dtype=np.uint8)
    _file(tmp_path, "C2", bits)
    with KeyStore.for_node("C1", tmp_path) as sa, KeyStore.for_node("C2", tmp_path) as sb:
        sa.add_block(PAIR, bits, block_id=BLOCK, purpose="auth")  # C1 imported its copy (and its file is gone)
        st = reconcile_pair(PAIR, sa, sb, tmp_path, tmp_path)
        assert st.shared_bits == 4096  # C2's import will share all of it
    assert st.pending == [BLOCK]
    assert st.describe() == f"pair {PAIR}: pre-shared block {BLOCK} held at C1 only: C2 imports it at its start"
