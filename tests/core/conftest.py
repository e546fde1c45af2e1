from __future__ import annotations

from pathlib import Path

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
