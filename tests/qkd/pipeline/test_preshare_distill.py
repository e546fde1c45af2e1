"""``labqfl distill --no-auth-bootstrap``: refused on empty stores (one line, nothing written), then
runs on a secret loaded with ``labqfl keys preshare`` without bootstrapping a simulated one."""

from __future__ import annotations

import json

import numpy as np
import pytest
from qkdpp_helpers import record_small_station, small_station
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.keystore import KeyStore
from labqfl.qkd.pipeline import AUTH_REFILL_SUFFIX, PRESHARED_PREFIX
from labqfl.runs import dump_toml

PAIR = "C1-C2"
DUR = 0.02
runner = CliRunner()


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A 20 ms recording of the one-pair small station of the pipeline tests, and its TOML."""
    cfg = small_station()
    d = tmp_path_factory.mktemp("rec")
    toml = d / "station.toml"
    toml.write_text(dump_toml(cfg.model_dump(mode="json", exclude_none=True)), encoding="utf-8")
    return record_small_station(d, DUR, cfg), toml


def _distill(path, tmp_path, *extra):
    return runner.invoke(app, ["distill", str(path), "--block-bits", "5000", "--data-dir", str(tmp_path / "data"),
                               "--out", str(tmp_path / "runs"), *extra])


def test_no_auth_bootstrap_on_empty_stores_fails_cleanly_then_runs_on_the_preshared_secret(recording, tmp_path):
    path, toml = recording
    res = _distill(path, tmp_path, "--no-auth-bootstrap", "--json")
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: pair C1-C2: "), res.output
    assert "holds 0 bits, 384 needed" in lines[0] and "labqfl keys preshare --pair C1-C2" in lines[0]
    assert json.loads(res.stdout)["error"] == lines[0].removeprefix("error: ")  # the failure's JSON only (issue 19)
    assert not (tmp_path / "runs").exists()  # no run folder
    for n in ("C1", "C2"):
        with KeyStore.for_node(n, tmp_path / "data") as st:
            assert st.accounting() == {}  # no key, no bootstrap

    secret = np.random.default_rng(5).integers(0, 256, 2048, dtype=np.uint8).tobytes()
    (tmp_path / "secret.bin").write_bytes(secret)
    res = runner.invoke(app, ["keys", "preshare", "--pair", PAIR, "--file", str(tmp_path / "secret.bin"),
                              "--config", str(toml), "--data-dir", str(tmp_path / "data"), "--json"])
    assert res.exit_code == 0, res.output
    loaded = json.loads(res.stdout)["block_id"]

    res = _distill(path, tmp_path, "--no-auth-bootstrap", "--json")
    # the short recording's blocks authenticate on the secret and mostly give no key: then the summary, and exit 1
    # with one line saying so (a block of these fresh CSPRNG choices sometimes keeps a few bits: exit 0)
    assert res.exit_code == 0 or res.stderr.startswith("error: no pair produced key: C1-C2: "), res.output
    assert "bootstrapped" not in res.output
    p = json.loads(res.stdout)["pairs"][PAIR]
    assert p["auth_key_bits"] >= 384
    for n in ("C1", "C2"):
        with KeyStore.for_node(n, tmp_path / "data") as st:
            pre = [b for b in st.blocks(PAIR) if b["block_id"].startswith(PRESHARED_PREFIX)]
            assert [b["block_id"] for b in pre] == [loaded]  # no simulated pre-shared block was added
            assert pre[0]["meta"]["simulated"] is False
            acc = st.accounting()[PAIR]
            assert acc["consumed"] == {"auth": p["auth_key_bits"]}
            refill = sum(b["nbits"] for b in st.blocks(PAIR) if b["block_id"].endswith(AUTH_REFILL_SUFFIX))
            # the loaded block paid: what is left of the auth pool is its rest plus the refills
            assert acc["available"].get("auth", 0) == 8 * len(secret) - p["auth_key_bits"] + refill


def test_distill_help_documents_the_flag():
    res = runner.invoke(app, ["distill", "--help"], env={"COLUMNS": "200"})
    text = " ".join(res.output.replace("│", " ").split())  # the help column wraps wherever it must
    assert res.exit_code == 0 and "--no-auth-bootstrap" in text and "keys preshare" in text
