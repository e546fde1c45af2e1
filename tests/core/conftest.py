from __future__ import annotations

import ast
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from labqfl.config import default_station_text


@pytest.fixture
def station_file(tmp_path: Path):
    """Write a station TOML built from the embedded default with text edits applied."""

    def make(replace: dict[str, str] | None = None, append: str = "", text: str | None = None) -> Path:
        body = default_station_text() if text is None else text
        for old, new in (replace or {}).items():
            assert old in body, f"test setup: {old!r} not in default station"
            body = body.replace(old, new, 1)
        p = tmp_path / "station.toml"
        p.write_text(body + append, encoding="utf-8")
        return p

    return make


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


@pytest.fixture(scope="session")
def parse_source() -> Callable[[Path], ast.Module]:
    """``parse_source(path)`` → the module's syntax tree, parsed once per session: the import graph, the
    function-length and the one-definition checks each walk every module of the five source folders
    (read the trees, never change them)."""
    return functools.cache(_parse)


@pytest.fixture()
def drawn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """The axes each plot of :func:`labqfl.report.make_plots` was drawn on, by file name (instead of writing PNGs),
    and under ``"run"`` a run folder stand-in to pass it (the report tests)."""
    import matplotlib.pyplot as plt

    import labqfl.report as report

    axes: dict[str, Any] = {}

    def fig(path: Path, draw: Any, figsize: tuple[float, float] = (7.0, 3.6)) -> Path:
        f, ax = plt.subplots(figsize=figsize)
        draw(ax)
        axes[path.name] = ax
        return path

    class Run:
        def plot_path(self, name: str) -> Path:
            return tmp_path / name

    monkeypatch.setattr(report, "_fig", fig)
    axes["run"] = Run()
    return axes
