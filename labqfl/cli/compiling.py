"""Say on stderr when a command compiles its Numba kernels, and how long that took.

Numba keeps compiled kernels in an on-disk cache (``__pycache__`` beside the sources, or
``NUMBA_CACHE_DIR``). The first run after an install or an upgrade finds it empty or stale and
compiles what it uses: `labqfl acquire --duration 1` of the default station acquired in 17.6 s wall
instead of 0.8 s and printed "0.06× real time" (2-core Intel Xeon, empty cache), with nothing saying
why. Commands that run kernels (:data:`KERNEL_COMMANDS`) now print one line at the first compilation and,
at exit, the number of kernels compiled and the seconds they took, so a first run's timing is not
read as the pipeline's speed. Nothing goes to stdout, so ``--json`` output is unchanged.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Callable
from typing import Any

from labqfl.cli.common import console

#: Commands whose work runs compiled kernels (the others never import Numba: no listener, no cost).
KERNEL_COMMANDS = frozenset({"run", "acquire", "distill", "calibrate", "bench", "train", "station", "gui"})

#: Not "the first run after an install": a command's first use of a kernel no earlier command ran compiles it too
#: (review s38 user F12: the GUI after four other commands, 1 kernel in 1.6 s).
NOTICE = ("labqfl: compiling numerical kernels not yet in Numba's cache (after an install or an upgrade, or the first "
          "use of one; later runs load them from the cache)…")


class CompileWatch:
    """Counts Numba's outermost compilations and their wall time (Numba compiles under one global lock,
    so nested ``numba:compile`` events of a kernel and its callees come strictly nested)."""

    def __init__(self, say: Callable[[str], None] = console.print) -> None:
        self.say = say
        self.kernels = 0
        self.seconds = 0.0
        self._depth = 0
        self._t0 = 0.0
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._t0 = time.perf_counter()
                if self.kernels == 0:
                    self.say(NOTICE)
            self._depth += 1

    def end(self) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                self.kernels += 1
                self.seconds += time.perf_counter() - self._t0

    def listener(self) -> Any:
        """A Numba event listener that feeds this watch (for ``numba:compile``)."""
        from numba.core import event

        watch_ = self

        class _Listener(event.Listener):  # type: ignore[misc]
            def on_start(self, ev: Any) -> None:
                watch_.start()

            def on_end(self, ev: Any) -> None:
                watch_.end()

        return _Listener()

    def summary(self) -> str | None:
        """The closing line, or None when nothing was compiled."""
        if not self.kernels:
            return None
        return (f"labqfl: this process spent {self.seconds:.1f} s compiling {self.kernels} kernel(s); "
                "later runs load them from Numba's cache")


_WATCH: CompileWatch | None = None


def watch() -> CompileWatch:
    """The process's :class:`CompileWatch` on Numba's ``numba:compile`` events, printing its summary at
    exit; registered at the first call (a process that runs several commands, as the tests do, has one)."""
    global _WATCH
    if _WATCH is None:
        from numba.core import event

        w = CompileWatch()
        event.register("numba:compile", w.listener())

        def _report() -> None:
            line = w.summary()
            if line:
                w.say(line)

        atexit.register(_report)
        _WATCH = w
    return _WATCH
