"""``labqfl gui --screenshot``: headless run, PNG written, JSON on stdout."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from labqfl.cli import app


def test_gui_screenshot_writes_png_and_json(qtbot, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "shot.png"
    res = CliRunner().invoke(app, ["gui", "--screenshot", str(out), "--after", "0.5", "--tab", "station,log",
                                   "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "runs"), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    paths = [tmp_path / "shot_station.png", tmp_path / "shot_log.png"]
    assert data["screenshots"] == [str(p) for p in paths] and data["errors"] == []
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000


def test_gui_rejects_unknown_tab(tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = CliRunner().invoke(app, ["gui", "--screenshot", str(tmp_path / "x.png"), "--tab", "plots"])
    assert res.exit_code == 1 and "--tab" in res.output and "station" in res.output


def test_gui_without_a_display_fails_with_one_clear_line(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import sys

    from typer.testing import CliRunner

    from labqfl.cli import app

    if not sys.platform.startswith("linux"):
        return
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    r = CliRunner().invoke(app, ["gui"])
    assert r.exit_code == 1
    assert r.stderr.strip().startswith("error: no display") and len(r.stderr.strip().splitlines()) == 1
