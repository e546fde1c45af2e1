"""``labqfl run --resume`` of a job interrupted after its acquisition was distilled into the key stores
(the station closing, the node processes stopping, a top-up's bookkeeping): the acquire phase says
``distilled`` in ``state.json`` with the acquisition's record, and the resumed job goes on to training
without acquiring again — the key it distilled is counted once, from the stores it was delivered to.
Before, the phase said ``running`` until the station was closed (the nodes stopped), so such a resume
made a new acquisition and the first one's key was left out of the run's ledger."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from labqfl.config import load_station_config
from labqfl.keystore import KeyStore
from labqfl.mainjob import JobSettings, MainJob

SMALL = dict(duration_s=0.2, rounds=2, eps_sec=1e-4)


def _key_available(data, node: str = "C1") -> int:
    with KeyStore.for_node(node, data) as st:
        acc = st.accounting().get("C1-C2", {})
    return sum(v for k, v in acc.get("available", {}).items() if k != "auth")


def _ctrl_c_after_safe_state(monkeypatch):
    """Ctrl-C while the in-process station closes, after the instruments were put in their safe state
    (the keys are in the stores by then); undone by the returned function."""
    import labqfl.app.acquire as acquire

    real = acquire.Acquisition.safe_state

    def safe_then_interrupt(self, *a, **kw):
        real(self, *a, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(acquire.Acquisition, "safe_state", safe_then_interrupt)
    return lambda: monkeypatch.setattr(acquire.Acquisition, "safe_state", real)


def test_in_process_job_interrupted_after_distilling_resumes_with_training_without_acquiring(
        small_station_file, tmp_path, monkeypatch):
    import labqfl.app.station as station

    data = tmp_path / "data"
    undo = _ctrl_c_after_safe_state(monkeypatch)
    job = MainJob.create(load_station_config(small_station_file), JobSettings(**SMALL, data_dir=str(data)),
                         tmp_path / "runs")
    with pytest.raises(KeyboardInterrupt):
        job.run()
    state = json.loads((job.path / "state.json").read_text())
    assert state["status"] == "interrupted"
    assert state["phases"] == {"acquire": "distilled", "train": "pending", "report": "pending"}
    [first] = state["acquisitions"]
    assert first["distilled"] is True and first["complete"] is False
    delivered = state["acquire"]["pairs"]["C1-C2"]["delivered_bits"]
    assert delivered > 0 and state["acquire"]["acquisition_id"] == first["acquisition_id"]
    assert _key_available(data) == delivered == _key_available(data, "C2")  # in both stores, recorded once

    undo()

    def no_station(*a, **kw):
        raise AssertionError("the resumed job opened the station: it acquired again")

    monkeypatch.setattr(station, "open_station", no_station)
    m = MainJob.resume(job.path).run()
    assert m["status"] == "complete" and m["train"]["rounds_run"] == 2 and m["attempts"] == 2
    assert [(a["acquisition_id"], a["complete"]) for a in m["acquisitions"]] == [(first["acquisition_id"], True)]
    k = m["keys"]["pairs"]["C1-C2"]
    assert k["distilled_bits"] == delivered and k["consumed_bits"] == 2 * 8 * m["train"]["n_params"]
    assert k["consumed_bits"] == k["distilled_bits"] - k["remaining_bits"]
    assert k["remaining_bits"] == _key_available(data)


def test_job_over_nodes_interrupted_while_its_nodes_stop_is_not_acquired_again(small_station_file, tmp_path,
                                                                               monkeypatch):
    """The node path (the default): Ctrl-C after the clients stored their key, while the job stops the
    node processes. The nodes are replaced by what they leave in the stores (one block at both ends)."""
    import labqfl.nodes.runjob as runjob

    data = tmp_path / "data"
    calls: list[float] = []
    bits = np.random.default_rng(3).integers(0, 2, 4096, dtype=np.uint8)

    def nodes(cfg, settings, duration_s, *, data_dir, run_id, on_start, on_distilled=None, **kw):
        calls.append(duration_s)
        if len(calls) > 1:
            raise AssertionError("the resumed job started node processes for a new acquisition")
        on_start("nodes/test-acquisition")
        block_id = str(uuid.uuid4())
        for n in ("C1", "C2"):
            with KeyStore.for_node(n, data_dir) as st:
                st.add_block("C1-C2", bits, block_id=block_id, run_id=run_id)
        pair = {"sifted_bits": 9000, "final_key_bits": bits.size, "delivered_bits": bits.size, "status": "ok",
                "qber_x": 0.01}
        if on_distilled is not None:
            on_distilled(runjob.NodesAcquisition("nodes/test-acquisition", {"C1-C2": pair},
                                                 {"t_s": [duration_s], "rates_hz": {}}, [], wall_s=1.0))
        raise KeyboardInterrupt  # while the nodes stop

    monkeypatch.setattr(runjob, "acquire_over_nodes", nodes)
    job = MainJob.create(load_station_config(small_station_file),
                         JobSettings(**SMALL, nodes=True, data_dir=str(data)), tmp_path / "runs")
    with pytest.raises(KeyboardInterrupt):
        job.run()
    assert job.state["phases"]["acquire"] == "distilled" and job.state["acquisitions"][0]["distilled"]

    resumed = MainJob.resume(job.path)
    resumed._acquire_and_distil()
    assert calls == [0.2] and resumed.state["phases"]["acquire"] == "done"
    assert [(a["acquisition_id"], a["complete"]) for a in resumed.state["acquisitions"]] == [("nodes/test-acquisition", True)]
    k = resumed._write_metrics("interrupted")["keys"]["pairs"]["C1-C2"]
    assert k["distilled_bits"] == k["remaining_bits"] == bits.size  # the stores' key, counted once


def test_top_up_interrupted_after_distilling_is_recorded_and_its_key_counted(small_station_file, tmp_path,
                                                                            monkeypatch):
    """A round waiting for key: Ctrl-C after the top-up's key reached the stores. The top-up is in
    ``train.key_waits`` (its station time and key in the run's ledger); the resumed round finds its
    key in the stores and needs no new top-up."""
    from labqfl.planning import plan_top_up

    class Short:  # the stores lack round 2's key once (768 bits: q = 32 on 24 parameters)
        def key_shortfall(self, rounds):
            return {"C1-C2": (0, 768 * rounds)}

    data = tmp_path / "data"
    cfg = load_station_config(small_station_file)
    job = MainJob.create(cfg, JobSettings(duration_s=0.0185, rounds=3, q=32, eps_sec=1e-4, data_dir=str(data)),
                         tmp_path / "runs")
    tstate = {"rounds_done": 1, "rounds": [], "interrupted_rounds": 0, "key_waits": [], "round_waits": {}}
    job.state["train"] = tstate
    _ctrl_c_after_safe_state(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        job._wait_for_key(Short(), tstate, 2)
    saved = json.loads((job.path / "state.json").read_text())["train"]
    [top] = saved["key_waits"]
    assert top["round"] == 2 and top["top_up"] == 1 and top["duration_s"] == plan_top_up(
        cfg, {"C1-C2": 2 * 768}, eps_sec=1e-4).duration_s
    delivered = top["pairs"]["C1-C2"]["delivered_bits"]
    assert delivered > 0 and _key_available(data) == delivered
    assert saved["round_waits"]["2"]["top_ups"] == 1 and saved["round_waits"]["2"]["station_s"] == top["duration_s"]
    [acq] = json.loads((job.path / "state.json").read_text())["acquisitions"]
    assert acq["distilled"] and acq["acquisition_id"] == top["acquisition_id"]
