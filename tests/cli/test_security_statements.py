"""Review s33 M3, M4, M5, L3: what the keys rest on in the human output of ``labqfl train``, ``labqfl run``,
``labqfl distill`` (and its --json and metrics.json) and ``labqfl keys status``."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.provenance import IT_PHRASE, LOCAL_ENGINE_TRUST

runner = CliRunner()
BOOTSTRAP_REASON = "authentication bootstrapped from a secret labqfl generated on this machine; both stores hold it"


def test_train_prints_the_masks_security_statement(tmp_path: Path) -> None:
    """M3: ``labqfl train`` printed accuracy, key bits and the run folder, but not the ``security`` of its --json."""
    args = ["train", "--task", "mnist-qnn", "--clients", "2", "--rounds", "1", "--q", "8", "--keys", "csprng",
            "--out", str(tmp_path)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    run = sorted(p for p in tmp_path.iterdir() if p.is_dir())[-1]
    security = json.loads((run / "metrics.json").read_text())["security"]
    assert security.startswith("computational")
    assert security.endswith(LOCAL_ENGINE_TRUST)  # review s34 F8: one process holds every update and pad
    assert f"security: {security}" in " ".join(r.stderr.split())


def test_run_summary_prints_the_training_security_statement() -> None:
    """M3: ``labqfl run``'s terminal summary said only "(key source: qkd)"; metrics.json held the statement."""
    from labqfl.cli.run import _render

    statement = ("one-time-pad masks with QKD keys from the node key stores; the keys: no physical security: the "
                 "quantum channel was simulated")
    metrics: dict[str, Any] = {"run": "r", "status": "done", "train": {
        "task": "mnist-qnn", "final_test_accuracy": 0.9, "rounds_run": 2, "key_bits_total": 128, "key_source": "qkd",
        "security": statement}}
    con = Console(file=io.StringIO(), width=100, force_terminal=False)
    _render(con, metrics, Path("/tmp/run"))
    assert f"security: {statement}" in " ".join(con.file.getvalue().split())


@pytest.fixture(scope="module")
def seeded_distill(tmp_path_factory: pytest.TempPathFactory, small_station_writer: Any) -> tuple[list[str], Path, Any]:
    """``labqfl distill --live --duration 0.2 --json`` on the small station (tests/conftest.py) with seeded
    clients (0.2 s gives key): (its arguments without --json, the data dir, the result)."""
    tmp = tmp_path_factory.mktemp("seeded-distill")
    data = tmp / "d"
    station = small_station_writer(tmp, name="small-seeded-station", file="seeded.toml", randomness="seeded")
    base = ["distill", "--live", "--duration", "0.2", "--config", str(station), "--data-dir",
            str(data), "--out", str(tmp / "runs")]
    return base, data, runner.invoke(app, [*base, "--json"])


def test_distill_json_and_metrics_state_what_the_stored_keys_rest_on(seeded_distill) -> None:
    """M4: every key of a seeded station is "not secret", but ``labqfl distill``'s --json and metrics.json said
    nothing about provenance; M5: nor that the pair's authentication was bootstrapped by labqfl."""
    _, _, r = seeded_distill
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    pv = doc["provenance"]
    assert pv["security"].startswith("not secret") and BOOTSTRAP_REASON in pv["security"]
    assert pv["information_theoretic"] is False and pv["blocks"].get("simulated/seeded", 0) >= 1
    # the condition a hardware/QRNG claim rests on stands beside the flag, as in keys status (ac4be77): none here
    assert "information_theoretic_condition" in pv and pv["information_theoretic_condition"] is None
    assert pv["pairs"]["C1-C2"]["preshared_generated_by_labqfl"] == 1
    metrics = json.loads((Path(doc["run"]) / "metrics.json").read_text())
    assert metrics["provenance"]["security"] == pv["security"]
    assert IT_PHRASE not in r.stdout


def test_distill_human_output_states_what_the_stored_keys_rest_on(seeded_distill) -> None:
    """M4: the human output of a distillation that stored only "not secret" keys said nothing of it."""
    base, _, first = seeded_distill
    assert first.exit_code == 0, first.output
    human = runner.invoke(app, base)  # a second run: its own blocks, the same pre-shared secret
    assert human.exit_code == 0, human.output
    text = " ".join(human.stderr.split())
    assert "key provenance (distilled blocks stored, by physical layer/randomness: simulated/seeded" in text
    assert "not secret" in text and BOOTSTRAP_REASON in text


def test_keys_status_names_the_labqfl_made_secret_and_gives_protocol_and_epsilon(seeded_distill) -> None:
    """M5: ``keys status`` said "1 pre-shared", not that labqfl generated it; L3: protocol and ε terms were given
    for hardware keys only (and only in --json)."""
    _, data, first = seeded_distill
    assert first.exit_code == 0, first.output
    st = runner.invoke(app, ["keys", "status", "--data-dir", str(data)])
    assert st.exit_code == 0, st.output
    out = " ".join(st.stderr.split())
    assert "1 pre-shared (1 generated by labqfl: simulated delivery)" in out
    assert "protocol four-phase TF-type" in out and "ε_sec" in out and "ε_total" in out
    assert BOOTSTRAP_REASON in out and IT_PHRASE not in out
