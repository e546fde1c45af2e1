"""Review s38 lab4 M1: a node's end-of-acquisition read-back (``NodeInstruments.acquisition_faults``, asked by the
client node's end check and by the detection node) held the node's instrument lock for its whole length, so a
signal's emergency ``stop()`` waited behind it before any safe state: 2.82 s in the review with one read-back
hung 3 s; on hardware a VISA timeout (2 s) per setting read, or a detector's counting windows (up to ~20 s).

Now the read-back runs outside the lock, one role at a time, and ends at a stop. Deterministic: the stand-in
instrument's read-back blocks on an event until the test releases it; the stop must reach the safe state while
that read-back is still blocked."""

from __future__ import annotations

import threading

from labqfl.config import load_station_config
from labqfl.instruments.base import in_emergency
from labqfl.nodes.common import NodeInstruments


class _HungReadBack:
    """Armed (no arming setting of its own); its end-of-acquisition read-back hangs until ``release`` is set,
    as a VISA query does until its timeout."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.reads = 0
        self.safe: list[str | None] = []

    def acquisition_fault(self) -> str | None:
        self.reads += 1
        self.entered.set()
        self.release.wait(30.0)
        return None

    def safe_state(self) -> None:
        self.safe.append(in_emergency())


def _armed_node(roles: dict[str, _HungReadBack]) -> NodeInstruments:
    ni = NodeInstruments("C1", load_station_config(), [], None)
    ni.instruments = dict(roles)  # type: ignore[arg-type]
    ni._armed = 1
    return ni


def test_an_emergency_stop_does_not_wait_for_a_hung_read_back() -> None:
    first, second = _HungReadBack(), _HungReadBack()
    second.release.set()
    ni = _armed_node({"C1.attenuator": first, "C1.phase_modulator": second})
    out: list[list[str]] = []
    check = threading.Thread(target=lambda: out.append(ni.acquisition_faults()), daemon=True)
    check.start()
    assert first.entered.wait(10.0)
    stop = threading.Thread(target=ni.stop, args=("node C1: signal SIGTERM",), daemon=True)
    stop.start()
    stop.join(5.0)  # the read-back is still blocked: before the fix, stop waited for it (the lock)
    stopped_while_hung = not stop.is_alive()
    safe_while_hung = list(first.safe), list(second.safe)
    first.release.set()
    stop.join(10.0)
    check.join(10.0)
    assert stopped_while_hung, "stop() waited behind the end-of-acquisition read-back"
    assert safe_while_hung == (["node C1: signal SIGTERM"], ["node C1: signal SIGTERM"])
    # the role after the stop is not read back, and the acquisition reads as faulty
    assert second.reads == 0
    assert out and out[0] == ["node C1 stopped during the end-of-acquisition read-back: its instruments were put "
                              "in their safe state"]


def test_a_read_back_with_no_stop_reads_every_role_and_reports_nothing() -> None:
    a, b = _HungReadBack(), _HungReadBack()
    a.release.set()
    b.release.set()
    ni = _armed_node({"C1.attenuator": a, "C1.phase_modulator": b})
    assert ni.acquisition_faults() == []
    assert (a.reads, b.reads) == (1, 1)
