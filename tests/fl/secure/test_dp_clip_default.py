"""Review s35 F7: without --dp-clip the DP L2 clip is the task's per-value --clip number reused as a bound
on the whole update's L2 norm (0.1 over LeNet-5's 61,706 parameters, where the per-value clip allows an
L2 norm of 24.8). The default stays (every entry point builds the same plan from it) and is said: a
warning at planning, the help text and the summary's privacy.l2_clip_source."""

from __future__ import annotations

import logging

import pytest

from labqfl.app.training import TrainingSettings, TrainingSetup


def _setup(caplog: pytest.LogCaptureFixture, **kw: object) -> TrainingSetup:
    with caplog.at_level(logging.WARNING, logger="labqfl"):
        return TrainingSetup(TrainingSettings(q=32, rounds=2, dp_epsilon=4.0, **kw))  # type: ignore[arg-type]


def test_default_dp_clip_is_stated_at_planning(caplog: pytest.LogCaptureFixture) -> None:
    setup = _setup(caplog, task="mnist-lenet5", clients=3)
    assert setup.dp_plan.l2_clip == 0.1
    msgs = [r.getMessage() for r in caplog.records if "--dp-clip not given" in r.getMessage()]
    assert len(msgs) == 1
    assert "clipped to 0.1, the task's per-value --clip reused as an L2 bound over all 61,706 parameters" in msgs[0]
    assert "allows an L2 norm up to 24.8" in msgs[0] and msgs[0] == setup.dp_clip_caveat() + "."


def test_an_explicit_dp_clip_gives_no_caveat(caplog: pytest.LogCaptureFixture) -> None:
    setup = _setup(caplog, task="mnist-qnn", dp_clip=2.5)
    assert setup.dp_plan.l2_clip == 2.5 and setup.dp_clip_caveat() is None
    assert not [r for r in caplog.records if "--dp-clip" in r.getMessage()]
    assert TrainingSetup(TrainingSettings(q=8)).dp_clip_caveat() is None  # no DP


def test_the_summary_and_the_help_say_where_the_l2_clip_came_from(caplog: pytest.LogCaptureFixture) -> None:
    from typer.testing import CliRunner

    from labqfl.cli import app

    for dp_clip, source in ((None, "default: the task's per-value --clip, as an L2 bound"), (3.0, "--dp-clip")):
        settings = TrainingSettings(task="mnist-qnn", clients=3, q=32, rounds=1, dp_epsilon=50.0, dp_clip=dp_clip)
        with TrainingSetup.prepare(settings) as setup:
            summary = setup.summary(setup.run())
        assert summary["privacy"]["l2_clip_source"] == source
        assert summary["privacy"]["l2_clip"] == (dp_clip or 1.0)
    out = CliRunner().invoke(app, ["train", "--help"], terminal_width=200).output
    assert "per-value --clip number used as an L2 bound" in " ".join(out.replace("│", " ").split())
