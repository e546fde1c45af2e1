"""Review s34 F8: the training report's security line says what it rests on per engine. The in-process
engine and the Flower simulation hold every client's update and pad under one operator (the masks protect
nothing against that operator); the unsigned simulation checks the refs by the refs tag alone; a run over
nodes names the key mode its operator asked for and says that the key mode and mask settings reach the
nodes in the server node's messages (each SuperNode refusing a key mode other than its own)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from labqfl.app.training import SELF_MASK_SECURITY, TrainingSettings, TrainingSetup
from labqfl.cli.node_train import mask_security, training_summary
from labqfl.provenance import (
    CSPRNG_MASKS,
    LOCAL_ENGINE_TRUST,
    SIMULATION_PK_UNSIGNED,
    SIMULATION_REFS_TAG_ONLY,
    SIMULATION_TRUST,
    engine_trust,
)


def _summary_security(engine: str, self_masks: bool = False) -> str:
    setup = TrainingSetup(TrainingSettings(task="mnist-qnn", clients=3, rounds=1, keys="csprng", engine=engine,
                                           self_masks=self_masks))
    setup.key_source = SimpleNamespace(name="csprng")  # no store: the CSPRNG statement
    setup.data = SimpleNamespace(meta={}, sizes=lambda: {})
    return str(setup.summary(SimpleNamespace(summary=dict))["security"])


@pytest.mark.parametrize("self_masks", [False, True])
def test_the_in_process_engine_says_one_process_holds_every_update_and_pad(self_masks: bool) -> None:
    sec = _summary_security("local", self_masks)
    assert sec == CSPRNG_MASKS + (SELF_MASK_SECURITY if self_masks else "") + ". " + LOCAL_ENGINE_TRUST
    assert "one process computes every client's update and reads every pad" in sec
    assert "protect nothing against that process's operator" in sec


def test_the_flower_simulation_says_one_operator_holds_every_pad_and_with_qkd_the_refs_tag_alone() -> None:
    sec = _summary_security("flower")
    assert sec == f"{CSPRNG_MASKS}. {SIMULATION_TRUST}{SIMULATION_PK_UNSIGNED}."  # csprng: unsigned public keys
    assert "X25519 public keys are relayed unsigned, so the server could substitute them" in sec
    assert "one command runs every client's update and pad" in sec and "protect nothing against its operator" in sec
    assert "no operator-signed spec" in sec
    qkd = engine_trust("flower", "qkd")
    assert qkd == SIMULATION_TRUST + SIMULATION_REFS_TAG_ONLY + "."
    assert "refs tag alone, with no node signature" in qkd and "§9" in qkd
    with pytest.raises(ValueError, match="expected local or flower"):
        engine_trust("nodes", "qkd")


@pytest.mark.parametrize(("keys", "self_masks"), [("qkd", False), ("qkd", True), ("csprng", False)])
def test_a_node_run_names_the_key_mode_asked_for_and_that_the_servers_messages_carry_the_settings(
        keys: str, self_masks: bool) -> None:
    sec = mask_security(keys, self_masks)
    assert sec.startswith(f"asked for {keys}: ")
    assert ("The key mode and the mask settings (participants, graph, self-masks and threshold, DP, rounds) reach "
            "the nodes in a spec signed by this operator (certificate ctl), and every SuperNode with the network CA "
            "refuses any server message that departs from it or an expired one, but no node reports what it used; "
            "each SuperNode ") in sec  # s35: the operator signs the spec
    if keys == "qkd":
        assert "its own key store" in sec and "labqfl keys status --data-dir" in sec
        assert sec.endswith("each SuperNode masks with keys from its own key store and refuses another key mode.")
    else:
        assert "no QKD key" in sec and "the server relays the keys but cannot substitute them" in sec
        assert sec.endswith("each SuperNode refuses a key mode other than its own.")
    assert (SELF_MASK_SECURITY in sec) == self_masks
    assert sec.count(". ") <= 1 and sec.endswith(".")  # two sentences at most


def test_the_node_run_summary_carries_the_node_statement() -> None:
    setup = TrainingSetup(TrainingSettings(task="mnist-qnn", clients=2, rounds=1, keys="qkd", self_masks=True))
    out = training_summary(setup, {"rounds": []}, "localhost:9092", "server")
    assert out["security"] == mask_security("qkd", True)


def test_the_node_run_report_names_why_a_client_was_dropped() -> None:
    from labqfl.cli.node_train import _dropped

    why = "malformed masked upload: masked upload has 23 values, expected 24"
    assert _dropped("C4", {"C4": why}) == f"C4 ({why})"
    assert _dropped("C3", {"C4": why}) == "C3"  # a round record of an older server: no reason


@pytest.mark.parametrize("nodes", [True, False])
def test_labqfl_runs_security_line_ends_with_who_holds_every_pad(nodes: bool) -> None:
    """``labqfl run`` built its own training security line (labqfl/mainjob.py) without the engine's sentence:
    over nodes on one machine every process is one OS user's with one data folder; in process one process
    holds every update and pad."""
    from labqfl.mainjob import JobSettings, MainJob
    from labqfl.provenance import LOCAL_ENGINE_TRUST, LOCAL_NODES_TRUST

    job = MainJob.__new__(MainJob)
    job.settings = JobSettings(nodes=nodes)
    line = job._training_key_security({})["security"]  # no block used: no key store is opened
    assert line.endswith(LOCAL_NODES_TRUST if nodes else LOCAL_ENGINE_TRUST)


def test_the_guis_statement_for_a_stopped_run_ends_with_the_engines_sentence() -> None:
    """The GUI's Training tab (gui/workers/training.py) stated a stopped run's masks without saying that its
    in-process engine holds every update and pad (review s34 F8 follow-up)."""
    from labqfl.gui.workers.training import Cancelled, run_to_summary

    from labqfl.provenance import LOCAL_ENGINE_TRUST

    class Setup:
        key_source, settings, closed = "csprng", TrainingSettings(), False
        security = TrainingSetup.security  # the real line, over this stub's key source and settings

        def run(self, **kw: object) -> None:
            raise Cancelled()

        def close(self) -> None:
            self.closed = True

    setup = Setup()
    out = run_to_summary(setup, None, None)
    assert out["stopped"] and out["security"].endswith(LOCAL_ENGINE_TRUST) and setup.closed
