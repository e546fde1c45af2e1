"""Review s40 user LOW-4: no command rebuilt a run's report (``labqfl run --resume`` of a complete run reprinted the
summary but wrote no report.html; ``distill`` and ``train`` folders had none). ``labqfl report RUN_DIR`` rebuilds
report.html and the plots from the folder's metrics.json; a bad RUN_DIR is one error line and exit 1.
LOW-2: ``-v`` after the command ("No such option '-v'") does what it does before it. LOW-3: ``keys status`` is one
table row per store and pair, numbers with thousands separators, one provenance line where all share it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import labqfl.cli
from labqfl.cli import app

runner = CliRunner()
RUN_PLOTS = ["count_rates.png", "key_pools.png", "key_rate.png", "qber.png", "training.png"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, small_station_writer: Any) -> dict[str, Path]:
    """A complete small ``labqfl run --in-process`` (1 round), a ``distill --live`` and a ``train`` run folder, and the
    key stores the run wrote to (about 15 s)."""
    tmp = tmp_path_factory.mktemp("report-cmd")
    station = small_station_writer(tmp)
    r = runner.invoke(app, ["run", "--config", str(station), "--duration", "0.2", "--rounds", "1", "--eps-sec", "1e-4",
                            "--in-process", "--data-dir", str(tmp / "data"), "--out", str(tmp / "runs"), "--json"])
    assert r.exit_code == 0, r.output
    run = Path(json.loads(r.stdout)["run_dir"])
    r = runner.invoke(app, ["distill", "--live", "--duration", "0.2", "--config", str(station), "--data-dir",
                            str(tmp / "d2"), "--out", str(tmp / "runs"), "--json"])
    assert r.exit_code == 0, r.output
    distill = Path(json.loads(r.stdout)["run"])
    r = runner.invoke(app, ["train", "--rounds", "1", "--out", str(tmp / "runs"), "--json"])
    assert r.exit_code == 0, r.output
    train = Path(json.loads(r.stdout)["run_dir"])
    return {"run": run, "distill": distill, "train": train, "data": tmp / "data", "tmp": tmp}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _page(path: Path) -> str:
    """report.html without its images and its wall time (the run's report was written before its report phase
    ended; metrics.json holds the phases' final times)."""
    text = re.sub(r"data:image/png;base64,[^']*", "", path.read_text(encoding="utf-8"))
    return re.sub(r"<li>wall time: [^<]*</li>", "", text)


def test_rebuilds_a_run_report_and_its_plots(folders: dict[str, Path], tmp_path: Path) -> None:
    run = _copy(folders["run"], tmp_path / folders["run"].name)
    original = _page(run / "report.html")
    (run / "report.html").unlink()
    for p in (run / "plots").iterdir():
        p.unlink()
    r = runner.invoke(app, ["report", str(run), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["report"] == str(run / "report.html") and doc["run_dir"] == str(run) and doc["kind"] == "run"
    assert [Path(p).name for p in doc["plots"]] == RUN_PLOTS
    assert all((run / "plots" / p).stat().st_size > 1000 for p in RUN_PLOTS)
    assert _page(run / "report.html") == original  # the same page, from the folder's metrics.json alone
    assert "<li>wall time: " in (run / "report.html").read_text()  # the run's phase times, from metrics.json


def test_human_output_names_the_report(folders: dict[str, Path], tmp_path: Path) -> None:
    run = _copy(folders["run"], tmp_path / "r")
    r = runner.invoke(app, ["report", str(run)])
    assert r.exit_code == 0, r.output
    assert r.stdout == ""  # humans read stderr; stdout is for --json
    assert f"report: {run / 'report.html'}" in r.stderr.splitlines()
    assert sum(ln.startswith("plot: ") for ln in r.stderr.splitlines()) == len(RUN_PLOTS)


def test_distill_folder_gets_a_report_of_what_it_holds(folders: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(folders["distill"], tmp_path / folders["distill"].name)
    assert not (folder / "report.html").exists()
    r = runner.invoke(app, ["report", str(folder)])
    assert r.exit_code == 0, r.output
    assert "no plots: a distill run folder holds no timeline" in r.stderr
    page = (folder / "report.html").read_text()
    assert re.findall(r"<h1>([^<]*)</h1>", page) == [f"labqfl distill {folder.name}"]  # not "labqfl run …"
    assert re.findall(r"<h2>([^<]*)</h2>", page) == ["Run summary", "Key distillation", "Dropped slots"]
    summary = dict(re.findall(r"<li>([^<:]+): (.*?)</li>", page))
    metrics = json.loads((folder / "metrics.json").read_text())
    assert summary["block size"].endswith("slots per pair (block-size rule)")  # not "(--block-bits)": none was given
    assert summary["error correction"] == metrics["engine"] and summary["ε_sec (security parameter per block)"] == "1e-10"
    assert summary["acquisition (station time)"] == f"{metrics['duration_s']:.1f} s"
    assert [k for k, v in summary.items() if v == "n/a"] == ["training"]  # a distill trains nothing
    cells = re.findall(r"<td>(.*?)</td>", page)
    assert "C1-C2" in cells and "ok" in cells and "n/a" not in cells


def test_train_folder_gets_a_report(folders: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(folders["train"], tmp_path / folders["train"].name)
    r = runner.invoke(app, ["report", str(folder), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["kind"] == "train" and "training.png" in [Path(p).name for p in doc["plots"]]
    page = (folder / "report.html").read_text()
    assert re.findall(r"<h1>([^<]*)</h1>", page) == [f"labqfl train {folder.name}"]
    assert "<h2>Federated training</h2>" in page and "<h2>Training</h2>" in page
    assert "n/a" not in re.findall(r"<td>(.*?)</td>", page)


def _bad_run(tmp: Path) -> Path:
    folder = tmp / "bad-run"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"schema": "labqfl.run/1", "distill": {"pairs": {"C1-C2": 5}}}))
    return folder


@pytest.mark.parametrize(("make", "words"), [
    (lambda t: t / "missing", ["missing: no such folder; expected a run folder written by `labqfl run`"]),
    (lambda t: (t / "rec.h5").write_bytes(b"x") and t / "rec.h5",
     ["rec.h5 is a file (a recording of `labqfl acquire`?), not a run folder", "`labqfl distill"]),
    (lambda t: (t / "notes.txt").write_text("x") and t / "notes.txt", ["notes.txt is a file, not a folder"]),
    (lambda t: t, ["not a run folder (no metrics.json)"]),
    (lambda t: (t / "state.json").write_text("{}") and t,
     ["no metrics.json: the `labqfl run` stopped before it wrote its results", "--resume"]),
    (lambda t: (t / "metrics.json").write_text("{") and t, ["metrics.json: corrupt JSON ("]),
    (lambda t: (t / "metrics.json").write_text("[1, 2]") and t,
     ["metrics.json: not the metrics of `labqfl run`, `distill` or `train`"]),
    (lambda t: (t / "metrics.json").write_text('{"schema": "other/1"}') and t, ["(schema 'other/1')"]),
    (_bad_run, ["metrics.json: cannot build a report from it (", "expected the metrics its command wrote"]),
])
def test_a_bad_run_dir_is_one_error_line(tmp_path: Path, make: Any, words: list[str]) -> None:
    folder = make(tmp_path)
    for args in ([], ["--json"]):
        r = runner.invoke(app, ["report", str(folder), *args])
        assert r.exit_code == 1, r.output
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
        assert all(w in " ".join(r.stderr.split()) for w in words), r.stderr
        assert "Traceback" not in r.output
        if args:
            assert json.loads(r.stdout)["command"] == "labqfl report"


def test_resume_of_a_complete_run_rewrites_a_missing_report(folders: dict[str, Path], tmp_path: Path) -> None:
    run = _copy(folders["run"], tmp_path / folders["run"].name)
    original = _page(run / "report.html")
    r = runner.invoke(app, ["run", "--resume", str(run)])
    assert r.exit_code == 0, r.output
    assert "was missing" not in r.stderr  # left as it is
    (run / "report.html").unlink()
    r = runner.invoke(app, ["run", "--resume", str(run), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["report"] == str(run / "report.html")
    assert f"report.html was missing; rebuilt from metrics.json: {run / 'report.html'}" in r.stderr.splitlines()
    assert _page(run / "report.html") == original


@pytest.mark.parametrize(("argv", "level"), [
    (["station", "show", "--json", "-v"], "INFO"),
    (["station", "show", "--json", "--verbose", "-v"], "DEBUG"),
    (["-v", "station", "show", "-v", "--json"], "DEBUG"),  # both places count
    (["keys", "-v", "status", "--data-dir", "{data}", "--json"], "INFO"),
    (["keys", "status", "-v", "--data-dir", "{data}", "--json"], "INFO"),
])
def test_verbose_after_the_command(folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                   level: str) -> None:
    got: list[str] = []
    monkeypatch.setattr(labqfl.cli, "set_verbosity", lambda lv, **kw: got.append(lv))
    r = runner.invoke(app, [a.replace("{data}", str(folders["data"])) for a in argv])
    assert r.exit_code == 0, r.output
    assert got[-1] == level, got
    json.loads(r.stdout)  # still one JSON document


def test_verbose_is_hidden_from_a_command_help() -> None:
    r = runner.invoke(app, ["keys", "status", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "--verbose" not in r.output


def test_keys_status_is_one_row_per_store_and_pair(folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from labqfl.cli.common import console

    monkeypatch.setattr(console, "_width", 120)
    data = folders["data"]
    doc = json.loads(runner.invoke(app, ["keys", "status", "--data-dir", str(data), "--json"]).stdout)
    r = runner.invoke(app, ["keys", "status", "--data-dir", str(data)])
    assert r.exit_code == 0, r.output
    rows = [[c.strip() for c in ln.strip("│").split("│")] for ln in r.stderr.splitlines() if ln.startswith("│")]
    want = [(n, p) for n, info in doc["nodes"].items() for p in info["pairs"]]
    assert [(row[0], row[1]) for row in rows] == want and len(want) == 2  # C1 and C2, pair C1-C2
    for row, (n, p) in zip(rows, want, strict=True):
        a = doc["nodes"][n]["pairs"][p]
        # every figure, with thousands separators: blocks, available auth/general, consumed auth/fl, added
        assert row[2:] == [f"{a['blocks']:,}", f"{a['available']['auth']:,}", f"{a['available']['general']:,}",
                           f"{a['consumed']['auth']:,}", f"{a['consumed']['fl']:,}", f"{a['added']:,}"], row
        assert a["added"] >= 1000 and "," in row[-1]
    assert "reserved, exporting, exported, pending: 0 bits at every store and pair shown" in r.stderr
    flat = " ".join(r.stderr.split())  # the provenance line is wrapped at words
    assert flat.count("provenance of ") == 1 and flat.count("security statement (1) below") == 1
    assert "provenance of C1-C2 (distilled blocks by physical layer/randomness: simulated/" in flat
    assert len(r.stderr.splitlines()) < 25, r.stderr
