"""A real deployment on loopback: one SuperLink and four SuperNodes as separate processes
(``flower-superlink`` / ``flower-supernode --insecure`` on 127.0.0.1, random free ports), the run
submitted with ``flwr run``; client C4's ClientApp process dies after masking — the round
completes by dropout recovery and equals the in-process engine's round without C4's upload."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labqfl.fl.flower.deploy import local_federation, write_app_project
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.keysource import CsprngKeySource
from labqfl.fl.secure import secure_round
from labqfl.fl.training import local_updates


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_loopback_superlink_and_supernodes_survive_a_client_lost_mid_round(tmp_path) -> None:
    spec = FlowerSpec.for_task("mnist-qnn", clients=4, q=16, rounds=1, keys="csprng", seed=6,
                               stage_timeout_s=90.0, node_wait_s=120.0)
    out = tmp_path / "result.json"
    app_dir = write_app_project(tmp_path / "app", spec, out_json=out)
    with local_federation(tmp_path / "fed") as fed:
        for c in spec.names:
            nc = {"labqfl-client": c}
            if c == "C4":
                nc["labqfl-crash-in-round"] = 1
            fed.start_supernode(c, nc)
        run = fed.run_app(app_dir, timeout_s=360)
        procs = list(fed.procs.values())
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert all(p.poll() is not None for p in procs)  # every process we started has ended
    res = json.loads(out.read_text())
    fr = res["flower"][0]
    assert fr["dropped_after_masking"] == ["C4"] and fr["reveal_bits"] > 0
    data, model = spec.data(), spec.model()
    g = model.init_params(spec.seed)
    ups, _ = local_updates(model, g, data.clients, spec.local(), spec.seed, 1)
    weights = {c: float(len(y)) for c, (_, y) in data.clients.items()}
    ref = secure_round(ups, weights, spec.secagg(), CsprngKeySource(), round_index=1,
                       rng=np.random.default_rng([spec.seed, 9000, 1]), dropped={"C4"})
    assert np.array_equal(np.asarray(res["final_params"]), g + ref.aggregate)
