"""What every node process shares: its identity, its own data folder, its server, its control
service, its clean shutdown, and the test hook that kills it at a chosen protocol message.

A node is one OS process (``labqfl node client|detector|optics``). It holds its certificate
(:class:`~labqfl.net.NodeCredentials`), a data folder nobody else reads, and a
:class:`~labqfl.net.NodeServer` (gRPC, mutual TLS). The operator (certificate CN ``ctl``: the
launcher, ``labqfl node acquire``) commands it through the ``ctl`` service; every other service
names the peers allowed to open it (checked against the peer certificate's CN).

**Instruments.** A node opens the real instruments of the station roles it owns
(:func:`owned_roles`; docs/nodes.md, "Which node opens which instrument") through
:func:`labqfl.station.open_driver`, as :class:`NodeInstruments`: the station file's operating point is
written when they open (outputs off), they are armed for an acquisition as the in-process
``Acquisition`` arms a Station's roles (:func:`labqfl.station.arm_instruments`) and put in their safe state
after it, and on SIGTERM, SIGINT and at exit. Simulated roles are the optics node's (it opens nothing).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import threading
from collections.abc import Callable, Container, Mapping
from pathlib import Path
from typing import Any

from labqfl.config import StationConfig, load_station_config
from labqfl.errors import ConfigError, LabqflError
from labqfl.instruments.base import Instrument, emergency
from labqfl.log import get_logger
from labqfl.net import NodeChannel, NodeCredentials, NodeServer, ServedSession
from labqfl.nodes.heap import freeze_startup_objects, keep_freed_memory
from labqfl.nodes.wire import warm_codec
from labqfl.qkd.messaging import Channel, Message, MessageError, decode_message, encode_message

log = get_logger(__name__)

__all__ = ["CTL", "DETECTION_ROLES", "LAUNCHER_PID_ENV", "LauncherWatch", "Node", "NodeError", "NodeInstruments",
           "RecordedChannel", "check_address", "check_client_addresses", "check_node_station", "exit_hook", "launcher_env", "ok", "open_session", "owned_roles", "parse_addresses", "read_wire", "refuse", "request"]

#: Certificate name of the operator (the launcher / ``labqfl node acquire``).
CTL = "ctl"
#: Test hook: ``KIND:N`` makes the node kill itself (SIGKILL) right after the N-th message of
#: ``KIND`` it handled or was answered (tests of a node lost in mid-block).
EXIT_AFTER_ENV = "LABQFL_NODE_EXIT_AFTER"


class NodeError(LabqflError):
    """A node could not do what it was asked (the message names what and why)."""


def ok(kind: str, **fields: Any) -> Message:
    return Message(kind, dict(fields))


def refuse(reason: str, **fields: Any) -> Message:
    return Message("node/refused", {"reason": reason, **fields})


#: A ``node/refused`` field (``ctl/run``): the detection node's end check refused the acquisition, whose value is the
#: acquisition; the operator then asks each client which key blocks it stored from it
#: (:func:`labqfl.nodes.launch.run_acquisition`; review s37 lab3 L9 over nodes).
END_CHECK_REFUSED = "end_check_refused"


_hook_lock = threading.Lock()
_hook_counts: dict[str, int] = {}


def exit_hook(kind: str) -> None:
    """Kill this process with SIGKILL after the N-th ``kind`` if ``LABQFL_NODE_EXIT_AFTER=kind:N``
    (nothing is flushed or closed: a crash at exactly that protocol point); ``kind:N:TERM`` sends
    SIGTERM instead (the operator's clean stop, at exactly that point)."""
    spec = os.environ.get(EXIT_AFTER_ENV)
    if not spec or ":" not in spec:
        return
    parts = spec.split(":")
    want, n = parts[0], parts[1]
    sig = signal.SIGTERM if parts[2:] == ["TERM"] else signal.SIGKILL
    if want != kind:
        return
    with _hook_lock:
        _hook_counts[kind] = _hook_counts.get(kind, 0) + 1
        hit = _hook_counts[kind] == int(n)
    if hit:
        os.kill(os.getpid(), sig)


def check_address(address: str, what: str) -> str:
    """``address`` if it is ``HOST:PORT`` with a port 0–65535 (port 0: any free port, where a node listens);
    else :class:`ConfigError` naming ``what`` (the option, e.g. ``--listen``) and the value. gRPC takes a port
    beyond 65535 modulo 65536 (``:99999`` listened on 34463, ``:-1`` on 65535), so nothing else catches it."""
    from labqfl.nodes.tunnel import split_address

    split_address(address, what)
    return address


def parse_addresses(items: list[str] | None, what: str) -> dict[str, str]:
    """``["C1=host:port", ...]`` → ``{"C1": "host:port"}``; one clear error for a bad item (not
    NAME=HOST:PORT, a port outside 0–65535) or a name given twice."""
    out: dict[str, str] = {}
    for it in items or []:
        for part in it.split(","):
            if not part:
                continue
            name, sep, addr = part.partition("=")
            try:
                if not sep or not name:
                    raise ConfigError(part)
                check_address(addr, what)
            except ConfigError:
                raise ConfigError(f"{what}: {part!r} is not NAME=HOST:PORT with a port 0-65535") from None
            if name in out:
                raise ConfigError(f"{what}: {name} given twice ({out[name]} and {addr}); expected one "
                                  "NAME=HOST:PORT per name")
            out[name] = addr
    return out


def _listed(names: list[str], most: int = 8) -> str:
    """``C1, C2, C3`` (the first ``most`` and how many more of a long list)."""
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def check_client_addresses(addresses: dict[str, str], cfg: StationConfig, what: str = "--client") -> None:
    """Refuse, in one line, client addresses (:func:`parse_addresses`) that are not exactly the station's
    clients: a client of the station without one, or a name the station has no client of."""
    station = f"station {cfg.name!r} has clients {_listed(cfg.client_names)}"
    unknown = [n for n in addresses if n not in cfg.client_names]
    if unknown:
        raise ConfigError(f"{what} for {_listed(unknown)}: no such client ({station})")
    missing = [c for c in cfg.client_names if c not in addresses]
    if missing:
        raise ConfigError(f"missing {what} for {_listed(missing)} ({station}); expected {what} NAME=HOST:PORT "
                          "for every client")


#: The station roles of the detection node (the untrusted node). In a Sagnac loop the source sits where
#: the light leaves the loop and comes back: the laser and its trigger (the master clock) beside the beam
#: splitter, the detectors and the tagger (docs/lab_setup.md, "Detection node"); the power meter is
#: that bench's calibration instrument.
DETECTION_ROLES = ("master_clock", "laser", "D0", "D1", "time_tagger", "power_meter")
#: A client's own roles (``<Ci>.<role>``): its modulators and the pattern generator that drives them.
CLIENT_ROLES = ("phase_modulator", "attenuator", "pattern_generator")


def owned_roles(cfg: StationConfig, node_role: str, name: str) -> list[str]:
    """The station roles node ``name`` of kind ``node_role`` owns, real or simulated, in the Station's
    opening order: the detection node :data:`DETECTION_ROLES`, client Ci its :data:`CLIENT_ROLES`, every
    other node (optics, FL server, SuperNodes) none."""
    if node_role == "detector":
        wanted = set(DETECTION_ROLES)
    elif node_role == "client":
        wanted = {f"{name}.{r}" for r in CLIENT_ROLES}
    else:
        return []
    return [r for r in cfg.roles() if r in wanted]


def simulated_light(cfg: StationConfig) -> bool:
    """Whether the light of station ``cfg`` is the optics node's simulated loop (a simulated tagger, or the real
    driver on its emulated SDK) rather than the lab's (a real tagger on real hardware: no optics node)."""
    return cfg.time_tagger.simulated or cfg.simulation.emulate_time_tagger


def check_node_station(cfg: StationConfig, source: str = "station") -> None:
    """Refuse, in one line, a station that node processes cannot run. With a simulated light (the optics node's
    loop) anything goes. With a real tagger on real hardware the light is the lab's and there is no optics node:
    every client must stream its frames to its own pattern generator (nothing else tells the light its
    choices), and the generators cannot be the optics node's emulators."""
    if simulated_light(cfg):
        return
    tt = cfg.time_tagger
    bare = [c.name for c in cfg.clients if c.pattern_generator is None]
    if bare:
        raise ConfigError(f"{source}: field 'clients.<k>.pattern_generator': with a real time tagger "
                          f"({tt.driver!r}) over node processes every client streams its frames to its own pattern "
                          f"generator; clients without one: {bare}")
    if cfg.simulation.emulate_pattern_generators:
        raise ConfigError(f"{source}: field 'simulation.emulate_pattern_generators': with a real time tagger "
                          f"({tt.driver!r}) there is no optics node to serve emulated generators or play them; expected "
                          "false (real generators), or simulation.emulate_time_tagger = true (the simulated loop)")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class NodeInstruments:
    """The real instruments of the roles one node owns (``roles``: simulated ones are skipped; they are the
    optics node's), opened through :func:`labqfl.station.open_driver`, the one function that instantiates
    drivers, with the station file's folder ``base_dir`` for relative pyvisa-sim paths.

    What each instrument gets is what the in-process Station and ``Acquisition`` send it:
    :meth:`open` writes the operating point (``apply_operating_point``: ramps included, outputs off);
    :meth:`arm` puts it in its operating state (:func:`labqfl.station.arm_instruments`: laser trigger and laser on,
    detectors armed, modulators on, shutters open) and :meth:`disarm` back to its safe state once the last armed
    acquisition ended; :meth:`stop` (:meth:`Node.serve`: a signal, an emergency; `ctl/stop`) puts it in its safe state at once
    and refuses any later arming; :meth:`close` (and the ``atexit`` hook registered by :meth:`open`) safe
    state and release. Thread-safe: ``ctl`` verbs arm and disarm from the server's threads."""

    def __init__(self, node: str, cfg: StationConfig, roles: list[str], base_dir: Path | None) -> None:
        self.node, self.cfg, self.base_dir = node, cfg, base_dir
        all_roles = cfg.roles()
        self.roles = [r for r in roles if not all_roles[r].simulated]
        self.instruments: dict[str, Instrument] = {}
        self._lock = threading.RLock()
        self._armed = 0
        self._faults: list[str] = []  # arming failures while other acquisitions held the instruments armed
        self._stopping = False
        self._closed = False

    def open(self) -> None:
        """Open every role, then write the station's operating point to each; on a failure what opened is
        closed (safe state) and :class:`NodeError` names the role."""
        if not self.roles:
            return
        from labqfl.station import open_driver

        with self._lock:
            for role in self.roles:
                ic = self.cfg.roles()[role]
                extra: dict[str, Any] = {}
                if role == "time_tagger" and self.cfg.simulation.emulate_time_tagger:
                    from labqfl.station import emulated_tagger_sdk

                    extra["sdk"] = emulated_tagger_sdk(self.cfg)  # fed per acquisition by the optics node's tags
                try:
                    self.instruments[role] = open_driver(role, ic, self.base_dir, **extra)
                except Exception as exc:
                    self.close()
                    raise NodeError(f"node {self.node}: role {role!r} ({ic.driver} at {ic.resource!r}) failed to "
                                    f"open: {_one_line(exc)}") from exc
            # after the opening: atexit runs last-registered first, so this runs before the VISA library's
            # own exit hook closes the sessions the safe state is sent through
            atexit.register(self.close)
            for role, inst in self.instruments.items():
                apply = getattr(inst, "apply_operating_point", None)
                if apply is None:
                    continue
                try:
                    apply(self.cfg)
                except Exception as exc:
                    self.close()
                    ic = self.cfg.roles()[role]
                    raise NodeError(f"node {self.node}: role {role!r} ({ic.driver} at {ic.resource!r}): the station "
                                    f"file's operating point could not be applied: {_one_line(exc)}") from exc
        log.info("node %s: opened %s; operating point applied", self.node,
                 ", ".join(f"{r} ({self.cfg.roles()[r].driver} at {self.cfg.roles()[r].resource})" for r in self.roles))

    def arm(self) -> list[str]:
        """Every instrument in its operating state for an acquisition (counted: :meth:`disarm` once per arm);
        what was changed. :class:`NodeError` once the node is stopping."""
        from labqfl.station import arm_instruments

        with self._lock:
            if self._stopping or self._closed:
                raise NodeError(f"node {self.node} is stopping: its instruments stay in their safe state")
            running = self._armed
            try:
                # with another acquisition running, a failure leaves the instruments as they are: a safe state
                # now would take its light and detectors away with no notice (review s36 lab2 L3)
                changed = arm_instruments(self.instruments, safe_on_failure=running == 0, stopping=self._stop_reason)
            except BaseException as exc:
                if running:
                    why = f"arming another acquisition failed meanwhile: {_one_line(exc)}"
                    self._faults.append(why)
                    log.error("node %s: %s; the %d running acquisition(s) keep the instruments and are refused at "
                              "their end", self.node, why, running)
                raise
            self._armed += 1
        if changed:
            log.info("node %s: armed for acquisition: %s", self.node, ", ".join(changed))
        return changed

    def _stop_reason(self) -> str | None:
        """Why arming must stop now (:func:`labqfl.station.arm_instruments` asks before each setting: review s39
        LAB2), or None."""
        if self._stopping or self._closed:
            return f"the stop of node {self.node}"
        return None

    def acquisition_faults(self, clicked: Container[str] = ()) -> list[str]:
        """Before an armed acquisition is reported good: :func:`labqfl.station.acquisition_faults` of the
        instruments (laser off, detectors un-biased or latched …; ``clicked``: the detector roles with tags in its
        last block, not read for a latch) and any arming that failed while it ran.

        The read-back runs outside this object's lock, one role at a time, and stops once the node is stopping
        (review s38 lab4 M1): it can take a VISA timeout per setting, or a detector's counting windows, and
        :meth:`stop` (a signal's emergency) must not wait behind it. A stop meanwhile is a fault: the acquisition
        reads as faulty."""
        from labqfl.station import acquisition_faults

        with self._lock:
            faults, armed, instruments = list(self._faults), self._armed, dict(self.instruments)
        if not armed:
            return faults
        for role, inst in instruments.items():
            if self._stopping or self._closed:
                break
            faults += acquisition_faults({role: inst}, clicked)
        if self._stopping or self._closed:
            faults.append(f"node {self.node} stopped during the end-of-acquisition read-back: its instruments were "
                          "put in their safe state")
        return faults

    def disarm(self) -> dict[str, str]:
        """An armed acquisition ended: the safe state once no other one is armed; the roles whose safe state
        failed, with the reason."""
        with self._lock:
            self._armed = max(0, self._armed - 1)
            if self._armed or self._closed:
                return {}
            self._faults.clear()  # told to the acquisitions that ran meanwhile
            return self.safe_state()

    def safe_state(self) -> dict[str, str]:
        """Every instrument to its safe state (reverse opening order); ``{role: error}`` of the failures."""
        with self._lock:
            failed = self._safe_states(self.instruments)
        if self.instruments:
            log.info("node %s: %s in the safe state", self.node, ", ".join(reversed(list(self.instruments))))
        return failed

    def _safe_states(self, instruments: Mapping[str, Instrument]) -> dict[str, str]:
        failed: dict[str, str] = {}
        for role in reversed(list(instruments)):
            try:
                instruments[role].safe_state()
            except Exception as exc:  # keep going: the others must be safe too
                failed[role] = _one_line(exc)
                log.error("node %s: role %s: safe state failed: %s", self.node, role, exc)
        return failed

    def stop(self, emergency_reason: str | None = None) -> None:
        """The node stops: the safe state now; no arming from here on. ``emergency_reason`` (a signal:
        :meth:`Node.serve`) makes it an emergency stop (:class:`~labqfl.instruments.base.emergency`: the PRO8000's
        ramp-down cut at ``safe_ramp_max_s``), entered before this object's lock, so that a normal ramp another
        thread's :meth:`disarm` runs under that lock is cut too (review s37 lab3 M1); without one (``ctl/stop``, a
        lost launcher) every ramp runs all the way, as a normal switch-off (review s37 lab3 L5).

        When another thread holds this object's lock (an arming: a detector's latch check counts for up to 2 × 10 s
        with the laser's turn still to come), every instrument goes to its safe state at once without it (each
        driver's own lock orders its I/O; a latch check ends with no verdict), and again once the lock is free:
        what that thread wrote meanwhile is undone (issue 19). The arming asks for the stop before each setting
        (:meth:`_stop_reason`), so it switches nothing more on once the stop began and fails ("arming cut by …")
        instead of reporting the node armed (review s39 LAB2)."""
        from contextlib import nullcontext

        from labqfl.instruments.base import emergency

        with emergency(emergency_reason) if emergency_reason else nullcontext():
            self._stopping = True
            if not self._lock.acquire(blocking=False):
                if not self._closed:
                    log.warning("node %s: stopping while its instruments are being armed or switched: safe state "
                                "now, and again once that is over", self.node)
                    self._safe_states(dict(self.instruments))
                self._lock.acquire()
            try:
                if not self._closed:
                    self.safe_state()
            finally:
                self._lock.release()

    def close(self) -> None:
        """Safe state and release every instrument (reverse opening order). Idempotent; never raises."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for role in reversed(list(self.instruments)):
                try:
                    self.instruments[role].close()  # safe state, then release
                except Exception as exc:  # keep closing the others
                    log.error("node %s: role %s: close failed: %s", self.node, role, exc)
        atexit.unregister(self.close)


class _Ctl:
    """The ``ctl`` service: ``ctl/<verb>`` → ``node.ctl_<verb>(message)``."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def handle(self, req: Message) -> Message:
        verb = req.kind.partition("/")[2].replace("-", "_")
        fn: Callable[[Message], Message] | None = getattr(self.node, f"ctl_{verb}", None)
        if not req.kind.startswith("ctl/") or fn is None:
            return refuse(f"node {self.node.name} has no control command {req.kind!r}")
        try:
            return fn(req)
        except (LabqflError, ValueError, OSError) as e:
            log.warning("node %s: %s failed: %s", self.node.name, req.kind, e)
            return refuse(f"{req.kind}: {e}")


class Node:
    """Base of the node processes (module docstring). Subclasses add routes and ``ctl_*`` verbs."""

    role = "node"

    def __init__(self, name: str, *, station: str | Path | None, data_dir: str | Path, listen: str,
                 certs: str | Path, max_workers: int = 64) -> None:
        check_address(listen, "--listen")  # before anything is made
        self.name = name
        self.cfg: StationConfig = load_station_config(station)
        self.station_path = station
        self.data = Path(data_dir).expanduser().resolve()
        self.data.mkdir(mode=0o700, parents=True, exist_ok=True)
        #: this node's own files inside the data folder (labqfl's layout: several nodes of one
        #: machine may share a data folder, each touching only keystore/<name>.sqlite and nodes/<name>/)
        self.private = self.data / "nodes" / name
        for d in (self.data / "nodes", self.private):
            d.mkdir(mode=0o700, exist_ok=True)
            os.chmod(d, 0o700)
        self.creds = NodeCredentials.load(Path(certs), name)
        self.server = NodeServer(self.creds, listen, max_workers=max_workers)
        self.server.route("ctl", lambda peer, hello: ServedSession(_Ctl(self)), allowed_peers={CTL})
        self.stopping = threading.Event()
        #: the real instruments of this node's roles (opened by :meth:`serve`; none for a simulated station)
        self.instruments = NodeInstruments(name, self.cfg, self.instrument_roles(),
                                           Path(station).parent if station else None)

    def instrument_roles(self) -> list[str]:
        """The roles whose real instruments :meth:`serve` opens (:func:`owned_roles`). A client's pattern
        generator is not among them: the client opens it itself at its first ``ctl/arm`` (an emulated one is
        served by the optics node, which may not be up yet when the client starts)."""
        return [r for r in owned_roles(self.cfg, self.role, self.name) if not r.endswith(".pattern_generator")]

    # -- control verbs every node answers ----------------------------------------------------
    def ctl_ping(self, req: Message) -> Message:
        return ok("ctl/pong", role=self.role, name=self.name)

    def ctl_stop(self, req: Message) -> Message:
        self.stopping.set()
        return ok("ctl/stopping")

    # -- life cycle ----------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Finish what is in progress (no half-stored block) and release resources."""

    def listening_fields(self) -> dict[str, Any]:
        """What this node adds to its listening line's JSON object (:meth:`serve`): nothing by default;
        the FL server node its mutual-TLS front's address."""
        return {}

    def serve(self, as_json: bool = False) -> None:
        """Serve until SIGTERM/SIGINT (or ``ctl/stop``), then shut down cleanly.

        Prints ``NODE <name> <address>`` on stdout once listening (``as_json``: the JSON object
        ``{"node", "role", "address"}`` instead) and writes it to ``<data>/nodes/<name>/address.json``,
        so a launcher can read the ephemeral port. The node's instruments (:class:`NodeInstruments`) open
        before it listens; on SIGTERM/SIGINT they go to their safe state before :meth:`shutdown` finishes
        the work in progress, and they are released last."""
        signalled: list[emergency] = []

        def on_signal(signum: int, frame: object) -> None:
            # an emergency stop from the signal on (signal-safe: labqfl.instruments.base), until the node is
            # down: it cuts a ramp already running, also an orderly stop's (ctl/stop) or a disarm's in another
            # thread (review s37 lab3 M1, L5)
            if not signalled:
                signalled.append(emergency(f"node {self.name}: signal {signal.Signals(signum).name}").__enter__())
            self.stopping.set()

        # A launcher's SIGTERM may arrive while this node is already stopping (after a ``ctl/stop``
        # or its own signal): during the shutdown it only sets the event again, and once the node
        # has shut down both signals are ignored, because the interpreter's own finalisation puts
        # Python-level handlers back to the default action, and a late SIGTERM would then kill a
        # cleanly stopped node (exit -15 instead of 0).
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, on_signal)
        try:
            self._serve(as_json, signalled)
        finally:
            # also when the node never came up (its instruments failed to open, its server to start): the
            # signal's emergency is left and late signals ignored, as after a served node's shutdown
            for s in (signal.SIGTERM, signal.SIGINT):
                signal.signal(s, signal.SIG_IGN)
            for e in signalled:
                e.__exit__(None, None, None)

    def _serve(self, as_json: bool, signalled: list[emergency]) -> None:
        """:meth:`serve` with its signal handlers installed: open, listen, wait for the stop, shut down."""
        launcher = LauncherWatch()
        keep_freed_memory()  # every tag block's arrays from kept pages, not fresh zeroed ones (labqfl.nodes.heap)
        warm_codec()  # the bulk arrays' codec loaded before the first acquisition's messages (labqfl.nodes.wire)
        freeze_startup_objects()  # imports and warm-up out of every later cyclic collection (labqfl.nodes.heap)
        # after the handlers: a signal while they open ends in their safe state too (a failure closes them)
        self.instruments.open()
        try:
            self.server.start()
        except BaseException:
            self.instruments.close()
            raise
        info = {"node": self.name, "role": self.role, "address": self.server.address, **self.listening_fields()}
        (self.private / "address.json").write_text(json.dumps(info))
        print(json.dumps(info) if as_json else f"NODE {self.name} {self.server.address}", flush=True)
        try:
            while not self.stopping.wait(0.5):
                if launcher.gone():
                    log.warning("node %s: its launcher (process %d) is gone; stopping", self.name, launcher.pid)
                    self.stopping.set()
        finally:
            log.info("node %s: stopping", self.name)
            try:
                # the safe state first, before the block in progress is finished
                self.instruments.stop(signalled[0].reason if signalled else None)
                self.shutdown()
            finally:
                try:
                    self.server.stop(grace_s=2.0)
                finally:
                    self.instruments.close()


#: Set by a launcher (``labqfl run``, ``labqfl node up``, the GUI's Nodes panel) in every node process it
#: spawns: the launcher's process ID. A node whose launcher is gone (killed, crashed: it is no longer the
#: node's parent) stops as on SIGTERM, instead of living on as an orphan that holds its key store, its
#: ports and its instruments. Read and removed from the environment once, so the node's own children
#: (Flower's processes) do not inherit it. A node started by hand has none and serves until stopped.
LAUNCHER_PID_ENV = "LABQFL_LAUNCHER_PID"


def launcher_env() -> dict[str, str]:
    """The environment entry a launcher gives each node it spawns (:data:`LAUNCHER_PID_ENV`)."""
    return {LAUNCHER_PID_ENV: str(os.getpid())}


class LauncherWatch:
    """Whether the launcher that spawned this node (:data:`LAUNCHER_PID_ENV`) is gone."""

    def __init__(self) -> None:
        raw = os.environ.pop(LAUNCHER_PID_ENV, "")
        self.pid = int(raw) if raw.isdigit() else None

    def gone(self) -> bool:
        return self.pid is not None and os.getppid() != self.pid


#: Test hook: a folder where every node appends every message of the sessions it opens, both
#: ways (``<node>.wire``: u32 length + :func:`encode_message` bytes), for the isolation tests.
#: The messages hold a client's choices (the optics link's ``mod/applied`` codes: every raw key bit of
#: its pairs), so each file is private: 0600, in a folder made 0700 (review s35 leak F6).
WIRE_LOG_ENV = "LABQFL_NODE_WIRE_LOG"
#: wire-log folders this process has warned about (one warning per folder)
_WIRE_WARNED: set[Path] = set()


def _open_wire_log(path: Path) -> int:
    """A file descriptor appending to the wire log ``path``, owner-only (:data:`WIRE_LOG_ENV`): the folder is
    made 0700 if missing, the file created 0600 (an existing one tightened to 0600); a link in its place or a
    file of another user is refused (:class:`NodeError`): the log would then be written where someone else
    chose, or read."""
    folder = path.parent
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise NodeError(f"wire log {path} ({WIRE_LOG_ENV}, a test hook): cannot open it ({e.strerror or e}); "
                        "expected a regular file of this user, or none") from None
    st = os.fstat(fd)
    if st.st_uid != os.getuid() or not (st.st_mode & 0o170000 == 0o100000):
        os.close(fd)
        raise NodeError(f"wire log {path} ({WIRE_LOG_ENV}, a test hook): not a regular file of this user; refused "
                        "(it receives every client choice this node sends)")
    if st.st_mode & 0o077:
        os.fchmod(fd, 0o600)
    if folder not in _WIRE_WARNED:
        _WIRE_WARNED.add(folder)
        mode = folder.stat().st_mode & 0o777
        log.warning("test hook %s is set: every message of this node's sessions (a client's choices, i.e. its raw "
                    "key, on the optics link) is appended to %s (0600, folder %o); unset it outside tests",
                    WIRE_LOG_ENV, path, mode)
    return fd


class RecordedChannel(Channel):
    """A session this node opened; with ``LABQFL_NODE_WIRE_LOG`` set, every request and reply
    is appended to ``<folder>/<node>.wire`` (the messages as they crossed the wire, before TLS)."""

    def __init__(self, inner: Channel, node: str) -> None:
        super().__init__(None)
        self.inner = inner
        self.stats = inner.stats
        folder = os.environ.get(WIRE_LOG_ENV)
        self._path = Path(folder) / f"{node}.wire" if folder else None
        self._lock = threading.Lock()

    def _record(self, msg: Message) -> None:
        if self._path is None:
            return
        raw = encode_message(msg)
        with self._lock, os.fdopen(_open_wire_log(self._path), "ab") as f:
            f.write(len(raw).to_bytes(4, "little") + raw)

    def request(self, msg: Message) -> Message:
        self._record(msg)
        rep = self.inner.request(msg)
        self._record(rep)
        exit_hook(msg.kind)
        return rep

    def _exchange(self, msg: Message) -> Message:  # pragma: no cover - request is overridden
        return self.inner.request(msg)

    def close(self) -> None:
        self.inner.close()

    def abort(self) -> None:
        """End the session as failed, now: a request waiting on it in another thread fails at once
        (:meth:`labqfl.net.NodeChannel.abort`; a channel without one is closed)."""
        abort = getattr(self.inner, "abort", None)
        if abort is not None:
            abort()
        else:
            self.inner.close()


def open_session(address: str, creds: NodeCredentials, peer: str, service: str, **kw: Any) -> RecordedChannel:
    """A :class:`~labqfl.net.NodeChannel` to ``service`` on node ``peer``, recorded if asked (above)."""
    return RecordedChannel(NodeChannel(address, creds, peer, service, **kw), creds.name)


def read_wire(path: Path) -> list[Message]:
    """The messages of a ``.wire`` recording, in order."""
    raw = Path(path).read_bytes()
    out, i = [], 0
    while i < len(raw):
        n = int.from_bytes(raw[i:i + 4], "little")
        out.append(decode_message(raw[i + 4:i + 4 + n]))
        i += 4 + n
    return out


def request(ch: Any, msg: Message, expect: str) -> Message:
    """``ch.request(msg)``; a ``node/refused`` answer or another kind raises :class:`NodeError`."""
    return checked_reply(ch.request(msg), msg.kind, expect)


def checked_reply(rep: Message, asked: str, expect: str) -> Message:
    """``rep``, the answer to a ``asked`` request, if of kind ``expect``; a ``node/refused`` answer raises
    :class:`NodeError` (its reason), another kind :class:`MessageError`."""
    if rep.kind == "node/refused":
        raise NodeError(str(rep.fields.get("reason", "refused")))
    if rep.kind != expect:
        raise MessageError(f"answered {rep.kind!r} to {asked!r}; expected {expect!r}")
    return rep
