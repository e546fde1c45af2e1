"""Warm ClientApp processes (labqfl/nodes/warmapp.py): the ``flwr-clientapp`` shim runs each call in a
fresh child forked from the zygote, with the call's arguments, working folder and streams, and its
exit code; without a zygote it runs the real program."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from labqfl.nodes.warmapp import SOCKET_ENV, write_shim

ENTRY = textwrap.dedent("""
    import json, os, sys
    import numpy as np

    def main():
        print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "pid": os.getpid(), "ppid": os.getppid(),
                          "draw": int(np.random.randint(0, 2**62))}), flush=True)
        print("to stderr", file=sys.stderr, flush=True)
        sys.exit(int(sys.argv[-1]))

    def node():
        print(json.dumps({"prog": sys.argv[0], "argv": sys.argv[1:], "ppid": os.getppid()}), flush=True)
        return 4  # an entry point's return value is the exit code (flower-superexec's is)

    PROGRAMS = {"flwr-clientapp": main, "flower-supernode": node}
""")
COLD = "#!/bin/sh\necho cold \"$@\"\nexit 5\n"


def _start_zygote(tmp_path: Path, entry: str) -> tuple[subprocess.Popen[str], Path]:
    """A zygote running ``warm_entry_mod:<entry>`` (ENTRY) in each child, once it listens."""
    (tmp_path / "warm_entry_mod.py").write_text(ENTRY)
    sock = tmp_path / "z.sock"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "labqfl.nodes.warmapp", "zygote", str(sock), str(os.getpid()),
                             f"warm_entry_mod:{entry}"], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == f"READY {sock}"  # blocks until it listens
    return proc, sock


@pytest.fixture
def zygote(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    proc, sock = _start_zygote(tmp_path, "main")
    try:
        yield proc, sock
    finally:
        proc.terminate()
        proc.wait(30)


def _shim(tmp_path: Path) -> Path:
    real = tmp_path / "real-clientapp"
    real.write_text(COLD)
    real.chmod(0o700)
    return write_shim(tmp_path / "bin", str(real))


def _call(shim: Path, sock: Path | None, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != SOCKET_ENV}
    if sock is not None:
        env[SOCKET_ENV] = str(sock)
    return subprocess.run([str(shim), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_shim_runs_each_call_in_a_fresh_fork_of_the_zygote(tmp_path: Path, zygote: tuple[subprocess.Popen[str], Path]) -> None:
    proc, sock = zygote
    shim = _shim(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    a = _call(shim, sock, work, "--token", "abc", "3")
    b = _call(shim, sock, work, "--token", "def", "0")
    assert (a.returncode, b.returncode) == (3, 0)  # the child's exit code, through the shim
    ra, rb = json.loads(a.stdout), json.loads(b.stdout)
    assert ra["argv"] == ["--token", "abc", "3"] and rb["argv"] == ["--token", "def", "0"]
    assert ra["cwd"] == rb["cwd"] == str(work)
    assert ra["ppid"] == rb["ppid"] == proc.pid  # forked by the zygote ...
    assert ra["pid"] != rb["pid"]  # ... one process per call
    assert a.stderr.strip() == "to stderr"  # the call's own stderr
    # numpy's legacy global generator is reseeded in every child (else both draws would be equal)
    assert ra["draw"] != rb["draw"]


def test_shim_runs_the_real_program_without_a_zygote(tmp_path: Path) -> None:
    shim = _shim(tmp_path)
    no_sock = tmp_path / "absent.sock"
    r = _call(shim, no_sock, tmp_path, "--token", "x")
    assert (r.returncode, r.stdout.strip()) == (5, "cold --token x")
    r = _call(shim, None, tmp_path, "--token", "y")
    assert (r.returncode, r.stdout.strip()) == (5, "cold --token y")


def test_the_serverapp_shim_reads_its_own_socket_variable_and_wait_zygote_waits_for_the_socket(
        tmp_path: Path, zygote: tuple[subprocess.Popen[str], Path]) -> None:
    from labqfl.nodes.warmapp import SERVER_SOCKET_ENV, WarmFederation

    proc, sock = zygote
    real = tmp_path / "real-serverapp"
    real.write_text(COLD)
    real.chmod(0o700)
    shim = write_shim(tmp_path / "sbin", str(real), "flwr-serverapp", SERVER_SOCKET_ENV)
    assert shim.name == "flwr-serverapp"
    env = {k: v for k, v in os.environ.items() if k not in (SOCKET_ENV, SERVER_SOCKET_ENV)}
    r = subprocess.run([str(shim), "--run", "0"], env={**env, SOCKET_ENV: str(sock)}, capture_output=True,
                       text=True, timeout=60)
    assert (r.returncode, r.stdout.strip()) == (5, "cold --run 0")  # a ClientApp zygote's variable: not its own
    r = subprocess.run([str(shim), "--run", "0"], env={**env, SERVER_SOCKET_ENV: str(sock)}, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["ppid"] == proc.pid  # forked by the zygote

    warm = tmp_path / "warm"
    warm.mkdir()
    fed = WarmFederation(tmp_path, "127.0.0.1:1", warm_dir=warm, socket_env=SERVER_SOCKET_ENV)
    assert fed.env()[SERVER_SOCKET_ENV] == str(warm / "zygote.sock") and SOCKET_ENV not in fed.env()
    fed.procs["warm-serverapps"] = proc  # type: ignore[assignment]
    (warm / "zygote.sock").symlink_to(sock)
    assert fed.wait_zygote(timeout_s=5) is True
    (warm / "zygote.sock").unlink()
    assert fed.wait_zygote(timeout_s=0.3) is False  # nothing listens: the shim runs Flower's own program


def test_the_zygote_stops_on_sigterm_with_0_its_socket_removed_and_its_log_written(tmp_path: Path) -> None:
    """SIGTERM: the zygote closes and removes its socket, logs how many processes it served and exits
    with 0 (it leaves with ``os._exit``, skipping the interpreter's teardown of what it imported)."""
    (tmp_path / "warm_entry_mod.py").write_text(ENTRY)
    sock = tmp_path / "z.sock"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "labqfl.nodes.warmapp", "zygote", str(sock), str(os.getpid()),
                             "warm_entry_mod:main"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"READY {sock}"
        assert _call(_shim(tmp_path), sock, tmp_path, "x", "0").returncode == 0  # one child served
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == 0
    assert not sock.exists()
    assert "zygote stops after 1 processes" in err


def test_the_zygote_runs_the_program_its_shim_names_and_refuses_one_it_does_not_run(tmp_path: Path) -> None:
    """One zygote stands in for several Flower programs (a client's ClientApps, its SuperNode and its
    SuperExec): each shim names its program, the child runs that one's entry point with argv[0]
    set to it, and a program the zygote does not run is refused, so its shim runs the real one."""
    proc, sock = _start_zygote(tmp_path, "PROGRAMS")
    try:
        real = tmp_path / "real"
        real.write_text(COLD)
        real.chmod(0o700)
        node = _call(write_shim(tmp_path / "bin", str(real), "flower-supernode"), sock, tmp_path, "--superlink", "x")
        assert node.returncode == 4
        assert json.loads(node.stdout) == {"prog": "flower-supernode", "argv": ["--superlink", "x"], "ppid": proc.pid}
        app = _call(write_shim(tmp_path / "bin", str(real)), sock, tmp_path, "--token", "t", "0")
        assert app.returncode == 0 and json.loads(app.stdout)["ppid"] == proc.pid
        other = _call(write_shim(tmp_path / "bin", [str(real), "--as-superexec"], "flower-superexec"), sock,
                      tmp_path, "--runtime-api-address", "y")
        assert (other.returncode, other.stdout.strip()) == (5, "cold --as-superexec --runtime-api-address y")
    finally:
        proc.terminate()
        proc.wait(30)
