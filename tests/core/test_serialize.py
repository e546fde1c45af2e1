"""labqfl.serialize: the JSON policy shared by run folders, calibration files and ``--json``."""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from labqfl.config import load_station_config, parse_station_config
from labqfl.serialize import dump_toml, to_jsonable


@dataclass
class _Row:
    rate: float
    bits: np.ndarray


def test_to_jsonable_converts_numpy_dataclasses_paths_and_non_finite() -> None:
    out = to_jsonable({"a": np.int64(3), 2: np.float32(0.5), "ok": np.bool_(True), "nan": math.nan,
                       "inf": np.float64(np.inf), "p": Path("/tmp/x"), "row": _Row(1.5, np.arange(3, dtype=np.uint8)),
                       "t": (1, 2)})
    assert out == {"a": 3, "2": 0.5, "ok": True, "nan": None, "inf": None, "p": "/tmp/x",
                   "row": {"rate": 1.5, "bits": [0, 1, 2]}, "t": [1, 2]}
    json.dumps(out, allow_nan=False)  # strict JSON


def test_to_jsonable_refuses_raw_bytes() -> None:
    with pytest.raises(TypeError, match="raw bytes"):
        to_jsonable({"key": b"\x00\x01"})


def test_dump_toml_round_trips_a_station() -> None:
    cfg = load_station_config()
    text = dump_toml(cfg.model_dump(mode="json", exclude_none=True))
    assert parse_station_config(tomllib.loads(text), "round-trip") == cfg
