"""A SIGTERM that comes while Numba compiles (issue 19): ``labqfl run --in-process`` hung after "putting
every instrument in its safe state" in clean-clone CI (empty Numba cache, so the kernels compile during the
acquisition). :func:`labqfl.station.sigterm_as_interrupt` raised its ``KeyboardInterrupt`` wherever the main
thread was; inside llvmlite's LLVM lock, whose ``__enter__`` calls back into Python right after taking it,
the interrupt left that lock held for good. Stacks of the hung process (faulthandler, stress run with the
signal delivered in an llvmlite ``__del__`` during the first window's kernels): the simulator's helper thread
``labqfl-sim-1`` held Numba's compiler lock and waited in ``llvmlite/binding/ffi.py`` ``__enter__`` for the
LLVM lock; the main thread held the LLVM lock and waited in ``numba/core/compiler_lock.py`` ``acquire``
(from ``sim_backends/qrng.py`` ``fill_codes`` in ``_parallel.work``): a deadlock, no CPU used. Other runs of
the same stress ended with a segmentation fault in an llvmlite ``__del__`` or "RuntimeError: no compiled
object yet" (a library left half-built).

The signal is delivered here at the exact point: from an llvmlite lock callback, which runs right after the
lock is taken. Each case runs in a fresh interpreter (its own Numba state and signal handlers)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import os, signal, sys, threading, time
    import numba
    from llvmlite.binding import ffi
    from labqfl.station import sigterm_as_interrupt

    armed, fired = [False], []

    def at_llvm_lock():  # llvmlite calls it right after it took its LLVM lock
        if armed[0] and not fired and threading.current_thread() is threading.main_thread():
            fired.append(1)
            signal.raise_signal(signal.SIGTERM)  # the handler runs at the next bytecode boundary: in here

    ffi.register_lock_callback(at_llvm_lock, lambda: None)

    @numba.njit(cache=False)
    def kernel(x):
        return x + 1

    @numba.njit(cache=False)
    def next_kernel(x):
        return x - 1

    armed[0] = True
    stage = ["in the first compilation"]
    try:
        with sigterm_as_interrupt() as term:
            kernel(1)
            stage[0] = "after the first compilation"
            next_kernel(1)  # a burst: another compilation right after
            stage[0] = "after both"
            for _ in range(100):
                time.sleep(0.01)
    except KeyboardInterrupt as exc:
        print("interrupted", exc.args, "signatures", len(kernel.signatures), "requested", term.requested)
        print("raised", stage[0], "; next kernel compiled:", bool(next_kernel.signatures))
    armed[0] = False
    print("signal delivered inside the LLVM lock", bool(fired))
    other = threading.Thread(target=lambda: numba.njit(cache=False)(lambda x: x * 2)(3), daemon=True)
    other.start()  # as the simulator's helper threads compile their kernels
    other.join(TIMEOUT)
    print("another thread compiles:", "yes" if not other.is_alive() else "no, it waits for the LLVM lock")
    sys.stdout.flush()
    os._exit(0)  # a thread blocked for good would keep the interpreter from exiting
""")


def _run(timeout_s: float, cwd: Path) -> list[str]:
    out = subprocess.run([sys.executable, "-c", SCRIPT.replace("TIMEOUT", repr(timeout_s))], capture_output=True,
                         text=True, timeout=timeout_s + 240, cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.splitlines()


def test_a_sigterm_inside_the_llvm_lock_is_raised_after_the_compilation_and_leaves_no_lock_held(tmp_path: Path) -> None:
    lines = _run(60.0, tmp_path)
    assert "signal delivered inside the LLVM lock True" in lines, lines
    # the interrupt comes once the kernel is compiled (before: raised inside the compilation, none compiled)
    assert "interrupted ('SIGTERM',) signatures 1 requested True" in lines, lines
    # at once: out of the call whose compilation it came in, before the next compilation of a burst
    assert "raised in the first compilation ; next kernel compiled: False" in lines, lines
    # before: "no, it waits for the LLVM lock" (the lock held for good by the main thread: the CI hang)
    assert "another thread compiles: yes" in lines, lines
