"""Start a SuperLink and SuperNodes as separate processes on this machine (loopback) and submit a run.

This is what the multi-process tests do, and a template for a real multi-machine deployment
(``docs/flower.md``: there the SuperLink listens on a routable address with TLS, and every
SuperNode runs beside its QKD node with its own key store).

Two modes: plain (``--insecure``, loopback only) and TLS (``tls=True``): a throwaway development CA
and a SuperLink server certificate (SAN 127.0.0.1 and localhost) from :mod:`labqfl.keystore.certs`;
the SuperLink gets ``--ssl-ca-certfile/--ssl-certfile/--ssl-keyfile``, every SuperNode
``--root-certificates``, and the ``flwr`` CLI connection ``root-certificates``.  In flwr 1.42 the
SuperLink's own SuperExec (which starts the ServerApp processes) connects to the SuperLink's
Runtime API on the same TLS port with ``--root-certificates <ssl-ca-certfile>``, so the certificate
must name the address the SuperLink listens on (here 127.0.0.1).  A SuperNode's ClientAppIo API
(its ClientApp processes) stays plain on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labqfl.fl.flower.spec import FlowerSpec

#: SANs of the loopback SuperLink certificate (the SuperNodes and the flwr CLI dial 127.0.0.1)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")

APP_PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "labqfl-flower"
version = "1.0.0"
description = "labqfl: QKD-masked federated learning (Flower App)"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "labqfl"

[tool.flwr.app.components]
serverapp = "labqfl.fl.flower.app:server_app"
clientapp = "labqfl.fl.flower.app:client_app"

[tool.flwr.app.config]
{config}
"""

#: the App's one module (its components live in the installed labqfl package), byte for byte: a
#: SuperNode refuses a FAB whose module differs (:mod:`labqfl.fl.flower.fabguard`)
APP_STUB_NAME = "labqfl_flower_app.py"
APP_STUB = (b'"""labqfl Flower App: the components live in labqfl.fl.flower.app."""\n'
            b"from labqfl.fl.flower.app import client_app, server_app  # noqa: F401\n")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_app_project(app_dir: Path, spec: FlowerSpec, *, out_json: Path | None = None,
                      ca: Path | None = None, init_params: Path | None = None, signed_spec: str = "") -> Path:
    """Write a Flower App project (pyproject.toml + a stub module) whose components are labqfl's apps.

    ``ca``: the network CA certificate on the server's host (run config ``labqfl-ca``): the
    ServerApp then refuses every client reply not signed by the claimed client's certificate key.
    ``signed_spec``: the operator-signed spec (:meth:`~labqfl.fl.flower.specsig.SignedSpec.to_json`,
    run config ``labqfl-signed-spec``) the ServerApp sends with every message.
    The labqfl package itself must be installed on every machine (the FAB carries only the config).
    Write nothing else into ``app_dir``: a labqfl SuperNode refuses a FAB with any other file, a
    changed stub module, or a ``pyproject.toml`` that differs from :data:`APP_PYPROJECT` outside
    its run config (:mod:`labqfl.fl.flower.fabguard`).
    """
    app_dir.mkdir(parents=True, exist_ok=True)
    cfg = dict(spec.to_config())
    cfg["labqfl-out"] = str(out_json) if out_json is not None else ""
    cfg["labqfl-ca"] = str(Path(ca).resolve()) if ca is not None else ""
    # the ServerApp's initial parameters (.npy on the server's host; "": the model's seeded start)
    cfg["labqfl-init"] = str(Path(init_params).resolve()) if init_params is not None else ""
    cfg["labqfl-signed-spec"] = signed_spec
    lines = "\n".join(f'"{k}" = {_toml_value(v)}' for k, v in cfg.items())
    (app_dir / "pyproject.toml").write_text(APP_PYPROJECT.format(config=lines), encoding="utf-8")
    (app_dir / APP_STUB_NAME).write_bytes(APP_STUB)
    return app_dir


#: Ports :func:`free_port` draws from: below Linux's default ephemeral range (32768–60999,
#: ``/proc/sys/net/ipv4/ip_local_port_range``), whose ports the kernel hands to every outgoing connection
_PORT_RANGE = (20000, 32767)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now, drawn at random below the ephemeral range: a port the kernel
    picked with ``bind(("127.0.0.1", 0))`` is an ephemeral one, which another process's outgoing connection can
    take between this check and the server's own bind (a SuperNode failed with "address already in use" in a
    loaded CI run); the ephemeral port is the fallback when no drawn port is free."""
    import random

    for _ in range(64):
        port = random.randint(*_PORT_RANGE)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    cand = Path(sys.executable).parent / name
    found = str(cand) if cand.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found next to {sys.executable} or on PATH; install labqfl[flower]")
    return found


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a TLS deployment: the CA that SuperNodes and the flwr CLI trust, and the
    SuperLink's server certificate and private key (signed by that CA)."""

    ca: Path
    cert: Path
    key: Path


def make_superlink_certs(out_dir: Path, hosts: tuple[str, ...] = LOOPBACK_HOSTS, *, days: int = 30) -> TlsFiles:
    """A fresh development CA and a SuperLink server certificate (SAN = ``hosts``, serverAuth) in
    ``out_dir``, made by :func:`labqfl.keystore.certs.make_dev_certs` (files ``ca.pem``,
    ``kme-superlink.pem/.key``: that module names every server certificate ``kme-<name>``).

    Any earlier files there are replaced (a new CA each call): for throwaway test deployments.
    """
    from labqfl.keystore.certs import make_dev_certs

    files = make_dev_certs(out_dir, kmes=("superlink",), saes=(), hosts=hosts, days=days, force=True)
    return TlsFiles(ca=files["ca"].resolve(), cert=files["kme-superlink"].resolve(),
                    key=files["kme-superlink.key"].resolve())


@dataclass
class LocalFederation:
    """Processes of a loopback deployment; :meth:`stop` ends exactly these (by process group).

    ``tls``: the SuperLink serves TLS with these files and SuperNodes / ``flwr`` trust ``tls.ca``;
    ``None`` runs everything with ``--insecure``.
    """

    workdir: Path
    fleet: str  # host:port of the SuperLink (Fleet, Control and Runtime HTTP APIs share it in flwr 1.42)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    tls: TlsFiles | None = None

    def env(self, node: bool = False) -> dict[str, str]:
        """The environment of the processes started here. ``node``: a SuperNode's (and its
        SuperExec's): :meth:`node_bin` first on ``PATH``, so that its ClientApps run behind labqfl's
        FAB guard and it starts no other kind of Flower task (:mod:`labqfl.fl.flower.fabguard`);
        otherwise (the SuperLink, the ``flwr`` CLI) :meth:`server_bin` first."""
        e = dict(os.environ)
        e["FLWR_HOME"] = str(self.workdir / "flwr_home")
        # SuperLink / SuperNode start flower-superexec by name: the venv's bin must be on PATH
        e["PATH"] = str(Path(sys.executable).parent) + os.pathsep + e.get("PATH", "")
        # a SuperNode: the FAB guard and labqfl's SuperExec; a SuperLink: labqfl's SuperExec and flwr-serverapp
        # (either way each app's runtime token on its stdin, never on a command line: fabguard.install_superexec)
        e["PATH"] = str(self.node_bin() if node else self.server_bin()) + os.pathsep + e["PATH"]
        # SuperExec looks for new tasks every 1 s by default; on loopback 0.2 s costs nothing
        e.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.2")
        # a lab network does not report to Flower's telemetry service nor look for updates (set either
        # variable in the environment to opt in)
        e.setdefault("FLWR_TELEMETRY_ENABLED", "0")
        e.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
        return e

    def node_bin(self) -> Path:
        """``workdir/node-bin``, written by :func:`labqfl.fl.flower.fabguard.write_node_bin`: the
        guard under the name ``flwr-clientapp`` and a refusing program under each other Flower task
        program's name. Every SuperNode started here has it first on its ``PATH``."""
        from labqfl.fl.flower.fabguard import write_node_bin

        return write_node_bin(self.workdir / "node-bin")

    def server_bin(self) -> Path:
        """``workdir/server-bin``, written by :func:`labqfl.fl.flower.fabguard.write_server_bin`: labqfl's
        ``flower-superexec`` and ``flwr-serverapp``, which pass each ServerApp its runtime token on
        standard input. The SuperLink started here has it first on its ``PATH``."""
        from labqfl.fl.flower.fabguard import write_server_bin

        return write_server_bin(self.workdir / "server-bin")

    def _start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env() if env is None else env, start_new_session=True)

    def wait_port(self, address: str, timeout_s: float = 60.0) -> None:
        """Block until ``host:port`` accepts TCP connections (the process is up)."""
        host, port = address.rsplit(":", 1)
        t0 = time.monotonic()
        while True:
            try:
                with socket.create_connection((host, int(port)), timeout=1.0):
                    return
            except OSError:
                dead = [n for n, p in self.procs.items() if p.poll() is not None]
                if dead:
                    raise RuntimeError(f"{dead} exited; see {self.workdir}/<name>.log") from None
                if time.monotonic() - t0 > timeout_s:
                    raise TimeoutError(f"nothing listens on {address} after {timeout_s:.0f} s") from None
                time.sleep(0.2)

    def start_superlink(self) -> None:
        host, port = self.fleet.rsplit(":", 1)
        if self.tls is None:
            sec = ["--insecure"]
        else:
            sec = ["--ssl-ca-certfile", str(self.tls.ca), "--ssl-certfile", str(self.tls.cert),
                   "--ssl-keyfile", str(self.tls.key)]
        # the App's FAB lists no dependencies (labqfl is installed on every machine): no `uv sync` of
        # a fresh environment before every ServerApp (~0.9 s a run on the development machine)
        self._start("superlink", [_bin("flower-superlink"), *sec, "--host", host, "--port", port,
                                  "--database", ":flwr-in-memory:", "--disable-runtime-dependency-installation"])
        self.wait_port(self.fleet)

    def start_supernode(self, name: str, node_config: Mapping[str, Any], *, root_certificates: Path | None = None,
                        max_retries: int | None = None) -> None:
        """Start ``flower-supernode`` (log ``supernode-<name>.log``) with :meth:`node_bin` first on
        its ``PATH``: its ClientApps refuse any FAB that is not labqfl's own App
        (:mod:`labqfl.fl.flower.fabguard`).

        With TLS it trusts ``root_certificates`` (default: this federation's CA; another CA's
        ``ca.pem`` gives a node that must fail the handshake). ``max_retries``: give up after that
        many failed connection attempts (Flower's ``--max-retries``; default: retry forever).
        """
        nc = " ".join(f"{k}={_toml_value(v)}" for k, v in node_config.items())
        if root_certificates is not None:
            sec = ["--root-certificates", str(Path(root_certificates).resolve())]
        elif self.tls is not None:
            sec = ["--root-certificates", str(self.tls.ca)]
        else:
            sec = ["--insecure"]
        retry = [] if max_retries is None else ["--max-retries", str(max_retries)]
        self._start(f"supernode-{name}", [_bin("flower-supernode"), *sec, "--superlink", self.fleet, *retry,
                                          "--host", "127.0.0.1", "--port", str(free_port()), "--node-config", nc],
                    env=self.env(node=True))

    def write_cli_config(self) -> Path:
        """``$FLWR_HOME/config.toml`` with the connection ``labqfl-local`` to this SuperLink's Control
        API: ``insecure = true``, or with TLS ``root-certificates = "<absolute path of ca.pem>"``
        (flwr 1.42 requires an absolute path and refuses both keys together)."""
        home = self.workdir / "flwr_home"
        home.mkdir(parents=True, exist_ok=True)
        sec = "insecure = true" if self.tls is None else f"root-certificates = {_toml_value(str(self.tls.ca))}"
        path = home / "config.toml"
        path.write_text(f'[superlink]\ndefault = "labqfl-local"\n\n[superlink.labqfl-local]\naddress = "{self.fleet}"\n'
                        f"{sec}\n", encoding="utf-8")
        return path

    def kill(self, name: str) -> None:
        p = self.procs.get(name)
        if p is not None and p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)

    def run_app(self, app_dir: Path, timeout_s: float) -> subprocess.CompletedProcess[str]:
        """``flwr run APP labqfl-local --stream`` against this SuperLink's Control API."""
        return self.flwr(["run", str(app_dir), "labqfl-local", "--stream"], timeout_s)

    def flwr(self, args: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
        """Run the ``flwr`` CLI with this federation's ``FLWR_HOME`` (connection ``labqfl-local``,
        written by :meth:`write_cli_config`), e.g. ``["supernode", "list", "labqfl-local"]``."""
        self.write_cli_config()
        return subprocess.run([_bin("flwr"), *args], env=self.env(), capture_output=True, text=True,
                              timeout=timeout_s, check=False)

    def stop(self) -> None:
        """End every process started here and its children (its process group): SIGTERM, up to
        10 s grace, then SIGKILL to each group (children such as ClientApp processes included).
        Descendants that left the group (flwr starts its SuperExec with ``start_new_session``) are
        ended afterwards the same way, so none outlives the federation."""
        kids = [k for p in self.procs.values() if p.poll() is None for k in _descendants(p.pid)]
        for p in list(self.procs.values())[::-1]:
            if p.poll() is None:
                _killpg(p.pid, signal.SIGTERM)
        t0 = time.monotonic()
        for p in self.procs.values():
            try:
                p.wait(max(0.1, 10 - (time.monotonic() - t0)))
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs.values():
            _killpg(p.pid, signal.SIGKILL)  # stragglers of the group, even if its leader has exited
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        _end_detached(kids)


def _proc_stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time in clock ticks) of a running Linux process from ``/proc/<pid>/stat``,
    or None (gone, or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = stat[stat.rindex(")") + 2:].split()  # fields 3.. of proc(5): state, ppid, ..., starttime (22)
    return None if rest[0] in ("Z", "X") else (int(rest[1]), rest[19])


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, start time) of every process below ``pid`` (Linux ``/proc``; [] elsewhere)."""
    if not Path("/proc/self/stat").exists():
        return []
    table = {int(d.name): st for d in Path("/proc").iterdir() if d.name.isdigit()
             if (st := _proc_stat(int(d.name))) is not None}
    out: list[tuple[int, str]] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, start) in table.items():
            if ppid == parent:
                out.append((child, start))
                todo.append(child)
    return out


def _end_detached(procs: list[tuple[int, str]], grace_s: float = 5.0) -> None:
    """SIGTERM those of ``procs`` still running (same pid *and* start time, so a reused pid is
    never hit), wait up to ``grace_s``, then SIGKILL the rest."""
    def alive() -> list[int]:
        return [pid for pid, start in procs if (st := _proc_stat(pid)) is not None and st[1] == start]

    for pid in alive():
        _kill(pid, signal.SIGTERM)
    t_end = time.monotonic() + grace_s
    while (left := alive()) and time.monotonic() < t_end:
        time.sleep(0.1)
    for pid in left:
        _kill(pid, signal.SIGKILL)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@contextmanager
def local_federation(workdir: Path, tls: bool = False) -> Iterator[LocalFederation]:
    """A SuperLink on a random free loopback port; SuperNodes are added with ``start_supernode``.

    ``tls``: make a throwaway CA and SuperLink certificate in ``workdir/certs``
    (:func:`make_superlink_certs`) and run the SuperLink, SuperNodes and ``flwr`` over TLS.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    files = make_superlink_certs(workdir / "certs") if tls else None
    fed = LocalFederation(workdir, f"127.0.0.1:{free_port()}", tls=files)
    try:
        fed.start_superlink()
        yield fed
    finally:
        fed.stop()
