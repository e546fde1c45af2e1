"""``labqfl node acquire`` / ``node up`` tables show QBER as ``acquire``, ``distill`` and ``run`` do, a percentage
(0.56 %), and "—" for no value (CLI review s32 L2: they showed the fraction, 0.0056, and "-"); ``--json`` keeps
the fractions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from labqfl.cli import app

runner = CliRunner()
ACQUIRE = ["node", "acquire", "--certs", "nocerts", "--detector", "127.0.0.1:7001", "--optics", "127.0.0.1:7000",
           *[f"--client=C{i}=127.0.0.1:700{i + 1}" for i in range(1, 5)], "--duration", "1"]
PAIRS = ["C1-C2", "C1-C3", "C1-C4", "C2-C3", "C2-C4", "C3-C4"]


def _result() -> dict[str, Any]:
    def pair(p: str) -> dict[str, Any]:
        nothing = p == "C3-C4"  # a pair that sifted nothing: no QBER, no rate
        return {"final_key_bits": 0 if nothing else 30_000, "delivered_bits": 0 if nothing else 30_000,
                "sifted_bits": 0 if nothing else 200_000, "blocks": 0 if nothing else 1, "aborted_blocks": 0,
                "abort_reasons": [], "secure_key_rate_bps": None if nothing else 30_000.0,
                "error_rate": {"X_key": None if nothing else 0.0056}, "failed": "", "round_trips": 3,
                "times_s": {"sift": 0.1}}

    return {"acquisition": "nodes/test", "duration_s": 1.0, "wall_s": 2.0, "acquisition_wall_s": 1.5,
            "detector": {}, "pairs": {p: pair(p) for p in PAIRS}}


@pytest.fixture(autouse=True)
def _acquired(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("labqfl.nodes.launch.run_acquisition", lambda *a, **k: _result())
    monkeypatch.setenv("COLUMNS", "160")


def test_node_acquire_table_shows_qber_in_percent_and_a_dash_for_no_value() -> None:
    r = runner.invoke(app, ACQUIRE)
    assert r.exit_code == 0, (r.output, r.exception)
    rows = {ln.split("│")[1].strip(): [c.strip() for c in ln.split("│")[2:-1]]
            for ln in r.stderr.splitlines() if ln.count("│") > 3 and ln.split("│")[1].strip() in PAIRS}
    assert rows["C1-C2"] == ["30,000", "1", "0", "30,000", "0.56 %"], r.stderr
    assert rows["C3-C4"] == ["0", "0", "0", "—", "—"], r.stderr
    assert "0.0056" not in r.stderr and " - " not in r.stderr
    assert "QBER X (key)" in r.stderr


def test_node_acquire_json_keeps_fractions_and_null() -> None:
    r = runner.invoke(app, [*ACQUIRE, "--json"])
    assert r.exit_code == 0, (r.output, r.exception)
    doc = json.loads(r.stdout)
    assert doc["pairs"]["C1-C2"]["error_rate_X_key"] == 0.0056
    assert doc["pairs"]["C3-C4"]["error_rate_X_key"] is None and doc["pairs"]["C3-C4"]["secure_key_rate_bps"] is None
