"""``labqfl run --resume`` of a run whose training over nodes was interrupted (issue 22: runs that
wait for key train over nodes in segments): the resumed training starts after the last checkpointed
round, from its parameters, and the masks' block IDs of the rounds before the interruption stay in
the run's key provenance. The FL node processes are replaced by what C1's SuperNode does to the
key store in a round (the master's pad, :func:`labqfl.fl.keysource.take_master_keys`); the whole
path over node processes is tests/mainjob/test_run_nodes.py's."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from labqfl.config import load_station_config
from labqfl.keystore import KeyStore
from labqfl.mainjob import JobSettings, MainJob

PAD = 768  # q = 32 · 24 parameters


def test_resumed_training_over_nodes_continues_from_the_checkpoint_and_keeps_earlier_mask_blocks(
        small_station_file, tmp_path, monkeypatch):
    import labqfl.nodes.runjob as runjob
    from labqfl.fl.keysource import take_master_keys

    keys = tmp_path / "keys"
    rng = np.random.default_rng(1)
    blocks = []
    with KeyStore.for_node("C1", keys) as st:  # one block per round's pad (test bits; C1's store only)
        for _ in range(2):
            blocks.append(st.add_block("C1-C2", rng.integers(0, 2, PAD, dtype=np.uint8), run_id="test",
                                       meta={"eps_sec": 1e-4}))
    calls: list[dict[str, Any]] = []
    params_after_1 = [0.25 * i for i in range(24)]

    def nodes(cfg: object, setup: object, **kw: Any) -> Any:
        """train_over_nodes with one round per segment: its block IDs count from ``since`` (default:
        its own start), C1's SuperNode reserves the round's pad, the server reports the round; the
        first training is interrupted (Ctrl-C) after round 1 was checkpointed."""
        calls.append(kw)
        since = kw.get("since") or datetime.now(UTC).isoformat(timespec="microseconds")
        r = kw["start_round"]
        with KeyStore.for_node("C1", keys) as st:
            take_master_keys(st, "C1-C2", PAD, round_index=r)
        kw["on_segment"]({"final_params": params_after_1 if r == 1 else [0.0] * 24,
                          "rounds": [{"round": r, "test_accuracy": 0.5, "test_loss": 1.0}],
                          "initial_test_accuracy": 0.5, "initial_test_loss": 1.0})
        if len(calls) == 1:
            raise KeyboardInterrupt
        return SimpleNamespace(blocks_used=runjob.mask_blocks_used(keys, ["C1-C2"], since),
                               path_metrics=lambda: {"path": "nodes"})

    monkeypatch.setattr(runjob, "train_over_nodes", nodes)
    cfg = load_station_config(small_station_file)
    job = MainJob.create(cfg, JobSettings(duration_s=0.015, rounds=2, q=32, eps_sec=1e-4, nodes=True,
                                          data_dir=str(keys)), tmp_path / "runs")
    tstate = job.state.setdefault("train", {"rounds_done": 0, "rounds": [], "interrupted_rounds": 0,
                                            "key_waits": [], "round_waits": {}})
    with pytest.raises(KeyboardInterrupt):
        job._train_over_nodes(object(), tstate)
    assert tstate["rounds_done"] == 1 and calls[0]["start_round"] == 1 and calls[0]["init_params"] is None

    resumed = MainJob.resume(job.path)
    t2 = resumed.state["train"]
    resumed._train_over_nodes(object(), t2)
    # round 2 from round 1's checkpointed parameters
    assert calls[1]["start_round"] == 2
    np.testing.assert_array_equal(np.asarray(calls[1]["init_params"]), np.asarray(params_after_1))
    # both rounds' mask blocks in the run's record, not only the resumed round's
    assert t2["key_blocks_used"]["C1-C2"] == sorted(blocks)
    assert [r["round"] for r in t2["rounds"]] == [1, 2] and t2["rounds_done"] == 2
