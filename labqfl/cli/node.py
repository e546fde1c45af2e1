"""``labqfl node ...``: run one node of the network per process (client, detector, optics), start
a whole network on loopback (``up``), run an acquisition across running nodes (``acquire``), or train
over a running server node and SuperNodes (``train``; ``sign-spec``: the operator signs a run's training spec;
:mod:`labqfl.cli.node_train`).
docs/nodes.md has the per-host commands."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from labqfl.cli.common import (
    EC_ENGINE_HELP,
    JSON_OPTION,
    check_duration,
    console,
    emit,
    fail,
    handle_errors,
    judge_key,
    key_verdict_exit,
    print_json,
)
from labqfl.contracts.types import DEFAULT_DURATION_S, DEFAULT_ENGINE
from labqfl.errors import LabqflError

STATION = typer.Option(None, "--config", "-c", "--station",
                       help="Station TOML file, as --config in every other command (default: the embedded 4-client "
                            "station); --station is its older name.", dir_okay=False)
DATA = typer.Option(..., "--data", help="This node's own data folder (key store, private logs); no other node reads it.")
LISTEN = typer.Option("127.0.0.1:0", "--listen", help="HOST:PORT to serve on, PORT 0-65535 (0: any free port).")
CERTS = typer.Option(..., "--certs", help="Folder with ca.pem and node-NAME.pem/.key (from `labqfl node certs`; docs/nodes.md).")


def _settings(station: Path | None, block_bits: int | None, engine: str, min_final_bits: int | None,
              block_slots: int | None, eps_sec: float, pair_block_slots: list[str] | None = None,
              pair_min_final_bits: list[str] | None = None, *, duration: float | None = None,
              what: str = "the stream") -> tuple[Any, Any]:
    """The clients' :class:`~labqfl.qkd.pipeline.DistillSettings` and the block-size plan they come
    from (None when block sizes are forced). With no block size given (``--block-bits``,
    ``--block-slots``, ``--pair-block-slots``) the block-size rule decides, as in ``labqfl run`` and
    ``labqfl distill``: for ``duration`` seconds of data (``node up``) or an open-ended stream
    (``node client``). ``--min-final-bits`` / ``--pair-min-final-bits`` override the rule's smallest
    final block."""
    import dataclasses

    from labqfl.errors import ConfigError
    from labqfl.qkd.estimation import SecurityParameters
    from labqfl.qkd.pipeline import DistillSettings

    def per_pair(items: list[str] | None, what_: str) -> dict[str, int] | None:
        out: dict[str, int] = {}
        for it in items or []:
            pair, sep, n = it.partition("=")
            if not sep or not n.isdigit():
                raise ConfigError(f"{what_}: {it!r} is not PAIR=INTEGER (e.g. C1-C2=400000)")
            out[pair] = int(n)
        return out or None

    plan = None
    if block_bits is None and block_slots is None and not pair_block_slots:
        from labqfl.app.distill import DistillOptions, distill_settings
        from labqfl.config import load_station_config

        hint = ("force a block size with --block-bits" if duration is None
                else "use a longer --duration or force a block size with --block-bits")
        settings, plan = distill_settings(load_station_config(station), DistillOptions(engine=engine, eps_sec=eps_sec),
                                          duration, what=what, hint=hint)
    else:
        settings = DistillSettings(block_bits=1_000_000 if block_bits is None else block_bits, engine=engine,
                                   block_slots=block_slots, params=SecurityParameters(eps_sec=eps_sec),
                                   pair_block_slots=per_pair(pair_block_slots, "--pair-block-slots"))
    if min_final_bits is not None:  # one smallest final block for every pair
        settings = dataclasses.replace(settings, min_final_block_bits=min_final_bits, pair_min_final_block_bits=None)
    if pair_min_final_bits:
        settings = dataclasses.replace(settings, pair_min_final_block_bits=per_pair(pair_min_final_bits,
                                                                                    "--pair-min-final-bits"))
    return settings, plan


BLOCK_BITS = typer.Option(None, "--block-bits", min=1000, help="Sifted bits per key block (average; default: the "
                          "block-size rule, docs/postprocessing.md).")
MIN_FINAL_BITS = typer.Option(None, "--min-final-bits", min=1000, help="Smallest final rest block distilled "
                              "(default: the block-size rule's, per pair).")


NODE_JSON = typer.Option(False, "--json", help="Print the listening line as JSON {node, role, address} on stdout.")
EPS_SEC = typer.Option(1e-10, "--eps-sec", help="Secrecy parameter ε_sec (every client of the network the same).")


def register(app: typer.Typer) -> None:
    node_app = typer.Typer(help="Nodes of the network: each party in its own process (docs/nodes.md).",
                           no_args_is_help=True)
    app.add_typer(node_app, name="node")
    build(node_app)


def build(node_app: typer.Typer) -> None:
    _add_client(node_app)
    _add_detector(node_app)
    _add_optics(node_app)
    _add_server(node_app)
    _add_supernode(node_app)
    _add_acquire(node_app)
    _add_up(node_app)
    _add_certs(node_app)
    _add_preshare(node_app)
    from labqfl.cli.node_train import add_train  # it reuses this module's options

    add_train(node_app)


def _add_client(node_app: typer.Typer) -> None:
    @node_app.command("client")
    @handle_errors
    def client(
        name: str = typer.Option(..., "--name", help="Client name (C1, C2, ...; its certificate's CN)."),
        station: Path = STATION, data: Path = DATA, listen: str = LISTEN, certs: Path = CERTS,
        optics: str = typer.Option("", "--optics", help="HOST:PORT of the optics node (or sent by the operator)."),
        peer: list[str] = typer.Option(None, "--peer", help="NAME=HOST:PORT of a partner client (repeatable)."),
        block_bits: int = BLOCK_BITS,
        block_slots: int = typer.Option(None, "--block-slots", help="Slots of the pair per block (overrides --block-bits)."),
        engine: str = typer.Option(DEFAULT_ENGINE, "--engine", help=EC_ENGINE_HELP),
        min_final_bits: int = MIN_FINAL_BITS,
        eps_sec: float = EPS_SEC,
        pair_block_slots: list[str] = typer.Option(None, "--pair-block-slots",
                                                   help="PAIR=N: the pair's own block size (block-size rule)."),
        pair_min_final_bits: list[str] = typer.Option(None, "--pair-min-final-bits",
                                                      help="PAIR=N: the pair's own smallest final block."),
        as_json: bool = NODE_JSON,
    ) -> None:
        """Client node Ci: its randomness, choice log, key store; drives its pairs as Ci, serves them as Cj."""
        from labqfl.nodes.client import main
        from labqfl.nodes.common import check_address, parse_addresses

        check_address(listen, "--listen")
        if optics:
            check_address(optics, "--optics")
        main(name, station, data, listen, certs, optics=optics, peers=parse_addresses(peer, "--peer"),
             settings=_settings(station, block_bits, engine, min_final_bits, block_slots, eps_sec, pair_block_slots,
                                pair_min_final_bits)[0], as_json=as_json)


def _add_detector(node_app: typer.Typer) -> None:
    @node_app.command("detector")
    @handle_errors
    def detector(
        name: str = typer.Option("detector", "--name", help="Node name (its certificate's CN)."),
        station: Path = STATION, data: Path = DATA, listen: str = LISTEN, certs: Path = CERTS,
        optics: str = typer.Option("", "--optics", help="HOST:PORT of the optics node."),
        client: list[str] = typer.Option(None, "--client", help="NAME=HOST:PORT of a client (repeatable)."),
        as_json: bool = NODE_JSON,
    ) -> None:
        """Untrusted measurement node: time tagger, slotting, announcements to every client."""
        from labqfl.nodes.common import check_address, parse_addresses
        from labqfl.nodes.detector import main

        check_address(listen, "--listen")
        if optics:
            check_address(optics, "--optics")
        main(name, station, data, listen, certs, optics=optics, clients=parse_addresses(client, "--client"),
             as_json=as_json)


def _add_optics(node_app: typer.Typer) -> None:
    @node_app.command("optics")
    @handle_errors
    def optics(
        name: str = typer.Option("optics", "--name", help="Node name (its certificate's CN)."),
        station: Path = STATION, data: Path = DATA, listen: str = LISTEN, certs: Path = CERTS,
        threads: int = typer.Option(None, "--threads", help="Monte-Carlo threads (default: every core)."),
        as_json: bool = NODE_JSON,
    ) -> None:
        """The simulated optical layer: asks each client's modulator link, delivers tags to the detector."""
        from labqfl.nodes.common import check_address
        from labqfl.nodes.optics import main

        check_address(listen, "--listen")
        main(name, station, data, listen, certs, threads=threads, as_json=as_json)


def _add_server(node_app: typer.Typer) -> None:
    @node_app.command("server")
    @handle_errors
    def server(
        name: str = typer.Option(None, "--name", help="Node name (its certificate's CN; default: the station's "
                                 "[fl_server] name, else 'server')."),
        station: Path = STATION,
        data: Path = typer.Option(None, "--data", help="This node's own data folder (default: the station's "
                                  "[fl_server] data; one of the two is required)."),
        listen: str = LISTEN,
        fl_listen: str = typer.Option(None, "--fl-listen", help="HOST:PORT of the mutual-TLS front the SuperNodes "
                                      "dial (default: the station's [fl_server] host and port)."),
        certs: Path = typer.Option(None, "--certs", help="Folder with ca.pem and node-NAME.pem/.key (`labqfl node "
                                   "certs`; default: the "
                                   "station's [fl_server] certs; one of the two is required)."),
        as_json: bool = typer.Option(False, "--json", help="Print the listening line as JSON {node, role, address, "
                                     "fl_address} on stdout (fl_address: the mutual-TLS front's HOST:PORT)."),
    ) -> None:
        """Federated-learning server: Flower's SuperLink with TLS behind a mutual-TLS front for the clients."""
        from labqfl.config import load_station_config
        from labqfl.errors import ConfigError
        from labqfl.nodes.common import check_address
        from labqfl.nodes.flserver import main

        check_address(listen, "--listen")
        fs = load_station_config(station).fl_server
        name = name or (fs.name if fs else "server")
        fl_listen = fl_listen or (f"{fs.host}:{fs.port}" if fs else "127.0.0.1:0")
        data_dir = data or (Path(fs.data) if fs and fs.data else None)
        cert_dir = certs or (Path(fs.certs) if fs and fs.certs else None)
        if data_dir is None or cert_dir is None:
            raise ConfigError("labqfl node server needs --data and --certs (or data and certs in the station's "
                              "[fl_server] section)")
        main(name, station, data_dir, listen, cert_dir, fl_listen=fl_listen, as_json=as_json)


def _add_supernode(node_app: typer.Typer) -> None:
    @node_app.command("supernode")
    @handle_errors
    def supernode(
        name: str = typer.Option(..., "--name", help="Client name (C1, C2, ...; its certificate's CN)."),
        data: Path = typer.Option(..., "--data", help="The client's own data folder, the same as its client node's "
                                  "(the ClientApp draws the pads from DATA/keystore/NAME.sqlite only)."),
        server: str = typer.Option(None, "--server", help="HOST:PORT of the server node's mutual-TLS front "
                                   "(default: the station's [fl_server] host and port)."),
        server_name: str = typer.Option(None, "--server-name", help="The server node's certificate name "
                                        "(default: the station's [fl_server] name, else 'server')."),
        keys: str = typer.Option("qkd", "--keys", help="The masks' key mode this node accepts: qkd (pads from its "
                                 "key store) or csprng (X25519 agreement); the node refuses a run that asks for the "
                                 "other (the server's messages do not choose it)."),
        station: Path = STATION, certs: Path = CERTS, as_json: bool = NODE_JSON,
    ) -> None:
        """Client Ci's Flower SuperNode beside its client node: its ClientApp uses Ci's key store only."""
        import sys

        from labqfl.config import load_station_config
        from labqfl.errors import ConfigError
        from labqfl.nodes.supernode import main

        if keys not in ("qkd", "csprng"):
            raise ConfigError(f"--keys must be qkd or csprng, got {keys!r}")
        _check_client_data(name, data)
        fs = load_station_config(station).fl_server
        front = server or (f"{fs.host}:{fs.port}" if fs and fs.port else None)
        if front is None:
            raise ConfigError("labqfl node supernode needs --server HOST:PORT (or host and a port in the station's "
                              "[fl_server] section)")
        sys.exit(main(name, data, front, certs, server_name=server_name or (fs.name if fs else "server"),
                      keys=keys, as_json=as_json))


def _check_client_data(name: str, data: Path) -> None:
    """A SuperNode's ``--data`` is its client's data folder (review s32 L11): a folder that does not exist (a
    typo) is refused in one line naming the store, before anything is created in it; an existing one without
    ``keystore/NAME.sqlite`` gets a warning (training with csprng keys needs no store; with qkd keys it has no pads)."""
    from labqfl.errors import ConfigError

    store = data.expanduser() / "keystore" / f"{name}.sqlite"
    if not data.expanduser().is_dir():
        raise ConfigError(f"{store}: key store of client {name} not found: the data folder {data} does not exist "
                          f"(give client {name}'s data folder, the one its client node uses)")
    if not store.is_file():
        console.print(f"warning: {store}: key store of client {name} not found: training with qkd keys will find "
                      "no pads (is --data the folder its client node uses?)", soft_wrap=True)


def _add_acquire(node_app: typer.Typer) -> None:
    @node_app.command("acquire")
    @handle_errors
    def acquire(
        certs: Path = CERTS, station: Path = STATION,
        detector: str = typer.Option(..., "--detector", help="HOST:PORT of the detector node."),
        optics: str = typer.Option("", "--optics", help="HOST:PORT of the optics node (none with a real time tagger: "
                                   "the light is the lab's)."),
        client: list[str] = typer.Option(..., "--client", help="NAME=HOST:PORT of every client (repeatable)."),
        duration: float = typer.Option(..., "--duration", help="Acquisition length [s of simulated/real time]."),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """As the operator (certificate 'ctl'): one acquisition → distillation across running nodes."""
        from labqfl.config import load_station_config
        from labqfl.errors import ConfigError
        from labqfl.nodes.common import (
            check_address,
            check_client_addresses,
            parse_addresses,
            simulated_light,
        )
        from labqfl.nodes.launch import run_acquisition, summarize

        check_duration(duration)
        check_address(detector, "--detector")
        if optics:
            check_address(optics, "--optics")
        cfg = load_station_config(station)
        if simulated_light(cfg) and not optics:
            raise ConfigError("--optics HOST:PORT is needed: this station's light is the optics node's simulated loop")
        clients = parse_addresses(client, "--client")
        check_client_addresses(clients, cfg, "--client")  # before any session opens
        res = run_acquisition(cfg.client_names, certs, detector=detector, optics=optics, clients=clients,
                              duration=duration)
        out = summarize(res)
        _add_security(out, cfg, None)  # the stores are on the clients' hosts: from the station file
        _report(out, as_json)


def _add_up(node_app: typer.Typer) -> None:
    @node_app.command("up")
    @handle_errors
    def up(
        station: Path = STATION,
        duration: float = typer.Option(DEFAULT_DURATION_S, "--duration", help="Acquisition length [simulated s]."),
        block_bits: int = BLOCK_BITS,
        engine: str = typer.Option(DEFAULT_ENGINE, "--engine", help=EC_ENGINE_HELP),
        min_final_bits: int = MIN_FINAL_BITS,
        eps_sec: float = EPS_SEC,
        workdir: Path = typer.Option(None, "--workdir", help="Folder for certificates, node data and logs "
                                     "(default: a temporary folder, removed after: the JSON's workdir is then null); "
                                     "run again in the same folder, the certificates it holds are used again."),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Start optics + detector + every client as separate processes on loopback (throwaway
        certificates), run one acquisition → distillation, stop them; per-pair key bits and rates."""
        from labqfl.config import load_station_config
        from labqfl.nodes.launch import up as run_up

        check_duration(duration)
        s, plan = _settings(station, block_bits, engine, min_final_bits, None, eps_sec, duration=duration,
                            what="--duration")
        cfg = load_station_config(station)
        try:
            if workdir is None:
                with tempfile.TemporaryDirectory(prefix="labqfl-nodes-") as tmp:
                    out = run_up(station, duration, Path(tmp), settings=s)
                    _add_security(out, cfg, Path(tmp))  # from the stored blocks, before the folder goes
                # the folder went with the command: no path to a folder that no longer exists (review s34 L4); the
                # key stays, null, so a script reads "nothing kept" the same way every time
                out["workdir"] = None
            else:
                out = run_up(station, duration, workdir, settings=s)
                _add_security(out, cfg, workdir)
        except (LabqflError, OSError, ValueError) as exc:
            if as_json:  # a script reading stdout gets the failure too; handle_errors prints the one line
                print_json(_up_failure(exc, workdir))
            raise
        out["block_rule"] = plan.as_dict() if plan is not None else None
        _report(out, as_json, plan)


def _up_failure(exc: BaseException, workdir: Path | None) -> dict[str, Any]:
    """``node up --json``'s object for a run that failed (issue 16): ``error``, the line
    :func:`~labqfl.cli.common.handle_errors` prints on stderr (without ``error:``), as ``node acquire`` and
    ``labqfl station`` put a failure in their JSON's ``error``; ``node``, ``exit_code`` and ``node_error``: the node
    that did not start (:class:`~labqfl.nodes.launch.NodeStartError`: its name, its exit code, null while it was
    still starting, and its own error line), else null; ``workdir`` as on success."""
    from labqfl.nodes.launch import NodeStartError

    start = exc if isinstance(exc, NodeStartError) else None
    return {"error": str(exc) if isinstance(exc, LabqflError) else f"{exc.__class__.__name__}: {exc}",
            "node": start.node if start else None, "exit_code": start.exit_code if start else None,
            "node_error": start.reason if start else None, "workdir": str(workdir) if workdir is not None else None}


def _add_certs(node_app: typer.Typer) -> None:
    @node_app.command("certs")
    @handle_errors
    def certs(
        out_dir: Path = typer.Argument(..., file_okay=False, help="Folder for ca.pem/ca.key and node-NAME.pem/.key "
                                       "(made if missing; a CA already in it issues the new certificates)."),
        node: list[str] = typer.Option(..., "--node", help="NAME[=HOST[,HOST...]] (repeatable): a node to certify "
                                       "(C1.., detector, optics, server, the operator ctl) and the host names/IPs "
                                       "it serves on, as DNS/IP subjectAltNames (the FL server: also 127.0.0.1; "
                                       "ctl serves nothing and takes none)."),
        days: int = typer.Option(825, "--days", min=1, max=36500, help="Validity [days], 1 to 36500 (a new CA: the same)."),
        force: bool = typer.Option(False, "--force", help="Replace the named nodes' existing files (the CA in the "
                                   "folder issues them; a folder whose CA cannot issue gets a new CA)."),
        drop_ca_key: bool = typer.Option(False, "--drop-ca-key", help="Destroy ca.key (overwritten, flushed, "
                                         "deleted) once the certificates are issued: no more can be added here."),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Issue the network's node certificates (mutual TLS between nodes; docs/nodes.md, "Separate hosts"):
        a CA, or the one already in OUT_DIR, and node-NAME.pem/.key (key 0600) per --node, each carrying its
        node identity urn:labqfl:node:NAME. Copy ca.pem and a node's own two files to its host only."""
        from labqfl.net.pki import make_node_certs

        hosts = _node_specs(node)
        new_ca, stale = _cert_folder_check(out_dir, list(hosts), force)
        files = make_node_certs(out_dir, list(hosts), days=days, force=force, node_hosts=hosts, new_ca=new_ca)
        out = _describe_certs(out_dir, files, hosts, new_ca)
        warnings = _cert_warnings(out_dir, hosts, stale, drop_ca_key, out, days)
        if drop_ca_key:
            from labqfl.keystore.preshare import shred_secret_file

            if (problem := shred_secret_file(out_dir / "ca.key")) is not None:
                raise fail(f"the certificates are issued, but the CA's key was not destroyed: {problem}")
            out["ca"]["key"] = None
        out["ca"]["key_dropped"] = drop_ca_key
        out["warnings"] = warnings
        emit(out, as_json, lambda con: _render_certs(con, out))
        for w in warnings:
            console.print(f"warning: {w}", soft_wrap=True)


def _node_specs(specs: list[str]) -> dict[str, list[str]]:
    """``--node NAME[=HOST[,HOST...]]`` → name → hosts, checked before anything is written (one line per mistake)."""
    from labqfl.errors import ConfigError
    from labqfl.keystore.certs import _DNS_RE, _NAME_RE, _host_san
    from labqfl.net.pki import CLIENT_ONLY

    out: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, rest = spec.partition("=")
        name = name.strip()
        hosts = [h.strip() for h in rest.split(",")] if sep else []
        if not name or (sep and not all(hosts)):
            raise ConfigError(f"--node {spec!r}: expected NAME[=HOST[,HOST...]] (e.g. C1=c1.lab or "
                              "server=fl.lab,127.0.0.1), with no empty name or host")
        if not _DNS_RE.match(name) or not _NAME_RE.match(name):
            raise ConfigError(f"--node {spec!r}: node name {name!r} is invalid; expected letters, digits and '-' "
                              "(a DNS label: C1, detector, optics, server, ctl)")
        if name in out:
            raise ConfigError(f"--node {name!r} is given twice; expected each node once (all its hosts after '=')")
        if name in CLIENT_ONLY and hosts:
            raise ConfigError(f"--node {spec!r}: {name!r} (the operator) only connects, its certificate names no "
                              f"host; expected --node {name}")
        for h in hosts:
            try:
                _host_san(h)
            except ConfigError as e:
                raise ConfigError(f"--node {spec!r}: {e}") from None
        out[name] = hosts
    return out


def _cert_folder_check(out: Path, names: list[str], force: bool) -> tuple[bool, list[str]]:
    """Whether a new CA must be made in ``out`` (none there, or with ``force`` one that cannot issue), and the
    node certificates already there that it would leave behind (issued by the old CA). Refuses, one line: a
    named node's existing file without ``force``; a CA that cannot issue (ca.key dropped, a pair that does not
    match) without ``force``."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from labqfl.errors import ConfigError
    from labqfl.serialize import refuse_existing

    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; expected a folder for the certificates")
    if not force:
        for p in (out / f"node-{n}{ext}" for n in names for ext in (".pem", ".key")):
            refuse_existing(p, hint=", or issue into another folder")
    pem, key = out / "ca.pem", out / "ca.key"
    stale = sorted(p.name for p in out.glob("node-*.pem") if p.name[5:-4] not in names)
    if not pem.exists() and not key.exists():
        return True, stale
    problem = ""
    if not key.exists():
        problem = f"{pem} is there but not ca.key: the CA's key was dropped or is kept elsewhere, so it issues no more"
    elif not pem.exists():
        problem = f"{key} is there but not ca.pem"
    else:
        try:
            ca = x509.load_pem_x509_certificate(pem.read_bytes())
            if load_pem_private_key(key.read_bytes(), password=None).public_key() != ca.public_key():
                raise ValueError("ca.key is not the key of ca.pem")
        except (OSError, ValueError, TypeError) as e:
            problem = f"{out}: ca.pem/ca.key are not a readable CA certificate and its key ({e})"
    if not problem:
        return False, []
    if not force:
        raise ConfigError(f"{problem}; put the CA's key back as {key}, issue into another folder (a new CA: every "
                          "node then needs its new ca.pem and certificate), or pass --force to make a new CA here")
    return True, stale


def _describe_certs(out: Path, files: dict[str, Path], hosts: dict[str, list[str]], new_ca: bool) -> dict[str, Any]:
    """What ``node certs`` wrote: the CA and, per node, its files, identity, subjectAltNames, key usages, validity."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from labqfl.net.pki import node_uri

    eku_names = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth", ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth"}

    def when(c: x509.Certificate) -> tuple[str, str]:
        return (c.not_valid_before_utc.isoformat(timespec="seconds"), c.not_valid_after_utc.isoformat(timespec="seconds"))

    def san(g: x509.GeneralName) -> str:
        kind = {x509.DNSName: "DNS", x509.IPAddress: "IP", x509.UniformResourceIdentifier: "URI"}.get(type(g), "?")
        return f"{kind}:{g.value}"

    ca = x509.load_pem_x509_certificate(files["ca"].read_bytes())
    nb, na = when(ca)
    res: dict[str, Any] = {"dir": str(out), "ca": {"cert": str(files["ca"]), "key": str(out / "ca.key"), "new": new_ca,
                                                   "not_before": nb, "not_after": na}, "nodes": {}}
    for n in hosts:
        c = x509.load_pem_x509_certificate(files[n].read_bytes())
        sans = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ekus = c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        nb, na = when(c)
        res["nodes"][n] = {"cert": str(files[n]), "key": str(files[f"{n}.key"]), "identity": node_uri(n),
                           "hosts": hosts[n], "sans": [san(g) for g in sans],
                           "eku": [eku_names.get(e, e.dotted_string) for e in ekus], "serial": f"{c.serial_number:#x}",
                           "not_before": nb, "not_after": na}
    return res


def _cert_warnings(out: Path, hosts: dict[str, list[str]], stale: list[str], drop: bool,
                   issued: dict[str, Any], days: int) -> list[str]:
    """``node certs``'s warnings: the CA's key, certificates a new CA leaves behind, the FL server's loopback
    host, node certificates cut to the end of an older CA, before the ``days`` asked for."""
    import datetime as dt

    from labqfl.keystore.certs import ca_cut_warning, ca_key_warning, cut_short

    ws = []
    # (a new CA has the same --days: its certificates end with it)
    cut = [n for n, d in issued["nodes"].items() if not issued["ca"]["new"]
           and cut_short(dt.datetime.fromisoformat(d["not_before"]), dt.datetime.fromisoformat(d["not_after"]), days)]
    if cut:
        ws.append(ca_cut_warning(out, issued["ca"]["not_after"], cut, days, "a new CA in another folder for longer ones"))
    if not drop:
        ws.append(ca_key_warning(out / "ca.key", "every node of this network", "node", "--drop-ca-key, or shred it"))
    if stale:
        ws.append(f"a new CA was made in {out}: {', '.join(stale)} there were issued by the old one and are refused by "
                  "nodes that trust the new ca.pem; re-issue them (--node NAME --force)")
    if "server" in hosts and "127.0.0.1" not in hosts["server"]:
        ws.append("node 'server' has no host 127.0.0.1: the FL server node's SuperLink serves its certificate on "
                  "127.0.0.1 (give --node server=HOST,127.0.0.1)")
    return ws


def _render_certs(con: Any, out: dict[str, Any]) -> None:
    ca = out["ca"]
    state = "destroyed (--drop-ca-key)" if ca["key_dropped"] else ca["key"]
    con.print(f"CA {ca['cert']} ({'new' if ca['new'] else 'reused'}, valid to {ca['not_after']}); its key: {state}",
              soft_wrap=True)
    for n, d in out["nodes"].items():
        con.print(f"node {n}: {d['cert']}, {d['key']} (0600); SAN {', '.join(d['sans'])}; {'+'.join(d['eku'])}; "
                  f"valid {d['not_before']} to {d['not_after']}", soft_wrap=True)
    con.print(f"copy {ca['cert']} and each node's own node-NAME.pem/.key to its host only (the key with mode 0600: "
              "install -m 600)", soft_wrap=True)


def _add_preshare(node_app: typer.Typer) -> None:
    @node_app.command("preshare")
    @handle_errors
    def preshare(
        out_dir: Path = typer.Option(..., "--out", file_okay=False, help="Folder for the secret files: "
                                     "OUT/Ci/nodes/Ci/preshared/PAIR.json, OUT/Ci laid out as Ci's data folder."),
        pair: list[str] = typer.Option(None, "--pair", "-p", help="Pair Ci-Cj as the station names it (repeatable; "
                                       "default: every scheduled pair of the station)."),
        bits: int = typer.Option(1 << 16, "--bits", help="Secret size per pair [bits], a multiple of 8, at least "
                                 "the first block's authentication key (default 65536, as node up)."),
        station: Path = STATION,
        force: bool = typer.Option(False, "--force", help="Replace secret files already in OUT (they are destroyed: "
                                   "overwritten, flushed, deleted)."),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Issue each pair's pre-shared authentication secret for nodes on separate hosts: the same fresh
        secret in two files (0600), one per client, which the client node imports from nodes/Ci/preshared/
        of its data folder at its start, then destroys (docs/nodes.md, "Pre-shared authentication secrets").
        Key bits are never printed."""
        from labqfl.config import load_station_config
        from labqfl.nodes.preshared import SECRET_RANDOMNESS, write_pair_secret

        pairs = _preshare_pairs(pair, station, bits)
        if out_dir.exists() and not out_dir.is_dir():
            raise fail(f"--out {out_dir}: exists and is not a folder; expected a folder for the secret files")
        _clear_secret_files(out_dir, pairs, force)
        out: dict[str, Any] = {"dir": str(out_dir), "station": load_station_config(station).name, "bits": bits,
                               "simulated": False, "randomness": SECRET_RANDOMNESS, "pairs": {}}
        for a, b in pairs:
            p = f"{a}-{b}"
            bid = write_pair_secret(p, out_dir / a, out_dir / b, bits, simulated=False)
            out["pairs"][p] = {"block_id": bid, "files": {n: str(_secret_file(out_dir, n, p)) for n in (a, b)}}
        out["security"] = ("each secret is fresh from this machine's OS CSPRNG (secrets.token_bytes, os.urandom), "
                           "written with \"simulated\": false and \"randomness\": \"csprng\", which the client nodes "
                           "record in the block's provenance: its secrecy rests on that generator, on the channel "
                           "each file is copied over and on every other copy being destroyed")
        out["next"] = (f"copy {out_dir}/Ci/nodes/Ci/preshared/*.json into <Ci's data>/nodes/Ci/preshared/ on Ci's "
                       "host with mode 0600 (install -m 600), over a channel you trust, then destroy these copies "
                       f"(shred -u, or rm -rf {out_dir}): each secret may be loaded once, at its two ends")

        def render(con: Any) -> None:
            for p, d in out["pairs"].items():
                con.print(f"pair {p}: {bits} bits, block {d['block_id']}: " + ", ".join(d["files"].values()),
                          soft_wrap=True)
            con.print(out["security"], soft_wrap=True)
            con.print(out["next"], soft_wrap=True)

        emit(out, as_json, render)


def _secret_file(out: Path, node: str, pair: str) -> Path:
    from labqfl.nodes.preshared import secret_path

    return secret_path(out / node, node, pair)


def _preshare_pairs(pairs: list[str] | None, station: Path | None, bits: int) -> list[tuple[str, str]]:
    """The pairs ``node preshare`` issues secrets for (each checked against the station), after checking ``bits``."""
    from labqfl.config import load_station_config
    from labqfl.errors import ConfigError
    from labqfl.keystore.preshare import PRESHARED_MAX_BYTES, min_preshared_bits

    least = -(-min_preshared_bits() // 8) * 8
    if bits % 8 or not least <= bits <= 8 * PRESHARED_MAX_BYTES:
        raise ConfigError(f"--bits {bits}: expected a multiple of 8 from {least} (a first block's authentication "
                          f"key) to {8 * PRESHARED_MAX_BYTES}")
    cfg = load_station_config(station)
    if not pairs:
        return cfg.pairs()
    names = {f"{a}-{b}": (a, b) for a, b in cfg.pairs()}
    where = f"station {cfg.name!r}" + (f" ({station})" if station else " (the embedded default; give --config)")
    for p in pairs:
        if p not in names:
            flip = "-".join(reversed(p.split("-", 1)))
            also = f"; it names this pair {flip}" if flip in names else ""
            raise ConfigError(f"--pair {p!r}: not a scheduled pair of {where}{also}; its pairs are {', '.join(names)}")
    if len(set(pairs)) < len(pairs):
        raise ConfigError(f"--pair: a pair is given twice ({', '.join(pairs)}); expected each pair once")
    return [names[p] for p in pairs]


def _clear_secret_files(out: Path, pairs: list[tuple[str, str]], force: bool) -> None:
    """Refuse (one line) a secret file already at a target path, or with ``force`` destroy it, before any is written."""
    from labqfl.keystore.preshare import shred_secret_file
    from labqfl.serialize import refuse_existing

    paths = [_secret_file(out, n, f"{a}-{b}") for a, b in pairs for n in (a, b)]
    for p in paths:
        if not force:
            refuse_existing(p, "a secret file", ", or another --out")
    for p in paths:
        if p.exists() and (problem := shred_secret_file(p)) is not None:
            raise fail(f"--force: {problem}")


def _add_security(out: dict[str, Any], cfg: Any, workdir: Path | None) -> None:
    """Per pair, what its key rests on (issue 16 item 5, review s35 F4), in the one wording of
    :func:`labqfl.app.nodes.pair_security`: ``security``, ``information_theoretic`` and ``provenance`` (label);
    ``security_source`` for the run: ``"blocks"`` (``node up``: this acquisition's blocks in each pair's first
    client's store, ``<workdir>/nodes/<Ci>`` as :meth:`labqfl.nodes.launch.LocalNetwork.data_of` lays them out)
    or ``"station"`` (``node acquire``: the stores are on the clients' hosts, so the station file)."""
    from labqfl.app.nodes import pair_security

    sources = set()
    for p, d in out["pairs"].items():
        data = workdir / "nodes" / p.partition("-")[0] if workdir is not None else None
        sec = pair_security(cfg, p, d, data, acquisition=out["acquisition"])
        sources.add(sec.pop("source"))
        d.update(sec)
    out["security_source"] = sources.pop() if len(sources) == 1 else None


def _security_lines(out: dict[str, Any]) -> list[str]:
    """The text form of :func:`_add_security`: one line for the run when every pair's statement is the same,
    else one per pair."""
    where = {"blocks": "from the stored blocks", "station": "from the station file; each client's `labqfl keys "
             "status` gives what its stored blocks record"}.get(out.get("security_source") or "", "")
    stated = {p: d["security"] for p, d in out["pairs"].items() if d.get("security")}
    if not stated:
        return []
    tail = f" ({where})" if where else ""
    if len(set(stated.values())) == 1:
        return [f"key security, every pair{tail}: {next(iter(stated.values()))}"]
    return [f"key security{tail}:"] + [f"  {p}: {text}" for p, text in stated.items()]


def _report(out: dict[str, Any], as_json: bool, plan: Any = None) -> None:
    """Emit an acquisition's summary (``node acquire``, ``node up``) and judge it (:func:`judge_key`): no pair
    with key → the JSON's ``error`` and exit 1 with ``error: no pair produced key: <pair: reason; …>``; some
    pairs without key → the JSON's ``warning`` and a ``warning:`` line naming them on stderr, exit 0."""
    judge_key(out)
    emit(out, as_json, lambda con: _render(con, out, plan))
    key_verdict_exit(out)


def _render(con: Any, out: dict[str, Any], plan: Any = None) -> None:
    """The acquisition's table: QBER as a percentage and "—" for no value, as ``acquire``, ``distill`` and
    ``run`` show them (CLI review s32 L2: 0.0056 and "-" here); the JSON keeps fractions."""
    from labqfl.cli.common import pct_cell as pct

    if plan is not None:
        con.print(plan.summary())
    t = Table("pair", "final key [bit]", "blocks", "aborted", "key rate [bit/s]", "QBER X (key)",
              title=f"acquisition {out['acquisition']}: {out['duration_s']} s simulated in {out['wall_s']} s wall")
    for p, d in out["pairs"].items():
        rate = d["secure_key_rate_bps"]
        t.add_row(p, f"{d['final_key_bits']:,}", str(d["blocks"]), str(d["aborted_blocks"]),
                  "—" if rate is None else f"{rate:,.0f}", pct(d["error_rate_X_key"]))
    con.print(t)
    for line in _security_lines(out):
        con.print(line, markup=False, highlight=False)
    for p, d in out["pairs"].items():
        if d["abort_reasons"] or d["failed"]:
            con.print(f"{p}: {'; '.join(d['abort_reasons'])} {d['failed']}".strip())
