"""``labqfl bench --list`` puts each benchmark's target on a line of its own, named (review s36 F27: "…no residual
error (issue 23)  ≥ 50 Mbit/s with f ≤ 1.04" ran the target on from the description)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from labqfl.bench import registry
from labqfl.cli import app
from labqfl.cli import common as cli_common

runner = CliRunner()


@pytest.mark.parametrize("width", [80, 200])
def test_each_target_is_on_its_own_named_line(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_common.console, "_width", width)
    r = runner.invoke(app, ["bench", "--list"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.stderr.split())
    for name, e in registry().items():
        assert f"{name}: {' '.join(e.description.split())} target: {' '.join(e.target.split())}" in text, name
    assert sum(ln.startswith("  target: ") for ln in r.stderr.splitlines()) == len(registry()), r.stderr
