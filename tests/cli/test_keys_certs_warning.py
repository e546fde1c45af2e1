"""Review s34 L10: ``labqfl keys certs`` wrote ca.key silently while ``labqfl node certs`` warned about it
(stderr and the JSON's ``warnings``); both now warn, with one text (``keystore.certs.ca_key_warning``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labqfl.cli import app

runner = CliRunner()


def test_keys_certs_warns_about_the_ca_key_in_json_and_on_stderr(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    res = runner.invoke(app, ["keys", "certs", str(d), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    [w] = out["warnings"]
    assert w.startswith(f"{d / 'ca.key'} is the CA's private key: whoever holds it can issue certificates")
    assert "offline" in w and "KME" in w
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("warning:")] == [f"warning: {w}"]
    human = runner.invoke(app, ["keys", "certs", str(tmp_path / "pki2")])
    assert human.exit_code == 0 and human.stdout == ""
    assert f"warning: {tmp_path / 'pki2' / 'ca.key'} is the CA's private key" in human.stderr


def test_keys_certs_and_node_certs_share_the_warning_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import labqfl.keystore.certs as certs

    monkeypatch.setattr(certs, "ca_key_warning", lambda path, *a: f"SHARED {Path(path).name}")
    k = runner.invoke(app, ["keys", "certs", str(tmp_path / "k"), "--json"])
    n = runner.invoke(app, ["node", "certs", str(tmp_path / "n"), "--node", "C1", "--json"])
    assert k.exit_code == 0 and n.exit_code == 0, (k.output, n.output)
    assert json.loads(k.stdout)["warnings"] == ["SHARED ca.key"]
    assert json.loads(n.stdout)["warnings"] == ["SHARED ca.key"]
