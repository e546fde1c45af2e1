"""The ``flower`` benchmark entry without Ray: it is registered, and its byte accounting (the
counting Grid used for SecAgg+, the server's own counters for labqfl) measures what Flower
serialises. The entry itself runs two Ray simulations (``labqfl bench flower --quick``)."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

import labqfl.bench.entries.flower as flower_entry
from labqfl.bench import registry
from labqfl.fl.flower.client import make_client_app
from labqfl.fl.flower.server import LabqflServer, message_bytes
from labqfl.fl.flower.spec import FlowerSpec


class _EchoGrid:
    """Answers every message with a fixed 1000-byte reply."""

    def get_node_ids(self) -> list[int]:
        return [1, 2]

    def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001, ANN201
        return [Message(RecordDict({"r": ArrayRecord({"x": Array(np.zeros(1000, np.uint8))})}), reply_to=m)
                for m in messages]


def test_flower_benchmark_is_registered() -> None:
    entry = registry()["flower"]
    assert "SecAgg+" in entry.description and entry.target


def test_counting_grid_counts_serialised_bytes_both_ways() -> None:
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    g = flower_entry._CountingGrid(_EchoGrid())
    msgs = [Message(RecordDict({"c": ConfigRecord({"a": 1})}), dst_node_id=n, message_type="query") for n in (1, 2)]
    for m in msgs:
        m.metadata.__dict__["_message_id"] = f"id{m.metadata.dst_node_id}"
    reps = g.send_and_receive(msgs)
    assert g.get_node_ids() == [1, 2]  # other Grid calls pass through
    assert g.down == {1: message_bytes(msgs[0]), 2: message_bytes(msgs[1])}
    assert g.up == {1: message_bytes(reps[0]), 2: message_bytes(reps[1])} and message_bytes(reps[0]) > 1000


def test_labqfl_byte_accounting_per_client(local_grid, mnist_dir) -> None:
    spec = FlowerSpec.for_task("mnist-qnn", data_dir=mnist_dir, clients=4, q=16, rounds=1, keys="csprng", seed=0)
    srv = LabqflServer(spec)
    grid = flower_entry._CountingGrid(local_grid(make_client_app(), spec.names))
    srv.run(grid)
    fr = srv.rounds[0]
    n = spec.model().n_params
    # the masked upload (q bits per parameter) dominates; all of a client's round traffic is counted
    assert spec.q * n / 8 < fr.upload_bytes_per_client <= np.mean(list(grid.up.values()))
    assert 8 * n < fr.download_bytes_per_client <= np.mean(list(grid.down.values()))
