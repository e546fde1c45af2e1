"""A malicious Flower server's network for the refs-authentication tests (test_refs_auth.py,
test_refs_signed.py): one copy, importable because this folder's conftest puts it on sys.path."""

from __future__ import annotations

from typing import Any

from flwr.app import Message


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
