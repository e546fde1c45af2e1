"""A certificate a CA issues never ends after the CA (nor starts before it): ``keystore.certs.issued_validity``
cuts it to the CA's validity, on every issuing path (``node certs``: node-*.pem; ``keys certs``: the KME server
and SAE client certificates).

CI of session 40: ``node certs`` made the CA and then C1's certificate with the same ``--days``; when the two
makings straddled a second boundary (X.509 times have whole seconds), C1's certificate ended 1 s after the CA and
the command warned that "the certificates of C1 are refused from then on, before their own end"
(tests/cli/test_keys_certs_warning.py failed once). Here the issuer's clock (``keystore.certs``'s ``dt``) is
replaced by one that straddles the boundary on purpose: the CA is made at hh:mm:ss.9995, each certificate a
millisecond later, in the next second."""

from __future__ import annotations

import datetime as dt
import json
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from typer.testing import CliRunner

import labqfl.keystore.certs as certs
from labqfl.cli import app
from labqfl.errors import ConfigError
from labqfl.net.pki import make_node_certs

runner = CliRunner()


def _clock(times: Iterator[dt.datetime]) -> types.SimpleNamespace:
    """A stand-in for ``keystore.certs``'s ``datetime`` module whose ``datetime.now`` returns ``times`` in turn."""

    class _Now(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> dt.datetime:  # type: ignore[override]
            return next(times).astimezone(tz)

    return types.SimpleNamespace(datetime=_Now, timedelta=dt.timedelta, UTC=dt.UTC, timezone=dt.timezone)


@pytest.fixture()
def straddling(monkeypatch: pytest.MonkeyPatch) -> dt.datetime:
    """The issuer's clock: the first reading (the CA's making) at s + 0.9995 s, each later one 1 ms later, from
    s + 1.0005 s on (the next second). Returns s + 0.9995 s."""
    second = dt.datetime.now(dt.UTC).replace(microsecond=0)
    first = second + dt.timedelta(microseconds=999_500)

    def times() -> Iterator[dt.datetime]:
        yield first
        k = 0
        while True:
            yield second + dt.timedelta(seconds=1, microseconds=500 + 1000 * k)
            k += 1

    monkeypatch.setattr(certs, "dt", _clock(times()))
    return first


def _cert(p: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(p.read_bytes())


def _cut_warnings(result: Any) -> list[str]:
    """The "valid only to" warnings of a ``--json`` run of ``keys certs`` / ``node certs``."""
    return [w for w in json.loads(result.stdout)["warnings"] if "valid only to" in w]


def test_node_certs_of_a_new_ca_never_outlive_it_across_a_second_boundary(tmp_path: Path, straddling: dt.datetime) \
        -> None:
    d = tmp_path / "n"
    res = runner.invoke(app, ["node", "certs", str(d), "--node", "C1", "--node", "ctl", "--days", "30", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    ca = _cert(d / "ca.pem")
    assert ca.not_valid_after_utc == (straddling + dt.timedelta(days=30)).replace(microsecond=0)
    for n in ("C1", "ctl"):
        c = _cert(d / f"node-{n}.pem")
        assert c.not_valid_after_utc <= ca.not_valid_after_utc, n
        assert c.not_valid_before_utc >= ca.not_valid_before_utc, n
        assert out["nodes"][n]["not_after"] <= out["ca"]["not_after"], n
    assert [w for w in out["warnings"] if "valid only to" in w] == [], out["warnings"]


def test_keys_certs_kme_and_sae_certs_never_outlive_a_new_ca_across_a_second_boundary(
        tmp_path: Path, straddling: dt.datetime) -> None:
    files = certs.make_dev_certs(tmp_path / "k", kmes=("kme",), saes=("C1", "C2"), days=10)
    ca = _cert(files["ca"])
    assert ca.not_valid_after_utc == (straddling + dt.timedelta(days=10)).replace(microsecond=0)
    for stem in ("kme-kme", "sae-C1", "sae-C2"):
        c = _cert(files[stem])
        assert ca.not_valid_before_utc <= c.not_valid_before_utc < c.not_valid_after_utc <= ca.not_valid_after_utc


def test_make_node_certs_never_outlive_a_new_ca_across_a_second_boundary(tmp_path: Path,
                                                                         straddling: dt.datetime) -> None:
    files = make_node_certs(tmp_path / "p", ["C1", "server", "ctl"], days=5)
    ca = _cert(files["ca"])
    assert all(_cert(files[n]).not_valid_after_utc <= ca.not_valid_after_utc for n in ("C1", "server", "ctl"))


def test_a_certificate_of_a_shorter_ca_is_cut_to_it_and_the_warning_says_so(tmp_path: Path) -> None:
    """A CA made earlier with fewer days (reused from the folder): the certificates end with it, and ``node certs``
    still warns, naming them and the CA's end; certificates that fit in the CA are not named."""
    d = tmp_path / "n"
    first = runner.invoke(app, ["node", "certs", str(d), "--node", "C1", "--days", "10", "--json"])
    assert first.exit_code == 0, first.output
    assert _cut_warnings(first) == []
    res = runner.invoke(app, ["node", "certs", str(d), "--node", "C2", "--node", "C3=c3.lab", "--days", "40", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["ca"]["new"] is False
    ca = _cert(d / "ca.pem")
    for n in ("C2", "C3"):
        assert _cert(d / f"node-{n}.pem").not_valid_after_utc == ca.not_valid_after_utc, n
        assert out["nodes"][n]["not_after"] == out["ca"]["not_after"]
    [w] = [w for w in out["warnings"] if "valid only to" in w]
    assert w.startswith(f"the CA in {d} is valid only to {out['ca']['not_after']}: the certificates of C2, C3 end "
                        "then too, before the 40 days asked for"), w
    assert f"warning: {w}" in res.stderr
    shorter = runner.invoke(app, ["node", "certs", str(d), "--node", "C4", "--days", "3", "--json"])
    assert shorter.exit_code == 0, shorter.output
    assert _cut_warnings(shorter) == []
    assert _cert(d / "node-C4.pem").not_valid_after_utc < ca.not_valid_after_utc


def test_an_expired_ca_issues_nothing_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CA that has ended (its folder reused two days after a 1-day CA): no certificate (cut to the CA it would end
    before it starts); one error naming ca.pem and the CA's end; nothing written."""
    d = tmp_path / "k"
    certs.make_dev_certs(d, kmes=("kme",), saes=("C1",), days=1)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    monkeypatch.setattr(certs, "dt", _clock(iter([later] * 10)))
    with pytest.raises(ConfigError) as e:
        certs.make_dev_certs(d, kmes=(), saes=("C2",), days=5)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{d / 'ca.pem'}: the CA is valid only from ") and "expected a CA valid now" \
        in msg, msg
    assert not (d / "sae-C2.pem").exists() and not (d / "sae-C2.key").exists()
    with pytest.raises(ConfigError, match="would never be accepted"):
        make_node_certs(tmp_path / "k", ["C1"], days=5)


def test_keys_certs_into_a_folder_with_a_shorter_ca_warns_like_node_certs(tmp_path: Path) -> None:
    """``labqfl keys certs`` reuses the folder's CA too: certificates it cuts to an older, shorter CA are named in
    the same warning ``node certs`` gives (JSON ``warnings`` and stderr); a new CA, or certificates that fit in the
    reused one, give none."""
    d = tmp_path / "k"
    first = runner.invoke(app, ["keys", "certs", str(d), "--sae", "C1", "--days", "10", "--json"])
    assert first.exit_code == 0, first.output
    assert _cut_warnings(first) == []
    res = runner.invoke(app, ["keys", "certs", str(d), "--kme", "kme2", "--sae", "C2", "--days", "40", "--json"])
    assert res.exit_code == 0, res.output
    ca = _cert(d / "ca.pem")
    for stem in ("kme-kme2", "sae-C2"):
        assert _cert(d / f"{stem}.pem").not_valid_after_utc == ca.not_valid_after_utc, stem
    [w] = _cut_warnings(res)
    assert w.startswith(f"the CA in {d} is valid only to {ca.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC: the "
                        "certificates of kme-kme2, sae-C2 end then too, before the 40 days asked for"), w
    assert f"warning: {w}" in res.stderr
    fits = runner.invoke(app, ["keys", "certs", str(d), "--kme", "kme3", "--sae", "C3", "--days", "3", "--json"])
    assert fits.exit_code == 0, fits.output
    assert _cut_warnings(fits) == []
