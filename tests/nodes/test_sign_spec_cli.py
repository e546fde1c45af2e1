"""``labqfl node sign-spec`` and ``labqfl node train --signed-spec`` (docs/nodes.md, docs/secure_aggregation.md
§9): the operator signs a run's training spec with its ``ctl`` certificate; node train sends that one, after
checking that its training options give exactly the signed settings and that it has not expired. None of these
need a server: each failure is one line before the server is asked."""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.fl.flower.identity import ReplySigner, ReplyVerifier
from labqfl.fl.flower.specsig import OPERATOR, SignedSpec, sign_spec, spec_signed_bytes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from cli_helpers import error_line  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from labqfl.net import make_node_certs

    d = tmp_path_factory.mktemp("certs")
    make_node_certs(d, ["server", "C1", "C2", "C3", "C4", OPERATOR])
    return d


def test_sign_spec_writes_a_spec_signed_by_the_operator(certs: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.spec.json"
    r = runner.invoke(app, ["node", "sign-spec", "--certs", str(certs), "--rounds", "2", "--self-masks",
                            "--valid-hours", "2", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    signed = SignedSpec.from_file(out)
    assert doc["spec_id"] == signed.spec_id and doc["file"] == str(out)
    assert signed.settings["rounds"] == 2 and signed.settings["self_masks"] is True
    assert signed.settings["keys"] == "qkd" and signed.settings["clients"] == 4
    left = signed.expires - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(hours=1, minutes=58) < left <= datetime.timedelta(hours=2)
    ReplyVerifier.from_file(certs / "ca.pem").verify_operator(signed.cert_pem, signed.sig,
                                                              spec_signed_bytes(signed.body), operator=OPERATOR)


def test_node_train_checks_a_signed_spec_against_its_options_before_the_server_is_asked(
        certs: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.spec.json"
    assert runner.invoke(app, ["node", "sign-spec", "--certs", str(certs), "--rounds", "2", "--dp-epsilon", "5",
                               "--dp-clip", "1", "--q", "32", "--out", str(out)]).exit_code == 0
    base = ["node", "train", "--server", "127.0.0.1:1", "--certs", str(certs), "--signed-spec", str(out)]
    line = error_line(runner.invoke(app, [*base, "--rounds", "3", "--q", "32"]))  # DP off, another round count
    assert f"--signed-spec {out}: the training options depart from signed spec" in line, line
    assert "dp_epsilon: 0.0, 5.0" in line and "rounds: 3, 2" in line, line
    line = error_line(runner.invoke(app, [*base, "--rounds", "2", "--q", "32", "--dp-epsilon", "5", "--dp-clip", "1"]))
    assert line.startswith("error: node server at 127.0.0.1:1 unreachable"), line  # the same settings: on to the server


def test_node_train_refuses_an_expired_signed_spec_and_sign_spec_needs_the_operators_files(
        certs: Path, tmp_path: Path) -> None:
    from labqfl.app.training import TrainingSettings
    from labqfl.cli.node_train import _node_spec

    _, spec = _node_spec(TrainingSettings(task="mnist-qnn", rounds=1, keys="qkd", engine="flower", preflight=False),
                         None)
    op = ReplySigner((certs / "node-ctl.pem").read_bytes(), (certs / "node-ctl.key").read_bytes())
    old = sign_spec(spec, op, valid_s=60, now=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1))
    f = tmp_path / "old.json"
    f.write_text(old.to_json())
    line = error_line(runner.invoke(app, ["node", "train", "--server", "127.0.0.1:1", "--certs", str(certs),
                                          "--rounds", "1", "--signed-spec", str(f)]))
    assert f"spec {old.spec_id} expired at" in line and "labqfl node sign-spec" in line, line
    line = error_line(runner.invoke(app, ["node", "sign-spec", "--certs", str(tmp_path), "--out", str(f)]))
    assert "CA certificate of node 'ctl' not found" in line and "labqfl node certs DIR --node ctl" in line, line
