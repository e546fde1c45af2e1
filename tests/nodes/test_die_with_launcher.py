"""A SIGKILLed ``labqfl run`` left ``flower-superlink`` and ``flower-superexec`` running, re-parented to PID 1,
and the throwaway CA's key on disk (review s31, F6). Now every process a launcher or a node starts gets
SIGTERM when its parent dies (``labqfl.nodes.pdeath``), and the CA key is destroyed as soon as the
certificates are issued."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from labqfl.fl.flower.deploy import _descendants
from labqfl.nodes import fl as fl_mod
from labqfl.nodes import launch as launch_mod

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _gone_within(pids: list[int], timeout_s: float) -> list[int]:
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def test_a_superlink_and_its_superexec_end_when_their_node_is_killed(tmp_path) -> None:
    """The server node's SuperLink (own session, so no group signal reaches it) outlived a SIGKILLed node."""
    helper = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from labqfl.fl.flower.deploy import free_port
        from labqfl.nodes.warmapp import WarmFederation
        fed = WarmFederation(Path(sys.argv[1]), f"127.0.0.1:{free_port()}")
        fed.start_superlink()
        print(fed.procs["superlink"].pid, flush=True)
        time.sleep(300)
    """)
    node = subprocess.Popen([sys.executable, "-c", helper, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    flower: list[int] = []
    left: list[int] = []
    try:
        assert node.stdout is not None
        link = int(node.stdout.readline())
        t_end = time.monotonic() + 30
        while time.monotonic() < t_end and not flower[1:]:  # the SuperLink and the SuperExec it starts
            flower = [link, *(p for p, _ in _descendants(link))]
            time.sleep(0.2)
        assert len(flower) >= 2, "no SuperExec started"
        os.kill(node.pid, signal.SIGKILL)
        node.wait(10)
        left = _gone_within(flower, 20)
        assert not left, f"Flower processes {left} outlived their node"
    finally:
        node.kill()
        node.wait()
        for p in left:  # only those seen alive just now: a PID that ended may belong to another process already
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass


def test_every_node_process_of_a_launcher_gets_sigterm_when_the_launcher_dies(monkeypatch) -> None:
    seen = []

    class Popen:
        def __init__(self, cmd, **kw):
            seen.append(list(cmd))
            raise OSError("not started in this test")

    for mod in (launch_mod, fl_mod):
        monkeypatch.setattr(mod.subprocess, "Popen", Popen)
    for spawn in (lambda: launch_mod.LocalNetwork(Path("/nonexistent/w"), None)._spawn("detector", "detector", []),
                  lambda: fl_mod.FlNetwork(Path("/nonexistent/w"), None, ["C1"], Path("/nonexistent/d"))._spawn(
                      "server", "server", "server", [])):
        with pytest.raises(OSError):
            spawn()
    assert len(seen) == 2 and all(c[:3] == [sys.executable, "-SE", "-c"] and "labqfl.nodes" in c for c in seen)
    assert "preexec_fn" not in str(seen)  # a fork (not vfork) ran gRPC's fork handlers, which aborted children
    monkeypatch.undo()

    # and the mechanism: a child of a process killed with SIGKILL gets SIGTERM
    helper = ("import subprocess, sys, time; from labqfl.nodes.pdeath import die_with_parent; "
              "p = subprocess.Popen(die_with_parent([sys.executable, '-c', 'import time; time.sleep(60)']), "
              "start_new_session=True); print(p.pid, flush=True); time.sleep(60)")
    launcher = subprocess.Popen([sys.executable, "-c", helper], stdout=subprocess.PIPE, text=True)
    assert launcher.stdout is not None
    child = int(launcher.stdout.readline())
    launcher.kill()
    launcher.wait()
    left = _gone_within([child], 5)
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left


def test_the_throwaway_ca_key_is_gone_once_the_certificates_are_issued(tmp_path, monkeypatch) -> None:
    """``labqfl run``'s networks (acquisition and training) never leave the CA key behind, even when the
    launcher is killed right after the certificates: it is destroyed before any node starts."""
    present = []

    def spawn(self, *a, **kw):
        present.append((self.certs / "ca.key").exists())
        raise OSError("not started in this test")

    monkeypatch.setattr(fl_mod.FlNetwork, "_spawn", spawn)
    monkeypatch.setattr(launch_mod.LocalNetwork, "_spawn", spawn)
    fln = fl_mod.FlNetwork(tmp_path / "fl", None, ["C1", "C2"], tmp_path / "d")
    with pytest.raises(OSError):
        fln.start()
    net = launch_mod.LocalNetwork(tmp_path / "acq", None, preshare=False, keep_ca_key=False)
    with pytest.raises(OSError):
        net.start(warm=False)
    assert present == [False, False]
    for certs in (fln.certs, net.certs):
        assert (certs / "ca.pem").is_file() and (certs / "node-C1.pem").is_file() and not (certs / "ca.key").exists()
    # labqfl run's acquisition network is one of those
    import inspect

    from labqfl.nodes import runjob
    assert "keep_ca_key=False" in inspect.getsource(runjob.acquire_over_nodes)
