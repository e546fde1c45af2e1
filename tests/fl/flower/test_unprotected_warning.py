"""A SuperNode behind labqfl's FAB guard with no network CA and no signing key says, at each run's first
message, that it enforces no signatures (review s35 second look F10: docs/flower.md's hand-started
SuperNode set neither and answered a keys message with no signed spec, silently). A simulation (no guard)
stays quiet; a node with its CA and key says nothing. Fails on the code before: no warning."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from test_spec_replay import certs as certs  # noqa: F401  (the module's fixture)

from labqfl.fl.flower import fabguard
from labqfl.fl.flower.client import CFG, setup_request
from labqfl.fl.flower.identity import NODE_CA, NODE_CERT, NODE_KEY, ReplySigner
from labqfl.fl.flower.spec import FlowerSpec
from labqfl.fl.flower.specsig import OPERATOR, SIGNED_SPEC, sign_spec

SPEC = FlowerSpec(task="mnist-lenet5", clients=3, q=8, rounds=1, keys="csprng", clip=1.0)
WARNING = "enforces no operator-signed spec and no peer signatures"


def _setup(node_config: dict[str, Any], **fields: Any) -> None:
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    ctx = Context(run_id=1, node_id=7, state=RecordDict(), run_config={},
                  node_config={"labqfl-client": "C1", **node_config})
    msg = Message(RecordDict({CFG: ConfigRecord(dict(SPEC.to_config(), stage="setup", run_tag="t", **fields))}),
                  dst_node_id=7, message_type="query")
    setup_request(msg, ctx)


@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as a guarded ClientApp (fabguard.install's marker, undone after the test)."""
    from flwr.supernode.runtime import run_clientapp as rc

    monkeypatch.setattr(rc, "install_from_fab", fabguard._guarded_install(rc.install_from_fab))


def test_a_guarded_node_without_ca_or_key_warns_once_per_setup(guarded: None, caplog: Any) -> None:
    with caplog.at_level(logging.WARNING):
        _setup({"labqfl-keystore": "/nonexistent"})
    lines = [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("C1: this SuperNode has no network CA"), lines
    assert NODE_CA in lines[0] and "labqfl node supernode" in lines[0]
    assert fabguard.installed()


def test_a_guarded_node_with_its_ca_and_key_and_a_simulation_stay_quiet(
        guarded: None, certs: Path, caplog: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    op = ReplySigner((certs / f"node-{OPERATOR}.pem").read_bytes(), (certs / f"node-{OPERATOR}.key").read_bytes())
    with caplog.at_level(logging.WARNING):
        _setup({NODE_CERT: str(certs / "node-C1.pem"), NODE_KEY: str(certs / "node-C1.key"),
                NODE_CA: str(certs / "ca.pem")}, **{SIGNED_SPEC: sign_spec(SPEC, op, valid_s=600).to_json()})
        monkeypatch.setattr(fabguard, "installed", lambda: False)  # a simulation: no guard
        _setup({})
    assert not [r for r in caplog.records if WARNING in r.getMessage()]
