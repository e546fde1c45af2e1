"""Key accounting of a QKD-keyed run (issue 22): on every pair, the key the masks consumed equals
the key the pipeline distilled minus what remains in the node stores, at both ends of the pair."""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

import numpy as np
import pytest

from labqfl.config import parse_station_config
from labqfl.fl.masks import mask_graph
from labqfl.keystore import KeyStore
from labqfl.mainjob import JobSettings, run_job
from labqfl.planning import make_station

ROUNDS = 2


def _station():
    """`labqfl station make --clients 6 --graph ring-k --k 2` on a 1 km loop, 0.2 dB per client, with
    the balanced choices of the small test station: ~0.1 s of data gives key on every pair at
    ε_sec = 1e-4."""
    cfg, _ = make_station(6, loop_km=1.0, graph="ring-k", k=2, insertion_loss_db=0.2)
    d = cfg.model_dump(mode="json", exclude_none=True)
    for c in d["clients"]:
        c["intensity_probs"] = [0.6, 0.2, 0.2]
        c["basis_x_prob"] = 0.7
    return parse_station_config(d, "<test station>")


@pytest.mark.slow
def test_consumed_equals_distilled_minus_remaining_on_every_pair(tmp_path: Path) -> None:
    cfg = _station()
    keys = tmp_path / "keys"
    # an earlier run's leftover in the stores must not enter this run's ledger
    # (key and authentication key, as a run leaves them: the authentication draws on its own pool
    # and falls back to the key pool only when that is empty, docs/metrics.md)
    with KeyStore.for_node("C1", keys) as a, KeyStore.for_node("C2", keys) as b:
        for purpose in ("general", "auth"):
            bits = np.unpackbits(np.frombuffer(secrets.token_bytes(512), np.uint8))
            block_id = str(uuid.uuid4())
            a.add_block("C1-C2", bits, block_id=block_id, purpose=purpose, run_id="earlier-run")
            b.add_block("C1-C2", bits.copy(), block_id=block_id, purpose=purpose, run_id="earlier-run")
    settings = JobSettings(duration_s=0.15, rounds=ROUNDS, graph="ring-k", k=2, eps_sec=1e-4,
                           data_dir=str(keys), timeline_interval_s=1.0)
    job, m = run_job(cfg, settings, tmp_path / "runs")
    assert m["status"] == "complete"
    graph = mask_graph(cfg.client_names, "ring-k", 2)
    assert set(m["keys"]["pairs"]) == set(graph)  # station make schedules the graph's pairs only
    # the plan made before the acquisition predicted the key use exactly (q·n per graph pair and round)
    assert m["plan"]["comparison"]["worst_key_use_ratio"] == 1.0
    n_params = m["train"]["n_params"]
    for name, k in m["keys"]["pairs"].items():
        assert k["distilled_bits"] > 0, name
        assert k["consumed_bits"] == ROUNDS * 8 * n_params  # q·n bits per round and graph pair
        assert k["consumed_bits"] == k["distilled_bits"] - k["remaining_bits"], (name, k)
        # the partner's store holds the same: same bits left, same bits consumed
        a, b = name.split("-")
        with KeyStore.for_node(b, keys) as st:
            acc = st.accounting()[name]
        avail = sum(v for p, v in acc["available"].items() if p != "auth")
        used = sum(v for p, v in acc["consumed"].items() if p != "auth")
        earlier = 4096 if name == "C1-C2" else 0
        assert avail == k["store_available_bits"] == k["remaining_bits"] + earlier
        assert used == k["store_consumed_bits"] == k["consumed_bits"]
