"""Child processes that die with the process that started them (Linux ``prctl(PR_SET_PDEATHSIG)``).

Every process a node launcher starts (the node processes of :class:`~labqfl.nodes.launch.LocalNetwork`
and :class:`~labqfl.nodes.fl.FlNetwork`, the warm-up helpers) and every Flower process a node starts
(:class:`~labqfl.nodes.warmapp.WarmFederation`: the SuperLink, the SuperNode, the zygotes) gets
its command wrapped by :func:`die_with_parent`: when its parent dies, even by SIGKILL, the kernel sends it
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

__all__ = ["die_with_parent"]

PR_SET_PDEATHSIG = 1

#: Run with ``python -SE -c`` before the real program: asks the kernel for the signal on the parent's death,
#: checks the parent is still the launcher, then ``exec``\ s the program (the setting survives ``execve``).
#: Not a ``preexec_fn``: that makes ``subprocess`` use ``fork`` instead of ``vfork``, which runs gRPC's fork
#: handlers in the child of a launcher that has gRPC loaded, and those aborted the child (SIGABRT,
#: "epoll_wait error: Bad file descriptor") before it reached its ``exec``.
TRAMPOLINE = ("import ctypes, os, sys\n"
              "ctypes.CDLL(None, use_errno=True).prctl(1, int(sys.argv[2]), 0, 0, 0)\n"
              "if os.getppid() != int(sys.argv[1]):\n"
              "    sys.exit(128 + int(sys.argv[2]))\n"
              "os.execvp(sys.argv[3], sys.argv[3:])\n")


def die_with_parent(cmd: list[str], sig: int = signal.SIGTERM) -> list[str]:
    """``cmd`` run so that it receives ``sig`` when this process dies (through :data:`TRAMPOLINE`); ``cmd``
    unchanged off Linux or outside the main thread (module docstring)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return list(cmd)
    return [sys.executable, "-SE", "-c", TRAMPOLINE, str(os.getpid()), str(int(sig)), *cmd]
