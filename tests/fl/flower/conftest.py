"""Shared helpers for the Flower engine tests: an in-process Grid (optionally recording every message
and node state it handles) and key-store fixtures."""

from __future__ import annotations

import os
import pickle
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, Error, Message, RecordDict

from labqfl.fl.masks import mask_graph

sys.path.insert(0, os.path.dirname(__file__))  # this folder's helper modules (flower_helpers), as tests/qkd/pipeline


@pytest.fixture(autouse=True)
def _own_node_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test here gets its own ``LABQFL_DATA_DIR``, even under ``.ci/run``, which sets one per xdist worker
    (tests/conftest.py): a deployed node keeps its signed-spec and consistency records under it
    (``nodes/<Ci>/fl/``), and since the default job ID is derived from the training settings (review s36 cons F2)
    two tests of the same settings in one worker were one job, so a dropout test's pinned survivor set refused
    the next test's honest round (clean-clone CI, 3 failures in test_spec_signed.py)."""
    monkeypatch.setenv("LABQFL_DATA_DIR", str(tmp_path / "labqfl-data"))


@pytest.fixture(scope="module")
def ring_certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The network's CA with a five-client ring's C1..C5 (``test_consistency.RING``) and the operator ctl: the
    certificates of the consistency follow-up tests (test_consistency_*.py)."""
    from labqfl.fl.flower.specsig import OPERATOR
    from labqfl.net import make_node_certs

    d = tmp_path_factory.mktemp("certs36")
    make_node_certs(d / "net", [f"C{i}" for i in range(1, 6)] + [OPERATOR])
    return {"net": d / "net"}


class LocalGrid:
    """A Grid that delivers messages to ClientApps in this process (no Ray, no network).

    ``crash``: client name → round in which its ClientApp "dies" after masking (no reply), the
    same path as a SuperNode lost mid-round.
    """

    def __init__(self, client_app: Any, names: list[str], node_config: dict[str, dict[str, Any]] | None = None,
                 crash: dict[str, int] | None = None, record: list[tuple[str, bytes]] | None = None) -> None:
        #: with ``record``: (label, bytes) of every message both ways (Flower's protobuf
        #: serialisation) and of every node's Context.state after each message (protobuf and pickle)
        self.record = record
        self.app = client_app
        self.nodes = {1000 + i: n for i, n in enumerate(names)}
        self.contexts = {nid: Context(run_id=1, node_id=nid, node_config={"labqfl-client": n, **(node_config or {}).get(n, {})},
                                      state=RecordDict(), run_config={}) for nid, n in self.nodes.items()}
        self.crash = dict(crash or {})
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        out = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            nid = m.metadata.dst_node_id
            name = self.nodes[nid]
            cfg = m.content.config_records.get("labqfl")
            if cfg is not None and cfg.get("stage") == "mask" and self.crash.get(name) == int(cfg["round"]):
                # run the client (it consumes its keys and masks), then lose the reply
                try:
                    self.app(m, self.contexts[nid])
                except SystemExit:
                    pass
                continue
            self._record(f"to {name}", m)
            try:
                rep = self.app(m, self.contexts[nid])
            except Exception as exc:  # noqa: BLE001 - a failing ClientApp becomes an error reply
                rep = Message(Error(code=0, reason=str(exc)), reply_to=m)
            self._record(f"from {name}", rep)
            out.append(rep)
        return out

    def _record(self, label: str, msg: Message) -> None:
        if self.record is None:
            return
        from flwr.common.serde import recorddict_to_proto

        if not msg.has_error():
            self.record.append((f"message {label}", recorddict_to_proto(msg.content).SerializeToString()))
        for nid, ctx in self.contexts.items():
            self.record.append((f"state of {self.nodes[nid]} after message {label}",
                                recorddict_to_proto(ctx.state).SerializeToString()))
            self.record.append((f"pickled state of {self.nodes[nid]} after message {label}", pickle.dumps(ctx.state)))


@pytest.fixture
def make_stores(tmp_path: Path) -> Any:
    """Fill per-node key stores for the pairs of a mask graph with identical random blocks."""
    from labqfl.keystore import KeyStore

    def make(names: list[str], nbits: int, graph: str = "all", k: int = 0) -> Path:
        rng = np.random.default_rng(7)
        for p in mask_graph(names, graph, k):
            a, b = p.split("-")
            bits = rng.integers(0, 2, nbits, dtype=np.uint8)
            make.bits[p] = bits  # type: ignore[attr-defined]
            bid = str(uuid.uuid4())
            for node in (a, b):
                with KeyStore.for_node(node, tmp_path) as st:
                    st.add_block(p, bits, block_id=bid, purpose="fl")
        return tmp_path

    make.bits = {}  # type: ignore[attr-defined]  # pair → the key bits planted at both ends
    return make


@pytest.fixture
def local_grid() -> type[LocalGrid]:
    """The in-process Grid class (test modules cannot import conftest under importlib mode)."""
    return LocalGrid


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The embedded MNIST subset saved once as ``mnist.npz`` (``data_dir`` of every spec here):
    every process (Ray workers, ClientApp processes) then loads it in milliseconds instead of
    re-parsing the embedded copy (~5 s each)."""
    from labqfl.fl.datasets.mnist import load_embedded_mnist

    d = tmp_path_factory.mktemp("mnist")
    mn = load_embedded_mnist()
    np.savez(d / "mnist.npz", x_train=mn.x_train, y_train=mn.y_train, x_test=mn.x_test, y_test=mn.y_test)
    return str(d)
