"""A client's Flower SuperNode: ``labqfl node supernode --name Ci``.

Runs beside client node Ci, owned by the same client, with **the same data folder**: it is the
only process that draws Ci's one-time pads for federated training, from Ci's own key store
``<data>/keystore/<Ci>.sqlite`` (the ClientApp's
:class:`~labqfl.fl.flower.keys.NodeKeyStore`, node config ``labqfl-keystore=<data>``). One
client, one data folder: a SuperNode is never given another client's folder, and a data folder
holds the stores of the clients of one machine only (docs/nodes.md).

It starts ``flower-supernode`` (:meth:`~labqfl.fl.flower.deploy.LocalFederation.start_supernode`,
trusting the network CA for the SuperLink's certificate; its ClientApps, forked from the warm zygote
or started cold, run behind labqfl's FAB guard, :mod:`labqfl.fl.flower.fabguard`, and refuse any
App the server ships that is not labqfl's own: the FAB's code never runs beside Ci's key store and
certificate key) and a :class:`~labqfl.nodes.tunnel.TunnelEnd`
that carries its connection to the server node's mutual-TLS front with Ci's node certificate.
Its ClientApps sign every reply with Ci's certificate key (node config ``labqfl-cert`` /
``labqfl-key``: the paths of ``node-<Ci>.pem/.key``; the key never leaves the files or the
ClientApp's memory), which the ServerApp checks against the claimed name
(:mod:`labqfl.fl.flower.identity`). With qkd keys they also sign the key refs of every pair Ci
masters and require, before using any ref, its master's signature under a node certificate of the
network CA (node config ``labqfl-ca``: ``ca.pem`` of the certificate folder; docs/secure_aggregation.md
§9); with csprng keys they sign Ci's X25519 public key of each round and require each partner's key to
be signed by that partner's certificate under the same CA; and they follow only the training spec the
network's operator signed (certificate ``ctl`` of the same CA, :mod:`labqfl.fl.flower.specsig`), refusing any
server message that carries none or departs from it. Prints ``NODE <Ci> <tunnel address>`` once started and writes ``<data>/nodes/<Ci>/fl/address.json``;
its Flower log is ``<data>/nodes/<Ci>/fl/supernode-<Ci>.log``. SIGTERM or Ctrl-C stops the
SuperNode (and its ClientApp processes) and the tunnel, and the process exits with 0; if the
SuperNode dies on its own, with 1.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

from labqfl.fl.flower.deploy import LocalFederation, TlsFiles
from labqfl.fl.flower.identity import NODE_CA, NODE_CERT, NODE_KEY
from labqfl.log import get_logger
from labqfl.net import NodeCredentials
from labqfl.nodes.common import LauncherWatch
from labqfl.nodes.tunnel import TunnelEnd, split_address
from labqfl.nodes.warmapp import WarmFederation, start_warm_clientapps

log = get_logger(__name__)

#: node config naming the masks' key mode the node accepts: :data:`labqfl.fl.flower.client.NODE_KEYS` (not
#: imported from there: the ClientApp's module costs the SuperNode's start ~0.9 s more; a test keeps them equal)
NODE_KEYS = "labqfl-keys"

__all__ = ["main"]


def main(name: str, data: str | Path, server: str, certs: str | Path, *, server_name: str = "server",
         keys: str = "qkd", as_json: bool = False) -> int:
    """Run Ci's SuperNode until SIGTERM/SIGINT; returns the exit code (0: stopped on request). ``keys``: the
    masks' key mode this node accepts (node config ``labqfl-keys``; its ClientApp refuses a run asking for
    the other, :mod:`labqfl.fl.flower.client`)."""
    split_address(server, "--server")
    certs = Path(certs).expanduser().resolve()
    NodeCredentials.load(certs, name)  # the certificate must be Ci's (CN), from the network's CA folder
    tls = TlsFiles(ca=certs / "ca.pem", cert=certs / f"node-{name}.pem", key=certs / f"node-{name}.key")
    data = Path(data).expanduser().resolve()
    private = data / "nodes" / name / "fl"
    private.mkdir(mode=0o700, parents=True, exist_ok=True)
    for d in (data / "nodes", data / "nodes" / name, private):
        os.chmod(d, 0o700)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stopping.set())
    launcher = LauncherWatch()
    tunnel = TunnelEnd(ca=tls.ca, cert=tls.cert, key=tls.key, server=server, server_name=server_name,
                       name=f"{name}-fl-tunnel")
    fed: LocalFederation | None = None
    code = 0
    try:
        local = tunnel.start()
        fed = start_warm_clientapps(private, local, tls=tls)  # ClientApp processes forked pre-imported
        if isinstance(fed, WarmFederation):
            # the SuperNode and its SuperExec are forked from the zygote as well, so start them once
            # it serves (before that the shims would start them cold: Flower imported twice more)
            fed.wait_zygote()
        # its ClientApps sign every reply with Ci's certificate key (labqfl.fl.flower.identity), sign
        # the refs of the pairs Ci masters, and require its masters' refs signatures under the CA
        fed.start_supernode(name, {"labqfl-client": name, "labqfl-keystore": str(data), NODE_KEYS: keys,
                                   NODE_CERT: str(tls.cert), NODE_KEY: str(tls.key), NODE_CA: str(tls.ca)})
        info = {"node": name, "role": "supernode", "address": local, "server": server}
        (private / "address.json").write_text(json.dumps(info))
        print(json.dumps(info) if as_json else f"NODE {name} {local}", flush=True)
        proc = fed.procs[f"supernode-{name}"]
        while not stopping.wait(0.5):
            if launcher.gone():
                log.warning("node %s: its launcher (process %d) is gone; stopping", name, launcher.pid)
                break
            if proc.poll() is not None:
                log.error("node %s: flower-supernode exited with %s; see %s", name, proc.returncode,
                          private / f"supernode-{name}.log")
                code = 1
                break
    finally:
        log.info("node %s: stopping its SuperNode", name)
        t0 = time.perf_counter()
        try:
            if fed is not None:
                fed.stop()
        finally:
            tunnel.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):  # a late SIGTERM must not kill a stopped node
                signal.signal(sig, signal.SIG_IGN)
        log.info("node %s: SuperNode stopped in %.1f s", name, time.perf_counter() - t0)
    return code
