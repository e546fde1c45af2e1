"""A client node refuses a delivered pre-shared secret that shares a part with one it loaded before —
the same secret with a byte appended or prepended, a prefix, a suffix, shifted by a byte (review s32,
second look, F3: each had a new whole-secret fingerprint and loaded again) — and keeps the file; an
independent secret loads."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

from labqfl.keystore import KeyStore
from labqfl.keystore.preshare import WINDOWS_FIELD
from labqfl.nodes.client import ClientNode
from labqfl.nodes.common import NodeError

SECRET = np.random.default_rng(8).integers(0, 256, 64, dtype=np.uint8).tobytes()
VARIANTS = {"appended": SECRET + b"\x01", "prepended": b"\x01" + SECRET, "prefix": SECRET[:48],
            "suffix": SECRET[-48:], "shifted": SECRET[1:] + b"\x02"}


def _node(tmp_path: Path) -> types.SimpleNamespace:
    private = tmp_path / "nodes" / "C1"
    (private / "preshared").mkdir(parents=True)
    return types.SimpleNamespace(private=private, store=KeyStore.for_node("C1", tmp_path / "data"), name="C1")


def _deliver(node: types.SimpleNamespace, pair: str, block_id: str, secret: bytes) -> Path:
    f = node.private / "preshared" / f"{pair}.json"
    f.write_text(json.dumps({"pair": pair, "block_id": block_id, "bits_hex": secret.hex(), "simulated": False}))
    return f


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_a_delivered_secret_sharing_a_part_with_a_loaded_one_is_refused_and_kept(tmp_path, name) -> None:
    node = _node(tmp_path)
    _deliver(node, "C1-C2", "preshared-1", SECRET)
    ClientNode._import_preshared(node)  # type: ignore[arg-type]
    assert WINDOWS_FIELD in node.store.blocks("C1-C2")[0]["meta"]
    before = node.store.accounting()
    f = _deliver(node, "C1-C3", "preshared-2", VARIANTS[name])
    with pytest.raises(NodeError, match=r"C1-C3\.json: this secret was already loaded as block preshared-1 of "
                                        r"pair C1-C2 on node C1; a pre-shared secret may be used once, and no part"):
        ClientNode._import_preshared(node)  # type: ignore[arg-type]
    assert node.store.accounting() == before and f.exists()
    node.store.close()


def test_an_independent_secret_loads_after_another(tmp_path) -> None:
    node = _node(tmp_path)
    _deliver(node, "C1-C2", "preshared-1", SECRET)
    _deliver(node, "C1-C3", "preshared-2", np.random.default_rng(9).integers(0, 256, 64, dtype=np.uint8).tobytes())
    ClientNode._import_preshared(node)  # type: ignore[arg-type]
    assert node.store.blocks("C1-C2") and node.store.blocks("C1-C3")
    node.store.close()
