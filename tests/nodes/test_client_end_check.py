"""Review s37 lab3 L7: a client node's instrument faults at the end of an acquisition are reported and the
acquisition is refused, as the detection node's are.

``NodeInstruments.arm`` records, on any node, an arming of another acquisition that failed while one ran, and
``acquisition_faults()`` reads every arming setting back (modulators on, shutters open); only the detection node
asked it (labqfl/nodes/detector.py). A client's fault (a shutter that would not stay open) was logged, cleared at
the next full disarm, and no acquisition was refused for it. Now the client reads it at the end of its acquisition
(both ends: the modulator link of a simulated light, ``ann/end`` of the lab's), before its disarm, returns it in
``ctl/results`` and the operator (``run_acquisition``) refuses the acquisition in one line naming client and
fault. Run on a stand-in client (a ClientNode without its __init__) with instruments that record the order of
calls."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from labqfl.nodes.client import ClientNode, _Acq
from labqfl.nodes.common import NodeError
from labqfl.qkd.messaging import Message

FAULT = "C1.attenuator: shutter_closed reads True"


class _Instruments:
    def __init__(self, faults: list[str]) -> None:
        self.faults, self.calls = faults, []

    def acquisition_faults(self, clicked: Any = ()) -> list[str]:
        self.calls.append("acquisition_faults")
        return list(self.faults)

    def disarm(self) -> dict[str, str]:
        self.calls.append("disarm")
        return {}


def _client(faults: list[str]) -> Any:
    node = ClientNode.__new__(ClientNode)
    node.name, node.instruments = "C1", _Instruments(faults)
    return node


def _acq() -> _Acq:
    return _Acq("nodes/test-acq", SimpleNamespace(client="C1"), {})


def test_the_lab_light_end_reads_the_clients_instruments_before_the_disarm() -> None:
    node, a = _client([FAULT]), _acq()
    a.ended.set()  # ann/end came
    node._until_ended(a, 1.0)
    assert a.instrument_faults == [FAULT]
    assert node.instruments.calls == ["acquisition_faults", "disarm"]  # read while still armed


def test_the_modulator_link_end_reads_them_too_and_a_good_end_reports_nothing() -> None:
    class _Link:
        def request(self, msg: Message) -> Message:
            return Message("mod/end", {})

        def close(self) -> None:
            pass

    node, a = _client([FAULT]), _acq()
    node._modulator(a, _Link())
    assert a.instrument_faults == [FAULT] and node.instruments.calls == ["acquisition_faults", "disarm"]
    node, a = _client([]), _acq()
    node._modulator(a, _Link())
    assert a.instrument_faults == []


def test_ctl_results_carry_the_faults_and_the_operator_refuses_the_acquisition() -> None:
    from labqfl.nodes.launch import refuse_client_faults

    node, a = _client([FAULT]), _acq()
    a.ended.set()
    node._until_ended(a, 1.0)
    node.acqs = {a.acq: a}
    rep = node.ctl_wait(Message("ctl/wait", {"acq": a.acq, "duration": 1.0, "timeout": 5.0}))
    faults = json.loads(str(rep.get("instrument_faults")))
    assert faults == [FAULT]
    refuse_client_faults(a.acq, {"C2": {"instrument_faults": []}})  # none: nothing to refuse
    with pytest.raises(NodeError) as err:
        refuse_client_faults(a.acq, {"C1": {"instrument_faults": faults}, "C2": {"instrument_faults": []}})
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith(f"acquisition {a.acq}: at its end the instruments no longer read as armed: client C1: "
                           f"{FAULT}"), line
    assert "Refused: the key blocks the pairs already stored from it are kept" in line
