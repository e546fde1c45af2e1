"""Review s37 F6: when a client's node is gone, the SuperLink answers the server's message itself with a
NODE_UNAVAILABLE error whose sender is the SuperLink (flwr's ``create_message_error_unavailable_res_message``:
``src_node_id`` = SUPERLINK_NODE_ID, ``reply_to_message_id`` = the message's ID). The server discarded it (not a
client's node ID) and recorded the client as "no reply within 600.0 s", however soon it knew. Now the client is
recorded as unavailable, with the SuperLink's reason; an error reply never counts as an answer."""

from __future__ import annotations

import uuid

from flwr.app import ConfigRecord, Error, Message, RecordDict
from test_consistency import _spec

from labqfl.fl.flower.server import CFG, LabqflServer

SUPERLINK_NODE_ID = 1  # flwr.common.constant.SUPERLINK_NODE_ID


class _Grid:
    """Answers C1's message with C1's own error and C2's with the SuperLink's NODE_UNAVAILABLE; C3 never."""

    def send_and_receive(self, messages: list[Message], *, timeout: float | None = None) -> list[Message]:
        out = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # as a grid's push does
            if m.metadata.dst_node_id == 11:
                out.append(Message(Error(code=0, reason="C1 failed"), reply_to=m))
            elif m.metadata.dst_node_id == 12:
                rep = Message(Error(code=3, reason="Node unavailable"), reply_to=m)
                rep.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
                out.append(rep)
        return out


def test_a_superlink_node_unavailable_reply_names_the_client_lost_and_why() -> None:
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # a Message needs it (as LocalGrid)
    srv = LabqflServer(_spec())
    msgs = {c: Message(RecordDict({CFG: ConfigRecord({"stage": "mask", "round": 2})}), dst_node_id=nid,
                       message_type="train", group_id="2") for c, nid in (("C1", 11), ("C2", 12), ("C3", 13))}
    ok, fail = srv._exchange(_Grid(), msgs, 600.0)
    assert ok == {}
    assert fail["C1"] == "error 0: C1 failed"
    assert fail["C2"].startswith("node unavailable (SuperLink: Node unavailable, error 3), reported within "), fail
    assert fail["C3"] == "no reply within 600.0 s"
