"""Flower's runtime token never appears on a labqfl SuperNode's ClientApp command lines (review s35 F5).

flwr 1.42's ``SubprocessExecutor.launch`` starts ``flwr-clientapp --runtime-api-address ADDR --token
TOKEN``; ``/proc/PID/cmdline`` is readable by every local user, and with the token any local process
could pull the ClientApp's task (its Context: node config, the round's X25519 secret under csprng)
and make the real ClientApp fail (412). A labqfl SuperNode's SuperExec
(:func:`labqfl.fl.flower.fabguard.superexec_main`) now sends the token down a pipe on the ClientApp's
standard input (``--token-stdin``), which labqfl's guard reads (:func:`~labqfl.fl.flower.fabguard.token_from_stdin`).

The same for the SuperLink's ``flwr-serverapp`` (``server-bin``: :func:`~labqfl.fl.flower.fabguard.serverapp_main`).

The end-to-end check runs a real labqfl round over loopback (the SuperLink with the warm ServerApp
zygote, as ``labqfl node server`` starts it; one SuperNode with the warm zygote, one with
``LABQFL_WARM_CLIENTAPPS=0``) while polling the command line and environment of every process below
them: before, the ClientApps' and the ServerApp's argv held ``--token`` and a 256-hex-digit token.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from labqfl.fl.flower import fabguard
from labqfl.fl.flower.deploy import free_port, write_app_project
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.nodes.warmapp import start_warm_clientapps, start_warm_serverapps

TOKEN = "ab" * 128  # flwr: secrets.token_hex(FLWR_TASK_TOKEN_LENGTH = 128)
HEX_TOKEN = re.compile(rb"[0-9a-f]{64,}")


def test_the_guard_reads_the_token_from_stdin_and_argv_keeps_none(tmp_path: Path) -> None:
    r, w = os.pipe()
    os.write(w, TOKEN.encode() + b"\n")
    os.close(w)
    saved = os.dup(0)
    try:
        os.dup2(r, 0)
        argv = fabguard.token_from_stdin(["flwr-clientapp", "--runtime-api-address", "a:1", "--token-stdin",
                                          "--insecure"])
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(r)
    assert argv == ["flwr-clientapp", "--runtime-api-address", "a:1", "--token", TOKEN, "--insecure"]
    assert fabguard.token_from_stdin(["flwr-clientapp", "--token", "x"]) == ["flwr-clientapp", "--token", "x"]


@pytest.mark.parametrize("sent", [b"", b"abc\n", ("ab" * 127).encode() + b"\n", ("AB" * 128).encode() + b"\n"])
def test_the_guard_refuses_stdin_without_one_token(sent: bytes) -> None:
    code = ("import sys; from labqfl.fl.flower.fabguard import token_from_stdin\n"
            "try:\n    token_from_stdin(['flwr-clientapp', '--token-stdin'])\n"
            "except ValueError as e:\n    print('REFUSED', e); sys.exit(3)\n")
    run = subprocess.run([sys.executable, "-c", code], input=sent, capture_output=True, timeout=60, check=False)
    assert run.returncode == 3 and b"standard input does not hold one runtime token" in run.stdout


def test_the_superexecs_popen_moves_the_token_to_stdin_and_leaves_other_programs_alone(tmp_path: Path) -> None:
    from flwr.supercore.superexec.executor import subprocess_executor as se

    probe = tmp_path / "flwr-clientapp"
    probe.write_text(f"#!{sys.executable}\nimport json, sys\n"
                     f"json.dump({{'argv': sys.argv[1:], 'stdin': sys.stdin.read()}}, open({str(tmp_path / 'seen.json')!r}, 'w'))\n")
    probe.chmod(0o700)
    real = se.subprocess
    try:
        fabguard.install_superexec()
        fabguard.install_superexec()  # idempotent
        assert isinstance(se.subprocess, fabguard._TokenOnStdin)
        p = se.subprocess.Popen([str(probe), "--runtime-api-address", "127.0.0.1:1", "--token", TOKEN, "--insecure"])
        assert p.wait(60) == 0
        seen = json.loads((tmp_path / "seen.json").read_text())
        assert seen == {"argv": ["--runtime-api-address", "127.0.0.1:1", "--token-stdin", "--insecure"],
                        "stdin": TOKEN + "\n"}
        other = se.subprocess.Popen([sys.executable, "-c", "import sys; print(sys.argv[1:])", "--token", "t"],
                                    stdout=se.subprocess.PIPE)
        assert other.communicate(timeout=60)[0].strip() == b"['--token', 't']"  # not flwr-clientapp: unchanged
    finally:
        se.subprocess = real  # type: ignore[attr-defined]


def test_the_supernodes_path_and_the_warm_shim_lead_to_labqfls_superexec(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from labqfl.nodes.warmapp import WarmFederation

    monkeypatch.setenv("LABQFL_WARM_CLIENTAPPS", "1")
    monkeypatch.setattr(WarmFederation, "_start", lambda self, name, cmd, env=None: None)  # no zygote
    fed = start_warm_clientapps(tmp_path, "127.0.0.1:9092")
    try:
        assert fed.warm_dir is not None
        node_superexec = tmp_path / "node-bin" / "flower-superexec"
        assert "from labqfl.fl.flower.fabguard import superexec_main" in node_superexec.read_text()
        shim = (fed.warm_dir / "bin" / "flower-superexec").read_text()
        assert f"REAL = {[str(node_superexec)]!r}" in shim
        no_warm = fed.env(node=True)["PATH"].replace(str(fed.warm_dir / "bin") + os.pathsep, "")
        assert shutil.which("flower-superexec", path=no_warm) == str(node_superexec)
    finally:
        shutil.rmtree(fed.warm_dir or tmp_path / "none", ignore_errors=True)


def test_the_server_bin_leads_the_superlink_to_labqfls_superexec_and_serverapp(tmp_path: Path) -> None:
    import shutil

    from labqfl.fl.flower.deploy import LocalFederation

    fed = LocalFederation(tmp_path, "127.0.0.1:9092")
    path = fed.env()["PATH"]
    for prog, entry in (("flower-superexec", "superexec_main"), ("flwr-serverapp", "serverapp_main")):
        found = shutil.which(prog, path=path)
        assert found == str(tmp_path / "server-bin" / prog)
        assert f"from labqfl.fl.flower.fabguard import {entry}" in Path(found).read_text()
    # the ServerApp refuses to run without a token on its stdin (one line naming what was wrong)
    run = subprocess.run([str(tmp_path / "server-bin" / "flwr-serverapp"), "--runtime-api-address", "127.0.0.1:1",
                          "--token-stdin", "--insecure"], input=b"", capture_output=True, timeout=120, check=False)
    assert run.returncode == 1 and b"standard input does not hold one runtime token" in run.stdout + run.stderr


def _below(roots: set[int]) -> dict[int, tuple[bytes, bytes]]:
    """(cmdline, environ) of every process below ``roots`` (Linux /proc)."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = Path(f"/proc/{d}/stat").read_text()
                parent[int(d)] = int(st[st.rindex(")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    out: dict[int, tuple[bytes, bytes]] = {}
    for pid in parent:
        p, hops = pid, 0
        while p in parent and p not in roots and hops < 32:
            p, hops = parent[p], hops + 1
        if p in roots and pid not in roots:
            try:
                out[pid] = (Path(f"/proc/{pid}/cmdline").read_bytes(), Path(f"/proc/{pid}/environ").read_bytes())
            except OSError:
                pass
    return out


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_no_app_process_of_a_real_round_has_the_token_on_its_command_line(
        tmp_path: Path, mnist_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=2, q=16, rounds=1, keys="csprng", seed=3,
                               stage_timeout_s=120.0, node_wait_s=120.0)
    out = tmp_path / "result.json"
    app = write_app_project(tmp_path / "app", spec, out_json=out)
    seen: dict[int, tuple[bytes, bytes]] = {}
    stop = threading.Event()
    roots: set[int] = set()

    def poll() -> None:
        while not stop.is_set():
            seen.update(_below(set(roots)))
            time.sleep(0.02)

    feds = []
    # the server as labqfl node server starts it: its ServerApp forked from the warm zygote
    monkeypatch.setenv("LABQFL_WARM_CLIENTAPPS", "1")
    (tmp_path / "srv").mkdir()
    fed = start_warm_serverapps(tmp_path / "srv", f"127.0.0.1:{free_port()}")
    feds.append(fed)
    try:
        assert fed.wait_zygote()
        fed.start_superlink()
        roots.update(p.pid for p in fed.procs.values())
        for c, warm in (("C1", "1"), ("C2", "0")):  # C1: the zygote and its shim; C2: cold flwr-clientapp
            monkeypatch.setenv("LABQFL_WARM_CLIENTAPPS", warm)
            (tmp_path / c).mkdir()
            cfed = start_warm_clientapps(tmp_path / c, fed.fleet)
            feds.append(cfed)
            assert (cfed.warm_dir is not None) == (warm == "1") and (warm == "0" or cfed.wait_zygote())
            cfed.start_supernode(c, {"labqfl-client": c})
            roots.update(p.pid for p in cfed.procs.values())
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        run = fed.run_app(app, timeout_s=300)
    finally:
        stop.set()
        for f in feds[::-1]:
            f.stop()
    logs = "".join(f"== {f}\n{f.read_text(errors='replace')[-1500:]}" for f in sorted(tmp_path.glob("*/*.log")))
    assert run.returncode == 0 and out.exists(), run.stdout[-2000:] + run.stderr[-2000:] + logs
    apps = {pid: c for pid, c in seen.items() if b"flwr-clientapp" in c[0] or b"flwr-serverapp" in c[0]}
    every = sorted(c[0] for c in seen.values())
    # the ServerApp's warm shim, and both ClientApp paths: the warm shim (C1) and the guard script started cold (C2)
    assert any(re.search(rb"labqfl-warm-[^/]+/bin/flwr-serverapp", c[0]) for c in apps.values()), every
    assert any(re.search(rb"labqfl-warm-[^/]+/bin/flwr-clientapp", c[0]) for c in apps.values()), every
    assert any(b"node-bin/flwr-clientapp" in c[0] for c in apps.values()), every
    for pid, (cmdline, environ) in seen.items():
        argv = cmdline.split(b"\0")
        assert b"--token" not in argv, (pid, cmdline)
        assert not HEX_TOKEN.search(cmdline), (pid, cmdline)
        assert not HEX_TOKEN.search(environ), (pid, "environ")
    assert all(b"--token-stdin" in c[0].split(b"\0") for c in apps.values())
