"""``labqfl keys certs`` into a folder whose CA can issue no more (session 35): with ``ca.key`` destroyed but ca.pem
and the certificates it issued left, it made a new CA (overwriting ca.pem) with only its usual ca.key warning, so a
lab had two CAs whose KMEs and SAEs refuse each other. Now it refuses in one line naming the folder, what is
missing and ``--force``, the way to make a new CA deliberately, which then warns about the old CA's certificates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import error_line, json_doc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from typer.testing import CliRunner

from labqfl.cli import app

runner = CliRunner()


def _certs(d: Path, *args: str) -> object:
    return runner.invoke(app, ["keys", "certs", str(d), "--sae", "C1", "--sae", "C2", *args])


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def _issued_by(cert: Path, ca: Path) -> bool:
    c, a = x509.load_pem_x509_certificate(cert.read_bytes()), x509.load_pem_x509_certificate(ca.read_bytes())
    try:
        c.verify_directly_issued_by(a)
    except InvalidSignature:
        return False
    return True


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    assert _certs(d).exit_code == 0
    return d


@pytest.mark.parametrize(("gone", "missing"), [(("ca.key",), "ca.pem is there but ca.key is missing (destroyed, or kept elsewhere)"),
                                               (("ca.pem",), "ca.key is there but ca.pem is missing (destroyed, or kept elsewhere)"),
                                               (("ca.key", "ca.pem"), "ca.pem and ca.key are missing")])
def test_a_folder_whose_ca_cannot_issue_is_refused_in_one_line_and_nothing_changes(
        pki: Path, gone: tuple[str, ...], missing: str) -> None:
    for name in gone:
        (pki / name).unlink()
    before = _snapshot(pki)
    res = runner.invoke(app, ["keys", "certs", str(pki), "--kme", "kme2", "--sae", "C5"])
    line = error_line(res)
    assert line.startswith(f"error: {pki}: {missing}; it holds kme-kme.pem, sae-C1.pem, sae-C2.pem: its CA can "
                           "issue no more certificates"), line
    assert "--force to make a new CA here" in line, line
    assert _snapshot(pki) == before  # no new CA, no sae-C5 files, nothing overwritten


def test_a_key_that_is_not_the_cas_is_refused(pki: Path, tmp_path: Path) -> None:
    assert _certs(tmp_path / "other").exit_code == 0
    (pki / "ca.key").write_bytes((tmp_path / "other" / "ca.key").read_bytes())
    line = error_line(runner.invoke(app, ["keys", "certs", str(pki), "--kme", "kme2", "--sae", "C5"]))
    assert line.startswith(f"error: {pki}: {pki / 'ca.key'} is not the private key of {pki / 'ca.pem'}"), line
    assert not (pki / "sae-C5.pem").exists()


def test_force_makes_a_new_ca_deliberately_and_names_the_old_cas_certificates(pki: Path) -> None:
    (pki / "ca.key").unlink()
    old_ca = (pki / "ca.pem").read_bytes()
    out = json_doc(runner.invoke(app, ["keys", "certs", str(pki), "--kme", "kme2", "--sae", "C5", "--force", "--json"]))
    assert (pki / "ca.pem").read_bytes() != old_ca and _issued_by(pki / "sae-C5.pem", pki / "ca.pem")
    [stale] = [w for w in out["warnings"] if w.startswith("--force made a new CA")]
    assert "sae-C1.pem, sae-C2.pem there were issued by the old CA" in stale, stale
    assert not _issued_by(pki / "sae-C1.pem", pki / "ca.pem")


def test_a_working_ca_still_issues_more_certificates_and_a_fresh_folder_gets_one(pki: Path, tmp_path: Path) -> None:
    ca = (pki / "ca.pem").read_bytes()
    res = runner.invoke(app, ["keys", "certs", str(pki), "--sae", "C5", "--kme", "kme2", "--json"])
    out = json_doc(res)
    assert (pki / "ca.pem").read_bytes() == ca and _issued_by(pki / "sae-C5.pem", pki / "ca.pem")
    assert not [w for w in out["warnings"] if "--force made" in w]
    assert "refuses, unless given --force" in out["warnings"][0]
    fresh = json.loads(runner.invoke(app, ["keys", "certs", str(tmp_path / "new"), "--json"]).stdout)
    assert Path(fresh["files"]["ca"]).is_file()


def test_the_help_names_the_files_it_writes() -> None:
    """OUT_DIR's help said ``kme-*.pem/.key, sae-*.pem/.key``, which the markdown help rendered as "kme-.pem/.key,
    sae-.pem/.key" (the asterisks taken for emphasis)."""
    res = runner.invoke(app, ["keys", "certs", "--help"], env={"COLUMNS": "200"})
    assert "kme-NAME.pem/.key, sae-NAME.pem/.key" in res.output, res.output
