from __future__ import annotations

from pathlib import Path

import pytest

from labqfl.config import load_station_config
from labqfl.serialize import dump_toml


@pytest.fixture
def small_station_file(tmp_path: Path) -> Path:
    """Two clients on a short loop with balanced choices: 0.2 s of acquisition gives key at
    ε_sec = 1e-4 (the same station as tests/mainjob)."""
    d = load_station_config().model_dump(mode="json", exclude_none=True)
    d["name"] = "small-test-station"
    d["clients"] = d["clients"][:2]
    d["loop"]["segments_km"] = [0.2, 0.2, 0.2]
    for c in d["clients"]:
        c["insertion_loss_db"] = 0.2
        c["intensity_probs"] = [0.6, 0.2, 0.2]
        c["basis_x_prob"] = 0.7
    p = tmp_path / "small_station.toml"
    p.write_text(dump_toml(d), encoding="utf-8")
    return p
