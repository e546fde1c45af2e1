"""``labqfl run --colluders C`` (issue 16): the signed ``colluders`` of the Flower spec a run over nodes trains
under, as ``labqfl node sign-spec``/``node train`` have it. With the default t − 1 a deployed self-mask run of 3 or
4 clients tolerates no dropout (the consistency stage needs max(t, min_survivors, ⌊(N + c)/2⌋ + 1) survivors,
:data:`labqfl.fl.selfmask.CONSISTENCY_NEED_RULE`); ``labqfl run`` had no way to sign c = 0. Now the option reaches
the spec, is checked (0 ≤ c < t, with self-masks over nodes) before a run folder is made, is said beside the plan
and kept in ``state.json``: a resume cannot change it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.mainjob import MainJob

#: review s38 G1: the line says when a dropout is tolerated (before the masked upload arrives)
WHEN = (", counting a client lost before its masked upload arrives (one lost after it, at the consistency or unmask "
        "stage, aborts the round and stops the job)")

runner = CliRunner()


def _run(tmp_path: Path, *extra: str) -> Any:
    return runner.invoke(app, ["run", "--rounds", "1", "--data-dir", str(tmp_path / "data"), "--out",
                               str(tmp_path / "runs"), "--json", *extra])


@pytest.fixture
def no_job(monkeypatch: pytest.MonkeyPatch) -> list[MainJob]:
    """MainJob.run records the job and returns at once (no acquisition, no training)."""
    jobs: list[MainJob] = []

    def run(self: MainJob) -> dict[str, Any]:
        jobs.append(self)
        return {"run": self.path.name, "status": "stubbed"}

    monkeypatch.setattr(MainJob, "run", run)
    return jobs


# the default station: 4 clients, graph all, so t = 3 (a majority of 4 holders); default c = t − 1 = 2
@pytest.mark.parametrize(("extra", "line"), [
    ((), "self-masks: t = 3, 2 colluding client(s) tolerated (default t - 1), so every round needs 4 of 4 clients "
         "to survive and sign its survivor set (0 dropout(s) tolerated)"),
    (("--colluders", "0"), "self-masks: t = 3, 0 colluding client(s) tolerated (--colluders), so every round needs "
                           "3 of 4 clients to survive and sign its survivor set (1 dropout(s) tolerated)"),
])
def test_colluders_is_said_with_the_plan_and_kept_in_the_run_folder(
        tmp_path: Path, no_job: list[MainJob], extra: tuple[str, ...], line: str) -> None:
    r = _run(tmp_path, "--self-masks", *extra)
    assert r.exit_code == 0, r.output
    assert line in " ".join(r.stderr.split())
    c, need = (int(extra[1]), 3) if extra else (2, 4)
    doc = json.loads(r.stdout)["consistency"]
    assert doc.pop("line").startswith(line + WHEN + "; job job-")
    assert doc == {"threshold": 3, "colluders": c, "colluders_default": not extra, "need": need, "clients": 4,
                   "dropouts_tolerated": 4 - need, "dropouts_tolerated_stages": ["keys", "refs", "mask"]}
    (job,) = no_job
    want = int(extra[1]) if extra else None
    assert job.settings.colluders == want
    state = json.loads((job.path / "state.json").read_text())
    assert state["settings"]["colluders"] == want
    assert MainJob.resume(job.path).settings.colluders == want  # a resumed job trains under the same c


def test_a_resume_cannot_change_colluders(tmp_path: Path, no_job: list[MainJob]) -> None:
    assert _run(tmp_path, "--self-masks", "--colluders", "0").exit_code == 0
    folder = no_job[0].path
    before = (folder / "state.json").read_bytes()
    r = runner.invoke(app, ["run", "--resume", str(folder), "--colluders", "2", "--json"])
    assert r.exit_code == 1
    assert "--colluders cannot change them" in json.loads(r.stdout)["error"]
    assert (folder / "state.json").read_bytes() == before and len(no_job) == 1


@pytest.mark.parametrize(("extra", "words"), [
    (("--self-masks", "--colluders", "3"), ["--colluders 3", "expected 0 ... 2", "t = 3"]),
    (("--self-masks", "--colluders", "-1"), ["--colluders -1", "expected a number >= 0"]),
    (("--colluders", "0"), ["--colluders 0", "with --self-masks over nodes"]),
    (("--self-masks", "--in-process", "--colluders", "0"), ["--colluders 0", "--in-process has none"]),
])
def test_a_bad_colluders_is_refused_before_a_run_folder(tmp_path: Path, no_job: list[MainJob],
                                                         extra: tuple[str, ...], words: list[str]) -> None:
    r = _run(tmp_path, *extra)
    assert r.exit_code == 1, r.output
    err = json.loads(r.stdout)["error"]
    assert all(w in err for w in words), err
    assert not no_job and not any((tmp_path / "runs").glob("*"))


def test_the_option_reaches_the_spec_the_nodes_train_under(tmp_path: Path, no_job: list[MainJob],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The job passes its c to train_over_nodes, and train_over_nodes builds the spec it signs and sends with it
    (the FL nodes and the rounds stubbed: the spec is caught where the first segment would start)."""
    import labqfl.nodes.fl
    import labqfl.nodes.runjob as runjob
    from labqfl.app.training import TrainingSetup

    assert _run(tmp_path, "--self-masks", "--colluders", "0").exit_code == 0
    job = no_job[0]
    real_train = runjob.train_over_nodes
    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def caught(key: str, value: Any) -> Any:
        seen[key] = value
        raise Stop

    class Net:  # the FL server node and SuperNodes, not started
        nodes: dict[str, Any] = {}

        def __init__(self, *_a: Any, **_k: Any) -> None:
            pass

        def start(self) -> None:
            pass

        def stop(self) -> dict[str, int]:
            return {}

    monkeypatch.setattr(runjob, "train_over_nodes", lambda *_a, **kw: caught("colluders", kw["colluders"]))
    monkeypatch.setattr(labqfl.nodes.fl, "FlNetwork", Net)
    monkeypatch.setattr(runjob, "_train_segments", lambda _net, spec, **_k: caught("spec", spec))
    setup = TrainingSetup(job.training_settings())
    try:
        with pytest.raises(Stop):
            job._train_over_nodes(setup, {"rounds_done": 0, "interrupted_rounds": 0})
        assert seen["colluders"] == 0
        with pytest.raises(Stop):
            real_train(job.cfg, setup, data_dir=tmp_path / "data", server_dir=tmp_path / "srv", colluders=0)
    finally:
        setup.close()
    spec = seen["spec"]
    assert spec.colluders == 0 and spec.full_threshold() == 3 and spec.consistency_need() == 3
