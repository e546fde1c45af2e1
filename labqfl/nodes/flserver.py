"""The federated-learning server node: ``labqfl node server``.

A long-running process (a :class:`~labqfl.nodes.common.Node`: its certificate, its own data
folder, its ``ctl`` service over mutual TLS) that runs Flower's SuperLink
(:class:`~labqfl.fl.flower.deploy.LocalFederation`, with its ServerApp processes forked from a
pre-imported zygote: :func:`~labqfl.nodes.warmapp.start_warm_serverapps`; ``flower-superlink`` with TLS from the
network's CA: ``ca.pem`` and its own ``node-<name>.pem/.key``) on ``127.0.0.1`` of its host and a
mutual-TLS front (:class:`~labqfl.nodes.tunnel.MtlsFront`) on ``--fl-listen`` that admits only
the station's clients (certificate CN C1, C2, ... from the same CA). Every SuperNode reaches the
SuperLink through that front (:mod:`labqfl.nodes.supernode`).

The ServerApp (:data:`labqfl.fl.flower.app.server_app`) runs the secure aggregation of
:mod:`labqfl.fl.flower.server`: it sees masked uploads, key *references* (never key bits) and
the aggregate. The node opens no key store. The front checks which certificate connects; the
ServerApp (run config ``labqfl-ca`` = this node's ``ca.pem``) checks which client each reply
comes from: it must be signed by the key of a certificate from the network's CA whose CN is the
client name claimed (:mod:`labqfl.fl.flower.identity`), else that client is dropped.

Its files, all under ``<data>/nodes/<name>/`` (0700): ``address.json``, ``fleet.json`` (the
front's address), ``flower/`` (SuperLink log, ``flwr_home``), ``apps/<id>/`` (the Flower App
project of each training) and ``results/<id>.json`` (the ServerApp's metrics: accuracies, key
bits per pair, Flower accounting, the final global parameters).

Control (operator ``ctl``): ``ctl/train {config, timeout[, init_params][, signed_spec]}`` submits one
run with ``config`` the :meth:`~labqfl.fl.flower.spec.FlowerSpec.to_config` JSON (``flwr run`` against its
own SuperLink) and answers ``ctl/trained {result, wall_s}``. ``signed_spec``: the operator's signature over
the run's settings (:mod:`labqfl.fl.flower.specsig`; the config must not depart from it), which the
ServerApp sends with every message and which every SuperNode requires. A run of rounds ``first_round`` > 1
(a segment of a run that waited for key between segments, ``labqfl run``) needs ``init_params``,
the global parameters after round ``first_round - 1`` as a JSON list (written to the run's app
folder as ``init_params.npy``, the ServerApp's run config ``labqfl-init``); the global model is
public to the server anyway, no key is in it; ``ctl/ping``; ``ctl/stop``. SIGTERM or Ctrl-C stops
the SuperLink (and any ServerApp) and the front, and the node exits with 0.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from labqfl.fl.flower.deploy import TlsFiles, free_port, write_app_project
from labqfl.log import get_logger
from labqfl.nodes.common import Node, NodeError, ok
from labqfl.nodes.tunnel import MtlsFront
from labqfl.nodes.warmapp import WarmFederation, start_warm_serverapps
from labqfl.qkd.messaging import Message

log = get_logger(__name__)

__all__ = ["FLEET_LINE", "ServerNode", "main"]

#: first word of the line a server node prints with its front's address, before its ``NODE`` line
#: (without ``--json``; with it, the front's address is the JSON object's ``fl_address``)
FLEET_LINE = "FLEET"


class ServerNode(Node):
    """``labqfl node server`` (module docstring)."""

    role = "server"

    def __init__(self, name: str = "server", *, fl_listen: str = "127.0.0.1:0", **kw: Any) -> None:
        super().__init__(name, **kw)
        for sig in (signal.SIGTERM, signal.SIGINT):  # a stop during the SuperLink's start-up: shut down after it
            signal.signal(sig, lambda signum, frame: self.stopping.set())
        certs = Path(kw["certs"]).expanduser().resolve()
        self.tls = TlsFiles(ca=certs / "ca.pem", cert=certs / f"node-{name}.pem", key=certs / f"node-{name}.key")
        flower = self.private / "flower"
        flower.mkdir(mode=0o700, exist_ok=True)
        # its ServerApp processes (one per run) are forked from a pre-imported zygote (warmapp.py)
        self.fed = start_warm_serverapps(flower, f"127.0.0.1:{free_port()}", tls=self.tls)
        self.front: MtlsFront | None = None
        try:
            t0 = time.perf_counter()
            self.fed.start_superlink()
            self.superlink_start_s = time.perf_counter() - t0
            self.front = MtlsFront(ca=self.tls.ca, cert=self.tls.cert, key=self.tls.key, listen=fl_listen,
                                   target=self.fed.fleet, allowed=self.cfg.client_names, name=f"{name}-front")
            self.fl_address = self.front.start()
        except BaseException:
            self._stop_flower()
            raise
        info = {"node": name, "role": "fl-front", "address": self.fl_address,
                "superlink_start_s": round(self.superlink_start_s, 3)}
        (self.private / "fleet.json").write_text(json.dumps(info))
        log.info("node %s: SuperLink up in %.1f s; mutual-TLS front on %s for %s", name, self.superlink_start_s,
                 self.fl_address, self.cfg.client_names)

    def listening_fields(self) -> dict[str, Any]:
        """The front's address in the listening line's JSON object (``fl_address``; stdout under ``--json``
        is exactly one JSON document)."""
        return {"fl_address": self.fl_address}

    def serve(self, as_json: bool = False) -> None:
        """:meth:`Node.serve`; without ``as_json`` the line ``FLEET <name> HOST:PORT`` (the front's address)
        comes first, before the ``NODE`` line; with it the address is the JSON object's ``fl_address``."""
        if not as_json:
            print(f"{FLEET_LINE} {self.name} {self.fl_address}", flush=True)
        super().serve(as_json)

    def ctl_train(self, req: Message) -> Message:
        """One Flower run on this SuperLink with the operator's spec; the ServerApp's metrics back."""
        from labqfl.fl.flower.spec import FlowerSpec

        spec = FlowerSpec.from_config(json.loads(str(req.get("config"))))
        signed = str(req.fields.get("signed_spec") or "")
        if signed:  # the operator's signed settings must be the config's: else every node refuses every message
            from labqfl.errors import SecureAggregationError
            from labqfl.fl.flower.specsig import SignedSpec, spec_departures

            try:
                bad = spec_departures(SignedSpec.from_json(signed), spec)
            except SecureAggregationError as exc:
                raise NodeError(f"ctl/train: {exc}") from None
            if bad:
                raise NodeError(f"ctl/train: the config departs from the operator-signed spec (field: config, "
                                f"signed): {bad}")
        if spec.keystore_dir:
            raise NodeError("ctl/train: the spec names a key-store folder; in a deployment every client "
                            "node uses its own (labqfl-keystore of its SuperNode), so keystore_dir must be empty")
        timeout = float(req.get("timeout"))
        init = json.loads(str(req.fields.get("init_params") or "null"))
        if spec.first_round > 1 and init is None:
            raise NodeError(f"ctl/train: a run from round {spec.first_round} needs init_params (the global "
                            f"parameters after round {spec.first_round - 1}); expected a JSON list of floats")
        run = uuid.uuid4().hex[:12]
        out = self.private / "results" / f"{run}.json"
        out.parent.mkdir(mode=0o700, exist_ok=True)
        init_path = None
        if init is not None:
            import numpy as np

            init_path = self.private / "apps" / run / "init_params.npy"
            init_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            np.save(init_path, np.asarray(init, dtype=np.float64))
        # the ServerApp checks every client reply against the network's CA (labqfl.fl.flower.identity)
        app = write_app_project(self.private / "apps" / run, spec, out_json=out, ca=self.tls.ca, init_params=init_path,
                                signed_spec=signed)
        t0 = time.perf_counter()
        if isinstance(self.fed, WarmFederation):  # the ServerApp forked pre-imported, not started cold
            self.fed.wait_zygote()  # (it imports while the SuperNodes start; at once after the first run)
        try:
            done = self.fed.run_app(app, timeout_s=timeout)
        except subprocess.TimeoutExpired:
            raise NodeError(f"the Flower run did not finish within {timeout:.0f} s") from None
        wall = time.perf_counter() - t0
        (self.private / "flower" / f"flwr-run-{run}.log").write_text(done.stdout[-20000:] + done.stderr[-20000:])
        if done.returncode != 0 or not out.is_file():
            tail = (done.stdout + done.stderr)[-1500:]
            raise NodeError(f"the Flower run failed (flwr run exit code {done.returncode}); its output ends:\n{tail}")
        log.info("node %s: Flower run %s done in %.1f s", self.name, run, wall)
        return ok("ctl/trained", result=out.read_text(encoding="utf-8"), wall_s=wall, run=run)

    def _stop_flower(self) -> None:
        if self.front is not None:
            self.front.stop()
        self.fed.stop()

    def shutdown(self) -> None:
        self._stop_flower()


def main(name: str, station: str | Path | None, data: str | Path, listen: str, certs: str | Path,
         fl_listen: str = "127.0.0.1:0", as_json: bool = False) -> None:
    ServerNode(name, station=station, data_dir=data, listen=listen, certs=certs, fl_listen=fl_listen).serve(as_json)
