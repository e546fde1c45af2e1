"""``labqfl run --nodes`` end to end: the acquisition and distillation across node processes
(optics, detector, one per client), training from the keys those processes stored, the report."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labqfl.cli import app

runner = CliRunner()


def _blocks(store: Path, pair: str) -> dict[str, tuple[int, bytes, str]]:
    """block ID → (nbits, material, run_id) of one node's store, opened read-only."""
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT block_id, nbits, material, run_id FROM blocks WHERE pair = ?", (pair,)).fetchall()
    finally:
        con.close()
    return {r[0]: (int(r[1]), bytes(r[2]), str(r[3])) for r in rows}


def _node_children() -> list[str]:
    """Command lines of this process's children that are labqfl node processes (from /proc)."""
    me, out = os.getpid(), []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue  # exited while we looked
        if ppid == me and "labqfl.nodes" in cmd:
            out.append(cmd)
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to look for leftover node processes")
def test_run_over_node_processes_trains_on_the_keys_both_ends_stored_and_stops_every_node(small_station_file, tmp_path):
    data, runs = tmp_path / "data", tmp_path / "runs"
    r = runner.invoke(app, ["run", "--nodes", "--config", str(small_station_file), "--duration", "0.2", "--rounds", "2",
                            "--eps-sec", "1e-4", "--data-dir", str(data), "--out", str(runs), "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["status"] == "complete"
    acq = m["acquisition"]
    assert acq["path"] == "nodes"
    assert set(acq["exit_codes"]) == {"optics", "detector", "C1", "C2"} and set(acq["exit_codes"].values()) == {0}
    assert set(acq["startup_s"]["nodes"]) == set(acq["exit_codes"])
    assert not _node_children(), "node processes left running after labqfl run --nodes"
    assert m["acquisitions"][-1]["acquisition_id"].startswith("nodes/") and m["acquisitions"][-1]["complete"]

    pair = m["distill"]["pairs"]["C1-C2"]
    assert pair["final_key_bits"] > 0 and pair["status"] == "ok"
    # the keys at both ends: the same block IDs, lengths and material (consumed bits are
    # overwritten alike at both ends), stamped with this run
    b1 = _blocks(data / "keystore" / "C1.sqlite", "C1-C2")
    b2 = _blocks(data / "keystore" / "C2.sqlite", "C1-C2")
    mine = {b for b, (_, _, run_id) in b1.items() if run_id == m["run"]}
    assert mine and set(b1) == set(b2)
    for b in b1:
        assert b1[b] == b2[b], f"block {b} differs between C1's and C2's stores"

    # training drew its masks from those stores: consumed = distilled − remaining
    t = m["train"]
    assert t["rounds_run"] == 2 and t["key_bits_per_pair_total"] == 2 * 8 * t["n_params"]
    kp = m["keys"]["pairs"]["C1-C2"]
    assert kp["distilled_bits"] == pair["delivered_bits"] > 0
    assert kp["consumed_bits"] == t["key_bits_per_pair_total"] == kp["distilled_bits"] - kp["remaining_bits"]
    assert kp["provenance"]["weakest"]["physical_layer"] == "simulated"
    assert t["key_provenance"]["C1-C2"]["blocks"]
    html = (Path(m["run_dir"]) / "report.html").read_text()
    assert "acquisition: nodes" in html and "Node processes, start-up" in html
    assert (Path(m["run_dir"]) / "nodes" / "C1.log").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to look for leftover node processes")
def test_ctrl_c_during_the_node_acquisition_stops_every_node_and_resume_makes_a_new_acquisition(
        small_station_file, tmp_path, monkeypatch):
    """Ctrl-C while the nodes run: every node gets SIGTERM and is waited for, the job is
    'interrupted' with the acquisition recorded incomplete; the resumed job makes a new one."""
    import labqfl.nodes.launch as launch
    from labqfl.config import load_station_config
    from labqfl.mainjob import JobSettings, MainJob

    seen: list[str] = []

    def interrupted(*a: object, **kw: object) -> dict[str, object]:
        assert len(_node_children()) == 4  # optics, detector, C1, C2 are up
        seen.append(str(kw["acq"]))
        raise KeyboardInterrupt

    monkeypatch.setattr(launch, "run_acquisition", interrupted)
    cfg = load_station_config(small_station_file)
    job = MainJob.create(cfg, JobSettings(duration_s=0.2, rounds=1, eps_sec=1e-4, nodes=True,
                                          data_dir=str(tmp_path / "data")), tmp_path / "runs")
    with pytest.raises(KeyboardInterrupt):
        job.run()
    assert not _node_children(), "node processes left running after Ctrl-C"
    assert seen and job.state["status"] == "interrupted" and job.state["phases"]["acquire"] == "running"
    assert job.state["acquisitions"] == [{"acquisition_id": seen[0], "started_utc": job.state["acquisitions"][0]["started_utc"],
                                          "complete": False}]

    again: list[str] = []

    def stop_again(*a: object, **kw: object) -> dict[str, object]:
        again.append(str(kw["acq"]))
        raise KeyboardInterrupt

    monkeypatch.setattr(launch, "run_acquisition", stop_again)
    resumed = MainJob.resume(job.path)
    assert resumed.settings.nodes
    with pytest.raises(KeyboardInterrupt):
        resumed.run()
    assert again and again[0] != seen[0] and not _node_children()
    assert [a["acquisition_id"] for a in resumed.state["acquisitions"]] == [seen[0], again[0]]
