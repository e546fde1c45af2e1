"""A malicious Flower server's network for the refs-authentication tests (test_refs_auth.py,
test_refs_signed.py): one copy, importable because this folder's conftest puts it on sys.path."""

from __future__ import annotations

from typing import Any

from flwr.app import Message


def signed_server(cert_dir: Any, spec: Any, **kw: Any) -> Any:
    """A :class:`~labqfl.fl.flower.server.LabqflServer` for ``spec`` that sends the operator-signed spec
    (certificate ``node-ctl`` of ``cert_dir``) with every message, as nodes with the network CA require."""
    from pathlib import Path

    from labqfl.fl.flower.identity import ReplySigner
    from labqfl.fl.flower.server import LabqflServer
    from labqfl.fl.flower.specsig import OPERATOR, sign_spec

    d = Path(cert_dir)
    op = ReplySigner((d / f"node-{OPERATOR}.pem").read_bytes(), (d / f"node-{OPERATOR}.key").read_bytes())
    return LabqflServer(spec, signed_spec=sign_spec(spec, op, valid_s=3600), **kw)


class MeddlingGrid:
    """A malicious server's network: wraps a LocalGrid; ``meddle(node, stage, round, cfg)`` may
    change a message's config in place before delivery, or return False to withhold it (no reply).
    Keeps every (node, stage, round, reply) and a copy of every mask config sent."""

    def __init__(self, grid: Any, meddle: Any = None) -> None:
        self.grid, self.meddle = grid, meddle or (lambda *a: True)
        self.replies: list[tuple[str, str, int, Message]] = []
        self.mask_cfgs: dict[tuple[str, int], dict[str, Any]] = {}

    def get_node_ids(self) -> Any:
        return self.grid.get_node_ids()

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        out: list[Message] = []
        for m in messages:
            node = self.grid.nodes[m.metadata.dst_node_id]
            cfg = m.content.config_records.get("labqfl")
            stage, r = (str(cfg["stage"]), int(cfg["round"])) if cfg is not None else ("", 0)
            if cfg is not None and stage == "mask":
                self.mask_cfgs[(node, r)] = dict(cfg)
            if cfg is not None and self.meddle(node, stage, r, cfg) is False:
                continue
            for rep in self.grid.send_and_receive([m], timeout=timeout):
                self.replies.append((node, stage, r, rep))
                out.append(rep)
        return out

    def error_of(self, node: str, stage: str, r: int) -> str:
        errs = [rep.error.reason for n, s, rr, rep in self.replies if (n, s, rr) == (node, stage, r) and rep.has_error()]
        return errs[0] if errs else ""

    def reply(self, node: str, stage: str, r: int) -> Message:
        return next(rep for n, s, rr, rep in self.replies if (n, s, rr) == (node, stage, r))


class ModNodes:
    """Client nodes driven directly through :func:`~labqfl.fl.flower.client.labqfl_secagg_mod`, as a
    malicious server would (it writes every field of its messages itself): one node state per client of
    ``spec``, each training function answering a fixed update of the model's size. ``node_config``:
    client → extra node config (``labqfl-keystore``, ``labqfl-keys``, …)."""

    def __init__(self, spec: Any, node_config: dict[str, dict[str, Any]] | None = None) -> None:
        import numpy as np
        from flwr.app import Context, RecordDict
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
        self.spec, self.n = spec, int(spec.model().n_params)
        self.ctx = {c: Context(run_id=1, node_id=7, state=RecordDict(), run_config={},
                               node_config={"labqfl-client": c, **(node_config or {}).get(c, {})}) for c in spec.names}
        self.upd = {c: np.random.default_rng(100 + i).uniform(-0.05, 0.05, self.n) for i, c in enumerate(spec.names)}

    def send(self, c: str, stage: str, r: int = 1, run: str = "t", spec: Any = None, **fields: Any) -> Message:
        """Deliver one stage's message to client ``c`` (``spec`` replaces the run's in the message)."""
        from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

        from labqfl.fl.flower.client import labqfl_secagg_mod

        def train(msg: Message, context: Any) -> Message:
            return Message(RecordDict({"update": ArrayRecord({"update": Array(self.upd[c].copy())}),
                                       "metrics": MetricRecord({"num_examples": 10})}), reply_to=msg)

        d = dict((spec or self.spec).to_config(), stage=stage, round=r, n_params=fields.pop("n_params", self.n),
                 run_tag=run, **fields)
        msg = Message(RecordDict({"labqfl": ConfigRecord(d)}), dst_node_id=7, message_type="train", group_id=str(r))
        return labqfl_secagg_mod(msg, self.ctx[c], train)

    def answer(self, c: str, stage: str, **kw: Any) -> Any:
        """The ``labqfl`` config of client ``c``'s answer to one stage."""
        return self.send(c, stage, **kw).content.config_records["labqfl"]

    def masked(self, c: str, **kw: Any) -> Any:
        """Client ``c``'s masked upload for a mask message."""
        return self.send(c, "mask", **kw).content.array_records["masked"]["masked"].numpy()

    def qkd_keys_and_refs(self, r: int = 1, run: str = "t") -> dict[str, dict[str, Any]]:
        """An honest qkd keys and refs stage over every pair of the run's graph: per slave, the relayed
        fields of its mask message (``refs``/``reftag``/``refpad``/``void``, the master's ``tag``)."""
        from labqfl.fl.masks import split_pair

        pairs = self.spec.secagg().pairs(self.spec.names)
        keys = {c: self.answer(c, "keys", r=r, run=run, master_pairs=[p for p in pairs if split_pair(p)[0] == c],
                               slave_pairs=[p for p in pairs if split_pair(p)[1] == c]) for c in self.spec.names}
        relay: dict[str, dict[str, Any]] = {c: {} for c in self.spec.names}
        for m in self.spec.names:
            mine = [p for p in pairs if split_pair(p)[0] == m]
            if not mine:
                continue
            tags = self.answer(m, "refs", r=r, run=run, pairs=mine,
                               **{f"nonce.{p}": keys[split_pair(p)[1]][f"nonce.{p}"] for p in mine})
            for p in mine:
                got = {f"{k}.{p}": keys[m][f"{k}.{p}"] for k in ("refs", "reftag", "refpad", "void")
                       if f"{k}.{p}" in keys[m]}
                relay[split_pair(p)[1]].update(got, **{f"tag.{p}": tags[f"tag.{p}"]})
        return relay


def spec_examples(msg: Message, name: str) -> int:
    """The sample count client ``name`` reports at setup, as the real ClientApp does: its partition of the
    spec's task data (a deployed node checks its quantisation levels against these counts, review s35
    second look F1)."""
    from labqfl.fl.flower.client import CFG
    from labqfl.fl.flower.spec import FlowerSpec

    return len(FlowerSpec.from_config(msg.content.config_records[CFG]).client_data(name)[1])


def fair_levels(spec: Any) -> dict[str, int]:
    """Each client's weighted-FedAvg levels M_i when all of ``spec``'s clients take part, from the sample
    counts of :func:`spec_examples` (what the server sends and a deployed node checks)."""
    counts = {c: float(len(spec.client_data(c)[1])) for c in spec.names}
    return {c: int(m) for c, m in spec.secagg().quantization(counts)["levels"].items()}
