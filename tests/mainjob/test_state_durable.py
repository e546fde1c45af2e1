"""``state.json`` is written durably (issue 19): the temporary file is flushed and fsync-ed with the whole new
state in it, then renamed over ``state.json``, then the run folder is fsync-ed (the rename lives in the
folder's entry). Before, it was written and renamed with no fsync at all: a crash or power cut right after
could leave it empty or lose the phase just recorded (the resume point of the run)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from labqfl.config import load_station_config
from labqfl.mainjob import STATE_FILE, JobSettings, MainJob

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="reads what an fsync-ed descriptor holds "
                                "through /proc/self/fd")


@pytest.fixture
def job(small_station_file: Path, tmp_path: Path) -> MainJob:
    settings = JobSettings(duration_s=0.015, rounds=2, q=32, eps_sec=1e-4, data_dir=str(tmp_path / "k"))
    made = MainJob.create(load_station_config(small_station_file), settings, tmp_path / "runs")
    made.run_record.close()
    return made


def test_state_is_fsynced_then_renamed_then_its_folder_fsynced(job: MainJob, monkeypatch: pytest.MonkeyPatch) -> None:
    state_path = job.path / STATE_FILE
    events: list[tuple[Any, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        if os.path.samestat(st, os.stat(job.path)):
            events.append(("fsync", "folder"))
        else:  # the file: what it holds now is what reached the disk
            with open(f"/proc/self/fd/{fd}", encoding="utf-8") as f:
                events.append(("fsync", "file", os.readlink(f"/proc/self/fd/{fd}"), f.read()))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    job.state["phases"]["acquire"] = "running"
    job._save_state()
    monkeypatch.undo()

    tmp = events[0][2]  # a temporary file beside state.json (labqfl.durable: its name is unique per writer)
    assert Path(tmp).parent == job.path and tmp != str(state_path)
    assert [e[:2] for e in events] == [("fsync", "file"), ("replace", tmp), ("fsync", "folder")], events
    assert events[1][2] == str(state_path)
    assert json.loads(events[0][3]) == job.state  # flushed whole before the fsync
    assert json.loads(state_path.read_text())["phases"]["acquire"] == "running"
    assert not Path(tmp).exists()


def test_a_folder_that_cannot_be_synced_still_gets_the_synced_state(job: MainJob,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Some filesystems refuse an fsync of a folder (EINVAL): the state is written all the same."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.path.samestat(os.fstat(fd), os.stat(job.path)):
            raise OSError(22, "Invalid argument")
        synced.append("file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    job.state["attempts"] = 7
    job._save_state()
    monkeypatch.undo()
    assert synced == ["file"]
    assert json.loads((job.path / STATE_FILE).read_text())["attempts"] == 7
