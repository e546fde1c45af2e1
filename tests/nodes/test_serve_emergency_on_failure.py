"""A node whose instruments fail to open after a SIGTERM/SIGINT leaves the emergency stop it entered
(session 37's closing notes, "node emergency not exited when instruments.open() fails after a signal").

:meth:`labqfl.nodes.common.Node.serve` enters an emergency (:class:`labqfl.instruments.base.emergency`: the PRO8000's
ramp-down capped at ``safe_ramp_max_s``, ramps other threads run cut) from its signal handler and left it only at the
end of a served node's shutdown. When ``instruments.open()`` (or the server's start) raised after the signal, serve
raised without leaving it: every later switch-off in the process stayed an emergency one (in_emergency() kept the
signal's reason), and the handler stayed installed. Run here on a stand-in node (a Node without its __init__) whose
instruments receive the signal while they open, then fail."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import labqfl.nodes.common as common
from labqfl.instruments.base import in_emergency
from labqfl.nodes.common import Node, NodeError


class _FailingInstruments:
    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.closed = self.stopped = False

    def open(self) -> None:
        os.kill(os.getpid(), self.signum)  # the launcher's SIGTERM (or a Ctrl-C) while the instruments open ...
        assert in_emergency() is not None  # (delivered here: the main thread runs the handler at once)
        raise NodeError("node n1: role 'laser' (ThorlabsPRO8000 at 'GPIB0::10::INSTR') failed to open: timeout")

    def stop(self, reason: str | None = None) -> None:
        self.stopped = True

    def close(self) -> None:
        self.closed = True


def _stand_in(tmp_path: Path, instruments: Any) -> Node:
    """A Node without its __init__ (no certificates, no server): what serve() reads before it listens."""
    node = Node.__new__(Node)
    node.name, node.instruments, node.stopping, node.private = "n1", instruments, threading.Event(), tmp_path
    node.server = SimpleNamespace()  # type: ignore[assignment] - never reached: the instruments fail first
    return node


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_failed_open_after_a_signal_leaves_the_emergency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          signum: int) -> None:
    for name in ("keep_freed_memory", "warm_codec", "freeze_startup_objects"):  # process-wide start-up work
        monkeypatch.setattr(common, name, lambda: None)
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    node = _stand_in(tmp_path, _FailingInstruments(signum))
    try:
        with pytest.raises(NodeError, match="failed to open"):
            node.serve()
        assert node.stopping.is_set()
        assert in_emergency() is None, "the signal's emergency outlived serve()"
        assert signal.getsignal(signum) is signal.SIG_IGN  # as after a served node's shutdown: late signals ignored
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
        from labqfl.instruments import base

        for e in [e for e in base._EMERGENCY if e.reason.startswith("node n1: ")]:  # the code before: not left
            e.__exit__(None, None, None)
