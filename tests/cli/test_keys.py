"""``labqfl keys`` commands: certs, status, export/import, serve (a real server process queried by
the third-party ETSI 014 client), and the ``keystore`` benchmark entry in quick mode."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.keystore import open_node_stores

runner = CliRunner()
PAIR = "C1-C2"


def _run(*args: str, data: Path) -> object:
    res = runner.invoke(app, list(args), env={"LABQFL_DATA_DIR": str(data)})
    return res


def test_certs_status_export_import(tmp_path, kh):
    data = tmp_path / "data"
    res = _run("keys", "certs", str(tmp_path / "certs"), "--json", data=data)
    assert res.exit_code == 0, res.output
    names = {Path(p).name for p in json.loads(res.stdout)["files"].values()}
    assert {"ca.pem", "kme-kme.pem", "kme-kme.key", "sae-C1.pem", "sae-C4.key"} <= names
    assert stat.S_IMODE((tmp_path / "certs" / "sae-C1.key").stat().st_mode) == 0o600
    res = _run("keys", "certs", str(tmp_path / "certs"), data=data)
    assert res.exit_code == 1 and "--force" in res.output

    stores = open_node_stores(["C1", "C2"], data)
    kh.fill_pair(stores, PAIR, 1, 4000, seed=1)
    res = _run("keys", "status", "--json", data=data)
    assert res.exit_code == 0, res.output
    st = json.loads(res.stdout)
    assert st["nodes"]["C1"]["pairs"][PAIR]["available"] == {"general": 4000}
    assert _run("keys", "status", data=data).exit_code == 0

    out = tmp_path / "c2.json"
    other = tmp_path / "other"
    ticket = tmp_path / "ticket.json"
    res = runner.invoke(app, ["keys", "ticket", "--node", "C2", "--out", str(ticket), "--json"],
                        env={"LABQFL_DATA_DIR": str(other)})
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(ticket.stat().st_mode) == 0o600
    res = _run("keys", "export", "--node", "C2", "--pair", PAIR, "--bits", "1000", "--ticket", str(ticket),
               "--out", str(out), "--json", data=data)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["nbits"] == 1000
    res = runner.invoke(app, ["keys", "import", str(out), "--json", "--keep-file"], env={"LABQFL_DATA_DIR": str(other)})
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["imported_bits"] == 1000
    assert json.loads(res.stdout)["export_file"] == "kept" and out.exists()
    # the same export again: nothing imported; the file (key live in that store) is destroyed (review s38 F3)
    res = runner.invoke(app, ["keys", "import", str(out)], env={"LABQFL_DATA_DIR": str(other)})
    assert res.exit_code == 0 and "already imported" in res.output and not out.exists(), res.output
    assert _run("keys", "export", "--node", "C9", "--pair", PAIR, "--ticket", str(ticket), "--out",
                str(tmp_path / "n.json"), data=data).exit_code == 1


def test_export_moves_the_general_pool_unless_another_is_named(tmp_path, kh):
    """Review s31: `keys export` without --purpose took every pool oldest first — the pair's pre-shared
    auth block — and every later block of the pair aborted at the partner. Now `general` by default."""
    data, other = tmp_path / "data", tmp_path / "other"
    stores = open_node_stores(["C1", "C2"], data)
    kh.fill_pair(stores, PAIR, 1, 2000, seed=1, purpose="auth")
    kh.fill_pair(stores, PAIR, 1, 3000, seed=2)
    for s in stores.values():
        s.close()

    def export(n: int, *extra: str) -> object:
        ticket = tmp_path / f"t{n}.json"
        assert runner.invoke(app, ["keys", "ticket", "--node", "C2", "--out", str(ticket)],
                             env={"LABQFL_DATA_DIR": str(other)}).exit_code == 0
        return _run("keys", "export", "--node", "C2", "--pair", PAIR, "--ticket", str(ticket),
                    "--out", str(tmp_path / f"x{n}.json"), "--json", *extra, data=data)

    res = export(1)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["nbits"] == 3000
    st = json.loads(_run("keys", "status", "--json", data=data).stdout)["nodes"]["C2"]["pairs"][PAIR]
    assert st["available"] == {"auth": 2000}
    res = export(2, "--purpose", "all", "--bits", "500")
    assert res.exit_code == 0 and json.loads(res.stdout)["nbits"] == 500


def test_status_refuses_an_empty_store_file_and_leaves_it_as_it_was(tmp_path, kh):
    """A zero-length store (truncated) was turned into a new, empty store by ``keys status`` — a read
    that created 73 KB and a new store ID. Now it is refused in one line and left untouched."""
    data = tmp_path / "data"
    stores = open_node_stores(["C1", "C2"], data)
    kh.fill_pair(stores, PAIR, 1, 4000, seed=1)
    for s in stores.values():
        s.close()
    victim = data / "keystore" / "C2.sqlite"
    victim.write_bytes(b"")
    for p in (Path(str(victim) + "-wal"), Path(str(victim) + "-shm")):
        p.unlink(missing_ok=True)
    res = _run("keys", "status", "--node", "C2", "--json", data=data)
    why = (f"key store {victim}: empty (0 bytes, no tables): not an initialised key store (truncated?); refusing to "
           "create one here")
    assert res.exit_code == 1  # reported in its entry (review s32 M6), not as an empty output
    assert json.loads(res.stdout)["nodes"] == {"C2": {"store": str(victim), "error": why}}
    assert res.stderr == f"error: node C2: {why}\n"
    assert victim.stat().st_size == 0
    assert _run("keys", "status", "--node", "C1", data=data).exit_code == 0  # the other store still reads


def test_serve_refuses_missing_tls_files(tmp_path):
    res = _run("keys", "serve", "--cert", str(tmp_path / "no.pem"), "--key", str(tmp_path / "no.key"),
               "--ca", str(tmp_path / "ca.pem"), data=tmp_path)
    assert res.exit_code == 1
    res = _run("keys", "serve", data=tmp_path)
    assert res.exit_code == 1 and "--cert" in res.output


def _start_serve(tmp_path: Path, data: Path) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", "from labqfl.cli import main; main()", "keys", "serve",
                             "--port", str(port), "--certs", str(tmp_path / "certs")],
                            env={**os.environ, "LABQFL_DATA_DIR": str(data)}, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "labqfl keys serve did not start"
            time.sleep(0.05)


def test_labqfl_keys_serve_with_third_party_client(tmp_path, kh):
    client_mod = pytest.importorskip("etsi_qkd_014_client")
    data = tmp_path / "data"
    assert _run("keys", "certs", str(tmp_path / "certs"), data=data).exit_code == 0
    stores = open_node_stores(["C1", "C2"], data)
    kh.fill_pair(stores, PAIR, 1, 8192, seed=2, purpose="etsi")
    proc, port = _start_serve(tmp_path, data)
    try:
        c = tmp_path / "certs"
        m = client_mod.QKD014Client(f"127.0.0.1:{port}", str(c / "sae-C1.pem"), str(c / "sae-C1.key"), str(c / "ca.pem"))
        sl = client_mod.QKD014Client(f"127.0.0.1:{port}", str(c / "sae-C2.pem"), str(c / "sae-C2.key"), str(c / "ca.pem"))
        code, st = m.get_status("C2")
        assert code == 200 and st.stored_key_count == 32
        code, kc = m.get_key("C2", number=4)
        assert code == 200
        code, kc2 = sl.get_key_with_key_IDs("C1", [k.key_id for k in kc.keys])
        assert code == 200 and [k.key for k in kc2.keys] == [k.key for k in kc.keys]
    finally:
        proc.terminate()
        proc.wait(30)
    acc = open_node_stores(["C1"], data)["C1"].accounting()[PAIR]
    assert acc["consumed"] == {"etsi": 1024}


def test_sigterm_of_keys_serve_under_load_finishes_every_request_it_began(tmp_path, kh):
    """SIGTERM (systemd's stop) while SAEs keep asking for keys: uvicorn stops accepting, lets the requests in flight
    finish, then exits by the signal (status 143, as uvicorn re-raises it). No enc_keys request is left half done:
    every bit consumed at the master's store is the key of a completed request, reserved at the slave's store for its
    dec_keys, and the two stores agree on what is still free."""
    import threading

    import httpx

    from labqfl.keystore.etsi import kme_client_context

    data = tmp_path / "data"
    assert _run("keys", "certs", str(tmp_path / "certs"), data=data).exit_code == 0
    stores = open_node_stores(["C1", "C2"], data)
    kh.fill_pair(stores, PAIR, 8, 1 << 16, seed=3, purpose="etsi")
    for s in stores.values():
        s.close()
    proc, port = _start_serve(tmp_path, data)
    c = tmp_path / "certs"
    delivered: list[int] = []

    def sae() -> None:
        with httpx.Client(verify=kme_client_context(c / "ca.pem", c / "sae-C1.pem", c / "sae-C1.key"), timeout=30) as cl:
            while True:
                try:
                    r = cl.get(f"https://127.0.0.1:{port}/api/v1/keys/C2/enc_keys", params={"number": 4, "size": 256})
                except httpx.TransportError:
                    return  # the server has gone
                if r.status_code == 200:
                    delivered.append(sum(256 for _ in r.json()["keys"]))

    threads = [threading.Thread(target=sae) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        while len(delivered) < 20 and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(15)
        assert proc.wait(60) in (-15, 143)
    finally:
        if proc.poll() is None:
            proc.kill()
        for t in threads:
            t.join(60)
    with open_node_stores(["C1"], data)["C1"] as a, open_node_stores(["C2"], data)["C2"] as b:
        acc_a, acc_b = a.accounting()[PAIR], b.accounting()[PAIR]
        assert acc_a["reserved"] == {} and a.pending_reservations("etsi") == []
        assert acc_a["consumed"]["etsi"] == acc_b["reserved"]["etsi"] == sum(delivered) > 0
        assert acc_a["available"] == acc_b["available"]


def test_keystore_benchmark_quick():
    from labqfl.bench import registry

    r = registry()["keystore"].fn(True)
    assert r.unit == "keys/s" and r.figure > 0 and r.baseline_figure > 0
    assert {"p50_ms", "p99_ms"} <= set(r.details["https_mtls"])
    assert np.isfinite(r.ratio)
