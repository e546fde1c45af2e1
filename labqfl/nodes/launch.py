"""Start a whole network of nodes on this machine and run one acquisition across them.

:class:`LocalNetwork` makes throwaway certificates (:func:`~labqfl.net.make_node_certs`: one CA,
one certificate per node and one for the operator ``ctl``; in a work folder an earlier network left,
its certificates are used again: :func:`node_certs`), gives every node its own data folder,
delivers each pair's pre-shared authentication secret into the two clients' folders (the
simulated out-of-band delivery, as ``labqfl keys preshare`` by hand), and starts the optics,
the detector and every client as separate OS processes (``sys.executable -m labqfl.nodes ...``,
listening on loopback, ephemeral ports read from their ``NODE <name> <address>`` line).

:func:`run_acquisition` is the operator's part and works the same against nodes on other hosts
(``labqfl node acquire``): arm every client (``ctl/arm``, with the duration: a client with a pattern
generator streams that many slots of frames to it), let the detector run the acquisition
(``ctl/run``), collect each Ci's results (``ctl/wait``). :meth:`LocalNetwork.stop` sends SIGTERM
to every node and waits for its clean exit.

Each node opens the real instruments of the roles it owns (docs/nodes.md, "Which node opens which
instrument"): the detector the laser, master clock, detectors and power meter, each client its own
modulators and pattern generator. With a real time tagger on real hardware the light is the lab's and no
optics node starts (every client then needs a pattern generator: :func:`~labqfl.nodes.common.check_node_station`,
before any process starts).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from labqfl.config import StationConfig, load_station_config
from labqfl.errors import ConfigError, LabqflError
from labqfl.log import get_logger
from labqfl.net import NodeCredentials, make_node_certs
from labqfl.nodes.common import (
    CTL,
    END_CHECK_REFUSED,
    NodeError,
    _one_line,
    check_node_station,
    checked_reply,
    launcher_env,
    open_session,
    request,
    simulated_light,
)
from labqfl.nodes.pdeath import die_with_parent
from labqfl.qkd.messaging import Message
from labqfl.qkd.pipeline import DistillSettings

log = get_logger(__name__)

__all__ = ["LocalNetwork", "NodeProcess", "NodeStartError", "node_certs", "refuse_client_faults", "run_acquisition", "start_failure", "warm_in_process_pipeline"]

START_TIMEOUT_S = 120.0


@dataclass
class NodeProcess:
    name: str
    role: str
    data: Path
    proc: subprocess.Popen[str]
    address: str = ""
    log_path: Path = field(default_factory=Path)
    t_spawn: float = 0.0
    #: seconds from spawn to its ``NODE`` line (None until it printed it)
    startup_s: float | None = None


def _read_address(np_: NodeProcess, timeout: float) -> str:
    got: list[str] = []

    def reader() -> None:
        assert np_.proc.stdout is not None
        for line in np_.proc.stdout:
            if line.startswith("NODE "):
                np_.startup_s = time.perf_counter() - np_.t_spawn
                got.append(line.split()[2])
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    if not got:
        raise start_failure(np_, timeout, ended=not t.is_alive())
    return got[0]


class NodeStartError(NodeError):
    """A node that gave no address (:func:`start_failure`): ``node`` (its name), ``exit_code`` (None: still
    running when the launcher gave up) and ``reason`` (its own error line, or that it did not start in time), for
    a caller that reports them apart (``labqfl node up --json``)."""

    def __init__(self, message: str, *, node: str, exit_code: int | None, reason: str) -> None:
        super().__init__(message)
        self.node, self.exit_code, self.reason = node, exit_code, reason


def start_failure(np_: NodeProcess, timeout: float, *, ended: bool) -> NodeStartError:
    """The error of a node that gave no address: ``ended`` (its stdout ended: it exited, or is exiting) or
    ``timeout`` seconds passed. An exited node is said so, with its own error line (review s35 chaos F2: not
    "did not start within 120 s" and a log tail); one still running, with its log's tail."""
    code = np_.proc.poll()
    if ended:
        try:
            code = np_.proc.wait(10.0)
        except subprocess.TimeoutExpired:
            pass
    tail = np_.log_path.read_text(errors="replace")[-8000:] if np_.log_path.is_file() else ""
    if code is not None:
        why = _node_error(tail, np_.log_path)
        return NodeStartError(f"node {np_.name} exited with code {code} before it started: {why}", node=np_.name,
                              exit_code=code, reason=why)
    why = f"did not start within {timeout:.0f} s (still running)"
    return NodeStartError(f"node {np_.name} {why}; log tail:\n{tail[-2000:]}", node=np_.name, exit_code=None,
                          reason=why)


def _node_error(tail: str, log_path: Path) -> str:
    """The node's own one-line error (``error: ...``, :func:`labqfl.cli.common.handle_errors`) from the end of
    its log; else the last line of its log, naming the log."""
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    if errors:
        return errors[-1].removeprefix("error:").strip()
    return f"{lines[-1]} (the last line of its log {log_path})" if lines else f"its log {log_path} is empty"


#: Wall seconds per simulated second of acquisition the operator waits at least before it gives up
#: on the nodes: the default station over nodes ran at 38 wall s per simulated s on the 2-core
#: development machine at load 13 (docs/nodes.md); a fixed 900 s failed its 60 s README run there.
WALL_PER_SIMULATED_S = 150.0


def run_acquisition(cfg_clients: list[str], certs: Path, *, detector: str, optics: str, clients: dict[str, str],
                    duration: float, block_duration: float = 0.0, timeout: float = 900.0,
                    detector_name: str = "detector", acq: str | None = None, run_id: str = "") -> dict[str, Any]:
    """The operator's acquisition → distillation across running nodes (addresses given).

    ``run_id``: the run folder the clients write into every stored block's ``run_id`` (``labqfl run --nodes``).
    ``timeout`` [s]: how long the acquisition, and then the clients' distillation, may take at most; never
    less than :data:`WALL_PER_SIMULATED_S` times ``duration`` (a node that dies ends its session at once;
    this only bounds a hang).

    Returns ``{"acquisition", "detector": {...}, "pairs": {pair: PairResult dict + done/failed},
    "clients": {name: {...}}, "wall_s"}``. No key bit is in it."""
    missing = [c for c in cfg_clients if c not in clients]
    if missing:
        raise NodeError(f"no address for client {', '.join(missing)}; expected one for every client of the station "
                        f"({', '.join(cfg_clients)})")
    creds = NodeCredentials.load(certs, CTL)
    acq = acq or f"nodes/{uuid.uuid4()}"
    epoch = (secrets.randbits(24) + 1) << 34  # seeded clients only: a fresh stream per acquisition
    timeout = max(timeout, duration * WALL_PER_SIMULATED_S)
    t0 = time.perf_counter()
    ctl: dict[str, Any] = {}
    try:
        for c in cfg_clients:
            ctl[c] = open_session(clients[c], creds, c, "ctl", timeout_s=2 * timeout + 60.0)
        for ch in ctl.values():
            request(ch, Message("ctl/arm", {"acq": acq, "epoch": epoch, "optics": optics, "run_id": run_id,
                                            "duration": float(duration), "peers": json.dumps(clients)}), "ctl/armed")
        dch = open_session(detector, creds, detector_name, "ctl", timeout_s=timeout)
        try:
            rep = dch.request(Message("ctl/run", {"acq": acq, "duration": float(duration),
                                                  "block_duration": float(block_duration), "optics": optics,
                                                  "clients": json.dumps(clients)}))
        finally:
            dch.close()
        if rep.kind == "node/refused" and rep.fields.get(END_CHECK_REFUSED) == acq:
            raise NodeError(f"{rep.get('reason')}. {stored_from_refused(ctl, acq, duration, timeout)}")
        ran = checked_reply(rep, "ctl/run", "ctl/ran")
        t_acq = time.perf_counter() - t0
        pairs: dict[str, Any] = {}
        per_client: dict[str, Any] = {}
        for c, ch in ctl.items():
            rep = request(ch, Message("ctl/wait", {"acq": acq, "duration": float(duration), "timeout": timeout}),
                          "ctl/results")
            pairs.update(json.loads(str(rep.get("results"))))
            per_client[c] = {"answered_slots": int(rep.get("answered_slots")),
                             "modulator_link_error": str(rep.get("link_error")),
                             # frames played and lost on its pattern generator ({} without one)
                             "modulation": json.loads(str(rep.fields.get("modulation") or "{}")).get(c, {}),
                             "instrument_faults": json.loads(str(rep.fields.get("instrument_faults") or "[]"))}
        refuse_client_faults(acq, per_client)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C: end the sessions now, without waiting on the nodes
        for ch in ctl.values():
            ch.abort()
        raise
    finally:
        for ch in ctl.values():
            ch.close()  # nothing left to do on an aborted one
    wall = time.perf_counter() - t0
    return {"acquisition": acq, "duration_s": duration, "wall_s": wall, "acquisition_wall_s": t_acq,
            "detector": {k: v for k, v in ran.fields.items()}, "pairs": pairs, "clients": per_client}


#: How long :func:`stored_from_refused` waits for each client's answer to each of its two questions [s] (review s39
#: LAB3): a hung client (stopped, deadlocked) is named "not known (no answer within … s)" instead of holding the
#: refusal for up to its session's timeout (2 x timeout + 60 s, 31 min at the default), client after client. A client
#: is told to wait for its pairs' blocks in hand at most half of it (session 40): one whose pair thread has not
#: ended then answers from its store, the pair marked on each client's line, instead of being late. On the default
#: station the largest block of the block-size rule (C1-C4, 9.7·10⁴ sifted bits) takes 0.09–0.23 s from
#: reconciliation to amplification (docs/nodes.md).
STORED_ANSWER_S = 10.0


def stored_from_refused(ctl: Mapping[str, Any], acq: str, duration: float, timeout: float, *,
                        answer_s: float | None = None) -> str:
    """What the clients (their ``ctl`` sessions by name) stored from acquisition ``acq``, which the detection node's
    end check refused (review s37 lab3 L9 over nodes), as one sentence for the refusal: each client's own report
    (``ctl/wait`` with ``stored_blocks``: :meth:`labqfl.nodes.client.ClientNode.stored_from`), block IDs per pair,
    never a bit; no node reads another's store. Every client is waited for first (its pairs as Ci end once the
    announcements stop, finishing the block in hand), then each is asked, so a Cj's report includes its Ci's last
    commit. A client that cannot answer is named with why. The clients are asked at the same time, each question
    waited for at most ``answer_s`` seconds (None: :data:`STORED_ANSWER_S`); a client late for it is named "not known
    (no answer within … s)" and its session aborted (its waiting request fails; closing it would wait for the answer).
    The answers do not wait on distillation beyond that: the first question tells each client to wait for its pairs
    at most ``answer_s / 2`` (``ctl/wait``'s ``timeout``; before, the acquisition's ``timeout``, so a client whose
    block in hand took longer than ``answer_s`` was "not known"), the second not at all (0 s): a client answers from
    its store. A pair whose thread at its Ci had not ended when asked (``ctl/results``' ``done`` false: a block may
    still be in hand, or the thread still waiting for announcements or on its session) is marked so on the line of
    every client that reports the pair, its Cj's too: Ci may commit a block after its Cj answered (review s40
    protorev F4). ``timeout`` is not used here."""
    answer_s = STORED_ANSWER_S if answer_s is None else answer_s
    fields: dict[str, Any] = {"acq": acq, "duration": float(duration), "timeout": answer_s / 2}
    why: dict[str, str] = {}
    _ask_all(ctl, lambda c, ch: request(ch, Message("ctl/wait", fields), "ctl/results"), why, answer_s)
    held: dict[str, tuple[Mapping[str, Mapping[str, list[str]]], list[str]]] = {}

    def stored(c: str, ch: Any) -> None:
        rep = request(ch, Message("ctl/wait", {**fields, "timeout": 0.0, "stored_blocks": 1}), "ctl/results")
        results = json.loads(str(rep.fields.get("results") or "{}"))
        held[c] = (json.loads(str(rep.get("stored_blocks"))),
                   [p for p, r in results.items() if isinstance(r, dict) and r.get("done") is False])
    _ask_all({c: ch for c, ch in ctl.items() if c not in why}, stored, why, answer_s)
    answered = {c: held[c] for c in ctl if c not in why}  # a late answer (its thread still running) is not read
    busy: dict[str, list[str]] = {}  # pair: the clients whose thread of it (as Ci) had not ended when asked
    for c, (_, pairs) in answered.items():
        for p in pairs:
            busy.setdefault(p, []).append(c)
    parts = [f"client {c}: " + (f"not known ({why[c]})" if c in why else _held_line(answered[c][0], busy))
             for c in ctl]
    return ("Key blocks stored from it, as each client reports from its own store (block IDs): "
            + "; ".join(parts))


def _ask_all(ctl: Mapping[str, Any], ask: Any, why: dict[str, str], answer_s: float) -> None:
    """``ask(name, session)`` for every client at once, each in its own thread, waited for at most ``answer_s``
    seconds from the start; a failure is recorded in ``why[name]`` (one line), a late one as "no answer within
    … s" with its session aborted."""
    def one(c: str, ch: Any) -> None:
        try:
            ask(c, ch)
        except (LabqflError, OSError, ValueError, TypeError, AttributeError) as e:
            why.setdefault(c, f"{type(e).__name__}: {_one_line(e)}")

    threads = {c: threading.Thread(target=one, args=(c, ch), name=f"stored-from-{c}", daemon=True)
               for c, ch in ctl.items()}
    for t in threads.values():
        t.start()
    deadline = time.monotonic() + answer_s
    for c, t in threads.items():
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            why[c] = f"no answer within {answer_s:g} s"
            abort = getattr(ctl[c], "abort", None)
            if abort is not None:
                abort()


def _held_line(held: Mapping[str, Mapping[str, list[str]]], busy: Mapping[str, Collection[str]] | None = None) -> str:
    """One client's :meth:`~labqfl.nodes.client.ClientNode.stored_from` report in words; ``busy``: per pair, the
    clients (its Ci) whose thread of it had not ended when asked."""
    busy = busy or {}
    pairs = []
    for pair, h in sorted(held.items()):
        stored, pending = [str(b) for b in h.get("stored", [])], [str(b) for b in h.get("pending", [])]
        text = ", ".join(stored) if stored else "none"
        if pending:
            text += f" (pending here until its Ci's commit: {', '.join(pending)})"
        if busy.get(pair):
            text += (f" (the pair's thread at {', '.join(sorted(busy[pair]))} had not ended when asked: a block "
                     f"may still be in hand, not counted here)")
        pairs.append(f"pair {pair}: {text}")
    return ", ".join(pairs) if pairs else "no pair"


def refuse_client_faults(acq: str, per_client: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse acquisition ``acq`` (:class:`NodeError`, one line) when a client node's instruments no longer read as
    armed at its end (``ctl/results``' ``instrument_faults``: :meth:`labqfl.nodes.client.ClientNode._end_check`),
    as the detection node refuses one for its own instruments (review s37 lab3 L7). The clients checked at the end
    of their stream, when their pairs had distilled what was announced: those key blocks stay stored."""
    bad = {c: d["instrument_faults"] for c, d in per_client.items() if d.get("instrument_faults")}
    if bad:
        faults = "; ".join(f"client {c}: {'; '.join(f)}" for c, f in bad.items())
        raise NodeError(f"acquisition {acq}: at its end the instruments no longer read as armed: {faults}; the "
                        "light may have left without this client's modulation or through a closed shutter. Refused: "
                        "the key blocks the pairs already stored from it are kept (checked once they were distilled)")


def stream_rule_settings(cfg: StationConfig) -> DistillSettings:
    """The clients' settings when none are given: the block-size rule's blocks for an open-ended
    stream (:func:`labqfl.qkd.blocksize.plan_blocks`; every pair its own block size, each block
    expected to give key), or the pipeline's defaults where the model gives no pair key."""
    from labqfl.qkd.blocksize import plan_blocks

    plan = plan_blocks(cfg, None)
    return plan.distill_settings() if plan.sufficient else DistillSettings()


def _throwaway_blocks(cfg: StationConfig, *, on_demand: bool | None) -> tuple[StationConfig, Any, list[Any]]:
    """2 ms of station ``cfg`` on a throwaway testbed of one thread (fresh CSPRNG clients, nothing written):
    the configuration it ran (emulated pattern generators off — they take their patterns from a station's
    instruments, or are the optics node's), the testbed and its tag blocks. ``on_demand``: True the optics
    node's path (the clients asked only about candidate slots), False whole drive patterns, None the path an
    in-process acquisition of ``cfg`` takes (:attr:`~labqfl.sim_backends.testbed.SagnacTestbed.modulation_on_demand`
    None; whole drive patterns where ``cfg`` emulates pattern generators)."""
    from labqfl.sim_backends.testbed import SagnacTestbed

    if on_demand is None and cfg.simulation.emulate_pattern_generators:
        on_demand = False  # emulated generators play whole patterns; turned off below for the throwaway run
    if cfg.simulation.emulate_pattern_generators:
        cfg = cfg.model_copy(update={"simulation": cfg.simulation.model_copy(
            update={"emulate_pattern_generators": False})})
    tb = SagnacTestbed(cfg, threads=1)
    tb.modulation_on_demand = on_demand
    return cfg, tb, list(tb.stream(0.002))


def warm_in_process_pipeline(cfg: StationConfig, engine: str) -> None:
    """Load (on an empty Numba cache: compile) what an in-process acquisition with live distillation of
    station ``cfg`` runs — the simulator on the path its acquisition takes (on demand where candidates are
    few, the default station's; whole drive patterns otherwise), the pipeline's slotting, sifting and
    estimation, the distillation kernels of ``engine`` (:func:`labqfl.nodes.client.warm_distillation`) —
    on 2 ms of a throwaway testbed, keys into a memory sink that is dropped. ≈ 0.5 s on a warm cache,
    ≈ 60 CPU s on an empty one (2-core Intel Xeon). For front ends that acquire in process (the GUI's
    Connect), as :meth:`LocalNetwork.warm_jit` does before node processes start."""
    from labqfl.nodes.client import warm_distillation
    from labqfl.qkd.pipeline import MemorySink, distill_stream

    cfg, tb, blocks = _throwaway_blocks(cfg, on_demand=None)
    distill_stream(cfg, blocks, tb.client_logs(), MemorySink(), DistillSettings(min_final_block_bits=1000))
    warm_distillation(engine)


#: a kept certificate must stay valid this long (a run longer than that on one is not expected)
CERT_MARGIN = dt.timedelta(days=1)


def _cert_problem(certs: Path, name: str, ca: x509.Certificate) -> str:
    """Why ``node-<name>.pem/.key`` in ``certs`` cannot be used again ("" if it can): a file missing or
    unreadable, another name, not issued by ``ca``, expired or about to, a key that is not the certificate's."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from cryptography.x509.oid import NameOID

    cert_p, key_p = certs / f"node-{name}.pem", certs / f"node-{name}.key"
    try:
        cert = x509.load_pem_x509_certificate(cert_p.read_bytes())
        key = load_pem_private_key(key_p.read_bytes(), password=None)
        cert.verify_directly_issued_by(ca)
    except (OSError, ValueError, TypeError, InvalidSignature) as e:
        return f"{cert_p.name}/.key: not a certificate and key issued by ca.pem ({type(e).__name__}: {e})"
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cns or cns[0].value != name:
        return f"{cert_p.name} is not a certificate for {name!r}"
    if cert.not_valid_after_utc < dt.datetime.now(dt.UTC) + CERT_MARGIN:
        return f"{cert_p.name} expires {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    if key.public_key() != cert.public_key():
        return f"{key_p.name} is not the key of {cert_p.name}"
    from labqfl.net.pki import node_cert_problem

    if why := node_cert_problem(cert):  # issued before node certificates carried their URI (review s32)
        return f"{cert_p.name}: {why}"
    return ""


def node_certs(certs: Path, names: list[str]) -> None:
    """The throwaway certificates of a local network in ``certs``: made with a new CA in an empty folder; in one
    an earlier network left (``labqfl node up --workdir W`` run again) its CA and the node certificates it issued
    are used again and those missing issued by it. A folder holding one this cannot use is refused in one line
    naming the file and what to do; nothing in it is overwritten."""
    ca_pem, ca_key = certs / "ca.pem", certs / "ca.key"
    present = [n for n in names if (certs / f"node-{n}.pem").exists() or (certs / f"node-{n}.key").exists()]
    if not present and not ca_pem.exists() and not ca_key.exists():
        make_node_certs(certs, names)
        return
    try:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        ca = x509.load_pem_x509_certificate(ca_pem.read_bytes())
        if load_pem_private_key(ca_key.read_bytes(), password=None).public_key() != ca.public_key():
            raise ValueError("ca.key is not the key of ca.pem")
        problem = ""
    except (OSError, ValueError, TypeError) as e:
        problem = f"ca.pem/ca.key: not a readable CA certificate and its key ({type(e).__name__}: {e})"
    problem = problem or next((p for n in present if (p := _cert_problem(certs, n, ca))), "")
    if problem:
        raise ConfigError(f"{certs}: {problem}; expected the certificates of an earlier network (reused) or none: "
                          f"delete the folder {certs} (new throwaway certificates are made) or use another work "
                          "folder (--workdir)")
    missing = [n for n in names if n not in present]
    if missing:
        make_node_certs(certs, missing)  # issued by the CA found there
    log.info("certificates of %s in %s reused (%s issued)", ", ".join(present), certs, ", ".join(missing) or "none")


def drop_ca_key(certs: Path) -> None:
    """Destroy ``certs/ca.key`` (overwritten, flushed, deleted) once the certificates are issued: a
    throwaway CA's key has no further use, and a launcher killed later leaves none behind."""
    from labqfl.keystore.preshare import shred_secret_file

    key = Path(certs) / "ca.key"
    if key.exists() and (problem := shred_secret_file(key)) is not None:
        raise NodeError(f"the throwaway CA's key: {problem}")


class LocalNetwork:
    """Optics + detector + every client of the station as separate processes on loopback."""

    def __init__(self, workdir: Path, station: str | Path | None = None, *, settings: DistillSettings | None = None,
                 env: dict[str, dict[str, str]] | None = None, threads: int | None = None,
                 client_data: Path | None = None, preshare: bool | Collection[str] = True,
                 keep_ca_key: bool = True) -> None:
        self.workdir = Path(workdir)
        self.station = station
        self.cfg = load_station_config(station)
        check_node_station(self.cfg, str(station or "the embedded station"))  # before any process starts
        #: the clients' distillation; default the block-size rule for an open-ended stream (docs/postprocessing.md)
        self.settings = settings or stream_rule_settings(self.cfg)
        self.env = env or {}
        self.threads = threads
        #: one data folder for every client (labqfl's layout: each touches only keystore/<Ci>.sqlite
        #: and nodes/<Ci>/), e.g. ``labqfl run --nodes`` with its --data-dir; default: one per node
        self.client_data = None if client_data is None else Path(client_data)
        #: deliver a fresh pre-shared authentication secret per pair (False: the stores hold one;
        #: a collection of pair names: to those pairs only)
        self.preshare = preshare
        #: keep the throwaway CA's key in ``<workdir>/certs`` (``node up --workdir`` issues from it again);
        #: False: destroyed right after the certificates are issued (``labqfl run``: a new CA every time)
        self.keep_ca_key = keep_ca_key
        #: seconds :meth:`warm_jit` took in :meth:`start`
        self.warm_jit_s = 0.0
        self.certs = self.workdir / "certs"
        self.nodes: dict[str, NodeProcess] = {}
        #: after :meth:`stop`: the blocks left pending at a client (:meth:`pending_blocks`), one line each
        self.pending: list[str] = []

    # -- life cycle ------------------------------------------------------------------------------
    def data_of(self, name: str) -> Path:
        """A node's data folder: ``<workdir>/nodes/<name>``, or for a client ``client_data`` when given."""
        if self.client_data is not None and name in self.cfg.client_names:
            return self.client_data
        return self.workdir / "nodes" / name

    def _spawn(self, name: str, role: str, args: list[str]) -> NodeProcess:
        data = self.data_of(name)
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        logp = self.workdir / "logs" / f"{name}.log"
        logp.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "labqfl.nodes", role, "--name", name, "--data", str(data), "--listen",
               "127.0.0.1:0", "--certs", str(self.certs), *(["--station", str(self.station)] if self.station else []),
               *args]
        env = {**os.environ, **launcher_env(), **self.env.get(name, {})}
        with logp.open("w") as errf:
            t = time.perf_counter()
            # SIGTERM when the launcher dies (labqfl.nodes.pdeath)
            proc = subprocess.Popen(die_with_parent(cmd), stdout=subprocess.PIPE, stderr=errf, text=True, env=env)
        np_ = NodeProcess(name, role, data, proc, log_path=logp, t_spawn=t)
        self.nodes[name] = np_
        return np_

    def _write_preshared(self) -> None:
        """Deliver the pairs' pre-shared secrets (:mod:`labqfl.nodes.preshared`): each pair first reconciled
        (a delivery under way is completed, never overwritten; a pre-shared block one end holds alone is
        retired there), then a fresh secret for a pair that needs one: every pair with ``preshare=True``
        (unless a delivery of it is under way), a listed pair if its ends share too few authentication bits."""
        from labqfl.keystore import KeyStore
        from labqfl.keystore.preshare import min_preshared_bits
        from labqfl.nodes.preshared import reconcile_pair, write_pair_secret

        bits_n = self.settings.preshared_auth_bits
        need = min_preshared_bits(self.settings.auth_lanes)
        for a, b in self.cfg.pairs():
            pair = f"{a}-{b}"
            if not isinstance(self.preshare, bool) and pair not in self.preshare:
                continue
            da, db = self.data_of(a), self.data_of(b)
            with KeyStore.for_node(a, da) as sa, KeyStore.for_node(b, db) as sb:
                st = reconcile_pair(pair, sa, sb, da, db)
            if st.pending or st.malformed or (self.preshare is not True and st.shared_bits >= need):
                continue
            write_pair_secret(pair, da, db, bits_n)

    def warm_jit(self) -> None:
        """Compile (or load) the Numba kernels the nodes use once, before they start, so that the
        node processes load them from Numba's on-disk cache instead of compiling the same kernels
        side by side on a cold cache (four clients' Cascade and the optics' Monte-Carlo at once).

        What every node loads at its start: the wire codec (each node) and a client's distillation
        kernels (both Toeplitz paths: the ternary-FFT one alone was ≈ 12 s of compiling in each of four
        clients side by side on a cold cache, the codec ≈ 2.5 CPU s in each of the six nodes); then the
        simulator and the in-process pipeline on 2 ms of the station. On a cold cache Cascade's kernels
        take ≈ 33 CPU s to compile, Toeplitz's and the tags' ≈ 16, the codec's and the simulator's ≈ 40:
        the first two are loaded by two more processes (:func:`labqfl.nodes.client.warm_cascade`,
        :func:`~labqfl.nodes.client.warm_distillation` without it) beside this one, which waits for them
        before its pipeline run (on a warm cache all take a second or two). On the 2-core Zen 3 the cold
        warm-up took 50 s this way, against 54–65 s with Cascade alone in a second process and 53.5 s
        with all the distillation kernels there (that process then took 50 CPU s, this one 39). If a
        helper fails, this process loads the distillation kernels itself."""
        from labqfl.nodes.client import warm_answers, warm_distillation
        from labqfl.nodes.wire import warm_codec
        from labqfl.qkd.pipeline import MemorySink, distill_stream
        from labqfl.sim_backends import _kernels

        engine = self.settings.engine
        parts = [f"warm_distillation({engine!r}, cascade=False)", *(["warm_cascade()"] if engine == "cascade" else [])]
        helpers = [subprocess.Popen(die_with_parent([sys.executable, "-c", "from labqfl.nodes.client import warm_cascade, "
                                                     f"warm_distillation; {part}"]),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for part in parts]
        try:
            warm_codec()
            cfg, tb, blocks = _throwaway_blocks(self.cfg, on_demand=True)
            # the optics node's questions to remote clients as bitmaps (in process, the logs are asked directly),
            # and the clients' answers from them
            _kernels.client_bits(np.zeros(2, np.uint64), np.int64(0), np.array([[3, 70]], np.int64))
            for probs, px in {(tuple(c.intensity_probs), c.basis_x_prob) for c in cfg.clients}:
                warm_answers(probs, px)
        except BaseException:  # an error or Ctrl-C here: the helpers are not waited for
            for h in helpers:
                h.kill()
                h.wait()
            raise
        codes = [h.wait() for h in helpers]  # every helper waited for, whichever fails
        if any(codes):
            log.warning("a warm-up process of the distillation kernels failed (exit codes %s); loading them here", codes)
            warm_distillation(engine)
        distill_stream(cfg, blocks, tb.client_logs(), MemorySink(), DistillSettings(min_final_block_bits=1000))

    def start(self, warm: bool = True) -> LocalNetwork:
        if warm:
            t = time.perf_counter()
            self.warm_jit()
            self.warm_jit_s = time.perf_counter() - t
        clients = self.cfg.client_names
        node_certs(self.certs, ["optics", "detector", *clients, CTL])
        if not self.keep_ca_key:
            drop_ca_key(self.certs)
        if self.preshare:
            self._write_preshared()
        s = self.settings
        dist = ["--block-bits", str(s.block_bits), "--engine", s.engine, "--min-final-bits", str(s.min_final_block_bits),
                "--eps-sec", repr(s.params.eps_sec)]
        if s.block_slots:
            dist += ["--block-slots", str(s.block_slots)]
        for pair, n in (s.pair_block_slots or {}).items():
            dist += ["--pair-block-slots", f"{pair}={int(n)}"]
        for pair, n in (s.pair_min_final_block_bits or {}).items():
            dist += ["--pair-min-final-bits", f"{pair}={int(n)}"]
        try:
            if simulated_light(self.cfg):  # a real tagger on real hardware: the light is the lab's, no optics node
                self._spawn("optics", "optics", ["--threads", str(self.threads)] if self.threads else [])
            self._spawn("detector", "detector", [])
            for c in clients:
                self._spawn(c, "client", dist)
            for np_ in self.nodes.values():
                np_.address = _read_address(np_, START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        return self

    def addresses(self) -> dict[str, str]:
        return {n: p.address for n, p in self.nodes.items()}

    def acquire(self, duration: float, *, block_duration: float = 0.0, timeout: float = 900.0) -> dict[str, Any]:
        a = self.addresses()
        return run_acquisition(self.cfg.client_names, self.certs, detector=a["detector"], optics=a.get("optics", ""),
                               clients={c: a[c] for c in self.cfg.client_names}, duration=duration,
                               block_duration=block_duration, timeout=timeout)

    def stop(self, timeout: float = 60.0) -> dict[str, int | None]:
        """SIGTERM every node still running, wait for each to exit (SIGKILL after ``timeout``). The optics
        node goes last: it serves the emulated pattern generators, which the client nodes put in their
        safe state as they stop. Each group has its own ``timeout``: a node of the first group that had to
        be killed does not use up the optics node's time to stop cleanly."""
        codes: dict[str, int | None] = {}
        last = [n for n, p in self.nodes.items() if p.role == "optics"]
        for group in ([n for n in self.nodes if n not in last], last):
            codes.update(self._stop_group(group, time.monotonic() + timeout))
        if self.nodes:
            self.pending = self.pending_blocks()
            for what in self.pending:
                log.warning("%s", what)
        return {n: codes[n] for n in self.nodes}

    def pending_blocks(self) -> list[str]:
        """After the nodes stopped: each block a client holds only as a pending file (Cj's copy of a block whose
        ``block/commit`` never reached it: Ci was killed, or the commit failed), said in one line with what Ci's
        store holds of it (review s35 chaos F4: nothing told the operator that Ci's key bits of such a block are
        at one end until the pair's next session). Reads each pending file's header only (pair, block ID), never
        its key bits, and Ci's store by block ID; resolving stays the pair's (its next session)."""
        from labqfl.keystore import KeyStore
        from labqfl.nodes.preshared import read_secret_header
        from labqfl.qkd.pipeline import AUTH_REFILL_SUFFIX

        out: list[str] = []
        for cj in self.cfg.client_names:
            folder = self.data_of(cj) / "nodes" / cj / "pending"
            for f in sorted(folder.glob("*.json")) if folder.is_dir() else ():
                try:
                    head = read_secret_header(f)
                    pair, bid = str(head["pair"]), str(head["block_id"])
                    ci = pair.split("-")[0]
                    with KeyStore.for_node(ci, self.data_of(ci), create=False) as st:
                        held = [b for b in (bid + AUTH_REFILL_SUFFIX, bid) if st.has_block(b)]
                except (OSError, ValueError, KeyError, TypeError, LabqflError) as e:
                    out.append(f"pending block file {f} at {cj}: not read ({e}); {cj} resolves it at its pair's next "
                               "session")
                    continue
                where = (f"stored at {ci} ({', '.join(held)}), pending at {cj}: its bits are at {ci} only until {cj} "
                         f"stores it at the pair's next session (a draw of them before is refused at {cj})") if held \
                    else f"pending at {cj} only ({ci} never stored it): destroyed there at the pair's next session"
                out.append(f"pair {pair}: block {bid} {where}")
        return out

    def _stop_group(self, names: list[str], t_end: float) -> dict[str, int | None]:
        for n in names:
            np_ = self.nodes[n]
            if np_.proc.poll() is None:
                np_.proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for n in names:
            np_ = self.nodes[n]
            try:
                codes[n] = np_.proc.wait(max(t_end - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                np_.proc.kill()
                codes[n] = np_.proc.wait()
            if np_.proc.stdout is not None:
                np_.proc.stdout.close()
        return codes

    def __enter__(self) -> LocalNetwork:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: Fields of the detector's ``ctl/ran`` reply that travel as JSON text (a message's fields are flat).
DETECTOR_JSON_FIELDS = ("channel_counts", "slotting", "channel_counts_series")


def detector_summary(fields: dict[str, Any]) -> dict[str, Any]:
    """The detector's ``ctl/ran`` reply as ``node up``/``node acquire`` show it: ``channel_counts`` (tags per
    time-tagger channel, keyed by channel number) and ``slotting`` (the slotter's counters by cause, what
    ``labqfl run --json`` shows as ``acquisition.slotting``) as JSON objects, not the JSON text they travel
    as (review s34 L4: they were strings inside the JSON); the other fields as they are."""
    out = dict(fields)
    for k in DETECTOR_JSON_FIELDS:
        if isinstance(out.get(k), str):
            out[k] = json.loads(out[k]) if out[k] else {}
    return out


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Per pair: final key bits, blocks, aborts, rates; and simulated seconds per wall second."""
    dur = float(result["duration_s"])
    pairs = {}
    for p, d in sorted(result["pairs"].items()):
        pairs[p] = {"final_key_bits": d["final_key_bits"], "delivered_bits": d["delivered_bits"],
                    "sifted_bits": d["sifted_bits"], "blocks": d["blocks"], "aborted_blocks": d["aborted_blocks"],
                    "abort_reasons": d["abort_reasons"], "secure_key_rate_bps": d["secure_key_rate_bps"],
                    "error_rate_X_key": d["error_rate"]["X_key"], "failed": d.get("failed", ""),
                    "round_trips": d.get("round_trips", 0),
                    "times_s": {k: round(v, 3) for k, v in d["times_s"].items()}}
    return {"acquisition": result["acquisition"], "duration_s": dur, "wall_s": round(result["wall_s"], 3),
            "acquisition_wall_s": round(result["acquisition_wall_s"], 3),
            "sim_s_per_wall_s": dur / result["wall_s"] if result["wall_s"] > 0 else None,
            "detector": detector_summary(result["detector"]), "pairs": pairs,
            "total_final_key_bits": int(np.sum([v["final_key_bits"] for v in pairs.values()]))}


def up(station: str | Path | None, duration: float, workdir: Path, *, settings: DistillSettings | None = None,
       threads: int | None = None) -> dict[str, Any]:
    """``labqfl node up``: start the network, one acquisition → distillation, stop it; the summary. Its
    times: ``startup_s`` (the nodes' start), ``wall_s`` (acquisition + distillation, from ``ctl/run`` to the
    last ``ctl/results``), ``stop_s`` (the nodes' stop) and ``total_wall_s``, all three (docs review s34 L4:
    ``wall_s`` alone read as the command's time, 6.2 s of 43.9)."""
    net = LocalNetwork(workdir, station, settings=settings, threads=threads)
    t0 = time.perf_counter()
    try:
        net.start()
        t_start = time.perf_counter() - t0
        res = net.acquire(duration)
    except BaseException:  # an error, or Ctrl-C: no node outlives the command
        net.stop()
        raise
    t1 = time.perf_counter()
    codes = net.stop()
    t_end = time.perf_counter()
    out = summarize(res)
    out.update(startup_s=round(t_start, 3), stop_s=round(t_end - t1, 3), total_wall_s=round(t_end - t0, 3),
               exit_codes=codes, workdir=str(workdir))
    return out
