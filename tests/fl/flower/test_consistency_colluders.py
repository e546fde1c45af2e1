"""Review s36 F1: with c clients colluding with the server (they sign every story) two stories both get ``need``
signatures iff 2·need ≤ N + c, so a deployed node requires need = max(t, min_survivors, ⌊(N + c)/2⌋ + 1) with c the
signed ``colluders`` (default t − 1, the threshold's own assumption). The former ⌊N/2⌋ + 1 let ONE colluder in a
5-client ring (k = 2, t = 2, need 3) get two stories unmasked and recover a client's update."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flower_helpers import MeddlingGrid
from flwr.app import Array, ArrayRecord
from test_consistency import N_WORDS, RING, UPDATES, _app, _deployed, _signer, _spec

from labqfl.errors import ConfigError, SecureAggregationError
from labqfl.fl.flower.client import CFG
from labqfl.fl.flower.server import LabqflServer
from labqfl.fl.flower.specsig import OPERATOR, sign_spec
from labqfl.fl.selfmask import consistency_need


def test_need_counts_the_tolerated_colluders() -> None:
    assert consistency_need(5, 2, 2, 1) == 4 and consistency_need(5, 2, 2, 0) == 3
    assert consistency_need(3, 2, 2, 1) == 3 and consistency_need(3, 2, 2, 0) == 2
    ring = _spec(clients=5, graph="ring-k", k=2)
    assert (ring.full_threshold(), ring.tolerated_colluders(), ring.consistency_need()) == (2, 1, 4)
    assert dataclasses.replace(ring, colluders=0).consistency_need() == 3
    for n in range(3, 12):  # the safety bound, and two honest inputs in every story (no c + 2 term needed)
        for c in range(n - 1):
            need = consistency_need(n, 1, 1, c)
            assert 2 * need > n + c and need - c >= 2 and need <= n
    with pytest.raises(ConfigError, match="colluders 2: expected -1"):
        _spec(colluders=2)  # N = 3: against 2 colluders nothing hides the third client's update


A = dict(survivors=["C1", "C3", "C4"], dropped=["C2", "C5"])
B = dict(survivors=["C1", "C2", "C3", "C5"], dropped=["C4"])
STORY = {"C1": A, "C3": A, "C4": A, "C2": B, "C5": B}
UNMASK = {"C1": dict(pairs=["C1-C2", "C1-C5"], share_owners=["C1"]), "C2": dict(pairs=[], share_owners=["C1"])}


class OneColluder(MeddlingGrid):
    """Review s36 F1's server with one colluding client C3 (not a neighbour of the victim C1 in the ring):
    story A to C1, C3, C4 (C1 would reveal its pair keys with C2 and C5 and its own share of its self-mask),
    story B to C2, C5 (C2 would reveal its share of C1's self-mask), C3 signing both."""

    srv: LabqflServer
    colluder: Any

    def send_and_receive(self, messages: Any, *, timeout: Any = None) -> Any:
        keep = []
        for m in messages:
            cfg = m.content.config_records.get(CFG)
            node = self.grid.nodes[m.metadata.dst_node_id]
            if cfg is not None and str(cfg["stage"]) == "consistency":
                cfg["survivors"], cfg["dropped"] = STORY[node]["survivors"], STORY[node]["dropped"]
            if cfg is not None and str(cfg["stage"]) == "unmask":
                if node not in UNMASK:
                    continue
                for k in [k for k in cfg.keys() if k.startswith(("conssig.", "conscert."))]:
                    del cfg[k]
                st = STORY[node]
                for n, s, _, rep in self.replies:
                    if s == "consistency" and not rep.has_error() and STORY[n] is st:
                        got = rep.content.config_records[CFG]
                        cfg[f"conssig.{n}"], cfg[f"conscert.{n}"] = got["conssig"], got["conscert"]
                if st is B:
                    cfg["conssig.C3"] = self.colluder.sign_consistency(
                        run=self.srv.run_tag, spec_id=self.srv.signed_spec.spec_id,  # type: ignore[union-attr]
                        job="job-1", round_index=1, name="C3", **B)
                    cfg["conscert.C3"] = self.colluder.cert_pem
                cfg["survivors"], cfg["dropped"] = st["survivors"], st["dropped"]
                for k, v in UNMASK[node].items():
                    cfg[k] = v
                for peer in RING:
                    kc = self.reply(peer, "keys", 1).content.config_records[CFG]
                    cfg[f"pk.{peer}"], cfg[f"pksig.{peer}"], cfg[f"pkcert.{peer}"] = kc["pk"], kc["pksig"], kc["pkcert"]
                shares = self.reply("C1", "mask", 1).content.array_records["shares"]
                m.content.array_records["cts"] = ArrayRecord({"C1": Array(shares[node].numpy())} if node != "C1" else {})
            keep.append(m)
        return super().send_and_receive(keep, timeout=timeout)


def test_one_colluder_cannot_get_two_stories_unmasked_at_the_defaults(local_grid: Any, ring_certs: dict[str, Path],
                                                                      tmp_path: Path, monkeypatch: Any) -> None:
    rng = np.random.default_rng(7)
    monkeypatch.setitem(UPDATES, "C4", rng.normal(0, 0.3, N_WORDS))
    monkeypatch.setitem(UPDATES, "C5", rng.normal(0, 0.3, N_WORDS))
    spec = _spec(clients=5, graph="ring-k", k=2)
    srv = LabqflServer(spec, signed_spec=sign_spec(spec, _signer(ring_certs, OPERATOR), valid_s=600))
    grid = OneColluder(local_grid(_app(), RING, node_config=_deployed(ring_certs, tmp_path, RING)))
    grid.srv, grid.colluder = srv, _signer(ring_certs, "C3")
    nodes, weights = srv.connect(grid)
    with pytest.raises(SecureAggregationError):
        srv.round(grid, 1, np.zeros(N_WORDS), nodes, weights)
    # the story of three survivors is refused by its honest signers: 3 < need = 4 (c = 1, the default t − 1)
    for c in ("C1", "C4"):
        err = grid.error_of(c, "consistency", 1)
        assert "3 survivor(s), at least 4 needed" in err and "c = 1 colluders tolerated" in err, err
    revealed = [n for n, s, _, rep in grid.replies if s == "unmask" and not rep.has_error()]
    assert "C1" not in revealed, revealed  # C1 revealed neither its pair keys nor its own share
