"""`labqfl run` end to end at small scale, report numbers vs component commands, and interrupt /
resume that never uses a key bit twice nor distils an acquisition twice."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.config import load_station_config
from labqfl.keystore import KeyStore
from labqfl.mainjob import JobSettings, MainJob
from labqfl.provenance import LOCAL_ENGINE_TRUST

runner = CliRunner()
SMALL = dict(duration_s=0.2, rounds=2, eps_sec=1e-4)


def _intervals(refs):
    out = {}
    for block_id, off, length in refs:
        out.setdefault(block_id, []).append((off, off + length))
    return out


def _assert_disjoint(all_refs):
    for block_id, iv in _intervals(all_refs).items():
        iv.sort()
        for (a0, a1), (b0, b1) in zip(iv, iv[1:], strict=False):
            assert a1 <= b0, f"key bits of block {block_id} handed out twice: [{a0},{a1}) and [{b0},{b1})"


def test_run_end_to_end_report_matches_component_commands(small_station_file, tmp_path):
    data, runs = tmp_path / "data", tmp_path / "runs"
    t0 = time.perf_counter()
    r = runner.invoke(app, ["run", "--config", str(small_station_file), "--duration", "0.2", "--rounds", "2",
                            "--eps-sec", "1e-4", "--in-process", "--data-dir", str(data), "--out", str(runs), "--json"])
    wall = time.perf_counter() - t0
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["status"] == "complete" and m["key_source"] == "qkd" and m["schema"] == "labqfl.run/1"
    # wall seconds per phase of this call, in the JSON and in metrics.json: each phase, none negative,
    # their sum within the job's total and that within the command's wall time
    ph = m["phases_s"]
    assert set(ph) == {"setup", "acquire", "train", "report", "total_s"} and min(ph.values()) >= 0
    assert ph["acquire"] > 0 and ph["train"] > 0 and ph["report"] > 0
    assert sum(v for k, v in ph.items() if k != "total_s") <= ph["total_s"] + 0.01 and ph["total_s"] <= wall
    assert json.loads((Path(m["run_dir"]) / "metrics.json").read_text())["phases_s"] == ph
    run_dir = Path(m["run_dir"])
    html = (run_dir / "report.html").read_text()
    for png in ("count_rates.png", "qber.png", "key_rate.png", "key_pools.png", "training.png"):
        assert (run_dir / "plots" / png).stat().st_size > 1000
    assert "data:image/png;base64," in html and "C1-C2" in html
    cells = re.findall(r"<td>(.*?)</td>", html, flags=re.S)
    assert cells and all(c.strip() for c in cells) and "n/a" not in cells, f"report.html has empty cells: {cells}"
    # the "Run summary" of a complete run: every item has its value in metrics.json, none n/a, and the wall time
    # is this call's phases_s (review s38 user F1: the report was written before phases_s, "wall time: n/a")
    summary = dict(re.findall(r"<li>([^<:]+): (.*?)</li>", html))
    assert summary and [k for k, v in summary.items() if "n/a" in v] == [], summary
    shown = re.fullmatch(r"([\d.]+) s \((.*)\)", summary["wall time"])
    assert shown and abs(float(shown[1]) - ph["total_s"]) <= 0.2, summary["wall time"]
    assert [p.split()[0] for p in shown[2].split(", ")] == [k for k in ph if k != "total_s"]
    pair = m["distill"]["pairs"]["C1-C2"]
    assert pair["final_key_bits"] > 0 and pair["delivered_bits"] > 0
    t = m["train"]
    assert t["rounds_run"] == 2 and t["key_source"] == "qkd" and t["final_test_accuracy"] > 0.8
    # masks: q bits per parameter per round, one pair
    assert t["key_bits_per_pair_total"] == 2 * 8 * t["n_params"]
    # the report's key numbers are what `labqfl keys status` says about the stores
    ks = runner.invoke(app, ["keys", "status", "--data-dir", str(data), "--json"])
    assert ks.exit_code == 0, ks.output
    status = json.loads(ks.stdout)
    text = json.dumps(status)
    kp = m["keys"]["pairs"]["C1-C2"]
    assert kp["distilled_bits"] == kp["store_available_bits"] + kp["store_consumed_bits"]
    assert kp["auth_consumed_bits"] == pair["auth_key_bits"] > 0  # classical-channel authentication, from the stores
    assert kp["auth_consumed_run_bits"] == pair["auth_key_bits"]  # this run's share (fresh stores: all of it)
    assert str(kp["store_available_bits"]) in text and str(kp["store_consumed_bits"]) in text
    # provenance (issue 16 item 5): simulated station -> no output calls the keys information-theoretically secure
    prov = kp["provenance"]
    assert prov["weakest"]["physical_layer"] == "simulated" and prov["information_theoretic"] is False
    assert prov["security"] in t["security"]  # the masks rest on the keys they consumed (this run's blocks)
    assert t["security"].endswith(LOCAL_ENGINE_TRUST)  # review s34 F8: --in-process: one process holds every pad
    assert set(t["key_provenance"]) == {"C1-C2"} and t["key_provenance"]["C1-C2"]["blocks"]
    for out in (r.stdout, html, (run_dir / "metrics.json").read_text(), ks.stdout):
        assert "information-theoretically secure" not in out and "information-theoretic one-time pad" not in out
    assert "Key provenance" in html


def test_interrupted_training_resumes_with_fresh_keys(small_station_file, tmp_path, monkeypatch):
    cfg = load_station_config(small_station_file)
    data = tmp_path / "data"
    handed: list = []
    real_take, real_exact = KeyStore.take, KeyStore.take_exact

    def spy_take(self, *a, **kw):
        km = real_take(self, *a, **kw)
        if km.purpose != "auth":  # the distiller's own authentication key (pool "auth") is not a mask
            handed.extend(km.refs)
        return km

    def spy_exact(self, *a, **kw):  # the key source takes the master's (C1's) bits by key ID
        km = real_exact(self, *a, **kw)
        if km.purpose != "auth" and self.node == "C1":
            handed.extend(km.refs)
        return km

    monkeypatch.setattr(KeyStore, "take", spy_take)
    monkeypatch.setattr(KeyStore, "take_exact", spy_exact)
    import labqfl.fl.training as training

    real_eval = training.evaluate
    calls = {"n": 0}

    def failing_eval(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # initial eval, round 1, then *inside* round 2 after its masks were drawn
            raise KeyboardInterrupt
        return real_eval(*a, **kw)

    monkeypatch.setattr(training, "evaluate", failing_eval)
    job = MainJob.create(cfg, JobSettings(**SMALL, data_dir=str(data)), tmp_path / "runs")
    with pytest.raises(KeyboardInterrupt):
        job.run()
    state = json.loads((job.path / "state.json").read_text())
    assert state["status"] == "interrupted" and state["phases"]["acquire"] == "done"
    assert state["train"]["rounds_done"] == 1
    assert json.loads((job.path / "metrics.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(training, "evaluate", real_eval)
    m = MainJob.resume(job.path).run()
    assert m["status"] == "complete" and m["train"]["rounds_run"] == 2 and m["train"]["interrupted_rounds"] == 1
    per_round = 8 * m["train"]["n_params"]
    assert len({r[0] for r in handed}) >= 1
    assert sum(r[2] for r in handed) == 3 * per_round  # rounds 1, 2 (interrupted: spent) and 2 again
    _assert_disjoint(handed)
    acc = KeyStore.for_node("C1", data).accounting()["C1-C2"]
    assert sum(v for k, v in acc["consumed"].items() if k != "auth") == 3 * per_round
    # the ledger of metrics.json counts the interrupted attempt's burnt pads (review s35 chaos F7)
    kp = m["keys"]["pairs"]["C1-C2"]
    assert kp["consumed_bits"] == 2 * per_round and kp["spent_other_bits"] == per_round
    assert kp["consumed_bits"] + kp["spent_other_bits"] == kp["distilled_bits"] - kp["remaining_bits"]
    on_disk = json.loads((job.path / "metrics.json").read_text())
    assert on_disk["phases"]["report"] == "done"  # it said "pending" while status said complete
    # a resume of the complete run leaves it as it is: it recounted it against the stores of the day,
    # wiped its phase timings, added an attempt and rebuilt the report
    files = {p.name: p.read_bytes() for p in job.path.iterdir() if p.is_file() and p.name != "run.log"}
    assert MainJob.resume(job.path).run() == on_disk
    assert {p.name: p.read_bytes() for p in job.path.iterdir() if p.is_file() and p.name != "run.log"} == files


def test_interrupted_acquisition_is_discarded_and_never_distilled_twice(small_station_file, tmp_path):
    cfg = load_station_config(small_station_file)
    data = tmp_path / "data"
    seen = {"n": 0}

    def stop_in_acquisition(phase, done, total, msg):
        if phase == "acquire":
            seen["n"] += 1
            if seen["n"] == 3:
                raise KeyboardInterrupt

    job = MainJob.create(cfg, JobSettings(**SMALL, data_dir=str(data)), tmp_path / "runs", progress=stop_in_acquisition)
    with pytest.raises(KeyboardInterrupt):
        job.run()
    assert KeyStore.for_node("C1", data).accounting() == {}  # nothing half-distilled was stored
    m = MainJob.resume(job.path).run()
    acqs = m["acquisitions"]
    assert [a["complete"] for a in acqs] == [False, True]
    assert acqs[0]["acquisition_id"] != acqs[1]["acquisition_id"]  # a fresh acquisition, new QRNG epoch
    blocks = KeyStore.for_node("C1", data).blocks()
    assert {b["block_id"] for b in blocks} == {b["block_id"] for b in KeyStore.for_node("C2", data).blocks()}


def test_resume_rejects_foreign_folder(tmp_path):
    from labqfl.errors import DataFormatError

    (tmp_path / "x").mkdir()
    with pytest.raises(DataFormatError, match="not a `labqfl run` folder"):
        MainJob.resume(tmp_path / "x")


def test_bad_settings_are_refused(tmp_path):
    from labqfl.errors import ConfigError

    with pytest.raises(ConfigError, match="task 'nope' unknown"):
        MainJob.create(load_station_config(), JobSettings(task="nope"), tmp_path)
    with pytest.raises(ConfigError, match=r"^--q must be one of 8, 16, 32 \(bits per masked value\), got 12$"):
        MainJob.create(load_station_config(), JobSettings(q=12), tmp_path)
