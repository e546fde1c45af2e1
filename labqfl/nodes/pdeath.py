"""Child processes that die with the process that started them (Linux ``prctl(PR_SET_PDEATHSIG)``).

Every process a node launcher starts (the node processes of :class:`~labqfl.nodes.launch.LocalNetwork`
and :class:`~labqfl.nodes.fl.FlNetwork`, the warm-up helpers) and every Flower process a node starts
(:class:`~labqfl.nodes.warmapp.WarmFederation`: the SuperLink, the SuperNode, the zygotes) gets
``preexec_fn=`` :func:`die_with_parent`\\ ``()``: when its parent dies, even by SIGKILL, the kernel sends it
SIGTERM, so it stops as on an operator's SIGTERM (a client finishes its block, instruments go to their
safe state; Flower's SuperLink ends its SuperExec, which also watches its parent). Stdlib only.

The kernel ties the signal to the parent *thread* that forked the child: it is set only when the child
is started from the main thread (a GUI worker thread that starts a network and ends would otherwise
take the nodes with it); the nodes' own :class:`~labqfl.nodes.common.LauncherWatch` covers the rest.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["die_with_parent"]

PR_SET_PDEATHSIG = 1
_PRCTL: list[Any] = []


def _prctl() -> Any:
    """libc's ``prctl``, resolved in the parent (no ``dlopen`` in a freshly forked child)."""
    if not _PRCTL:
        import ctypes

        try:
            fn: Any = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            fn = None
        _PRCTL.append(fn)
    return _PRCTL[0]


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when this process dies; None off Linux,
    without libc's ``prctl``, or outside the main thread (module docstring)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    fn = _prctl()
    if fn is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        fn(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died between the fork and the prctl
            os.kill(os.getpid(), int(sig))

    return preexec
