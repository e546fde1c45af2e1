"""Deployable Flower apps (``[tool.flwr.app.components]`` of a Flower App project).

``server_app`` reads the run's :class:`~labqfl.fl.flower.spec.FlowerSpec` from the run config
(keys ``spec.*``; ``flwr run … --run-config "spec.clients=8 spec.keys='qkd'"``) and, if the run
config has ``labqfl-out``, writes the run's metrics there as JSON; if it has ``labqfl-ca`` (the
network CA's ``ca.pem`` on the server's host, set by the FL server node), every client reply
must be signed by the claimed client's certificate key (:mod:`labqfl.fl.flower.identity`); if it
has ``labqfl-signed-spec`` (the operator-signed spec, :mod:`labqfl.fl.flower.specsig`), every
message carries it, and a node with the network CA configured follows no other.
``client_app`` needs the SuperNode's ``--node-config "labqfl-client='C1'
labqfl-keystore='/path/to/data'"``, plus ``labqfl-cert``/``labqfl-key`` (its node certificate and
key) to sign its replies and its refs as a master, and ``labqfl-ca`` (the network CA) to check its masters'
signed refs (``qkd`` keys; a node with a signing key and no CA masks nothing: docs/secure_aggregation.md §9).
See :func:`labqfl.fl.flower.deploy.write_app_project` and ``docs/flower.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from labqfl.fl.flower.client import make_client_app
from labqfl.fl.flower.identity import ReplyVerifier
from labqfl.fl.flower.latency import quick_object_pulls
from labqfl.fl.flower.server import LabqflServer, flower_summary
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.flower.specsig import SIGNED_SPEC_RUN_CONFIG, SignedSpec

client_app = make_client_app()
server_app = ServerApp()


@server_app.main()
def _main(grid: Grid, context: Context) -> None:
    quick_object_pulls()  # the replies' objects: retried after 20 ms, not Flower's 1 s (latency.py)
    spec = FlowerSpec.from_config(context.run_config)
    ca = str(context.run_config.get("labqfl-ca", ""))
    signed = str(context.run_config.get(SIGNED_SPEC_RUN_CONFIG, ""))  # the operator's, sent with every message
    srv = LabqflServer(spec, identity=ReplyVerifier.from_file(ca) if ca else None,
                       signed_spec=SignedSpec.from_json(signed) if signed else None)
    init = str(context.run_config.get("labqfl-init", ""))  # a segment's start (labqfl.nodes.flserver)
    result = srv.run(grid, init_params=np.load(init) if init else None)
    out = str(context.run_config.get("labqfl-out", ""))
    if out:
        summary = result.summary()
        summary["flower"] = flower_summary(srv.rounds)
        summary["final_params"] = [float(x) for x in result.final_params]
        Path(out).write_text(json.dumps(summary, indent=1), encoding="utf-8")
