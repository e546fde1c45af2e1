"""An in-process Flower ``Grid``: every node's ClientApp runs in this process, messages are
serialised as Flower serialises them, bytes are counted, and chosen replies can be lost (and kept
as late uploads). For benchmarks and tests that compare protocols message by message without Ray
or a network."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace
from typing import Any


class InProcessGrid:
    """A Flower ``Grid`` that hands each message to a ClientApp in this process (no Ray, no network),
    counts every message's serialised content bytes (protobuf ``RecordDict``, what Flower puts on
    the wire) to (down) and from (up) each node, and loses the replies for which
    ``lose(node name, message)`` is true: the node did its work, its answer does not arrive in
    time (a client lost mid-round); the lost replies are kept in :attr:`late` — what the server
    would hold if they arrived after the round (a late upload).

    ``keep=True`` records every delivered exchange in :attr:`exchanged` (tests: the server's view).
    ``node_config`` is added to every node's ``{"labqfl-client": "Ci", "partition-id": i - 1}``.
    Every message is serialised and parsed back on the way (each node gets its own copy, as over
    a network). Used by ``labqfl bench secure_aggregation_vs_secaggplus`` and the tests."""

    def __init__(self, app: Any, names: list[str], node_config: dict[str, Any],
                 lose: Any = None, keep: bool = False) -> None:
        from flwr.app import Context, RecordDict
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
        self.app = app
        self.names = {1000 + i: n for i, n in enumerate(names)}
        self.contexts = {nid: Context(run_id=1, node_id=nid, state=RecordDict(), run_config={},
                                      node_config={"labqfl-client": n, "partition-id": i, **node_config})
                         for i, (nid, n) in enumerate(self.names.items())}
        self.lose = lose or (lambda name, msg: False)
        self.up: dict[str, int] = dict.fromkeys(names, 0)
        self.down: dict[str, int] = dict.fromkeys(names, 0)
        self.client_s = 0.0  # wall seconds spent inside the ClientApps
        self.run = SimpleNamespace(run_id=1)  # what Flower's legacy client manager reads
        #: the lost replies, per node, in order: what a late upload would bring the server afterwards
        self.late: dict[str, list[Any]] = {}
        #: with ``keep``: (node name, message sent, reply the server received) of every exchange
        self.exchanged: list[tuple[str, Any, Any]] | None = [] if keep else None

    def get_node_ids(self) -> list[int]:
        return list(self.names)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Any]:
        from flwr.app import Error, Message
        from flwr.common.serde import recorddict_from_proto, recorddict_to_proto

        out = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            nid = m.metadata.dst_node_id
            name = self.names[nid]
            # what crosses the wire: the content serialised, the client gets its own copy (a
            # server may send one RecordDict object to every node, and secaggplus_mod pops from it)
            wire = recorddict_to_proto(m.content)
            self.down[name] += wire.ByteSize()
            delivered = Message(recorddict_from_proto(wire), dst_node_id=nid, message_type=m.metadata.message_type,
                                group_id=m.metadata.group_id)
            delivered.metadata.__dict__["_message_id"] = m.metadata.message_id
            t0 = time.perf_counter()
            try:
                rep = self.app(delivered, self.contexts[nid])
                if not rep.has_error():
                    rep_wire = recorddict_to_proto(rep.content)
                    self.up[name] += rep_wire.ByteSize()
                    rep = Message(recorddict_from_proto(rep_wire), reply_to=m)
            except Exception as exc:  # noqa: BLE001 - a failing ClientApp becomes an error reply
                rep = Message(Error(code=0, reason=str(exc)), reply_to=m)
            self.client_s += time.perf_counter() - t0
            if self.lose(name, m):
                if not rep.has_error():
                    self.up[name] -= recorddict_to_proto(rep.content).ByteSize()  # never arrived in time
                    self.late.setdefault(name, []).append(rep)
                continue
            if self.exchanged is not None:
                self.exchanged.append((name, m, rep))
            out.append(rep)
        return out
