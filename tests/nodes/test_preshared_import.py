"""A client node loads the pre-shared authentication secrets delivered into ``<data>/nodes/<Ci>/preshared/``
and destroys each file as ``labqfl keys preshare`` does: overwritten with zeros and flushed before
the unlink (it was only unlinked, leaving the secret's bytes in freed disk blocks, from where it could
be loaded — and its one-time pads used — a second time)."""

from __future__ import annotations

import json
import os
import types
from pathlib import Path

import numpy as np
import pytest

from labqfl.keystore import KeyStore
from labqfl.nodes.client import ClientNode
from labqfl.nodes.common import NodeError

SECRET = bytes(range(7, 7 + 48))


def _node(tmp_path: Path) -> types.SimpleNamespace:
    private = tmp_path / "nodes" / "C1"
    (private / "preshared").mkdir(parents=True)
    return types.SimpleNamespace(private=private, store=KeyStore.for_node("C1", tmp_path / "data"), name="C1")


def _file(node: types.SimpleNamespace, **fields: object) -> Path:
    f = node.private / "preshared" / "C1-C2.json"
    f.write_text(json.dumps({"pair": "C1-C2", "block_id": "preshared-1234", "bits_hex": SECRET.hex(), **fields}))
    return f


@pytest.mark.parametrize(("fields", "simulated"), [({}, True), ({"simulated": False}, False),
                                                   ({"simulated": False, "randomness": "csprng"}, False),
                                                   ({"randomness": "seeded"}, True)])
def test_the_secret_is_loaded_and_its_file_overwritten_before_it_is_deleted(tmp_path, fields, simulated) -> None:
    node = _node(tmp_path)
    f = _file(node, **fields)
    other_name = tmp_path / "same-inode.json"  # a second name of the same file: shows what the disk blocks hold
    os.link(f, other_name)
    ClientNode._import_preshared(node)  # type: ignore[arg-type]
    assert not f.exists()
    assert other_name.read_bytes() == b"\0" * other_name.stat().st_size
    km = node.store.take("C1-C2", 8 * len(SECRET), "auth")
    assert np.array_equal(km.bits, np.unpackbits(np.frombuffer(SECRET, np.uint8)))
    meta = node.store.blocks("C1-C2")[0]["meta"]
    assert meta["simulated"] is simulated and meta.get("randomness") == fields.get("randomness")  # absent: no claim
    node.store.close()


@pytest.mark.parametrize(("text", "why"), [
    ("not json", "not a pre-shared secret file"),
    (json.dumps({"pair": "C1-C2", "block_id": "preshared-1"}), "not a pre-shared secret file"),
    (json.dumps({"pair": "C1-C2", "block_id": "preshared-1", "bits_hex": "zz"}), "not a pre-shared secret file"),
    (json.dumps({"pair": "C1-C2", "block_id": "other-1", "bits_hex": SECRET.hex()}), "block IDs start with"),
    (json.dumps({"pair": "C1-C2", "block_id": "preshared-1", "bits_hex": SECRET.hex(), "simulated": "no"}),
     "'simulated' must be true or false"),
    # CLI review s32 M3: the file's provenance is checked; a seeded secret is never taken for a real delivery
    (json.dumps({"pair": "C1-C2", "block_id": "preshared-1", "bits_hex": SECRET.hex(), "randomness": "urandom"}),
     "'randomness' must be one of qrng, csprng, seeded, got 'urandom'"),
    (json.dumps({"pair": "C1-C2", "block_id": "preshared-1", "bits_hex": SECRET.hex(), "randomness": "seeded",
                 "simulated": False}), "claims seeded randomness"),
    # review s35 second look F6: a key given twice (the launcher's header read saw the first block_id, the
    # importer the last)
    ('{"pair": "C1-C2", "block_id": "preshared-1", "bits_hex": "' + SECRET.hex() + '", "block_id": "preshared-2"}',
     "key 'block_id' appears twice"),
    # review s32 (second look): 248 bits got no fingerprint and could be loaded for two pairs
    (json.dumps({"pair": "C1-C2", "block_id": "preshared-1", "bits_hex": bytes(range(31)).hex()}),
     "the secret holds 248 bits; at least 384 are needed"),
])
def test_a_malformed_file_is_refused_in_one_line_and_kept(tmp_path, text: str, why: str) -> None:
    node = _node(tmp_path)
    f = node.private / "preshared" / "C1-C2.json"
    f.write_text(text)
    with pytest.raises(NodeError, match=why):
        ClientNode._import_preshared(node)  # type: ignore[arg-type]
    assert f.read_text() == text and node.store.accounting() == {}
    node.store.close()


def test_a_pair_without_a_pre_shared_secret_is_named_at_start(tmp_path, caplog) -> None:
    """A client node started without its pairs' pre-shared secrets served, every block aborted on "0 bits
    available for purpose 'auth'" and the acquisition still exited 0, with nothing said at start."""
    import logging

    from labqfl.qkd.pipeline import DistillSettings

    node = _node(tmp_path)
    node.i_of, node.j_of, node.settings = {"C1-C2": "C2"}, {"C0-C1": "C0"}, DistillSettings()
    _file(node)  # C1-C2's secret delivered, C0-C1's not
    ClientNode._import_preshared(node)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING):
        ClientNode._warn_without_auth_key(node)  # type: ignore[arg-type]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "pair C0-C1 has 0 authentication key bits" in warned[0], warned
    node.store.close()


def test_one_secret_delivered_for_two_blocks_is_loaded_once(tmp_path) -> None:
    """Review s32 (H3 at the node): an operator's secret file copied for a second pair, under another block ID, was
    loaded again — its one-time pads would then authenticate blocks of two pairs. The node records the secret's
    fingerprint (as `labqfl keys preshare` does) and refuses the copy, keeping the file."""
    from labqfl.keystore.preshare import FINGERPRINT_FIELD

    node = _node(tmp_path)
    rng = np.random.default_rng(3)
    secret = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    _file(node, bits_hex=secret.hex(), simulated=False)
    ClientNode._import_preshared(node)  # type: ignore[arg-type]
    assert node.store.blocks("C1-C2")[0]["meta"][FINGERPRINT_FIELD].startswith("sha256:")
    before = node.store.accounting()
    copy = node.private / "preshared" / "C1-C3.json"
    copy.write_text(json.dumps({"pair": "C1-C3", "block_id": "preshared-5678", "bits_hex": secret.hex(),
                                "simulated": False}))
    with pytest.raises(NodeError, match=r"C1-C3\.json: this secret was already loaded as block preshared-1234 of "
                                        r"pair C1-C2 on node C1; a pre-shared secret may be used once"):
        ClientNode._import_preshared(node)  # type: ignore[arg-type]
    assert node.store.accounting() == before and copy.exists()
    node.store.close()


@pytest.mark.parametrize("simulated", [True, False])
def test_a_written_pair_secret_names_its_randomness_and_delivery(tmp_path, simulated: bool) -> None:
    """``write_pair_secret`` (the launcher's, default: a simulated delivery; ``node preshare``'s: not simulated)
    writes both provenance fields; before, neither was written and every file read as simulated."""
    from labqfl.nodes.preshared import secret_path, write_pair_secret

    kw = {} if simulated else {"simulated": False}
    bid = write_pair_secret("C1-C2", tmp_path / "a", tmp_path / "b", 512, **kw)
    for folder, node in ((tmp_path / "a", "C1"), (tmp_path / "b", "C2")):
        rec = json.loads(secret_path(folder, node, "C1-C2").read_text())
        assert rec["block_id"] == bid and rec["simulated"] is simulated and rec["randomness"] == "csprng"
