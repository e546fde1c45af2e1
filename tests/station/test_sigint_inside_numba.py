"""Ctrl-C while Numba compiles (issue 19, the SIGINT half): the first ``labqfl run --in-process`` or ``labqfl
acquire`` after an install compiles its kernels during the acquisition, and Python's own SIGINT handler
(``signal.default_int_handler``) raised its ``KeyboardInterrupt`` wherever the main thread was: inside llvmlite's
LLVM lock, whose ``__enter__`` calls back into Python right after taking it, the interrupt left that lock held
for good, and the simulator's helper thread compiling under Numba's compiler lock then waited for it - the
deadlock SIGTERM had (tests/station/test_sigterm_inside_numba.py). The CLI's commands now run inside
:func:`labqfl.station.sigint_as_interrupt` (:func:`labqfl.cli.common.handle_errors`), which holds the interrupt
back until the compilation is over.

As for SIGTERM, the signal is delivered at the exact point: from an llvmlite lock callback, which runs right after
the lock is taken; the command function goes through the CLI's decorator. Each case runs in a fresh interpreter
(its own Numba state and signal handlers)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import os, signal, sys, threading, time
    import numba, typer
    from llvmlite.binding import ffi
    from labqfl.cli.common import handle_errors

    armed, fired = [False], []

    def at_llvm_lock():  # llvmlite calls it right after it took its LLVM lock
        if armed[0] and not fired and threading.current_thread() is threading.main_thread():
            fired.append(1)
            signal.raise_signal(signal.SIGINT)  # the handler runs at the next bytecode boundary: in here

    ffi.register_lock_callback(at_llvm_lock, lambda: None)

    @numba.njit(cache=False)
    def kernel(x):
        return x + 1

    @numba.njit(cache=False)
    def next_kernel(x):
        return x - 1

    stage = ["in the first compilation"]

    @handle_errors
    def command():  # as a CLI command: the first acquisition after an install compiles its kernels
        armed[0] = True
        kernel(1)
        stage[0] = "after the first compilation"
        next_kernel(1)  # a burst: another compilation right after
        stage[0] = "after both"
        for _ in range(100):
            time.sleep(0.01)

    try:
        command()
    except typer.Exit as exc:
        print("exit", exc.exit_code, "signatures", len(kernel.signatures))
        print("raised", stage[0], "; next kernel compiled:", bool(next_kernel.signatures))
    armed[0] = False
    print("signal delivered inside the LLVM lock", bool(fired))
    print("SIGINT handler back to Python's own:", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    other = threading.Thread(target=lambda: numba.njit(cache=False)(lambda x: x * 2)(3), daemon=True)
    other.start()  # as the simulator's helper threads compile their kernels
    other.join(TIMEOUT)
    print("another thread compiles:", "yes" if not other.is_alive() else "no, it waits for the LLVM lock")
    sys.stdout.flush()
    os._exit(0)  # a thread blocked for good would keep the interpreter from exiting
""")


def _run(timeout_s: float, cwd: Path) -> tuple[list[str], str]:
    out = subprocess.run([sys.executable, "-c", SCRIPT.replace("TIMEOUT", repr(timeout_s))], capture_output=True,
                         text=True, timeout=timeout_s + 240, cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.splitlines(), out.stderr


def test_a_ctrl_c_inside_the_llvm_lock_is_raised_after_the_compilation_and_leaves_no_lock_held(tmp_path: Path) -> None:
    lines, err = _run(60.0, tmp_path)
    assert "signal delivered inside the LLVM lock True" in lines, lines
    # Ctrl-C's exit code and line (130), once the kernel is compiled (before: raised inside it, none compiled)
    assert "exit 130 signatures 1" in lines, lines
    assert "interrupted by user (Ctrl-C)" in err, err[-2000:]
    # at once: out of the call whose compilation it came in, before the next compilation of a burst
    assert "raised in the first compilation ; next kernel compiled: False" in lines, lines
    assert "SIGINT handler back to Python's own: True" in lines, lines
    # before: "no, it waits for the LLVM lock" (the lock held for good by the main thread: the CI hang)
    assert "another thread compiles: yes" in lines, lines
