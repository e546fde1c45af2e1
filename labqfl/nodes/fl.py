"""Federated training across node processes on this machine (``labqfl run --nodes``'s training).

:class:`FlNetwork` makes throwaway certificates (:func:`~labqfl.net.make_node_certs`: one CA, the
server node, every client, the operator ``ctl``), starts the federated-learning server node
(:mod:`labqfl.nodes.flserver`, its own data folder under the work folder) and one SuperNode per
client (:mod:`labqfl.nodes.supernode`) with that client's data folder, as separate OS processes
(``sys.executable -m labqfl.nodes ...``, loopback, ephemeral ports read from their lines).
:meth:`FlNetwork.train` is the operator's part (``ctl/train`` to the server node, over mutual TLS
with certificate ``ctl``) and works the same against a server node on another host
(:func:`train_on_server`). :meth:`FlNetwork.stop` sends SIGTERM to every process (SuperNodes
first) and returns their exit codes.

The operator's process never opens a key store: each client's pads are drawn by that client's
own SuperNode's ClientApp, from ``<its data>/keystore/<Ci>.sqlite``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from labqfl.log import get_logger
from labqfl.net import NodeCredentials, make_node_certs
from labqfl.nodes.common import CTL, NodeError, launcher_env, open_session, request
from labqfl.nodes.flserver import FLEET_LINE
from labqfl.nodes.launch import START_TIMEOUT_S, NodeProcess, drop_ca_key, start_failure
from labqfl.nodes.pdeath import die_with_parent
from labqfl.qkd.messaging import Message

log = get_logger(__name__)

__all__ = ["FlNetwork", "operator_signed_spec", "train_on_server"]

SERVER = "server"


def _read_lines(np_: NodeProcess, timeout: float, want_fleet: bool) -> tuple[str, str]:
    """(NODE address, FLEET address or "") from a node's stdout, within ``timeout`` seconds: its
    ``FLEET``/``NODE`` lines, or its one JSON object (``--json``: ``address``, ``fl_address``)."""
    got: dict[str, str] = {}

    def reader() -> None:
        assert np_.proc.stdout is not None
        for line in np_.proc.stdout:
            if line.startswith("{"):
                info = json.loads(line)
                np_.startup_s = time.perf_counter() - np_.t_spawn
                got.update(node=str(info["address"]), **({"fleet": str(info["fl_address"])}
                                                          if info.get("fl_address") else {}))
                return
            if line.startswith(FLEET_LINE + " "):
                got["fleet"] = line.split()[2]
            elif line.startswith("NODE "):
                np_.startup_s = time.perf_counter() - np_.t_spawn
                got["node"] = line.split()[2]
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    if "node" not in got:  # exited (its own error line), or still starting: as the launcher words it
        raise start_failure(np_, timeout, ended=not t.is_alive())
    if want_fleet and "fleet" not in got:
        tail = np_.log_path.read_text(errors="replace")[-2000:] if np_.log_path.is_file() else ""
        raise NodeError(f"node {np_.name} gave its address but not its {FLEET_LINE} line (the mutual-TLS front's "
                        f"address); log tail:\n{tail}")
    return got["node"], got.get("fleet", "")


#: how long after a run's own timeout the spec signed for it stays valid [s]
SPEC_VALID_MARGIN_S = 3600.0


def operator_signed_spec(certs: Path, config: Mapping[str, Any], valid_s: float) -> Any:
    """The operator's signature (certificate ``ctl`` of ``certs``) over the settings of ``config`` (a
    :meth:`~labqfl.fl.flower.spec.FlowerSpec.to_config`), valid ``valid_s`` seconds
    (:func:`labqfl.fl.flower.specsig.sign_spec`)."""
    from labqfl.fl.flower.identity import ReplySigner
    from labqfl.fl.flower.spec import FlowerSpec
    from labqfl.fl.flower.specsig import sign_spec

    creds = NodeCredentials.load(certs, CTL)
    signer = ReplySigner(creds.cert_pem, creds.key_pem, source=str(Path(certs) / f"node-{CTL}.key"))
    return sign_spec(FlowerSpec.from_config(config), signer, valid_s=valid_s)


def train_on_server(server: str, certs: Path, config: Mapping[str, Any], *, timeout_s: float,
                    server_name: str = SERVER, init_params: Sequence[float] | None = None,
                    on_session: Callable[[], None] | None = None, signed_spec: Any = None) -> dict[str, Any]:
    """The operator's ``ctl/train`` to a running server node at ``server`` (its ``ctl`` address):
    ``config`` is a :meth:`~labqfl.fl.flower.spec.FlowerSpec.to_config`; ``init_params``: the global
    parameters a segment of rounds (``spec.first_round`` > 1) starts from; ``on_session``: called once the
    session is open (the server node reached, both certificates accepted), before the run is asked for
    (``labqfl node train`` makes its run folder there). Returns the ServerApp's metrics
    (``FederatedResult.summary()`` + ``flower`` + ``final_params``), ``wall_s`` and ``server_run`` (the
    server node's ID of the run: its ``<data>/nodes/<server>/results/<ID>.json`` and ``flower/flwr-run-<ID>.log``).

    The run's settings go out signed by the operator (``signed_spec``: a
    :class:`~labqfl.fl.flower.specsig.SignedSpec`, e.g. ``labqfl node sign-spec``'s; default: signed here with
    ``certs``' ``ctl`` key, valid for the run's timeout plus :data:`SPEC_VALID_MARGIN_S`): every SuperNode with
    the network CA follows no other settings (docs/secure_aggregation.md §9)."""
    creds = NodeCredentials.load(certs, CTL)
    if signed_spec is None:
        signed_spec = operator_signed_spec(certs, config, timeout_s + SPEC_VALID_MARGIN_S)
    ch = open_session(server, creds, server_name, "ctl", timeout_s=timeout_s + 60)
    fields: dict[str, Any] = {"config": json.dumps(dict(config)), "timeout": float(timeout_s),
                              "signed_spec": signed_spec.to_json()}
    if init_params is not None:
        fields["init_params"] = json.dumps([float(x) for x in init_params])
    try:
        if on_session is not None:
            on_session()
        rep = request(ch, Message("ctl/train", fields), "ctl/trained")
    finally:
        ch.close()
    out: dict[str, Any] = json.loads(str(rep.get("result")))
    out["wall_s"] = float(rep.get("wall_s"))
    out["server_run"] = str(rep.fields.get("run", ""))
    return out


#: the last line of a Python traceback that raised a labqfl error: its class and message
_APP_ERROR = re.compile(r"^labqfl\.errors\.(\w+): (.+)$", re.MULTILINE)


def flower_failure_line(reason: str) -> str | None:
    """The one line of a failed Flower run (the server node's ``ctl/train`` refusal "the Flower run failed
    (flwr run exit code …); its output ends:" + the ServerApp's traceback and Flower's exit-code banner):
    the labqfl error the ServerApp raised, e.g. "round 2 aborted before any unmask: …" (review s37 F7);
    None when the output names none (then the whole reason is the error)."""
    if "the Flower run failed" not in reason or not (hits := _APP_ERROR.findall(reason)):
        return None
    kind, text = hits[-1]
    return f"the Flower run failed: {text.strip()} ({kind})"


class FlNetwork:
    """The server node and one SuperNode per client as separate processes on loopback.

    ``client_data``: one folder for every client (labqfl's layout: the job's ``--data-dir``), or
    a mapping client → its own folder. ``env``: extra environment per process name."""

    def __init__(self, workdir: Path, station: str | Path | None, clients: list[str],
                 client_data: Path | Mapping[str, Path], *, env: dict[str, dict[str, str]] | None = None,
                 server_data: Path | None = None, keep_ca_key: bool = False) -> None:
        self.workdir = Path(workdir)
        #: the server node's own data folder (default ``<workdir>/server``)
        self.server_data = Path(server_data) if server_data is not None else self.workdir / SERVER
        self.station = station
        self.clients = list(clients)
        self.client_data = client_data
        self.env = env or {}
        self.certs = self.workdir / "certs"
        #: keep the throwaway CA's key (tests issue more certificates from it); default: destroyed once issued
        self.keep_ca_key = keep_ca_key
        self.nodes: dict[str, NodeProcess] = {}
        self.server_address = ""
        self.fleet_address = ""

    def data_of(self, name: str) -> Path:
        if name == SERVER:
            return self.server_data
        if isinstance(self.client_data, Mapping):
            return Path(self.client_data[name])
        return Path(self.client_data)

    def _spawn(self, key: str, role: str, name: str, args: list[str]) -> NodeProcess:
        data = self.data_of(name)
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        logp = self.workdir / "logs" / f"{key}.log"
        logp.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "labqfl.nodes", role, "--name", name, "--data", str(data), "--certs",
               str(self.certs), *(["--station", str(self.station)] if self.station else []), *args]
        with logp.open("w") as errf:
            t = time.perf_counter()
            # SIGTERM when the launcher dies (labqfl.nodes.pdeath)
            proc = subprocess.Popen(die_with_parent(cmd), stdout=subprocess.PIPE, stderr=errf, text=True,
                                    env={**os.environ, **launcher_env(), **self.env.get(key, {})})
        np_ = NodeProcess(name, role, data, proc, log_path=logp, t_spawn=t)
        self.nodes[key] = np_
        return np_

    def start(self) -> FlNetwork:
        """Certificates, the server node (waits for its SuperLink and front), then the SuperNodes."""
        make_node_certs(self.certs, [SERVER, *self.clients, CTL])
        if not self.keep_ca_key:
            drop_ca_key(self.certs)  # issued: the throwaway CA's key is destroyed at once
        try:
            srv = self._spawn(SERVER, "server", SERVER, ["--listen", "127.0.0.1:0", "--fl-listen", "127.0.0.1:0"])
            self.server_address, self.fleet_address = _read_lines(srv, START_TIMEOUT_S, True)
            srv.address = self.server_address
            for c in self.clients:
                self._spawn(f"supernode-{c}", "supernode", c, ["--server", self.fleet_address,
                                                               "--server-name", SERVER])
            for key, np_ in self.nodes.items():
                if key != SERVER:
                    np_.address = _read_lines(np_, START_TIMEOUT_S, False)[0]
        except BaseException:
            self.stop()
            raise
        return self

    def train(self, config: Mapping[str, Any], timeout_s: float, init_params: Sequence[float] | None = None) -> dict[str, Any]:
        """One Flower run on this network's server node (:func:`train_on_server`); the nodes stay up. A
        ServerApp that failed with a labqfl error fails here with that error's one line
        (:func:`flower_failure_line`)."""
        try:
            return train_on_server(self.server_address, self.certs, config, timeout_s=timeout_s,
                                   init_params=init_params)
        except NodeError as exc:
            line = flower_failure_line(str(exc))
            if line is None:
                raise
            raise NodeError(f"{line} (the ServerApp's whole output: flower/flwr-run-<ID>.log under "
                            f"{self.server_data})") from None

    def stop(self, timeout: float = 60.0) -> dict[str, int | None]:
        """SIGTERM every SuperNode, then the server node; wait for each (SIGKILL after ``timeout``)."""
        order = [k for k in self.nodes if k != SERVER] + [k for k in self.nodes if k == SERVER]
        codes: dict[str, int | None] = {}
        t_end = time.monotonic() + timeout
        for group in (order[:-1], order[-1:]) if SERVER in self.nodes else (order,):
            for k in group:
                if self.nodes[k].proc.poll() is None:
                    self.nodes[k].proc.send_signal(signal.SIGTERM)
            for k in group:
                p = self.nodes[k].proc
                try:
                    codes[k] = p.wait(max(t_end - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    p.kill()
                    codes[k] = p.wait()
                if p.stdout is not None:
                    p.stdout.close()
        return codes

    def __enter__(self) -> FlNetwork:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
