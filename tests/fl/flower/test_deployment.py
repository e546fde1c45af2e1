"""A real deployment on loopback: one SuperLink and three SuperNodes as separate processes
(``flower-superlink`` / ``flower-supernode --insecure`` on 127.0.0.1, random free ports), the run
submitted with ``flwr run``; client C3's ClientApp process dies after masking — the round
completes by dropout recovery and equals the in-process engine's round without C3's upload.
The server drops C3 ``straggler_timeout_s`` (10 s) after the last honest reply instead of waiting
out the whole stage timeout."""

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
@pytest.mark.timeout(300)
def test_loopback_superlink_and_supernodes_survive_a_client_lost_mid_round(tmp_path, mnist_dir) -> None:
    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=3, q=16, rounds=1, keys="csprng", seed=6,
                               stage_timeout_s=120.0, straggler_timeout_s=10.0, node_wait_s=120.0)
    out = tmp_path / "result.json"
    app_dir = write_app_project(tmp_path / "app", spec, out_json=out)
    fed_dir = tmp_path / "fed"
    with local_federation(fed_dir) as fed:
        for c in spec.names:
            nc = {"labqfl-client": c}
            if c == "C3":
                nc["labqfl-crash-in-round"] = 1
            fed.start_supernode(c, nc)
        run = fed.run_app(app_dir, timeout_s=240)
        procs = list(fed.procs.values())
    assert all(p.poll() is not None for p in procs)  # every process we started has ended
    logs = "".join(f.read_text(errors="replace")[-1500:] for f in sorted(fed_dir.glob("*.log")))
    assert run.returncode == 0 and out.exists(), run.stdout[-3000:] + run.stderr[-2000:] + logs
    res = json.loads(out.read_text())
    fr = res["flower"][0]
    assert fr["dropped_after_masking"] == ["C3"] and fr["reveal_bits"] > 0
    data, model = spec.data(), spec.model()
    g = model.init_params(spec.seed)
    ups, _ = local_updates(model, g, data.clients, spec.local(), spec.seed, 1)
    weights = {c: float(len(y)) for c, (_, y) in data.clients.items()}
    ref = secure_round(ups, weights, spec.secagg(), CsprngKeySource(), round_index=1,
                       rng=np.random.default_rng([spec.seed, 9000, 1]), dropped={"C3"})
    assert np.array_equal(np.asarray(res["final_params"]), g + ref.aggregate)
