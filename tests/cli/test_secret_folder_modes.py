"""Folders holding private keys or secrets are 0700 and certificates 0644 whatever the umask, and no key is
written through a link (review s35 F3).

Under umask 000, ``labqfl keys certs``, ``labqfl node certs``, ``labqfl node preshare --out`` and ``labqfl keys
ticket --data-dir`` made their folders 0777 (every level ``mkdir(parents=True)`` created) and ``ca.pem`` 0666:
another local user could replace the trust anchor or rename a key. And ``keys certs`` opened a key file with
``O_CREAT | O_TRUNC``, following a link planted at its name: the SAE's private key landed in the link's target,
outside the folder.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import error_line, json_doc
from typer.testing import CliRunner

from labqfl.cli import app

runner = CliRunner()


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def _levels(top: Path, leaf: Path) -> list[Path]:
    """``top`` and every folder from it down to ``leaf``."""
    rel = leaf.relative_to(top)
    return [top, *(top / Path(*rel.parts[:i]) for i in range(1, len(rel.parts) + 1))]


def test_keys_certs_folders_are_0700_and_certificates_0644_under_umask_000(tmp_path: Path, umask_000: None) -> None:
    out = tmp_path / "a" / "b" / "pki"  # three levels the command creates
    json_doc(runner.invoke(app, ["keys", "certs", str(out), "--sae", "C1", "--json"]))
    assert {str(d): oct(_mode(d)) for d in _levels(tmp_path / "a", out)} == {
        str(d): "0o700" for d in _levels(tmp_path / "a", out)}
    for name in ("ca.pem", "kme-kme.pem", "sae-C1.pem"):
        assert _mode(out / name) == 0o644, name
    for name in ("ca.key", "kme-kme.key", "sae-C1.key"):
        assert _mode(out / name) == 0o600, name


def test_node_certs_folders_are_0700_and_certificates_0644_under_umask_000(tmp_path: Path, umask_000: None) -> None:
    out = tmp_path / "n" / "certs"
    json_doc(runner.invoke(app, ["node", "certs", str(out), "--node", "C1", "--node", "ctl", "--json"]))
    assert [oct(_mode(d)) for d in _levels(tmp_path / "n", out)] == ["0o700", "0o700"]
    assert [_mode(out / n) for n in ("ca.pem", "node-C1.pem", "node-ctl.pem")] == [0o644] * 3
    assert [_mode(out / n) for n in ("ca.key", "node-C1.key", "node-ctl.key")] == [0o600] * 3


def test_node_preshare_folders_are_0700_at_every_level_under_umask_000(tmp_path: Path, umask_000: None) -> None:
    out = tmp_path / "pre"
    json_doc(runner.invoke(app, ["node", "preshare", "--out", str(out), "--pair", "C1-C2", "--json"]))
    for node in ("C1", "C2"):
        leaf = out / node / "nodes" / node / "preshared"
        assert {str(d): oct(_mode(d)) for d in _levels(out, leaf)} == {str(d): "0o700" for d in _levels(out, leaf)}
        assert _mode(leaf / "C1-C2.json") == 0o600


def test_keys_ticket_makes_its_data_dir_and_ticket_folder_0700_under_umask_000(tmp_path: Path, umask_000: None) -> None:
    data, ticket = tmp_path / "tgt" / "data", tmp_path / "t" / "ticket.json"
    json_doc(runner.invoke(app, ["keys", "ticket", "--node", "C2", "--out", str(ticket), "--data-dir", str(data),
                                 "--json"]))
    assert [oct(_mode(d)) for d in (tmp_path / "tgt", data, data / "keystore", ticket.parent)] == ["0o700"] * 4
    assert _mode(ticket) == 0o600


def test_keys_certs_never_writes_a_key_through_a_link(tmp_path: Path) -> None:
    pki, bait = tmp_path / "pki2", tmp_path / "attacker.txt"
    pki.mkdir()
    (pki / "sae-C1.key").symlink_to("../attacker.txt")  # dangling: the "already has" check passed it
    line = error_line(runner.invoke(app, ["keys", "certs", str(pki), "--sae", "C1"]))
    assert "sae-C1.key" in line and "already" in line, line
    assert not bait.exists()
    # --force replaces the link by the key file; the link's target (an existing file) keeps its content
    bait.write_text("mine\n", encoding="utf-8")
    json_doc(runner.invoke(app, ["keys", "certs", str(pki), "--sae", "C1", "--force", "--json"]))
    assert bait.read_text(encoding="utf-8") == "mine\n"
    key = pki / "sae-C1.key"
    assert not key.is_symlink() and _mode(key) == 0o600 and b"PRIVATE KEY" in key.read_bytes()
    assert not [p.name for p in pki.iterdir() if p.name.endswith(".tmp")]


def test_node_certs_never_writes_a_key_through_a_link(tmp_path: Path) -> None:
    """(`node certs` refused this link already, by its own check of the folder: a guard, not a regression.)"""
    out, bait = tmp_path / "c", tmp_path / "bait.txt"
    out.mkdir()
    (out / "node-C1.key").symlink_to(bait)
    res = runner.invoke(app, ["node", "certs", str(out), "--node", "C1"])
    assert res.exit_code == 1, res.output
    assert "node-C1.key" in res.output and not bait.exists()


def test_make_node_certs_never_replaces_half_a_ca_unasked(tmp_path: Path) -> None:
    """A folder with ca.pem but no ca.key (dropped): without force nothing is written — not a new CA over the
    old ca.pem (the old code's silent second CA), nor a new ca.key beside it (this fix's first version)."""
    from labqfl.errors import ConfigError
    from labqfl.net.pki import make_node_certs

    make_node_certs(tmp_path, ["C1"])
    (tmp_path / "ca.key").unlink()
    pem = (tmp_path / "ca.pem").read_bytes()
    with pytest.raises(ConfigError, match="already has ca.pem .* nothing was written"):
        make_node_certs(tmp_path, ["C2"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.pem", "node-C1.key", "node-C1.pem"]
    assert (tmp_path / "ca.pem").read_bytes() == pem


@pytest.mark.parametrize("command", [["keys", "certs"], ["node", "certs", "--node", "C1"]])
def test_an_existing_certificate_folder_others_can_write_is_warned_about(tmp_path: Path, umask_000: None,
                                                                          command: list[str]) -> None:
    """A folder that is already there is the user's and is left as it is, but one that others can write is
    named in a warning: whoever writes it can replace ca.pem (review s35 second look F8)."""
    out = tmp_path / "pki"
    out.mkdir()
    os.chmod(out, 0o777)
    res = runner.invoke(app, [*command, str(out)])
    assert res.exit_code == 0, res.output
    assert "writable by its group and others (mode 0777)" in res.output and "chmod 700" in res.output
    assert _mode(out) == 0o777
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    res = runner.invoke(app, [*command, str(private)])
    assert res.exit_code == 0 and "writable by" not in res.output, res.output
