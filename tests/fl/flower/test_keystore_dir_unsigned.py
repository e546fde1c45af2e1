"""A deployed node never opens the key store folder the server's message names (review s35 second look F5).

``keystore_dir`` is one of the spec's unsigned fields (the server's logistics, for simulations). A node
with the network CA and a signing key but no ``labqfl-keystore`` of its own (a SuperNode started by hand)
created and opened a key store in the folder the server named. Now it refuses; a simulation (no CA, no
key) still takes it. The refusal test fails on the code before: the store was created there."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from flower_helpers import ModNodes
from test_spec_replay import certs as certs  # noqa: F401  (the module's fixture)

from labqfl.errors import SecureAggregationError
from labqfl.fl.flower.identity import NODE_CA, NODE_CERT, NODE_KEY, ReplySigner
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.flower.specsig import OPERATOR, SIGNED_SPEC, sign_spec

SPEC = FlowerSpec(task="mnist-lenet5", clients=3, q=8, rounds=1, keys="qkd", clip=1.0, rounding="nearest",
                  node_wait_s=1.0)


def test_a_deployed_node_refuses_the_servers_key_store_folder(
        certs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABQFL_DATA_DIR", str(tmp_path / "own"))
    op = ReplySigner((certs / f"node-{OPERATOR}.pem").read_bytes(), (certs / f"node-{OPERATOR}.key").read_bytes())
    signed = sign_spec(SPEC, op, valid_s=600)
    nc = {c: {NODE_CERT: str(certs / f"node-{c}.pem"), NODE_KEY: str(certs / f"node-{c}.key"),
              NODE_CA: str(certs / "ca.pem"), "labqfl-keys": "qkd"} for c in SPEC.names}
    evil = tmp_path / "server_chosen"
    nodes = ModNodes(SPEC, nc)
    with pytest.raises(SecureAggregationError, match=r"names the key store folder .* no 'labqfl-keystore' of its "
                                                     r"own: refused"):
        nodes.send("C1", "keys", spec=dataclasses.replace(SPEC, keystore_dir=str(evil)), master_pairs=["C1-C2"],
                   slave_pairs=[], **{SIGNED_SPEC: signed.to_json()})
    assert not evil.exists()


def test_a_simulation_node_still_takes_the_specs_key_store_folder(tmp_path: Path) -> None:
    from labqfl.fl.flower.client import _keystore_dir

    class Ctx:
        node_config = {"labqfl-client": "C1"}

    assert _keystore_dir(Ctx(), dataclasses.replace(SPEC, keystore_dir=str(tmp_path))) == str(tmp_path)  # type: ignore[arg-type]
