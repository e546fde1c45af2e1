"""``labqfl plan`` for a run whose --duration holds fewer rounds than asked (issue 22 item 2): the
run's total wall time counts the top-ups it will wait for, ``--no-wait-for-key`` predicts the
round the run stops at, and the text the plan prints (also at the start of ``labqfl run``) says both."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from labqfl.cli import app
from labqfl.config import load_station_config
from labqfl.planning import TRAIN_ROUND_COST, compare, make_plan

# q = 32 on the small 2-client station: 768 key bits per round; 0.0185 s (just above the block-size
# rule's 0.0178 s, detector dead time with its smooth edge included) holds ~2 rounds of it
ROUNDS = 6


def test_total_wall_time_of_a_starving_run_counts_its_top_ups(small_station_file):
    """Distillation and total wall time are those of the run's station time (the acquisition plus
    the predicted top-ups), not of R × the acquisition per round (a continuous key supply the run
    never has: a top-up comes in whole blocks)."""
    cfg = load_station_config(small_station_file)
    plan = make_plan(cfg, "mnist-qnn", 32, ROUNDS, duration_s=0.0185, eps_sec=1e-4)
    assert plan.rounds_sustained is not None and plan.rounds_sustained < ROUNDS and plan.top_ups
    assert plan.stops_at_round is None
    station = 0.0185 + sum(t["duration_s"] for t in plan.top_ups)
    assert plan.station_s == pytest.approx(station)
    # here R × the acquisition per round differs from the station time by more than 10 %
    assert abs(plan.acquisition_s / plan.station_s - 1) > 0.1
    # distillation ∝ station time: the same sifted bits per station second as a run that needs no top-up
    enough = make_plan(cfg, "mnist-qnn", 32, 1, duration_s=0.0185, eps_sec=1e-4)
    assert enough.top_ups == [] and enough.station_s == pytest.approx(0.0185)
    assert plan.distill_s / plan.station_s == pytest.approx(enough.distill_s / enough.station_s, rel=1e-9)
    assert plan.train_s == pytest.approx(ROUNDS * TRAIN_ROUND_COST["mnist-qnn"][0])
    assert plan.total_wall_s == pytest.approx(plan.station_s + plan.distill_s + plan.train_s)
    # and the plan-vs-run comparison puts the same station time next to the run's
    assert compare(plan, {})["predicted_wall_s"] == {"acquire": plan.station_s, "distill": plan.distill_s,
                                                     "train": plan.train_s}


def test_without_waiting_the_plan_says_where_the_run_stops(small_station_file):
    cfg = load_station_config(small_station_file)
    plan = make_plan(cfg, "mnist-qnn", 32, ROUNDS, wait_for_key=False, duration_s=0.0185, eps_sec=1e-4)
    n = plan.rounds_sustained
    assert n is not None and 0 < n < ROUNDS
    assert plan.top_ups == [] and plan.stops_at_round == n + 1
    assert plan.station_s == pytest.approx(0.0185)  # no top-up: the one acquisition
    assert plan.train_s == pytest.approx(n * TRAIN_ROUND_COST["mnist-qnn"][0])  # only the rounds before the stop
    assert plan.total_wall_s == pytest.approx(0.0185 + plan.distill_s + plan.train_s)
    d = plan.as_dict()
    assert d["stops_at_round"] == n + 1 and json.loads(json.dumps(d))["top_ups"] == []


def test_plan_text_names_the_top_ups_and_the_station_time(small_station_file):
    """What `labqfl plan` prints, and `labqfl run` before its acquisition (cli.plan.render_plan)."""
    runner = CliRunner()
    args = ["plan", "--config", str(small_station_file), "--q", "32", "--rounds", str(ROUNDS), "--duration", "0.0185",
            "--eps-sec", "1e-4"]
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    top = d["top_ups"][0]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    text = " ".join(r.stderr.split())
    assert f"round {top['round']} waits for key: top-up acquisition of {top['duration_s']:.4g} s (short: C1-C2)" in text
    assert f"station time of the run with its top-ups: {d['station_s']:.3g} s" in text
    assert f"total wall ≈ {d['total_wall_s']:.3g} s" in text
    assert "stops with key starvation" not in text
    r = runner.invoke(app, [*args, "--no-wait-for-key"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.stderr.split())
    assert f"the run stops with key starvation before round {d['rounds_sustained'] + 1}" in text
    assert "waits for key: top-up" not in text
    assert math.isfinite(d["station_s"])


def test_labqfl_run_plans_with_its_own_wait_setting(small_station_file, tmp_path):
    """MainJob.key_plan (the plan `labqfl run` prints and keeps) follows --no-wait-for-key."""
    from labqfl.mainjob import JobSettings, MainJob

    cfg = load_station_config(small_station_file)
    for wait in (True, False):
        job = MainJob.create(cfg, JobSettings(duration_s=0.0185, rounds=ROUNDS, q=32, eps_sec=1e-4, wait_for_key=wait,
                                              data_dir=str(tmp_path / "keys")), tmp_path / f"runs-{wait}")
        plan = job.key_plan()
        assert plan.rounds_sustained is not None and plan.rounds_sustained < ROUNDS
        assert bool(plan.top_ups) == wait
        assert plan.stops_at_round == (None if wait else plan.rounds_sustained + 1)
        assert job.state["plan"]["stops_at_round"] == plan.stops_at_round


def test_a_pair_no_top_up_can_feed_stops_the_run_at_once_in_the_plan(small_station_file):
    """A short pair without key in the model at any length: the run refuses to wait before any
    top-up (MainJob._no_key_error), so the plan's run stops there with the station time spent so far."""
    from labqfl.config import parse_station_config

    d = load_station_config(small_station_file).model_dump(mode="json", exclude_none=True)
    for c in d["clients"]:
        c["insertion_loss_db"] = 30.0  # 60 dB and more on the pair: beyond break-even at any block size
    cfg = parse_station_config(d, "<beyond break-even>")
    plan = make_plan(cfg, "mnist-qnn", 32, ROUNDS, duration_s=0.0185, eps_sec=1e-4)
    assert plan.rounds_sustained == 0 and plan.stops_at_round == 1
    assert [t["duration_s"] for t in plan.top_ups] == [None] and plan.top_ups[0]["no_key_pairs"] == ["C1-C2"]
    assert plan.station_s == pytest.approx(0.0185) and plan.train_s == 0.0
    assert math.isfinite(plan.total_wall_s)
