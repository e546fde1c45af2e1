"""Shared helpers for the Flower engine tests: an in-process Grid and key-store fixtures."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, Error, Message, RecordDict

from labqfl.fl.masks import mask_graph


class LocalGrid:
    """A Grid that delivers messages to ClientApps in this process (no Ray, no network).

    ``crash``: client name → round in which its ClientApp "dies" after masking (no reply), the
    same path as a SuperNode lost mid-round.
    """

    def __init__(self, client_app: Any, names: list[str], node_config: dict[str, dict[str, Any]] | None = None,
                 crash: dict[str, int] | None = None) -> None:
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
            try:
                rep = self.app(m, self.contexts[nid])
            except Exception as exc:  # noqa: BLE001 - a failing ClientApp becomes an error reply
                rep = Message(Error(code=0, reason=str(exc)), reply_to=m)
            out.append(rep)
        return out


@pytest.fixture
def make_stores(tmp_path: Path) -> Any:
    """Fill per-node key stores for the pairs of a mask graph with identical random blocks."""
    from labqfl.keystore import KeyStore

    def make(names: list[str], nbits: int, graph: str = "all", k: int = 0) -> Path:
        rng = np.random.default_rng(7)
        for p in mask_graph(names, graph, k):
            a, b = p.split("-")
            bits = rng.integers(0, 2, nbits, dtype=np.uint8)
            bid = str(uuid.uuid4())
            for node in (a, b):
                with KeyStore.for_node(node, tmp_path) as st:
                    st.add_block(p, bits, block_id=bid, purpose="fl")
        return tmp_path

    return make


@pytest.fixture
def local_grid() -> type[LocalGrid]:
    """The in-process Grid class (test modules cannot import conftest under importlib mode)."""
    return LocalGrid
