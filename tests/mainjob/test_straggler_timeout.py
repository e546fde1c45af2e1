"""``labqfl run --straggler-timeout S`` (review s37 F6: a dropout stalls a round over nodes until the SuperLink
declares the node gone — 38-60 s with Flower 1.42's heartbeats, 44 s measured, up to 184 s in the review — or,
for a client that hangs without disconnecting, the 600 s stage timeout; ``labqfl run`` fixed
``straggler_timeout_s`` at 0 and had no way to bound it). The option reaches the Flower spec the run over nodes
trains under (unsigned server logistics, not part of the job), is kept in ``state.json``, and is refused where it
has no stage to act on (``--in-process``) or is not a number of seconds >= 0."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.mainjob import JobSettings, MainJob

runner = CliRunner()


def _run(tmp_path: Path, *extra: str) -> Any:
    return runner.invoke(app, ["run", "--rounds", "1", "--data-dir", str(tmp_path / "data"), "--out",
                               str(tmp_path / "runs"), "--json", *extra])


@pytest.fixture
def no_job(monkeypatch: pytest.MonkeyPatch) -> list[MainJob]:
    jobs: list[MainJob] = []

    def run(self: MainJob) -> dict[str, Any]:
        jobs.append(self)
        return {"run": self.path.name, "status": "stubbed"}

    monkeypatch.setattr(MainJob, "run", run)
    return jobs


def test_the_option_is_kept_in_the_run_folder(tmp_path: Path, no_job: list[MainJob]) -> None:
    r = _run(tmp_path, "--self-masks", "--straggler-timeout", "20")
    assert r.exit_code == 0, r.output
    (job,) = no_job
    assert job.settings.straggler_timeout_s == 20.0
    assert json.loads((job.path / "state.json").read_text())["settings"]["straggler_timeout_s"] == 20.0
    assert MainJob.resume(job.path).settings.straggler_timeout_s == 20.0
    r = runner.invoke(app, ["run", "--resume", str(job.path), "--straggler-timeout", "5"])
    assert r.exit_code != 0 and "--straggler-timeout cannot change them" in " ".join(r.output.split())


@pytest.mark.parametrize(("extra", "error"), [
    (("--in-process", "--straggler-timeout", "5"), "error: --straggler-timeout 5: needs the run over nodes"),
    (("--straggler-timeout", "-1"), "error: --straggler-timeout -1.0: expected a number of seconds >= 0 (0: off)"),
    (("--straggler-timeout", "nan"), "error: --straggler-timeout nan: expected a number of seconds >= 0 (0: off)"),
    # review s38 G2: without self-masks a live client cut off after masking would have its update exposed
    (("--straggler-timeout", "5"), "error: --straggler-timeout 5: needs --self-masks: without them a live client "
                                   "cut off after masking has its pair keys revealed by its partners, and its late "
                                   "upload, still sent, can then be read by the server operator"),
])
def test_a_bad_straggler_timeout_is_refused_before_any_run_folder(tmp_path: Path, no_job: list[MainJob],
                                                                 extra: tuple[str, ...], error: str) -> None:
    r = _run(tmp_path, *extra)
    assert r.exit_code != 0 and not no_job
    assert " ".join(r.stderr.split()).startswith(error), r.output
    assert not (tmp_path / "runs").exists()


def test_the_job_trains_over_nodes_with_it(small_station_file: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import labqfl.nodes.runjob as runjob
    from labqfl.config import load_station_config

    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def nodes(cfg: object, setup: Any, **kw: Any) -> Any:
        seen.update(kw)
        spec = runjob.flower_spec_for(setup, ["C1", "C2"], straggler_timeout_s=kw["straggler_timeout_s"])
        seen["spec"] = spec
        raise Stop

    monkeypatch.setattr(runjob, "train_over_nodes", nodes)
    job = MainJob.create(load_station_config(small_station_file),
                         JobSettings(duration_s=0.015, rounds=1, q=32, eps_sec=1e-4, nodes=True, self_masks=True,
                                     straggler_timeout_s=12.5, data_dir=str(tmp_path / "keys")), tmp_path / "runs")
    with pytest.raises(Stop):
        job._train()
    assert seen["straggler_timeout_s"] == 12.5 and seen["spec"].straggler_timeout_s == 12.5
    from labqfl.fl.flower.specsig import spec_settings

    assert "straggler_timeout_s" not in spec_settings(seen["spec"])  # the server's logistics, not signed


class _PushPullGrid:
    """A grid whose node 1 answers at once and node 2 never (its node died, the SuperLink has not said so yet)."""

    def __init__(self) -> None:
        self.pending: dict[str, Any] = {}

    def push_messages(self, messages: list[Any]) -> list[str]:
        ids = []
        for i, m in enumerate(messages):
            mid = f"m{i}"
            ids.append(mid)
            if m.dst == 1:
                self.pending[mid] = type("Reply", (), {"metadata": type("Meta", (), {"reply_to_message_id": mid})})()
        return ids

    def pull_messages(self, ids: set[str]) -> list[Any]:
        out = [self.pending.pop(i) for i in list(ids) if i in self.pending]
        return out


def test_a_straggler_timeout_ends_a_stage_that_waits_for_a_dead_client() -> None:
    from labqfl.fl.flower.server import send_and_receive

    msgs = [type("Msg", (), {"dst": 1})(), type("Msg", (), {"dst": 2})()]
    t0 = time.monotonic()
    reps = send_and_receive(_PushPullGrid(), msgs, timeout=60.0, straggler_s=0.5, poll_s=0.05)
    assert len(reps) == 1 and 0.4 < time.monotonic() - t0 < 10.0


def test_the_flower_spec_refuses_a_straggler_timeout_without_self_masks() -> None:
    """Review s38 G2: the spec a server runs under refuses it too (not only ``labqfl run``)."""
    from labqfl.errors import ConfigError
    from labqfl.fl.flower.spec import FlowerSpec

    with pytest.raises(ConfigError, match=r"straggler_timeout_s 5: needs --self-masks: without them a live client"):
        FlowerSpec(clients=3, straggler_timeout_s=5.0)
    assert FlowerSpec(clients=3, self_masks=True, straggler_timeout_s=5.0).straggler_timeout_s == 5.0
    assert FlowerSpec(clients=3).straggler_timeout_s == 0.0


def test_a_folder_with_it_but_no_self_masks_resumes_with_it_off(tmp_path: Path, no_job: list[MainJob],
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """Review s38 G2: a folder written before the refusal (``--straggler-timeout`` without ``--self-masks``) can
    still be resumed — ``--resume`` refuses a changed setting — with the timeout off, and says so."""
    r = _run(tmp_path, "--self-masks", "--straggler-timeout", "20")
    assert r.exit_code == 0, r.output
    (job,) = no_job
    state = json.loads((job.path / "state.json").read_text())
    state["settings"]["self_masks"] = False
    (job.path / "state.json").write_text(json.dumps(state))
    with caplog.at_level("WARNING"):
        resumed = MainJob.resume(job.path)
    assert resumed.settings.straggler_timeout_s == 0.0 and not resumed.settings.self_masks
    assert "without --self-masks is no longer accepted" in caplog.text and "goes on with it off" in caplog.text
