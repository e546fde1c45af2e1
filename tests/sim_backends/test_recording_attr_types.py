"""A recording root attribute of the wrong type or missing was refused as "corrupt recording (ValueError: invalid
literal for int() with base 10: 'garbage')" or with h5py's "can't locate attribute" text, naming no attribute
(review s36 input F7). Now one DataFormatError names the file, the attribute, its value and what was expected."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import pytest
from labqfl.sim_backends import create_simulated_instruments, read_recording, record
from labqfl.sim_backends.stations import edit_station

from labqfl.errors import DataFormatError


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("attrs")
    cfg = edit_station(lambda d: d["simulation"].__setitem__("qrng_epoch_base", 0), randomness="seeded")
    inst = create_simulated_instruments(cfg)
    return record(inst["time_tagger"], tmp / "r.h5", 0.003, cfg, block_duration_s=0.001, data_dir=tmp / "data")


@pytest.mark.parametrize(("attr", "value", "expect"), [
    ("epoch", "garbage", "attribute epoch = 'garbage'; expected an integer"),
    ("epoch", 1.5, "attribute epoch = 1.5; expected an integer"),
    ("format_version", "garbage", "attribute format_version = 'garbage'; expected an integer"),
    ("duration_s", "garbage", "attribute duration_s = 'garbage'; expected a number"),
    ("duration_s", None, "attribute duration_s is missing"),
    ("epoch", None, "attribute epoch is missing"),
])
def test_a_bad_root_attribute_is_named(rec: Path, tmp_path: Path, attr: str, value: object, expect: str) -> None:
    bad = tmp_path / "bad.h5"
    shutil.copy(rec, bad)
    with h5py.File(bad, "r+") as f:
        if value is None:
            del f.attrs[attr]
        else:
            f.attrs[attr] = value
    with pytest.raises(DataFormatError) as ei:
        read_recording(bad)
    msg = str(ei.value)
    assert msg.startswith(f"{bad}: {expect}"), msg


def test_the_untouched_recording_reads(rec: Path) -> None:
    with read_recording(rec) as r:
        assert r.epoch == 0 and r.duration_s > 0
