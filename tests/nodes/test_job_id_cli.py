"""``labqfl node sign-spec --job-id`` / ``node train --job-id``: the signed training-job ID (``FlowerSpec.job_id``)
under which each SuperNode signs one survivor set per round with self-masks (docs/secure_aggregation.md §9). The
default is the job the training settings give (``FlowerSpec.derived_job_id``: the same settings, the same job;
review s36 F2); ``node train --signed-spec`` takes the signed spec's, also the empty one of a spec signed before
job IDs existed (review s36 F4). ``--colluders`` (review s36 F1) is signed and the need it gives is printed."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.flower.specsig import OPERATOR, SignedSpec, spec_departures, spec_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from cli_helpers import error_line  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from labqfl.net import make_node_certs

    d = tmp_path_factory.mktemp("certs")
    make_node_certs(d, ["server", "C1", "C2", "C3", "C4", OPERATOR])
    return d


def _sign(certs: Path, out: Path, *extra: str) -> SignedSpec:
    r = runner.invoke(app, ["node", "sign-spec", "--certs", str(certs), "--rounds", "2", "--self-masks",
                            "--out", str(out), *extra])
    assert r.exit_code == 0, r.output
    return SignedSpec.from_file(out)


def test_the_job_id_is_signed_and_the_same_settings_are_the_same_job_by_default(certs: Path, tmp_path: Path) -> None:
    named = _sign(certs, tmp_path / "a.json", "--job-id", "campaign-7")
    assert named.settings["job_id"] == "campaign-7"
    one, two = _sign(certs, tmp_path / "b.json"), _sign(certs, tmp_path / "c.json", "--rounds", "3")
    assert one.settings["job_id"].startswith("job-") and one.settings["job_id"] == two.settings["job_id"]
    assert one.settings["job_id"] == dataclasses.replace(one.spec(), job_id="").derived_job_id()
    other = _sign(certs, tmp_path / "d.json", "--seed", "9")  # other local training: another job
    assert other.settings["job_id"].startswith("job-") and other.settings["job_id"] != one.settings["job_id"]
    spec = named.spec()
    assert "job_id" in spec_settings(spec) and spec.to_config()["spec.job_id"] == "campaign-7"
    assert FlowerSpec.from_config(spec.to_config()).job_id == "campaign-7"  # travels with every message
    assert spec_departures(named, dataclasses.replace(spec, job_id="other")) == {"job_id": ("other", "campaign-7")}


def test_node_train_takes_the_signed_job_and_refuses_another(certs: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    _sign(certs, out, "--job-id", "campaign-7")
    base = ["node", "train", "--server", "127.0.0.1:1", "--certs", str(certs), "--signed-spec", str(out),
            "--rounds", "2", "--self-masks"]
    line = error_line(runner.invoke(app, base))
    assert line.startswith("error: node server at 127.0.0.1:1 unreachable"), line  # the signed job: no departure
    line = error_line(runner.invoke(app, [*base, "--job-id", "campaign-8"]))
    assert "the training options depart from signed spec" in line and "job_id: 'campaign-8', 'campaign-7'" in line
    line = error_line(runner.invoke(app, ["node", "sign-spec", "--certs", str(certs), "--out", str(tmp_path / "x"),
                                          "--job-id", "no spaces"]))
    assert "job_id 'no spaces'" in line, line


def test_node_train_takes_a_spec_signed_before_job_ids_existed(certs: Path, tmp_path: Path) -> None:
    """Review s36 F4: the CLI replaced the empty signed job ID by a fresh one and refused the file."""
    import json

    from labqfl.fl.flower.identity import ReplySigner
    from labqfl.fl.flower.specsig import spec_signed_bytes

    new = _sign(certs, tmp_path / "new.json")
    body = json.loads(new.body)
    del body["spec"]["job_id"], body["spec"]["colluders"]  # what labqfl before the job ID signed
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    op = ReplySigner((certs / f"node-{OPERATOR}.pem").read_bytes(), (certs / f"node-{OPERATOR}.key").read_bytes())
    old = tmp_path / "old.json"
    old.write_text(SignedSpec(text, op.signature(spec_signed_bytes(text)), op.cert_pem).to_json(), encoding="utf-8")
    line = error_line(runner.invoke(app, ["node", "train", "--server", "127.0.0.1:1", "--certs", str(certs),
                                          "--signed-spec", str(old), "--rounds", "2", "--self-masks"]))
    assert line.startswith("error: node server at 127.0.0.1:1 unreachable"), line  # no departure


def test_sign_spec_signs_the_colluders_and_says_what_they_cost(certs: Path, tmp_path: Path) -> None:
    """Review s36 F1: the tolerated colluders are signed (default -1: t - 1) and sign-spec prints the need."""
    r = runner.invoke(app, ["node", "sign-spec", "--certs", str(certs), "--rounds", "2", "--self-masks",
                            "--out", str(tmp_path / "a.json")], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    assert SignedSpec.from_file(tmp_path / "a.json").settings["colluders"] == -1
    out = " ".join(r.output.split())
    # N = 4, graph all: t = 3, c = 2, need = max(3, 2, floor(6/2) + 1) = 4: no dropout unless colluders is lowered
    assert "t = 3, 2 colluding client(s) tolerated (default t - 1), so every round needs 4 of 4 clients" in out, out
    assert "(0 dropout(s) tolerated)" in out, out
    r = runner.invoke(app, ["node", "sign-spec", "--certs", str(certs), "--rounds", "2", "--self-masks",
                            "--colluders", "0", "--out", str(tmp_path / "b.json")], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    assert SignedSpec.from_file(tmp_path / "b.json").settings["colluders"] == 0
    assert "0 colluding client(s) tolerated (--colluders), so every round needs 3 of 4" in " ".join(r.output.split())
    line = error_line(runner.invoke(app, ["node", "sign-spec", "--certs", str(certs), "--self-masks", "--colluders", "3",
                                          "--out", str(tmp_path / "c.json")]))
    assert "colluders 3: expected -1 (t − 1) or 0 ... 2" in line, line


def test_sign_spec_refuses_colluders_at_or_above_the_threshold(certs: Path, tmp_path: Path) -> None:
    """As ``labqfl run --colluders``: c ≥ t colluders hold t shares of an honest client's self-mask seed, so a spec
    claiming to tolerate them is refused when signed (it was signed whenever c ≤ N − 2)."""
    line = error_line(runner.invoke(app, ["node", "sign-spec", "--certs", str(certs), "--self-masks", "--threshold",
                                          "2", "--colluders", "2", "--out", str(tmp_path / "d.json")]))
    assert "--colluders 2: expected 0 ... 1 (below the self-mask threshold t = 2" in line, line
    assert not (tmp_path / "d.json").exists()
    r = runner.invoke(app, ["node", "sign-spec", "--certs", str(certs), "--self-masks", "--threshold", "2",
                            "--colluders", "1", "--out", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
