"""``labqfl keys preshare``: a pair's real pre-shared authentication secret into both nodes' stores
(pool auth, same block ID, same bits, MSB first per byte), refusals, and the two-store rollback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.errors import KeyStoreError
from labqfl.keystore import KeyStore, open_node_stores
from labqfl.qkd.authentication import DEFAULT_AUTH_LANES
from labqfl.qkd.pipeline import PRESHARED_PREFIX, _auth_bits_per_block

runner = CliRunner()
PAIR = "C1-C2"
FIRST = _auth_bits_per_block(DEFAULT_AUTH_LANES, first=True)  # 384 bits = 48 bytes (two 64-bit lanes)


def _run(*args: str, data: Path):
    return runner.invoke(app, ["keys", "preshare", *args], env={"LABQFL_DATA_DIR": str(data)})


def _secret(path: Path, nbytes: int = 64, seed: int = 3) -> bytes:
    data = np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    return data


def _error_line(res) -> str:
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 1, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


def test_preshare_loads_the_same_bits_into_both_stores(tmp_path):
    data = tmp_path / "data"
    secret = _secret(tmp_path / "secret.bin")
    res = _run("--pair", PAIR, "--file", str(tmp_path / "secret.bin"), "--json", data=data)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out) == {"pair", "nbits", "block_id", "source", "stores", "auth_available_bits", "secret_file"}
    assert out["pair"] == PAIR and out["nbits"] == 8 * len(secret) and out["source"] == "secret.bin"
    assert out["block_id"].startswith(PRESHARED_PREFIX)
    assert out["auth_available_bits"] == {"C1": 512, "C2": 512}
    assert set(out["stores"]) == {"C1", "C2"}
    assert secret.hex() not in res.output  # never print key material
    stores = open_node_stores(["C1", "C2"], data)
    try:
        for st in stores.values():
            assert st.accounting()[PAIR]["available"] == {"auth": 512}
            [blk] = st.blocks(PAIR)
            assert blk["block_id"] == out["block_id"]
            assert blk["meta"]["kind"] == "preshared-auth" and blk["meta"]["simulated"] is False
            assert blk["meta"]["source"] == "secret.bin" and blk["meta"]["nbits"] == 512
        # Ci allocates, Cj consumes the same refs: identical bits, the file's bytes MSB first
        km = stores["C1"].take(PAIR, 512, "auth")
        assert km.refs == [(out["block_id"], 0, 512)]
        other = stores["C2"].take_exact(PAIR, km.refs, "auth")
        assert np.array_equal(km.bits, other.bits)
        assert np.array_equal(km.bits, np.unpackbits(np.frombuffer(secret, np.uint8)))
    finally:
        for st in stores.values():
            st.close()


def test_human_output_names_the_block_and_pools(tmp_path):
    _secret(tmp_path / "s.bin", FIRST // 8)
    res = _run("--pair", PAIR, "--file", str(tmp_path / "s.bin"), "--data-dir", str(tmp_path / "d"),
               data=tmp_path / "ignored")
    assert res.exit_code == 0, res.output
    assert f"loaded {FIRST} pre-shared bits of C1-C2" in res.output and PRESHARED_PREFIX in res.output
    assert (tmp_path / "d" / "keystore" / "C1.sqlite").is_file()  # --data-dir wins over the env var
    assert not (tmp_path / "ignored").exists()


@pytest.mark.parametrize(("make", "pair", "needle"), [
    (lambda p: None, PAIR, "does not exist"),
    (lambda p: p.write_bytes(b""), PAIR, "is empty"),
    (lambda p: p.write_bytes(os.urandom(FIRST // 8 - 1)), PAIR, f"at least {FIRST // 8} bytes ({FIRST} bits)"),
    (lambda p: p.write_bytes(os.urandom((1 << 20) + 1)), PAIR, "larger than 1048576 bytes"),
    (lambda p: p.write_bytes(bytes(64)), PAIR, "not a random secret"),
    (lambda p: p.mkdir(), PAIR, "not a regular file"),
    (lambda p: p.write_bytes(os.urandom(64)), "C1", "not of the form 'Ci-Cj'"),
    (lambda p: p.write_bytes(os.urandom(64)), "C1-C1", "not of the form 'Ci-Cj'"),
    (lambda p: p.write_bytes(os.urandom(64)), "C1-C9", "node(s) C9 are not clients of station"),
])
def test_bad_inputs_fail_with_one_line_and_load_nothing(tmp_path, make, pair, needle):
    f = tmp_path / "secret.bin"
    make(f)
    data = tmp_path / "data"
    line = _error_line(_run("--pair", pair, "--file", str(f), data=data))
    assert needle in line
    for node in ("C1", "C2"):
        p = data / "keystore" / f"{node}.sqlite"
        if p.exists():
            with KeyStore(p) as st:
                assert st.accounting() == {}


def test_unscheduled_pair_is_refused(tmp_path):
    from labqfl.config import load_station_config
    from labqfl.runs import dump_toml

    d = load_station_config().model_dump(mode="json", exclude_none=True)
    d["schedule"]["pairs"] = [["C1", "C2"]]
    cfg = tmp_path / "station.toml"
    cfg.write_text(dump_toml(d), encoding="utf-8")
    _secret(tmp_path / "s.bin")
    line = _error_line(_run("--pair", "C1-C3", "--file", str(tmp_path / "s.bin"), "--config", str(cfg),
                            data=tmp_path / "data"))
    assert "not scheduled" in line and "C1-C2" in line


def test_the_secret_file_is_destroyed_after_a_successful_load_only(tmp_path):
    data = tmp_path / "data"
    # a refused load leaves the file alone
    _secret(tmp_path / "s.bin")
    assert _run("--pair", "C9-C2", "--file", str(tmp_path / "s.bin"), data=data).exit_code == 1
    assert (tmp_path / "s.bin").exists()
    # a successful one overwrites and deletes it, so the same secret cannot be loaded again by mistake
    res = _run("--pair", PAIR, "--file", str(tmp_path / "s.bin"), "--json", data=data)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["secret_file"] == "destroyed"
    assert not (tmp_path / "s.bin").exists()
    line = _error_line(_run("--pair", PAIR, "--file", str(tmp_path / "s.bin"), data=data))
    assert "does not exist" in line
    # --keep-file keeps it and says so; the store keeps a fingerprint of each secret (never the secret)
    secret = _secret(tmp_path / "t.bin", seed=4)
    res = _run("--pair", PAIR, "--file", str(tmp_path / "t.bin"), "--keep-file", data=data)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "t.bin").exists() and "kept" in res.output
    with KeyStore.for_node("C1", data) as st:
        metas = [b["meta"] for b in st.blocks()]
    assert len(metas) == 2
    # secret_fingerprint and secret_windows (ce35cc8) are the store's own records for refusing a reload; they
    # are never written to an export file nor printed by `keys status` (checked below)
    assert all(set(m) == {"kind", "simulated", "source", "nbits", "secret_fingerprint", "secret_windows"}
               for m in metas)
    assert all(m["secret_fingerprint"].startswith("sha256:") and secret.hex() not in m["secret_fingerprint"]
               and secret.hex() not in m["secret_windows"] for m in metas)
    shown = CliRunner().invoke(app, ["keys", "status", "--data-dir", str(data), "--json"])
    assert shown.exit_code == 0, shown.output
    assert "secret_windows" not in shown.output and "secret_fingerprint" not in shown.output
    assert all(m["secret_windows"][:16] not in shown.output for m in metas)


def test_a_store_that_is_not_a_key_store_is_refused_before_anything_is_written(tmp_path):
    data = tmp_path / "data"
    (data / "keystore").mkdir(parents=True)
    (data / "keystore" / "C2.sqlite").write_bytes(b"garbage, not sqlite" * 10)
    (data / "keystore" / "C2.sqlite").chmod(0o600)
    _secret(tmp_path / "s.bin")
    line = _error_line(_run("--pair", PAIR, "--file", str(tmp_path / "s.bin"), data=data))
    assert "C2.sqlite" in line
    with KeyStore.for_node("C1", data) as st:
        assert st.accounting() == {}


def test_second_add_failing_withdraws_the_first_and_names_both_stores(tmp_path, monkeypatch):
    data = tmp_path / "data"
    secret = _secret(tmp_path / "s.bin")
    real_add = KeyStore.add_block

    def failing_add(self, *a, **kw):
        if self.node == "C2":
            raise KeyStoreError(f"key store {self.path}: database is locked")
        return real_add(self, *a, **kw)

    monkeypatch.setattr(KeyStore, "add_block", failing_add)
    line = _error_line(_run("--pair", PAIR, "--file", str(tmp_path / "s.bin"), data=data))
    assert "C1.sqlite" in line and "C2.sqlite" in line and "withdrawn" in line and "database is locked" in line
    with KeyStore.for_node("C1", data) as st:
        acc = st.accounting()[PAIR]
        assert acc["available"] == {} and acc["consumed"] == {"auth": 8 * len(secret)}
    monkeypatch.setattr(KeyStore, "add_block", real_add)
    # nothing of it was used: the same secret may be loaded again, and then both ends agree
    res = _run("--pair", PAIR, "--file", str(tmp_path / "s.bin"), "--json", data=data)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["auth_available_bits"] == {"C1": 512, "C2": 512}
    with KeyStore.for_node("C1", data) as s1, KeyStore.for_node("C2", data) as s2:
        km = s1.take(PAIR, 512, "auth")
        assert np.array_equal(km.bits, s2.take_exact(PAIR, km.refs, "auth").bits)


def test_ctrl_c_while_adding_at_the_second_end_withdraws_the_first_and_keeps_the_file(tmp_path, monkeypatch):
    """Ctrl-C while C2's store was locked (the add waiting) left the secret in C1's auth pool only:
    the rollback caught ``Exception``, not ``KeyboardInterrupt``. Now it is withdrawn at C1, the
    command says it was interrupted (no instruments to mention) and the secret file is kept."""
    data = tmp_path / "data"
    _secret(tmp_path / "s.bin")
    real_add = KeyStore.add_block

    def interrupted_add(self, *a, **kw):
        if self.node == "C2":
            raise KeyboardInterrupt
        return real_add(self, *a, **kw)

    monkeypatch.setattr(KeyStore, "add_block", interrupted_add)
    res = _run("--pair", PAIR, "--file", str(tmp_path / "s.bin"), data=data)
    assert res.exit_code != 0 and res.stderr == "error: interrupted by user (Ctrl-C)\n", res.output
    assert (tmp_path / "s.bin").exists()
    for node in ("C1", "C2"):
        with KeyStore.for_node(node, data) as st:
            assert st.accounting().get(PAIR, {}).get("available", {}) == {}, node
