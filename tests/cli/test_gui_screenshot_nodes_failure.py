"""``labqfl gui --screenshot`` when the Nodes tab's run fails: every tab's picture is still saved (the Nodes
tab shows the panel's error), the failure is one error line and the exit code is 1. It used to raise
before any picture was taken: no PNG at all. A duration the block-size rule refuses makes the Nodes
panel fail before any node process starts."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from labqfl.cli import app

PNG = b"\x89PNG\r\n\x1a\n"
TABS = ("station", "nodes", "log")


#: a folder name that makes every "saved PATH" line longer than 80 columns (xdist's popen-gwN folders did
#: in CI): the paths must not be broken over two lines
LONG = "screenshots-of-a-failed-nodes-run-" * 2


def _invoke(tmp_path, *extra: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["gui", "--screenshot", str(tmp_path / LONG / "shot.png"), "--after", "0.5",
                                    "--tab", ",".join(TABS), "--duration", "0.01", "--data-dir",
                                    str(tmp_path / "data"), "--out", str(tmp_path / "runs"), *extra],
                              env={"COLUMNS": "80"})


def test_a_failed_nodes_run_still_saves_every_tab_and_fails_in_one_line(qtbot, tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = _invoke(tmp_path)
    assert res.exit_code == 1, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, res.output
    assert errors[0].startswith("error: Nodes panel: start local set: the acquisition (0.01 s) is too short"), errors
    assert "error shown during the run: Nodes" not in res.output  # said once, in the error line
    for tab in TABS:
        p = tmp_path / LONG / f"shot_{tab}.png"
        assert f"saved {p}" in res.output
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 10_000


def test_the_json_report_names_the_nodes_failure(qtbot, tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = _invoke(tmp_path, "--json")
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout)
    assert doc["nodes"] is None and doc["nodes_error"].startswith("Nodes panel: start local set: the acquisition")
    assert doc["screenshots"] == [str(tmp_path / LONG / f"shot_{t}.png") for t in TABS]
    assert all((tmp_path / LONG / f"shot_{t}.png").read_bytes()[:8] == PNG for t in TABS)
