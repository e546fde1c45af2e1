"""Recording.open / blocks check what they read against the stored config (review s31, F3/F4, and the
seeded double distillation): each edited or malformed field is one DataFormatError naming the file
and the field, where before it was read without a word (or failed in slotting naming no file)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from labqfl.sim_backends import create_simulated_instruments, read_recording, record
from labqfl.sim_backends.stations import edit_station

from labqfl.config import StationConfig
from labqfl.contracts.types import acquisition_id
from labqfl.errors import DataFormatError


def _config(randomness: str) -> StationConfig:
    return edit_station(lambda d: d["simulation"].__setitem__("qrng_epoch_base", 0), randomness=randomness)


def _record(tmp_path: Path, randomness: str) -> tuple[Path, StationConfig, Path]:
    cfg = _config(randomness)
    inst = create_simulated_instruments(cfg)
    data = tmp_path / "data"
    p = record(inst["time_tagger"], tmp_path / f"{randomness}.h5", 0.003, cfg, block_duration_s=0.001, data_dir=data)
    return p, cfg, data


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, StationConfig, Path]:
    return _record(tmp_path_factory.mktemp("seeded"), "seeded")


@pytest.fixture(scope="module")
def csprng(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, StationConfig, Path]:
    return _record(tmp_path_factory.mktemp("csprng"), "csprng")


def _edited(src: Path, dst: Path, edit: Callable[[h5py.File], Any]) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def _set_config_text(f: h5py.File, change: Callable[[str], str]) -> None:
    raw = f["config_toml"][()]
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    new = change(text)
    assert new != text
    del f["config_toml"]
    f.create_dataset("config_toml", data=new, dtype=h5py.string_dtype())


def _refused(p: Path, field: str) -> str:
    with pytest.raises(DataFormatError) as ei:
        read_recording(p).close()
    msg = str(ei.value)
    assert msg.startswith(f"{p}: ") and field in msg and "\n" not in msg, msg
    return msg


def test_a_recording_of_the_current_writer_reads_and_names_its_acquisition(seeded: Any, csprng: Any) -> None:
    for p, cfg, data in (seeded, csprng):
        with read_recording(p) as rec:
            assert rec.acquisition_id == acquisition_id(cfg, rec.epoch)
            with h5py.File(p, "r") as f:
                assert f.attrs["acquisition_id"] == rec.acquisition_id
            assert sum(len(b) for b in rec.blocks()) == rec.n_tags
            assert sum(len(b) for b in rec.blocks(max_tags=1000)) == rec.n_tags
            for c in rec.client_names:
                rec.client_log(c, data)


@pytest.mark.parametrize(("attr", "value", "field"), [
    ("rep_rate_hz", 0.0, "rep_rate_hz"),
    ("rep_rate_hz", "fast", "rep_rate_hz"),
    ("sync_channel", 99, "sync_channel"),
    ("sync_channel", "1", "sync_channel"),
    ("detector_channels", "{not json", "detector_channels"),
    ("detector_channels", '{"D0": 3, "D1": 2}', "detector_channels"),
    ("complete", "yes", "complete"),
    ("complete", 1, "complete"),
    ("acquisition_id", "other/0000/epoch-1", "acquisition_id"),
])
def test_root_attributes_that_disagree_with_the_config_are_refused(tmp_path: Path, seeded: Any, attr: str,
                                                                   value: object, field: str) -> None:
    p = _edited(seeded[0], tmp_path / "e.h5", lambda f: f.attrs.__setitem__(attr, value))
    _refused(p, f"attribute {field}")


def test_complete_may_be_a_python_or_numpy_bool_and_older_files_lack_acquisition_id(tmp_path: Path, seeded: Any) -> None:
    p = _edited(seeded[0], tmp_path / "b.h5", lambda f: (f.attrs.__setitem__("complete", np.bool_(True)),
                                                         f.attrs.__delitem__("acquisition_id")))
    with read_recording(p) as rec:
        assert rec.complete and rec.acquisition_id == acquisition_id(seeded[1], rec.epoch)


@pytest.mark.parametrize(("name", "edit", "field"), [
    # the acquisition ID hashes the config's seeds and station name; a seeded log is rebuilt from /clients:
    # an edit on one side once distilled the same raw tags again under a new ID
    ("config seed", lambda f: _set_config_text(f, lambda t: re.sub(r"seed = 1001\n", "seed = 9001\n", t, count=1)),
     "acquisition_id"),
    ("station name", lambda f: _set_config_text(f, lambda t: t.replace('name = "', 'name = "renamed-', 1)),
     "acquisition_id"),
    ("client seed", lambda f: f["clients/C1"].attrs.__setitem__("seed", 9001), "/clients/C1 attribute seed"),
    ("client epoch", lambda f: f["clients/C2"].attrs.__setitem__("epoch", 7), "/clients/C2 attribute epoch"),
    ("seeded generator", lambda f: f["clients/C1"].attrs.__setitem__("generator", "rot13"),
     "/clients/C1 attribute generator"),
    ("randomness", lambda f: f["clients/C1"].attrs.__setitem__("randomness", "quantum"),
     "/clients/C1 attribute randomness"),
    ("probs", lambda f: f["clients/C1"].attrs.__setitem__("intensity_probs", "garbage"),
     "/clients/C1 attribute intensity_probs"),
    ("probs values", lambda f: f["clients/C3"].attrs.__setitem__("intensity_probs", np.array([0.5, 0.25, 0.25])),
     "/clients/C3 attribute intensity_probs"),
    ("basis", lambda f: f["clients/C1"].attrs.__setitem__("basis_x_prob", 0.5), "/clients/C1 attribute basis_x_prob"),
    ("intensities", lambda f: f["clients/C4"].attrs.__setitem__("intensities", np.array([0.3, 0.1, 0.0])),
     "/clients/C4 attribute intensities"),
    ("unknown client", lambda f: f["clients"].copy("C1", "C9"), "/clients/C9"),
])
def test_client_attributes_that_disagree_with_the_config_are_refused(tmp_path: Path, seeded: Any, name: str,
                                                                     edit: Callable[[h5py.File], Any], field: str) -> None:
    p = _edited(seeded[0], tmp_path / "c.h5", edit)
    _refused(p, field)


def test_seeded_config_edits_without_the_acquisition_id_attribute_are_still_refused(tmp_path: Path, seeded: Any) -> None:
    """A file without the root acquisition_id (written before it existed, or with it deleted): a seed edited
    in config_toml alone, or the root epoch alone, no longer matches the seeded clients' attributes."""
    def seed_edit(f: h5py.File) -> None:
        del f.attrs["acquisition_id"]
        _set_config_text(f, lambda t: re.sub(r"seed = 1001\n", "seed = 9001\n", t, count=1))

    _refused(_edited(seeded[0], tmp_path / "s.h5", seed_edit), "/clients/C1 attribute seed")

    def epoch_edit(f: h5py.File) -> None:
        del f.attrs["acquisition_id"]
        f.attrs["epoch"] = int(f.attrs["epoch"]) + 1

    _refused(_edited(seeded[0], tmp_path / "ep.h5", epoch_edit), "attribute epoch")


def test_a_csprng_client_must_name_its_private_logs_generator(tmp_path: Path, csprng: Any) -> None:
    src, _, data = csprng
    p = _edited(src, tmp_path / "g.h5", lambda f: f["clients/C1"].attrs.__setitem__("generator", "rot13"))
    with read_recording(p) as rec:
        with pytest.raises(DataFormatError, match=rf"^{p}: /clients/C1 attribute generator = 'rot13', but .*private log"):
            rec.client_log("C1", data)
        rec.client_log("C2", data)


@pytest.mark.parametrize(("rows", "match"), [
    (np.array([[0.5, 1e3, 2e3]]), r"/tags/lost_intervals is float64\(1, 3\); expected integer rows \(k, 3\)"),
    (np.arange(5), r"/tags/lost_intervals is int64\(5,\)"),
    (np.array([[0, 1, 2, 3]]), r"/tags/lost_intervals is int64\(1, 4\)"),
    (np.array([[-1, 2000, 3000]]), r"/tags/lost_intervals row 0 = \[-1, 2000, 3000\]; expected 0 <= block < 3"),
    (np.array([[0, 5, 10], [3, 5, 10]]), r"/tags/lost_intervals row 1 = \[3, 5, 10\]"),
    (np.array([[1, 2000, 1000]]), r"/tags/lost_intervals row 0 = \[1, 2000, 1000\]; .*begin <= end"),
])
def test_malformed_lost_intervals_are_refused_not_dropped(tmp_path: Path, seeded: Any, rows: np.ndarray, match: str) -> None:
    def put(f: h5py.File) -> None:
        del f["tags/lost_intervals"]
        f.create_dataset("tags/lost_intervals", data=rows)

    p = _edited(seeded[0], tmp_path / "l.h5", put)
    msg = _refused(p, "/tags/lost_intervals")
    assert re.search(match, msg), msg


def test_well_formed_lost_intervals_still_travel_with_their_block(tmp_path: Path, seeded: Any) -> None:
    def put(f: h5py.File) -> None:
        del f["tags/lost_intervals"]
        f.create_dataset("tags/lost_intervals", data=np.array([[1, 5, 5], [2, 7, 9]], dtype=np.int32))

    with read_recording(_edited(seeded[0], tmp_path / "ok.h5", put)) as rec:
        lost = [b.lost_intervals_ps.tolist() for b in rec.blocks()]
    assert lost == [[], [[5, 5]], [[7, 9]]]


def _swap_first_blocks(f: h5py.File) -> None:
    ts, be = f["tags/timestamps"], f["tags/block_end"][...]
    a1, a2 = int(be[0]), int(be[1])
    t = ts[:a2].copy()
    ts[:a2] = np.concatenate([t[a1:], t[:a1]])


def _reverse(lo: int, hi: int) -> Callable[[h5py.File], None]:
    def g(f: h5py.File) -> None:
        ts = f["tags/timestamps"]
        ts[lo:hi] = ts[lo:hi][::-1].copy()
    return g


@pytest.mark.parametrize("max_tags", [None, 700])
def test_timestamps_out_of_order_are_refused_naming_file_dataset_tag_and_block(tmp_path: Path, seeded: Any,
                                                                               max_tags: int | None) -> None:
    """Slotting refused these too, but naming no file ("TagBlock starts before the end of the previous block")."""
    src = seeded[0]
    with h5py.File(src, "r") as f:
        be = f["tags/block_end"][...]
    cases = [
        (_reverse(1000, 1100), 1001, 0),  # inside one chunk: the first decrease
        (_reverse(int(be[0]) + 200, int(be[0]) + 300), int(be[0]) + 201, 1),
    ]
    if max_tags is not None:  # across a split block's chunks: a chunk's first tag before the previous chunk's last
        cases.append((_reverse(max_tags - 1, max_tags + 1), max_tags, 0))
    for k, (edit, tag, block) in enumerate(cases):
        p = _edited(src, tmp_path / f"r{k}.h5", edit)
        with read_recording(p) as rec:
            with pytest.raises(DataFormatError, match=rf"^{p}: /tags/timestamps decrease at tag {tag} \(block {block}\)"):
                list(rec.blocks(max_tags))
    p = _edited(src, tmp_path / "swapped.h5", _swap_first_blocks)
    with read_recording(p) as rec:
        with pytest.raises(DataFormatError, match=rf"^{p}: /tags/timestamps decrease at tag \d+ \(block [01]\)"):
            list(rec.blocks(max_tags))
