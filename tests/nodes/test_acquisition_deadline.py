"""The operator's acquisition deadline grows with the acquisition (labqfl/nodes/launch.py): a fixed
900 s made the README's 60 s default run fail on a loaded 2-core machine while every node still worked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import labqfl.nodes.launch as launch
from labqfl.qkd.messaging import Message


class _Session:
    def __init__(self, peer: str, service: str, timeout_s: float) -> None:
        self.peer, self.service, self.timeout_s = peer, service, timeout_s
        self.sent: list[Message] = []

    def request(self, msg: Message) -> Message:
        self.sent.append(msg)
        if msg.kind == "ctl/arm":
            return Message("ctl/armed", {})
        if msg.kind == "ctl/run":
            return Message("ctl/ran", {"slots": 1})
        return Message("ctl/results", {"results": "{}", "answered_slots": 0, "link_error": ""})

    def close(self) -> None:
        pass


def _run(monkeypatch: Any, duration: float, timeout: float) -> list[_Session]:
    sessions: list[_Session] = []

    def fake_open(address: str, creds: Any, peer: str, service: str, *, timeout_s: float = 3600.0, **kw: Any) -> _Session:
        sessions.append(_Session(peer, service, timeout_s))
        return sessions[-1]

    monkeypatch.setattr(launch, "open_session", fake_open)
    monkeypatch.setattr(launch.NodeCredentials, "load", staticmethod(lambda certs, name: object()))
    launch.run_acquisition(["C1", "C2"], Path("certs"), detector="d", optics="o", clients={"C1": "a", "C2": "b"},
                           duration=duration, timeout=timeout)
    return sessions


def test_deadline_scales_with_the_acquisition(monkeypatch: Any) -> None:
    long = _run(monkeypatch, 60.0, 900.0)
    det = [s for s in long if s.peer == "detector"][0]
    assert det.timeout_s == 60.0 * launch.WALL_PER_SIMULATED_S > 900.0
    waits = [m for s in long if s.peer != "detector" for m in s.sent if m.kind == "ctl/wait"]
    assert waits and all(float(m.get("timeout")) == det.timeout_s for m in waits)
    # the clients' control sessions outlive the acquisition and the wait after it
    assert all(s.timeout_s > 2 * det.timeout_s for s in long if s.peer != "detector")
    short = _run(monkeypatch, 0.2, 900.0)  # a short acquisition keeps the given limit
    assert [s for s in short if s.peer == "detector"][0].timeout_s == 900.0
