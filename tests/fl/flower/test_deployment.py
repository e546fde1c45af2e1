"""A real deployment on loopback, over TLS: one SuperLink and three SuperNodes as separate processes
(``flower-superlink`` / ``flower-supernode`` on 127.0.0.1, random free ports), the run submitted with
``flwr run``. A throwaway CA and a SuperLink certificate (SAN 127.0.0.1, localhost) from
``labqfl.keystore.certs``: ``flower-superlink --ssl-ca-certfile/--ssl-certfile/--ssl-keyfile``,
``flower-supernode --root-certificates ca.pem`` and ``flwr run`` with ``root-certificates`` in its
connection config — nothing runs with ``--insecure``.

One deployment checks (each used to start its own, ~1.5 min apiece on the CI machine):

* client C3's ClientApp process dies after masking — the round completes by dropout recovery and
  equals the in-process engine's round without C3's upload; the server drops C3
  ``straggler_timeout_s`` (10 s) after the last honest reply instead of waiting out the whole stage
  timeout;
* a fourth SuperNode trusting another CA fails the TLS handshake: it exits with Flower's
  certificate-verification error and is never registered (``flwr supernode list``)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from labqfl.fl.flower.deploy import local_federation, make_superlink_certs, write_app_project
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.keysource import CsprngKeySource
from labqfl.fl.secure import secure_round
from labqfl.fl.training import local_updates


@pytest.mark.slow
@pytest.mark.timeout(420)  # a hang guard: ~4 min seen at load 10-14 on 2 cores
def test_tls_loopback_deployment_survives_a_client_lost_mid_round_and_rejects_a_node_trusting_another_ca(
        tmp_path, mnist_dir) -> None:
    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=3, q=16, rounds=1, keys="csprng", seed=6,
                               stage_timeout_s=120.0, straggler_timeout_s=10.0, node_wait_s=120.0,
                               self_masks=True, colluders=0)  # a straggler timeout needs self-masks (s38 G2)
    out = tmp_path / "result.json"
    app_dir = write_app_project(tmp_path / "app", spec, out_json=out)
    wrong = make_superlink_certs(tmp_path / "wrong-ca")
    fed_dir = tmp_path / "fed"
    with local_federation(fed_dir, tls=True) as fed:
        # claims a name outside the run, so the run itself never depends on it
        fed.start_supernode("intruder", {"labqfl-client": "C4"}, root_certificates=wrong.ca, max_retries=1)
        for c in spec.names:
            nc = {"labqfl-client": c}
            if c == "C3":
                nc["labqfl-crash-in-round"] = 1
            fed.start_supernode(c, nc)
        run = fed.run_app(app_dir, timeout_s=240)
        try:
            intruder_rc = fed.procs["supernode-intruder"].wait(120)
        except subprocess.TimeoutExpired:
            intruder_rc = None
        nodes = fed.flwr(["supernode", "list", "labqfl-local", "--format", "json"], timeout_s=120)
        procs = dict(fed.procs)
    assert all(p.poll() is not None for p in procs.values())  # every process we started has ended
    logs = {f.name: f.read_text(errors="replace") for f in sorted(fed_dir.glob("*.log"))}
    tails = "".join(f"== {n}\n{t[-1500:]}" for n, t in logs.items())
    assert all("--insecure" not in p.args for p in procs.values())  # type: ignore[operator]
    assert "Uvicorn running on https://127.0.0.1:" in logs["superlink.log"], tails
    assert run.returncode == 0 and out.exists(), run.stdout[-3000:] + run.stderr[-2000:] + tails

    # the node that trusts another CA: handshake refused, process gave up, never registered (C3's
    # SuperNode stays registered: only its ClientApp process died)
    assert intruder_rc not in (None, 0), tails
    assert "CERTIFICATE_VERIFY_FAILED" in logs["supernode-intruder.log"], tails
    assert nodes.returncode == 0, nodes.stdout[-2000:] + nodes.stderr[-2000:]
    listed = json.loads(nodes.stdout)
    assert len(listed["nodes"]) == len(spec.names), listed

    # C3 lost after masking: recovered, and the same round as the in-process engine without C3, bit for bit
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
