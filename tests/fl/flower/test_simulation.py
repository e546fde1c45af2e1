"""The one Ray test: ``labqfl train --engine flower`` (Flower simulation, Ray backend, 8 virtual
SuperNodes, qkd keys from each node's own store) gives the same model as ``--engine local``."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.fl.flower.keys import REFS_TAG_BITS
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.masks import mask_graph
from labqfl.keystore import KeyStore


def test_train_engine_flower_on_ray_matches_engine_local(make_stores, tmp_path, mnist_dir) -> None:
    n, q = 8, 16
    spec = FlowerSpec.for_task("mnist-qnn", clients=n, q=q)
    per_round = q * spec.model().n_params
    kdir = make_stores(spec.names, 2 * per_round + REFS_TAG_BITS, "ring-4")  # Flower also spends a refs tag key
    out = {}
    for engine in ("flower", "local"):
        res = CliRunner().invoke(app, ["train", "--engine", engine, "--task", "mnist-qnn", "--clients", str(n), "--q", str(q),
                                       "--rounds", "1", "--keys", "qkd", "--keystore", str(kdir), "--graph", "ring-4",
                                       "--seed", "3", "--data-dir", mnist_dir, "--json", "--out", str(tmp_path / engine)])
        assert res.exit_code == 0, res.output
        out[engine] = json.loads(res.stdout)
    a, b = out["flower"], out["local"]
    assert a["key_source"] == b["key_source"] == "qkd"
    assert a["test_loss"] == b["test_loss"] and a["test_accuracy"] == b["test_accuracy"]
    pairs = len(mask_graph(spec.names, "ring-4"))
    assert b["key_bits_total"] == per_round * pairs and a["key_bits_total"] == (per_round + REFS_TAG_BITS) * pairs
    for p in mask_graph(spec.names, "ring-4"):
        for node in p.split("-"):
            with KeyStore.for_node(node, kdir) as st:
                assert st.available_bits(p, "fl") == 0  # one round per engine, each pair's key used once
