"""The ServerApp's reply check refuses a reply signed with an ETSI SAE certificate of the network's CA
(review s32, F1): ``labqfl keys certs`` issues SAE certificates from the same CA with CN = SAE ID, and the
default SAE IDs are C1…C4, the client names. Only a node certificate (URI subjectAltName
``urn:labqfl:node:<CN>``) signs as a client. On the code before the fix the SAE 'C1' reply was accepted as
client C1's (checked against ``git archive HEAD`` of the tree before the fix)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from labqfl.fl.flower.identity import NONCE, ReplyRefused, ReplySigner, ReplyVerifier
from labqfl.keystore.certs import make_dev_certs
from labqfl.net import make_node_certs

STATEMENT = {"run": "run-a", "nonce": "n" * 32, "stage": "mask", "round_index": 1, "name": "C1"}


def _reply(folder: Path, stem: str) -> Message:
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    cfg = ConfigRecord({"stage": "mask", "round": 1, "run_tag": "run-a", NONCE: "n" * 32})
    req = Message(RecordDict({"labqfl": cfg}), dst_node_id=7, message_type="train", group_id="1")
    rep = Message(RecordDict({"masked": ArrayRecord({"masked": Array(np.arange(64, dtype=np.uint8))})}), reply_to=req)
    signer = ReplySigner((folder / f"{stem}.pem").read_bytes(), (folder / f"{stem}.key").read_bytes())
    signer.sign(rep, **STATEMENT)  # type: ignore[arg-type]
    return rep


def test_a_reply_signed_with_an_sae_certificate_named_like_the_client_is_refused(tmp_path: Path) -> None:
    make_node_certs(tmp_path, ["C1", "server"])
    make_dev_certs(tmp_path, kmes=(), saes=("C1",))  # the same CA, SAE ID = the client's name
    v = ReplyVerifier.from_file(tmp_path / "ca.pem")
    v.verify(_reply(tmp_path, "node-C1"), **STATEMENT)  # type: ignore[arg-type]  # positive control
    with pytest.raises(ReplyRefused) as exc:
        v.verify(_reply(tmp_path, "sae-C1"), **STATEMENT)  # type: ignore[arg-type]
    msg = str(exc.value)
    assert "certificate CN 'C1'" in msg and "lacks the URI subjectAltName 'urn:labqfl:node:C1'" in msg, msg
    assert "node certificates must be re-issued" in msg, msg
