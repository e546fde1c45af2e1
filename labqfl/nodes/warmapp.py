"""Warm ClientApp processes for a client's SuperNode: one fresh process per message, forked from a
parent that has already imported Flower, labqfl and torch.

A Flower SuperNode (flwr 1.42, ``--isolation subprocess``) runs every message it receives in a new
``flwr-clientapp`` process, started by name from ``PATH`` by its SuperExec. Measured on the 2-core
development machine (docs/nodes.md), such a process spends most of its life importing: Flower's
clientapp runtime (~1.5 s CPU), the labqfl Flower app (~0.4 s) and, for the training message, torch
and the training code (~1.9 s) — two or three messages per client and round, before any work.

:func:`start_warm_clientapps` adds a *zygote* to a :class:`~labqfl.fl.flower.deploy.LocalFederation`
of one client (``python -m labqfl.nodes.warmapp zygote SOCKET``): it imports all of that once,
opens no file, key store or connection, listens on a Unix socket in a private 0700 folder and, per
request, forks a child that runs ``flwr-clientapp`` behind labqfl's FAB guard
(:func:`labqfl.fl.flower.fabguard.main`: Flower's own entry point, refusing any FAB that is not
labqfl's App before installing or importing anything from it) with the request's arguments and
standard streams. The SuperExec finds :data:`SHIM` (a few lines of stdlib Python,
``-SE``) under the name ``flwr-clientapp`` first on its ``PATH``; the shim hands its arguments and
stdin/stdout/stderr to the zygote (``SCM_RIGHTS``), forwards SIGTERM/SIGINT to the child, and exits
with the child's exit code. If the zygote is not listening (still importing, or gone), the shim
``exec``\\ s the guard's ``flwr-clientapp`` script (:meth:`LocalFederation.node_bin`, which is also
next on the node's ``PATH``): the same guard, only slower. With ``LABQFL_WARM_CLIENTAPPS=0`` the
SuperExec finds that script itself.

What stays as in Flower: every message runs in its own process, which exits after the reply, so
nothing (no key word, reservation or secret) survives from one message to the next except what
Flower's ``Context.state`` carries. The zygote holds only imported modules; before the child runs,
numpy's legacy global generator is reseeded from the OS (Python's ``random`` reseeds itself on fork;
labqfl's own secret draws use ``secrets``). The zygote forks only while it has a single thread
(Python threads, checked), accepts requests only from its own user (``SO_PEERCRED``) and exits when its parent (the
SuperNode node) is gone or on SIGTERM, taking its children with it (same process group, which
:meth:`LocalFederation.stop` ends).

The client's ``flower-supernode`` and the ``flower-superexec`` it starts are forked from the same
zygote (shims of those names; each shim names its program in its request and the zygote refuses a
program it does not run), so a client imports Flower once instead of three times at its start;
:meth:`WarmFederation.stop` SIGTERMs the SuperExec and then the SuperNode through their shims
before the zygote's process group is ended, and the zygote wakes on SIGCHLD to report an exit at once.

The zygote also loads the Numba kernels of local training and quantisation once
(:func:`~labqfl.fl.flower.latency.warm_kernels`; otherwise ~0.7 s of CPU in every training
ClientApp) and shortens Flower's retry backoff of object pulls
(:func:`~labqfl.fl.flower.latency.quick_object_pulls`).

Also for the SuperNode: its message loop asks the SuperLink for work every 0.2 s for 10 s after
each message and every 0.5 s otherwise, instead of Flower's 3 s; it checks for its ClientApp's
reply every 0.05 s instead of 0.5 s, and retries object pulls after 20 ms instead of 1 s
(:func:`supernode_main`). Its processes run with ``FLWR_TELEMETRY_ENABLED=0`` and
``FLWR_DISABLE_UPDATE_CHECK=1`` (Flower otherwise posts a usage event to telemetry.flower.ai at
every process start and exit, waiting up to 4 s for it at exit, and asks PyPI for updates; a lab
network's node has no business calling out).
"""

from __future__ import annotations

import array
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labqfl.fl.flower.deploy import LocalFederation, _bin, _descendants, _end_detached
from labqfl.log import get_logger
from labqfl.nodes.pdeath import die_with_parent

log = get_logger("labqfl.nodes.warmapp")  # also when run as __main__

__all__ = ["SHIM", "WarmFederation", "start_warm_clientapps", "start_warm_serverapps", "zygote_main"]

#: environment switch: "0" turns the warm ClientApps and the short pull interval off
WARM_ENV = "LABQFL_WARM_CLIENTAPPS"
#: environment variable naming the zygote's socket (read by the shim)
SOCKET_ENV = "LABQFL_WARM_CLIENTAPP"
#: the same for the server node's ServerApp zygote (:func:`start_warm_serverapps`)
SERVER_SOCKET_ENV = "LABQFL_WARM_SERVERAPP"
#: name of the zygote's main program (``flwr-clientapp`` or ``flwr-serverapp``; set by :func:`zygote_main`)
_PROG = ["flwr-clientapp"]
#: the zygote's wake-up pipe (read, write end): closed in every child
_WAKE_FDS: list[int] = []
#: what the ``flower-supernode`` shim runs when no zygote listens: the SuperNode with labqfl's
#: shorter waits (:func:`supernode_main`), started cold
SUPERNODE_REAL = [sys.executable, "-m", "labqfl.nodes.warmapp", "supernode"]
_MAX_REQUEST = 1 << 16
#: how often the SuperNode asks the SuperLink for a message when it has none [s] (Flower: 3 s)
PULL_INTERVAL_S = 0.5
#: how often it asks within :data:`HOT_WINDOW_S` of its last message [s]: mid-run, the next
#: message comes as soon as every client answered the previous one
HOT_PULL_S = 0.2
#: how long after a message the SuperNode keeps asking every :data:`HOT_PULL_S` [s]
HOT_WINDOW_S = 10.0
#: how often the SuperNode looks for its ClientApp's reply in its own state [s] (Flower: 0.5 s)
REPLY_POLL_S = 0.05

#: A Flower program the zygote can stand in for (``flwr-clientapp``, which the SuperExec starts per
#: message; ``flower-superexec``, which the SuperNode starts; ``flower-supernode``): stdlib only, no
#: site-packages (``-SE``), so it starts in ~20 ms. ``{python}``, ``{prog}``, ``{real}`` (the real
#: program's argv prefix) and ``{env}`` are filled in by :func:`write_shim`.
SHIM = '''#!{python} -SE
# labqfl warm shim (labqfl/nodes/warmapp.py): runs this {prog} call in a process forked from
# the node's pre-imported zygote, or execs the real program.
import array, json, os, signal, socket, sys
REAL = {real!r}
def _real():
    os.execv(REAL[0], REAL + sys.argv[1:])
path = os.environ.get({env!r}, "")
if not path:
    _real()
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(path)
    req = json.dumps({{"prog": {prog!r}, "argv": sys.argv[1:], "cwd": os.getcwd()}}).encode()
    s.sendmsg([req], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
    s.shutdown(socket.SHUT_WR)
    f = s.makefile("r")
    first = f.readline().split()
except OSError:
    _real()
if len(first) != 2 or first[0] != "PID":
    _real()  # the zygote refused or could not fork: nothing ran
pid = int(first[1])
def _forward(signum, frame):
    try:
        os.kill(pid, signum)
    except OSError:
        pass
for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, _forward)
code = 1
for line in f:
    w = line.split()
    if len(w) == 2 and w[0] == "EXIT":
        code = int(w[1])
        break
sys.exit(code)
'''


def write_shim(bin_dir: Path, real: str | list[str], name: str = "flwr-clientapp", env: str = SOCKET_ENV) -> Path:
    """Write :data:`SHIM` as ``bin_dir/<name>`` (0700): it asks the zygote on the socket named by
    the environment variable ``env`` to run program ``name`` and falls back to ``real`` (a program's
    path, or an argv prefix such as ``[python, "-m", module]``)."""
    bin_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = bin_dir / name
    argv = [real] if isinstance(real, str) else [str(a) for a in real]
    path.write_text(SHIM.format(python=sys.executable, prog=name, real=argv, env=env), encoding="utf-8")
    path.chmod(0o700)
    return path


@dataclass
class WarmFederation(LocalFederation):
    """A :class:`LocalFederation` whose processes find the warm ``flwr-clientapp`` shim first on
    ``PATH`` and have Flower's telemetry off (see the module docstring)."""

    warm_dir: Path | None = None
    #: the environment variable the shim reads the zygote's socket from
    socket_env: str = SOCKET_ENV

    def env(self, node: bool = False) -> dict[str, str]:
        e = super().env(node)
        e["FLWR_TELEMETRY_ENABLED"] = "0"
        e["FLWR_DISABLE_UPDATE_CHECK"] = "1"
        if self.warm_dir is not None:
            e["PATH"] = str(self.warm_dir / "bin") + os.pathsep + e["PATH"]
            e[self.socket_env] = str(self.warm_dir / "zygote.sock")
        return e

    def _start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        if self.warm_dir is not None and name.startswith("supernode-") and cmd and cmd[0] == _bin("flower-supernode"):
            # the shim: forked from the zygote when it listens (wait_zygote first), else SUPERNODE_REAL
            cmd = [str(self.warm_dir / "bin" / "flower-supernode"), *cmd[1:]]
        # as LocalFederation._start, and SIGTERM when this node dies (labqfl.nodes.pdeath): a SuperLink whose
        # node was killed ends (and its SuperExec, which watches it, with it) instead of serving on, orphaned
        log_f = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(die_with_parent(cmd), stdout=log_f, stderr=subprocess.STDOUT,
                                            env=self.env() if env is None else env, start_new_session=True)

    def wait_zygote(self, timeout_s: float = 120.0) -> bool:
        """Block until the zygote listens (True), has exited or ``timeout_s`` passed (False: the
        shim then starts Flower's own program, slower). Start the SuperNode/SuperLink after this,
        so that no message reaches a node whose zygote is still importing."""
        import time

        if self.warm_dir is None:
            return False
        sock = self.warm_dir / "zygote.sock"
        proc = next((p for n, p in self.procs.items() if n.startswith("warm-")), None)
        t_end = time.monotonic() + timeout_s
        while not sock.exists():
            if proc is None or proc.poll() is not None or time.monotonic() > t_end:
                log.warning("warm %s: no zygote listening on %s; Flower's own program runs instead", _PROG[0], sock)
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> None:
        try:
            self._stop_supernodes()
            super().stop()
        finally:
            if self.warm_dir is not None:
                shutil.rmtree(self.warm_dir, ignore_errors=True)

    def _stop_supernodes(self, timeout_s: float = 10.0) -> None:
        """A SuperNode forked from the zygote lives in the zygote's process group: SIGTERM it through
        its shim (which forwards it) and wait for the shim before the zygote's group is ended, so
        that it gets one SIGTERM and shuts down as Flower's own process does (it leaves the
        SuperLink), not signalled again by the group and the zygote while it does."""
        if self.warm_dir is None:
            return
        zygote = self.procs.get("warm-clientapps")
        if zygote is not None and zygote.poll() is None:
            # first its SuperExec (through that one's shim), which polls the SuperNode's runtime API
            # and would log failed connections while the SuperNode shuts down
            shim = str(self.warm_dir / "bin" / "flower-superexec")
            _end_detached([(pid, st) for pid, st in _descendants(zygote.pid) if shim in _cmdline(pid)], timeout_s)
        shims = [p for n, p in self.procs.items() if n.startswith("supernode-") and p.poll() is None]
        for p in shims:
            p.send_signal(signal.SIGTERM)
        for p in shims:
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("warm SuperNode %d: not stopped after %.0f s; its process group is ended", p.pid, timeout_s)


def _cmdline(pid: int) -> str:
    """Process ``pid``'s command line, arguments joined by spaces ("" when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def start_warm_clientapps(workdir: Path, fleet: str, **kw: Any) -> WarmFederation:
    """A :class:`WarmFederation` in ``workdir`` with its zygote started (process ``warm-clientapps``,
    log ``warm-clientapps.log``); start the SuperNode on it as usual. The shim and the socket live in
    a fresh 0700 folder under the system's temporary folder (a Unix socket path must stay under 108
    bytes), removed by :meth:`WarmFederation.stop`.

    With ``LABQFL_WARM_CLIENTAPPS=0`` in the environment (benchmarks, debugging) it starts no zygote
    and leaves the SuperNode's pull interval alone: Flower's own behaviour, telemetry still off."""
    if os.environ.get(WARM_ENV, "1") == "0":
        return WarmFederation(workdir, fleet, **kw)
    warm = Path(tempfile.mkdtemp(prefix="labqfl-warm-"))
    fed = WarmFederation(workdir, fleet, warm_dir=warm, **kw)
    # cold path: labqfl's FAB guard (labqfl.fl.flower.fabguard), never Flower's bare flwr-clientapp
    write_shim(warm / "bin", str(fed.node_bin() / "flwr-clientapp"))
    # the SuperExec: labqfl's (fabguard.superexec_main), which hands each ClientApp its runtime token on stdin
    write_shim(warm / "bin", str(fed.node_bin() / "flower-superexec"), "flower-superexec")
    write_shim(warm / "bin", SUPERNODE_REAL, "flower-supernode")
    # the node's environment: the SuperNode and SuperExec forked from the zygote inherit it (the guard
    # folder on PATH, after the shims)
    fed._start("warm-clientapps", [sys.executable, "-m", "labqfl.nodes.warmapp", "zygote",
                                   str(warm / "zygote.sock"), str(os.getpid())], env=fed.env(node=True))
    return fed


def start_warm_serverapps(workdir: Path, fleet: str, **kw: Any) -> WarmFederation:
    """As :func:`start_warm_clientapps`, for a server node's SuperLink: its SuperExec's
    ``flwr-serverapp`` (one process per run) is forked from a zygote (process ``warm-serverapps``)
    that has imported Flower's ServerApp runtime, the labqfl Flower app, torch and the training and
    evaluation code, and holds nothing else. Start the SuperLink on it as usual."""
    if os.environ.get(WARM_ENV, "1") == "0":
        return WarmFederation(workdir, fleet, **kw)
    warm = Path(tempfile.mkdtemp(prefix="labqfl-warm-"))
    fed = WarmFederation(workdir, fleet, warm_dir=warm, socket_env=SERVER_SOCKET_ENV, **kw)
    # cold path: labqfl's flwr-serverapp (its runtime token on stdin, fabguard.serverapp_main)
    write_shim(warm / "bin", str(fed.server_bin() / "flwr-serverapp"), "flwr-serverapp", SERVER_SOCKET_ENV)
    fed._start("warm-serverapps", [sys.executable, "-m", "labqfl.nodes.warmapp", "zygote-serverapp",
                                   str(warm / "zygote.sock"), str(os.getpid())])
    return fed


# ------------------------------------------------------------------------------------ the zygote
def _preload() -> dict[str, Any]:
    """Import what a ClientApp process needs and what the SuperNode and its SuperExec run; return
    the entry point of each program a child may run: ``flwr-clientapp`` (one per message, behind
    labqfl's FAB guard, :func:`labqfl.fl.flower.fabguard.main`),
    ``flower-supernode`` (:func:`supernode_main`) and ``flower-superexec`` (once per node, labqfl's:
:func:`labqfl.fl.flower.fabguard.superexec_main`, which gives each ClientApp its runtime token on
standard input, never on its command line). The
    SuperNode and the SuperExec are forked from here too so that a client's node does not import
    Flower three times at its start (measured: ~1.6 and ~1.2 s of CPU each on the 2-core
    development machine, docs/nodes.md)."""
    from flwr.supercore.cli import flower_superexec  # noqa: F401 - its imports, for the fork
    from flwr.supernode.cli.flower_supernode import flower_supernode  # noqa: F401 - its imports, for the fork
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp  # noqa: F401 - the guard runs it

    import labqfl.fl.datasets.tasks  # noqa: F401 - task data (torch via the measures)
    import labqfl.fl.flower.app  # noqa: F401 - the app Flower loads (``labqfl.fl.flower.app:client_app``)
    import labqfl.fl.training  # noqa: F401 - local training (torch, the QNN kernels)
    from labqfl.fl.flower.fabguard import main as guarded_clientapp
    from labqfl.fl.flower.fabguard import superexec_main
    from labqfl.fl.flower.latency import quick_object_pulls, warm_kernels

    quick_object_pulls()  # the child's pull of its message from the SuperNode (inherited by every fork)
    warm_kernels()  # Numba's machine code loaded once here, not in every training ClientApp

    return {"flwr-clientapp": guarded_clientapp, "flower-superexec": superexec_main,
            "flower-supernode": lambda: supernode_main(sys.argv[1:])}


def _preload_serverapp() -> dict[str, Any]:
    """Import what a ServerApp process needs; return Flower's ``flwr-serverapp`` entry point (as
    :func:`_preload`: program name → entry point)."""
    from flwr.superlink.cli import flwr_serverapp  # noqa: F401 - its imports, for the fork

    import labqfl.fl.datasets.tasks  # noqa: F401 - the test set
    import labqfl.fl.flower.app  # noqa: F401 - the app Flower loads (``labqfl.fl.flower.app:server_app``)
    import labqfl.fl.training  # noqa: F401 - the model and its evaluation
    from labqfl.fl.flower.latency import quick_object_pulls, warm_kernels

    quick_object_pulls()
    warm_kernels()
    from labqfl.fl.flower.fabguard import serverapp_main

    return {"flwr-serverapp": serverapp_main}  # Flower's, its runtime token on stdin


def _threads() -> int:
    """Python threads of this process. Native pools are not counted: numpy's OpenBLAS starts one
    worker thread at import and shuts it down around ``fork`` itself (``pthread_atfork``), as it
    must for ``multiprocessing``'s fork start method."""
    import threading

    return threading.active_count()


def _recv_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """One request: JSON ``{"prog": str, "argv": [...], "cwd": str}`` and three file descriptors (0, 1, 2)."""
    fds = array.array("i")
    data = b""
    while True:
        msg, anc, _flags, _addr = conn.recvmsg(_MAX_REQUEST, socket.CMSG_SPACE(3 * fds.itemsize))
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        if not msg:
            break
        data += msg
        if len(data) > _MAX_REQUEST:
            raise ValueError("request too long")
    req = json.loads(data)
    if (not isinstance(req.get("argv"), list) or not isinstance(req.get("cwd"), str)
            or not isinstance(req.get("prog", ""), str) or len(fds) != 3):
        for fd in fds:
            os.close(fd)
        raise ValueError("request must carry argv, cwd and 3 file descriptors")
    return req, list(fds)


def _run_child(entry: Any, prog: str, req: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: take the request's streams, run program ``prog`` (``entry``), exit with
    its code. Never returns."""
    code = 1
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        for fd in _WAKE_FDS:
            os.close(fd)
        for i, fd in enumerate(fds):
            os.dup2(fd, i)
            os.close(fd)
        os.chdir(req["cwd"])
        from labqfl.log import set_verbosity

        set_verbosity("WARNING")  # as quiet as a cold ClientApp process (the zygote logs at INFO)
        import numpy as np

        np.random.seed()  # the legacy global generator was seeded once, at import in the zygote
        sys.argv = [prog, *[str(a) for a in req["argv"]]]
        rc = entry()
        code = rc if isinstance(rc, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported on the child's stderr, then its exit code
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S110 - the stream may be closed; exiting anyway
                pass
        os._exit(code)


def zygote_main(sock_path: str, parent_pid: int, entry_ref: str = "", kind: str = "clientapp") -> int:
    """Run the zygote until SIGTERM/SIGINT or until ``parent_pid`` is gone; returns 0.

    ``entry_ref`` (``module:function``, tests): run that in each child, whatever program the shim
    stands for, instead of Flower's entry points, and import nothing else beforehand; or
    ``module:DICT``, a dict program name → function: run the one the shim names (others refused).
    Prints ``READY <socket>`` on stdout once it accepts requests. ``kind``: ``clientapp`` or ``serverapp`` (which Flower
    program the children run)."""
    _PROG[0] = f"flwr-{kind}"
    if entry_ref:
        import importlib

        mod, _, fn = entry_ref.partition(":")
        obj = getattr(importlib.import_module(mod), fn)
        programs = dict(obj) if isinstance(obj, dict) else {"*": obj}
    else:
        programs = _preload_serverapp() if kind == "serverapp" else _preload()
    stopping = False

    def _stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        lsock.bind(sock_path)
    finally:
        os.umask(old)
    lsock.listen(16)
    log.info("warm %s: zygote %d ready on %s", _PROG[0], os.getpid(), sock_path)
    print(f"READY {sock_path}", flush=True)
    children: dict[int, socket.socket] = {}
    served = 0
    # a child's exit (SIGCHLD) or SIGTERM wakes the loop at once (the signal's byte on this pipe), so
    # a shim learns its child's exit code without waiting out the poll below
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.set_wakeup_fd(wake_w)
    _WAKE_FDS[:] = [wake_r, wake_w]
    try:
        while not stopping and _pid_alive(parent_pid):
            try:
                ready: list[int] = select.select([lsock.fileno(), wake_r], [], [], 0.5)[0]
            except InterruptedError:
                ready = []
            if wake_r in ready:
                _drain(wake_r)
            _reap(children)
            if lsock.fileno() not in ready or stopping:
                continue
            conn, _ = lsock.accept()
            pid = _serve(lsock, conn, programs, children)
            if pid:
                served += 1
    finally:
        lsock.close()
        try:
            os.unlink(sock_path)
        except OSError:
            pass
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        log.info("warm %s: zygote stops after %d processes", _PROG[0], served)
    return 0


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _serve(lsock: socket.socket, conn: socket.socket, programs: dict[str, Any],
           children: dict[int, socket.socket]) -> int:
    """Fork one process for the request on ``conn`` running the program it names (``programs``:
    name → entry point; ``"*"``: any name); returns its pid (0: refused, the shim then runs the
    real program)."""
    try:
        uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]
        if uid != os.getuid():
            raise PermissionError(f"peer uid {uid} is not this node's user")
        conn.settimeout(10.0)
        req, fds = _recv_request(conn)
    except (OSError, ValueError) as exc:
        log.warning("warm ClientApps: request refused: %s", exc)
        conn.close()
        return 0
    prog = str(req.get("prog") or _PROG[0])
    entry = programs.get(prog, programs.get("*"))
    n = _threads()  # forking a multi-threaded process can leave locks held in the child
    why = (f"request for {prog!r} refused: this zygote runs {sorted(programs)}" if entry is None else
           f"zygote has {n} threads; the shim starts a cold process" if n != 1 else "")
    if why:
        log.warning("warm ClientApps: %s", why)
        for fd in fds:
            os.close(fd)
        conn.close()
        return 0
    pid = os.fork()
    if pid == 0:
        lsock.close()
        conn.close()
        for c in children.values():
            c.close()
        _run_child(entry, prog, req, fds)
    for fd in fds:
        os.close(fd)
    try:
        conn.sendall(f"PID {pid}\n".encode())
    except OSError:
        pass  # the shim is gone; the child runs on and is reaped
    children[pid] = conn
    return pid


def _reap(children: dict[int, socket.socket]) -> None:
    """Collect exited children and tell their shims the exit code."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        try:
            conn.sendall(f"EXIT {code if code >= 0 else 128 - code}\n".encode())
        except OSError:
            pass
        conn.close()


class _PollTime:
    """The ``time`` module as Flower's SuperNode loop sees it: its idle sleep (3 s, nothing pulled)
    becomes :data:`HOT_PULL_S` within :data:`HOT_WINDOW_S` of the last message pulled
    (:attr:`last_message`, set by :func:`_note_messages`) and :data:`PULL_INTERVAL_S` otherwise; its
    shorter sleeps (0.5 s, waiting for the ClientApp's reply in the node's own memory)
    :data:`REPLY_POLL_S`. Everything else is the real module."""

    last_message = float("-inf")

    def __getattr__(self, name: str) -> Any:
        import time

        return getattr(time, name)

    @classmethod
    def sleep(cls, seconds: float) -> None:
        import time

        if seconds < 1.0:
            time.sleep(min(seconds, REPLY_POLL_S))
        elif time.monotonic() - cls.last_message < HOT_WINDOW_S:
            time.sleep(min(seconds, HOT_PULL_S))
        else:
            time.sleep(min(seconds, PULL_INTERVAL_S))


def _note_messages(pull: Any) -> Any:
    """``pull`` (Flower's ``_pull_and_store_message``), noting in :class:`_PollTime` when it brought
    a message (it returns the message's run ID, or None)."""

    def pull_and_note(*args: Any, **kwargs: Any) -> Any:
        import time

        run_id = pull(*args, **kwargs)
        if run_id is not None:
            _PollTime.last_message = time.monotonic()
        return run_id

    return pull_and_note


def supernode_main(args: list[str]) -> None:
    """``flower-supernode ARGS`` with its message loop polling every :data:`PULL_INTERVAL_S`.

    flwr 1.42's SuperNode sleeps 3 s whenever a pull from the SuperLink brings no message
    (``flwr.supernode.start_client_internal``, ``time.sleep(3)``) and 0.5 s between checks for
    the ClientApp's reply. A labqfl round is two messages in a row per client (keys, mask; the
    run's last round also end), each sent only after every client answered the previous one, so
    the SuperNode's pull nearly always comes too early and waits the 3 s. Here
    that module's ``time`` is :class:`_PollTime` (the reply check looks at the node's in-memory
    state, no request) and the object pulls retry sooner
    (:func:`~labqfl.fl.flower.latency.quick_object_pulls`); nothing else changes (a Flower without
    that module attribute runs unpatched, with a warning in the node's log)."""
    import flwr.supernode.start_client_internal as sci
    from flwr.supernode.cli.flower_supernode import flower_supernode

    from labqfl.fl.flower.latency import quick_object_pulls

    if hasattr(sci, "time") and hasattr(sci, "_pull_and_store_message"):
        sci.time = _PollTime()  # type: ignore[assignment]
        sci._pull_and_store_message = _note_messages(sci._pull_and_store_message)
    else:
        log.warning("flower-supernode: no time module in %s; its 3 s pull interval stays", sci.__name__)
    quick_object_pulls()
    sys.argv = ["flower-supernode", *args]
    flower_supernode()


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "supernode":
        supernode_main(sys.argv[2:])
        sys.exit(0)
    if len(sys.argv) not in (4, 5) or sys.argv[1] not in ("zygote", "zygote-serverapp"):
        sys.exit("usage: python -m labqfl.nodes.warmapp zygote|zygote-serverapp SOCKET PARENT_PID [MODULE:FUNCTION]")
    from labqfl.log import set_verbosity

    set_verbosity("INFO")
    _code = zygote_main(sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) == 5 else "",
                        "serverapp" if sys.argv[1] == "zygote-serverapp" else "clientapp")
    # The zygote holds no file, store, connection or key, and zygote_main has closed its socket and
    # signalled its children: leave without the interpreter's teardown of torch, Numba and Flower
    # (0.7-1.1 CPU s per zygote, paid by every stop of a SuperNode and of the server node).
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_code)
