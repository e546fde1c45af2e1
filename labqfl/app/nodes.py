"""Operate a set of nodes as one use case: open it, check it, acquire → distil, close it.

The GUI's Nodes panel (and any other front end) makes these calls; the recipe lives only here::

    nodes = NodeSet.start_local(station, duration_s=1.0)       # optics, detector, every client: own processes
    # or: NodeSet.connect(read_addresses("nodes.txt"), "certs", station=station)
    nodes.check()                                              # every node answers an authenticated ctl/ping
    run = nodes.acquire(1.0)                                   # per pair: status, sifted bits, QBER, key bits, rate, security
    codes = nodes.close()                                      # stops only what it started; exit codes

**Two ways to open a set.** :meth:`NodeSet.start_local` starts a
:class:`~labqfl.nodes.launch.LocalNetwork` on loopback (throwaway certificates in a work folder:
a temporary one, removed with the CA key at :meth:`NodeSet.close`, unless ``workdir`` is given).
:meth:`NodeSet.connect` talks to nodes that run elsewhere (docs/nodes.md "Separate hosts"): their
addresses (:func:`read_addresses`) and the operator's certificate folder (``ca.pem``,
``node-ctl.pem``/``.key``, the operator's certificate CN ``ctl``). Closing a connected set stops
nothing: the nodes keep running.

**Checking a node** is the node protocol's own status request: a ``ctl`` session opened with the
operator's certificate (mutual TLS: the node must present a certificate of our CA for its name)
and one ``ctl/ping`` → ``ctl/pong {role, name}`` (:mod:`labqfl.nodes.common`). In a connected set
the roles are taken from those answers, so the addresses file only names the nodes.

**An acquisition** is the operator's part of docs/nodes.md (:func:`labqfl.nodes.launch.run_acquisition`):
arm every client, let the detector run, collect each pair's results from its Ci. What comes back
is public statistics; no key bit is ever in it. What a pair's key's security rests on is read from
the block provenance (:mod:`labqfl.provenance`): in a local set from the stored blocks themselves
(each Ci's store, block metadata only, through the :class:`~labqfl.keystore.KeyStore` API), in a
connected set, whose stores are on other hosts, from the public station file (the same file the
nodes run with; ``PairOutcome.provenance_source`` says which).
"""

from __future__ import annotations

import sqlite3
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from labqfl.config import StationConfig, load_station_config
from labqfl.contracts.types import duration_problem
from labqfl.errors import ConfigError, LabqflError
from labqfl.log import get_logger

log = get_logger(__name__)

__all__ = ["NODE_STATES", "NodeAcquisition", "NodeSet", "NodeSetError", "NodeStatus", "PairOutcome",
           "local_settings", "operator_credentials", "pair_security", "read_addresses"]

#: What :attr:`NodeStatus.state` can say.
NODE_STATES = ("starting", "answering", "not answering", "stopped", "left running")
#: Seconds a status request (session + ``ctl/ping``) may take before the node counts as not answering.
PING_TIMEOUT_S = 10.0


class NodeSetError(LabqflError):
    """A set of nodes could not be opened, checked, used or closed (one line: which node and why)."""


# -- input ----------------------------------------------------------------------------------------
def read_addresses(path: str | Path) -> dict[str, str]:
    """Node addresses from a text file: one ``NAME=HOST:PORT`` per line (``#`` starts a comment,
    blank lines are skipped), e.g. ``detector=detector.lab:7001``. The names are the nodes'
    certificate names; their roles are asked from the nodes themselves (:meth:`NodeSet.check`).

    Raises :class:`~labqfl.errors.ConfigError` naming the file and line of a bad entry."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: addresses file not found; expected one NAME=HOST:PORT per line")
    out: dict[str, str] = {}
    for i, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, addr = (s.strip() for s in line.partition("="))
        host, colon, port = addr.rpartition(":")
        if not sep or not name or not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{p}:{i}: {line!r} is not NAME=HOST:PORT (port 1-65535)")
        if name in out:
            raise ConfigError(f"{p}:{i}: node {name!r} is listed twice")
        out[name] = addr
    if not out:
        raise ConfigError(f"{p}: no node addresses; expected one NAME=HOST:PORT per line")
    return out


def operator_credentials(certs: str | Path) -> Any:
    """The operator's TLS identity (:class:`~labqfl.net.NodeCredentials` of ``ctl``) from ``certs``;
    :class:`~labqfl.errors.ConfigError` naming the missing or wrong file."""
    from labqfl.net import NodeCredentials
    from labqfl.nodes.common import CTL

    d = Path(certs)
    if not d.is_dir():
        raise ConfigError(f"{d}: certificate folder not found; expected ca.pem and node-{CTL}.pem/.key")
    return NodeCredentials.load(d, CTL)


# -- results --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeStatus:
    """One node as the operator sees it: ``state`` is one of :data:`NODE_STATES`; ``detail``
    says why when it is not answering, or the exit code once stopped."""

    name: str
    role: str
    address: str
    state: str
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PairOutcome:
    """One pair's result of an acquisition (public statistics only; no key bit).

    ``status``: ``"key"`` (final key stored at both ends), ``"no key"`` (``reasons`` say why:
    aborted blocks, too little data) or ``"failed"``; ``qber``: error rate of the X-basis key bits
    after reconciliation; ``key_rate_bps``: final key bits per second of acquisition;
    ``security``: one line, what the key's security rests on (:func:`labqfl.provenance.security_statement`
    of the weakest block); ``provenance_source``: ``"blocks"`` (read from the stored blocks) or
    ``"station"`` (declared by the station file, the blocks being on other hosts)."""

    pair: str
    status: str
    sifted_bits: int
    qber: float | None
    final_key_bits: int
    key_rate_bps: float | None
    blocks: int
    aborted_blocks: int
    security: str
    information_theoretic: bool
    provenance_source: str
    provenance: str = ""
    reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return d


@dataclass(frozen=True)
class NodeAcquisition:
    """An acquisition → distillation over the set: its ID, lengths, the pairs' outcomes and the
    detector's public counts (slots, tags, clicks)."""

    acquisition: str
    duration_s: float
    wall_s: float
    pairs: dict[str, PairOutcome]
    detector: dict[str, Any] = field(default_factory=dict)

    @property
    def total_final_key_bits(self) -> int:
        return sum(p.final_key_bits for p in self.pairs.values())

    def as_dict(self) -> dict[str, Any]:
        return {"acquisition": self.acquisition, "duration_s": self.duration_s, "wall_s": self.wall_s,
                "pairs": {k: v.as_dict() for k, v in self.pairs.items()}, "detector": dict(self.detector),
                "total_final_key_bits": self.total_final_key_bits}


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def pair_security(cfg: StationConfig, pair: str, d: Mapping[str, Any], data: Path | None = None, *,
                  acquisition: str | None = None) -> dict[str, Any]:
    """What ``pair``'s key from one acquisition rests on: ``{"security": statement, "information_theoretic",
    "provenance": label, "source"}``, the one home of the wording for every output about node keys (the GUI's
    Nodes panel, ``labqfl node up`` / ``node acquire``; issue 16 item 5, review s35 F4).

    ``data``: the pair's first client's data folder, on this machine (a local set): the statement is read from
    its stored blocks of this acquisition (``source`` ``"blocks"``: the blocks ``d["accepted_blocks"]`` names
    with their refills, else those whose metadata records ``acquisition``) with the pair's pre-shared blocks
    (:func:`labqfl.provenance.provenance_of_block_ids`). None (the stores are on other hosts): from the
    public station file the nodes run with (``source`` ``"station"``)."""
    from labqfl.provenance import (
        Provenance,
        pair_provenance,
        provenance_of_block_ids,
        security_statement,
    )

    a, _, b = pair.partition("-")
    if data is not None:
        from labqfl.keystore import KeyStore, node_store_path
        from labqfl.qkd.pipeline import AUTH_REFILL_SUFFIX

        try:
            store = KeyStore(node_store_path(a, data), node=a, create=False)
            try:  # with the pair's pre-shared blocks: where its authentication started (auth_secret_caveat)
                rows = store.blocks(pair)
                if acquisition is not None and "accepted_blocks" not in d:
                    held = {r["block_id"] for r in rows
                            if isinstance(r["meta"], Mapping) and r["meta"].get("acquisition") == acquisition}
                else:
                    ids = {str(x) for x in d.get("accepted_blocks", [])}
                    ids |= {x + AUTH_REFILL_SUFFIX for x in ids}
                    held = {r["block_id"] for r in rows} & ids  # a block without refill: none
                sm = provenance_of_block_ids(store, pair, held)
            finally:
                store.close()
        except (LabqflError, OSError, sqlite3.Error) as e:
            return {"security": f"provenance not readable from {a}'s store: {_one_line(e)}",
                    "information_theoretic": False, "provenance": "", "source": "blocks"}
        w = sm["weakest"]
        return {"security": sm["security"], "information_theoretic": bool(sm["information_theoretic"]),
                "information_theoretic_condition": sm.get("information_theoretic_condition"),
                "provenance": Provenance.from_dict(w).label if w else "", "source": "blocks"}
    eps = d.get("eps_total_per_block")
    prov = pair_provenance(cfg, (a, b), eps_total=float(eps) if eps is not None else None)
    return {"security": security_statement(prov), "information_theoretic": False, "provenance": prov.label,
            "source": "station"}


# -- the set ----------------------------------------------------------------------------------------
def local_settings(cfg: StationConfig, duration_s: float) -> tuple[Any, Any]:
    """The clients' :class:`~labqfl.qkd.pipeline.DistillSettings` and the block-size rule's plan
    (:mod:`labqfl.qkd.blocksize`) for acquisitions of ``duration_s`` seconds: the rule ``labqfl node up
    --duration`` gives its clients (default engine and ε_sec). :class:`NodeSetError` when
    ``duration_s`` is too short for a block with key at every pair."""
    from labqfl.app.distill import DistillOptions, distill_settings

    if (problem := duration_problem(duration_s)) is not None:
        raise NodeSetError(f"acquisition duration {problem}")
    try:
        return distill_settings(cfg, DistillOptions(), float(duration_s), what="the acquisition",
                                hint="choose a longer duration")
    except ConfigError as e:
        raise NodeSetError(str(e)) from None


class NodeSet:
    """An opened set of nodes (module docstring). Build it with :meth:`start_local` or
    :meth:`connect`; every method may be called from a worker thread, :meth:`close` from any
    thread and more than once (it also interrupts an acquisition of a local set in progress:
    the nodes finish their block in progress and exit)."""

    def __init__(self, cfg: StationConfig, certs: Path, addresses: Mapping[str, str], *,
                 roles: Mapping[str, str] | None = None, network: Any = None,
                 tmp: tempfile.TemporaryDirectory[str] | None = None) -> None:
        self.cfg = cfg
        self.certs = Path(certs)
        self.addresses = dict(addresses)
        self.roles: dict[str, str] = dict(roles or {})
        #: the LocalNetwork this set started (None: connected to nodes that run elsewhere)
        self.network = network
        self._tmp = tmp
        self._lock = threading.Lock()
        self._closed = False
        self.exit_codes: dict[str, int | None] = {}
        #: the acquisition length [s] a local set's block sizes were planned for (:meth:`start_local`'s
        #: ``duration_s``; None: an open-ended stream's, settings given, or a connected set)
        self.planned_duration_s: float | None = None
        #: the block-size rule's plan the local set's clients run (:class:`~labqfl.qkd.blocksize.BlockPlan`; None
        #: when the settings were given or the set is connected)
        self.block_plan: Any = None
        self._status: dict[str, NodeStatus] = {
            n: NodeStatus(n, self.roles.get(n, "?"), a, "starting" if network is not None else "?")
            for n, a in self.addresses.items()}

    @property
    def started(self) -> bool:
        """True when this set started the node processes itself (it stops them at :meth:`close`)."""
        return self.network is not None

    @property
    def closed(self) -> bool:
        return self._closed

    # -- opening ----------------------------------------------------------------------------------
    @classmethod
    def start_local(cls, station: str | Path | StationConfig | None = None, *, workdir: str | Path | None = None,
                    settings: Any = None, threads: int | None = None, duration_s: float | None = None) -> NodeSet:
        """Start optics, detector and every client of ``station`` as separate processes on loopback
        (:class:`~labqfl.nodes.launch.LocalNetwork`: throwaway certificates, one data folder per
        node under ``workdir``; default a temporary folder removed at :meth:`close`), then
        :meth:`check` them. A station given as a config object is written to ``<workdir>/station.toml``
        for the node processes. ``settings``: the clients' :class:`~labqfl.qkd.pipeline.DistillSettings`;
        without them, the block-size rule's (:func:`local_settings`) for acquisitions of ``duration_s``
        seconds, as ``labqfl node up --duration`` (None: for an open-ended stream, smaller blocks)."""
        from labqfl.nodes.launch import LocalNetwork

        tmp = tempfile.TemporaryDirectory(prefix="labqfl-nodes-") if workdir is None else None
        wd = Path(tmp.name) if tmp is not None else Path(workdir or ".")
        path: Path | None
        plan = None
        try:
            wd.mkdir(parents=True, exist_ok=True, mode=0o700)
            if isinstance(station, StationConfig):
                from labqfl.planning import station_toml

                path = wd / "station.toml"
                path.write_text(station_toml(station), encoding="utf-8")
            else:
                path = None if station is None else Path(station)
                if path is not None and not path.is_file():
                    raise ConfigError(f"{path}: station file not found")
            if settings is None and duration_s is not None:
                settings, plan = local_settings(load_station_config(path), duration_s)
            net = LocalNetwork(wd, path, settings=settings, threads=threads)
            net.start()
        except BaseException:
            if tmp is not None:
                tmp.cleanup()
            raise
        roles = {n: p.role for n, p in net.nodes.items()}
        nodes = cls(net.cfg, net.certs, net.addresses(), roles=roles, network=net, tmp=tmp)
        nodes.block_plan = plan
        nodes.planned_duration_s = float(duration_s) if plan is not None and duration_s is not None else None
        try:
            nodes.check()
        except BaseException:
            nodes.close()
            raise
        return nodes

    @classmethod
    def connect(cls, addresses: Mapping[str, str] | str | Path, certs: str | Path, *,
                station: str | Path | StationConfig | None = None) -> NodeSet:
        """Connect to running nodes: ``addresses`` (a mapping name → ``HOST:PORT``, or an addresses
        file, :func:`read_addresses`) and the operator's certificate folder ``certs``. Every node
        must answer (:meth:`check`); the set needs one detector, one optics node and at least two
        clients. ``station``: the public station file the nodes run with (default: labqfl's
        default station), used for what the keys' security rests on."""
        addr = read_addresses(addresses) if isinstance(addresses, str | Path) else dict(addresses)
        if not addr:
            raise ConfigError("no node addresses given; expected NAME=HOST:PORT for the detector, optics and clients")
        operator_credentials(certs)  # a missing or wrong file: one line before any connection
        cfg = station if isinstance(station, StationConfig) else load_station_config(station)
        nodes = cls(cfg, Path(certs), addr)
        nodes.check()
        by_role: dict[str, list[str]] = {}
        for n, r in nodes.roles.items():
            by_role.setdefault(r, []).append(n)
        from labqfl.nodes.common import simulated_light

        for role in ("detector", "optics") if simulated_light(cfg) else ("detector",):  # the lab's light: no optics
            if len(by_role.get(role, [])) != 1:
                raise NodeSetError(f"the addresses name {len(by_role.get(role, []))} {role} node(s) "
                                   f"({', '.join(by_role.get(role, [])) or 'none'}); expected exactly one")
        if len(by_role.get("client", [])) < 2:
            raise NodeSetError(f"the addresses name {len(by_role.get('client', []))} client node(s); expected at least two")
        return nodes

    # -- state --------------------------------------------------------------------------------------
    def nodes(self) -> list[NodeStatus]:
        """Every node as last seen, in the order of the addresses (local: optics, detector, clients)."""
        with self._lock:
            return [self._status[n] for n in self.addresses]

    def _names(self, role: str) -> list[str]:
        names = [n for n in self.addresses if self.roles.get(n) == role]
        if role == "client":  # the station's order where it knows the clients
            order = {c: i for i, c in enumerate(self.cfg.client_names)}
            names.sort(key=lambda n: (order.get(n, len(order)), n))
        return names

    def check(self, timeout_s: float = PING_TIMEOUT_S) -> list[NodeStatus]:
        """Ask every node for its status (module docstring: a ``ctl`` session with the operator's
        certificate and one ``ctl/ping``); its role comes from the answer. Raises
        :class:`NodeSetError` naming the first node that did not answer (the statuses of all are
        kept: :meth:`nodes`)."""
        from labqfl.nodes.common import open_session, request
        from labqfl.qkd.messaging import Message

        if self._closed:
            raise NodeSetError("the set of nodes is closed")
        try:
            creds = operator_credentials(self.certs)
        except ConfigError as e:
            raise NodeSetError(str(e)) from None
        failures: list[str] = []
        for name, address in self.addresses.items():
            try:
                ch = open_session(address, creds, name, "ctl", timeout_s=timeout_s)
                try:
                    pong = request(ch, Message("ctl/ping", {}), "ctl/pong")
                finally:
                    ch.close()
                role = str(pong.get("role"))
                st = NodeStatus(name, role, address, "answering")
                with self._lock:
                    self.roles[name] = role
            except (LabqflError, OSError) as e:
                st = NodeStatus(name, self.roles.get(name, "?"), address, "not answering", _one_line(e))
                failures.append(f"node {name} at {address} does not answer the operator certificate of "
                                f"{self.certs}: {_one_line(e)}")
            with self._lock:
                self._status[name] = st
        if failures:
            extra = f" (and {len(failures) - 1} more node(s))" if len(failures) > 1 else ""
            raise NodeSetError(failures[0] + extra)
        return self.nodes()

    # -- acquisition ----------------------------------------------------------------------------------
    def acquire(self, duration_s: float, *, timeout_s: float = 900.0) -> NodeAcquisition:
        """One acquisition of ``duration_s`` seconds → distillation across the set; per-pair outcomes.

        Raises :class:`NodeSetError` with one line when the set is closed, the duration is not
        positive, or a node refused or was lost (the nodes store no half block: docs/nodes.md)."""
        from labqfl.nodes.launch import run_acquisition

        if (problem := duration_problem(duration_s)) is not None:
            raise NodeSetError(f"acquisition duration {problem}")
        if self._closed:
            raise NodeSetError("the set of nodes is closed")
        from labqfl.nodes.common import simulated_light

        det, opt, clients = self._names("detector"), self._names("optics"), self._names("client")
        n_opt = 1 if simulated_light(self.cfg) else 0  # a real tagger on real hardware: the lab's light, no optics
        if len(det) != 1 or len(opt) != n_opt or len(clients) < 2:
            raise NodeSetError(f"an acquisition needs one detector, {n_opt} optics node(s) and two clients; the set has "
                               f"{len(det)}, {len(opt)} and {len(clients)}")
        try:
            res = run_acquisition(clients, self.certs, detector=self.addresses[det[0]],
                                  optics=self.addresses[opt[0]] if opt else "",
                                  clients={c: self.addresses[c] for c in clients}, duration=float(duration_s),
                                  timeout=timeout_s, detector_name=det[0])
        except (LabqflError, OSError) as e:
            if self._closed:
                raise NodeSetError(f"the acquisition was interrupted: the nodes were stopped ({_one_line(e)})") from None
            raise NodeSetError(f"the acquisition failed: {_one_line(e)}") from None
        pairs = {p: self._outcome(p, d, float(duration_s)) for p, d in sorted(res["pairs"].items())}
        return NodeAcquisition(str(res["acquisition"]), float(duration_s), float(res["wall_s"]), pairs,
                               dict(res.get("detector", {})))

    def _outcome(self, pair: str, d: Mapping[str, Any], duration_s: float) -> PairOutcome:
        final = int(d.get("final_key_bits", 0))
        failed = str(d.get("failed") or "")
        reasons = tuple(str(r) for r in d.get("abort_reasons", []))
        if failed:
            status, reasons = "failed", (failed, *reasons)
        elif not d.get("done", True):
            status, reasons = "failed", ("the pair was still distilling when the operator's wait ended", *reasons)
        elif final > 0:
            status = "key"
        else:
            status = "no key"
            if not reasons:
                reasons = (f"no block distilled from {int(d.get('sifted_bits', 0))} sifted bits "
                           "(too little data for the finite-key analysis: acquire longer)",)
        err = d.get("error_rate") or {}
        security, it, label, source = self._security(pair, d)
        rate = d.get("secure_key_rate_bps")
        return PairOutcome(pair, status, int(d.get("sifted_bits", 0)), err.get("X_key"), final,
                           float(rate) if rate is not None else (final / duration_s if duration_s > 0 else None),
                           int(d.get("blocks", 0)), int(d.get("aborted_blocks", 0)), security, it, source, label,
                           reasons)

    def _security(self, pair: str, d: Mapping[str, Any]) -> tuple[str, bool, str, str]:
        """(statement, information-theoretic?, provenance label, source) of ``pair``'s key (:func:`pair_security`)."""
        first = pair.partition("-")[0]
        sec = pair_security(self.cfg, pair, d, self.network.data_of(first) if self.network is not None else None)
        return sec["security"], sec["information_theoretic"], sec["provenance"], sec["source"]

    # -- closing --------------------------------------------------------------------------------------
    def close(self, timeout_s: float = 60.0) -> dict[str, int | None]:
        """Stop the nodes this set started (SIGTERM, clean exit; their exit codes, 0 each when all
        went well) and remove its temporary work folder; for a connected set stop nothing (the
        nodes are left running, ``{}``). Idempotent and thread-safe."""
        with self._lock:
            if self._closed:
                return dict(self.exit_codes)
            self._closed = True
        if self.network is None:
            with self._lock:
                for n, st in self._status.items():
                    self._status[n] = replace(st, state="left running", detail="")
            return {}
        try:
            codes = self.network.stop(timeout_s)
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()
        with self._lock:
            self.exit_codes = dict(codes)
            for n, st in self._status.items():
                c = codes.get(n)
                self._status[n] = replace(st, state="stopped", detail=f"exit code {c}")
        bad = {n: c for n, c in codes.items() if c != 0}
        if bad:
            log.warning("nodes that did not exit cleanly: %s", ", ".join(f"{n} ({c})" for n, c in bad.items()))
        return dict(codes)
