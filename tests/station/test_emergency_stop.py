"""Review s36 lab2 L4: only a stop on a signal is an emergency stop (labqfl.instruments.base.emergency), during
which the PRO8000 cuts a long ramp-down at ``options.safe_ramp_max_s`` (tests/drivers/test_thorlabs.py). The
Station's SIGTERM/SIGINT handler and a node's stop put their safe states inside one; nothing else does."""

from __future__ import annotations

import signal
from typing import Any

import pytest

import labqfl.station as station_mod
from labqfl.config import load_station_config
from labqfl.instruments.base import in_emergency
from labqfl.nodes.common import NodeInstruments


def test_the_stations_signal_handler_safe_states_inside_an_emergency(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(station_mod, "_emergency_close", lambda reason: seen.append((reason, in_emergency())))
    monkeypatch.setitem(station_mod._PREVIOUS, int(signal.SIGTERM), lambda signum, frame: seen.append("previous"))
    assert in_emergency() is None
    station_mod._on_signal(signal.SIGTERM, None)
    assert seen == [("signal SIGTERM", "signal SIGTERM"), "previous"]
    assert in_emergency() is None  # over once the handler's safe state is done


class _Recorder:
    def __init__(self) -> None:
        self.seen: list[str | None] = []

    def safe_state(self) -> None:
        self.seen.append(in_emergency())


def test_a_nodes_stop_is_an_emergency_and_its_disarm_is_not() -> None:
    ni = NodeInstruments("detector", load_station_config(), [], None)
    rec = _Recorder()
    ni.instruments = {"laser": rec}  # type: ignore[dict-item]
    ni._armed = 1
    ni.disarm()  # an acquisition's normal end
    ni.stop("node detector: signal SIGTERM")  # SIGTERM/SIGINT (Node.serve; ctl/stop: stop() with no reason)
    assert rec.seen == [None, "node detector: signal SIGTERM"]
    assert in_emergency() is None
