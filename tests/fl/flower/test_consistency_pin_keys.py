"""Review s37 F4's remainder (left open in session 37): a round that the survivors pinned with a client dropped
after masking, (S, D ≠ ∅), can never be unmasked again. Retrained with D back (a resume, or a new run of the same
job), the nodes of S refused it at the mask stage; but D's client holds no pin, so it masked — its one-time pads
of the round read and spent — and the masters of S had reserved and tagged their pairs' key at the keys and refs
stages, spent too when the round was given up after a mask message. Now each node holding such a pin refuses at
the round's keys stage, before it reserves anything, so the round is aborted before masking: no client masks,
and what the returning client reserved is released (never read). Checked with every key store's accounting (what
``labqfl keys status`` shows) at both ends of every pair, before and after the retrained round."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flower_helpers import MeddlingGrid, signed_server

from labqfl.errors import SecureAggregationError
from labqfl.fl.flower.client import NODE_KEYSTORE, make_client_app
from labqfl.fl.flower.identity import NODE_CA, NODE_CERT, NODE_KEY
from labqfl.fl.flower.keys import REFS_TAG_BITS
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.masks import mask_graph
from labqfl.keystore import KeyStore

NAMES = ["C1", "C2", "C3", "C4"]


def _spec(mnist_dir: str, kdir: Any = "") -> FlowerSpec:
    # colluders 0 at N = 4: need 3, so a round survives C3 lost after masking and is pinned with D = [C3]
    return FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=4, q=8, rounds=1, keys="qkd", seed=3,
                               self_masks=True, colluders=0, job_id="job-pin", keystore_dir=str(kdir),
                               node_wait_s=5.0)


def _grid(local_grid: Any, certs: Path, kdir: Path, **kw: Any) -> MeddlingGrid:
    cfg = {c: {NODE_CERT: str(certs / f"node-{c}.pem"), NODE_KEY: str(certs / f"node-{c}.key"),
               NODE_CA: str(certs / "ca.pem"), NODE_KEYSTORE: str(kdir)} for c in NAMES}
    return MeddlingGrid(local_grid(make_client_app(), NAMES, node_config=cfg, **kw))


def _status(kdir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Every node's key-store accounting of each of its pairs (both ends of every pair)."""
    out = {}
    for c in NAMES:
        with KeyStore.for_node(c, kdir) as st:
            out.update({(c, p): acc for p, acc in st.accounting().items()})
    return out


def test_a_returning_client_reads_no_key_for_a_round_pinned_without_it(
        make_stores: Any, local_grid: Any, mnist_dir: str, ring_certs: dict[str, Path]) -> None:
    spec0 = _spec(mnist_dir)
    per_round = spec0.secagg().key_bits_per_pair(spec0.model().n_params) + REFS_TAG_BITS
    kdir = make_stores(NAMES, 3 * per_round)
    net = ring_certs["net"]
    first = signed_server(net, _spec(mnist_dir, kdir))
    grid = _grid(local_grid, net, kdir, crash={"C3": 1})  # C3's node dies after masking round 1
    first.run(grid)
    assert first.rounds[0].dropped_after_masking == ["C3"]  # unmasked over C1, C2, C4; pinned with D = [C3]
    before = _status(kdir)
    assert len(before) == 2 * len(mask_graph(NAMES))

    again = signed_server(net, _spec(mnist_dir, kdir))  # the job's round 1 again (a resume), C3 back
    grid = _grid(local_grid, net, kdir)
    with pytest.raises(SecureAggregationError, match=r"round 1 aborted: 1 client\(s\) answered the keys stage"):
        again.run(grid)
    for c in ("C1", "C2", "C4"):
        err = grid.error_of(c, "keys", 1)
        assert f"round 1 of job 'job-pin': {c} already signed survivors ['C1', 'C2', 'C4'], dropped ['C3']" in err, err
        assert "masks nothing and reads no key: refused" in err and "another --seed" in err, err
    assert not grid.mask_cfgs, "a mask message was sent"
    assert [s for n, s, r, rep in grid.replies if n == "C3"] == ["setup", "keys", "abort"]
    assert not [1 for n, s, r, rep in grid.replies if s == "refs"]  # no refs tagged, no tag key read
    after = _status(kdir)
    for (c, p), acc in before.items():
        now = after[(c, p)]
        assert now["available"] == acc["available"], (c, p, acc, now)  # nothing reserved, tagged or read
        if c != "C3":
            assert now == acc, (c, p, acc, now)
        else:  # only C3's round-1 reservations, stranded by its crash, are settled: voided (never released)
            assert acc["reserved"] and not now["reserved"], (p, acc, now)
            assert now["consumed"]["fl"] == acc["consumed"].get("fl", 0) + acc["reserved"]["fl"], (p, acc, now)


def test_a_round_pinned_without_an_absent_client_is_retrained_over_its_pinned_set(
        make_stores: Any, local_grid: Any, mnist_dir: str, ring_certs: dict[str, Path]) -> None:
    """Round 1 ran without C3 (silent from the keys stage on: an absent client) and was unmasked over C1, C2, C4,
    pinned (S, ∅). Retrained with C3 back (a resume): before, every client masked and the nodes of S refused at the
    mask stage (C3's pads spent, the round never completing); now their keys replies name S, the server leaves C3
    out before masking (its reservations released unread) and the round completes over S, as pinned."""
    spec0 = _spec(mnist_dir)
    per_round = spec0.secagg().key_bits_per_pair(spec0.model().n_params) + REFS_TAG_BITS
    kdir = make_stores(NAMES, 3 * per_round)
    net = ring_certs["net"]
    first = signed_server(net, _spec(mnist_dir, kdir))
    grid = _grid(local_grid, net, kdir)
    grid.meddle = lambda node, stage, r, cfg: not (node == "C3" and stage != "setup")
    first.run(grid)
    assert first.rounds[0].dropped_before_masking == ["C3"]
    before = _status(kdir)

    again = signed_server(net, _spec(mnist_dir, kdir))  # the job's round 1 again, C3 back
    grid = _grid(local_grid, net, kdir)
    again.run(grid)
    fr = again.rounds[0]
    assert fr.participants == ["C1", "C2", "C4"] and fr.dropped_before_masking == ["C3"]
    assert not fr.dropped_after_masking and "left out before masking" in fr.dropped_reasons["C3"]
    assert [s for n, s, r, rep in grid.replies if n == "C3"] == ["setup", "keys", "abort"]
    assert not [1 for n, s, r, rep in grid.replies if rep.has_error()]  # no node refused anything
    after = _status(kdir)
    for p in ("C1-C3", "C2-C3", "C3-C4"):  # no bit of C3's pairs read, reserved or spent, at either end
        for c in p.split("-"):
            assert after[(c, p)] == before[(c, p)], (c, p, before[(c, p)], after[(c, p)])
