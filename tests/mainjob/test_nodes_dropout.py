"""A client lost during training over nodes (review s37 F1, F2, F3, F5): the run still ends with its
report, says which client dropped in which round and that the aggregate left it out, states the mask
security from the key the stores delivered (also on a resume that trains nothing), and counts each
pair's mask key from the rounds the pair really masked. The FL node processes are replaced by what
C1's SuperNode does to its key store in a round (:func:`labqfl.fl.keysource.take_master_keys`) and
what the server node reports (``flower``: :func:`labqfl.fl.flower.server.flower_summary`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from labqfl.config import load_station_config
from labqfl.keystore import KeyStore
from labqfl.mainjob import JobSettings, MainJob
from labqfl.nodes.common import NodeError

PAD = 768  # q = 32 · 24 parameters


def _flower(r: int, *, after: list[str] | None = None, before: list[str] | None = None) -> dict[str, Any]:
    reasons = dict.fromkeys([*(after or []), *(before or [])], "node unavailable")
    return {"round": r, "participants": 2 - len(before or []), "dropped_before_masking": before or [],
            "dropped_after_masking": after or [], "reveal_bits": 192 if after else 0, "dropped_reasons": reasons,
            "key_bits_per_pair": PAD}


def _round(r: int) -> dict[str, Any]:
    return {"round": r, "test_accuracy": 0.5, "test_loss": 1.0, "key_bits_per_pair": PAD, "key_bits_total": PAD,
            "pairs": 1, "upload_bits_per_client": 32, "baseline_upload_bits_per_client": 768}


def test_a_resume_after_a_failed_stop_states_the_qkd_key_the_stores_delivered(small_station_file, tmp_path,
                                                                            monkeypatch):
    """F2: the training over nodes ran both rounds (checkpointed, C2 lost after masking round 2), then its
    end failed: the block IDs never came back. The resume trains nothing; its security line and
    ``key_provenance`` must still come from the pads C1's store delivered, and the dropout be named."""
    import labqfl.nodes.runjob as runjob
    from labqfl.fl.keysource import take_master_keys

    keys = tmp_path / "keys"
    rng = np.random.default_rng(2)
    with KeyStore.for_node("C1", keys) as st:
        blocks = sorted(st.add_block("C1-C2", rng.integers(0, 2, PAD, dtype=np.uint8), run_id="test",
                                     meta={"eps_sec": 1e-4}) for _ in range(2))

    def nodes(cfg: object, setup: object, **kw: Any) -> Any:
        assert kw["since"] <= datetime.now(UTC).isoformat(timespec="microseconds")
        with KeyStore.for_node("C1", keys) as st:
            for r in (1, 2):
                take_master_keys(st, "C1-C2", PAD, round_index=r)
        kw["on_segment"]({"final_params": [0.0] * 24, "rounds": [_round(1), _round(2)],
                          "flower": [_flower(1), _flower(2, after=["C2"])],
                          "initial_test_accuracy": 0.1, "initial_test_loss": 2.0})
        raise NodeError("FL node processes did not stop cleanly after SIGTERM (exit codes {'supernode-C2': -9})")

    monkeypatch.setattr(runjob, "train_over_nodes", nodes)
    cfg = load_station_config(small_station_file)
    job = MainJob.create(cfg, JobSettings(duration_s=0.015, rounds=2, q=32, eps_sec=1e-4, nodes=True,
                                          data_dir=str(keys)), tmp_path / "runs")
    with pytest.raises(NodeError):
        job._train()
    assert job.state["train"]["rounds_done"] == 2

    resumed = MainJob.resume(job.path)
    resumed._train()
    summary = resumed.state["train"]["summary"]
    assert sorted(summary["key_provenance"]) == ["C1-C2"]
    assert summary["key_provenance"]["C1-C2"] and not summary["security"].startswith("no QKD key consumed")
    assert resumed.state["train"]["key_blocks_used"] == {"C1-C2": blocks}
    # F3: the round record keeps the Flower round's dropouts, the summary names the client
    r2 = resumed.state["train"]["rounds"][1]
    assert r2["dropped_after_masking"] == ["C2"] and r2["reveal_bits"] == 192
    assert summary["dropouts"] == [{"round": 2, "client": "C2", "stage": "after masking", "in_aggregate": False,
                                    "reason": "node unavailable", "reveal_bits": 192}]
    from labqfl.report import write_report

    html = write_report(resumed.run_record, {**resumed._write_metrics("complete")}).read_text(encoding="utf-8")
    assert "Clients lost during training" in html and "<td>C2</td>" in html and "after masking" in html


@dataclass
class _Spec:
    """The spec fields :func:`labqfl.nodes.runjob.train_over_nodes` uses (one round)."""

    rounds: int = 1
    first_round: int = 1
    last_round: int = 1
    absent: str = ""
    missing_ok_after_s: float = 0.0

    def secagg(self) -> None:
        return None

    def to_config(self) -> dict[str, Any]:
        return {}


def test_a_supernode_gone_before_the_stop_is_a_dropout_not_a_failed_stop(tmp_path, monkeypatch):
    """F1: a SuperNode killed during training (exit -9 before the stop) whose loss the rounds tolerated:
    train_over_nodes returns, recording it; a node alive at the stop that does not exit 0 still fails."""
    import labqfl.nodes.fl as fl
    import labqfl.nodes.runjob as runjob
    import labqfl.planning as planning

    class Proc:
        def __init__(self, code: int | None, at_stop: int) -> None:
            self.code, self.at_stop = code, at_stop

        def poll(self) -> int | None:
            return self.code

    class Net:
        alive_bad = False

        def __init__(self, workdir: Any, *a: Any, **kw: Any) -> None:
            self.nodes = {"server": SimpleNamespace(proc=Proc(None, 0), log_path=tmp_path / "none", startup_s=1.0),
                          "supernode-C1": SimpleNamespace(proc=Proc(None, -15 if Net.alive_bad else 0),
                                                          log_path=tmp_path / "none", startup_s=1.0),
                          "supernode-C2": SimpleNamespace(proc=Proc(None, -9), log_path=tmp_path / "none",
                                                          startup_s=1.0)}

        def start(self) -> Net:
            return self

        def train(self, config: Any, timeout_s: float, init_params: Any = None) -> dict[str, Any]:
            self.nodes["supernode-C2"].proc.code = -9  # killed during the round
            return {"rounds": [_round(1)], "flower": [_flower(1, after=["C2"])], "wall_s": 1.0,
                    "final_params": [0.0] * 24}

        def stop(self) -> dict[str, int | None]:
            return {k: n.proc.at_stop for k, n in self.nodes.items()}

    spec = _Spec()
    monkeypatch.setattr(fl, "FlNetwork", Net)
    monkeypatch.setattr(runjob, "flower_spec_for", lambda *a, **kw: spec)
    monkeypatch.setattr(runjob, "_mnist_cache", lambda task, work: str(work))
    monkeypatch.setattr(runjob, "mask_blocks_used", lambda *a: {})
    monkeypatch.setattr(planning, "station_toml", lambda cfg: "")
    cfg = SimpleNamespace(client_names=["C1", "C2"])
    setup = SimpleNamespace(settings=SimpleNamespace(task="mnist"), secagg=SimpleNamespace(pairs=lambda n: ["C1-C2"]))
    res = runjob.train_over_nodes(cfg, setup, data_dir=tmp_path, server_dir=tmp_path / "server")
    assert res.exited_before_stop == {"supernode-C2": -9}
    assert res.path_metrics()["exited_before_stop"] == {"supernode-C2": -9}
    Net.alive_bad = True
    with pytest.raises(NodeError, match="supernode-C1"):
        runjob.train_over_nodes(cfg, setup, data_dir=tmp_path, server_dir=tmp_path / "server")


def test_mask_key_counts_only_the_rounds_a_pair_masked(small_station_file, tmp_path):
    """F5: round 3 lost C2 before masking, so pair C1-C2 drew no pad there; round 2 lost it after masking
    (the pad is spent). ``consumed_bits`` + ``spent_other_bits`` = distilled − remaining must hold."""
    from labqfl.fl.keysource import take_master_keys

    rounds = [{**_round(1)}, {**_round(2), "dropped_after_masking": ["C2"]},
              {**_round(3), "dropped_before_masking": ["C2"]}]
    keys = tmp_path / "keys"
    rng = np.random.default_rng(3)
    with KeyStore.for_node("C1", keys) as st:
        for _ in range(4):
            st.add_block("C1-C2", rng.integers(0, 2, PAD, dtype=np.uint8), run_id="test", meta={"eps_sec": 1e-4})
        for r in (1, 2):
            take_master_keys(st, "C1-C2", PAD, round_index=r)
    job = MainJob.create(load_station_config(small_station_file),
                         JobSettings(duration_s=0.015, rounds=3, q=32, eps_sec=1e-4, nodes=True, data_dir=str(keys)),
                         tmp_path / "runs")
    job.state["acquire"] = {"pairs": {"C1-C2": {"delivered_bits": 4 * PAD}}, "stores_before": {}, "duration_s": 1.0}
    job.state["train"] = {"summary": {"rounds": rounds, "key_bits_per_pair_total": 3 * PAD}}
    k = job._write_metrics("complete")["keys"]["pairs"]["C1-C2"]
    assert k["consumed_bits"] == 2 * PAD
    assert k["consumed_bits"] + k["spent_other_bits"] == k["distilled_bits"] - k["remaining_bits"]

    from labqfl.mainjob import fl_dropouts, pair_mask_bits

    assert pair_mask_bits("C1-C2", rounds) == 2 * PAD and pair_mask_bits("C3-C4", rounds) == 3 * PAD
    assert [(d["round"], d["stage"]) for d in fl_dropouts(rounds)] == [(2, "after masking"), (3, "before masking")]


def test_a_failed_flower_run_fails_with_the_serverapps_error_line(tmp_path, monkeypatch):
    """F7: the server node's refusal carries the ServerApp's traceback and Flower's exit-code banner; the
    run's error is the labqfl error's one line, with where the whole output is."""
    import labqfl.nodes.fl as fl

    reason = ("ctl/train: the Flower run failed (flwr run exit code 0); its output ends:\n^^^^\n"
              '  File "server.py", line 785, in _consistency\n    raise SecureAggregationError(\n'
              "labqfl.errors.SecureAggregationError: round 2 aborted before any unmask: 3 survivor(s) "
              "['C1', 'C2', 'C4'] (lost after masking: ['C3'])\n\x1b[91mERROR \x1b[0m:     Exit Code: 201\n\n"
              "An unhandled exception occurred in the ServerApp.\n")

    def refused(*a: Any, **kw: Any) -> Any:
        raise NodeError(reason)

    monkeypatch.setattr(fl, "train_on_server", refused)
    net = fl.FlNetwork(tmp_path, None, ["C1", "C2"], tmp_path, server_data=tmp_path / "server")
    with pytest.raises(NodeError) as err:
        net.train({}, 1.0)
    msg = str(err.value)
    assert msg.startswith("the Flower run failed: round 2 aborted before any unmask: 3 survivor(s) ")
    assert "(SecureAggregationError)" in msg and "Traceback" not in msg and "Exit Code" not in msg
    assert "\n" not in msg and str(tmp_path / "server") in msg
    assert fl.flower_failure_line("ctl/train: the node is busy") is None


@pytest.mark.parametrize(("extra", "segment_ends"), [({"colluders": 0}, [1]), ({}, [3])])
def test_a_job_whose_rounds_may_be_pinned_with_a_dropout_checkpoints_after_each_round(
        tmp_path, monkeypatch, extra: dict[str, Any], segment_ends: list[int]):
    """F4: with --colluders 0 (N = 4: need 3, one dropout tolerated) a round may be unmasked without a client and
    pinned so; a resume that retrained it from an older checkpoint could never finish. Such a job trains one round
    per Flower run (a checkpoint after each, so a resume continues after the last unmasked round); with the
    default c (need 4 of 4: no round pinned with a dropout) the segment is every round the stores hold key for.
    903acf7 had this and was reverted (5f55545) because the next Flower run then waited for the lost client at its
    start and failed; it now names it absent (tests/fl/flower/test_absent_clients.py)."""
    import labqfl.nodes.runjob as runjob
    from labqfl.app.training import TrainingSetup

    ends: list[int] = []

    def nodes(cfg: object, setup: object, **kw: Any) -> Any:
        ends.append(kw["before_segment"](1))
        raise KeyboardInterrupt

    monkeypatch.setattr(runjob, "train_over_nodes", nodes)
    monkeypatch.setattr(MainJob, "_segment_end", lambda self, setup, tstate, r: 3)  # the stores hold key for all
    job = MainJob.create(load_station_config(), JobSettings(duration_s=0.015, rounds=3, q=32, eps_sec=1e-4, nodes=True,
                                                            self_masks=True, data_dir=str(tmp_path / "keys"), **extra),
                         tmp_path / "runs")
    tstate = job.state.setdefault("train", {"rounds_done": 0, "rounds": [], "interrupted_rounds": 0,
                                            "key_waits": [], "round_waits": {}})
    with TrainingSetup(job.training_settings()) as setup, pytest.raises(KeyboardInterrupt):
        job._train_over_nodes(setup, tstate)
    assert ends == segment_ends
