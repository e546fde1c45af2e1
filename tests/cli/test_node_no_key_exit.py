"""``labqfl node acquire`` / ``node up`` judge what the acquisition gave (review s32 M2(a)): no pair with key →
exit 1, one ``error: no pair produced key: <pair: reason; …>`` line, the JSON document (still one) with an
``error`` field; some pairs without key → exit 0 with a ``warning:`` line naming them; every pair with key →
exit 0, no warning. Before, every one of these exited 0 without a word beyond the table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labqfl.cli import app

runner = CliRunner()
PAIRS = ["C1-C2", "C1-C3", "C1-C4", "C2-C3", "C2-C4", "C3-C4"]
AUTH = ("block not started: no authentication key shared with {b}: pair {p}: 0 bits available for purpose "
        "'auth'")


def _pair(p: str, final: int) -> dict[str, Any]:
    b = p.split("-")[1]
    return {"final_key_bits": final, "delivered_bits": final, "sifted_bits": 200_000, "blocks": 1,
            "aborted_blocks": 0 if final else 1, "abort_reasons": [] if final else [AUTH.format(b=b, p=p)],
            "secure_key_rate_bps": float(final), "error_rate": {"X_key": 0.005}, "failed": "",
            "round_trips": 3, "times_s": {"sift": 0.1}}


def _result(finals: dict[str, int]) -> dict[str, Any]:
    return {"acquisition": "nodes/test", "duration_s": 1.0, "wall_s": 2.0, "acquisition_wall_s": 1.5,
            "detector": {}, "pairs": {p: _pair(p, finals.get(p, 0)) for p in PAIRS}}


ACQUIRE = ["node", "acquire", "--certs", "nocerts", "--detector", "127.0.0.1:7001", "--optics", "127.0.0.1:7000",
           *[f"--client=C{i}=127.0.0.1:700{i + 1}" for i in range(1, 5)], "--duration", "1"]


@pytest.fixture
def acquired(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    finals: dict[str, int] = {}
    monkeypatch.setattr("labqfl.nodes.launch.run_acquisition", lambda *a, **k: _result(finals))
    return finals


def test_node_acquire_where_no_pair_made_key_exits_1_with_one_error_line_naming_each_pair(acquired) -> None:
    r = runner.invoke(app, [*ACQUIRE, "--json"])
    assert r.exit_code == 1, (r.output, r.exception)
    doc = json.loads(r.stdout)  # still exactly one JSON document
    assert doc["error"].startswith("no pair produced key: C1-C2: block not started: no authentication key")
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0] == f"error: {doc['error']}"
    assert all(f"{p}: block not started" in errors[0] for p in PAIRS)
    r = runner.invoke(app, ACQUIRE)  # the table for humans, then the same line
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.splitlines()[-1].startswith("error: no pair produced key: C1-C2: ")


def test_node_acquire_where_some_pairs_made_key_exits_0_with_a_warning_naming_the_others(acquired) -> None:
    acquired.update({p: 30_000 for p in PAIRS if p != "C1-C3" and p != "C2-C4"})
    r = runner.invoke(app, [*ACQUIRE, "--json"])
    assert r.exit_code == 0, (r.output, r.exception)
    doc = json.loads(r.stdout)
    assert "error" not in doc and doc["warning"].startswith("no key from 2 of 6 pairs: C1-C3: block not started")
    assert "C2-C4: block not started" in doc["warning"] and "C1-C2" not in doc["warning"]
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")] == [f"warning: {doc['warning']}"]


def test_node_acquire_where_every_pair_made_key_says_nothing_more(acquired) -> None:
    acquired.update({p: 30_000 for p in PAIRS})
    r = runner.invoke(app, [*ACQUIRE, "--json"])
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert "error" not in doc and "warning" not in doc and "warning" not in r.stderr


def test_node_up_where_no_pair_made_key_exits_1_too(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from labqfl.nodes.launch import summarize

    res = _result({})
    res["pairs"]["C3-C4"]["failed"] = "client C3: connection reset"
    res["pairs"]["C3-C4"]["abort_reasons"] = []
    monkeypatch.setattr("labqfl.nodes.launch.up", lambda *a, **k: summarize(res))
    r = runner.invoke(app, ["node", "up", "--duration", "1", "--workdir", str(tmp_path), "--json"])
    assert r.exit_code == 1, (r.output, r.exception)
    doc = json.loads(r.stdout)
    assert doc["block_rule"] is not None and "C3-C4: client C3: connection reset" in doc["error"]
    assert r.stderr.splitlines()[-1] == f"error: {doc['error']}"


def test_node_supernode_with_a_data_folder_that_does_not_exist_is_refused_before_it_is_made(tmp_path) -> None:
    """Review s32 L11: before, it started and created DIR/nodes/C2/fl."""
    missing = tmp_path / "emptyd"
    r = runner.invoke(app, ["node", "supernode", "--name", "C2", "--data", str(missing), "--certs", str(tmp_path),
                            "--server", "127.0.0.1:9"])
    assert r.exit_code == 1, (r.output, r.exception)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {missing / 'keystore' / 'C2.sqlite'}: key store of client C2")
    assert "does not exist" in lines[0] and not missing.exists()


def test_node_supernode_with_a_data_folder_without_the_store_warns(monkeypatch, tmp_path) -> None:
    started: list[str] = []
    monkeypatch.setattr("labqfl.nodes.supernode.main", lambda name, *a, **k: started.append(name) or 0)
    r = runner.invoke(app, ["node", "supernode", "--name", "C2", "--data", str(tmp_path), "--certs", str(tmp_path),
                            "--server", "127.0.0.1:9"])
    assert r.exit_code == 0 and started == ["C2"], (r.output, r.exception)
    assert r.stderr.startswith(f"warning: {tmp_path / 'keystore' / 'C2.sqlite'}: key store of client C2 not found")
    (tmp_path / "keystore").mkdir()
    (tmp_path / "keystore" / "C2.sqlite").write_bytes(b"")
    r = runner.invoke(app, ["node", "supernode", "--name", "C2", "--data", str(tmp_path), "--certs", str(tmp_path),
                            "--server", "127.0.0.1:9"])
    assert r.exit_code == 0 and r.stderr == ""


def test_node_up_json_has_the_detectors_counts_as_objects_and_no_removed_workdir(
        monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Review s34 L4: detector.channel_counts and detector.slotting were JSON text inside the JSON, and workdir
    named the temporary folder, gone once the command returned."""
    from pathlib import Path

    from labqfl.nodes.launch import summarize, up

    res = _result({p: 30_000 for p in PAIRS})
    slotting = {"slots": 1000, "dropped_no_sync": 0, "dropped_late": 2}
    res["detector"] = {"slots": 1000, "tags": 40, "dropped": 2, "channel_counts": json.dumps({1: 25, 2: 15}),
                       "slotting": json.dumps(slotting)}
    given: list[Path] = []

    def fake_up(station, duration, workdir, **kw):  # type: ignore[no-untyped-def]
        given.append(Path(workdir))
        assert Path(workdir).is_dir()
        return {**summarize(res), "workdir": str(workdir)}

    assert up.__name__ == "up"
    monkeypatch.setattr("labqfl.nodes.launch.up", fake_up)
    r = runner.invoke(app, ["node", "up", "--duration", "1", "--json"])
    assert r.exit_code == 0, (r.output, r.exception)
    doc = json.loads(r.stdout)
    assert doc["detector"]["channel_counts"] == {"1": 25, "2": 15}
    assert doc["detector"]["slotting"] == slotting and doc["detector"]["slots"] == 1000
    assert doc["workdir"] is None and not given[0].exists()
    kept = runner.invoke(app, ["node", "up", "--duration", "1", "--workdir", str(tmp_path), "--json"])
    assert kept.exit_code == 0, kept.output
    assert json.loads(kept.stdout)["workdir"] == str(tmp_path)  # a folder it keeps: named


def test_node_up_reports_its_start_run_and_stop_times_and_their_sum(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    """Docs review s34 L4: ``wall_s`` (acquisition + distillation) read as the command's time (6.2 s of 43.9);
    ``up`` now also gives the nodes' stop (``stop_s``) and ``total_wall_s`` = start + run + stop."""
    from labqfl.nodes import launch

    res = _result({})
    ticks = iter([0.0, 2.0, 5.0, 6.5])  # t0, after start, before stop, after stop

    class Net:
        def __init__(self, *a: Any, **k: Any) -> None:
            pass

        def start(self) -> None:
            pass

        def acquire(self, duration: float) -> dict[str, Any]:
            return res

        def stop(self) -> dict[str, int]:
            return {"C1": 0}

    monkeypatch.setattr(launch, "LocalNetwork", Net)
    monkeypatch.setattr(launch.time, "perf_counter", lambda: next(ticks))
    out = launch.up(None, 1.0, tmp_path)
    assert (out["startup_s"], out["stop_s"], out["total_wall_s"]) == (2.0, 1.5, 6.5)
