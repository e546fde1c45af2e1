"""With ``--json`` every failure is one JSON document on stdout (issue 19, review s36 input F10).

The rule (README, "Command line"): every command takes ``--json`` for machine-readable output on stdout; a failure
exits non-zero with one clear line. A failure before processing (a bad station file, a corrupt key store, a bad
option value, a usage error) gave that ``error:`` line on stderr and an empty stdout, so a script reading the JSON
had nothing to parse; only ``distill`` and ``run`` put an ``error`` in their JSON, and only once processing began.
Now stdout holds exactly one JSON object with ``error`` (the stderr line's text), ``exit_code`` and ``command``
(:func:`labqfl.cli.common.fail`; for usage errors :func:`labqfl.cli.main`); a command that wrote its own JSON with
an ``error`` (``distill``, ``keys status``, ``station check``) adds no second document. The commands run through
the real entry point, :func:`labqfl.cli.main`, with ``sys.argv`` set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from labqfl.cli import main
from labqfl.keystore import KeyStore


def _labqfl(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
            ) -> tuple[int, dict[str, Any], list[str]]:
    """(exit status, stdout parsed as one JSON document, stderr's ``error:`` lines) of ``labqfl argv``."""
    monkeypatch.setattr("sys.argv", ["labqfl", *argv])
    with pytest.raises(SystemExit) as exc:
        main()
    out, err = capsys.readouterr()
    doc = json.loads(out)  # the whole of stdout: one document (the code before: empty, JSONDecodeError)
    assert isinstance(doc, dict), out
    return int(exc.value.code or 0), doc, [ln for ln in err.splitlines() if ln.startswith("error:")]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A file that is not TOML, a station file with a bad field, a data dir with one corrupt store beside a good
    one, and an empty folder (no key stores)."""
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("garbage = [\n")
    bad_station = tmp_path / "station.toml"
    bad_station.write_text('name = "x"\n[[clients]]\nname = "C1"\nseed = -4\n')
    data = tmp_path / "data"
    KeyStore(data / "keystore" / "C1.sqlite", node="C1", create=True).close()
    corrupt = data / "keystore" / "C3.sqlite"
    corrupt.write_bytes(b"SQLite format 3\x00" + b"garbage" * 100)
    empty = tmp_path / "empty"
    empty.mkdir()
    return {"bad_toml": bad_toml, "bad_station": bad_station, "data": data, "empty": empty, "tmp": tmp_path}


#: (argv with {placeholders} of ``files``, exit status, the command, words the error must hold)
CASES = [
    (["keyrate", "--config", "{bad_toml}", "--json"], 1, "labqfl keyrate", ["bad.toml", "not valid TOML"]),
    (["station", "show", "--config", "{bad_station}", "--json"], 1, "labqfl station show", ["clients.0.seed", "-4"]),
    (["acquire", "--config", "{bad_station}", "--duration", "0.01", "--json"], 1, "labqfl acquire",
     ["clients.0.seed", "-4"]),
    (["acquire", "--config", "{tmp}/none.toml", "--duration", "0.01", "--json"], 1, "labqfl acquire",
     ["none.toml", "not found"]),
    (["keys", "status", "--data-dir", "{empty}", "--json"], 1, "labqfl keys status", ["no key stores under"]),
    (["keys", "ticket", "--data-dir", "{data}", "--node", "C3", "--out", "{tmp}/t.json", "--json"], 1,
     "labqfl keys ticket", ["C3.sqlite", "corrupt"]),
    (["distill", "{bad_toml}", "--json"], 1, "labqfl distill", ["bad.toml", "not a recording"]),
    (["plan", "--graph", "ring-3", "--json"], 1, "labqfl plan", ["ring-k", "k=3"]),
    (["run", "--duration", "0.0001", "--in-process", "--json"], 1, "labqfl run", ["--duration", "too short"]),
    (["node", "certs", "{tmp}/c", "--node", "bad/name", "--json"], 1, "labqfl node certs", ["bad/name"]),
    (["node", "sign-spec", "--certs", "{tmp}/nocerts", "--out", "{tmp}/s.json", "--json"], 1,
     "labqfl node sign-spec", ["ca.pem", "not found"]),
    # usage errors (click's, exit 2): no command of ours ran
    (["run", "--rounds", "0", "--json"], 2, "labqfl run", ["--rounds", "0"]),
    (["keyrate", "--json", "--bogus"], 2, "labqfl keyrate", ["--bogus"]),
    (["node", "preshare", "--json"], 2, "labqfl node preshare", ["Missing option", "--out"]),
]


@pytest.mark.parametrize(("argv", "code", "command", "words"), CASES, ids=[" ".join(c[0][:2]) for c in CASES])
def test_a_failure_with_json_is_one_json_document_naming_the_problem(
        argv: list[str], code: int, command: str, words: list[str], files: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    got, doc, errors = _labqfl([a.format(**files) for a in argv], monkeypatch, capsys)
    assert got == code
    assert errors == [f"error: {doc['error']}"]  # the same one line on stderr
    assert doc == {"error": doc["error"], "exit_code": code, "command": command}
    assert all(w in doc["error"] for w in words), doc["error"]


def test_keys_status_of_a_corrupt_store_names_it_at_the_top_of_its_own_json(
        files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``keys status`` writes its table's JSON even when a store is unreadable (the others are shown): that one
    document gets the failure as its ``error`` too (as distill's), not a second document."""
    got, doc, errors = _labqfl(["keys", "status", "--data-dir", str(files["data"]), "--json"], monkeypatch, capsys)
    assert got == 1
    assert set(doc["nodes"]) == {"C1", "C3"} and "error" not in doc["nodes"]["C1"]
    assert doc["error"] == f"node C3: {doc['nodes']['C3']['error']}" and "C3.sqlite" in doc["error"]
    assert errors == [f"error: {doc['error']}"]


def test_a_distillation_without_key_keeps_its_one_document(
        small_station_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``distill`` puts ``error`` in its own summary JSON once processing began; fail() adds no second one."""
    got, doc, errors = _labqfl(["distill", "--live", "--duration", "0.02", "--block-bits", "1000", "--config",
                                str(small_station_file), "--data-dir", str(tmp_path / "d"), "--out",
                                str(tmp_path / "runs"), "--json"], monkeypatch, capsys)
    assert got == 1
    assert doc["error"].startswith("no pair produced key: ") and "pairs" in doc  # the summary, not a bare error
    assert errors == [f"error: {doc['error']}"]


def test_json_after_double_dash_is_an_argument_not_the_option(
        files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.argv", ["labqfl", "keys", "status", "--data-dir", str(files["empty"]), "--", "--json"])
    with pytest.raises(SystemExit) as exc:
        main()
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and out == ""
    assert err.startswith("error: Got unexpected extra argument (--json)")
