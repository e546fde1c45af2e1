"""Review s38 F1: a hardware/QRNG block whose pair's authentication was bootstrapped from a secret labqfl
generated was called "information-theoretically secure" once exported to another store: the caveat came from
the pre-shared rows of the store being read, and those stay behind. An export now carries, per block, the
origin of the source's pre-shared secrets of the pair; the importing store's keys status, KME status and
training provenance keep the source's caveat."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.keystore import KeyStore
from labqfl.keystore.transfer import export_keys, import_keys
from labqfl.provenance import (
    AUTH_BOOTSTRAP,
    AUTH_CSPRNG,
    provenance_of_block_ids,
    store_pair_provenance,
)

PAIR = "C1-C2"
PROV = {"physical_layer": "hardware", "randomness": "qrng", "protocol": "BB84 1-decoy", "eps_sec": 1e-10,
        "eps_cor": 1e-15, "eps_auth": 1e-20, "eps_total": 1.1e-10, "intensity_rel_uncertainty": 0.05}


def _source(data: Path, preshared_meta: dict | None) -> str:
    """Both nodes' stores of ``data``: a pre-shared block with ``preshared_meta`` (none if None) and one
    distilled hardware/QRNG block with a declared δ; the distilled block's ID."""
    rng = np.random.default_rng(1)
    pre = rng.integers(0, 2, 4096, dtype=np.uint8)
    key = rng.integers(0, 2, 20000, dtype=np.uint8)
    with KeyStore.for_node("C1", data) as a, KeyStore.for_node("C2", data) as b:
        for st in (a, b):
            if preshared_meta is not None:
                st.add_block(PAIR, pre, purpose="auth", block_id="preshared-x", meta=preshared_meta)
            st.add_block(PAIR, key, block_id="blk", meta={"provenance": PROV})
    return "blk"


def _move_both(src: Path, tgt: Path, tmp: Path) -> None:
    for node in ("C1", "C2"):
        with KeyStore.for_node(node, tgt) as t, KeyStore.for_node(node, src) as s:
            export_keys(s, PAIR, tmp / f"{tgt.name}-{node}.json", ticket=t.issue_import_ticket(), nbits=4096,
                        purpose="general")
        with KeyStore.for_node(node, tgt) as t:
            import_keys(t, tmp / f"{tgt.name}-{node}.json")


def test_the_bootstrap_caveat_travels_with_the_key(tmp_path: Path, kme_status) -> None:
    src, tgt = tmp_path / "src", tmp_path / "tgt"
    bid = _source(src, {"kind": "preshared-auth", "simulated": True})
    _move_both(src, tgt, tmp_path)
    with KeyStore.for_node("C2", src) as s, KeyStore.for_node("C2", tgt) as t:
        at_src, at_tgt = store_pair_provenance(s, PAIR), store_pair_provenance(t, PAIR)
        used = provenance_of_block_ids(t, PAIR, [bid])  # what a training run's metrics say of its masks
    assert at_src["information_theoretic"] is False and at_src["auth_secret"] == AUTH_BOOTSTRAP
    for p in (at_tgt, used):
        assert p["information_theoretic"] is False and p["auth_secret"] == AUTH_BOOTSTRAP, p
        assert p["security"] == at_src["security"] and p["security"].startswith("rests on the authentication secret")
    ext = kme_status(tgt)["status_extension"]["labqfl_provenance"]
    assert ext["information_theoretic"] is False and ext["auth_secret"] == AUTH_BOOTSTRAP

    res = CliRunner().invoke(app, ["keys", "status", "--data-dir", str(tgt)], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "rests on the authentication secret" in text and "information-theoretically secure if" not in text
    js = json.loads(CliRunner().invoke(app, ["keys", "status", "--json", "--data-dir", str(tgt)]).stdout)
    assert js["nodes"]["C2"]["provenance"][PAIR]["information_theoretic"] is False


def test_a_csprng_secret_travels_and_an_operators_secret_adds_no_caveat(tmp_path: Path) -> None:
    for name, meta, caveat in (("csprng", {"kind": "preshared-auth", "simulated": False, "randomness": "csprng"},
                                AUTH_CSPRNG),
                               ("operator", {"kind": "preshared-auth", "simulated": False}, None)):
        src, tgt = tmp_path / f"{name}-src", tmp_path / f"{name}-tgt"
        _source(src, meta)
        _move_both(src, tgt, tmp_path)
        with KeyStore.for_node("C2", tgt) as t:
            p = store_pair_provenance(t, PAIR)
        assert p["auth_secret"] == caveat and p["information_theoretic"] is (caveat is None), (name, p)


def test_a_second_move_keeps_the_caveat(tmp_path: Path) -> None:
    """The block moved on from the first target (which holds no pre-shared row) to a third store."""
    src, mid, last = tmp_path / "src", tmp_path / "mid", tmp_path / "last"
    _source(src, {"kind": "preshared-auth", "simulated": True})
    _move_both(src, mid, tmp_path)
    _move_both(mid, last, tmp_path)
    with KeyStore.for_node("C2", last) as t:
        p = store_pair_provenance(t, PAIR)
    assert p["auth_secret"] == AUTH_BOOTSTRAP and p["information_theoretic"] is False
